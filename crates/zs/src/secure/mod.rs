//! Secure channels: every connection encrypted with its own keys (Noise by default, TLS 1.3
//! as the alternative), rekeyed while it lives, with the server's identity pinned by
//! clients. Plaintext only when asked for. See `docs/PROTOCOL.md` §9.

#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod link;
mod noise;
mod stream;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use zs_wire::secure::{parse_opening, Opening, PREAMBLE_LEN};
use zs_wire::{FrameDecoder, GoAwayCode, Kind, MAGIC};

pub use keys::{default_known_servers, known_server, remember_server, Fingerprint, KeyPair, Trust};
pub(crate) use link::RekeyPolicy;
use link::SecureLink;
use noise::NoiseRecords;
pub use stream::SecureStream;
use tls::TlsRecords;
pub use tls::{self_signed, TlsClient, TlsServer};
pub use zs_wire::secure::NoiseCipher;

use crate::config::ConnectionConfig;
use crate::rpc::encode;
use crate::stats::Stats;
use crate::transport::{self, Link};

/// How a server secures its connections (default: Noise).
#[derive(Debug, Clone)]
pub enum ServerSecurity {
    /// Noise XX: the server proves its static key, clients may prove theirs.
    Noise(NoiseServer),
    /// TLS 1.3 with a certificate.
    Tls(TlsServer),
    /// No encryption: for trusted networks and loopback only.
    Plaintext,
}

impl Default for ServerSecurity {
    fn default() -> Self {
        ServerSecurity::Noise(NoiseServer::default())
    }
}

/// A Noise server's identity and whom it lets in.
#[derive(Debug, Clone, Default)]
pub struct NoiseServer {
    /// The static key (default: a new key for each `Server::bind`; `zs serve` keeps one in
    /// its data directory).
    pub key: Option<KeyPair>,
    /// Client keys allowed to connect (mutual authentication, for server-to-server
    /// links); `None` = any client.
    pub allowed_clients: Option<Vec<Fingerprint>>,
}

/// How a client secures its connection (default: Noise, trusting the known-servers file).
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// Noise XX.
    Noise(NoiseClient),
    /// TLS 1.3.
    Tls(TlsClient),
    /// No encryption.
    Plaintext,
}

impl Default for ClientSecurity {
    fn default() -> Self {
        ClientSecurity::Noise(NoiseClient::default())
    }
}

impl From<Fingerprint> for ClientSecurity {
    /// Noise, accepting exactly this server key.
    fn from(key: Fingerprint) -> Self {
        ClientSecurity::Noise(NoiseClient { trust: key.into(), ..NoiseClient::default() })
    }
}

impl From<Trust> for ClientSecurity {
    /// Noise, accepting the servers this trust accepts.
    fn from(trust: Trust) -> Self {
        ClientSecurity::Noise(NoiseClient { trust, ..NoiseClient::default() })
    }
}

/// A Noise client's trust and identity.
#[derive(Debug, Clone, Default)]
pub struct NoiseClient {
    /// Which server keys are accepted.
    pub trust: Trust,
    /// This client's static key, for servers that admit known clients only (default: an
    /// anonymous key made once per process).
    pub key: Option<KeyPair>,
    /// The AEAD cipher (default AES-256-GCM).
    pub cipher: NoiseCipher,
}

/// The key of clients that have none of their own.
fn anonymous_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(KeyPair::generate)
}

/// The link a connection runs on: plain TCP or a secure channel over it.
///
/// The secure variants are boxed, so a plaintext connection does not pay for their size.
pub(crate) enum AnyLink {
    Tcp(TcpStream),
    Noise(Box<SecureLink<NoiseRecords>>),
    Tls(Box<SecureLink<TlsRecords>>),
    /// A resumable session over one of the others.
    Session(Box<crate::session::SessionLink>),
    /// A ZServer4D client, translated (see `compat`).
    Compat(Box<crate::compat::CompatLink>),
}

macro_rules! each_link {
    ($self:expr, $l:ident => $e:expr) => {
        match $self {
            AnyLink::Tcp($l) => $e,
            AnyLink::Noise($l) => $e,
            AnyLink::Tls($l) => $e,
            AnyLink::Session($l) => $e,
            AnyLink::Compat($l) => $e,
        }
    };
}

impl Link for AnyLink {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_link!(self, l => l.poll_read_ready(cx))
    }
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        each_link!(self, l => l.try_read_buf(buf))
    }
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_link!(self, l => l.poll_write_ready(cx))
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each_link!(self, l => l.try_write(buf))
    }
    fn try_write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        each_link!(self, l => l.try_write_vectored(bufs))
    }
    fn try_write_shared(&mut self, segments: &[Bytes], tail: &[u8]) -> io::Result<usize> {
        each_link!(self, l => l.try_write_shared(segments, tail))
    }
    fn has_pending(&self) -> bool {
        each_link!(self, l => l.has_pending())
    }
    fn flush(&mut self) -> io::Result<()> {
        each_link!(self, l => Link::flush(l))
    }
    fn release_idle(&mut self) {
        each_link!(self, l => l.release_idle())
    }
    fn detached(&self) -> bool {
        each_link!(self, l => l.detached())
    }
    fn abandon(&mut self, why: &str) -> bool {
        each_link!(self, l => l.abandon(why))
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        each_link!(self, l => l.shutdown_write())
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        each_link!(self, l => Link::peer_addr(l))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        each_link!(self, l => Link::local_addr(l))
    }
}

/// What a secure channel established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The protocol and its parameters, e.g. `Noise_XX_25519_AESGCM_BLAKE2s` or
    /// `TLS 1.3 TLS13_AES_256_GCM_SHA384 X25519MLKEM768`.
    pub protocol: String,
    /// The identity the other end proved: its Noise static key, or (seen by a TLS client)
    /// the server certificate's fingerprint.
    pub remote_key: Option<Fingerprint>,
    /// A value both ends share and nobody else knows, unique to this connection (the Noise
    /// handshake hash, or a TLS exporter): what a resumed session binds its proof to.
    pub binding: [u8; 32],
}

/// A connection after its handshake, and what the handshake established (`None` in
/// plaintext).
pub(crate) struct Secured {
    pub(crate) link: AnyLink,
    pub(crate) channel: Option<ChannelInfo>,
    /// The client asked for a resumable session: its hello follows.
    pub(crate) session: bool,
}

fn noise_info(cipher: NoiseCipher, hs: &noise::Handshaken) -> Option<ChannelInfo> {
    Some(ChannelInfo {
        protocol: cipher.protocol_name().into(),
        remote_key: Some(Fingerprint(hs.remote_key)),
        binding: hs.binding,
    })
}

fn refused(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, msg)
}

/// Runs the server's side of the handshake. A client that speaks the wrong mode is told
/// so in a plaintext goaway before the connection closes.
pub(crate) async fn accept(
    mut tcp: TcpStream,
    security: &ServerSecurity,
    rekey: RekeyPolicy,
    stats: Arc<Stats>,
) -> io::Result<Secured> {
    match security {
        ServerSecurity::Plaintext => Ok(Secured { link: AnyLink::Tcp(tcp), channel: None, session: false }),
        ServerSecurity::Noise(noise) => {
            let mut buf = BytesMut::with_capacity(256);
            let (cipher, session) = loop {
                match parse_opening(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                    Some(Opening::Noise(cipher, session)) => break (cipher, session),
                    Some(Opening::Plaintext) => {
                        let msg =
                            "this server accepts only encrypted (Noise) connections: connect with its key";
                        return Err(refuse(
                            AnyLink::Tcp(tcp),
                            GoAwayCode::EncryptionRequired,
                            msg,
                            "plaintext client",
                        )
                        .await);
                    }
                    Some(Opening::Tls) => return Err(refused("a TLS client on a Noise listener".into())),
                    None if tcp.read_buf(&mut buf).await? == 0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "closed before the handshake",
                        ))
                    }
                    None => {}
                }
            };
            buf.advance(PREAMBLE_LEN);
            let key = noise.key.as_ref().expect("the server's key is set at bind");
            let hs = noise::respond(&mut tcp, key, cipher, session, buf).await?;
            let remote = Fingerprint(hs.remote_key);
            let channel = noise_info(cipher, &hs);
            let link = AnyLink::Noise(Box::new(SecureLink::new(tcp, hs.records, hs.leftover, rekey, stats)));
            if noise.allowed_clients.as_ref().is_some_and(|allowed| !allowed.contains(&remote)) {
                let msg = format!("client key {remote} is not allowed on this server");
                return Err(refuse(link, GoAwayCode::NotAuthorized, &msg, "client key not allowed").await);
            }
            Ok(Secured { link, channel, session })
        }
        ServerSecurity::Tls(tls) => {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the handshake"));
            }
            if first[0] != 0x16 {
                let msg = "this server accepts only TLS connections: connect with --tls";
                return Err(
                    refuse(AnyLink::Tcp(tcp), GoAwayCode::EncryptionRequired, msg, "non-TLS client").await
                );
            }
            let stream = tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(tcp).await?;
            let (tcp, conn) = stream.into_inner();
            let session = conn.alpn_protocol() == Some(tls::SESSION_ALPN);
            let records = TlsRecords::new(conn);
            let channel = Some(ChannelInfo {
                protocol: records.describe(),
                remote_key: None,
                binding: records.binding()?,
            });
            Ok(Secured {
                link: AnyLink::Tls(Box::new(SecureLink::new(tcp, records, BytesMut::new(), rekey, stats))),
                channel,
                session,
            })
        }
    }
}

/// Connects to `addr` and runs the client's side of the handshake, all within `timeout`.
pub(crate) async fn connect(
    addr: impl tokio::net::ToSocketAddrs,
    security: &ClientSecurity,
    session: bool,
    timeout: Duration,
    config: &ConnectionConfig,
    stats: Arc<Stats>,
) -> io::Result<Secured> {
    let establish = async {
        let tcp = transport::connect(addr, timeout).await?;
        transport::tune(&tcp, config.socket_unsent_limit);
        handshake(tcp, security, session, config.rekey_policy(), stats).await
    };
    tokio::time::timeout(timeout, establish).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connecting timed out after {timeout:?}"))
    })?
}

/// Runs the client's side of the handshake.
async fn handshake(
    mut tcp: TcpStream,
    security: &ClientSecurity,
    session: bool,
    rekey: RekeyPolicy,
    stats: Arc<Stats>,
) -> io::Result<Secured> {
    let name = tcp.peer_addr()?.to_string();
    match security {
        ClientSecurity::Plaintext if session => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "resumable sessions need an encrypted channel (Noise or TLS): its binding is what a resume proves",
        )),
        ClientSecurity::Plaintext => Ok(Secured { link: AnyLink::Tcp(tcp), channel: None, session: false }),
        ClientSecurity::Noise(noise) => {
            let key = noise.key.as_ref().unwrap_or_else(|| anonymous_key());
            let verify = |k: &[u8; 32]| noise.trust.check(&Fingerprint(*k), &name);
            let hs = noise::initiate(&mut tcp, key, noise.cipher, session, plaintext_reply, verify).await?;
            let channel = noise_info(noise.cipher, &hs);
            Ok(Secured {
                link: AnyLink::Noise(Box::new(SecureLink::new(tcp, hs.records, hs.leftover, rekey, stats))),
                channel,
                session,
            })
        }
        ClientSecurity::Tls(tls) => {
            let config = tls.config(&name, session)?;
            let server_name = tls.server_name(tcp.peer_addr()?.ip())?;
            let stream = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await?;
            let (tcp, conn) = stream.into_inner();
            let remote_key =
                conn.peer_certificates().and_then(|c| c.first()).map(|c| Fingerprint::of_certificate(c));
            let records = TlsRecords::new(conn);
            let channel =
                Some(ChannelInfo { protocol: records.describe(), remote_key, binding: records.binding()? });
            Ok(Secured {
                link: AnyLink::Tls(Box::new(SecureLink::new(tcp, records, BytesMut::new(), rekey, stats))),
                channel,
                session,
            })
        }
    }
}

/// The error a Noise client reports when the server answered with something other than a
/// handshake message: a plaintext goaway (a refusal, or a plaintext server), or TLS.
fn plaintext_reply(buf: &[u8]) -> Option<io::Error> {
    match *buf.first()? {
        MAGIC => {
            let mut b = BytesMut::from(buf);
            match FrameDecoder::default().decode(&mut b) {
                Ok(None) => None,
                Ok(Some(f)) if f.header.kind == Kind::GoAway => {
                    let (code, msg) = zs_wire::body::parse_code_message(&f.body).unwrap_or((0, ""));
                    let code = GoAwayCode::from_code(code);
                    Some(refused(if code == GoAwayCode::ProtocolError {
                        format!("the server speaks plaintext zserver, not Noise: connect with --plaintext (it said: {msg})")
                    } else {
                        format!("the server refused the connection: {code}: {msg}")
                    }))
                }
                _ => Some(refused("the server answered the handshake with a plaintext frame".into())),
            }
        }
        0x15 | 0x16 => Some(refused("the server speaks TLS, not Noise: connect with --tls".into())),
        _ => None,
    }
}

/// How long a refused client has to read why before the connection is dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Tells the peer why it is refused (a goaway over `link`) and closes; returns the error to
/// log.
pub(crate) async fn refuse(link: AnyLink, code: GoAwayCode, msg: &str, what: &str) -> io::Error {
    let mut out = BytesMut::new();
    encode::goaway(&mut out, code, msg);
    say_and_close(link, &out).await;
    refused(format!("{what} refused: {msg}"))
}

/// Writes `last` (a refusal) over `link`, half-closes, and discards what the peer still
/// sends for a moment, so it reads the reason instead of a reset.
pub(crate) async fn say_and_close(mut link: AnyLink, last: &[u8]) {
    let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
    if let Ok(Ok(())) = tokio::time::timeout_at(deadline, transport::write_all(&mut link, last)).await {
        transport::close_after_draining(&mut link, deadline).await;
    }
}
