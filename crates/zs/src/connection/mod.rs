//! The connection driver: one task per connection, no other task per request.
//!
//! Each wake-up reads what the socket has, decodes and dispatches every whole frame in
//! it, runs cheap (inline) handlers at once, and writes every reply that is ready with
//! one `write`. Frames from other tasks (calls, delayed replies, broadcasts) arrive through
//! the peer's bounded outbox and join the same write. Buffers exist only while there is
//! data: an idle connection holds none.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{Instant, Sleep};
use zs_wire::{Frame, FrameDecoder, GoAwayCode, Kind, WireError, HEADER_LEN};

use self::output::Output;
use crate::config::ConnectionConfig;
use crate::connection::outbox::Out;
use crate::logs::Escaped;
use crate::mux::Mux;
use crate::peer::Peer;
use crate::rpc::{Payload, Router};
use crate::stats::LocalStats;
use crate::transport::{close_after_draining, Link};

pub(crate) mod close;
mod dispatch;
pub(crate) mod encode;
mod link;
pub(crate) mod outbox;
mod output;
mod spare;
mod streams;
pub(crate) mod virtual_peer;

pub use close::CloseReason;
pub(crate) use link::AnyLink;

use dispatch::Finished;
use streams::Streams;

enum Event {
    Outbox,
    Readable,
    Finished(Finished),
    Writable,
    Timer,
    Failed(io::Error),
}

type Step = Result<(), CloseReason>;

/// Largest read asked of the socket while data keeps coming.
const MAX_READ: usize = 256 << 10;
/// Read buffer a connection may hold uncharged: a read's worth and a stream chunk.
const FREE_READ: usize = 512 << 10;
/// The bit of `Connection::read_hint` that says the read buffer is charged.
const READ_CHARGED: u32 = 1 << 31;
/// The bit of `Connection::read_hint` that says a large frame has arrived on the connection.
const READ_LARGE: u32 = 1 << 30;
/// The bit of `Connection::read_hint` that says the read buffer was sized to a frame's
/// announced length, and is charged whole (no [`FREE_READ`] allowance).
const READ_EXACT: u32 = 1 << 29;
/// The bits of `Connection::read_hint` that are not the hint.
const READ_FLAGS: u32 = READ_CHARGED | READ_LARGE | READ_EXACT;
/// Frames this large (up to `MAX_READ`) are read to their end exactly once one has
/// arrived: see `Connection::on_readable`.
const LARGE_FRAME: usize = 64 << 10;
/// Frames from other tasks this large are written from their own buffer, not copied.
const ZERO_COPY_MIN: usize = 4 << 10;
/// Most turns the connection's task gives callers woken by its replies before it writes
/// the calls they queued.
const MAX_CALLER_TURNS: usize = 4;
/// How long a closing connection waits for its last output to leave.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) struct Connection<L: Link> {
    link: L,
    peer: Peer,
    config: Arc<ConnectionConfig>,
    router: Arc<Router>,
    decoder: FrameDecoder,
    rbuf: BytesMut,
    out: Output,
    /// Bytes to ask the socket for next (grows while reads come back full); the top bit
    /// says the read buffer is charged to the memory budget, the next that a large frame
    /// has arrived (kept here: no field of their own in every idle connection).
    read_hint: u32,
    /// Async handlers in progress; created on first use.
    tasks: Option<FuturesUnordered<BoxFuture<'static, Finished>>>,
    /// Calls being handled off the inline path (async, delayed, HPC).
    in_flight: usize,
    /// An ordered call is in progress; later ordered frames wait in `ordered_queue`.
    ordered_busy: bool,
    /// When the last metered inline call of this batch of frames replied: the next one's
    /// start (one clock read per call rather than two).
    meter_clock: Option<std::time::Instant>,
    ordered_queue: VecDeque<Frame>,
    draining: Option<Instant>,
    last_rx: Instant,
    last_write: Instant,
    ping_out: bool,
    timer: Option<Pin<Box<Sleep>>>,
    local: LocalStats,
    /// Incoming streams; created on first use.
    streams: Option<Box<Streams>>,
    /// Frames are still queued in the outbox (chunks left for later, or frames that came
    /// in while it was being drained): come back for them without waiting for a signal.
    outbox_more: bool,
    /// Virtual channels; created on first use.
    mux: Option<Box<Mux>>,
}

/// A connection's task dropped before it ended (its runtime shut down): calls waiting on
/// it fail at once instead of waiting for a deadline that only this task would enforce.
impl<L: Link> Drop for Connection<L> {
    fn drop(&mut self) {
        if self.peer.close_reason().is_none() {
            self.peer.mark_closed("the connection's task ended".into());
        }
    }
}

impl<L: Link> Connection<L> {
    pub(crate) fn new(link: L, peer: Peer, router: Arc<Router>) -> Self {
        peer.bind_router(router.clone());
        let config = peer.config().clone();
        let now = Instant::now();
        let mut c = Connection {
            link,
            decoder: FrameDecoder::new(config.limits),
            config,
            peer,
            router,
            rbuf: BytesMut::new(),
            out: Output::default(),
            read_hint: 0,
            tasks: None,
            in_flight: 0,
            ordered_busy: false,
            meter_clock: None,
            ordered_queue: VecDeque::new(),
            draining: None,
            last_rx: now,
            last_write: now,
            ping_out: false,
            timer: None,
            local: LocalStats::default(),
            streams: None,
            outbox_more: false,
            mux: None,
        };
        c.rearm_timer();
        c
    }

    /// Runs the connection until it closes; then fails its pending calls, calls
    /// `unregister` (the owner forgets the peer), and runs the disconnect hooks.
    pub(crate) fn run(self, unregister: impl FnOnce()) -> impl Future<Output = CloseReason> {
        // An async fn stores a by-value argument twice in its state (once as the argument,
        // once as the body's local); boxed, the duplicate is a pointer. This keeps an idle
        // connection's task small.
        Box::new(self).run_boxed(unregister)
    }

    async fn run_boxed(mut self: Box<Self>, unregister: impl FnOnce()) -> CloseReason {
        for hook in &self.router.on_connect {
            if catch_unwind(AssertUnwindSafe(|| hook(&self.peer))).is_err() {
                tracing::error!(peer = self.peer.id(), "on_connect hook panicked");
            }
        }
        let reason = self.serve().await;
        // Boxed: its timers are needed only while closing, not in every idle connection.
        Box::pin(self.linger(&reason)).await;
        // The reason may carry the peer's own words (its goaway): escaped in the log.
        match &reason {
            CloseReason::Local { code: GoAwayCode::Normal | GoAwayCode::ShuttingDown, .. }
            | CloseReason::PeerClosed
            | CloseReason::PeerGoAway { .. } => {
                tracing::debug!(peer = self.peer.id(), remote = %self.peer.remote_addr(), reason = %Escaped(&reason.to_string()), "connection closed")
            }
            _ => {
                tracing::info!(peer = self.peer.id(), remote = %self.peer.remote_addr(), reason = %Escaped(&reason.to_string()), "connection closed")
            }
        }
        self.peer.mark_closed(reason.to_string());
        if let Some(mux) = self.mux.as_mut() {
            mux.fail_all(&format!("the connection closed: {reason}"), &self.peer);
        }
        self.peer.shared_stats().bump(|s| &s.connections_closed);
        self.local.flush(self.peer.shared_stats());
        self.peer.release_charge();
        unregister();
        for hook in &self.router.on_disconnect {
            if catch_unwind(AssertUnwindSafe(|| hook(&self.peer, &reason))).is_err() {
                tracing::error!(peer = self.peer.id(), "on_disconnect hook panicked");
            }
        }
        reason
    }

    async fn serve(&mut self) -> CloseReason {
        loop {
            // Counts are published before the replies leave, so a peer that has its reply
            // sees them.
            self.local.flush(self.peer.shared_stats());
            if let Err(reason) = self.flush() {
                return reason;
            }
            if self.draining.is_some() && self.drained() {
                return self.close_local(GoAwayCode::ShuttingDown, "shutting down");
            }
            let step = match poll_fn(|cx| self.poll_event(cx)).await {
                Event::Outbox => {
                    // Callers woken together by one read's replies queue their next calls
                    // one after another, and the first wakes this task at once: let the
                    // others queue theirs too, so that all leave in one write instead of one
                    // write each. (Not for a lone frame, a broadcast's say: no call waits.)
                    // Callers still holding replies they have not taken get a few more
                    // turns (on a multi-threaded runtime some run on the other worker).
                    if self.out.is_empty() && self.peer.has_calls_waiting() {
                        tokio::task::yield_now().await;
                        for _ in 1..MAX_CALLER_TURNS {
                            if !self.peer.has_unclaimed_replies() {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                    }
                    self.on_outbox()
                }
                Event::Readable => self.on_readable(),
                Event::Finished(f) => self.on_finished(f),
                Event::Writable => Ok(()),
                Event::Timer => self.on_timer(),
                Event::Failed(e) => Err(CloseReason::Io(e.to_string())),
            };
            if let Err(reason) = step {
                return reason;
            }
        }
    }

    fn can_read(&self) -> bool {
        self.out.len() < self.config.max_write_buffer
            && self.in_flight < self.config.max_in_flight
            && self.ordered_queue.len() < self.config.max_ordered_queue
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.out.len() < self.config.max_write_buffer && self.peer.outbox().poll_ready(cx) {
            return Poll::Ready(Event::Outbox);
        }
        if self.can_read() {
            match self.link.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Event::Readable),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => {}
            }
        }
        if let Some(tasks) = self.tasks.as_mut().filter(|t| !t.is_empty()) {
            if let Poll::Ready(Some(f)) = tasks.poll_next_unpin(cx) {
                return Poll::Ready(Event::Finished(f));
            }
        }
        // More queued frames, once what is buffered is nearly out: calls never wait behind
        // more than one quantum of bulk data.
        if self.outbox_more && self.out.len() < self.config.bulk_quantum {
            return Poll::Ready(Event::Outbox);
        }
        if self.unsent() {
            match self.link.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Event::Writable),
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Failed(e)),
                Poll::Pending => {}
            }
        }
        if self.peer.take_deadline_moved() {
            self.rearm_timer();
        }
        if let Some(t) = self.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
        }
        Poll::Pending
    }

    /// Output not yet taken by the socket: frames, or bytes the link sealed.
    fn unsent(&self) -> bool {
        !self.out.is_empty() || self.link.has_pending()
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) -> Step {
        while !self.out.is_empty() {
            match self.out.write_to(&mut self.link) {
                Ok(0) => return Err(CloseReason::Io("socket accepts no more data".into())),
                Ok(n) => {
                    self.local.bytes_out = self.local.bytes_out.saturating_add(n as u32);
                    self.last_write = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CloseReason::Io(e.to_string())),
            }
        }
        // All written: the write buffer goes back to the thread for the next connection.
        self.out.release_if_empty();
        if self.out.is_empty() && self.link.has_pending() {
            match Link::flush(&mut self.link) {
                Ok(()) => self.last_write = Instant::now(),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(CloseReason::Io(e.to_string())),
            }
        }
        Ok(())
    }

    /// After the loop ends, gives buffered output (replies, the goaway) a short while to
    /// leave. When this end closed, it also half-closes and discards what the peer still
    /// sends for a moment: closing with unread input would reset the connection and the
    /// peer would lose the goaway that tells it why.
    async fn linger(&mut self, reason: &CloseReason) {
        let deadline = Instant::now() + LINGER;
        while self.unsent() && Instant::now() < deadline {
            let ready = tokio::time::timeout_at(deadline, poll_fn(|cx| self.link.poll_write_ready(cx))).await;
            if !matches!(ready, Ok(Ok(()))) || self.flush().is_err() {
                break;
            }
        }
        self.local.flush(self.peer.shared_stats());
        if matches!(reason, CloseReason::Local { .. }) {
            self.rbuf = BytesMut::new();
            close_after_draining(&mut self.link, deadline).await;
        }
    }

    fn on_readable(&mut self) -> Step {
        let hint = ((self.read_hint & !READ_FLAGS) as usize).max(self.config.read_chunk);
        // A stream's chunks, one after another: each is read into a buffer of its own
        // size, up to the next one's header and no further, so no partial chunk is ever
        // moved to a larger buffer (that copy was 7 % of a receiver's time). A header
        // alone does not earn its frame's size: only on a connection that has sent a large
        // frame whole, and only up to `MAX_READ` (what doubling reads reach anyway).
        // That room is what the header announced, not what came: it is charged to the
        // server's budget whole, and only if the budget has it free (else the reads grow
        // as below), so sockets that stop after a header cannot hold it uncharged.
        let left = self.decoder.wanted(self.rbuf.len());
        let overshoot = self.link.read_overshoot();
        let exact = self.read_hint & READ_LARGE != 0
            && self.decoder.pending_len().is_some_and(|len| (LARGE_FRAME..=MAX_READ).contains(&len));
        // A link that opens records may pass the limit by one: room for it too.
        let room = overshoot.map(|o| left + HEADER_LEN + o);
        let exact = exact && room.is_some_and(|room| self.charge_exact_read(self.rbuf.len() + room));
        let upto = if exact { left + HEADER_LEN } else { usize::MAX };
        if exact {
            self.rbuf.reserve(room.unwrap_or(0));
        } else {
            self.read_hint &= !READ_EXACT;
            // The buffer grows as bytes arrive, never by what a header announces: a
            // partial frame at most doubles it per read.
            if self.rbuf.capacity() == 0 {
                self.rbuf = spare::take_read();
            }
            // With no frame begun, the room left after earlier frames takes the next read
            // (small messages share one allocation); a frame in progress (its header
            // already taken, perhaps) gets room to grow.
            let begun = !self.rbuf.is_empty() || self.decoder.is_mid_frame();
            if begun || self.rbuf.capacity() < spare::MIN_ROOM {
                let want = left.min(hint.max(self.rbuf.len())).max(hint);
                self.rbuf.reserve(want);
            }
        }
        self.charge_read_buffer()?;
        let spare = (self.rbuf.capacity() - self.rbuf.len()).min(upto);
        match self.link.try_read_buf_upto(&mut self.rbuf, upto) {
            Ok(0) => Err(CloseReason::PeerClosed),
            Ok(n) => {
                // Streaming: fewer, larger reads, and fewer partial frames to move.
                let next = if n == spare { (hint * 2).min(MAX_READ) } else { hint };
                self.read_hint = next as u32 | (self.read_hint & READ_FLAGS);
                self.local.bytes_in = self.local.bytes_in.saturating_add(n as u32);
                self.last_rx = Instant::now();
                self.process_frames()?;
                // A read that left room may have emptied the link (TCP then waits for new
                // bytes without a `WouldBlock`), and a secure link cannot tell: with every
                // frame taken, input may have paused, as below (what a `WouldBlock` after
                // each read did before, at the same cost).
                if n < spare || self.rbuf.is_empty() {
                    self.going_idle()?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.going_idle(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(CloseReason::Io(e.to_string())),
        }
    }

    /// Input paused: an idle connection holds no buffers.
    fn going_idle(&mut self) -> Step {
        if self.rbuf.is_empty() {
            spare::keep_read(std::mem::take(&mut self.rbuf));
            self.read_hint &= !READ_EXACT;
            self.charge_read_buffer()?;
        }
        self.out.release_if_empty();
        self.link.release_idle();
        self.read_hint &= READ_FLAGS;
        Ok(())
    }

    /// Charges a read buffer of `capacity` bytes, sized to a frame announced, whole to the
    /// server's memory budget if it has the room free now (closing no one); whether it did
    /// (a connection outside any budget always may).
    fn charge_exact_read(&mut self, capacity: usize) -> bool {
        let Some(charge) = self.peer.charge() else { return true };
        if !charge.try_set_read_buffer(capacity as u64) {
            return false;
        }
        self.read_hint |= READ_EXACT | READ_CHARGED;
        true
    }

    /// Charges the read buffer beyond [`FREE_READ`] (a large frame in progress; all of one
    /// sized to a frame announced) to the server's memory budget; refused, the connection
    /// closes.
    fn charge_read_buffer(&mut self) -> Step {
        let free = if self.read_hint & READ_EXACT != 0 { 0 } else { FREE_READ };
        let over = self.rbuf.capacity().saturating_sub(free) as u64;
        if over == 0 && self.read_hint & READ_CHARGED == 0 {
            return Ok(());
        }
        let Some(charge) = self.peer.charge() else { return Ok(()) };
        let r = charge.set_read_buffer(over);
        self.read_hint =
            (self.read_hint & !READ_CHARGED) | if charge.read_buffer() > 0 { READ_CHARGED } else { 0 };
        r.map_err(|e| self.close_local(GoAwayCode::MemoryBudget, &format!("a frame in progress: {e}")))
    }

    fn process_frames(&mut self) -> Step {
        self.meter_clock = None;
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => {
                    self.local.frames_in += 1;
                    if frame.body.len() >= LARGE_FRAME {
                        self.read_hint |= READ_LARGE;
                    }
                    self.on_frame(frame)?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.protocol_error(e)),
            }
        }
    }

    fn protocol_error(&mut self, e: WireError) -> CloseReason {
        self.peer.shared_stats().bump(|s| &s.protocol_errors);
        let code = match e {
            WireError::FrameTooLarge { .. } => GoAwayCode::FrameTooLarge,
            _ => GoAwayCode::ProtocolError,
        };
        tracing::warn!(peer = self.peer.id(), remote = %self.peer.remote_addr(), error = %e, "protocol error");
        self.close_local(code, &e.to_string())
    }

    /// A decoded body, or the protocol error that closes the connection.
    fn parsed<T>(&mut self, r: Result<T, WireError>) -> Result<T, CloseReason> {
        r.map_err(|e| self.protocol_error(e))
    }

    /// Queues a goaway for the other end and ends the loop.
    fn close_local(&mut self, code: GoAwayCode, message: &str) -> CloseReason {
        encode::goaway(self.out.small(), code, message);
        let _ = self.flush();
        CloseReason::Local { code, message: message.to_owned() }
    }

    fn on_outbox(&mut self) -> Step {
        let mut queue = VecDeque::new();
        self.peer.outbox().drain(&mut queue);
        self.on_queue(&mut queue)?;
        outbox::recycle(queue);
        let room = self.config.bulk_quantum.saturating_sub(self.out.len());
        let mut chunks = 0;
        let out = &mut self.out;
        // With no room the lane was not looked at: assume frames wait there. Producers
        // signal only when the outbox goes from empty to not, so nothing else would wake
        // this task for them.
        self.outbox_more = room == 0
            || self.peer.outbox().drain_bulk(room, |chunk| {
                chunks += 1;
                out.push_frame(chunk);
            });
        self.local.frames_out += chunks;
        Ok(())
    }

    fn on_queue(&mut self, queue: &mut VecDeque<Out>) -> Step {
        for out in queue.drain(..) {
            match out {
                Out::Frame(frame) => self.put(frame),
                Out::Done { frame, ordered } => {
                    if let Some(frame) = frame {
                        self.put(frame);
                    }
                    self.release(ordered)?;
                }
                Out::Close(code, message) => return Err(self.close_local(code, &message)),
                Out::Shutdown => {
                    if self.draining.is_none() {
                        self.draining = Some(Instant::now() + self.config.drain_timeout);
                        self.rearm_timer();
                    }
                }
                Out::MuxOpen(channel, frame) => {
                    let mux = self.mux.get_or_insert_with(Box::default);
                    mux.add_local(channel.clone(), &self.peer);
                    if !channel.finished() {
                        self.put(frame);
                    }
                }
                Out::MuxGoAway(reason) => {
                    self.mux.get_or_insert_with(Box::default).go_away(&reason, self.out.small())
                }
                Out::MuxForget(id) => {
                    if let Some(mux) = self.mux.as_mut() {
                        mux.forget(id, &self.peer);
                    }
                }
                Out::StreamDone(id) => self.stream_done(id),
            }
        }
        Ok(())
    }

    fn put(&mut self, frame: Bytes) {
        self.local.frames_out += 1;
        if frame.len() >= ZERO_COPY_MIN {
            self.out.push_frame(frame);
        } else {
            self.out.small().extend_from_slice(&frame);
        }
    }

    fn drained(&self) -> bool {
        self.in_flight == 0 && self.ordered_queue.is_empty() && !self.unsent()
    }

    fn on_timer(&mut self) -> Step {
        let now = Instant::now();
        self.peer.expire_calls(now);
        if self.draining.is_some_and(|d| now >= d) {
            return Err(self.close_local(GoAwayCode::ShuttingDown, "shutting down (drain timeout)"));
        }
        if self.link.detached() {
            // No link to judge: the idle clocks restart when one is back.
            (self.last_rx, self.last_write, self.ping_out) = (now, now, false);
            self.rearm_timer();
            return Ok(());
        }
        if let Some(idle) = self.config.idle_timeout {
            if now >= self.last_rx + idle && self.link.abandon(&format!("nothing received for {idle:?}")) {
                (self.last_rx, self.last_write, self.ping_out) = (now, now, false);
            } else if now >= self.last_rx + idle {
                self.peer.shared_stats().bump(|s| &s.idle_timeouts);
                return Err(
                    self.close_local(GoAwayCode::IdleTimeout, &format!("nothing received for {idle:?}"))
                );
            }
            if self.unsent() && now >= self.last_write + idle {
                let msg = format!("peer has not read for {idle:?}");
                return Err(self.close_local(GoAwayCode::SlowConsumer, &msg));
            }
        }
        if let Some(every) = self.config.keepalive_interval {
            if !self.ping_out && now >= self.last_rx + every {
                encode::control(self.out.small(), Kind::Ping, 0);
                self.local.frames_out += 1;
                self.ping_out = true;
            }
        }
        self.rearm_timer();
        Ok(())
    }

    /// Sets the timer to the earliest of: next keepalive, idle timeout, drain deadline, the
    /// first deadline of a call waiting for its reply.
    fn rearm_timer(&mut self) {
        let c = &self.config;
        let keepalive = c.keepalive_interval.filter(|_| !self.ping_out).map(|d| self.last_rx + d);
        let idle = c.idle_timeout.map(|d| self.last_rx + d);
        let stall = c.idle_timeout.filter(|_| self.unsent()).map(|d| self.last_write + d);
        let calls = self.peer.earliest_deadline();
        let next = [keepalive, idle, stall, self.draining, calls].into_iter().flatten().min();
        match (next, self.timer.as_mut()) {
            (Some(at), Some(t)) => t.as_mut().reset(at),
            (Some(at), None) => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            (None, _) => self.timer = None,
        }
    }
}
