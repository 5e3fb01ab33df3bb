//! `ChannelLink`: a virtual channel as a [`Link`], so that a full zserver connection (router,
//! calls, push, bulk) runs over it exactly as over a socket; `VirtualStream` wraps it too.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use zs_wire::mux::{encode_data, MuxCode, MuxFrame};

use super::channel::{Channel, Phase};
use crate::connection::outbox::{Out, PushError};
use crate::peer::Peer;
use crate::sync::Recover;
use crate::transport::{self, Link};

/// Largest data frame a channel sends: big writes are cut so that other channels' frames
/// (and this link's control frames) interleave.
pub(crate) const MAX_DATA: usize = 64 << 10;

/// A frame waiting for room in the outbox (in a mutex only so that the link is `Sync`).
type Pending = Mutex<Option<BoxFuture<'static, Result<(), PushError>>>>;

/// One end of a virtual channel, over its connection's physical link.
pub(crate) struct ChannelLink {
    pub(crate) channel: Arc<Channel>,
    /// The physical connection.
    pub(crate) peer: Peer,
    pending: Pending,
}

pub(crate) fn gone(e: PushError) -> io::Error {
    match e {
        PushError::Closed => io::Error::new(io::ErrorKind::ConnectionReset, "the connection is closed"),
        PushError::Full => io::Error::new(io::ErrorKind::WouldBlock, "the outbox is full"),
    }
}

/// Queues a control frame ahead of channel data.
pub(crate) fn control(peer: &Peer, frame: MuxFrame) {
    let mut b = BytesMut::new();
    if frame.encode(&mut b).is_ok() {
        let _ = peer.outbox().push_control(Out::Frame(b.freeze()));
    }
}

impl ChannelLink {
    pub(crate) fn new(channel: Arc<Channel>, peer: Peer) -> Self {
        ChannelLink { channel, peer, pending: Mutex::new(None) }
    }

    fn pending(&mut self) -> &mut Option<BoxFuture<'static, Result<(), PushError>>> {
        self.pending.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Finishes a frame handed over earlier.
    pub(crate) fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(p) = self.pending().as_mut() {
            let r = std::task::ready!(p.poll_unpin(cx));
            *self.pending() = None;
            r.map_err(gone)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a frame in the bulk lane (after the link's control frames, in order with the
    /// channel's other data); if there is no room it waits there, and the next write waits
    /// for it.
    fn queue(&mut self, frame: Bytes) -> io::Result<()> {
        let peer = self.peer.clone();
        let max = peer.max_queued_bytes();
        match peer.outbox().try_push_bulk(frame, max) {
            Ok(()) => Ok(()),
            Err((PushError::Full, frame)) => {
                *self.pending() = Some(Box::pin(async move { peer.outbox().push_bulk(frame, max).await }));
                Ok(())
            }
            Err((e, _)) => Err(gone(e)),
        }
    }

    /// Hands up to `max` bytes of input to `put`, granting credit as the window asks.
    pub(crate) fn read_with(&mut self, max: usize, put: impl FnMut(&[u8])) -> io::Result<usize> {
        let (_, max_window) = self.peer.mux_config().windows();
        let (n, grant) = self.channel.lock().read(max, max_window, put)?;
        if let Some(bytes) = grant.filter(|&g| g > 0) {
            control(&self.peer, MuxFrame::Credit { channel: self.channel.id, bytes });
        }
        Ok(n)
    }

    /// Sends what the credit allows of `bufs` as one data frame.
    fn write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.pending().is_some() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let n = self.channel.lock().take_credit(total.min(MAX_DATA))?;
        let mut frame = BytesMut::with_capacity(zs_wire::HEADER_LEN + n);
        encode_data(&mut frame, self.channel.id, transport::up_to(bufs, n));
        self.queue(frame.freeze())?;
        Ok(n)
    }

    /// Sends this end's close (after the data written before it).
    pub(crate) fn close_write(&mut self) -> io::Result<()> {
        let both = {
            let mut st = self.channel.lock();
            if let Some(e) = st.error() {
                return Err(e);
            }
            if st.write_closed {
                return Ok(());
            }
            st.write_closed = true;
            st.read_closed
        };
        let mut b = BytesMut::new();
        MuxFrame::Close { channel: self.channel.id }.encode(&mut b).expect("a valid close");
        self.queue(b.freeze())?;
        if both {
            let _ = self.peer.outbox().push_control(Out::MuxForget(self.channel.id));
        }
        Ok(())
    }

    /// Drops the channel at once in both directions, telling the other end why.
    pub(crate) fn reset(&mut self, code: MuxCode, reason: &str) {
        if self.channel.finished() {
            return;
        }
        self.channel.fail(code, reason);
        control(&self.peer, MuxFrame::Reset { channel: self.channel.id, code, reason: reason.to_owned() });
        let _ = self.peer.outbox().push_control(Out::MuxForget(self.channel.id));
    }
}

impl Link for ChannelLink {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.channel.lock().poll_readable(cx) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // All that is queued, appended as it is (no zero-filled room first).
        self.read_with(usize::MAX, |piece| buf.extend_from_slice(piece))
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        if self.channel.lock().poll_writable(cx) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(&[IoSlice::new(buf)])
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write(bufs)
    }

    fn has_pending(&self) -> bool {
        self.pending.lock_or_recover().is_some()
    }

    fn flush(&mut self) -> io::Result<()> {
        let waker = futures_util::task::noop_waker();
        match self.poll_pending(&mut Context::from_waker(&waker)) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.close_write()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer.remote_addr())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer.local_addr())
    }
}

impl Drop for ChannelLink {
    fn drop(&mut self) {
        let (failed, write_closed) = {
            let st = self.channel.lock();
            (matches!(st.phase, Phase::Failed(..)), st.write_closed)
        };
        if !failed && !write_closed {
            // Dropped before its shutdown: the other end must not wait for more.
            self.reset(MuxCode::Cancelled, "the other end dropped the channel");
            return;
        }
        // Shut down, then dropped: what was sent, and the close, still arrive in order (a
        // close waiting for room goes out by itself). The connection forgets the channel
        // when the other end closes too, and refuses input until then.
        if let (Some(p), Ok(rt)) = (self.pending().take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(p);
        }
        self.channel.abandon();
        let _ = self.peer.outbox().push_control(Out::MuxForget(self.channel.id));
    }
}
