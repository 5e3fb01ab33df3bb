//! `StreamLink`: any `AsyncRead + AsyncWrite` byte stream as a [`Link`], so a connection
//! can run over what another layer hands over (a tunnel's stream, a virtual channel, a
//! QUIC stream) rather than a socket.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Link;

/// Bytes a write may leave queued in the link while the stream takes no more (default of
/// [`StreamLink::new`]); past it, writes wait.
pub const STREAM_LINK_QUEUE: usize = 256 << 10;
/// Bytes read from the stream at once while waiting for readiness (on the stack).
const READ_AHEAD: usize = 16 << 10;

/// A byte stream as a link. Readiness comes from reading ahead (kept until the next
/// read) and from a bounded queue of written bytes; an idle link holds no buffer.
pub struct StreamLink<S> {
    stream: S,
    /// Bytes read ahead while polling for readiness.
    ahead: BytesMut,
    eof: bool,
    /// Bytes taken by a write that the stream has not taken yet.
    queued: BytesMut,
    /// Bytes written since the stream was last flushed.
    unflushed: bool,
    local: SocketAddr,
    peer: SocketAddr,
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamLink<S> {
    /// Wraps `stream`, which the connection will see as going from `local` to `peer`.
    pub fn new(stream: S, local: SocketAddr, peer: SocketAddr) -> StreamLink<S> {
        StreamLink {
            stream,
            ahead: BytesMut::new(),
            eof: false,
            queued: BytesMut::new(),
            unflushed: false,
            local,
            peer,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Reads what the stream has into `ahead` (through the stack, so an idle link holds no
    /// buffer); the bytes read, 0 at the end of the stream.
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut space = [0u8; READ_AHEAD];
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled();
                self.eof = read.is_empty();
                self.ahead.extend_from_slice(read);
                Poll::Ready(Ok(read.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes queued bytes, then flushes; `Ready` once all went, or when some progress was
    /// made (so a caller tries again), else `Pending` with `cx` registered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut progress = false;
        while !self.queued.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.queued) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.queued.advance(n);
                    self.unflushed = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if progress => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        // All written: let the buffer go.
        self.queued = BytesMut::new();
        if self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if progress => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A context for the non-blocking calls: a later readiness poll registers the real waker.
fn quiet() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl<S> Link for StreamLink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() || self.eof {
            return Poll::Ready(Ok(()));
        }
        match self.poll_read_ahead(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(drop)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if self.ahead.is_empty() && !self.eof {
            match self.poll_read_ahead(&mut quiet()) {
                Poll::Ready(r) => r?,
                Poll::Pending => return Err(would_block()),
            };
        }
        let n = self.ahead.len();
        buf.extend_from_slice(&self.ahead);
        // Read: let the buffer go.
        self.ahead = BytesMut::new();
        Ok(n)
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.queued.is_empty() {
            match Pin::new(&mut self.stream).poll_write(&mut quiet(), buf) {
                Poll::Ready(Ok(n)) => {
                    self.unflushed = true;
                    return Ok(n);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        let room = STREAM_LINK_QUEUE.saturating_sub(self.queued.len());
        if room == 0 {
            return Err(would_block());
        }
        let n = room.min(buf.len());
        self.queued.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn try_write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) => self.try_write(first),
            None => Ok(0),
        }
    }

    fn has_pending(&self) -> bool {
        !self.queued.is_empty() || self.unflushed
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.poll_drain(&mut quiet()) {
            Poll::Ready(Ok(())) if !self.has_pending() => Ok(()),
            Poll::Ready(Err(e)) => Err(e),
            _ => Err(would_block()),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match Pin::new(&mut self.stream).poll_shutdown(&mut quiet()) {
            Poll::Ready(r) => r,
            // Under way: the stream finishes it as it is polled.
            Poll::Pending => Ok(()),
        }
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
