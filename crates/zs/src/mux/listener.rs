//! `VirtualListener`: accepts the virtual channels the other end opens to a service name.

use std::sync::Arc;

use tokio::sync::mpsc;
use zs_wire::mux::MuxFrame;

use super::channel::Channel;
use super::link::control;
use super::stream::VirtualStream;
use crate::peer::Peer;

/// Opens not yet accepted that a listener holds by default; more are refused with
/// `BacklogFull`.
pub const DEFAULT_BACKLOG: usize = 128;

/// An open the other end made, waiting in a listener's backlog.
pub(crate) struct Incoming {
    pub(crate) channel: Arc<Channel>,
    pub(crate) peer: Peer,
    pub(crate) name: Arc<str>,
    pub(crate) port: u32,
}

/// The channels opened to one service name, from any connection that shares the router.
pub struct VirtualListener {
    name: Arc<str>,
    rx: mpsc::Receiver<Incoming>,
}

impl VirtualListener {
    pub(crate) fn new(name: Arc<str>, backlog: usize) -> (Self, mpsc::Sender<Incoming>) {
        let (tx, rx) = mpsc::channel(backlog.max(1));
        (VirtualListener { name, rx }, tx)
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens waiting in the backlog.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Accepts the next channel (the other end's open completes now); `None` once the
    /// router that holds the listener is gone.
    pub async fn accept(&mut self) -> Option<VirtualStream> {
        loop {
            let inc = self.rx.recv().await?;
            if inc.channel.finished() {
                continue; // the opener gave up, or the connection is gone
            }
            let window = inc.channel.lock().window();
            control(&inc.peer, MuxFrame::Accept { channel: inc.channel.id, window });
            return Some(VirtualStream::new(inc.channel, inc.peer, inc.name, inc.port));
        }
    }
}
