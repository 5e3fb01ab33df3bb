//! `zs bench bulk`: big streams against a plain tokio TCP copy of the same bytes, with
//! small calls on the same connection during the transfer, and the peak memory growth.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use zs::{Client, Router, StreamOptions};

use crate::harness::{runtime, start_servers, Secure, Target};
use crate::procmem;
use crate::source::Noise;
use crate::stats::histogram;

/// Options of the bulk scenario.
#[derive(Debug, Clone, Copy)]
pub struct BulkOptions {
    /// Bytes per stream.
    pub size: u64,
    /// Streams in all, run at once.
    pub streams: usize,
    /// Connections the streams are spread over.
    pub connections: usize,
    /// How our server is secured.
    pub secure: Secure,
    /// How our streams are checked end to end.
    pub check: zs::StreamCheck,
}

/// Where our server runs.
#[derive(Debug, Clone)]
pub enum ServerPlace {
    /// In this process, on its own runtime (both ends' memory counted together).
    InProcess,
    /// As `zs serve` started from this executable, so its memory is measured on its own.
    Process(std::path::PathBuf),
}

/// Throughput of one entry.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Bytes moved per second.
    pub bytes_per_s: f64,
    /// Seconds taken.
    pub seconds: f64,
}

/// 64-byte echo calls made on the first connection while our streams ran.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CallsDuring {
    /// Calls completed.
    pub completed: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    /// Always "bulk".
    pub scenario: &'static str,
    /// Bytes per stream.
    pub size: u64,
    /// Streams.
    pub streams: usize,
    /// Connections.
    pub connections: usize,
    /// Our big streams.
    pub ours: Throughput,
    /// How they were checked end to end.
    pub check: &'static str,
    /// Plain tokio TCP copies of the same bytes over as many connections.
    pub floor: Throughput,
    /// `ours.bytes_per_s / floor.bytes_per_s`.
    pub ratio: f64,
    /// How our server was secured (`none`, `noise`, `tls`).
    pub secure: Secure,
    /// With `secure` other than `none`: the same transfer to our plaintext server, same run.
    pub ours_plaintext: Option<Throughput>,
    /// `ours.bytes_per_s / ours_plaintext.bytes_per_s`: what security costs.
    pub secure_ratio: Option<f64>,
    /// Small calls during our transfer.
    pub calls_during: CallsDuring,
    /// Resident memory of this process (both ends) before our transfer, bytes.
    pub rss_before: u64,
    /// Peak resident memory during our transfer minus `rss_before`, bytes (this process:
    /// both ends, or only the senders when the server runs apart).
    pub peak_rss_growth: u64,
    /// The server's own peak memory growth during our transfer, when it ran as its own
    /// process.
    pub server_peak_rss_growth: Option<u64>,
}

/// Runs the scenario: the floor in this process (both ends on one 2-thread runtime each),
/// ours in this process or against a `zs serve` process.
pub fn run(opts: BulkOptions, place: ServerPlace) -> Result<BulkReport, String> {
    let servers = start_servers(floor_sink, opts.secure)?;
    let load_rt = runtime("zs-bench-load")?;
    let floor = load_rt.block_on(floor_copy(servers.floor, opts))?;
    let ours_plaintext = match &servers.ours_plaintext {
        Some(plain) => Some(load_rt.block_on(ours_streams(plain, opts))?.0),
        None => None,
    };
    let process = match &place {
        ServerPlace::InProcess => None,
        ServerPlace::Process(exe) => Some(crate::idle::start_server(exe, opts.secure)?),
    };
    let target = process.as_ref().map_or(&servers.ours, |p| &p.target);
    let server_pid = process.as_ref().map(|p| p.child.id().to_string());
    let server_before = server_pid.as_deref().map(procmem::reset_peak).transpose()?;
    let rss_before = procmem::reset_peak("self")?;
    let result = load_rt.block_on(ours_streams(target, opts));
    let peak = procmem::status_bytes("self", "VmHWM:")?;
    let server_peak = server_pid.as_deref().map(|pid| procmem::status_bytes(pid, "VmHWM:")).transpose()?;
    drop(process);
    let (ours, calls_during) = result?;
    Ok(BulkReport {
        scenario: "bulk",
        size: opts.size,
        streams: opts.streams,
        connections: opts.connections,
        secure: opts.secure,
        ratio: ours.bytes_per_s / floor.bytes_per_s.max(1e-9),
        check: opts.check.name(),
        secure_ratio: ours_plaintext.map(|p| ours.bytes_per_s / p.bytes_per_s.max(1e-9)),
        ours_plaintext,
        ours,
        floor,
        calls_during,
        rss_before,
        peak_rss_growth: peak.saturating_sub(rss_before),
        server_peak_rss_growth: server_peak.zip(server_before).map(|(p, b)| p.saturating_sub(b)),
    })
}

fn total(opts: BulkOptions) -> u64 {
    opts.size * opts.streams as u64
}

/// The floor's server: read and discard until the end, then answer one byte.
pub(crate) async fn floor_sink(listener: TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 << 10];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    let _ = s.write_all(b"k").await;
                    return;
                }
            }
        });
    }
}

/// The floor: each connection writes its share of the bytes in 256 KiB writes.
async fn floor_copy(addr: SocketAddr, opts: BulkOptions) -> Result<Throughput, String> {
    let per_conn = total(opts) / opts.connections as u64;
    let start = Instant::now();
    let tasks: Vec<_> = (0..opts.connections)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let mut src = Noise::new(per_conn, i as u64 + 1);
                let mut buf = vec![0u8; 256 << 10];
                while src.left() > 0 {
                    let n = (src.left() as usize).min(buf.len());
                    src.fill(&mut buf[..n]);
                    s.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
                }
                s.shutdown().await.map_err(|e| e.to_string())?;
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Throughput { bytes_per_s: (per_conn * opts.connections as u64) as f64 / seconds, seconds })
}

pub(crate) async fn ours_streams(
    target: &Target,
    opts: BulkOptions,
) -> Result<(Throughput, CallsDuring), String> {
    let mut clients = Vec::new();
    for _ in 0..opts.connections {
        let c = Client::connect_with(target.addr, Router::new(), target.client_config()).await;
        clients.push(Arc::new(c.map_err(|e| e.to_string())?));
    }
    let (stop_tx, stop) = watch::channel(false);
    let caller = clients[0].clone();
    let calls = tokio::spawn(async move {
        let mut h = histogram();
        let payload = zs::Text::from("x".repeat(64));
        while !*stop.borrow() {
            let t = Instant::now();
            if caller.call_console("echo", payload.clone()).await.is_err() {
                break;
            }
            h.saturating_record(t.elapsed().as_micros().max(1) as u64);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        h
    });
    let start = Instant::now();
    let transfers: Vec<_> = (0..opts.streams)
        .map(|i| {
            let c = &clients[i % clients.len()];
            let sopts = StreamOptions { check: opts.check, ..StreamOptions::with_len(opts.size) };
            c.send_big_stream("sink", Noise::new(opts.size, i as u64 + 1), sopts)
        })
        .collect();
    // Bounded: at least 10 MB/s, plus a minute, or the run fails.
    let limit = Duration::from_secs(60 + total(opts) / 10_000_000);
    for t in transfers {
        tokio::time::timeout_at((start + limit).into(), t.finish())
            .await
            .map_err(|_| format!("the transfer did not finish within {limit:?}"))?
            .map_err(|e| e.to_string())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let h = calls.await.map_err(|e| e.to_string())?;
    let calls = CallsDuring {
        completed: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    };
    Ok((Throughput { bytes_per_s: total(opts) as f64 / seconds, seconds }, calls))
}

/// A readable table of the report.
pub fn table(r: &BulkReport) -> String {
    let gb = |b: f64| b / 1e9;
    format!(
        "bulk: {} stream(s) of {} bytes over {} connection(s)\n\
         {:<24}{:>10.2} GB/s  ({:.2} s)\n\
         {:<24}{:>10.2} GB/s  ({:.2} s)\n\
         ratio ours/floor: {:.2}{}\n\
         64-byte calls during the transfer: {} done, p50 {} µs, p99 {} µs, max {} µs\n\
         peak RSS growth of this process: {:.1} MB{}",
        r.streams,
        r.size,
        r.connections,
        "floor (tokio TCP copy)",
        gb(r.floor.bytes_per_s),
        r.floor.seconds,
        format!("ours ({})", r.check),
        gb(r.ours.bytes_per_s),
        r.ours.seconds,
        r.ratio,
        match (r.ours_plaintext, r.secure_ratio) {
            (Some(p), Some(x)) => format!(
                "\n{:<24}{:>10.2} GB/s  ({:.2} s)\nratio {}/plaintext: {x:.2}",
                "ours (plaintext)",
                gb(p.bytes_per_s),
                p.seconds,
                r.secure.name()
            ),
            _ => String::new(),
        },
        r.calls_during.completed,
        r.calls_during.p50_us,
        r.calls_during.p99_us,
        r.calls_during.max_us,
        r.peak_rss_growth as f64 / 1e6,
        match r.server_peak_rss_growth {
            Some(s) => format!(" (senders); of the server process: {:.1} MB", s as f64 / 1e6),
            None => " (both ends)".into(),
        }
    )
}
