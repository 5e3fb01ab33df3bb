//! `Server`: listens (TCP over IPv4 and IPv6, for zserver and ZServer4D clients) and serves
//! a router on each connection; `accept.rs` takes connections in.

mod accept;
mod admission;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::ToSocketAddrs;
use tokio::sync::{watch, Notify};
use zs_wire::{DataFrame, GoAwayCode, Kind};

use accept::Protocol;

use crate::budget::Budget;
use crate::compat::CompatShared;
use crate::config::{ConnectionConfig, ServerConfig};
use crate::connection::encode;
use crate::directory::Directory;
use crate::error::CallError;
use crate::logs::{Tally, REPORT_EVERY};
use crate::peer::Peer;
use crate::rpc::{Payload, Router, Text};
use crate::secure::{ClientSecurity, Fingerprint, KeyPair, ServerSecurity, TlsClient};
use crate::session;
use crate::stats::{Stats, StatsSnapshot};
use crate::sync::RecoverRw;
use crate::transport::tcp::{TcpAcceptor, TcpOptions};
use crate::transport::{Boxed, Listener};

/// Starts servers.
pub struct Server;

impl Server {
    /// Listens on every address `addr` resolves to and serves `router` on each connection
    /// until [`ServerHandle::shutdown`].
    pub async fn bind(
        addr: impl ToSocketAddrs,
        router: Router,
        config: ServerConfig,
    ) -> io::Result<ServerHandle> {
        let tcp = TcpOptions { unsent_limit: config.connection.socket_unsent_limit };
        let listeners = TcpAcceptor::bind(addr, config.reuse_port, config.backlog, tcp).await?;
        Server::start(listeners, router, config).await
    }

    /// A server with no listener of its own: it serves the links handed to it
    /// ([`ServerHandle::accept_link`], [`ServerHandle::serve`]), say a tunnel's visitors
    /// (XNat's virtual services), with no port opened.
    pub async fn unbound(router: Router, config: ServerConfig) -> io::Result<ServerHandle> {
        Server::start(Vec::new(), router, config).await
    }

    async fn start(
        listeners: Vec<TcpAcceptor>,
        mut router: Router,
        mut config: ServerConfig,
    ) -> io::Result<ServerHandle> {
        if let ServerSecurity::Noise(noise) = &mut config.security {
            noise.key.get_or_insert_with(KeyPair::generate);
        }
        let tcp = TcpOptions { unsent_limit: config.connection.socket_unsent_limit };
        if matches!(config.security, ServerSecurity::Plaintext) {
            for l in &listeners {
                if let Some(a) = l.local_addr().ok().filter(|a| !a.ip().is_loopback()) {
                    tracing::warn!(addr = %a, "listening in PLAINTEXT beyond loopback: anyone on the path can read and alter the traffic");
                }
            }
        }
        if let Some(name) = config.stats_command.as_deref().filter(|n| !router.contains(n)) {
            router.console(name, |peer, _| peer.shared_stats().snapshot().to_json().to_string());
        }
        let (stop, _) = watch::channel(false);
        let admission = admission::Admission::new(admission::Limits {
            max_pending: config.max_handshakes,
            max_per_source: config.max_handshakes_per_source,
            rate_per_source: config.handshake_rate_per_source,
        });
        // A CompleteBuffer the connection would refuse is refused at its header instead.
        let buffer_cap = u32::try_from(config.connection.bulk.max_buffer_len).unwrap_or(u32::MAX);
        let limits = &mut config.compat.limits;
        limits.max_complete_buffer = limits.max_complete_buffer.min(buffer_cap);
        let mut compat_listeners = Vec::new();
        for addr in &config.compat.listen {
            compat_listeners.extend(TcpAcceptor::bind(addr, config.reuse_port, config.backlog, tcp).await?);
        }
        let max_connections = config.max_connections;
        let stats = Arc::new(Stats::default());
        // Replies to ZServer4D clients are translated: never lz4-compressed on the way.
        let mut compat_connection = ConnectionConfig { compress_frames: false, ..config.connection.clone() };
        if config.compat.keep_idle_clients {
            (compat_connection.idle_timeout, compat_connection.keepalive_interval) = (None, None);
        }
        let compat_idle = compat_connection.idle_timeout;
        let compat_connection = Arc::new(compat_connection);
        let budget = Budget::new(config.memory_budget, stats.clone());
        let sessions = Arc::new(session::Registry::new(config.sessions.as_ref()));
        let shared = Arc::new(Shared {
            addrs: listeners.iter().map(Listener::local_addr).collect::<io::Result<_>>()?,
            compat_addrs: compat_listeners.iter().map(Listener::local_addr).collect::<io::Result<_>>()?,
            compat: Arc::new(CompatShared::new(&config.compat, compat_idle, stats.clone())),
            compat_connection,
            connection: RwLock::new(Arc::new(config.connection.clone())),
            allowed_clients: RwLock::new(config.security.allowed_clients().map(Arc::from)),
            config,
            router: Arc::new(router),
            stats,
            directory: Directory::new(budget.clone()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            max_connections: std::sync::atomic::AtomicUsize::new(max_connections),
            stop,
            all_closed: Notify::new(),
            admission,
            budget,
            handshake_failures: Tally::new("handshakes not finished"),
            refusals: Tally::new("connections refused"),
            sessions,
        });
        tokio::spawn(report(shared.clone()));
        for listener in listeners {
            tokio::spawn(accept::accept_loop(shared.clone(), listener, Protocol::Native));
        }
        for listener in compat_listeners {
            tokio::spawn(accept::accept_loop(shared.clone(), listener, Protocol::Compat));
        }
        Ok(ServerHandle { shared })
    }
}

pub(super) struct Shared {
    addrs: Vec<SocketAddr>,
    /// Addresses of the ZServer4D listeners.
    compat_addrs: Vec<SocketAddr>,
    compat: Arc<CompatShared>,
    /// Connection settings of ZServer4D clients.
    compat_connection: Arc<ConnectionConfig>,
    config: ServerConfig,
    /// Settings of native connections, changeable while running (new connections take the
    /// settings of their time).
    connection: RwLock<Arc<ConnectionConfig>>,
    /// Client keys a Noise server lets in now (`None`: any), changeable while running.
    allowed_clients: RwLock<Option<Arc<[Fingerprint]>>>,
    router: Arc<Router>,
    stats: Arc<Stats>,
    /// The connected peers, by id and by user.
    directory: Directory,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Draining: new connections are refused with `Draining`.
    draining: AtomicBool,
    /// `ServerConfig::max_connections`, changeable while running.
    max_connections: std::sync::atomic::AtomicUsize,
    stop: watch::Sender<bool>,
    all_closed: Notify,
    /// Connections whose handshake is unfinished.
    admission: Arc<admission::Admission>,
    /// What peers may make the server hold.
    budget: Arc<Budget>,
    /// Handshakes that did not finish, and refusals, counted per cause and reported once
    /// per interval (a stranger can cause them at will).
    handshake_failures: Tally,
    refusals: Tally,
    /// Resumable sessions kept, by id.
    sessions: Arc<session::Registry>,
}

/// Reports the tallies once per interval until the server stops.
async fn report(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        shared.handshake_failures.report(REPORT_EVERY);
        shared.refusals.report(REPORT_EVERY);
    }
}

impl Shared {
    /// Connections with a link now: detached sessions are counted apart (a server full of
    /// them still takes live clients).
    fn live_connections(&self) -> usize {
        self.directory.len().saturating_sub(self.sessions.detached())
    }

    /// The settings a native connection opened now takes.
    fn connection(&self) -> Arc<ConnectionConfig> {
        self.connection.read_or_recover().clone()
    }

    /// The client keys let in now.
    fn allowed_clients(&self) -> Option<Arc<[Fingerprint]>> {
        self.allowed_clients.read_or_recover().clone()
    }

    /// A new connection's id.
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Why a new connection cannot be taken now, if it cannot.
    fn refusal(&self) -> Option<(GoAwayCode, &'static str)> {
        if self.draining.load(Ordering::Acquire) {
            Some((GoAwayCode::Draining, "server is draining: connect to another"))
        } else if self.stopping.load(Ordering::Acquire) {
            Some((GoAwayCode::ShuttingDown, "server is shutting down"))
        } else if self.live_connections() >= self.max_connections.load(Ordering::Relaxed) {
            Some((GoAwayCode::ServerFull, "server is at its connection limit"))
        } else {
            None
        }
    }
}

/// The one-way push every connected peer gets when its server starts draining
/// ([`ServerHandle::drain`]): JSON `{"hint", "deadline_ms"}`.
pub const DRAINING: &str = "zs.draining";

/// A running server: its addresses, peers, statistics, broadcast and shutdown.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The first address listened on (with the real port if 0 was asked for; `0.0.0.0:0`
    /// for a server with no listener of its own).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addrs.first().copied().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The identity clients pin: the Noise static key or the TLS certificate's
    /// fingerprint (`None` in plaintext).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match &self.shared.config.security {
            ServerSecurity::Noise(n) => n.key.as_ref().map(KeyPair::public),
            ServerSecurity::Tls(t) => Some(t.fingerprint()),
            ServerSecurity::Plaintext => None,
        }
    }

    /// What a client needs to reach this server: its mode, pinned to its identity.
    pub fn client_security(&self) -> ClientSecurity {
        match (&self.shared.config.security, self.fingerprint()) {
            (ServerSecurity::Tls(_), Some(fp)) => ClientSecurity::Tls(TlsClient::pinned(fp)),
            (ServerSecurity::Noise(_), Some(fp)) => fp.into(),
            _ => ClientSecurity::Plaintext,
        }
    }

    /// Serves zserver clients on one more listener, of any transport: its connections run
    /// the server's security mode, sessions, limits and router like every other. Returns
    /// the address it listens on.
    pub fn serve<L: Listener>(&self, listener: L) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        tokio::spawn(accept::accept_loop(self.shared.clone(), Boxed(listener), Protocol::Native));
        Ok(addr)
    }

    /// Changes the most connections held at once (those over it stay; new ones are
    /// refused until the count is under it).
    pub fn set_max_connections(&self, max: usize) {
        self.shared.max_connections.store(max, Ordering::Relaxed);
    }

    /// Changes the memory budget (`ServerConfig::memory_budget`): holdings over a smaller
    /// one are reclaimed, the largest first, as they next grow.
    pub fn set_memory_budget(&self, bytes: u64) {
        self.shared.budget.set_limit(bytes);
    }

    /// The memory budget, as set now.
    pub fn memory_budget(&self) -> u64 {
        self.shared.budget.limit()
    }

    /// Changes the idle timeout of native connections opened from now on (those open keep
    /// theirs; ZServer4D clients keep the one announced at start).
    pub fn set_idle_timeout(&self, idle: Option<std::time::Duration>) {
        let mut connection = self.shared.connection.write_or_recover();
        *connection =
            Arc::new(ConnectionConfig { idle_timeout: idle, ..ConnectionConfig::clone(&connection) });
    }

    /// The idle timeout of native connections opened now.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        self.shared.connection().idle_timeout
    }

    /// Changes the client keys a Noise server lets in (`None`: any) and closes the open
    /// connections (live or resumable) of keys no longer in; returns how many it closed.
    /// An error, and no change, on a server that is not Noise.
    pub fn set_allowed_clients(&self, allowed: Option<Vec<Fingerprint>>) -> Result<usize, &'static str> {
        if !matches!(self.shared.config.security, ServerSecurity::Noise(_)) {
            return Err("only a Noise server admits clients by key");
        }
        let allowed: Option<Arc<[Fingerprint]>> = allowed.map(Arc::from);
        *self.shared.allowed_clients.write_or_recover() = allowed.clone();
        let Some(allowed) = allowed else { return Ok(0) };
        let mut closed = 0;
        for peer in self.peers() {
            if peer.remote_key().is_some_and(|key| !allowed.contains(&key)) {
                peer.close_with(
                    GoAwayCode::NotAuthorized,
                    "this client's key is no longer allowed on this server",
                );
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// The client keys a Noise server lets in now (`None`: any).
    pub fn allowed_clients(&self) -> Option<Vec<Fingerprint>> {
        self.shared.allowed_clients().map(|keys| keys.to_vec())
    }

    /// The most connections held at once, as set now.
    pub fn max_connections(&self) -> usize {
        self.shared.max_connections.load(Ordering::Relaxed)
    }

    /// Names of the services mounted on its router, in order.
    pub fn services(&self) -> Vec<String> {
        self.shared.router.services().to_vec()
    }

    /// Whether the server is shutting down (it takes no new connections).
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    /// Whether the server is draining ([`ServerHandle::drain`]).
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Each command's calls, errors and latency, if its router meters commands
    /// ([`Router::meter_commands`]).
    pub fn command_figures(&self) -> Vec<crate::CommandFigures> {
        self.shared.router.command_figures()
    }

    /// Serves one client that arrived over a link of one's own (a [`StreamLink`] over a
    /// tunnel's stream, say): its handshake, limits and router as for any other.
    ///
    /// [`StreamLink`]: crate::transport::StreamLink
    pub fn accept_link<K: crate::transport::Link>(&self, link: K) {
        accept::on_accept(&self.shared, crate::transport::RawLink::Other(Box::new(link)));
    }

    /// Addresses of the ZServer4D listeners (`ServerConfig::compat`), with real ports.
    pub fn compat_addrs(&self) -> &[SocketAddr] {
        &self.shared.compat_addrs
    }

    /// Every address listened on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// The connected peers.
    pub fn peers(&self) -> Vec<Peer> {
        self.shared.directory.peers()
    }

    /// The peer with this id, if connected.
    pub fn peer(&self, id: u64) -> Option<Peer> {
        self.shared.directory.peer(id)
    }

    /// Number of connected peers.
    pub fn connection_count(&self) -> usize {
        self.shared.directory.len()
    }

    /// The connected peers by id and by logged-in user (handlers reach it through
    /// [`Peer::directory`]).
    pub fn directory(&self) -> &Directory {
        &self.shared.directory
    }

    /// Resumable sessions kept now, with or without a link.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Resumable sessions kept now without a link (counted apart from live connections).
    pub fn detached_session_count(&self) -> usize {
        self.shared.sessions.detached()
    }

    /// Connections whose handshake is under way now.
    pub fn pending_handshakes(&self) -> usize {
        self.shared.admission.pending()
    }

    /// Bytes peers make this server hold now, charged to its memory budget.
    pub fn memory_held(&self) -> u64 {
        self.shared.budget.used()
    }

    /// The server's statistics.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Sends a direct console command to every peer `filter` accepts; the frame is encoded
    /// once and shared. A peer whose queue is full is disconnected as a slow consumer.
    /// Returns how many peers it was queued for.
    pub fn broadcast_console(
        &self,
        name: &str,
        text: impl Into<Text>,
        filter: impl Fn(&Peer) -> bool,
    ) -> Result<usize, CallError> {
        self.broadcast(name, Payload::Text(text.into()), filter)
    }

    /// Sends a direct stream command to every peer `filter` accepts (see
    /// [`broadcast_console`](Self::broadcast_console)).
    pub fn broadcast_stream(
        &self,
        name: &str,
        frame: DataFrame,
        filter: impl Fn(&Peer) -> bool,
    ) -> Result<usize, CallError> {
        self.broadcast(name, Payload::Frame(frame), filter)
    }

    fn broadcast(
        &self,
        name: &str,
        payload: Payload,
        filter: impl Fn(&Peer) -> bool,
    ) -> Result<usize, CallError> {
        let frame = encode::call_bytes(Kind::Send, 0, name, &payload, self.shared.connection().encoding())?;
        let sent = self
            .shared
            .directory
            .snapshot()
            .iter()
            .filter(|p| filter(p))
            .filter(|p| p.offer(frame.clone()).is_ok())
            .count();
        self.shared.stats.commands_out.fetch_add(sent as u64, Ordering::Relaxed);
        Ok(sent)
    }

    /// Takes the server out of service gently: new connections are refused with `Draining`,
    /// every connected peer is sent a one-way [`DRAINING`] push (`{"hint", "deadline_ms"}`:
    /// `hint` says where to go, e.g. another server's address), and once they have all gone,
    /// or `deadline` has passed, the rest are shut down. Returns how many were left then.
    pub async fn drain(&self, hint: &str, deadline: std::time::Duration) -> usize {
        self.shared.draining.store(true, Ordering::Release);
        let text = serde_json::json!({ "hint": hint, "deadline_ms": deadline.as_millis() as u64 });
        if let Err(e) = self.broadcast_console(DRAINING, text.to_string(), |_| true) {
            tracing::warn!("draining: cannot tell the peers: {e}");
        }
        let until = tokio::time::Instant::now() + deadline;
        let left = loop {
            let closed = self.shared.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let left = self.peers().len();
            if left == 0 || tokio::time::timeout_at(until, closed).await.is_err() {
                break self.peers().len();
            }
        };
        self.shutdown().await;
        left
    }

    /// Stops accepting, lets every connection finish the calls in flight (up to the drain
    /// timeout), tells peers it is shutting down, and returns when all are closed.
    pub async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.shared.stop.send(true);
        loop {
            let closed = self.shared.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let peers = self.peers();
            if peers.is_empty() {
                return;
            }
            peers.iter().for_each(Peer::shutdown);
            closed.await;
        }
    }
}
