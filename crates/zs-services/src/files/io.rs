//! File reads and writes off the connections' tasks, without holding a blocking thread
//! between chunks: each chunk is one positioned read or write on the blocking pool, two at
//! a time so the disk and the connection overlap, and written from the chunk as it arrived
//! (no copy).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};

use crate::limits::Held;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

/// Reads or writes in flight at once per transfer.
const IN_FLIGHT: usize = 2;
/// Bytes per read or write: `BIG` while the big buffers of every service together fit
/// their budget ([`crate::limits::BIG_BUDGET`]), else `SMALL` and one at a time.
const SMALL: usize = 256 << 10;
const BIG: usize = 1 << 20;

fn joined<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
}

/// Writes chunks at successive offsets of a file, a few together per write.
pub(crate) struct Writer {
    file: Arc<std::fs::File>,
    at: u64,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    pending: VecDeque<JoinHandle<io::Result<()>>>,
}

impl Writer {
    /// Writes from `offset` on.
    pub(crate) fn new(file: std::fs::File, offset: u64) -> Writer {
        Writer {
            file: Arc::new(file),
            at: offset,
            batch: Vec::new(),
            batch_bytes: 0,
            pending: VecDeque::new(),
        }
    }

    /// Queues `chunk`: written with the next ones once they make a big write (while the
    /// budget allows), else at once; waits while two writes are in flight.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.batch_bytes += chunk.len();
        self.batch.push(chunk);
        if self.batch_bytes < BIG && Held::room_for(BIG) {
            return Ok(());
        }
        self.flush().await
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        while self.pending.len() >= IN_FLIGHT {
            let oldest = self.pending.pop_front().expect("not empty");
            joined(oldest.await)?;
        }
        let (file, mut at) = (self.file.clone(), self.at);
        let batch = std::mem::take(&mut self.batch);
        let held = Held::take(self.batch_bytes, true);
        self.at += std::mem::take(&mut self.batch_bytes) as u64;
        self.pending.push_back(tokio::task::spawn_blocking(move || {
            let _held = held;
            for chunk in batch {
                file.write_all_at(&chunk, at)?;
                at += chunk.len() as u64;
            }
            Ok(())
        }));
        Ok(())
    }

    /// Waits for every write, then makes them durable.
    pub(crate) async fn finish(mut self) -> io::Result<()> {
        let mut first_error = self.flush().await;
        while let Some(w) = self.pending.pop_front() {
            if let Err(e) = joined(w.await) {
                first_error = first_error.and(Err(e));
            }
        }
        let file = self.file.clone();
        joined(tokio::task::spawn_blocking(move || file.sync_data()).await)?;
        first_error
    }
}

/// Reads `len` bytes of a file from `offset`, a chunk ahead of its reader.
pub(crate) struct Reader {
    small: usize,
    file: Arc<std::fs::File>,
    next: u64,
    end: u64,
    pending: VecDeque<JoinHandle<io::Result<(BytesMut, Held)>>>,
    current: Bytes,
    /// The budget share of the buffer being read from.
    _current_held: Option<Held>,
}

impl Reader {
    /// Reads `len` bytes from `offset`; `small` bytes at a time when the budget is short
    /// (at most 256 KiB).
    pub(crate) fn new(file: std::fs::File, offset: u64, len: u64, small: usize) -> Reader {
        Reader {
            small: small.clamp(4 << 10, SMALL),
            file: Arc::new(file),
            next: offset,
            end: offset + len,
            pending: VecDeque::new(),
            current: Bytes::new(),
            _current_held: None,
        }
    }

    fn start_reads(&mut self) {
        while self.pending.len() < IN_FLIGHT && self.next < self.end {
            // A big read, and a second one ahead, only within the budget; one small read
            // always, so every transfer goes on.
            let left = (self.end - self.next) as usize;
            let (n, held) = match Held::take(BIG.min(left), false) {
                Some(h) => (BIG.min(left), h),
                None if self.pending.is_empty() => {
                    (self.small.min(left), Held::take(self.small.min(left), true).expect("forced"))
                }
                None => return,
            };
            let (file, at) = (self.file.clone(), self.next);
            self.next += n as u64;
            self.pending.push_back(tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(n);
                let mut done = 0;
                while done < n {
                    match file.read_at(&mut buf[done..], at + done as u64)? {
                        0 => {
                            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter"))
                        }
                        r => done += r,
                    }
                }
                Ok((buf, held))
            }));
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.current.is_empty() {
            this.start_reads();
            let Some(head) = this.pending.front_mut() else { return Poll::Ready(Ok(())) };
            let (chunk, held) = joined(ready!(Pin::new(head).poll(cx)))?;
            this.pending.pop_front();
            this.current = chunk.freeze();
            this._current_held = Some(held);
            this.start_reads();
        }
        let n = this.current.len().min(out.remaining());
        out.put_slice(&this.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}
