//! `SecureStream`: a raw byte stream over a secure channel (`AsyncRead + AsyncWrite`), for
//! protocols of one's own and for load generators; [`SecureStream::accept`] is its server
//! side. Writes are sealed into records; call `flush` (or `shutdown`) to be sure they left,
//! as with any buffered writer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::ToSocketAddrs;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::{accept, connect, ClientSecurity, Fingerprint, RekeyPolicy, SecuredLink, ServerSecurity};
use crate::stats::Stats;
use crate::transport::tcp::TcpDialer;
use crate::transport::{Boxed, Dialer, LinkIo, RawLink};

/// A client's byte stream to a server, secured as `ClientSecurity` says.
pub struct SecureStream {
    io: LinkIo<SecuredLink>,
    remote_key: Option<Fingerprint>,
}

impl SecureStream {
    /// Connects and runs the handshake, within `timeout`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        // A raw stream: no bound on unsent bytes in the kernel (nothing to put ahead).
        SecureStream::open(TcpDialer::default(), addr, security, false, timeout).await
    }

    /// Connects like [`connect`](Self::connect) over a transport of one's own (see
    /// [`Dialer`]).
    pub async fn connect_over<D: Dialer>(
        dialer: D,
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        SecureStream::open(Boxed(dialer), addr, security, false, timeout).await
    }

    /// Connects like [`connect`](Self::connect) but announces a resumable session: the
    /// first bytes written must be a session hello (`zs_wire::session::Hello`). For tools
    /// and tests that speak the session protocol themselves.
    pub async fn connect_for_session(
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        SecureStream::open(TcpDialer::default(), addr, security, true, timeout).await
    }

    async fn open<D: Dialer>(
        dialer: D,
        addr: impl ToSocketAddrs,
        security: &ClientSecurity,
        session: bool,
        timeout: Duration,
    ) -> io::Result<SecureStream>
    where
        D::Raw: Into<RawLink>,
    {
        let stats = Arc::new(Stats::default());
        let secured =
            connect(&dialer, addr, security, session, timeout, RekeyPolicy::default(), stats).await?;
        let remote_key = secured.channel.and_then(|c| c.remote_key);
        Ok(SecureStream { io: LinkIo::new(secured.link), remote_key })
    }

    /// Runs the server's side of the handshake on an accepted connection, within `timeout`:
    /// the other end of [`connect`](Self::connect), for protocols of one's own beside a
    /// zserver listener (XNat's data connections, say).
    pub async fn accept(
        tcp: TcpStream,
        security: &ServerSecurity,
        timeout: Duration,
    ) -> io::Result<SecureStream> {
        let stats = Arc::new(Stats::default());
        let allowed = security.allowed_clients();
        let handshake =
            accept(RawLink::Tcp(tcp), BytesMut::new(), security, allowed, RekeyPolicy::default(), stats);
        let secured = tokio::time::timeout(timeout, handshake).await.map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("handshake timed out after {timeout:?}"))
        })??;
        if secured.session {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a session hello on a stream listener"));
        }
        let remote_key = secured.channel.and_then(|c| c.remote_key);
        Ok(SecureStream { io: LinkIo::new(secured.link), remote_key })
    }

    /// The identity the other end proved (`None` in plaintext or TLS on the server side).
    pub fn remote_key(&self) -> Option<Fingerprint> {
        self.remote_key
    }
}

impl AsyncRead for SecureStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SecureStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
