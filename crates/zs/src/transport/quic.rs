//! QUIC (quinn): a transport where UDP gets through better than TCP, or where a lost packet
//! must not stall everything behind it at the socket. One bidirectional stream carries the
//! connection's bytes; the server's security mode runs inside it as over TCP (so the pinned
//! key is the same), and QUIC's own TLS uses a throwaway certificate that nobody pins
//! (`docs/PROTOCOL.md` §17). Virtual channels stay ours, inside the stream.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::openings::Openings;
use super::{Dialer, Listener, StreamLink};
use crate::secure::tls::{provider, PinVerifier};
use crate::secure::TlsServer;

/// The ALPN protocol both ends name.
const ALPN: &[u8] = b"zserver-quic/1";
/// The first byte a client writes on its stream (QUIC shows a stream to the server only once
/// something is sent on it): the version of this mapping.
const STREAM_VERSION: u8 = 1;
/// Links opened and not yet taken by the accept loop.
const READY_QUEUE: usize = 64;
/// The UDP socket buffers asked for (the kernel may give less: see `buffer_sizes`).
const UDP_BUFFER: usize = 4 << 20;

/// A connection's one stream, as a byte stream.
pub struct QuicStream {
    recv: quinn::RecvStream,
    send: quinn::SendStream,
    connection: quinn::Connection,
    /// A client's own endpoint (its UDP socket), kept as long as the stream.
    _endpoint: Option<quinn::Endpoint>,
}

impl QuicStream {
    /// The QUIC connection the stream belongs to.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"closed");
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().send), cx)
    }
}

/// A QUIC connection's stream as a link.
pub type QuicLink = StreamLink<QuicStream>;

/// A UDP socket with large buffers, and the sizes the kernel gave (receive, send).
fn udp_socket(addr: SocketAddr) -> io::Result<(UdpSocket, (usize, usize))> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&addr.into())?;
    let sizes = (socket.recv_buffer_size()?, socket.send_buffer_size()?);
    Ok((socket.into(), sizes))
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // One stream each way is the connection; none other may be opened.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    // The connection's own keepalive and idle timeout decide; QUIC's only backs them up.
    t.max_idle_timeout(Some(Duration::from_secs(300).try_into().expect("in range")));
    t.keep_alive_interval(Some(Duration::from_secs(15)));
    Arc::new(t)
}

fn quic_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("QUIC: {e}"))
}

/// A listener for QUIC clients (zserver's frames inside, secured as the server says).
pub struct QuicListener {
    endpoint: quinn::Endpoint,
    ready: mpsc::Receiver<QuicLink>,
    buffers: (usize, usize),
}

impl QuicListener {
    /// Listens on `addr` (UDP).
    pub fn bind(addr: SocketAddr) -> io::Result<QuicListener> {
        let (cert, key) = crate::secure::self_signed(&["zserver".to_string()])?;
        let tls = TlsServer::from_pem(cert.as_bytes(), key.as_bytes())?.config_with_alpn(ALPN);
        let tls = QuicServerConfig::try_from(tls).map_err(quic_error)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(tls));
        config.transport_config(transport_config());
        let (socket, buffers) = udp_socket(addr)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, runtime)?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_streams(endpoint.clone(), tx));
        Ok(QuicListener { endpoint, ready, buffers })
    }

    /// The UDP socket buffer sizes the kernel gave (receive, send), in bytes.
    pub fn buffer_sizes(&self) -> (usize, usize) {
        self.buffers
    }
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"listener closed");
    }
}

/// Takes QUIC connections in and waits for each one's stream and its version byte (see
/// [`Openings`]); hands the links over to `accept`.
async fn accept_streams(endpoint: quinn::Endpoint, ready: mpsc::Sender<QuicLink>) {
    let openings = Openings::new();
    while let Some(incoming) = endpoint.accept().await {
        let source = incoming.remote_address().ip();
        if ready.is_closed() {
            return;
        }
        // When full, the opening is dropped unstarted, and with it `incoming`: quinn refuses it.
        openings.start(source, "QUIC stream", &ready, open_stream(incoming));
    }
}

async fn open_stream(incoming: quinn::Incoming) -> io::Result<QuicLink> {
    let connection = incoming.await.map_err(quic_error)?;
    let refuse = |connection: &quinn::Connection, why: &str| {
        connection.close(1u32.into(), why.as_bytes());
        io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
    };
    let (send, mut recv) = connection.accept_bi().await.map_err(quic_error)?;
    let mut version = [0u8; 1];
    if recv.read_exact(&mut version).await.is_err() || version[0] != STREAM_VERSION {
        return Err(refuse(&connection, "not a zserver QUIC stream (version byte 1 expected)"));
    }
    let (peer, local) = (connection.remote_address(), connection.local_ip());
    let local = SocketAddr::new(local.unwrap_or(peer.ip()), 0);
    Ok(StreamLink::new(QuicStream { recv, send, connection, _endpoint: None }, local, peer))
}

impl Listener for QuicListener {
    type Raw = QuicLink;

    async fn accept(&mut self) -> io::Result<QuicLink> {
        self.ready.recv().await.ok_or_else(|| quic_error("the endpoint closed"))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// Makes QUIC links to a server, each over a UDP socket of its own.
#[derive(Debug, Clone, Default)]
pub struct QuicDialer;

impl QuicDialer {
    /// A QUIC connection to a zserver QUIC listener at `addr`, before its stream is open
    /// (`dial` opens it), and the endpoint (UDP socket) it runs on.
    pub async fn connection(&self, addr: SocketAddr) -> io::Result<(quinn::Endpoint, quinn::Connection)> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(quic_error)?
            .dangerous()
            // QUIC's certificate is not what a client trusts: the secure channel inside the
            // stream authenticates the server (its pinned key).
            .with_custom_certificate_verifier(Arc::new(PinVerifier::any()))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut config =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).map_err(quic_error)?));
        config.transport_config(transport_config());
        let bind: SocketAddr =
            if addr.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("addr");
        let (socket, _) = udp_socket(bind)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
        let connecting = endpoint.connect_with(config, addr, "zserver").map_err(quic_error)?;
        let connection = connecting.await.map_err(|e| {
            io::Error::new(io::ErrorKind::ConnectionRefused, format!("cannot connect to {addr} (QUIC): {e}"))
        })?;
        Ok((endpoint, connection))
    }
}

impl Dialer for QuicDialer {
    type Raw = QuicLink;

    async fn dial(&self, addr: SocketAddr) -> io::Result<QuicLink> {
        let (endpoint, connection) = self.connection(addr).await?;
        let (mut send, recv) = connection.open_bi().await.map_err(quic_error)?;
        send.write_all(&[STREAM_VERSION]).await.map_err(quic_error)?;
        let local = endpoint.local_addr()?;
        Ok(StreamLink::new(QuicStream { recv, send, connection, _endpoint: Some(endpoint) }, local, addr))
    }
}
