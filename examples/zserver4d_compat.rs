//! ZServer4D compatibility: one router served to native zserver clients and, on a second
//! listener, to unmodified Delphi/FreePascal ZServer4D clients (here played by
//! `CompatClient`, which speaks the original's protocol byte for byte).
//!
//! cargo run -p zs-examples --example zserver4d_compat

use zs::compat::{CompatClient, CompatClientConfig, CompatConfig, Dfe, Element};
use zs::{Client, ClientConfig, DataFrame, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    router.console("echo", |_, text| text);
    router.stream("sum", |_, frame: DataFrame| {
        let mut r = frame.reader();
        let total: i64 = (0..frame.len()).filter_map(|_| r.read_i64().ok()).sum();
        let mut out = DataFrame::new();
        out.push(total);
        out
    });
    router.complete_buffer("upload", |_, data| {
        println!("server: a {} byte upload arrived whole", data.len());
        Ok::<_, zs::HandlerError>(())
    });
    let config = ServerConfig {
        compat: CompatConfig { listen: vec!["127.0.0.1:0".parse()?], ..CompatConfig::default() },
        ..ServerConfig::default()
    };
    let server = Server::bind("127.0.0.1:0", router, config).await?;
    println!("native clients on {}, ZServer4D clients on {}", server.local_addr(), server.compat_addrs()[0]);

    // A ZServer4D client: the handshake, a console call, a stream call (DataFrameEngine in
    // and out, converted to and from the router's DataFrame), a CompleteBuffer, a barrier.
    let old = CompatClient::connect(server.compat_addrs()[0], CompatClientConfig::default()).await?;
    println!(
        "ZServer4D client: cipher {} (none), id {}",
        old.cipher_model().cipher,
        old.cipher_model().peer_id
    );
    println!("ZServer4D client: echo -> {}", old.call_console("echo", "hello from Delphi").await?);
    let mut numbers = Dfe::new();
    numbers.push(Element::Integer(40)).push(Element::Int64(2));
    println!("ZServer4D client: sum -> {:?}", old.call_stream("sum", numbers).await?.elements);
    old.send_complete_buffer("upload", &vec![7u8; 100_000]).await?;
    old.wait().await?;

    // A native client of the same router, at the same time.
    let new = Client::connect_with(
        server.local_addr(),
        Router::new(),
        ClientConfig::secured(server.client_security()),
    )
    .await?;
    println!("zserver client: echo -> {}", new.call_console("echo", "hello from Rust").await?);
    Ok(())
}
