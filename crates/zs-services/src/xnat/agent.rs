//! The private side: a link out to the public server that registers the services this
//! agent serves and connects each visitor that arrives on it to the local address;
//! reconnects with backoff when the link drops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zs::secure::SecureStream;
use zs::transport::StreamLink;
use zs::{Client, ClientConfig, Router};

use super::{channel_name, token_proof};

/// A service an agent serves.
#[derive(Debug, Clone)]
pub struct AgentService {
    /// Its name on the server.
    pub name: String,
    /// What its visitors are connected to.
    pub target: Target,
    /// Its token, when the server asks for one.
    pub token: Option<String>,
    /// UDP (else TCP).
    pub udp: bool,
    /// Idle pooled data connections to keep open for its TCP visitors (at most
    /// [`MAX_POOL`](super::MAX_POOL); 0: none, every visitor rides a virtual channel).
    pub pool: usize,
}

/// What an agent connects a service's visitors to.
#[derive(Clone)]
pub enum Target {
    /// A local address (`host:port`).
    Local(String),
    /// A zserver of this process with no listener of its own ([`zs::Server::unbound`]):
    /// each visitor is a client of it (its handshake and router), and no port is opened on
    /// this side (a virtual service).
    Server(zs::ServerHandle),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local(addr) => write!(f, "Local({addr})"),
            Target::Server(_) => write!(f, "Server"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local(addr) => f.write_str(addr),
            Target::Server(_) => f.write_str("a virtual server"),
        }
    }
}

/// Visitors' channels that may wait to be accepted per service; a burst beyond it is
/// refused (the server then closes those visitors).
const BACKLOG: usize = 4096;

/// Backoff after a lost or refused link (or data connection): from 0.5 s, doubling, at
/// most 30 s.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A running agent: stop it by dropping it (or with [`AgentHandle::stop`]).
pub struct AgentHandle {
    stop: watch::Sender<bool>,
    links: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    /// Links made so far (1 once connected and registered; more after reconnects).
    pub fn links(&self) -> usize {
        self.links.load(Relaxed)
    }

    /// Stops the agent and closes its link.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Connects to the server at `addr` (secured as `config` says), registers `services`, and
/// serves their visitors; reconnects after a lost link.
pub fn run_agent(addr: SocketAddr, config: ClientConfig, services: Vec<AgentService>) -> AgentHandle {
    let (stop, mut stopped) = watch::channel(false);
    let links = Arc::new(AtomicUsize::new(0));
    let made = links.clone();
    let task = tokio::spawn(async move {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match link(addr, config.clone(), &services).await {
                // The pool's keepers end with the link (the visitors they carry do not).
                Ok((client, _keepers)) => {
                    made.fetch_add(1, Relaxed);
                    backoff = BACKOFF_FIRST;
                    tokio::select! {
                        why = client.closed() => tracing::warn!(server = %addr, "xnat link lost: {why}"),
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                }
                Err(why) => tracing::warn!(server = %addr, "xnat link failed: {why}; again in {backoff:?}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    AgentHandle { stop, links, task }
}

/// One link: connected, every service registered, visitors served until it drops; and the
/// tasks keeping its services' pooled data connections.
async fn link(
    addr: SocketAddr,
    config: ClientConfig,
    services: &[AgentService],
) -> Result<(Client, JoinSet<()>), String> {
    let mut router = Router::new();
    let mut listeners = Vec::new();
    for s in services {
        listeners.push((
            router.listen_with_backlog(&channel_name(&s.name), BACKLOG),
            s.target.clone(),
            s.udp,
        ));
    }
    let security = config.security.clone();
    let client = Client::connect_with(addr, router, config).await.map_err(|e| e.to_string())?;
    for (mut listener, target, udp) in listeners {
        tokio::spawn(async move {
            while let Some(channel) = listener.accept().await {
                let target = target.clone();
                match (udp, target) {
                    (true, Target::Local(local)) => drop(tokio::spawn(async move {
                        if let Err(e) = super::udp::serve_session(channel, &local).await {
                            tracing::warn!(%local, "xnat: udp session failed: {e}");
                        }
                    })),
                    (_, target) => drop(tokio::spawn(serve_visitor(channel, target))),
                }
            }
        });
    }
    let reply = client.call_console("xnat.challenge", "{}").await.map_err(|e| e.to_string())?;
    let nonce: serde_json::Value = serde_json::from_str(reply.as_str()).map_err(|e| e.to_string())?;
    let nonce =
        nonce["nonce"].as_str().and_then(|h| blake3::Hash::from_hex(h).ok()).ok_or("a bad challenge")?;
    let binding = client.peer().channel().map(|c| c.binding);
    let mut keepers = JoinSet::new();
    for s in services {
        let proof = s.token.as_ref().map(|t| {
            blake3::Hash::from(token_proof(t, &s.name, nonce.as_bytes(), binding)).to_hex().to_string()
        });
        let req = json!({ "service": s.name, "proof": proof }).to_string();
        let reply = client
            .call_console("xnat.register", req)
            .await
            .map_err(|e| format!("service {}: {e}", s.name))?;
        tracing::info!(service = %s.name, server = %addr, "xnat service registered");
        let reply: serde_json::Value = serde_json::from_str(reply.as_str()).map_err(|e| e.to_string())?;
        let port = reply["data_port"].as_u64().and_then(|p| u16::try_from(p).ok());
        let ticket = reply["ticket"].as_str().and_then(|t| blake3::Hash::from_hex(t).ok());
        // A server without a data port (or a UDP service): visitors ride channels.
        let (Some(port), Some(ticket), false) = (port, ticket, s.udp) else { continue };
        let data = SocketAddr::new(addr.ip(), port);
        for _ in 0..s.pool.min(super::MAX_POOL) {
            let target = s.target.clone();
            let serve = move |stream: SecureStream| serve_visitor(stream, target.clone());
            keepers.spawn(super::pool::keep_one(data, security.clone(), *ticket.as_bytes(), serve));
        }
    }
    Ok((client, keepers))
}

/// Connects a visitor (on a virtual channel or a pooled data connection) to the local
/// address and carries bytes both ways, each direction closed when its side closes; or
/// hands it to the virtual server as a client of its own.
async fn serve_visitor<S>(mut visitor: S, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    let from = match super::read_visitor(&mut visitor).await {
        Ok(from) => from,
        Err(e) => return tracing::warn!("xnat: a visit without its visitor's address: {e}"),
    };
    match target {
        Target::Local(local) => match TcpStream::connect(&local).await {
            Ok(mut service) => {
                let _ = service.set_nodelay(true);
                let _ = super::carry::carry(&mut visitor, &mut service, Default::default()).await;
            }
            Err(e) => tracing::warn!(%local, %from, "xnat: cannot reach the local service: {e}"),
        },
        // The server sees the visitor's own address (its per-source limits apply).
        Target::Server(server) => {
            let here = SocketAddr::from(([0, 0, 0, 0], 0));
            server.accept_link(StreamLink::new(visitor, here, from));
        }
    }
}
