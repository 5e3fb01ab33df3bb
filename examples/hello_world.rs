//! A server with a console and a stream command, and a client that calls both.
//!
//! cargo run -p zs-examples --example hello_world

use zs::{Client, DataFrame, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    // Console: text in, text out.
    router.console("hello", |_peer, name| format!("hello, {name}"));
    // Stream: DataFrame in, DataFrame out; typed reads fail clearly on a mismatch.
    router.stream("add", |_peer, df: DataFrame| {
        let mut r = df.reader();
        let (a, b) = (r.read_i64()?, r.read_i64()?);
        let mut out = DataFrame::new();
        out.write_i64(a + b);
        Ok::<_, zs::HandlerError>(out)
    });
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    println!("server listening on {}", server.local_addr());

    let client = Client::connect(server.local_addr(), server.client_security()).await?;
    println!("{}", client.call_console("hello", "world").await?);
    let mut df = DataFrame::new();
    df.write_i64(40).write_i64(2);
    let sum = client.call_stream("add", df).await?;
    println!("40 + 2 = {}", sum.reader().read_i64()?);
    // Unknown commands are errors that name the command.
    if let Err(e) = client.call_console("goodbye", "").await {
        println!("as expected: {e}");
    }
    server.shutdown().await;
    Ok(())
}
