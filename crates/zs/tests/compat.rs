//! The ZServer4D listener and client over real loopback sockets: the captured session of
//! the original's client replayed byte for byte, every command kind through
//! `CompatClient`, bulk transfers, and bad input that closes only its own connection.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use common::{hash_stream, serve_with, wait_until, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs::compat::{CompatClient, CompatClientConfig, CompatConfig, Dfe, Element};
use zs::{DataFrame, IncomingStream, Router, ServerConfig, ServerHandle, Value};
use zs_compat::frame::{self, CompatLimits};
use zs_compat::handshake::CipherModel;
use zs_compat::seq::{self, Packet, Parsed, SeqConfig, SeqLayer};

#[derive(Default)]
struct Counts {
    console: AtomicU64,
    stream: AtomicU64,
    direct: AtomicU64,
    big: AtomicU64,
    buffers: AtomicU64,
    /// Length and BLAKE3 of each big stream and buffer received.
    received: Mutex<Vec<(String, u64, [u8; 32])>>,
}

/// The commands of the capture's test server, on our router.
fn router(counts: Arc<Counts>) -> Router {
    let mut r = Router::new();
    let c = counts.clone();
    r.console("echo", move |_, t| {
        c.console.fetch_add(1, Relaxed);
        t
    });
    let c = counts.clone();
    r.stream("echo_s", move |_, d: DataFrame| {
        c.stream.fetch_add(1, Relaxed);
        let first = d.values().first().cloned().unwrap_or(Value::Nil);
        let mut out = DataFrame::new();
        out.push(first).push(d.len() as i32);
        out
    });
    let c = counts.clone();
    r.direct_console("dc", move |_, _| {
        c.direct.fetch_add(1, Relaxed);
    });
    let c = counts.clone();
    r.direct_stream("ds", move |_, _| {
        c.direct.fetch_add(1, Relaxed);
    });
    let c = counts.clone();
    r.console("stat", move |p, _| {
        format!(
            "conn={} console={} stream={} direct={} big={} cb={}/{}",
            p.id(),
            c.console.load(Relaxed),
            c.stream.load(Relaxed),
            c.direct.load(Relaxed),
            c.big.load(Relaxed),
            c.buffers.load(Relaxed),
            c.buffers.load(Relaxed),
        )
    });
    let c = counts.clone();
    r.big_stream("big", move |_, mut s: IncomingStream| {
        let c = c.clone();
        async move {
            let hash = hash_stream(&mut s).await?;
            c.big.fetch_add(1, Relaxed);
            c.received.lock().unwrap().push(("big".into(), s.received(), *hash.as_bytes()));
            Ok::<_, zs::CallError>(())
        }
    });
    let c = counts;
    r.complete_buffer("cb", move |_, data| {
        c.buffers.fetch_add(1, Relaxed);
        c.received.lock().unwrap().push(("cb".into(), data.len() as u64, *blake3::hash(&data).as_bytes()));
        Ok::<_, zs::HandlerError>(())
    });
    r
}

/// Server settings with a ZServer4D listener on an ephemeral port.
fn compat_config() -> ServerConfig {
    let compat = CompatConfig { listen: vec!["127.0.0.1:0".parse().unwrap()], ..CompatConfig::default() };
    ServerConfig { compat, ..ServerConfig::default() }
}

async fn serve() -> (ServerHandle, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    (serve_with(router(counts.clone()), compat_config()).await, counts)
}

/// The capture's chunks: (client to server?, bytes).
fn capture_b() -> Vec<(bool, Vec<u8>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../zs-compat/tests/fixtures/capture_b.txt");
    zs_compat::fuzzing::parse_capture(&std::fs::read_to_string(path).unwrap())
}

/// Reads sequence packets from a raw socket until one whole result frame is in.
struct RawReader {
    layer: SeqLayer,
    raw: BytesMut,
    plain: BytesMut,
    acks: Vec<u32>,
}

impl RawReader {
    async fn result(&mut self, tcp: &mut TcpStream) -> bytes::Bytes {
        loop {
            if let Some((r, n)) = frame::decode_reply(&self.plain, &CompatLimits::default()).unwrap() {
                let _ = self.plain.split_to(n);
                return r.payload;
            }
            let n = within("a result", tcp.read_buf(&mut self.raw)).await.unwrap();
            assert!(n > 0, "the server closed");
            while let Some((p, n)) = seq::decode(&self.raw).unwrap() {
                let _ = self.raw.split_to(n);
                if let Parsed::Packet(Packet::Ack(s)) = p {
                    self.acks.push(s);
                }
                // Our own acks are not written back: the capture carries the client's.
                self.layer.receive(p, Instant::now(), &mut self.plain, &mut BytesMut::new()).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn the_captured_client_session_replayed_gets_results_of_the_captured_shape() {
    let (server, counts) = serve().await;
    let mut tcp = TcpStream::connect(server.compat_addrs()[0]).await.unwrap();
    let mut reader = RawReader {
        layer: SeqLayer::new(SeqConfig::default(), Instant::now()),
        raw: BytesMut::new(),
        plain: BytesMut::new(),
        acks: vec![],
    };
    let mut results = Vec::new();
    // Send the client's bytes as captured; where the original server answered, read ours.
    for (c2s, bytes) in capture_b() {
        if c2s {
            tcp.write_all(&bytes).await.unwrap();
        } else {
            results.push(reader.result(&mut tcp).await);
        }
    }
    assert_eq!(results.len(), 4);
    let model = CipherModel::from_dfe(&Dfe::decode(&results[0], 1 << 20).unwrap()).unwrap();
    assert_eq!((model.cipher, &model.key[..]), (0, &[0u8][..]), "no cipher: the client sends in clear");
    assert_eq!(model.max_complete_buffer, 64 << 20);
    assert_eq!(Dfe::decode(&results[0], 1 << 20).unwrap().elements.len(), 15, "the original's 15 items");
    assert_eq!(&results[1][..], b"hello zserver4d");
    let echo = Dfe::decode(&results[2], 1 << 20).unwrap();
    assert_eq!(echo.elements, vec![Element::String("stream hello".into()), Element::Integer(2)]);
    let stat = String::from_utf8(results[3].to_vec()).unwrap();
    assert!(stat.ends_with("console=1 stream=1 direct=2 big=0 cb=0/0"), "{stat}");
    // Every packet of the client was acknowledged, in order, ahead of the results.
    assert_eq!(reader.acks, [0, 1, 2, 3, 4, 5]);
    assert_eq!(counts.direct.load(Relaxed), 2);
    drop(tcp);
    wait_until("the connection to close", || server.connection_count() == 0).await;
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8).collect()
}

#[tokio::test]
async fn compat_client_calls_every_command_kind_and_moves_bulk_data_intact() {
    let (server, counts) = serve().await;
    for (sequence_packets, compress) in [(true, false), (false, true)] {
        let config = CompatClientConfig { sequence_packets, compress, ..CompatClientConfig::default() };
        let client =
            within("connect", CompatClient::connect(server.compat_addrs()[0], config)).await.unwrap();
        assert_eq!(client.cipher_model().cipher, 0);
        assert_eq!(client.call_console("echo", "hello").await.unwrap(), "hello");
        assert_eq!(client.call_console("ECHO", "case-insensitive").await.unwrap(), "case-insensitive");
        let mut d = Dfe::new();
        d.push(Element::String("s".into()))
            .push(Element::Int64(-5))
            .push(Element::ArrayDouble(vec![1.5, 2.5]));
        let back = client.call_stream("echo_s", d).await.unwrap();
        assert_eq!(back.elements, vec![Element::String("s".into()), Element::Integer(3)]);
        // Unknown commands get the original's empty result; the connection carries on.
        assert_eq!(client.call_console("nope", "x").await.unwrap(), "");
        assert!(client.call_stream("nope", Dfe::new()).await.unwrap().elements.is_empty());
        let before = counts.direct.load(Relaxed);
        for i in 0..100 {
            client.send_direct_console("dc", &i.to_string()).await.unwrap();
            client.send_direct_stream("ds", Dfe::new()).await.unwrap();
        }
        client.wait().await.unwrap();
        assert_eq!(counts.direct.load(Relaxed), before + 200, "__@Wait answers after all that came before");
        // Big streams: empty, one byte, odd sizes across chunk edges; buffers likewise.
        for n in [0usize, 1, 1 << 20, (5 << 20) + 7] {
            let data = payload(n, n as u8);
            within("a big stream", client.send_big_stream("big", &data[..], n as u64)).await.unwrap();
            client.send_complete_buffer("cb", &data).await.unwrap();
            client.wait().await.unwrap();
            let got = counts.received.lock().unwrap().split_off(0);
            let want = (n as u64, *blake3::hash(&data).as_bytes());
            assert_eq!(
                got.iter().map(|(k, n, h)| (k.as_str(), *n, *h)).collect::<Vec<_>>(),
                vec![("big", want.0, want.1), ("cb", want.0, want.1)],
                "{n} bytes, compress {compress}"
            );
        }
    }
    // Transfers to commands that do not take them are read and dropped: the client is
    // not left waiting, and the connection carries on.
    let client =
        CompatClient::connect(server.compat_addrs()[0], CompatClientConfig::default()).await.unwrap();
    let data = payload(3 << 20, 9);
    within("a big stream to a console command", client.send_big_stream("echo", &data[..], data.len() as u64))
        .await
        .unwrap();
    client.send_complete_buffer("nowhere", &data).await.unwrap();
    assert_eq!(client.call_console("echo", "after").await.unwrap(), "after");
    assert!(counts.received.lock().unwrap().is_empty());
    assert_eq!(server.stats().protocol_errors, 0);
}

#[tokio::test]
async fn bad_input_closes_only_its_own_connection_with_a_reason() {
    let (server, _) = serve().await;
    let addr = server.compat_addrs()[0];
    let good = CompatClient::connect(addr, CompatClientConfig::default()).await.unwrap();
    let frame_of = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = Vec::new();
        let payload = frame::request_payload("echo", &frame::Body::Text("hello world".into()));
        frame::encode_request(&mut f, frame::FrameKind::Console, &payload, zs_compat::HashKind::Md5);
        edit(&mut f);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not ZServer4D", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("bad head", frame_of(&|f| f[0] = 0xAA)),
        ("bad tail", frame_of(&|f| *f.last_mut().unwrap() = 0)),
        ("wrong MD5", frame_of(&|f| f[12] ^= 0xFF)),
        ("oversize", frame_of(&|f| f[5..9].copy_from_slice(&(1u32 << 30).to_le_bytes()))),
        ("encrypted", frame_of(&|f| f[12 + 16] = 4)),
        ("complete buffer over the limit", {
            let mut f = Vec::new();
            frame::encode_complete_buffer_head(&mut f, 65 << 20, 0, "cb");
            f
        }),
    ];
    for (what, bytes) in cases {
        let errors = server.stats().protocol_errors;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let mut rest = Vec::new();
        // Closed (a reset is fine too): the read ends instead of waiting.
        let _ = within(what, tcp.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "{what}: nothing sent back");
        wait_until(what, || server.stats().protocol_errors > errors).await;
        // Everyone else is still served.
        assert_eq!(good.call_console("echo", what).await.unwrap(), what);
    }
    // A corrupt sequence packet is asked for again rather than closing the link.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut wire = BytesMut::new();
    seq::encode(&Packet::Data { seq: 0, data: bytes::Bytes::from_static(b"\xf0\xf0") }, &mut wire);
    wire[10] ^= 1;
    tcp.write_all(&wire).await.unwrap();
    let mut answer = [0u8; 5];
    within("a resend request", tcp.read_exact(&mut answer)).await.unwrap();
    assert_eq!(seq::decode(&answer).unwrap().unwrap().0, Parsed::Packet(Packet::Resend(0)));
}

#[tokio::test]
async fn direct_commands_reach_a_client_that_makes_no_requests_and_never_one_that_does() {
    let (server, _) = serve().await;
    let addr = server.compat_addrs()[0];
    let listener = CompatClient::connect(addr, CompatClientConfig::default()).await.unwrap();
    wait_until("the server to register the client", || server.connection_count() == 1).await;
    let mut frame = DataFrame::new();
    frame.push("ping").push(7i32);
    assert_eq!(server.broadcast_console("note", "first", |_| true).unwrap(), 1);
    assert_eq!(server.broadcast_stream("data", frame, |_| true).unwrap(), 1);
    let (name, body) = within("a pushed console", listener.recv_direct()).await.unwrap();
    assert_eq!((name.as_str(), body), ("note", zs::compat::Body::Text("first".into())));
    let (name, body) = within("a pushed stream", listener.recv_direct()).await.unwrap();
    let zs::compat::Body::Frame(d) = body else { panic!("{body:?}") };
    assert_eq!(
        (name.as_str(), d.elements),
        ("data", vec![Element::String("ping".into()), Element::Integer(7)])
    );
    // A broadcast big enough to be compressed on the native wire arrives as plain text.
    let long = "zserver ".repeat(4096);
    server.broadcast_console("note", long.as_str(), |_| true).unwrap();
    let (_, body) = within("a long push", listener.recv_direct()).await.unwrap();
    assert_eq!(body, zs::compat::Body::Text(long));
    // Calls and virtual channels to a ZServer4D client fail at once, with the reason.
    let peer = server.peers().pop().unwrap();
    let call = within("a call to a ZServer4D client", peer.call_console("anything", "x")).await;
    assert!(call.unwrap_err().to_string().contains("takes no calls"));
    let open = within("a channel to a ZServer4D client", peer.open_stream("svc")).await;
    assert!(open.unwrap_err().to_string().contains("no virtual channels"));
    // A client that makes requests would read a push as its result: none is sent to it.
    listener.call_console("echo", "now I make requests").await.unwrap();
    let errors = server.stats().errors_out;
    server.broadcast_console("note", "second", |_| true).unwrap();
    wait_until("the push to be refused", || server.stats().errors_out > errors).await;
    assert_eq!(listener.call_console("echo", "still in step").await.unwrap(), "still in step");
}

#[tokio::test]
async fn a_silent_client_times_out_and_one_sending_keepalives_stays() {
    let counts = Arc::new(Counts::default());
    let mut config = compat_config();
    config.connection.idle_timeout = Some(std::time::Duration::from_millis(1500));
    config.connection.keepalive_interval = Some(std::time::Duration::from_millis(300));
    let server = serve_with(router(counts), config).await;
    let addr = server.compat_addrs()[0];
    let silent = CompatClient::connect(addr, CompatClientConfig::default()).await.unwrap();
    // The original's keepalive: `04 0000` once a second of silence (here every 200 ms).
    let mut alive = TcpStream::connect(addr).await.unwrap();
    let keepalives = tokio::spawn(async move {
        let mut ping = BytesMut::new();
        seq::encode(&Packet::KeepAlive(bytes::Bytes::new()), &mut ping);
        let mut echoes = 0;
        let mut buf = [0u8; 64];
        for _ in 0..15 {
            alive.write_all(&ping).await.unwrap();
            let n = alive.read(&mut buf).await.unwrap();
            assert!(n > 0, "a client sending keepalives was closed");
            echoes += n / 3;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        echoes
    });
    wait_until("both connections to be served", || server.connection_count() == 2).await;
    wait_until("the silent connection to close", || server.connection_count() == 1).await;
    assert!(silent.call_console("echo", "x").await.is_err(), "the silent client was closed");
    assert_eq!(within("the keepalives", keepalives).await.unwrap(), 15, "every keepalive echoed");
    assert_eq!(server.stats().idle_timeouts, 1);
}

#[tokio::test]
async fn mutated_client_traffic_never_panics_the_listener_and_others_are_served() {
    // Any panic anywhere (a connection's task included) fails the test.
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = panicked.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flag.store(true, Relaxed);
        default_hook(info);
    }));
    let (server, _) = serve().await;
    let addr = server.compat_addrs()[0];
    let good = CompatClient::connect(addr, CompatClientConfig::default()).await.unwrap();
    let session: Vec<u8> = capture_b().into_iter().filter(|c| c.0).flat_map(|c| c.1).collect();
    let mut rng = zs::wire::fuzzing::SplitMix(0xC0FFEE);
    for batch in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let mut bytes = session.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                bytes.truncate(rng.below(bytes.len()));
            }
            tasks.push(tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                let _ = tcp.write_all(&bytes).await;
                // Read what comes back for a moment (results, or a close), then leave.
                let mut sink = vec![0u8; 4096];
                let _ = tokio::time::timeout(std::time::Duration::from_millis(100), async {
                    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let text = format!("batch {batch}");
        assert_eq!(good.call_console("echo", &text).await.unwrap(), text);
    }
    wait_until("the mutated connections to close", || server.connection_count() == 1).await;
    assert!(!panicked.load(Relaxed), "a panic happened");
}

#[tokio::test]
async fn the_client_reports_a_server_that_is_not_zserver4d_closes_or_never_answers() {
    use zs::compat::CompatClientError;
    // Each fake server answers the handshake its own way.
    let fake = |answer: &'static [u8], close: bool| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 64];
            let _ = tcp.read(&mut hello).await;
            let _ = tcp.write_all(answer).await;
            if !close {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            }
        });
        addr
    };
    let config = CompatClientConfig {
        timeout: std::time::Duration::from_millis(500),
        ..CompatClientConfig::default()
    };
    let garbage = fake(b"HTTP/1.1 400 Bad Request\r\n\r\n", true).await;
    let e = within("garbage", CompatClient::connect(garbage, config.clone())).await.err().unwrap();
    assert!(matches!(e, CompatClientError::Protocol(_)), "{e}");
    let closing = fake(b"", true).await;
    let e = within("a close", CompatClient::connect(closing, config.clone())).await.err().unwrap();
    assert!(matches!(e, CompatClientError::Io(_)), "{e}");
    let silent = fake(b"", false).await;
    let e = within("silence", CompatClient::connect(silent, config)).await.err().unwrap();
    assert!(matches!(e, CompatClientError::Timeout(_)), "{e}");
}
