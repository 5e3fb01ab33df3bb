//! Frames of the multiplexer (kinds 0x30-0x37): virtual channels over one connection, each
//! with its own credit window. The frame header's channel field names the channel; channel 0
//! is the connection itself and is never opened or closed by these frames.
//!
//! Ids: the end that made the physical connection opens odd channels, the other end even
//! ones, so both can open at once without a clash.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{Flags, FrameWriter, Header, Kind};
use crate::wire_enum;
use crate::WireError;

/// Longest service name.
pub const MAX_NAME: usize = 255;
/// Longest reason text in a refusal, reset or go-away.
pub const MAX_REASON: usize = 1024;

wire_enum! {
    /// Why a channel was refused or reset, or the link is going away.
    pub enum MuxCode: u8 {
        /// Nothing listens on that service name.
        NoListener = 1 => "no listener",
        /// The listener's backlog of opens not yet accepted is full.
        BacklogFull = 2 => "backlog full",
        /// The application refused or dropped the channel.
        Refused = 3 => "refused",
        /// The other end sent more than its credit allowed.
        FlowControl = 4 => "flow control",
        /// The channel broke a rule of the protocol (data after close, say).
        Protocol = 5 => "protocol error",
        /// The physical link is closing; no new channels.
        GoingAway = 6 => "going away",
        /// Too many channels are open on this link.
        TooManyChannels = 7 => "too many channels",
        /// The application reset or dropped the channel.
        Cancelled = 8 => "cancelled",
        /// Anything else (and codes this build does not know).
        Other = 255 => "other",
    }
}

wire_enum! {
    /// What a channel carries once open.
    pub enum ChannelKind: u8 {
        /// zserver frames: the channel is a full peer (commands, push, bulk).
        Peer = 0 => "peer",
        /// Raw bytes.
        Stream = 1 => "stream",
    }
}

/// A decoded multiplexer frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxFrame {
    /// Opens `channel` to the service `name` (and `port`); the opener can receive `window`
    /// bytes before it grants more. `channel u32 | kind u8 | port u32 | window u32 | name_len u8 | name`.
    Open {
        /// The new channel's id.
        channel: u32,
        /// What it carries.
        kind: ChannelKind,
        /// Service port (0 if none).
        port: u32,
        /// The opener's receive window.
        window: u32,
        /// Service name, 1 to 255 bytes of UTF-8.
        name: String,
    },
    /// The channel is accepted; the acceptor can receive `window` bytes. Body `window u32`.
    Accept {
        /// The channel.
        channel: u32,
        /// The acceptor's receive window.
        window: u32,
    },
    /// The channel is refused. Body `code u8 | reason`.
    Refuse {
        /// The channel.
        channel: u32,
        /// Why.
        code: MuxCode,
        /// Why, in words.
        reason: String,
    },
    /// Bytes of the channel (body = the bytes).
    Data {
        /// The channel.
        channel: u32,
        /// The bytes.
        data: Bytes,
    },
    /// The receiver can take `bytes` more. Body `bytes u32`.
    Credit {
        /// The channel.
        channel: u32,
        /// Bytes granted.
        bytes: u32,
    },
    /// The sender will send nothing more on the channel (it may still receive). No body.
    Close {
        /// The channel.
        channel: u32,
    },
    /// The channel is dropped at once in both directions. Body `code u8 | reason`.
    Reset {
        /// The channel.
        channel: u32,
        /// Why.
        code: MuxCode,
        /// Why, in words.
        reason: String,
    },
    /// No new channels on this link; channels up to `last` (opened by the receiver of this
    /// frame) carry on. Sent on channel 0. Body `last u32 | code u8 | reason`.
    GoAway {
        /// The highest channel id the sender has seen opened.
        last: u32,
        /// Why.
        code: MuxCode,
        /// Why, in words.
        reason: String,
    },
}

fn bad(what: &'static str, why: &'static str) -> WireError {
    WireError::Malformed { what, why }
}

fn reason_text(b: &[u8], what: &'static str) -> Result<String, WireError> {
    if b.len() > MAX_REASON {
        return Err(bad(what, "reason longer than 1024 bytes"));
    }
    Ok(std::str::from_utf8(b).map_err(|_| WireError::InvalidUtf8(what))?.to_owned())
}

/// The longest prefix of `s` that fits `max` bytes without cutting a character.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl MuxFrame {
    /// Whether a frame kind belongs to the multiplexer.
    pub fn is_mux(kind: Kind) -> bool {
        kind.code() & 0xF0 == 0x30
    }

    /// The channel the frame is about (0 for `GoAway`).
    pub fn channel(&self) -> u32 {
        match self {
            MuxFrame::Open { channel, .. }
            | MuxFrame::Accept { channel, .. }
            | MuxFrame::Refuse { channel, .. }
            | MuxFrame::Data { channel, .. }
            | MuxFrame::Credit { channel, .. }
            | MuxFrame::Close { channel }
            | MuxFrame::Reset { channel, .. } => *channel,
            MuxFrame::GoAway { .. } => 0,
        }
    }

    /// Appends the whole frame (header and body) to `out`. Reasons longer than
    /// [`MAX_REASON`] are cut short; a name that is empty or too long is an error.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), WireError> {
        let (kind, channel) = match self {
            MuxFrame::Open { channel, .. } => (Kind::MuxOpen, *channel),
            MuxFrame::Accept { channel, .. } => (Kind::MuxAccept, *channel),
            MuxFrame::Refuse { channel, .. } => (Kind::MuxRefuse, *channel),
            MuxFrame::Data { channel, .. } => (Kind::MuxData, *channel),
            MuxFrame::Credit { channel, .. } => (Kind::MuxCredit, *channel),
            MuxFrame::Close { channel } => (Kind::MuxClose, *channel),
            MuxFrame::Reset { channel, .. } => (Kind::MuxReset, *channel),
            MuxFrame::GoAway { .. } => (Kind::MuxGoAway, 0),
        };
        if channel == 0 && kind != Kind::MuxGoAway {
            return Err(bad("mux frame", "channel 0 is the connection itself"));
        }
        if let MuxFrame::Open { name, .. } = self {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(bad("mux open", "service name must be 1 to 255 bytes"));
            }
        }
        let mut w = FrameWriter::begin(out, kind, Flags::NONE, channel, 0);
        let b = w.body();
        match self {
            MuxFrame::Open { kind, port, window, name, .. } => {
                b.put_u8(kind.code());
                b.put_u32_le(*port);
                b.put_u32_le(*window);
                b.put_u8(name.len() as u8);
                b.put_slice(name.as_bytes());
            }
            MuxFrame::Accept { window, .. } => b.put_u32_le(*window),
            MuxFrame::Data { data, .. } => b.put_slice(data),
            MuxFrame::Credit { bytes, .. } => b.put_u32_le(*bytes),
            MuxFrame::Close { .. } => {}
            MuxFrame::Refuse { code, reason, .. } | MuxFrame::Reset { code, reason, .. } => {
                b.put_u8(code.code());
                b.put_slice(clip(reason, MAX_REASON).as_bytes());
            }
            MuxFrame::GoAway { last, code, reason } => {
                b.put_u32_le(*last);
                b.put_u8(code.code());
                b.put_slice(clip(reason, MAX_REASON).as_bytes());
            }
        }
        w.finish(u32::MAX)
    }

    /// Decodes a multiplexer frame from its header and body.
    pub fn decode(h: &Header, body: Bytes) -> Result<MuxFrame, WireError> {
        let channel = h.channel;
        if h.kind == Kind::MuxGoAway {
            if channel != 0 {
                return Err(bad("mux goaway", "must be sent on channel 0"));
            }
        } else if channel == 0 {
            return Err(bad("mux frame", "channel 0 is the connection itself"));
        }
        let fixed = |n: usize, what| {
            if body.len() < n {
                Err(bad(what, "shorter than its fixed fields"))
            } else {
                Ok(())
            }
        };
        let exact =
            |n: usize, what| if body.len() != n { Err(bad(what, "wrong body length")) } else { Ok(()) };
        let mut b = &body[..];
        Ok(match h.kind {
            Kind::MuxOpen => {
                fixed(10, "mux open")?;
                let kind = ChannelKind::from_code(b.get_u8())
                    .ok_or_else(|| bad("mux open", "unknown channel kind"))?;
                let (port, window) = (b.get_u32_le(), b.get_u32_le());
                let n = b.get_u8() as usize;
                if n == 0 || b.len() != n {
                    return Err(bad("mux open", "name length does not match the body"));
                }
                let name =
                    std::str::from_utf8(b).map_err(|_| WireError::InvalidUtf8("service name"))?.to_owned();
                MuxFrame::Open { channel, kind, port, window, name }
            }
            Kind::MuxAccept => {
                exact(4, "mux accept")?;
                MuxFrame::Accept { channel, window: b.get_u32_le() }
            }
            Kind::MuxRefuse | Kind::MuxReset => {
                fixed(1, "mux refuse or reset")?;
                let code = MuxCode::from_code(b.get_u8()).unwrap_or(MuxCode::Other);
                let reason = reason_text(b, "mux reason")?;
                if h.kind == Kind::MuxRefuse {
                    MuxFrame::Refuse { channel, code, reason }
                } else {
                    MuxFrame::Reset { channel, code, reason }
                }
            }
            Kind::MuxData => MuxFrame::Data { channel, data: body },
            Kind::MuxCredit => {
                exact(4, "mux credit")?;
                let bytes = b.get_u32_le();
                if bytes == 0 {
                    return Err(bad("mux credit", "a grant of zero bytes"));
                }
                MuxFrame::Credit { channel, bytes }
            }
            Kind::MuxClose => {
                exact(0, "mux close")?;
                MuxFrame::Close { channel }
            }
            Kind::MuxGoAway => {
                fixed(5, "mux goaway")?;
                let last = b.get_u32_le();
                let code = MuxCode::from_code(b.get_u8()).unwrap_or(MuxCode::Other);
                MuxFrame::GoAway { last, code, reason: reason_text(b, "mux reason")? }
            }
            _ => return Err(bad("mux frame", "not a multiplexer kind")),
        })
    }
}

/// Appends a data frame for `channel` whose body is `parts`, in order (no intermediate value).
pub fn encode_data<'a>(out: &mut BytesMut, channel: u32, parts: impl IntoIterator<Item = &'a [u8]>) {
    let mut w = FrameWriter::begin(out, Kind::MuxData, Flags::NONE, channel, 0);
    for part in parts {
        w.body().put_slice(part);
    }
    w.finish(u32::MAX).expect("no limit");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameDecoder, Limits};
    use proptest::prelude::*;

    fn roundtrip(f: &MuxFrame) -> MuxFrame {
        let mut out = BytesMut::new();
        f.encode(&mut out).unwrap();
        let mut dec = FrameDecoder::new(Limits::default());
        let frame = dec.decode(&mut out).unwrap().unwrap();
        assert!(out.is_empty());
        MuxFrame::decode(&frame.header, frame.body).unwrap()
    }

    fn code() -> impl Strategy<Value = MuxCode> {
        prop_oneof![
            Just(MuxCode::NoListener),
            Just(MuxCode::BacklogFull),
            Just(MuxCode::Refused),
            Just(MuxCode::FlowControl),
            Just(MuxCode::Protocol),
            Just(MuxCode::GoingAway),
            Just(MuxCode::TooManyChannels),
            Just(MuxCode::Cancelled),
            Just(MuxCode::Other),
        ]
    }

    fn frame() -> impl Strategy<Value = MuxFrame> {
        let ch = 1..=u32::MAX;
        prop_oneof![
            (ch.clone(), any::<bool>(), any::<u32>(), any::<u32>(), "[a-z/.é]{1,60}").prop_map(
                |(channel, peer, port, window, name)| MuxFrame::Open {
                    channel,
                    kind: if peer { ChannelKind::Peer } else { ChannelKind::Stream },
                    port,
                    window,
                    name
                }
            ),
            (ch.clone(), any::<u32>()).prop_map(|(channel, window)| MuxFrame::Accept { channel, window }),
            (ch.clone(), code(), ".{0,40}").prop_map(|(channel, code, reason)| MuxFrame::Refuse {
                channel,
                code,
                reason
            }),
            (ch.clone(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(channel, d)| MuxFrame::Data { channel, data: Bytes::from(d) }),
            (ch.clone(), 1..=u32::MAX).prop_map(|(channel, bytes)| MuxFrame::Credit { channel, bytes }),
            ch.clone().prop_map(|channel| MuxFrame::Close { channel }),
            (ch, code(), ".{0,40}").prop_map(|(channel, code, reason)| MuxFrame::Reset {
                channel,
                code,
                reason
            }),
            (any::<u32>(), code(), ".{0,40}").prop_map(|(last, code, reason)| MuxFrame::GoAway {
                last,
                code,
                reason
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_roundtrips(f in frame()) {
            prop_assert_eq!(roundtrip(&f), f);
        }
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        let h = |kind, channel, len| Header { kind, flags: Flags::NONE, channel, request: 0, len };
        let cases: Vec<(Header, &[u8], &str)> = vec![
            (h(Kind::MuxOpen, 0, 10), b"\0\0\0\0\0\0\0\0\0\0", "channel 0"),
            (h(Kind::MuxOpen, 1, 3), b"\0\0\0", "shorter"),
            (h(Kind::MuxOpen, 1, 11), b"\x07\0\0\0\0\0\0\0\0\x01a", "unknown channel kind"),
            (h(Kind::MuxOpen, 1, 10), b"\0\0\0\0\0\0\0\0\0\0", "name length"),
            (h(Kind::MuxOpen, 1, 11), b"\0\0\0\0\0\0\0\0\0\x02a", "name length"),
            (h(Kind::MuxOpen, 1, 11), b"\0\0\0\0\0\0\0\0\0\x01\xff", "UTF-8"),
            (h(Kind::MuxAccept, 1, 3), b"\0\0\0", "wrong body length"),
            (h(Kind::MuxCredit, 1, 4), b"\0\0\0\0", "zero bytes"),
            (h(Kind::MuxClose, 1, 1), b"x", "wrong body length"),
            (h(Kind::MuxReset, 1, 0), b"", "shorter"),
            (h(Kind::MuxGoAway, 3, 5), b"\0\0\0\0\x01", "channel 0"),
            (h(Kind::Call, 1, 0), b"", "not a multiplexer kind"),
        ];
        for (header, body, want) in cases {
            let e = MuxFrame::decode(&header, Bytes::copy_from_slice(body)).unwrap_err().to_string();
            assert!(e.contains(want), "{header:?} {body:?}: {e}");
        }
        let long = vec![b'a'; MAX_REASON + 1];
        let mut body = vec![1u8];
        body.extend_from_slice(&long);
        let e = MuxFrame::decode(&h(Kind::MuxRefuse, 1, body.len() as u32), Bytes::from(body)).unwrap_err();
        assert!(e.to_string().contains("1024"), "{e}");
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary_and_bad_names_refused() {
        let reason = "é".repeat(MAX_REASON);
        let MuxFrame::Reset { reason: got, .. } =
            roundtrip(&MuxFrame::Reset { channel: 5, code: MuxCode::Other, reason })
        else {
            panic!("not a reset")
        };
        assert!(got.len() <= MAX_REASON && got.chars().all(|c| c == 'é'));
        let mut out = BytesMut::new();
        let open = |name: &str| MuxFrame::Open {
            channel: 1,
            kind: ChannelKind::Peer,
            port: 0,
            window: 1,
            name: name.to_owned(),
        };
        assert!(open("").encode(&mut out).is_err());
        assert!(open(&"n".repeat(256)).encode(&mut out).is_err());
        assert!(MuxFrame::Close { channel: 0 }.encode(&mut out).is_err());
        assert!(out.is_empty());
    }
}
