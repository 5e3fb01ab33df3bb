//! ZServer4D compatibility: a listener that serves the same [`Router`](crate::Router) to
//! unmodified Delphi/FreePascal ZServer4D clients, and [`CompatClient`], a client for
//! ZServer4D servers. The wire codecs are in the `zs-compat` crate; `docs/COMPAT.md` says
//! what is supported.

mod client;
mod link;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use client::{Body, CompatClient, CompatClientConfig, CompatClientError};
pub(crate) use link::CompatLink;
pub use zs_compat::{frame::CompatLimits, seq::SeqConfig, Dfe, Element, Variant};

use zs_compat::translate::Settings;

use crate::stats::Stats;

/// Settings of the ZServer4D listeners of a server.
#[derive(Debug, Clone)]
pub struct CompatConfig {
    /// Addresses to serve ZServer4D clients on (default none).
    pub listen: Vec<SocketAddr>,
    /// Size limits: command payloads 16 MiB, CompleteBuffers 64 MiB, BigStream chunks
    /// 16 MiB by default.
    pub limits: CompatLimits,
    /// The sequence-packet layer (resend after 3 s; at most 32 MiB unacknowledged or out
    /// of order per connection; no keepalives of our own, the clients' are answered).
    pub seq: SeqConfig,
    /// Most requests a client may send before reading their results (default 64; the
    /// original's clients send one at a time).
    pub max_pipelined: usize,
    /// Keep clients that go quiet, as the original does: no idle timeout on ZServer4D
    /// connections, and none announced (default false: the connection's idle timeout,
    /// `ConnectionConfig::idle_timeout`, applies and the handshake announces it).
    pub keep_idle_clients: bool,
}

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig {
            listen: Vec::new(),
            limits: CompatLimits::default(),
            seq: SeqConfig::default(),
            max_pipelined: 64,
            keep_idle_clients: false,
        }
    }
}

/// What the compat links of one server share.
pub(crate) struct CompatShared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) stats: Arc<Stats>,
}

impl CompatShared {
    /// What the links share; `idle` is the idle timeout their connections enforce, which
    /// the handshake announces.
    pub(crate) fn new(config: &CompatConfig, idle: Option<std::time::Duration>, stats: Arc<Stats>) -> Self {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let settings = Settings {
            limits: config.limits,
            seq: config.seq,
            max_pipelined: config.max_pipelined,
            idle_ms: idle.map_or(0, |d| d.as_millis().min(u64::MAX.into()) as u64),
            started: Instant::now(),
            // Sent in the handshake as the original does (MD5 of the start time).
            started_md5: zs_compat::hash::md5(now.as_nanos().to_string().as_bytes()),
        };
        CompatShared { settings: Arc::new(settings), stats }
    }
}
