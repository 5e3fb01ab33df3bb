//! Secure channels: a Noise server with a persistent key, a client that pins it, a client
//! that trusts it on first use, a server that admits known clients only, and TLS 1.3 with a
//! self-signed certificate and post-quantum key exchange.
//!
//! cargo run -p zs-examples --example secure

use zs::secure::{NoiseClient, NoiseServer, TlsClient, TlsServer};
use zs::{Client, ClientSecurity, KeyPair, Router, Server, ServerConfig, ServerSecurity, Trust};

/// Answers `whoami` with the key the client proved.
fn router() -> Router {
    let mut router = Router::new();
    router.console("whoami", |peer, _| {
        format!("you are {}", peer.remote_key().map(|k| k.to_string()).unwrap_or_default())
    });
    router
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zs-secure-example-{}", std::process::id()));

    // 1. A server whose key survives restarts (created owner-only on first run).
    let (key, created) = KeyPair::load_or_create(&dir.join("server.key"))?;
    println!("server key {} ({})", key.public(), if created { "created" } else { "loaded" });
    let security = ServerSecurity::Noise(NoiseServer { key: Some(key.clone()), allowed_clients: None });
    let config = ServerConfig { security, ..ServerConfig::default() };
    let server = Server::bind("127.0.0.1:0", router(), config).await?;

    // A client that pins the key it was given out of band.
    let client = Client::connect(server.local_addr(), key.public()).await?;
    println!(
        "pinned: {} over {}",
        client.call_console("whoami", "").await?,
        client.channel().unwrap().protocol
    );

    // A client with the wrong key is refused, and told which key the server presented.
    if let Err(e) = Client::connect(server.local_addr(), KeyPair::generate().public()).await {
        println!("wrong key: {e}");
    }

    // Trust on first use, recorded in a known-servers file; a changed key would be refused.
    let known = Trust::KnownServers {
        file: dir.join("known_servers"),
        name: Some("example".into()),
        first_use: true,
    };
    let tofu = Client::connect(server.local_addr(), known).await?;
    println!("first use: recorded in {}", dir.join("known_servers").display());
    drop(tofu);

    // 2. A server that admits known clients only (server-to-server links).
    let friend = KeyPair::generate();
    let security =
        ServerSecurity::Noise(NoiseServer { key: None, allowed_clients: Some(vec![friend.public()]) });
    let private =
        Server::bind("127.0.0.1:0", router(), ServerConfig { security, ..ServerConfig::default() }).await?;
    let trust: Trust = private.fingerprint().unwrap().into();
    let as_friend = ClientSecurity::Noise(NoiseClient { trust, key: Some(friend), ..NoiseClient::default() });
    let c = Client::connect(private.local_addr(), as_friend).await?;
    println!("mutual: {}", c.call_console("whoami", "").await?);

    // 3. TLS 1.3 with a self-signed certificate; the client pins its fingerprint.
    let (cert, cert_key) = zs::secure::self_signed(&["localhost".to_string()])?;
    let tls = TlsServer::from_pem(cert.as_bytes(), cert_key.as_bytes())?;
    let fingerprint = tls.fingerprint();
    let tls_server = Server::bind(
        "127.0.0.1:0",
        router(),
        ServerConfig { security: ServerSecurity::Tls(tls), ..ServerConfig::default() },
    )
    .await?;
    let c =
        Client::connect(tls_server.local_addr(), ClientSecurity::Tls(TlsClient::pinned(fingerprint))).await?;
    println!("tls: {}", c.channel().unwrap().protocol);

    for s in [server, private, tls_server] {
        s.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
