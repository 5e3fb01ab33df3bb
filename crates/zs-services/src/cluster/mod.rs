//! The cluster: nodes that join through a NATS server (`zs serve --cluster nats://...
//! --node NAME`). Each node sends heartbeats with its address, services and load; the
//! others keep a registry that forgets a node whose heartbeats stop. [`Cluster`] is the
//! push service's [`Broker`] across nodes: a send to a user reaches its connections on any
//! node, topic publishes and presence span the cluster, and offline messages are kept in a
//! JetStream stream that every node reads ([`JetStreamInbox`]), so no node's death loses one.
//!
//! Subjects (all under `zs.c.`): `node` (heartbeats and membership state, one subject so
//! that each node's messages arrive in order), `want.NODE` / `want.all` (ask for a full
//! state), `pub` (topic publishes), `user.NODE` (deliver to a user's connections there,
//! answered with how many got it).

mod deliver;
mod inbox;
mod registry;
mod tokens;

pub use inbox::JetStreamInbox;
pub use registry::{valid_node_name, Gossip, NodeInfo};
pub use tokens::ClusterTokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use zs::{Directory, Peer};

use crate::push::{now_ms, Broker, BrokerError, BrokerLimits, Delivery, LocalBroker, Presence};
use registry::{add, Known, Mine};

/// The subject every node's heartbeats and state go on.
const NODE_SUBJECT: &str = "zs.c.node";
/// Topic publishes.
const PUBLISH_SUBJECT: &str = "zs.c.pub";
/// Broadcasts to every logged-in connection.
const BROADCAST_SUBJECT: &str = "zs.c.all";
/// Membership changes are gathered for this long and sent as one message.
const GATHER: Duration = Duration::from_millis(20);

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// This node's name: 1 to 64 letters, digits, `-`, `_`; unique in the cluster.
    pub node: String,
    /// Where clients reach this node (told to the others, for routing and failover).
    pub addrs: Vec<String>,
    /// The services this node serves.
    pub services: Vec<String>,
    /// How often a heartbeat goes (default 1 s).
    pub heartbeat: Duration,
    /// A node not heard for this long is gone (default 3 s).
    pub expiry: Duration,
    /// How long a delivery to another node may take (default 2 s).
    pub request_timeout: Duration,
    /// Limits of the node's own topics (as a single server's).
    pub limits: BrokerLimits,
}

impl ClusterConfig {
    /// Defaults for node `node` of the cluster at `url`.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            node: node.into(),
            addrs: Vec::new(),
            services: Vec::new(),
            heartbeat: Duration::from_secs(1),
            expiry: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            limits: BrokerLimits::default(),
        }
    }
}

/// This node's load now: connections held, calls received so far (a counter), draining.
pub type LoadFn = Box<dyn Fn() -> (u64, u64, bool) + Send + Sync>;

/// One node's membership in a cluster. Clones share it.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    nats: async_nats::Client,
    local: Arc<LocalBroker>,
    started_ms: u64,
    mine: Mutex<Mine>,
    known: Mutex<HashMap<String, Known>>,
    load: Mutex<Option<LoadFn>>,
    /// Calls per second over the last heartbeat interval (what this node's heartbeat says).
    calls_per_sec: Mutex<f64>,
    /// Where clients reach this node (known once its listeners are bound).
    addrs: Mutex<Vec<String>>,
    /// A membership change or a request for a full state waits to be sent.
    changed: Arc<Notify>,
    want_full: std::sync::atomic::AtomicBool,
    /// Deliveries to users on other nodes, batched per node.
    deliverer: deliver::Deliverer,
    /// Its tasks, stopped by [`Cluster::leave`] or the last clone's drop.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request to deliver to a user's connections on a node, and a topic publish.
#[derive(Clone, Serialize, Deserialize)]
struct Carried {
    /// The user, or the topic.
    to: String,
    command: String,
    text: String,
    /// The node it came from (a publish is not delivered twice there).
    from: String,
}

impl Carried {
    fn new(to: &str, message: &Delivery, from: &str) -> Carried {
        let (command, text) = (message.command.clone(), message.text.as_str().to_owned());
        Carried { to: to.to_owned(), command, text, from: from.to_owned() }
    }
}

/// A name as one NATS subject token (hex: a token can hold no `.`, `*`, `>` or space).
fn subject_token(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Connects to the NATS server and joins: subscribes, says hello (the others answer
    /// with their state) and starts the heartbeats.
    pub async fn join(config: ClusterConfig) -> Result<Cluster, String> {
        if !valid_node_name(&config.node) {
            return Err(format!("`{}` cannot be a node name: 1 to 64 letters, digits, - or _", config.node));
        }
        let nats = async_nats::ConnectOptions::new()
            .name(format!("zs node {}", config.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.url.as_str())
            .await
            .map_err(|e| format!("cannot reach the cluster at {}: {e}", config.url))?;
        // Wait for the first connection (a server that is not there is an error here).
        tokio::time::timeout(Duration::from_secs(10), nats.flush())
            .await
            .map_err(|_| format!("cannot reach the cluster at {}: no answer in 10 s", config.url))?
            .map_err(|e| format!("cannot reach the cluster at {}: {e}", config.url))?;
        let local = LocalBroker::new(config.limits.clone());
        let inner = Arc::new(Inner {
            nats: nats.clone(),
            local,
            started_ms: now_ms(),
            mine: Mutex::default(),
            known: Mutex::default(),
            load: Mutex::default(),
            calls_per_sec: Mutex::default(),
            addrs: Mutex::new(config.addrs.clone()),
            changed: Arc::new(Notify::new()),
            want_full: true.into(),
            deliverer: deliver::Deliverer::new(nats.clone(), config.request_timeout),
            tasks: Mutex::default(),
            config,
        });
        let weak = Arc::downgrade(&inner);
        inner.local.observe(Box::new(move |topic, user, delta| {
            if let Some(inner) = weak.upgrade() {
                lock(&inner.mine).topic_changed(topic, user, delta);
                inner.changed.notify_one();
            }
        }));
        let node = inner.config.node.clone();
        let sub = |subject: String| {
            let nats = inner.nats.clone();
            async move { nats.subscribe(subject).await.map_err(|e| format!("cannot subscribe: {e}")) }
        };
        let gossip = sub(NODE_SUBJECT.into()).await?;
        let wants = sub(format!("zs.c.want.{node}")).await?;
        let wants_all = sub("zs.c.want.all".into()).await?;
        let publishes = sub(PUBLISH_SUBJECT.into()).await?;
        let broadcasts = sub(BROADCAST_SUBJECT.into()).await?;
        let users = sub(format!("zs.c.user.{node}")).await?;
        let tasks = vec![
            tokio::spawn(listen_gossip(Arc::downgrade(&inner), gossip)),
            tokio::spawn(listen_wants(
                Arc::downgrade(&inner),
                futures_util::stream::select(wants, wants_all),
            )),
            tokio::spawn(listen_publishes(Arc::downgrade(&inner), publishes, false)),
            tokio::spawn(listen_publishes(Arc::downgrade(&inner), broadcasts, true)),
            tokio::spawn(listen_users(Arc::downgrade(&inner), users)),
            tokio::spawn(speak(Arc::downgrade(&inner))),
        ];
        lock(&inner.tasks).extend(tasks);
        let _ = inner.nats.publish("zs.c.want.all", node.into()).await;
        Ok(Cluster { inner })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The NATS connection (for the JetStream inbox).
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    /// Tells the cluster where clients reach this node (from the next heartbeat).
    pub fn set_addrs(&self, addrs: Vec<String>) {
        *lock(&self.inner.addrs) = addrs;
    }

    /// Tells the cluster how to read this node's load (sent with each heartbeat).
    pub fn set_load(&self, load: LoadFn) {
        *lock(&self.inner.load) = Some(load);
    }

    /// The live nodes, this one included, by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut out: Vec<NodeInfo> =
            lock(&self.inner.known).values().filter_map(|k| k.info.clone()).collect();
        out.push(self.inner.info());
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// The least loaded live node that serves `service` and is not draining.
    pub fn route(&self, service: &str) -> Option<NodeInfo> {
        let serving =
            self.nodes().into_iter().filter(|n| !n.draining && n.services.iter().any(|s| s == service));
        serving.min_by(|a, b| {
            a.connections.cmp(&b.connections).then(a.calls_per_sec.total_cmp(&b.calls_per_sec))
        })
    }

    /// Leaves the cluster: the others forget this node's users and memberships at once.
    pub async fn leave(&self) {
        let bye = Gossip::Bye { node: self.inner.config.node.clone() };
        self.inner.say(&bye).await;
        let _ = self.inner.nats.flush().await;
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }
}

impl Inner {
    fn info(&self) -> NodeInfo {
        let calls_per_sec = *lock(&self.calls_per_sec);
        let (connections, _, draining) = lock(&self.load).as_ref().map_or((0, 0, false), |f| f());
        NodeInfo {
            node: self.config.node.clone(),
            addrs: lock(&self.addrs).clone(),
            services: self.config.services.clone(),
            connections,
            calls_per_sec,
            draining,
            started_ms: self.started_ms,
        }
    }

    async fn say(&self, gossip: &Gossip) {
        let Ok(bytes) = serde_json::to_vec(gossip) else { return };
        if let Err(e) = self.nats.publish(NODE_SUBJECT, bytes.into()).await {
            tracing::warn!("cluster: cannot publish: {e}");
        }
    }

    fn ask_full(&self, node: &str) {
        let (nats, subject) = (self.nats.clone(), format!("zs.c.want.{node}"));
        tokio::spawn(async move {
            let _ = nats.publish(subject, bytes::Bytes::new()).await;
        });
    }

    /// Applies one node's message to the registry (and the topics' presence).
    fn heard(&self, gossip: Gossip) {
        let me = &self.config.node;
        let mut known = lock(&self.known);
        match gossip {
            Gossip::Heartbeat { info, seq } if info.node != *me => {
                let node = info.node.clone();
                let k = known.entry(node.clone()).or_default();
                k.seen = Instant::now();
                k.info = Some(info);
                if k.seq != Some(seq) {
                    // Unknown, or a state message was lost: ask for all of it.
                    k.seq = None;
                    self.ask_full(&node);
                }
            }
            Gossip::Delta { node, seq, online, topics } if node != *me => {
                let k = known.entry(node.clone()).or_default();
                k.seen = Instant::now();
                if k.seq.map(|s| s + 1) != Some(seq) {
                    // Out of step: ask once now (the heartbeats ask again, once a second).
                    if k.seq.take().is_some() {
                        self.ask_full(&node);
                    }
                    return;
                }
                k.seq = Some(seq);
                for (user, d) in online {
                    add(&mut k.online, user, d);
                }
                for (topic, user, d) in topics {
                    self.local.remote_change(&topic, user.as_deref(), d);
                    add(&mut k.topics, (topic, user), d);
                }
            }
            Gossip::Full { node, seq, online, topics } if node != *me => {
                let k = known.entry(node).or_default();
                k.seen = Instant::now();
                k.seq = Some(seq);
                k.online = online.into_iter().collect();
                let new: HashMap<(String, Option<String>), i64> =
                    topics.into_iter().map(|(t, u, n)| ((t, u), n)).collect();
                let old = std::mem::replace(&mut k.topics, new);
                for ((topic, user), n) in &old {
                    self.local.remote_change(topic, user.as_deref(), -n);
                }
                for ((topic, user), n) in &k.topics {
                    self.local.remote_change(topic, user.as_deref(), *n);
                }
            }
            Gossip::Bye { node } if node != *me => {
                if let Some(k) = known.remove(&node) {
                    self.forget(&node, k);
                }
            }
            _ => {}
        }
    }

    /// A node has gone: its members leave their topics.
    fn forget(&self, node: &str, k: Known) {
        self.deliverer.forget(node);
        for ((topic, user), n) in k.topics {
            self.local.remote_change(&topic, user.as_deref(), -n);
        }
    }

    /// Forgets the nodes not heard for longer than the expiry.
    fn expire(&self) {
        let expiry = self.config.expiry;
        let mut known = lock(&self.known);
        let gone: Vec<String> =
            known.iter().filter(|(_, k)| k.seen.elapsed() > expiry).map(|(n, _)| n.clone()).collect();
        for node in gone {
            tracing::info!("cluster: node {node} not heard for {expiry:?}: forgotten");
            if let Some(k) = known.remove(&node) {
                self.forget(&node, k);
            }
        }
    }

    /// Sends `message` for `to` (a topic, or none: everyone) to the other nodes on `subject`.
    async fn carry(&self, subject: &'static str, to: &str, message: &Delivery) -> Result<(), BrokerError> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(BrokerError::Unavailable("the cluster's NATS server cannot be reached".into()));
        }
        let carried = Carried::new(to, message, &self.config.node);
        let body = serde_json::to_vec(&carried).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        self.nats
            .publish(subject, body.into())
            .await
            .map_err(|e| BrokerError::Unavailable(format!("cannot publish to the cluster: {e}")))
    }

    /// Other nodes where `user` has connections.
    fn nodes_of(&self, user: &str) -> Vec<String> {
        lock(&self.known).iter().filter(|(_, k)| k.online(user) > 0).map(|(n, _)| n.clone()).collect()
    }
}

/// Sends this node's heartbeats, membership changes (gathered) and full states, in order.
async fn speak(inner: std::sync::Weak<Inner>) {
    let Some((every, changes)) = inner.upgrade().map(|i| (i.config.heartbeat, i.changed.clone())) else {
        return;
    };
    let mut beat = tokio::time::interval(every);
    let mut calls_before: Option<(u64, Instant)> = None;
    loop {
        let changed = tokio::select! {
            _ = beat.tick() => false,
            _ = changes.notified() => true,
        };
        let Some(inner) = inner.upgrade() else { return };
        if changed {
            // Gather what comes with it.
            tokio::time::sleep(GATHER).await;
        }
        let message = {
            let mut mine = lock(&inner.mine);
            match inner.want_full.swap(false, std::sync::atomic::Ordering::Relaxed) {
                true => Some(mine.full(&inner.config.node)),
                false => mine.delta(&inner.config.node),
            }
        };
        if let Some(m) = message {
            inner.say(&m).await;
        }
        if !changed {
            let calls = lock(&inner.load).as_ref().map_or(0, |f| f().1);
            let now = Instant::now();
            let rate = match calls_before {
                Some((c, t)) => {
                    calls.saturating_sub(c) as f64 / now.duration_since(t).as_secs_f64().max(1e-3)
                }
                None => 0.0,
            };
            calls_before = Some((calls, now));
            let seq = lock(&inner.mine).seq;
            *lock(&inner.calls_per_sec) = rate;
            inner.say(&Gossip::Heartbeat { info: inner.info(), seq }).await;
            inner.expire();
        }
    }
}

async fn listen_gossip(inner: std::sync::Weak<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        match serde_json::from_slice::<Gossip>(&m.payload) {
            Ok(g) => inner.heard(g),
            Err(e) => tracing::warn!("cluster: a node message that does not decode: {e}"),
        }
    }
}

async fn listen_wants(
    inner: std::sync::Weak<Inner>,
    mut sub: impl futures_util::Stream<Item = async_nats::Message> + Unpin,
) {
    while let Some(m) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        if m.payload.as_ref() == inner.config.node.as_bytes() {
            continue; // Its own hello.
        }
        inner.want_full.store(true, std::sync::atomic::Ordering::Relaxed);
        inner.changed.notify_one();
    }
}

/// Delivers other nodes' topic publishes (or, `everyone`, broadcasts) to this node's
/// connections.
async fn listen_publishes(inner: std::sync::Weak<Inner>, mut sub: async_nats::Subscriber, everyone: bool) {
    while let Some(m) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let Ok(c) = serde_json::from_slice::<Carried>(&m.payload) else { continue };
        if c.from != inner.config.node {
            let delivery = Delivery { command: c.command, text: c.text.into() };
            let _ = match everyone {
                true => inner.local.broadcast(&delivery).await,
                false => inner.local.publish(&c.to, &delivery).await,
            };
        }
    }
}

/// Delivers other nodes' batches of deliveries to this node's users; answers how many
/// connections got each.
async fn listen_users(inner: std::sync::Weak<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let Ok(batch) = serde_json::from_slice::<Vec<Carried>>(&m.payload) else { continue };
        let mut counts = Vec::with_capacity(batch.len());
        for c in batch {
            let delivery = Delivery { command: c.command, text: c.text.into() };
            counts.push(inner.local.to_user(&c.to, &delivery).await);
        }
        if let Some(reply) = m.reply {
            let answer = serde_json::to_vec(&counts).unwrap_or_default();
            let _ = inner.nats.publish(reply, answer.into()).await;
        }
    }
}

impl Broker for Cluster {
    fn attach(&self, directory: &Directory) {
        self.inner.local.attach(directory);
    }

    fn to_user<'a>(&'a self, user: &'a str, message: &'a Delivery) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let here = self.inner.local.to_user(user, message).await;
            let nodes = self.inner.nodes_of(user);
            if nodes.is_empty() {
                return here;
            }
            let carried = Carried::new(user, message, &self.inner.config.node);
            let asks = nodes.iter().map(|node| self.inner.deliverer.deliver(node, carried.clone()));
            here + futures_util::future::join_all(asks).await.into_iter().sum::<usize>()
        })
    }

    fn online<'a>(&'a self, user: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let here = self.inner.local.online(user).await;
            let there: i64 = lock(&self.inner.known).values().map(|k| k.online(user)).sum();
            here + there as usize
        })
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        peer: &'a Peer,
        presence: bool,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        self.inner.local.subscribe(topic, peer, presence)
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str, peer: &'a Peer) -> BoxFuture<'a, bool> {
        self.inner.local.unsubscribe(topic, peer)
    }

    fn gone(&self, peer: &Peer) {
        if let Some(user) = peer.user() {
            lock(&self.inner.mine).online_changed(&user.user, -1);
            self.inner.changed.notify_one();
        }
        self.inner.local.gone(peer);
    }

    fn relogin(&self, peer: &Peer, old: Option<&str>) {
        {
            let mut mine = lock(&self.inner.mine);
            if let Some(old) = old {
                mine.online_changed(old, -1);
            }
            if let Some(new) = peer.user() {
                mine.online_changed(&new.user, 1);
            }
        }
        self.inner.changed.notify_one();
        self.inner.local.relogin(peer, old);
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: &'a Delivery,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let here = self.inner.local.publish(topic, message).await?;
            self.inner.carry(PUBLISH_SUBJECT, topic, message).await?;
            Ok(here + self.inner.local.remote_connections(topic))
        })
    }

    fn broadcast<'a>(&'a self, message: &'a Delivery) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let here = self.inner.local.broadcast(message).await?;
            self.inner.carry(BROADCAST_SUBJECT, "", message).await?;
            let there: i64 =
                lock(&self.inner.known).values().flat_map(|k| k.online.values()).map(|n| (*n).max(0)).sum();
            Ok(here + there as usize)
        })
    }

    fn presence<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Presence> {
        self.inner.local.presence(topic)
    }
}

/// The live nodes of the cluster at `url`, as their heartbeats say within `wait` (for
/// `zs cluster status`, from outside any node).
pub async fn status(url: &str, wait: Duration) -> Result<Vec<NodeInfo>, String> {
    let nats =
        async_nats::connect(url).await.map_err(|e| format!("cannot reach the cluster at {url}: {e}"))?;
    let mut sub = nats.subscribe(NODE_SUBJECT).await.map_err(|e| format!("cannot subscribe: {e}"))?;
    let mut nodes: HashMap<String, NodeInfo> = HashMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(Gossip::Heartbeat { info, .. }) = serde_json::from_slice(&m.payload) {
            nodes.insert(info.node.clone(), info);
        }
    }
    let mut out: Vec<NodeInfo> = nodes.into_values().collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}

/// Decodes `data` as what nodes tell each other (applied to a registry entry), a carried
/// delivery, and a token (the fuzz target's body): never panics.
pub fn decode_any(data: &[u8]) {
    if let Ok(g) = serde_json::from_slice::<Gossip>(data) {
        let mut k = Known::new();
        if let Gossip::Delta { online, topics, .. } | Gossip::Full { online, topics, .. } = g {
            for (user, d) in online {
                add(&mut k.online, user, d);
            }
            for (topic, user, d) in topics {
                add(&mut k.topics, (topic, user), d);
            }
        }
        let _ = k.online("a");
    }
    let _ = serde_json::from_slice::<Carried>(data);
    let _ = serde_json::from_slice::<Vec<Carried>>(data);
    tokens::decode_any(data);
}

/// The name the cluster's commands mount under.
pub const NAME: &str = "cluster";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRequest {
    service: String,
}

async fn nodes_command(
    cluster: &Cluster,
    _peer: &Peer,
    _text: zs::Text,
) -> Result<serde_json::Value, zs::HandlerError> {
    Ok(serde_json::json!({ "node": cluster.node(), "nodes": cluster.nodes() }))
}

async fn route_command(
    cluster: &Cluster,
    _peer: &Peer,
    text: zs::Text,
) -> Result<serde_json::Value, zs::HandlerError> {
    let req: RouteRequest = crate::json::request(&text)?;
    match cluster.route(&req.service) {
        Some(n) => Ok(serde_json::json!({ "node": n.node, "addrs": n.addrs, "connections": n.connections })),
        None => Err(crate::json::err(
            zs::wire::ErrorCode::NotFound,
            format!("no live node serves {}", req.service),
        )),
    }
}

/// `cluster.nodes` (the live nodes, for logged-in users) and `cluster.route` (the least
/// loaded node serving a service, for anyone: a client asks before it picks where to go).
impl zs::Service for Cluster {
    fn name(&self) -> &str {
        NAME
    }

    fn mount(self: Arc<Self>, router: &mut zs::Router) {
        let cluster = (*self).clone();
        crate::json::json_command!(router, cluster, "cluster.nodes", nodes_command).requires_login();
        crate::json::json_command!(router, cluster, "cluster.route", route_command);
    }
}
