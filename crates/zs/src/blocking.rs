//! `BlockingClient`: the client for synchronous code (the original's `WaitSend*`).

use std::io;
use std::time::Duration;

use tokio::net::ToSocketAddrs;
use zs_wire::DataFrame;

use crate::config::ClientConfig;
use crate::error::CallError;
use crate::rpc::{Router, Text};
use crate::secure::ClientSecurity;
use crate::{Client, Peer};

/// A client whose calls block the calling thread until the reply or the timeout. It owns
/// a one-thread runtime that keeps the connection alive (keepalives, pushes from the
/// server) between calls. Do not use it from inside an async task.
pub struct BlockingClient {
    client: Option<Client>,
    runtime: tokio::runtime::Runtime,
}

impl BlockingClient {
    /// Connects with default settings, secured as `security` says (a server's
    /// fingerprint: Noise pinned to it).
    pub fn connect(
        addr: impl ToSocketAddrs,
        security: impl Into<ClientSecurity>,
    ) -> io::Result<BlockingClient> {
        BlockingClient::connect_with(addr, Router::new(), ClientConfig::secured(security))
    }

    /// Connects with a router for server pushes and settings.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        router: Router,
        config: ClientConfig,
    ) -> io::Result<BlockingClient> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zs-blocking-client")
            .enable_all()
            .build()?;
        let client = runtime.block_on(Client::connect_with(addr, router, config))?;
        Ok(BlockingClient { client: Some(client), runtime })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("client present until drop")
    }

    /// The connection's peer handle.
    pub fn peer(&self) -> &Peer {
        self.client()
    }

    /// Calls a console command and waits for the reply.
    pub fn call_console(&self, name: &str, text: impl Into<Text>) -> Result<Text, CallError> {
        self.runtime.block_on(self.client().call_console(name, text))
    }

    /// Calls a console command, waiting at most `timeout`.
    pub fn call_console_timeout(
        &self,
        name: &str,
        text: impl Into<Text>,
        timeout: Duration,
    ) -> Result<Text, CallError> {
        self.runtime.block_on(self.client().call_console_timeout(name, text, timeout))
    }

    /// Calls a stream command and waits for the reply.
    pub fn call_stream(&self, name: &str, frame: DataFrame) -> Result<DataFrame, CallError> {
        self.runtime.block_on(self.client().call_stream(name, frame))
    }

    /// Calls a stream command, waiting at most `timeout`.
    pub fn call_stream_timeout(
        &self,
        name: &str,
        frame: DataFrame,
        timeout: Duration,
    ) -> Result<DataFrame, CallError> {
        self.runtime.block_on(self.client().call_stream_timeout(name, frame, timeout))
    }

    /// Sends a direct console command.
    pub fn send_console(&self, name: &str, text: impl Into<Text>) -> Result<(), CallError> {
        self.runtime.block_on(self.client().send_console(name, text))
    }

    /// Sends a direct stream command.
    pub fn send_stream(&self, name: &str, frame: DataFrame) -> Result<(), CallError> {
        self.runtime.block_on(self.client().send_stream(name, frame))
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Let the connection task send its goodbye before the runtime stops.
            self.runtime.block_on(async move {
                client.close();
                let _ = tokio::time::timeout(Duration::from_secs(1), client.closed()).await;
            });
        }
    }
}
