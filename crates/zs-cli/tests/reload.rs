//! `zs serve` reads its settings again on SIGHUP and on `POST /api/reload`: what can change
//! live is applied, the rest is reported as needing a restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn post_reload(admin: &str) -> serde_json::Value {
    request(admin, "POST", "/api/reload")
}

/// Waits until the server holds no connection (the clients of a check have gone).
fn quiet(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(admin, "GET", "/api/stats")["connections_active"] != 0 {
        assert!(Instant::now() < deadline, "connections stayed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn request(admin: &str, method: &str, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn a_reload_applies_what_can_change_live_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zserver.toml");
    let write = |max: usize, idle: u32| {
        let text = format!(
            "listen = [\"127.0.0.1:0\"]\nplaintext = true\nservices = [\"none\"]\nadmin = \"127.0.0.1:0\"\n\
             data_dir = {:?}\nmax_connections = {max}\nidle_timeout = {idle}\n",
            dir.path().join("data").to_str().unwrap()
        );
        std::fs::write(&file, text).unwrap();
    };
    write(1, 60);
    let mut child = Command::new(ZS)
        .args(["serve", "--config", file.to_str().unwrap()])
        .env_remove("ZS_MAX_CONNECTIONS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("admin API on")) {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{lines:?}");
        lines.push(line);
    }
    let addr = lines[0].trim().strip_prefix("listening on ").unwrap().to_owned();
    let admin = lines
        .last()
        .unwrap()
        .strip_prefix("admin API on http://")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let calls = |n: usize| {
        quiet(&admin);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
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

    // SIGHUP after the file changed: the limit applies at once; the idle timeout waits.
    write(3, 30);
    let sent = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls(3) != 3 {
        assert!(Instant::now() < deadline, "the new limit never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing changed since: said so. Then the API reloads a change and reports each line.
    let said = post_reload(&admin);
    assert_eq!(said["reload"][0], "idle_timeout: \"60\" -> \"30\": needs a restart", "{said}");
    write(2, 30);
    let said = post_reload(&admin);
    let lines: Vec<&str> = said["reload"].as_array().unwrap().iter().filter_map(|l| l.as_str()).collect();
    assert!(lines.contains(&"max_connections: \"3\" -> \"2\": applied"), "{said}");
    assert_eq!(calls(3), 2);
    // A file that does not check changes nothing.
    std::fs::write(&file, "max_connections = \"many\"\n").unwrap();
    let said = post_reload(&admin);
    assert!(said["reload"][0].as_str().unwrap().starts_with("refused, nothing changed"), "{said}");
    assert_eq!(calls(3), 2);
    let _ = child.kill();
    let _ = child.wait();
}
