//! `Client`: one connection to a server, with its own router for calls the server makes.

use std::io;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::ToSocketAddrs;
use tokio::sync::watch;

use crate::config::ClientConfig;
use crate::connection::{AnyLink, CloseReason, Connection};
use crate::peer::{Peer, PeerContext};
use crate::rpc::Router;
use crate::secure::{self, ClientSecurity};
use crate::session;
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::tcp::{TcpDialer, TcpOptions};
use crate::transport::{erase_dialer, Boxed, Dialer, Link, RawLink};

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// A connection to a server. Derefs to its [`Peer`] for calls; dropping it closes the
/// connection.
pub struct Client {
    peer: Peer,
    closed: watch::Receiver<Option<CloseReason>>,
    /// The virtual clients of `ClientConfig::virtual_clients`, by service name.
    channels: Vec<(String, Peer)>,
}

impl Client {
    /// Connects with default settings and no commands of its own, secured as `security`
    /// says: a server's [`Fingerprint`](crate::Fingerprint) (Noise pinned to it), a
    /// [`Trust`](crate::Trust), or any [`ClientSecurity`].
    pub async fn connect(
        addr: impl ToSocketAddrs,
        security: impl Into<ClientSecurity>,
    ) -> io::Result<Client> {
        Client::connect_with(addr, Router::new(), ClientConfig::secured(security)).await
    }

    /// Connects with a router (commands the server may call: push) and settings. Many
    /// clients may share one router (`Arc<Router>`).
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        router: impl Into<Arc<Router>>,
        config: ClientConfig,
    ) -> io::Result<Client> {
        let dialer =
            TcpDialer { options: TcpOptions { unsent_limit: config.connection.socket_unsent_limit } };
        Client::connect_via(dialer, addr, router, config).await
    }

    /// Connects to a server named by URL: `tcp://HOST:PORT` (or `HOST:PORT`),
    /// `ws://HOST:PORT/PATH` (WebSocket) or `quic://HOST:PORT`; the server's mode runs inside
    /// each as `config.security` says. (`wss://` needs the certificate's trust as well:
    /// [`connect_over`](Self::connect_over) with
    /// [`WsDialer::secure`](crate::transport::ws::WsDialer::secure).)
    pub async fn connect_url(
        url: &str,
        router: impl Into<Arc<Router>>,
        config: ClientConfig,
    ) -> io::Result<Client> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
        let (scheme, rest) = url.split_once("://").unwrap_or(("tcp", url));
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        match scheme {
            "tcp" => Client::connect_with(host, router, config).await,
            "ws" => {
                Client::connect_over(crate::transport::ws::WsDialer::new(path), host, router, config).await
            }
            "quic" => Client::connect_over(crate::transport::quic::QuicDialer, host, router, config).await,
            "wss" => Err(bad("wss needs the certificate's trust: use connect_over with WsDialer::secure")),
            _ => Err(bad("unknown scheme (tcp, ws, wss, quic)")),
        }
    }

    /// Connects over a transport of one's own (see [`Dialer`]): the link it makes runs the
    /// security mode, session and router of `config` as a TCP link would.
    pub async fn connect_over<D: Dialer>(
        dialer: D,
        addr: impl ToSocketAddrs,
        router: impl Into<Arc<Router>>,
        config: ClientConfig,
    ) -> io::Result<Client> {
        Client::connect_via(Boxed(dialer), addr, router, config).await
    }

    async fn connect_via<D: Dialer>(
        dialer: D,
        addr: impl ToSocketAddrs,
        router: impl Into<Arc<Router>>,
        config: ClientConfig,
    ) -> io::Result<Client>
    where
        D::Raw: Into<RawLink>,
    {
        let stats = Arc::new(Stats::default());
        let (rekey, timeout) = (config.connection.rekey_policy(), config.connect_timeout);
        let (mut link, channel) = match &config.session {
            Some(session) => {
                let dial = erase_dialer(dialer);
                let reach = session::Reach { dial, security: config.security.clone(), rekey, timeout };
                let (link, channel) = session::connect(addr, reach, session, stats.clone()).await?;
                (AnyLink::Session(Box::new(link)), channel)
            }
            None => {
                let secured =
                    secure::connect(&dialer, addr, &config.security, false, timeout, rekey, stats.clone())
                        .await?;
                (AnyLink::from(secured.link), secured.channel)
            }
        };
        let (remote, local) = (link.peer_addr()?, link.local_addr()?);
        stats.bump(|s| &s.connections_opened);
        let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
        let session = link.session();
        let context =
            PeerContext { config: Arc::new(config.connection), stats, directory: Default::default() };
        let peer = Peer::new(id, (remote, local), channel, session, context, true);
        let router = router.into();
        link.bind_session_events(&peer, &router);
        let (tx, closed) = watch::channel(None);
        let conn = Connection::new(link, peer.clone(), router);
        tokio::spawn(async move {
            let reason = conn.run(|| {}).await;
            let _ = tx.send(Some(reason));
        });
        // Opened at once: one round trip for all of them.
        let physical = &peer;
        let opens = config.virtual_clients.iter().map(|name| async move {
            match physical.open_peer(name).await {
                Ok(channel) => Ok((name.clone(), channel)),
                Err(e) => Err(io::Error::new(e.kind(), format!("virtual client \"{name}\": {e}"))),
            }
        });
        let channels = futures_util::future::try_join_all(opens).await.inspect_err(|_| peer.close())?;
        Ok(Client { peer, closed, channels })
    }

    /// The virtual client opened for service `name` (one of `ClientConfig::virtual_clients`): a
    /// full peer over this client's one connection.
    pub fn virtual_client(&self, name: &str) -> Option<&Peer> {
        self.channels.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The connection's peer handle (clone it to use from other tasks).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// This client's statistics.
    pub fn stats(&self) -> StatsSnapshot {
        self.peer.shared_stats().snapshot()
    }

    /// Waits until the connection has closed and tells why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.closed.clone();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(CloseReason::PeerClosed),
            Err(_) => CloseReason::Io("connection task ended".into()),
        };
        reason
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("peer", &self.peer).finish()
    }
}

impl Deref for Client {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.peer.close();
    }
}
