//! `VirtualStream`: a virtual channel as a raw byte stream (`AsyncRead + AsyncWrite`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zs_wire::mux::{encode_data, MuxCode, MuxFrame};

use super::channel::{Channel, Phase};
use crate::peer::{Peer, PeerShared};
use crate::rpc::outbox::{Out, PushError};

/// Largest data frame a channel sends: big writes are cut so that other channels' frames
/// (and this link's control frames) interleave.
pub(crate) const MAX_DATA: usize = 64 << 10;

/// A virtual channel carrying raw bytes, over its connection's physical link. Reads and
/// writes are flow-controlled per channel; dropping it resets the channel if it was not
/// shut down both ways.
pub struct VirtualStream {
    channel: Arc<Channel>,
    peer: Peer,
    name: Arc<str>,
    port: u32,
    /// A data (or close) frame taken from the caller and waiting for room in the outbox.
    pending: Option<BoxFuture<'static, Result<(), PushError>>>,
}

impl std::fmt::Debug for VirtualStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualStream").field("id", &self.channel.id).field("name", &self.name).finish()
    }
}

fn gone(e: PushError) -> io::Error {
    match e {
        PushError::Closed => io::Error::new(io::ErrorKind::ConnectionReset, "the connection is closed"),
        PushError::Full => io::Error::new(io::ErrorKind::WouldBlock, "the outbox is full"),
    }
}

impl VirtualStream {
    pub(crate) fn new(channel: Arc<Channel>, peer: Peer, name: Arc<str>, port: u32) -> Self {
        VirtualStream { channel, peer, name, port, pending: None }
    }

    /// The channel's id on its link.
    pub fn id(&self) -> u32 {
        self.channel.id
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
        &self.peer
    }

    /// Drops the channel at once in both directions, telling the other end why.
    pub fn reset(&mut self, reason: &str) {
        self.reset_with(MuxCode::Cancelled, reason);
    }

    fn reset_with(&mut self, code: MuxCode, reason: &str) {
        if self.channel.finished() {
            return;
        }
        self.channel.fail(code, reason);
        control(
            &self.peer.inner,
            MuxFrame::Reset { channel: self.channel.id, code, reason: reason.to_owned() },
        );
        let _ = self.peer.inner.outbox.push_control(Out::MuxForget(self.channel.id));
    }

    /// Finishes a frame handed over earlier.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(p) = self.pending.as_mut() {
            let r = ready!(p.as_mut().poll(cx));
            self.pending = None;
            r.map_err(gone)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a frame in the bulk lane (after the link's control frames, in order with the
    /// channel's other data); waits for room only on the next call.
    fn queue(&mut self, frame: Bytes) -> io::Result<()> {
        let inner = self.peer.inner.clone();
        let max = inner.config.max_queued_bytes;
        match inner.outbox.try_push_bulk(frame, max) {
            Ok(()) => Ok(()),
            Err((PushError::Full, frame)) => {
                self.pending = Some(Box::pin(async move { inner.outbox.push_bulk(frame, max).await }));
                Ok(())
            }
            Err((e, _)) => Err(gone(e)),
        }
    }
}

/// Queues a control frame ahead of channel data.
pub(crate) fn control(inner: &PeerShared, frame: MuxFrame) {
    let mut b = BytesMut::new();
    if frame.encode(&mut b).is_ok() {
        let _ = inner.outbox.push_control(Out::Frame(b.freeze()));
    }
}

impl AsyncRead for VirtualStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let max_window = this.peer.inner.config.mux.max_window;
        let (n, grant) = {
            let mut st = this.channel.lock();
            ready!(st.poll_read(cx, buf.initialize_unfilled(), max_window))?
        };
        buf.advance(n);
        if let Some(bytes) = grant.filter(|&g| g > 0) {
            control(&this.peer.inner, MuxFrame::Credit { channel: this.channel.id, bytes });
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for VirtualStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(this.channel.lock().poll_credit(cx, buf.len().min(MAX_DATA)))?;
        let mut frame = BytesMut::with_capacity(zs_wire::HEADER_LEN + n);
        encode_data(&mut frame, this.channel.id, &buf[..n]);
        this.queue(frame.freeze())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let both = {
            let mut st = this.channel.lock();
            if let Some(e) = st.error() {
                return Poll::Ready(Err(e));
            }
            if st.write_closed {
                return Poll::Ready(Ok(()));
            }
            st.write_closed = true;
            st.read_closed
        };
        let mut b = BytesMut::new();
        MuxFrame::Close { channel: this.channel.id }.encode(&mut b).expect("a valid close");
        this.queue(b.freeze())?;
        if both {
            let _ = this.peer.inner.outbox.push_control(Out::MuxForget(this.channel.id));
        }
        this.poll_pending(cx)
    }
}

impl Drop for VirtualStream {
    fn drop(&mut self) {
        let open = { !matches!(self.channel.lock().phase, Phase::Failed(..)) };
        if open && !self.channel.finished() {
            self.reset_with(MuxCode::Cancelled, "the other end dropped the channel");
        } else {
            let _ = self.peer.inner.outbox.push_control(Out::MuxForget(self.channel.id));
        }
    }
}
