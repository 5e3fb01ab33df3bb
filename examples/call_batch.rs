//! Many calls ready at once: `call_console_batch` sends them together and hands back each
//! reply as its own result, in order.
//!
//! cargo run -p zs-examples --example call_batch

use zs::{Client, Router, Server, ServerConfig, Text};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    router.console("square", |_peer, n: Text| {
        let n: u64 = n.parse().map_err(|_| format!("`{n}` is not a number"))?;
        Ok::<_, zs::HandlerError>((n * n).to_string())
    });
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    let client = Client::connect(server.local_addr(), server.client_security()).await?;

    // One write, one wake-up and one timer for the whole batch.
    let inputs: Vec<String> = (1..=10).map(|n| n.to_string()).chain(["ten".into()]).collect();
    let replies = client.call_console_batch("square", inputs.clone()).await;
    for (input, reply) in inputs.iter().zip(replies) {
        match reply {
            Ok(square) => println!("{input}² = {square}"),
            // A refusal is the result of its own call only.
            Err(e) => println!("{input}: {e}"),
        }
    }
    server.shutdown().await;
    Ok(())
}
