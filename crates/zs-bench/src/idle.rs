//! `zs bench idle`: hold many idle connections to server processes and report their
//! resident memory per connection, beside a floor server holding as many. Servers and
//! clients are separate processes of the `zs` binary (a process may hold at most 20,000
//! open files here): `--workers` server processes share the port (SO_REUSEPORT), and the
//! clients spread over `--addrs` loopback addresses so ephemeral ports do not run out.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zs::secure::SecureStream;
use zs::{ClientSecurity, Fingerprint};

use crate::codec::{BenchCodec, FloorCodec, OursCodec};
use crate::harness::{Secure, Target};

/// The first source port of an idle client given its own source address.
const SOURCE_PORTS: u16 = 10_000;

/// How long an idle client keeps opening connections before it reports what it holds.
const OPEN_BUDGET: Duration = Duration::from_secs(300);

/// Most connections the floor is measured with (one process).
const FLOOR_MAX: usize = 15_000;

/// Options of the idle scenario.
#[derive(Debug, Clone, Copy)]
pub struct IdleOptions {
    /// Connections to hold.
    pub connections: usize,
    /// Client processes to spread them over.
    pub procs: usize,
    /// How the server is secured.
    pub secure: Secure,
    /// Server processes sharing the port.
    pub workers: usize,
    /// Loopback addresses (127.0.0.1 up) the server listens on and clients spread over.
    pub addrs: usize,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Always "idle".
    pub scenario: &'static str,
    /// Connections asked for.
    pub connections: usize,
    /// Client processes.
    pub procs: usize,
    /// Server processes.
    pub workers: usize,
    /// Loopback addresses used.
    pub addrs: usize,
    /// Connections established, answered one call, and still open at the end.
    pub held: usize,
    /// Seconds to establish them all.
    pub establish_s: f64,
    /// Resident memory of all server processes before any connection, bytes.
    pub server_rss_before: u64,
    /// Resident memory of all server processes with all connections held, bytes.
    pub server_rss_after: u64,
    /// `(after - before) / held`: user-space bytes per idle connection.
    pub server_rss_bytes_per_conn: f64,
    /// How the server was secured.
    pub secure: Secure,
    /// `held / establish_s`: connections (with their handshakes) established per second.
    pub connects_per_s: f64,
    /// The floor (a tokio echo that holds no buffer while idle): connections held, at most
    /// 15,000 in one process.
    pub floor_held: usize,
    /// The floor's user-space bytes per idle connection.
    pub floor_rss_bytes_per_conn: f64,
    /// `server_rss_bytes_per_conn / floor_rss_bytes_per_conn` (lower is better).
    pub ratio: f64,
    /// The machine's kernel slab (`Slab` of /proc/meminfo) before and after our
    /// connections, per connection held: both socket ends on loopback, the client's too.
    pub kernel_slab_bytes_per_conn: f64,
    /// Why connections were not all held: the first error a client met, if any.
    pub first_error: Option<String>,
    /// Pages of socket memory TCP held with all connections open (/proc/net/sockstat)...
    pub tcp_mem_pages: u64,
    /// ...and the kernel's hard limit on it (the third of net.ipv4.tcp_mem): at the limit,
    /// new connections fail.
    pub tcp_mem_limit_pages: u64,
    /// Ours, as every scenario reports it: held and bytes per connection.
    pub ours: IdleEntry,
    /// The floor, likewise.
    pub floor: IdleEntry,
}

/// One entry of the idle report.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdleEntry {
    /// Connections held.
    pub held: usize,
    /// User-space bytes per idle connection.
    pub bytes_per_conn: f64,
}

/// Memory of some processes holding connections.
struct Held {
    held: usize,
    establish_s: f64,
    before: u64,
    after: u64,
    slab_before: u64,
    slab_after: u64,
    first_error: Option<String>,
    tcp_mem_pages: u64,
}

/// Pages of socket memory TCP holds now (`mem` of the TCP line of /proc/net/sockstat).
fn tcp_mem_pages() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let line = stat.lines().find(|l| l.starts_with("TCP:")).unwrap_or_default();
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mem").and_then(|_| words.next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The hard limit of TCP's socket memory, in pages (net.ipv4.tcp_mem's third value).
fn tcp_mem_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").unwrap_or_default();
    limits.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The kernel's slab memory now (`Slab` of /proc/meminfo), bytes; 0 where unknown.
fn kernel_slab() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let line = info.lines().find(|l| l.starts_with("Slab:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// Runs the scenario, starting `zs_exe serve`, `zs_exe bench floor-server` and
/// `zs_exe bench idle-client` processes.
pub fn run(opts: IdleOptions, zs_exe: &Path) -> Result<IdleReport, String> {
    let addrs = opts.addrs.clamp(1, 250);
    let floor = {
        let server = start_floor(zs_exe, addrs)?;
        let n = opts.connections.min(FLOOR_MAX);
        hold(zs_exe, &server, n, opts.procs.min(n.div_ceil(10_000)).max(1))?
    };
    let server = start_server_with(zs_exe, opts.secure, opts.workers.max(1), addrs)?;
    let ours = hold(zs_exe, &server, opts.connections, opts.procs.max(1))?;
    let per_conn = |h: &Held| h.after.saturating_sub(h.before) as f64 / h.held.max(1) as f64;
    let (ours_per, floor_per) = (per_conn(&ours), per_conn(&floor));
    Ok(IdleReport {
        scenario: "idle",
        connections: opts.connections,
        procs: opts.procs.max(1),
        workers: opts.workers.max(1),
        addrs,
        held: ours.held,
        establish_s: ours.establish_s,
        server_rss_before: ours.before,
        server_rss_after: ours.after,
        server_rss_bytes_per_conn: ours_per,
        secure: opts.secure,
        connects_per_s: ours.held as f64 / ours.establish_s.max(1e-9),
        floor_held: floor.held,
        floor_rss_bytes_per_conn: floor_per,
        ratio: ours_per / floor_per.max(1e-9),
        kernel_slab_bytes_per_conn: ours.slab_after.saturating_sub(ours.slab_before) as f64
            / ours.held.max(1) as f64,
        first_error: ours.first_error.clone(),
        tcp_mem_pages: ours.tcp_mem_pages,
        tcp_mem_limit_pages: tcp_mem_limit(),
        ours: IdleEntry { held: ours.held, bytes_per_conn: ours_per },
        floor: IdleEntry { held: floor.held, bytes_per_conn: floor_per },
    })
}

/// A server process (or a supervisor and its workers, or the floor server); killed on
/// drop.
pub(crate) struct ServerProcess {
    pub child: Child,
    pub target: Target,
    /// Every address it listens on.
    pub addrs: Vec<SocketAddr>,
    /// The processes whose memory counts (the supervisor and its workers).
    pub pids: Vec<u32>,
    /// How it is secured and the fingerprint it presented (what idle clients are told).
    secure: Secure,
    fingerprint: Option<Fingerprint>,
    /// The floor server, which speaks the floor's framing.
    floor: bool,
    /// Our server's data directory (its key).
    _data: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// The `zs bench idle-client` arguments that reach it.
    fn client_args(&self) -> Vec<String> {
        let mut args = vec!["--secure".to_string(), self.secure.name().to_string()];
        if let Some(fp) = self.fingerprint {
            args.extend(["--server-key".to_string(), fp.to_string()]);
        }
        if self.floor {
            args.push("--floor".into());
        }
        args
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The supervisor's workers see their stdin close when it dies and stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `zs serve` on an ephemeral loopback port, secured as `secure` says.
pub(crate) fn start_server(zs_exe: &Path, secure: Secure) -> Result<ServerProcess, String> {
    start_server_with(zs_exe, secure, 1, 1)
}

/// Starts `zs serve` with `workers` processes listening on 127.0.0.1..=127.0.0.`addrs`.
pub(crate) fn start_server_with(
    zs_exe: &Path,
    secure: Secure,
    workers: usize,
    addrs: usize,
) -> Result<ServerProcess, String> {
    start_server_env(zs_exe, secure, workers, addrs, &[], None)
}

/// [`start_server_with`], with environment variables set for the server (`ZS_*`), and its
/// data directory made in `data_in` (default: the system's temporary folder).
pub(crate) fn start_server_env(
    zs_exe: &Path,
    secure: Secure,
    workers: usize,
    addrs: usize,
    env: &[(&str, &str)],
    data_in: Option<&Path>,
) -> Result<ServerProcess, String> {
    start_server_args(zs_exe, secure, workers, addrs, env, data_in, &[])
}

/// [`start_server_env`] with `extra` arguments for `zs serve`.
pub(crate) fn start_server_args(
    zs_exe: &Path,
    secure: Secure,
    workers: usize,
    addrs: usize,
    env: &[(&str, &str)],
    data_in: Option<&Path>,
    extra: &[&str],
) -> Result<ServerProcess, String> {
    let data = match data_in {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("data directory: {e}"))?;
    let mut cmd = Command::new(zs_exe);
    cmd.envs(env.iter().copied());
    cmd.args(["serve", "--idle-timeout", "0", "--workers", &workers.to_string(), "--data-dir"])
        .arg(data.path());
    for i in 1..=addrs {
        cmd.args(["--listen", &format!("127.0.0.{i}:0")]);
    }
    let child = cmd
        .args(secure.serve_args())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start server: {e}"))?;
    let pid = child.id();
    let mut server = ServerProcess {
        child,
        target: Target::plain(([127, 0, 0, 1], 0).into()),
        addrs: Vec::new(),
        pids: vec![pid],
        secure,
        fingerprint: None,
        floor: false,
        _data: Some(data),
    };
    let mut lines = BufReader::new(server.child.stdout.take().ok_or("no server stdout")?).lines();
    let mut next = || match lines.next() {
        Some(Ok(l)) => Ok(l),
        _ => Err("the server stopped before it was listening".to_string()),
    };
    let first = next()?;
    let second = next()?;
    if workers > 1 {
        let third = next()?;
        let pids = third.split_once("pids ").map(|(_, p)| p.trim_end_matches(')')).unwrap_or_default();
        server.pids.extend(pids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    server.addrs = first
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected server output: {first}"))?
        .split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect();
    server.target.addr = *server.addrs.first().ok_or_else(|| format!("no address in: {first}"))?;
    server.fingerprint = second.split_whitespace().find_map(|w| w.parse::<Fingerprint>().ok());
    server.target.security =
        secure.client(server.fingerprint).map_err(|e| format!("{e}; the server said: {second}"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(server)
}

/// Starts `zs bench floor-server` (the idle floor) on an ephemeral port of 127.0.0.1 up
/// to 127.0.0.`addrs`.
pub(crate) fn start_floor(zs_exe: &Path, addrs: usize) -> Result<ServerProcess, String> {
    let mut child = Command::new(zs_exe)
        .args(["bench", "floor-server", "--addrs", &addrs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start floor server: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no floor stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addrs: Vec<SocketAddr> = line
        .trim()
        .strip_prefix("listening on ")
        .map(|a| a.split_whitespace().filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default();
    let first = *addrs.first().ok_or_else(|| format!("unexpected floor output: {line}"))?;
    let pid = child.id();
    Ok(ServerProcess {
        child,
        target: Target::plain(first),
        addrs,
        pids: vec![pid],
        secure: Secure::None,
        fingerprint: None,
        floor: true,
        _data: None,
    })
}

/// The floor server process (`zs bench floor-server`): an idle-friendly echo on one
/// ephemeral port of 127.0.0.1 up to 127.0.0.`addrs`, until killed.
pub async fn floor_server(addrs: usize) -> Result<(), String> {
    crate::raise_fd_limit();
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = first.local_addr().map_err(|e| e.to_string())?.port();
    let mut listeners = vec![first];
    for i in 2..=addrs.clamp(1, 250) {
        listeners.push(
            tokio::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).await.map_err(|e| e.to_string())?,
        );
    }
    let bound: Vec<String> =
        listeners.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect();
    println!("listening on {}", bound.join(" "));
    let _ = std::io::stdout().flush();
    let serving: Vec<_> =
        listeners.into_iter().map(|l| tokio::spawn(crate::floor::idle_echo_server(l))).collect();
    for s in serving {
        let _ = s.await;
    }
    Ok(())
}

fn rss_of(pids: &[u32]) -> Result<u64, String> {
    pids.iter().map(|p| crate::procmem::rss(&p.to_string())).sum()
}

/// Opens `connections` from `procs` client processes, spread over the server's addresses,
/// and reads the server's memory before and after.
fn hold(zs_exe: &Path, server: &ServerProcess, connections: usize, procs: usize) -> Result<Held, String> {
    let before = rss_of(&server.pids)?;
    let slab_before = kernel_slab();
    let addrs: Vec<String> = server.addrs.iter().map(ToString::to_string).collect();
    let client_args = server.client_args();
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..procs {
        let n = connections / procs + usize::from(i < connections % procs);
        let mut cmd = Command::new(zs_exe);
        cmd.args(["bench", "idle-client", "--addr", &addrs.join(","), "--connections", &n.to_string()]);
        // Each client its own source address, and its own ports on it (below the ephemeral
        // range): the kernel's search for a free ephemeral port grows with the connections
        // already made (all CPU in the kernel past about 700,000, in its bind table).
        cmd.args(["--source", &format!("127.1.{}.{}", i / 250, i % 250 + 1)]);
        let child = cmd
            .args(&client_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start client: {e}"))?;
        clients.push(child);
    }
    let (mut held, mut first_error) = (0, None);
    for c in &mut clients {
        let mut out = BufReader::new(c.stdout.take().ok_or("no client stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let (count, error) = line.trim().split_once('\t').unwrap_or((line.trim(), ""));
        held += count.strip_prefix("held ").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        if first_error.is_none() && !error.is_empty() {
            first_error = Some(error.to_owned());
        }
    }
    let establish_s = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_of(&server.pids)?;
    let slab_after = kernel_slab();
    let tcp_mem_pages = tcp_mem_pages();
    for mut c in clients {
        // A line on stdin tells the client to let go.
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = c.wait();
    }
    Ok(Held { held, establish_s, before, after, slab_before, slab_after, first_error, tcp_mem_pages })
}

/// A connection the idle client holds (only to keep it open).
#[allow(dead_code)]
enum Open {
    Tcp(TcpStream),
    Secure(Box<SecureStream>),
}

/// The client side (`zs bench idle-client`): open `connections` (secured as `security`
/// says), make one echo call on each, print `held N`, then hold them until stdin has a
/// line or closes.
pub async fn client(
    addrs: &str,
    connections: usize,
    security: ClientSecurity,
    floor: bool,
    source: Option<std::net::IpAddr>,
) -> Result<(), String> {
    crate::raise_fd_limit();
    let addrs: Vec<String> = addrs.split(',').map(str::to_owned).collect();
    let mut held = Vec::with_capacity(connections);
    let (mut batch, mut first_error) = (Vec::new(), None);
    let give_up = Instant::now() + OPEN_BUDGET;
    for i in 0..connections {
        if Instant::now() > give_up && batch.is_empty() {
            first_error.get_or_insert(format!(
                "gave up opening after {OPEN_BUDGET:?}: {} of {connections} open",
                held.len()
            ));
            break;
        }
        let addr = addrs[i % addrs.len()].clone();
        // Explicit source ports from 10,000 up (a client holds at most 20,000).
        let port = u16::try_from(i).ok().and_then(|i| SOURCE_PORTS.checked_add(i)).unwrap_or(0);
        let source = source.map(|ip| SocketAddr::new(ip, port));
        batch.push(tokio::spawn(open_one(addr, security.clone(), floor, source)));
        if batch.len() == 256 || i + 1 == connections {
            for t in batch.drain(..) {
                match t.await {
                    Ok(Ok(s)) => held.push(s),
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
        }
    }
    // `held N`, and the first error met (tab-separated) when some were not held.
    let error = first_error.map(|e| format!("\t{}", e.replace(['\t', '\n'], " "))).unwrap_or_default();
    println!("held {}{error}", held.len());
    let _ = std::io::stdout().flush();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .map_err(|e| e.to_string())?;
    drop(held);
    Ok(())
}

async fn open_one(
    addr: String,
    security: ClientSecurity,
    floor: bool,
    source: Option<SocketAddr>,
) -> Result<Open, String> {
    let opened =
        tokio::time::timeout(Duration::from_secs(30), open_within(addr, security, floor, source)).await;
    opened.map_err(|_| "no connection within 30 s".to_string())?
}

async fn open_within(
    addr: String,
    security: ClientSecurity,
    floor: bool,
    source: Option<SocketAddr>,
) -> Result<Open, String> {
    if let ClientSecurity::Plaintext = security {
        let to: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if let Some(source) = source {
            socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
            socket.bind(source).map_err(|e| format!("bind {source}: {e}"))?;
        }
        let mut s = socket.connect(to).await.map_err(|e| e.to_string())?;
        if floor {
            echo_once(&mut s, FloorCodec).await?;
        } else {
            echo_once(&mut s, OursCodec::default()).await?;
        }
        return Ok(Open::Tcp(s));
    }
    let mut s = SecureStream::connect(addr.as_str(), &security, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    echo_once(&mut s, OursCodec::default()).await?;
    Ok(Open::Secure(Box::new(s)))
}

/// Sends one echo request and waits for its reply.
pub(crate) async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    mut codec: impl BenchCodec,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    codec.encode_request(&mut out, 1, b"hi");
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut input = BytesMut::with_capacity(64);
    loop {
        if s.read_buf(&mut input).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
        if codec.decode_reply(&mut input)?.is_some() {
            return Ok(());
        }
    }
}
