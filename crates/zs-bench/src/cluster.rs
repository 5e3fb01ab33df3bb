//! `zs bench cluster`: three `zs serve` nodes and a NATS server (`nats-server -js`) on this
//! box, measured as their users get them:
//! - deliveries per second of `push.send` to users on the same node as the senders, and
//!   from senders on another node (through NATS), in the same run;
//! - how long presence takes to converge: users joining a topic on two nodes until the
//!   third counts them all;
//! - failover: `zs::Failover` clients of a node killed with SIGKILL, until every one of them
//!   is served again on another node (connected, logged in again by token, answered).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use zs::{Client, ClientConfig, Failover, FailoverConfig, Router};
use zs_services::push::client::{self, SendOptions};

use crate::fanout::Counter;
use crate::harness::{runtime, Secure};
use crate::idle::{start_server_args, ServerProcess};
use crate::nats::NatsServer;

/// Options of the cluster scenario.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Users receiving, all on the first node.
    pub users: usize,
    /// Measured time of each delivery entry.
    pub duration: Duration,
    /// `push.send` calls in flight.
    pub in_flight: usize,
    /// Users joining a topic for the presence entry.
    pub joiners: usize,
    /// Failover clients of the node that is killed.
    pub failover_clients: usize,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// Always "cluster".
    pub scenario: &'static str,
    /// Nodes (3).
    pub nodes: usize,
    /// Receiving users.
    pub users: usize,
    /// `push.send` deliveries per second, senders and users on one node.
    pub same_node_per_s: f64,
    /// The same with the senders on another node.
    pub cross_node_per_s: f64,
    /// `cross_node_per_s / same_node_per_s`.
    pub cross_ratio: f64,
    /// Users who joined a topic on two nodes.
    pub joiners: usize,
    /// Milliseconds from the first join until the third node counted them all.
    pub presence_converged_ms: f64,
    /// Failover clients of the killed node.
    pub failover_clients: usize,
    /// Milliseconds from the kill until half of them were served again.
    pub failover_median_ms: f64,
    /// Milliseconds from the kill until all of them were served again.
    pub failover_all_ms: f64,
}

const PASSWORD: &str = "a benchmark user's password";

fn node_args<'a>(url: &'a str, name: &'a str) -> [&'a str; 10] {
    [
        "--services",
        "accounts,push",
        "--allow-register",
        "--insecure-fast-hashing",
        "--user-push",
        "--cluster",
        url,
        "--node",
        name,
        "--max-connections=100000",
    ]
}

/// Runs the scenario: a NATS server and three nodes started from `zs_exe`.
pub fn run(opts: ClusterOptions, zs_exe: &Path) -> Result<ClusterReport, String> {
    crate::raise_fd_limit();
    let nats = NatsServer::start().map_err(|e| format!("not available: {e}"))?;
    let base = match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => std::env::temp_dir(),
    };
    let env = [("RUST_LOG", "warn")];
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let args = node_args(&nats.url, name);
        nodes.push(start_server_args(zs_exe, Secure::None, 1, 1, &env, Some(&base), &args)?);
    }
    let rt = runtime("zs-bench-cluster")?;
    rt.block_on(measure(&opts, &mut nodes))
}

/// A plaintext client of `node` logged in as `name` (registered there), counting `tick`.
async fn user(node: &ServerProcess, name: &str, counter: &Arc<Counter>) -> Result<Client, String> {
    let mut r = Router::new();
    let c = counter.clone();
    r.direct_console("tick", move |_, _| c.add(1));
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let client = Client::connect_with(node.target.addr, r, config).await.map_err(|e| e.to_string())?;
    let req = json!({ "user": name, "password": PASSWORD }).to_string();
    client.call_console("account.register", req).await.map_err(|e| format!("register {name}: {e}"))?;
    Ok(client)
}

async fn users(
    node: &ServerProcess,
    prefix: &str,
    n: usize,
    counter: &Arc<Counter>,
) -> Result<Vec<Client>, String> {
    let made = futures_util::stream::iter(0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            async move { user(node, &name, counter).await }
        })
        .buffer_unordered(64);
    made.collect::<Vec<_>>().await.into_iter().collect()
}

/// `push.send` to the users in turn from `senders` for `duration`, `in_flight` calls out;
/// deliveries per second as the users counted them.
async fn deliveries(
    senders: &[Client],
    users: usize,
    counter: &Counter,
    opts: &ClusterOptions,
) -> Result<f64, String> {
    let before = counter.delivered.load(Relaxed);
    let start = Instant::now();
    let mut calls = futures_util::stream::FuturesUnordered::new();
    let mut i = 0usize;
    while start.elapsed() < opts.duration {
        while calls.len() < opts.in_flight {
            let peer = senders[i % senders.len()].peer().clone();
            let to = format!("r{}", i % users);
            calls.push(async move {
                client::send(&peer, &to, "tick", "x", SendOptions { store: false, ..SendOptions::default() })
                    .await
            });
            i += 1;
        }
        match calls.next().await {
            Some(Ok(r)) if r.live == 1 => {}
            Some(Ok(r)) => return Err(format!("a send reached {} connections, not 1: {r:?}", r.live)),
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    while let Some(r) = calls.next().await {
        r.map_err(|e| e.to_string())?;
    }
    let delivered = counter.delivered.load(Relaxed) - before;
    Ok(delivered as f64 / start.elapsed().as_secs_f64())
}

/// Polls `command` on `c` until `done` holds of its answer; gives up after a minute.
async fn until(
    c: &Client,
    command: &str,
    req: serde_json::Value,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = c.call_console(command, req.to_string()).await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(reply.as_str()).map_err(|e| e.to_string())?;
        if done(&v) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{command} never came to pass: {v}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn measure(opts: &ClusterOptions, nodes: &mut [ServerProcess]) -> Result<ClusterReport, String> {
    let counter = Arc::new(Counter::default());
    let receivers = users(&nodes[0], "r", opts.users, &counter).await?;
    let same_senders = users(&nodes[0], "s", 8, &counter).await?;
    let cross_senders = users(&nodes[1], "x", 8, &counter).await?;
    // Node 2 knows every receiver is on node 1.
    let last = format!("r{}", opts.users - 1);
    until(&cross_senders[0], "push.online", json!({ "users": [last] }), |v| v["users"][&last] == 1).await?;
    let same = deliveries(&same_senders, opts.users, &counter, opts).await?;
    let cross = deliveries(&cross_senders, opts.users, &counter, opts).await?;
    drop((same_senders, receivers));

    // Presence: a watcher on node 1; joiners on nodes 2 and 3.
    let joiners_2 = users(&nodes[1], "j", opts.joiners / 2, &counter).await?;
    let joiners_3 = users(&nodes[2], "k", opts.joiners - opts.joiners / 2, &counter).await?;
    let watcher_on_1 = user(&nodes[0], "w", &counter).await?;
    let start = Instant::now();
    let joins = joiners_2.iter().chain(&joiners_3).map(|c| client::subscribe(c.peer(), "room", false));
    futures_util::future::try_join_all(joins).await.map_err(|e| e.to_string())?;
    until(&watcher_on_1, "push.presence", json!({ "topic": "room" }), |v| v["count"] == opts.joiners).await?;
    let presence_ms = start.elapsed().as_secs_f64() * 1e3;
    drop((joiners_2, joiners_3, cross_senders));

    // Failover: clients of node 3 with cluster tokens; node 3 is killed.
    let mut tokens = Vec::new();
    for c in users(&nodes[2], "f", opts.failover_clients, &counter).await? {
        let t = c.call_console("account.token", "{}").await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
        tokens.push(v["token"].as_str().unwrap_or_default().to_owned());
    }
    let endpoints: Vec<String> = [2, 0, 1].iter().map(|&i| nodes[i].target.addr.to_string()).collect();
    let mut clients = Vec::new();
    for token in tokens {
        let mut config =
            FailoverConfig::new(endpoints.clone(), ClientConfig::secured(zs::ClientSecurity::Plaintext));
        config.on_connect = Some(Arc::new(move |peer: zs::Peer| {
            let token = token.clone();
            Box::pin(async move {
                let req = json!({ "token": token }).to_string();
                peer.call_console("account.login", req).await.map(|_| ()).map_err(|e| e.to_string())
            })
        }));
        clients.push(Failover::connect(config).await.map_err(|e| e.to_string())?);
    }
    let killed = Instant::now();
    nodes[2].child.kill().map_err(|e| e.to_string())?;
    let served = clients.iter().map(|f| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if f.call_console("account.whoami", "{}").await.is_ok() && f.connections_made() > 1 {
                return Ok(killed.elapsed().as_secs_f64() * 1e3);
            }
            if Instant::now() > deadline {
                return Err("a failover client was not served again within 60 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut times: Vec<f64> = futures_util::future::try_join_all(served).await?;
    times.sort_by(f64::total_cmp);
    for c in &clients {
        c.close();
    }
    Ok(ClusterReport {
        scenario: "cluster",
        nodes: 3,
        users: opts.users,
        same_node_per_s: same,
        cross_node_per_s: cross,
        cross_ratio: cross / same.max(1e-9),
        joiners: opts.joiners,
        presence_converged_ms: presence_ms,
        failover_clients: opts.failover_clients,
        failover_median_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        failover_all_ms: times.last().copied().unwrap_or(0.0),
    })
}

/// The report as a table.
pub fn table(r: &ClusterReport) -> String {
    format!(
        "cluster: {} nodes and a NATS server on this box, {} receiving users on node 1\n\
         push.send deliveries, senders on node 1 (same node):   {:>10.0}/s\n\
         push.send deliveries, senders on node 2 (cross node):  {:>10.0}/s\n\
         ratio cross/same: {:.2}\n\
         presence: {} users joining on nodes 2 and 3 counted on node 1 after {:.0} ms\n\
         failover: {} clients of node 3 (SIGKILL) served again: half after {:.0} ms, all after {:.0} ms",
        r.nodes,
        r.users,
        r.same_node_per_s,
        r.cross_node_per_s,
        r.cross_ratio,
        r.joiners,
        r.presence_converged_ms,
        r.failover_clients,
        r.failover_median_ms,
        r.failover_all_ms
    )
}
