//! The rpc layer: commands, payloads, the router, responders, and frame encoding.

mod access;
mod meter;
mod payload;
mod responder;
mod router;
mod text;

pub use access::Identity;
pub(crate) use access::{Access, Guard};
pub(crate) use meter::Meter;
pub use meter::{CommandFigures, LATENCY_BUCKETS_US};
pub use payload::{Form, IntoReply, Payload, PayloadType};
pub(crate) use responder::RawResponder;
pub use responder::Responder;
pub(crate) use router::{Command, Exec};
pub use router::{CommandOptions, Router, Service};
pub use text::Text;
