//! `zs cluster status`: the live nodes of a cluster, from its NATS server (no node needs to
//! be asked: their heartbeats are read for a moment).

use std::time::Duration;

use clap::{Args, Subcommand};

/// `zs cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCmd,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// List the live nodes: name, addresses, services, connections, calls per second.
    Status {
        /// The cluster's NATS server.
        #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
        cluster: String,
        /// Seconds to listen for heartbeats (nodes send one a second).
        #[arg(long, default_value = "1.5", value_parser = crate::seconds)]
        wait: Duration,
        /// One JSON object per node instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `zs cluster`.
pub fn run(args: ClusterArgs) -> Result<(), String> {
    match args.command {
        ClusterCmd::Status { cluster, wait, json } => {
            let nodes = crate::runtime()?.block_on(zs_services::cluster::status(&cluster, wait))?;
            if json {
                for n in &nodes {
                    println!("{}", serde_json::to_string(n).map_err(|e| e.to_string())?);
                }
                return Ok(());
            }
            if nodes.is_empty() {
                return Err(format!("no node of the cluster at {cluster} was heard in {wait:?}"));
            }
            println!(
                "{:<16} {:<24} {:>11} {:>9}  {:<8} services",
                "node", "address", "connections", "calls/s", "state"
            );
            for n in nodes {
                let state = if n.draining { "draining" } else { "serving" };
                let addr = n.addrs.first().cloned().unwrap_or_default();
                println!(
                    "{:<16} {:<24} {:>11} {:>9.0}  {:<8} {}",
                    n.node,
                    addr,
                    n.connections,
                    n.calls_per_sec,
                    state,
                    n.services.join(",")
                );
            }
            Ok(())
        }
    }
}
