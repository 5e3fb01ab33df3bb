//! `SessionLink`: the [`Link`] a session's connection runs on. It numbers the stream's
//! bytes, keeps what is not acknowledged, acks what arrives, and when the physical link
//! drops it waits (server) or reconnects (client) and replays, so the connection above
//! sees one unbroken stream.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};
use zs_wire::session::{ack_frame, Answer, FrameWalker, Outbound};

use super::blocks::CopyBlocks;
use super::{Attach, Owner, Registry, SessionConfig, SessionEvent, SessionShared};
use crate::budget::Charge;
use crate::secure::SecuredLink;
use crate::stats::Stats;
use crate::transport::{self, Link};

/// Unacknowledged bytes received that an outgoing write carries an ack for.
const PIGGYBACK_ACK: u64 = 4 << 10;
/// Most input read ahead while a writer waits for acks (the reader may be stalled).
const MAX_STASH: usize = 1 << 20;
/// Smallest segment kept shared rather than copied: a small one would pin a larger buffer
/// until its ack.
const SHARE_AT_LEAST: usize = 4 << 10;
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 32;
/// Largest first write on a new link. The secure channel seals each write into records,
/// and a record cut short delivers nothing: on a link that keeps dropping, small records
/// first make sure every link moves the stream forward. Each write may be twice the last.
const FIRST_WRITE: usize = 2 << 10;

/// Who does what when the link drops.
pub(crate) enum Role {
    /// Waits for the client to come back, for `keep`, then expires.
    Server { keep: Duration, registry: Arc<Registry> },
    /// Reconnects with backoff: starts the task that does, for this session.
    Client(Restart),
}

/// Starts a client's reconnect task for a session whose link dropped.
pub(crate) type Restart = Box<dyn Fn(Arc<SessionShared>) + Send + Sync>;

/// Called with every session event (bound to the peer's router hooks).
pub(crate) type EventSink = Box<dyn Fn(SessionEvent) + Send + Sync>;

pub(crate) struct SessionLink {
    link: Option<SecuredLink>,
    shared: Arc<SessionShared>,
    role: Role,
    out: Outbound,
    /// Stream offset written to the current link.
    wire: u64,
    /// Where the copies kept for replay are made.
    copies: CopyBlocks,
    /// Most bytes the next write to the link may carry (see [`FIRST_WRITE`]).
    write_limit: usize,
    /// The resumed answer, owed to the client before the replay (server).
    preface: Option<Bytes>,
    tx_walk: FrameWalker,
    rx_walk: FrameWalker,
    /// Bytes of the peer's stream received.
    received: u64,
    /// The last count acknowledged to the peer.
    acked_to_peer: u64,
    ack_wanted: bool,
    ack_every: u64,
    ack_delay: Duration,
    ack_timer: Option<Pin<Box<Sleep>>>,
    /// The waker in the shared slot (see [`Self::watch_offers`]).
    registered: Option<Waker>,
    /// Input read (and counted) while a writer waited for acks; delivered first.
    stash: BytesMut,
    lost_at: Option<Instant>,
    /// When a detached server session expires.
    expiry: Option<Pin<Box<Sleep>>>,
    /// Why the session cannot go on.
    failed: Option<String>,
    events: Option<EventSink>,
    stats: Arc<Stats>,
    addrs: (SocketAddr, SocketAddr),
    /// The connection's charge against the server's memory budget: what a detached
    /// session holds (its replay queue and read-ahead) is charged while it waits.
    charge: Option<Charge>,
    charged: u64,
}

impl SessionLink {
    /// A session that starts on `link`; `leftover` is input read past the session answer.
    pub(crate) fn new(
        link: SecuredLink,
        shared: Arc<SessionShared>,
        role: Role,
        config: &SessionConfig,
        leftover: BytesMut,
        stats: Arc<Stats>,
    ) -> io::Result<SessionLink> {
        let addrs = (link.peer_addr()?, link.local_addr()?);
        let mut s = SessionLink {
            link: Some(link),
            shared,
            role,
            out: Outbound::new(config.replay_budget),
            wire: 0,
            copies: CopyBlocks::new(config.replay_budget),
            write_limit: usize::MAX,
            preface: None,
            tx_walk: FrameWalker::default(),
            rx_walk: FrameWalker::default(),
            received: 0,
            acked_to_peer: 0,
            ack_wanted: false,
            ack_every: config.ack_every as u64,
            ack_delay: config.ack_delay,
            ack_timer: None,
            registered: None,
            stash: BytesMut::new(),
            lost_at: None,
            expiry: None,
            failed: None,
            events: None,
            stats,
            addrs,
            charge: None,
            charged: 0,
        };
        s.take_leftover(leftover);
        Ok(s)
    }

    pub(crate) fn shared(&self) -> &Arc<SessionShared> {
        &self.shared
    }

    /// Where events go from now on.
    pub(crate) fn set_events(&mut self, sink: EventSink) {
        self.events = Some(sink);
    }

    /// The connection's charge against the server's memory budget.
    pub(crate) fn set_charge(&mut self, charge: Option<Charge>) {
        self.charge = charge;
    }

    /// Charges what a detached session holds (0 when attached); over the budget, the
    /// session ends.
    fn charge_detached(&mut self, bytes: u64) {
        let Some(charge) = &self.charge else { return };
        if let Err(e) = charge.resize(&mut self.charged, bytes) {
            self.expire(format!("session ended: {e}"));
        }
    }

    fn emit(&self, event: SessionEvent) {
        if let Some(sink) = &self.events {
            sink(event);
        }
    }

    /// Counts input that arrived and applies the acks in it.
    fn take_input(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        let out = &mut self.out;
        let mut bad = None;
        self.rx_walk.walk(bytes, |upto| {
            if let Err(e) = out.ack(upto) {
                bad = Some(e);
            }
        });
        if let Some(e) = bad {
            self.fail(format!("session protocol error: {e}"));
        }
        self.shared.unacked.store(self.out.held() as u64, Relaxed);
    }

    /// Input read past a session answer: counted now, delivered first.
    fn take_leftover(&mut self, leftover: BytesMut) {
        self.take_input(&leftover);
        if self.stash.is_empty() {
            self.stash = leftover;
        } else {
            self.stash.extend_from_slice(&leftover);
        }
    }

    /// The connection closed the session (a goaway was sent or received, or it is gone):
    /// a lost link is then the end.
    fn ended(&self) -> bool {
        self.shared.ended()
    }

    /// Acks now if enough arrived, else no later than the ack delay.
    fn schedule_ack(&mut self) {
        let unacked = self.received - self.acked_to_peer;
        if unacked >= self.ack_every {
            self.ack_wanted = true;
        } else if unacked > 0 && self.ack_timer.is_none() {
            self.ack_timer = Some(Box::pin(tokio::time::sleep(self.ack_delay)));
        }
    }

    /// Takes a write: `take(self, room)` queues at most `room` bytes (the budget left; a
    /// write may end inside a frame, the walker knows), which are then sent.
    fn write_with(&mut self, take: impl FnOnce(&mut Self, usize)) -> io::Result<usize> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if !self.out.has_room() {
            // Full: what is held still has to reach the link.
            self.transmit();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.ack_wanted || self.received - self.acked_to_peer >= PIGGYBACK_ACK {
            self.inject_ack();
        }
        let before = self.out.sent();
        take(self, self.out.room());
        let total = (self.out.sent() - before) as usize;
        if self.ack_wanted {
            self.inject_ack();
        }
        self.shared.unacked.store(self.out.held() as u64, Relaxed);
        self.transmit();
        Ok(total)
    }

    /// Keeps a copy of `bufs` for replay, queued to be sent; `walk` follows the connection's
    /// frames through them (the session's own ack frames are not part of those).
    fn keep<'a>(&mut self, bufs: impl IntoIterator<Item = &'a [u8]>, walk: bool) {
        let (out, tx_walk) = (&mut self.out, &mut self.tx_walk);
        self.copies.copy(bufs, |piece| {
            if walk {
                tx_walk.walk(&piece, |_| {});
            }
            out.push(piece);
        });
    }

    /// Puts an ack frame into the stream if one is wanted and the stream is between frames.
    fn inject_ack(&mut self) {
        if self.received > self.acked_to_peer && self.tx_walk.at_boundary() {
            self.keep([&ack_frame(self.received)[..]], false);
            self.acked_to_peer = self.received;
            self.ack_wanted = false;
            self.ack_timer = None;
        }
    }

    /// Writes what the current link has not yet had; a failure loses the link.
    fn transmit(&mut self) {
        let Some(link) = self.link.as_mut() else { return };
        let r = (|| {
            while let Some(p) = self.preface.as_mut() {
                let n = link.try_write(p)?;
                let _ = p.split_to(n);
                if p.is_empty() {
                    self.preface = None;
                }
            }
            while self.wire < self.out.sent() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let (mut count, mut len) = (0, 0);
                for (slot, chunk) in slices.iter_mut().zip(self.out.chunks_from(self.wire)) {
                    let chunk = &chunk[..chunk.len().min(self.write_limit - len)];
                    *slot = IoSlice::new(chunk);
                    count += 1;
                    len += chunk.len();
                    if len == self.write_limit {
                        break;
                    }
                }
                match link.try_write_vectored(&slices[..count])? {
                    0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "the link takes no more")),
                    n => self.wire += n as u64,
                }
                self.write_limit = self.write_limit.saturating_mul(2);
            }
            if link.has_pending() {
                link.flush()?;
            }
            Ok(())
        })();
        match r {
            Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                self.lose(&e.to_string())
            }
            _ => {}
        }
    }

    /// The physical link is gone: wait for another (or, once ended, stay closed).
    fn lose(&mut self, why: &str) {
        if self.link.take().is_none() || self.ended() || self.failed.is_some() {
            return;
        }
        self.preface = None;
        self.ack_timer = None;
        self.lost_at = Some(Instant::now());
        self.shared.attached.store(false, Relaxed);
        self.shared.received.store(self.received, Relaxed);
        self.stats.bump(|s| &s.session_links_lost);
        tracing::debug!(session = ?self.shared, why, "session link lost");
        self.emit(SessionEvent::LinkLost { reason: why.to_owned() });
        match &self.role {
            Role::Server { keep, registry } => {
                self.expiry = Some(Box::pin(tokio::time::sleep(*keep)));
                let owner = match self.shared.client_key {
                    Some(key) => Owner::Key(key.0),
                    None => Owner::Addr(self.addrs.0.ip()),
                };
                registry.detach(&self.shared, owner);
                // Waiting costs what it must keep, no more: the replay queue and input read
                // ahead; empty buffers go.
                if self.stash.is_empty() {
                    self.stash = BytesMut::new();
                }
                let held = self.shared.unacked.load(Relaxed) + self.stash.capacity() as u64;
                self.charge_detached(held);
            }
            Role::Client(restart) => {
                restart(self.shared.clone());
            }
        }
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.link = None;
            self.shared.attached.store(false, Relaxed);
            self.failed = Some(why);
        }
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|why| io::Error::new(io::ErrorKind::ConnectionAborted, why.clone()))
    }

    /// Takes a link (or a failure) offered by the registry or the reconnect task.
    fn attach_offered(&mut self) -> bool {
        let Some(attach) = self.shared.take_offer() else { return false };
        // The offer's wake used up the registered waker.
        self.registered = None;
        match attach {
            Attach::Failed(why) => self.expire(why),
            Attach::Link { link, peer_received, leftover, answer } => {
                if let Err(e) = self.out.resume(peer_received) {
                    self.fail(format!("session resume refused: {e}"));
                    return true;
                }
                if let (Ok(remote), Ok(local)) = (link.peer_addr(), link.local_addr()) {
                    self.addrs = (remote, local);
                }
                self.link = Some(link);
                self.wire = peer_received;
                self.write_limit = FIRST_WRITE;
                if answer {
                    let mut b = BytesMut::new();
                    Answer::Resumed { received: self.received }.encode(&mut b);
                    self.preface = Some(b.freeze());
                }
                self.take_leftover(leftover);
                let replayed = self.out.sent() - peer_received;
                let after = self.lost_at.take().map(|t| t.elapsed()).unwrap_or_default();
                self.expiry = None;
                if let Role::Server { registry, .. } = &self.role {
                    registry.attach(&self.shared.id);
                }
                self.charge_detached(0);
                self.shared.attached.store(true, Relaxed);
                self.shared.resumes.fetch_add(1, Relaxed);
                self.shared.replayed.fetch_add(replayed, Relaxed);
                self.stats.bump(|s| &s.sessions_resumed);
                self.stats.session_replayed_bytes.fetch_add(replayed, Relaxed);
                tracing::debug!(session = ?self.shared, ?after, replayed, "session resumed");
                self.emit(SessionEvent::Resumed { after, replayed });
                self.transmit();
            }
        }
        true
    }

    /// Registers for offers (a resume may replace a link that only looks alive) and takes
    /// any. The shared waker is registered again only when it changed or was used.
    fn watch_offers(&mut self, cx: &mut Context<'_>) {
        loop {
            if !self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                self.shared.waker.register(cx.waker());
                self.registered = Some(cx.waker().clone());
            }
            if !self.attach_offered() {
                return;
            }
        }
    }

    /// While there is no link: wait for one to be offered, or for the session to expire.
    fn poll_detached(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch_offers(cx);
        if let Some(e) = self.failure() {
            return Poll::Ready(Err(e));
        }
        if self.link.is_some() || self.ended() {
            return Poll::Ready(Ok(()));
        }
        if let (Some(t), Role::Server { keep, .. }) = (self.expiry.as_mut(), &self.role) {
            if t.as_mut().poll(cx).is_ready() {
                let why = format!("session expired: its link was not resumed within {keep:?}");
                self.expire(why);
                return Poll::Ready(Err(self.failure().expect("just failed")));
            }
        }
        Poll::Pending
    }

    /// The session is over without a link coming back: tell the application, then fail.
    fn expire(&mut self, why: String) {
        self.stats.bump(|s| &s.sessions_expired);
        if self.shared.evicted.load(Relaxed) {
            self.stats.bump(|s| &s.sessions_evicted);
        }
        self.emit(SessionEvent::Expired { reason: why.clone() });
        self.fail(why);
    }

    /// Reads ahead (into the stash) for the acks a blocked writer waits for.
    fn poll_acks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.has_room() && self.stash.len() < MAX_STASH {
            let Some(link) = self.link.as_mut() else { return self.poll_detached(cx) };
            match link.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.lose(&e.to_string());
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }
            let mut stash = std::mem::take(&mut self.stash);
            let start = stash.len();
            stash.reserve(64 << 10);
            let r = link.try_read_buf(&mut stash);
            match r {
                Ok(0) => self.lose("closed by the other end"),
                Ok(_) => self.take_input(&stash[start..]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => self.lose(&e.to_string()),
            }
            self.stash = stash;
            if let Some(e) = self.failure() {
                return Poll::Ready(Err(e));
            }
        }
        if self.out.has_room() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Link for SessionLink {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch_offers(cx);
        if let Some(e) = self.failure() {
            return Poll::Ready(Err(e));
        }
        if !self.stash.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let Some(link) = self.link.as_mut() else { return self.poll_detached(cx) };
        match link.poll_read_ready(cx) {
            Poll::Ready(Err(e)) => {
                self.lose(&e.to_string());
                self.poll_detached(cx)
            }
            // The ack timer is polled only once input pauses: while it flows, the connection
            // polls again anyway, and acks go out with its writes or past `ack_every`.
            Poll::Pending => match self.ack_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    // Readable in name only: the connection reads nothing and then flushes.
                    self.ack_timer = None;
                    self.ack_wanted = true;
                    Poll::Ready(Ok(()))
                }
                _ => Poll::Pending,
            },
            ready => ready,
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if !self.stash.is_empty() {
            let n = self.stash.len();
            if buf.is_empty() {
                std::mem::swap(buf, &mut self.stash);
            } else {
                buf.extend_from_slice(&self.stash);
                self.stash.clear();
            }
            return Ok(n);
        }
        let Some(link) = self.link.as_mut() else {
            return if self.ended() { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        };
        let start = buf.len();
        match link.try_read_buf(buf) {
            Ok(0) if self.ended() => Ok(0),
            Ok(0) => {
                self.lose("closed by the other end");
                Err(io::ErrorKind::WouldBlock.into())
            }
            Ok(n) => {
                self.take_input(&buf[start..]);
                // Any read may be the last before a pause: a TCP link that it emptied waits
                // for new bytes without a `WouldBlock` (see `Link`), and a secure link over it
                // cannot tell its reader so. At most one ack timer is armed at a time.
                self.schedule_ack();
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.schedule_ack();
                Err(e)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) if self.ended() => Err(e),
            Err(e) => {
                self.lose(&e.to_string());
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch_offers(cx);
        if let Some(e) = self.failure() {
            return Poll::Ready(Err(e));
        }
        if self.link.is_none() {
            return if self.out.has_room() { Poll::Ready(Ok(())) } else { self.poll_detached(cx) };
        }
        let untransmitted = self.preface.is_some() || self.wire < self.out.sent();
        if !untransmitted && !self.out.has_room() {
            return self.poll_acks(cx);
        }
        let link = self.link.as_mut().expect("checked above");
        if !untransmitted && !link.has_pending() {
            return Poll::Ready(Ok(()));
        }
        match link.poll_write_ready(cx) {
            Poll::Ready(Err(e)) => {
                self.lose(&e.to_string());
                self.poll_detached(cx)
            }
            other => other,
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(|this, room| this.keep(transport::up_to(bufs, room), true))
    }

    fn try_write_shared(&mut self, segments: &[Bytes], tail: &[u8]) -> io::Result<usize> {
        self.write_with(|this, mut room| {
            for segment in segments {
                let take = segment.len().min(room);
                if take >= SHARE_AT_LEAST {
                    // Kept as it is: the replay queue shares the connection's frame.
                    let piece = segment.slice(..take);
                    this.tx_walk.walk(&piece, |_| {});
                    this.out.push(piece);
                } else {
                    this.keep([&segment[..take]], true);
                }
                room -= take;
            }
            this.keep([&tail[..tail.len().min(room)]], true);
        })
    }

    fn has_pending(&self) -> bool {
        let Some(link) = self.link.as_ref() else { return false };
        self.preface.is_some()
            || self.wire < self.out.sent()
            || link.has_pending()
            || (self.ack_wanted && self.tx_walk.at_boundary())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if self.ack_wanted {
            self.inject_ack();
        }
        self.transmit();
        if self.has_pending() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    }

    fn release_idle(&mut self) {
        if let Some(link) = self.link.as_mut() {
            link.release_idle();
        }
        self.out.shrink();
        // Blocks are only worth dropping once nothing unacknowledged shares them: until then
        // dropping frees no memory and the next write would allocate another.
        if self.out.held() == 0 {
            self.copies.release();
        }
        if self.stash.is_empty() {
            self.stash = BytesMut::new();
        }
    }

    fn detached(&self) -> bool {
        self.link.is_none() && self.failed.is_none() && !self.ended()
    }

    fn abandon(&mut self, why: &str) -> bool {
        if self.ended() || self.failed.is_some() {
            return false;
        }
        self.lose(why);
        true
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shared.ended.store(true, Relaxed);
        match self.link.as_mut() {
            Some(link) => link.shutdown_write(),
            None => Ok(()),
        }
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addrs.0)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addrs.1)
    }
}

impl Drop for SessionLink {
    fn drop(&mut self) {
        self.shared.ended.store(true, Relaxed);
        self.shared.attached.store(false, Relaxed);
        if let Role::Server { registry, .. } = &self.role {
            registry.remove(&self.shared.id);
        }
    }
}
