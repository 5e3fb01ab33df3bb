//! `LinkIo`: `AsyncRead + AsyncWrite` over a [`Link`], for code written against tokio's
//! IO traits: handshakes (Noise, rustls), and raw byte streams over a secure channel.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Link;

/// Most read from the link at once.
const READ_CHUNK: usize = 64 << 10;

/// A link seen through tokio's IO traits. Reads may take more from the link than the reader
/// asked for; [`into_parts`](Self::into_parts) gives back what is left, so nothing is lost
/// when the link is handed on after a handshake.
pub(crate) struct LinkIo<L> {
    link: L,
    /// Read from the link, not yet taken by the reader.
    rbuf: BytesMut,
}

// Links are driven through `&mut` and readiness and never pinned.
impl<L> Unpin for LinkIo<L> {}

impl<L: Link> LinkIo<L> {
    /// Wraps `link`.
    pub(crate) fn new(link: L) -> Self {
        LinkIo { link, rbuf: BytesMut::new() }
    }

    /// Wraps `link` from which `read` was already taken: readers get it first.
    pub(crate) fn with_prefix(link: L, read: BytesMut) -> Self {
        LinkIo { link, rbuf: read }
    }

    /// The link, and what was read from it but not yet taken.
    pub(crate) fn into_parts(self) -> (L, BytesMut) {
        (self.link, self.rbuf)
    }

    /// Waits until at least one byte was read and returns the first, without taking it;
    /// `None` at the end of the stream.
    pub(crate) async fn peek_first(&mut self) -> io::Result<Option<u8>> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        Ok(self.rbuf.first().copied())
    }

    /// Reads from the link unless something read is waiting; ready at the end of the
    /// stream too (then `rbuf` stays empty).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.rbuf.is_empty() {
            ready!(self.link.poll_read_ready(cx))?;
            self.rbuf.reserve(READ_CHUNK);
            match self.link.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_flush_link(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.link.has_pending() {
            ready!(self.link.poll_write_ready(cx))?;
            match Link::flush(&mut self.link) {
                Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return Poll::Ready(Err(e))
                }
                _ => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<L: Link> AsyncRead for LinkIo<L> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx))?;
        let n = this.rbuf.len().min(buf.remaining());
        buf.put_slice(&this.rbuf[..n]);
        this.rbuf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<L: Link> AsyncWrite for LinkIo<L> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.link.poll_write_ready(cx))?;
            match this.link.try_write(buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_link(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_link(cx))?;
        this.link.shutdown_write()?;
        // A link may finish its shutdown only once what it queued for it is written.
        this.poll_flush_link(cx)
    }
}
