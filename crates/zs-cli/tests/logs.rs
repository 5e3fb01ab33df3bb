//! `zs serve`'s logs: JSON lines a collector can read, a line per connection opened and
//! closed at debug, filters by level and module, and no password in any line.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "correct horse battery staple 42";

/// Runs `zs serve` with `log_args`, one login with the right password and one with a wrong
/// one, and returns what it wrote to standard error, after `closes` lines saying a connection
/// closed have come (the server logs a close once it has seen the client go, which can be
/// after the client has exited).
fn logs_of_a_server(log_args: &[&str], closes: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(ZS)
        .args(["serve", "--listen", "127.0.0.1:0", "--plaintext", "--insecure-fast-hashing", "--data-dir"])
        .arg(dir.path())
        .args(log_args)
        .env("ZS_ADMIN_PASSWORD", SECRET)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let errors = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in errors.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    for password in [SECRET, "a wrong password, also secret"] {
        let o = Command::new(ZS)
            .args(["call", &addr, "stats", "--plaintext", "--user", "admin"])
            .env("ZS_PASSWORD", password)
            .output()
            .unwrap();
        assert_eq!(o.status.success(), password == SECRET, "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut logs = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while logs.matches("connection closed").count() < closes {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => logs.extend([line.as_str(), "\n"]),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    logs.extend(lines.try_iter().flat_map(|line| [line, "\n".to_owned()]));
    assert!(!logs.contains(SECRET) && !logs.contains("also secret"), "a password in the logs:\n{logs}");
    logs
}

#[test]
fn json_logs_at_debug_show_each_connection_and_never_a_password() {
    let logs = logs_of_a_server(&["--log-format", "json", "--log", "debug"], 2);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let said = |message: &str| lines.iter().filter(|l| l["fields"]["message"] == message).count();
    assert!(said("connection opened") >= 2, "{logs}");
    assert!(said("connection closed") >= 2, "{logs}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()));
}

#[test]
fn the_default_level_and_a_module_filter_keep_connection_lines_out() {
    let logs = logs_of_a_server(&[], 0);
    assert!(!logs.contains("connection opened"), "{logs}");
    let logs = logs_of_a_server(&["--log", "warn,zs_services=debug"], 0);
    assert!(!logs.contains("connection opened"), "{logs}");
    // A filter that does not parse is refused before anything starts.
    let o = zs(&["serve", "--log", "info,zs=lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--log"), "{}", stderr(&o));
}
