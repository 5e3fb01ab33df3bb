//! Admission of incoming streams (big streams, complete buffers, batch streams): every size
//! and count limit is checked on the announcement, before anything is allocated, and each
//! accepted stream's frames are routed to the task that consumes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use zs_wire::bulk::{StreamMode, StreamOpen, UNKNOWN_LEN};
use zs_wire::{ErrorCode, Frame, WireError};

use super::{encode, Connection, Step};
use crate::bulk;
use crate::logs::Escaped;
use crate::rpc::Exec;
use crate::transport::Link;

/// Incoming streams of a connection.
#[derive(Default)]
pub(super) struct Streams {
    entries: HashMap<u32, bulk::Entry>,
    /// Bytes of complete buffers being received (bounded by `max_buffer_len`).
    buffers: u64,
    /// Streams open, shared with their consumers, which split the receive window by it.
    open: Arc<AtomicUsize>,
}

impl<L: Link> Connection<L> {
    pub(super) fn on_stream_open(&mut self, frame: Frame) -> Step {
        let id = frame.header.request;
        let open = self.parsed(StreamOpen::parse(&frame.body))?;
        let bad = |why| Err(WireError::Malformed { what: "stream open", why });
        if id == 0 {
            return self.parsed(bad("stream id 0"));
        }
        if self.streams.as_ref().is_some_and(|s| s.entries.contains_key(&id)) {
            return self.parsed(bad("stream id in use"));
        }
        self.peer.shared_stats().bump(|s| &s.streams_in);
        match self.admit_stream(&open) {
            Ok((sink, reserved)) => {
                let streams = self.streams.get_or_insert_with(Box::default);
                streams.open.fetch_add(1, Ordering::Relaxed);
                let entry = bulk::accept(&self.peer, id, open, sink, reserved, streams.open.clone());
                streams.buffers += reserved;
                streams.entries.insert(id, entry);
            }
            Err((code, message)) => {
                let said = Escaped(&message);
                tracing::debug!(peer = self.peer.id(), stream = id, %code, message = %said, "stream refused");
                self.peer.shared_stats().bump(|s| &s.errors_out);
                self.local.frames_out += 1;
                encode::stream_result(self.out.small(), id, code.code(), &message);
            }
        }
        Ok(())
    }

    /// Decides whether an announced stream is taken, and by what; checks every size limit
    /// before anything is allocated for it.
    pub(super) fn admit_stream(
        &mut self,
        open: &StreamOpen,
    ) -> Result<(bulk::Sink, u64), (ErrorCode, String)> {
        let c = &self.config.bulk;
        let (count, buffers) = self.streams.as_deref().map_or((0, 0), |s| (s.entries.len(), s.buffers));
        if count >= c.max_streams {
            return Err((ErrorCode::Overloaded, format!("more than {} incoming streams", c.max_streams)));
        }
        if open.check.code() < c.min_stream_check.code() {
            let (theirs, ours) = (open.check.name(), c.min_stream_check.name());
            let why = format!("the stream is checked with {theirs}; this end requires {ours}");
            return Err((ErrorCode::BadPayload, why));
        }
        let known = (open.total != UNKNOWN_LEN).then_some(open.total);
        if open.mode == StreamMode::Batch {
            let total = known.ok_or((ErrorCode::BadPayload, "a batch stream needs a known length".into()))?;
            self.peer.reserve_batch(total).map_err(|m| (ErrorCode::TooLarge, m))?;
            return Ok((bulk::Sink::Batch, 0));
        }
        let Some(cmd) = self.router.get(&open.name) else {
            self.peer.shared_stats().bump(|s| &s.unknown_commands);
            return Err((ErrorCode::UnknownCommand, format!("unknown command: {}", open.name)));
        };
        if let Err(e) = self.router.admit(&self.peer, cmd) {
            return Err((e.code, e.message));
        }
        match (&cmd.exec, open.mode) {
            (Exec::BigStream(h), StreamMode::Stream) => Ok((bulk::Sink::Handler(h.clone()), 0)),
            (Exec::Buffer(h), StreamMode::Buffer) => {
                let total =
                    known.ok_or((ErrorCode::BadPayload, "a complete buffer needs a known length".into()))?;
                if total > c.max_buffer_len {
                    let msg =
                        format!("a buffer of {total} bytes exceeds the limit of {} bytes", c.max_buffer_len);
                    return Err((ErrorCode::TooLarge, msg));
                }
                if buffers + total > c.max_buffer_len {
                    let msg = format!("complete buffers in progress would exceed {} bytes", c.max_buffer_len);
                    return Err((ErrorCode::Overloaded, msg));
                }
                Ok((bulk::Sink::Buffer(h.clone()), total))
            }
            (_, mode) => {
                let what = if mode == StreamMode::Stream { "big streams" } else { "complete buffers" };
                Err((ErrorCode::BadPayload, format!("command `{}` does not take {what}", cmd.name)))
            }
        }
    }

    /// Routes a stream frame to its receiver; frames of streams already refused or
    /// finished are dropped.
    pub(super) fn deliver(&mut self, id: u32, item: bulk::Incoming) -> Step {
        let Some(entry) = self.streams.as_mut().and_then(|s| s.entries.get_mut(&id)) else { return Ok(()) };
        let delivered = entry.deliver(item).map_err(|why| WireError::Malformed { what: "stream", why });
        self.parsed(delivered)
    }

    /// The consumer of stream `id` is done with it: forget it and free its budget.
    pub(super) fn stream_done(&mut self, id: u32) {
        if let Some(s) = self.streams.as_mut() {
            if let Some(e) = s.entries.remove(&id) {
                s.buffers -= e.reserved;
                s.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
