//! Virtual channels as a [`Peer`] opens them (see [`crate::mux`]).

use std::sync::Arc;

use zs_wire::mux::{ChannelKind, MuxFrame};

use super::{Channel, ChannelPhase, VirtualStream};
use crate::connection::outbox::Out;
use crate::peer::Peer;

/// Virtual channels (p2pVM).
impl Peer {
    /// Opens a virtual channel to the other end's service `name` (see
    /// [`Router::listen`](crate::Router::listen)) and waits until it is accepted. Fails if
    /// nothing listens there, its backlog is full, or the connection closes first.
    pub async fn open_stream(&self, name: &str) -> std::io::Result<VirtualStream> {
        self.open_stream_port(name, 0).await
    }

    /// [`open_stream`](Self::open_stream) with a service port (the listener sees it).
    pub async fn open_stream_port(&self, name: &str, port: u32) -> std::io::Result<VirtualStream> {
        let channel = self.open_channel(name, port, ChannelKind::Stream)?;
        // The stream exists first: if this future is dropped, so is it, and the channel
        // is reset.
        let stream = VirtualStream::new(channel.clone(), self.clone(), name.into(), port);
        std::future::poll_fn(|cx| channel.lock().poll_opened(cx)).await?;
        Ok(stream)
    }

    /// Registers a channel this end opens and queues its open frame.
    pub(crate) fn open_channel(
        &self,
        name: &str,
        port: u32,
        kind: ChannelKind,
    ) -> std::io::Result<Arc<Channel>> {
        let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
        let id = self.next_channel_id();
        if id > u32::MAX - 2 {
            return Err(invalid("this connection has used up its virtual channel ids"));
        }
        let (window, _) = self.mux_config().windows();
        let mut frame = bytes::BytesMut::new();
        MuxFrame::Open { channel: id, kind, port, window, name: name.to_owned() }
            .encode(&mut frame)
            .map_err(|e| invalid(&e.to_string()))?;
        let channel = Channel::new(id, ChannelPhase::Opening, window, 0);
        self.outbox().push_control(Out::MuxOpen(channel.clone(), frame.freeze())).map_err(|_| {
            let why = self.close_reason().unwrap_or_else(|| "the connection is closed".into());
            std::io::Error::new(std::io::ErrorKind::NotConnected, why)
        })?;
        Ok(channel)
    }

    /// Takes no new virtual channels on this connection, from either end (the other end is
    /// told `reason`); the channels open carry on.
    pub fn refuse_new_channels(&self, reason: &str) {
        let _ = self.outbox().push_control(Out::MuxGoAway(reason.to_owned()));
    }
}
