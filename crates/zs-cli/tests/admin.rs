//! `zs serve --admin`: Prometheus metrics with per-command series after calls, health
//! checks, the JSON API (connections, kick), and the token rule.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The admin address a server printed (`admin API on http://ADDR ...`).
fn admin_addr(s: &mut Served) -> String {
    loop {
        let mut line = String::new();
        assert!(s.out.read_line(&mut line).unwrap() > 0, "no admin line");
        if let Some(rest) = line.strip_prefix("admin API on http://") {
            return rest.split_whitespace().next().unwrap().to_owned();
        }
    }
}

/// One HTTP/1.1 request: the status code and the body.
fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn metrics_have_per_command_series_and_the_api_lists_and_kicks_connections() {
    let mut s = serve_with(&["--services", "none", "--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&mut s);
    assert_eq!(http(&admin, "GET", "/healthz", None), (200, "ok\n".into()));
    assert_eq!(http(&admin, "GET", "/readyz", None).0, 200);
    for _ in 0..3 {
        assert!(call(&s, &["echo", "hi"]).status.success());
    }
    assert!(!call(&s, &["no_such_command", "x"]).status.success());
    let (status, text) = http(&admin, "GET", "/metrics", None);
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |metric: &str, command: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|x| x.metric == metric && command.is_none_or(|c| x.labels.get("command") == Some(c)))
            .map(|x| match &x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{metric}: {other:?}"),
            })
            .unwrap_or_else(|| panic!("{metric} {command:?} missing:\n{text}"))
    };
    assert_eq!(value("zs_command_calls_total", Some("echo")), 3.0);
    assert_eq!(value("zs_command_errors_total", Some("echo")), 0.0);
    assert!(value("zs_unknown_commands_total", None) >= 1.0);
    assert!(value("zs_connections_opened_total", None) >= 4.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|x| x.metric == "zs_command_duration_seconds" && x.labels.get("command") == Some("echo"))
        .unwrap_or_else(|| panic!("no echo histogram:\n{text}"));
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().unwrap().count, 3.0, "{buckets:?}");
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative: {buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }

    // The JSON API: a connection held open is listed, found by its address, and kicked.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let key: zs::Fingerprint = s.client_args[1].parse().unwrap();
    // A resumable session, to be listed by /api/sessions too.
    let mut config = zs::ClientConfig::secured(zs::ClientSecurity::from(key));
    config.session = Some(zs::SessionConfig::default());
    let client = rt.block_on(zs::Client::connect_with(s.addr.as_str(), zs::Router::new(), config)).unwrap();
    let mine = client.peer().local_addr().to_string();
    let (status, body) = http(&admin, "GET", &format!("/api/connections?addr={mine}"), None);
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["connections"][0]["remote"], mine.as_str());
    let id = listed["connections"][0]["id"].as_u64().unwrap();
    assert_eq!(listed["connections"][0]["session"], true);
    let (status, body) = http(&admin, "GET", "/api/sessions", None);
    assert_eq!(status, 200, "{body}");
    let sessions: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((sessions["total"].as_u64(), sessions["detached"].as_u64()), (Some(1), Some(0)), "{sessions}");
    assert_eq!(sessions["sessions"][0]["connection"], id);
    assert_eq!(sessions["sessions"][0]["attached"], true);
    let (status, all) = http(&admin, "GET", "/api/connections?limit=1&offset=0", None);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&all).unwrap()["connections"].as_array().unwrap().len(),
        1
    );
    assert_eq!(http(&admin, "POST", &format!("/api/kick?id={id}"), None).0, 200);
    let reason =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), client.closed()).await }).unwrap();
    assert!(reason.to_string().contains("closed by the server's operator"), "{reason}");
    let (status, body) = http(&admin, "GET", "/api/commands", None);
    assert_eq!(status, 200);
    assert!(body.contains("\"echo\""), "{body}");
    assert_eq!(http(&admin, "POST", "/api/kick?id=999999", None).0, 404);
    assert_eq!(http(&admin, "POST", "/api/kick", None).0, 400);
    assert_eq!(http(&admin, "GET", "/nothing", None).0, 404);
}

#[test]
fn a_token_is_required_when_given_and_beyond_loopback() {
    let mut s = serve_with(&[
        "--services",
        "accounts",
        "--insecure-fast-hashing",
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        "t0ken-of-the-operator",
    ]);
    let admin = admin_addr(&mut s);
    let (status, services) = http(&admin, "GET", "/api/services", Some("t0ken-of-the-operator"));
    assert_eq!((status, services.as_str()), (200, "[\"accounts\"]"));
    assert_eq!(http(&admin, "GET", "/metrics", None).0, 401);
    assert_eq!(http(&admin, "GET", "/metrics", Some("wrong")).0, 401);
    assert_eq!(http(&admin, "GET", "/metrics", Some("t0ken-of-the-operator")).0, 200);
    assert_eq!(http(&admin, "GET", "/healthz", None).0, 200, "health checks need no token");
    // Beyond loopback without a token: refused at start.
    let o = zs(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--services",
        "none",
        "--plaintext",
        "--admin",
        "0.0.0.0:0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("needs --admin-token"), "{}", stderr(&o));
}

#[test]
fn post_api_drain_drains_the_server_as_sigusr1_does() {
    let mut s = serve_with(&[
        "--plaintext",
        "--services",
        "none",
        "--admin",
        "127.0.0.1:0",
        "--drain-hint",
        "elsewhere",
    ]);
    let admin = admin_addr(&mut s);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let c = rt.block_on(async {
        let mut r = zs::Router::new();
        r.direct_console(zs::DRAINING, move |_peer, text| {
            let _ = tx.send(text.as_str().to_owned());
        });
        let config = zs::ClientConfig::secured(zs::ClientSecurity::Plaintext);
        zs::Client::connect_with(s.addr.parse::<std::net::SocketAddr>().unwrap(), r, config).await.unwrap()
    });
    let (status, body) = http(&admin, "POST", "/api/drain", None);
    assert_eq!((status, body.as_str()), (202, r#"{"draining":true}"#));
    rt.block_on(async {
        let text =
            tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("a drain push").unwrap();
        assert!(text.contains(r#""hint":"elsewhere""#), "{text}");
        c.close();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not exit after its client left");
        std::thread::sleep(Duration::from_millis(10)); // polls the exit; the deadline bounds it
    };
    assert!(status.success());
}
