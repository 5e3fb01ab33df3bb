//! `zs bench resume`: a resumable session whose link is cut N times while numbered
//! messages flow both ways and calls are made; counts what was lost or duplicated and how
//! long each resume took. Then the cost of the session layer when no link drops: the same
//! rpc and bulk runs with sessions on and off, side by side.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use zs::{Client, ClientConfig, Router, ServerConfig, SessionConfig, SessionEvent};

use crate::bulk::{self, BulkOptions, Throughput};
use crate::driver::Load;
use crate::fault_proxy::{FaultProxy, Faults};
use crate::harness::{builtin_router, runtime, start_servers, Secure, Target};
use crate::rpc::client_api;
use crate::stats::Figures;

/// Options of the resume scenario.
#[derive(Debug, Clone, Copy)]
pub struct ResumeOptions {
    /// Links cut.
    pub disconnects: usize,
    /// Numbered messages each way between two cuts.
    pub messages: usize,
    /// The secure channel (noise or tls; sessions need one).
    pub secure: Secure,
    /// Seconds per rpc run of the cost comparison (zero skips the comparison).
    pub cost_duration: Duration,
    /// Bytes of the bulk run of the cost comparison.
    pub cost_size: u64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    /// Always "resume".
    pub scenario: &'static str,
    /// The secure channel.
    pub secure: Secure,
    /// Links cut.
    pub disconnects: usize,
    /// Numbered messages sent, both directions.
    pub sent: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Messages never delivered (must be 0).
    pub lost: u64,
    /// Messages delivered more than once (must be 0).
    pub duplicated: u64,
    /// Messages delivered after a later one (must be 0).
    pub out_of_order: u64,
    /// Calls made across the cuts, and how many were answered.
    pub calls: u64,
    /// Calls answered correctly.
    pub calls_answered: u64,
    /// Time from a link's loss to the session carrying on, median, ms.
    pub resume_ms_p50: f64,
    /// The same, 99th percentile, ms.
    pub resume_ms_p99: f64,
    /// The same, slowest, ms.
    pub resume_ms_max: f64,
    /// The cost of the layer when nothing drops (absent if skipped).
    pub cost: Option<SessionCost>,
}

/// Sessions on against off, same runs, same moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SessionCost {
    /// 64 connections x 8 calls in flight through our `Client`, sessions off.
    pub rpc_off: Figures,
    /// The same with sessions on.
    pub rpc_on: Figures,
    /// `rpc_on / rpc_off` (median of three pairs).
    pub rpc_ratio: f64,
    /// One big stream, sessions off.
    pub bulk_off: Throughput,
    /// The same with sessions on.
    pub bulk_on: Throughput,
    /// `bulk_on / bulk_off` (median of three pairs).
    pub bulk_ratio: f64,
}

type Log = Arc<Mutex<Vec<u64>>>;

/// Runs the scenario.
pub fn run(opts: ResumeOptions) -> Result<ResumeReport, String> {
    if opts.secure == Secure::None {
        return Err("resumable sessions need --secure noise or tls".into());
    }
    let server_rt = runtime("zs-bench-server")?;
    let load_rt = runtime("zs-bench-load")?;
    let notes: Log = Arc::default();
    let log = notes.clone();
    let mut router = builtin_router();
    router.direct_console("note", move |_, t| log.lock().unwrap().push(t.parse().unwrap_or(u64::MAX)));
    let security = opts.secure.server().map_err(|e| e.to_string())?;
    let config = ServerConfig { security, ..ServerConfig::default() };
    let server =
        server_rt.block_on(zs::Server::bind("127.0.0.1:0", router, config)).map_err(|e| e.to_string())?;
    let cuts = load_rt.block_on(cut_links(&server, opts, &notes));
    drop(server_rt);
    let mut report = cuts?;
    if !opts.cost_duration.is_zero() {
        report.cost = Some(cost(opts, &load_rt)?);
    }
    Ok(report)
}

async fn cut_links(
    server: &zs::ServerHandle,
    opts: ResumeOptions,
    notes: &Log,
) -> Result<ResumeReport, String> {
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.map_err(|e| e.to_string())?;
    let ticks: Log = Arc::default();
    let resumes = Arc::new(Mutex::new(Vec::new()));
    let mut router = Router::new();
    let log = ticks.clone();
    router.direct_console("tick", move |_, t| log.lock().unwrap().push(t.parse().unwrap_or(u64::MAX)));
    let seen = resumes.clone();
    router.on_session(move |_, e| {
        if let SessionEvent::Resumed { after, .. } = e {
            seen.lock().unwrap().push(*after);
        }
    });
    let session = SessionConfig { min_backoff: Duration::from_millis(1), ..SessionConfig::default() };
    let config = ClientConfig { session: Some(session), ..ClientConfig::secured(server.client_security()) };
    let client = Client::connect_with(proxy.addr(), router, config).await.map_err(|e| e.to_string())?;
    let (mut sent_notes, mut sent_ticks, mut calls, mut answered) = (0u64, 0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60 + opts.disconnects as u64);
    // The server registers a connection a moment after the client's connect returns; a
    // broadcast made before that does not reach it, and would count as lost.
    while server.directory().is_empty() {
        if Instant::now() > deadline {
            return Err("the server never registered the client".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for cut in 0..opts.disconnects {
        for _ in 0..opts.messages {
            client.send_console("note", sent_notes.to_string()).await.map_err(|e| e.to_string())?;
            sent_notes += 1;
            server.broadcast_console("tick", sent_ticks.to_string(), |_| true).map_err(|e| e.to_string())?;
            sent_ticks += 1;
        }
        let pending: Vec<_> = (0..8).map(|i| client.call_console("echo", format!("{cut}/{i}"))).collect();
        proxy.cut_all();
        for (i, c) in pending.into_iter().enumerate() {
            calls += 1;
            if c.await.is_ok_and(|r| r.as_str() == format!("{cut}/{i}")) {
                answered += 1;
            }
        }
        while resumes.lock().unwrap().len() <= cut {
            if Instant::now() > deadline {
                return Err(format!("only {cut} of {} resumes before the deadline", opts.disconnects));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let total = sent_notes + sent_ticks;
    let delivered_all = || (notes.lock().unwrap().len() + ticks.lock().unwrap().len()) as u64;
    let settle = Instant::now() + Duration::from_secs(30);
    while delivered_all() < total && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (n, t) = (tally(&notes.lock().unwrap(), sent_notes), tally(&ticks.lock().unwrap(), sent_ticks));
    let mut times: Vec<f64> = resumes.lock().unwrap().iter().map(|d| d.as_secs_f64() * 1e3).collect();
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| times.get(((times.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    Ok(ResumeReport {
        scenario: "resume",
        secure: opts.secure,
        disconnects: opts.disconnects,
        sent: total,
        delivered: n.distinct + t.distinct,
        lost: total - (n.distinct + t.distinct),
        duplicated: n.repeats + t.repeats,
        out_of_order: n.out_of_order + t.out_of_order,
        calls,
        calls_answered: answered,
        resume_ms_p50: pct(0.5),
        resume_ms_p99: pct(0.99),
        resume_ms_max: times.last().copied().unwrap_or(0.0),
        cost: None,
    })
}

struct Tally {
    distinct: u64,
    repeats: u64,
    out_of_order: u64,
}

/// What arrived of the messages numbered `0..sent`.
fn tally(got: &[u64], sent: u64) -> Tally {
    let mut seen = vec![false; sent as usize];
    let (mut distinct, mut repeats, mut out_of_order, mut last) = (0, 0, 0, None);
    for &n in got {
        match seen.get_mut(n as usize) {
            Some(s) if *s => repeats += 1,
            Some(s) => {
                *s = true;
                distinct += 1;
            }
            None => repeats += 1,
        }
        if last.is_some_and(|l| n < l) {
            out_of_order += 1;
        }
        last = Some(n);
    }
    Tally { distinct, repeats, out_of_order }
}

/// The same rpc and bulk runs through our `Client` with sessions off and on, three pairs
/// each (the first pair off then on, the next on then off, ...); medians of the ratios.
fn cost(opts: ResumeOptions, load_rt: &tokio::runtime::Runtime) -> Result<SessionCost, String> {
    let servers = start_servers(bulk::floor_sink, opts.secure)?;
    let off = servers.ours.clone();
    let on = Target { session: true, ..off.clone() };
    let load = Load { connections: 64, depth: 8, payload: 64, duration: opts.cost_duration, rate: None };
    let bulk_opts = BulkOptions {
        size: opts.cost_size,
        streams: 1,
        connections: 1,
        secure: opts.secure,
        check: zs::StreamCheck::default(),
        only: None,
        pairs: 1,
    };
    let mut rpc = Vec::new();
    let mut bulk_runs = Vec::new();
    for pair in 0..3 {
        let (a, b) = off_on(pair, &off, &on, |t| load_rt.block_on(client_api(t, load)))?;
        rpc.push((b.req_per_s / a.req_per_s.max(1e-9), a, b));
        let (a, b) = off_on(pair, &off, &on, |t| Ok(load_rt.block_on(bulk::ours_streams(t, bulk_opts))?.0))?;
        bulk_runs.push((b.bytes_per_s / a.bytes_per_s.max(1e-9), a, b));
    }
    rpc.sort_by(|x, y| x.0.total_cmp(&y.0));
    bulk_runs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (rpc_ratio, rpc_off, rpc_on) = rpc[1];
    let (bulk_ratio, bulk_off, bulk_on) = bulk_runs[1];
    Ok(SessionCost { rpc_off, rpc_on, rpc_ratio, bulk_off, bulk_on, bulk_ratio })
}

/// Runs `run` with sessions off and on, in the order pair number `pair` says (off first in
/// even pairs, so neither side always runs on a warmer machine); returns (off, on).
fn off_on<T>(
    pair: usize,
    off: &Target,
    on: &Target,
    mut run: impl FnMut(&Target) -> Result<T, String>,
) -> Result<(T, T), String> {
    if pair.is_multiple_of(2) {
        let a = run(off)?;
        Ok((a, run(on)?))
    } else {
        let b = run(on)?;
        Ok((run(off)?, b))
    }
}

/// A readable table of the report.
pub fn table(r: &ResumeReport) -> String {
    let mut s = format!(
        "resume ({}): {} links cut during traffic both ways\n\
         messages: {} sent, {} delivered, {} lost, {} duplicated, {} out of order\n\
         calls across cuts: {} made, {} answered\n\
         resume time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        r.secure.name(),
        r.disconnects,
        r.sent,
        r.delivered,
        r.lost,
        r.duplicated,
        r.out_of_order,
        r.calls,
        r.calls_answered,
        r.resume_ms_p50,
        r.resume_ms_p99,
        r.resume_ms_max
    );
    if let Some(c) = &r.cost {
        s += &format!(
            "\ncost when nothing drops (sessions on / off, median of 3 pairs):\n\
             rpc 64x8: {:.0} / {:.0} calls/s = {:.2}\n\
             bulk:     {:.2} / {:.2} GB/s = {:.2}",
            c.rpc_on.req_per_s,
            c.rpc_off.req_per_s,
            c.rpc_ratio,
            c.bulk_on.bytes_per_s / 1e9,
            c.bulk_off.bytes_per_s / 1e9,
            c.bulk_ratio
        );
    }
    s
}
