//! `zs bench rpc`: closed-loop echo calls against our server and the floor, side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zs::{Client, Router, Text};

use crate::codec::{FloorCodec, OursCodec};
use crate::driver::{self, Load};
use crate::floor;
use crate::harness::{runtime, start_servers, Secure, Target};
use crate::stats::{histogram, Figures};

/// Options of the rpc scenario.
#[derive(Debug, Clone, Copy)]
pub struct RpcOptions {
    /// Connections.
    pub connections: usize,
    /// Calls in flight per connection.
    pub depth: usize,
    /// Payload bytes per call.
    pub payload: usize,
    /// Measured time per entry and round.
    pub duration: Duration,
    /// Rounds; each entry's figure is its median round.
    pub rounds: usize,
    /// How our server is secured.
    pub secure: Secure,
}

/// The result: one JSON object with the headline `ratio` (ours / floor req/s).
#[derive(Debug, Clone, Serialize)]
pub struct RpcReport {
    /// Always "rpc".
    pub scenario: &'static str,
    /// Connections.
    pub connections: usize,
    /// Calls in flight per connection.
    pub depth: usize,
    /// Payload bytes per call.
    pub payload: usize,
    /// Seconds per entry and round.
    pub duration_s: f64,
    /// Rounds run.
    pub rounds: usize,
    /// How our server was secured (`none`, `noise`, `tls`).
    pub secure: Secure,
    /// Our server, driven by the raw pipelined driver.
    pub ours: Figures,
    /// Our server, driven through our `Client` API (one task per call in flight).
    pub ours_client: Figures,
    /// A plain tokio length-prefixed echo answering each read's frames with one write.
    pub floor: Figures,
    /// `ours.req_per_s / floor.req_per_s`.
    pub ratio: f64,
    /// tarpc (bincode over TCP) served as its examples serve it, driven through its client
    /// with `depth` tasks per connection, like `ours_client`.
    pub tarpc: Figures,
    /// `ours.req_per_s / tarpc.req_per_s`.
    pub vs_tarpc: f64,
    /// `ours_client.req_per_s / tarpc.req_per_s`: client against client.
    pub client_vs_tarpc: f64,
    /// With `secure` other than `none`: our plaintext server, same driver, same run.
    pub ours_plaintext: Option<Figures>,
    /// `ours.req_per_s / ours_plaintext.req_per_s`: what security costs.
    pub secure_ratio: Option<f64>,
}

/// Runs the scenario. Servers get their own two-thread runtime, the load generator
/// another, in this one process (so both servers share the machine the same way).
pub fn run(opts: RpcOptions) -> Result<RpcReport, String> {
    let servers = start_servers(floor::echo_server, opts.secure)?;
    let floor_target = Target::plain(servers.floor);
    let tarpc_addr = servers.start_peer(crate::tarpc_peer::serve)?;
    let load_rt = runtime("zs-bench-load")?;
    let load = Load {
        connections: opts.connections,
        depth: opts.depth,
        payload: opts.payload,
        duration: opts.duration,
    };
    let (mut floor_runs, mut ours_runs, mut client_runs, mut plain_runs) = (vec![], vec![], vec![], vec![]);
    let mut tarpc_runs = vec![];
    for _ in 0..opts.rounds.max(1) {
        floor_runs.push(load_rt.block_on(driver::run::<FloorCodec>(&floor_target, load))?);
        ours_runs.push(load_rt.block_on(driver::run::<OursCodec>(&servers.ours, load))?);
        if let Some(plain) = &servers.ours_plaintext {
            plain_runs.push(load_rt.block_on(driver::run::<OursCodec>(plain, load))?);
        }
        client_runs.push(load_rt.block_on(client_api(&servers.ours, load))?);
        tarpc_runs.push(load_rt.block_on(crate::tarpc_peer::drive(tarpc_addr, load))?);
    }
    let tarpc = median(tarpc_runs);
    let (floor, ours, ours_client) = (median(floor_runs), median(ours_runs), median(client_runs));
    let ours_plaintext = (!plain_runs.is_empty()).then(|| median(plain_runs));
    Ok(RpcReport {
        scenario: "rpc",
        connections: opts.connections,
        depth: opts.depth,
        payload: opts.payload,
        duration_s: opts.duration.as_secs_f64(),
        rounds: opts.rounds.max(1),
        secure: opts.secure,
        ratio: ours.req_per_s / floor.req_per_s.max(1e-9),
        secure_ratio: ours_plaintext.map(|p| ours.req_per_s / p.req_per_s.max(1e-9)),
        vs_tarpc: ours.req_per_s / tarpc.req_per_s.max(1e-9),
        client_vs_tarpc: ours_client.req_per_s / tarpc.req_per_s.max(1e-9),
        tarpc,
        ours_plaintext,
        ours,
        ours_client,
        floor,
    })
}

fn median(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by(|a, b| a.req_per_s.total_cmp(&b.req_per_s));
    runs[runs.len() / 2]
}

/// The same load through our `Client`: `depth` tasks per connection, each awaiting its
/// call before making the next.
async fn client_api(target: &Target, load: Load) -> Result<Figures, String> {
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let c = Client::connect_with(target.addr, Router::new(), target.client_config()).await;
        clients.push(Arc::new(c.map_err(|e| e.to_string())?));
    }
    let payload = Text::from("x".repeat(load.payload));
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::new();
    for c in &clients {
        for _ in 0..load.depth {
            let (c, payload) = (c.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    c.call_console("echo", payload.clone()).await.map_err(|e| e.to_string())?;
                    h.saturating_record(t.elapsed().as_micros().max(1) as u64);
                }
                Ok::<_, String>(h)
            }));
        }
    }
    let mut all = histogram();
    for t in tasks {
        all.add(&t.await.map_err(|e| e.to_string())??).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, start.elapsed()))
}

/// A readable table of the report.
pub fn table(r: &RpcReport) -> String {
    let mut s = format!(
        "rpc: {} connections x {} in flight, {}-byte payload, {:.0} s per entry, {} round(s) (median)\n",
        r.connections, r.depth, r.payload, r.duration_s, r.rounds
    );
    s += &format!("{:<22}{:>12}{:>10}{:>10}{:>10}\n", "", "req/s", "p50 µs", "p99 µs", "p99.9 µs");
    let ours = format!("ours ({:?})", r.secure).to_lowercase();
    let mut rows = vec![("floor (tokio echo)".to_string(), &r.floor), (ours, &r.ours)];
    if let Some(p) = &r.ours_plaintext {
        rows.push(("ours (plaintext)".into(), p));
    }
    rows.push(("ours (Client API)".into(), &r.ours_client));
    rows.push(("tarpc (bincode)".into(), &r.tarpc));
    for (name, f) in rows {
        s += &format!("{:<22}{:>12.0}{:>10}{:>10}{:>10}\n", name, f.req_per_s, f.p50_us, f.p99_us, f.p999_us);
    }
    s += &format!(
        "ratio ours/floor: {:.2}; ours/tarpc: {:.2}; ours (Client API)/tarpc: {:.2}",
        r.ratio, r.vs_tarpc, r.client_vs_tarpc
    );
    if let Some(x) = r.secure_ratio {
        s += &format!("\nratio {:?}/plaintext: {x:.2}", r.secure).to_lowercase();
    }
    s
}
