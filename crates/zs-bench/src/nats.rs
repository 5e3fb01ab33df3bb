//! A NATS server (Debian's `nats-server`, JetStream on) on a free loopback port, for the
//! cluster's tests and benchmarks: started, waited for until it says it is ready, killed on
//! drop with its store.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Child,
    /// Its URL, `nats://127.0.0.1:PORT`.
    pub url: String,
    _store: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `nats-server` program: `$ZS_NATS_SERVER`, else on the path, else Debian's
/// `/usr/sbin/nats-server` (not on a user's path).
pub fn program() -> Option<String> {
    if let Ok(p) = std::env::var("ZS_NATS_SERVER") {
        return Some(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    if on_path {
        return Some("nats-server".into());
    }
    std::path::Path::new("/usr/sbin/nats-server").is_file().then(|| "/usr/sbin/nats-server".into())
}

impl NatsServer {
    /// Starts one; an error says why it cannot (not installed, did not start).
    pub fn start() -> Result<NatsServer, String> {
        let program = program().ok_or("nats-server is not installed (Debian's package nats-server)")?;
        let store = tempfile::tempdir().map_err(|e| e.to_string())?;
        // A port nobody holds now; the server binds it at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut child = Command::new(&program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        loop {
            line.clear();
            match err.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = child.kill();
                    return Err(format!("{program} stopped before it was ready"));
                }
                Ok(_) if line.contains("Server is ready") => break,
                Ok(_) => {}
            }
        }
        // Keep reading what it logs, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in err.lines() {});
        Ok(NatsServer { child, url: format!("nats://127.0.0.1:{port}"), _store: store })
    }

    /// Stops it at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
