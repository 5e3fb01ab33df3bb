//! XNat in one process: a "private" echo service, a public XNat server, and an agent that
//! connects out to the server and serves the echo; a visitor of the public address is
//! carried to the echo through the agent's link. (`zs xnat server|agent --config` runs the
//! two sides as programs: see examples/xnat/*.toml.)
//!
//! cargo run -p zs-examples --example xnat

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs::secure::NoiseServer;
use zs::{ClientConfig, KeyPair, ServerSecurity};
use zs_services::xnat::{run_agent, AgentService, ServerFile, XnatServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The service inside the private network: it answers in upper case.
    let private = TcpListener::bind("127.0.0.1:0").await?;
    let private_addr = private.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = private.accept().await {
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = s.read_to_string(&mut text).await;
                let _ = s.write_all(text.to_uppercase().as_bytes()).await;
            });
        }
    });

    // The public server: agents connect to `listen`, visitors to the service's `bind`.
    let file = ServerFile::parse(
        "listen = \"127.0.0.1:0\"\n[services.shout]\nbind = \"127.0.0.1:0\"\ntoken = \"a long random secret\"\n",
    )?;
    let security =
        ServerSecurity::Noise(NoiseServer { key: Some(KeyPair::generate()), allowed_clients: None });
    let server = XnatServer::start(&file, security).await?;

    // The agent: connects out (the server's key pinned), proves the token, serves the service.
    let service = AgentService {
        name: "shout".into(),
        target: zs_services::xnat::Target::Local(private_addr.to_string()),
        token: Some("a long random secret".into()),
        udp: false,
        pool: zs_services::xnat::DEFAULT_POOL,
    };
    let config = ClientConfig::secured(server.control().client_security());
    let agent = run_agent(server.control_addr(), config, vec![service]);
    while server.stats()[0].agents == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A visitor of the public address.
    let mut visitor = TcpStream::connect(server.public_addr("shout").unwrap()).await?;
    visitor.write_all(b"hello from outside").await?;
    visitor.shutdown().await?;
    let mut answer = String::new();
    visitor.read_to_string(&mut answer).await?;
    println!("the private service answered: {answer}");
    println!("{:?}", server.stats()[0]);
    agent.stop().await;
    server.shutdown().await;
    Ok(())
}
