//! Taking connections in: one accept loop for every listener kind, the handshake (and
//! session hello) of each new connection in a task of its own under a permit and a
//! deadline, then the connection's task.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::OwnedSemaphorePermit;

use super::Shared;
use crate::compat::CompatLink;
use crate::config::ConnectionConfig;
use crate::connection::{encode, AnyLink, Connection};
use crate::peer::Peer;
use crate::secure::{self, ChannelInfo, SecuredLink, ServerSecurity};
use crate::session;
use crate::sync::RecoverRw;
use crate::transport::{Link, Listener, RawLink};

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
    let secured =
        protocol == Protocol::Native && !matches!(shared.config.security, ServerSecurity::Plaintext);
    loop {
        // A permit per handshake: when all are taken, connections wait in the backlog.
        let permit = if secured {
            tokio::select! {
                p = shared.handshakes.clone().acquire_owned() => Some(p.expect("the semaphore is never closed")),
                _ = stop.changed() => return,
            }
        } else {
            None
        };
        tokio::select! {
            r = listener.accept() => match r {
                Ok(raw) if protocol == Protocol::Compat => on_compat_accept(&shared, raw.into()),
                Ok(raw) => on_accept(&shared, raw.into(), permit),
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
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
        return tracing::warn!(remote = ?stream.peer_addr().ok(), msg, "ZServer4D connection refused");
    }
    let id = shared.next_id();
    let link = AnyLink::Compat(Box::new(CompatLink::new(stream, shared.compat.clone(), id)));
    admit(shared, id, link, None, shared.compat_connection.clone());
}

fn on_accept(shared: &Arc<Shared>, mut stream: RawLink, permit: Option<OwnedSemaphorePermit>) {
    if let Some((code, msg)) = shared.refusal() {
        // Refused before any handshake: the goaway goes in plaintext.
        shared.stats.bump(|s| &s.connections_refused);
        tracing::warn!(remote = ?stream.peer_addr().ok(), msg, "connection refused");
        let mut out = BytesMut::new();
        encode::goaway(&mut out, code, msg);
        let _ = Link::try_write(&mut stream, &out);
        return;
    }
    let Some(permit) = permit else {
        let link = AnyLink::Secured(SecuredLink::Plain(stream));
        admit(shared, shared.next_id(), link, None, shared.connection.clone());
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let remote = stream.peer_addr().ok();
        let policy = shared.connection.rekey_policy();
        // The handshake, and the session hello if the client asked for a session.
        let handshake = async {
            let secured =
                secure::accept(stream, &shared.config.security, policy, shared.stats.clone()).await?;
            shared.stats.bump(|s| &s.handshakes);
            if !secured.session {
                return Ok::<_, io::Error>(Some((AnyLink::from(secured.link), secured.channel)));
            }
            let channel = secured.channel.clone();
            let sessions = shared.config.sessions.as_ref();
            match session::accept(secured, sessions, &shared.sessions, &shared.stats).await? {
                session::Admitted::New(link) => Ok(Some((AnyLink::Session(link), channel))),
                session::Admitted::Resumed => Ok(None),
            }
        };
        let result = tokio::time::timeout(shared.config.handshake_timeout, handshake).await;
        drop(permit);
        let (link, channel) = match result {
            Ok(Ok(Some(admitted))) => admitted,
            Ok(Ok(None)) => return tracing::debug!(?remote, "session resumed"),
            Ok(Err(e)) => {
                shared.stats.bump(|s| &s.handshakes_failed);
                return tracing::info!(?remote, error = %e, "handshake failed");
            }
            Err(_) => {
                shared.stats.bump(|s| &s.handshakes_failed);
                let timeout = shared.config.handshake_timeout;
                return tracing::info!(?remote, ?timeout, "handshake timed out");
            }
        };
        if let Some((code, msg)) = shared.refusal() {
            shared.stats.bump(|s| &s.connections_refused);
            let e = secure::refuse(link, code, msg, "connection").await;
            return tracing::warn!(?remote, error = %e, "connection refused");
        }
        admit(&shared, shared.next_id(), link, channel, shared.connection.clone());
    });
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
    let peer = Peer::new(id, (remote, local), channel, session, config, shared.stats.clone(), false);
    link.bind_session_events(&peer, &shared.router);
    shared.peers.write_or_recover().insert(id, peer.clone());
    shared.stats.bump(|s| &s.connections_opened);
    let router = shared.router.clone();
    let shared = shared.clone();
    let unregister = move || {
        let mut peers = shared.peers.write_or_recover();
        peers.remove(&id);
        if peers.is_empty() {
            shared.all_closed.notify_waiters();
        }
    };
    // The task is the connection's `run` future itself: its state is all an idle
    // connection costs, so nothing else is captured beside it.
    tokio::spawn(Connection::new(link, peer, router).run(unregister));
}
