//! `Peer`: the handle to one connection, usable from any task or thread.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::oneshot;
use zs_wire::bulk::{StreamMode, StreamOpen, ALL_BATCHES, UNKNOWN_LEN};
use zs_wire::{DataFrame, ErrorCode, Flags, GoAwayCode, Kind};

use crate::bulk::{BulkState, OutStream, StreamOptions, Transfer};

use crate::config::ConnectionConfig;
use crate::connection::encode;
use crate::connection::outbox::{Out, Outbox, PushError};
use crate::error::CallError;
use crate::mux::{Channel, ChannelPhase, VirtualStream};
use crate::rpc::{Payload, PayloadType, Text};
use crate::secure::{ChannelInfo, Fingerprint};
use crate::session::{SessionShared, SessionStatus};
use crate::stats::Stats;
use zs_wire::mux::{ChannelKind, MuxFrame};

type ReplySender = oneshot::Sender<Result<(Flags, Bytes), CallError>>;

/// Calls waiting for their reply, and whether the connection is gone.
#[derive(Default)]
struct Pending {
    calls: HashMap<u32, ReplySender>,
    closed: Option<Box<str>>,
}

pub(crate) struct PeerShared {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    /// What the secure channel established (`None` in plaintext).
    channel: Option<Box<ChannelInfo>>,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) outbox: Outbox,
    pending: Mutex<Pending>,
    next_request: AtomicU32,
    state: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
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
}

/// A handle to one connection (either end). Cheap to clone, `Send + Sync`: call the peer,
/// send it one-way commands, keep typed per-peer state, close it.
#[derive(Clone)]
pub struct Peer {
    pub(crate) inner: Arc<PeerShared>,
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
        config: Arc<ConnectionConfig>,
        stats: Arc<Stats>,
        dialer: bool,
    ) -> Peer {
        let outbox = Outbox::new();
        Peer {
            inner: Arc::new(PeerShared {
                id,
                remote,
                local,
                channel: channel.map(Box::new),
                config,
                stats,
                outbox,
                pending: Mutex::default(),
                next_request: AtomicU32::new(1),
                state: Mutex::new(None),
                bulk: Mutex::new(None),
                session,
                mux_next: AtomicU32::new(if dialer { 1 } else { 2 }),
                router: std::sync::OnceLock::new(),
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

    /// Stores typed user state on the peer, replacing any earlier state.
    pub fn set_state<T: Any + Send + Sync>(&self, value: T) {
        *self.inner.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(value));
    }

    /// The user state, if one of type `T` is stored.
    pub fn state<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        st.downcast::<T>().ok()
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

    /// Opens a virtual channel to the other end's service `name` (see
    /// [`Router::listen`](crate::Router::listen)) and waits until it is accepted. Fails if
    /// nothing listens there, its backlog is full, or the connection closes first.
    pub async fn open_stream(&self, name: &str) -> std::io::Result<VirtualStream> {
        self.open_stream_port(name, 0).await
    }

    /// [`open_stream`](Self::open_stream) with a service port (the listener sees it).
    pub async fn open_stream_port(&self, name: &str, port: u32) -> std::io::Result<VirtualStream> {
        let channel = self.open_channel(name, port, ChannelKind::Stream)?;
        // The stream exists first: if this future is dropped, so is it, and the channel
        // is reset.
        let stream = VirtualStream::new(channel.clone(), self.clone(), name.into(), port);
        std::future::poll_fn(|cx| channel.lock().poll_opened(cx)).await?;
        Ok(stream)
    }

    /// Opens a virtual channel to the other end's service `name` that is a full peer (see
    /// [`Router::serve_channels`](crate::Router::serve_channels)): calls, sends, push and
    /// bulk work on the returned `Peer` as on a connection, and this connection's router
    /// serves the other end's calls on it.
    pub async fn open_peer(&self, name: &str) -> std::io::Result<Peer> {
        let channel = self.open_channel(name, 0, ChannelKind::Peer)?;
        let link = crate::mux::ChannelLink::new(channel.clone(), self.clone());
        std::future::poll_fn(|cx| channel.lock().poll_opened(cx)).await?;
        let router = self.inner.router.get().cloned().unwrap_or_default();
        Ok(crate::mux::serve_peer(link, self, true, router))
    }

    /// Registers a channel this end opens and queues its open frame.
    fn open_channel(&self, name: &str, port: u32, kind: ChannelKind) -> std::io::Result<Arc<Channel>> {
        let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
        let id = self.inner.mux_next.fetch_add(2, Ordering::Relaxed);
        if id > u32::MAX - 2 {
            return Err(invalid("this connection has used up its virtual channel ids"));
        }
        let windows = self.inner.config.mux.windows();
        let mut frame = bytes::BytesMut::new();
        MuxFrame::Open { channel: id, kind, port, window: windows.0, name: name.to_owned() }
            .encode(&mut frame)
            .map_err(|e| invalid(&e.to_string()))?;
        let channel = Channel::new(id, ChannelPhase::Opening, windows, 0);
        self.inner.outbox.push_control(Out::MuxOpen(channel.clone(), frame.freeze())).map_err(|_| {
            let why = self.close_reason().unwrap_or_else(|| "the connection is closed".into());
            std::io::Error::new(std::io::ErrorKind::NotConnected, why)
        })?;
        Ok(channel)
    }

    /// A peer on a virtual channel of `physical`.
    pub(crate) fn on_channel(physical: &Peer, id: u64, dialer: bool) -> Peer {
        let p = &physical.inner;
        Peer::new(
            id,
            (p.remote, p.local),
            p.channel.as_deref().cloned(),
            None,
            p.config.clone(),
            p.stats.clone(),
            dialer,
        )
    }

    /// Takes no new virtual channels on this connection, from either end (the other end is
    /// told `reason`); the channels open carry on.
    pub fn refuse_new_channels(&self, reason: &str) {
        let _ = self.inner.outbox.push_control(Out::MuxGoAway(reason.to_owned()));
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
        let (flags, body) = self.call_raw(name, p.into_payload(), timeout).await?;
        let limits = &self.inner.config.limits;
        match Payload::decode(P::FORM, flags, body, limits) {
            Ok(p) => P::from_payload(p).ok_or_else(|| CallError::BadReply("wrong reply form".into())),
            Err(why) => Err(CallError::BadReply(format!("the reply {why}"))),
        }
    }

    async fn send_payload(&self, name: &str, p: Payload) -> Result<(), CallError> {
        let frame = encode::call_bytes(Kind::Send, 0, name, &p, &self.inner.config)?;
        self.inner.stats.bump(|s| &s.commands_out);
        self.queue(frame).await
    }

    /// Queues a frame for the connection, waiting for room; fails with the close reason.
    async fn queue(&self, frame: Bytes) -> Result<(), CallError> {
        self.inner
            .outbox
            .push(frame, self.inner.config.max_queued_bytes)
            .await
            .map_err(|_| self.disconnected())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
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

    fn disconnected(&self) -> CallError {
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
        let frame = encode::call_bytes(Kind::Call, request, name, &p, &self.inner.config)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending();
            if let Some(why) = &pending.closed {
                return Err(CallError::Disconnected(why.to_string()));
            }
            pending.calls.insert(request, tx);
        }
        // Removes the entry if the call is abandoned (timeout, or the caller dropped it);
        // a reply has already removed it.
        struct Forget<'a>(&'a Peer, u32, bool);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    self.0.pending().calls.remove(&self.1);
                }
            }
        }
        let mut forget = Forget(self, request, false);
        self.inner.stats.bump(|s| &s.commands_out);
        let exchange = async {
            self.queue(frame).await?;
            let reply = rx.await;
            forget.2 = true;
            reply.unwrap_or_else(|_| Err(self.disconnected()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                self.inner.stats.bump(|s| &s.call_timeouts);
                Err(CallError::Timeout(timeout))
            }
        }
    }

    /// Hands a received reply to its waiting call. Returns false for an unknown request id
    /// (a reply that arrived after its call timed out).
    pub(crate) fn resolve(&self, request: u32, reply: Result<(Flags, Bytes), CallError>) -> bool {
        let tx = self.pending().calls.remove(&request);
        match tx {
            Some(tx) => {
                let _ = tx.send(reply);
                true
            }
            None => false,
        }
    }

    /// Marks the connection gone: every pending call and outgoing stream fails at once
    /// with `why`, parked batch streams are dropped, and nothing more can be queued.
    pub(crate) fn mark_closed(&self, why: String) {
        self.inner.outbox.close();
        if let Some(bulk) = self.bulk().take() {
            for out in bulk.outgoing.values() {
                out.finish(Err(CallError::Disconnected(why.clone())));
            }
        }
        let calls = {
            let mut p = self.pending();
            p.closed = Some(why.as_str().into());
            std::mem::take(&mut p.calls)
        };
        for (_, tx) in calls {
            let _ = tx.send(Err(CallError::Disconnected(why.clone())));
        }
    }

    /// Asks the connection to stop taking calls, finish those in flight, and close.
    pub(crate) fn shutdown(&self) {
        let _ = self.inner.outbox.push_control(Out::Shutdown);
    }
}

/// Bulk transfers (see [`crate::bulk`]).
impl Peer {
    fn bulk(&self) -> std::sync::MutexGuard<'_, Option<Box<BulkState>>> {
        self.inner.bulk.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_bulk<T>(&self, f: impl FnOnce(&mut BulkState) -> T) -> T {
        f(self.bulk().get_or_insert_with(Box::default))
    }

    /// Sends a big stream from any `AsyncRead` to a command registered with
    /// [`Router::big_stream`](crate::Router::big_stream). Runs in its own task (call from
    /// within a tokio runtime); the returned [`Transfer`] reports progress, can cancel, and
    /// resolves to the bytes sent once the receiver has verified them.
    pub fn send_big_stream<R>(&self, name: &str, reader: R, opts: StreamOptions) -> Transfer
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let open = StreamOpen {
            mode: StreamMode::Stream,
            total: opts.len.unwrap_or(UNKNOWN_LEN),
            offset: opts.offset,
            key: 0,
            name: name.to_owned(),
        };
        crate::bulk::send::start(self, open, reader, opts)
    }

    /// Sends one binary message to a command registered with
    /// [`Router::complete_buffer`](crate::Router::complete_buffer). A message over the
    /// receiver's `max_buffer_len` is refused before it is sent.
    pub fn send_complete_buffer(&self, name: &str, data: Bytes) -> Transfer {
        let len = data.len() as u64;
        let open =
            StreamOpen { mode: StreamMode::Buffer, total: len, offset: 0, key: 0, name: name.to_owned() };
        crate::bulk::send::start(self, open, std::io::Cursor::new(data), StreamOptions::with_len(len))
    }

    /// Parks `data` at the peer under `key` (a batch stream), for a later command there to
    /// take with [`take_batch`](Self::take_batch). Refused if it would exceed the peer's
    /// batch budget.
    pub fn post_batch(&self, key: u64, data: Bytes) -> Transfer {
        let len = data.len() as u64;
        let open = StreamOpen { mode: StreamMode::Batch, total: len, offset: 0, key, name: String::new() };
        crate::bulk::send::start(self, open, std::io::Cursor::new(data), StreamOptions::with_len(len))
    }

    /// Asks the peer to drop the batch streams this end parked there (`None`: all of them).
    pub async fn clear_remote_batches(&self, key: Option<u64>) -> Result<(), CallError> {
        let key = key.unwrap_or(ALL_BATCHES).to_le_bytes();
        self.queue(encode::frame_bytes(Kind::BatchClear, 0, |b| b.extend_from_slice(&key))).await
    }

    /// Takes the batch stream the peer parked here under `key`.
    pub fn take_batch(&self, key: u64) -> Option<Bytes> {
        self.with_bulk(|b| {
            let data = b.batches.remove(&key)?;
            b.batch_bytes -= data.len() as u64;
            Some(data)
        })
    }

    /// Keys of the batch streams parked here by the peer.
    pub fn batch_keys(&self) -> Vec<u64> {
        let mut keys: Vec<u64> = self.with_bulk(|b| b.batches.keys().copied().collect());
        keys.sort_unstable();
        keys
    }

    /// Drops batch streams parked here (`ALL_BATCHES` for all).
    pub(crate) fn clear_batches(&self, key: u64) {
        self.with_bulk(|b| {
            if key == ALL_BATCHES {
                b.batches.clear();
                b.batch_bytes = 0;
            } else if let Some(d) = b.batches.remove(&key) {
                b.batch_bytes -= d.len() as u64;
            }
        });
    }

    /// Reserves `n` bytes of the batch budget for an incoming batch stream.
    pub(crate) fn reserve_batch(&self, n: u64) -> Result<(), String> {
        let budget = self.inner.config.batch_budget;
        self.with_bulk(|b| {
            if b.batch_bytes + n > budget {
                return Err(format!(
                    "a batch stream of {n} bytes exceeds the budget: {} of {budget} bytes in use",
                    b.batch_bytes
                ));
            }
            b.batch_bytes += n;
            Ok(())
        })
    }

    /// Parks a received batch stream (its bytes were reserved when it was announced); a
    /// stream under an existing key replaces it.
    pub(crate) fn park_batch(&self, key: u64, data: Bytes, reserved: u64) {
        // A peer that left has dropped its bulk state (and its reservations) already.
        if !self.is_connected() {
            return;
        }
        self.with_bulk(|b| {
            b.batch_bytes = b.batch_bytes.saturating_sub(reserved) + data.len() as u64;
            if let Some(old) = b.batches.insert(key, data) {
                b.batch_bytes = b.batch_bytes.saturating_sub(old.len() as u64);
            }
        });
    }

    /// Returns a reservation of a batch stream that did not arrive.
    pub(crate) fn release_batch_reservation(&self, n: u64) {
        if self.is_connected() {
            self.with_bulk(|b| b.batch_bytes = b.batch_bytes.saturating_sub(n));
        }
    }

    pub(crate) fn register_outgoing(&self, id: u32, out: Arc<OutStream>) {
        if self.is_connected() {
            self.with_bulk(|b| b.outgoing.insert(id, out));
        } else {
            out.finish(Err(self.disconnected()));
        }
    }

    pub(crate) fn forget_outgoing(&self, id: u32) {
        self.with_bulk(|b| b.outgoing.remove(&id));
    }

    pub(crate) fn outgoing(&self, id: u32) -> Option<Arc<OutStream>> {
        self.bulk().as_ref()?.outgoing.get(&id).cloned()
    }

    /// Why the connection closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.pending().closed.as_deref().map(str::to_owned)
    }
}

/// A remote error reply as a `CallError`.
impl PeerShared {
    /// Parity of the virtual channel ids this end opens.
    pub(crate) fn mux_parity(&self) -> u32 {
        self.mux_next.load(Ordering::Relaxed) % 2
    }
}

pub(crate) fn remote_error(code: u16, message: &str) -> CallError {
    CallError::Remote { code: ErrorCode::from_code(code), message: message.to_owned() }
}
