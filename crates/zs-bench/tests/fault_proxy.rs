//! The fault-injecting proxy over real sockets: it forwards intact, cuts on demand and at
//! random byte counts, slows and stalls, and stops when dropped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zs::{CallError, Client, ClientConfig, Router, Server, ServerConfig, ServerHandle, StreamOptions};
use zs_bench::fault_proxy::{FaultProxy, Faults};

const PATIENCE: Duration = Duration::from_secs(20);

async fn server() -> ServerHandle {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.big_stream("sink", |_, mut s: zs::IncomingStream| async move {
        while let Some(c) = s.next_chunk().await {
            c?;
        }
        Ok::<_, CallError>(())
    });
    Server::bind("127.0.0.1:0", r, ServerConfig::default()).await.unwrap()
}

async fn client_via(proxy: &FaultProxy, server: &ServerHandle) -> std::io::Result<Client> {
    Client::connect_with(proxy.addr(), Router::new(), ClientConfig::secured(server.client_security())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_everything_intact_without_faults() {
    let server = server().await;
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
    let client = client_via(&proxy, &server).await.unwrap();
    for i in 0..200 {
        let text = format!("call {i}");
        assert_eq!(client.call_console("echo", text.clone()).await.unwrap(), text.as_str());
    }
    let size = 4u64 << 20;
    let t =
        client.send_big_stream("sink", zs_bench::source::Noise::new(size, 3), StreamOptions::with_len(size));
    tokio::time::timeout(PATIENCE, t.finish()).await.unwrap().unwrap();
    assert_eq!(proxy.stats().links.load(Ordering::Relaxed), 1);
    assert!(proxy.stats().bytes.load(Ordering::Relaxed) > size);
    assert_eq!(proxy.stats().cuts.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_every_link_on_demand_and_keeps_accepting() {
    let server = server().await;
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
    let a = client_via(&proxy, &server).await.unwrap();
    let b = client_via(&proxy, &server).await.unwrap();
    assert_eq!(a.call_console("echo", "a").await.unwrap(), "a");
    assert_eq!(b.call_console("echo", "b").await.unwrap(), "b");
    proxy.cut_all();
    tokio::time::timeout(PATIENCE, a.closed()).await.unwrap();
    tokio::time::timeout(PATIENCE, b.closed()).await.unwrap();
    // Counted as each link's task ends, which may be just after its sockets closed.
    let counted = async {
        while proxy.stats().cuts.load(Ordering::Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, counted).await.expect("both cuts counted");
    assert_eq!(proxy.stats().cuts.load(Ordering::Relaxed), 2);
    let c = client_via(&proxy, &server).await.unwrap();
    assert_eq!(c.call_console("echo", "after").await.unwrap(), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_a_link_at_a_random_byte_count() {
    let server = server().await;
    let faults = Faults { cut_after: Some(20_000..40_000), seed: 7, ..Faults::default() };
    let proxy = FaultProxy::start(server.local_addr(), faults).await.unwrap();
    let client = client_via(&proxy, &server).await.unwrap();
    let size = 1u64 << 20;
    let t =
        client.send_big_stream("sink", zs_bench::source::Noise::new(size, 5), StreamOptions::with_len(size));
    let result = tokio::time::timeout(PATIENCE, t.finish()).await.unwrap();
    assert!(matches!(result, Err(CallError::Disconnected(_))), "{result:?}");
    assert_eq!(proxy.stats().cuts.load(Ordering::Relaxed), 1);
    let forwarded = proxy.stats().bytes.load(Ordering::Relaxed);
    // Never past the cut point (a read in flight the other way may go unforwarded).
    assert!(forwarded > 0 && forwarded < 40_000, "forwarded {forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slows_and_stalls_links_within_bounds() {
    let server = server().await;
    // 256 KiB at 1 MB/s each way takes at least a quarter of a second.
    let slow =
        FaultProxy::start(server.local_addr(), Faults { bytes_per_s: Some(1_000_000), ..Faults::default() })
            .await
            .unwrap();
    let client = client_via(&slow, &server).await.unwrap();
    let size = 256u64 << 10;
    let start = Instant::now();
    let t =
        client.send_big_stream("sink", zs_bench::source::Noise::new(size, 9), StreamOptions::with_len(size));
    tokio::time::timeout(PATIENCE, t.finish()).await.unwrap().unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());

    // Every read stalled 40-50 ms: each call waits at least twice that (request and reply).
    let faults = Faults {
        stall_chance: 1.0,
        stall_for: Duration::from_millis(40)..Duration::from_millis(50),
        ..Faults::default()
    };
    let stalling = FaultProxy::start(server.local_addr(), faults).await.unwrap();
    let client = client_via(&stalling, &server).await.unwrap();
    let start = Instant::now();
    for i in 0..5 {
        let text = format!("{i}");
        assert_eq!(client.call_console("echo", text.clone()).await.unwrap(), text.as_str());
    }
    assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
    assert!(stalling.stats().stalls.load(Ordering::Relaxed) >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_when_dropped_and_refuses_non_loopback_upstreams() {
    let server = server().await;
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
    let client = client_via(&proxy, &server).await.unwrap();
    let addr = proxy.addr();
    drop(proxy);
    tokio::time::timeout(PATIENCE, client.closed()).await.unwrap();
    // The listener is gone with it (give the accept task a moment to end).
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the proxy still accepts after being dropped");
    let err = FaultProxy::start("10.0.0.1:1".parse().unwrap(), Faults::default()).await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
