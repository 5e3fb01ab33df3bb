//! Reverse p2pVM: a client behind NAT hosts services; the server opens virtual channels to
//! it over the client's own connection and calls them, or streams bytes to them.
//!
//! cargo run -p zs-examples --example reverse_channels

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs::{Client, ClientConfig, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0", Router::new(), ServerConfig::default()).await?;

    // The device behind NAT: it only connects out, and offers two services on that link.
    let mut device = Router::new();
    device.console("temperature", |_, _| "21.5".to_owned());
    device.serve_channels("sensors");
    let mut shell = device.listen("shell");
    tokio::spawn(async move {
        while let Some(mut s) = shell.accept().await {
            let mut command = String::new();
            let _ = s.read_to_string(&mut command).await;
            let _ = s.write_all(format!("ran `{}`", command.trim()).as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    let config = ClientConfig::secured(server.client_security());
    let _device = Client::connect_with(server.local_addr(), device, config).await?;

    // The server side: find the device's connection and open channels to it.
    let peer = loop {
        if let Some(p) = server.peers().pop() {
            break p;
        }
        tokio::task::yield_now().await;
    };
    let sensors = peer.open_peer("sensors").await?;
    println!("temperature behind the NAT: {}", sensors.call_console("temperature", "").await?);
    let mut s = peer.open_stream("shell").await?;
    s.write_all(b"uptime").await?;
    s.shutdown().await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    println!("shell: {out}");
    Ok(())
}
