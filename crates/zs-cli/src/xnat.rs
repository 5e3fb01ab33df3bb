//! `zs xnat server --config FILE` (the public side) and `zs xnat agent --config FILE` (the
//! side inside the private network): expose TCP services behind NAT.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use zs::secure::{NoiseClient, NoiseServer};
use zs::{ClientConfig, ClientSecurity, KeyPair, ServerSecurity, Trust};
use zs_services::xnat::{
    run_agent, AgentFile, AgentHandle, AgentService, LocalService, Protocol, ServerFile, XnatServer,
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
    },
    /// The agent inside the private network: connects out and serves local addresses.
    Agent {
        /// The agent's TOML file (examples/xnat/agent.toml).
        #[arg(long)]
        config: PathBuf,
    },
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn run(args: XnatArgs) -> Result<(), String> {
    crate::runtime()?.block_on(async move {
        match args.command {
            XnatCommand::Server { config } => server(&config).await,
            XnatCommand::Agent { config } => agent(&config).await,
        }
    })
}

async fn server(path: &PathBuf) -> Result<(), String> {
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
    for s in server.stats() {
        println!("service {} on {}", s.name, s.public);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    let mut hangups = hangups()?;
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
                        visitors = s.visitors, refused = s.refused, bytes_in = s.bytes_in, bytes_out = s.bytes_out, "xnat");
                }
            }
        }
    }
    server.shutdown().await;
    Ok(())
}

async fn agent(path: &PathBuf) -> Result<(), String> {
    let file = AgentFile::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    let addr = tokio::net::lookup_host(&file.server)
        .await
        .map_err(|e| format!("{}: {e}", file.server))?
        .next()
        .ok_or_else(|| format!("{}: no address", file.server))?;
    let security = if file.plaintext {
        ClientSecurity::Plaintext
    } else {
        let pinned =
            file.server_key.as_deref().unwrap_or_default().parse().map_err(|e| format!("server_key: {e}"))?;
        let key = match &file.key_file {
            Some(p) => Some(KeyPair::load(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        ClientSecurity::Noise(NoiseClient {
            trust: Trust::Pinned(vec![pinned]),
            key,
            ..NoiseClient::default()
        })
    };
    let config = ClientConfig::secured(security);
    // One link per service, so that a reload adds or removes one without touching the others.
    let mut running = std::collections::BTreeMap::new();
    for (name, service) in &file.services {
        running.insert(name.clone(), (service.clone(), start(addr, &config, name, service)));
    }
    println!("agent of {addr}: {} service(s)", file.services.len());
    let mut hangups = hangups()?;
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
                if (&new.server, &new.server_key, new.plaintext, &new.key_file)
                    != (&file.server, &file.server_key, file.plaintext, &file.key_file)
                {
                    tracing::warn!("reload: server, server_key, plaintext or key_file changed: needs a restart");
                }
                let names: Vec<String> = running.keys().cloned().collect();
                for name in names {
                    let same = new.services.get(&name) == running.get(&name).map(|(s, _)| s);
                    if !same {
                        if let Some((_, agent)) = running.remove(&name) {
                            agent.stop().await;
                            tracing::info!("reload: service {name} stopped");
                        }
                    }
                }
                for (name, service) in &new.services {
                    if !running.contains_key(name) {
                        running.insert(name.clone(), (service.clone(), start(addr, &config, name, service)));
                        tracing::info!("reload: service {name} started ({})", service.local);
                    }
                }
            }
        }
    }
    for (_, (_, agent)) in running {
        agent.stop().await;
    }
    Ok(())
}

fn start(addr: std::net::SocketAddr, config: &ClientConfig, name: &str, s: &LocalService) -> AgentHandle {
    let service = AgentService {
        name: name.to_owned(),
        local: s.local.clone(),
        token: s.token.clone(),
        udp: s.protocol == Protocol::Udp,
    };
    run_agent(addr, config.clone(), vec![service])
}

/// SIGHUP, which asks for the configuration file to be read again.
fn hangups() -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())
}
