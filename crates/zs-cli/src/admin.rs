//! `zs serve --admin ADDR`: an HTTP listener for operators. `/` is a status page (live
//! connections, calls per second per command, throughput over time, errors); `/metrics` is
//! the Prometheus text format (the server's counters and, per command, calls, errors and a
//! latency histogram); `/healthz` and `/readyz`; and a JSON API: `/api/stats`,
//! `/api/commands`, `/api/connections` (paged, filtered by user or address),
//! `/api/sessions`, `/api/services`, `POST /api/reload`, `POST /api/kick?id=N` and
//! `POST /api/drain` (as SIGUSR1). Loopback only, unless an admin token is given; with a token every
//! request but the page and the health checks must bring it (`Authorization: Bearer TOKEN`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use zs::{GoAwayCode, ServerHandle};

/// The status page: live connections, calls per second per command, throughput over time,
/// errors (no build step: the file as it is).
const STATUS_PAGE: &str = include_str!("status.html");

/// Connections listed per page at most.
const MAX_PAGE: usize = 1_000;
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Reads the settings again and applies what can change live; what changed, a line each.
pub type Reload = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Asks the serving loop to drain the server (as SIGUSR1 does).
pub type Drain = Arc<tokio::sync::Notify>;

/// What the admin listener serves from.
struct Admin {
    server: ServerHandle,
    token: Option<String>,
    reload: Reload,
    drain: Drain,
}

/// Binds `addr` and serves the admin API until the process ends; the address bound.
pub async fn start(
    addr: &str,
    token: Option<String>,
    server: ServerHandle,
    reload: Reload,
    drain: Drain,
) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("admin API on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    if !bound.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "admin API on {bound}: beyond loopback it needs --admin-token (or ZS_ADMIN_TOKEN)"
        ));
    }
    let admin = Arc::new(Admin { server, token, reload, drain });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(req)) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), service);
                // An operator's tool that stalls for a minute is dropped.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), served).await;
            });
        }
    });
    Ok(bound)
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("a valid header value"));
    r
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}

/// The query string's pairs (no percent-decoding beyond `+`: ids, users and addresses).
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace('+', " ")))
        .collect()
}

/// Compares without stopping at the first difference (a token's prefix is not guessable
/// by timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    fn authorised(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        let given = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        given.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
    }

    fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            // The page holds no data: it asks the API (with `?token=` passed on as a bearer).
            (&Method::GET, "/") => return reply(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
            (&Method::GET, "/healthz") => return reply(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, "/readyz") => {
                return match self.server.is_stopping() {
                    false => reply(StatusCode::OK, "text/plain", "ready\n"),
                    true => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n"),
                }
            }
            _ => {}
        }
        if !self.authorised(&req) {
            return error(StatusCode::UNAUTHORIZED, "give the admin token: Authorization: Bearer TOKEN");
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/metrics") => {
                reply(StatusCode::OK, "text/plain; version=0.0.4", prometheus(&self.server))
            }
            (&Method::GET, "/api/stats") => json(StatusCode::OK, self.server.stats().to_json()),
            (&Method::GET, "/api/commands") => {
                json(StatusCode::OK, serde_json::json!(self.server.command_figures()))
            }
            (&Method::GET, "/api/connections") => self.connections(&query(&req)),
            (&Method::GET, "/api/sessions") => self.sessions(),
            (&Method::GET, "/api/services") => {
                json(StatusCode::OK, serde_json::json!(self.server.services()))
            }
            (&Method::POST, "/api/kick") => self.kick(&query(&req)),
            (&Method::POST, "/api/drain") => {
                self.drain.notify_one();
                json(StatusCode::ACCEPTED, serde_json::json!({ "draining": true }))
            }
            (&Method::POST, "/api/reload") => {
                let said = (self.reload)();
                for line in &said {
                    tracing::info!("reload: {line}");
                }
                json(StatusCode::OK, serde_json::json!({ "reload": said }))
            }
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// `?user=NAME&addr=IP[:PORT]&offset=N&limit=N`.
    fn connections(&self, q: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let number = |k: &str, default: usize| q.get(k).map_or(Ok(default), |v| v.parse::<usize>());
        let (Ok(offset), Ok(limit)) = (number("offset", 0), number("limit", 100)) else {
            return error(StatusCode::BAD_REQUEST, "offset and limit are numbers");
        };
        let mut peers = self.server.peers();
        peers.sort_by_key(|p| p.id());
        let matching: Vec<_> = peers
            .iter()
            .filter(|p| q.get("user").is_none_or(|u| p.user().is_some_and(|i| i.user == *u)))
            .filter(|p| {
                q.get("addr").is_none_or(|a| {
                    let remote = p.remote_addr();
                    remote.to_string() == *a || remote.ip().to_string() == *a
                })
            })
            .collect();
        let page: Vec<serde_json::Value> = matching
            .iter()
            .skip(offset)
            .take(limit.min(MAX_PAGE))
            .map(|p| {
                serde_json::json!({
                    "id": p.id(),
                    "remote": p.remote_addr().to_string(),
                    "user": p.user().map(|i| i.user.clone()),
                    "protocol": p.channel().map(|c| c.protocol.clone()),
                    "session": p.session().is_some(),
                })
            })
            .collect();
        json(
            StatusCode::OK,
            serde_json::json!({ "total": matching.len(), "offset": offset, "connections": page }),
        )
    }

    /// Resumable sessions: the live ones and those waiting for their link to come back.
    fn sessions(&self) -> Response<Full<Bytes>> {
        let mut peers = self.server.peers();
        peers.sort_by_key(|p| p.id());
        let sessions: Vec<serde_json::Value> = peers
            .iter()
            .filter_map(|p| {
                let s = p.session()?;
                Some(serde_json::json!({
                    "connection": p.id(),
                    "user": p.user().map(|i| i.user.clone()),
                    "session": s.id,
                    "attached": s.attached,
                    "resumes": s.resumes,
                    "replayed_bytes": s.replayed_bytes,
                    "unacked_bytes": s.unacked_bytes,
                }))
            })
            .take(MAX_PAGE)
            .collect();
        let detached = self.server.detached_session_count();
        json(
            StatusCode::OK,
            serde_json::json!({ "total": self.server.session_count(), "detached": detached, "sessions": sessions }),
        )
    }

    /// `?id=N`: closes that connection, telling it why.
    fn kick(&self, q: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let Some(id) = q.get("id").and_then(|v| v.parse::<u64>().ok()) else {
            return error(StatusCode::BAD_REQUEST, "give the connection's id: ?id=N");
        };
        match self.server.peer(id) {
            Some(peer) => {
                tracing::info!(peer = id, remote = %peer.remote_addr(), "kicked through the admin API");
                peer.close_with(GoAwayCode::Normal, "closed by the server's operator");
                json(StatusCode::OK, serde_json::json!({ "kicked": id }))
            }
            None => error(StatusCode::NOT_FOUND, "no connection with that id"),
        }
    }
}

/// A label value as the text format wants it.
fn escaped(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The server's counters and each metered command's, in the Prometheus text format.
fn prometheus(server: &ServerHandle) -> String {
    let mut out = String::new();
    let stats = server.stats().to_json();
    let gauges = ["connections_active"];
    if let Some(fields) = stats.as_object() {
        for (name, value) in fields {
            let Some(v) = value.as_u64() else { continue };
            let (kind, metric) = match gauges.contains(&name.as_str()) {
                true => ("gauge", format!("zs_{name}")),
                false => ("counter", format!("zs_{name}_total")),
            };
            let _ = writeln!(out, "# TYPE {metric} {kind}\n{metric} {v}");
        }
    }
    let _ = writeln!(out, "# TYPE zs_sessions gauge\nzs_sessions {}", server.session_count());
    let _ = writeln!(out, "# TYPE zs_memory_held_bytes gauge\nzs_memory_held_bytes {}", server.memory_held());
    // The limits as set now (a reload may change them).
    let _ = writeln!(
        out,
        "# TYPE zs_memory_budget_bytes gauge\nzs_memory_budget_bytes {}",
        server.memory_budget()
    );
    let _ = writeln!(out, "# TYPE zs_max_connections gauge\nzs_max_connections {}", server.max_connections());
    let commands = server.command_figures();
    if commands.is_empty() {
        return out;
    }
    out.push_str("# HELP zs_command_calls_total Calls and one-way commands received, per command.\n");
    out.push_str("# TYPE zs_command_calls_total counter\n");
    for c in &commands {
        let _ = writeln!(out, "zs_command_calls_total{{command=\"{}\"}} {}", escaped(&c.name), c.calls);
    }
    out.push_str("# HELP zs_command_errors_total Calls answered with an error, per command.\n");
    out.push_str("# TYPE zs_command_errors_total counter\n");
    for c in &commands {
        let _ = writeln!(out, "zs_command_errors_total{{command=\"{}\"}} {}", escaped(&c.name), c.errors);
    }
    out.push_str("# HELP zs_command_duration_seconds From a call's start to its reply, per command.\n");
    out.push_str("# TYPE zs_command_duration_seconds histogram\n");
    for c in &commands {
        let name = escaped(&c.name);
        for (bound, count) in zs::rpc::LATENCY_BUCKETS_US.iter().zip(&c.buckets) {
            let le = *bound as f64 / 1e6;
            let _ =
                writeln!(out, "zs_command_duration_seconds_bucket{{command=\"{name}\",le=\"{le}\"}} {count}");
        }
        let _ =
            writeln!(out, "zs_command_duration_seconds_bucket{{command=\"{name}\",le=\"+Inf\"}} {}", c.calls);
        let _ =
            writeln!(out, "zs_command_duration_seconds_sum{{command=\"{name}\"}} {}", c.micros as f64 / 1e6);
        let _ = writeln!(out, "zs_command_duration_seconds_count{{command=\"{name}\"}} {}", c.calls);
    }
    out
}

/// `zs admin`: ask a running server's admin listener.
#[derive(clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(clap::Subcommand)]
enum AdminCmd {
    /// Drain a server (as SIGUSR1): it refuses new connections, tells its clients where to
    /// go (its --drain-hint, or in a cluster the least loaded other node) and exits once
    /// they have gone or its --drain-timeout has passed.
    Drain {
        /// The server's admin address (`zs serve --admin`).
        #[arg(long, value_name = "ADDR")]
        admin: String,
        /// The admin token, if the server has one.
        #[arg(long, env = "ZS_ADMIN_TOKEN", value_name = "TOKEN")]
        token: Option<String>,
    },
}

/// Runs `zs admin`.
pub fn run(args: AdminArgs) -> Result<(), String> {
    match args.command {
        AdminCmd::Drain { admin, token } => {
            let (status, body) = post(&admin, "/api/drain", token.as_deref())?;
            match status {
                202 => {
                    println!("{admin}: draining");
                    Ok(())
                }
                _ => Err(format!("{admin} answered {status}: {}", body.trim())),
            }
        }
    }
}

/// POSTs to `path` on the admin listener at `addr`; the status and body of the answer.
fn post(addr: &str, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("{addr}: {e}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let body_at = match response.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(format!("{addr} did not answer in HTTP")),
    };
    let status = response.code.unwrap_or(0);
    Ok((status, String::from_utf8_lossy(&answer[body_at..]).into_owned()))
}
