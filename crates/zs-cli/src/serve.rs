//! `zs serve`.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use zs::{Server, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (a name resolving to several addresses listens on each).
    #[arg(long, default_value = "127.0.0.1:9818")]
    listen: String,
    /// Most connections held at once.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Close a connection after this many seconds without receiving anything (0 = never).
    #[arg(long, default_value = "60", value_parser = crate::seconds)]
    idle_timeout: Duration,
    #[command(flatten)]
    security: crate::security::ServerSecurityArgs,
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        let (security, describe) = args.security.resolve()?;
        let mut config =
            ServerConfig { max_connections: args.max_connections, security, ..ServerConfig::default() };
        config.connection.idle_timeout = Some(args.idle_timeout).filter(|d| !d.is_zero());
        zs_bench::raise_fd_limit();
        let server = Server::bind(args.listen.as_str(), zs_bench::builtin_router(), config)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addrs: Vec<String> = server.local_addrs().iter().map(ToString::to_string).collect();
        println!("listening on {}", addrs.join(" "));
        println!("{describe}");
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
