//! `zs serve`: one server process, or several sharing their addresses (`--workers`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use zs::{Router, Server, ServerConfig};
use zs_services::accounts::{Accounts, AccountsConfig, HashCost, SessionPolicy};
use zs_services::cluster::{Cluster, ClusterConfig, ClusterTokens, JetStreamInbox};
use zs_services::db::{Db, DbConfig};
use zs_services::files::{Files, FilesConfig, PublicRead};
use zs_services::push::{Push, PushConfig, SendPolicy};

#[derive(Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (`zs config example` prints a complete one); ZS_*
    /// environment variables (ZS_MAX_CONNECTIONS for --max-connections) override it, flags
    /// override both. Default: $ZS_CONFIG, else none.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on; repeat for several (a name resolving to several addresses
    /// listens on each). Addresses with port 0 all get the same port.
    #[arg(long, default_value = "127.0.0.1:9818")]
    listen: Vec<String>,
    /// Server processes sharing the addresses (SO_REUSEPORT; the kernel spreads connections
    /// over them). Each process may hold as many connections as it may open files.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// (internal) Run as one of `--workers`: share the port, exit when stdin closes.
    #[arg(long, hide = true)]
    worker: bool,
    /// Most connections held at once (per process).
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Close a connection after this many seconds without receiving anything (0 = never).
    #[arg(long, default_value = "60", value_parser = crate::seconds)]
    idle_timeout: Duration,
    /// Also serve unmodified ZServer4D (Delphi/FreePascal) clients on this address, with
    /// the same commands (repeatable; see docs/COMPAT.md).
    #[arg(long, value_name = "ADDR")]
    compat_listen: Vec<String>,
    /// Also serve WebSocket clients (browsers, the JS client) on this address: the same
    /// frames in binary messages, secured inside as on TCP (repeatable; docs/PROTOCOL.md §16).
    #[arg(long, value_name = "ADDR")]
    ws_listen: Vec<String>,
    /// Also serve WebSocket clients over TLS (wss://, what pages served over https need) on
    /// this address, with the certificate of --tls-cert/--tls-key, else the self-signed one
    /// kept in the data directory; the server's own mode still runs inside (repeatable).
    #[arg(long, value_name = "ADDR")]
    wss_listen: Vec<String>,
    /// A browser origin let in on the WebSocket listeners, e.g. https://app.example
    /// (repeatable; `*` for any). Always let in: non-browser clients (no Origin) and pages of
    /// the listener's own host and port.
    #[arg(long, value_name = "ORIGIN")]
    ws_origin: Vec<String>,
    /// Largest WebSocket message taken, e.g. 1M (a larger one closes the connection, code
    /// 1009); clients split the stream into messages under it.
    #[arg(long, default_value = "1M", value_parser = crate::bench::parse_size)]
    ws_max_message: u64,
    /// Also serve QUIC clients on this UDP address: one bidirectional stream carries the
    /// connection, secured inside as on TCP (repeatable; docs/PROTOCOL.md §17).
    #[arg(long, value_name = "ADDR")]
    quic_listen: Vec<String>,
    /// Keep ZServer4D clients that go quiet, as the original does (no idle timeout on their
    /// connections, none announced); by default `--idle-timeout` applies and is announced.
    #[arg(long)]
    compat_keep_idle: bool,
    /// Unfinished handshakes one source address may hold at once (the oldest make room); a
    /// reverse proxy in front is one source.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_handshakes_per_source: u32,
    /// Handshakes one source address may start per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    handshake_rate_per_source: u32,
    /// What peers may make the server hold before they are answered (partial frames,
    /// buffers being received, ZServer4D staging, detached sessions), e.g. 256M; when it
    /// runs short, the connections holding the most are closed first.
    #[arg(long, default_value = "256M", value_parser = crate::bench::parse_size)]
    memory_budget: u64,
    /// On SIGUSR1 (or `POST /api/drain` on the admin listener) the server drains: it refuses new connections (`Draining`), tells its
    /// clients to move (a `zs.draining` push carrying this hint, e.g. another server's
    /// address), and exits once they have gone or --drain-timeout has passed.
    #[arg(long, default_value = "")]
    drain_hint: String,
    /// Seconds a drain waits for clients to leave before closing the rest.
    #[arg(long, default_value = "60", value_parser = crate::seconds)]
    drain_timeout: Duration,
    /// Send calls, replies and pushes uncompressed (by default payloads of 1 KiB or more are
    /// lz4-compressed when it saves a tenth): for networks where CPU costs more than bytes.
    #[arg(long)]
    no_compress: bool,
    /// Built-in services to serve, comma-separated (default: `accounts,files,push,db` with
    /// one worker, none with --workers; `none` for none). Built in: accounts, files, push, db.
    #[arg(long, value_delimiter = ',', value_parser = ["accounts", "files", "push", "db", "none"])]
    services: Option<Vec<String>>,
    /// Join the cluster whose NATS server is here (e.g. nats://127.0.0.1:4222, JetStream on):
    /// pushes, topics and presence span its nodes, offline messages are kept in its
    /// JetStream, and the node's load is published (`zs cluster status`). Needs --node.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster: 1 to 64 letters, digits, - or _, unique.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Where clients reach this node, told to the cluster (repeatable; default: the
    /// addresses it listens on).
    #[arg(long, value_name = "ADDR")]
    advertise: Vec<String>,
    /// Messages a user's offline inbox holds (push); the oldest give way.
    #[arg(long, default_value_t = 1000)]
    inbox_cap: u64,
    /// Let every logged-in user send to other users (`push.send`), not only the roles
    /// admin and push.
    #[arg(long)]
    user_push: bool,
    /// Let anyone make an account (`account.register`).
    #[arg(long)]
    allow_register: bool,
    /// Fewest characters a password may have when it is set (registration, a change, an
    /// administrator's reset).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    min_password: u16,
    /// When an account logs in while logged in elsewhere: many (default), kick-old,
    /// refuse-new.
    #[arg(long, default_value = "many", value_parser = session_policy)]
    session_policy: SessionPolicy,
    /// Let everyone read the public file area, logged in or not.
    #[arg(long)]
    public_files: bool,
    /// Bytes each user may keep in their private file area, e.g. 10G.
    #[arg(long, default_value = "10G", value_parser = crate::bench::parse_size)]
    quota_bytes: u64,
    /// Serve the admin API and Prometheus metrics over HTTP on this address (off by
    /// default; loopback only unless --admin-token is given). Turns on per-command metering.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// The token every admin request but /healthz and /readyz must bring
    /// (`Authorization: Bearer TOKEN`); needed to serve the admin API beyond loopback.
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    #[command(flatten)]
    pub(crate) logs: crate::LogArgs,
    /// (tests and benchmarks) Hash passwords far below OWASP's minimum cost.
    #[arg(long, hide = true)]
    insecure_fast_hashing: bool,
    #[command(flatten)]
    security: crate::security::ServerSecurityArgs,
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    if args.workers == 0 || args.workers > 256 {
        return Err("--workers must be between 1 and 256".into());
    }
    if args.workers > 1 && !args.worker {
        return supervise(args.workers);
    }
    let rt = crate::runtime()?;
    rt.block_on(async {
        // Before anything is printed: a SIGHUP after the first line reloads, never kills.
        let mut hangups = crate::hangups()?;
        let mut drains = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            .map_err(|e| e.to_string())?;
        // What runs, to tell a reload what changed: read before anything is printed, so a
        // change made once the server is up is one.
        let running = crate::config::settings_now().map(|(values, _)| values).unwrap_or_default();
        let running = Arc::new(std::sync::Mutex::new(running));
        let (security, describe) = args.security.resolve()?;
        let mut config = ServerConfig {
            max_connections: args.max_connections,
            security,
            reuse_port: args.worker,
            memory_budget: args.memory_budget,
            max_handshakes_per_source: args.max_handshakes_per_source as usize,
            handshake_rate_per_source: args.handshake_rate_per_source,
            ..ServerConfig::default()
        };
        config.compat.keep_idle_clients = args.compat_keep_idle;
        config.connection.idle_timeout = Some(args.idle_timeout).filter(|d| !d.is_zero());
        config.connection.compress_frames = !args.no_compress;
        zs_bench::raise_fd_limit();
        let mut addrs = Vec::new();
        for a in &args.listen {
            let resolved = tokio::net::lookup_host(a.as_str())
                .await
                .map_err(|e| format!("cannot listen on {a}: {e}"))?;
            addrs.extend(resolved);
        }
        for a in &args.compat_listen {
            let resolved = tokio::net::lookup_host(a.as_str())
                .await
                .map_err(|e| format!("cannot listen for ZServer4D clients on {a}: {e}"))?;
            config.compat.listen.extend(resolved);
        }
        let listen = args.listen.iter().chain(&args.compat_listen).cloned().collect::<Vec<_>>().join(" ");
        let mut router = zs_bench::builtin_router();
        let cluster = join_cluster(&args).await?;
        let (mounted, admin_password) = mount_services(&args, &mut router, cluster.as_ref()).await?;
        if args.admin.is_some() {
            router.meter_commands();
        }
        let server = Server::bind(&addrs[..], router, config)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        // Before the first line: whoever reads it may stop the server at once.
        let signal = shutdown_signal();
        let addrs: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
        say(&format!("listening on {}", addrs.join(" ")));
        say(&describe);
        if let Some(cluster) = &cluster {
            cluster.set_addrs(if args.advertise.is_empty() { addrs.clone() } else { args.advertise.clone() });
            let server = server.clone();
            cluster.set_load(Box::new(move || {
                let s = server.stats();
                let calls = s.console_in + s.stream_in + s.direct_console_in + s.direct_stream_in;
                (server.connection_count() as u64, calls, server.is_draining())
            }));
            say(&format!("node {} of the cluster at {}", cluster.node(), args.cluster.as_deref().unwrap_or("")));
        }
        if let Some(p) = admin_password {
            say(&format!(
                "created account admin with password {p} (shown once: change it with `zs user passwd admin`)"
            ));
        }
        if !server.compat_addrs().is_empty() {
            let compat: Vec<String> = server.compat_addrs().iter().map(ToString::to_string).collect();
            say(&format!(
                "ZServer4D clients on {} (plaintext, as the original's protocol)",
                compat.join(" ")
            ));
        }
        for line in
            serve_websocket(&args, &server).await?.into_iter().chain(serve_quic(&args, &server).await?)
        {
            say(&line);
        }
        let reload: crate::admin::Reload = {
            let (running, server) = (running.clone(), server.clone());
            Arc::new(move || reload(&running, &server, &mounted))
        };
        let drain_asked: crate::admin::Drain = Arc::default();
        if let Some(addr) = &args.admin {
            let bound =
                crate::admin::start(addr, args.admin_token.clone(), server.clone(), reload.clone(), drain_asked.clone())
                    .await?;
            say(&format!("admin API on http://{bound} (/metrics, /healthz, /readyz, /api/...)"));
        }
        // A worker hears from its supervisor on stdin: a line to reload, the end to stop.
        let mut supervisor = args.worker.then(supervisor_lines);
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal, if supervisor.is_none() => break,
                line = async { supervisor.as_mut()?.recv().await }, if supervisor.is_some() => {
                    if line.is_none() {
                        break;
                    }
                }
                _ = hangups.recv() => {}
                _ = async { tokio::select! { _ = drains.recv() => {}, _ = drain_asked.notified() => {} } } => {
                    let hint = drain_hint(&args, cluster.as_ref());
                    tracing::info!("draining: clients told to move to {hint:?}, {:?} at most", args.drain_timeout);
                    let left = server.drain(&hint, args.drain_timeout).await;
                    tracing::info!("drained: {left} connection(s) were still open at the deadline");
                    if let Some(cluster) = &cluster {
                        cluster.leave().await;
                    }
                    return Ok(());
                }
            }
            for line in reload() {
                tracing::info!("reload: {line}");
            }
        }
        tracing::info!("shutting down");
        server.shutdown().await;
        if let Some(cluster) = &cluster {
            cluster.leave().await;
        }
        Ok(())
    })
}

/// Joins the cluster of `--cluster` as `--node`, if asked.
async fn join_cluster(args: &ServeArgs) -> Result<Option<Cluster>, String> {
    let Some(url) = &args.cluster else {
        if args.node.is_some() {
            return Err("--node names a node of a cluster: give --cluster too".into());
        }
        return Ok(None);
    };
    if args.workers > 1 || args.worker {
        return Err("a cluster node is one process: run it with --workers 1 (and more nodes)".into());
    }
    let node = args.node.clone().ok_or("--cluster needs --node NAME, this node's name in the cluster")?;
    let mut config = ClusterConfig::new(url.clone(), node);
    config.services = services_asked(args);
    Cluster::join(config).await.map(Some)
}

/// Where a draining node sends its clients: `--drain-hint`, else (in a cluster) the least
/// loaded other node's first address.
fn drain_hint(args: &ServeArgs, cluster: Option<&Cluster>) -> String {
    if !args.drain_hint.is_empty() {
        return args.drain_hint.clone();
    }
    let Some(cluster) = cluster else { return String::new() };
    let others = cluster.nodes().into_iter().filter(|n| n.node != cluster.node() && !n.draining);
    others.min_by_key(|n| n.connections).and_then(|n| n.addrs.first().cloned()).unwrap_or_default()
}

/// Starts the WebSocket listeners of `--ws-listen`; what to tell the operator.
async fn serve_websocket(args: &ServeArgs, server: &zs::ServerHandle) -> Result<Vec<String>, String> {
    use zs::transport::ws::{WsListener, WsSettings};
    use zs::wire::websocket::Origins;
    if args.ws_listen.is_empty() && args.wss_listen.is_empty() {
        return Ok(Vec::new());
    }
    let origins = match &args.ws_origin[..] {
        [] => Origins::SameOrigin,
        list if list.iter().any(|o| o == "*") => Origins::Any,
        list => Origins::These(list.to_vec()),
    };
    let max_message = usize::try_from(args.ws_max_message).unwrap_or(usize::MAX).max(1024);
    let settings = WsSettings { origins, max_message, reuse_port: args.worker, tls: None };
    let mut addrs = Vec::new();
    let mut lines = Vec::new();
    let wss = match args.wss_listen.is_empty() {
        true => None,
        false => {
            let (tls, line) = args.security.tls_identity()?;
            lines.push(format!("wss {line}"));
            Some(WsSettings { tls: Some(tls), ..settings.clone() })
        }
    };
    let plain = args.ws_listen.iter().map(|a| ("ws", a, &settings));
    for (scheme, a, settings) in
        plain.chain(args.wss_listen.iter().filter_map(|a| Some(("wss", a, wss.as_ref()?))))
    {
        let listeners = WsListener::bind(a.as_str(), settings.clone())
            .await
            .map_err(|e| format!("cannot listen for WebSocket clients on {a}: {e}"))?;
        for l in listeners {
            addrs.push(format!("{scheme}://{}/", server.serve(l).map_err(|e| e.to_string())?));
        }
    }
    let inside = match server.client_security() {
        zs::ClientSecurity::Plaintext => "plaintext inside",
        zs::ClientSecurity::Tls(_) => "TLS inside",
        _ => "Noise inside",
    };
    lines.insert(0, format!("WebSocket clients on {} ({inside}, as on TCP)", addrs.join(" ")));
    Ok(lines)
}

/// Starts the QUIC listeners of `--quic-listen`; what to tell the operator.
async fn serve_quic(args: &ServeArgs, server: &zs::ServerHandle) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for a in &args.quic_listen {
        let resolved = tokio::net::lookup_host(a.as_str())
            .await
            .map_err(|e| format!("cannot listen for QUIC clients on {a}: {e}"))?;
        for addr in resolved {
            let listener = zs::transport::quic::QuicListener::bind(addr)
                .map_err(|e| format!("cannot listen for QUIC clients on {addr}: {e}"))?;
            let (rcv, snd) = listener.buffer_sizes();
            let bound = server.serve(listener).map_err(|e| e.to_string())?;
            lines.push(format!("QUIC clients on quic://{bound} (UDP buffers {rcv} B in, {snd} B out)"));
        }
    }
    Ok(lines)
}

/// Runs `workers` copies of this command as worker processes on the same addresses: the
/// first picks the port (if 0 was asked), the others join it. Prints what the first printed,
/// then waits for Ctrl-C or SIGTERM and lets the workers shut down gracefully.
fn supervise(workers: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let own: Vec<String> = std::env::args().skip(2).collect(); // after `zs serve`
    let mut passed = Vec::new();
    let mut it = own.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--workers" => {
                it.next();
            }
            s if s.starts_with("--workers=") => {}
            _ => passed.push(a.clone()),
        }
    }
    let rt = crate::runtime()?;
    // Before anything is printed: a SIGHUP after the first line reloads, never kills.
    let mut hangups = {
        let _runtime = rt.enter();
        crate::hangups()?
    };
    let mut children = Vec::new();
    let first = spawn_worker(&exe, &passed, None)?;
    let (mut child, lines) = first;
    let bound: Vec<SocketAddr> = lines[0]
        .strip_prefix("listening on ")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect();
    if bound.is_empty() {
        let _ = child.kill();
        return Err(format!("the first worker said: {}", lines[0]));
    }
    children.push(child);
    for _ in 1..workers {
        match spawn_worker(&exe, &passed, Some(&bound)) {
            Ok((c, _)) => children.push(c),
            Err(e) => {
                children.iter_mut().for_each(|c| drop(c.stdin.take()));
                return Err(e);
            }
        }
    }
    let stop = {
        let _in_runtime = rt.enter(); // signal handlers need the runtime's reactor
        shutdown_signal()
    };
    say(&lines[0]);
    say(&lines[1]);
    let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
    say(&format!("workers: {workers} (pids {})", pids.join(" ")));
    rt.block_on(async {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok::<(), String>(()),
                _ = hangups.recv() => {}
            }
            // Each worker reloads its own settings when told on its stdin.
            tracing::info!("reloading {workers} workers");
            for c in &mut children {
                if let Some(stdin) = c.stdin.as_mut() {
                    let _ = stdin.write_all(b"reload\n").and_then(|()| stdin.flush());
                }
            }
        }
    })?;
    tracing::info!("stopping {workers} workers");
    // Closing their stdin is the workers' signal to shut down gracefully.
    children.iter_mut().for_each(|c| drop(c.stdin.take()));
    for mut c in children {
        let _ = c.wait();
    }
    Ok(())
}

/// Starts one worker (`listen` replaces the `--listen` arguments: the first worker's
/// addresses); returns it and the two lines it printed.
fn spawn_worker(
    exe: &std::path::Path,
    passed: &[String],
    listen: Option<&[SocketAddr]>,
) -> Result<(Child, [String; 2]), String> {
    let mut args: Vec<String> = vec!["serve".into(), "--worker".into()];
    let mut it = passed.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), listen) {
            ("--listen", Some(_)) => {
                it.next();
            }
            (s, Some(_)) if s.starts_with("--listen=") => {}
            _ => args.push(a.clone()),
        }
    }
    for a in listen.unwrap_or_default() {
        args.extend(["--listen".into(), a.to_string()]);
    }
    let mut child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no worker stdout")?);
    let mut lines = [String::new(), String::new()];
    for l in &mut lines {
        if out.read_line(l).map_err(|e| e.to_string())? == 0 {
            let _ = child.wait();
            return Err("a worker exited before it was listening".into());
        }
        *l = l.trim().to_owned();
    }
    Ok((child, lines))
}

/// The lines a worker's supervisor writes on its stdin, ending when the supervisor closes
/// it (or is gone).
fn supervisor_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The services `zs serve` mounted, for a reload to change their settings.
#[derive(Default)]
struct Mounted {
    accounts: Option<Accounts>,
    files: Option<Files>,
    push: Option<Push>,
}

/// Applies `set` to a service if it runs.
fn on_service<S>(service: &Option<S>, name: &str, set: impl FnOnce(&S)) -> Result<(), String> {
    match service {
        Some(s) => {
            set(s);
            Ok(())
        }
        None => Err(format!("the {name} service is not running")),
    }
}

/// Reads the settings again (file, environment, command line) and applies what can change
/// while running: limits, allowed clients (their file read again), the services' settings,
/// log; the answer says what changed, applied or needing a restart, one line each. A file
/// that does not check changes nothing.
fn reload(
    running: &std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>,
    server: &zs::ServerHandle,
    mounted: &Mounted,
) -> Vec<String> {
    let (now, args) = match crate::config::settings_now() {
        Ok(now) => now,
        Err(e) => return vec![format!("refused, nothing changed: {e}")],
    };
    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
    let mut said = Vec::new();
    for (key, values) in &now {
        let was = running.get(key).cloned().unwrap_or_default();
        if was == *values {
            continue;
        }
        let (old, new) = (was.join(","), values.join(","));
        let applied = match key.as_str() {
            "max_connections" => {
                server.set_max_connections(args.max_connections);
                Ok(())
            }
            "memory_budget" => {
                server.set_memory_budget(args.memory_budget);
                Ok(())
            }
            "idle_timeout" => {
                server.set_idle_timeout(Some(args.idle_timeout).filter(|d| !d.is_zero()));
                Ok(())
            }
            "log" => crate::set_log_filter(if new.is_empty() { "info" } else { &new }),
            "allow_register" => {
                on_service(&mounted.accounts, "accounts", |a| a.set_allow_register(args.allow_register))
            }
            "session_policy" => {
                on_service(&mounted.accounts, "accounts", |a| a.set_session_policy(args.session_policy))
            }
            "public_files" => on_service(&mounted.files, "files", |f| f.set_public_read(public_read(&args))),
            "quota_bytes" => on_service(&mounted.files, "files", |f| f.set_quota_bytes(args.quota_bytes)),
            "inbox_cap" => on_service(&mounted.push, "push", |p| p.set_inbox_cap(args.inbox_cap)),
            "user_push" => on_service(&mounted.push, "push", |p| p.set_send_policy(send_policy(&args))),
            // Its file is read again below, changed name or not.
            "allowed_clients" => Ok(()),
            _ => {
                said.push(format!("{key}: {old:?} -> {new:?}: needs a restart"));
                continue;
            }
        };
        match applied {
            Ok(()) => {
                if key != "allowed_clients" {
                    said.push(format!("{key}: {old:?} -> {new:?}: applied"));
                }
                running.insert(key.clone(), values.clone());
            }
            Err(e) => said.push(format!("{key}: {new:?} not applied: {e}")),
        }
    }
    said.extend(reload_allowed_clients(&args, server));
    if said.is_empty() {
        said.push("nothing changed".into());
    }
    said
}

/// Reads the allowed clients' file again and applies it if it changed.
fn reload_allowed_clients(args: &ServeArgs, server: &zs::ServerHandle) -> Option<String> {
    let allowed = match args.security.allowed_clients() {
        Ok(allowed) => allowed,
        Err(e) => return Some(format!("allowed_clients: not applied: {e}")),
    };
    let was = server.allowed_clients();
    if allowed.as_deref() == was.as_deref() {
        return None;
    }
    let count =
        |keys: Option<&[zs::Fingerprint]>| keys.map_or("any".to_string(), |k| format!("{} keys", k.len()));
    let (old, new) = (count(was.as_deref()), count(allowed.as_deref()));
    Some(match server.set_allowed_clients(allowed) {
        Ok(closed) => format!("allowed_clients: {old} -> {new}: applied, {closed} connections closed"),
        Err(e) => format!("allowed_clients: not applied: {e}"),
    })
}

/// Who reads the public file area, as the settings say.
fn public_read(args: &ServeArgs) -> PublicRead {
    if args.public_files {
        PublicRead::Everyone
    } else {
        PublicRead::LoggedIn
    }
}

/// Who may send to users, as the settings say.
fn send_policy(args: &ServeArgs) -> SendPolicy {
    if args.user_push {
        SendPolicy::LoggedIn
    } else {
        SendPolicy::Privileged
    }
}

/// Ctrl-C or SIGTERM: the handlers are in place when this returns (so a signal sent right
/// after the first line is printed stops gracefully), and the future ends at the first.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    };
    async move {
        #[cfg(unix)]
        if let (Ok(mut int), Ok(mut term)) = handlers {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn session_policy(s: &str) -> Result<SessionPolicy, String> {
    match s {
        "many" => Ok(SessionPolicy::Many),
        "kick-old" => Ok(SessionPolicy::KickOld),
        "refuse-new" => Ok(SessionPolicy::RefuseNew),
        _ => Err(format!("`{s}` is not a session policy: many, kick-old or refuse-new")),
    }
}

/// Prints a line to standard output: a server whose output nobody reads any more (a closed
/// pipe) goes on serving.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Mounts the services asked for (or the default ones) on `router`; returns the `admin`
/// password generated on first start, if one was.
/// The built-in services asked for (or the default ones).
fn services_asked(args: &ServeArgs) -> Vec<String> {
    match &args.services {
        Some(list) if list.iter().any(|s| s == "none") => Vec::new(),
        Some(list) => list.clone(),
        // Each worker is a process of its own, and a store is one process's.
        None if args.workers > 1 || args.worker => Vec::new(),
        None => zs_services::BUILTIN.iter().map(|s| s.to_string()).collect(),
    }
}

async fn mount_services(
    args: &ServeArgs,
    router: &mut Router,
    cluster: Option<&Cluster>,
) -> Result<(Mounted, Option<String>), String> {
    let names = services_asked(args);
    if let Some(other) = names.iter().find(|n| !zs_services::BUILTIN.contains(&n.as_str())) {
        let known = zs_services::BUILTIN.join(", ");
        return Err(format!("no built-in service `{other}` (there are: {known}, none)"));
    }
    let (mut generated, mut mounted) = (None, Mounted::default());
    // Each once, in the built-in order whatever the order asked: accounts comes before
    // push, which asks the accounts store whether a user exists.
    for name in zs_services::BUILTIN.iter().filter(|b| names.iter().any(|n| n == *b)) {
        match *name {
            zs_services::accounts::NAME => {
                if args.workers > 1 || args.worker {
                    return Err(
                        "the accounts service keeps its store in one process: run it with --workers 1".into(),
                    );
                }
                let dir = args.security.data_dir();
                let mut config = AccountsConfig::new(zs_services::accounts::store_dir(&dir));
                config.allow_register = args.allow_register;
                config.min_password = usize::from(args.min_password);
                config.policy = args.session_policy;
                config.admin_password = std::env::var("ZS_ADMIN_PASSWORD").ok();
                if let Some(cluster) = cluster {
                    // Tokens any node accepts: a client that moves logs in again by token.
                    config.token_authority =
                        Some(Arc::new(ClusterTokens::open(cluster.nats().clone()).await?));
                }
                if args.insecure_fast_hashing {
                    config.hash = HashCost::insecure_fast();
                }
                let (accounts, password) = Accounts::open(config).await.map_err(|e| e.to_string())?;
                mounted.accounts = Some(accounts.clone());
                router.mount(accounts);
                generated = password;
            }
            zs_services::files::NAME => {
                if args.workers > 1 || args.worker {
                    return Err(
                        "the files service keeps its index in one process: run it with --workers 1".into()
                    );
                }
                let dir = zs_services::files::files_dir(&args.security.data_dir());
                let mut config = FilesConfig::new(dir);
                config.public_read = public_read(args);
                config.quota_bytes = args.quota_bytes;
                let files = Files::open(config)?;
                mounted.files = Some(files.clone());
                router.mount(files);
            }
            zs_services::push::NAME => {
                if args.workers > 1 || args.worker {
                    return Err(
                        "the push service keeps its inbox in one process: run it with --workers 1".into()
                    );
                }
                let mut config = PushConfig::new(zs_services::push::push_dir(&args.security.data_dir()));
                config.inbox_cap = args.inbox_cap.max(1);
                config.send_policy = send_policy(args);
                // Messages are stored only for accounts that exist (when accounts are served;
                // in a cluster, accounts are each node's own: any valid name).
                if let Some(accounts) = mounted.accounts.clone().filter(|_| cluster.is_none()) {
                    config.known_user =
                        Some(Arc::new(move |user: &str| matches!(accounts.store().get(user), Ok(Some(_)))));
                }
                if let Some(cluster) = cluster {
                    config.broker = Some(Arc::new(cluster.clone()));
                    let inbox =
                        JetStreamInbox::open(cluster.nats().clone(), config.inbox_cap, config.max_ttl)
                            .await?;
                    config.inbox_store = Some(Arc::new(inbox));
                }
                let push = Push::open(config)?;
                mounted.push = Some(push.clone());
                router.mount(push);
            }
            zs_services::db::NAME => {
                if args.workers > 1 || args.worker {
                    return Err(
                        "the data store keeps its databases in one process: run it with --workers 1".into()
                    );
                }
                let db = Db::open(DbConfig::new(zs_services::db::db_dir(&args.security.data_dir())))?;
                router.mount(db);
            }
            other => return Err(format!("the built-in service `{other}` cannot be served")),
        }
    }
    if let Some(cluster) = cluster {
        router.mount(cluster.clone());
    }
    Ok((mounted, generated))
}
