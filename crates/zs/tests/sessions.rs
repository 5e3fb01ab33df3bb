//! Resumable sessions over real loopback links cut by a fault-injecting proxy.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{hash_stream, serve_with, wait_until, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs::secure::SecureStream;
use zs::wire::session::{Answer, Hello, Refusal};
use zs::{
    ClientConfig, IncomingStream, Peer, Router, ServerConfig, SessionConfig, SessionEvent, StreamOptions,
};
use zs_bench::fault_proxy::{FaultProxy, Faults};
use zs_bench::source::Noise;

fn sessions(keep: Duration) -> SessionConfig {
    SessionConfig { min_backoff: Duration::from_millis(5), keep_detached: keep, ..SessionConfig::default() }
}

fn session_client(server: &zs::ServerHandle) -> ClientConfig {
    ClientConfig {
        security: server.client_security(),
        session: Some(sessions(Duration::from_secs(60))),
        ..ClientConfig::default()
    }
}

type Log = Arc<Mutex<Vec<u64>>>;

/// Numbers must be 0, 1, 2, ... `n - 1`: each once, in order.
fn assert_exactly_once_in_order(what: &str, log: &Log, n: u64) {
    let got = log.lock().unwrap();
    let want: Vec<u64> = (0..n).collect();
    if *got != want {
        let dup = got.windows(2).find(|w| w[1] <= w[0]);
        let gap = got.windows(2).find(|w| w[1] > w[0] + 1);
        panic!("{what}: {} of {n} arrived; first repeat {dup:?}, first gap {gap:?}", got.len());
    }
}

#[tokio::test]
async fn calls_carry_on_across_cut_links_over_noise_and_tls() {
    for tls in [false, true] {
        let mut config = ServerConfig::default();
        if tls {
            let (cert, key) = zs::secure::self_signed(&["127.0.0.1".to_string()]).unwrap();
            let tls = zs::secure::TlsServer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
            config.security = zs::ServerSecurity::Tls(tls);
        }
        let mut router = Router::new();
        router.console("echo", |_, text| text.to_owned());
        let server = serve_with(router, config).await;
        let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut router = Router::new();
        let seen = events.clone();
        router.on_session(move |_, e| seen.lock().unwrap().push(e.clone()));
        let client = zs::Client::connect_with(proxy.addr(), router, session_client(&server)).await.unwrap();
        for round in 0..20u32 {
            let calls: Vec<_> =
                (0..50).map(|i| client.call_console("echo", format!("{round}-{i}"))).collect();
            if round % 2 == 1 {
                proxy.cut_all();
            }
            for (i, c) in calls.into_iter().enumerate() {
                let reply = within("a call across a cut", c).await.expect("answered");
                assert_eq!(reply.as_str(), format!("{round}-{i}"));
            }
        }
        let status = client.session().unwrap();
        assert!(status.resumes >= 5, "tls {tls}: {status:?}");
        assert_eq!(server.connection_count(), 1, "one logical connection throughout");
        assert_eq!(server.session_count(), 1);
        let ev = events.lock().unwrap();
        assert!(ev.iter().any(|e| matches!(e, SessionEvent::LinkLost { .. })), "{ev:?}");
        assert!(ev.iter().any(|e| matches!(e, SessionEvent::Resumed { .. })), "{ev:?}");
        let stats = client.stats();
        assert_eq!(stats.sessions_resumed, status.resumes);
        assert!(stats.session_links_lost >= status.resumes);
    }
}

/// The acceptance test: a thousand links cut at random points while calls go
/// both ways, direct commands and broadcasts flow and a big stream is sent; every message
/// arrives exactly once and in order, every call is answered, the stream's hash matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cuts_during_mixed_traffic_lose_and_duplicate_nothing() {
    const CUTS: u64 = 1000;
    let notes: Log = Arc::default();
    let streams = Arc::new(Mutex::new(Vec::new()));
    // The server's side of the client, as its on_connect hook sees it (that hook may run
    // after the client's connect has returned).
    let (seen, mut client_peer) = tokio::sync::mpsc::unbounded_channel::<Peer>();
    let mut router = Router::new();
    router.console("echo", |_, text| text.to_owned());
    let log = notes.clone();
    router.direct_console("note", move |_, text| log.lock().unwrap().push(text.parse().unwrap()));
    let got = streams.clone();
    router.big_stream("sink", move |_, mut s: IncomingStream| {
        let got = got.clone();
        async move {
            let hash = hash_stream(&mut s).await?;
            got.lock().unwrap().push((s.received(), hash));
            Ok::<(), zs::CallError>(())
        }
    });
    router.on_connect(move |p| drop(seen.send(p.clone())));
    let server = serve_with(router, ServerConfig::default()).await;
    let faults = Faults { cut_after: Some(2_000..60_000), seed: 1000, ..Faults::default() };
    let proxy = FaultProxy::start(server.local_addr(), faults).await.unwrap();

    let ticks: Log = Arc::default();
    let mut router = Router::new();
    let log = ticks.clone();
    router.direct_console("tick", move |_, text| log.lock().unwrap().push(text.parse().unwrap()));
    router.console("whoami", |_, text| format!("client:{text}"));
    let client =
        Arc::new(zs::Client::connect_with(proxy.addr(), router, session_client(&server)).await.unwrap());
    let server_side = tokio::time::timeout(Duration::from_secs(60), client_peer.recv())
        .await
        .expect("the server saw the client within 60 s")
        .expect("the server saw the client");

    let stop = Arc::new(AtomicBool::new(false));
    let (notes_sent, ticks_sent, calls_done) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // A big stream, resent while cuts continue (each must arrive whole and verified).
    let big = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut seed = 0;
            while !stop.load(Relaxed) {
                seed += 1;
                let len = 2 << 20;
                let mut expect = blake3::Hasher::new();
                let mut src = Noise::new(len, seed);
                let mut buf = vec![0; 1 << 16];
                loop {
                    let n = src.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    expect.update(&buf[..n]);
                }
                let t = client.send_big_stream("sink", Noise::new(len, seed), StreamOptions::with_len(len));
                assert_eq!(t.await.expect("the stream arrives whole"), len);
                sent.push((len, expect.finalize()));
            }
            sent
        })
    };
    // Direct commands and calls from the client, in rounds (the calls' replies pace it).
    let calls = {
        let (client, stop, done, sent) =
            (client.clone(), stop.clone(), calls_done.clone(), notes_sent.clone());
        tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Relaxed) {
                for _ in 0..50 {
                    let n = sent.load(Relaxed);
                    client.send_console("note", n.to_string()).await.unwrap();
                    sent.store(n + 1, Relaxed);
                }
                let batch: Vec<_> =
                    (0..20).map(|i| client.call_console("echo", format!("{round}/{i}"))).collect();
                for (i, c) in batch.into_iter().enumerate() {
                    assert_eq!(c.await.expect("every call is answered").as_str(), format!("{round}/{i}"));
                    done.fetch_add(1, Relaxed);
                }
                round += 1;
            }
        })
    };
    let server_task = {
        let (server, peer, stop, sent) =
            (server.clone(), server_side.clone(), stop.clone(), ticks_sent.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                assert_eq!(server.broadcast_console("tick", n.to_string(), |_| true).unwrap(), 1);
                n += 1;
                sent.store(n, Relaxed);
                let who = peer.call_console("whoami", n.to_string()).await.expect("server's call answered");
                assert_eq!(who.as_str(), format!("client:{n}"));
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while client.session().unwrap().resumes < CUTS {
        let s = client.session().unwrap();
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} resumes in 300 s ({} cuts, {} calls, {} notes, {} ticks)",
            s.resumes,
            proxy.stats().cuts.load(Relaxed),
            calls_done.load(Relaxed),
            notes_sent.load(Relaxed),
            ticks_sent.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Relaxed);
    for (what, t) in [("calls", calls), ("server", server_task)] {
        let r = tokio::time::timeout(common::PATIENCE, t).await;
        assert!(
            matches!(r, Ok(Ok(()))),
            "{what} did not stop: {r:?}; client {:?}, server {:?}, {} cuts, {} notes sent / {} got, {} ticks sent / {} got",
            client.session(),
            server_side.session(),
            proxy.stats().cuts.load(Relaxed),
            notes_sent.load(Relaxed),
            notes.lock().unwrap().len(),
            ticks_sent.load(Relaxed),
            ticks.lock().unwrap().len()
        );
    }
    let sent_streams = within("the last stream ends", big).await.unwrap();
    let (n_notes, n_ticks) = (notes_sent.load(Relaxed), ticks_sent.load(Relaxed));
    wait_until("every note arrives", || notes.lock().unwrap().len() as u64 >= n_notes).await;
    wait_until("every tick arrives", || ticks.lock().unwrap().len() as u64 >= n_ticks).await;
    assert_exactly_once_in_order("client's direct commands", &notes, n_notes);
    assert_exactly_once_in_order("server's broadcasts", &ticks, n_ticks);
    assert_eq!(*streams.lock().unwrap(), sent_streams, "every big stream whole, once, in order");
    assert!(calls_done.load(Relaxed) > 0 && !sent_streams.is_empty());
    assert_eq!(server.connection_count(), 1);
    println!(
        "{} resumes, {} cuts, {} calls, {n_notes} notes, {n_ticks} ticks, {} streams",
        client.session().unwrap().resumes,
        proxy.stats().cuts.load(Relaxed),
        calls_done.load(Relaxed),
        sent_streams.len()
    );
}

#[tokio::test]
async fn a_resume_without_the_secret_is_refused() {
    let mut router = Router::new();
    router.console("echo", |_, text| text.to_owned());
    let server = serve_with(router, ServerConfig::default()).await;
    let client =
        zs::Client::connect_with(server.local_addr(), Router::new(), session_client(&server)).await.unwrap();
    let id = client.session().unwrap().id;
    let mut id_bytes = [0u8; 16];
    for (i, b) in id_bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap();
    }
    // Knowing the id (and guessing a count) is not enough.
    for (id, want) in [(id_bytes, Refusal::BadProof), ([0xAB; 16], Refusal::Unknown)] {
        let mut s = SecureStream::connect_for_session(
            server.local_addr(),
            &server.client_security(),
            common::PATIENCE,
        )
        .await
        .unwrap();
        let mut hello = BytesMut::new();
        Hello::Resume { id, received: 0, proof: [7; 32] }.encode(&mut hello);
        s.write_all(&hello).await.unwrap();
        s.flush().await.unwrap();
        let mut buf = Vec::new();
        within("the server answers and closes", s.read_to_end(&mut buf)).await.ok();
        match Answer::parse(&buf).unwrap() {
            Some((Answer::Refused { code, message }, _)) => assert_eq!(code, want, "{message}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(server.stats().sessions_refused, 1);
    // The real session is untouched.
    assert_eq!(client.call_console("echo", "still mine").await.unwrap().as_str(), "still mine");
    assert_eq!(client.session().unwrap().resumes, 0);
}

#[tokio::test]
async fn a_session_whose_link_does_not_come_back_expires_on_both_ends() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(Mutex::new(None));
    let mut router = Router::new();
    let (seen, why) = (events.clone(), closed.clone());
    router.on_session(move |_, e| seen.lock().unwrap().push(e.clone()));
    router.on_disconnect(move |_, reason| *why.lock().unwrap() = Some(reason.to_string()));
    let config =
        ServerConfig { sessions: Some(sessions(Duration::from_millis(300))), ..ServerConfig::default() };
    let server = serve_with(router, config).await;
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
    let client =
        zs::Client::connect_with(proxy.addr(), Router::new(), session_client(&server)).await.unwrap();
    assert_eq!(server.session_count(), 1);
    drop(proxy); // every link cut, and no way back
    let reason = within("the client gives up", client.closed()).await;
    assert!(reason.to_string().contains("could not resume"), "{reason}");
    wait_until("the server drops the session", || server.session_count() == 0).await;
    wait_until("the server's connection closes", || server.connection_count() == 0).await;
    let why = closed.lock().unwrap().clone().unwrap();
    assert!(why.contains("session expired"), "{why}");
    let ev = events.lock().unwrap();
    assert!(matches!(ev.first(), Some(SessionEvent::LinkLost { .. })), "{ev:?}");
    assert!(matches!(ev.last(), Some(SessionEvent::Expired { .. })), "{ev:?}");
    assert_eq!(server.stats().sessions_expired, 1);
    assert_eq!(client.stats().sessions_expired, 1);
}

#[tokio::test]
async fn a_full_replay_buffer_makes_the_writer_wait_and_memory_stays_flat() {
    const BUDGET: usize = 64 << 10;
    let got: Log = Arc::default();
    let mut router = Router::new();
    let log = got.clone();
    router.direct_console("note", move |_, text| log.lock().unwrap().push(text[..8].parse().unwrap()));
    let server = serve_with(router, ServerConfig::default()).await;
    // A slow link (256 KiB/s): the client writes far faster than it drains.
    let faults = Faults { bytes_per_s: Some(256 << 10), ..Faults::default() };
    let proxy = FaultProxy::start(server.local_addr(), faults).await.unwrap();
    let mut config = session_client(&server);
    config.session.as_mut().unwrap().replay_budget = BUDGET;
    // A small outbox too, so the application itself waits for the link.
    config.connection.max_queued_bytes = 16 << 10;
    let client = zs::Client::connect_with(proxy.addr(), Router::new(), config).await.unwrap();
    let pad = "x".repeat(1000);
    let n = 1000u64; // ~1 MB: about 4 s through the link
    let mut most = 0;
    for i in 0..n {
        client.send_console("note", format!("{i:08}{pad}")).await.unwrap();
        most = most.max(client.session().unwrap().unacked_bytes);
        if i == n / 2 {
            proxy.cut_all(); // and a cut in the middle, for good measure
        }
    }
    within("every note arrives", async {
        while (got.lock().unwrap().len() as u64) < n {
            most = most.max(client.session().unwrap().unacked_bytes);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_exactly_once_in_order("notes through a slow link", &got, n);
    assert!(most as usize <= BUDGET + 64, "held {most} bytes with a budget of {BUDGET}");
    assert!(most as usize > BUDGET / 2, "the budget was reached ({most})");
}

#[tokio::test]
async fn sessions_are_refused_clearly_where_they_cannot_work() {
    let config = ServerConfig { sessions: None, ..ServerConfig::default() };
    let server = serve_with(Router::new(), config).await;
    let e = zs::Client::connect_with(server.local_addr(), Router::new(), session_client(&server))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not keep sessions"), "{e}");
    let plain = serve_with(Router::new(), common::plaintext()).await;
    let config = ClientConfig { security: zs::ClientSecurity::Plaintext, ..session_client(&plain) };
    let e = zs::Client::connect_with(plain.local_addr(), Router::new(), config).await.unwrap_err();
    assert!(e.to_string().contains("need an encrypted channel"), "{e}");
}

#[tokio::test]
async fn a_malformed_hello_closes_only_its_connection() {
    let mut router = Router::new();
    router.console("echo", |_, text| text.to_owned());
    let server = serve_with(router, ServerConfig::default()).await;
    let client =
        zs::Client::connect_with(server.local_addr(), Router::new(), session_client(&server)).await.unwrap();
    let failed_before = server.stats().handshakes_failed;
    for bad in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"zss\x09\x00", b"zss\x01\x07", b"zs"] {
        let security = server.client_security();
        let mut s = SecureStream::connect_for_session(server.local_addr(), &security, common::PATIENCE)
            .await
            .unwrap();
        s.write_all(bad).await.unwrap();
        s.flush().await.unwrap();
        if bad.len() < 3 {
            s.shutdown().await.unwrap(); // a hello cut short
        }
        let mut buf = Vec::new();
        within("the server closes the connection", s.read_to_end(&mut buf)).await.ok();
        assert!(buf.is_empty(), "{bad:?}: no answer to a malformed hello, got {buf:?}");
    }
    wait_until("each is counted as a failed handshake", || {
        server.stats().handshakes_failed == failed_before + 4
    })
    .await;
    assert_eq!(server.session_count(), 1);
    assert_eq!(client.call_console("echo", "unharmed").await.unwrap().as_str(), "unharmed");
}
