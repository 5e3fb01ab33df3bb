//! Configuration with documented defaults. Every queue and buffer has a bound here.

use crate::session::SessionConfig;
use std::time::Duration;

use zs_wire::Limits;

use crate::secure::{ClientSecurity, RekeyPolicy, ServerSecurity};

/// Per-connection settings, the same on both ends.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Frame and DataFrame decoding limits (default: 16 MiB frames, depth 32, 1 Mi values).
    pub limits: Limits,
    /// Default timeout of a call (default 30 s).
    pub call_timeout: Duration,
    /// Send a ping after this long without receiving anything (default 20 s; `None` = never).
    pub keepalive_interval: Option<Duration>,
    /// Close the connection after this long without receiving anything (default 60 s;
    /// `None` = never).
    pub idle_timeout: Option<Duration>,
    /// Most received calls being handled at once (async, delayed, HPC); beyond it the
    /// connection stops reading until some finish (default 1024).
    pub max_in_flight: usize,
    /// Most bytes of frames queued for sending from other tasks; callers wait for space,
    /// broadcasts to a full queue disconnect the slow peer (default 8 MiB).
    pub max_queued_bytes: usize,
    /// Most bytes of unwritten output before the connection stops reading and executing
    /// (default 4 MiB; a larger single frame is still written).
    pub max_write_buffer: usize,
    /// Bytes requested from the socket per read (default 16 KiB). The buffer exists only
    /// while data is being processed: an idle connection holds none.
    pub read_chunk: usize,
    /// Most received frames waiting behind an ordered handler (default 1024); beyond it the
    /// connection stops reading.
    pub max_ordered_queue: usize,
    /// Compress call and reply payloads of 1 KiB or more with lz4 when it saves at least
    /// a tenth (default true).
    pub compress_frames: bool,
    /// Execute every command of the connection strictly in arrival order, one at a time,
    /// as the original did (default false: handlers run concurrently).
    pub ordered: bool,
    /// On graceful shutdown, how long in-flight handlers may take to reply (default 10 s).
    pub drain_timeout: Duration,
    /// Virtual channels: windows and limits (see [`MuxConfig`](crate::MuxConfig)).
    pub mux: crate::mux::config::MuxConfig,
    /// Big streams, complete buffers and batch streams: windows and limits (see
    /// [`BulkConfig`](crate::BulkConfig)).
    pub bulk: crate::bulk::config::BulkConfig,
    /// Most bytes of stream chunks written per wake-up after all small frames, so calls
    /// never wait behind bulk data (default 256 KiB).
    pub bulk_quantum: usize,
    /// Most bytes the kernel may hold unsent in the socket (Linux `TCP_NOTSENT_LOWAT`), so
    /// calls queue in our outbox, ahead of bulk data, rather than behind megabytes in the
    /// kernel (default 256 KiB; `None` = the kernel's default).
    pub socket_unsent_limit: Option<u32>,
    /// On a secure channel, roll the sending keys after this many bytes (default 1 GiB).
    pub rekey_after_bytes: u64,
    /// On a secure channel, roll the sending keys when this much time has passed since the
    /// last roll, at the next record sent (default 10 minutes).
    pub rekey_interval: Duration,
}

impl ConnectionConfig {
    /// When the secure channel's keys are rolled.
    pub(crate) fn rekey_policy(&self) -> RekeyPolicy {
        RekeyPolicy { after_bytes: self.rekey_after_bytes, after_time: self.rekey_interval }
    }

    /// How calls and replies are encoded.
    pub(crate) fn encoding(&self) -> crate::connection::encode::Encoding {
        crate::connection::encode::Encoding {
            max_frame_len: self.limits.max_frame_len,
            compress: self.compress_frames,
        }
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            limits: Limits::default(),
            call_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(20)),
            idle_timeout: Some(Duration::from_secs(60)),
            max_in_flight: 1024,
            max_queued_bytes: 8 << 20,
            max_write_buffer: 4 << 20,
            read_chunk: 16 << 10,
            max_ordered_queue: 1024,
            compress_frames: true,
            ordered: false,
            drain_timeout: Duration::from_secs(10),
            mux: crate::mux::config::MuxConfig::default(),
            bulk: crate::bulk::config::BulkConfig::default(),
            bulk_quantum: 256 << 10,
            socket_unsent_limit: Some(256 << 10),
            rekey_after_bytes: RekeyPolicy::default().after_bytes,
            rekey_interval: RekeyPolicy::default().after_time,
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Settings of each connection.
    pub connection: ConnectionConfig,
    /// Most connections held at once; one more is told `ServerFull` and closed
    /// (default 100,000).
    pub max_connections: usize,
    /// Name of the built-in console command that answers with the statistics as JSON
    /// (default `Some("stats")`; `None` = not served).
    pub stats_command: Option<String>,
    /// Set `SO_REUSEPORT` so several processes can serve one port (default false).
    pub reuse_port: bool,
    /// Listen backlog (default 4096).
    pub backlog: u32,
    /// How connections are secured (default: Noise with a key made at bind).
    pub security: ServerSecurity,
    /// A client must finish its handshake within this time or is dropped (default 10 s).
    pub handshake_timeout: Duration,
    /// A new connection must send its first bytes within this time or is dropped
    /// (default 3 s): an idle socket holds its place only briefly.
    pub first_bytes_timeout: Duration,
    /// Most connections whose handshake is unfinished, in all (default 4,096). A new one
    /// beyond it drops the oldest unfinished handshake: idle sockets cannot fill a pool
    /// that new clients wait for.
    pub max_handshakes: usize,
    /// Most unfinished handshakes from one source address (default 64); a new one beyond
    /// it drops that source's oldest.
    pub max_handshakes_per_source: usize,
    /// Handshakes one source address may start per second, in bursts of as many (default
    /// 1,000); beyond it the connection is closed before the handshake costs any CPU.
    pub handshake_rate_per_source: u32,
    /// Bytes that peers may make the server hold before they are answered: partial frames
    /// over 512 KiB, complete buffers and batch streams being received or parked,
    /// ZServer4D staging, detached sessions' buffers (default 256 MiB). When it runs
    /// short, the connections holding the most are closed (`MemoryBudget`) or refused
    /// first; the others carry on.
    pub memory_budget: u64,
    /// Resumable sessions for the clients that ask for one (default: on, with the
    /// defaults of [`SessionConfig`]; `None` refuses them). Clients that do not ask are
    /// served as before, at no cost.
    pub sessions: Option<SessionConfig>,
    /// Listeners for unmodified ZServer4D clients, served the same router (default: none).
    pub compat: crate::compat::CompatConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connection: ConnectionConfig::default(),
            max_connections: 100_000,
            stats_command: Some("stats".into()),
            reuse_port: false,
            backlog: 4096,
            security: ServerSecurity::default(),
            handshake_timeout: Duration::from_secs(10),
            first_bytes_timeout: Duration::from_secs(3),
            max_handshakes: 4096,
            max_handshakes_per_source: 64,
            handshake_rate_per_source: 1000,
            memory_budget: 256 << 20,
            sessions: Some(SessionConfig::default()),
            compat: crate::compat::CompatConfig::default(),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Settings of the connection.
    pub connection: ConnectionConfig,
    /// How long connecting, handshake included, may take (default 10 s).
    pub connect_timeout: Duration,
    /// How the connection is secured (default: Noise, trusting the known-servers file).
    pub security: ClientSecurity,
    /// Open a resumable session: the connection survives dropped links (default `None`;
    /// needs Noise or TLS).
    pub session: Option<SessionConfig>,
    /// Automated virtual clients (p2pVM): service names the server serves as peer channels
    /// ([`Router::serve_channels`](crate::Router::serve_channels)); the client opens one
    /// channel per name as it connects ([`Client::virtual_client`](crate::Client::virtual_client)).
    /// Default: none.
    pub virtual_clients: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(10),
            security: ClientSecurity::default(),
            session: None,
            virtual_clients: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// Default settings with this security (e.g. a server's key: Noise pinned to it).
    pub fn secured(security: impl Into<ClientSecurity>) -> ClientConfig {
        ClientConfig { security: security.into(), ..ClientConfig::default() }
    }
}
