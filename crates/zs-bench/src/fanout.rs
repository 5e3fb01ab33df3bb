//! `zs bench fanout`: one message broadcast to N connected peers, again and again;
//! deliveries per second for ours (`ServerHandle::broadcast_console`, encoded once and
//! shared) and a floor (a tokio loop writing the same bytes to every socket), with NATS
//! publish/subscribe beside them where `nats-server` is installed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use zs::{Client, ClientConfig, Router, Server, ServerConfig, ServerSecurity};

use crate::harness::runtime;
use crate::Part;

/// Options of the fanout scenario.
#[derive(Debug, Clone, Copy)]
pub struct FanoutOptions {
    /// Subscribed peers.
    pub peers: usize,
    /// Payload bytes per message.
    pub payload: usize,
    /// Measured time per entry.
    pub duration: Duration,
    /// Messages in flight (published, not yet delivered to everyone).
    pub window: u64,
    /// Run only one part (to profile it): the others report zero, NATS is not run.
    pub only: Option<Part>,
}

/// One entry's figures.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct FanoutFigures {
    /// Messages delivered to a peer, per second (messages × peers).
    pub deliveries_per_s: f64,
    /// Messages published per second.
    pub messages_per_s: f64,
    /// Deliveries counted.
    pub deliveries: u64,
}

/// The NATS entry: figures, or why there are none.
#[derive(Debug, Clone, Serialize)]
pub struct NatsEntry {
    /// Whether nats-server ran.
    pub available: bool,
    /// Why not, when it did not.
    pub note: String,
    /// Figures when it ran.
    pub figures: Option<FanoutFigures>,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Always "fanout".
    pub scenario: &'static str,
    /// Subscribed peers.
    pub peers: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Seconds per entry.
    pub duration_s: f64,
    /// Ours (plaintext, so the entries compare like for like).
    pub ours: FanoutFigures,
    /// The floor.
    pub floor: FanoutFigures,
    /// NATS, where installed.
    pub nats: NatsEntry,
    /// `ours.deliveries_per_s / floor.deliveries_per_s`.
    pub ratio: f64,
}

/// Deliveries counted by the subscribers, and a wake-up for the publisher.
pub(crate) struct Counter {
    pub(crate) delivered: AtomicU64,
    pub(crate) progressed: Notify,
    /// Deliveries per message: the publisher is told each time a message's worth is in.
    peers: u64,
}

/// A counter whose waiters are told of every delivery.
impl Default for Counter {
    fn default() -> Counter {
        Counter::new(1)
    }
}

impl Counter {
    /// A counter whose waiters are told each time `peers` more deliveries are in.
    pub(crate) fn new(peers: usize) -> Counter {
        Counter { delivered: AtomicU64::new(0), progressed: Notify::new(), peers: peers.max(1) as u64 }
    }

    pub(crate) fn add(&self, n: u64) {
        let before = self.delivered.fetch_add(n, Ordering::Relaxed);
        // The publisher waits for whole messages' worth: waking it for every delivery
        // cost ours (one handler per message) far more than the floor (one add per read).
        if before / self.peers != (before + n) / self.peers {
            self.progressed.notify_one();
        }
    }

    /// Waits until at most `window` messages are not yet delivered to every peer
    /// (counting deliveries past `base`); an error if deliveries stop for 10 s.
    pub(crate) async fn wait_room(
        &self,
        base: u64,
        published: u64,
        peers: u64,
        window: u64,
    ) -> Result<(), String> {
        let mut last = (self.delivered.load(Ordering::Relaxed), Instant::now());
        loop {
            let notified = self.progressed.notified();
            let done = self.delivered.load(Ordering::Relaxed) - base;
            if published.saturating_sub(window) * peers <= done {
                return Ok(());
            }
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(10) {
                return Err(format!("deliveries stopped at {done} for 10 s"));
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// Reads `s` until it closes, counting whole frames of `frame_len` bytes into `counter`.
pub(crate) fn count_frames(
    mut s: TcpStream,
    frame_len: usize,
    counter: Arc<Counter>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut pending = 0usize;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            pending += n;
            counter.add((pending / frame_len) as u64);
            pending %= frame_len;
        }
    })
}

/// Runs the scenario.
pub fn run(opts: FanoutOptions) -> Result<FanoutReport, String> {
    crate::raise_fd_limit();
    let server_rt = runtime("zs-bench-server")?;
    let load_rt = runtime("zs-bench-load")?;
    let zero = FanoutFigures::default;
    let floor = match opts.only {
        Some(Part::Ours) => zero(),
        _ => load_rt.block_on(floor(&server_rt, opts))?,
    };
    let ours = match opts.only {
        Some(Part::Floor) => zero(),
        _ => load_rt.block_on(ours(&server_rt, opts))?,
    };
    let nats = match opts.only {
        Some(_) => NatsEntry { available: false, note: "not run (--only)".into(), figures: None },
        None => nats(&load_rt, opts),
    };
    Ok(FanoutReport {
        scenario: "fanout",
        peers: opts.peers,
        payload: opts.payload,
        duration_s: opts.duration.as_secs_f64(),
        ratio: ours.deliveries_per_s / floor.deliveries_per_s.max(1e-9),
        ours,
        floor,
        nats,
    })
}

fn figures(delivered: u64, peers: usize, elapsed: Duration) -> FanoutFigures {
    let s = elapsed.as_secs_f64().max(1e-9);
    FanoutFigures {
        deliveries_per_s: delivered as f64 / s,
        messages_per_s: delivered as f64 / peers as f64 / s,
        deliveries: delivered,
    }
}

async fn ours(server_rt: &tokio::runtime::Runtime, opts: FanoutOptions) -> Result<FanoutFigures, String> {
    let config = ServerConfig { security: ServerSecurity::Plaintext, ..ServerConfig::default() };
    // Bound on the server's runtime, so its connections run there.
    let server = server_rt
        .spawn(Server::bind("127.0.0.1:0", Router::new(), config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let counter = Arc::new(Counter::new(opts.peers));
    let mut clients = Vec::with_capacity(opts.peers);
    // One router for every client, as a process of many connections would have.
    let mut router = Router::new();
    let c = counter.clone();
    router.direct_console("tick", move |_, _| c.add(1));
    let router = Arc::new(router);
    for _ in 0..opts.peers {
        let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
        let client = Client::connect_with(server.local_addr(), router.clone(), config).await;
        clients.push(client.map_err(|e| e.to_string())?);
    }
    while server.connection_count() < opts.peers {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let payload = zs::Text::from("x".repeat(opts.payload));
    let server_side = server.clone();
    let publish = server_rt.spawn({
        let counter = counter.clone();
        async move {
            let start = Instant::now();
            let mut published = 0u64;
            while start.elapsed() < opts.duration {
                counter.wait_room(0, published, opts.peers as u64, opts.window).await?;
                let sent = server_side
                    .broadcast_console("tick", payload.clone(), |_| true)
                    .map_err(|e| e.to_string())?;
                if sent != opts.peers {
                    return Err(format!("broadcast reached {sent} of {} peers", opts.peers));
                }
                published += 1;
            }
            Ok::<_, String>(start)
        }
    });
    let start = publish.await.map_err(|e| e.to_string())??;
    let result = figures(counter.delivered.load(Ordering::Relaxed), opts.peers, start.elapsed());
    drop(clients);
    server.shutdown().await;
    Ok(result)
}

async fn floor(server_rt: &tokio::runtime::Runtime, opts: FanoutOptions) -> Result<FanoutFigures, String> {
    let listener = server_rt
        .spawn(TcpListener::bind("127.0.0.1:0"))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let counter = Arc::new(Counter::new(opts.peers));
    let frame_len = 4 + opts.payload;
    let mut frame = (opts.payload as u32).to_le_bytes().to_vec();
    frame.resize(frame_len, b'x');
    let frame = bytes::Bytes::from(frame);
    let publish = server_rt.spawn({
        let counter = counter.clone();
        async move {
            // Each peer has a writer task that writes everything queued with one syscall,
            // as ours does; the publisher hands each the same shared bytes.
            let mut peers = Vec::with_capacity(opts.peers);
            for _ in 0..opts.peers {
                let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
                let _ = s.set_nodelay(true);
                // Unbounded, but never more than the window deep: the publisher waits for
                // deliveries before it publishes more.
                let tx = crate::floor::batching_writer(s);
                peers.push(tx);
            }
            let start = Instant::now();
            let mut published = 0u64;
            while start.elapsed() < opts.duration {
                counter.wait_room(0, published, opts.peers as u64, opts.window).await?;
                for p in &peers {
                    p.send(frame.clone()).map_err(|_| "a floor writer stopped".to_string())?;
                }
                published += 1;
            }
            Ok::<_, String>(start)
        }
    });
    // Connected while the publisher accepts (the listen backlog is short).
    let mut readers = Vec::new();
    for _ in 0..opts.peers {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        readers.push(count_frames(s, frame_len, counter.clone()));
    }
    let start = publish.await.map_err(|e| e.to_string())??;
    let result = figures(counter.delivered.load(Ordering::Relaxed), opts.peers, start.elapsed());
    readers.iter().for_each(|r| r.abort());
    Ok(result)
}

/// NATS publish/subscribe with `nats-server` on an ephemeral loopback port, when the
/// binary is on PATH; the protocol is spoken directly (text commands over TCP).
fn nats(rt: &tokio::runtime::Runtime, opts: FanoutOptions) -> NatsEntry {
    let unavailable = |note: String| NatsEntry { available: false, note, figures: None };
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => return unavailable(e.to_string()),
    };
    let child = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return unavailable(format!(
                "nats-server not run ({e}); install it with `apt-get install nats-server`"
            ))
        }
    };
    let result = rt.block_on(nats_run(port, opts));
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(f) => NatsEntry {
            available: true,
            note: "nats-server on loopback, one connection per subscriber".into(),
            figures: Some(f),
        },
        Err(e) => unavailable(format!("nats-server failed: {e}")),
    }
}

async fn nats_connect(port: u16) -> Result<TcpStream, String> {
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                .await
                .map_err(|e| e.to_string())?;
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("cannot connect".into())
}

async fn nats_run(port: u16, opts: FanoutOptions) -> Result<FanoutFigures, String> {
    let counter = Arc::new(Counter::new(opts.peers));
    let mut subs = Vec::new();
    for _ in 0..opts.peers {
        let mut s = nats_connect(port).await?;
        s.write_all(b"SUB tick 1\r\nPING\r\n").await.map_err(|e| e.to_string())?;
        let c = counter.clone();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        subs.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            let mut ready_tx = Some(ready_tx);
            let mut tail = Vec::new();
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                tail.extend_from_slice(&buf[..n]);
                // Only whole lines are looked at; the rest waits for the next read.
                let cut = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let text = String::from_utf8_lossy(&tail[..cut]);
                if text.contains("PONG") {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                c.add(text.matches("MSG tick").count() as u64);
                tail.drain(..cut);
            }
        }));
        ready.await.map_err(|_| "subscriber closed".to_string())?;
    }
    let mut publisher = nats_connect(port).await?;
    let mut msg = format!("PUB tick {}\r\n", opts.payload).into_bytes();
    msg.extend(std::iter::repeat_n(b'x', opts.payload));
    msg.extend_from_slice(b"\r\n");
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < opts.duration {
        counter.wait_room(0, published, opts.peers as u64, opts.window).await?;
        publisher.write_all(&msg).await.map_err(|e| e.to_string())?;
        published += 1;
    }
    let result = figures(counter.delivered.load(Ordering::Relaxed), opts.peers, start.elapsed());
    subs.iter().for_each(|s| s.abort());
    Ok(result)
}

/// A readable table of the report.
pub fn table(r: &FanoutReport) -> String {
    let row = |name: &str, f: &FanoutFigures| {
        format!("{:<24}{:>14.0}{:>14.0}\n", name, f.deliveries_per_s, f.messages_per_s)
    };
    let mut s = format!(
        "fanout: {}-byte messages to {} peers, {:.0} s per entry\n{:<24}{:>14}{:>14}\n",
        r.payload, r.peers, r.duration_s, "", "deliveries/s", "messages/s"
    );
    s += &row("floor (tokio writes)", &r.floor);
    s += &row("ours (broadcast)", &r.ours);
    match &r.nats.figures {
        Some(f) => s += &row("NATS pub/sub", f),
        None => s += &format!("{:<24}{}\n", "NATS pub/sub", r.nats.note),
    }
    s += &format!("ratio ours/floor: {:.2}", r.ratio);
    s
}
