//! A stream's end-to-end hash (XXH3-128 or BLAKE3, as it declared), computed in order on
//! the blocking pool a batch at a time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use zs_wire::bulk::StreamCheck;

/// A hash in progress of one of the checks a stream may declare.
#[derive(Clone)]
pub(crate) enum StreamHasher {
    Xxh3(Box<twox_hash::XxHash3_128>),
    Blake3(Box<blake3::Hasher>),
}

impl StreamHasher {
    /// A new hash for `check`.
    pub(crate) fn new(check: StreamCheck) -> Self {
        match check {
            StreamCheck::Xxh3 => StreamHasher::Xxh3(Box::default()),
            StreamCheck::Blake3 => StreamHasher::Blake3(Box::default()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamHasher::Xxh3(h) => h.write(bytes),
            StreamHasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    /// The hash as a stream's end carries it: BLAKE3, or XXH3-128 (little-endian) then
    /// zeros.
    pub(crate) fn finalize(&self) -> [u8; 32] {
        match self {
            StreamHasher::Xxh3(h) => zs_wire::bulk::xxh3_end_hash(h.finish_128()),
            StreamHasher::Blake3(h) => *h.finalize().as_bytes(),
        }
    }
}

/// A stream's hash, computed in order on the blocking pool a batch at a time, so that
/// hashing overlaps the connection's socket work instead of sharing its worker.
pub(crate) struct HashPipeline {
    check: StreamCheck,
    /// The hasher, while no batch is being hashed.
    idle: Option<StreamHasher>,
    /// The batch being hashed; it hands the hasher back.
    busy: Option<tokio::task::JoinHandle<StreamHasher>>,
    busy_bytes: u64,
    queued: Vec<Bytes>,
    queued_bytes: u64,
}

impl HashPipeline {
    /// The pipeline of a stream checked with `check`.
    pub(crate) fn new(check: StreamCheck) -> Self {
        HashPipeline {
            check,
            idle: Some(StreamHasher::new(check)),
            busy: None,
            busy_bytes: 0,
            queued: Vec::new(),
            queued_bytes: 0,
        }
    }
}

/// Batches smaller than this are hashed in place: a hand-off would cost more. XXH3 runs at
/// tens of GB/s: its batches are always hashed in place.
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
                    Poll::Ready(h) => self.idle = Some(h.unwrap_or_else(|_| StreamHasher::new(self.check))),
                    Poll::Pending if self.busy_bytes + self.queued_bytes <= behind => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
                self.busy = None;
                self.busy_bytes = 0;
            }
            if self.queued.is_empty() {
                return Poll::Ready(());
            }
            let mut hasher = self.idle.take().unwrap_or_else(|| StreamHasher::new(self.check));
            let batch = std::mem::take(&mut self.queued);
            let bytes = std::mem::take(&mut self.queued_bytes);
            if bytes < HASH_INLINE_MAX || self.check == StreamCheck::Xxh3 {
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
    pub(crate) fn finalize(&self) -> [u8; 32] {
        self.idle.as_ref().map_or_else(|| StreamHasher::new(self.check).finalize(), StreamHasher::finalize)
    }

    /// The check it computes.
    pub(crate) fn check(&self) -> StreamCheck {
        self.check
    }
}
