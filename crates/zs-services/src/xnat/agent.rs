//! The private side: a link out to the public server that registers the services this
//! agent serves and connects each visitor that arrives on it to the local address;
//! reconnects with backoff when the link drops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use zs::{Client, ClientConfig, Router, VirtualStream};

use super::{channel_name, token_proof};

/// A service an agent serves.
#[derive(Debug, Clone)]
pub struct AgentService {
    /// Its name on the server.
    pub name: String,
    /// Where its visitors are connected to.
    pub local: String,
    /// Its token, when the server asks for one.
    pub token: Option<String>,
    /// UDP (else TCP).
    pub udp: bool,
}

/// Visitors' channels that may wait to be accepted per service; a burst beyond it is
/// refused (the server then closes those visitors).
const BACKLOG: usize = 4096;

/// Backoff after a lost or refused link: from 0.5 s, doubling, at most 30 s.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

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
                Ok(client) => {
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

/// One link: connected, every service registered, visitors served until it drops.
async fn link(addr: SocketAddr, config: ClientConfig, services: &[AgentService]) -> Result<Client, String> {
    let mut router = Router::new();
    let mut listeners = Vec::new();
    for s in services {
        listeners.push((router.listen_with_backlog(&channel_name(&s.name), BACKLOG), s.local.clone(), s.udp));
    }
    let client = Client::connect_with(addr, router, config).await.map_err(|e| e.to_string())?;
    for (mut listener, local, udp) in listeners {
        tokio::spawn(async move {
            while let Some(channel) = listener.accept().await {
                let local = local.clone();
                match udp {
                    false => drop(tokio::spawn(serve_visitor(channel, local))),
                    true => drop(tokio::spawn(async move {
                        if let Err(e) = super::udp::serve_session(channel, &local).await {
                            tracing::warn!(%local, "xnat: udp session failed: {e}");
                        }
                    })),
                }
            }
        });
    }
    let reply = client.call_console("xnat.challenge", "{}").await.map_err(|e| e.to_string())?;
    let nonce: serde_json::Value = serde_json::from_str(reply.as_str()).map_err(|e| e.to_string())?;
    let nonce =
        nonce["nonce"].as_str().and_then(|h| blake3::Hash::from_hex(h).ok()).ok_or("a bad challenge")?;
    let binding = client.peer().channel().map(|c| c.binding);
    for s in services {
        let proof = s.token.as_ref().map(|t| {
            blake3::Hash::from(token_proof(t, &s.name, nonce.as_bytes(), binding)).to_hex().to_string()
        });
        let req = json!({ "service": s.name, "proof": proof }).to_string();
        client.call_console("xnat.register", req).await.map_err(|e| format!("service {}: {e}", s.name))?;
        tracing::info!(service = %s.name, server = %addr, "xnat service registered");
    }
    Ok(client)
}

/// Connects a visitor's channel to the local address and carries bytes both ways, each
/// direction closed when its side closes.
async fn serve_visitor(mut channel: VirtualStream, local: String) {
    match TcpStream::connect(&local).await {
        Ok(mut service) => {
            let _ = service.set_nodelay(true);
            let _ = super::carry::carry(&mut channel, &mut service, Default::default()).await;
        }
        Err(e) => tracing::warn!(%local, "xnat: cannot reach the local service: {e}"),
    }
}
