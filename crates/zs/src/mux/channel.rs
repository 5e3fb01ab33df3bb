//! One virtual channel's state, shared by its handle (a `VirtualStream`) and the
//! connection's task, which delivers its input and credits.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::Recover;
use bytes::{Buf, Bytes};
use zs_wire::mux::MuxCode;
use zs_wire::window::{RecvWindow, SendCredit, WindowPolicy};

/// Where a channel is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opened by this end; the other has not answered yet.
    Opening,
    /// Both ends may send.
    Open,
    /// Over: refused, reset (by either end), or the connection is gone.
    Failed(MuxCode, String),
}

/// What the connection's task does after delivering input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    Ok,
    /// The sender went past its credit: reset the channel.
    OverCredit,
    /// Nobody reads the channel any more (its handle was dropped after a shutdown): reset it.
    Abandoned,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    /// Input not yet read (bounded by the window; never holds an empty piece).
    inbound: VecDeque<Bytes>,
    /// The other end will send nothing more.
    pub(crate) read_closed: bool,
    /// This end sent its close.
    pub(crate) write_closed: bool,
    /// The handle was dropped after its shutdown: input is no longer wanted.
    abandoned: bool,
    /// Our receive window: bytes the other end may have unread here, grown by the
    /// measured bandwidth-delay product.
    recv: RecvWindow,
    /// Bytes the other end can still take.
    send: SendCredit,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// A channel's shared part.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) id: u32,
    state: Mutex<State>,
}

impl Channel {
    /// A channel with a receive window of `window` bytes that may grow to `max_window`;
    /// `send_credit` is what the other end said it can take (0 until it answers, for a
    /// channel this end opens).
    pub(crate) fn new(id: u32, phase: Phase, window: u32, send_credit: u32) -> Arc<Channel> {
        Arc::new(Channel {
            id,
            state: Mutex::new(State {
                phase,
                inbound: VecDeque::new(),
                read_closed: false,
                write_closed: false,
                abandoned: false,
                recv: RecvWindow::new(window, Instant::now()),
                send: SendCredit::new(send_credit.into()),
                reader: None,
                writer: None,
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }

    /// The other end accepted: it can take `credit` bytes.
    pub(crate) fn opened(&self, credit: u32) {
        let mut st = self.lock();
        if st.phase == Phase::Opening {
            st.phase = Phase::Open;
            st.send = SendCredit::new(credit.into());
            st.wake_all();
        }
    }

    /// The channel is over (refused, reset, or its connection is gone); pending reads and
    /// writes fail with `reason`. Input already received can no longer be read.
    pub(crate) fn fail(&self, code: MuxCode, reason: &str) {
        let mut st = self.lock();
        if !matches!(st.phase, Phase::Failed(..)) {
            st.phase = Phase::Failed(code, reason.to_owned());
            st.inbound = VecDeque::new();
            st.wake_all();
        }
    }

    /// Input from the other end.
    pub(crate) fn deliver(&self, data: Bytes) -> Delivered {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Failed(..)) || data.is_empty() {
            return Delivered::Ok;
        }
        if st.abandoned {
            return Delivered::Abandoned;
        }
        if st.read_closed || st.recv.on_data(data.len() as u64, Instant::now()).is_err() {
            return Delivered::OverCredit;
        }
        st.inbound.push_back(data);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        Delivered::Ok
    }

    /// More credit from the other end.
    pub(crate) fn grant(&self, bytes: u32) {
        let mut st = self.lock();
        st.send.grant(bytes.into());
        if let Some(w) = st.writer.take() {
            w.wake();
        }
    }

    /// The other end closed its side; returns whether both sides are now closed.
    pub(crate) fn peer_closed(&self) -> bool {
        let mut st = self.lock();
        st.read_closed = true;
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        st.write_closed
    }

    /// The handle is gone after shutting its side down: the close it sent stands (the other
    /// end still reads everything before it), and input from now on is refused.
    pub(crate) fn abandon(&self) {
        let mut st = self.lock();
        st.abandoned = true;
        st.inbound = VecDeque::new();
    }

    /// Both sides closed, or failed: the connection can forget the channel.
    pub(crate) fn finished(&self) -> bool {
        let st = self.lock();
        matches!(st.phase, Phase::Failed(..)) || (st.read_closed && st.write_closed)
    }
}

impl State {
    fn wake_all(&mut self) {
        for w in [self.reader.take(), self.writer.take()].into_iter().flatten() {
            w.wake();
        }
    }

    /// The error a read or write sees on a failed channel.
    pub(crate) fn error(&self) -> Option<io::Error> {
        match &self.phase {
            Phase::Failed(code, reason) => {
                let kind = match code {
                    MuxCode::NoListener
                    | MuxCode::BacklogFull
                    | MuxCode::Refused
                    | MuxCode::GoingAway
                    | MuxCode::TooManyChannels => io::ErrorKind::ConnectionRefused,
                    _ => io::ErrorKind::ConnectionReset,
                };
                Some(io::Error::new(kind, reason.clone()))
            }
            _ => None,
        }
    }

    /// Whether a read would make progress now (input, its end, or a failure); if not, the
    /// reader is woken when it would.
    pub(crate) fn poll_readable(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.inbound.is_empty() || self.read_closed || matches!(self.phase, Phase::Failed(..)) {
            return true;
        }
        self.reader = Some(cx.waker().clone());
        false
    }

    /// Hands up to `max` bytes of input, in pieces, to `put` (0 at the end; `WouldBlock` if
    /// none yet). Returns the credit to grant, if it is time: once half the window was read
    /// (the window grows by the measured bandwidth-delay product, up to `max_window`; see
    /// [`RecvWindow`]).
    pub(crate) fn read(
        &mut self,
        max: usize,
        max_window: u32,
        mut put: impl FnMut(&[u8]),
    ) -> io::Result<(usize, Option<u32>)> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        if self.inbound.is_empty() {
            return if self.read_closed { Ok((0, None)) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let mut n = 0;
        while n < max {
            let Some(front) = self.inbound.front_mut() else { break };
            let take = front.len().min(max - n);
            put(&front[..take]);
            front.advance(take);
            if front.is_empty() {
                self.inbound.pop_front();
            }
            n += take;
        }
        if self.inbound.is_empty() {
            self.inbound = VecDeque::new();
        }
        // Grants go out once half the window was read.
        let policy =
            WindowPolicy { grant_divisor: 2, min_credit: 0, max_window, grow_from_rtt: Duration::ZERO };
        Ok((n, self.recv.on_consumed(n as u64, Instant::now(), &policy)))
    }

    /// The receive window now.
    pub(crate) fn window(&self) -> u32 {
        self.recv.window()
    }

    /// Whether a write would make progress now (credit, or a failure); if not, the writer
    /// is woken when it would.
    pub(crate) fn poll_writable(&mut self, cx: &mut Context<'_>) -> bool {
        if self.error().is_some()
            || self.write_closed
            || (self.phase == Phase::Open && self.send.available() > 0)
        {
            return true;
        }
        self.writer = Some(cx.waker().clone());
        false
    }

    /// Takes up to `want` bytes of credit (`WouldBlock` if there is none).
    pub(crate) fn take_credit(&mut self, want: usize) -> io::Result<usize> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        if self.write_closed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the channel was closed for writing"));
        }
        match self.send.take_up_to(if self.phase == Phase::Opening { 0 } else { want as u64 }) {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n as usize),
        }
    }

    /// Waits until the other end answered the open.
    pub(crate) fn poll_opened(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.error() {
            return Poll::Ready(Err(e));
        }
        if self.phase == Phase::Opening {
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}
