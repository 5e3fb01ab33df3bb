//! The tarpc peer of `zs bench rpc`: an echo service served as tarpc's own examples serve
//! one (bincode over TCP, a task per request), driven through its generated client.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};
use tokio::net::TcpListener;

use crate::driver::Load;
use crate::stats::{histogram, Figures};

/// The echo service.
#[tarpc::service]
pub trait Echo {
    /// Returns its argument.
    async fn echo(payload: String) -> String;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, payload: String) -> String {
        payload
    }
}

/// Serves the echo service on `listener` until the process ends.
pub async fn serve(listener: TcpListener) {
    let Ok(mut incoming) = tcp::listen_on(listener, Bincode::default).await else { return };
    incoming.config_mut().max_frame_length(usize::MAX);
    while let Some(Ok(transport)) = incoming.next().await {
        let channel = BaseChannel::with_defaults(transport);
        tokio::spawn(channel.execute(EchoServer.serve()).for_each(|response| async {
            tokio::spawn(response);
        }));
    }
}

/// The load through tarpc's client: one client per connection, `depth` tasks each awaiting
/// its call before making the next (as `ours_client` does with ours).
pub(crate) async fn drive(addr: std::net::SocketAddr, load: Load) -> Result<Figures, String> {
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let transport = tcp::connect(addr, Bincode::default).await.map_err(|e| e.to_string())?;
        clients.push(Arc::new(EchoClient::new(client::Config::default(), transport).spawn()));
    }
    let payload = "x".repeat(load.payload);
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::new();
    for c in &clients {
        for _ in 0..load.depth {
            let (c, payload) = (c.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    c.echo(context::current(), payload.clone()).await.map_err(|e| e.to_string())?;
                    h.saturating_record(t.elapsed().as_micros().max(1) as u64);
                }
                Ok::<_, String>(h)
            }));
        }
    }
    let mut all = histogram();
    for t in tasks {
        all.add(&t.await.map_err(|e| e.to_string())??).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, start.elapsed()))
}
