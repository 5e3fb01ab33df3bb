//! `zs bench idle`: hold many idle connections to a server process and report its
//! resident memory per connection. The server and the clients are separate processes of
//! the `zs` binary (a process may hold at most 20,000 open files here).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{BenchCodec, OursCodec};

/// Options of the idle scenario.
#[derive(Debug, Clone, Copy)]
pub struct IdleOptions {
    /// Connections to hold.
    pub connections: usize,
    /// Client processes to spread them over.
    pub procs: usize,
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
    /// Connections established, answered one call, and still open at the end.
    pub held: usize,
    /// Seconds to establish them all.
    pub establish_s: f64,
    /// Server resident memory before any connection, bytes.
    pub server_rss_before: u64,
    /// Server resident memory with all connections held, bytes.
    pub server_rss_after: u64,
    /// `(after - before) / held`: user-space bytes per idle connection.
    pub server_rss_bytes_per_conn: f64,
}

/// Runs the scenario, starting `zs_exe serve` and `zs_exe bench idle-client` processes.
pub fn run(opts: IdleOptions, zs_exe: &Path) -> Result<IdleReport, String> {
    let (mut server, addr) = start_server(zs_exe)?;
    let result = measure(opts, zs_exe, &server, &addr);
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Starts `zs serve` on an ephemeral loopback port; returns the process and its address.
pub(crate) fn start_server(zs_exe: &Path) -> Result<(Child, String), String> {
    let mut server = Command::new(zs_exe)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start server: {e}"))?;
    let first = server.stdout.take().and_then(|out| BufReader::new(out).lines().next());
    let first = match first {
        Some(Ok(line)) => line,
        _ => {
            let _ = server.kill();
            return Err("the server said nothing".into());
        }
    };
    let Some(addr) = first.strip_prefix("listening on ").and_then(|a| a.split_whitespace().next()) else {
        let _ = server.kill();
        return Err(format!("unexpected server output: {first}"));
    };
    let addr = addr.to_owned();
    std::thread::sleep(Duration::from_millis(300));
    Ok((server, addr))
}

fn measure(opts: IdleOptions, zs_exe: &Path, server: &Child, addr: &str) -> Result<IdleReport, String> {
    let before = crate::procmem::status_bytes(&server.id().to_string(), "VmRSS:")?;
    let procs = opts.procs.max(1);
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..procs {
        let n = opts.connections / procs + usize::from(i < opts.connections % procs);
        let child = Command::new(zs_exe)
            .args(["bench", "idle-client", "--addr", addr, "--connections", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start client: {e}"))?;
        clients.push(child);
    }
    let mut held = 0;
    for c in &mut clients {
        let mut out = BufReader::new(c.stdout.take().ok_or("no client stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        held += line.trim().strip_prefix("held ").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    }
    let establish_s = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let after = crate::procmem::status_bytes(&server.id().to_string(), "VmRSS:")?;
    for mut c in clients {
        // Closing stdin tells the client to let go.
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = c.wait();
    }
    Ok(IdleReport {
        scenario: "idle",
        connections: opts.connections,
        procs,
        held,
        establish_s,
        server_rss_before: before,
        server_rss_after: after,
        server_rss_bytes_per_conn: after.saturating_sub(before) as f64 / held.max(1) as f64,
    })
}

/// The client side (`zs bench idle-client`): open `connections`, make one echo call on
/// each, print `held N`, then hold them until stdin has a line or closes.
pub async fn client(addr: &str, connections: usize) -> Result<(), String> {
    crate::raise_fd_limit();
    let mut held = Vec::with_capacity(connections);
    let mut batch = Vec::new();
    for i in 0..connections {
        batch.push(tokio::spawn(open_one(addr.to_owned())));
        if batch.len() == 256 || i + 1 == connections {
            for t in batch.drain(..) {
                if let Ok(Ok(s)) = t.await {
                    held.push(s);
                }
            }
        }
    }
    println!("held {}", held.len());
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

async fn open_one(addr: String) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
    let mut codec = OursCodec::default();
    let mut out = BytesMut::new();
    codec.encode_request(&mut out, 1, b"hi");
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut input = BytesMut::with_capacity(64);
    loop {
        if s.read_buf(&mut input).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed".into());
        }
        if codec.decode_reply(&mut input)?.is_some() {
            return Ok(s);
        }
    }
}
