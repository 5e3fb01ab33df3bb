//! `zs bench idle`: hold many idle connections to a server process and report its
//! resident memory per connection. The server and the clients are separate processes of
//! the `zs` binary (a process may hold at most 20,000 open files here).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zs::secure::{SecureStream, TlsClient};
use zs::{ClientSecurity, Fingerprint, Trust};

use crate::codec::{BenchCodec, OursCodec};
use crate::harness::{Secure, Target};

/// Options of the idle scenario.
#[derive(Debug, Clone, Copy)]
pub struct IdleOptions {
    /// Connections to hold.
    pub connections: usize,
    /// Client processes to spread them over.
    pub procs: usize,
    /// How the server is secured.
    pub secure: Secure,
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
    /// How the server was secured.
    pub secure: Secure,
    /// `held / establish_s`: connections (with their handshakes) established per second.
    pub connects_per_s: f64,
}

/// Runs the scenario, starting `zs_exe serve` and `zs_exe bench idle-client` processes.
pub fn run(opts: IdleOptions, zs_exe: &Path) -> Result<IdleReport, String> {
    let server = start_server(zs_exe, opts.secure)?;
    measure(opts, zs_exe, &server)
}

/// A `zs serve` child process with a data directory of its own; killed on drop.
pub(crate) struct ServerProcess {
    pub child: Child,
    pub target: Target,
    _data: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `zs serve` on an ephemeral loopback port, secured as `secure` says.
pub(crate) fn start_server(zs_exe: &Path, secure: Secure) -> Result<ServerProcess, String> {
    let data = tempfile::tempdir().map_err(|e| format!("data directory: {e}"))?;
    let child = Command::new(zs_exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(secure.serve_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start server: {e}"))?;
    let mut server = ServerProcess { child, target: Target::plain(([127, 0, 0, 1], 0).into()), _data: data };
    let mut lines = BufReader::new(server.child.stdout.take().ok_or("no server stdout")?).lines();
    let (first, second) = match (lines.next(), lines.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b),
        _ => return Err("the server said nothing".into()),
    };
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.split_whitespace().next())
        .ok_or_else(|| format!("unexpected server output: {first}"))?;
    server.target.addr = addr.parse().map_err(|e| format!("server address {addr}: {e}"))?;
    let fingerprint = second.split_whitespace().find_map(|w| w.parse::<Fingerprint>().ok());
    server.target.security = match (secure, fingerprint) {
        (Secure::None, _) => ClientSecurity::Plaintext,
        (Secure::Noise, Some(fp)) => fp.into(),
        (Secure::Tls, Some(fp)) => ClientSecurity::Tls(TlsClient::pinned(fp)),
        _ => return Err(format!("the server named no key: {second}")),
    };
    std::thread::sleep(Duration::from_millis(300));
    Ok(server)
}

fn measure(opts: IdleOptions, zs_exe: &Path, server: &ServerProcess) -> Result<IdleReport, String> {
    let pid = server.child.id().to_string();
    let before = crate::procmem::status_bytes(&pid, "VmRSS:")?;
    let addr = server.target.addr.to_string();
    let mut security_args = vec!["--secure".to_string(), format!("{:?}", opts.secure).to_lowercase()];
    match &server.target.security {
        ClientSecurity::Noise(n) => security_args.extend(["--server-key".into(), pinned(&n.trust)]),
        ClientSecurity::Tls(t) => security_args.extend(["--server-key".into(), pinned(&t.trust)]),
        ClientSecurity::Plaintext => {}
    }
    let procs = opts.procs.max(1);
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..procs {
        let n = opts.connections / procs + usize::from(i < opts.connections % procs);
        let child = Command::new(zs_exe)
            .args(["bench", "idle-client", "--addr", &addr, "--connections", &n.to_string()])
            .args(&security_args)
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
    let after = crate::procmem::status_bytes(&pid, "VmRSS:")?;
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
        secure: opts.secure,
        connects_per_s: held as f64 / establish_s.max(1e-9),
    })
}

fn pinned(trust: &Trust) -> String {
    match trust {
        Trust::Pinned(keys) => keys.first().map(ToString::to_string).unwrap_or_default(),
        _ => String::new(),
    }
}

/// A connection the idle client holds (only to keep it open).
#[allow(dead_code)]
enum Held {
    Tcp(TcpStream),
    Secure(Box<SecureStream>),
}

/// The client side (`zs bench idle-client`): open `connections` (secured as `security`
/// says), make one echo call on each, print `held N`, then hold them until stdin has a
/// line or closes.
pub async fn client(addr: &str, connections: usize, security: ClientSecurity) -> Result<(), String> {
    crate::raise_fd_limit();
    let mut held = Vec::with_capacity(connections);
    let mut batch = Vec::new();
    for i in 0..connections {
        batch.push(tokio::spawn(open_one(addr.to_owned(), security.clone())));
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

async fn open_one(addr: String, security: ClientSecurity) -> Result<Held, String> {
    if let ClientSecurity::Plaintext = security {
        let mut s = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        echo_once(&mut s).await?;
        return Ok(Held::Tcp(s));
    }
    let mut s = SecureStream::connect(addr.as_str(), &security, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    echo_once(&mut s).await?;
    Ok(Held::Secure(Box::new(s)))
}

async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<(), String> {
    let mut codec = OursCodec::default();
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
