//! `Failover`: a client of a cluster that stays connected. It is given several endpoints
//! (and names with several addresses) and connects to whichever answers first, the
//! addresses racing as happy eyeballs do; when the connection is lost, or the server says
//! it is draining, it connects again, to the hinted node or another, runs its `on_connect`
//! hook (a login by token, say) with no action of the user, and carries on. A call caught
//! by the loss fails with a clear reason, or is sent again on the new connection when its
//! command is marked idempotent.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::{CallError, Client, ClientConfig, Peer, Router, Text, DRAINING};

/// Makes the router of each new connection (the commands the server may call).
pub type RouterFn = Arc<dyn Fn() -> Router + Send + Sync>;
/// Runs on each new connection before calls go on it (e.g. a login by token).
pub type ConnectHook = Arc<dyn Fn(Peer) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Waits between connection rounds after a round fails: from the first to the last,
/// doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// Times a call to an idempotent command is sent again at most.
const RETRIES: usize = 3;

/// How a [`Failover`] connects.
#[derive(Clone)]
pub struct FailoverConfig {
    /// `HOST:PORT` of each node (a name may resolve to several addresses).
    pub endpoints: Vec<String>,
    /// Each connection's settings.
    pub client: ClientConfig,
    /// The router of each connection (default: none of its own commands). Unless it handles
    /// [`DRAINING`] itself, the failover adds a handler that moves to the hinted node.
    pub router: RouterFn,
    /// Runs on each new connection before it is used.
    pub on_connect: Option<ConnectHook>,
    /// Commands safe to send twice: a call of one caught by a lost connection is sent again.
    pub idempotent: HashSet<String>,
    /// How long a call waits for a connection while none is up (default 30 s).
    pub wait: Duration,
}

impl FailoverConfig {
    /// Defaults for these endpoints, secured as `client` says.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        client: ClientConfig,
    ) -> FailoverConfig {
        FailoverConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            client,
            router: Arc::new(Router::new),
            on_connect: None,
            idempotent: HashSet::new(),
            wait: Duration::from_secs(30),
        }
    }
}

/// A connection to one node of several, made again on another when it is lost.
#[derive(Clone)]
pub struct Failover {
    inner: Arc<Inner>,
}

struct Inner {
    config: FailoverConfig,
    /// The connection now (`None` while connecting again), and how many were made.
    current: watch::Sender<(Option<Arc<Client>>, u64)>,
    /// Where a draining server said to go.
    hint: Mutex<Option<String>>,
}

impl Failover {
    /// Connects to the first endpoint that answers (an error if none does), and keeps
    /// connected until dropped.
    pub async fn connect(config: FailoverConfig) -> io::Result<Failover> {
        if config.endpoints.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no endpoint to connect to"));
        }
        let inner = Arc::new(Inner { config, current: watch::channel((None, 0)).0, hint: Mutex::new(None) });
        let first = connect_once(inner.clone(), None).await?;
        inner.current.send_replace((Some(first.clone()), 1));
        tokio::spawn(keep_connected(Arc::downgrade(&inner), first));
        Ok(Failover { inner })
    }

    /// The connection now, waiting (up to `FailoverConfig::wait`) while one is being made.
    pub async fn client(&self) -> Result<Arc<Client>, CallError> {
        let mut rx = self.inner.current.subscribe();
        let wait = self.inner.config.wait;
        let got = tokio::time::timeout(wait, rx.wait_for(|(c, _)| c.is_some())).await;
        match got {
            Ok(Ok(state)) => Ok(state.0.clone().expect("waited for it")),
            _ => Err(CallError::Disconnected(format!("no node of the cluster answered within {wait:?}"))),
        }
    }

    /// The address of the node it is connected to now.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.inner.current.borrow().0.as_ref().map(|c| c.remote_addr())
    }

    /// How many connections it has made (1 after `connect`).
    pub fn connections_made(&self) -> u64 {
        self.inner.current.borrow().1
    }

    /// Waits until it has made more than `n` connections.
    pub async fn reconnected_after(&self, n: u64) {
        let mut rx = self.inner.current.subscribe();
        let _ = rx.wait_for(|(c, made)| c.is_some() && *made > n).await;
    }

    /// Calls `command` on the node it is connected to. A loss of the connection while the
    /// call is out fails it with [`CallError::Disconnected`] saying it may or may not have
    /// run, unless the command is idempotent: then it is sent again once connected anew.
    pub async fn call_console(&self, command: &str, text: impl Into<Text>) -> Result<Text, CallError> {
        let text = text.into();
        let idempotent = self.inner.config.idempotent.contains(command);
        let mut tries = 0;
        loop {
            let client = self.client().await?;
            let made = self.connections_made();
            match client.call_console(command, text.clone()).await {
                Err(CallError::Disconnected(why)) if idempotent && tries < RETRIES => {
                    tries += 1;
                    tracing::debug!("{command}: connection lost ({why}); sending it again");
                    let wait = self.inner.config.wait;
                    let _ = tokio::time::timeout(wait, self.reconnected_after(made)).await;
                }
                Err(CallError::Disconnected(why)) if !idempotent => {
                    return Err(CallError::Disconnected(format!(
                        "{why}: the call may or may not have run (`{command}` is not marked idempotent, so it was not sent again)"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Closes the connection and stops reconnecting.
    pub fn close(&self) {
        if let (Some(c), _) = self.inner.current.send_replace((None, u64::MAX)) {
            c.close();
        }
    }
}

/// Connects to the hinted node if there is one, else to every endpoint's addresses racing
/// (the one just lost last), and runs the hook.
fn connect_once(inner: Arc<Inner>, lost: Option<SocketAddr>) -> BoxFuture<'static, io::Result<Arc<Client>>> {
    // Boxed: a connection's router may start the next connection (a drain), a cycle of
    // futures the compiler cannot size otherwise.
    Box::pin(async move {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let hint = inner.hint.lock().unwrap_or_else(|p| p.into_inner()).take();
        for endpoint in hint.iter().chain(&inner.config.endpoints) {
            match tokio::net::lookup_host(endpoint.as_str()).await {
                Ok(found) => {
                    for a in found {
                        if !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                }
                Err(e) => tracing::debug!("failover: {endpoint}: {e}"),
            }
        }
        if let Some(i) = lost.and_then(|lost| addrs.iter().position(|a| *a == lost)) {
            // The lost node last, and (unless a hint leads) the ones after it first, so that its
            // clients spread over the others rather than all moving to the first endpoint.
            let lost = addrs.remove(i);
            if hint.is_none() && !addrs.is_empty() {
                let n = addrs.len();
                addrs.rotate_left(i % n);
            }
            addrs.push(lost);
        }
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no endpoint resolves to an address"));
        }
        let mut router = (inner.config.router)();
        let me = Arc::downgrade(&inner);
        // (A router that handles the drain push itself keeps its own handler.)
        if !router.contains(DRAINING) {
            router.direct_console(DRAINING, move |_peer, text| {
                let Some(inner) = me.upgrade() else { return };
                let hint = serde_json::from_str::<serde_json::Value>(text.as_str())
                    .ok()
                    .and_then(|v| v.get("hint")?.as_str().map(str::to_owned))
                    .filter(|h| !h.is_empty());
                *inner.hint.lock().unwrap_or_else(|p| p.into_inner()) = hint;
                tokio::spawn(move_off_draining(Arc::downgrade(&inner)));
            });
        }
        let client = Client::connect_with(&addrs[..], router, inner.config.client.clone()).await?;
        if let Some(hook) = &inner.config.on_connect {
            hook(client.peer().clone()).await.map_err(|why| {
                client.close();
                io::Error::other(format!("connected to {}, but {why}", client.remote_addr()))
            })?;
        }
        Ok(Arc::new(client))
    })
}

/// How long calls already out on a draining node's connection have to finish once new
/// calls go to the next node.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The node is draining: connects to the next one (the hinted, else another), sends new
/// calls there, and closes the old connection after [`DRAIN_GRACE`].
async fn move_off_draining(inner: Weak<Inner>) {
    let Some(strong) = inner.upgrade() else { return };
    let Some(old) = strong.current.borrow().0.clone() else { return };
    let new = match connect_once(strong.clone(), Some(old.remote_addr())).await {
        Ok(new) => new,
        Err(e) => return tracing::info!("failover: the node is draining, and {e}; staying until it closes"),
    };
    if strong.current.borrow().1 == u64::MAX {
        return new.close();
    }
    strong.current.send_modify(|(c, made)| {
        *c = Some(new);
        *made += 1;
    });
    drop(strong);
    tokio::time::sleep(DRAIN_GRACE).await;
    old.close();
}

/// Waits for the connection to end, then connects again (backing off while no node
/// answers) until the [`Failover`] is dropped or closed.
async fn keep_connected(inner: Weak<Inner>, mut client: Arc<Client>) {
    loop {
        let why = client.closed().await;
        let Some(strong) = inner.upgrade() else { return };
        let current = strong.current.borrow().clone();
        if current.1 == u64::MAX {
            return; // Closed.
        }
        if let Some(moved) = current.0.filter(|c| !Arc::ptr_eq(c, &client)) {
            client = moved; // Moved off a draining node already: watch the new connection.
            continue;
        }
        let lost = client.remote_addr();
        tracing::debug!("failover: connection to {lost} lost ({why:?}); connecting again");
        strong.current.send_modify(|(c, _)| *c = None);
        drop(strong);
        let mut pause = BACKOFF.0;
        client = loop {
            let Some(strong) = inner.upgrade() else { return };
            match connect_once(strong.clone(), Some(lost)).await {
                Ok(c) => break c,
                Err(e) => tracing::debug!("failover: {e}; again in {pause:?}"),
            }
            drop(strong);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(BACKOFF.1);
        };
        let Some(strong) = inner.upgrade() else { return };
        if strong.current.borrow().1 == u64::MAX {
            client.close();
            return;
        }
        strong.current.send_modify(|(c, made)| {
            *c = Some(client.clone());
            *made += 1;
        });
    }
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("endpoints", &self.inner.config.endpoints)
            .field("connected_to", &self.connected_to())
            .field("connections_made", &self.connections_made())
            .finish()
    }
}
