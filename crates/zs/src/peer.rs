//! `Peer`: the handle to one connection, usable from any task or thread.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use zs_wire::{DataFrame, ErrorCode, Flags, GoAwayCode, Kind};

use crate::budget::Charge;
use crate::bulk::BulkState;
use crate::directory::{Directory, Inner as DirectoryInner};
use crate::rpc::Identity;

use crate::config::ConnectionConfig;
use crate::connection::encode;
use crate::connection::outbox::{Out, Outbox, PushError};
use crate::error::CallError;
use crate::rpc::{Payload, PayloadType, Text};
use crate::secure::{ChannelInfo, Fingerprint};
use crate::session::{SessionShared, SessionStatus};
use crate::stats::Stats;
use crate::sync::Recover;

/// A call's reply as it arrives: its flags and body, or why there is none.
type RawReply = Result<(Flags, Bytes), CallError>;

/// Calls settled at once: the lone callers to wake, the batch calls to fill in.
type Settled = (Vec<Waker>, Vec<(Arc<BatchReplies>, usize, RawReply)>);

/// A lone call waiting for its reply: the reply is left here for its caller, who is woken.
/// No timer per call: the connection's task fails the calls past their deadline
/// ([`Peer::expire_calls`]), waking at the earliest one.
struct OneCall {
    deadline: Instant,
    timeout: Duration,
    waker: Option<Waker>,
    reply: Option<RawReply>,
}

/// Where a call's reply goes: to its own caller, or to its place in a batch.
enum ReplyTo {
    One(OneCall),
    Batch(Arc<BatchReplies>, usize),
}

/// The replies of a batch of calls ([`Peer::call_console_batch`]), in order, filled in as
/// they arrive.
struct BatchReplies {
    slots: Mutex<Vec<Option<RawReply>>>,
    left: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
    /// When the calls still without a reply fail with `Timeout`, as a lone call's do.
    deadline: Instant,
    timeout: Duration,
}

impl BatchReplies {
    fn new(n: usize, timeout: Duration) -> Self {
        BatchReplies {
            slots: Mutex::new((0..n).map(|_| None).collect()),
            left: n.into(),
            done: tokio::sync::Notify::new(),
            deadline: Instant::now() + timeout,
            timeout,
        }
    }

    fn fill(&self, i: usize, reply: RawReply) {
        self.slots.lock_or_recover()[i] = Some(reply);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Waits until every reply is in.
    async fn all_in(&self) {
        while self.left.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }
}

/// Calls waiting for their reply, and whether the connection is gone.
#[derive(Default)]
struct Pending {
    /// By request id (FxHash: SipHash took 7 % of the Client API load threads' user time).
    calls: rustc_hash::FxHashMap<u32, ReplyTo>,
    closed: Option<Box<str>>,
    /// No lone call's deadline is earlier than this (`None`: none waits).
    earliest: Option<Instant>,
    /// Lone calls whose reply is in but not yet taken by their caller.
    unclaimed: usize,
}

impl Pending {
    /// Settles every call still without a reply for which `which` (given its deadline and
    /// timeout) has one: a lone call's reply is left for it, a batch call is taken out.
    /// Returns the callers to wake and the batch calls to fill.
    fn settle(&mut self, mut which: impl FnMut(Instant, Duration) -> Option<RawReply>) -> Settled {
        let (mut wakers, mut batches) = (Vec::new(), Vec::new());
        self.calls.retain(|_, to| match to {
            ReplyTo::One(call) => {
                if call.reply.is_none() {
                    if let Some(reply) = which(call.deadline, call.timeout) {
                        call.reply = Some(reply);
                        wakers.extend(call.waker.take());
                        self.unclaimed += 1;
                    }
                }
                true
            }
            ReplyTo::Batch(batch, i) => match which(batch.deadline, batch.timeout) {
                Some(reply) => {
                    batches.push((batch.clone(), *i, reply));
                    false
                }
                None => true,
            },
        });
        (wakers, batches)
    }
}

struct PeerShared {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    /// What the secure channel established (`None` in plaintext).
    channel: Option<Box<ChannelInfo>>,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) outbox: Outbox,
    pending: Mutex<Pending>,
    /// A call came with a deadline earlier than the connection's task waits for.
    deadline_moved: AtomicBool,
    next_request: AtomicU32,
    /// User state, login, tickets, memory charge; created on first use.
    extras: Mutex<Option<Box<Extras>>>,
    /// Streams being sent, batch streams parked here; created on first use.
    bulk: Mutex<Option<Box<BulkState>>>,
    /// The resumable session the connection runs on, if any.
    session: Option<Arc<SessionShared>>,
    /// The next virtual channel id this end opens (odd on the end that connected, even on
    /// the end that accepted).
    mux_next: AtomicU32,
    /// The router the connection serves (set when its task starts): virtual peer channels
    /// opened from here are served by it too.
    pub(crate) router: std::sync::OnceLock<Arc<crate::Router>>,
    /// The server's directory of peers (empty on a client), which also holds its memory
    /// budget.
    directory: Weak<DirectoryInner>,
}

/// What few connections use, kept out of every idle one's state.
#[derive(Default)]
struct Extras {
    /// One value per type: services sharing a connection keep theirs apart.
    state: Vec<Arc<dyn Any + Send + Sync>>,
    identity: Option<Arc<Identity>>,
    tickets: Option<Box<Tickets>>,
    charge: Option<Charge>,
}

/// Values that calls prepared for the streams that follow them, by ticket.
#[derive(Default)]
struct Tickets {
    next: u64,
    /// Oldest first, at most [`MAX_TICKETS`].
    issued: std::collections::VecDeque<(u64, Box<dyn Any + Send + Sync>)>,
}

/// Most tickets a connection holds at once; issuing one more drops the oldest.
pub const MAX_TICKETS: usize = 1024;

/// A handle to one connection (either end). Cheap to clone, `Send + Sync`: call the peer,
/// send it one-way commands, keep typed per-peer state, close it.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerShared>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("id", &self.inner.id).field("remote", &self.inner.remote).finish()
    }
}

impl Peer {
    pub(crate) fn new(
        id: u64,
        (remote, local): (SocketAddr, SocketAddr),
        channel: Option<ChannelInfo>,
        session: Option<Arc<SessionShared>>,
        context: PeerContext,
        dialer: bool,
    ) -> Peer {
        let outbox = Outbox::new();
        Peer {
            inner: Arc::new(PeerShared {
                id,
                remote,
                local,
                channel: channel.map(Box::new),
                config: context.config,
                stats: context.stats,
                outbox,
                pending: Mutex::default(),
                deadline_moved: AtomicBool::new(false),
                next_request: AtomicU32::new(1),
                extras: Mutex::new(None),
                bulk: Mutex::new(None),
                session,
                mux_next: AtomicU32::new(if dialer { 1 } else { 2 }),
                router: std::sync::OnceLock::new(),
                directory: context.directory,
            }),
        }
    }

    /// Identifier, unique within its server or client process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The other end's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote
    }

    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The identity the other end proved on a secure channel: its Noise static key, or (seen
    /// from a TLS client) the server certificate's fingerprint. `None` in plaintext.
    pub fn remote_key(&self) -> Option<Fingerprint> {
        self.inner.channel.as_ref().and_then(|c| c.remote_key)
    }

    /// What the secure channel established: protocol and the other end's identity
    /// (`None` in plaintext).
    pub fn channel(&self) -> Option<&ChannelInfo> {
        self.inner.channel.as_deref()
    }

    /// The resumable session this connection runs on: its id, whether a link carries it
    /// now, and how often it resumed (`None` without a session).
    pub fn session(&self) -> Option<SessionStatus> {
        self.inner.session.as_ref().map(|s| s.status())
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        !self.inner.outbox.is_closed()
    }

    /// Stores typed user state on the peer, replacing any earlier state of the same type
    /// (values of other types stay: each service keeps its own).
    pub fn set_state<T: Any + Send + Sync>(&self, value: T) {
        self.with_extras(|e| {
            e.state.retain(|v| !v.is::<T>());
            e.state.push(Arc::new(value));
        });
    }

    /// The user state of type `T`, if one is stored.
    pub fn state<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let st = self.with_extras(|e| e.state.iter().find(|v| v.is::<T>()).cloned())?;
        st.downcast::<T>().ok()
    }

    /// Who the connection is logged in as, if it is.
    pub fn user(&self) -> Option<Arc<Identity>> {
        self.inner.extras.lock_or_recover().as_ref()?.identity.clone()
    }

    /// Sets (or, with `None`, clears) who the connection is logged in as: commands that
    /// require a login or a role check it, and the server's [`Directory`] finds the
    /// connection by user. A login service calls this; a resumed session keeps it.
    pub fn set_user(&self, identity: Option<Identity>) {
        let new = identity.map(Arc::new);
        let name = new.as_ref().map(|i| i.user.clone());
        let old = self.with_extras(|e| std::mem::replace(&mut e.identity, new));
        if let Some(directory) = self.directory() {
            directory.relogin(self.inner.id, old.as_ref().map(|i| i.user.as_str()), name.as_deref());
        }
        if let Some(router) = self.inner.router.get() {
            for hook in &router.on_login {
                let run = std::panic::AssertUnwindSafe(|| hook(self, old.as_deref()));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!(peer = self.inner.id, "on_login hook panicked");
                }
            }
        }
    }

    /// The server's directory of connected peers (by id and by user); `None` on a client.
    pub fn directory(&self) -> Option<Directory> {
        Directory::upgrade(&self.inner.directory)
    }

    /// Keeps `value` for a stream or buffer that this connection's peer sends next, and
    /// returns its ticket: the call that prepares a transfer issues one, the peer sends the
    /// transfer with it ([`StreamOptions::ticket`](crate::StreamOptions::ticket)), and the
    /// receiving handler takes the value back ([`IncomingStream::take_ticket`](crate::IncomingStream::take_ticket)).
    /// At most [`MAX_TICKETS`] are held; the oldest goes first.
    pub fn issue_ticket<T: Any + Send + Sync>(&self, value: T) -> u64 {
        self.with_extras(|e| {
            let t = e.tickets.get_or_insert_with(Box::default);
            t.next += 1;
            if t.issued.len() >= MAX_TICKETS {
                t.issued.pop_front();
            }
            t.issued.push_back((t.next, Box::new(value)));
            t.next
        })
    }

    /// Takes back the value of `ticket`, if this connection issued it (and it is of type
    /// `T`); each ticket is taken once.
    pub fn take_ticket<T: Any + Send + Sync>(&self, ticket: u64) -> Option<T> {
        self.with_extras(|e| {
            let t = e.tickets.as_mut()?;
            let at = t.issued.iter().position(|(id, v)| *id == ticket && v.is::<T>())?;
            let (_, value) = t.issued.remove(at)?;
            value.downcast::<T>().ok().map(|b| *b)
        })
    }

    fn with_extras<R>(&self, f: impl FnOnce(&mut Extras) -> R) -> R {
        f(self.inner.extras.lock_or_recover().get_or_insert_with(Box::default))
    }

    /// Calls a console command: text in, text out, with the default timeout.
    pub async fn call_console(&self, name: &str, text: impl Into<Text>) -> Result<Text, CallError> {
        self.call_console_timeout(name, text, self.inner.config.call_timeout).await
    }

    /// Calls a console command with a timeout.
    pub async fn call_console_timeout(
        &self,
        name: &str,
        text: impl Into<Text>,
        timeout: Duration,
    ) -> Result<Text, CallError> {
        self.call_typed(name, text.into(), timeout).await
    }

    /// Calls a stream command: DataFrame in, DataFrame out, with the default timeout.
    pub async fn call_stream(&self, name: &str, frame: DataFrame) -> Result<DataFrame, CallError> {
        self.call_stream_timeout(name, frame, self.inner.config.call_timeout).await
    }

    /// Calls a stream command with a timeout.
    pub async fn call_stream_timeout(
        &self,
        name: &str,
        frame: DataFrame,
        timeout: Duration,
    ) -> Result<DataFrame, CallError> {
        self.call_typed(name, frame, timeout).await
    }

    /// Sends a one-way (direct) console command.
    pub async fn send_console(&self, name: &str, text: impl Into<Text>) -> Result<(), CallError> {
        self.send_payload(name, Payload::Text(text.into())).await
    }

    /// Sends a one-way (direct) stream command.
    pub async fn send_stream(&self, name: &str, frame: DataFrame) -> Result<(), CallError> {
        self.send_payload(name, Payload::Frame(frame)).await
    }

    /// Encodes a one-way console command once, for [`send_prepared`](Self::send_prepared)
    /// to this peer and others (a push to many connections).
    pub fn prepare_console(&self, name: &str, text: impl Into<Text>) -> Result<Prepared, CallError> {
        Prepared::new(name, Payload::Text(text.into()), self.inner.config.encoding())
    }

    /// Encodes a one-way stream command once (see [`prepare_console`](Self::prepare_console)).
    pub fn prepare_stream(&self, name: &str, frame: DataFrame) -> Result<Prepared, CallError> {
        Prepared::new(name, Payload::Frame(frame), self.inner.config.encoding())
    }

    /// Queues a prepared one-way command without waiting: the encoded bytes are shared, not
    /// copied (encoded again only for a peer whose frame settings differ). A peer whose
    /// outbound queue is full is slow: it is closed (`SlowConsumer`) and `QueueFull` returned.
    pub fn send_prepared(&self, prepared: &Prepared) -> Result<(), CallError> {
        let enc = self.inner.config.encoding();
        let frame = match prepared.enc == enc {
            true => prepared.frame.clone(),
            false => encode::call_bytes(Kind::Send, 0, &prepared.name, &prepared.payload, enc)?,
        };
        self.offer(frame)?;
        self.inner.stats.bump(|s| &s.commands_out);
        Ok(())
    }

    /// Closes the connection: the peer is told why, pending calls on both ends fail.
    pub fn close(&self) {
        self.close_with(GoAwayCode::Normal, "closed by application");
    }

    /// Closes the connection with a reason code and message.
    pub fn close_with(&self, code: GoAwayCode, message: &str) {
        let _ = self.inner.outbox.push_control(Out::Close(code, message.to_owned()));
    }

    async fn call_typed<P: PayloadType>(&self, name: &str, p: P, timeout: Duration) -> Result<P, CallError> {
        let reply = self.call_raw(name, p.into_payload(), timeout).await;
        self.typed_reply(reply)
    }

    /// A raw reply as the payload type that was called.
    fn typed_reply<P: PayloadType>(&self, reply: RawReply) -> Result<P, CallError> {
        let (flags, body) = reply?;
        let limits = &self.inner.config.limits;
        match Payload::decode(P::FORM, flags, body, limits) {
            Ok(p) => P::from_payload(p).ok_or_else(|| CallError::BadReply("wrong reply form".into())),
            Err(why) => Err(CallError::BadReply(format!("the reply {why}"))),
        }
    }

    /// Calls a console command once per text, all queued at once: they leave in one write
    /// (as far as the outbound queue allows) and each reply is its own result, in order.
    /// For callers with many calls ready, this costs one queue hand-off, one wake-up and one
    /// timer (the default call timeout, for the whole batch) instead of one of each per call.
    pub async fn call_console_batch<I>(&self, name: &str, texts: I) -> Vec<Result<Text, CallError>>
    where
        I: IntoIterator,
        I::Item: Into<Text>,
    {
        let payloads = texts.into_iter().map(|t| Payload::Text(t.into())).collect();
        let replies = self.call_batch_raw(name, payloads, self.inner.config.call_timeout).await;
        replies.into_iter().map(|r| self.typed_reply(r)).collect()
    }

    /// Calls a stream command once per frame, all queued at once (see
    /// [`call_console_batch`](Self::call_console_batch)).
    pub async fn call_stream_batch<I>(&self, name: &str, frames: I) -> Vec<Result<DataFrame, CallError>>
    where
        I: IntoIterator<Item = DataFrame>,
    {
        let payloads = frames.into_iter().map(Payload::Frame).collect();
        let replies = self.call_batch_raw(name, payloads, self.inner.config.call_timeout).await;
        replies.into_iter().map(|r| self.typed_reply(r)).collect()
    }

    /// Sends every call of a batch in one queue hand-off and waits, up to `timeout` for them
    /// all, for their replies; a call without one by then gets `Timeout`.
    async fn call_batch_raw(&self, name: &str, payloads: Vec<Payload>, timeout: Duration) -> Vec<RawReply> {
        let n = payloads.len();
        // Every frame in one buffer, queued as one piece: the connection writes it whole.
        let enc = self.inner.config.encoding();
        let mut buf =
            bytes::BytesMut::with_capacity(payloads.iter().map(|p| 32 + name.len() + p.size_hint()).sum());
        let batch = Arc::new(BatchReplies::new(n, timeout));
        let mut requests = Vec::with_capacity(n);
        for (i, p) in payloads.iter().enumerate() {
            let request = self.next_request();
            let before = buf.len();
            match encode::call(&mut buf, Kind::Call, request, name, p, enc) {
                Ok(()) => requests.push(Some(request)),
                // A call that cannot be encoded fails alone.
                Err(e) => {
                    buf.truncate(before);
                    requests.push(None);
                    batch.fill(i, Err(e.into()));
                }
            }
        }
        {
            let mut pending = self.pending();
            if let Some(why) = &pending.closed {
                let why = why.to_string();
                return (0..n).map(|_| Err(CallError::Disconnected(why.clone()))).collect();
            }
            for (i, request) in requests.iter().enumerate() {
                if let Some(request) = request {
                    self.register(&mut pending, *request, ReplyTo::Batch(batch.clone(), i), batch.deadline);
                }
            }
        }
        // Whatever ends the wait (replies, the caller dropping this future), the calls
        // still registered are forgotten: a late reply then finds nobody.
        struct Forget<'a>(&'a Peer, &'a [Option<u32>]);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                let mut pending = self.0.pending();
                for request in self.1.iter().flatten() {
                    pending.calls.remove(request);
                }
            }
        }
        let forget = Forget(self, &requests);
        let sent = requests.iter().flatten().count();
        self.inner.stats.add(|s| &s.commands_out, sent as u64);
        // The connection counts the batch's one piece as one frame: the rest are counted here.
        self.inner.stats.add(|s| &s.frames_out, sent.saturating_sub(1) as u64);
        let queued = match sent {
            0 => Ok(()),
            _ => self.queue_calls(buf.freeze(), batch.deadline, timeout).await,
        };
        if let Err(why) = queued {
            drop(forget);
            let mut slots = std::mem::take(&mut *batch.slots.lock_or_recover());
            return slots.iter_mut().map(|slot| slot.take().unwrap_or_else(|| Err(why.clone()))).collect();
        }
        batch.all_in().await;
        drop(forget);
        let slots = std::mem::take(&mut *batch.slots.lock_or_recover());
        slots.into_iter().map(|slot| slot.unwrap_or_else(|| Err(CallError::Timeout(timeout)))).collect()
    }

    async fn send_payload(&self, name: &str, p: Payload) -> Result<(), CallError> {
        let frame = encode::call_bytes(Kind::Send, 0, name, &p, self.inner.config.encoding())?;
        self.inner.stats.bump(|s| &s.commands_out);
        self.queue(frame).await
    }

    /// Queues a frame for the connection, waiting for room; fails with the close reason.
    pub(crate) async fn queue(&self, frame: Bytes) -> Result<(), CallError> {
        self.inner
            .outbox
            .push(frame, self.inner.config.max_queued_bytes)
            .await
            .map_err(|_| self.disconnected())
    }

    /// Whether calls of this end wait for their replies.
    pub(crate) fn has_calls_waiting(&self) -> bool {
        !self.pending().calls.is_empty()
    }

    /// Whether replies are in that their callers have not taken yet (woken, not yet run).
    pub(crate) fn has_unclaimed_replies(&self) -> bool {
        self.pending().unclaimed > 0
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.pending.lock_or_recover()
    }

    /// Broadcast path: queue an already-encoded frame without waiting. A full queue
    /// closes this (slow) peer.
    pub(crate) fn offer(&self, frame: Bytes) -> Result<(), CallError> {
        match self.inner.outbox.try_push(frame, self.inner.config.max_queued_bytes) {
            Ok(()) => Ok(()),
            Err((PushError::Closed, _)) => Err(self.disconnected()),
            Err((PushError::Full, _)) => {
                self.close_with(GoAwayCode::SlowConsumer, "outbound queue full");
                Err(CallError::QueueFull)
            }
        }
    }

    pub(crate) fn disconnected(&self) -> CallError {
        CallError::Disconnected(self.close_reason().unwrap_or_else(|| "connection closed".into()))
    }

    pub(crate) fn next_request(&self) -> u32 {
        loop {
            let r = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
            if r != 0 {
                return r;
            }
        }
    }

    async fn call_raw(&self, name: &str, p: Payload, timeout: Duration) -> Result<(Flags, Bytes), CallError> {
        let request = self.next_request();
        let frame = encode::call_bytes(Kind::Call, request, name, &p, self.inner.config.encoding())?;
        let deadline = Instant::now() + timeout;
        {
            let mut pending = self.pending();
            if let Some(why) = &pending.closed {
                return Err(CallError::Disconnected(why.to_string()));
            }
            let call = OneCall { deadline, timeout, waker: None, reply: None };
            self.register(&mut pending, request, ReplyTo::One(call), deadline);
        }
        // Forgets the call if it is abandoned (the caller dropped it, or it never left).
        let reply = ReplyWait { peer: self, request, done: false };
        self.inner.stats.bump(|s| &s.commands_out);
        self.queue_calls(frame, deadline, timeout).await?;
        reply.await
    }

    /// Queues registered calls' frames. The connection's task fails calls past their
    /// deadline; only a wait for room in a full outbox has a timer of its own.
    async fn queue_calls(
        &self,
        frames: Bytes,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), CallError> {
        match self.inner.outbox.try_push(frames, self.inner.config.max_queued_bytes) {
            Ok(()) => Ok(()),
            Err((PushError::Closed, _)) => Err(self.disconnected()),
            Err((PushError::Full, frames)) => {
                match tokio::time::timeout_at(deadline, self.queue(frames)).await {
                    Ok(queued) => queued,
                    Err(_) => {
                        self.inner.stats.bump(|s| &s.call_timeouts);
                        Err(CallError::Timeout(timeout))
                    }
                }
            }
        }
    }

    /// Hands a received reply to its waiting call. Returns false for an unknown request id
    /// (a reply that arrived after its call timed out).
    pub(crate) fn resolve(&self, request: u32, reply: RawReply) -> bool {
        let mut pending = self.pending();
        match pending.calls.get_mut(&request) {
            Some(ReplyTo::One(call)) if call.reply.is_none() => {
                call.reply = Some(reply);
                let waker = call.waker.take();
                pending.unclaimed += 1;
                drop(pending);
                if let Some(waker) = waker {
                    waker.wake();
                }
                true
            }
            Some(ReplyTo::Batch(..)) => {
                let Some(ReplyTo::Batch(batch, i)) = pending.calls.remove(&request) else { return false };
                drop(pending);
                batch.fill(i, reply);
                true
            }
            _ => false,
        }
    }

    /// Registers a call's reply place, due by `deadline`; the connection's task is told
    /// when that is earlier than any it waits for.
    fn register(&self, pending: &mut Pending, request: u32, to: ReplyTo, deadline: Instant) {
        pending.calls.insert(request, to);
        if pending.earliest.is_none_or(|e| deadline < e) {
            pending.earliest = Some(deadline);
            self.inner.deadline_moved.store(true, Ordering::Release);
        }
    }

    /// Whether a call came with a deadline earlier than the connection's task knew of
    /// (asking clears it).
    pub(crate) fn take_deadline_moved(&self) -> bool {
        self.inner.deadline_moved.load(Ordering::Relaxed)
            && self.inner.deadline_moved.swap(false, Ordering::Acquire)
    }

    /// The earliest deadline of a waiting call, or a time no later than it.
    pub(crate) fn earliest_deadline(&self) -> Option<Instant> {
        self.pending().earliest
    }

    /// Fails the calls whose deadline has passed with `Timeout`.
    pub(crate) fn expire_calls(&self, now: Instant) {
        let settled = {
            let mut pending = self.pending();
            if pending.earliest.is_none_or(|e| e > now) {
                return;
            }
            let mut earliest: Option<Instant> = None;
            let settled = pending.settle(|deadline, timeout| match deadline <= now {
                true => Some(Err(CallError::Timeout(timeout))),
                false => {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    None
                }
            });
            pending.earliest = earliest;
            settled
        };
        self.inner.stats.add(|s| &s.call_timeouts, (settled.0.len() + settled.1.len()) as u64);
        wake_and_fill(settled);
    }

    /// Marks the connection gone: every pending call and outgoing stream fails at once
    /// with `why`, parked batch streams are dropped, and nothing more can be queued.
    pub(crate) fn mark_closed(&self, why: String) {
        self.inner.outbox.close();
        if let Some(bulk) = self.inner.bulk.lock_or_recover().take() {
            for out in bulk.outgoing.values() {
                out.finish(Err(CallError::Disconnected(why.clone())));
            }
        }
        let settled = {
            let mut p = self.pending();
            p.closed = Some(why.as_str().into());
            p.earliest = None;
            p.settle(|_, _| Some(Err(CallError::Disconnected(why.clone()))))
        };
        wake_and_fill(settled);
    }

    /// Asks the connection to stop taking calls, finish those in flight, and close.
    pub(crate) fn shutdown(&self) {
        let _ = self.inner.outbox.push_control(Out::Shutdown);
    }
}

/// Wakes the lone calls settled and fills in the batch calls, outside the pending lock.
fn wake_and_fill((wakers, batches): Settled) {
    wakers.into_iter().for_each(Waker::wake);
    for (batch, i, reply) in batches {
        batch.fill(i, reply);
    }
}

/// A lone call's wait for its reply; dropped before the reply, it forgets the call.
struct ReplyWait<'a> {
    peer: &'a Peer,
    request: u32,
    done: bool,
}

impl Future for ReplyWait<'_> {
    type Output = RawReply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RawReply> {
        let this = self.get_mut();
        let mut pending = this.peer.pending();
        let call = match pending.calls.get_mut(&this.request) {
            Some(ReplyTo::One(call)) => call,
            _ => {
                this.done = true;
                let why = pending.closed.as_deref().unwrap_or("connection closed").to_owned();
                return Poll::Ready(Err(CallError::Disconnected(why)));
            }
        };
        if let Some(reply) = call.reply.take() {
            pending.calls.remove(&this.request);
            pending.unclaimed -= 1;
            this.done = true;
            return Poll::Ready(reply);
        }
        if !call.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            call.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for ReplyWait<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut pending = self.peer.pending();
            if let Some(ReplyTo::One(OneCall { reply: Some(_), .. })) = pending.calls.remove(&self.request) {
                pending.unclaimed -= 1;
            }
        }
    }
}

impl Peer {
    /// Why the connection closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.pending().closed.as_deref().map(str::to_owned)
    }
}

/// A remote error reply as a `CallError`.
/// What a peer shares with the other connections of its server or client.
pub(crate) struct PeerContext {
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) stats: Arc<Stats>,
    /// The server's directory (an empty handle on a client).
    pub(crate) directory: Weak<DirectoryInner>,
}

/// A [`Peer`] that does not keep the connection's state alive.
#[derive(Clone)]
pub(crate) struct WeakPeer(std::sync::Weak<PeerShared>);

impl WeakPeer {
    /// The peer, while its connection's state lives.
    pub(crate) fn upgrade(&self) -> Option<Peer> {
        self.0.upgrade().map(|inner| Peer { inner })
    }
}

/// What the connection's own layers use of its peer.
impl Peer {
    /// A peer on a virtual channel of `physical`.
    pub(crate) fn on_channel(physical: &Peer, id: u64, dialer: bool) -> Peer {
        let p = &physical.inner;
        Peer::new(
            id,
            (p.remote, p.local),
            p.channel.as_deref().cloned(),
            None,
            PeerContext { config: p.config.clone(), stats: p.stats.clone(), directory: p.directory.clone() },
            dialer,
        )
    }

    /// Gives back everything still charged to the memory budget (the connection ended).
    pub(crate) fn release_charge(&self) {
        let charge = self.inner.extras.lock_or_recover().as_mut().and_then(|e| e.charge.take());
        if let Some(charge) = charge {
            charge.release_all();
        }
    }

    /// A handle that does not keep the connection's state alive.
    pub(crate) fn downgrade(&self) -> WeakPeer {
        WeakPeer(Arc::downgrade(&self.inner))
    }

    /// The connection's charge against its server's memory budget (made on first use;
    /// `None` on a client, which has no budget).
    pub(crate) fn charge(&self) -> Option<Charge> {
        let budget = self.directory()?.budget()?;
        Some(self.with_extras(|e| {
            let weak = self.downgrade();
            let id = self.inner.id;
            let make = || {
                budget.charge(id, move |why| {
                    if let Some(peer) = weak.upgrade() {
                        peer.close_with(GoAwayCode::MemoryBudget, why);
                    }
                })
            };
            e.charge.get_or_insert_with(make).clone()
        }))
    }

    /// The next id of a virtual channel this end opens.
    pub(crate) fn next_channel_id(&self) -> u32 {
        self.inner.mux_next.fetch_add(2, Ordering::Relaxed)
    }

    /// The router the connection serves, once its task started.
    pub(crate) fn router(&self) -> Option<Arc<crate::Router>> {
        self.inner.router.get().cloned()
    }

    /// Transfers in progress and batch streams parked here; created on first use.
    pub(crate) fn bulk_slot(&self) -> &Mutex<Option<Box<BulkState>>> {
        &self.inner.bulk
    }

    /// Parity of the virtual channel ids this end opens.
    pub(crate) fn mux_parity(&self) -> u32 {
        self.inner.mux_next.load(Ordering::Relaxed) % 2
    }

    /// The counters of the server or client the connection belongs to.
    pub(crate) fn shared_stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// The counters of the server or client this connection belongs to, as they are now
    /// (what the `stats` command answers; a router that serves its own `stats` adds to it).
    pub fn stats(&self) -> crate::StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The connection's settings (the driver's; the layers take theirs below).
    pub(crate) fn config(&self) -> &Arc<ConnectionConfig> {
        &self.inner.config
    }

    /// The settings of transfers (bulk).
    pub(crate) fn bulk_config(&self) -> &crate::bulk::config::BulkConfig {
        &self.inner.config.bulk
    }

    /// The settings of virtual channels (mux).
    pub(crate) fn mux_config(&self) -> &crate::mux::config::MuxConfig {
        &self.inner.config.mux
    }

    /// Most bytes of frames other tasks may queue for this connection.
    pub(crate) fn max_queued_bytes(&self) -> usize {
        self.inner.config.max_queued_bytes
    }

    /// How frames to this peer are encoded.
    pub(crate) fn encoding(&self) -> crate::connection::encode::Encoding {
        self.inner.config.encoding()
    }

    /// The queue through which other tasks hand frames to the connection.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Records the router the connection serves (virtual peers opened from it serve it too).
    pub(crate) fn bind_router(&self, router: Arc<crate::Router>) {
        let _ = self.inner.router.set(router);
    }
}

pub(crate) fn remote_error(code: u16, message: &str) -> CallError {
    CallError::Remote { code: ErrorCode::from_code(code), message: message.to_owned() }
}

/// A one-way command encoded once, sent to many peers with [`Peer::send_prepared`].
#[derive(Clone)]
pub struct Prepared {
    frame: Bytes,
    name: Arc<str>,
    payload: Payload,
    enc: encode::Encoding,
}

impl Prepared {
    fn new(name: &str, payload: Payload, enc: encode::Encoding) -> Result<Prepared, CallError> {
        let frame = encode::call_bytes(Kind::Send, 0, name, &payload, enc)?;
        Ok(Prepared { frame, name: name.into(), payload, enc })
    }

    /// Bytes of the encoded frame.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the frame is empty (never: a frame has a header).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("name", &self.name).field("len", &self.frame.len()).finish()
    }
}
