//! `zs serve` reads its settings again on SIGHUP and on `POST /api/reload`: what can change
//! live is applied, the rest is reported as needing a restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn post_reload(admin: &str) -> serde_json::Value {
    request(admin, "POST", "/api/reload")
}

/// The reload's lines.
fn reload_lines(admin: &str) -> Vec<String> {
    let said = post_reload(admin);
    said["reload"].as_array().unwrap().iter().filter_map(|l| l.as_str().map(str::to_owned)).collect()
}

/// Waits until the server holds no connection (the clients of a check have gone).
fn quiet(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(admin, "GET", "/api/stats")["connections_active"] != 0 {
        assert!(Instant::now() < deadline, "connections stayed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The body of an admin request.
fn body(admin: &str, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn request(admin: &str, method: &str, path: &str) -> serde_json::Value {
    let body = body(admin, method, path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A metric's value in `/metrics`.
fn metric(admin: &str, name: &str) -> u64 {
    let text = body(admin, "GET", "/metrics");
    let line =
        text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `zs serve --config FILE` with `extra` arguments, up to its admin API line.
struct Started {
    child: Child,
    /// Where it listens.
    addr: String,
    /// Its admin API.
    admin: String,
    /// Its key, when it runs Noise.
    key: Option<zs::Fingerprint>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a server prints, up to and with the line starting with `prefix`.
fn lines_up_to(out: &mut impl BufRead, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with(prefix)) {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{lines:?}");
        lines.push(line);
    }
    lines
}

fn start(file: &std::path::Path, extra: &[&str]) -> Started {
    let mut child = Command::new(ZS)
        .args(["serve", "--config", file.to_str().unwrap()])
        .args(extra)
        .env_remove("ZS_MAX_CONNECTIONS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = lines_up_to(&mut out, "admin API on");
    // What it prints later is not read: it must not block on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let addr = lines[0].trim().strip_prefix("listening on ").unwrap().to_owned();
    let key =
        lines[1].strip_prefix("server key: ").map(|l| l.split_whitespace().next().unwrap().parse().unwrap());
    let admin = lines.last().unwrap().strip_prefix("admin API on http://").unwrap();
    let admin = admin.split_whitespace().next().unwrap().to_owned();
    Started { child, addr, admin, key }
}

/// A child process killed when the test ends, passed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_reload_applies_what_can_change_live_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zserver.toml");
    let write = |max: usize, keep_idle: bool| {
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\nplaintext = true\nservices = [\"none\"]\nadmin = \"127.0.0.1:0\"\n\
             data_dir = {:?}\nmax_connections = {max}\ncompat_keep_idle = {keep_idle}\n",
            dir.path().join("data").to_str().unwrap()
        );
        std::fs::write(&file, text).unwrap();
    };
    write(1, false);
    let server = start(&file, &[]);
    let (addr, admin) = (server.addr.clone(), server.admin.clone());
    let calls = |n: usize| {
        quiet(&admin);
        runtime().block_on(async {
            let mut held = Vec::new();
            for _ in 0..n {
                match zs::Client::connect(addr.as_str(), zs::ClientSecurity::Plaintext).await {
                    Ok(c) if c.call_console("echo", "x").await.is_ok() => held.push(c),
                    _ => break,
                }
            }
            held.len()
        })
    };
    assert_eq!(calls(2), 1, "max_connections = 1 lets one in");

    // SIGHUP after the file changed: the limit applies at once; keeping idle ZServer4D
    // clients waits for a restart.
    write(3, true);
    let sent = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls(3) != 3 {
        assert!(Instant::now() < deadline, "the new limit never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing changed since: said so. Then the API reloads a change and reports each line.
    let said = post_reload(&admin);
    assert_eq!(said["reload"][0], "compat_keep_idle: \"false\" -> \"true\": needs a restart", "{said}");
    write(2, true);
    let lines = reload_lines(&admin);
    assert!(lines.contains(&"max_connections: \"3\" -> \"2\": applied".to_owned()), "{lines:?}");
    assert_eq!(metric(&admin, "zs_max_connections"), 2);
    assert_eq!(calls(3), 2);
    // A file that does not check changes nothing.
    std::fs::write(&file, "max_connections = \"many\"\n").unwrap();
    let said = post_reload(&admin);
    assert!(said["reload"][0].as_str().unwrap().starts_with("refused, nothing changed"), "{said}");
    assert_eq!(calls(3), 2);
}

#[test]
fn a_reload_changes_the_services_settings_and_the_core_limits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zserver.toml");
    let write = |live: bool| {
        let v = |before: &str, after: &str| if live { after.to_owned() } else { before.to_owned() };
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\nplaintext = true\nadmin = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             allow_register = {}\nmemory_budget = \"{}\"\ninbox_cap = {}\nidle_timeout = {}\n\
             quota_bytes = \"{}\"\npublic_files = {}\nuser_push = {}\nsession_policy = \"{}\"\n",
            dir.path().join("data").to_str().unwrap(),
            v("false", "true"),
            v("256M", "64M"),
            v("1000", "5"),
            v("60", "30"),
            v("10G", "1G"),
            v("false", "true"),
            v("false", "true"),
            v("many", "kick-old"),
        );
        std::fs::write(&file, text).unwrap();
    };
    write(false);
    let server = start(&file, &["--insecure-fast-hashing"]);
    let rt = runtime();
    let client =
        rt.block_on(zs::Client::connect(server.addr.as_str(), zs::ClientSecurity::Plaintext)).unwrap();
    let register =
        serde_json::json!({ "user": "newcomer", "password": "a long enough password" }).to_string();
    let public = serde_json::json!({ "path": "public" }).to_string();
    let refused = rt.block_on(client.call_console("account.register", register.as_str())).unwrap_err();
    assert!(refused.to_string().contains("does not take registrations"), "{refused}");
    let refused = rt.block_on(client.call_console("file.list", public.as_str())).unwrap_err();
    assert!(refused.to_string().contains("log in"), "{refused}");
    assert_eq!(metric(&server.admin, "zs_memory_budget_bytes"), 256 << 20);

    write(true);
    let mut lines = reload_lines(&server.admin);
    lines.sort();
    let expected = [
        "allow_register: \"false\" -> \"true\": applied",
        "idle_timeout: \"60\" -> \"30\": applied",
        "inbox_cap: \"1000\" -> \"5\": applied",
        "memory_budget: \"256M\" -> \"64M\": applied",
        "public_files: \"false\" -> \"true\": applied",
        "quota_bytes: \"10G\" -> \"1G\": applied",
        "session_policy: \"many\" -> \"kick-old\": applied",
        "user_push: \"false\" -> \"true\": applied",
    ];
    assert_eq!(lines, expected);
    // The same connection, served under the new settings.
    rt.block_on(client.call_console("account.register", register.as_str())).unwrap();
    rt.block_on(client.call_console("file.list", public.as_str())).unwrap();
    assert_eq!(metric(&server.admin, "zs_memory_budget_bytes"), 64 << 20);
    assert_eq!(reload_lines(&server.admin), ["nothing changed"]);
}

#[test]
fn a_reload_reads_the_allowed_clients_again_and_closes_the_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (file, allowed) = (dir.path().join("zserver.toml"), dir.path().join("allowed"));
    let (first, second) = (zs::KeyPair::generate(), zs::KeyPair::generate());
    std::fs::write(&allowed, format!("{} first\n", first.public())).unwrap();
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\nservices = [\"none\"]\nadmin = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
         allowed_clients = {:?}\n",
        dir.path().join("data").to_str().unwrap(),
        allowed.to_str().unwrap()
    );
    std::fs::write(&file, text).unwrap();
    let server = start(&file, &[]);
    let security = |key: &zs::KeyPair| {
        zs::ClientSecurity::Noise(zs::secure::NoiseClient {
            trust: server.key.unwrap().into(),
            key: Some(key.clone()),
            ..Default::default()
        })
    };
    let rt = runtime();
    let connect = |key: &zs::KeyPair| rt.block_on(zs::Client::connect(server.addr.as_str(), security(key)));
    let held = connect(&first).unwrap();
    rt.block_on(held.call_console("echo", "x")).unwrap();
    let admits = |key: &zs::KeyPair| match connect(key) {
        Ok(c) => rt.block_on(c.call_console("echo", "x")).is_ok(),
        Err(_) => false,
    };
    assert!(!admits(&second));

    // The second key in, the first out: its open connection is closed.
    std::fs::write(&allowed, format!("# rotated\n{} second\n", second.public())).unwrap();
    let sent = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(held.call_console("echo", "x")).is_ok() {
        assert!(Instant::now() < deadline, "the revoked key stayed connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let admitted = connect(&second).unwrap();
    rt.block_on(admitted.call_console("echo", "x")).unwrap();
    assert!(!admits(&first));
    // Read again and unchanged: nothing to say.
    assert_eq!(reload_lines(&server.admin), ["nothing changed"]);
    // A file that cannot be read changes nothing.
    std::fs::write(&allowed, "not a key\n").unwrap();
    let lines = reload_lines(&server.admin);
    assert!(lines[0].starts_with("allowed_clients: not applied"), "{lines:?}");
    rt.block_on(admitted.call_console("echo", "x")).unwrap();
}

#[test]
fn workers_reload_when_their_supervisor_gets_a_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zserver.toml");
    let write = |max: usize| {
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\nplaintext = true\nworkers = 2\ndata_dir = {:?}\nmax_connections = {max}\n",
            dir.path().join("data").to_str().unwrap()
        );
        std::fs::write(&file, text).unwrap();
    };
    write(10);
    let mut child = Command::new(ZS)
        .args(["serve", "--config", file.to_str().unwrap(), "--log-format", "json"])
        .env_remove("ZS_MAX_CONNECTIONS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let err = child.stderr.take().unwrap();
    let child = Reaped(child);
    let lines = lines_up_to(&mut out, "workers:");
    let addr = lines[0].trim().strip_prefix("listening on ").unwrap().to_owned();
    let logs = std::sync::mpsc::channel();
    let mut err = BufReader::new(err);
    std::thread::spawn(move || {
        let mut line = String::new();
        while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if logs.0.send(std::mem::take(&mut line)).is_err() {
                return;
            }
        }
    });
    write(20);
    let sent = Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let mut applied = 0;
    while applied < 2 {
        let line = logs.1.recv_timeout(Duration::from_secs(60)).expect("two workers reloading");
        applied += usize::from(line.contains(r#"reload: max_connections: \"10\" -> \"20\": applied"#));
    }
    // The supervisor lived through the signal, and so did its workers.
    let mut child = child;
    assert!(child.0.try_wait().unwrap().is_none());
    let rt = runtime();
    let client = rt.block_on(zs::Client::connect(addr.as_str(), zs::ClientSecurity::Plaintext)).unwrap();
    rt.block_on(client.call_console("echo", "x")).unwrap();
}
