//! Security options shared by `zs serve`, `zs call` and `zs keygen`.

use std::path::{Path, PathBuf};

use clap::Args;
use zs::secure::{default_known_servers, NoiseClient, NoiseServer, TlsClient, TlsServer};
use zs::{ClientSecurity, Fingerprint, KeyPair, ServerSecurity, Trust};

/// How `zs serve` secures connections.
#[derive(Args)]
pub struct ServerSecurityArgs {
    /// Serve without encryption (trusted networks and loopback only).
    #[arg(long, conflicts_with = "tls")]
    plaintext: bool,
    /// Serve TLS 1.3 instead of Noise.
    #[arg(long)]
    tls: bool,
    /// Directory holding the server's key (created owner-only on first start). Default:
    /// $ZS_DATA_DIR, else $XDG_DATA_HOME/zserver, else ~/.local/share/zserver.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM), with --tls-key (default: a self-signed certificate kept
    /// in the data directory).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, owner-only), with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File of client key fingerprints allowed to connect, one per line (mutual
    /// authentication; Noise only).
    #[arg(long, conflicts_with_all = ["tls", "plaintext"])]
    allowed_clients: Option<PathBuf>,
}

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ZS_DATA_DIR") {
        return p.into();
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|d| d.join("zserver"))
        .unwrap_or_else(|| PathBuf::from("zserver-data"))
}

impl ServerSecurityArgs {
    /// The data directory (the option, else the default).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The client keys the allowed clients' file holds now (`None`: no file, any client).
    pub fn allowed_clients(&self) -> Result<Option<Vec<Fingerprint>>, String> {
        self.allowed_clients.as_deref().map(read_fingerprints).transpose()
    }

    /// The server's TLS identity (`--tls-cert`/`--tls-key`, else a self-signed certificate
    /// kept in the data directory) and a line that describes it.
    pub fn tls_identity(&self) -> Result<(TlsServer, String), String> {
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let (tls, how) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                (TlsServer::from_pem_files(cert, key).map_err(|e| e.to_string())?, cert.display().to_string())
            }
            _ => {
                let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
                let (tls, created) = TlsServer::load_or_create(&dir, &names).map_err(|e| e.to_string())?;
                let how = if created { "created self-signed" } else { "self-signed" };
                (tls, format!("{how}, {}", dir.join("cert.pem").display()))
            }
        };
        let line = format!("certificate fingerprint: {} (TLS 1.3, {how})", tls.fingerprint());
        Ok((tls, line))
    }

    /// The server's security and a line that describes it (printed at start).
    pub fn resolve(&self) -> Result<(ServerSecurity, String), String> {
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        if self.plaintext {
            return Ok((ServerSecurity::Plaintext, "security: plaintext (no encryption)".into()));
        }
        if self.tls {
            let (tls, line) = self.tls_identity()?;
            return Ok((ServerSecurity::Tls(tls), line));
        }
        let path = dir.join("server.key");
        let (key, created) = KeyPair::load_or_create(&path).map_err(|e| e.to_string())?;
        let allowed_clients = self.allowed_clients()?;
        let how = if created { "created" } else { "loaded" };
        let line = format!("server key: {} (Noise, {how} {})", key.public(), path.display());
        Ok((ServerSecurity::Noise(NoiseServer { key: Some(key), allowed_clients }), line))
    }
}

fn read_fingerprints(file: &Path) -> Result<Vec<Fingerprint>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace().next().unwrap_or(l).parse().map_err(|e| format!("{}: {e}", file.display()))
        })
        .collect()
}

/// How `zs call` secures its connection.
#[derive(Args)]
pub struct ClientSecurityArgs {
    /// Connect without encryption.
    #[arg(long, global = true, conflicts_with = "tls")]
    plaintext: bool,
    /// Connect with TLS 1.3 instead of Noise.
    #[arg(long, global = true)]
    tls: bool,
    /// The server's key (Noise) or certificate fingerprint (TLS) to accept; without it,
    /// the known-servers file decides.
    /// (A fingerprint may start with `-`: that is accepted.)
    #[arg(long, global = true, value_name = "FINGERPRINT", allow_hyphen_values = true)]
    server_key: Option<Fingerprint>,
    /// Known-servers file (default: $ZS_KNOWN_SERVERS, else ~/.config/zserver/known_servers).
    #[arg(long, global = true)]
    known_servers: Option<PathBuf>,
    /// Accept an unknown server and record its fingerprint (trust on first use; a changed
    /// fingerprint is still refused). For development.
    #[arg(long, global = true)]
    trust_first_use: bool,
    /// This client's key file, for servers that admit known clients only (Noise).
    #[arg(long, global = true, conflicts_with = "tls")]
    key: Option<PathBuf>,
    /// CA certificates (PEM) to verify a TLS server's chain and name against.
    #[arg(long, global = true, requires = "tls")]
    ca: Option<PathBuf>,
    /// The name a TLS server is checked against with --ca (default: the address's host).
    #[arg(long, global = true, requires = "tls")]
    server_name: Option<String>,
    /// The certificate fingerprint of a wss:// server's TLS (the layer under the WebSocket;
    /// --server-key still pins the server's own key inside); without it, the known-servers
    /// file decides, under the name wss://HOST:PORT.
    #[arg(long, global = true, value_name = "FINGERPRINT", allow_hyphen_values = true)]
    wss_cert: Option<Fingerprint>,
}

impl ClientSecurityArgs {
    /// How a wss:// client checks the TLS under the WebSocket of the server at `addr`.
    pub fn wss(&self, addr: &str) -> TlsClient {
        let trust = match self.wss_cert {
            Some(fp) => Trust::Pinned(vec![fp]),
            None => Trust::KnownServers {
                file: self.known_servers.clone().unwrap_or_else(default_known_servers),
                name: Some(format!("wss://{addr}")),
                first_use: self.trust_first_use,
            },
        };
        TlsClient { trust, ..TlsClient::default() }
    }

    /// The client's security for a server reached as `addr`.
    pub fn resolve(&self, addr: &str) -> Result<ClientSecurity, String> {
        if self.plaintext {
            return Ok(ClientSecurity::Plaintext);
        }
        let trust = match self.server_key {
            Some(fp) => Trust::Pinned(vec![fp]),
            None => Trust::KnownServers {
                file: self.known_servers.clone().unwrap_or_else(default_known_servers),
                name: Some(addr.to_owned()),
                first_use: self.trust_first_use,
            },
        };
        if self.tls {
            let host = addr.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or(addr);
            let server_name = self.server_name.clone().or_else(|| self.ca.as_ref().map(|_| host.to_owned()));
            return Ok(ClientSecurity::Tls(TlsClient { trust, ca_file: self.ca.clone(), server_name }));
        }
        let key = match &self.key {
            Some(path) => Some(KeyPair::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(ClientSecurity::Noise(NoiseClient { trust, key, ..NoiseClient::default() }))
    }
}

/// `zs keygen`: writes a Noise key pair or a self-signed TLS certificate.
#[derive(Args)]
pub struct KeygenArgs {
    /// Write a self-signed TLS certificate (cert.pem and key.pem) instead of a Noise key.
    #[arg(long)]
    tls: bool,
    /// Where to write: the key file (Noise; default DATA_DIR/server.key) or the directory
    /// (TLS; default DATA_DIR). Existing files are never overwritten.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Names (DNS or IP) the certificate is for (TLS).
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    names: Vec<String>,
}

pub fn keygen(args: KeygenArgs) -> Result<(), String> {
    if args.tls {
        let dir = args.out.unwrap_or_else(default_data_dir);
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() || key.exists() {
            return Err(format!("{} or {} already exists: not overwritten", cert.display(), key.display()));
        }
        let (tls, _) = TlsServer::load_or_create(&dir, &args.names).map_err(|e| e.to_string())?;
        println!("certificate fingerprint: {}", tls.fingerprint());
        println!("wrote {} and {} (owner-only)", cert.display(), key.display());
    } else {
        let path = args.out.unwrap_or_else(|| default_data_dir().join("server.key"));
        if path.exists() {
            return Err(format!("{} already exists: not overwritten", path.display()));
        }
        let key = KeyPair::generate();
        key.save(&path).map_err(|e| e.to_string())?;
        println!("public key: {}", key.public());
        println!("wrote {} (owner-only)", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_client_files_are_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clients");
        let key = KeyPair::generate().public();
        std::fs::write(&file, format!("# friends\n\n{key} laptop\n")).unwrap();
        assert_eq!(read_fingerprints(&file).unwrap(), vec![key]);
        std::fs::write(&file, format!("{key}\nnot-a-key\n")).unwrap();
        let e = read_fingerprints(&file).unwrap_err();
        assert!(e.contains("not a fingerprint") && e.contains("clients"), "{e}");
        let e = read_fingerprints(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
