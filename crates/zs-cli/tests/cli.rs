//! The `zs` binary, run as a user would: a real `zs serve` process and `zs call`s against it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

const ZS: &str = env!("CARGO_BIN_EXE_zs");

/// A `zs serve` child process, killed on drop.
struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let mut child = Command::new(ZS)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zs serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}"));
    Served { addr: addr.to_owned(), child }
}

fn zs(args: &[&str]) -> Output {
    Command::new(ZS).args(args).output().expect("run zs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn call_prints_replies_and_exits_zero() {
    let s = serve();
    let o = zs(&["call", &s.addr, "echo", "hello there"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello there");

    let o = zs(&["call", &s.addr, "echo_stream", "hi", "--stream"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), r#"["hi"]"#);

    let o = zs(&["call", &s.addr, "stats"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(stats["console_in"].as_u64().unwrap() >= 1, "{stats}");

    let o = zs(&["call", &s.addr, "echo", "one-way", "--direct"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn call_errors_say_what_went_wrong_and_exit_non_zero() {
    let s = serve();
    let o = zs(&["call", &s.addr, "no_such_command", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown command: no_such_command"), "{}", stderr(&o));

    let o = zs(&["call", &s.addr, "echo_stream", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("takes a DataFrame, got text"), "{}", stderr(&o));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let o = zs(&["call", &addr, "echo", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&addr) && stderr(&o).contains("refused"), "{}", stderr(&o));

    let o = zs(&["call", &s.addr, "echo", "x", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "bad arguments");
    assert!(stderr(&o).contains("not a number of seconds"), "{}", stderr(&o));

    let o = zs(&["serve", "--listen", "not an address"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot listen on not an address"), "{}", stderr(&o));
}

#[test]
fn bench_rpc_prints_one_json_object() {
    let o = zs(&["bench", "rpc", "--connections", "2", "--depth", "2", "--duration", "0.3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["scenario"], "rpc");
    assert_eq!(r["connections"], 2);
    assert_eq!(r["depth"], 2);
    for entry in ["ours", "floor", "ours_client"] {
        assert!(r[entry]["req_per_s"].as_f64().unwrap() > 0.0, "{entry}: {r}");
        assert!(r[entry]["p50_us"].as_u64().unwrap() > 0);
        assert!(r[entry]["p99_us"].as_u64().unwrap() >= r[entry]["p50_us"].as_u64().unwrap());
    }
    let ratio = r["ratio"].as_f64().unwrap();
    let expect = r["ours"]["req_per_s"].as_f64().unwrap() / r["floor"]["req_per_s"].as_f64().unwrap();
    assert!((ratio - expect).abs() < 1e-9);

    let o = zs(&["bench", "rpc", "--connections", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--connections must be between"), "{}", stderr(&o));
}

#[test]
fn bench_idle_holds_connections_from_several_processes() {
    let o = zs(&["bench", "idle", "--connections", "60", "--procs", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["scenario"], "idle");
    assert_eq!(r["held"], 60, "{r}");
    assert!(r["server_rss_after"].as_u64().unwrap() >= r["server_rss_before"].as_u64().unwrap());
    assert!(r["server_rss_bytes_per_conn"].as_f64().unwrap() >= 0.0);
}

#[test]
fn bench_bulk_moves_and_verifies_streams_in_and_out_of_process() {
    for extra in [&[][..], &["--server-process"][..]] {
        let mut args =
            vec!["bench", "bulk", "--size", "2M", "--streams", "3", "--connections", "2", "--json"];
        args.extend_from_slice(extra);
        let o = zs(&args);
        assert!(o.status.success(), "{:?}: {}", extra, stderr(&o));
        let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(r["scenario"], "bulk");
        assert_eq!(r["size"], 2 << 20);
        assert!(r["ours"]["bytes_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["floor"]["bytes_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["server_peak_rss_growth"].is_null(), extra.is_empty(), "{r}");
    }
    let o = zs(&["bench", "bulk", "--size", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a size"), "{}", stderr(&o));
}

#[test]
fn serve_has_a_sink_for_big_streams() {
    let s = serve();
    // `sink` takes big streams, not calls: the error says so.
    let o = zs(&["call", &s.addr, "sink", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("receives bulk transfers, not calls"), "{}", stderr(&o));
}
