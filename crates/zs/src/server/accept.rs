//! Taking connections in: one accept loop for every listener kind, the handshake (and
//! session hello) of each new connection in a task of its own under a permit and a
//! deadline, then the connection's task.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::Shared;
use crate::compat::CompatLink;
use crate::config::ConnectionConfig;
use crate::connection::{encode, AnyLink, Connection};
use crate::logs::Throttle;
use crate::peer::{Peer, PeerContext};
use crate::secure::{self, ChannelInfo, SecuredLink, ServerSecurity};
use crate::session;
use crate::transport::{read_some, Link, Listener, RawLink};

/// What the clients of a listener speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// zserver's own protocol, secured as the server's mode says.
    Native,
    /// ZServer4D's (see `compat`).
    Compat,
}

/// Accepts connections on a listener of any transport, for clients of `protocol`.
pub(super) async fn accept_loop<L: Listener>(shared: Arc<Shared>, mut listener: L, protocol: Protocol)
where
    L::Raw: Into<RawLink>,
{
    let mut stop = shared.stop.subscribe();
    let errors = Throttle::new(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(raw) if protocol == Protocol::Compat => on_compat_accept(&shared, raw.into()),
                Ok(raw) => on_accept(&shared, raw.into()),
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin,
                    // and say so at most once a second.
                    if let Some(more) = errors.pass() {
                        tracing::warn!(error = %e, more, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// A ZServer4D client: no handshake of ours (theirs is answered by the link).
fn on_compat_accept(shared: &Arc<Shared>, stream: RawLink) {
    if let Some((_, msg)) = shared.refusal() {
        // The original's protocol has no way to say why: the client sees a close.
        shared.stats.bump(|s| &s.connections_refused);
        return shared.refusals.add("ZServer4D", stream.peer_addr().ok(), msg);
    }
    let id = shared.next_id();
    let link = AnyLink::Compat(Box::new(CompatLink::new(stream, shared.compat.clone(), id)));
    admit(shared, id, link, None, shared.compat_connection.clone());
}

pub(super) fn on_accept(shared: &Arc<Shared>, mut stream: RawLink) {
    let remote = stream.peer_addr().ok();
    if let Some((code, msg)) = shared.refusal() {
        // Refused before any handshake: the goaway goes in plaintext.
        shared.stats.bump(|s| &s.connections_refused);
        shared.refusals.add("at accept", remote, msg);
        let mut out = BytesMut::new();
        encode::goaway(&mut out, code, msg);
        let _ = Link::try_write(&mut stream, &out);
        return;
    }
    if matches!(shared.config.security, ServerSecurity::Plaintext) {
        let id = shared.next_id();
        let link = AnyLink::Secured(SecuredLink::Plain(stream));
        admit(shared, id, link, None, shared.connection());
        return;
    }
    // Unfinished handshakes are bounded per source and in all; the oldest make room.
    let ip = remote.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let entered = shared.admission.enter(ip);
    for _ in 0..entered.evicted {
        shared.stats.bump(|s| &s.handshakes_evicted);
    }
    let mut ticket = entered.ticket;
    let shared = shared.clone();
    tokio::spawn(async move {
        let config = &shared.config;
        // The handshake, and the session hello if the client asked for a session.
        let handshake = async {
            // A short deadline for the first bytes: an idle socket holds its place briefly.
            let first = match tokio::time::timeout(config.first_bytes_timeout, read_some(&mut stream)).await {
                Ok(first) => first?,
                Err(_) => return Err(Failure::Silent),
            };
            // Handshakes cost CPU: a source starts no more than its share per second.
            if !shared.admission.start(ip) {
                return Err(Failure::RateLimited);
            }
            let policy = shared.connection().rekey_policy();
            let allowed = shared.allowed_clients();
            let (security, stats) = (&config.security, shared.stats.clone());
            let secured = secure::accept(stream, first, security, allowed.as_deref(), policy, stats).await?;
            shared.stats.bump(|s| &s.handshakes);
            if !secured.session {
                return Ok(Some((AnyLink::from(secured.link), secured.channel)));
            }
            let channel = secured.channel.clone();
            let sessions = config.sessions.as_ref();
            match session::accept(secured, sessions, &shared.sessions, &shared.stats).await? {
                session::Admitted::New(link) => Ok(Some((AnyLink::Session(link), channel))),
                session::Admitted::Resumed => Ok(None),
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(config.handshake_timeout, handshake) => r.unwrap_or(Err(Failure::Timeout)),
            _ = &mut ticket.evicted => Err(Failure::Evicted),
        };
        let admitted = ticket.finish();
        let (link, channel) = match result {
            Ok(Some(admitted)) => admitted,
            Ok(None) => return tracing::debug!(?remote, "session resumed"),
            Err(failure) => {
                if let Some(counter) = failure.counter() {
                    shared.stats.bump(counter);
                }
                shared.stats.bump(|s| &s.handshakes_failed);
                return shared.handshake_failures.add(failure.cause(), remote, failure);
            }
        };
        if !admitted {
            // Dropped to make room just as it finished.
            shared.stats.bump(|s| &s.handshakes_evicted);
            shared.stats.bump(|s| &s.handshakes_failed);
            return shared.handshake_failures.add("dropped to make room", remote, "after the handshake");
        }
        if let Some((code, msg)) = shared.refusal() {
            shared.stats.bump(|s| &s.connections_refused);
            let e = secure::refuse(link, code, msg, "connection").await;
            return shared.refusals.add("after the handshake", remote, e);
        }
        let id = shared.next_id();
        admit(&shared, id, link, channel, shared.connection());
    });
}

/// Why a handshake did not finish.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Nothing arrived within the first-bytes deadline.
    Silent,
    /// Its source started too many handshakes this second.
    RateLimited,
    /// Dropped to make room for newer connections.
    Evicted,
    /// Not done within the handshake timeout.
    Timeout,
    /// The handshake failed (wrong mode, bad message, refused key...).
    Failed(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Failed(e.to_string())
    }
}

impl Failure {
    fn cause(&self) -> &'static str {
        match self {
            Failure::Silent => "nothing sent in time",
            Failure::RateLimited => "source over its handshake rate",
            Failure::Evicted => "dropped to make room",
            Failure::Timeout => "timed out",
            Failure::Failed(_) => "failed",
        }
    }

    /// The counter of its own this failure has, beside `handshakes_failed` (an eviction is
    /// counted where it happens).
    fn counter(&self) -> Option<fn(&crate::stats::Stats) -> &std::sync::atomic::AtomicU64> {
        match self {
            Failure::Silent => Some(|s| &s.handshakes_silent),
            Failure::RateLimited => Some(|s| &s.handshakes_rate_limited),
            Failure::Evicted | Failure::Timeout | Failure::Failed(_) => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Failed(why) => f.write_str(why),
            other => f.write_str(other.cause()),
        }
    }
}

/// Serves `link` as connection `id`.
fn admit(
    shared: &Arc<Shared>,
    id: u64,
    mut link: AnyLink,
    channel: Option<ChannelInfo>,
    config: Arc<ConnectionConfig>,
) {
    let (Ok(remote), Ok(local)) = (link.peer_addr(), link.local_addr()) else { return };
    let session = link.session();
    let context =
        PeerContext { config, stats: shared.stats.clone(), directory: shared.directory.downgrade() };
    let peer = Peer::new(id, (remote, local), channel, session, context, false);
    link.bind_charge(&peer);
    link.bind_session_events(&peer, &shared.router);
    shared.directory.insert(peer.clone());
    shared.stats.bump(|s| &s.connections_opened);
    let protocol = peer.channel().map_or("plaintext", |c| c.protocol.as_str());
    tracing::debug!(peer = id, %remote, protocol, session = peer.session().is_some(), "connection opened");
    let router = shared.router.clone();
    let shared = shared.clone();
    let unregister = move || {
        if shared.directory.remove(id) == 0 {
            shared.all_closed.notify_waiters();
        }
    };
    // The task is the connection's `run` future itself: its state is all an idle
    // connection costs, so nothing else is captured beside it.
    tokio::spawn(Connection::new(link, peer, router).run(unregister));
}
