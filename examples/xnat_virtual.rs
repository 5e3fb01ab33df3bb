//! An XNat virtual service: a device behind NAT serves a zserver `Router` to clients of
//! the public server with no port opened on its side (the original's
//! MappingOnVirtualService). The agent hands each visitor to a server with no listener
//! (`Server::unbound`), so clients run their handshake with that server through the
//! tunnel: encrypted end to end, and they pin its key, not the tunnel's.
//!
//! cargo run -p zs-examples --example xnat_virtual

use std::time::Duration;

use zs::secure::NoiseServer;
use zs::{Client, ClientConfig, KeyPair, Peer, Router, Server, ServerConfig, ServerSecurity, Text};
use zs_services::xnat::{run_agent, AgentService, ServerFile, Target, XnatServer, DEFAULT_POOL};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Inside the private network: a router, served by a server that listens nowhere.
    let mut router = Router::new();
    router
        .console("where", |peer: &Peer, _text: Text| format!("behind NAT, serving connection {}", peer.id()));
    let inside = Server::unbound(router, ServerConfig::default()).await?;

    // The public server maps `device` to a public port.
    let file = ServerFile::parse(
        "listen = \"127.0.0.1:0\"\n[services.device]\nbind = \"127.0.0.1:0\"\ntoken = \"a long random secret\"\n",
    )?;
    let security =
        ServerSecurity::Noise(NoiseServer { key: Some(KeyPair::generate()), allowed_clients: None });
    let public = XnatServer::start(&file, security).await?;

    // The agent connects out and serves `device` with the inside server.
    let service = AgentService {
        name: "device".into(),
        target: Target::Server(inside.clone()),
        token: Some("a long random secret".into()),
        udp: false,
        pool: DEFAULT_POOL,
    };
    let agent = run_agent(
        public.control_addr(),
        ClientConfig::secured(public.control().client_security()),
        vec![service],
    );
    while public.stats()[0].agents == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A client of the public port, pinning the inside server's key.
    let client = Client::connect(public.public_addr("device").unwrap(), inside.client_security()).await?;
    println!("{}", client.call_console("where", "").await?);
    client.close();
    agent.stop().await;
    public.shutdown().await;
    Ok(())
}
