//! The resumable session's bookkeeping, sans IO: sequence numbers, cumulative acks, the
//! bounded replay buffer, and what each side replays on resume. The session layer
//! (issue 6) drives one [`Outbound`] and one [`Inbound`] per direction; nothing here knows
//! how sequence numbers and acks are put on the wire.
//!
//! Sequence numbers start at 1; 0 means "nothing". An ack of `n` says every frame up to and
//! including `n` arrived, so the sender may forget them.

use std::collections::VecDeque;

use bytes::Bytes;

/// Why a peer's sequence number or ack cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// An ack for frames that were never sent.
    #[error("ack of frame {ack} but only {sent} were sent")]
    AckAhead {
        /// The ack received.
        ack: u64,
        /// Frames sent so far.
        sent: u64,
    },
    /// A resume claims fewer frames received than the peer already acknowledged.
    #[error("resume from frame {from}, but frames up to {acked} were already acknowledged")]
    ResumeBehind {
        /// What the peer says it received.
        from: u64,
        /// What it acknowledged before.
        acked: u64,
    },
    /// A frame arrived out of order (one was lost without a link loss).
    #[error("frame {got} arrived where {want} was expected")]
    Gap {
        /// The sequence number that arrived.
        got: u64,
        /// The one expected.
        want: u64,
    },
}

/// The sending side: numbers frames and keeps them until acknowledged, within a byte
/// budget.
#[derive(Debug)]
pub struct Outbound {
    /// Frames sent and not yet acknowledged, oldest first, with their numbers.
    unacked: VecDeque<(u64, Bytes)>,
    /// Bytes held in `unacked`.
    held: usize,
    /// Most bytes held; a frame that does not fit waits.
    limit: usize,
    /// Number of the last frame sent.
    sent: u64,
    /// Highest ack received.
    acked: u64,
}

impl Outbound {
    /// An empty sender holding at most `limit` bytes of unacknowledged frames.
    pub fn new(limit: usize) -> Outbound {
        Outbound { unacked: VecDeque::new(), held: 0, limit, sent: 0, acked: 0 }
    }

    /// Whether a frame of `len` bytes may be sent now. A frame larger than the whole
    /// budget may be sent when nothing else is held, so no frame waits forever.
    pub fn has_room(&self, len: usize) -> bool {
        self.held == 0 || self.held + len <= self.limit
    }

    /// Records a frame as sent and returns its sequence number. The caller checks
    /// [`has_room`](Self::has_room) first (back-pressure).
    pub fn push(&mut self, frame: Bytes) -> u64 {
        self.sent += 1;
        self.held += frame.len();
        self.unacked.push_back((self.sent, frame));
        self.sent
    }

    /// Applies a cumulative ack; returns the bytes freed. An old (smaller) ack is ignored.
    pub fn ack(&mut self, upto: u64) -> Result<usize, SessionError> {
        if upto > self.sent {
            return Err(SessionError::AckAhead { ack: upto, sent: self.sent });
        }
        let mut freed = 0;
        while let Some((seq, frame)) = self.unacked.front() {
            if *seq > upto {
                break;
            }
            freed += frame.len();
            self.unacked.pop_front();
        }
        self.held -= freed;
        self.acked = self.acked.max(upto);
        Ok(freed)
    }

    /// On resume, the frames to send again: every one after `peer_received` (which also
    /// acknowledges the ones up to it). In order, with their numbers.
    pub fn resume(
        &mut self,
        peer_received: u64,
    ) -> Result<impl Iterator<Item = (u64, Bytes)> + '_, SessionError> {
        if peer_received < self.acked {
            return Err(SessionError::ResumeBehind { from: peer_received, acked: self.acked });
        }
        self.ack(peer_received)?;
        Ok(self.unacked.iter().cloned())
    }

    /// Bytes held for replay.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Number of the last frame sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

/// The receiving side: accepts frames in order exactly once and says when to ack.
#[derive(Debug, Default)]
pub struct Inbound {
    /// Number of the last frame delivered.
    received: u64,
    /// Highest number acknowledged to the peer.
    acked: u64,
}

/// What to do with an arriving frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one: deliver it.
    Deliver,
    /// Already delivered (a replay after resume): drop it.
    Duplicate,
}

impl Inbound {
    /// Classifies the frame numbered `seq`.
    pub fn arrive(&mut self, seq: u64) -> Result<Arrival, SessionError> {
        if seq <= self.received {
            Ok(Arrival::Duplicate)
        } else if seq == self.received + 1 {
            self.received = seq;
            Ok(Arrival::Deliver)
        } else {
            Err(SessionError::Gap { got: seq, want: self.received + 1 })
        }
    }

    /// Frames delivered but not yet acknowledged (ack when it passes a threshold, or on a
    /// timer when the link is quiet).
    pub fn unacked(&self) -> u64 {
        self.received - self.acked
    }

    /// The cumulative ack to send now (and remember it was sent).
    pub fn take_ack(&mut self) -> u64 {
        self.acked = self.received;
        self.received
    }

    /// Number of the last frame delivered (what a resume tells the peer).
    pub fn received(&self) -> u64 {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_acks_and_replays() {
        let mut out = Outbound::new(10);
        assert_eq!(out.push(Bytes::from_static(b"aaaa")), 1);
        assert_eq!(out.push(Bytes::from_static(b"bbbb")), 2);
        assert!(!out.has_room(4), "8 of 10 bytes held");
        assert_eq!(out.ack(1), Ok(4));
        assert_eq!(out.ack(0), Ok(0), "an old ack is ignored");
        assert_eq!(out.ack(3), Err(SessionError::AckAhead { ack: 3, sent: 2 }));
        let replay: Vec<_> = out.resume(1).unwrap().collect();
        assert_eq!(replay, vec![(2, Bytes::from_static(b"bbbb"))]);
        assert!(matches!(out.resume(0), Err(SessionError::ResumeBehind { from: 0, acked: 1 })));
        // A frame larger than the budget still goes when nothing is held.
        out.ack(2).unwrap();
        assert!(out.has_room(100));

        let mut inb = Inbound::default();
        assert_eq!(inb.arrive(1), Ok(Arrival::Deliver));
        assert_eq!(inb.arrive(1), Ok(Arrival::Duplicate));
        assert_eq!(inb.arrive(3), Err(SessionError::Gap { got: 3, want: 2 }));
        assert_eq!(inb.unacked(), 1);
        assert_eq!(inb.take_ack(), 1);
        assert_eq!(inb.unacked(), 0);
    }

    /// One step of a randomly driven link.
    #[derive(Debug, Clone)]
    enum Step {
        /// The application sends a frame of this size.
        Send(u8),
        /// The link carries this many frames in flight to the receiver.
        Carry(u8),
        /// The receiver acks what it has (the ack reaches the sender).
        Ack,
        /// The receiver acks, but the ack is lost with the link.
        AckLost,
        /// The link drops: frames in flight are lost; then resume.
        Drop,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1u8..40).prop_map(Step::Send),
            3 => (0u8..5).prop_map(Step::Carry),
            1 => Just(Step::Ack),
            1 => Just(Step::AckLost),
            1 => Just(Step::Drop),
        ]
    }

    proptest! {
        /// Against a model (the list of frames the application sent): whatever the link
        /// loses, the receiver delivers every frame exactly once and in order, the sender
        /// never holds more than its budget (bar one oversize frame alone), and holds
        /// exactly the frames not yet acknowledged.
        #[test]
        fn exactly_once_in_order_within_budget(steps in proptest::collection::vec(step(), 1..300)) {
            let limit = 100;
            let mut out = Outbound::new(limit);
            let mut inb = Inbound::default();
            let mut sent_model: Vec<Bytes> = Vec::new();
            let mut waiting: VecDeque<Bytes> = VecDeque::new(); // sent by the app, no room yet
            let mut in_flight: VecDeque<(u64, Bytes)> = VecDeque::new();
            let mut delivered: Vec<Bytes> = Vec::new();
            let mut next = 0u8;
            for s in steps {
                match s {
                    Step::Send(len) => {
                        next = next.wrapping_add(1);
                        let frame = Bytes::from(vec![next; len as usize]);
                        sent_model.push(frame.clone());
                        waiting.push_back(frame);
                    }
                    Step::Carry(n) => {
                        for _ in 0..n {
                            let Some((seq, frame)) = in_flight.pop_front() else { break };
                            if inb.arrive(seq).unwrap() == Arrival::Deliver {
                                delivered.push(frame);
                            }
                        }
                    }
                    Step::Ack => {
                        let ack = inb.take_ack();
                        out.ack(ack).unwrap();
                    }
                    Step::AckLost => {
                        inb.take_ack();
                    }
                    Step::Drop => {
                        in_flight.clear();
                        let replay: Vec<_> = out.resume(inb.received()).unwrap().collect();
                        in_flight.extend(replay);
                    }
                }
                // Back-pressure: frames leave the application only when there is room.
                while let Some(f) = waiting.front() {
                    if !out.has_room(f.len()) {
                        break;
                    }
                    let f = waiting.pop_front().unwrap();
                    let seq = out.push(f.clone());
                    in_flight.push_back((seq, f));
                }
                prop_assert!(out.held() <= limit.max(40), "held {}", out.held());
                prop_assert_eq!(&delivered[..], &sent_model[..delivered.len()]);
            }
            // Finally the link works until everything is through.
            loop {
                let replay: Vec<_> = out.resume(inb.received()).unwrap().collect();
                in_flight = replay.into();
                while let Some((seq, frame)) = in_flight.pop_front() {
                    if inb.arrive(seq).unwrap() == Arrival::Deliver {
                        delivered.push(frame);
                    }
                }
                out.ack(inb.take_ack()).unwrap();
                while let Some(f) = waiting.front() {
                    if !out.has_room(f.len()) {
                        break;
                    }
                    let f = waiting.pop_front().unwrap();
                    out.push(f);
                }
                if waiting.is_empty() && out.held() == 0 {
                    break;
                }
            }
            prop_assert_eq!(delivered, sent_model);
        }
    }
}
