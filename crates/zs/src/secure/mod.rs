//! Secure channels: every connection encrypted with its own keys (Noise by default, TLS 1.3
//! as the alternative), rekeyed while it lives, with the server's identity pinned by
//! clients. Plaintext only when asked for. See `docs/PROTOCOL.md` §9.

#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod link;
mod noise;
mod stream;
pub(crate) mod tls;

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use zs_wire::secure::{parse_opening, Opening, PREAMBLE_LEN};
use zs_wire::{FrameDecoder, GoAwayCode, Kind, MAGIC};

pub use keys::{default_known_servers, known_server, remember_server, Fingerprint, KeyPair, Trust};
pub use link::RekeyPolicy;
pub(crate) use link::SecureLink;
use noise::NoiseRecords;
pub use stream::SecureStream;
use tls::TlsRecords;
pub use tls::{self_signed, TlsClient, TlsServer};
pub use zs_wire::secure::NoiseCipher;

use crate::stats::Stats;
use crate::transport::{self, link_enum, Dialer, Link, LinkIo, RawLink};

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

impl ServerSecurity {
    /// The client keys a Noise server lets in (`None`: any, or not Noise).
    pub fn allowed_clients(&self) -> Option<&[Fingerprint]> {
        match self {
            ServerSecurity::Noise(noise) => noise.allowed_clients.as_deref(),
            _ => None,
        }
    }
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

/// A raw link after the handshake of this server's or client's mode: as it is (plaintext),
/// or a secure channel over it. The secure variants are boxed, so a plaintext connection
/// does not pay for their size.
pub(crate) enum SecuredLink<S = RawLink> {
    Plain(S),
    Noise(Box<SecureLink<NoiseRecords, S>>),
    Tls(Box<SecureLink<TlsRecords, S>>),
}

link_enum!(impl[S: Link] SecuredLink<S> { SecuredLink::Plain, SecuredLink::Noise, SecuredLink::Tls });

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
pub(crate) struct Secured<S = RawLink> {
    pub(crate) link: SecuredLink<S>,
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

/// Bytes read past a handshake: what the handshake kept, then what the reader still held.
fn leftover(mut kept: BytesMut, held: BytesMut) -> BytesMut {
    kept.extend_from_slice(&held);
    kept
}

/// Runs the server's side of the handshake over a raw link of any transport, `first` being
/// what was already read from it. A client that speaks the wrong mode is told so in a
/// plaintext goaway before the connection closes.
pub(crate) async fn accept<S: Link>(
    raw: S,
    first: BytesMut,
    security: &ServerSecurity,
    allowed_clients: Option<&[Fingerprint]>,
    rekey: RekeyPolicy,
    stats: Arc<Stats>,
) -> io::Result<Secured<S>> {
    match security {
        ServerSecurity::Plaintext => {
            Ok(Secured { link: SecuredLink::Plain(raw), channel: None, session: false })
        }
        ServerSecurity::Noise(noise) => {
            let mut io = LinkIo::new(raw);
            let mut buf = first;
            let (cipher, session) = loop {
                match parse_opening(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                    Some(Opening::Noise(cipher, session)) => break (cipher, session),
                    Some(Opening::Plaintext) => {
                        let msg =
                            "this server accepts only encrypted (Noise) connections: connect with its key";
                        let (raw, _) = io.into_parts();
                        return Err(
                            refuse(raw, GoAwayCode::EncryptionRequired, msg, "plaintext client").await
                        );
                    }
                    Some(Opening::Tls) => return Err(refused("a TLS client on a Noise listener".into())),
                    None if io.read_buf(&mut buf).await? == 0 => {
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
            let hs = noise::respond(&mut io, key, cipher, session, buf).await?;
            let remote = Fingerprint(hs.remote_key);
            let channel = noise_info(cipher, &hs);
            let (raw, held) = io.into_parts();
            let link = SecureLink::new(raw, hs.records, leftover(hs.leftover, held), rekey, stats);
            let link = SecuredLink::Noise(Box::new(link));
            if allowed_clients.is_some_and(|allowed| !allowed.contains(&remote)) {
                let msg = format!("client key {remote} is not allowed on this server");
                return Err(refuse(link, GoAwayCode::NotAuthorized, &msg, "client key not allowed").await);
            }
            Ok(Secured { link, channel, session })
        }
        ServerSecurity::Tls(tls) => {
            let mut io = LinkIo::with_prefix(raw, first);
            match io.peek_first().await? {
                None => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the handshake"))
                }
                Some(0x16) => {}
                Some(_) => {
                    let msg = "this server accepts only TLS connections: connect with --tls";
                    let (raw, _) = io.into_parts();
                    return Err(refuse(raw, GoAwayCode::EncryptionRequired, msg, "non-TLS client").await);
                }
            }
            let stream = tokio_rustls::TlsAcceptor::from(tls.config.clone()).accept(io).await?;
            let (io, conn) = stream.into_inner();
            let session = conn.alpn_protocol() == Some(tls::SESSION_ALPN);
            let records = TlsRecords::new(conn);
            let channel = Some(ChannelInfo {
                protocol: records.describe(),
                remote_key: None,
                binding: records.binding()?,
            });
            let (raw, held) = io.into_parts();
            Ok(Secured {
                link: SecuredLink::Tls(Box::new(SecureLink::new(raw, records, held, rekey, stats))),
                channel,
                session,
            })
        }
    }
}

/// Dials `addr` through `dialer` and runs the client's side of the handshake, all within
/// `timeout`.
pub(crate) async fn connect<D: Dialer>(
    dialer: &D,
    addr: impl tokio::net::ToSocketAddrs,
    security: &ClientSecurity,
    session: bool,
    timeout: Duration,
    rekey: RekeyPolicy,
    stats: Arc<Stats>,
) -> io::Result<Secured>
where
    D::Raw: Into<RawLink>,
{
    let establish = async {
        let raw = transport::tcp::dial_first(dialer, addr, timeout).await?;
        handshake(raw.into(), security, session, rekey, stats).await
    };
    tokio::time::timeout(timeout, establish).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connecting timed out after {timeout:?}"))
    })?
}

/// Runs the client's side of the handshake over a raw link of any transport.
pub(crate) async fn handshake<S: Link>(
    raw: S,
    security: &ClientSecurity,
    session: bool,
    rekey: RekeyPolicy,
    stats: Arc<Stats>,
) -> io::Result<Secured<S>> {
    let peer = raw.peer_addr()?;
    let name = peer.to_string();
    match security {
        ClientSecurity::Plaintext if session => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "resumable sessions need an encrypted channel (Noise or TLS): its binding is what a resume proves",
        )),
        ClientSecurity::Plaintext => Ok(Secured { link: SecuredLink::Plain(raw), channel: None, session: false }),
        ClientSecurity::Noise(noise) => {
            let key = noise.key.as_ref().unwrap_or_else(|| anonymous_key());
            let verify = |k: &[u8; 32]| noise.trust.check(&Fingerprint(*k), &name);
            let mut io = LinkIo::new(raw);
            let hs = noise::initiate(&mut io, key, noise.cipher, session, plaintext_reply, verify).await?;
            let channel = noise_info(noise.cipher, &hs);
            let (raw, held) = io.into_parts();
            let link = SecureLink::new(raw, hs.records, leftover(hs.leftover, held), rekey, stats);
            Ok(Secured { link: SecuredLink::Noise(Box::new(link)), channel, session })
        }
        ClientSecurity::Tls(tls) => {
            let config = tls.config(&name, session)?;
            let server_name = tls.server_name(peer.ip())?;
            let stream = tokio_rustls::TlsConnector::from(config).connect(server_name, LinkIo::new(raw)).await?;
            let (io, conn) = stream.into_inner();
            let remote_key =
                conn.peer_certificates().and_then(|c| c.first()).map(|c| Fingerprint::of_certificate(c));
            let records = TlsRecords::new(conn);
            let channel =
                Some(ChannelInfo { protocol: records.describe(), remote_key, binding: records.binding()? });
            let (raw, held) = io.into_parts();
            Ok(Secured {
                link: SecuredLink::Tls(Box::new(SecureLink::new(raw, records, held, rekey, stats))),
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
pub(crate) async fn refuse(link: impl Link, code: GoAwayCode, msg: &str, what: &str) -> io::Error {
    let mut out = BytesMut::new();
    zs_wire::encode::goaway(&mut out, code, msg);
    say_and_close(link, &out).await;
    refused(format!("{what} refused: {msg}"))
}

/// Writes `last` (a refusal) over `link`, half-closes, and discards what the peer still
/// sends for a moment, so it reads the reason instead of a reset.
pub(crate) async fn say_and_close(mut link: impl Link, last: &[u8]) {
    let deadline = tokio::time::Instant::now() + REFUSAL_LINGER;
    if let Ok(Ok(())) = tokio::time::timeout_at(deadline, transport::write_all(&mut link, last)).await {
        transport::close_after_draining(&mut link, deadline).await;
    }
}
