use thiserror::Error;

/// Why a byte sequence is not a valid zserver frame or DataFrame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The first header byte is not the zserver magic: the peer speaks another protocol.
    #[error("bad magic byte 0x{0:02x}: not a zserver peer")]
    BadMagic(u8),
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this layer does not know.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// Flag bits that are reserved or not valid for this frame kind.
    #[error("invalid flags 0x{flags:02x} for {kind} frame")]
    InvalidFlags {
        /// The frame kind.
        kind: &'static str,
        /// The flag byte received.
        flags: u8,
    },
    /// The frame announces a body larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced body length.
        len: u64,
        /// Configured maximum.
        max: u32,
    },
    /// A channel id other than 0 arrived where no multiplexer is running.
    #[error("frame for channel {0} but no multiplexer is active")]
    UnexpectedChannel(u32),
    /// A body is shorter than its layout requires, or has bytes left over.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which structure was being decoded.
        what: &'static str,
        /// What was wrong with it.
        why: &'static str,
    },
    /// Text that must be UTF-8 is not.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A DataFrame nests deeper than the configured maximum.
    #[error("nesting deeper than {0} levels")]
    TooDeep(u16),
    /// A DataFrame holds more values than the configured maximum.
    #[error("more than {0} values")]
    TooManyElements(u32),
    /// A MessagePack marker a DataFrame does not carry (ext types, reserved 0xc1).
    #[error("unsupported MessagePack marker 0x{0:02x}")]
    UnsupportedMarker(u8),
}
