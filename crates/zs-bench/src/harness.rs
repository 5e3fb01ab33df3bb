//! What every scenario starts with: runtimes, and our server beside a floor server.

use std::future::Future;
use std::net::SocketAddr;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use zs::{ClientConfig, ClientSecurity, Fingerprint, IncomingStream, Router, ServerConfig, ServerSecurity};

/// The commands `zs serve` and the in-process benchmarks serve: `echo` (console),
/// `echo_stream` (stream), `sink` (big stream: read, verify, discard); `stats` is added by
/// the server.
pub fn builtin_router() -> Router {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.stream("echo_stream", |_, df| df);
    r.big_stream("sink", |_, mut stream: IncomingStream| async move {
        while let Some(chunk) = stream.next_chunk().await {
            chunk?;
        }
        Ok::<_, zs::CallError>(())
    });
    r
}

/// A two-thread runtime.
pub(crate) fn runtime(name: &str) -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// How our server is secured in a benchmark (`--secure none|noise|tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Secure {
    /// Plaintext, like the floor.
    #[default]
    None,
    /// Noise (AES-256-GCM).
    Noise,
    /// TLS 1.3 with a self-signed certificate.
    Tls,
}

impl std::str::FromStr for Secure {
    type Err = String;
    fn from_str(s: &str) -> Result<Secure, String> {
        match s {
            "none" | "plaintext" => Ok(Secure::None),
            "noise" => Ok(Secure::Noise),
            "tls" => Ok(Secure::Tls),
            _ => Err(format!("`{s}` is not a security mode (none, noise, tls)")),
        }
    }
}

impl Secure {
    pub(crate) fn server(self) -> std::io::Result<ServerSecurity> {
        Ok(match self {
            Secure::None => ServerSecurity::Plaintext,
            Secure::Noise => ServerSecurity::default(),
            Secure::Tls => {
                let (cert, key) = zs::secure::self_signed(&["127.0.0.1".to_string()])?;
                ServerSecurity::Tls(zs::secure::TlsServer::from_pem(cert.as_bytes(), key.as_bytes())?)
            }
        })
    }

    /// What a client needs to reach a server in this mode that presents `fingerprint`.
    pub fn client(self, fingerprint: Option<Fingerprint>) -> Result<ClientSecurity, String> {
        match (self, fingerprint) {
            (Secure::None, _) => Ok(ClientSecurity::Plaintext),
            (Secure::Noise, Some(fp)) => Ok(fp.into()),
            (Secure::Tls, Some(fp)) => Ok(ClientSecurity::Tls(zs::secure::TlsClient::pinned(fp))),
            (mode, None) => Err(format!("a {mode:?} server needs a key fingerprint")),
        }
    }

    /// The name `--secure` takes.
    pub fn name(self) -> &'static str {
        match self {
            Secure::None => "none",
            Secure::Noise => "noise",
            Secure::Tls => "tls",
        }
    }

    /// The `zs serve` arguments that select this mode.
    pub(crate) fn serve_args(self) -> &'static [&'static str] {
        match self {
            Secure::None => &["--plaintext"],
            Secure::Noise => &[],
            Secure::Tls => &["--tls"],
        }
    }
}

/// A server of ours to drive: its address and what a client needs to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    pub security: ClientSecurity,
    /// Clients open a resumable session.
    pub session: bool,
    /// The server's WebSocket listener, if it has one.
    pub ws_addr: Option<SocketAddr>,
    /// The server's QUIC listener, if it has one, and its UDP buffer sizes (in, out).
    pub quic: Option<(SocketAddr, (usize, usize))>,
    /// What clients connect over.
    pub via: Via,
}

/// The transport a benchmark's clients use (`--transport tcp|ws|quic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// TCP.
    #[default]
    Tcp,
    /// WebSocket, beside the TCP listener.
    Ws,
    /// QUIC, beside the TCP listener.
    Quic,
}

impl Via {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Via::Tcp => "TCP",
            Via::Ws => "WebSocket",
            Via::Quic => "QUIC",
        }
    }
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Via, String> {
        match s {
            "tcp" => Ok(Via::Tcp),
            "ws" | "websocket" => Ok(Via::Ws),
            "quic" => Ok(Via::Quic),
            _ => Err(format!("`{s}` is not a transport (tcp, ws, quic)")),
        }
    }
}

impl Target {
    /// A plaintext server (the floor).
    pub(crate) fn plain(addr: SocketAddr) -> Target {
        Target {
            addr,
            security: ClientSecurity::Plaintext,
            session: false,
            ws_addr: None,
            quic: None,
            via: Via::Tcp,
        }
    }

    /// The same server reached over `via`.
    pub(crate) fn via(&self, via: Via) -> Target {
        Target { via, ..self.clone() }
    }

    /// Connects a client as the target says (over TCP, or its WebSocket or QUIC listener).
    pub(crate) async fn connect(&self) -> std::io::Result<zs::Client> {
        let config = self.client_config();
        match (self.via, self.ws_addr, self.quic) {
            (Via::Ws, Some(ws), _) => {
                let dialer = zs::transport::ws::WsDialer::default();
                zs::Client::connect_over(dialer, ws, Router::new(), config).await
            }
            (Via::Quic, _, Some((quic, _))) => {
                zs::Client::connect_over(zs::transport::quic::QuicDialer, quic, Router::new(), config).await
            }
            _ => zs::Client::connect_with(self.addr, Router::new(), config).await,
        }
    }

    /// Client settings that reach it.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let session = self.session.then(zs::SessionConfig::default);
        ClientConfig { session, ..ClientConfig::secured(self.security.clone()) }
    }
}

/// The servers of a scenario, served until the process ends.
pub(crate) struct Servers {
    /// The runtime they run on.
    pub rt: Runtime,
    /// Ours, secured as asked.
    pub ours: Target,
    /// Ours in plaintext, beside a secured one (for the cost of security in the same run).
    pub ours_plaintext: Option<Target>,
    /// The floor.
    pub floor: SocketAddr,
}

impl Servers {
    /// Starts a peer's server (`serve` on a loopback listener) beside ours; returns its
    /// address.
    pub(crate) fn start_peer<F>(&self, serve: fn(TcpListener) -> F) -> Result<SocketAddr, String>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.rt
            .block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                tokio::spawn(serve(listener));
                Ok::<_, std::io::Error>(addr)
            })
            .map_err(|e| e.to_string())
    }
}

/// Starts our server (the built-in router) secured as `secure` says, a plaintext one too
/// if that is not plaintext, and a floor server (`floor` serving a listener), on a runtime
/// of their own.
pub(crate) fn start_servers<F>(floor: fn(TcpListener) -> F, secure: Secure) -> Result<Servers, String>
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = runtime("zs-bench-server")?;
    let ours = serve_ours(&rt, secure.server().map_err(|e| e.to_string())?, builtin_router())?;
    let ours_plaintext = match secure {
        Secure::None => None,
        _ => Some(serve_ours(&rt, ServerSecurity::Plaintext, builtin_router())?),
    };
    let floor_addr = rt
        .block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let floor_addr = listener.local_addr()?;
            tokio::spawn(floor(listener));
            Ok::<_, std::io::Error>(floor_addr)
        })
        .map_err(|e| e.to_string())?;
    Ok(Servers { rt, ours, ours_plaintext, floor: floor_addr })
}

/// Starts a server of ours with `router` on `rt`, served until the process ends.
pub(crate) fn serve_ours(rt: &Runtime, security: ServerSecurity, router: Router) -> Result<Target, String> {
    rt.block_on(async {
        let config = ServerConfig { security, ..ServerConfig::default() };
        let server = zs::Server::bind("127.0.0.1:0", router, config).await?;
        let settings = zs::transport::ws::WsSettings::default();
        let ws = zs::transport::ws::WsListener::bind("127.0.0.1:0", settings).await?.remove(0);
        let ws_addr = Some(server.serve(ws)?);
        let quic = zs::transport::quic::QuicListener::bind("127.0.0.1:0".parse().expect("addr"))?;
        let buffers = quic.buffer_sizes();
        let quic = Some((server.serve(quic)?, buffers));
        std::mem::forget(server.clone()); // served until the process ends
        let (addr, security) = (server.local_addr(), server.client_security());
        Ok::<_, std::io::Error>(Target { addr, security, session: false, ws_addr, quic, via: Via::Tcp })
    })
    .map_err(|e| e.to_string())
}
