//! `zs bench rpc`: closed-loop echo calls against our server and the floor, side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zs::{Client, Router, Text};

use crate::codec::{FloorCodec, OursCodec};
use crate::driver::{self, api_load, Load};
use crate::floor;
use crate::harness::{builtin_router, runtime, serve_ours, start_servers, Secure, Target, Via};
use crate::stats::Figures;

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
    /// Open loop (`rpc-open`): requests per second in all, timed from when each was due.
    pub rate: Option<f64>,
    /// Also drive our server with a guard that lets every call through, in each round.
    pub guard: bool,
    /// Also drive our server with every command metered (calls, errors, latency), in each
    /// round.
    pub metered: bool,
    /// Also drive our `Client` over the server's WebSocket or QUIC listener (not TCP), in
    /// each round.
    pub transport: Via,
    /// Drive only the floor and this entry (for profiling); the others report zero.
    pub only: Option<Entry>,
}

/// One of our entries of the rpc bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The raw pipelined driver against our server.
    Ours,
    /// `Client::call_console`, `depth` tasks per connection.
    Client,
    /// `Client::call_console_batch`, one task per connection.
    Batches,
}

impl std::str::FromStr for Entry {
    type Err = String;
    fn from_str(s: &str) -> Result<Entry, String> {
        match s {
            "ours" => Ok(Entry::Ours),
            "client" => Ok(Entry::Client),
            "batches" => Ok(Entry::Batches),
            _ => Err(format!("`{s}` is not an entry (ours, client, batches)")),
        }
    }
}

/// The result: one JSON object with the headline `ratio` (ours / floor req/s).
#[derive(Debug, Clone, Serialize)]
pub struct RpcReport {
    /// "rpc" (closed loop) or "rpc-open" (a fixed arrival rate).
    pub scenario: &'static str,
    /// The arrival rate asked for, requests per second in all (`rpc-open`).
    pub rate: Option<f64>,
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
    /// `ours_client.req_per_s / floor.req_per_s`.
    pub client_ratio: f64,
    /// Closed loop only: our server, driven through `Client::call_console_batch`, one task
    /// per connection calling `depth` at a time.
    pub ours_client_batch: Option<Figures>,
    /// `ours_client_batch.req_per_s / floor.req_per_s`.
    pub batch_ratio: Option<f64>,
    /// A plain tokio length-prefixed echo answering each read's frames with one write.
    pub floor: Figures,
    /// `ours.req_per_s / floor.req_per_s`; for `rpc-open`, where every entry runs at the
    /// same rate, `ours.p99_us / floor.p99_us` (lower is better).
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
    /// With `--guard`: our server with a pass-through guard, same driver, same run.
    pub ours_guarded: Option<Figures>,
    /// `ours_guarded.req_per_s / ours.req_per_s` (open loop: `ours.p99 / ours_guarded.p99`):
    /// what a guard costs, as a share kept.
    pub guard_ratio: Option<f64>,
    /// With `--metered`: our server metering every command, same driver, same run.
    pub ours_metered: Option<Figures>,
    /// `ours_metered.req_per_s / ours.req_per_s` (open loop: `ours.p99 / ours_metered.p99`):
    /// what metering costs, as a share kept.
    pub metered_ratio: Option<f64>,
    /// The transport of `ours_client_via` (`tcp`: none was asked).
    pub transport: Via,
    /// With `--transport ws|quic`: our `Client` over the server's WebSocket or QUIC
    /// listener, same server, same run.
    pub ours_client_via: Option<Figures>,
    /// `ours_client_via.req_per_s / ours_client.req_per_s` (open loop: `ours_client.p99 /
    /// ours_client_via.p99`): that transport against TCP, client against client.
    pub via_vs_tcp: Option<f64>,
    /// With `--transport quic`: the UDP socket buffers the server's QUIC listener got (in,
    /// out), in bytes.
    pub udp_buffers: Option<(usize, usize)>,
}

/// Runs the scenario. Servers get their own two-thread runtime, the load generator
/// another, in this one process (so both servers share the machine the same way).
pub fn run(opts: RpcOptions) -> Result<RpcReport, String> {
    let servers = start_servers(floor::echo_server, opts.secure)?;
    let floor_target = Target::plain(servers.floor);
    let tarpc_addr = servers.start_peer(crate::tarpc_peer::serve)?;
    // Variants of our server, each driven beside it in every round.
    let variant = |on: bool, router: fn() -> Router| -> Result<Option<(Target, Vec<Figures>)>, String> {
        if !on {
            return Ok(None);
        }
        let security = opts.secure.server().map_err(|e| e.to_string())?;
        Ok(Some((serve_ours(&servers.rt, security, router())?, Vec::new())))
    };
    let mut variants = [variant(opts.guard, guarded_router)?, variant(opts.metered, metered_router)?];
    let load_rt = runtime("zs-bench-load")?;
    let load = Load {
        connections: opts.connections,
        depth: opts.depth,
        payload: opts.payload,
        duration: opts.duration,
        rate: opts.rate,
    };
    let (mut floor_runs, mut ours_runs, mut client_runs, mut plain_runs) = (vec![], vec![], vec![], vec![]);
    let (mut tarpc_runs, mut batch_runs, mut ws_runs) = (vec![], vec![], vec![]);
    let drive_variants = |variants: &mut [Option<(Target, Vec<Figures>)>]| -> Result<(), String> {
        for (target, runs) in variants.iter_mut().flatten() {
            runs.push(load_rt.block_on(driver::run::<OursCodec>(target, load))?);
        }
        Ok(())
    };
    for round in 0..opts.rounds.max(1) {
        floor_runs.push(load_rt.block_on(driver::run::<FloorCodec>(&floor_target, load))?);
        // With variants too, they and ours take turns going first.
        let variants_first = round % 2 == 1;
        if variants_first {
            drive_variants(&mut variants)?;
        }
        let on = |e: Entry| opts.only.is_none_or(|o| o == e);
        ours_runs.push(match on(Entry::Ours) {
            true => load_rt.block_on(driver::run::<OursCodec>(&servers.ours, load))?,
            false => Figures::default(),
        });
        if !variants_first {
            drive_variants(&mut variants)?;
        }
        if let Some(plain) = &servers.ours_plaintext {
            plain_runs.push(load_rt.block_on(driver::run::<OursCodec>(plain, load))?);
        }
        client_runs.push(match on(Entry::Client) {
            true => load_rt.block_on(client_api(&servers.ours, load))?,
            false => Figures::default(),
        });
        if opts.transport != Via::Tcp {
            ws_runs.push(load_rt.block_on(client_api(&servers.ours.via(opts.transport), load))?);
        }
        if load.rate.is_none() && on(Entry::Batches) {
            batch_runs.push(load_rt.block_on(client_batches(&servers.ours, load))?);
        }
        tarpc_runs.push(match opts.only {
            None => load_rt.block_on(crate::tarpc_peer::drive(tarpc_addr, load))?,
            Some(_) => Figures::default(),
        });
    }
    let tarpc = median(tarpc_runs);
    let ours_client_batch = (!batch_runs.is_empty()).then(|| median(batch_runs));
    let (floor, ours, ours_client) = (median(floor_runs), median(ours_runs), median(client_runs));
    let ours_plaintext = (!plain_runs.is_empty()).then(|| median(plain_runs));
    let ours_client_via = (!ws_runs.is_empty()).then(|| median(ws_runs));
    let [guarded, metered] = variants;
    let ours_guarded = guarded.map(|(_, runs)| median(runs));
    let ours_metered = metered.map(|(_, runs)| median(runs));
    let kept = |v: &Figures| match opts.rate {
        Some(_) => ours.p99_us as f64 / v.p99_us.max(1) as f64,
        None => v.req_per_s / ours.req_per_s.max(1e-9),
    };
    Ok(RpcReport {
        scenario: if opts.rate.is_some() { "rpc-open" } else { "rpc" },
        rate: opts.rate,
        connections: opts.connections,
        depth: opts.depth,
        payload: opts.payload,
        duration_s: opts.duration.as_secs_f64(),
        rounds: opts.rounds.max(1),
        secure: opts.secure,
        ratio: match opts.rate {
            Some(_) => ours.p99_us as f64 / floor.p99_us.max(1) as f64,
            None => ours.req_per_s / floor.req_per_s.max(1e-9),
        },
        secure_ratio: ours_plaintext.map(|p| ours.req_per_s / p.req_per_s.max(1e-9)),
        guard_ratio: ours_guarded.as_ref().map(kept),
        ours_guarded,
        metered_ratio: ours_metered.as_ref().map(kept),
        ours_metered,
        vs_tarpc: ours.req_per_s / tarpc.req_per_s.max(1e-9),
        client_vs_tarpc: ours_client.req_per_s / tarpc.req_per_s.max(1e-9),
        client_ratio: ours_client.req_per_s / floor.req_per_s.max(1e-9),
        via_vs_tcp: ours_client_via.as_ref().map(|w| match opts.rate {
            Some(_) => ours_client.p99_us as f64 / w.p99_us.max(1) as f64,
            None => w.req_per_s / ours_client.req_per_s.max(1e-9),
        }),
        ours_client_via,
        transport: opts.transport,
        udp_buffers: (opts.transport == Via::Quic).then(|| servers.ours.quic.map(|(_, b)| b)).flatten(),
        batch_ratio: ours_client_batch.as_ref().map(|b| b.req_per_s / floor.req_per_s.max(1e-9)),
        ours_client_batch,
        tarpc,
        ours_plaintext,
        ours,
        ours_client,
        floor,
    })
}

/// The built-in router behind a guard that lets every call through after looking at the
/// caller and the command, as an application's guard would.
fn guarded_router() -> Router {
    let mut router = builtin_router();
    router.guard(|peer, command| match command.starts_with("admin.") && peer.user().is_none() {
        true => Err(zs::HandlerError::with_code(zs::ErrorCode::NotLoggedIn, "log in first")),
        false => Ok(()),
    });
    router
}

/// The built-in router with every command metered, as `zs serve --admin` runs it.
fn metered_router() -> Router {
    let mut router = builtin_router();
    router.meter_commands();
    router
}

fn median(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by(|a, b| a.req_per_s.total_cmp(&b.req_per_s));
    runs[runs.len() / 2]
}

/// The same load through our `Client`, closed or open loop as `load` says.
pub(crate) async fn client_api(target: &Target, load: Load) -> Result<Figures, String> {
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        clients.push(Arc::new(target.connect().await.map_err(|e| e.to_string())?));
    }
    // A constant payload, as an application's fixed message would be: made once for the
    // run, not counted against every call (512 tasks sharing one `Bytes` bounced its
    // reference count between the cores).
    let payload: &'static str = Box::leak("x".repeat(load.payload).into_boxed_str());
    api_load(clients, load, move |c: Arc<Client>| async move {
        c.call_console("echo", Text::from_static(payload)).await.map(drop).map_err(|e| e.to_string())
    })
    .await
}

/// Closed loop through `Client::call_console_batch`: per connection one task, each batch
/// `depth` calls; every call of a batch is timed as the batch.
pub(crate) async fn client_batches(target: &Target, load: Load) -> Result<Figures, String> {
    let mut tasks = Vec::with_capacity(load.connections);
    let start = Instant::now();
    let deadline = start + load.duration;
    for _ in 0..load.connections {
        let c = target.connect().await.map_err(|e| e.to_string())?;
        let payloads = vec![Text::from("x".repeat(load.payload)); load.depth.max(1)];
        tasks.push(tokio::spawn(async move {
            let mut h = crate::stats::histogram();
            while Instant::now() < deadline {
                let t = Instant::now();
                for r in c.call_console_batch("echo", payloads.iter().cloned()).await {
                    r.map_err(|e| e.to_string())?;
                }
                h.saturating_record_n(t.elapsed().as_micros().max(1) as u64, payloads.len() as u64);
            }
            Ok::<_, String>(h)
        }));
    }
    let mut all = crate::stats::histogram();
    for t in tasks {
        all.add(&t.await.map_err(|e| e.to_string())??).map_err(|e| e.to_string())?;
    }
    Ok(Figures::from(&all, start.elapsed()))
}

/// A readable table of the report.
pub fn table(r: &RpcReport) -> String {
    let mut s = match r.rate {
        Some(rate) => format!(
            "rpc-open: {} connections, {rate:.0} requests/s in all (latency from each request's due time), {}-byte payload, {:.0} s per entry, {} round(s) (median)\n",
            r.connections, r.payload, r.duration_s, r.rounds
        ),
        None => format!(
            "rpc: {} connections x {} in flight, {}-byte payload, {:.0} s per entry, {} round(s) (median)\n",
            r.connections, r.depth, r.payload, r.duration_s, r.rounds
        ),
    };
    s += &format!("{:<26}{:>12}{:>10}{:>10}{:>10}\n", "", "req/s", "p50 µs", "p99 µs", "p99.9 µs");
    let ours = format!("ours ({})", r.secure.name());
    let mut rows = vec![("floor (tokio echo)".to_string(), &r.floor), (ours, &r.ours)];
    if let Some(p) = &r.ours_plaintext {
        rows.push(("ours (plaintext)".into(), p));
    }
    if let Some(g) = &r.ours_guarded {
        rows.push(("ours (with a guard)".into(), g));
    }
    if let Some(m) = &r.ours_metered {
        rows.push(("ours (metered)".into(), m));
    }
    rows.push(("ours (Client API)".into(), &r.ours_client));
    if let Some(w) = &r.ours_client_via {
        rows.push((format!("ours (Client, {})", r.transport.name()), w));
    }
    if let Some(b) = &r.ours_client_batch {
        rows.push(("ours (Client batches)".into(), b));
    }
    rows.push(("tarpc (bincode)".into(), &r.tarpc));
    for (name, f) in rows {
        s += &format!("{:<26}{:>12.0}{:>10}{:>10}{:>10}\n", name, f.req_per_s, f.p50_us, f.p99_us, f.p999_us);
    }
    s += &match r.rate {
        Some(_) => format!(
            "p99 ours/floor: {:.2}; p99 tarpc/ours: {:.2}",
            r.ratio,
            r.tarpc.p99_us as f64 / r.ours.p99_us.max(1) as f64
        ),
        None => format!(
            "ratio ours/floor: {:.2}; ours/tarpc: {:.2}; ours (Client API)/tarpc: {:.2}",
            r.ratio, r.vs_tarpc, r.client_vs_tarpc
        ),
    };
    s += &format!("\nClient API/floor: {:.2}", r.client_ratio);
    if let Some(x) = r.batch_ratio {
        s += &format!("; Client batches/floor: {x:.2}");
    }
    if let Some(x) = r.secure_ratio {
        s += &format!("\nratio {}/plaintext: {x:.2}", r.secure.name());
    }
    if let Some(x) = r.guard_ratio {
        s += &format!("\nratio with a guard/without: {x:.2}");
    }
    if let Some(x) = r.metered_ratio {
        s += &format!("\nratio metered/not: {x:.2}");
    }
    if let Some(x) = r.via_vs_tcp {
        s += &format!("\nratio {}/TCP (Client API): {x:.2}", r.transport.name());
    }
    if let Some((rcv, snd)) = r.udp_buffers {
        s += &format!("\nQUIC UDP buffers: {rcv} B in, {snd} B out");
    }
    s
}
