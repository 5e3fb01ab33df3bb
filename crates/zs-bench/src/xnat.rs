//! `zs bench xnat`: bytes through the tunnel. `zs xnat server` and `zs xnat agent` as
//! processes carry visitors to a local service of the bench, beside rathole's server and
//! client carrying the same (installed into a cache directory with `cargo install` when
//! absent; "not available" if that fails), and beside the floor: the visitor connected to
//! the service directly. One and eight streams at once, plaintext and Noise.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::runtime;

/// Options of the xnat scenario.
#[derive(Debug, Clone)]
pub struct XnatOptions {
    /// Bytes per run, split over the streams.
    pub size: u64,
    /// Stream counts, e.g. 1 and 8.
    pub streams: Vec<usize>,
    /// Runs per entry (the median is reported).
    pub rounds: usize,
    /// Visitors held at once for the memory entry (0 skips it).
    pub held: usize,
    /// Pooled data connections our agent keeps in the `ours` entries.
    pub pool: usize,
}

/// Small requests at a fixed rate through a plaintext tunnel: latency from each request's
/// due time (so a stall counts for every request it delays).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Requests per second asked for.
    pub rate: u64,
    /// Ours (pooled data connections, the default): p50 and p99, microseconds.
    pub ours_p50_us: f64,
    /// p99.
    pub ours_p99_us: f64,
    /// Ours with every visitor on a virtual channel (`pool = 0`): p50.
    pub channel_p50_us: f64,
    /// p99.
    pub channel_p99_us: f64,
    /// rathole, when it ran: p50.
    pub rathole_p50_us: Option<f64>,
    /// p99.
    pub rathole_p99_us: Option<f64>,
}

/// Memory of both tunnel ends with visitors held.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Visitors held (each connected through the tunnel and answered once).
    pub visitors: usize,
    /// Ours (server and agent; pooled data connections, the default), resident bytes
    /// before the visitors and with them.
    pub ours_before: u64,
    /// With them.
    pub ours_held: u64,
    /// Ours with every visitor on a virtual channel (`pool = 0`): before.
    pub channel_before: u64,
    /// With them.
    pub channel_held: u64,
    /// rathole (server and client), likewise, when it ran.
    pub rathole_before: Option<u64>,
    /// With them.
    pub rathole_held: Option<u64>,
    /// `ours_held / rathole_held`.
    pub vs_rathole: Option<f64>,
}

/// One entry: rates in bytes per second, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Plaintext or noise.
    pub security: &'static str,
    /// Streams at once.
    pub streams: usize,
    /// The visitor straight to the service.
    pub floor: f64,
    /// Through `zs xnat` (pooled data connections, the default).
    pub ours: f64,
    /// Through `zs xnat` with every visitor on a virtual channel (`pool = 0`).
    pub channel: f64,
    /// Through rathole, when it ran.
    pub rathole: Option<f64>,
    /// `ours / rathole`.
    pub vs_rathole: Option<f64>,
    /// `channel / rathole`.
    pub channel_vs_rathole: Option<f64>,
    /// `ours / floor`.
    pub vs_floor: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct XnatReport {
    /// Always "xnat".
    pub scenario: &'static str,
    /// Bytes per run.
    pub size: u64,
    /// Whether rathole ran, and if not why.
    pub rathole: String,
    /// The entries.
    pub entries: Vec<Entry>,
    /// Plaintext tunnels holding many quiet visitors.
    pub memory: Option<Memory>,
    /// 64-byte requests at fixed rates over 64 connections (plaintext).
    pub latency: Vec<Latency>,
}

const TOKEN: &str = "the benchmark's xnat token";

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Runs the scenario with `zs_exe` as ours.
pub fn run(opts: XnatOptions, zs_exe: &Path) -> Result<XnatReport, String> {
    let rt = runtime("zs-bench-xnat")?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let service = rt.block_on(sink_service())?;
    let (rathole, rathole_note) = match rathole_binary() {
        Ok(p) => (Some(p), "ran".to_owned()),
        Err(why) => (None, format!("not available: {why}")),
    };
    let mut entries = Vec::new();
    for noise in [false, true] {
        let ours = start_ours(zs_exe, work.path(), service, noise, opts.pool)?;
        rt.block_on(ready(ours.1))?;
        let channel = start_ours(zs_exe, work.path(), service, noise, 0)?;
        rt.block_on(ready(channel.1))?;
        let theirs = match &rathole {
            Some(bin) => {
                let r = start_rathole(bin, work.path(), service, noise)?;
                rt.block_on(ready(r.1))?;
                Some(r)
            }
            None => None,
        };
        for &streams in &opts.streams {
            let median = |addr: SocketAddr| -> Result<f64, String> {
                let mut v = Vec::new();
                for _ in 0..opts.rounds.max(1) {
                    v.push(rt.block_on(send(addr, opts.size, streams))?);
                }
                v.sort_by(f64::total_cmp);
                Ok(v[v.len() / 2])
            };
            let floor = median(service)?;
            let ours_rate = median(ours.1)?;
            let channel_rate = median(channel.1)?;
            let theirs_rate = theirs.as_ref().map(|t| median(t.1)).transpose()?;
            entries.push(Entry {
                security: if noise { "noise" } else { "plaintext" },
                streams,
                floor,
                ours: ours_rate,
                channel: channel_rate,
                rathole: theirs_rate,
                vs_rathole: theirs_rate.map(|t| ours_rate / t.max(1e-9)),
                channel_vs_rathole: theirs_rate.map(|t| channel_rate / t.max(1e-9)),
                vs_floor: ours_rate / floor.max(1e-9),
            });
        }
    }
    let memory = match opts.held {
        0 => None,
        n => Some(memory(&rt, zs_exe, work.path(), rathole.as_deref(), n, opts.pool)?),
    };
    let latency = latency(&rt, zs_exe, work.path(), rathole.as_deref(), &[1_000, 10_000], opts.pool)?;
    Ok(XnatReport { scenario: "xnat", size: opts.size, rathole: rathole_note, entries, memory, latency })
}

/// Resident bytes of `procs` together.
fn rss_of(procs: &[Proc]) -> Result<u64, String> {
    procs.iter().map(|p| crate::procmem::rss(&p.0.id().to_string())).sum()
}

/// Holds `n` visitors through each plaintext tunnel to an idle echo server process
/// (`zs bench floor-server`), each answered once, and reads both ends' memory.
fn memory(
    rt: &tokio::runtime::Runtime,
    zs: &Path,
    dir: &Path,
    rathole: Option<&Path>,
    n: usize,
    pool: usize,
) -> Result<Memory, String> {
    crate::raise_fd_limit();
    let echo = crate::idle::start_floor(zs, 1)?;
    let service = echo.target.addr;
    let hold = |tunnel: &(Vec<Proc>, SocketAddr)| -> Result<(u64, u64), String> {
        rt.block_on(ping(tunnel.1))?;
        std::thread::sleep(Duration::from_millis(300));
        let before = rss_of(&tunnel.0)?;
        let held = rt.block_on(hold_visitors(tunnel.1, n))?;
        std::thread::sleep(Duration::from_millis(300));
        let with = rss_of(&tunnel.0)?;
        drop(held);
        Ok((before, with))
    };
    let ours = start_ours(zs, dir, service, false, pool)?;
    rt.block_on(ready_with(ours.1, ping))?;
    let (ours_before, ours_held) = hold(&ours)?;
    drop(ours);
    let channel = start_ours(zs, dir, service, false, 0)?;
    rt.block_on(ready_with(channel.1, ping))?;
    let (channel_before, channel_held) = hold(&channel)?;
    drop(channel);
    let theirs = match rathole {
        Some(bin) => {
            let r = start_rathole(bin, dir, service, false)?;
            rt.block_on(ready_with(r.1, ping))?;
            Some(hold(&r)?)
        }
        None => None,
    };
    Ok(Memory {
        visitors: n,
        ours_before,
        ours_held,
        channel_before,
        channel_held,
        rathole_before: theirs.map(|t| t.0),
        rathole_held: theirs.map(|t| t.1),
        vs_rathole: theirs.map(|t| ours_held as f64 / t.1.max(1) as f64),
    })
}

/// Requests at each of `rates` through each plaintext tunnel to an echo server process.
fn latency(
    rt: &tokio::runtime::Runtime,
    zs: &Path,
    dir: &Path,
    rathole: Option<&Path>,
    rates: &[u64],
    pool: usize,
) -> Result<Vec<Latency>, String> {
    let echo = crate::idle::start_floor(zs, 1)?;
    let service = echo.target.addr;
    let ours = start_ours(zs, dir, service, false, pool)?;
    rt.block_on(ready_with(ours.1, ping))?;
    let channel = start_ours(zs, dir, service, false, 0)?;
    rt.block_on(ready_with(channel.1, ping))?;
    let theirs = match rathole {
        Some(bin) => {
            let r = start_rathole(bin, dir, service, false)?;
            rt.block_on(ready_with(r.1, ping))?;
            Some(r)
        }
        None => None,
    };
    let mut out = Vec::new();
    let quantiles = |h: &Histogram| (h.value_at_quantile(0.5) as f64, h.value_at_quantile(0.99) as f64);
    for &rate in rates {
        // Slices taken in turn, so that a slow moment of the machine falls on each tunnel
        // alike rather than on whichever ran then.
        let mut hs = [new_histogram()?, new_histogram()?, new_histogram()?];
        for _ in 0..LATENCY_SLICES {
            hs[0].add(rt.block_on(at_rate(ours.1, rate))?).map_err(|e| e.to_string())?;
            hs[1].add(rt.block_on(at_rate(channel.1, rate))?).map_err(|e| e.to_string())?;
            if let Some(t) = &theirs {
                hs[2].add(rt.block_on(at_rate(t.1, rate))?).map_err(|e| e.to_string())?;
            }
        }
        let ((o50, o99), (c50, c99)) = (quantiles(&hs[0]), quantiles(&hs[1]));
        let t = theirs.as_ref().map(|_| quantiles(&hs[2]));
        out.push(Latency {
            rate,
            ours_p50_us: o50,
            ours_p99_us: o99,
            channel_p50_us: c50,
            channel_p99_us: c99,
            rathole_p50_us: t.map(|t| t.0),
            rathole_p99_us: t.map(|t| t.1),
        });
    }
    Ok(out)
}

/// 64-byte echoes through `addr` at `rate` per second for one slice over 64 new
/// connections (each answered once first, untimed), each timed from when it was due, in
/// microseconds.
async fn at_rate(addr: SocketAddr, rate: u64) -> Result<Histogram, String> {
    const CONNECTIONS: u64 = 64;
    let per_conn = Duration::from_secs_f64(CONNECTIONS as f64 / rate as f64);
    let count = (rate * LATENCY_SLICE_MS / 1000 / CONNECTIONS).max(1);
    let runs = (0..CONNECTIONS).map(|i| async move {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let mut request = vec![64u8, 0, 0, 0];
        request.resize(68, b'r');
        let mut back = vec![0u8; 68];
        // One exchange untimed: the visit's setup (an agent's connection to the service) is
        // not a request's latency.
        s.write_all(&request).await.map_err(|e| e.to_string())?;
        s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
        let mut h = new_histogram()?;
        // Connections start spread over one interval.
        let start = tokio::time::Instant::now() + per_conn.mul_f64(i as f64 / CONNECTIONS as f64);
        for k in 0..count {
            let due = start + per_conn.mul_f64(k as f64);
            tokio::time::sleep_until(due).await;
            s.write_all(&request).await.map_err(|e| e.to_string())?;
            s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
            let _ = h.record(due.elapsed().as_micros() as u64);
        }
        Ok::<_, String>(h)
    });
    let mut all = new_histogram()?;
    for h in futures_util::future::join_all(runs).await {
        all.add(h?).map_err(|e| e.to_string())?;
    }
    Ok(all)
}

type Histogram = hdrhistogram::Histogram<u64>;

fn new_histogram() -> Result<Histogram, String> {
    Histogram::new(3).map_err(|e| e.to_string())
}

/// Slices of requests per tunnel and rate, taken in turn with the other tunnels'.
const LATENCY_SLICES: u64 = 5;
/// Milliseconds of requests per slice.
const LATENCY_SLICE_MS: u64 = 1000;

/// One length-prefixed echo through `addr` (the floor server's framing).
async fn ping(addr: SocketAddr) -> Result<f64, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    ping_on(&mut s).await?;
    Ok(0.0)
}

async fn ping_on(s: &mut TcpStream) -> Result<(), String> {
    s.write_all(&[4, 0, 0, 0, b'p', b'i', b'n', b'g']).await.map_err(|e| e.to_string())?;
    let mut back = [0u8; 8];
    s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// `n` visitors of `addr`, each answered once, kept open.
async fn hold_visitors(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    use futures_util::StreamExt;
    let connecting = futures_util::stream::iter(0..n)
        .map(|_| async move {
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(30), ping_on(&mut s))
                .await
                .map_err(|_| format!("no answer through {addr}"))??;
            Ok::<_, String>(s)
        })
        .buffer_unordered(100);
    connecting.collect::<Vec<_>>().await.into_iter().collect()
}

/// The local service: reads a u64 length and that many bytes, answers one byte.
async fn sink_service() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 8];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut left = u64::from_le_bytes(len);
                let mut buf = vec![0u8; 1 << 20];
                while left > 0 {
                    match s.read(&mut buf[..(left.min(1 << 20)) as usize]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left -= n as u64,
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    Ok(addr)
}

/// Sends `size` bytes over `streams` connections to `addr` at once; bytes per second.
async fn send(addr: SocketAddr, size: u64, streams: usize) -> Result<f64, String> {
    let each = size / streams as u64;
    let start = Instant::now();
    let runs = (0..streams).map(|_| async move {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(&each.to_le_bytes()).await.map_err(|e| e.to_string())?;
        let block = vec![0x5au8; 1 << 20];
        let mut left = each;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            s.write_all(&block[..n]).await.map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await.map_err(|e| format!("no answer through {addr}: {e}"))?;
        Ok::<_, String>(())
    });
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    Ok((each * streams as u64) as f64 / start.elapsed().as_secs_f64())
}

/// Waits until an empty run through `addr` is answered (the tunnel is up).
async fn ready(addr: SocketAddr) -> Result<(), String> {
    ready_with(addr, |a| send(a, 0, 1)).await
}

/// Waits until `probe` through `addr` succeeds.
async fn ready_with<F, Fut>(addr: SocketAddr, probe: F) -> Result<(), String>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<f64, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = tokio::time::timeout(Duration::from_secs(2), probe(addr)).await;
        if let Ok(Ok(_)) = probe {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the tunnel at {addr} never came up"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `zs xnat server` and `zs xnat agent` carrying `service`; their processes and the
/// public address.
/// Starts `zs xnat server` and `agent` (the agent keeping `pool` data connections).
fn start_ours(
    zs: &Path,
    dir: &Path,
    service: SocketAddr,
    noise: bool,
    pool: usize,
) -> Result<(Vec<Proc>, SocketAddr), String> {
    let e = |e: std::io::Error| e.to_string();
    let public = free_port()?;
    let server_toml = dir.join(format!("ours-server-{noise}-{pool}.toml"));
    std::fs::write(
        &server_toml,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nplaintext = {}\n[services.b]\nbind = \"127.0.0.1:{public}\"\ntoken = \"{TOKEN}\"\n",
            dir.display(),
            !noise
        ),
    )
    .map_err(e)?;
    let mut server = Command::new(zs)
        .args(["xnat", "server", "--config"])
        .arg(&server_toml)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(e)?;
    let mut out = BufReader::new(server.stdout.take().ok_or("no stdout")?);
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).map_err(e)?;
    out.read_line(&mut second).map_err(e)?;
    let server = Proc(server);
    let control =
        first.trim().strip_prefix("listening on ").ok_or_else(|| format!("zs xnat server said: {first}"))?;
    let key = second.split_whitespace().find(|w| w.len() == 43);
    let agent_toml = dir.join(format!("ours-agent-{noise}-{pool}.toml"));
    let security = match (noise, key) {
        (true, Some(k)) => format!("server_key = \"{k}\""),
        (true, None) => return Err(format!("zs xnat server named no key: {second}")),
        (false, _) => "plaintext = true".to_owned(),
    };
    std::fs::write(
        &agent_toml,
        format!(
            "server = \"{control}\"\n{security}\n[services.b]\nlocal = \"{service}\"\ntoken = \"{TOKEN}\"\npool = {pool}\n"
        ),
    )
    .map_err(e)?;
    let agent = Command::new(zs)
        .args(["xnat", "agent", "--config"])
        .arg(&agent_toml)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(e)?;
    Ok((vec![server, Proc(agent)], ([127, 0, 0, 1], public).into()))
}

/// rathole on PATH, or in the cache directory (installed there when absent).
fn rathole_binary() -> Result<PathBuf, String> {
    if let Ok(o) = Command::new("rathole").arg("--version").output() {
        if o.status.success() {
            return Ok(PathBuf::from("rathole"));
        }
    }
    let root = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/zserver-bench/rathole");
    let bin = root.join("bin/rathole");
    if bin.exists() {
        return Ok(bin);
    }
    // As the issue asks, then without --locked: rathole 0.5.0's lock file pins a `time`
    // that no longer builds with this compiler.
    for locked in [true, false] {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "rathole", "--root"]).arg(&root);
        if locked {
            cmd.arg("--locked");
        }
        let ok = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if ok && bin.exists() {
            return Ok(bin);
        }
    }
    Err("cargo install rathole failed (with and without --locked)".into())
}

/// rathole's server and client carrying `service`.
fn start_rathole(
    bin: &Path,
    dir: &Path,
    service: SocketAddr,
    noise: bool,
) -> Result<(Vec<Proc>, SocketAddr), String> {
    let e = |e: std::io::Error| e.to_string();
    let (control, public) = (free_port()?, free_port()?);
    let (server_transport, client_transport) = if noise {
        let o = Command::new(bin).arg("--genkey").output().map_err(e)?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let after = |label: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(label))
                .and_then(|i| lines.get(i + 1))
                .map(|s| s.to_string())
        };
        let (private, public_key) =
            after("Private").zip(after("Public")).ok_or_else(|| format!("rathole --genkey said: {text}"))?;
        (
            format!("[server.transport]\ntype = \"noise\"\n[server.transport.noise]\nlocal_private_key = \"{private}\"\n"),
            format!("[client.transport]\ntype = \"noise\"\n[client.transport.noise]\nremote_public_key = \"{public_key}\"\n"),
        )
    } else {
        (String::new(), String::new())
    };
    let server_toml = dir.join(format!("rathole-server-{noise}.toml"));
    std::fs::write(
        &server_toml,
        format!("[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{TOKEN}\"\n{server_transport}[server.services.b]\nbind_addr = \"127.0.0.1:{public}\"\n"),
    )
    .map_err(e)?;
    let client_toml = dir.join(format!("rathole-client-{noise}.toml"));
    std::fs::write(
        &client_toml,
        format!("[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"{TOKEN}\"\n{client_transport}[client.services.b]\nlocal_addr = \"{service}\"\n"),
    )
    .map_err(e)?;
    let spawn = |args: &[&Path]| {
        Command::new(bin)
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Proc)
    };
    let server = spawn(&[Path::new("-s"), &server_toml]).map_err(e)?;
    let client = spawn(&[Path::new("-c"), &client_toml]).map_err(e)?;
    Ok((vec![server, client], ([127, 0, 0, 1], public).into()))
}

/// A readable table of the report.
pub fn table(r: &XnatReport) -> String {
    let g = |x: f64| x / 1e9;
    let mut s = format!("xnat: {} MiB per run; rathole {}\n", r.size >> 20, r.rathole);
    s += &format!(
        "{:<11}{:>8}{:>12}{:>12}{:>12}{:>12}{:>12}{:>12}{:>10}\n",
        "security",
        "streams",
        "floor GB/s",
        "ours",
        "channel",
        "rathole",
        "vs rathole",
        "chan/rath",
        "vs floor"
    );
    if let Some(m) = &r.memory {
        let mb = |b: u64| b as f64 / 1e6;
        s += &format!(
            "memory with {} quiet visitors (plaintext): ours {:.1} -> {:.1} MB (channels only {:.1} -> {:.1}){}\n",
            m.visitors,
            mb(m.ours_before),
            mb(m.ours_held),
            mb(m.channel_before),
            mb(m.channel_held),
            match (m.rathole_before, m.rathole_held, m.vs_rathole) {
                (Some(b), Some(h), Some(v)) =>
                    format!("; rathole {:.1} -> {:.1} MB; ours / rathole {v:.2}", mb(b), mb(h)),
                _ => String::new(),
            }
        );
    }
    for l in &r.latency {
        let theirs = match (l.rathole_p50_us, l.rathole_p99_us) {
            (Some(a), Some(b)) => format!("; rathole p50 {a:.0} us, p99 {b:.0} us"),
            _ => String::new(),
        };
        s += &format!(
            "{} requests/s: ours p50 {:.0} us, p99 {:.0} us (channels only {:.0}, {:.0}){theirs}\n",
            l.rate, l.ours_p50_us, l.ours_p99_us, l.channel_p50_us, l.channel_p99_us
        );
    }
    for e in &r.entries {
        s += &format!(
            "{:<11}{:>8}{:>12.2}{:>12.2}{:>12.2}{:>12}{:>12}{:>12}{:>10.2}\n",
            e.security,
            e.streams,
            g(e.floor),
            g(e.ours),
            g(e.channel),
            e.rathole.map_or("-".to_owned(), |t| format!("{:.2}", g(t))),
            e.vs_rathole.map_or("-".to_owned(), |v| format!("{v:.2}")),
            e.channel_vs_rathole.map_or("-".to_owned(), |v| format!("{v:.2}")),
            e.vs_floor
        );
    }
    s
}
