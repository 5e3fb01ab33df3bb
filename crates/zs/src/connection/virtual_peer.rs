//! A full peer over a virtual channel: an ordinary connection driver whose link is a
//! channel of a physical connection, so routers, calls, push and bulk work unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zs_wire::mux::ChannelKind;

use super::Connection;
use crate::mux::ChannelLink;
use crate::peer::Peer;
use crate::rpc::Router;

/// Ids of peers on virtual channels (apart from those of connections).
static VIRTUAL_PEER_IDS: AtomicU64 = AtomicU64::new(1 << 48);

/// Runs a full connection over a virtual channel of `physical`, served by `router`.
pub(crate) fn serve(link: ChannelLink, physical: &Peer, dialer: bool, router: Arc<Router>) -> Peer {
    let id = VIRTUAL_PEER_IDS.fetch_add(1, Ordering::Relaxed);
    let peer = Peer::on_channel(physical, id, dialer);
    tokio::spawn(Connection::new(link, peer.clone(), router).run(|| {}));
    peer
}

/// Virtual peers (automated p2pVM).
impl Peer {
    /// Opens a virtual channel to the other end's service `name` that is a full peer (see
    /// [`Router::serve_channels`](crate::Router::serve_channels)): calls, sends, push and
    /// bulk work on the returned `Peer` as on a connection, and this connection's router
    /// serves the other end's calls on it.
    pub async fn open_peer(&self, name: &str) -> std::io::Result<Peer> {
        let channel = self.open_channel(name, 0, ChannelKind::Peer)?;
        let link = ChannelLink::new(channel.clone(), self.clone());
        std::future::poll_fn(|cx| channel.lock().poll_opened(cx)).await?;
        let router = self.router().unwrap_or_default();
        Ok(serve(link, self, true, router))
    }
}
