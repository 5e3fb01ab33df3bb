//! Bulk transfers as a [`Peer`] sends and keeps them (see [`crate::bulk`]).

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use zs_wire::bulk::{StreamCheck, StreamMode, StreamOpen, ALL_BATCHES, UNKNOWN_LEN};
use zs_wire::Kind;

use super::{send, BulkState, OutStream, StreamOptions, Transfer};
use crate::budget::Held;
use crate::connection::encode;
use crate::error::CallError;
use crate::peer::Peer;
use crate::sync::Recover;

/// Bulk transfers.
impl Peer {
    fn bulk(&self) -> std::sync::MutexGuard<'_, Option<Box<BulkState>>> {
        self.bulk_slot().lock_or_recover()
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
            check: opts.check,
            total: opts.len.unwrap_or(UNKNOWN_LEN),
            offset: opts.offset,
            key: opts.ticket.unwrap_or(0),
            name: name.to_owned(),
        };
        send::start(self, open, reader, opts)
    }

    /// Sends one binary message to a command registered with
    /// [`Router::complete_buffer`](crate::Router::complete_buffer). A message over the
    /// receiver's `max_buffer_len` is refused before it is sent.
    pub fn send_complete_buffer(&self, name: &str, data: Bytes) -> Transfer {
        self.send_complete_buffer_ticketed(name, data, None)
    }

    /// [`send_complete_buffer`](Self::send_complete_buffer) with the ticket of the call that
    /// prepared it (see [`StreamOptions::ticket`]).
    pub fn send_complete_buffer_ticketed(&self, name: &str, data: Bytes, ticket: Option<u64>) -> Transfer {
        let len = data.len() as u64;
        let key = ticket.unwrap_or(0);
        let (mode, check) = (StreamMode::Buffer, StreamCheck::default());
        let open = StreamOpen { mode, check, total: len, offset: 0, key, name: name.to_owned() };
        send::start(self, open, std::io::Cursor::new(data), StreamOptions::with_len(len))
    }

    /// Parks `data` at the peer under `key` (a batch stream), for a later command there to
    /// take with [`take_batch`](Self::take_batch). Refused if it would exceed the peer's
    /// batch budget.
    pub fn post_batch(&self, key: u64, data: Bytes) -> Transfer {
        let len = data.len() as u64;
        let (mode, check) = (StreamMode::Batch, StreamCheck::default());
        let open = StreamOpen { mode, check, total: len, offset: 0, key, name: String::new() };
        send::start(self, open, std::io::Cursor::new(data), StreamOptions::with_len(len))
    }

    /// Asks the peer to drop the batch streams this end parked there (`None`: all of them).
    pub async fn clear_remote_batches(&self, key: Option<u64>) -> Result<(), CallError> {
        let key = key.unwrap_or(ALL_BATCHES).to_le_bytes();
        self.queue(encode::frame_bytes(Kind::BatchClear, 0, |b| b.extend_from_slice(&key))).await
    }

    /// Takes the batch stream the peer parked here under `key`.
    pub fn take_batch(&self, key: u64) -> Option<Bytes> {
        self.with_bulk(|b| {
            let (data, _held) = b.batches.remove(&key)?;
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
            } else if let Some((d, _held)) = b.batches.remove(&key) {
                b.batch_bytes -= d.len() as u64;
            }
        });
    }

    /// Reserves `n` bytes of the batch budget for an incoming batch stream.
    pub(crate) fn reserve_batch(&self, n: u64) -> Result<(), String> {
        let budget = self.bulk_config().batch_budget;
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
    pub(crate) fn park_batch(&self, key: u64, data: Bytes, held: Held, reserved: u64) {
        // A peer that left has dropped its bulk state (and its reservations) already.
        if !self.is_connected() {
            return;
        }
        self.with_bulk(|b| {
            b.batch_bytes = b.batch_bytes.saturating_sub(reserved) + data.len() as u64;
            if let Some((old, _held)) = b.batches.insert(key, (data, held)) {
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
}
