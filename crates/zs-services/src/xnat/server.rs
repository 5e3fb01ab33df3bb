//! The public side: a zserver listener agents connect to, and one public listener per
//! service whose visitors are carried to the least loaded agent.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use zs::secure::SecureStream;
use zs::wire::ErrorCode;
use zs::{Fingerprint, HandlerError, Peer, Router, ServerConfig, ServerHandle, ServerSecurity, Text};

use super::carry::{Bounds, Rate};
use super::pool::{Pool, TICKET_LEN};
use super::{channel_name, token_proof, Protocol, PublicService, ServerFile};
use crate::json::{err, request};
use crate::limits::Counted;

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
    /// Visitors carried by a pooled data connection (the others rode a virtual channel).
    pub pooled_visits: u64,
    /// Idle pooled data connections ready for visitors now.
    pub pooled_ready: usize,
}

/// An agent's share of the load while a visit or session lasts.
struct Carrying(Arc<AtomicUsize>);

impl Drop for Carrying {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[derive(Clone)]
struct Agent {
    peer: Peer,
    /// Visitors it carries now.
    load: Arc<AtomicUsize>,
    /// Its idle data connections for this service.
    pool: Arc<Pool>,
}

/// What a reload may change in place.
struct Settings {
    config: PublicService,
    agent_keys: Vec<Fingerprint>,
    /// The service's byte rate, shared by its visitors.
    rate: Option<Arc<Rate>>,
}

impl Settings {
    fn new(config: &PublicService) -> Settings {
        Settings {
            config: config.clone(),
            agent_keys: config.agent_keys.iter().filter_map(|k| k.parse().ok()).collect(),
            rate: config.max_bytes_per_s.map(|r| Arc::new(Rate::new(r))),
        }
    }
}

struct Service {
    name: String,
    public: SocketAddr,
    settings: Mutex<Settings>,
    /// The task taking its visitors.
    accepting: Mutex<Option<JoinHandle<()>>>,
    agents: Mutex<Vec<Agent>>,
    visitors_now: Arc<AtomicUsize>,
    visitors: AtomicU64,
    refused: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    pooled_visits: AtomicU64,
}

/// How a visitor's bytes reach its agent.
enum Carrier {
    /// A pooled data connection of its own.
    Pooled(SecureStream),
    /// A virtual channel of the agent's link.
    Channel(zs::VirtualStream),
}

impl Service {
    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops taking visitors (those carried go on).
    fn close(&self) {
        if let Some(task) = self.accepting.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Binds `config`'s address and starts taking visitors.
    async fn open(name: &str, config: &PublicService) -> Result<Arc<Service>, String> {
        let bound = |e: std::io::Error| format!("service {name}: {}: {e}", config.bind);
        let listener = match config.protocol {
            Protocol::Tcp => Listener::Tcp(TcpListener::bind(config.bind).await.map_err(bound)?),
            Protocol::Udp => Listener::Udp(UdpSocket::bind(config.bind).await.map_err(bound)?),
        };
        let public = listener.local_addr().map_err(|e| e.to_string())?;
        let service = Arc::new(Service {
            name: name.to_owned(),
            public,
            settings: Mutex::new(Settings::new(config)),
            accepting: Mutex::new(None),
            agents: Mutex::new(Vec::new()),
            visitors_now: Arc::default(),
            visitors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            pooled_visits: AtomicU64::new(0),
        });
        let task = match listener {
            Listener::Tcp(l) => tokio::spawn(accept_visitors(l, service.clone())),
            Listener::Udp(socket) => {
                let (max, s) = (config.max_visitors, service.clone());
                let open: super::udp::Opener = Arc::new(move || {
                    let s = s.clone();
                    Box::pin(async move {
                        s.open_carrier(false).await.and_then(|(carrying, carrier)| match carrier {
                            Carrier::Channel(channel) => Some((channel, Box::new(carrying) as Box<dyn Send>)),
                            Carrier::Pooled(_) => None,
                        })
                    })
                });
                tokio::spawn(super::udp::serve_public(socket, open, max, name.to_owned()))
            }
        };
        *service.accepting.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(service)
    }

    fn agents(&self) -> std::sync::MutexGuard<'_, Vec<Agent>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connected agent carrying the fewest visitors, skipping `tried`.
    fn pick(&self, tried: &[u64]) -> Option<Agent> {
        let mut agents = self.agents();
        agents.retain(|a| a.peer.is_connected());
        agents.iter().filter(|a| !tried.contains(&a.peer.id())).min_by_key(|a| a.load.load(Relaxed)).cloned()
    }

    /// A way to the least loaded agent that takes the visitor (trying the others in turn):
    /// one of its pooled data connections if `pooled` and it has one ready, else a virtual
    /// channel; counted as a visitor and in that agent's load; `None` (counted as refused)
    /// if no agent takes it.
    async fn open_carrier(&self, pooled: bool) -> Option<(Carrying, Carrier)> {
        let mut tried = Vec::new();
        while let Some(agent) = self.pick(&tried) {
            tried.push(agent.peer.id());
            agent.load.fetch_add(1, Relaxed);
            let carrying = Carrying(agent.load.clone());
            if pooled {
                if let Some(stream) = agent.pool.take().await {
                    self.visitors.fetch_add(1, Relaxed);
                    self.pooled_visits.fetch_add(1, Relaxed);
                    return Some((carrying, Carrier::Pooled(stream)));
                }
            }
            match agent.peer.open_stream(&channel_name(&self.name)).await {
                Ok(channel) => {
                    self.visitors.fetch_add(1, Relaxed);
                    return Some((carrying, Carrier::Channel(channel)));
                }
                Err(e) => {
                    tracing::info!(service = %self.name, agent = %agent.peer.remote_addr(), "xnat agent could not take a visitor: {e}");
                }
            }
        }
        self.refused.fetch_add(1, Relaxed);
        None
    }

    fn stats(&self) -> ServiceStats {
        let (agents, pooled_ready) = {
            let agents = self.agents();
            let live = agents.iter().filter(|a| a.peer.is_connected());
            (live.clone().count(), live.map(|a| a.pool.len()).sum())
        };
        ServiceStats {
            name: self.name.clone(),
            public: self.public,
            agents,
            visitors_now: self.visitors_now.load(Relaxed),
            visitors: self.visitors.load(Relaxed),
            refused: self.refused.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            pooled_visits: self.pooled_visits.load(Relaxed),
            pooled_ready,
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

/// The services this connection serves, and the ticket of each one's data connections.
#[derive(Default)]
struct Registered(Mutex<Vec<(String, [u8; TICKET_LEN])>>);

/// The data port, and the pool each live ticket introduces a data connection to.
struct DataPort {
    port: u16,
    tickets: Mutex<HashMap<[u8; TICKET_LEN], Weak<Pool>>>,
}

impl DataPort {
    fn tickets(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; TICKET_LEN], Weak<Pool>>> {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The services by name; a reload changes it.
type Services = Arc<RwLock<BTreeMap<String, Arc<Service>>>>;

fn read(services: &Services) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Service>>> {
    services.read().unwrap_or_else(|p| p.into_inner())
}

/// A running XNat server.
pub struct XnatServer {
    control: ServerHandle,
    services: Services,
    /// The agents' address as configured (a reload cannot move it).
    listen: SocketAddr,
    /// The data port as configured (nor that).
    data_listen: Option<SocketAddr>,
    data_port: Arc<DataPort>,
    data_task: JoinHandle<()>,
}

impl XnatServer {
    /// Listens for agents on `file.listen` (secured as `security` says) and for visitors on
    /// each service's address.
    pub async fn start(file: &ServerFile, mut security: ServerSecurity) -> Result<XnatServer, String> {
        let mut services = BTreeMap::new();
        for (name, config) in &file.services {
            services.insert(name.clone(), Service::open(name, config).await?);
        }
        let services: Services = Arc::new(RwLock::new(services));
        // One key for the link and the data connections.
        if let ServerSecurity::Noise(noise) = &mut security {
            noise.key.get_or_insert_with(zs::KeyPair::generate);
        }
        let data_addr = file.data_listen.unwrap_or(SocketAddr::new(file.listen.ip(), 0));
        let data = TcpListener::bind(data_addr).await.map_err(|e| format!("data port {data_addr}: {e}"))?;
        let port = data.local_addr().map_err(|e| e.to_string())?.port();
        let data_port = Arc::new(DataPort { port, tickets: Mutex::default() });
        let known = data_port.clone();
        let tickets: super::pool::Tickets = Arc::new(move |t| known.tickets().get(t).cloned());
        let data_task = tokio::spawn(super::pool::accept_data(data, security.clone(), tickets));
        let config = ServerConfig { security, ..ServerConfig::default() };
        let router = control_router(services.clone(), data_port.clone());
        let control = match zs::Server::bind(file.listen, router, config).await {
            Ok(c) => c,
            Err(e) => {
                data_task.abort();
                return Err(format!("{}: {e}", file.listen));
            }
        };
        Ok(XnatServer {
            control,
            services,
            listen: file.listen,
            data_listen: file.data_listen,
            data_port,
            data_task,
        })
    }

    /// Applies a changed file: services added start, removed ones stop taking visitors
    /// (those carried go on), changed ones take their new token, keys and limit at once, or
    /// move to their new address. What changed, one line each, and what needs a restart.
    pub async fn reload(&self, file: &ServerFile) -> Vec<String> {
        let mut said = Vec::new();
        if file.listen != self.listen {
            said.push(format!("listen {} -> {}: needs a restart", self.listen, file.listen));
        }
        if file.data_listen != self.data_listen {
            said.push(format!(
                "data_listen {:?} -> {:?}: needs a restart",
                self.data_listen, file.data_listen
            ));
        }
        let old: BTreeMap<String, Arc<Service>> = read(&self.services).clone();
        for (name, service) in &old {
            if !file.services.contains_key(name) {
                service.close();
                self.services.write().unwrap_or_else(|p| p.into_inner()).remove(name);
                said.push(format!(
                    "service {name} removed ({} visitors finish)",
                    service.visitors_now.load(Relaxed)
                ));
            }
        }
        for (name, config) in &file.services {
            let moved = match old.get(name) {
                Some(s) => {
                    let was = s.settings().config.clone();
                    if was == *config {
                        continue;
                    }
                    if was.bind == config.bind && was.protocol == config.protocol {
                        *s.settings() = Settings::new(config);
                        said.push(format!(
                            "service {name}: token, keys or limit changed (registered agents stay)"
                        ));
                        continue;
                    }
                    s.close();
                    true
                }
                None => false,
            };
            // A closed listener may take a moment to let its address go.
            let mut opened = Service::open(name, config).await;
            for _ in 0..20 {
                if opened.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                opened = Service::open(name, config).await;
            }
            match opened {
                Ok(service) => {
                    if let Some(old) = old.get(name) {
                        // The agents serve the moved service too.
                        *service.agents() = old.agents().clone();
                    }
                    said.push(format!(
                        "service {name} {} on {}",
                        if moved { "moved" } else { "added" },
                        service.public
                    ));
                    self.services.write().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), service);
                }
                Err(e) => said.push(format!("service {name} not started: {e}")),
            }
        }
        said
    }

    /// Where agents connect.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.local_addr()
    }

    /// Where agents open their pooled data connections.
    pub fn data_port(&self) -> u16 {
        self.data_port.port
    }

    /// The agents' listener (its key, its peers).
    pub fn control(&self) -> &ServerHandle {
        &self.control
    }

    /// Where visitors of `service` connect.
    pub fn public_addr(&self, service: &str) -> Option<SocketAddr> {
        read(&self.services).get(service).map(|s| s.public)
    }

    /// Every service's figures.
    pub fn stats(&self) -> Vec<ServiceStats> {
        read(&self.services).values().map(|s| s.stats()).collect()
    }

    /// Stops listening and closes the agents' links.
    pub async fn shutdown(self) {
        read(&self.services).values().for_each(|s| s.close());
        self.data_task.abort();
        self.control.shutdown().await;
    }
}

fn control_router(services: Services, data: Arc<DataPort>) -> Router {
    let mut router = Router::new();
    router.console("xnat.challenge", |peer: &Peer, _text: Text| {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).expect("the operating system provides random bytes");
        peer.set_state(Nonce(nonce));
        json!({ "nonce": blake3::Hash::from(nonce).to_hex().to_string() }).to_string()
    });
    let (s, d) = (services.clone(), data.clone());
    router.console("xnat.register", move |peer: &Peer, text: Text| {
        register(&s, &d, peer, &text).map(|v| v.to_string())
    });
    let s = services.clone();
    router.console("xnat.stats", move |peer: &Peer, _text: Text| {
        if peer.state::<Registered>().is_none() {
            return Err(err(ErrorCode::Forbidden, "register a service first"));
        }
        let stats: Vec<ServiceStats> = read(&s).values().map(|s| s.stats()).collect();
        Ok::<_, HandlerError>(json!(stats).to_string())
    });
    // The core's counters, and each service's for its agents and the operator on this
    // machine (not for anyone who can reach the port: names and addresses stay private).
    let s = services.clone();
    router.console("stats", move |peer: &Peer, _text: Text| {
        let mut stats = peer.stats().to_json();
        if peer.state::<Registered>().is_some() || peer.remote_addr().ip().is_loopback() {
            let services: Vec<ServiceStats> = read(&s).values().map(|s| s.stats()).collect();
            stats["xnat"] = json!(services);
        }
        stats.to_string()
    });
    router.on_disconnect(move |peer, _| {
        let Some(names) = peer.state::<Registered>() else { return };
        for (name, ticket) in names.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            data.tickets().remove(ticket);
            if let Some(service) = read(&services).get(name) {
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
fn register(services: &Services, data: &DataPort, peer: &Peer, text: &Text) -> Result<Value, HandlerError> {
    let req: RegisterRequest = request(text)?;
    let refused = || err(ErrorCode::AuthFailed, format!("not an agent of {}", req.service));
    let Some(service) = read(services).get(&req.service).cloned() else { return Err(refused()) };
    let (token, keys) = {
        let settings = service.settings();
        (settings.config.token.clone(), settings.agent_keys.clone())
    };
    let by_key = peer.remote_key().is_some_and(|k| keys.contains(&k));
    let by_token = match (&token, &req.proof, peer.state::<Nonce>()) {
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
    let ticket = match names.iter().find(|(n, _)| *n == req.service) {
        Some((_, ticket)) => *ticket,
        None => {
            let mut ticket = [0u8; TICKET_LEN];
            getrandom::fill(&mut ticket).expect("the operating system provides random bytes");
            let pool = Arc::new(Pool::default());
            data.tickets().insert(ticket, Arc::downgrade(&pool));
            names.push((req.service.clone(), ticket));
            service.agents().push(Agent { peer: peer.clone(), load: Arc::new(AtomicUsize::new(0)), pool });
            tracing::info!(service = %req.service, agent = %peer.remote_addr(), "xnat agent registered");
            ticket
        }
    };
    let udp = service.settings().config.protocol == Protocol::Udp;
    let mut reply = json!({ "service": req.service, "agents": service.agents().len() });
    if !udp {
        reply["data_port"] = json!(data.port);
        reply["ticket"] = json!(blake3::Hash::from(ticket).to_hex().to_string());
    }
    Ok(reply)
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
        let max = service.settings().config.max_visitors;
        let Some(place) = Counted::take(&service.visitors_now, max) else {
            service.refused.fetch_add(1, Relaxed);
            tracing::warn!(service = %service.name, %from, "xnat visitor closed: {max} visitors already");
            continue;
        };
        tokio::spawn(visit(service.clone(), visitor, from, place));
    }
}

/// Carries one visitor to an agent.
async fn visit(service: Arc<Service>, mut visitor: TcpStream, from: SocketAddr, _place: Counted) {
    let _ = visitor.set_nodelay(true);
    let (idle, rate) = {
        let settings = service.settings();
        if let Err(e) = super::carry::watch_for_a_gone_end(&visitor, settings.config.tcp_keepalive) {
            tracing::warn!(service = %service.name, %from, "xnat: no keepalive on a visitor: {e}");
        }
        (settings.config.idle_timeout.map(Duration::from_secs_f64), settings.rate.clone())
    };
    let bounds = Bounds { idle, rate: rate.as_deref() };
    match service.open_carrier(true).await {
        Some((_carrying, carrier)) => {
            let moved = match carrier {
                Carrier::Pooled(mut stream) => match super::write_visitor(&mut stream, from).await {
                    Ok(()) => super::carry::carry(&mut visitor, &mut stream, bounds).await,
                    Err(e) => Err(e),
                },
                Carrier::Channel(mut channel) => match super::write_visitor(&mut channel, from).await {
                    Ok(()) => super::carry::carry(&mut visitor, &mut channel, bounds).await,
                    Err(e) => Err(e),
                },
            };
            if let Ok((to_service, to_visitor)) = moved {
                service.bytes_in.fetch_add(to_service, Relaxed);
                service.bytes_out.fetch_add(to_visitor, Relaxed);
            }
        }
        None => tracing::warn!(service = %service.name, %from, "xnat visitor closed: no agent"),
    }
}
