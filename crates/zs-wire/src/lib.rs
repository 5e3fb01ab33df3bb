#![warn(missing_docs)]
//! zserver wire format, sans IO: frame headers and bodies, the `DataFrame` value list,
//! hard limits and decoding errors. Nothing here touches a socket or an executor, so every
//! decoder can be fuzzed and property-tested on plain byte buffers.
//!
//! The byte layouts are specified in `docs/PROTOCOL.md`.

pub mod body;
pub mod bulk;
pub mod compress;
pub mod dataframe;
pub mod encode;
mod enums;
mod error;
pub mod frame;
pub mod fuzzing;
mod limits;
pub mod mux;
pub mod secure;
pub mod session;
pub mod websocket;
pub mod window;

pub use body::{CallBody, ErrorCode, GoAwayCode};
pub use dataframe::{DataFrame, ReadError, Reader, Value};
pub use error::WireError;
pub use frame::{Flags, Frame, FrameDecoder, FrameWriter, Header, Kind, HEADER_LEN, MAGIC, VERSION};
pub use limits::Limits;
