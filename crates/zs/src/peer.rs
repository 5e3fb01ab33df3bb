//! `Peer`: the handle to one connection, usable from any task or thread.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use zs_wire::{DataFrame, ErrorCode, Flags, GoAwayCode, Kind};

use crate::config::ConnectionConfig;
use crate::error::CallError;
use crate::rpc::outbox::{Out, Outbox, PushError};
use crate::rpc::{encode, Payload, PayloadType, Text};
use crate::stats::Stats;

type ReplySender = oneshot::Sender<Result<(Flags, Bytes), CallError>>;

/// Calls waiting for their reply, and whether the connection is gone.
#[derive(Default)]
struct Pending {
    calls: HashMap<u32, ReplySender>,
    closed: Option<String>,
}

pub(crate) struct PeerShared {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) outbox: Outbox,
    pending: Mutex<Pending>,
    next_request: AtomicU32,
    state: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
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
        remote: SocketAddr,
        local: SocketAddr,
        config: Arc<ConnectionConfig>,
        stats: Arc<Stats>,
    ) -> Peer {
        let outbox = Outbox::new(config.max_queued_bytes);
        Peer {
            inner: Arc::new(PeerShared {
                id,
                remote,
                local,
                config,
                stats,
                outbox,
                pending: Mutex::default(),
                next_request: AtomicU32::new(1),
                state: Mutex::new(None),
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
        self.inner.outbox.push(frame).await.map_err(|_| self.disconnected())
    }

    /// Broadcast path: queue an already-encoded frame without waiting. A full queue
    /// closes this (slow) peer.
    pub(crate) fn offer(&self, frame: Bytes) -> Result<(), CallError> {
        match self.inner.outbox.try_push(frame) {
            Ok(()) => Ok(()),
            Err((PushError::Closed, _)) => Err(self.disconnected()),
            Err((PushError::Full, _)) => {
                self.close_with(GoAwayCode::SlowConsumer, "outbound queue full");
                Err(CallError::QueueFull)
            }
        }
    }

    fn disconnected(&self) -> CallError {
        let p = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        CallError::Disconnected(p.closed.clone().unwrap_or_else(|| "connection closed".into()))
    }

    fn next_request(&self) -> u32 {
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
            let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &pending.closed {
                return Err(CallError::Disconnected(why.clone()));
            }
            pending.calls.insert(request, tx);
        }
        // Removes the entry if the call is abandoned (timeout, or the caller dropped it);
        // a reply has already removed it.
        struct Forget<'a>(&'a Peer, u32, bool);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    let mut p = self.0.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
                    p.calls.remove(&self.1);
                }
            }
        }
        let mut forget = Forget(self, request, false);
        self.inner.stats.bump(|s| &s.commands_out);
        let exchange = async {
            self.inner.outbox.push(frame).await.map_err(|_| self.disconnected())?;
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
        let tx = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).calls.remove(&request);
        match tx {
            Some(tx) => {
                let _ = tx.send(reply);
                true
            }
            None => false,
        }
    }

    /// Marks the connection gone: every pending call fails at once with `why`, and
    /// nothing more can be queued.
    pub(crate) fn mark_closed(&self, why: String) {
        self.inner.outbox.close();
        let calls = {
            let mut p = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.closed = Some(why.clone());
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

/// A remote error reply as a `CallError`.
pub(crate) fn remote_error(code: u16, message: &str) -> CallError {
    CallError::Remote { code: ErrorCode::from_code(code), message: message.to_owned() }
}
