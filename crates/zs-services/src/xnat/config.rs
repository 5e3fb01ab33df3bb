//! The TOML files of `zs xnat server` and `zs xnat agent`: one entry per named service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// How a service's visitors talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP connections (the default).
    #[default]
    Tcp,
    /// UDP datagrams: a session per visitor address, ended after a minute of silence.
    Udp,
}

/// A service as the public server offers it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicService {
    /// Where visitors connect.
    pub bind: SocketAddr,
    /// TCP or UDP (default TCP).
    #[serde(default)]
    pub protocol: Protocol,
    /// A secret agents prove to serve it (never sent: see [`super::token_proof`]).
    #[serde(default)]
    pub token: Option<String>,
    /// Agent keys (Noise fingerprints) allowed to serve it without a token.
    #[serde(default)]
    pub agent_keys: Vec<String>,
    /// Visitors at once (default 10,000); more are closed at once.
    #[serde(default = "default_max_visitors")]
    pub max_visitors: usize,
    /// Bytes per second for all its visitors together, both ways (default: no limit).
    #[serde(default)]
    pub max_bytes_per_s: Option<u64>,
    /// Seconds a TCP visitor may move nothing either way before it is closed (default: no
    /// limit; the agent's link has its own keepalive).
    #[serde(default)]
    pub idle_timeout: Option<f64>,
    /// Seconds a TCP visitor may send nothing before the system checks that its end is
    /// still there (default 30; 0: never). A visitor whose end is gone (a crash, a cut
    /// route, a half-open connection) is closed after three unanswered probes a third of
    /// this apart, instead of holding its place and its agent's connection for ever.
    #[serde(default = "default_tcp_keepalive")]
    pub tcp_keepalive: u64,
}

fn default_max_visitors() -> usize {
    10_000
}

fn default_tcp_keepalive() -> u64 {
    30
}

/// The longest `tcp_keepalive` the system takes (Linux: `TCP_KEEPIDLE` ≤ 32,767 s).
const MAX_TCP_KEEPALIVE: u64 = 32_767;

/// `zs xnat server --config FILE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Where agents connect.
    pub listen: SocketAddr,
    /// Where agents open pooled data connections (default: `listen`'s address, a port the
    /// system picks, which agents learn when they register; give one to open in a firewall).
    #[serde(default)]
    pub data_listen: Option<SocketAddr>,
    /// Where the server's key is kept (default: zs serve's data directory).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Agents connect without encryption (only by explicit choice).
    #[serde(default)]
    pub plaintext: bool,
    /// The services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, PublicService>,
}

/// A service as an agent serves it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalService {
    /// The local address visitors are connected to (`host:port`).
    pub local: String,
    /// TCP or UDP (default TCP), as the server's entry says.
    #[serde(default)]
    pub protocol: Protocol,
    /// The service's token, when the server asks for one.
    #[serde(default)]
    pub token: Option<String>,
    /// Idle pooled data connections kept open per server for its TCP visitors (default 8,
    /// at most 64; 0: every visitor rides a virtual channel of the link).
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_pool() -> usize {
    super::DEFAULT_POOL
}

/// `zs xnat agent --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The public server's agent address (`host:port`).
    pub server: String,
    /// The server's key fingerprint (Noise), pinned.
    #[serde(default)]
    pub server_key: Option<String>,
    /// Connect without encryption (only by explicit choice).
    #[serde(default)]
    pub plaintext: bool,
    /// This agent's key file (Noise), for servers that admit agents by key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// More public servers to serve the same services through at once (high availability).
    #[serde(default)]
    pub more_servers: Vec<MoreServer>,
    /// The services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, LocalService>,
}

/// Another public server an agent serves its services through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoreServer {
    /// Its agent address (`host:port`).
    pub server: String,
    /// Its key fingerprint (Noise), pinned (unless the agent is plaintext).
    #[serde(default)]
    pub server_key: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

impl ServerFile {
    /// Parses and checks a server file.
    pub fn parse(text: &str) -> Result<ServerFile, String> {
        let f: ServerFile = parse(text)?;
        for (name, s) in &f.services {
            if !super::valid_service_name(name) {
                return Err(format!("service `{name}`: a name is 1 to 64 letters, digits, - or _"));
            }
            if s.token.is_none() && s.agent_keys.is_empty() {
                return Err(format!(
                    "service `{name}`: give a token or agent_keys, or no agent can serve it"
                ));
            }
            if s.token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!("service `{name}`: a token is at least 16 characters"));
            }
            for k in &s.agent_keys {
                k.parse::<zs::Fingerprint>().map_err(|e| format!("service `{name}`: agent key {k}: {e}"))?;
            }
            if s.max_visitors == 0 {
                return Err(format!("service `{name}`: max_visitors is at least 1"));
            }
            if s.max_bytes_per_s == Some(0) {
                return Err(format!("service `{name}`: max_bytes_per_s is at least 1"));
            }
            if s.idle_timeout.is_some_and(|t| !(t.is_finite() && t > 0.0 && t < 1e9)) {
                return Err(format!("service `{name}`: idle_timeout is a positive number of seconds"));
            }
            if s.tcp_keepalive > MAX_TCP_KEEPALIVE {
                return Err(format!(
                    "service `{name}`: tcp_keepalive is at most {MAX_TCP_KEEPALIVE} seconds"
                ));
            }
        }
        Ok(f)
    }
}

impl AgentFile {
    /// Parses and checks an agent file.
    pub fn parse(text: &str) -> Result<AgentFile, String> {
        let f: AgentFile = parse(text)?;
        if !f.plaintext && f.server_key.is_none() {
            return Err("give server_key (the server's fingerprint), or plaintext = true".into());
        }
        if let Some(k) = &f.server_key {
            k.parse::<zs::Fingerprint>().map_err(|e| format!("server_key: {e}"))?;
        }
        for m in &f.more_servers {
            match &m.server_key {
                Some(k) => {
                    k.parse::<zs::Fingerprint>().map_err(|e| format!("{}: server_key: {e}", m.server))?;
                }
                None if !f.plaintext => return Err(format!("{}: give its server_key", m.server)),
                None => {}
            }
        }
        for (name, s) in &f.services {
            if !super::valid_service_name(name) {
                return Err(format!("service `{name}`: a name is 1 to 64 letters, digits, - or _"));
            }
            if s.pool > super::MAX_POOL {
                return Err(format!("service `{name}`: pool is at most {}", super::MAX_POOL));
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_and_bad_ones_say_why() {
        let s = ServerFile::parse(
            "listen = \"127.0.0.1:7000\"\n[services.web]\nbind = \"127.0.0.1:8080\"\ntoken = \"a long enough token\"\n",
        )
        .unwrap();
        assert_eq!((s.services["web"].max_visitors, s.services["web"].tcp_keepalive), (10_000, 30));
        let no_auth =
            ServerFile::parse("listen = \"127.0.0.1:7000\"\n[services.web]\nbind = \"127.0.0.1:8080\"\n");
        assert!(no_auth.unwrap_err().contains("token or agent_keys"));
        let unknown = ServerFile::parse("listen = \"127.0.0.1:7000\"\nlisten_too = 1\n");
        assert!(unknown.unwrap_err().contains("listen_too"));
        let bad_name = ServerFile::parse("listen = \"127.0.0.1:7000\"\n[services.\"a b\"]\nbind = \"127.0.0.1:1\"\ntoken = \"a long enough token\"\n");
        assert!(bad_name.unwrap_err().contains("a name is"));
        let base = "listen = \"127.0.0.1:7000\"\n[services.web]\nbind = \"127.0.0.1:8080\"\ntoken = \"a long enough token\"\n";
        assert!(ServerFile::parse(&format!("{base}idle_timeout = -1\n"))
            .unwrap_err()
            .contains("idle_timeout"));
        assert!(ServerFile::parse(&format!("{base}max_bytes_per_s = 0\n"))
            .unwrap_err()
            .contains("max_bytes_per_s"));
        assert!(ServerFile::parse(&format!("{base}tcp_keepalive = 40000\n"))
            .unwrap_err()
            .contains("tcp_keepalive is at most 32767"));
        assert_eq!(
            ServerFile::parse(&format!("{base}tcp_keepalive = 0\n")).unwrap().services["web"].tcp_keepalive,
            0
        );
        assert!(ServerFile::parse(&format!("{base}max_visitors = 0\n"))
            .unwrap_err()
            .contains("max_visitors"));
        assert!(ServerFile::parse(&format!("{base}protocol = \"sctp\"\n")).is_err());
        let short = base.replace("a long enough token", "short");
        assert!(ServerFile::parse(&short).unwrap_err().contains("at least 16"));
        let a = AgentFile::parse(
            "server = \"127.0.0.1:7000\"\nplaintext = true\n[services.web]\nlocal = \"127.0.0.1:80\"\n",
        );
        let a = a.unwrap();
        assert_eq!((a.services["web"].local.as_str(), a.services["web"].pool), ("127.0.0.1:80", 8));
        let big_pool = AgentFile::parse(
            "server = \"127.0.0.1:7000\"\nplaintext = true\n[services.web]\nlocal = \"127.0.0.1:80\"\npool = 65\n",
        );
        assert!(big_pool.unwrap_err().contains("pool is at most 64"));
        let unpinned = AgentFile::parse("server = \"127.0.0.1:7000\"\n");
        assert!(unpinned.unwrap_err().contains("server_key"));
    }
}
