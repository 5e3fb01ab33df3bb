//! `AnyLink`: the switchboard of link kinds a connection can run on. It sits above every
//! layer that makes links: the secure layer's modes over a raw link of any transport, a
//! resumable session over one of those, or a ZServer4D client's translated socket. A server
//! runs one connection type for all of them.

use std::sync::Arc;

use crate::compat::CompatLink;
use crate::peer::Peer;
use crate::rpc::Router;
use crate::secure::SecuredLink;
use crate::session::{SessionLink, SessionShared};
use crate::transport::link_enum;

/// The link a connection runs on.
pub(crate) enum AnyLink {
    /// Plaintext, Noise or TLS over a raw link.
    Secured(SecuredLink),
    /// A resumable session over a secured link.
    Session(Box<SessionLink>),
    /// A ZServer4D client, translated (see `compat`).
    Compat(Box<CompatLink>),
}

link_enum!(impl[] AnyLink { AnyLink::Secured, AnyLink::Session, AnyLink::Compat });

impl AnyLink {
    /// The session this link carries, if it is a session's.
    pub(crate) fn session(&self) -> Option<Arc<SessionShared>> {
        match self {
            AnyLink::Session(s) => Some(s.shared().clone()),
            _ => None,
        }
    }

    /// Gives the link its peer's charge against the server's memory budget (a ZServer4D
    /// translation's staging, a detached session's buffers are charged to it). A plain
    /// secured link charges nothing itself, so its peer makes no charge here.
    pub(crate) fn bind_charge(&mut self, peer: &Peer) {
        match self {
            AnyLink::Compat(c) => c.set_charge(peer.charge()),
            AnyLink::Session(s) => s.set_charge(peer.charge()),
            AnyLink::Secured(_) => {}
        }
    }

    /// Sends a session link's events to the router's session hooks, with its peer.
    pub(crate) fn bind_session_events(&mut self, peer: &Peer, router: &Arc<Router>) {
        let AnyLink::Session(s) = self else { return };
        if router.on_session.is_empty() {
            return;
        }
        let (peer, router) = (peer.clone(), router.clone());
        s.set_events(Box::new(move |event| {
            for hook in &router.on_session {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&peer, &event))).is_err() {
                    tracing::error!(peer = peer.id(), "on_session hook panicked");
                }
            }
        }));
    }
}

impl From<SecuredLink> for AnyLink {
    fn from(link: SecuredLink) -> Self {
        AnyLink::Secured(link)
    }
}
