#![warn(missing_docs)]
//! zserver runtime: long-connection servers and clients that talk with named commands.
//!
//! ```no_run
//! use zs::{Client, Router, Server, ServerConfig};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let mut router = Router::new();
//! router.console("hello", |_peer, name| format!("hello, {name}"));
//! let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
//!
//! // Encrypted (Noise) by default; the client pins the server's key.
//! let client = Client::connect(server.local_addr(), server.client_security()).await?;
//! assert_eq!(client.call_console("hello", "world").await.unwrap(), "hello, world");
//! # Ok(()) }
//! ```
//!
//! Layers (see `docs/ARCHITECTURE.md`): [`transport`] carries bytes, the connection driver
//! runs the wire protocol of `zs-wire`, and [`rpc`] holds commands, payloads and responders.

mod blocking;
mod budget;
pub mod bulk;
mod client;
pub mod compat;
pub mod config;
mod connection;
mod directory;
mod error;
pub mod failover;
mod logs;
pub mod mux;
mod peer;
pub mod rpc;
pub mod secure;
mod server;
pub mod session;
mod stats;
mod sync;
pub mod transport;

pub use blocking::BlockingClient;
pub use bulk::config::BulkConfig;
pub use bulk::{IncomingStream, Progress, StreamCheck, StreamOptions, Transfer};
pub use client::Client;
pub use config::{ClientConfig, ConnectionConfig, ServerConfig};
pub use connection::CloseReason;
pub use directory::Directory;
pub use error::{CallError, HandlerError};
pub use failover::{Failover, FailoverConfig};
pub use mux::{MuxConfig, VirtualListener, VirtualStream};
pub use peer::{Peer, Prepared};
pub use rpc::{CommandFigures, Form, Identity, Responder, Router, Service, Text};
pub use secure::{ClientSecurity, Fingerprint, KeyPair, ServerSecurity, Trust};
pub use server::{Server, ServerHandle, DRAINING};
pub use session::{SessionConfig, SessionEvent, SessionStatus};
pub use stats::{Stats, StatsSnapshot};
pub use zs_wire::{self as wire, DataFrame, ErrorCode, GoAwayCode, Limits, Value};
