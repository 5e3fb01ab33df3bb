//! Virtual channels (p2pVM): one connection carries a client's virtual clients (full peers,
//! one per service) and raw byte streams, each with its own flow control.
//!
//! cargo run -p zs-examples --example virtual_channels

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs::{Client, ClientConfig, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    // Commands every peer of this router has: the connection itself and its virtual peers.
    router.console("where", |peer, _| format!("you are peer {}", peer.id()));
    // Services whose channels are full peers of this router...
    router.serve_channels("chat").serve_channels("billing");
    // ...and one whose channels are raw byte streams, accepted here.
    let mut uploads = router.listen("upload");
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    tokio::spawn(async move {
        while let Some(mut stream) = uploads.accept().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).await?;
                stream
                    .write_all(format!("received {} bytes on port {}", data.len(), stream.port()).as_bytes())
                    .await?;
                stream.shutdown().await
            });
        }
    });

    // Automated p2pVM: one virtual client per service name, over one connection.
    let config = ClientConfig {
        virtual_clients: vec!["chat".into(), "billing".into()],
        ..ClientConfig::secured(server.client_security())
    };
    let client = Client::connect_with(server.local_addr(), Router::new(), config).await?;
    for name in ["chat", "billing"] {
        let peer = client.virtual_client(name).expect("opened at connect");
        println!("{name}: {}", peer.call_console("where", "").await?);
    }
    println!("main: {}", client.call_console("where", "").await?);

    // A raw stream beside them, to a service port.
    let mut upload = client.open_stream_port("upload", 8080).await?;
    upload.write_all(&vec![7u8; 1 << 20]).await?;
    upload.shutdown().await?;
    let mut answer = String::new();
    upload.read_to_string(&mut answer).await?;
    println!("upload: {answer}");

    // Opening a service nobody offers fails clearly.
    if let Err(e) = client.open_stream("nowhere").await {
        println!("nowhere: {e}");
    }
    println!("physical connections at the server: {}", server.connection_count());
    Ok(())
}
