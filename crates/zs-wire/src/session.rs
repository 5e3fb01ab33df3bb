//! Resumable sessions, sans IO: the replay buffer and its cumulative acks, the ack frame,
//! a walker that finds frame boundaries and acks in a byte stream, and the hello and answer
//! that open or resume a session (`docs/PROTOCOL.md` §10).
//!
//! A session's stream is the ordinary frame stream; its positions are byte offsets from
//! the session's start, counted by both ends and never sent with the data. An ack (a
//! [`Kind::SessionAck`] frame in the stream) says how many bytes arrived, so the sender may
//! forget them; a resume says the same, and the sender replays from there.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{Kind, HEADER_LEN, MAGIC, VERSION};
use crate::wire_enum;

/// Why a session message or a peer's count cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// An ack or resume for bytes that were never sent.
    #[error("peer claims {claimed} bytes received but only {sent} were sent")]
    AckAhead {
        /// The count claimed.
        claimed: u64,
        /// Bytes sent so far.
        sent: u64,
    },
    /// A resume claims fewer bytes received than the peer already acknowledged.
    #[error("resume from byte {from}, but bytes up to {acked} were already acknowledged")]
    ResumeBehind {
        /// What the peer says it received.
        from: u64,
        /// What it acknowledged before.
        acked: u64,
    },
    /// A hello or answer that does not parse.
    #[error("malformed session {what}: {why}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A session protocol version this build does not speak.
    #[error("unsupported session version {0}")]
    Version(u8),
}

/// The sending side: counts the stream's bytes and keeps those not yet acknowledged, up
/// to a byte budget.
#[derive(Debug)]
pub struct Outbound {
    /// Unacknowledged bytes in the order sent; the first starts at offset `acked`.
    unacked: VecDeque<Bytes>,
    /// Bytes held in `unacked`.
    held: usize,
    /// Most bytes held: beyond it the writer waits.
    limit: usize,
    /// Bytes sent so far (the offset of the next byte).
    sent: u64,
    /// Bytes the peer has acknowledged.
    acked: u64,
}

impl Outbound {
    /// An empty sender holding at most `limit` bytes of unacknowledged data.
    pub fn new(limit: usize) -> Outbound {
        Outbound { unacked: VecDeque::new(), held: 0, limit, sent: 0, acked: 0 }
    }

    /// Whether more may be sent now.
    pub fn has_room(&self) -> bool {
        self.held < self.limit
    }

    /// Bytes that may be sent now without passing the budget.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.held)
    }

    /// Records `data` as sent (the caller checks [`has_room`](Self::has_room) first);
    /// returns the offset after it.
    pub fn push(&mut self, data: Bytes) -> u64 {
        self.sent += data.len() as u64;
        self.held += data.len();
        if !data.is_empty() {
            self.unacked.push_back(data);
        }
        self.sent
    }

    /// Applies a cumulative ack of `upto` bytes; returns the bytes freed. An old (smaller)
    /// ack frees nothing.
    pub fn ack(&mut self, upto: u64) -> Result<usize, SessionError> {
        if upto > self.sent {
            return Err(SessionError::AckAhead { claimed: upto, sent: self.sent });
        }
        let mut freed = 0;
        while self.acked < upto {
            let front = self.unacked.front_mut().expect("unacked bytes are held");
            let take = (upto - self.acked).min(front.len() as u64) as usize;
            if take == front.len() {
                self.unacked.pop_front();
            } else {
                front.advance(take);
            }
            self.acked += take as u64;
            freed += take;
        }
        self.held -= freed;
        Ok(freed)
    }

    /// On resume: the peer received `peer_received` bytes (which acknowledges them). The
    /// caller then sends again from there ([`chunks_from`](Self::chunks_from)).
    pub fn resume(&mut self, peer_received: u64) -> Result<(), SessionError> {
        if peer_received < self.acked {
            return Err(SessionError::ResumeBehind { from: peer_received, acked: self.acked });
        }
        self.ack(peer_received).map(drop)
    }

    /// The held bytes from stream offset `from` (at least the acked offset) to the end,
    /// as slices in order.
    pub fn chunks_from(&self, from: u64) -> impl Iterator<Item = &[u8]> {
        let mut skip = from.saturating_sub(self.acked);
        self.unacked.iter().filter_map(move |c| {
            if skip >= c.len() as u64 {
                skip -= c.len() as u64;
                None
            } else {
                let s = &c[skip as usize..];
                skip = 0;
                Some(s)
            }
        })
    }

    /// Bytes held for replay.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes the peer acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Drops spare memory (the connection is going idle).
    pub fn shrink(&mut self) {
        if self.unacked.is_empty() {
            self.unacked = VecDeque::new();
        }
    }
}

/// Bytes of an ack frame: the header and a u64 count.
pub const ACK_FRAME_LEN: usize = HEADER_LEN + 8;

/// The ack frame saying `received` bytes of the peer's stream arrived.
pub fn ack_frame(received: u64) -> [u8; ACK_FRAME_LEN] {
    let mut f = [0u8; ACK_FRAME_LEN];
    f[0] = MAGIC;
    f[1] = VERSION;
    f[2] = Kind::SessionAck.code();
    f[12..16].copy_from_slice(&8u32.to_le_bytes());
    f[16..].copy_from_slice(&received.to_le_bytes());
    f
}

/// Follows a frame stream a piece at a time: knows whether it stands between frames and
/// picks out the counts of ack frames. Malformed headers are the frame decoder's business;
/// the walker only needs each header's length field to keep its place.
#[derive(Debug, Default, Clone)]
pub struct FrameWalker {
    /// The current frame's header (and an ack's body) as far as seen.
    head: [u8; ACK_FRAME_LEN],
    /// Bytes of `head` filled.
    have: u8,
    /// Body bytes of the current frame still to pass.
    body_left: u32,
}

impl FrameWalker {
    /// Whether the stream so far ends exactly between two frames.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.body_left == 0
    }

    /// Passes over `bytes`, calling `on_ack` with the count of every ack frame completed.
    pub fn walk(&mut self, mut bytes: &[u8], mut on_ack: impl FnMut(u64)) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = (self.body_left as usize).min(bytes.len());
                self.body_left -= n as u32;
                bytes = &bytes[n..];
                continue;
            }
            let have = self.have as usize;
            let want = if have >= HEADER_LEN { ACK_FRAME_LEN } else { HEADER_LEN };
            let n = (want - have).min(bytes.len());
            self.head[have..have + n].copy_from_slice(&bytes[..n]);
            self.have += n as u8;
            bytes = &bytes[n..];
            if self.have as usize == HEADER_LEN {
                let len = u32::from_le_bytes(self.head[12..16].try_into().expect("4 bytes"));
                if !(self.head[2] == Kind::SessionAck.code() && len == 8) {
                    self.have = 0;
                    self.body_left = len;
                }
            } else if self.have as usize == ACK_FRAME_LEN {
                self.have = 0;
                on_ack(u64::from_le_bytes(self.head[16..].try_into().expect("8 bytes")));
            }
        }
    }
}

/// The first bytes of a session hello.
pub const HELLO_MAGIC: [u8; 3] = *b"zss";
/// Version of the session protocol this build speaks.
pub const SESSION_VERSION: u8 = 1;
/// Bytes of a session id.
pub const ID_LEN: usize = 16;
/// Bytes of a session secret and of a resume proof.
pub const SECRET_LEN: usize = 32;

/// What a client says first on a connection that carries a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Start a new session.
    New,
    /// Resume a session.
    Resume {
        /// The session.
        id: [u8; ID_LEN],
        /// Bytes of the server's stream the client received.
        received: u64,
        /// Proof of ownership: a MAC keyed by the session secret over
        /// [`proof_message`] for this connection.
        proof: [u8; SECRET_LEN],
    },
}

const HELLO_NEW: u8 = 0;
const HELLO_RESUME: u8 = 1;
const HELLO_RESUME_LEN: usize = 5 + ID_LEN + 8 + SECRET_LEN;

impl Hello {
    /// Appends the hello's bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&HELLO_MAGIC);
        out.put_u8(SESSION_VERSION);
        match self {
            Hello::New => out.put_u8(HELLO_NEW),
            Hello::Resume { id, received, proof } => {
                out.put_u8(HELLO_RESUME);
                out.put_slice(id);
                out.put_u64_le(*received);
                out.put_slice(proof);
            }
        }
    }

    /// Parses a hello at the front of `buf`: `Ok(None)` until it is whole, else the hello
    /// and the bytes it took.
    pub fn parse(buf: &[u8]) -> Result<Option<(Hello, usize)>, SessionError> {
        let bad = |why| SessionError::Malformed { what: "hello", why };
        let n = buf.len().min(3);
        if buf[..n] != HELLO_MAGIC[..n] {
            return Err(bad("does not start with `zss`"));
        }
        if buf.len() < 5 {
            return Ok(None);
        }
        if buf[3] != SESSION_VERSION {
            return Err(SessionError::Version(buf[3]));
        }
        match buf[4] {
            HELLO_NEW => Ok(Some((Hello::New, 5))),
            HELLO_RESUME if buf.len() < HELLO_RESUME_LEN => Ok(None),
            HELLO_RESUME => {
                let mut b = &buf[5..HELLO_RESUME_LEN];
                let mut id = [0; ID_LEN];
                b.copy_to_slice(&mut id);
                let received = b.get_u64_le();
                let mut proof = [0; SECRET_LEN];
                b.copy_to_slice(&mut proof);
                Ok(Some((Hello::Resume { id, received, proof }, HELLO_RESUME_LEN)))
            }
            _ => Err(bad("unknown hello kind")),
        }
    }
}

/// What a resume proof's MAC covers: the session, the count the client claims, and the
/// new connection's channel binding (so a proof seen once is worth nothing elsewhere).
pub fn proof_message(id: &[u8; ID_LEN], received: u64, binding: &[u8; 32]) -> [u8; 9 + ID_LEN + 8 + 32] {
    let mut m = [0u8; 9 + ID_LEN + 8 + 32];
    m[..9].copy_from_slice(b"zs-resume");
    m[9..9 + ID_LEN].copy_from_slice(id);
    m[9 + ID_LEN..17 + ID_LEN].copy_from_slice(&received.to_le_bytes());
    m[17 + ID_LEN..].copy_from_slice(binding);
    m
}

wire_enum! {
    /// Why a server refuses a session.
    pub enum Refusal: u8 {
        /// No such session: it expired, ended, or the server restarted.
        Unknown = 1 => "unknown session",
        /// The proof does not match the session's secret and this connection.
        BadProof = 2 => "bad proof",
        /// The server does not keep sessions.
        Disabled = 3 => "sessions disabled",
        /// Anything else.
        Other = 255 => "other",
    }
}

/// The server's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A new session.
    Accepted {
        /// Its id.
        id: [u8; ID_LEN],
        /// The secret a resume proves knowledge of (sent over the encrypted channel).
        secret: [u8; SECRET_LEN],
        /// How long the server keeps the session after its link drops, in milliseconds.
        keep_ms: u32,
    },
    /// The session resumed.
    Resumed {
        /// Bytes of the client's stream the server received.
        received: u64,
    },
    /// No session, and why.
    Refused {
        /// The reason.
        code: Refusal,
        /// A message for people.
        message: String,
    },
}

const ANSWER_ACCEPTED: u8 = 0;
const ANSWER_RESUMED: u8 = 1;
const ANSWER_REFUSED: u8 = 2;
/// Longest refusal message.
const MAX_MESSAGE: usize = 1024;

impl Answer {
    /// Appends the answer's bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Answer::Accepted { id, secret, keep_ms } => {
                out.put_u8(ANSWER_ACCEPTED);
                out.put_slice(id);
                out.put_slice(secret);
                out.put_u32_le(*keep_ms);
            }
            Answer::Resumed { received } => {
                out.put_u8(ANSWER_RESUMED);
                out.put_u64_le(*received);
            }
            Answer::Refused { code, message } => {
                let m = truncated(message).as_bytes();
                out.put_u8(ANSWER_REFUSED);
                out.put_u8(code.code());
                out.put_u16_le(m.len() as u16);
                out.put_slice(m);
            }
        }
    }

    /// Parses an answer at the front of `buf`: `Ok(None)` until it is whole, else the
    /// answer and the bytes it took.
    pub fn parse(buf: &[u8]) -> Result<Option<(Answer, usize)>, SessionError> {
        let Some(&kind) = buf.first() else { return Ok(None) };
        let mut b = &buf[1..];
        match kind {
            ANSWER_ACCEPTED if b.len() < ID_LEN + SECRET_LEN + 4 => Ok(None),
            ANSWER_ACCEPTED => {
                let mut id = [0; ID_LEN];
                b.copy_to_slice(&mut id);
                let mut secret = [0; SECRET_LEN];
                b.copy_to_slice(&mut secret);
                let keep_ms = b.get_u32_le();
                Ok(Some((Answer::Accepted { id, secret, keep_ms }, 1 + ID_LEN + SECRET_LEN + 4)))
            }
            ANSWER_RESUMED if b.len() < 8 => Ok(None),
            ANSWER_RESUMED => Ok(Some((Answer::Resumed { received: b.get_u64_le() }, 9))),
            ANSWER_REFUSED if b.len() < 3 => Ok(None),
            ANSWER_REFUSED => {
                let code = Refusal::from_code(b.get_u8()).unwrap_or(Refusal::Other);
                let len = b.get_u16_le() as usize;
                if len > MAX_MESSAGE {
                    return Err(SessionError::Malformed { what: "answer", why: "message too long" });
                }
                if b.len() < len {
                    return Ok(None);
                }
                let message = truncated(&String::from_utf8_lossy(&b[..len])).to_owned();
                Ok(Some((Answer::Refused { code, message }, 4 + len)))
            }
            _ => Err(SessionError::Malformed { what: "answer", why: "unknown answer kind" }),
        }
    }
}

/// `s` cut to at most [`MAX_MESSAGE`] bytes, at a character boundary.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(MAX_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_acks_and_replays_bytes() {
        let mut out = Outbound::new(10);
        assert_eq!(out.push(Bytes::from_static(b"aaaa")), 4);
        assert_eq!(out.push(Bytes::from_static(b"bbbbbbb")), 11);
        assert!(!out.has_room(), "11 of 10 bytes held");
        assert_eq!(out.ack(6), Ok(6), "an ack may end inside a write");
        assert_eq!(out.ack(2), Ok(0), "an old ack frees nothing");
        assert_eq!(out.ack(12), Err(SessionError::AckAhead { claimed: 12, sent: 11 }));
        assert!(out.has_room());
        assert_eq!(out.chunks_from(6).collect::<Vec<_>>(), vec![b"bbbbb".as_slice()]);
        assert_eq!(out.chunks_from(9).collect::<Vec<_>>(), vec![b"bb".as_slice()]);
        assert_eq!(out.resume(5), Err(SessionError::ResumeBehind { from: 5, acked: 6 }));
        out.resume(8).unwrap();
        assert_eq!(out.held(), 3);
        assert_eq!(out.chunks_from(8).collect::<Vec<_>>(), vec![b"bbb".as_slice()]);
    }

    #[test]
    fn the_walker_finds_boundaries_and_acks_across_pieces() {
        let mut stream = Vec::new();
        let mut call = [0u8; HEADER_LEN + 5];
        call[0] = MAGIC;
        call[2] = Kind::Call as u8;
        call[12] = 5;
        stream.extend_from_slice(&call);
        stream.extend_from_slice(&ack_frame(77));
        stream.extend_from_slice(&call);
        stream.extend_from_slice(&ack_frame(1 << 40));
        for piece in [1, 3, 7, 16, 24, 1000] {
            let mut w = FrameWalker::default();
            let mut acks = Vec::new();
            let mut boundaries = Vec::new();
            let mut at = 0;
            for c in stream.chunks(piece) {
                w.walk(c, |a| acks.push(a));
                at += c.len();
                if w.at_boundary() {
                    boundaries.push(at);
                }
            }
            assert_eq!(acks, vec![77, 1 << 40], "pieces of {piece}");
            let all = [21, 45, 66, 90];
            assert!(boundaries.iter().all(|b| all.contains(b)), "pieces of {piece}: {boundaries:?}");
            assert_eq!(boundaries.last(), Some(&90));
        }
    }

    #[test]
    fn hellos_and_answers_round_trip_and_bad_ones_are_refused() {
        let hellos = [Hello::New, Hello::Resume { id: [7; ID_LEN], received: 1 << 33, proof: [9; 32] }];
        for h in hellos {
            let mut b = BytesMut::new();
            h.encode(&mut b);
            for cut in 0..b.len() {
                assert_eq!(Hello::parse(&b[..cut]), Ok(None), "{h:?} cut at {cut}");
            }
            b.put_slice(b"extra");
            let (back, used) = Hello::parse(&b).unwrap().unwrap();
            assert_eq!((back, used), (h, b.len() - 5));
        }
        assert!(matches!(Hello::parse(b"ZS\x01"), Err(SessionError::Malformed { .. })));
        assert_eq!(Hello::parse(b"zss\x02\x00"), Err(SessionError::Version(2)));
        assert!(matches!(Hello::parse(b"zss\x01\x09"), Err(SessionError::Malformed { .. })));

        let answers = [
            Answer::Accepted { id: [1; ID_LEN], secret: [2; 32], keep_ms: 300_000 },
            Answer::Resumed { received: 12345 },
            Answer::Refused { code: Refusal::BadProof, message: "no".into() },
        ];
        for a in answers {
            let mut b = BytesMut::new();
            a.encode(&mut b);
            for cut in 0..b.len() {
                assert_eq!(Answer::parse(&b[..cut]), Ok(None), "{a:?} cut at {cut}");
            }
            assert_eq!(Answer::parse(&b), Ok(Some((a, b.len()))));
        }
        assert!(Answer::parse(&[9]).is_err());
        assert!(Answer::parse(&[2, 1, 0xff, 0xff]).is_err(), "an oversize message is refused");
    }

    /// One step of a randomly driven link.
    #[derive(Debug, Clone)]
    enum Step {
        /// The application writes this many bytes.
        Send(u8),
        /// The link carries this many bytes to the receiver.
        Carry(u8),
        /// The receiver acks what it has (the ack reaches the sender).
        Ack,
        /// The receiver acks, but the ack is lost with the link.
        AckLost,
        /// The link drops: bytes in flight are lost; then resume.
        Drop,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1u8..40).prop_map(Step::Send),
            3 => (0u8..60).prop_map(Step::Carry),
            1 => Just(Step::Ack),
            1 => Just(Step::AckLost),
            1 => Just(Step::Drop),
        ]
    }

    proptest! {
        /// Against a model (the bytes the application wrote): whatever the link loses, the
        /// receiver gets every byte exactly once and in order, the sender never holds more
        /// than its budget plus one write, and holds exactly the bytes not yet acknowledged.
        #[test]
        fn exactly_once_in_order_within_budget(steps in proptest::collection::vec(step(), 1..300)) {
            let limit = 100;
            let mut out = Outbound::new(limit);
            let mut written: Vec<u8> = Vec::new();
            let mut waiting: VecDeque<Bytes> = VecDeque::new(); // written, no room yet
            let mut in_flight: VecDeque<u8> = VecDeque::new();
            let mut wire = 0u64; // offset the link has taken up to
            let mut received: Vec<u8> = Vec::new();
            let mut next = 0u8;
            for s in steps {
                match s {
                    Step::Send(len) => {
                        next = next.wrapping_add(1);
                        let w = Bytes::from(vec![next; len as usize]);
                        written.extend_from_slice(&w);
                        waiting.push_back(w);
                    }
                    Step::Carry(n) => {
                        for _ in 0..n {
                            let Some(b) = in_flight.pop_front() else { break };
                            received.push(b);
                        }
                    }
                    Step::Ack => {
                        out.ack(received.len() as u64).unwrap();
                    }
                    Step::AckLost => {}
                    Step::Drop => {
                        in_flight.clear();
                        out.resume(received.len() as u64).unwrap();
                        wire = received.len() as u64;
                    }
                }
                while let Some(w) = waiting.front() {
                    if !out.has_room() {
                        break;
                    }
                    let len = w.len();
                    out.push(waiting.pop_front().unwrap());
                    prop_assert!(out.held() < limit + len, "held {}", out.held());
                }
                for c in out.chunks_from(wire) {
                    in_flight.extend(c);
                }
                wire = out.sent();
                prop_assert_eq!(out.held() as u64, out.sent() - out.acked());
                prop_assert_eq!(&received[..], &written[..received.len()]);
            }
            // Finally the link works until everything is through.
            loop {
                received.extend(in_flight.drain(..));
                out.ack(received.len() as u64).unwrap();
                while let Some(w) = waiting.pop_front() {
                    out.push(w);
                }
                for c in out.chunks_from(received.len() as u64) {
                    in_flight.extend(c);
                }
                if in_flight.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(received, written);
        }
    }
}
