//! ZServer4D frames (`zserver4d-core.md` §2.3-2.10). All integers little-endian.
//!
//! ```text
//! request : F0F0F0F0 | type u8 | size u32 | hash kind u8 | hash len u16 | hash | cipher u8 | payload | F1F1F1F1
//! result  : F0F0F0F0 | size i32 | hash kind u8 | hash len u16 | hash | cipher u8 | payload | F1F1F1F1
//! bigstream header: F0F0F0F0 | F5 | total i64 | cmd len u32 | cmd | F1F1F1F1, then chunks
//! chunk   : size i32 | compressed u8 | data (no head or tail)
//! signals : F0F0F0F0 | F6 (chunk taken) or F7 (stream done) | F1F1F1F1
//! complete buffer: F0F0F0F0 | 6F | size u32 | compressed size u32 (0: raw) | cmd len u32 | cmd | F1F1F1F1, then the body
//! ```
//! A result has no type byte and no request id: it answers the one request outstanding,
//! so a reader must know whether it expects one ([`decode_reply`]) or not ([`decode`]).

use bytes::Bytes;

use crate::dfe::{Dfe, Element};
use crate::hash::{self, HashKind};
use crate::CompatError;

/// First four bytes of every frame.
pub const HEAD: [u8; 4] = [0xF0; 4];
/// Last four bytes of every frame.
pub const TAIL: [u8; 4] = [0xF1; 4];
/// Type byte of a BigStream header.
pub const BIG_STREAM: u8 = 0xF5;
/// Type byte of the "chunk taken, send the next" signal.
pub const FRAGMENT_SIGNAL: u8 = 0xF6;
/// Type byte of the "whole stream received" signal.
pub const DONE_SIGNAL: u8 = 0xF7;
/// Type byte of a CompleteBuffer header.
pub const COMPLETE_BUFFER: u8 = 0x6F;
/// The original's BigStream chunk size.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Size of a chunk's head (`size i32 | compressed u8`).
pub const CHUNK_HEAD_LEN: usize = 5;
/// Longest verify code accepted (SHA-512).
const MAX_HASH_LEN: usize = 64;

zs_wire::wire_enum! {
    /// The four command frame types.
    pub enum FrameKind: u8 {
        /// Text in, text out (0xF1).
        Console = 0xF1 => "console",
        /// DataFrameEngine in, DataFrameEngine out (0x2F).
        Stream = 0x2F => "stream",
        /// One-way console (0xF3).
        DirectConsole = 0xF3 => "direct console",
        /// One-way stream (0x4F).
        DirectStream = 0x4F => "direct stream",
    }
}

impl FrameKind {
    /// One-way: no result frame answers it.
    pub fn is_direct(self) -> bool {
        matches!(self, FrameKind::DirectConsole | FrameKind::DirectStream)
    }
    /// Carries text (else a DataFrameEngine).
    pub fn is_console(self) -> bool {
        matches!(self, FrameKind::Console | FrameKind::DirectConsole)
    }
}

/// Size limits of a ZServer4D reader (the original has none for command frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompatLimits {
    /// Largest command or result payload (default 16 MiB).
    pub max_payload: u32,
    /// Largest CompleteBuffer (default 64 MiB, the original server's default).
    pub max_complete_buffer: u32,
    /// Largest BigStream chunk (default 16 MiB; the original sends 1 MiB).
    pub max_chunk: u32,
}

impl Default for CompatLimits {
    fn default() -> Self {
        CompatLimits { max_payload: 16 << 20, max_complete_buffer: 64 << 20, max_chunk: 16 << 20 }
    }
}

/// A command frame (its payload decrypted: only cipher 0 is read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Which of the four command kinds.
    pub kind: FrameKind,
    /// The sender's hash kind byte.
    pub hash: u8,
    /// The payload: a DataFrameEngine `[String cmd, String text]` or `[String cmd, Stream dfe]`.
    pub payload: Bytes,
}

/// A result frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The sender's hash kind byte.
    pub hash: u8,
    /// The payload: raw UTF-8 for a console request, a DataFrameEngine for a stream one.
    pub payload: Bytes,
}

/// What [`decode`] found at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A command frame.
    Request(Request),
    /// A BigStream starts: `total` bytes in chunks follow.
    BigStreamHead {
        /// Bytes that follow, in chunks.
        total: i64,
        /// The command that receives them.
        command: String,
    },
    /// The receiver took a chunk: send the next.
    FragmentSignal,
    /// The receiver has the whole stream.
    DoneSignal,
    /// A CompleteBuffer starts: its body (`compressed` bytes if non-zero, else `size`) follows.
    CompleteBufferHead {
        /// The message's size.
        size: u32,
        /// The compressed body's size, or 0 if the body is raw.
        compressed: u32,
        /// The command that receives it.
        command: String,
    },
}

/// A BigStream chunk's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHead {
    /// Bytes of data that follow.
    pub size: u32,
    /// The data is a parallel zlib container.
    pub compressed: bool,
}

fn too_large(what: &'static str, size: u64, limit: u32) -> CompatError {
    CompatError::TooLarge { what, size, limit: limit as u64 }
}

/// `Ok(None)` while `buf` holds less than `n` bytes.
fn need(buf: &[u8], n: usize) -> Option<()> {
    (buf.len() >= n).then_some(())
}

fn check_head(buf: &[u8]) -> Result<(), CompatError> {
    let head = &buf[..4.min(buf.len())];
    if HEAD.starts_with(head) {
        Ok(())
    } else {
        let mut b = [0; 4];
        b[..head.len()].copy_from_slice(head);
        Err(CompatError::BadHead(u32::from_be_bytes(b)))
    }
}

fn check_tail(buf: &[u8]) -> Result<(), CompatError> {
    if buf == TAIL {
        Ok(())
    } else {
        Err(CompatError::BadTail(u32::from_be_bytes(buf.try_into().expect("4 bytes"))))
    }
}

/// A command or result frame as it travels: its payload maybe encrypted, not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The command kind; `None` for a result frame.
    pub kind: Option<FrameKind>,
    /// The hash kind byte.
    pub hash: u8,
    /// The verify code.
    pub code: &'a [u8],
    /// The cipher kind byte (0: none).
    pub cipher: u8,
    /// The payload as sent.
    pub payload: &'a [u8],
    /// The frame's length.
    pub len: usize,
}

impl Envelope<'_> {
    /// The plaintext payload, its verify code checked; only cipher 0 is read.
    pub fn verified(&self) -> Result<Bytes, CompatError> {
        if self.cipher != 0 {
            return Err(CompatError::Encrypted(self.cipher));
        }
        hash::check(self.hash, self.code, self.payload)?;
        Ok(Bytes::copy_from_slice(self.payload))
    }
}

/// Reads the command (`result` false) or result frame at the front of `buf` without
/// decrypting or verifying it; `Ok(None)` until it is whole.
pub fn envelope<'a>(
    buf: &'a [u8],
    result: bool,
    limits: &CompatLimits,
) -> Result<Option<Envelope<'a>>, CompatError> {
    check_head(buf)?;
    let (kind, at) = if result {
        (None, 8)
    } else {
        let Some(()) = need(buf, 5) else { return Ok(None) };
        (Some(FrameKind::from_code(buf[4]).ok_or(CompatError::UnknownType(buf[4]))?), 9)
    };
    let Some(()) = need(buf, at) else { return Ok(None) };
    let size = i32::from_le_bytes(buf[at - 4..at].try_into().expect("4 bytes"));
    // Results announce an i32, requests a u32: both beyond the limit are refused.
    let size = if result {
        u32::try_from(size).map_err(|_| CompatError::malformed("result frame", "negative size"))?
    } else {
        size as u32
    };
    if size > limits.max_payload {
        let what = if result { "result payload" } else { "command payload" };
        return Err(too_large(what, size as u64, limits.max_payload));
    }
    let Some(()) = need(buf, at + 3) else { return Ok(None) };
    let hash = buf[at];
    let hash_len = u16::from_le_bytes([buf[at + 1], buf[at + 2]]) as usize;
    if hash_len > MAX_HASH_LEN {
        return Err(CompatError::malformed("verify code", format!("{hash_len} bytes")));
    }
    let cipher_at = at + 3 + hash_len;
    let len = cipher_at + 1 + size as usize + 4;
    let Some(()) = need(buf, len) else { return Ok(None) };
    check_tail(&buf[len - 4..len])?;
    Ok(Some(Envelope {
        kind,
        hash,
        code: &buf[at + 3..cipher_at],
        cipher: buf[cipher_at],
        payload: &buf[cipher_at + 1..len - 4],
        len,
    }))
}

/// Decodes the frame at the front of `buf` when no result is expected; `Ok(None)` until it
/// is whole. Returns the frame and its length.
pub fn decode(buf: &[u8], limits: &CompatLimits) -> Result<Option<(Decoded, usize)>, CompatError> {
    check_head(buf)?;
    let Some(()) = need(buf, 5) else { return Ok(None) };
    let ty = buf[4];
    if let Some(kind) = FrameKind::from_code(ty) {
        let Some(e) = envelope(buf, false, limits)? else { return Ok(None) };
        return Ok(Some((Decoded::Request(Request { kind, hash: e.hash, payload: e.verified()? }), e.len)));
    }
    match ty {
        FRAGMENT_SIGNAL | DONE_SIGNAL => {
            let Some(()) = need(buf, 9) else { return Ok(None) };
            check_tail(&buf[5..9])?;
            let signal = if ty == DONE_SIGNAL { Decoded::DoneSignal } else { Decoded::FragmentSignal };
            Ok(Some((signal, 9)))
        }
        BIG_STREAM => {
            let Some(()) = need(buf, 17) else { return Ok(None) };
            let total = i64::from_le_bytes(buf[5..13].try_into().expect("8 bytes"));
            if total < 0 {
                return Err(CompatError::malformed("BigStream header", "negative size"));
            }
            let Some((command, end)) = command_and_tail(buf, 13)? else { return Ok(None) };
            Ok(Some((Decoded::BigStreamHead { total, command }, end)))
        }
        COMPLETE_BUFFER => {
            let Some(()) = need(buf, 17) else { return Ok(None) };
            let size = u32::from_le_bytes(buf[5..9].try_into().expect("4 bytes"));
            let compressed = u32::from_le_bytes(buf[9..13].try_into().expect("4 bytes"));
            if size > limits.max_complete_buffer || compressed > limits.max_complete_buffer {
                return Err(too_large(
                    "CompleteBuffer",
                    size.max(compressed) as u64,
                    limits.max_complete_buffer,
                ));
            }
            let Some((command, end)) = command_and_tail(buf, 13)? else { return Ok(None) };
            Ok(Some((Decoded::CompleteBufferHead { size, compressed, command }, end)))
        }
        other => Err(CompatError::UnknownType(other)),
    }
}

/// Longest command name of a BigStream or CompleteBuffer header, in bytes.
const MAX_COMMAND: usize = 255 * 4;

/// `cmd len u32 | cmd | tail` at `at`.
fn command_and_tail(buf: &[u8], at: usize) -> Result<Option<(String, usize)>, CompatError> {
    let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
    if len > MAX_COMMAND {
        return Err(CompatError::malformed("command name", format!("{len} bytes")));
    }
    let end = at + 4 + len + 4;
    let Some(()) = need(buf, end) else { return Ok(None) };
    check_tail(&buf[end - 4..end])?;
    let name = String::from_utf8_lossy(&buf[at + 4..end - 4]).into_owned();
    // Invalid bytes read as U+FFFD, three bytes each: the name must still fit when written.
    if name.len() > MAX_COMMAND {
        return Err(CompatError::malformed("command name", format!("{} bytes as UTF-8", name.len())));
    }
    Ok(Some((name, end)))
}

/// Decodes the result frame at the front of `buf` (read when a request is outstanding).
pub fn decode_reply(buf: &[u8], limits: &CompatLimits) -> Result<Option<(Reply, usize)>, CompatError> {
    let Some(e) = envelope(buf, true, limits)? else { return Ok(None) };
    Ok(Some((Reply { hash: e.hash, payload: e.verified()? }, e.len)))
}

/// Decodes a BigStream chunk's head at the front of `buf`.
pub fn decode_chunk_head(buf: &[u8], limits: &CompatLimits) -> Result<Option<ChunkHead>, CompatError> {
    let Some(()) = need(buf, CHUNK_HEAD_LEN) else { return Ok(None) };
    let size = i32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    let size = u32::try_from(size).map_err(|_| CompatError::malformed("BigStream chunk", "negative size"))?;
    if size > limits.max_chunk {
        return Err(too_large("BigStream chunk", size as u64, limits.max_chunk));
    }
    match buf[4] {
        0 | 1 => Ok(Some(ChunkHead { size, compressed: buf[4] == 1 })),
        b => Err(CompatError::malformed("BigStream chunk", format!("compressed flag {b}"))),
    }
}

fn put_verified(out: &mut Vec<u8>, payload: &[u8], hash: HashKind) {
    let code = hash::verify_code(hash, payload);
    out.push(hash.code());
    out.extend_from_slice(&(code.len() as u16).to_le_bytes());
    out.extend_from_slice(&code);
    out.push(0); // cipher: none
    out.extend_from_slice(payload);
    out.extend_from_slice(&TAIL);
}

/// Appends a command frame carrying `payload` (unencrypted).
pub fn encode_request(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8], hash: HashKind) {
    out.extend_from_slice(&HEAD);
    out.push(kind.code());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    put_verified(out, payload, hash);
}

/// Appends a result frame carrying `payload` (unencrypted).
pub fn encode_reply(out: &mut Vec<u8>, payload: &[u8], hash: HashKind) {
    out.extend_from_slice(&HEAD);
    out.extend_from_slice(&(payload.len() as i32).to_le_bytes());
    put_verified(out, payload, hash);
}

/// Appends a BigStream header.
pub fn encode_big_stream_head(out: &mut Vec<u8>, total: i64, command: &str) {
    out.extend_from_slice(&HEAD);
    out.push(BIG_STREAM);
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&(command.len() as u32).to_le_bytes());
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(&TAIL);
}

/// Appends a chunk's head (its `size` bytes of data follow).
pub fn encode_chunk_head(out: &mut Vec<u8>, size: u32, compressed: bool) {
    out.extend_from_slice(&(size as i32).to_le_bytes());
    out.push(compressed as u8);
}

/// Appends a fragment (`done` false) or done signal.
pub fn encode_signal(out: &mut Vec<u8>, done: bool) {
    out.extend_from_slice(&HEAD);
    out.push(if done { DONE_SIGNAL } else { FRAGMENT_SIGNAL });
    out.extend_from_slice(&TAIL);
}

/// Appends a CompleteBuffer header (`compressed` 0: the body is `size` raw bytes).
pub fn encode_complete_buffer_head(out: &mut Vec<u8>, size: u32, compressed: u32, command: &str) {
    out.extend_from_slice(&HEAD);
    out.push(COMPLETE_BUFFER);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&compressed.to_le_bytes());
    out.extend_from_slice(&(command.len() as u32).to_le_bytes());
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(&TAIL);
}

/// What a command carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Console text.
    Text(String),
    /// A stream command's DataFrameEngine.
    Frame(Dfe),
}

/// The payload of a command frame: `[String cmd, String text]` or `[String cmd, Stream dfe]`.
pub fn request_payload(command: &str, body: &Body) -> Vec<u8> {
    let second = match body {
        Body::Text(t) => Element::String(t.clone()),
        Body::Frame(d) => Element::Stream(d.encode().into()),
    };
    Dfe { elements: vec![Element::String(command.into()), second] }.encode()
}

/// The command name and body of a request's payload; a missing body reads as empty (as
/// the original's lenient readers do). A DataFrameEngine may inflate to `limit` bytes.
pub fn parse_request_payload(
    kind: FrameKind,
    payload: &[u8],
    limit: u64,
) -> Result<(String, Body), CompatError> {
    let outer = Dfe::decode(payload, limit)?;
    let mut items = outer.elements.into_iter();
    let Some(Element::String(command)) = items.next() else {
        return Err(CompatError::malformed("request", "the first element is not the command name"));
    };
    let body = match (kind.is_console(), items.next()) {
        (true, Some(Element::String(t))) => Body::Text(t),
        (true, None) => Body::Text(String::new()),
        (false, Some(Element::Stream(b))) => Body::Frame(Dfe::decode(&b, limit)?),
        (false, None) => Body::Frame(Dfe::new()),
        (_, Some(e)) => {
            return Err(CompatError::malformed("request", format!("body element of type {}", e.type_id())))
        }
    };
    Ok((command, body))
}
