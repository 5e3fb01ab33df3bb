//! Dispatch: what the connection does with each frame it decodes. Calls go to the router
//! (inline handlers run here, at once; async, delayed and HPC ones are held in flight),
//! replies and errors resolve pending calls, stream and mux frames go to their layers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bytes::Buf;
use futures_util::stream::FuturesUnordered;
use futures_util::FutureExt;
use zs_wire::body::{parse_code_message, split_call};
use zs_wire::bulk::{parse_batch_clear, parse_credit, StreamEnd};
use zs_wire::mux::MuxFrame;
use zs_wire::{ErrorCode, Flags, Frame, GoAwayCode, Kind, WireError};

use super::{encode, CloseReason, Connection, Step};
use crate::bulk;
use crate::error::HandlerError;
use crate::logs::Escaped;
use crate::peer::{remote_error, Peer};
use crate::rpc::{Command, Exec, Form, Payload, RawResponder};
use crate::transport::Link;

/// An async handler's result.
pub(super) struct Finished {
    pub(super) request: u32,
    pub(super) ordered: bool,
    pub(super) result: Result<Payload, HandlerError>,
}

impl<L: Link> Connection<L> {
    pub(super) fn on_frame(&mut self, frame: Frame) -> Step {
        let h = frame.header;
        if h.channel != 0 && !MuxFrame::is_mux(h.kind) {
            return Err(self.protocol_error(WireError::UnexpectedChannel(h.channel)));
        }
        match h.kind {
            Kind::Call => self.on_command(frame, false, false),
            Kind::Send => self.on_command(frame, true, false),
            Kind::Reply => {
                self.peer.resolve(h.request, Ok((h.flags, frame.body)));
                Ok(())
            }
            Kind::Error => {
                let (code, message) = self.parsed(parse_code_message(&frame.body))?;
                self.peer.resolve(h.request, Err(remote_error(code, message)));
                Ok(())
            }
            Kind::Ping => {
                encode::control(self.out.small(), Kind::Pong, h.request);
                self.local.frames_out += 1;
                Ok(())
            }
            Kind::Pong => {
                self.ping_out = false;
                Ok(())
            }
            // Taken by the session link as it passed; nothing left to do.
            Kind::SessionAck => Ok(()),
            Kind::MuxOpen
            | Kind::MuxAccept
            | Kind::MuxRefuse
            | Kind::MuxData
            | Kind::MuxCredit
            | Kind::MuxClose
            | Kind::MuxReset
            | Kind::MuxGoAway => {
                let mux = self.mux.get_or_insert_with(Box::default);
                let r = mux.on_frame(&h, frame.body, &self.peer, &*self.router, self.out.small());
                if let Some(link) = self.parsed(r)? {
                    super::virtual_peer::serve(link, &self.peer, false, self.router.clone());
                }
                Ok(())
            }
            Kind::StreamOpen => self.on_stream_open(frame),
            Kind::StreamData => {
                let compressed = h.flags.contains(Flags::COMPRESSED);
                self.deliver(h.request, bulk::Incoming::Data { bytes: frame.body, compressed })
            }
            Kind::StreamEnd => {
                let end = self.parsed(StreamEnd::parse(&frame.body))?;
                self.deliver(h.request, bulk::Incoming::End(end))
            }
            Kind::StreamCancel => {
                let (_, why) = self.parsed(parse_code_message(&frame.body))?;
                self.deliver(h.request, bulk::Incoming::Cancel(why.to_owned()))
            }
            Kind::StreamCredit => {
                let n = self.parsed(parse_credit(&frame.body))?;
                if let Some(out) = self.peer.outgoing(h.request) {
                    out.grant(n);
                }
                Ok(())
            }
            Kind::StreamResult => {
                let (code, message) = self.parsed(parse_code_message(&frame.body))?;
                if let Some(out) = self.peer.outgoing(h.request) {
                    out.finish(if code == 0 { Ok(()) } else { Err(remote_error(code, message)) });
                }
                Ok(())
            }
            Kind::BatchClear => {
                let key = self.parsed(parse_batch_clear(&frame.body))?;
                self.peer.clear_batches(key);
                Ok(())
            }
            Kind::GoAway => {
                let (code, message) = self.parsed(parse_code_message(&frame.body))?;
                Err(CloseReason::PeerGoAway {
                    code: GoAwayCode::from_code(code),
                    message: message.to_owned(),
                })
            }
        }
    }

    pub(super) fn count_command(&mut self, direct: bool, flags: Flags) {
        let s = &mut self.local;
        match (direct, Form::of(flags)) {
            (false, Form::Console) => s.console_in += 1,
            (false, Form::Stream) => s.stream_in += 1,
            (true, Form::Console) => s.direct_console_in += 1,
            (true, Form::Stream) => s.direct_stream_in += 1,
        }
    }

    pub(super) fn on_command(&mut self, frame: Frame, direct: bool, from_queue: bool) -> Step {
        // The name is read where it lies and the payload taken by moving the body past it:
        // no shared-count traffic for either.
        let (name, payload_at) = self.parsed(split_call(&frame.body))?;
        let request = frame.header.request;
        if direct != (request == 0) {
            let why = if direct { "a send carries a request id" } else { "a call has no request id" };
            return self.parsed(Err(WireError::Malformed { what: "command frame", why }));
        }
        if !from_queue {
            self.count_command(direct, frame.header.flags);
        }
        // Borrowed, not cloned: a shared `Arc<Command>` cloned per call bounced its count
        // between the cores (every connection of a process calls the same few commands).
        // SAFETY: `self.router` is set once, when the connection is made, and an
        // `Arc<Router>` gives no mutable access: the router, and the command its map owns,
        // live at least as long as `self`, which this call borrows throughout.
        let router: &crate::Router = unsafe { &*std::sync::Arc::as_ptr(&self.router) };
        let Some(cmd) = router.get(name) else {
            self.peer.shared_stats().bump(|s| &s.unknown_commands);
            let msg = format!("unknown command: {name}");
            return self.refuse(request, ErrorCode::UnknownCommand, &msg);
        };
        if matches!(cmd.exec, Exec::BigStream(_) | Exec::Buffer(_)) {
            let msg = format!("command `{}` receives bulk transfers, not calls", cmd.name);
            return self.refuse(request, ErrorCode::BadPayload, &msg);
        }
        if cmd.direct != direct {
            let msg = if cmd.direct {
                format!("command `{}` is one-way: send it, do not call it", cmd.name)
            } else {
                format!("command `{}` replies: call it, do not send it", cmd.name)
            };
            return self.refuse(request, ErrorCode::BadPayload, &msg);
        }
        if self.draining.is_some() && !direct {
            return self.refuse(request, ErrorCode::ShuttingDown, "shutting down");
        }
        let ordered = cmd.ordered || self.config.ordered;
        if ordered && self.ordered_busy {
            self.ordered_queue.push_back(frame);
            return Ok(());
        }
        if let Err(e) = router.admit(&self.peer, cmd) {
            if let Some(m) = &cmd.meter {
                m.record(std::time::Duration::ZERO, true);
            }
            return self.refuse(request, e.code, &e.message);
        }
        let flags = frame.header.flags;
        let mut body = frame.body;
        body.advance(payload_at);
        let payload = match Payload::decode(cmd.form, flags, body, &self.config.limits) {
            Ok(p) => p,
            Err(why) => {
                if let Some(m) = &cmd.meter {
                    m.record(std::time::Duration::ZERO, true);
                }
                let msg = format!("command `{}` {why}", cmd.name);
                return self.refuse(request, ErrorCode::BadPayload, &msg);
            }
        };
        self.start(cmd, request, ordered, payload);
        Ok(())
    }

    /// Answers a call with an error, or logs a refused direct command; the connection
    /// goes on.
    pub(super) fn refuse(&mut self, request: u32, code: ErrorCode, message: &str) -> Step {
        if request == 0 {
            tracing::debug!(peer = self.peer.id(), %code, message = %Escaped(message), "direct command refused");
        } else {
            self.write_result(request, &Err(HandlerError::with_code(code, message)));
        }
        Ok(())
    }

    pub(super) fn start(&mut self, cmd: &Command, request: u32, ordered: bool, payload: Payload) {
        let peer = &self.peer;
        match &cmd.exec {
            Exec::Inline(f) => {
                // Within a batch of frames, a call starts when the previous metered one
                // replied: its frame's decoding counts, and one clock read is saved.
                let start = cmd.meter.as_ref().map(|_| self.meter_clock.unwrap_or_else(Instant::now));
                let r = catch_unwind(AssertUnwindSafe(|| f(peer, payload)))
                    .unwrap_or_else(|_| Err(panicked(peer, &cmd.name)));
                if let (Some(m), Some(start)) = (&cmd.meter, start) {
                    let end = Instant::now();
                    m.record(end - start, r.is_err());
                    self.meter_clock = Some(end);
                }
                match (request, r) {
                    (0, Err(e)) => {
                        tracing::warn!(peer = peer.id(), command = %cmd.name, error = %e, "direct command failed")
                    }
                    (0, Ok(_)) => {}
                    (request, r) => self.write_result(request, &r),
                }
            }
            Exec::Async(f) => match catch_unwind(AssertUnwindSafe(|| f(peer.clone(), payload))) {
                Ok(fut) => {
                    let (peer, name) = (peer.clone(), cmd.name.clone());
                    let metered = cmd.meter.clone().map(|m| (m, Instant::now()));
                    let task = async move {
                        let result = AssertUnwindSafe(fut)
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| Err(panicked(&peer, &name)));
                        if let Some((m, start)) = metered {
                            m.record(start.elapsed(), result.is_err());
                        }
                        Finished { request, ordered, result }
                    };
                    self.tasks.get_or_insert_with(FuturesUnordered::new).push(task.boxed());
                    self.hold(ordered);
                }
                Err(_) => {
                    let e = panicked(peer, &cmd.name);
                    self.write_result(request, &Err(e));
                }
            },
            Exec::Delayed(f) => {
                let responder = RawResponder::new(peer.clone(), request, ordered, cmd.meter.as_ref());
                self.hold(ordered);
                // A panic drops the responder while unwinding; it answers `HandlerPanicked`.
                let peer = &self.peer;
                if catch_unwind(AssertUnwindSafe(|| f(peer, payload, responder))).is_err() {
                    tracing::error!(peer = peer.id(), command = %cmd.name, "handler panicked");
                }
            }
            Exec::BigStream(_) | Exec::Buffer(_) => unreachable!("refused in on_command"),
            Exec::Hpc(f) => {
                let responder = RawResponder::new(peer.clone(), request, ordered, cmd.meter.as_ref());
                self.hold(ordered);
                let (f, name) = (f.clone(), cmd.name.clone());
                tokio::task::spawn_blocking(move || {
                    let peer = responder.peer().clone();
                    if !peer.is_connected() {
                        return responder.skip();
                    }
                    let r = catch_unwind(AssertUnwindSafe(|| f(&peer, payload)))
                        .unwrap_or_else(|_| Err(panicked(&peer, &name)));
                    responder.finish(r);
                });
            }
        }
    }

    /// A call is now in flight off the inline path.
    pub(super) fn hold(&mut self, ordered: bool) {
        self.in_flight += 1;
        if ordered {
            self.ordered_busy = true;
        }
    }

    /// A call in flight has finished.
    pub(super) fn release(&mut self, ordered: bool) -> Step {
        self.in_flight -= 1;
        if ordered {
            self.ordered_busy = false;
            while !self.ordered_busy {
                let Some(frame) = self.ordered_queue.pop_front() else { break };
                let direct = frame.header.kind == Kind::Send;
                self.on_command(frame, direct, true)?;
            }
        }
        Ok(())
    }

    pub(super) fn write_result(&mut self, request: u32, r: &Result<Payload, HandlerError>) {
        if r.is_err() {
            self.peer.shared_stats().bump(|s| &s.errors_out);
        }
        self.local.frames_out += 1;
        encode::result(self.out.small(), request, r, self.config.encoding());
    }

    pub(super) fn on_finished(&mut self, f: Finished) -> Step {
        if f.request != 0 {
            self.write_result(f.request, &f.result);
        }
        self.release(f.ordered)
    }
}

fn panicked(peer: &Peer, command: &str) -> HandlerError {
    peer.shared_stats().bump(|s| &s.handler_panics);
    tracing::error!(peer = peer.id(), command, "handler panicked");
    HandlerError::with_code(ErrorCode::HandlerPanicked, format!("handler of `{command}` panicked"))
}
