//! Peer life: ids, state, hooks, keepalive and idle timeout, connection cap, graceful
//! shutdown, statistics, IPv6.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use zs::{
    CallError, ClientConfig, ClientSecurity, CloseReason, GoAwayCode, Router, ServerConfig, ServerSecurity,
    Text,
};
use zs::{Client, Server};

struct Session {
    user: Mutex<Option<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_ids_addresses_and_typed_state() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut r = Router::new();
    let tx = events_tx.clone();
    r.on_connect(move |peer| {
        peer.set_state(Session { user: Mutex::new(None) });
        tx.send(format!("connect {}", peer.id())).unwrap();
    });
    r.on_disconnect(move |peer, reason| {
        events_tx
            .send(format!("disconnect {} {}", peer.id(), matches!(reason, CloseReason::PeerGoAway { .. })))
            .unwrap();
    });
    r.console("login", |peer, name: Text| {
        *peer.state::<Session>().unwrap().user.lock().unwrap() = Some(name.to_string());
        "ok"
    });
    r.console("whoami", |peer, _| {
        let s = peer.state::<Session>().unwrap();
        let user = s.user.lock().unwrap().clone().unwrap_or_else(|| "nobody".into());
        format!("{user}@{}", peer.remote_addr().ip())
    });
    let server = serve(r).await;
    let a = connect(&server).await.unwrap();
    let b = connect(&server).await.unwrap();
    let first = within("connect", events.recv()).await.unwrap();
    let second = within("connect", events.recv()).await.unwrap();
    assert_ne!(first, second, "distinct peer ids");
    a.call_console("login", "ann").await.unwrap();
    assert_eq!(a.call_console("whoami", "").await.unwrap(), "ann@127.0.0.1");
    assert_eq!(b.call_console("whoami", "").await.unwrap(), "nobody@127.0.0.1", "state is per peer");
    assert!(server.peers().iter().all(|p| p.state::<String>().is_none()), "state is typed");
    let a_id = server.peers().iter().find(|p| p.remote_addr() == a.local_addr()).unwrap().id();
    drop(a);
    assert_eq!(within("disconnect", events.recv()).await.unwrap(), format!("disconnect {a_id} true"));
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_holds_a_quiet_connection_and_idle_timeout_drops_a_silent_one() {
    // Plaintext: the silent raw socket below must get past the (absent) handshake.
    let mut config = plaintext();
    config.connection.keepalive_interval = Some(Duration::from_millis(100));
    config.connection.idle_timeout = Some(Duration::from_millis(400));
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    let server = serve_with(r, config).await;

    // A zserver client answers pings, so a quiet but live connection stays up.
    let mut cc = ClientConfig::default();
    cc.connection.keepalive_interval = None;
    let client = connect_with(&server, Router::new(), cc).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(client.call_console("echo", "alive").await.unwrap(), "alive");

    // A raw socket that never answers is dropped with an idle-timeout goaway.
    let frames = raw_exchange(server.local_addr(), b"").await;
    assert!(frames.iter().any(|f| f.header.kind == zs::wire::Kind::Ping), "pinged first");
    let last = frames.last().unwrap();
    let (code, _) = zs::wire::body::parse_code_message(&last.body).unwrap();
    assert_eq!(GoAwayCode::from_code(code), GoAwayCode::IdleTimeout);
    assert_eq!(server.stats().idle_timeouts, 1);
    assert!(client.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_set_while_running_applies_to_new_connections() {
    let mut config = plaintext();
    config.connection.keepalive_interval = Some(Duration::from_millis(100));
    config.connection.idle_timeout = None;
    let server = serve_with(Router::new(), config).await;
    assert_eq!(server.idle_timeout(), None);
    server.set_idle_timeout(Some(Duration::from_millis(400)));
    assert_eq!(server.idle_timeout(), Some(Duration::from_millis(400)));
    // Without an idle timeout this socket would be held for ever (and the read time out).
    let frames = raw_exchange(server.local_addr(), b"").await;
    let (code, _) = zs::wire::body::parse_code_message(&frames.last().unwrap().body).unwrap();
    assert_eq!(GoAwayCode::from_code(code), GoAwayCode::IdleTimeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_told_the_server_is_full() {
    for security in [ServerSecurity::Plaintext, ServerSecurity::default()] {
        let encrypted = !matches!(security, ServerSecurity::Plaintext);
        let config = ServerConfig { max_connections: 3, security, ..ServerConfig::default() };
        let mut r = Router::new();
        r.console("echo", |_, t| t);
        let server = serve_with(r, config).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            let c = connect(&server).await.unwrap();
            c.call_console("echo", "").await.unwrap();
            held.push(c);
        }
        if encrypted {
            // Refused before the handshake: connecting fails and says why.
            let err = connect(&server).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            assert!(err.to_string().contains("server full"), "{err}");
        } else {
            let extra = connect(&server).await.unwrap();
            let reason = within("refused", extra.closed()).await;
            assert!(
                matches!(reason, CloseReason::PeerGoAway { code: GoAwayCode::ServerFull, .. }),
                "{reason}"
            );
        }
        assert_eq!(server.stats().connections_refused, 1);
        held.pop();
        wait_until("slot freed", || server.connection_count() <= 2).await;
        let again = connect(&server).await.unwrap();
        assert_eq!(again.call_console("echo", "in").await.unwrap(), "in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_in_flight() {
    let started = Arc::new(AtomicUsize::new(0));
    let mut r = Router::new();
    let s = started.clone();
    r.console_async("work", move |_, t: Text| {
        s.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            format!("done {t}")
        }
    });
    let server = serve(r).await;
    let clients: Vec<_> = futures_util::future::join_all((0..4).map(|_| connect(&server)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let calls: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = c.peer().clone();
            tokio::spawn(async move { p.call_console("work", i.to_string()).await })
        })
        .collect();
    wait_until("calls start", || started.load(Ordering::SeqCst) >= 4).await;
    within("shutdown", server.shutdown()).await;
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), format!("done {i}").as_str(), "in-flight call finished");
    }
    for c in &clients {
        let reason = within("closed", c.closed()).await;
        assert!(matches!(reason, CloseReason::PeerGoAway { code: GoAwayCode::ShuttingDown, .. }), "{reason}");
    }
    assert!(connect(&server).await.is_err(), "no longer listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_through_the_api_and_the_builtin_command() {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    for _ in 0..5 {
        client.call_console("echo", "x").await.unwrap();
    }
    let _ = client.call_console("nope", "").await;
    let json: serde_json::Value =
        serde_json::from_str(&client.call_console("stats", "").await.unwrap()).unwrap();
    // Counts are published once per read batch: the stats call itself is not in yet.
    assert_eq!(json["console_in"], 6, "{json}");
    assert_eq!(json["unknown_commands"], 1);
    assert_eq!(json["connections_active"], 1);
    assert!(json["bytes_in"].as_u64().unwrap() > 0);
    let s = server.stats();
    assert_eq!(s.console_in, 7);
    assert_eq!(s.frames_in, 7);
    assert_eq!(s.errors_out, 1);
    // A client publishes its counts at the end of the read that resolved the call.
    wait_until("client counts published", || client.stats().frames_in >= 7).await;
    assert_eq!(client.stats().commands_out, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_ipv6_and_ipv4_together() {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    let server = match Server::bind("localhost:0", r, ServerConfig::default()).await {
        Ok(s) => s,
        Err(e) => panic!("bind localhost: {e}"),
    };
    // Every resolved address gets the same ephemeral port; use each.
    let port = server.local_addr().port();
    assert!(server.local_addrs().iter().all(|a| a.port() == port), "{:?}", server.local_addrs());
    for addr in server.local_addrs() {
        let config = ClientConfig::secured(server.client_security());
        let c = Client::connect_with(*addr, Router::new(), config).await.unwrap();
        assert_eq!(c.call_console("echo", addr.to_string()).await.unwrap(), addr.to_string().as_str());
    }
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    let v6 = Server::bind("[::1]:0", r, ServerConfig::default()).await;
    if let Ok(v6) = v6 {
        let c = connect(&v6).await.unwrap();
        assert!(c.peer().remote_addr().is_ipv6());
        assert_eq!(c.call_console("echo", "six").await.unwrap(), "six");
    } else {
        eprintln!("no IPv6 loopback on this machine: skipped the ::1 check");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_clear() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let err = Client::connect(addr, ClientSecurity::Plaintext).await.unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A server that never answers the handshake: connecting gives up at its timeout.
    let config = ClientConfig { connect_timeout: Duration::from_millis(300), ..ClientConfig::default() };
    let err = Client::connect_with(silent.local_addr().unwrap(), Router::new(), config).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // In plaintext there is no handshake: calls time out instead.
    let config = ClientConfig::secured(ClientSecurity::Plaintext);
    let client = Client::connect_with(silent.local_addr().unwrap(), Router::new(), config).await.unwrap();
    let err = client.call_console_timeout("echo", "", Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err, CallError::Timeout(Duration::from_millis(50)));
    assert!(err.to_string().contains("timed out after 50ms"), "{err}");
}
