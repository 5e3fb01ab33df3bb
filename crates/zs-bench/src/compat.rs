//! `zs bench compat`: the ZServer4D listener of a `zs serve` process, driven by
//! `CompatClient`s speaking the original's protocol (sequence packets, MD5 verify codes):
//! how many connections it holds and at what memory, and console calls per second on one
//! connection (the original: 660-750/s, `figures.md` a.1) and over many.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zs::compat::{CompatClient, CompatClientConfig};

use crate::harness::runtime;
use crate::stats::{histogram, Figures};

/// The original's console calls per second on one connection (`figures.md` a.1, the
/// middle of 660-750).
const ORIGINAL_CONSOLE_PER_S: f64 = 700.0;
/// The original's aggregate console calls per second over 100 connections (a.1, 7.8-8.3 k).
const ORIGINAL_CONSOLE_100: f64 = 8_000.0;

/// Options of the compat scenario.
#[derive(Debug, Clone, Copy)]
pub struct CompatOptions {
    /// ZServer4D connections to hold at once.
    pub connections: usize,
    /// Console calls timed on one connection (and as many over `parallel` connections).
    pub calls: usize,
    /// Connections calling at once for the aggregate figure.
    pub parallel: usize,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct CompatReport {
    /// Always "compat".
    pub scenario: &'static str,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that made the handshake and one call, all open at once.
    pub held: usize,
    /// Seconds to open them all (handshake and one call each, 256 at a time).
    pub establish_s: f64,
    /// Server RSS growth divided by the connections held, bytes.
    pub server_rss_bytes_per_conn: f64,
    /// Console calls (16 bytes) one after the other on one connection.
    pub ours: Figures,
    /// The original's console calls per second on one connection (figures.md a.1).
    pub original_per_s: f64,
    /// `ours.req_per_s / original_per_s`.
    pub ratio: f64,
    /// Connections calling at once in the aggregate figure.
    pub parallel: usize,
    /// Console calls over `parallel` connections (each one at a time, as the protocol says).
    pub aggregate: Figures,
    /// `aggregate.req_per_s` / the original's 8,000/s over 100 connections.
    pub aggregate_vs_original: f64,
}

/// A `zs serve` process with a ZServer4D listener.
struct ServerProcess {
    child: Child,
    compat: SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(zs_exe: &Path) -> Result<ServerProcess, String> {
    let data = tempfile::tempdir().map_err(|e| format!("data directory: {e}"))?;
    let mut child = Command::new(zs_exe)
        .args(["serve", "--plaintext", "--idle-timeout", "0", "--listen", "127.0.0.1:0"])
        .args(["--compat-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start server: {e}"))?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    for line in BufReader::new(stdout).lines().take(5) {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(rest) = line.strip_prefix("ZServer4D clients on ") {
            let addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            let compat = addr.ok_or_else(|| format!("unexpected server output: {line}"))?;
            return Ok(ServerProcess { child, compat, _data: data });
        }
    }
    let _ = child.kill();
    Err("the server did not say where ZServer4D clients connect".into())
}

/// Runs the scenario against a `zs_exe serve --compat-listen` process.
pub fn run(opts: CompatOptions, zs_exe: &Path) -> Result<CompatReport, String> {
    crate::raise_fd_limit();
    let server = start_server(zs_exe)?;
    let pid = server.child.id().to_string();
    let rt = runtime("zs-bench-compat")?;
    rt.block_on(async {
        let addr = server.compat;
        let config = CompatClientConfig { timeout: Duration::from_secs(60), ..CompatClientConfig::default() };
        // Warm the server (its first allocations are not per connection).
        let first = CompatClient::connect(addr, config.clone()).await.map_err(|e| e.to_string())?;
        first.call_console("echo", "warm").await.map_err(|e| e.to_string())?;
        let before = crate::procmem::rss(&pid)?;
        let started = Instant::now();
        let mut clients = Vec::with_capacity(opts.connections);
        let mut batch = Vec::new();
        for i in 0..opts.connections {
            let config = config.clone();
            batch.push(tokio::spawn(async move {
                let c = CompatClient::connect(addr, config).await.map_err(|e| e.to_string())?;
                c.call_console("echo", "hi").await.map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            }));
            if batch.len() == 256 || i + 1 == opts.connections {
                for t in batch.drain(..) {
                    match t.await {
                        Ok(Ok(c)) => clients.push(Arc::new(c)),
                        Ok(Err(e)) => tracing::warn!(error = %e, "a ZServer4D connection failed"),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
        let establish_s = started.elapsed().as_secs_f64();
        // Let the last acks and frees settle before reading the server's memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = crate::procmem::rss(&pid)?;
        let held = clients.len();

        let one_connection = calls(&[Arc::new(first)], opts.calls).await?;
        let parallel = opts.parallel.clamp(1, held.max(1));
        let aggregate =
            if held > 0 { calls(&clients[..parallel], opts.calls).await? } else { Figures::default() };
        drop(clients);
        Ok(CompatReport {
            scenario: "compat",
            connections: opts.connections,
            held,
            establish_s,
            server_rss_bytes_per_conn: after.saturating_sub(before) as f64 / held.max(1) as f64,
            ratio: one_connection.req_per_s / ORIGINAL_CONSOLE_PER_S,
            original_per_s: ORIGINAL_CONSOLE_PER_S,
            ours: one_connection,
            parallel,
            aggregate_vs_original: aggregate.req_per_s / ORIGINAL_CONSOLE_100,
            aggregate,
        })
    })
}

/// `total` console calls spread over `clients`, each making its calls one after another.
async fn calls(clients: &[Arc<CompatClient>], total: usize) -> Result<Figures, String> {
    let per = total.div_ceil(clients.len()).max(1);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            tokio::spawn(async move {
                let mut h = histogram();
                for _ in 0..per {
                    let t = Instant::now();
                    let reply =
                        c.call_console("echo", "0123456789abcdef").await.map_err(|e| e.to_string())?;
                    if reply != "0123456789abcdef" {
                        return Err(format!("echo answered {reply:?}"));
                    }
                    h.record(t.elapsed().as_micros().max(1) as u64).map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(h)
            })
        })
        .collect();
    let mut all = histogram();
    for t in tasks {
        all.add(t.await.map_err(|e| e.to_string())??).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, started.elapsed()))
}

/// A human-readable summary.
pub fn table(r: &CompatReport) -> String {
    format!(
        "compat: ZServer4D clients (sequence packets, MD5) on a zs serve process\n\
         held: {}/{} connections, opened in {:.1} s, {:.0} bytes per connection (server RSS)\n\
         console on one connection: {:.0} calls/s (p50 {} us, p99 {} us); the original ~700/s: {:.1}x\n\
         console over {} connections: {:.0} calls/s (p50 {} us, p99 {} us); the original ~8,000/s over 100: {:.1}x",
        r.held,
        r.connections,
        r.establish_s,
        r.server_rss_bytes_per_conn,
        r.ours.req_per_s,
        r.ours.p50_us,
        r.ours.p99_us,
        r.ratio,
        r.parallel,
        r.aggregate.req_per_s,
        r.aggregate.p50_us,
        r.aggregate.p99_us,
        r.aggregate_vs_original,
    )
}
