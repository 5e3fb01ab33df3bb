//! `zs bench push`: the push service as its users get it (`zs serve` with accounts and
//! push, clients logged in as 10,000 users through `push::client`):
//! - live deliveries per second: a topic every user is subscribed to, published to again
//!   and again, against the fan-out floor (a plain tokio server writing the same bytes to
//!   every socket) in the same run; and one `push.send` per user (a call per delivery);
//! - durable inbox stores per second, each answered after its fsynced commit, against raw
//!   redb commits of records of the same size in batches of the same mean size.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zs::{Client, ClientConfig, Router};
use zs_services::push::client::{self, SendOptions};

use crate::fanout::{count_frames, Counter};
use crate::harness::{runtime, Secure};
use crate::idle::{start_server_args, ServerProcess};

/// Options of the push scenario.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Logged-in users, one connection each.
    pub users: usize,
    /// Payload bytes per message.
    pub payload: usize,
    /// Measured time per live entry.
    pub duration: Duration,
    /// Topic messages in flight (published, not yet delivered to everyone).
    pub window: u64,
    /// Messages stored in the inbox entry.
    pub stores: usize,
    /// Stores in flight at once.
    pub store_concurrency: usize,
    /// Where the server's data goes (`None`: `/dev/shm` when there is one).
    pub dir: Option<PathBuf>,
}

/// Live figures.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Live {
    /// Messages delivered to a connection, per second.
    pub deliveries_per_s: f64,
    /// Deliveries counted.
    pub deliveries: u64,
}

/// Inbox figures.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct InboxFigures {
    /// Stores answered "stored" (after their commit), per second, made through the
    /// service's Rust API in the server's process (`Push::send` to offline users).
    pub ours_per_s: f64,
    /// The same over the network: `push.send` calls from 8 connections.
    pub over_calls_per_s: f64,
    /// Stores made.
    pub stores: u64,
    /// Commits the server made for them.
    pub commits: u64,
    /// Mean stores per commit.
    pub batch: f64,
    /// Raw redb: messages committed per second in batches of `batch`, each written as a
    /// store must (the message, and its id for de-duplication).
    pub raw_redb_per_s: f64,
    /// Raw redb writing the message alone (no de-duplication), for reference.
    pub raw_messages_only_per_s: f64,
    /// `ours_per_s / raw_redb_per_s`.
    pub ratio: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// Always "push".
    pub scenario: &'static str,
    /// Logged-in users.
    pub users: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Where the server's data was.
    pub dir: PathBuf,
    /// The fan-out floor.
    pub floor: Live,
    /// `push.publish` to a topic of every user.
    pub ours_topic: Live,
    /// `push.send` to each user in turn (one call per delivery).
    pub ours_users: Live,
    /// `ours_topic / floor`.
    pub ratio: f64,
    /// The durable inbox.
    pub inbox: InboxFigures,
}

/// Connections the senders spread their calls over.
const SENDERS: usize = 8;

fn check_publish(r: Option<Result<usize, client::PushError>>, users: usize) -> Result<(), String> {
    match r {
        Some(Ok(n)) if n == users => Ok(()),
        Some(Ok(n)) => Err(format!("a publish reached {n} of {users} users")),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(()),
    }
}

const ADMIN_PASSWORD: &str = "the benchmark's admin password";
const PASSWORD: &str = "a benchmark user's password";

/// Runs the scenario against `zs serve` and the floor server started from `zs_exe`.
pub fn run(opts: PushOptions, zs_exe: &Path) -> Result<PushReport, String> {
    crate::raise_fd_limit();
    let base = opts.dir.clone().unwrap_or_else(|| match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => std::env::temp_dir(),
    });
    let rt = runtime("zs-bench-push")?;
    let floor = {
        let server = start_fanout_floor(zs_exe, opts.payload, opts.users)?;
        rt.block_on(floor(&server, &opts))?
    };
    let env = [("ZS_ADMIN_PASSWORD", ADMIN_PASSWORD), ("RUST_LOG", "warn")];
    let extra = [
        "--services",
        "accounts,push",
        "--allow-register",
        "--insecure-fast-hashing",
        "--inbox-cap",
        "1000000",
    ];
    let server = start_server_args(zs_exe, Secure::None, 1, 1, &env, Some(&base), &extra)?;
    let (ours_topic, ours_users, inbox) = rt.block_on(ours(&server, &opts))?;
    let (in_process, batch) = rt.block_on(inbox_in_process(&base, &opts))?;
    let inbox = InboxFigures { over_calls_per_s: inbox.ours_per_s, ours_per_s: in_process, batch, ..inbox };
    let batch_n = batch.max(1.0).round() as usize;
    let raw = raw_redb(&base, opts.stores, batch_n, opts.payload, true)?;
    let raw_messages_only = raw_redb(&base, opts.stores, batch_n, opts.payload, false)?;
    Ok(PushReport {
        scenario: "push",
        users: opts.users,
        payload: opts.payload,
        dir: base,
        ratio: ours_topic.deliveries_per_s / floor.deliveries_per_s.max(1e-9),
        floor,
        ours_topic,
        ours_users,
        inbox: InboxFigures {
            raw_redb_per_s: raw,
            raw_messages_only_per_s: raw_messages_only,
            ratio: inbox.ours_per_s / raw.max(1e-9),
            ..inbox
        },
    })
}

/// Starts `zs bench fanout-floor-server`.
fn start_fanout_floor(zs_exe: &Path, payload: usize, peers: usize) -> Result<FloorProcess, String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(zs_exe)
        .args([
            "bench",
            "fanout-floor-server",
            "--payload",
            &payload.to_string(),
            "--peers",
            &peers.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start the fan-out floor: {e}"))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no floor stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected floor output: {line}"))?;
    Ok(FloorProcess { child, addr })
}

struct FloorProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn floor(server: &FloorProcess, opts: &PushOptions) -> Result<Live, String> {
    let e = |e: std::io::Error| e.to_string();
    let mut control = TcpStream::connect(server.addr).await.map_err(e)?;
    let counter = Arc::new(Counter::default());
    let frame_len = 4 + opts.payload;
    let mut readers = Vec::with_capacity(opts.users);
    for _ in 0..opts.users {
        let s = TcpStream::connect(server.addr).await.map_err(e)?;
        readers.push(count_frames(s, frame_len, counter.clone()));
    }
    // One message at a time, as ours publishes.
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < opts.duration {
        counter.wait_room(0, published, opts.users as u64, opts.window).await?;
        control.write_all(&1u32.to_le_bytes()).await.map_err(e)?;
        published += 1;
    }
    let delivered = counter.delivered.load(Relaxed);
    let live =
        Live { deliveries_per_s: delivered as f64 / start.elapsed().as_secs_f64(), deliveries: delivered };
    readers.iter().for_each(|r| r.abort());
    Ok(live)
}

/// A plaintext client of `addr` whose router counts `tick` pushes, logged in as `user`
/// (registered first when `register`).
async fn user(
    addr: SocketAddr,
    user: &str,
    password: &str,
    register: bool,
    counter: &Arc<Counter>,
) -> Result<Client, String> {
    let mut r = Router::new();
    let c = counter.clone();
    r.direct_console("tick", move |_, _| c.add(1));
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let client = Client::connect_with(addr, r, config).await.map_err(|e| e.to_string())?;
    let command = if register { "account.register" } else { "account.login" };
    let req = json!({ "user": user, "password": password }).to_string();
    client.call_console(command, req).await.map_err(|e| format!("{command} {user}: {e}"))?;
    Ok(client)
}

async fn ours(server: &ServerProcess, opts: &PushOptions) -> Result<(Live, Live, InboxFigures), String> {
    let addr = server.target.addr;
    let counter = Arc::new(Counter::default());
    let connecting = futures_util::stream::iter(0..opts.users)
        .map(|i| {
            let counter = counter.clone();
            async move {
                let c = user(addr, &format!("u{i}"), PASSWORD, true, &counter).await?;
                client::subscribe(c.peer(), "all", false).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            }
        })
        .buffer_unordered(64);
    let clients: Vec<Client> = connecting.collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
    // Senders on several connections, as an application's would be: one connection's
    // calls would measure that connection, not the service.
    let mut admins = Vec::new();
    for _ in 0..SENDERS {
        admins.push(user(addr, "admin", ADMIN_PASSWORD, false, &counter).await?);
    }
    let admin = &admins[0];
    let payload = "x".repeat(opts.payload);

    // A topic of every user.
    let before = counter.delivered.load(Relaxed);
    let start = Instant::now();
    let mut published = 0u64;
    // Publishes go out while the window has room, without waiting for each reply.
    let mut calls = futures_util::stream::FuturesUnordered::new();
    while start.elapsed() < opts.duration {
        counter.wait_room(before, published, opts.users as u64, opts.window).await?;
        let peer = admins[published as usize % SENDERS].peer().clone();
        let payload = payload.clone();
        calls.push(async move { client::publish(&peer, "all", "tick", &payload).await });
        published += 1;
        // Replies that are in are checked; a full set of calls waits for one.
        while calls.len() >= opts.window as usize {
            check_publish(calls.next().await, opts.users)?;
        }
        while let Some(r) = futures_util::FutureExt::now_or_never(calls.next()).flatten() {
            check_publish(Some(r), opts.users)?;
        }
    }
    while let Some(r) = calls.next().await {
        check_publish(Some(r), opts.users)?;
    }
    let delivered = counter.delivered.load(Relaxed) - before;
    let topic =
        Live { deliveries_per_s: delivered as f64 / start.elapsed().as_secs_f64(), deliveries: delivered };
    // Let the last ones land before the next entry counts.
    let settle = Instant::now();
    while counter.delivered.load(Relaxed) - before < published * opts.users as u64
        && settle.elapsed() < Duration::from_secs(10)
    {
        let _ = tokio::time::timeout(Duration::from_millis(50), counter.progressed.notified()).await;
    }

    // One push.send per user, 256 in flight.
    let before = counter.delivered.load(Relaxed);
    let start = Instant::now();
    let sends = futures_util::stream::iter(0..)
        .take_while(|_| std::future::ready(start.elapsed() < opts.duration))
        .map(|i: usize| {
            let (peer, payload) = (admins[i % SENDERS].peer().clone(), payload.clone());
            let to = format!("u{}", i % opts.users);
            async move {
                let opts = SendOptions { store: false, ..SendOptions::default() };
                client::send(&peer, &to, "tick", &payload, opts)
                    .await
                    .map(|r| r.live)
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(256);
    let reached: Vec<Result<usize, String>> = sends.collect().await;
    let sent = reached.into_iter().collect::<Result<Vec<_>, _>>()?.len() as u64;
    let elapsed = start.elapsed();
    let settle = Instant::now();
    while counter.delivered.load(Relaxed) - before < sent && settle.elapsed() < Duration::from_secs(10) {
        let _ = tokio::time::timeout(Duration::from_millis(50), counter.progressed.notified()).await;
    }
    let delivered = counter.delivered.load(Relaxed) - before;
    let users = Live { deliveries_per_s: delivered as f64 / elapsed.as_secs_f64(), deliveries: delivered };
    drop(clients);

    // The inbox: 100 users who are not connected.
    for i in 0..100 {
        let c = user(addr, &format!("away{i}"), PASSWORD, true, &counter).await?;
        c.call_console("account.logout", "{}").await.map_err(|e| e.to_string())?;
    }
    let commits = |v: serde_json::Value| v["commits"].as_u64().unwrap_or(0);
    let stats = || async {
        let v = admin.call_console("push.stats", "{}").await.map_err(|e| e.to_string())?;
        serde_json::from_str::<serde_json::Value>(v.as_str()).map_err(|e| e.to_string())
    };
    let commits_before = commits(stats().await?);
    let start = Instant::now();
    let stores = futures_util::stream::iter(0..opts.stores)
        .map(|i| {
            let (peer, payload) = (admins[i % SENDERS].peer().clone(), payload.clone());
            async move {
                let opts = SendOptions { id: Some(format!("s{i}")), ..SendOptions::default() };
                let r = client::send(&peer, &format!("away{}", i % 100), "tick", &payload, opts)
                    .await
                    .map_err(|e| e.to_string())?;
                r.stored.map(|_| ()).ok_or_else(|| format!("not stored: {r:?}"))
            }
        })
        .buffer_unordered(opts.store_concurrency);
    let done: Vec<Result<(), String>> = stores.collect().await;
    let elapsed = start.elapsed();
    done.into_iter().collect::<Result<Vec<_>, _>>()?;
    let commits = commits(stats().await?) - commits_before;
    let inbox = InboxFigures {
        ours_per_s: opts.stores as f64 / elapsed.as_secs_f64(),
        stores: opts.stores as u64,
        commits,
        batch: opts.stores as f64 / commits.max(1) as f64,
        ..InboxFigures::default()
    };
    Ok((topic, users, inbox))
}

/// Stores through `Push::send` in this process, `store_concurrency` at once, to 100
/// users with no connection: stores per second and the mean stores per commit.
async fn inbox_in_process(base: &Path, opts: &PushOptions) -> Result<(f64, f64), String> {
    use zs_services::push::{Message, Push, PushConfig};
    let dir = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let push = Push::open(PushConfig { inbox_cap: 1_000_000, ..PushConfig::new(dir.path()) })?;
    let payload = "x".repeat(opts.payload);
    let start = Instant::now();
    let stores = futures_util::stream::iter(0..opts.stores)
        .map(|i| {
            let (push, payload) = (push.clone(), payload.clone());
            async move {
                let m = Message { id: Some(format!("s{i}")), ..Message::new("tick", payload) };
                let r = push.send(&format!("away{}", i % 100), m).await;
                r.stored.map(|_| ()).ok_or_else(|| format!("not stored: {r:?}"))
            }
        })
        .buffer_unordered(opts.store_concurrency);
    let done: Vec<Result<(), String>> = stores.collect().await;
    let elapsed = start.elapsed();
    done.into_iter().collect::<Result<Vec<_>, _>>()?;
    let commits = push.inbox().counters().commits.load(Relaxed).max(1);
    Ok((opts.stores as f64 / elapsed.as_secs_f64(), opts.stores as f64 / commits as f64))
}

/// Raw redb: `n` messages of about the inbox's record size committed (durably) in
/// transactions of `batch`, each written as a store must write it: the message under its
/// user and sequence number, and its id (for de-duplication); messages per second. With
/// `ids` false, the message alone.
fn raw_redb(base: &Path, n: usize, batch: usize, payload: usize, ids: bool) -> Result<f64, String> {
    use redb::{Database, TableDefinition};
    const T: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
    const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("ids");
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let dir = tempfile::tempdir_in(base).map_err(|x| e(&x))?;
    let db = Database::create(dir.path().join("raw.redb")).map_err(|x| e(&x))?;
    // About what the inbox writes per message: its JSON (command, id, sender, times).
    let record = vec![b'x'; payload + 120];
    let start = Instant::now();
    let mut i = 0u64;
    while (i as usize) < n {
        let txn = db.begin_write().map_err(|x| e(&x))?;
        {
            let mut t = txn.open_table(T).map_err(|x| e(&x))?;
            let mut id_table = txn.open_table(IDS).map_err(|x| e(&x))?;
            for _ in 0..batch.min(n - i as usize) {
                let user = format!("away{}", i % 100);
                t.insert((user.as_str(), i), record.as_slice()).map_err(|x| e(&x))?;
                if ids {
                    id_table.insert((user.as_str(), format!("s{i}").as_str()), i).map_err(|x| e(&x))?;
                }
                i += 1;
            }
        }
        txn.commit().map_err(|x| e(&x))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A readable table of the report.
pub fn table(r: &PushReport) -> String {
    let m = |x: f64| x / 1e6;
    let mut s =
        format!("push: {} logged-in users, {} B messages, data in {}\n", r.users, r.payload, r.dir.display());
    s += &format!(
        "{:<44}{:>12.2} M deliveries/s\n",
        "floor (fan-out, plain tokio)",
        m(r.floor.deliveries_per_s)
    );
    s += &format!(
        "{:<44}{:>12.2} M deliveries/s\n",
        "ours, push.publish to a topic of all",
        m(r.ours_topic.deliveries_per_s)
    );
    s += &format!(
        "{:<44}{:>12.3} M deliveries/s\n",
        "ours, push.send per user (256 in flight)",
        m(r.ours_users.deliveries_per_s)
    );
    s += &format!("ratio topic/floor: {:.2}\n", r.ratio);
    let i = &r.inbox;
    s += &format!(
        "inbox, stores acknowledged after fsync: {:.0}/s through Push::send ({:.1} per commit), {:.0}/s over push.send calls ({} in {} commits); raw redb, same batches and records: {:.0}/s ({:.0}/s without the id records); ratio {:.2}",
        i.ours_per_s, i.batch, i.over_calls_per_s, i.stores, i.commits, i.raw_redb_per_s, i.raw_messages_only_per_s, i.ratio
    );
    s
}
