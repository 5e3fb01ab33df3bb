//! WebSocket: a transport for browsers. A [`WsListener`] takes TCP connections whose
//! upgrade request the link itself answers (inside the server's handshake deadline and
//! admission, like any first bytes); a [`WsDialer`] makes the client's. Either way the
//! connection's bytes travel in binary messages, any split (`docs/PROTOCOL.md` §16), and the
//! server's security mode runs inside as over TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use zs_wire::websocket::{self as ws, Event, FrameReader, Origins};

use super::openings::Openings;
use super::tcp::{TcpAcceptor, TcpDialer, TcpOptions};
use super::{link_enum, read_message, write_all, Dialer, Link, Listener, StreamLink};
use crate::secure::{TlsClient, TlsServer};

/// Most encoded bytes a link holds unwritten; past it, writes wait.
const TX_CAP: usize = 256 << 10;
/// Most stream bytes in one outgoing frame.
const MAX_OUT_FRAME: usize = 64 << 10;
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 << 10;
/// Bytes read at once while the upgrade request is incomplete.
const UPGRADE_CHUNK: usize = 2 << 10;

/// What a WebSocket server lets in.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// Browser origins allowed (default: same origin, or none given).
    pub origins: Origins,
    /// Largest message taken, in bytes (default 1 MiB); a bigger one closes the link with
    /// code 1009.
    pub max_message: usize,
    /// Share the address with other processes (`SO_REUSEPORT`, as `zs serve --workers`).
    pub reuse_port: bool,
    /// Speak `wss`: TLS under the WebSocket, with this identity (what browsers on https
    /// pages need). The server's own mode still runs inside.
    pub tls: Option<TlsServer>,
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            origins: Origins::default(),
            max_message: ws::DEFAULT_MAX_MESSAGE,
            reuse_port: false,
            tls: None,
        }
    }
}

/// The socket under a WebSocket: TCP, or TLS over TCP (`wss`).
pub enum WsBase {
    /// `ws://`.
    Tcp(TcpStream),
    /// `wss://`.
    Tls(Box<dyn Link>),
}

link_enum!(impl[] WsBase { WsBase::Tcp, WsBase::Tls });

/// A listener for WebSocket clients (zserver's frames inside, secured as the server says).
pub struct WsListener {
    accepting: Accepting,
    local: SocketAddr,
    settings: Arc<WsSettings>,
}

enum Accepting {
    Tcp(TcpAcceptor),
    /// A task takes TCP connections and runs their TLS handshakes (bounded in number and
    /// time), so a slow client holds up no one.
    Tls(mpsc::Receiver<WsBase>),
}

impl WsListener {
    /// Binds on every address `addr` resolves to.
    pub async fn bind(addr: impl ToSocketAddrs, settings: WsSettings) -> io::Result<Vec<WsListener>> {
        let acceptors = TcpAcceptor::bind(addr, settings.reuse_port, 1024, TcpOptions::default()).await?;
        let settings = Arc::new(settings);
        let mut out = Vec::new();
        for tcp in acceptors {
            let local = tcp.local_addr()?;
            let accepting = match &settings.tls {
                None => Accepting::Tcp(tcp),
                Some(tls) => {
                    let (tx, rx) = mpsc::channel(64);
                    tokio::spawn(tls_handshakes(tcp, tls.config_with_alpn(b"http/1.1"), tx));
                    Accepting::Tls(rx)
                }
            };
            out.push(WsListener { accepting, local, settings: settings.clone() });
        }
        Ok(out)
    }
}

/// Takes TCP connections in and runs their TLS handshakes (see [`Openings`]); hands the
/// finished ones over.
async fn tls_handshakes(
    mut tcp: TcpAcceptor,
    config: Arc<rustls::ServerConfig>,
    ready: mpsc::Sender<WsBase>,
) {
    let openings = Openings::new();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let stream = tokio::select! {
            s = tcp.accept() => s,
            _ = ready.closed() => return,
        };
        let Ok(stream) = stream else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { continue };
        let handshake = acceptor.accept(stream);
        // Turned away when full: the socket closes as the handshake is dropped.
        openings.start(peer.ip(), "wss TLS handshake", &ready, async move {
            Ok(WsBase::Tls(Box::new(StreamLink::new(handshake.await?, local, peer))))
        });
    }
}

impl Listener for WsListener {
    type Raw = WsLink<WsBase>;

    async fn accept(&mut self) -> io::Result<WsLink<WsBase>> {
        let base = match &mut self.accepting {
            Accepting::Tcp(tcp) => WsBase::Tcp(tcp.accept().await?),
            Accepting::Tls(ready) => {
                ready.recv().await.ok_or_else(|| io::Error::other("wss: the listener stopped"))?
            }
        };
        Ok(WsLink::server(base, self.settings.clone()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Makes WebSocket links to a server: the upgrade request names `path` (default `/`).
#[derive(Debug, Clone)]
pub struct WsDialer {
    path: String,
    max_message: usize,
    /// `wss`: TLS under the WebSocket, the server checked as this says.
    tls: Option<TlsClient>,
}

impl WsDialer {
    /// A dialer asking for `path` (e.g. `/`).
    pub fn new(path: impl Into<String>) -> WsDialer {
        WsDialer { path: path.into(), max_message: ws::DEFAULT_MAX_MESSAGE, tls: None }
    }

    /// A `wss` dialer: TLS under the WebSocket, the server's certificate checked as `tls`
    /// says (a pinned fingerprint, or CA certificates).
    pub fn secure(path: impl Into<String>, tls: TlsClient) -> WsDialer {
        WsDialer { tls: Some(tls), ..WsDialer::new(path) }
    }
}

impl Default for WsDialer {
    fn default() -> Self {
        WsDialer::new("/")
    }
}

impl Dialer for WsDialer {
    type Raw = WsLink<WsBase>;

    async fn dial(&self, addr: SocketAddr) -> io::Result<WsLink<WsBase>> {
        let tcp = TcpDialer::default().dial(addr).await?;
        let mut base = match &self.tls {
            None => WsBase::Tcp(tcp),
            Some(tls) => {
                let mut config = rustls::ClientConfig::clone(&*tls.config(&addr.to_string(), false)?);
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = tls.server_name(addr.ip())?;
                let local = tcp.local_addr()?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("wss: TLS with {addr}: {e}")))?;
                WsBase::Tls(Box::new(StreamLink::new(stream, local, addr)))
            }
        };
        let (request, key) = ws::request(&addr.to_string(), &self.path, &ws::new_key());
        write_all(&mut base, &request).await?;
        let answer = |buf: &[u8]| ws::parse_answer(buf, &key).map(|whole| whole.map(|used| ((), used)));
        let ((), rest) = read_message(&mut base, answer).await.map_err(|e| match e.kind() {
            // A refusal or an answer that is not a WebSocket's: say so as a refused connection.
            io::ErrorKind::InvalidData => io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()),
            _ => e,
        })?;
        let mut link = WsLink::client(base, self.max_message);
        link.rx = rest;
        Ok(link)
    }
}

/// Where the opening handshake is.
enum Phase {
    /// A server waiting for the client's upgrade request.
    Upgrading(Arc<WsSettings>),
    /// Frames flow.
    Open,
}

/// A WebSocket over a link: the stream's bytes in binary frames.
pub struct WsLink<L> {
    inner: L,
    phase: Phase,
    /// This end is the client (its frames are masked).
    client: bool,
    reader: FrameReader,
    /// Read from the socket, not yet decoded.
    rx: BytesMut,
    /// `rx` holds no whole frame piece that decoding could use: wait for the socket.
    rx_stalled: bool,
    /// Encoded frames (and the handshake's answer) not yet written.
    tx: BytesMut,
    /// Frames written before a server's upgrade finished, sent after its answer.
    early: BytesMut,
    /// A writer waiting for the upgrade to finish.
    write_waker: Option<Waker>,
    /// The peer closed (or this end refused it): reads give end-of-stream.
    eof: bool,
    /// A close frame was queued: nothing more is written.
    closing: bool,
    /// Half-close the socket once `tx` is written.
    shutdown_pending: bool,
}

impl<L: Link> WsLink<L> {
    /// The server's side of a connection whose upgrade request has yet to be read.
    pub fn server(inner: L, settings: Arc<WsSettings>) -> WsLink<L> {
        let reader = FrameReader::new(true, settings.max_message);
        WsLink::new(inner, Phase::Upgrading(settings), false, reader)
    }

    /// The client's side of a connection whose upgrade is done.
    fn client(inner: L, max_message: usize) -> WsLink<L> {
        WsLink::new(inner, Phase::Open, true, FrameReader::new(false, max_message))
    }

    fn new(inner: L, phase: Phase, client: bool, reader: FrameReader) -> WsLink<L> {
        WsLink {
            inner,
            phase,
            client,
            reader,
            rx: BytesMut::new(),
            rx_stalled: false,
            tx: BytesMut::new(),
            early: BytesMut::new(),
            write_waker: None,
            eof: false,
            closing: false,
            shutdown_pending: false,
        }
    }

    fn mask(&self) -> Option<[u8; 4]> {
        self.client.then(ws::rand_mask)
    }

    /// Writes what `tx` holds; `WouldBlock` if some remains.
    fn write_out(&mut self) -> io::Result<()> {
        while !self.tx.is_empty() {
            match self.inner.try_write(&self.tx) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx.advance(n),
                Err(e) => return Err(e),
            }
        }
        // A link underneath that buffers (TLS records behind a full socket) writes its
        // own out, before a shutdown and after it.
        if self.inner.has_pending() {
            self.inner.flush()?;
        }
        if self.shutdown_pending {
            self.inner.shutdown_write()?;
            self.shutdown_pending = false;
            if self.inner.has_pending() {
                self.inner.flush()?;
            }
        }
        Ok(())
    }

    /// Writes what it can of `tx` now; only hard errors are errors.
    fn write_some(&mut self) -> io::Result<()> {
        match self.write_out() {
            Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads from the socket into `rx`: the bytes read (0 at its end). Before the upgrade,
    /// a little at a time: a socket that sends half a request holds at most the request's
    /// limit, not a read chunk.
    fn fill(&mut self) -> io::Result<usize> {
        match self.phase {
            Phase::Upgrading(_) => self
                .rx
                .reserve(UPGRADE_CHUNK.min(ws::MAX_HANDSHAKE - self.rx.len().min(ws::MAX_HANDSHAKE)).max(1)),
            Phase::Open => self.rx.reserve(READ_CHUNK),
        }
        let n = self.inner.try_read_buf(&mut self.rx)?;
        self.rx_stalled = false;
        Ok(n)
    }

    /// A server's upgrade: reads the request and answers it (`WouldBlock` until it is whole).
    fn upgrade(&mut self, settings: &WsSettings) -> io::Result<()> {
        loop {
            match ws::parse_upgrade(&self.rx, &settings.origins) {
                Ok(Some(up)) => {
                    self.rx.advance(up.used);
                    self.tx.extend_from_slice(&up.response);
                    self.tx.extend_from_slice(&std::mem::take(&mut self.early));
                    self.phase = Phase::Open;
                    if let Some(w) = self.write_waker.take() {
                        w.wake();
                    }
                    return self.write_some();
                }
                // Partial: wait for the socket (readiness must not spin on what is here).
                Ok(None) => self.rx_stalled = true,
                Err(e) => {
                    self.tx.extend_from_slice(&ws::refusal(&e));
                    self.refused();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("WebSocket upgrade refused: {}", e.why),
                    ));
                }
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the WebSocket upgrade",
                ));
            }
        }
    }

    /// Gives up on the link after a refusal: what is queued is written, the socket closes.
    fn refused(&mut self) {
        self.eof = true;
        self.closing = true;
        self.shutdown_pending = true;
        let _ = self.write_some();
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    /// Queues a close frame (once).
    fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.closing {
            self.closing = true;
            let mask = self.mask();
            ws::put_close(&mut self.tx, code, reason, mask);
        }
    }

    fn write_parts(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        if self.closing {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closing"));
        }
        if let Phase::Upgrading(_) = self.phase {
            let room = TX_CAP.saturating_sub(self.early.len());
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = total.min(room).min(MAX_OUT_FRAME);
            let mask = self.mask();
            encode(&mut self.early, parts, n, mask);
            return Ok(n);
        }
        self.write_some()?;
        let room = TX_CAP.saturating_sub(self.tx.len());
        if room <= ws::MAX_HEADER {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = total.min(room - ws::MAX_HEADER).min(MAX_OUT_FRAME);
        let mask = self.mask();
        encode(&mut self.tx, parts, n, mask);
        self.write_some()?;
        Ok(n)
    }
}

/// Appends the first `n` bytes of `parts` to `out` as one binary frame.
fn encode(out: &mut BytesMut, parts: &[&[u8]], n: usize, mask: Option<[u8; 4]>) {
    ws::put_binary_header(out, n, mask);
    let start = out.len();
    let mut left = n;
    for part in parts {
        let take = part.len().min(left);
        out.extend_from_slice(&part[..take]);
        left -= take;
    }
    if let Some(mask) = mask {
        ws::apply_mask(&mut out[start..], mask, 0);
    }
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl<L: Link> Link for WsLink<L> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.eof || (!self.rx.is_empty() && !self.rx_stalled) {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_read_ready(cx)
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if let Phase::Upgrading(settings) = &self.phase {
            let settings = settings.clone();
            self.upgrade(&settings)?;
        }
        let mut got = 0;
        loop {
            match self.reader.read(&mut self.rx, buf) {
                Ok(Some(Event::Data(n))) => got += n,
                Ok(Some(Event::Reply(pong))) => {
                    if !self.closing {
                        self.tx.extend_from_slice(&pong);
                        self.write_some()?;
                    }
                }
                Ok(Some(Event::Closed(_))) => {
                    self.queue_close(ws::close::NORMAL, "");
                    self.shutdown_pending = true;
                    self.write_some()?;
                    self.eof = true;
                    return Ok(got);
                }
                Ok(None) => {
                    self.rx_stalled = true;
                    if got > 0 {
                        return Ok(got);
                    }
                    match self.fill() {
                        Ok(0) if self.reader.is_mid_frame() || !self.rx.is_empty() => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "closed in the middle of a WebSocket frame",
                            ))
                        }
                        Ok(0) => {
                            self.eof = true;
                            return Ok(0);
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    self.queue_close(e.close, &e.why);
                    self.refused();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {}", e.why)));
                }
            }
        }
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Phase::Upgrading(_) = self.phase {
            if self.early.len() < TX_CAP {
                return Poll::Ready(Ok(()));
            }
            self.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // Queued frames first: a writer (or a flush) waits for the socket to take them, so a
        // caller flushing never spins on a link that has room but a full socket.
        while !self.tx.is_empty() || self.shutdown_pending {
            if let Err(e) = ready!(self.inner.poll_write_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            match self.write_out() {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_parts(&[buf])
    }

    fn try_write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let parts: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        self.write_parts(&parts)
    }

    fn has_pending(&self) -> bool {
        !self.tx.is_empty() || self.shutdown_pending || self.inner.has_pending()
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Phase::Upgrading(_) = self.phase {
            return if self.early.is_empty() { Ok(()) } else { Err(would_block()) };
        }
        self.write_out()
    }

    fn release_idle(&mut self) {
        if self.rx.is_empty() {
            self.rx = BytesMut::new();
        }
        if self.tx.is_empty() {
            self.tx = BytesMut::new();
        }
        self.inner.release_idle();
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.queue_close(ws::close::NORMAL, "");
        self.shutdown_pending = true;
        self.write_some()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
