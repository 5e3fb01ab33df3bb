//! The rpc layer: commands, payloads, the router, responders, and frame encoding.

mod payload;
mod responder;
mod router;
mod text;

pub use payload::{Form, IntoReply, Payload, PayloadType};
pub(crate) use responder::RawResponder;
pub use responder::Responder;
pub(crate) use router::{Command, Exec};
pub use router::{CommandOptions, Router};
pub use text::Text;
