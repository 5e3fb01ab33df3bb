//! Resumable sessions (StableIO): a client whose link is cut again and again, by a proxy
//! standing in for a bad mobile network, while it calls the server and the server pushes
//! to it. The session resumes after every cut; nothing is lost, repeated or reordered.
//!
//! cargo run -p zs-examples --example stable_io

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use zs::{Client, ClientConfig, Router, Server, ServerConfig, SessionConfig, SessionEvent};
use zs_bench::fault_proxy::{FaultProxy, Faults};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A server: sessions are on by default for the clients that ask for one.
    let mut router = Router::new();
    router.console("add", |_, text| {
        let (a, b) = text.split_once('+').unwrap_or(("0", "0"));
        (a.trim().parse::<u64>().unwrap_or(0) + b.trim().parse::<u64>().unwrap_or(0)).to_string()
    });
    router.on_session(|peer, event| println!("  server: peer {} {}", peer.id(), describe(event)));
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;

    // The bad network: every link through it is cut after 1 to 6 KB.
    let faults = Faults { cut_after: Some(1_000..6_000), seed: 42, ..Faults::default() };
    let proxy = FaultProxy::start(server.local_addr(), faults).await?;

    // A client that asks for a session (it needs an encrypted channel: Noise here).
    let pushes = Arc::new(AtomicU64::new(0));
    let mut router = Router::new();
    let got = pushes.clone();
    router.direct_console("news", move |_, text| {
        let n: u64 = text.parse().unwrap_or(u64::MAX);
        assert_eq!(n, got.fetch_add(1, Relaxed), "pushes arrive once each, in order");
    });
    router.on_session(|_, event| println!("  client: {}", describe(event)));
    let config = ClientConfig {
        session: Some(SessionConfig::default()),
        ..ClientConfig::secured(server.client_security())
    };
    let client = Client::connect_with(proxy.addr(), router, config).await?;

    for i in 0..200u64 {
        let sum = client.call_console("add", format!("{i} + {i}")).await?;
        assert_eq!(sum.as_str(), (2 * i).to_string());
        server.broadcast_console("news", i.to_string(), |_| true)?;
    }
    while pushes.load(Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = client.session().expect("a session");
    println!(
        "200 calls answered and 200 pushes received across {} cuts ({} resumes, {} bytes sent again)",
        proxy.stats().cuts.load(Relaxed),
        status.resumes,
        status.replayed_bytes
    );
    Ok(())
}

fn describe(event: &SessionEvent) -> String {
    match event {
        SessionEvent::LinkLost { reason } => format!("link lost ({reason})"),
        SessionEvent::Resumed { after, replayed } => {
            format!("resumed after {after:.1?}, {replayed} bytes sent again")
        }
        SessionEvent::Expired { reason } => format!("expired: {reason}"),
    }
}
