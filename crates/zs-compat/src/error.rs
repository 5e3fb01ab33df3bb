//! Errors of the ZServer4D codecs.

/// Why bytes from a ZServer4D peer could not be decoded (the connection is closed with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// A frame did not start with F0F0F0F0.
    #[error("bad frame head {0:08x} (expected f0f0f0f0)")]
    BadHead(u32),
    /// A frame did not end with F1F1F1F1.
    #[error("bad frame tail {0:08x} (expected f1f1f1f1)")]
    BadTail(u32),
    /// An unknown frame type byte.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// An unknown sequence-packet type byte.
    #[error("unknown sequence packet type {0:#04x}")]
    UnknownPacket(u8),
    /// A size field beyond the configured limit.
    #[error("{what} of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its announced size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The verify code did not match the data.
    #[error("verify code mismatch ({0})")]
    VerifyMismatch(&'static str),
    /// A hash kind this build does not compute.
    #[error("hash kind {0} is not supported (supported: none, MD5, SHA-1, SHA-2, SHA-3)")]
    UnsupportedHash(u8),
    /// The payload is encrypted with one of the original's ciphers.
    #[error("payload encrypted with the original's cipher {0}; only cipher 0 (none) is read")]
    Encrypted(u8),
    /// A DataFrameEngine or other body is malformed.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl CompatError {
    /// A `Malformed` error.
    pub fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        CompatError::Malformed { what, why: why.into() }
    }
}
