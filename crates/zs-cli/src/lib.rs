//! `zs`: serve, call and benchmark zserver. The binary is [`main`]; [`fuzzing`] holds the
//! bodies of the fuzz targets of what it decodes.

mod admin;
mod allocator;
mod bench;
mod call;
mod cluster;
mod config;
mod connect;
mod db;
mod file;
pub mod fuzzing;
mod push;
mod security;
mod serve;
mod user;
mod xnat;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// zserver: long-connection servers that talk with named commands.
#[derive(Parser)]
#[command(name = "zs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the built-in commands (echo, echo_stream, sink, stats) until Ctrl-C.
    Serve(serve::ServeArgs),
    /// Call a command on a server and print the reply.
    Call(call::CallArgs),
    /// Run a benchmark against our server and the floor, side by side.
    Bench(bench::BenchArgs),
    /// Write a server key pair (Noise) or a self-signed certificate (TLS).
    Keygen(security::KeygenArgs),
    /// Manage accounts: add, list, passwd, disable, enable, del.
    User(user::UserArgs),
    /// Files on a server: ls, stat, put, get, rm, mv, mkdir.
    File(file::FileArgs),
    /// Send a command to a user: live to its connections, else into its offline inbox.
    Push(push::PushArgs),
    /// List (and with --ack remove) the logged-in user's waiting messages.
    Inbox(push::InboxArgs),
    /// The data store: create, ls, info, put, get, del, query, watch, bulk, index, copy,
    /// compact, drop (JSON in and out).
    Db(db::DbArgs),
    /// Expose TCP services behind NAT through a public server: xnat server | agent.
    Xnat(xnat::XnatArgs),
    /// The configuration file of `zs serve`: config check FILE | config example.
    Config(config::ConfigArgs),
    /// A cluster of nodes joined through NATS: cluster status.
    Cluster(cluster::ClusterArgs),
    /// Ask a running server's admin listener: admin drain.
    Admin(admin::AdminArgs),
}

/// Runs `zs` with this process's arguments.
pub fn main() -> ExitCode {
    allocator::limit_arenas();
    // `zs serve --config FILE` and ZS_* variables: their settings become flags.
    let argv = match config::serve_argv(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    init_logs(&cli);
    // Servers and clients alike: long transfers leave glibc holding memory, and a later
    // 1 GiB download in the same process then took 2.5x the CPU (`zs bench files`).
    allocator::spawn_trimmer();
    let result = match cli.command {
        Cmd::Serve(a) => serve::run(a),
        Cmd::Call(a) => call::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Keygen(a) => security::keygen(a),
        Cmd::User(a) => user::run(a),
        Cmd::File(a) => file::run(a),
        Cmd::Push(a) => push::push(a),
        Cmd::Inbox(a) => push::inbox(a),
        Cmd::Db(a) => db::db(a),
        Cmd::Xnat(a) => xnat::run(a),
        Cmd::Config(a) => config::run(a),
        Cmd::Cluster(a) => cluster::run(a),
        Cmd::Admin(a) => admin::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How a long-running command logs (`zs serve`, `zs xnat`).
#[derive(clap::Args, Clone)]
pub struct LogArgs {
    /// Log format on standard error: pretty (for people) or json (one object per line, for
    /// log collectors).
    #[arg(long, default_value = "pretty", value_parser = ["pretty", "json"])]
    log_format: String,
    /// What to log: a level (error, warn, info, debug, trace) or directives per module, e.g.
    /// `info,zs=debug` (debug shows a line per connection opened and closed). Default:
    /// $RUST_LOG, else info.
    #[arg(long, value_name = "FILTER", value_parser = log_filter)]
    log: Option<String>,
}

/// Checks a log filter as `--log` takes it.
fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|e| format!("`{s}`: {e}"))
}

/// Logs to standard error: `--log` and `--log-format` of the commands that take them, else
/// `RUST_LOG` (or info) in the pretty format.
fn init_logs(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let logs = match &cli.command {
        Cmd::Serve(a) => Some(&a.logs),
        Cmd::Xnat(a) => Some(a.logs()),
        _ => None,
    };
    let (json, directives) = logs.map_or((false, None), |l| (l.log_format == "json", l.log.clone()));
    let filter = directives
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| "info,tarpc=warn".into());
    // The filter can be swapped while running (`zs serve`'s reload).
    let swap = |reload: SwapFilter| {
        let _ = LOG_FILTER.set(reload);
    };
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if json {
        let logs = logs.json().with_env_filter(filter).with_filter_reloading();
        let handle = logs.reload_handle();
        swap(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        logs.init();
    } else {
        let logs = logs.with_env_filter(filter).with_filter_reloading();
        let handle = logs.reload_handle();
        swap(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        logs.init();
    }
}

/// Replaces a log filter.
type SwapFilter = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the log filter of the running process.
static LOG_FILTER: std::sync::OnceLock<SwapFilter> = std::sync::OnceLock::new();

/// Applies a log filter (`--log` directives) to the running process.
fn set_log_filter(directives: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
    LOG_FILTER.get().ok_or("logs are not set up")?(filter)
}

/// SIGHUP, which asks for the settings to be read again.
fn hangups() -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())
}

/// A multi-thread runtime for a command.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
}

/// Parses a duration in seconds (fractions allowed).
fn seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` is not a number of seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}
