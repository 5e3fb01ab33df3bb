//! The 16-byte frame header and the codec that splits a byte stream into frames.
//!
//! ```text
//! 0      1        2     3      4            8            12           16
//! +------+--------+-----+------+------------+------------+------------+---------
//! | 0x5A | ver=1  | kind| flags| channel u32| request u32| length u32 | body ...
//! +------+--------+-----+------+------------+------------+------------+---------
//! ```
//! All integers little-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire_enum;
use crate::{Limits, WireError};

/// First byte of every frame.
pub const MAGIC: u8 = 0x5A;
/// Protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;

wire_enum! {
    /// What a frame carries; the body layout follows from it (see `docs/PROTOCOL.md`).
    pub enum Kind: u8 {
        /// A command call that expects a reply carrying the same request id.
        Call = 0x01 => "call",
        /// A one-way (direct) command; request id 0, no reply.
        Send = 0x02 => "send",
        /// A successful reply to a `Call`.
        Reply = 0x03 => "reply",
        /// An error reply to a `Call`: code and message.
        Error = 0x04 => "error",
        /// A keepalive probe; the peer answers `Pong` with the same request id.
        Ping = 0x05 => "ping",
        /// The answer to a `Ping`.
        Pong = 0x06 => "pong",
        /// The sender is closing the connection, with a reason code and message.
        GoAway = 0x07 => "goaway",
        /// Resumable sessions: the sender has received this many bytes of the session's
        /// stream (u64 LE body); see `session`.
        SessionAck = 0x08 => "session-ack",
        /// Opens a bulk stream (request id = stream id); see `bulk::StreamOpen`.
        StreamOpen = 0x10 => "stream-open",
        /// A chunk of a stream; may carry the COMPRESSED flag (zstd).
        StreamData = 0x11 => "stream-data",
        /// The stream's end: byte count and hash (the check its open declared).
        StreamEnd = 0x12 => "stream-end",
        /// The receiver grants the sender more bytes of window.
        StreamCredit = 0x13 => "stream-credit",
        /// The receiver's verdict on a stream: code 0 for success, else an error.
        StreamResult = 0x14 => "stream-result",
        /// The sender abandons a stream, with a reason.
        StreamCancel = 0x15 => "stream-cancel",
        /// The poster of batch streams asks the receiver to drop them.
        BatchClear = 0x16 => "batch-clear",
        /// Multiplexer: opens a virtual channel; see `mux::MuxFrame`.
        MuxOpen = 0x30 => "mux-open",
        /// Multiplexer: the channel is accepted.
        MuxAccept = 0x31 => "mux-accept",
        /// Multiplexer: the channel is refused.
        MuxRefuse = 0x32 => "mux-refuse",
        /// Multiplexer: bytes of a channel.
        MuxData = 0x33 => "mux-data",
        /// Multiplexer: the receiver grants more bytes of window.
        MuxCredit = 0x34 => "mux-credit",
        /// Multiplexer: the sender's side of the channel is finished.
        MuxClose = 0x35 => "mux-close",
        /// Multiplexer: the channel is dropped, with a reason.
        MuxReset = 0x36 => "mux-reset",
        /// Multiplexer: no new channels on this link.
        MuxGoAway = 0x37 => "mux-goaway",
    }
}

impl Kind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Result<Kind, WireError> {
        Kind::from_code(b).ok_or(WireError::UnknownKind(b))
    }

    /// Flag bits this kind may carry.
    fn allowed_flags(self) -> u8 {
        match self {
            Kind::Call | Kind::Send | Kind::Reply => Flags::DATAFRAME.0 | Flags::COMPRESSED.0,
            Kind::StreamData => Flags::COMPRESSED.0,
            _ => 0,
        }
    }
}

/// Frame flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// The payload is an encoded `DataFrame` (stream form); without it the payload is UTF-8 text.
    pub const DATAFRAME: Flags = Flags(0x01);
    /// The payload is compressed: lz4 (size-prefixed block) on rpc frames, zstd on stream data.
    pub const COMPRESSED: Flags = Flags(0x02);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub kind: Kind,
    /// Flag bits.
    pub flags: Flags,
    /// Virtual channel (0 = the connection itself; others are for the multiplexer).
    pub channel: u32,
    /// Request id that pairs a `Call` with its `Reply`/`Error`, or a `Ping` with its `Pong`.
    pub request: u32,
    /// Body length in bytes.
    pub len: u32,
}

impl Header {
    /// Writes the header into 16 bytes.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = self.kind.code();
        out[3] = self.flags.0;
        out[4..8].copy_from_slice(&self.channel.to_le_bytes());
        out[8..12].copy_from_slice(&self.request.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
    }

    /// Reads and validates a header against `limits`.
    pub fn decode(b: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, WireError> {
        if b[0] != MAGIC {
            return Err(WireError::BadMagic(b[0]));
        }
        if b[1] != VERSION {
            return Err(WireError::UnsupportedVersion(b[1]));
        }
        let kind = Kind::from_u8(b[2])?;
        let flags = b[3];
        if flags & !kind.allowed_flags() != 0 {
            return Err(WireError::InvalidFlags { kind: kind.name(), flags });
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let len = word(12);
        if len > limits.max_frame_len {
            return Err(WireError::FrameTooLarge { len: len.into(), max: limits.max_frame_len });
        }
        Ok(Header { kind, flags: Flags(flags), channel: word(4), request: word(8), len })
    }
}

/// One whole frame: header and body. The body shares the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The body, `header.len` bytes.
    pub body: Bytes,
}

/// Splits a byte stream into frames, enforcing [`Limits`].
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    limits: Limits,
    pending: Option<Header>,
}

impl FrameDecoder {
    /// A decoder that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder { limits, pending: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes needed before the next frame can complete (at least 1 while one is partial).
    pub fn wanted(&self, buffered: usize) -> usize {
        match self.pending {
            Some(h) => (h.len as usize).saturating_sub(buffered),
            None => HEADER_LEN.saturating_sub(buffered),
        }
    }

    /// The body length of the frame in progress (its header taken, its body not all in).
    pub fn pending_len(&self) -> Option<usize> {
        self.pending.map(|h| h.len as usize)
    }

    /// Takes the next whole frame off the front of `buf`, or `Ok(None)` if more bytes are
    /// needed. A header is validated as soon as its 16 bytes are in, so an oversize or
    /// malformed frame fails before its body is buffered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let header = match self.pending {
            Some(h) => h,
            None => {
                let Some(head) = buf.get(..HEADER_LEN) else { return Ok(None) };
                let head: &[u8; HEADER_LEN] = head.try_into().expect("slice of HEADER_LEN");
                let h = Header::decode(head, &self.limits)?;
                // The whole frame here (the usual case): one cut, and the header is
                // stepped over in the shared bytes, where that is a pointer's move.
                let whole = HEADER_LEN + h.len as usize;
                if buf.len() >= whole {
                    let mut body = buf.split_to(whole).freeze();
                    body.advance(HEADER_LEN);
                    return Ok(Some(Frame { header: h, body }));
                }
                buf.advance(HEADER_LEN);
                h
            }
        };
        if buf.len() < header.len as usize {
            self.pending = Some(header);
            return Ok(None);
        }
        self.pending = None;
        let body = buf.split_to(header.len as usize).freeze();
        Ok(Some(Frame { header, body }))
    }

    /// Whether a frame is partly received (a header without its whole body).
    pub fn is_mid_frame(&self) -> bool {
        self.pending.is_some()
    }
}

/// Appends frames to an output buffer in place: header first, body written straight
/// after it, length patched at the end. Many frames can share one buffer (one syscall).
#[derive(Debug)]
pub struct FrameWriter<'a> {
    out: &'a mut BytesMut,
    start: usize,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame at the end of `out`.
    pub fn begin(out: &'a mut BytesMut, kind: Kind, flags: Flags, channel: u32, request: u32) -> Self {
        let start = out.len();
        let mut head = [0u8; HEADER_LEN];
        Header { kind, flags, channel, request, len: 0 }.encode(&mut head);
        out.put_slice(&head);
        FrameWriter { out, start }
    }

    /// Offset of this frame's first header byte in the output buffer.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Sets more flag bits on the frame being written.
    pub fn add_flags(&mut self, flags: Flags) {
        self.out[self.start + 3] |= flags.0;
    }

    /// The buffer that receives the body.
    pub fn body(&mut self) -> &mut BytesMut {
        self.out
    }

    /// Patches the body length. If the body exceeds `max_frame_len` the frame is removed
    /// from the buffer again and an error returned.
    pub fn finish(self, max_frame_len: u32) -> Result<(), WireError> {
        let len = self.out.len() - self.start - HEADER_LEN;
        if len > max_frame_len as usize {
            self.out.truncate(self.start);
            return Err(WireError::FrameTooLarge { len: len as u64, max: max_frame_len });
        }
        self.out[self.start + 12..self.start + 16].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: Kind, flags: Flags, request: u32, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::begin(&mut out, kind, flags, 0, request);
        w.body().put_slice(body);
        w.finish(u32::MAX).unwrap();
        out
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let mut stream = one(Kind::Call, Flags::DATAFRAME, 7, b"hello");
        stream.extend_from_slice(&one(Kind::Pong, Flags::NONE, 9, b""));
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
            // The first frame's header is in and its body not yet: its length is known.
            let in_body = (HEADER_LEN - 1..HEADER_LEN + 4).contains(&i);
            assert_eq!(dec.pending_len(), in_body.then_some(5), "after byte {i}");
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].header.kind, Kind::Call);
        assert_eq!(frames[0].header.request, 7);
        assert_eq!(&frames[0].body[..], b"hello");
        assert_eq!(frames[1].header.kind, Kind::Pong);
        assert!(frames[1].body.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn header_errors() {
        let limits = Limits { max_frame_len: 10, ..Limits::default() };
        let mut dec = FrameDecoder::new(limits);
        let mut bad = one(Kind::Call, Flags::NONE, 1, b"x");
        bad[0] = 0xF0;
        assert_eq!(dec.decode(&mut bad), Err(WireError::BadMagic(0xF0)));
        let mut bad = one(Kind::Call, Flags::NONE, 1, b"x");
        bad[1] = 9;
        assert_eq!(dec.decode(&mut bad), Err(WireError::UnsupportedVersion(9)));
        let mut bad = one(Kind::Call, Flags::NONE, 1, b"x");
        bad[2] = 0x77;
        assert_eq!(dec.decode(&mut bad), Err(WireError::UnknownKind(0x77)));
        let mut bad = one(Kind::Ping, Flags::DATAFRAME, 1, b"");
        assert!(matches!(dec.decode(&mut bad), Err(WireError::InvalidFlags { .. })));
        let mut bad = one(Kind::Call, Flags(0x04), 1, b"");
        assert!(matches!(dec.decode(&mut bad), Err(WireError::InvalidFlags { .. })));
        let mut bad = one(Kind::StreamEnd, Flags::COMPRESSED, 1, b"");
        assert!(matches!(dec.decode(&mut bad), Err(WireError::InvalidFlags { .. })));
        // Oversize is refused on the header alone, before the body arrives.
        let mut big = one(Kind::Call, Flags::NONE, 1, &[0u8; 11]);
        big.truncate(HEADER_LEN);
        assert_eq!(dec.decode(&mut big), Err(WireError::FrameTooLarge { len: 11, max: 10 }));
    }

    #[test]
    fn writer_refuses_oversize_and_rolls_back() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let mut w = FrameWriter::begin(&mut out, Kind::Reply, Flags::NONE, 0, 1);
        w.body().put_slice(&[1u8; 20]);
        assert!(w.finish(10).is_err());
        assert_eq!(&out[..], b"keep");
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use crate::body::CallBody;

    /// The example in docs/PROTOCOL.md §8, byte for byte.
    #[test]
    fn protocol_doc_example() {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::begin(&mut out, Kind::Call, Flags::NONE, 0, 1);
        CallBody::put_name(w.body(), "echo").unwrap();
        w.body().put_slice(b"hi");
        w.finish(u32::MAX).unwrap();
        let doc = "5a 01 01 00 00 00 00 00 01 00 00 00 07 00 00 00 04 65 63 68 6f 68 69";
        let hex: Vec<String> = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.join(" "), doc);
    }
}
