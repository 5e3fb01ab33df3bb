//! A handler that answers later, from another thread, while other calls go on.
//!
//! cargo run -p zs-examples --example delayed_reply

use std::time::{Duration, Instant};

use zs::{Client, Router, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    // The handler keeps the responder and returns at once; the reply comes later.
    router.console_delayed("slow_lookup", |_peer, key, responder| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500)); // e.g. a call to another server
            responder.reply(format!("value of {key}"));
        });
    });
    router.console("ping", |_peer, _| "pong");
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    let client = Client::connect(server.local_addr(), server.client_security()).await?;

    let started = Instant::now();
    let slow = client.call_console("slow_lookup", "answer");
    let quick = async {
        let r = client.call_console("ping", "").await;
        println!("ping answered after {:?} while the lookup waits: {}", started.elapsed(), r.unwrap());
    };
    let (slow, ()) = tokio::join!(slow, quick);
    println!("lookup answered after {:?}: {}", started.elapsed(), slow?);
    server.shutdown().await;
    Ok(())
}
