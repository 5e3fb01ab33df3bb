//! The BLAKE3 of a stream, computed in order on the blocking pool a batch at a time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

/// The BLAKE3 of a stream, computed in order on the blocking pool a batch at a time, so
/// that hashing overlaps the connection's socket work instead of sharing its worker.
pub(crate) struct HashPipeline {
    /// The hasher, while no batch is being hashed.
    idle: Option<blake3::Hasher>,
    /// The batch being hashed; it hands the hasher back.
    busy: Option<tokio::task::JoinHandle<blake3::Hasher>>,
    busy_bytes: u64,
    queued: Vec<Bytes>,
    queued_bytes: u64,
}

impl Default for HashPipeline {
    fn default() -> Self {
        HashPipeline {
            idle: Some(blake3::Hasher::new()),
            busy: None,
            busy_bytes: 0,
            queued: Vec::new(),
            queued_bytes: 0,
        }
    }
}

/// Batches smaller than this are hashed in place: a hand-off would cost more.
const HASH_INLINE_MAX: u64 = 64 << 10;

impl HashPipeline {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.queued_bytes += chunk.len() as u64;
        self.queued.push(chunk);
    }

    /// Keeps the hashing going; ready once at most `behind` bytes are still unhashed.
    pub(crate) fn poll_within(&mut self, cx: &mut Context<'_>, behind: u64) -> Poll<()> {
        loop {
            if let Some(job) = self.busy.as_mut() {
                match Pin::new(job).poll(cx) {
                    // A job lost at runtime shutdown leaves a fresh hasher: a mismatch.
                    Poll::Ready(h) => self.idle = Some(h.unwrap_or_else(|_| blake3::Hasher::new())),
                    Poll::Pending if self.busy_bytes + self.queued_bytes <= behind => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
                self.busy = None;
                self.busy_bytes = 0;
            }
            if self.queued.is_empty() {
                return Poll::Ready(());
            }
            let mut hasher = self.idle.take().unwrap_or_default();
            let batch = std::mem::take(&mut self.queued);
            let bytes = std::mem::take(&mut self.queued_bytes);
            if bytes < HASH_INLINE_MAX {
                batch.iter().for_each(|c| {
                    hasher.update(c);
                });
                self.idle = Some(hasher);
                continue;
            }
            self.busy_bytes = bytes;
            self.busy = Some(tokio::task::spawn_blocking(move || {
                batch.iter().for_each(|c| {
                    hasher.update(c);
                });
                hasher
            }));
        }
    }

    /// The hash so far (call once everything is hashed).
    pub(crate) fn finalize(&self) -> blake3::Hash {
        self.idle.as_ref().map_or_else(|| blake3::Hasher::new().finalize(), blake3::Hasher::finalize)
    }
}
