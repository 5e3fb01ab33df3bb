//! The `zs` binary, run as a user would: a real `zs serve` process and `zs call`s against it.

mod common;

use common::*;

/// Runs `zs` with `args`, which must succeed, and parses what it printed as one JSON value.
fn json_of(args: &[&str]) -> serde_json::Value {
    let o = zs(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn call_prints_replies_and_exits_zero() {
    let s = serve();
    let o = call(&s, &["echo", "hello there"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello there");

    let o = call(&s, &["echo_stream", "hi", "--stream"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), r#"["hi"]"#);

    let o = call(&s, &["stats"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(stats["console_in"].as_u64().unwrap() >= 1, "{stats}");

    let o = call(&s, &["echo", "one-way", "--direct"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn call_errors_say_what_went_wrong_and_exit_non_zero() {
    let s = serve();
    let o = call(&s, &["no_such_command", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown command: no_such_command"), "{}", stderr(&o));

    let o = call(&s, &["echo_stream", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("takes a DataFrame, got text"), "{}", stderr(&o));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let o = zs(&["call", &addr, "echo", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&addr) && stderr(&o).contains("refused"), "{}", stderr(&o));

    let o = call(&s, &["echo", "x", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "bad arguments");
    assert!(stderr(&o).contains("not a number of seconds"), "{}", stderr(&o));

    let o = zs(&["serve", "--listen", "not an address"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot listen on not an address"), "{}", stderr(&o));
}

#[test]
fn bench_rpc_prints_one_json_object() {
    let r = json_of(&["bench", "rpc", "--connections", "2", "--depth", "2", "--duration", "0.3", "--json"]);
    assert_eq!(r["scenario"], "rpc");
    assert_eq!(r["connections"], 2);
    assert_eq!(r["depth"], 2);
    for entry in ["ours", "floor", "ours_client", "tarpc"] {
        assert!(r[entry]["req_per_s"].as_f64().unwrap() > 0.0, "{entry}: {r}");
        assert!(r[entry]["p50_us"].as_u64().unwrap() > 0);
        assert!(r[entry]["p99_us"].as_u64().unwrap() >= r[entry]["p50_us"].as_u64().unwrap());
    }
    let vs = r["ours"]["req_per_s"].as_f64().unwrap() / r["tarpc"]["req_per_s"].as_f64().unwrap();
    assert!((r["vs_tarpc"].as_f64().unwrap() - vs).abs() < 1e-9, "{r}");
    let ratio = r["ratio"].as_f64().unwrap();
    let expect = r["ours"]["req_per_s"].as_f64().unwrap() / r["floor"]["req_per_s"].as_f64().unwrap();
    assert!((ratio - expect).abs() < 1e-9);

    let o = zs(&["bench", "rpc", "--connections", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--connections must be between"), "{}", stderr(&o));
}

#[test]
fn bench_idle_holds_connections_from_several_processes() {
    let r = json_of(&[
        "bench",
        "idle",
        "--connections",
        "60",
        "--procs",
        "2",
        "--workers",
        "2",
        "--addrs",
        "2",
        "--json",
    ]);
    assert_eq!(r["scenario"], "idle");
    assert_eq!(r["held"], 60, "{r}");
    assert_eq!(r["floor_held"], 60, "{r}");
    assert_eq!(r["ours"]["held"], 60, "{r}");
    assert_eq!(r["floor"]["bytes_per_conn"], r["floor_rss_bytes_per_conn"], "{r}");
    assert_eq!(r["workers"], 2, "{r}");
    let expect = r["server_rss_bytes_per_conn"].as_f64().unwrap()
        / r["floor_rss_bytes_per_conn"].as_f64().unwrap().max(1e-9);
    assert!((r["ratio"].as_f64().unwrap() - expect).abs() < 1e-6, "{r}");
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
fn bench_bulk_secured_takes_the_median_of_alternated_pairs() {
    let r = json_of(&[
        "bench", "bulk", "--size", "2M", "--secure", "noise", "--pairs", "3", "--only", "ours", "--json",
    ]);
    let pairs = r["secure_pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 3, "{r}");
    let mut ratios: Vec<f64> = pairs
        .iter()
        .map(|p| {
            let (s, q) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
            assert!(s > 0.0 && q > 0.0, "{r}");
            s / q
        })
        .collect();
    assert_eq!(pairs[0][0], r["ours"]["bytes_per_s"], "the first pair is the reported run");
    ratios.sort_by(f64::total_cmp);
    assert!((r["secure_ratio"].as_f64().unwrap() - ratios[1]).abs() < 1e-9, "{r}");
    let o = zs(&["bench", "bulk", "--pairs", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--pairs must be between 1 and 50"), "{}", stderr(&o));
}

#[test]
fn bench_fanout_runs_one_part_alone() {
    let r = json_of(&["bench", "fanout", "--peers", "20", "--duration", "0.3", "--only", "ours", "--json"]);
    assert!(r["ours"]["deliveries"].as_u64().unwrap() >= 20, "{r}");
    assert_eq!(r["floor"]["deliveries"], 0, "{r}");
    assert_eq!(r["nats"]["available"], false, "{r}");
    let o = zs(&["bench", "fanout", "--only", "everything"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a part"), "{}", stderr(&o));
}

#[test]
fn serve_has_a_sink_for_big_streams() {
    let s = serve();
    // `sink` takes big streams, not calls: the error says so.
    let o = call(&s, &["sink", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("receives bulk transfers, not calls"), "{}", stderr(&o));
}

#[test]
fn serve_keeps_its_key_and_call_checks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = serve_in(tmp.path(), &[]);
    assert!(s.identity.starts_with("server key: "), "{}", s.identity);
    let fp = s.client_args[1].clone();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir.join("server.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is owner-only");
    }

    // No key given and none known: refused, and the message shows the fingerprint.
    let known = s.dir.join("known_servers");
    let known = known.to_str().unwrap();
    let o = zs(&["call", &s.addr, "echo", "x", "--known-servers", known]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&fp) && stderr(&o).contains("--server-key"), "{}", stderr(&o));

    // A wrong key is refused.
    let wrong = "A".repeat(43);
    let o = zs(&["call", &s.addr, "echo", "x", "--server-key", &wrong]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    // Base64url fingerprints may start with '-': still a value, not a flag.
    let dashed = format!("-{}", "A".repeat(42));
    let o = zs(&["call", &s.addr, "echo", "x", "--server-key", &dashed]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));

    // Trust on first use records it; afterwards the file alone is enough.
    let o = zs(&["call", &s.addr, "echo", "first", "--known-servers", known, "--trust-first-use"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(known).unwrap().contains(&fp));
    let o = zs(&["call", &s.addr, "echo", "again", "--known-servers", known]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "again");

    // Plaintext against an encrypted server: told why.
    let o = zs(&["call", &s.addr, "echo", "x", "--plaintext"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("encryption required"), "{}", stderr(&o));

    // Restarted on the same data directory: the same key, so the file still matches.
    drop(s);
    let again = serve_in(tmp.path(), &[]);
    assert!(again.identity.contains(&fp), "{}", again.identity);
    let o = call(&again, &["echo", "restarted"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn serve_plaintext_and_tls_on_request() {
    let plain = serve_with(&["--plaintext"]);
    assert!(plain.identity.contains("plaintext"), "{}", plain.identity);
    let o = call(&plain, &["echo", "in the clear"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "in the clear");
    // A Noise client against a plaintext server is told to use --plaintext.
    let o = zs(&["call", &plain.addr, "echo", "x", "--server-key", &"A".repeat(43)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--plaintext"), "{}", stderr(&o));

    let tls = serve_with(&["--tls"]);
    assert!(tls.identity.starts_with("certificate fingerprint: "), "{}", tls.identity);
    let o = call(&tls, &["echo", "over tls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "over tls");
    let o = zs(&["call", &tls.addr, "echo", "x", "--tls", "--server-key", &"A".repeat(43)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
}

#[test]
fn keygen_writes_owner_only_keys_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k/server.key");
    let key = key.to_str().unwrap();
    let o = zs(&["keygen", "--out", key]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fp = stdout(&o).lines().next().unwrap().strip_prefix("public key: ").unwrap().to_owned();
    assert_eq!(fp.len(), 43);
    let o = zs(&["keygen", "--out", key]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not overwritten"), "{}", stderr(&o));

    let tls_dir = dir.path().join("tls");
    let o = zs(&["keygen", "--tls", "--out", tls_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("certificate fingerprint: "));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [std::path::Path::new(key).to_owned(), tls_dir.join("key.pem")] {
            assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
        }
    }
    // A server started with that certificate presents that fingerprint.
    let cert = tls_dir.join("cert.pem");
    let pem_key = tls_dir.join("key.pem");
    let s =
        serve_with(&["--tls", "--tls-cert", cert.to_str().unwrap(), "--tls-key", pem_key.to_str().unwrap()]);
    let printed = stdout(&o).lines().next().unwrap().to_owned();
    assert!(s.identity.starts_with(&printed), "{} vs {printed}", s.identity);
    let o = call(&s, &["echo", "with my cert"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn serve_workers_share_one_port_and_stop_with_their_supervisor() {
    let s = serve_with(&["--workers", "2", "--listen", "127.0.0.2:0"]);
    // Both listen addresses got the same port.
    let port = |a: &str| a.rsplit_once(':').unwrap().1.to_owned();
    assert_eq!(s.addrs.len(), 2, "{:?}", s.addrs);
    assert_eq!(port(&s.addrs[0]), port(&s.addrs[1]), "{:?}", s.addrs);
    // Every call lands on one of the workers; all share the key.
    for i in 0..6 {
        let o = call(&s, &["echo", &format!("w{i}")]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), format!("w{i}"));
    }
}

#[test]
fn bench_churn_opens_and_closes_connections_against_the_floor() {
    let r = json_of(&["bench", "churn", "--duration", "0.3", "--concurrency", "4", "--addrs", "2", "--json"]);
    assert_eq!(r["scenario"], "churn");
    for entry in ["ours", "ours_secure", "floor"] {
        assert!(r[entry]["conns_per_s"].as_f64().unwrap() > 0.0, "{entry}: {r}");
        assert_eq!(r[entry]["failed"], 0, "{entry}: {r}");
        assert!(r[entry]["rss_after"].as_u64().unwrap() > 0, "{entry}: {r}");
    }
    let expect = r["ours"]["conns_per_s"].as_f64().unwrap() / r["floor"]["conns_per_s"].as_f64().unwrap();
    assert!((r["ratio"].as_f64().unwrap() - expect).abs() < 1e-9, "{r}");
}

#[test]
fn bench_fanout_delivers_every_broadcast() {
    let r = json_of(&["bench", "fanout", "--peers", "20", "--duration", "0.3", "--json"]);
    assert_eq!(r["scenario"], "fanout");
    for entry in ["ours", "floor"] {
        let d = r[entry]["deliveries"].as_u64().unwrap();
        assert!(d >= 20, "{entry}: {r}");
        assert!(r[entry]["deliveries_per_s"].as_f64().unwrap() > 0.0, "{entry}: {r}");
    }
    // NATS either ran or says why not.
    assert!(
        r["nats"]["available"].as_bool().unwrap() || !r["nats"]["note"].as_str().unwrap().is_empty(),
        "{r}"
    );
    let expect =
        r["ours"]["deliveries_per_s"].as_f64().unwrap() / r["floor"]["deliveries_per_s"].as_f64().unwrap();
    assert!((r["ratio"].as_f64().unwrap() - expect).abs() < 1e-9, "{r}");
}

#[test]
fn bench_rpc_open_holds_the_rate_and_times_from_the_due_time() {
    let r = json_of(&[
        "bench",
        "rpc-open",
        "--connections",
        "4",
        "--rate",
        "2000",
        "--duration",
        "0.5",
        "--json",
    ]);
    assert_eq!(r["scenario"], "rpc-open");
    assert_eq!(r["rate"], 2000.0);
    for entry in ["ours", "floor", "ours_client", "tarpc"] {
        // About 1,000 requests were due; every one is answered and counted.
        let done = r[entry]["completed"].as_u64().unwrap();
        assert!((900..=1100).contains(&done), "{entry}: {r}");
        assert!(r[entry]["p99_us"].as_u64().unwrap() >= r[entry]["p50_us"].as_u64().unwrap(), "{entry}: {r}");
    }
    let expect = r["ours"]["p99_us"].as_f64().unwrap() / r["floor"]["p99_us"].as_f64().unwrap();
    assert!((r["ratio"].as_f64().unwrap() - expect).abs() < 1e-9, "{r}");
}

#[test]
fn bench_report_draws_charts_from_json_results() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["1", "3"] {
        let o = zs(&["bench", "rpc", "--connections", c, "--depth", "2", "--duration", "0.2", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(dir.path().join(format!("rpc_{c}.json")), &o.stdout).unwrap();
    }
    let charts = dir.path().join("charts");
    let o = zs(&[
        "bench",
        "report",
        "--input",
        dir.path().to_str().unwrap(),
        "--output",
        charts.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(charts.join("rpc_throughput.svg")).unwrap();
    for series in ["floor", "ours", "tarpc", "connections"] {
        assert!(svg.contains(series), "{series} missing from the chart");
    }
    // Only charts with data are drawn.
    assert!(!charts.join("fanout.svg").exists());

    let empty = tempfile::tempdir().unwrap();
    let o = zs(&[
        "bench",
        "report",
        "--input",
        empty.path().to_str().unwrap(),
        "--output",
        charts.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no .json results"), "{}", stderr(&o));
}

/// The lines `zs serve` prints after its first two, up to the one that starts with `last`.
fn lines_until(s: &mut common::Served, last: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(s.out.read_line(&mut line).unwrap() > 0, "no line starting {last:?} in {lines:?}");
        let done = line.starts_with(last);
        lines.push(line.trim().to_owned());
        if done {
            return lines;
        }
    }
}

#[test]
fn zs_call_reaches_a_server_over_websocket_wss_and_quic() {
    let mut s = serve_with(&[
        "--ws-listen",
        "127.0.0.1:0",
        "--wss-listen",
        "127.0.0.1:0",
        "--quic-listen",
        "127.0.0.1:0",
    ]);
    let printed = lines_until(&mut s, "QUIC clients on ").join("\n");
    let find = |prefix: &str| {
        let at = printed.find(prefix).unwrap_or_else(|| panic!("no {prefix} in {printed}"));
        printed[at..].split_whitespace().next().unwrap().trim_end_matches(',').to_owned()
    };
    let (ws, wss, quic) = (find("ws://"), find("wss://"), find("quic://"));
    let cert =
        printed.split("wss certificate fingerprint: ").nth(1).unwrap().split_whitespace().next().unwrap();
    for (target, extra) in [(&ws, vec![]), (&wss, vec!["--wss-cert", cert]), (&quic, vec![])] {
        let mut args = vec!["call", target.as_str(), "echo", "over the wire"];
        args.extend(s.client_args.iter().map(String::as_str));
        args.extend(extra);
        let o = zs(&args);
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "over the wire", "{target}");
    }
    // wss with another certificate pinned: refused, saying so.
    let mut args =
        vec!["call", wss.as_str(), "echo", "x", "--wss-cert", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"];
    args.extend(s.client_args.iter().map(String::as_str));
    let o = zs(&args);
    assert!(!o.status.success() && stderr(&o).contains("does not match"), "{}", stderr(&o));
}

#[test]
fn the_per_source_handshake_limit_is_a_setting() {
    // A silent socket holds a handshake place; with one place per source, the next
    // connection from the same address takes it over (the silent one is evicted).
    let evicted_after_a_call = |extra: &[&str]| {
        let s = serve_with(extra);
        let silent = std::net::TcpStream::connect(&s.addr).unwrap();
        let o = call(&s, &["stats"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let stats: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        drop(silent);
        stats["handshakes_evicted"].as_u64().unwrap()
    };
    assert_eq!(evicted_after_a_call(&[]), 0, "64 places by default");
    assert!(evicted_after_a_call(&["--max-handshakes-per-source", "1"]) >= 1);
    let o = zs(&["serve", "--max-handshakes-per-source", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
