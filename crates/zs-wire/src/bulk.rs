//! Bodies of the bulk-transfer frames (kinds 0x10-0x16): big streams, complete buffers and
//! batch streams all travel as a stream: Open, Data..., End, answered by Credit and Result.

use bytes::{Buf, BufMut, BytesMut};

use crate::wire_enum;
use crate::WireError;

/// Bytes a sender may send on a new stream before the receiver grants more (protocol constant).
pub const INITIAL_WINDOW: u32 = 256 << 10;
/// `total` of a stream whose length is not known in advance.
pub const UNKNOWN_LEN: u64 = u64::MAX;
/// `key` of a `BatchClear` that clears every parked stream.
pub const ALL_BATCHES: u64 = u64::MAX;

wire_enum! {
    /// What the receiver does with a stream.
    pub enum StreamMode: u8 {
        /// A big stream: the handler reads it as it arrives.
        Stream = 0 => "big stream",
        /// A complete buffer: the handler gets the whole message once it is in.
        Buffer = 1 => "complete buffer",
        /// A batch stream: parked at the receiver under `key` until a command consumes it.
        Batch = 2 => "batch stream",
    }
}

wire_enum! {
    /// How a stream's bytes are checked end to end (the sender's choice, declared when the
    /// stream opens; a receiver may require at least a given one).
    pub enum StreamCheck: u8 {
        /// XXH3-128 (rsync's default transfer checksum): catches corruption and resume bugs
        /// at line rate. The default: every record of an encrypted channel is authenticated
        /// already.
        Xxh3 = 0 => "XXH3-128",
        /// BLAKE3: a cryptographic hash, also a content address (the file service's).
        Blake3 = 1 => "BLAKE3",
    }
}

// The enum is written by `wire_enum!`, which takes no `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for StreamCheck {
    fn default() -> Self {
        StreamCheck::Xxh3
    }
}

/// The body of a `StreamOpen` frame (the request id is the stream id).
///
/// `mode u8 | check u8 | total u64 | offset u64 | key u64 | name_len u8 | name`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOpen {
    /// What the receiver does with it.
    pub mode: StreamMode,
    /// How the sender's end checks the bytes.
    pub check: StreamCheck,
    /// Bytes that will be sent, or [`UNKNOWN_LEN`].
    pub total: u64,
    /// Where in the source the data starts (for resumed transfers).
    pub offset: u64,
    /// Batch key (batch mode), else 0.
    pub key: u64,
    /// Command name (empty for batch mode).
    pub name: String,
}

const OPEN_FIXED: usize = 1 + 1 + 8 + 8 + 8 + 1;

impl StreamOpen {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), WireError> {
        if self.name.len() > 255 || (self.name.is_empty() && self.mode != StreamMode::Batch) {
            return Err(WireError::Malformed { what: "stream open", why: "name must be 1 to 255 bytes" });
        }
        out.put_u8(self.mode.code());
        out.put_u8(self.check.code());
        out.put_u64_le(self.total);
        out.put_u64_le(self.offset);
        out.put_u64_le(self.key);
        out.put_u8(self.name.len() as u8);
        out.put_slice(self.name.as_bytes());
        Ok(())
    }

    /// Parses the body.
    pub fn parse(mut b: &[u8]) -> Result<StreamOpen, WireError> {
        let bad = |why| WireError::Malformed { what: "stream open", why };
        if b.len() < OPEN_FIXED {
            return Err(bad("shorter than its fixed fields"));
        }
        let mode = StreamMode::from_code(b.get_u8()).ok_or_else(|| bad("unknown mode"))?;
        let check = StreamCheck::from_code(b.get_u8()).ok_or_else(|| bad("unknown check"))?;
        let (total, offset, key) = (b.get_u64_le(), b.get_u64_le(), b.get_u64_le());
        let n = b.get_u8() as usize;
        if b.len() != n {
            return Err(bad("name length does not match the body"));
        }
        if n == 0 && mode != StreamMode::Batch {
            return Err(bad("empty command name"));
        }
        let name = std::str::from_utf8(b).map_err(|_| WireError::InvalidUtf8("stream name"))?.to_owned();
        Ok(StreamOpen { mode, check, total, offset, key, name })
    }
}

/// The body of a `StreamEnd` frame: `bytes u64 | hash [32]`, over the uncompressed data
/// sent in this transfer (from its offset): the BLAKE3, or the XXH3-128 (little-endian)
/// followed by 16 zero bytes, as the stream's [`StreamCheck`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// Uncompressed bytes sent.
    pub bytes: u64,
    /// The hash of those bytes.
    pub hash: [u8; 32],
}

impl StreamEnd {
    /// Appends the body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64_le(self.bytes);
        out.put_slice(&self.hash);
    }

    /// Parses the body.
    pub fn parse(mut b: &[u8]) -> Result<StreamEnd, WireError> {
        if b.len() != 40 {
            return Err(WireError::Malformed { what: "stream end", why: "must be 40 bytes" });
        }
        let bytes = b.get_u64_le();
        Ok(StreamEnd { bytes, hash: b.try_into().expect("32 bytes") })
    }
}

/// A stream end's hash field for an XXH3-128 digest: little-endian, then 16 zero bytes.
pub fn xxh3_end_hash(digest: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&digest.to_le_bytes());
    out
}

/// Parses a `StreamCredit` body: `grant u32`, at least 1.
pub fn parse_credit(b: &[u8]) -> Result<u32, WireError> {
    let arr: [u8; 4] =
        b.try_into().map_err(|_| WireError::Malformed { what: "stream credit", why: "must be 4 bytes" })?;
    match u32::from_le_bytes(arr) {
        0 => Err(WireError::Malformed { what: "stream credit", why: "grants nothing" }),
        n => Ok(n),
    }
}

/// Parses a `BatchClear` body: `key u64` ([`ALL_BATCHES`] for all).
pub fn parse_batch_clear(b: &[u8]) -> Result<u64, WireError> {
    let arr: [u8; 8] =
        b.try_into().map_err(|_| WireError::Malformed { what: "batch clear", why: "must be 8 bytes" })?;
    Ok(u64::from_le_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trip_and_errors() {
        for (mode, name) in
            [(StreamMode::Stream, "upload"), (StreamMode::Buffer, "b"), (StreamMode::Batch, "")]
        {
            let o = StreamOpen {
                mode,
                check: StreamCheck::Blake3,
                total: 12,
                offset: 3,
                key: 9,
                name: name.into(),
            };
            let mut out = BytesMut::new();
            o.encode(&mut out).unwrap();
            assert_eq!(StreamOpen::parse(&out).unwrap(), o);
        }
        let o = StreamOpen {
            mode: StreamMode::Stream,
            check: StreamCheck::Xxh3,
            total: 0,
            offset: 0,
            key: 0,
            name: String::new(),
        };
        assert!(o.encode(&mut BytesMut::new()).is_err());
        let mut out = BytesMut::new();
        let o = StreamOpen {
            mode: StreamMode::Stream,
            check: StreamCheck::Xxh3,
            total: 1,
            offset: 0,
            key: 0,
            name: "x".into(),
        };
        o.encode(&mut out).unwrap();
        let mut bad = out.clone();
        bad[0] = 7;
        assert!(StreamOpen::parse(&bad).is_err(), "unknown mode");
        let mut bad = out.clone();
        bad[1] = 9;
        assert_eq!(
            StreamOpen::parse(&bad),
            Err(WireError::Malformed { what: "stream open", why: "unknown check" })
        );
        assert!(StreamOpen::parse(&out[..out.len() - 1]).is_err(), "truncated name");
        let mut bad = out.clone();
        bad[OPEN_FIXED] = 0xff;
        assert_eq!(StreamOpen::parse(&bad), Err(WireError::InvalidUtf8("stream name")));
        assert!(StreamOpen::parse(&out[..5]).is_err());
    }

    #[test]
    fn end_credit_clear() {
        let e = StreamEnd { bytes: 5, hash: [7; 32] };
        let mut out = BytesMut::new();
        e.encode(&mut out);
        assert_eq!(StreamEnd::parse(&out).unwrap(), e);
        assert!(StreamEnd::parse(&out[..39]).is_err());
        assert_eq!(parse_credit(&9u32.to_le_bytes()), Ok(9));
        assert!(parse_credit(&0u32.to_le_bytes()).is_err());
        assert!(parse_credit(&[1, 2]).is_err());
        assert_eq!(parse_batch_clear(&ALL_BATCHES.to_le_bytes()), Ok(ALL_BATCHES));
        assert!(parse_batch_clear(&[0; 7]).is_err());
    }
}
