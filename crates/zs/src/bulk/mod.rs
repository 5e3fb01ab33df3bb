//! Bulk data: big streams, complete buffers and batch streams.
//!
//! All three travel as a *stream*: `StreamOpen`, `StreamData`... , `StreamEnd` from the
//! sender, `StreamCredit` and a final `StreamResult` from the receiver (docs/PROTOCOL.md §8).
//! - **Flow control**: the sender may have at most the receiver's window in flight; the
//!   receiver grants more as its handler consumes data, so a slow reader slows the sender
//!   and memory stays bounded on both ends.
//! - **Fairness**: chunks go through a separate lane of the connection's outbox that is
//!   written after every small frame, at most `bulk_quantum` bytes per wake-up.
//! - **Integrity**: XXH3-128 (or BLAKE3, per stream) over the data sent, checked on
//!   arrival; zstd per chunk when it pays; a start offset for resuming a broken transfer.

pub(crate) mod config;
mod hash;
mod peer;
mod receive;
pub(crate) mod send;
mod state;

pub use receive::IncomingStream;
pub(crate) use receive::{accept, BufferHandler, BulkHandler, Entry, Incoming, Sink};
pub use send::Transfer;
pub(crate) use state::{BulkState, OutStream};
pub use zs_wire::bulk::StreamCheck;

/// Largest chunk a sender puts in one frame.
pub const MAX_CHUNK: usize = 256 << 10;

// A sender needs credit for a whole chunk; every window is at least the initial one.
const _: () = assert!(MAX_CHUNK <= zs_wire::bulk::INITIAL_WINDOW as usize);

/// Compression of a transfer's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// zstd (level 1) for chunks that shrink by a tenth or more; stops trying after four
    /// chunks in a row that do not (incompressible data costs almost nothing).
    #[default]
    Auto,
    /// Send as is.
    None,
}

/// How to send a big stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Bytes that will be sent, if known (the receiver sees it as the total; a source that
    /// ends early or runs longer fails the transfer).
    pub len: Option<u64>,
    /// Offset in the source where this transfer starts, for resuming (the receiver sees it).
    pub offset: u64,
    /// Chunk compression.
    pub compression: Compression,
    /// Bytes per chunk (default and most: 256 KiB).
    pub chunk_size: usize,
    /// The ticket of the call that prepared this transfer ([`Peer::issue_ticket`](crate::Peer::issue_ticket)
    /// on the receiving end); its handler takes the prepared value back (default none).
    pub ticket: Option<u64>,
    /// How the receiver checks the bytes end to end (default XXH3-128, at line rate;
    /// BLAKE3 for a cryptographic hash, which the receiver then reports with
    /// [`IncomingStream::verified_hash`](crate::IncomingStream::verified_hash)).
    pub check: StreamCheck,
    /// The hash (of `check`) of the bytes this transfer sends, when the sender knows it
    /// already (a file whose hash is kept): the sender then does not hash them again. A
    /// wrong one fails the transfer at the receiver, as corrupted data would (default none).
    pub hash: Option<[u8; 32]>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            len: None,
            offset: 0,
            compression: Compression::Auto,
            chunk_size: 256 << 10,
            ticket: None,
            check: StreamCheck::Xxh3,
            hash: None,
        }
    }
}

impl StreamOptions {
    /// Options with a known length.
    pub fn with_len(len: u64) -> Self {
        StreamOptions { len: Some(len), ..StreamOptions::default() }
    }
}

/// How far a transfer has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes handed over so far (uncompressed).
    pub done: u64,
    /// Bytes in all, if known.
    pub total: Option<u64>,
}
