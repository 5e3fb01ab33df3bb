//! Settings of big streams, complete buffers and batch streams: windows and limits.

/// Windows and limits of transfers (big streams, complete buffers, batch streams).
#[derive(Debug, Clone, Copy)]
pub struct BulkConfig {
    /// Largest receive window of each incoming stream: bytes the sender may have in flight
    /// (default 4 MiB; at least the protocol's 256 KiB initial window). A stream starts at
    /// 512 KiB and grows towards this only over a path with a round trip of 1 ms or more.
    pub stream_window: u32,
    /// Receive window shared by all incoming streams of a connection: each gets this divided
    /// by the streams open, within [256 KiB, `stream_window`] (default 4 MiB).
    pub connection_stream_window: u32,
    /// Most incoming streams at once on a connection; more are refused (default 256).
    pub max_streams: usize,
    /// The weakest end-to-end check an incoming stream may declare: a stream checked with
    /// less is refused on its announcement, saying why (default XXH3-128, that is any;
    /// BLAKE3 to require a cryptographic hash).
    pub min_stream_check: zs_wire::bulk::StreamCheck,
    /// Largest complete buffer accepted; a larger one is refused on its announcement,
    /// before anything is allocated (default 64 MiB).
    pub max_buffer_len: u64,
    /// Bytes of batch streams a peer may have parked here at once (default 64 MiB).
    pub batch_budget: u64,
    /// Most bytes of stream chunks queued for sending on a connection; senders wait for
    /// room (default 4 MiB).
    pub max_queued_bulk_bytes: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            stream_window: 4 << 20,
            connection_stream_window: 4 << 20,
            max_streams: 256,
            min_stream_check: zs_wire::bulk::StreamCheck::Xxh3,
            max_buffer_len: 64 << 20,
            batch_budget: 64 << 20,
            max_queued_bulk_bytes: 4 << 20,
        }
    }
}
