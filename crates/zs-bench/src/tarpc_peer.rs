//! The tarpc peer of `zs bench rpc`: an echo service served as tarpc's own examples serve
//! one (bincode over TCP, a task per request), driven through its generated client.

use std::sync::Arc;

use futures_util::StreamExt;
use tarpc::serde_transport::tcp;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};
use tokio::net::TcpListener;

use crate::driver::{api_load, Load};
use crate::stats::Figures;

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

/// The load through tarpc's client: one client per connection, closed or open loop as
/// `load` says (see [`api_load`]).
pub(crate) async fn drive(addr: std::net::SocketAddr, load: Load) -> Result<Figures, String> {
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let transport = tcp::connect(addr, Bincode::default).await.map_err(|e| e.to_string())?;
        clients.push(Arc::new(EchoClient::new(client::Config::default(), transport).spawn()));
    }
    let payload = Arc::new("x".repeat(load.payload));
    api_load(clients, load, move |c: Arc<EchoClient>| {
        let payload = payload.clone();
        async move { c.echo(context::current(), payload.to_string()).await.map(drop).map_err(|e| e.to_string()) }
    })
    .await
}
