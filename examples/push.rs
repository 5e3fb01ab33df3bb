//! The server calls its clients over the same connection: a request with a reply, and a
//! broadcast of a one-way command to every client.
//!
//! cargo run -p zs-examples --example push

use std::time::Duration;

use tokio::sync::mpsc;
use zs::{Client, ClientConfig, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0", Router::new(), ServerConfig::default()).await?;

    let (tx, mut news) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for i in 0..3 {
        // Each client has its own router: the commands the server may call on it.
        let mut router = Router::new();
        router.console("whoami", move |_peer, _| format!("client {i}"));
        let tx = tx.clone();
        router.direct_console("news", move |_peer, text| tx.send(format!("client {i} got: {text}")).unwrap());
        clients.push(
            Client::connect_with(
                server.local_addr(),
                router,
                ClientConfig::secured(server.client_security()),
            )
            .await?,
        );
    }
    while server.connection_count() < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for peer in server.peers() {
        println!("server asked peer {}: {}", peer.id(), peer.call_console("whoami", "").await?);
    }
    let sent = server.broadcast_console("news", "maintenance at noon", |_peer| true)?;
    for _ in 0..sent {
        println!("{}", news.recv().await.unwrap());
    }
    server.shutdown().await;
    Ok(())
}
