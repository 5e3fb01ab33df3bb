//! `VirtualStream`: a virtual channel as a raw byte stream (`AsyncRead + AsyncWrite`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zs_wire::mux::MuxCode;

use super::channel::Channel;
use super::link::ChannelLink;
use crate::peer::Peer;
use crate::transport::Link;

/// A virtual channel carrying raw bytes, over its connection's physical link. Reads and
/// writes are flow-controlled per channel; dropping it resets the channel unless both ends
/// have shut it down.
pub struct VirtualStream {
    link: ChannelLink,
    name: Arc<str>,
    port: u32,
}

impl std::fmt::Debug for VirtualStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualStream").field("id", &self.id()).field("name", &self.name).finish()
    }
}

impl VirtualStream {
    pub(crate) fn new(channel: Arc<Channel>, peer: Peer, name: Arc<str>, port: u32) -> Self {
        VirtualStream { link: ChannelLink::new(channel, peer), name, port }
    }

    /// The channel's id on its link.
    pub fn id(&self) -> u32 {
        self.link.channel.id
    }

    /// The service name it was opened to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service port it was opened to (0 if none).
    pub fn port(&self) -> u32 {
        self.port
    }

    /// The physical connection it runs over.
    pub fn peer(&self) -> &Peer {
        &self.link.peer
    }

    /// Drops the channel at once in both directions, telling the other end why.
    pub fn reset(&mut self, reason: &str) {
        self.link.reset(MuxCode::Cancelled, reason);
    }
}

fn pending_or(r: io::Result<usize>) -> Poll<io::Result<usize>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

impl AsyncRead for VirtualStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let link = &mut self.get_mut().link;
        // Counts against the task's budget like tokio's own IO: a reader that always finds
        // data yields now and then instead of holding a worker thread.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            ready!(link.poll_read_ready(cx))?;
            match pending_or(link.read_with(buf.remaining(), |piece| buf.put_slice(piece))) {
                Poll::Ready(r) => {
                    r?;
                    coop.made_progress();
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => continue, // emptied meanwhile: register again
            }
        }
    }
}

impl AsyncWrite for VirtualStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let link = &mut self.get_mut().link;
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            ready!(link.poll_write_ready(cx))?;
            if let Poll::Ready(r) = pending_or(link.try_write(buf)) {
                coop.made_progress();
                return Poll::Ready(r);
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().link.poll_pending(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let link = &mut self.get_mut().link;
        ready!(link.poll_pending(cx))?;
        link.close_write()?;
        link.poll_pending(cx)
    }
}
