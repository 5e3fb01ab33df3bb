//! `zs bench churn`: connections opened, used for one call and closed, as fast as
//! `concurrency` loops can, against our server (plaintext and secured, each its own
//! `zs serve` process) and a floor server; and whether the server's memory returns to
//! where it was.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use zs::secure::SecureStream;
use zs::transport::Dialer;
use zs::ClientSecurity;

use crate::codec::{BenchCodec, FloorCodec, OursCodec};
use crate::harness::{runtime, Secure, Target};
use crate::idle::{start_floor, start_server_with, ServerProcess};
use crate::stats::{histogram, Figures};

/// Options of the churn scenario.
#[derive(Debug, Clone, Copy)]
pub struct ChurnOptions {
    /// Measured time per entry.
    pub duration: Duration,
    /// Connect-call-close loops running at once.
    pub concurrency: usize,
    /// Loopback addresses to spread connections over (TIME_WAIT holds ports).
    pub addrs: usize,
    /// Source addresses (127.0.1.1 up) the loops connect from, one per loop in turn: a
    /// server limits the handshakes one source starts per second, and the scenario is
    /// many clients, not one.
    pub sources: usize,
    /// The secured entry's mode (`none` skips it).
    pub secure: Secure,
}

/// One entry: connections per second and the latency of connect + call + close.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChurnFigures {
    /// Connections opened, used and closed per second.
    pub conns_per_s: f64,
    /// Latency of one connect + call + close (`req_per_s` is the same rate).
    pub cycle: Figures,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Server resident memory before the run, bytes.
    pub rss_before: u64,
    /// Server resident memory once every connection has closed, bytes.
    pub rss_after: u64,
    /// `(after - before) / before`, percent.
    pub rss_growth_pct: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnReport {
    /// Always "churn".
    pub scenario: &'static str,
    /// Seconds per entry.
    pub duration_s: f64,
    /// Loops at once.
    pub concurrency: usize,
    /// Source addresses the loops connected from.
    pub sources: usize,
    /// Our plaintext server.
    pub ours: ChurnFigures,
    /// Our server secured as `secure` says (absent with `--secure none`).
    pub ours_secure: Option<ChurnFigures>,
    /// The secured entry's mode.
    pub secure: Secure,
    /// A tokio echo that accepts, answers and closes.
    pub floor: ChurnFigures,
    /// `ours.conns_per_s / floor.conns_per_s`.
    pub ratio: f64,
}

/// Runs the scenario.
pub fn run(opts: ChurnOptions, zs_exe: &Path) -> Result<ChurnReport, String> {
    crate::raise_fd_limit();
    let rt = runtime("zs-bench-churn")?;
    let floor = {
        let server = start_floor(zs_exe, opts.addrs)?;
        measure(&rt, &server, true, opts)?
    };
    let ours = {
        let server = start_server_with(zs_exe, Secure::None, 1, opts.addrs)?;
        measure(&rt, &server, false, opts)?
    };
    let ours_secure = match opts.secure {
        Secure::None => None,
        mode => {
            let server = start_server_with(zs_exe, mode, 1, opts.addrs)?;
            Some(measure(&rt, &server, false, opts)?)
        }
    };
    Ok(ChurnReport {
        scenario: "churn",
        duration_s: opts.duration.as_secs_f64(),
        concurrency: opts.concurrency,
        sources: opts.sources.clamp(1, 250),
        ratio: ours.conns_per_s / floor.conns_per_s.max(1e-9),
        ours,
        ours_secure,
        secure: opts.secure,
        floor,
    })
}

fn measure(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    floor: bool,
    opts: ChurnOptions,
) -> Result<ChurnFigures, String> {
    let pid = server.pids[0].to_string();
    // A short warm-up, so the figures exclude first-use allocations.
    let warm = ChurnOptions { duration: Duration::from_millis(200), ..opts };
    rt.block_on(churn(&server.addrs, &server.target, floor, warm))?;
    let rss_before = crate::procmem::rss(&pid)?;
    let (h, failed, elapsed) = rt.block_on(churn(&server.addrs, &server.target, floor, opts))?;
    // The server sees the last closes a moment after the clients made them.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = crate::procmem::rss(&pid)?;
    let cycle = Figures::from(&h, elapsed);
    Ok(ChurnFigures {
        conns_per_s: cycle.req_per_s,
        cycle,
        failed,
        rss_before,
        rss_after,
        rss_growth_pct: (rss_after as f64 - rss_before as f64) / rss_before.max(1) as f64 * 100.0,
    })
}

async fn churn(
    addrs: &[SocketAddr],
    target: &Target,
    floor: bool,
    opts: ChurnOptions,
) -> Result<(hdrhistogram::Histogram<u64>, u64, Duration), String> {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let loops: Vec<_> = (0..opts.concurrency.max(1))
        .map(|i| {
            let (addrs, security) = (addrs.to_vec(), target.security.clone());
            let source = SourceDialer::new(i % opts.sources.max(1));
            tokio::spawn(async move {
                let (mut h, mut failed, mut n) = (histogram(), 0u64, i);
                while Instant::now() < deadline {
                    let addr = addrs[n % addrs.len()];
                    n += 1;
                    let t = Instant::now();
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        cycle(&source, addr, &security, floor),
                    )
                    .await
                    {
                        Ok(Ok(())) => h.saturating_record(t.elapsed().as_micros().max(1) as u64),
                        _ => failed += 1,
                    }
                }
                (h, failed)
            })
        })
        .collect();
    let (mut all, mut failed) = (histogram(), 0);
    for l in loops {
        let (h, f) = l.await.map_err(|e| e.to_string())?;
        all.add(&h).map_err(|e| e.to_string())?;
        failed += f;
    }
    Ok((all, failed, start.elapsed()))
}

/// Connects from one loopback source address.
#[derive(Clone)]
struct SourceDialer {
    source: IpAddr,
}

impl SourceDialer {
    /// The `n`th source: 127.0.1.1, 127.0.1.2, ...
    fn new(n: usize) -> SourceDialer {
        SourceDialer { source: IpAddr::from([127, 0, 1, (n % 250) as u8 + 1]) }
    }
}

impl Dialer for SourceDialer {
    type Raw = TcpStream;

    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.source, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Connects, makes one echo call, closes.
async fn cycle(
    source: &SourceDialer,
    addr: SocketAddr,
    security: &ClientSecurity,
    floor: bool,
) -> Result<(), String> {
    if let ClientSecurity::Plaintext = security {
        let mut s = source.dial(addr).await.map_err(|e| e.to_string())?;
        if floor {
            return echo(&mut s, FloorCodec).await;
        }
        return echo(&mut s, OursCodec::default()).await;
    }
    let mut s = SecureStream::connect_over(source.clone(), addr, security, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    echo(&mut s, OursCodec::default()).await
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, codec: impl BenchCodec) -> Result<(), String> {
    crate::idle::echo_once(s, codec).await?;
    s.shutdown().await.map_err(|e| e.to_string())
}

/// A readable table of the report.
pub fn table(r: &ChurnReport) -> String {
    let row = |name: &str, f: &ChurnFigures| {
        format!(
            "{:<24}{:>10.0}{:>10}{:>10}{:>8}   {:.1} MB -> {:.1} MB ({:+.1} %)\n",
            name,
            f.conns_per_s,
            f.cycle.p50_us,
            f.cycle.p99_us,
            f.failed,
            f.rss_before as f64 / 1e6,
            f.rss_after as f64 / 1e6,
            f.rss_growth_pct
        )
    };
    let mut s = format!(
        "churn: {} loops of connect + echo call + close from {} sources, {:.0} s per entry\n{:<24}{:>10}{:>10}{:>10}{:>8}   server RSS\n",
        r.concurrency, r.sources, r.duration_s, "", "conn/s", "p50 µs", "p99 µs", "failed"
    );
    s += &row("floor (tokio echo)", &r.floor);
    s += &row("ours (plaintext)", &r.ours);
    if let Some(x) = &r.ours_secure {
        s += &row(&format!("ours ({})", r.secure.name()), x);
    }
    s += &format!("ratio ours/floor: {:.2}", r.ratio);
    s
}
