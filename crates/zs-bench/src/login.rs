//! `zs bench login`: a burst of password logins against `zs serve` (the accounts service,
//! argon2id at its documented cost), and what it does to echo calls on other connections:
//! their latency with no logins running, then during the burst.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use zs::{CallError, Client, ErrorCode, Router};

use crate::harness::{runtime, Secure, Target};
use crate::idle::start_server_env;
use crate::stats::{histogram, Figures};

/// Options of the login scenario.
#[derive(Debug, Clone, Copy)]
pub struct LoginOptions {
    /// Logins in the burst.
    pub logins: usize,
    /// Connections the burst's logins are spread over (each logs in again and again).
    pub connections: usize,
    /// Accounts the logins are spread over.
    pub accounts: usize,
    /// Connections making echo calls beside the burst.
    pub probes: usize,
    /// Time between two echo calls of one probe.
    pub probe_interval: Duration,
    /// How long the probes run before the burst (their idle figures).
    pub idle: Duration,
    /// How the server is secured.
    pub secure: Secure,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct LoginReport {
    /// Always "login".
    pub scenario: &'static str,
    /// The server's password hashing: argon2id's documented default cost.
    pub hashing: &'static str,
    /// How the server was secured.
    pub secure: Secure,
    /// Connections the logins were spread over.
    pub connections: usize,
    /// Accounts logged in to.
    pub accounts: usize,
    /// Logins that succeeded: per second over the burst, and their latency.
    pub logins: Figures,
    /// Logins answered `RateLimited` (the hashing queue was full).
    pub rate_limited: u64,
    /// Logins that failed otherwise (must be 0).
    pub failed: u64,
    /// Seconds the burst took.
    pub burst_s: f64,
    /// Echo calls on other connections with no logins running.
    pub echo_idle: Figures,
    /// Echo calls on other connections during the burst.
    pub echo_burst: Figures,
    /// Echo calls that failed (must be 0).
    pub echo_failed: u64,
}

/// The password every benchmark account gets.
const PASSWORD: &str = "a benchmark password";

/// Runs the scenario against a `zs serve` process started from `zs_exe`.
pub fn run(opts: LoginOptions, zs_exe: &Path) -> Result<LoginReport, String> {
    let admin_password = "the benchmark's admin password";
    // One audit line per login would be most of what the server does.
    let env = [("ZS_ADMIN_PASSWORD", admin_password), ("RUST_LOG", "warn")];
    let server = start_server_env(zs_exe, opts.secure, 1, 1, &env, None)?;
    let rt = runtime("zs-bench-login")?;
    rt.block_on(measure(&server.target, admin_password, opts))
}

async fn measure(target: &Target, admin_password: &str, opts: LoginOptions) -> Result<LoginReport, String> {
    let connect = || async {
        Client::connect_with(target.addr, Router::new(), target.client_config())
            .await
            .map_err(|e| e.to_string())
    };
    let admin = connect().await?;
    login(&admin, "admin", admin_password).await.map_err(|e| format!("admin login: {e}"))?;
    let accounts = opts.accounts.max(1);
    for i in 0..accounts {
        let request = json!({ "user": format!("bench{i}"), "password": PASSWORD });
        admin
            .call_console("account.add", request.to_string())
            .await
            .map_err(|e| format!("account.add: {e}"))?;
    }
    let mut probes = Vec::new();
    for _ in 0..opts.probes.max(1) {
        probes.push(connect().await?);
    }
    let mut burst = Vec::new();
    for _ in 0..opts.connections.max(1) {
        burst.push(connect().await?);
    }

    // The probes run throughout; each call's latency goes to the phase it started in.
    let bursting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let probing: Vec<_> = probes
        .into_iter()
        .map(|client| {
            let (bursting, stop, interval) = (bursting.clone(), stop.clone(), opts.probe_interval);
            tokio::spawn(async move {
                let (mut idle, mut busy, mut failed) = (histogram(), histogram(), 0u64);
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Relaxed) {
                    tick.tick().await;
                    let during = bursting.load(Relaxed);
                    let t = Instant::now();
                    match client.call_console("echo", "ping").await {
                        Ok(_) => {
                            let us = t.elapsed().as_micros().max(1) as u64;
                            let h = if during { &mut busy } else { &mut idle };
                            h.saturating_record(us);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (idle, busy, failed)
            })
        })
        .collect();
    tokio::time::sleep(opts.idle).await;

    bursting.store(true, Relaxed);
    let start = Instant::now();
    let per = opts.logins.div_ceil(burst.len());
    let loops: Vec<_> = burst
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let n = per.min(opts.logins.saturating_sub(c * per));
            tokio::spawn(async move {
                let (mut h, mut limited, mut failed) = (histogram(), 0u64, 0u64);
                for i in 0..n {
                    let user = format!("bench{}", (c + i) % accounts);
                    let t = Instant::now();
                    match login(&client, &user, PASSWORD).await {
                        Ok(()) => h.saturating_record(t.elapsed().as_micros().max(1) as u64),
                        Err(e) if e.remote_code() == Some(ErrorCode::RateLimited) => limited += 1,
                        Err(_) => failed += 1,
                    }
                }
                (h, limited, failed)
            })
        })
        .collect();
    let (mut logins, mut rate_limited, mut failed) = (histogram(), 0, 0);
    for l in loops {
        let (h, r, f) = l.await.map_err(|e| e.to_string())?;
        logins.add(&h).map_err(|e| e.to_string())?;
        rate_limited += r;
        failed += f;
    }
    let burst_s = start.elapsed();
    stop.store(true, Relaxed);
    let (mut idle, mut busy, mut echo_failed) = (histogram(), histogram(), 0);
    for p in probing {
        let (i, b, f) = p.await.map_err(|e| e.to_string())?;
        idle.add(&i).map_err(|e| e.to_string())?;
        busy.add(&b).map_err(|e| e.to_string())?;
        echo_failed += f;
    }
    Ok(LoginReport {
        scenario: "login",
        hashing: "argon2id, 19 MiB, 2 passes, 1 lane",
        secure: opts.secure,
        connections: opts.connections.max(1),
        accounts,
        logins: Figures::from(&logins, burst_s),
        rate_limited,
        failed,
        burst_s: burst_s.as_secs_f64(),
        echo_idle: Figures::from(&idle, opts.idle),
        echo_burst: Figures::from(&busy, burst_s),
        echo_failed,
    })
}

async fn login(client: &Client, user: &str, password: &str) -> Result<(), CallError> {
    let request = json!({ "user": user, "password": password });
    client.call_console("account.login", request.to_string()).await.map(drop)
}

/// A readable table of the report.
pub fn table(r: &LoginReport) -> String {
    let row = |name: &str, f: &Figures| {
        format!("{:<30}{:>10.0}{:>10}{:>10}{:>10}\n", name, f.req_per_s, f.p50_us, f.p99_us, f.completed)
    };
    let mut s = format!(
        "login ({}, {}): {} logins over {} connections and {} accounts in {:.1} s\n{:<30}{:>10}{:>10}{:>10}{:>10}\n",
        r.secure.name(),
        r.hashing,
        r.logins.completed + r.rate_limited + r.failed,
        r.connections,
        r.accounts,
        r.burst_s,
        "",
        "per s",
        "p50 µs",
        "p99 µs",
        "count"
    );
    s += &row("logins", &r.logins);
    s += &row("echo, no logins running", &r.echo_idle);
    s += &row("echo, during the burst", &r.echo_burst);
    s += &format!(
        "rate limited: {}, failed logins: {}, failed echo calls: {}",
        r.rate_limited, r.failed, r.echo_failed
    );
    s
}
