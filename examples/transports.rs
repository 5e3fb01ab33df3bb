//! A server reachable over TCP, WebSocket and QUIC at once, and a client on each: the same
//! commands and security (Noise here, the same key pinned) whatever carries the bytes.
//! Browsers use the JS client (`clients/js`) on the WebSocket address.
//!
//! cargo run -p zs-examples --example transports

use zs::transport::quic::{QuicDialer, QuicListener};
use zs::transport::ws::{WsDialer, WsListener, WsSettings};
use zs::{Client, ClientConfig, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    router.console("hello", |peer, name| format!("hello, {name}, from {}", peer.remote_addr()));
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    // One more listener: pages of other origins need `WsSettings::origins` to list them.
    let ws = WsListener::bind("127.0.0.1:0", WsSettings::default()).await?.remove(0);
    let ws_addr = server.serve(ws)?;
    let quic_addr = server.serve(QuicListener::bind("127.0.0.1:0".parse()?)?)?;
    println!("TCP on {}, WebSocket on ws://{ws_addr}/, QUIC on {quic_addr}", server.local_addr());

    let tcp = Client::connect(server.local_addr(), server.client_security()).await?;
    println!("{}", tcp.call_console("hello", "tcp").await?);
    let config = ClientConfig::secured(server.client_security());
    let web = Client::connect_over(WsDialer::new("/"), ws_addr, Router::new(), config.clone()).await?;
    println!("{}", web.call_console("hello", "websocket").await?);
    let quic = Client::connect_over(QuicDialer, quic_addr, Router::new(), config).await?;
    println!("{}", quic.call_console("hello", "quic").await?);
    server.shutdown().await;
    Ok(())
}
