//! `zs xnat server` and `zs xnat agent` as processes with their TOML files: a TCP echo
//! reaches a local service through the tunnel, over Noise with the server's key pinned; the
//! example files parse; a bad file is refused with the reason.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use zs_services::xnat::{AgentFile, ServerFile};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A local service that echoes one line, prefixed.
fn line_echo() -> std::net::SocketAddr {
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = local.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in local.incoming().flatten() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut r = BufReader::new(s.try_clone().unwrap());
                if r.read_line(&mut line).is_ok() {
                    let _ = (&s).write_all(format!("echo: {line}").as_bytes());
                }
            });
        }
    });
    addr
}

/// `zs xnat server` with one service `echo` on `public`: the process, its agents'
/// address and its key.
fn xnat_server(dir: &std::path::Path, name: &str, public: u16) -> (Killed, String, String) {
    let toml = dir.join(format!("{name}.toml"));
    std::fs::write(
        &toml,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[services.echo]\nbind = \"127.0.0.1:{public}\"\ntoken = \"a token of sixteen or more\"\n",
            dir.join(name).display()
        ),
    )
    .unwrap();
    let mut server = Killed(
        Command::new(ZS)
            .args(["xnat", "server", "--config", toml.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let control = first.trim().strip_prefix("listening on ").unwrap().to_owned();
    let key = second.split_whitespace().find(|w| w.len() == 43).expect("the server's key").to_owned();
    (server, control, key)
}

/// Until the agent has registered, visitors are closed at once: tries until one is echoed.
fn echoed_through(public: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no echo through the tunnel on {public}");
        let mut v = TcpStream::connect(("127.0.0.1", public)).unwrap();
        v.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = v.write_all(b"hello through the tunnel\n");
        let mut got = String::new();
        let _ = v.read_to_string(&mut got);
        if got == "echo: hello through the tunnel\n" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_echo_goes_through_zs_xnat_over_noise_via_two_servers() {
    let dir = tempfile::tempdir().unwrap();
    let local_addr = line_echo();
    let (public1, public2) = (free_port(), free_port());
    let (_s1, control1, key1) = xnat_server(dir.path(), "one", public1);
    let (_s2, control2, key2) = xnat_server(dir.path(), "two", public2);
    // One agent serves the service through both servers at once (high availability).
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "server = \"{control1}\"\nserver_key = \"{key1}\"\nmore_servers = [{{ server = \"{control2}\", server_key = \"{key2}\" }}]\n[services.echo]\nlocal = \"{local_addr}\"\ntoken = \"a token of sixteen or more\"\n"
        ),
    )
    .unwrap();
    let mut agent = Killed(
        Command::new(ZS)
            .args(["xnat", "agent", "--config", agent_toml.to_str().unwrap(), "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = BufReader::new(agent.0.stderr.take().unwrap());
    echoed_through(public1);
    echoed_through(public2);
    // Its logs are JSON lines; each server's registration is one.
    let registered = logs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).expect("a JSON line"))
        .filter(|l| l["fields"]["message"] == "xnat service registered")
        .take(2)
        .count();
    assert_eq!(registered, 2);
}

#[test]
fn the_example_files_parse_and_a_bad_file_says_why() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/xnat");
    let server = ServerFile::parse(&std::fs::read_to_string(root.join("server.toml")).unwrap()).unwrap();
    assert_eq!(server.services.len(), 2);
    let agent = std::fs::read_to_string(root.join("agent.toml")).unwrap();
    // The example's key is a placeholder: with a real one it parses.
    let agent = agent
        .replace("<the fingerprint zs xnat server printed>", &zs::KeyPair::generate().public().to_string());
    assert_eq!(AgentFile::parse(&agent).unwrap().services.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\n[services.web]\nbind = \"127.0.0.1:0\"\n").unwrap();
    let o = Command::new(ZS).args(["xnat", "server", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give a token or agent_keys"), "{}", stderr(&o));
}
