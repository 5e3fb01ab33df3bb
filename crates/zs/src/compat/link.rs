//! `CompatLink`: a ZServer4D client's connection (a raw link), seen by the ordinary
//! connection driver as a link carrying zserver frames. The translation itself is sans IO
//! (`zs_compat::translate`); this shell moves bytes between the socket, the translation and
//! the driver, runs the sequence layer's timer, and turns the translation's notices into
//! log lines and counters. The router, handlers, stats and timeouts above are the ordinary
//! ones.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::time::Sleep;
use zs_compat::translate::{Notice, Translator};

use super::CompatShared;
use crate::budget::Charge;
use crate::logs::Escaped;
use crate::transport::{Link, RawLink};

/// Output to the socket beyond which the connection's writes wait.
const MAX_OUT: usize = 4 << 20;
/// What the translation may hold uncharged: a few reads' and frames' worth.
const FREE_HELD: u64 = 256 << 10;

/// A ZServer4D client's connection, as a [`Link`] carrying zserver frames.
pub(crate) struct CompatLink {
    socket: RawLink,
    shared: Arc<CompatShared>,
    /// The connection's id (its `Peer::id`).
    peer_id: u64,
    translator: Translator,
    eof: bool,
    /// The connection took input and has not yet been told there is no more: it drops its
    /// read buffer only when told (as a socket does, with `WouldBlock`).
    owe_would_block: bool,
    read_waker: Option<Waker>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's charge against the server's memory budget, and what the
    /// translation's buffers have charged of it.
    charge: Option<Charge>,
    charged: u64,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl CompatLink {
    pub(crate) fn new(socket: RawLink, shared: Arc<CompatShared>, peer_id: u64) -> Self {
        let translator = Translator::new(shared.settings.clone(), peer_id);
        CompatLink {
            socket,
            shared,
            peer_id,
            translator,
            eof: false,
            owe_would_block: false,
            read_waker: None,
            timer: None,
            charge: None,
            charged: 0,
        }
    }

    /// The connection's charge against the server's memory budget.
    pub(crate) fn set_charge(&mut self, charge: Option<Charge>) {
        self.charge = charge;
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    /// After the translation ran: logs and counts what it noticed, and sets the sequence
    /// layer's timer.
    fn settle(&mut self, now: Instant) {
        // What the translation holds beyond a read's worth is charged to the budget.
        if let Some(charge) = &self.charge {
            let over = (self.translator.held_bytes() as u64).saturating_sub(FREE_HELD);
            if let Err(e) = charge.resize(&mut self.charged, over) {
                self.translator.fail(format!("ZServer4D client: {e}"));
            }
        }
        let stats = &self.shared.stats;
        for _ in 0..self.translator.take_protocol_errors() {
            stats.bump(|s| &s.protocol_errors);
        }
        for notice in self.translator.take_notices() {
            let peer = self.peer_id;
            match notice {
                Notice::RequestFailed(why) => {
                    let error = Escaped(&why);
                    tracing::warn!(peer, %error, "ZServer4D request failed: the client gets an empty result")
                }
                Notice::TransferFailed { code, why } => {
                    let error = Escaped(&why);
                    tracing::warn!(peer, code, %error, "ZServer4D transfer failed in its handler")
                }
                Notice::DirectNotSent { command, why } => {
                    stats.bump(|s| &s.errors_out);
                    let (command, why) = (Escaped(&command), Escaped(&why));
                    tracing::warn!(peer, %command, %why, "direct command not sent")
                }
            }
        }
        match self.translator.on_timer(now) {
            Some(at) => match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(at.into()),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
            },
            None => self.timer = None,
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        let out = self.translator.to_client();
        while !out.is_empty() {
            match self.socket.try_write(out) {
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Link for CompatLink {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let t = &mut self.translator;
            if !t.to_connection().is_empty() || t.failed().is_some() || self.eof || self.owe_would_block {
                return Poll::Ready(Ok(()));
            }
            if self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
                self.settle(Instant::now());
                let _ = self.write_out();
            }
            if !self.translator.wants_input() {
                self.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Going idle: an idle connection holds no buffer.
                    self.release_idle();
                    self.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            let input = self.translator.input();
            input.reserve(16 << 10);
            match self.socket.try_read_buf(input) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    let now = Instant::now();
                    self.translator.received(now);
                    self.settle(now);
                    if let Err(e) = self.write_out() {
                        return Poll::Ready(Err(e));
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let to_conn = self.translator.to_connection();
        if !to_conn.is_empty() {
            let n = to_conn.len();
            if buf.is_empty() {
                // Whole frames only, so the connection's buffer is empty: hand ours over
                // (and take its room for the next ones) instead of copying.
                std::mem::swap(buf, to_conn);
            } else {
                buf.extend_from_slice(to_conn);
                to_conn.clear();
            }
            self.owe_would_block = true;
            return Ok(n);
        }
        if let Some(why) = self.translator.failed() {
            return Err(invalid(why));
        }
        if self.eof {
            return Ok(0);
        }
        self.owe_would_block = false;
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_write_ready(cx)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[io::IoSlice::new(buf)])
    }

    fn try_write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.write_out()?;
        if self.translator.to_client().len() >= MAX_OUT {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let now = Instant::now();
        let mut n = 0;
        for b in bufs {
            self.translator.from_connection(b, now).map_err(invalid)?;
            n += b.len();
        }
        self.settle(now);
        if !self.translator.to_connection().is_empty() || self.translator.failed().is_some() {
            self.wake_reader();
        }
        self.write_out()?;
        Ok(n)
    }

    fn has_pending(&self) -> bool {
        self.translator.has_output()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        if self.translator.has_output() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    }

    fn release_idle(&mut self) {
        self.translator.release_idle();
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        let _ = self.write_out();
        self.socket.shutdown_write()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}
