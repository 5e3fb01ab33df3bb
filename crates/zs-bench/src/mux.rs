//! `zs bench mux`: virtual channels over one connection. How much memory a held channel
//! costs (both ends, one process); one channel's bulk throughput against a plain TCP
//! connection and against tokio-yamux, side by side; and the latency of small calls on
//! one channel while another saturates the link (head of line).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zs::{Client, ClientConfig, Router, Server, ServerConfig, ServerSecurity, VirtualStream};

use crate::best_copy::{best_copy, Source};
use crate::harness::runtime;
use crate::procmem;
use crate::stats::median;

/// Options of the mux scenario.
#[derive(Debug, Clone, Copy)]
pub struct MuxOptions {
    /// Channels held at once for the memory figure (0 skips it).
    pub channels: usize,
    /// Bytes of each bulk transfer (0 skips the throughput comparison).
    pub size: u64,
    /// Calls timed with and without a saturating channel beside them (0 skips it).
    pub calls: usize,
}

/// Memory of held channels.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Held {
    /// Channels open at once over the one connection.
    pub channels: usize,
    /// Resident memory growth of the process (both ends) while they are held, bytes.
    pub rss_growth: u64,
    /// `rss_growth / channels`.
    pub bytes_per_channel: f64,
    /// Seconds to open them all.
    pub open_s: f64,
}

/// One channel's bulk throughput, bytes per second (median of three rounds each).
#[derive(Debug, Clone, Serialize)]
pub struct Bulk {
    /// Bytes per transfer.
    pub size: u64,
    /// A plain TCP connection (tokio, 64 KiB writes: the same writes as ours).
    pub raw: f64,
    /// The floor: the fastest raw copy over one connection (best of tokio and threads,
    /// 64 KiB to 1 MiB writes), median over the rounds.
    pub floor: f64,
    /// The way that was fastest in the last round.
    pub floor_way: String,
    /// One of our virtual channels.
    pub ours: f64,
    /// One tokio-yamux stream (absent if its transfers stalled: see `yamux_error`).
    pub yamux: Option<f64>,
    /// Why the yamux entry is absent.
    pub yamux_error: Option<String>,
    /// `ours / floor` (median of the rounds' ratios).
    pub ratio: f64,
    /// `ours / raw` (median of the rounds' ratios), the comparison of earlier runs.
    pub ratio_raw: f64,
    /// `ours / yamux` (median of the rounds' ratios).
    pub vs_yamux: Option<f64>,
}

/// Latency of 64-byte calls on a virtual peer, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Calls timed.
    pub calls: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct MuxReport {
    /// Always "mux".
    pub scenario: &'static str,
    /// Memory of held channels.
    pub held: Option<Held>,
    /// Bulk throughput.
    pub bulk: Option<Bulk>,
    /// Calls on one channel while nothing else runs.
    pub calls_idle: Option<Latency>,
    /// The same while another channel of the same connection carries bulk data flat out.
    pub calls_loaded: Option<Latency>,
}

const CHUNK: usize = 64 << 10;

/// Runs the scenario.
pub fn run(opts: MuxOptions) -> Result<MuxReport, String> {
    let rt = runtime("zs-bench-mux")?;
    rt.block_on(async {
        let mut report =
            MuxReport { scenario: "mux", held: None, bulk: None, calls_idle: None, calls_loaded: None };
        if opts.channels > 0 {
            report.held = Some(held(opts.channels).await?);
        }
        if opts.size > 0 {
            report.bulk = Some(bulk(opts.size).await?);
        }
        if opts.calls > 0 {
            let (idle, loaded) = head_of_line(opts.calls).await?;
            report.calls_idle = Some(idle);
            report.calls_loaded = Some(loaded);
        }
        Ok(report)
    })
}

fn plaintext() -> ServerConfig {
    ServerConfig { security: ServerSecurity::Plaintext, ..ServerConfig::default() }
}

async fn serve(router: Router) -> Result<(zs::ServerHandle, Client), String> {
    let server = Server::bind("127.0.0.1:0", router, plaintext()).await.map_err(|e| e.to_string())?;
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let client =
        Client::connect_with(server.local_addr(), Router::new(), config).await.map_err(|e| e.to_string())?;
    Ok((server, client))
}

/// Opens `n` channels and holds both ends.
async fn held(n: usize) -> Result<Held, String> {
    let mut router = Router::new();
    let mut listener = router.listen_with_backlog("hold", 4096);
    let (_server, client) = serve(router).await?;
    let accepted = tokio::spawn(async move {
        let mut all = Vec::with_capacity(n);
        while all.len() < n {
            match listener.accept().await {
                Some(s) => all.push(s),
                None => break,
            }
        }
        all
    });
    // Warm the connection, then measure from here.
    drop(client.peer().open_stream("hold").await.map_err(|e| e.to_string())?);
    let before = procmem::rss("self")?;
    let start = Instant::now();
    let mut mine: Vec<VirtualStream> = Vec::with_capacity(n);
    // Opened 1,000 at a time: the transient futures stay small beside what is measured.
    while mine.len() < n - 1 {
        let batch = (n - 1 - mine.len()).min(1000);
        let opens: Vec<_> = (0..batch)
            .map(|_| {
                let peer = client.peer().clone();
                tokio::spawn(async move { peer.open_stream("hold").await })
            })
            .collect();
        for o in opens {
            mine.push(o.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?);
        }
    }
    let theirs = accepted.await.map_err(|e| e.to_string())?;
    let open_s = start.elapsed().as_secs_f64();
    let growth = procmem::rss("self")?.saturating_sub(before);
    let channels = mine.len();
    drop((mine, theirs));
    Ok(Held { channels, rss_growth: growth, bytes_per_channel: growth as f64 / channels as f64, open_s })
}

/// Writes `size` bytes in 64 KiB writes.
async fn send(mut w: impl AsyncWrite + Unpin, size: u64) -> std::io::Result<()> {
    let buf = vec![0x5Au8; CHUNK];
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&buf[..n]).await?;
        // yamux streams hold writes until flushed (a no-op for the others).
        w.flush().await?;
        left -= n as u64;
    }
    w.shutdown().await
}

/// Reads to the end, or until `expect` bytes arrived; returns the bytes read. (A yamux
/// stream's end reaches its reader only while the writer's handle lives: the transfer is
/// over when its bytes are in.)
async fn sink(mut r: impl AsyncRead + Unpin, expect: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    while total < expect {
        match r.read(&mut buf).await? {
            0 => break,
            n => total += n as u64,
        }
    }
    Ok(total)
}

async fn timed(
    size: u64,
    w: impl AsyncWrite + Unpin + Send + 'static,
    r: impl AsyncRead + Unpin + Send + 'static,
) -> Result<f64, String> {
    let start = Instant::now();
    let reader = tokio::spawn(sink(r, size));
    send(w, size).await.map_err(|e| format!("sending: {e}"))?;
    let got = reader.await.map_err(|e| e.to_string())?.map_err(|e| format!("receiving: {e}"))?;
    if got != size {
        return Err(format!("{got} of {size} bytes arrived"));
    }
    Ok(size as f64 / start.elapsed().as_secs_f64())
}

async fn raw_once(size: u64) -> Result<f64, String> {
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let w =
        TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let (r, _) = l.accept().await.map_err(|e| e.to_string())?;
    timed(size, w, r).await
}

async fn ours_once(size: u64) -> Result<f64, String> {
    let mut router = Router::new();
    let mut listener = router.listen("sink");
    let (_server, client) = serve(router).await?;
    let (w, r) = tokio::join!(client.peer().open_stream("sink"), listener.accept());
    let w = w.map_err(|e| e.to_string())?;
    timed(size, w, r.ok_or("no channel accepted")?).await
}

async fn yamux_once(size: u64) -> Result<f64, String> {
    use tokio_yamux::{Config, Session};
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let c =
        TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
    let mut server = Session::new_server(s, Config::default());
    let mut client = Session::new_client(c, Config::default());
    let mut control = client.control();
    // Sessions do their IO when polled: each is driven by its own task.
    tokio::spawn(async move { while let Some(Ok(_)) = client.next().await {} });
    let accept = tokio::spawn(async move {
        let first = server.next().await;
        tokio::spawn(async move { while let Some(Ok(_)) = server.next().await {} });
        first
    });
    let w = control.open_stream().await.map_err(|e| e.to_string())?;
    // A tokio-yamux stream takes its window updates in only while it is read (its docs: a
    // stream that only writes gets stuck), so the writing end is also read, as it expects.
    let (mut updates, w) = tokio::io::split(w);
    tokio::spawn(async move { sink(&mut updates, u64::MAX).await });
    // yamux announces a stream with its first data: the writer starts before the accept.
    let start = Instant::now();
    let writer = tokio::spawn(send(w, size));
    let r = accept.await.map_err(|e| e.to_string())?.ok_or("no yamux stream")?.map_err(|e| e.to_string())?;
    let got = sink(r, size).await.map_err(|e| format!("receiving: {e}"))?;
    writer.await.map_err(|e| e.to_string())?.map_err(|e| format!("sending: {e}"))?;
    if got != size {
        return Err(format!("{got} of {size} bytes arrived over yamux"));
    }
    Ok(size as f64 / start.elapsed().as_secs_f64())
}

async fn bulk(size: u64) -> Result<Bulk, String> {
    let (mut raw, mut ours, mut yamux, mut ratio, mut vs) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut floor, mut ratio_raw, mut floor_way) = (vec![], vec![], String::new());
    let mut yamux_error = None;
    for _ in 0..3 {
        let best = best_copy(size, 1, Source::Constant).await?;
        let r = raw_once(size).await?;
        let o = ours_once(size).await?;
        let f = best.best.max(r);
        floor_way = if f > best.best { "tokio, 64 KiB writes".into() } else { best.best_way };
        ratio.push(o / f);
        ratio_raw.push(o / r);
        floor.push(f);
        raw.push(r);
        ours.push(o);
        if yamux_error.is_some() {
            continue;
        }
        let limit = Duration::from_secs(10 + (size >> 26));
        match tokio::time::timeout(limit, yamux_once(size)).await {
            Ok(Ok(y)) => {
                vs.push(o / y);
                yamux.push(y);
            }
            Ok(Err(e)) => yamux_error = Some(e),
            Err(_) => yamux_error = Some(format!("the transfer stalled (nothing for {limit:?})")),
        }
    }
    let some = |v: Vec<f64>| (!v.is_empty() && yamux_error.is_none()).then(|| median(v));
    Ok(Bulk {
        size,
        raw: median(raw),
        floor: median(floor),
        floor_way,
        ratio_raw: median(ratio_raw),
        ours: median(ours),
        yamux: some(yamux),
        ratio: median(ratio),
        vs_yamux: some(vs),
        yamux_error: yamux_error.clone(),
    })
}

async fn time_calls(peer: &zs::Peer, n: usize) -> Result<Latency, String> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let text = "x".repeat(64);
    for _ in 0..n {
        let start = Instant::now();
        peer.call_console("echo", text.as_str()).await.map_err(|e| e.to_string())?;
        h.record(start.elapsed().as_micros().max(1) as u64).map_err(|e| e.to_string())?;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Latency {
        calls: n,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    })
}

/// Calls on a virtual peer, alone and then beside a channel that writes flat out.
async fn head_of_line(calls: usize) -> Result<(Latency, Latency), String> {
    let mut router = Router::new();
    router.console("echo", |_, text| text.to_owned());
    router.serve_channels("calls");
    let mut listener = router.listen("sink");
    let (_server, client) = serve(router).await?;
    let peer = client.peer().open_peer("calls").await.map_err(|e| e.to_string())?;
    time_calls(&peer, calls.min(100)).await?; // warm up
    let idle = time_calls(&peer, calls).await?;
    let (w, r) = tokio::join!(client.peer().open_stream("sink"), listener.accept());
    let mut w = w.map_err(|e| e.to_string())?;
    let reader = tokio::spawn(sink(r.ok_or("no channel accepted")?, u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let writer = tokio::spawn(async move {
        let buf = vec![0u8; CHUNK];
        let deadline = Instant::now() + Duration::from_secs(120);
        while !flag.load(Relaxed) && Instant::now() < deadline {
            if w.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let loaded = time_calls(&peer, calls).await;
    stop.store(true, Relaxed);
    writer.await.map_err(|e| e.to_string())?;
    let carried = reader.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    if carried == 0 {
        return Err("the bulk channel carried nothing".into());
    }
    Ok((idle, loaded?))
}

/// A readable table of the report.
pub fn table(r: &MuxReport) -> String {
    let mut s = String::from("mux: virtual channels over one connection (plaintext, loopback)");
    if let Some(h) = &r.held {
        s += &format!(
            "\nheld: {} channels, {:.0} bytes per channel (both ends), opened in {:.2} s",
            h.channels, h.bytes_per_channel, h.open_s
        );
    }
    if let Some(b) = &r.bulk {
        s += &format!(
            "\nbulk {} MiB: floor (fastest raw copy, {}) {:.2} GB/s, raw TCP with our 64 KiB writes {:.2} GB/s, \
             ours {:.2} GB/s; ours/floor {:.2}, ours/raw {:.2}",
            b.size >> 20,
            b.floor_way,
            b.floor / 1e9,
            b.raw / 1e9,
            b.ours / 1e9,
            b.ratio,
            b.ratio_raw
        );
        match (b.yamux, b.vs_yamux, &b.yamux_error) {
            (Some(y), Some(v), _) => s += &format!("\ntokio-yamux {:.2} GB/s; ours/yamux {v:.2}", y / 1e9),
            (_, _, Some(e)) => s += &format!("\ntokio-yamux: not measured: {e}"),
            _ => {}
        }
    }
    if let (Some(i), Some(l)) = (&r.calls_idle, &r.calls_loaded) {
        s += &format!(
            "\n64-byte calls, alone: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
             beside a saturating channel: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            i.p50_ms, i.p99_ms, i.max_ms, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    s
}
