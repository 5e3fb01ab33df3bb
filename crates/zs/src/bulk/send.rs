//! Sending a stream: a task per transfer reads the source chunk by chunk, hashes it,
//! compresses what pays, waits for credit and queues each chunk in the bulk lane.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zs_wire::body::put_code_message;
use zs_wire::bulk::{StreamEnd, StreamOpen, INITIAL_WINDOW};
use zs_wire::{ErrorCode, Flags, Header, Kind, HEADER_LEN};

use super::hash::HashPipeline;
use super::state::{OutStream, Stop};
use super::{Compression, Progress, StreamOptions, MAX_CHUNK};
use crate::connection::encode;
use crate::error::CallError;
use crate::peer::Peer;

/// A transfer in progress. Await it (or [`finish`](Self::finish)) for the outcome: the
/// bytes sent once the receiver has verified them, or why not.
pub struct Transfer {
    task: JoinHandle<Result<u64, CallError>>,
    progress: watch::Receiver<Progress>,
    out: Arc<OutStream>,
}

impl Transfer {
    /// How far it has got.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// A receiver of progress updates.
    pub fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Stops the transfer; the receiver is told `reason` and the transfer fails with
    /// [`CallError::Cancelled`].
    pub fn cancel(&self, reason: &str) {
        self.out.cancel(reason);
    }

    /// Waits for the outcome.
    pub async fn finish(self) -> Result<u64, CallError> {
        self.task.await.unwrap_or_else(|e| Err(CallError::Disconnected(format!("transfer task failed: {e}"))))
    }
}

impl IntoFuture for Transfer {
    type Output = Result<u64, CallError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.finish())
    }
}

/// Starts a transfer task (needs a tokio runtime).
pub(crate) fn start<R>(peer: &Peer, open: StreamOpen, reader: R, opts: StreamOptions) -> Transfer
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let id = peer.next_request();
    let out = OutStream::new(u64::from(INITIAL_WINDOW));
    let (tx, progress) = watch::channel(Progress { done: 0, total: opts.len });
    let (peer, task_out) = (peer.clone(), out.clone());
    let task = tokio::spawn(async move {
        peer.register_outgoing(id, task_out.clone());
        let r = Sender { peer: &peer, id, out: &task_out, progress: tx }.run(open, reader, opts).await;
        peer.forget_outgoing(id);
        r
    });
    Transfer { task, progress, out }
}

struct Sender<'a> {
    peer: &'a Peer,
    id: u32,
    out: &'a OutStream,
    progress: watch::Sender<Progress>,
}

impl Sender<'_> {
    fn frame(&self, kind: Kind, body: impl FnOnce(&mut BytesMut)) -> Bytes {
        encode::frame_bytes(kind, self.id, body)
    }

    /// Queues a frame in the bulk lane, after the chunks before it.
    async fn push_bulk(&self, frame: Bytes) -> Result<(), CallError> {
        let max = self.peer.bulk_config().max_queued_bulk_bytes;
        self.peer.outbox().push_bulk(frame, max).await.map_err(|_| self.gone())
    }

    fn gone(&self) -> CallError {
        CallError::Disconnected(self.peer.close_reason().unwrap_or_else(|| "connection closed".into()))
    }

    /// Tells the receiver this end gives up, then fails with `err`.
    async fn abandon(&self, err: CallError) -> CallError {
        let cancel = self.frame(Kind::StreamCancel, |b| {
            put_code_message(b, ErrorCode::Cancelled.code(), &err.to_string())
        });
        let _ = self.push_bulk(cancel).await;
        err
    }

    /// What an early stop means for this end.
    async fn stopped(&self, stop: Stop, sent: u64) -> CallError {
        match stop {
            Stop::Answered(Err(e)) => e,
            Stop::Answered(Ok(())) => CallError::Remote {
                code: ErrorCode::Cancelled,
                message: format!("receiver finished after {sent} bytes, before the end"),
            },
            Stop::Cancelled(why) => self.abandon(CallError::Cancelled(why)).await,
        }
    }

    async fn run<R: AsyncRead + Unpin>(
        self,
        open: StreamOpen,
        mut reader: R,
        opts: StreamOptions,
    ) -> Result<u64, CallError> {
        let open_frame = self.frame(Kind::StreamOpen, |b| {
            let _ = open.encode(b);
        });
        if let Err(e) = open.encode(&mut BytesMut::new()) {
            return Err(CallError::Encode(e));
        }
        // The announcement goes in the bulk lane, the one its chunks take: through the
        // small-frame lane it could be overtaken by the first chunk, which the receiver
        // would drop as data for a stream it does not know.
        self.push_bulk(open_frame).await?;
        let chunk = opts.chunk_size.clamp(1, MAX_CHUNK);
        // BLAKE3 runs on the blocking pool beside this task, up to two chunks behind.
        let mut hasher = opts.hash.is_none().then(|| HashPipeline::new(open.check));
        let (mut sent, mut incompressible) = (0u64, 0u32);
        let mut ring = ChunkRing::default();
        loop {
            // The chunk is read straight after room for its frame header: no copy.
            let mut buf = ring.take(HEADER_LEN + chunk);
            buf.put_bytes(0, HEADER_LEN);
            while buf.len() < HEADER_LEN + chunk {
                let read = tokio::select! {
                    r = reader.read_buf(&mut buf) => r,
                    why = self.out.wait_cancel() => return Err(self.abandon(CallError::Cancelled(why)).await),
                };
                match read {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(self.abandon(CallError::Source(e.to_string())).await),
                }
            }
            let n = buf.len() - HEADER_LEN;
            if n == 0 {
                break;
            }
            sent += n as u64;
            if let Some(len) = opts.len.filter(|&len| sent > len) {
                let msg = format!("the source has more than the {len} bytes announced");
                return Err(self.abandon(CallError::Source(msg)).await);
            }
            let mut compressed = None;
            if opts.compression == Compression::Auto && incompressible < 4 {
                compressed = zs_wire::compress::zstd(&buf[HEADER_LEN..]);
                incompressible = if compressed.is_some() { 0 } else { incompressible + 1 };
            }
            // The frame: the chunk read, or its compressed form in a buffer of its own
            // (the chunk itself is still to be hashed).
            let (mut frame, raw, flags) = match compressed {
                Some(c) => {
                    let mut f = BytesMut::with_capacity(HEADER_LEN + c.len());
                    f.put_bytes(0, HEADER_LEN);
                    f.extend_from_slice(&c);
                    (f, Some(buf.freeze()), Flags::COMPRESSED)
                }
                None => (buf, None, Flags::NONE),
            };
            let wire = frame.len() - HEADER_LEN;
            let head =
                Header { kind: Kind::StreamData, flags, channel: 0, request: self.id, len: wire as u32 };
            head.encode((&mut frame[..HEADER_LEN]).try_into().expect("header room"));
            let frame = frame.freeze();
            if let Some(h) = hasher.as_mut() {
                h.push(raw.as_ref().unwrap_or(&frame).slice(HEADER_LEN..));
                std::future::poll_fn(|cx| h.poll_within(cx, HASH_BEHIND)).await;
            }
            if let Err(stop) = self.out.take_credit(wire as u64).await {
                return Err(self.stopped(stop, sent).await);
            }
            ring.keep(&frame);
            self.push_bulk(frame).await?;
            self.progress.send_modify(|p| p.done = sent);
        }
        if let Some(len) = opts.len.filter(|&len| sent != len) {
            let msg = format!("the source ended after {sent} of the {len} bytes announced");
            return Err(self.abandon(CallError::Source(msg)).await);
        }
        // No hasher means the hash was given.
        let hash = match hasher.as_mut() {
            Some(h) => {
                std::future::poll_fn(|cx| h.poll_within(cx, 0)).await;
                h.finalize()
            }
            None => opts.hash.unwrap_or_default(),
        };
        let end = StreamEnd { bytes: sent, hash };
        self.push_bulk(self.frame(Kind::StreamEnd, |b| end.encode(b))).await?;
        match self.out.outcome().await {
            Stop::Answered(Ok(())) => Ok(sent),
            stop => Err(self.stopped(stop, sent).await),
        }
    }
}

/// Bytes of a transfer's source its hash may lag behind what is sent.
const HASH_BEHIND: u64 = 2 * MAX_CHUNK as u64;

/// Chunk buffers a transfer has queued, taken back once the connection has written them:
/// a new chunk reuses a buffer still warm in the cache instead of fresh memory (whose
/// pages fault in, one by one, for every 256 KiB chunk).
#[derive(Default)]
struct ChunkRing {
    /// The last chunks queued, oldest first; at most [`RING_CHUNKS`].
    queued: std::collections::VecDeque<Bytes>,
}

/// Chunks a transfer keeps for reuse: its window's worth (two chunks on a short path) and
/// two more being made and written.
const RING_CHUNKS: usize = 4;

impl ChunkRing {
    /// An empty buffer of `capacity`: the oldest queued chunk's if the connection is done
    /// with it, else a new one.
    fn take(&mut self, capacity: usize) -> BytesMut {
        if self.queued.front().is_some_and(Bytes::is_unique) {
            if let Some(Ok(mut buf)) = self.queued.pop_front().map(Bytes::try_into_mut) {
                if buf.capacity() >= capacity {
                    buf.clear();
                    return buf;
                }
            }
        }
        BytesMut::with_capacity(capacity)
    }

    /// Remembers a chunk just queued (forgetting the oldest beyond the ring's size), and
    /// keeps at most one chunk the connection is done with: a transfer waiting for credit
    /// holds its chunks in flight and one spare, not the ring's worth (a thousand slow
    /// downloads would each have held two buffers more).
    fn keep(&mut self, frame: &Bytes) {
        if self.queued.len() == RING_CHUNKS {
            self.queued.pop_front();
        }
        self.queued.push_back(frame.clone());
        while self.queued.len() > 1 && self.queued[0].is_unique() && self.queued[1].is_unique() {
            self.queued.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkRing;

    #[test]
    fn a_chunk_buffer_is_reused_only_once_nothing_else_holds_it() {
        let mut ring = ChunkRing::default();
        let mut buf = ring.take(1024);
        buf.extend_from_slice(b"first chunk");
        let first = buf.freeze();
        let at = first.as_ptr();
        ring.keep(&first);
        // Still queued (the connection holds it): a new buffer, the chunk untouched.
        let second = ring.take(1024);
        assert_ne!(second.as_ptr(), at);
        assert_eq!(&first[..], b"first chunk");
        drop(first);
        // Written and dropped: its buffer comes back empty, with its room.
        let again = ring.take(1024);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty() && again.capacity() >= 1024);
    }

    #[test]
    fn the_ring_holds_at_most_its_size_and_skips_small_buffers() {
        let mut ring = ChunkRing::default();
        let mut queued = Vec::new();
        for _ in 0..10 {
            let mut b = ring.take(16);
            b.extend_from_slice(&[1; 16]);
            let frame = b.freeze();
            ring.keep(&frame);
            queued.push(frame);
        }
        assert_eq!(ring.queued.len(), super::RING_CHUNKS);
        drop(queued);
        // Written, all of them: one spare is kept for the next chunk, not four.
        let last = ring.take(16).freeze();
        ring.keep(&last);
        drop(last);
        ring.keep(&bytes::Bytes::from_static(b"held"));
        assert!(ring.queued.iter().filter(|b| b.is_unique()).count() <= 1, "{}", ring.queued.len());
        // Buffers too small for the chunk asked for are not handed out.
        let big = ring.take(1 << 20);
        assert!(big.capacity() >= 1 << 20);
    }
}
