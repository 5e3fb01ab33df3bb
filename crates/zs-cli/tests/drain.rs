//! `zs serve` drains on SIGUSR1: new connections are refused with `Draining`, connected
//! clients are told where to go, and the process exits once they have gone (or at the
//! deadline, closing those that stayed).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::mpsc;
use zs::wire::GoAwayCode;
use zs::{Client, ClientConfig, CloseReason, Router};

const PATIENCE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A plaintext client whose router passes on every `zs.draining` push.
async fn client(addr: &str, tx: mpsc::UnboundedSender<String>) -> Result<Client, String> {
    let mut r = Router::new();
    r.direct_console(zs::DRAINING, move |_peer, text| {
        let _ = tx.send(text.as_str().to_owned());
    });
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    Client::connect_with(addr.parse::<std::net::SocketAddr>().unwrap(), r, config)
        .await
        .map_err(|e| e.to_string())
}

fn usr1(s: &Served) {
    let sent = Command::new("kill").args(["-USR1", &s.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
}

/// Waits for the server process to exit; its status.
fn exited(s: &mut Served) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10)); // polls the exit; the deadline bounds it
    }
}

#[test]
fn a_draining_server_tells_its_clients_where_to_go_and_exits_when_they_have_gone() {
    let mut s = serve_with(&["--plaintext", "--services", "none", "--drain-hint", "127.0.0.1:9999"]);
    let rt = runtime();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (a, b) = rt.block_on(async {
        (client(&s.addr, tx.clone()).await.unwrap(), client(&s.addr, tx.clone()).await.unwrap())
    });
    usr1(&s);
    rt.block_on(async {
        for _ in 0..2 {
            let text = tokio::time::timeout(PATIENCE, rx.recv()).await.expect("a drain push").unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["hint"], "127.0.0.1:9999");
            assert_eq!(v["deadline_ms"], 60_000);
        }
        // A new connection is turned away, saying why.
        let refused = client(&s.addr, tx.clone()).await;
        let e = match refused {
            Err(e) => e,
            Ok(c) => match tokio::time::timeout(PATIENCE, c.closed()).await.unwrap() {
                CloseReason::PeerGoAway { code, message } => format!("{code:?} {message}"),
                other => format!("{other:?}"),
            },
        };
        assert!(e.to_lowercase().contains("draining"), "{e}");
        // The server is still up for its clients until they leave.
        assert_eq!(a.call_console("echo", "still here").await.unwrap(), "still here");
        a.close();
        b.close();
    });
    assert!(exited(&mut s).success());
}

#[test]
fn a_drain_closes_the_clients_that_stay_at_its_deadline() {
    let mut s = serve_with(&["--plaintext", "--services", "none", "--drain-timeout", "1"]);
    let rt = runtime();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stayer = rt.block_on(client(&s.addr, tx)).unwrap();
    let started = Instant::now();
    usr1(&s);
    rt.block_on(async {
        tokio::time::timeout(PATIENCE, rx.recv()).await.expect("a drain push").unwrap();
        let why = tokio::time::timeout(PATIENCE, stayer.closed()).await.expect("closed at the deadline");
        assert!(matches!(why, CloseReason::PeerGoAway { code: GoAwayCode::ShuttingDown, .. }), "{why:?}");
    });
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the deadline");
    assert!(exited(&mut s).success());
}
