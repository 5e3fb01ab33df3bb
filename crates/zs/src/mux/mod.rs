//! Virtual channels (p2pVM): many channels over one connection, opened by either end to a
//! service name, each with its own credit window. Runs inside the connection's task: input
//! for a channel is handed to it from the read buffer without a copy, and its output joins
//! the connection's writes (control frames ahead of data).

pub(crate) mod channel;
pub(crate) mod config;
mod link;
mod listener;
mod peer;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use zs_wire::mux::{ChannelKind, MuxCode, MuxFrame};
use zs_wire::{Header, WireError};

pub(crate) use channel::{Channel, Phase as ChannelPhase};
use channel::{Delivered, Phase};
pub use config::{MuxConfig, MIN_WINDOW};
pub(crate) use link::ChannelLink;
pub(crate) use listener::Incoming;
pub use listener::{VirtualListener, DEFAULT_BACKLOG};
pub use stream::VirtualStream;

use crate::peer::Peer;

/// What virtual channels may be opened to: the names a router serves as full peers, and
/// its listeners of raw streams.
pub(crate) trait Services {
    /// Whether peer channels to `name` are served.
    fn serves_peer(&self, name: &str) -> bool;
    /// The backlog of the listener on `name`, if one listens.
    fn listener(&self, name: &str) -> Option<&tokio::sync::mpsc::Sender<Incoming>>;
}

/// The channels of one connection, kept by its task.
#[derive(Default)]
pub(crate) struct Mux {
    channels: HashMap<u32, Arc<Channel>>,
    /// The other end said it takes no new channels.
    peer_going_away: bool,
    /// The highest channel id the other end opened.
    last_remote: u32,
    /// This end said it takes no new channels.
    going_away: bool,
}

impl Mux {
    /// A channel this end opens (its open frame is written by the caller).
    pub(crate) fn add_local(&mut self, channel: Arc<Channel>, peer: &Peer) {
        let max = peer.mux_config().max_channels;
        if self.peer_going_away {
            channel.fail(MuxCode::GoingAway, "the other end takes no new channels");
        } else if self.going_away {
            channel.fail(MuxCode::GoingAway, "this end takes no new channels");
        } else if self.channels.len() >= max {
            channel.fail(MuxCode::TooManyChannels, &format!("more than {max} channels on this connection"));
        } else {
            self.insert(channel, peer);
        }
    }

    /// Forgets a channel both ends are done with.
    pub(crate) fn forget(&mut self, id: u32, peer: &Peer) {
        if self.channels.get(&id).is_some_and(|c| c.finished()) {
            self.remove(id, peer);
        }
    }

    /// Handles a multiplexer frame from the other end. Answers (refusals, resets) are
    /// appended to `out`, the connection's output. A peer channel accepted here is returned,
    /// for the caller to run a connection on.
    pub(crate) fn on_frame(
        &mut self,
        header: &Header,
        body: Bytes,
        peer: &Peer,
        services: &dyn Services,
        out: &mut BytesMut,
    ) -> Result<Option<ChannelLink>, WireError> {
        let frame = MuxFrame::decode(header, body)?;
        match frame {
            open @ MuxFrame::Open { .. } => {
                let channel = open.channel();
                match self.on_open(open, peer, services) {
                    Err((code, reason)) => answer(out, MuxFrame::Refuse { channel, code, reason }),
                    Ok(Some((window, link))) => {
                        answer(out, MuxFrame::Accept { channel, window });
                        return Ok(Some(link));
                    }
                    Ok(None) => {}
                }
            }
            MuxFrame::Accept { channel, window } => {
                if let Some(c) = self.channels.get(&channel) {
                    c.opened(window);
                }
            }
            MuxFrame::Refuse { channel, code, reason } | MuxFrame::Reset { channel, code, reason } => {
                if let Some(c) = self.remove(channel, peer) {
                    c.fail(code, &reason);
                }
            }
            MuxFrame::Data { channel, data } => {
                let refused = match self.channels.get(&channel).map(|c| (c.deliver(data), c)) {
                    Some((Delivered::OverCredit, c)) => {
                        let reason = "data beyond the channel's credit, or after its close".to_owned();
                        c.fail(MuxCode::FlowControl, &reason);
                        Some((MuxCode::FlowControl, reason))
                    }
                    Some((Delivered::Abandoned, c)) => {
                        let reason = "nobody reads this channel any more".to_owned();
                        c.fail(MuxCode::Cancelled, &reason);
                        Some((MuxCode::Cancelled, reason))
                    }
                    _ => None,
                };
                if let Some((code, reason)) = refused {
                    self.remove(channel, peer);
                    answer(out, MuxFrame::Reset { channel, code, reason });
                }
                // Data for a channel already reset here: dropped (it was in flight).
            }
            MuxFrame::Credit { channel, bytes } => {
                if let Some(c) = self.channels.get(&channel) {
                    c.grant(bytes);
                }
            }
            MuxFrame::Close { channel } => {
                if let Some(c) = self.channels.get(&channel) {
                    if c.peer_closed() {
                        self.remove(channel, peer);
                    }
                }
            }
            MuxFrame::GoAway { last, reason, .. } => {
                self.peer_going_away = true;
                // Opens the other end saw (up to `last`) are still answered; later ones not.
                for c in self.channels.values() {
                    if c.id > last && c.lock().phase == Phase::Opening {
                        c.fail(MuxCode::GoingAway, &format!("the other end takes no new channels: {reason}"));
                    }
                }
                let before = self.channels.len();
                self.channels.retain(|_, c| !c.finished());
                peer.shared_stats().channels_closed.fetch_add((before - self.channels.len()) as u64, Relaxed);
            }
        }
        Ok(None)
    }

    /// Registers a channel the other end opens and hands it to its listener, or says why not.
    /// `Ok(Some((window, link)))`: accepted at once (a peer channel, whose link is to be
    /// served), answer with the window; `Ok(None)`: handed to a listener, which answers.
    fn on_open(
        &mut self,
        open: MuxFrame,
        peer: &Peer,
        services: &dyn Services,
    ) -> Result<Option<(u32, ChannelLink)>, (MuxCode, String)> {
        let MuxFrame::Open { channel: id, kind, port, window, name } = open else {
            unreachable!("called with an open frame")
        };
        let max = peer.mux_config().max_channels;
        let refusal = if id % 2 == peer.mux_parity() {
            Some((MuxCode::Protocol, format!("channel {id} has this end's parity")))
        } else if self.channels.contains_key(&id) {
            Some((MuxCode::Protocol, format!("channel {id} is already open")))
        } else if self.channels.len() >= max {
            Some((MuxCode::TooManyChannels, format!("more than {max} channels on this connection")))
        } else if self.going_away {
            Some((MuxCode::GoingAway, "this end takes no new channels".to_owned()))
        } else if kind == ChannelKind::Peer && !services.serves_peer(&name) {
            Some((MuxCode::NoListener, format!("no peer service \"{name}\" here")))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let (our_window, _) = peer.mux_config().windows();
        let channel = Channel::new(id, Phase::Open, our_window, window);
        if kind == ChannelKind::Peer {
            self.accepted(channel.clone(), peer);
            return Ok(Some((our_window, ChannelLink::new(channel, peer.clone()))));
        }
        let no_listener = || (MuxCode::NoListener, format!("nothing listens on \"{name}\""));
        let tx = services.listener(&name).ok_or_else(no_listener)?;
        let incoming =
            Incoming { channel: channel.clone(), peer: peer.clone(), name: name.as_str().into(), port };
        match tx.try_send(incoming) {
            Ok(()) => {
                self.accepted(channel, peer);
                Ok(None)
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                Err((MuxCode::BacklogFull, format!("the backlog of \"{name}\" is full")))
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(no_listener()),
        }
    }

    /// Takes in a channel the other end opened.
    fn accepted(&mut self, channel: Arc<Channel>, peer: &Peer) {
        self.last_remote = self.last_remote.max(channel.id);
        self.insert(channel, peer);
    }

    /// The connection is gone: every channel fails with `reason`.
    pub(crate) fn fail_all(&mut self, reason: &str, peer: &Peer) {
        peer.shared_stats().channels_closed.fetch_add(self.channels.len() as u64, Relaxed);
        for (_, c) in self.channels.drain() {
            c.fail(MuxCode::Other, reason);
        }
    }

    fn insert(&mut self, channel: Arc<Channel>, peer: &Peer) {
        peer.shared_stats().bump(|s| &s.channels_opened);
        self.channels.insert(channel.id, channel);
    }

    fn remove(&mut self, id: u32, peer: &Peer) -> Option<Arc<Channel>> {
        let c = self.channels.remove(&id)?;
        peer.shared_stats().bump(|s| &s.channels_closed);
        Some(c)
    }

    /// Tells the other end to open no more channels here; the channels open carry on.
    pub(crate) fn go_away(&mut self, reason: &str, out: &mut BytesMut) {
        self.going_away = true;
        answer(
            out,
            MuxFrame::GoAway { last: self.last_remote, code: MuxCode::GoingAway, reason: reason.to_owned() },
        );
    }
}

/// Appends a frame the connection's task writes itself.
fn answer(out: &mut BytesMut, frame: MuxFrame) {
    // Only an open with a bad name fails to encode, and the task never writes one.
    let _ = frame.encode(out);
}
