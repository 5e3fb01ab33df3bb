//! `Responder`: answers a call later, from any task or thread.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use zs_wire::ErrorCode;

use super::{IntoReply, Meter, Payload, PayloadType};
use crate::connection::encode;
use crate::connection::outbox::Out;
use crate::error::HandlerError;
use crate::peer::Peer;

/// The untyped responder the connection hands to delayed, async and HPC handlers.
pub(crate) struct RawResponder {
    peer: Peer,
    /// 0 for a direct command: nothing is sent, only the in-flight slot is released.
    request: u32,
    ordered: bool,
    done: bool,
    /// The command's meter, and when the call started.
    metered: Option<(Arc<Meter>, Instant)>,
}

impl RawResponder {
    pub(crate) fn new(peer: Peer, request: u32, ordered: bool, meter: Option<&Arc<Meter>>) -> Self {
        let metered = meter.map(|m| (m.clone(), Instant::now()));
        RawResponder { peer, request, ordered, done: false, metered }
    }

    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Releases the in-flight slot without replying (the peer is gone).
    pub(crate) fn skip(mut self) {
        self.done = true;
        let _ = self.peer.outbox().push_control(Out::Done { frame: None, ordered: self.ordered });
    }

    /// Sends the result (if the call expects one) and releases the in-flight slot.
    pub(crate) fn finish(mut self, result: Result<Payload, HandlerError>) {
        self.send(result);
    }

    fn send(&mut self, result: Result<Payload, HandlerError>) {
        self.done = true;
        if let Some((meter, start)) = &self.metered {
            meter.record(start.elapsed(), result.is_err());
        }
        let frame = (self.request != 0).then(|| {
            if result.is_err() {
                self.peer.shared_stats().bump(|s| &s.errors_out);
            }
            encode::result_bytes(self.request, &result, self.peer.encoding())
        });
        if result.is_err() && self.request == 0 {
            tracing::warn!(peer = self.peer.id(), error = ?result.err(), "direct command handler failed");
        }
        // A closed connection is fine: the reply has nowhere to go (skip it).
        let _ = self.peer.outbox().push_control(Out::Done { frame, ordered: self.ordered });
    }
}

impl Drop for RawResponder {
    fn drop(&mut self) {
        if !self.done {
            let error = if std::thread::panicking() {
                self.peer.shared_stats().bump(|s| &s.handler_panics);
                HandlerError::with_code(ErrorCode::HandlerPanicked, "handler panicked")
            } else {
                HandlerError::with_code(ErrorCode::NoReply, "handler dropped its responder without replying")
            };
            self.send(Err(error));
        }
    }
}

/// Answers one call later, from any task or thread. Dropping it without answering sends
/// the caller a `NoReply` error, never silence.
pub struct Responder<P> {
    raw: RawResponder,
    _form: PhantomData<fn(P)>,
}

impl<P: PayloadType> Responder<P> {
    pub(crate) fn new(raw: RawResponder) -> Self {
        Responder { raw, _form: PhantomData }
    }

    /// Sends the reply (or the error a `Result` holds).
    pub fn reply(self, reply: impl IntoReply<P>) {
        self.raw.finish(reply.into_reply().map(P::into_payload));
    }

    /// Sends an application error.
    pub fn error(self, message: impl Into<String>) {
        self.raw.finish(Err(HandlerError::new(message)));
    }

    /// Whether the caller is still connected (a reply to a gone peer is skipped).
    pub fn is_connected(&self) -> bool {
        self.raw.peer.is_connected()
    }

    /// The peer that made the call.
    pub fn peer(&self) -> &Peer {
        self.raw.peer()
    }
}
