//! `SecureStream`: a raw byte stream over a secure channel (`AsyncRead + AsyncWrite`), for
//! protocols of one's own and for load generators. Writes are sealed into records; call
//! `flush` (or `shutdown`) to be sure they left, as with any buffered writer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::ToSocketAddrs;

use super::{connect, AnyLink, ClientSecurity, Fingerprint};
use crate::config::ConnectionConfig;
use crate::stats::Stats;
use crate::transport::Link;

/// A client's byte stream to a server, secured as `ClientSecurity` says.
pub struct SecureStream {
    link: AnyLink,
    /// Plaintext read but not yet taken by the reader.
    rbuf: BytesMut,
    remote_key: Option<Fingerprint>,
}

impl SecureStream {
    /// Connects and runs the handshake, within `timeout`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        SecureStream::open(addr, security, false, timeout).await
    }

    /// Connects like [`connect`](Self::connect) but announces a resumable session: the
    /// first bytes written must be a session hello (`zs_wire::session::Hello`). For tools
    /// and tests that speak the session protocol themselves.
    pub async fn connect_for_session(
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        SecureStream::open(addr, security, true, timeout).await
    }

    async fn open(
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        session: bool,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        // A raw stream: no bound on unsent bytes in the kernel (nothing to put ahead).
        let config = ConnectionConfig { socket_unsent_limit: None, ..ConnectionConfig::default() };
        let secured = connect(addr, security, session, timeout, &config, Arc::new(Stats::default())).await?;
        let remote_key = secured.channel.and_then(|c| c.remote_key);
        Ok(SecureStream { link: secured.link, rbuf: BytesMut::new(), remote_key })
    }

    /// The identity the server proved (`None` in plaintext).
    pub fn remote_key(&self) -> Option<Fingerprint> {
        self.remote_key
    }

    fn poll_flush_link(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.link.has_pending() {
            ready!(self.link.poll_write_ready(cx))?;
            match Link::flush(&mut self.link) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                _ => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SecureStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.rbuf.is_empty() {
            ready!(this.link.poll_read_ready(cx))?;
            this.rbuf.reserve(64 << 10);
            match this.link.try_read_buf(&mut this.rbuf) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let n = this.rbuf.len().min(buf.remaining());
        buf.put_slice(&this.rbuf[..n]);
        this.rbuf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SecureStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.link.poll_write_ready(cx))?;
            match this.link.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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
        Poll::Ready(this.link.shutdown_write())
    }
}
