//! Big streams, complete buffers and batch streams over real loopback sockets.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;
use zs::bulk::Compression;
use zs::{CallError, ClientConfig, ErrorCode, IncomingStream, Router, ServerConfig, StreamOptions};
use zs_bench::source::Noise;

/// A generated source of `len` bytes (the benchmarks' noise, or zeros when `sparse`); it
/// flags when it is dropped, to prove no source is left behind.
struct Generated {
    noise: Noise,
    sparse: bool,
    dropped: Option<Arc<AtomicBool>>,
}

impl Generated {
    fn new(len: u64, seed: u64, sparse: bool) -> Self {
        Generated { noise: Noise::new(len, seed), sparse, dropped: None }
    }
}

impl Drop for Generated {
    fn drop(&mut self) {
        if let Some(d) = &self.dropped {
            d.store(true, Ordering::SeqCst);
        }
    }
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.sparse {
            return Pin::new(&mut self.noise).poll_read(cx, buf);
        }
        let n = (buf.remaining() as u64).min(self.noise.left()) as usize;
        buf.initialize_unfilled_to(n).fill(0);
        buf.advance(n);
        self.noise.skip(n as u64);
        Poll::Ready(Ok(()))
    }
}

/// What a receiving handler saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    name: String,
    total: Option<u64>,
    offset: u64,
    bytes: u64,
    hash: [u8; 32],
    error: Option<String>,
}

/// A router whose `sink` hashes what it reads and reports it.
fn sink_router(tx: mpsc::UnboundedSender<Seen>) -> Router {
    let mut r = Router::new();
    r.big_stream("sink", move |_peer, mut s: IncomingStream| {
        let tx = tx.clone();
        async move {
            let mut h = blake3::Hasher::new();
            let mut error = None;
            while let Some(chunk) = s.next_chunk().await {
                match chunk {
                    Ok(c) => {
                        h.update(&c);
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let seen = Seen {
                name: s.name().to_owned(),
                total: s.total(),
                offset: s.offset(),
                bytes: s.received(),
                hash: *h.finalize().as_bytes(),
                error: error.clone(),
            };
            tx.send(seen).unwrap();
            match error {
                Some(e) => Err(zs::HandlerError::new(e)),
                None => Ok(()),
            }
        }
    });
    r.console("echo", |_, t| t);
    r
}

async fn expected_hash(len: u64, seed: u64, sparse: bool) -> [u8; 32] {
    let mut g = Generated::new(len, seed, sparse);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = g.read(&mut buf).await.unwrap();
        if n == 0 {
            return *h.finalize().as_bytes();
        }
        h.update(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_every_size_arrive_intact() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(sink_router(tx)).await;
    let client = connect(&server).await.unwrap();
    for (len, known, compression) in [
        (0u64, true, Compression::Auto),
        (1, true, Compression::Auto),
        (1_000_003, true, Compression::Auto),
        (1_000_003, false, Compression::None),
        (7 << 20, false, Compression::Auto),
    ] {
        let opts = StreamOptions { len: known.then_some(len), compression, ..StreamOptions::default() };
        let sent = client.send_big_stream("sink", Generated::new(len, len + 1, false), opts).await.unwrap();
        assert_eq!(sent, len);
        let seen = within("handler report", rx.recv()).await.unwrap();
        assert_eq!(seen.error, None);
        assert_eq!((seen.bytes, seen.total), (len, known.then_some(len)));
        assert_eq!(seen.hash, expected_hash(len, len + 1, false).await, "{len} bytes intact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_gib_streams_generated_and_sparse() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(sink_router(tx)).await;
    let client = connect(&server).await.unwrap();
    // 2 GiB of noise (compression gives up at once) and 1 GiB of zeros (zstd).
    for (len, sparse) in [(2u64 << 30, false), (1 << 30, true)] {
        let opts = StreamOptions::with_len(len);
        let t = client.send_big_stream("sink", Generated::new(len, 42, sparse), opts);
        let progress = t.watch_progress();
        let sent =
            tokio::time::timeout(Duration::from_secs(300), t).await.expect("transfer finishes").unwrap();
        assert_eq!(sent, len);
        assert_eq!(progress.borrow().done, len);
        let seen = within("handler report", rx.recv()).await.unwrap();
        assert_eq!((seen.bytes, seen.error.as_deref()), (len, None));
        assert_eq!(seen.hash, expected_hash(len, 42, sparse).await);
    }
    if server.stats().bytes_in > 1 << 30 {
        // The zeros crossed compressed: far fewer than 3 GiB in.
        assert!(server.stats().bytes_in < (2u64 << 30) + (64 << 20), "{}", server.stats().bytes_in);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_transfer_resumes_at_an_offset() {
    let file: Arc<Vec<u8>> = Arc::new((0..3_000_000u32).map(|i| (i % 251) as u8).collect());
    let stored = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut r = Router::new();
    let st = stored.clone();
    r.big_stream("store", move |_p, mut s: IncomingStream| {
        let (st, done_tx) = (st.clone(), done_tx.clone());
        async move {
            // Keep what arrived at its offset, like a file opened for resume.
            assert_eq!(st.lock().unwrap().len() as u64, s.offset(), "resumes where the data ends");
            let mut outcome = Ok(());
            while let Some(chunk) = s.next_chunk().await {
                match chunk {
                    Ok(c) => st.lock().unwrap().extend_from_slice(&c),
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            done_tx.send(outcome.is_ok()).unwrap();
            outcome
        }
    });
    r.console("size", {
        let st = stored.clone();
        move |_, _| st.lock().unwrap().len().to_string()
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    // First attempt: the sender is cancelled a third of the way through.
    let first = client.send_big_stream(
        "store",
        std::io::Cursor::new(Bytes::from(file[..1_000_000].to_vec())),
        StreamOptions { len: Some(3_000_000), ..StreamOptions::default() },
    );
    let err = first.await.unwrap_err();
    assert!(matches!(err, CallError::Source(ref m) if m.contains("ended after 1000000")), "{err}");
    assert!(!within("first handler ends", done.recv()).await.unwrap(), "the receiver saw the failure");
    // Ask how much arrived, and send the rest from there.
    let have: usize = client.call_console("size", "").await.unwrap().parse().unwrap();
    assert!(have > 0 && have <= 1_000_000, "{have}");
    let rest = Bytes::from(file[have..].to_vec());
    let opts =
        StreamOptions { len: Some(rest.len() as u64), offset: have as u64, ..StreamOptions::default() };
    client.send_big_stream("store", std::io::Cursor::new(rest), opts).await.unwrap();
    assert!(within("second handler ends", done.recv()).await.unwrap());
    assert_eq!(*stored.lock().unwrap(), *file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_either_side() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = sink_router(tx);
    r.big_stream("refuse_after_1mb", |_p, mut s: IncomingStream| async move {
        while let Some(c) = s.next_chunk().await {
            c?;
            if s.received() >= 1 << 20 {
                return Err(zs::HandlerError::new("enough, thanks"));
            }
        }
        Ok(())
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();

    // The receiver stops: the sender learns why, and its source is dropped.
    let dropped = Arc::new(AtomicBool::new(false));
    let mut src = Generated::new(1 << 30, 1, false);
    src.dropped = Some(dropped.clone());
    let err = client.send_big_stream("refuse_after_1mb", src, StreamOptions::default()).await.unwrap_err();
    assert_eq!(err, CallError::Remote { code: ErrorCode::Application, message: "enough, thanks".into() });
    assert!(dropped.load(Ordering::SeqCst), "source dropped");

    // The sender cancels: the receiver's read fails with the reason.
    let t = client.send_big_stream("sink", Generated::new(u64::MAX, 2, false), StreamOptions::default());
    let mut p = t.watch_progress();
    within("progress", p.wait_for(|p| p.done > 4 << 20)).await.unwrap();
    t.cancel("user pressed stop");
    assert_eq!(t.finish().await.unwrap_err(), CallError::Cancelled("user pressed stop".into()));
    let seen = within("receiver sees the cancel", rx.recv()).await.unwrap();
    assert!(seen.error.unwrap().contains("sender cancelled: cancelled: user pressed stop"));
    assert_eq!(client.call_console("echo", "still fine").await.unwrap(), "still fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_is_an_error_to_both_ends() {
    use zs::wire::bulk::{StreamCheck, StreamEnd, StreamMode, StreamOpen};
    use zs::wire::{Flags, Kind};
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve_with(sink_router(tx), plaintext()).await;
    let mut open = bytes::BytesMut::new();
    StreamOpen {
        mode: StreamMode::Stream,
        check: StreamCheck::Blake3,
        total: 5,
        offset: 0,
        key: 0,
        name: "sink".into(),
    }
    .encode(&mut open)
    .unwrap();
    let mut end = bytes::BytesMut::new();
    StreamEnd { bytes: 5, hash: *blake3::hash(b"HELLO").as_bytes() }.encode(&mut end);
    let mut wire = raw_frame(Kind::StreamOpen, Flags::NONE, 3, &open);
    wire.extend(raw_frame(Kind::StreamData, Flags::NONE, 3, b"hello"));
    wire.extend(raw_frame(Kind::StreamEnd, Flags::NONE, 3, &end));
    let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(&wire).await.unwrap();
    let seen = within("receiver report", rx.recv()).await.unwrap();
    assert!(seen.error.unwrap().contains("hash differs"));
    // The sender is told, in a StreamResult for stream 3.
    let mut dec = zs::wire::FrameDecoder::default();
    let mut buf = bytes::BytesMut::new();
    let result = within("stream result", async {
        loop {
            s.read_buf(&mut buf).await.unwrap();
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                if f.header.kind == Kind::StreamResult {
                    return f;
                }
            }
        }
    })
    .await;
    assert_eq!(result.header.request, 3);
    let (code, msg) = zs::wire::body::parse_code_message(&result.body).unwrap();
    assert_eq!(ErrorCode::from_code(code), ErrorCode::ChecksumMismatch, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_both_ways_and_calls_are_not_stuck_behind_them() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (ctx, mut crx) = mpsc::unbounded_channel();
    let server = serve(sink_router(tx)).await;
    let client = connect_with(&server, sink_router(ctx), ClientConfig::default()).await.unwrap();
    wait_until("connected", || server.connection_count() == 1).await;
    let back = server.peers().pop().unwrap();
    let mut transfers = Vec::new();
    for i in 0..4u64 {
        transfers.push(client.send_big_stream(
            "sink",
            Generated::new(64 << 20, i + 10, false),
            StreamOptions::default(),
        ));
        transfers.push(back.send_big_stream(
            "sink",
            Generated::new(64 << 20, i + 20, false),
            StreamOptions::default(),
        ));
    }
    // Small calls keep flowing while 512 MiB move.
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = std::time::Instant::now();
        assert_eq!(client.call_console("echo", i.to_string()).await.unwrap(), i.to_string().as_str());
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest call during the transfers: {slowest:?}");
    for t in transfers {
        assert_eq!(within("transfer", t.finish()).await.unwrap(), 64 << 20);
    }
    let mut hashes = Vec::new();
    for _ in 0..4 {
        hashes.push(within("server side", rx.recv()).await.unwrap().hash);
        hashes.push(within("client side", crx.recv()).await.unwrap().hash);
    }
    for i in 0..4u64 {
        assert!(hashes.contains(&expected_hash(64 << 20, i + 10, false).await));
        assert!(hashes.contains(&expected_hash(64 << 20, i + 20, false).await));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_slows_the_sender() {
    let received = Arc::new(AtomicU64::new(0));
    let mut r = Router::new();
    let rc = received.clone();
    r.big_stream("slow", move |_p, mut s: IncomingStream| {
        let rc = rc.clone();
        async move {
            while let Some(c) = s.next_chunk().await {
                rc.fetch_add(c?.len() as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, CallError>(())
        }
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    let opts = StreamOptions { compression: Compression::None, ..StreamOptions::default() };
    let t = client.send_big_stream("slow", Generated::new(32 << 20, 5, false), opts);
    let mut p = t.watch_progress();
    let config = zs::ConnectionConfig::default();
    // Ahead of the reader: at most the window, the sender's queue and one chunk in each
    // socket buffer direction (generous: 8 MiB of kernel buffers).
    let bound = u64::from(config.bulk.stream_window)
        + config.bulk.max_queued_bulk_bytes as u64
        + (8 << 20)
        + (64 << 10);
    let mut max_ahead = 0;
    while p.changed().await.is_ok() {
        let ahead = p.borrow().done.saturating_sub(received.load(Ordering::SeqCst));
        max_ahead = max_ahead.max(ahead);
        if p.borrow().done >= 16 << 20 {
            break;
        }
    }
    assert!(max_ahead <= bound, "sender ran {max_ahead} bytes ahead of the reader (bound {bound})");
    t.cancel("done measuring");
    let _ = t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_transfer_fails_both_ends_and_leaves_nothing_behind() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = serve(sink_router(tx)).await;
    let client = connect(&server).await.unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let mut src = Generated::new(u64::MAX, 3, false);
    src.dropped = Some(dropped.clone());
    let t = client.send_big_stream("sink", src, StreamOptions::default());
    let mut p = t.watch_progress();
    within("progress", p.wait_for(|p| p.done > 8 << 20)).await.unwrap();
    for peer in server.peers() {
        peer.close_with(zs::GoAwayCode::Normal, "server maintenance");
    }
    let err = within("sender fails", t.finish()).await.unwrap_err();
    assert!(matches!(err, CallError::Disconnected(ref m) if m.contains("server maintenance")), "{err}");
    assert!(dropped.load(Ordering::SeqCst), "the source was dropped");
    let seen = within("receiver fails", rx.recv()).await.unwrap();
    assert!(seen.error.is_some(), "the handler saw an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_buffers_whole_and_capped() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let mut r = Router::new();
    r.complete_buffer("blob", move |_p, data| {
        tx.send(data).unwrap();
        Ok::<_, CallError>(())
    });
    let mut config = ServerConfig::default();
    config.connection.bulk.max_buffer_len = 4 << 20;
    let server = serve_with(r, config).await;
    let client = connect(&server).await.unwrap();
    for len in [0usize, 1, 4 << 20] {
        let data = Bytes::from((0..len).map(|i| (i * 7 % 256) as u8).collect::<Vec<_>>());
        assert_eq!(client.send_complete_buffer("blob", data.clone()).await.unwrap(), len as u64);
        assert_eq!(within("buffer", rx.recv()).await.unwrap(), data);
    }
    let err = client.send_complete_buffer("blob", Bytes::from(vec![0u8; (4 << 20) + 1])).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("exceeds the limit of 4194304"), "{err}");
    let err = client.send_complete_buffer("nothing_here", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownCommand));
    let err = client.send_big_stream("blob", &b"abc"[..], StreamOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("does not take big streams"), "{err}");
    assert!(rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_streams_are_parked_consumed_cleared_and_budgeted() {
    let mut r = Router::new();
    // A later command consumes parked streams by key.
    r.console("consume", |peer, key: zs::Text| {
        let key: u64 = key.parse().map_err(|_| "bad key")?;
        match peer.take_batch(key) {
            Some(data) => Ok::<_, zs::HandlerError>(format!("{} bytes", data.len())),
            None => Err(format!("no batch stream {key}").into()),
        }
    });
    r.console("keys", |peer, _| format!("{:?}", peer.batch_keys()));
    let mut config = ServerConfig::default();
    config.connection.bulk.batch_budget = 3 << 20;
    let server = serve_with(r, config).await;
    let client = connect(&server).await.unwrap();
    for key in 1..=3u64 {
        client.post_batch(key, Bytes::from(vec![key as u8; 1 << 20])).await.unwrap();
    }
    assert_eq!(client.call_console("keys", "").await.unwrap(), "[1, 2, 3]");
    let err = client.post_batch(4, Bytes::from(vec![0u8; 10])).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::TooLarge), "over budget: {err}");
    assert!(err.to_string().contains("exceeds the budget"), "{err}");
    assert_eq!(client.call_console("consume", "2").await.unwrap(), "1048576 bytes");
    assert!(client.call_console("consume", "2").await.is_err(), "consumed once");
    client.post_batch(4, Bytes::from(vec![0u8; 10])).await.unwrap();
    client.clear_remote_batches(Some(1)).await.unwrap();
    assert_eq!(client.call_console("keys", "").await.unwrap(), "[3, 4]");
    client.clear_remote_batches(None).await.unwrap();
    assert_eq!(client.call_console("keys", "").await.unwrap(), "[]");
    // When the peer leaves, what it parked goes with it.
    client.post_batch(9, Bytes::from_static(b"bye")).await.unwrap();
    let peer = server.peers().pop().unwrap();
    assert_eq!(peer.batch_keys(), vec![9]);
    drop(client);
    wait_until("peer gone", || server.connection_count() == 0).await;
    assert_eq!(peer.batch_keys(), Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_on_one_connection_with_a_tiny_lane_never_stall() {
    // A quantum smaller than one chunk and a small lane, many streams, and a receiver too
    // busy to keep its socket drained: the sender's connection often has output pending
    // (no room) when it looks at its queue while every sender waits for room in the lane.
    // It must come back for the rest without anyone pushing again.
    let mut r = Router::new();
    r.big_stream("busy", |_peer, mut s: IncomingStream| async move {
        while let Some(c) = s.next_chunk().await {
            c?;
            std::thread::sleep(Duration::from_micros(300)); // hogs its worker
        }
        Ok::<_, CallError>(())
    });
    r.console("echo", |_, t| t);
    let server = serve(r).await;
    let mut cc = ClientConfig::default();
    cc.connection.bulk_quantum = 16 << 10;
    cc.connection.bulk.max_queued_bulk_bytes = 256 << 10;
    let client = connect_with(&server, Router::new(), cc).await.unwrap();
    let transfers: Vec<_> = (0..48u64)
        .map(|i| {
            client.send_big_stream("busy", Generated::new(2 << 20, i + 1, false), StreamOptions::default())
        })
        .collect();
    let calls = async {
        for i in 0..50 {
            client.call_console("echo", i.to_string()).await.unwrap();
        }
    };
    within("calls during the streams", calls).await;
    for t in transfers {
        assert_eq!(within("every stream completes", t.finish()).await.unwrap(), 2 << 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stream_cut_off_by_a_disconnect_leaves_nothing_parked() {
    let server = serve(Router::new()).await;
    let client = connect(&server).await.unwrap();
    // A batch of 32 MiB, cut off early: the connection closes mid-transfer.
    let t = client.post_batch(1, Bytes::from(vec![5u8; 32 << 20]));
    let mut p = t.watch_progress();
    within("progress", p.wait_for(|p| p.done > 1 << 20)).await.unwrap();
    let peer = server.peers().pop().unwrap();
    peer.close();
    assert!(matches!(within("sender fails", t.finish()).await, Err(CallError::Disconnected(_))));
    wait_until("closed", || server.connection_count() == 0).await;
    // Nothing is parked on the gone peer, and the server serves the next one.
    assert_eq!(peer.batch_keys(), Vec::<u64>::new());
    let again = connect(&server).await.unwrap();
    again.post_batch(2, Bytes::from_static(b"fine")).await.unwrap();
}

/// Raw frames of a stream `id` announced to `sink` with `total` bytes.
fn raw_open(id: u32, total: u64) -> Vec<u8> {
    raw_open_to("sink", id, total)
}

fn raw_open_to(command: &str, id: u32, total: u64) -> Vec<u8> {
    use zs::wire::bulk::{StreamCheck, StreamMode, StreamOpen};
    let mut open = bytes::BytesMut::new();
    StreamOpen {
        mode: StreamMode::Stream,
        check: StreamCheck::Blake3,
        total,
        offset: 0,
        key: 0,
        name: command.into(),
    }
    .encode(&mut open)
    .unwrap();
    raw_frame(zs::wire::Kind::StreamOpen, zs::wire::Flags::NONE, id, &open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_frames_close_only_their_connection() {
    use zs::wire::{Flags, Kind};
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut router = sink_router(tx);
    // Never reads: grants no credit beyond the initial window, however the tasks are
    // scheduled (a reading consumer could grant credit as fast as data arrives).
    router.big_stream("stall", |_peer, s: IncomingStream| async move {
        let _held = s;
        std::future::pending::<Result<(), zs::CallError>>().await
    });
    let server = serve_with(router, plaintext()).await;
    let bystander = connect(&server).await.unwrap();
    let addr = server.local_addr();

    // A malformed announcement.
    let frames = raw_exchange(addr, &raw_frame(Kind::StreamOpen, Flags::NONE, 1, &[9, 0, 0])).await;
    let (code, msg) = goaway_of(&frames);
    assert_eq!(code, zs::GoAwayCode::ProtocolError);
    assert!(msg.contains("stream open"), "{msg}");

    // Data past the window the receiver granted: a peer that ignores credit cannot make
    // the server buffer more than the window.
    let mut wire = raw_open_to("stall", 3, u64::MAX);
    let chunk = vec![7u8; 200 << 10];
    for _ in 0..10 {
        wire.extend(raw_frame(Kind::StreamData, Flags::NONE, 3, &chunk)); // 2 MB, window 1 MiB
    }
    let (code, msg) = goaway_of(&raw_exchange(addr, &wire).await);
    assert_eq!(code, zs::GoAwayCode::ProtocolError);
    assert!(msg.contains("exceeded the stream window"), "{msg}");

    // Data after the end.
    let mut end = bytes::BytesMut::new();
    zs::wire::bulk::StreamEnd { bytes: 0, hash: *blake3::hash(b"").as_bytes() }.encode(&mut end);
    let mut wire = raw_open(5, 0);
    wire.extend(raw_frame(Kind::StreamEnd, Flags::NONE, 5, &end));
    wire.extend(raw_frame(Kind::StreamData, Flags::NONE, 5, b"late"));
    // End and late data arrive in one read, and a finished stream is forgotten only
    // between reads, so the late data is seen and refused.
    let (code, msg) = goaway_of(&raw_exchange(addr, &wire).await);
    assert_eq!(code, zs::GoAwayCode::ProtocolError);
    assert!(msg.contains("after the stream's end"), "{msg}");

    assert_eq!(bystander.call_console("echo", "unharmed").await.unwrap(), "unharmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_announcement_is_never_overtaken_by_its_first_chunk() {
    // Many short streams started while calls and one-way commands keep the small-frame lane
    // busy: each stream's first chunk is ready moments after its announcement. (When the
    // announcement took the small-frame lane, this lost a first chunk about one run in
    // five.) Announcement and chunks share
    // one lane, so none arrives for a stream the receiver does not know yet (it would be
    // dropped and the stream would fail its checksum).
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.direct_console("noop", |_, _| {});
    r.big_stream("sink", |_, mut s: IncomingStream| async move {
        while let Some(c) = s.next_chunk().await {
            c?;
        }
        Ok::<_, zs::CallError>(())
    });
    let server = serve_with(r, plaintext()).await;
    let client = connect(&server).await.unwrap();
    for round in 0..10 {
        let calls = futures_util::future::join_all((0..200).map(|i| {
            let c = client.peer().clone();
            async move {
                c.call_console("echo", format!("{round}:{i}:{}", "z".repeat(i * 13 % 2000))).await.unwrap()
            }
        }));
        // One-way commands flood the small-frame lane from other tasks meanwhile.
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let c = client.peer().clone();
                tokio::spawn(async move {
                    for i in 0..5_000 {
                        c.send_console("noop", format!("{i}")).await.unwrap();
                    }
                })
            })
            .collect();
        let size = 300u64 << 10;
        let streams: Vec<_> = (0..40)
            .map(|i| {
                let data = zs_bench::source::Noise::new(size, round * 100 + i);
                client.send_big_stream("sink", data, StreamOptions::with_len(size))
            })
            .collect();
        within("calls", calls).await;
        for f in flood {
            within("flood", f).await.unwrap();
        }
        for (i, t) in streams.into_iter().enumerate() {
            within("stream", t.finish()).await.unwrap_or_else(|e| panic!("round {round}, stream {i}: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_the_sender_knows_is_sent_as_is_and_checked() {
    // The receiver hands back the verified hash of what arrived.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut router = Router::new();
    router.big_stream("keep", move |_, mut stream: IncomingStream| {
        let tx = tx.clone();
        async move {
            while let Some(chunk) = stream.next_chunk().await {
                chunk?;
            }
            let _ = tx.send(stream.verified_hash());
            Ok::<_, CallError>(())
        }
    });
    let server = serve_with(router, plaintext()).await;
    let client = connect_with(&server, Router::new(), ClientConfig::default()).await.unwrap();
    let data = Bytes::from(vec![7u8; 600_000]);
    let right = *blake3::hash(&data).as_bytes();
    let blake3 = zs::StreamCheck::Blake3;
    let opts =
        StreamOptions { check: blake3, hash: Some(right), ..StreamOptions::with_len(data.len() as u64) };
    let sent = within(
        "known hash",
        client.send_big_stream("keep", std::io::Cursor::new(data.clone()), opts).finish(),
    )
    .await;
    assert_eq!(sent.unwrap(), 600_000);
    assert_eq!(within("verified", rx.recv()).await.unwrap(), Some(right));
    // Hashed by the sender as it goes (three chunks, each sent compressed): the same.
    let opts = StreamOptions { check: blake3, ..StreamOptions::with_len(data.len() as u64) };
    let sent = client.send_big_stream("keep", std::io::Cursor::new(data.clone()), opts).finish();
    assert_eq!(within("hashed while sent", sent).await.unwrap(), 600_000);
    assert_eq!(within("verified", rx.recv()).await.unwrap(), Some(right));
    // Checked with XXH3 (the default), it is verified too, but no BLAKE3 comes of it.
    let opts = StreamOptions::with_len(data.len() as u64);
    let sent = client.send_big_stream("keep", std::io::Cursor::new(data.clone()), opts).finish();
    assert_eq!(within("xxh3", sent).await.unwrap(), 600_000);
    assert_eq!(within("verified", rx.recv()).await.unwrap(), None);
    // A wrong one fails the transfer, as corrupted bytes would, whatever the check.
    for check in [blake3, zs::StreamCheck::Xxh3] {
        let opts = StreamOptions { check, hash: Some([1; 32]), ..StreamOptions::with_len(data.len() as u64) };
        let r = within(
            "wrong hash",
            client.send_big_stream("keep", std::io::Cursor::new(data.clone()), opts).finish(),
        )
        .await;
        assert_eq!(r.unwrap_err().remote_code(), Some(ErrorCode::ChecksumMismatch));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_requires_blake3_refuses_a_weaker_check_and_says_so() {
    let mut router = Router::new();
    router.big_stream("keep", |_, mut stream: IncomingStream| async move {
        while let Some(chunk) = stream.next_chunk().await {
            chunk?;
        }
        Ok::<_, CallError>(())
    });
    let mut config = plaintext();
    config.connection.bulk.min_stream_check = zs::StreamCheck::Blake3;
    let server = serve_with(router, config).await;
    let client = connect_with(&server, Router::new(), ClientConfig::default()).await.unwrap();
    let data = Bytes::from(vec![3u8; 100_000]);
    let opts = StreamOptions::with_len(data.len() as u64);
    let refused = client.send_big_stream("keep", std::io::Cursor::new(data.clone()), opts).finish();
    let e = within("refused", refused).await.unwrap_err();
    assert_eq!(e.remote_code(), Some(ErrorCode::BadPayload), "{e}");
    assert!(e.to_string().contains("checked with XXH3-128; this end requires BLAKE3"), "{e}");
    let opts = StreamOptions { check: zs::StreamCheck::Blake3, ..StreamOptions::with_len(data.len() as u64) };
    let sent = client.send_big_stream("keep", std::io::Cursor::new(data), opts).finish();
    assert_eq!(within("taken", sent).await.unwrap(), 100_000);
}
