//! Shared helpers of the CLI tests: `zs serve` as a child process, `zs` runs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

pub const ZS: &str = env!("CARGO_BIN_EXE_zs");

/// A `zs serve` child process, killed on drop, with its own data directory.
pub struct Served {
    pub child: Child,
    /// The first address it listens on.
    pub addr: String,
    /// Every address it listens on.
    pub addrs: Vec<String>,
    /// The second line it printed: its key or certificate.
    pub identity: String,
    /// What `zs call` needs to reach it.
    pub client_args: Vec<String>,
    /// Its data directory, removed on drop when the helper made it.
    pub dir: std::path::PathBuf,
    /// What it prints after the first two lines (kept open: a server's output is read).
    pub out: BufReader<ChildStdout>,
    _own_dir: Option<tempfile::TempDir>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve() -> Served {
    serve_with(&[])
}

/// Starts `zs serve` with `extra` arguments and a data directory of its own.
pub fn serve_with(extra: &[&str]) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = serve_in(tmp.path(), extra);
    s._own_dir = Some(tmp);
    s
}

/// Starts `zs serve` with `extra` arguments, keeping its key in `dir`.
pub fn serve_in(dir: &std::path::Path, extra: &[&str]) -> Served {
    serve_env(dir, extra, &[])
}

/// Starts `zs serve` with `extra` arguments and environment variables, keeping its key in
/// `dir`.
pub fn serve_env(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Served {
    let data = dir.to_str().unwrap().to_owned();
    let mut child = Command::new(ZS)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zs serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut line, mut identity) = (String::new(), String::new());
    out.read_line(&mut line).unwrap();
    out.read_line(&mut identity).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}"));
    let fingerprint = identity.split_whitespace().find(|w| w.len() == 43).map(str::to_owned);
    let client_args = match (extra.contains(&"--plaintext"), extra.contains(&"--tls"), fingerprint) {
        (true, _, _) => vec!["--plaintext".to_owned()],
        (_, tls, Some(fp)) => {
            let mut a = vec!["--server-key".to_owned(), fp];
            if tls {
                a.push("--tls".to_owned());
            }
            a
        }
        _ => panic!("second line names no key: {identity:?}"),
    };
    let identity = identity.trim().to_owned();
    let addrs: Vec<String> = addr.split_whitespace().map(str::to_owned).collect();
    Served {
        addr: addrs[0].clone(),
        addrs,
        identity,
        client_args,
        child,
        dir: dir.to_owned(),
        out,
        _own_dir: None,
    }
}

/// `zs call ADDR ARGS...` with what it takes to reach `s`.
pub fn call(s: &Served, args: &[&str]) -> Output {
    Command::new(ZS).arg("call").arg(&s.addr).args(args).args(&s.client_args).output().expect("run zs")
}

pub fn zs(args: &[&str]) -> Output {
    Command::new(ZS).args(args).output().expect("run zs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
