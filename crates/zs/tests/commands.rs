//! Every command form, in both directions, over real loopback sockets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use zs::{BlockingClient, ClientConfig, DataFrame, Router, Text};

fn server_router(seen: mpsc::UnboundedSender<String>) -> Router {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.console("upper", |_, t: Text| t.to_uppercase());
    r.stream("sum", |_, df: DataFrame| {
        let mut rd = df.reader();
        let (a, b) = (rd.read_i64()?, rd.read_i64()?);
        let mut out = DataFrame::new();
        out.write_i64(a + b).write_str(rd.read_str()?.to_owned());
        Ok::<_, zs::HandlerError>(out)
    });
    let s = seen.clone();
    r.direct_console("note", move |_, t| s.send(format!("note:{t}")).unwrap());
    r.direct_stream("note_df", move |_, df| seen.send(format!("note_df:{}", df.to_json())).unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_every_form() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(server_router(tx)).await;
    let client = connect(&server).await.unwrap();

    assert_eq!(client.call_console("echo", "hi").await.unwrap(), "hi");
    assert_eq!(client.call_console("UPPER", "mixed Case").await.unwrap(), "MIXED CASE", "names ignore case");
    let mut df = DataFrame::new();
    df.write_i64(40).write_i32(2).write_str("tag");
    let reply = client.call_stream("sum", df).await.unwrap();
    let mut rd = reply.reader();
    assert_eq!(rd.read_i64().unwrap(), 42);
    assert_eq!(rd.read_str().unwrap(), "tag");

    client.send_console("note", "a").await.unwrap();
    let mut df = DataFrame::new();
    df.write_str("b");
    client.send_stream("note_df", df).await.unwrap();
    assert_eq!(within("direct console", rx.recv()).await.unwrap(), "note:a");
    assert_eq!(within("direct stream", rx.recv()).await.unwrap(), r#"note_df:["b"]"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pushes_every_form_to_client() {
    // The client serves commands too; the server calls them over the same connection.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut client_router = server_router(tx);
    client_router.console("whoami", |_, _| "client");
    let (connected_tx, mut connected) = mpsc::unbounded_channel();
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.on_connect(move |peer| connected_tx.send(peer.clone()).unwrap());
    let server = serve(r).await;
    let client = connect_with(&server, client_router, ClientConfig::default()).await.unwrap();
    let peer = within("on_connect", connected.recv()).await.unwrap();

    assert_eq!(peer.call_console("whoami", "").await.unwrap(), "client");
    let mut df = DataFrame::new();
    df.write_i64(1).write_i64(2).write_str("x");
    assert_eq!(peer.call_stream("sum", df).await.unwrap().reader().read_i64().unwrap(), 3);
    peer.send_console("note", "pushed").await.unwrap();
    assert_eq!(within("push", rx.recv()).await.unwrap(), "note:pushed");
    let mut df = DataFrame::new();
    df.write_bool(true);
    peer.send_stream("note_df", df).await.unwrap();
    assert_eq!(within("push", rx.recv()).await.unwrap(), "note_df:[true]");

    // Calls in both directions at the same moment on one connection.
    let (a, b) = tokio::join!(client.call_console("echo", "up"), peer.call_console("echo", "down"));
    assert_eq!((a.unwrap(), b.unwrap()), (Text::from("up"), Text::from("down")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_calls_on_one_connection() {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    let calls = (0..10_000).map(|i| {
        let peer = client.peer().clone();
        async move { (i, peer.call_console("echo", i.to_string()).await) }
    });
    let results = within("10,000 calls", futures_util::future::join_all(calls)).await;
    for (i, r) in results {
        assert_eq!(r.unwrap(), i.to_string().as_str(), "reply {i} matched to its call");
    }
    let stats = server.stats();
    assert_eq!(stats.console_in, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_reply_from_another_thread() {
    let mut r = Router::new();
    r.console_delayed("later", |_, t, responder| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            responder.reply(format!("late {t}"));
        });
    });
    r.stream_delayed("later_df", |_, df, responder| {
        tokio::spawn(async move { responder.reply(df) });
    });
    r.console_delayed("forget", |_, _, responder| drop(responder));
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    // Several in flight at once: none waits for another.
    let (a, b) = tokio::join!(client.call_console("later", "1"), client.call_console("later", "2"));
    assert_eq!((a.unwrap().as_str(), b.unwrap().as_str()), ("late 1", "late 2"));
    let mut df = DataFrame::new();
    df.write_u16(7);
    assert_eq!(client.call_stream("later_df", df.clone()).await.unwrap(), df);
    let err = client.call_console("forget", "").await.unwrap_err();
    assert_eq!(err.remote_code(), Some(zs::ErrorCode::NoReply), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_run_concurrently() {
    let mut r = Router::new();
    r.console_async("sleep", |_, t: Text| async move {
        let ms: u64 = t.parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        t
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    // A long call does not hold back a short one behind it.
    let slow = client.call_console("sleep", "3000");
    let fast = async {
        let t = client.call_console("sleep", "1").await.unwrap();
        (t, std::time::Instant::now())
    };
    let (slow, (fast, fast_at)) = tokio::join!(slow, fast);
    let slow_done = std::time::Instant::now();
    assert_eq!(slow.unwrap(), "3000");
    assert_eq!(fast, "1");
    assert!(slow_done > fast_at, "the quick call finished first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpc_runs_on_workers_and_skips_gone_peers() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut r = Router::new();
    let n = ran.clone();
    r.hpc_console("fib", move |_, t: Text| {
        n.fetch_add(1, Ordering::SeqCst);
        fn fib(n: u64) -> u64 {
            if n < 2 {
                n
            } else {
                fib(n - 1) + fib(n - 2)
            }
        }
        fib(t.parse().unwrap()).to_string()
    });
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate_rx);
    r.hpc_console("blocked", move |_, _| {
        gate.lock().unwrap().recv().ok();
        "done"
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    assert_eq!(client.call_console("fib", "25").await.unwrap(), "75025");
    let calls = (0..16).map(|_| client.call_console("fib", "20"));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap(), "6765");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 17);

    // A call whose peer leaves before the worker finishes: the reply is skipped, and the
    // server keeps serving.
    let leaving = connect(&server).await.unwrap();
    let pending = leaving.peer().clone();
    let call = tokio::spawn(async move { pending.call_console("blocked", "").await });
    wait_until("call reaches the server", || server.stats().console_in >= 18).await;
    drop(leaving);
    assert!(matches!(call.await.unwrap(), Err(zs::CallError::Disconnected(_))));
    gate_tx.send(()).unwrap();
    assert_eq!(client.call_console("fib", "10").await.unwrap(), "55");
}

#[test]
fn blocking_client_from_sync_code() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let mut r = Router::new();
        r.console("echo", |_, t| t);
        r.stream("count", |_, df: DataFrame| {
            let mut out = DataFrame::new();
            out.write_u64(df.len() as u64);
            out
        });
        r.console_delayed("never", |_, _, responder| std::mem::forget(responder));
        serve(r).await
    });
    let config = ClientConfig::secured(server.client_security());
    let client = BlockingClient::connect_with(server.local_addr(), Router::new(), config).unwrap();
    assert_eq!(client.call_console("echo", "sync").unwrap(), "sync");
    let mut df = DataFrame::new();
    df.write_u8(1).write_u8(2);
    assert_eq!(client.call_stream("count", df).unwrap().reader().read_u64().unwrap(), 2);
    let err = client.call_console_timeout("never", "", Duration::from_millis(100)).unwrap_err();
    assert_eq!(err, zs::CallError::Timeout(Duration::from_millis(100)));
    client.send_console("echo", "x").unwrap();
    drop(client);
    rt.block_on(wait_until("blocking client closed", || server.connection_count() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_to_500_peers_and_a_filtered_set() {
    let server = serve(Router::new()).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut clients = Vec::new();
    for i in 0..500 {
        let mut r = Router::new();
        let (t1, t2) = (tx.clone(), tx.clone());
        r.direct_console("news", move |_, t| t1.send((i, t.to_string())).unwrap());
        r.direct_stream("news_df", move |_, df| t2.send((i, df.to_json().to_string())).unwrap());
        clients.push(connect_with(&server, r, ClientConfig::default()).await.unwrap());
    }
    wait_until("all connected", || server.connection_count() == 500).await;
    assert_eq!(server.broadcast_console("news", "hello all", |_| true).unwrap(), 500);
    let mut got = vec![false; 500];
    for _ in 0..500 {
        let (i, text) = within("broadcast delivery", rx.recv()).await.unwrap();
        assert_eq!(text, "hello all");
        assert!(!got[i], "delivered once");
        got[i] = true;
    }
    // A filtered set: even peer ids only.
    let even = server.peers().iter().filter(|p| p.id() % 2 == 0).count();
    let mut df = DataFrame::new();
    df.write_str("even");
    assert_eq!(server.broadcast_stream("news_df", df, |p| p.id() % 2 == 0).unwrap(), even);
    for _ in 0..even {
        let (_, text) = within("filtered delivery", rx.recv()).await.unwrap();
        assert_eq!(text, r#"["even"]"#);
    }
    assert!(rx.try_recv().is_err(), "nothing delivered outside the filter");
    // Peers that leave are no longer counted, one that comes is reached at once.
    clients.truncate(200);
    wait_until("300 gone", || server.connection_count() == 200).await;
    assert_eq!(server.broadcast_console("news", "fewer", |_| true).unwrap(), 200);
    let mut r = Router::new();
    let late = tx.clone();
    r.direct_console("news", move |_, t| late.send((500, t.to_string())).unwrap());
    clients.push(connect_with(&server, r, ClientConfig::default()).await.unwrap());
    wait_until("the late one connected", || server.connection_count() == 201).await;
    assert_eq!(server.broadcast_console("news", "one more", |_| true).unwrap(), 201);
    let (mut fewer, mut more, mut late_got) = (0, 0, false);
    for _ in 0..401 {
        let (i, text) = within("delivery after changes", rx.recv()).await.unwrap();
        match text.as_str() {
            "fewer" => fewer += 1,
            "one more" => {
                more += 1;
                late_got |= i == 500;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((fewer, more, late_got), (200, 201, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_commands_run_one_at_a_time_in_arrival_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut r = Router::new();
    let l = log.clone();
    r.console_async("step", move |_, t: Text| {
        let l = l.clone();
        async move {
            l.lock().unwrap().push(format!("start {t}"));
            // Later calls sleep less: without ordering they would finish first.
            let n: u64 = t.parse().unwrap();
            tokio::time::sleep(Duration::from_millis(50 - n * 10)).await;
            l.lock().unwrap().push(format!("end {t}"));
            t
        }
    })
    .ordered();
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    let calls = (0..5).map(|i| client.call_console("step", i.to_string()));
    let replies = futures_util::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    let expect: Vec<String> = (0..5).flat_map(|i| [format!("start {i}"), format!("end {i}")]).collect();
    assert_eq!(*log.lock().unwrap(), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_connection_runs_every_command_in_arrival_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut r = Router::new();
    for name in ["a", "b"] {
        let l = log.clone();
        // Delayed replies from threads that answer in reverse order of arrival.
        r.console_delayed(name, move |_, t: Text, responder| {
            let l = l.clone();
            let n: u64 = t.parse().unwrap();
            l.lock().unwrap().push(format!("start {n}"));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(60 - n * 10));
                l.lock().unwrap().push(format!("end {n}"));
                responder.reply(t);
            });
        });
    }
    let mut config = zs::ServerConfig::default();
    config.connection.ordered = true;
    let server = serve_with(r, config).await;
    let client = connect(&server).await.unwrap();
    let calls = (0..5u64).map(|i| client.call_console(if i % 2 == 0 { "a" } else { "b" }, i.to_string()));
    assert!(futures_util::future::join_all(calls).await.iter().all(Result::is_ok));
    let expect: Vec<String> = (0..5).flat_map(|i| [format!("start {i}"), format!("end {i}")]).collect();
    assert_eq!(*log.lock().unwrap(), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_are_compressed_on_the_wire() {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.stream("echo_stream", |_, df| df);
    // Plaintext, so a raw socket can send a corrupt frame below.
    let server = serve_with(r, plaintext()).await;
    let client = connect(&server).await.unwrap();
    let text = "zserver compresses repetitive payloads. ".repeat(2500); // 100 KB
    assert_eq!(client.call_console("echo", text.clone()).await.unwrap(), text.as_str());
    let mut df = DataFrame::new();
    df.write_str(text.clone()).write_bytes(vec![7u8; 50_000]);
    assert_eq!(client.call_stream("echo_stream", df.clone()).await.unwrap(), df);
    let s = server.stats();
    assert!(s.bytes_in < 60_000, "250 KB of payload crossed as {} bytes", s.bytes_in);

    // A corrupt compressed payload is an error reply, not a dead connection.
    let bad =
        raw_frame(zs::wire::Kind::Call, zs::wire::Flags::COMPRESSED, 1, &call_body("echo", &[9, 0, 0, 0, 1]));
    let mut stream = bad;
    stream.extend(raw_frame(zs::wire::Kind::GoAway, zs::wire::Flags::NONE, 0, &[0, 0]));
    let frames = raw_exchange(server.local_addr(), &stream).await;
    assert_eq!(frames[0].header.kind, zs::wire::Kind::Error);
    let (code, msg) = zs::wire::body::parse_code_message(&frames[0].body).unwrap();
    assert_eq!(zs::ErrorCode::from_code(code), zs::ErrorCode::BadPayload, "{msg}");
}
