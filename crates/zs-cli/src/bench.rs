//! `zs bench`.

use std::time::Duration;

use clap::{Args, Subcommand};
use zs_bench::{bulk, churn, cluster, db, fanout, files, idle, login, mux, push, resume, rpc, Secure};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

/// What `rpc` and `rpc-open` share.
#[derive(Args)]
struct RpcArgs {
    /// Connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds per measured entry.
    #[arg(long, default_value = "5", value_parser = crate::seconds)]
    duration: Duration,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Rounds (each entry reports its median round).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// How our server is secured: none, noise or tls (a secured run also measures our
    /// plaintext server, for the cost of security in the same run).
    #[arg(long, default_value = "none")]
    secure: Secure,
    /// Also drive our server with a guard that lets every call through, in each round:
    /// what a guard costs, in the same run.
    #[arg(long)]
    guard: bool,
    /// Also drive our server with every command metered (what `zs serve --admin` turns
    /// on): what metering costs, in the same run.
    #[arg(long)]
    metered: bool,
    /// Also drive our Client over the server's WebSocket (`ws`) or QUIC (`quic`) listener,
    /// against TCP in the same run.
    #[arg(long, default_value = "tcp")]
    transport: zs_bench::Via,
    /// Drive only the floor and this one of ours (`ours`, `client` or `batches`), to profile
    /// it: the others (and tarpc) report zero.
    #[arg(long)]
    only: Option<rpc::Entry>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

impl RpcArgs {
    /// Checks the arguments and runs the scenario (`rate`: open loop).
    fn run(&self, depth: usize, rate: Option<f64>) -> Result<(), String> {
        check("connections", self.connections, 5_000)?;
        check("depth", depth, 1_024)?;
        check("payload", self.payload, 1 << 20)?;
        check("rounds", self.rounds, 20)?;
        if rate.is_some_and(|r| !(1.0..=10_000_000.0).contains(&r)) {
            return Err("--rate must be between 1 and 10,000,000 requests per second".into());
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(600) {
            return Err("--duration must be between 0 and 600 seconds".into());
        }
        zs_bench::raise_fd_limit();
        let report = rpc::run(rpc::RpcOptions {
            connections: self.connections,
            depth,
            payload: self.payload,
            duration: self.duration,
            rounds: self.rounds,
            secure: self.secure,
            rate,
            guard: self.guard,
            metered: self.metered,
            transport: self.transport,
            only: self.only,
        })?;
        print(self.json, &report, || rpc::table(&report))
    }

    /// The expected run time: each entry, each round.
    fn expected(&self) -> Duration {
        let entries =
            if self.secure == Secure::None { 4 } else { 5 } + u32::from(self.guard) + u32::from(self.metered);
        self.duration * (entries * self.rounds as u32)
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Closed-loop echo calls: ours against a plain tokio echo (the floor) in the same run.
    Rpc {
        /// Calls in flight per connection.
        #[arg(long, default_value_t = 8)]
        depth: usize,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Echo calls at a fixed arrival rate, each timed from when it was due (no coordinated
    /// omission): ours, the floor and tarpc in the same run.
    RpcOpen {
        /// Requests per second in all.
        #[arg(long, default_value_t = 100_000.0)]
        rate: f64,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Big streams against a plain tokio TCP copy of the same bytes, in the same run.
    Bulk {
        /// Bytes per stream (suffixes K, M, G for KiB, MiB, GiB).
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// Streams, all at once.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Connections the streams are spread over.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Run our server as its own `zs serve` process, to measure its memory apart.
        #[arg(long)]
        server_process: bool,
        /// How our server is secured: none, noise or tls (a secured run also measures our
        /// plaintext server, for the cost of security in the same run).
        #[arg(long, default_value = "none")]
        secure: Secure,
        /// How our streams are checked end to end: xxh3 (the default) or blake3.
        #[arg(long, default_value = "xxh3", value_parser = stream_check)]
        check: zs::StreamCheck,
        /// Run only `ours` or only the `floor` (every raw copy), to profile it: the rest
        /// reports zero.
        #[arg(long)]
        only: Option<zs_bench::Part>,
        /// With --secure: secured and plaintext runs alternated this many times, the ratio
        /// their median.
        #[arg(long, default_value_t = 1)]
        pairs: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hold idle connections and report the server's memory per connection.
    Idle {
        /// Connections to hold.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Client processes (each holds at most 20,000 open files).
        #[arg(long, default_value_t = 2)]
        procs: usize,
        /// How the server is secured: none, noise or tls.
        #[arg(long, default_value = "none")]
        secure: Secure,
        /// Server processes sharing the port (each holds at most 20,000 open files).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Loopback addresses (127.0.0.1 up) to spread connections over, so ephemeral
        /// ports (about 28,000 per address) do not run out.
        #[arg(long, default_value_t = 1)]
        addrs: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Connections opened, used for one call and closed per second: ours (plaintext and
    /// secured) against a tokio echo; and the server's memory before and after.
    Churn {
        /// Seconds per measured entry.
        #[arg(long, default_value = "3", value_parser = crate::seconds)]
        duration: Duration,
        /// Connect-call-close loops at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Loopback addresses (127.0.0.1 up) to spread connections over.
        #[arg(long, default_value_t = 8)]
        addrs: usize,
        /// Source addresses (127.0.1.1 up) the loops connect from, as that many clients
        /// would: a server limits the handshakes each source starts per second.
        #[arg(long, default_value_t = 64)]
        sources: usize,
        /// The secured entry: noise, tls, or none to skip it.
        #[arg(long, default_value = "noise")]
        secure: Secure,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One message broadcast to N peers, repeatedly: deliveries per second for ours, a
    /// floor, and NATS where nats-server is installed.
    Fanout {
        /// Subscribed peers.
        #[arg(long, default_value_t = 1000)]
        peers: usize,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds per measured entry.
        #[arg(long, default_value = "3", value_parser = crate::seconds)]
        duration: Duration,
        /// Messages in flight (published, not yet delivered to every peer).
        #[arg(long, default_value_t = 32)]
        window: u64,
        /// Run only `ours` or only the `floor`, to profile it (the rest report zero).
        #[arg(long)]
        only: Option<zs_bench::Part>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A resumable session whose link is cut N times during traffic both ways: messages
    /// lost or duplicated (must be 0), resume times; then the session layer's cost when
    /// nothing drops (rpc and bulk, sessions on against off).
    Resume {
        /// Links cut.
        #[arg(long, default_value_t = 100)]
        disconnects: usize,
        /// Numbered messages each way between two cuts.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// The secure channel: noise or tls.
        #[arg(long, default_value = "noise")]
        secure: Secure,
        /// Seconds per rpc run of the cost comparison (0 skips it).
        #[arg(long, default_value = "3", value_parser = crate::seconds)]
        cost_duration: Duration,
        /// Bytes of the bulk run of the cost comparison.
        #[arg(long, default_value_t = 1 << 30)]
        cost_size: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The file service: a big file uploaded and downloaded against a plain TCP send of
    /// the same file (plaintext and secured), a download over several connections, and
    /// many small downloads at once with the server's memory watched.
    Files {
        /// Bytes of the big file, e.g. 1G.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// Rounds of the big-file comparison (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Connection counts of the multi-connection download, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        connections: Vec<usize>,
        /// Small downloads at once (0 skips them).
        #[arg(long, default_value_t = 1000)]
        small: usize,
        /// Bytes of each small download.
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        small_size: u64,
        /// The secured entry: noise, tls, or none to skip it.
        #[arg(long, default_value = "noise")]
        secure: Secure,
        /// Where the files and the servers' data go (default: /dev/shm when there is one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The data store: durable inserts against raw redb with the same batching, streamed
    /// scan rows against a raw redb iteration, a predicate query over every record.
    Db {
        /// Records in the scanned and queried database.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Durable single-record inserts measured.
        #[arg(long, default_value_t = 50_000)]
        inserts: usize,
        /// Inserts in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Scan rounds (ours and raw redb in turns; medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Run the server with --no-compress.
        #[arg(long)]
        no_compress: bool,
        /// Where the data goes (default: /dev/shm when there is one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The push service: live deliveries to logged-in users (a topic of all against the
    /// fan-out floor, and one send per user), and durable inbox stores against raw redb
    /// commits of the same batches.
    Push {
        /// Logged-in users, one connection each.
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds per live entry.
        #[arg(long, default_value = "3", value_parser = crate::seconds)]
        duration: Duration,
        /// Topic messages in flight (published, not yet delivered to every user).
        #[arg(long, default_value_t = 32)]
        window: u64,
        /// Messages stored in the inbox entry.
        #[arg(long, default_value_t = 20_000)]
        stores: usize,
        /// Stores in flight at once.
        #[arg(long, default_value_t = 256)]
        store_concurrency: usize,
        /// Where the server's data goes (default: /dev/shm when there is one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A cluster of three nodes and a NATS server on this box: push deliveries across nodes
    /// vs within one, presence convergence, and failover time after a node is killed.
    Cluster {
        /// Receiving users (on the first node).
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        /// Seconds per delivery entry.
        #[arg(long, default_value = "3", value_parser = crate::seconds)]
        duration: Duration,
        /// `push.send` calls in flight.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
        /// Users joining a topic on two nodes (presence entry).
        #[arg(long, default_value_t = 1_000)]
        joiners: usize,
        /// Failover clients of the node that is killed.
        #[arg(long, default_value_t = 1_000)]
        failover_clients: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// XNat: bytes through `zs xnat server` and `agent` (processes), beside rathole and
    /// beside the direct connection, over 1 and 8 streams, plaintext and Noise.
    Xnat {
        /// Bytes per run, split over the streams, e.g. 1G.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// Stream counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        streams: Vec<usize>,
        /// Runs per entry (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Quiet visitors held at once for the memory entry (0 skips it). rathole's server
        /// holds two sockets per visitor, so 20,000 files per process allow about 9,000.
        #[arg(long, default_value_t = 8000)]
        held: usize,
        /// Pooled data connections our agent keeps (its `pool`; 0 is measured anyway as
        /// the channel column).
        #[arg(long, default_value_t = zs_services::xnat::DEFAULT_POOL)]
        pool: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A burst of password logins (argon2id at its documented cost) against `zs serve`:
    /// logins per second, and echo-call latency on other connections with no logins
    /// running and during the burst.
    Login {
        /// Logins in the burst.
        #[arg(long, default_value_t = 1000)]
        logins: usize,
        /// Connections the logins are spread over.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Accounts the logins are spread over.
        #[arg(long, default_value_t = 32)]
        accounts: usize,
        /// Connections making echo calls beside the burst.
        #[arg(long, default_value_t = 4)]
        probes: usize,
        /// Milliseconds between two echo calls of one probe.
        #[arg(long, default_value_t = 1)]
        probe_interval_ms: u64,
        /// Seconds the probes run before the burst.
        #[arg(long, default_value = "3", value_parser = crate::seconds)]
        idle: Duration,
        /// How the server is secured: noise, tls or none.
        #[arg(long, default_value = "noise")]
        secure: Secure,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Virtual channels over one connection: bytes per held channel (both ends), one
    /// channel's bulk throughput against plain TCP and tokio-yamux, and 64-byte calls on one
    /// channel while another saturates the link.
    Mux {
        /// Channels held at once for the memory figure (0 skips it).
        #[arg(long, default_value_t = 100_000)]
        channels: usize,
        /// Bytes per bulk transfer, e.g. 1G (0 skips the comparison).
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// Calls timed alone and beside the saturating channel (0 skips it).
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The ZServer4D listener: connections held (≥ 10,000) and their memory, and console
    /// calls per second on one connection and over many, against the original's figures.
    Compat {
        /// ZServer4D connections held at once.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Console calls timed on one connection, and again over `--parallel` connections.
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// Connections calling at once for the aggregate figure.
        #[arg(long, default_value_t = 100)]
        parallel: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Turn a folder of `--json` results into SVG charts.
    Report {
        /// Folder of results (one JSON object per file).
        #[arg(long, default_value = "docs/results")]
        input: std::path::PathBuf,
        /// Folder for the charts.
        #[arg(long, default_value = "docs/charts")]
        output: std::path::PathBuf,
    },
    /// (internal) The client process of `zs bench idle`.
    #[command(hide = true)]
    IdleClient {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        connections: usize,
        #[arg(long, default_value = "none")]
        secure: Secure,
        #[arg(long, allow_hyphen_values = true)]
        server_key: Option<zs::Fingerprint>,
        #[arg(long)]
        floor: bool,
        /// The source address of its connections (plaintext).
        #[arg(long)]
        source: Option<std::net::IpAddr>,
    },
    /// (internal) The floor server process of `zs bench idle` and `churn`.
    #[command(hide = true)]
    FloorServer {
        #[arg(long, default_value_t = 1)]
        addrs: usize,
    },
    /// (internal) The fan-out floor server process of `zs bench push`.
    #[command(hide = true)]
    FanoutFloorServer {
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 1000)]
        peers: usize,
    },
}

/// Parses `--check`: xxh3 or blake3.
fn stream_check(s: &str) -> Result<zs::StreamCheck, String> {
    match s {
        "xxh3" => Ok(zs::StreamCheck::Xxh3),
        "blake3" => Ok(zs::StreamCheck::Blake3),
        _ => Err(format!("`{s}` is not a check: xxh3 or blake3")),
    }
}

/// Parses a byte count with an optional K, M or G suffix (binary units).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.trim().to_ascii_uppercase().chars().last() {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 =
        digits.trim().parse().map_err(|_| format!("`{s}` is not a size (e.g. 4096, 64K, 16M, 1G)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("`{s}` is too large"))
}

fn check(what: &str, v: usize, max: usize) -> Result<(), String> {
    if v == 0 || v > max {
        return Err(format!("--{what} must be between 1 and {max}, not {v}"));
    }
    Ok(())
}

fn print(json: bool, value: &impl serde::Serialize, table: impl FnOnce() -> String) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string(value).map_err(|e| e.to_string())?);
    } else {
        println!("{}", table());
    }
    Ok(())
}

/// A progress bar on stderr while a scenario runs (hidden when stderr is not a terminal):
/// against the expected time where the scenario is bounded by its duration, elapsed time
/// otherwise.
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn start(scenario: &str, expected: Option<Duration>) -> Progress {
        let bar = match expected {
            Some(d) => {
                let bar = indicatif::ProgressBar::new(d.as_millis() as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {elapsed} of about {len}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .with_key("len", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{}s", s.len().unwrap_or(0) / 1000);
                        }),
                );
                bar
            }
            None => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar
            }
        };
        bar.set_message(format!("zs bench {scenario}"));
        bar.enable_steady_tick(Duration::from_millis(200));
        let ticker = bar.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !ticker.is_finished() {
                ticker.set_position(start.elapsed().as_millis() as u64);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Progress { bar }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    let _progress = match &args.scenario {
        Scenario::Rpc { common, .. } => Some(Progress::start("rpc", Some(common.expected()))),
        Scenario::RpcOpen { common, .. } => Some(Progress::start("rpc-open", Some(common.expected()))),
        Scenario::Churn { duration, .. } => Some(Progress::start("churn", Some(*duration * 3))),
        Scenario::Fanout { duration, .. } => Some(Progress::start("fanout", Some(*duration * 3))),
        Scenario::Bulk { .. } => Some(Progress::start("bulk", None)),
        Scenario::Idle { .. } => Some(Progress::start("idle", None)),
        Scenario::Resume { .. } => Some(Progress::start("resume", None)),
        Scenario::Mux { .. } => Some(Progress::start("mux", None)),
        Scenario::Login { .. } => Some(Progress::start("login", None)),
        Scenario::Files { .. } => Some(Progress::start("files", None)),
        Scenario::Push { .. } => Some(Progress::start("push", None)),
        Scenario::Cluster { .. } => Some(Progress::start("cluster", None)),
        Scenario::Db { .. } => Some(Progress::start("db", None)),
        Scenario::Xnat { .. } => Some(Progress::start("xnat", None)),
        Scenario::Compat { .. } => Some(Progress::start("compat", None)),
        _ => None,
    };
    match args.scenario {
        Scenario::Rpc { depth, common } => common.run(depth, None),
        Scenario::RpcOpen { rate, common } => common.run(1, Some(rate)),
        Scenario::Bulk {
            size,
            streams,
            connections,
            server_process,
            secure,
            check: stream,
            only,
            pairs,
            json,
        } => {
            check("streams", streams, 10_000)?;
            check("pairs", pairs, 50)?;
            check("connections", connections, 1_000)?;
            if size == 0 || size.saturating_mul(streams as u64) > 1 << 40 {
                return Err("--size times --streams must be between 1 byte and 1 TiB".into());
            }
            zs_bench::raise_fd_limit();
            let place = if server_process {
                bulk::ServerPlace::Process(std::env::current_exe().map_err(|e| e.to_string())?)
            } else {
                bulk::ServerPlace::InProcess
            };
            let opts = bulk::BulkOptions { size, streams, connections, secure, check: stream, only, pairs };
            let r = bulk::run(opts, place)?;
            print(json, &r, || bulk::table(&r))
        }
        Scenario::Idle { connections, procs, secure, workers, addrs, json } => {
            check("connections", connections, 1_000_000)?;
            check("procs", procs, 200)?;
            if connections / procs > 19_000 {
                return Err(format!(
                    "{connections} connections over {procs} processes exceeds 19,000 per process"
                ));
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let r = idle::run(idle::IdleOptions { connections, procs, secure, workers, addrs }, &exe)?;
            print(json, &r, || {
                format!(
                    "idle ({}): held {} of {} connections ({} server processes, {} client processes, {} addresses) in {:.1} s ({:.0}/s)\n\
                     server RSS {:.1} MB -> {:.1} MB: {:.0} bytes per connection\n\
                     floor (tokio echo holding no buffer): {:.0} bytes per connection over {} connections\n\
                     ratio ours/floor: {:.2}\n\
                     kernel slab (both socket ends, machine-wide): {:.0} bytes per connection\n\
                     TCP socket memory: {} pages held, limit {} (net.ipv4.tcp_mem){}",
                    r.secure.name(),
                    r.held,
                    r.connections,
                    r.workers,
                    r.procs,
                    r.addrs,
                    r.establish_s,
                    r.connects_per_s,
                    r.server_rss_before as f64 / 1e6,
                    r.server_rss_after as f64 / 1e6,
                    r.server_rss_bytes_per_conn,
                    r.floor_rss_bytes_per_conn,
                    r.floor_held,
                    r.ratio,
                    r.kernel_slab_bytes_per_conn,
                    r.tcp_mem_pages,
                    r.tcp_mem_limit_pages,
                    r.first_error.as_ref().map(|e| format!("\nnot all held; the first error: {e}")).unwrap_or_default()
                )
            })
        }
        Scenario::IdleClient { addr, connections, secure, server_key, floor, source } => {
            let security = secure.client(server_key)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(idle::client(&addr, connections, security, floor, source))
        }
        Scenario::Churn { duration, concurrency, addrs, sources, secure, json } => {
            check("concurrency", concurrency, 4_096)?;
            check("addrs", addrs, 250)?;
            check("sources", sources, 250)?;
            if duration.is_zero() || duration > Duration::from_secs(600) {
                return Err("--duration must be between 0 and 600 seconds".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let r = churn::run(churn::ChurnOptions { duration, concurrency, addrs, sources, secure }, &exe)?;
            print(json, &r, || churn::table(&r))
        }
        Scenario::Fanout { peers, payload, duration, window, only, json } => {
            check("peers", peers, 8_000)?;
            check("payload", payload, 1 << 20)?;
            if duration.is_zero() || duration > Duration::from_secs(600) || window == 0 {
                return Err("--duration must be between 0 and 600 seconds, --window at least 1".into());
            }
            let r = fanout::run(fanout::FanoutOptions { peers, payload, duration, window, only })?;
            print(json, &r, || fanout::table(&r))
        }
        Scenario::Resume { disconnects, messages, secure, cost_duration, cost_size, json } => {
            check("disconnects", disconnects, 100_000)?;
            check("messages", messages, 100_000)?;
            if cost_duration > Duration::from_secs(600) || cost_size == 0 || cost_size > 1 << 36 {
                return Err(
                    "--cost-duration must be at most 600 s, --cost-size between 1 byte and 64 GiB".into()
                );
            }
            let opts = resume::ResumeOptions { disconnects, messages, secure, cost_duration, cost_size };
            let r = resume::run(opts)?;
            print(json, &r, || resume::table(&r))
        }
        Scenario::Files { size, rounds, connections, small, small_size, secure, dir, json } => {
            check("rounds", rounds, 100)?;
            if size == 0 || size > 1 << 36 || small > 10_000 || small_size > 1 << 30 {
                return Err("--size must be between 1 byte and 64 GiB, --small at most 10,000, --small-size at most 1 GiB".into());
            }
            if connections.iter().any(|&n| n == 0 || n > 16) {
                return Err("--connections must each be between 1 and 16".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let opts = files::FilesOptions { size, rounds, connections, small, small_size, secure, dir };
            let r = files::run(opts, &exe)?;
            print(json, &r, || files::table(&r))
        }
        Scenario::Db { records, inserts, concurrency, rounds, no_compress, dir, json } => {
            check("records", records, 100_000_000)?;
            check("inserts", inserts, 10_000_000)?;
            check("concurrency", concurrency, 4_096)?;
            check("rounds", rounds, 100)?;
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let opts = db::DbOptions { records, inserts, concurrency, rounds, dir, no_compress };
            let r = db::run(opts, &exe)?;
            print(json, &r, || db::table(&r))
        }
        Scenario::Push { users, payload, duration, window, stores, store_concurrency, dir, json } => {
            check("users", users, 15_000)?;
            check("payload", payload, 64 << 10)?;
            check("stores", stores, 10_000_000)?;
            check("store-concurrency", store_concurrency, 4_096)?;
            if duration.is_zero() || duration > Duration::from_secs(600) || window == 0 {
                return Err("--duration must be between 0 and 600 seconds, --window at least 1".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let opts = push::PushOptions { users, payload, duration, window, stores, store_concurrency, dir };
            let r = push::run(opts, &exe)?;
            print(json, &r, || push::table(&r))
        }
        Scenario::Cluster { users, duration, in_flight, joiners, failover_clients, json } => {
            check("users", users, 15_000)?;
            check("in-flight", in_flight, 4_096)?;
            check("joiners", joiners, 15_000)?;
            check("failover-clients", failover_clients, 15_000)?;
            if duration.is_zero() || duration > Duration::from_secs(600) {
                return Err("--duration must be between 0 and 600 seconds".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let opts = cluster::ClusterOptions { users, duration, in_flight, joiners, failover_clients };
            let r = cluster::run(opts, &exe)?;
            print(json, &r, || cluster::table(&r))
        }
        Scenario::Xnat { size, streams, rounds, held, pool, json } => {
            check("rounds", rounds, 100)?;
            if size == 0 || size > 1 << 36 || streams.iter().any(|&n| n == 0 || n > 1024) {
                return Err("--size must be between 1 byte and 64 GiB, --streams each 1 to 1,024".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            if held > 9_000 {
                return Err("--held is at most 9,000 (20,000 files per process)".into());
            }
            let r =
                zs_bench::xnat::run(zs_bench::xnat::XnatOptions { size, streams, rounds, held, pool }, &exe)?;
            print(json, &r, || zs_bench::xnat::table(&r))
        }
        Scenario::Login { logins, connections, accounts, probes, probe_interval_ms, idle, secure, json } => {
            check("logins", logins, 1_000_000)?;
            check("connections", connections, 4_096)?;
            check("accounts", accounts, 100_000)?;
            check("probes", probes, 1_000)?;
            if !(1..=1_000).contains(&probe_interval_ms) || idle > Duration::from_secs(600) {
                return Err("--probe-interval-ms must be between 1 and 1000, --idle at most 600 s".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let probe_interval = Duration::from_millis(probe_interval_ms);
            let opts =
                login::LoginOptions { logins, connections, accounts, probes, probe_interval, idle, secure };
            let r = login::run(opts, &exe)?;
            print(json, &r, || login::table(&r))
        }
        Scenario::Mux { channels, size, calls, json } => {
            if channels > 1_000_000 || calls > 1_000_000 || size > 1 << 36 {
                return Err(
                    "--channels and --calls must be at most 1,000,000, --size at most 64 GiB (0 skips)"
                        .into(),
                );
            }
            let r = mux::run(mux::MuxOptions { channels, size, calls })?;
            print(json, &r, || mux::table(&r))
        }
        Scenario::Compat { connections, calls, parallel, json } => {
            if connections > 18_000 || calls > 10_000_000 || parallel == 0 {
                return Err("--connections must be at most 18,000 (open files per process), --calls at most 10,000,000, --parallel at least 1".into());
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let r = zs_bench::compat::run(
                zs_bench::compat::CompatOptions { connections, calls, parallel },
                &exe,
            )?;
            print(json, &r, || zs_bench::compat::table(&r))
        }
        Scenario::Report { input, output } => {
            for path in zs_bench::report::run(&input, &output)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Scenario::FloorServer { addrs } => crate::runtime()?.block_on(idle::floor_server(addrs)),
        Scenario::FanoutFloorServer { payload, peers } => crate::runtime()?.block_on(async move {
            zs_bench::raise_fd_limit();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
            println!("listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
            use std::io::Write;
            let _ = std::io::stdout().flush();
            zs_bench::floor::fanout_server(listener, peers, payload).await
        }),
    }
}
