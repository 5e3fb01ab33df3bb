#![warn(missing_docs)]
//! The ZServer4D wire protocol, without IO: what an unmodified Delphi/FreePascal ZServer4D
//! peer sends and expects, byte for byte (`../shared/reference/zserver4d-core.md` §2, §3.1,
//! §5). The runtime in `zs::compat` drives these codecs over sockets.
//!
//! - [`frame`]: request and result frames, BigStream header, chunks and signals,
//!   CompleteBuffer header.
//! - [`dfe`]: the DataFrameEngine container with every element type and its zlib
//!   compression containers, and its conversion to and from zserver's `DataFrame`.
//! - [`seq`]: the sequence-packet layer (data, ack, keepalive and echo, resend request,
//!   MD5 per packet) with its resend timer.
//! - [`hash`]: verify codes (the kinds in use, and the 1-to-5-byte MD5 rule).
//! - [`handshake`]: `__@CipherModel`, answered with "no cipher".
//! - [`translate`]: a client's requests, results, BigStreams and CompleteBuffers to and
//!   from zserver frames, with back-pressure across the two protocols.

pub mod compress;
pub mod dfe;
mod error;
pub mod frame;
pub mod fuzzing;
pub mod handshake;
pub mod hash;
pub mod seq;
pub mod translate;

pub use dfe::{Dfe, Element, Variant};
pub use error::CompatError;
pub use frame::{CompatLimits, Decoded, FrameKind, Reply, Request};
pub use hash::HashKind;
