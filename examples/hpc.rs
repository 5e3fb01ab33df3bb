//! HPC: a heavy handler runs on the worker pool; the connection keeps serving meanwhile,
//! and the reply is skipped if the caller has gone.
//!
//! cargo run -p zs-examples --example hpc

use std::time::Instant;

use zs::{BlockingClient, Router, Server, ServerConfig, Text};

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    let server = rt.block_on(async {
        let mut router = Router::new();
        router.hpc_console("fib", |_peer, n: Text| match n.parse::<u64>() {
            Ok(n) if n <= 45 => Ok(fib(n).to_string()),
            _ => Err(format!("not a number from 0 to 45: {n}")),
        });
        router.console("ping", |_peer, _| "pong");
        Server::bind("127.0.0.1:0", router, ServerConfig::default()).await
    })?;

    // Synchronous code: the blocking client (the original's WaitSend).
    let client = BlockingClient::connect(server.local_addr(), server.client_security())?;
    let t = Instant::now();
    println!("fib(32) = {} in {:?}", client.call_console("fib", "32")?, t.elapsed());
    println!("ping: {}", client.call_console("ping", "")?);
    println!("bad input: {}", client.call_console("fib", "x").unwrap_err());
    drop(client);
    rt.block_on(server.shutdown());
    Ok(())
}
