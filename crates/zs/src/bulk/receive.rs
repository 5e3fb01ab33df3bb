//! Receiving a stream: the connection routes chunks to an `IncomingStream`, which
//! decompresses, hashes and grants credit as its handler consumes them. A task per stream
//! runs the handler (or collects a complete buffer or batch) and sends the verdict.

use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use zs_wire::bulk::{StreamCheck, StreamEnd, StreamOpen, INITIAL_WINDOW, UNKNOWN_LEN};
use zs_wire::window::{RecvWindow, WindowPolicy};
use zs_wire::{ErrorCode, Kind};

use super::hash::HashPipeline;
use super::MAX_CHUNK;
use crate::budget::Held;
use crate::connection::encode;
use crate::connection::outbox::Out;
use crate::error::{CallError, HandlerError};
use crate::peer::Peer;
use crate::sync::Recover;

/// What the connection hands an incoming stream.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A chunk as received (zstd if `compressed`).
    Data { bytes: Bytes, compressed: bool },
    /// The sender's end: byte count and hash.
    End(StreamEnd),
    /// The sender gave up.
    Cancel(String),
}

/// The connection's record of an incoming stream.
pub(crate) struct Entry {
    tx: mpsc::UnboundedSender<Incoming>,
    /// The receive window, shared with the consumer: arrivals are checked against it here,
    /// grants decided there as the handler reads.
    window: SharedWindow,
    ended: bool,
    /// Bytes of the connection's complete-buffer budget this stream holds.
    pub(crate) reserved: u64,
}

impl Entry {
    /// Routes a frame's content; `Err` if the sender broke the protocol.
    pub(crate) fn deliver(&mut self, item: Incoming) -> Result<(), &'static str> {
        if self.ended {
            return Err("stream frame after the stream's end");
        }
        match &item {
            Incoming::Data { bytes, .. } => {
                if lock(&self.window).on_data(bytes.len() as u64, Instant::now()).is_err() {
                    return Err("sender exceeded the stream window");
                }
            }
            Incoming::End(_) | Incoming::Cancel(_) => self.ended = true,
        }
        // The receiver may have finished early; its verdict is on the way to the sender.
        let _ = self.tx.send(item);
        Ok(())
    }
}

/// A stream arriving for a big-stream handler: read it as chunks ([`next_chunk`]) or as an
/// [`AsyncRead`]. Data is verified against the sender's BLAKE3 hash at the end; a
/// mismatch, a cancel by the sender or a lost connection is an error of the last read.
///
/// [`next_chunk`]: IncomingStream::next_chunk
pub struct IncomingStream {
    peer: Peer,
    id: u32,
    name: String,
    total: Option<u64>,
    offset: u64,
    /// The ticket of the call that prepared it (big streams; a batch's key is not one).
    ticket: Option<u64>,
    rx: mpsc::UnboundedReceiver<Incoming>,
    hash: HashPipeline,
    /// The sender's end, kept until every chunk before it is hashed.
    end: Option<StreamEnd>,
    received: u64,
    /// Incoming streams open on the connection, which share its receive window.
    open_streams: Arc<AtomicUsize>,
    window: SharedWindow,
    current: Bytes,
    outcome: Arc<Mutex<Option<Result<(), CallError>>>>,
    /// The stream's BLAKE3, once its end has been verified (a BLAKE3-checked stream).
    verified: Option<[u8; 32]>,
}

impl std::fmt::Debug for IncomingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingStream").field("name", &self.name).field("received", &self.received).finish()
    }
}

impl IncomingStream {
    /// The command it was sent to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes the sender announced, if it knew.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Offset in the sender's source where this transfer starts (resumed transfers).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The ticket it was sent with ([`StreamOptions::ticket`](crate::StreamOptions::ticket)).
    pub fn ticket(&self) -> Option<u64> {
        self.ticket
    }

    /// Takes back the value the call that prepared this stream kept under its ticket
    /// ([`Peer::issue_ticket`]); `None` without a ticket, or if it is not (or no longer) there.
    pub fn take_ticket<T: std::any::Any + Send + Sync>(&self) -> Option<T> {
        self.peer.take_ticket(self.ticket?)
    }

    /// The BLAKE3 of the bytes of this transfer (from its offset on), once the end has been
    /// read and verified, when the sender checked it with BLAKE3
    /// ([`StreamOptions::check`](crate::StreamOptions::check)); `None` before, or with XXH3.
    pub fn verified_hash(&self) -> Option<[u8; 32]> {
        self.verified
    }

    /// How the sender checks this stream end to end.
    pub fn check(&self) -> StreamCheck {
        self.hash.check()
    }

    /// The peer sending it.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The next chunk; `None` at the verified end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, CallError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn finished(&self) -> Option<Result<(), CallError>> {
        self.outcome.lock_or_recover().clone()
    }

    fn finish(&self, r: Result<(), CallError>) -> Option<Result<Bytes, CallError>> {
        let out = r.clone().err().map(Err);
        self.outcome.lock_or_recover().get_or_insert(r);
        out
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, CallError>>> {
        if let Some(done) = self.finished() {
            return Poll::Ready(done.err().map(Err));
        }
        // Hashing runs on the blocking pool beside the handler, at most a window behind;
        // at the end it must have caught up before the hash is compared.
        let behind = if self.end.is_some() { 0 } else { self.target_window() };
        ready!(self.hash.poll_within(cx, behind));
        if let Some(end) = self.end.take() {
            return Poll::Ready(self.verify(end));
        }
        let item = match ready!(self.rx.poll_recv(cx)) {
            Some(item) => item,
            None => {
                let why = self.peer.close_reason().unwrap_or_else(|| "connection closed".into());
                return Poll::Ready(self.finish(Err(CallError::Disconnected(why))));
            }
        };
        Poll::Ready(match item {
            Incoming::Data { bytes, compressed } => {
                self.top_up(bytes.len() as u64);
                let data = if compressed {
                    match zs_wire::compress::unzstd(&bytes, MAX_CHUNK) {
                        Ok(d) => Bytes::from(d),
                        Err(e) => return Poll::Ready(self.finish(Err(bad_data(e.to_string())))),
                    }
                } else {
                    bytes
                };
                self.hash.push(data.clone());
                self.received += data.len() as u64;
                if self.total.is_some_and(|t| self.received > t) {
                    return Poll::Ready(self.finish(Err(bad_data("more data than announced".into()))));
                }
                Some(Ok(data))
            }
            Incoming::End(end) => {
                self.end = Some(end);
                return self.poll_chunk(cx);
            }
            Incoming::Cancel(why) => self.finish(Err(CallError::Remote {
                code: ErrorCode::Cancelled,
                message: format!("sender cancelled: {why}"),
            })),
        })
    }

    /// Compares the sender's byte count and hash with what arrived (all of it hashed).
    fn verify(&mut self, end: StreamEnd) -> Option<Result<Bytes, CallError>> {
        let hash_ok = end.hash == self.hash.finalize();
        let len_ok = end.bytes == self.received && self.total.is_none_or(|t| t == self.received);
        if hash_ok && len_ok {
            self.verified = (self.hash.check() == StreamCheck::Blake3).then_some(end.hash);
            self.finish(Ok(()))
        } else {
            let msg = format!(
                "received {} bytes, sender sent {} (announced {:?}); hash {}",
                self.received,
                end.bytes,
                self.total,
                if hash_ok { "matches" } else { "differs" }
            );
            self.finish(Err(CallError::Remote { code: ErrorCode::ChecksumMismatch, message: msg }))
        }
    }

    /// This stream's share of the connection's receive window.
    fn target_window(&self) -> u64 {
        let c = self.peer.bulk_config();
        let share =
            u64::from(c.connection_stream_window) / self.open_streams.load(Ordering::Relaxed).max(1) as u64;
        share.clamp(u64::from(INITIAL_WINDOW), u64::from(c.stream_window.max(INITIAL_WINDOW)))
    }

    /// Counts `consumed` bytes as read and tops the sender's window back up once a quarter
    /// of it has been used. The window aims at [`BASE_WINDOW`] and grows with the measured
    /// bandwidth-delay product up to this stream's share only over a path of
    /// [`GROW_FROM_RTT`] or more: on loopback it stays small (fewer chunk buffers alive, and
    /// small calls beside the stream wait behind less), over a long path it opens up.
    /// Shares shrink as more streams open, so memory stays bounded per connection, not per
    /// stream. A sender needs credit for a whole chunk at once, so the window is also
    /// topped up whenever less than a chunk is left (a share is never smaller than one
    /// chunk), or both ends would wait for each other.
    fn top_up(&mut self, consumed: u64) {
        let target = self.target_window() as u32;
        let grant = {
            let mut w = lock(&self.window);
            let aim = w.window().clamp(BASE_WINDOW.min(target), target);
            w.set_window(aim);
            w.on_consumed(consumed, Instant::now(), &WindowPolicy { max_window: target, ..POLICY })
        };
        if let Some(n) = grant {
            send_credit(&self.peer, self.id, n);
        }
    }

    /// Reads the whole stream into memory, refusing more than `limit` bytes; what it holds
    /// is charged to the server's memory budget as it arrives (refused when the budget is
    /// short and this would hold the most).
    async fn collect(mut self, limit: u64) -> Result<(Bytes, Held), CallError> {
        let mut held = Held::new(self.peer.charge());
        let mut all = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            if all.len() as u64 + chunk.len() as u64 > limit {
                return Err(CallError::Remote {
                    code: ErrorCode::TooLarge,
                    message: format!("more than {limit} bytes"),
                });
            }
            if let Err(e) = held.grow(chunk.len() as u64) {
                let message = e.to_string();
                self.finish(Err(CallError::Remote { code: ErrorCode::Overloaded, message: message.clone() }));
                return Err(CallError::Remote { code: ErrorCode::Overloaded, message });
            }
            all.extend_from_slice(&chunk);
        }
        Ok((all.freeze(), held))
    }
}

fn bad_data(message: String) -> CallError {
    CallError::Remote { code: ErrorCode::ChecksumMismatch, message }
}

/// Grants at a quarter of the window, or when the sender has less than a chunk; the window
/// grows up to the stream's share of the connection's (set at each grant).
const POLICY: WindowPolicy = WindowPolicy {
    grant_divisor: 4,
    min_credit: MAX_CHUNK as u32,
    max_window: 0,
    grow_from_rtt: GROW_FROM_RTT,
};

/// A stream's window grows past [`BASE_WINDOW`] only over a path whose shortest measured
/// round trip is at least this: below it (loopback, a LAN) a stalled sender's round trip
/// is its own time to make a chunk, and `zs bench bulk --size 2G` moved ours at 0.48–0.76
/// of the fastest copy with 512 KiB in flight, 0.31–0.53 with 1 MiB and 0.13–0.23 with the
/// window grown by that rule (to 4 MiB: more chunk buffers alive at once).
const GROW_FROM_RTT: Duration = Duration::from_millis(1);

/// What a stream's window aims at before it grows: two chunks, so the sender fills the
/// next while the receiver takes the last (within the stream's share).
const BASE_WINDOW: u32 = 2 * MAX_CHUNK as u32;

/// A stream's receive window, shared by the connection (arrivals) and the consumer (reads).
type SharedWindow = Arc<Mutex<RecvWindow>>;

fn lock(w: &SharedWindow) -> std::sync::MutexGuard<'_, RecvWindow> {
    w.lock_or_recover()
}

/// Sends a grant (already counted by the window, so the sender cannot use it first).
fn send_credit(peer: &Peer, id: u32, n: u32) {
    if n == 0 {
        return;
    }
    let credit = encode::frame_bytes(Kind::StreamCredit, id, |b| b.extend_from_slice(&n.to_le_bytes()));
    let _ = peer.outbox().push_control(Out::Frame(credit));
}

impl AsyncRead for IncomingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match ready!(self.poll_chunk(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
            }
        }
        let n = self.current.len().min(buf.remaining());
        let chunk = self.current.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Handler of a big stream: reads the stream, returns when done with it.
pub(crate) type BulkHandler =
    dyn Fn(Peer, IncomingStream) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync;
/// Handler of a complete buffer, given its ticket (`None` without one).
pub(crate) type BufferHandler = dyn Fn(&Peer, Bytes, Option<u64>) -> Result<(), HandlerError> + Send + Sync;

/// What the receiving task does with a stream.
pub(crate) enum Sink {
    Handler(Arc<BulkHandler>),
    Buffer(Arc<BufferHandler>),
    Batch,
}

/// Accepts an announced stream: returns the connection's entry and starts the task that
/// consumes it and answers the sender.
pub(crate) fn accept(
    peer: &Peer,
    id: u32,
    open: StreamOpen,
    sink: Sink,
    reserved: u64,
    open_streams: Arc<AtomicUsize>,
) -> Entry {
    let (tx, rx) = mpsc::unbounded_channel();
    let window = Arc::new(Mutex::new(RecvWindow::new(INITIAL_WINDOW, Instant::now())));
    let mut stream = IncomingStream {
        peer: peer.clone(),
        id,
        name: open.name,
        total: (open.total != UNKNOWN_LEN).then_some(open.total),
        offset: open.offset,
        ticket: (open.key != 0 && open.mode != zs_wire::bulk::StreamMode::Batch).then_some(open.key),
        rx,
        hash: HashPipeline::new(open.check),
        end: None,
        received: 0,
        open_streams,
        window: window.clone(),
        current: Bytes::new(),
        outcome: Arc::default(),
        verified: None,
    };
    // Raise the sender's window from the protocol's initial one to the stream's base window.
    stream.top_up(0);
    tokio::spawn(consume(stream, open.key, sink));
    Entry { tx, window, ended: false, reserved }
}

async fn consume(stream: IncomingStream, key: u64, sink: Sink) {
    let (peer, id, outcome) = (stream.peer.clone(), stream.id, stream.outcome.clone());
    let total = stream.total.unwrap_or(0);
    let handled: Result<(), HandlerError> = match sink {
        Sink::Handler(h) => {
            let fut = h(peer.clone(), stream);
            AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(|_| Err(panicked()))
        }
        Sink::Buffer(h) => match stream.collect(total).await {
            Ok((data, _held)) => {
                let ticket = (key != 0).then_some(key);
                std::panic::catch_unwind(AssertUnwindSafe(|| h(&peer, data, ticket)))
                    .unwrap_or_else(|_| Err(panicked()))
            }
            Err(_) => Ok(()), // the stream's own outcome says why
        },
        Sink::Batch => {
            let parked = stream.collect(total).await;
            if let Ok((data, held)) = parked {
                peer.park_batch(key, data, held, total);
            } else {
                peer.release_batch_reservation(total);
            }
            Ok(())
        }
    };
    let stream_outcome = outcome.lock_or_recover().take();
    let verdict: Result<(), (ErrorCode, String)> = match (stream_outcome, handled) {
        (Some(Err(e)), _) => Err(match e {
            CallError::Remote { code, message } => (code, message),
            other => (ErrorCode::Cancelled, other.to_string()),
        }),
        (_, Err(h)) => Err((h.code, h.message)),
        (None, Ok(())) => {
            Err((ErrorCode::Cancelled, "the handler returned before the end of the stream".into()))
        }
        (Some(Ok(())), Ok(())) => Ok(()),
    };
    let (code, message) = match &verdict {
        Ok(()) => (0, ""),
        Err((code, msg)) => (code.code(), msg.as_str()),
    };
    let mut result = BytesMut::new();
    encode::stream_result(&mut result, id, code, message);
    let _ = peer.outbox().push_control(Out::Frame(result.freeze()));
    let _ = peer.outbox().push_control(Out::StreamDone(id));
}

fn panicked() -> HandlerError {
    HandlerError::with_code(ErrorCode::HandlerPanicked, "stream handler panicked")
}
