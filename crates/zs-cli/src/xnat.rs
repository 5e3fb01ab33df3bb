//! `zs xnat server --config FILE` (the public side) and `zs xnat agent --config FILE` (the
//! side inside the private network): expose TCP services behind NAT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use zs::secure::{NoiseClient, NoiseServer};
use zs::{ClientConfig, ClientSecurity, KeyPair, ServerSecurity, Trust};
use zs_services::xnat::{
    run_agent, AgentFile, AgentHandle, AgentService, LocalService, Protocol, ServerFile, Target, XnatServer,
};

/// `zs xnat`.
#[derive(Args)]
pub struct XnatArgs {
    #[command(subcommand)]
    command: XnatCommand,
}

#[derive(Subcommand)]
enum XnatCommand {
    /// The public server: agents connect to it, visitors to its services' addresses.
    Server {
        /// The server's TOML file (examples/xnat/server.toml).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        logs: crate::LogArgs,
    },
    /// The agent inside the private network: connects out and serves local addresses.
    Agent {
        /// The agent's TOML file (examples/xnat/agent.toml).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        logs: crate::LogArgs,
    },
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl XnatArgs {
    /// How it logs.
    pub fn logs(&self) -> &crate::LogArgs {
        match &self.command {
            XnatCommand::Server { logs, .. } | XnatCommand::Agent { logs, .. } => logs,
        }
    }
}

pub fn run(args: XnatArgs) -> Result<(), String> {
    crate::runtime()?.block_on(async move {
        match args.command {
            XnatCommand::Server { config, .. } => server(&config).await,
            XnatCommand::Agent { config, .. } => agent(&config).await,
        }
    })
}

async fn server(path: &PathBuf) -> Result<(), String> {
    // Before anything is printed: a SIGHUP after the first line reloads, never kills.
    let mut hangups = crate::hangups()?;
    let file = ServerFile::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    let (security, line) = if file.plaintext {
        (ServerSecurity::Plaintext, "security: plaintext (no encryption)".to_owned())
    } else {
        let dir = file.data_dir.clone().unwrap_or_else(crate::security::default_data_dir);
        let key_path = dir.join("xnat-server.key");
        let (key, _) =
            KeyPair::load_or_create(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let line = format!("server key: {} (Noise, {})", key.public(), key_path.display());
        (ServerSecurity::Noise(NoiseServer { key: Some(key), allowed_clients: None }), line)
    };
    let server = XnatServer::start(&file, security).await?;
    println!("listening on {}", server.control_addr());
    println!("{line}");
    println!("data connections on port {}", server.data_port());
    for s in server.stats() {
        println!("service {} on {}", s.name, s.public);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = hangups.recv() => {
                match read(path).and_then(|t| ServerFile::parse(&t)) {
                    Ok(file) => {
                        for line in server.reload(&file).await {
                            tracing::info!("reload: {line}");
                        }
                    }
                    Err(e) => tracing::warn!("reload refused, nothing changed: {}: {e}", path.display()),
                }
            }
            _ = every.tick() => {
                for s in server.stats() {
                    tracing::info!(service = %s.name, agents = s.agents, visitors_now = s.visitors_now,
                        visitors = s.visitors, refused = s.refused, bytes_in = s.bytes_in, bytes_out = s.bytes_out,
                        pooled_visits = s.pooled_visits, pooled_ready = s.pooled_ready, "xnat");
                }
            }
        }
    }
    server.shutdown().await;
    Ok(())
}

/// Where the agent connects, and how: its main server and any `more_servers`.
async fn targets(file: &AgentFile) -> Result<Vec<(SocketAddr, ClientConfig)>, String> {
    let key = match &file.key_file {
        Some(p) => Some(KeyPair::load(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let mut all = vec![(file.server.clone(), file.server_key.clone())];
    all.extend(file.more_servers.iter().map(|m| (m.server.clone(), m.server_key.clone())));
    let mut out = Vec::new();
    for (server, server_key) in all {
        let addr = tokio::net::lookup_host(&server)
            .await
            .map_err(|e| format!("{server}: {e}"))?
            .next()
            .ok_or_else(|| format!("{server}: no address"))?;
        let security = if file.plaintext {
            ClientSecurity::Plaintext
        } else {
            let pinned = server_key
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("{server}: server_key: {e}"))?;
            ClientSecurity::Noise(NoiseClient {
                trust: Trust::Pinned(vec![pinned]),
                key: key.clone(),
                ..NoiseClient::default()
            })
        };
        out.push((addr, ClientConfig::secured(security)));
    }
    Ok(out)
}

async fn agent(path: &PathBuf) -> Result<(), String> {
    let mut hangups = crate::hangups()?;
    let file = AgentFile::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    let targets = targets(&file).await?;
    // One link per service and server, so that a reload adds or removes one service without
    // touching the others' visitors, and each server is served on its own.
    let mut running: BTreeMap<String, (LocalService, Vec<AgentHandle>)> = BTreeMap::new();
    for (name, service) in &file.services {
        running.insert(name.clone(), (service.clone(), start(&targets, name, service)));
    }
    let servers: Vec<String> = targets.iter().map(|(a, _)| a.to_string()).collect();
    println!("agent of {}: {} service(s)", servers.join(", "), file.services.len());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = hangups.recv() => {
                let new = match read(path).and_then(|t| AgentFile::parse(&t)) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!("reload refused, nothing changed: {}: {e}", path.display());
                        continue;
                    }
                };
                if (&new.server, &new.server_key, new.plaintext, &new.key_file, &new.more_servers)
                    != (&file.server, &file.server_key, file.plaintext, &file.key_file, &file.more_servers)
                {
                    tracing::warn!("reload: the servers, their keys, plaintext or key_file changed: needs a restart");
                }
                let names: Vec<String> = running.keys().cloned().collect();
                for name in names {
                    if new.services.get(&name) != running.get(&name).map(|(s, _)| s) {
                        if let Some((_, agents)) = running.remove(&name) {
                            for a in agents {
                                a.stop().await;
                            }
                            tracing::info!("reload: service {name} stopped");
                        }
                    }
                }
                for (name, service) in &new.services {
                    if !running.contains_key(name) {
                        running.insert(name.clone(), (service.clone(), start(&targets, name, service)));
                        tracing::info!("reload: service {name} started ({})", service.local);
                    }
                }
            }
        }
    }
    for (_, (_, agents)) in running {
        for a in agents {
            a.stop().await;
        }
    }
    Ok(())
}

fn start(targets: &[(SocketAddr, ClientConfig)], name: &str, s: &LocalService) -> Vec<AgentHandle> {
    let service = AgentService {
        name: name.to_owned(),
        target: Target::Local(s.local.clone()),
        token: s.token.clone(),
        udp: s.protocol == Protocol::Udp,
        pool: s.pool,
    };
    targets.iter().map(|(addr, config)| run_agent(*addr, config.clone(), vec![service.clone()])).collect()
}
