//! Transports: what carries bytes between two ends. The connection driver needs only
//! readiness and non-blocking reads and writes, so that an idle connection holds no
//! buffer; later layers (secure, session, mux) implement the same [`Link`] surface.

mod tcp;

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::BytesMut;

pub(crate) use tcp::{bind_listeners, connect, tune};

/// A byte link driven by readiness, as tokio's sockets are.
pub trait Link: Send + Sync + 'static {
    /// Ready when a read may make progress.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is available into `buf`'s spare capacity; `WouldBlock` if nothing is.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Ready when a write may make progress.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes as much of `buf` as the link takes now; `WouldBlock` if none.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Writes as much of `bufs`, in order, as the link takes now; `WouldBlock` if none.
    fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize>;
    /// Closes the sending direction (the other end reads end-of-stream).
    fn shutdown_write(&self) -> io::Result<()>;
    /// The other end's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// This end's address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Link for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        tokio::net::TcpStream::try_read_buf(self, buf)
    }
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_write_ready(self, cx)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write(self, buf)
    }
    fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write_vectored(self, bufs)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::peer_addr(self)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::local_addr(self)
    }
}
