//! A fault-injecting TCP proxy for tests and benchmarks: it forwards every connection to an
//! upstream address and, as configured, cuts links at random byte counts, stalls them for
//! random moments, slows them to a byte rate, or cuts every link on demand. Every fault is
//! bounded in time, and the proxy stops when its handle is dropped. Loopback only.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use zs_wire::fuzzing::SplitMix as Rng;

/// What the proxy does to each link.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Cut each link (both directions, at once) after a number of forwarded bytes drawn
    /// from this range (`None`: never at random).
    pub cut_after: Option<Range<u64>>,
    /// Before forwarding a read, stall it with this probability...
    pub stall_chance: f64,
    /// ...for a time drawn from this range (bounded: at most its end).
    pub stall_for: Range<Duration>,
    /// Forward at most this many bytes per second in each direction (`None`: no limit).
    pub bytes_per_s: Option<u64>,
    /// Seed of the random draws, so a failing run repeats.
    pub seed: u64,
}

/// Counters of a running proxy (a cut is counted as its link's task ends, a moment after
/// the sockets close).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Links accepted.
    pub links: AtomicU64,
    /// Links cut (at random or on demand).
    pub cuts: AtomicU64,
    /// Stalls applied.
    pub stalls: AtomicU64,
    /// Bytes forwarded, both directions.
    pub bytes: AtomicU64,
}

/// A running proxy; dropping it stops it and closes every link.
pub struct FaultProxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
    /// Bumped to cut every current link; closed (dropped) to stop.
    cut: watch::Sender<u64>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream` (which must be a
    /// loopback address).
    pub async fn start(upstream: SocketAddr, faults: Faults) -> std::io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the proxy forwards to loopback only",
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let (cut, cut_rx) = watch::channel(0u64);
        tokio::spawn(accept_loop(listener, upstream, faults, stats.clone(), cut_rx));
        Ok(FaultProxy { addr, stats, cut })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Cuts every link open now (new links are not affected).
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: Faults,
    stats: Arc<ProxyStats>,
    mut cut: watch::Receiver<u64>,
) {
    let mut link = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            changed = cut.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return, // the proxy was dropped
            },
        };
        let Ok((client, _)) = accepted else { continue };
        link += 1;
        stats.links.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng(faults.seed ^ link.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cut_after =
            faults.cut_after.clone().map(|r| r.start + rng.next() % r.end.saturating_sub(r.start).max(1));
        let (faults, stats, cut) = (faults.clone(), stats.clone(), cut.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let forwarded = Arc::new(AtomicU64::new(0));
            let link = Link { faults, stats, forwarded, cut_after, cut_now: Arc::new(Notify::new()) };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = link.clone().pump(cr, sw, Rng(rng.next()));
            let down = link.clone().pump(sr, cw, Rng(rng.next()));
            let mut cut = cut;
            cut.borrow_and_update();
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                _ = link.cut_now.notified() => {}
                _ = cut.changed() => { link.stats.cuts.fetch_add(1, Ordering::Relaxed); }
            }
            // Dropping the halves closes both sockets.
        });
    }
}

#[derive(Clone)]
struct Link {
    faults: Faults,
    stats: Arc<ProxyStats>,
    forwarded: Arc<AtomicU64>,
    cut_after: Option<u64>,
    /// Told when one direction reached the cut point: the whole link goes.
    cut_now: Arc<Notify>,
}

impl Link {
    /// Forwards one direction until end of stream, an error or a cut.
    async fn pump(self, mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut rng: Rng) {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            };
            if self.faults.stall_chance > 0.0 && rng.unit() < self.faults.stall_chance {
                let r = &self.faults.stall_for;
                let span = r.end.saturating_sub(r.start);
                let stall = r.start + span.mul_f64(rng.unit());
                self.stats.stalls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(stall).await;
            }
            let mut n = n;
            if let Some(limit) = self.cut_after {
                let before = self.forwarded.fetch_add(n as u64, Ordering::Relaxed);
                if before + n as u64 >= limit {
                    // Forward up to the cut point, then cut the whole link.
                    n = limit.saturating_sub(before) as usize;
                    let _ = to.write_all(&buf[..n]).await;
                    self.stats.cuts.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    self.cut_now.notify_one();
                    return;
                }
            }
            if let Some(rate) = self.faults.bytes_per_s {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
            self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
