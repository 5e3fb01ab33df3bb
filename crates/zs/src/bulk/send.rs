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
        let mut hasher = opts.hash.is_none().then(|| super::hash::StreamHasher::new(open.check));
        let (mut sent, mut incompressible) = (0u64, 0u32);
        loop {
            // The chunk is read straight after room for its frame header: no copy.
            let mut buf = BytesMut::with_capacity(HEADER_LEN + chunk);
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
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[HEADER_LEN..]);
            }
            sent += n as u64;
            if let Some(len) = opts.len.filter(|&len| sent > len) {
                let msg = format!("the source has more than the {len} bytes announced");
                return Err(self.abandon(CallError::Source(msg)).await);
            }
            let mut flags = Flags::NONE;
            if opts.compression == Compression::Auto && incompressible < 4 {
                match zs_wire::compress::zstd(&buf[HEADER_LEN..]) {
                    Some(c) => {
                        buf.truncate(HEADER_LEN);
                        buf.extend_from_slice(&c);
                        flags = Flags::COMPRESSED;
                        incompressible = 0;
                    }
                    None => incompressible += 1,
                }
            }
            let wire = buf.len() - HEADER_LEN;
            let head =
                Header { kind: Kind::StreamData, flags, channel: 0, request: self.id, len: wire as u32 };
            head.encode((&mut buf[..HEADER_LEN]).try_into().expect("header room"));
            if let Err(stop) = self.out.take_credit(wire as u64).await {
                return Err(self.stopped(stop, sent).await);
            }
            self.push_bulk(buf.freeze()).await?;
            self.progress.send_modify(|p| p.done = sent);
        }
        if let Some(len) = opts.len.filter(|&len| sent != len) {
            let msg = format!("the source ended after {sent} of the {len} bytes announced");
            return Err(self.abandon(CallError::Source(msg)).await);
        }
        // No hasher means the hash was given.
        let hash = hasher.map_or(opts.hash.unwrap_or_default(), |h| h.finalize());
        let end = StreamEnd { bytes: sent, hash };
        self.push_bulk(self.frame(Kind::StreamEnd, |b| end.encode(b))).await?;
        match self.out.outcome().await {
            Stop::Answered(Ok(())) => Ok(sent),
            stop => Err(self.stopped(stop, sent).await),
        }
    }
}
