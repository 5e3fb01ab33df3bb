//! The public side: a zserver listener agents connect to, and one public listener per
//! service whose visitors are carried to the least loaded agent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use zs::wire::ErrorCode;
use zs::{Fingerprint, HandlerError, Peer, Router, ServerConfig, ServerHandle, ServerSecurity, Text};

use super::{channel_name, token_proof, Protocol, PublicService, ServerFile};
use crate::json::{err, request};

/// A service's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Its name.
    pub name: String,
    /// Where visitors connect.
    pub public: SocketAddr,
    /// Agents serving it now.
    pub agents: usize,
    /// Visitors connected now.
    pub visitors_now: usize,
    /// Visitors carried since the start.
    pub visitors: u64,
    /// Visitors closed at once (no agent, or over the limit).
    pub refused: u64,
    /// Bytes from visitors to the service (finished visits).
    pub bytes_in: u64,
    /// Bytes from the service to visitors (finished visits).
    pub bytes_out: u64,
}

#[derive(Clone)]
struct Agent {
    peer: Peer,
    /// Visitors it carries now.
    load: Arc<AtomicUsize>,
}

struct Service {
    name: String,
    config: PublicService,
    public: SocketAddr,
    agent_keys: Vec<Fingerprint>,
    agents: Mutex<Vec<Agent>>,
    visitors_now: AtomicUsize,
    visitors: AtomicU64,
    refused: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Service {
    fn agents(&self) -> std::sync::MutexGuard<'_, Vec<Agent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connected agent carrying the fewest visitors, skipping `tried`.
    fn pick(&self, tried: &[u64]) -> Option<Agent> {
        let mut agents = self.agents();
        agents.retain(|a| a.peer.is_connected());
        agents.iter().filter(|a| !tried.contains(&a.peer.id())).min_by_key(|a| a.load.load(Relaxed)).cloned()
    }

    /// A channel to the least loaded agent that takes it (trying the others in turn),
    /// counted as a visitor and in that agent's load; `None` (counted as refused) if none does.
    async fn open_channel(&self) -> Option<(Agent, zs::VirtualStream)> {
        let mut tried = Vec::new();
        while let Some(agent) = self.pick(&tried) {
            tried.push(agent.peer.id());
            agent.load.fetch_add(1, Relaxed);
            match agent.peer.open_stream(&channel_name(&self.name)).await {
                Ok(channel) => {
                    self.visitors.fetch_add(1, Relaxed);
                    return Some((agent, channel));
                }
                Err(e) => {
                    agent.load.fetch_sub(1, Relaxed);
                    tracing::info!(service = %self.name, agent = %agent.peer.remote_addr(), "xnat agent could not take a visitor: {e}");
                }
            }
        }
        self.refused.fetch_add(1, Relaxed);
        None
    }

    fn stats(&self) -> ServiceStats {
        ServiceStats {
            name: self.name.clone(),
            public: self.public,
            agents: self.agents().iter().filter(|a| a.peer.is_connected()).count(),
            visitors_now: self.visitors_now.load(Relaxed),
            visitors: self.visitors.load(Relaxed),
            refused: self.refused.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Listener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Udp(s) => s.local_addr(),
        }
    }
}

/// The nonce an agent's proofs on this connection cover.
struct Nonce([u8; 32]);

/// The services this connection serves.
#[derive(Default)]
struct Registered(Mutex<Vec<String>>);

/// A running XNat server.
pub struct XnatServer {
    control: ServerHandle,
    services: Arc<BTreeMap<String, Arc<Service>>>,
    accepting: Vec<JoinHandle<()>>,
}

impl XnatServer {
    /// Listens for agents on `file.listen` (secured as `security` says) and for visitors on
    /// each service's address.
    pub async fn start(file: &ServerFile, security: ServerSecurity) -> Result<XnatServer, String> {
        let mut services = BTreeMap::new();
        let mut listeners = Vec::new();
        for (name, config) in &file.services {
            let bound = |e: std::io::Error| format!("service {name}: {}: {e}", config.bind);
            let listener = match config.protocol {
                Protocol::Tcp => Listener::Tcp(TcpListener::bind(config.bind).await.map_err(bound)?),
                Protocol::Udp => Listener::Udp(UdpSocket::bind(config.bind).await.map_err(bound)?),
            };
            let public = listener.local_addr().map_err(|e| e.to_string())?;
            let agent_keys = config.agent_keys.iter().filter_map(|k| k.parse().ok()).collect();
            let service = Arc::new(Service {
                name: name.clone(),
                config: config.clone(),
                public,
                agent_keys,
                agents: Mutex::new(Vec::new()),
                visitors_now: AtomicUsize::new(0),
                visitors: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
            });
            listeners.push((listener, service.clone()));
            services.insert(name.clone(), service);
        }
        let services = Arc::new(services);
        let config = ServerConfig { security, ..ServerConfig::default() };
        let control = zs::Server::bind(file.listen, control_router(services.clone()), config)
            .await
            .map_err(|e| format!("{}: {e}", file.listen))?;
        let accepting = listeners
            .into_iter()
            .map(|(l, s)| match l {
                Listener::Tcp(l) => tokio::spawn(accept_visitors(l, s)),
                Listener::Udp(socket) => {
                    let (max, name) = (s.config.max_visitors, s.name.clone());
                    let open: super::udp::Opener = Arc::new(move || {
                        let s = s.clone();
                        Box::pin(async move { s.open_channel().await.map(|(_, channel)| channel) })
                    });
                    tokio::spawn(super::udp::serve_public(socket, open, max, name))
                }
            })
            .collect();
        Ok(XnatServer { control, services, accepting })
    }

    /// Where agents connect.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.local_addr()
    }

    /// The agents' listener (its key, its peers).
    pub fn control(&self) -> &ServerHandle {
        &self.control
    }

    /// Where visitors of `service` connect.
    pub fn public_addr(&self, service: &str) -> Option<SocketAddr> {
        self.services.get(service).map(|s| s.public)
    }

    /// Every service's figures.
    pub fn stats(&self) -> Vec<ServiceStats> {
        self.services.values().map(|s| s.stats()).collect()
    }

    /// Stops listening and closes the agents' links.
    pub async fn shutdown(self) {
        self.accepting.iter().for_each(JoinHandle::abort);
        self.control.shutdown().await;
    }
}

fn control_router(services: Arc<BTreeMap<String, Arc<Service>>>) -> Router {
    let mut router = Router::new();
    router.console("xnat.challenge", |peer: &Peer, _text: Text| {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).expect("the operating system provides random bytes");
        peer.set_state(Nonce(nonce));
        json!({ "nonce": blake3::Hash::from(nonce).to_hex().to_string() }).to_string()
    });
    let s = services.clone();
    router.console("xnat.register", move |peer: &Peer, text: Text| {
        register(&s, peer, &text).map(|v| v.to_string())
    });
    let s = services.clone();
    router.console("xnat.stats", move |peer: &Peer, _text: Text| {
        if peer.state::<Registered>().is_none() {
            return Err(err(ErrorCode::Forbidden, "register a service first"));
        }
        let stats: Vec<ServiceStats> = s.values().map(|s| s.stats()).collect();
        Ok::<_, HandlerError>(json!(stats).to_string())
    });
    router.on_disconnect(move |peer, _| {
        let Some(names) = peer.state::<Registered>() else { return };
        for name in names.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(service) = services.get(name) {
                service.agents().retain(|a| a.peer.id() != peer.id());
                tracing::info!(service = %name, agent = %peer.remote_addr(), "xnat agent gone");
            }
        }
    });
    router
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    service: String,
    /// The token proof, hex.
    proof: Option<String>,
}

/// Decodes a register request as the server does (for the fuzz target).
pub(crate) fn decode_request(text: &str) {
    let _ = request::<RegisterRequest>(&Text::from(text.to_owned()))
        .map(|r| r.proof.map(|p| blake3::Hash::from_hex(p).is_ok()));
}

/// Admits `peer` as an agent of a service: by its key, or by a token proof over this
/// connection's nonce.
fn register(
    services: &BTreeMap<String, Arc<Service>>,
    peer: &Peer,
    text: &Text,
) -> Result<Value, HandlerError> {
    let req: RegisterRequest = request(text)?;
    let refused = || err(ErrorCode::AuthFailed, format!("not an agent of {}", req.service));
    let Some(service) = services.get(&req.service) else { return Err(refused()) };
    let by_key = peer.remote_key().is_some_and(|k| service.agent_keys.contains(&k));
    let by_token = match (&service.config.token, &req.proof, peer.state::<Nonce>()) {
        (Some(token), Some(proof), Some(nonce)) => {
            let binding = peer.channel().map(|c| c.binding);
            let expected = blake3::Hash::from(token_proof(token, &req.service, &nonce.0, binding));
            blake3::Hash::from_hex(proof).is_ok_and(|p| p == expected)
        }
        _ => false,
    };
    if !by_key && !by_token {
        tracing::warn!(service = %req.service, agent = %peer.remote_addr(), "xnat agent refused");
        return Err(refused());
    }
    let registered = match peer.state::<Registered>() {
        Some(r) => r,
        None => {
            peer.set_state(Registered::default());
            peer.state::<Registered>().expect("just set")
        }
    };
    let mut names = registered.0.lock().unwrap_or_else(|p| p.into_inner());
    if !names.contains(&req.service) {
        names.push(req.service.clone());
        service.agents().push(Agent { peer: peer.clone(), load: Arc::new(AtomicUsize::new(0)) });
        tracing::info!(service = %req.service, agent = %peer.remote_addr(), "xnat agent registered");
    }
    Ok(json!({ "service": req.service, "agents": service.agents().len() }))
}

async fn accept_visitors(listener: TcpListener, service: Arc<Service>) {
    loop {
        let (visitor, from) = match listener.accept().await {
            Ok(v) => v,
            // Out of files, say: the others go on; a moment later, so does this listener.
            Err(e) => {
                tracing::warn!(service = %service.name, "xnat accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if service.visitors_now.load(Relaxed) >= service.config.max_visitors {
            service.refused.fetch_add(1, Relaxed);
            tracing::warn!(service = %service.name, %from, "xnat visitor closed: {} visitors already", service.config.max_visitors);
            continue;
        }
        service.visitors_now.fetch_add(1, Relaxed);
        tokio::spawn(visit(service.clone(), visitor, from));
    }
}

/// Carries one visitor to an agent.
async fn visit(service: Arc<Service>, mut visitor: TcpStream, from: SocketAddr) {
    let _ = visitor.set_nodelay(true);
    match service.open_channel().await {
        Some((agent, mut channel)) => {
            let moved = tokio::io::copy_bidirectional(&mut visitor, &mut channel).await;
            agent.load.fetch_sub(1, Relaxed);
            if let Ok((to_service, to_visitor)) = moved {
                service.bytes_in.fetch_add(to_service, Relaxed);
                service.bytes_out.fetch_add(to_visitor, Relaxed);
            }
        }
        None => tracing::warn!(service = %service.name, %from, "xnat visitor closed: no agent"),
    }
    service.visitors_now.fetch_sub(1, Relaxed);
}
