//! `zs push` and `zs inbox` as a user meets them, and the inbox's durability: a server
//! killed with SIGKILL while it stores 10,000 messages loses none it answered "stored"
//! for, and after a restart every message is delivered exactly once (retries de-duplicated
//! by id).

mod common;

use std::collections::HashSet;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use zs::{Client, ClientConfig, Router};
use zs_services::push::client::{self, SendOptions};

const FAST: [&str; 3] = ["--plaintext", "--insecure-fast-hashing", "--allow-register"];
const ADMIN: (&str, &str) = ("ZS_ADMIN_PASSWORD", "the admin password");
const MESSAGES: usize = 10_000;

fn zs_as(user: &str, password: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(ZS);
    for var in ["ZS_PASSWORD", "ZS_USER", "ZS_SERVER"] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .args(["--user", user, "--plaintext"])
        .env("ZS_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("run zs")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "zs failed: {}", stderr(&o));
    stdout(&o)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A plaintext client of `addr`, logged in as `user` (registered if new).
async fn login(addr: &str, user: &str, password: &str) -> Client {
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let c = Client::connect_with(addr.parse::<std::net::SocketAddr>().unwrap(), Router::new(), config)
        .await
        .unwrap();
    let req = json!({ "user": user, "password": password }).to_string();
    if c.call_console("account.login", req.clone()).await.is_err() {
        c.call_console("account.register", req).await.unwrap();
    }
    c
}

#[test]
fn zs_push_stores_for_an_offline_user_and_zs_inbox_lists_and_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_env(dir.path(), &FAST, &[ADMIN]);
    let rt = runtime();
    rt.block_on(async {
        let bob = login(&s.addr, "bob", "bob's long password").await;
        bob.call_console("account.logout", "{}").await.unwrap();
    });
    let sent =
        ok(zs_as("admin", ADMIN.1, &["push", "bob", "note", "hello bob", "--id", "n1", "--server", &s.addr]));
    assert!(sent.contains("stored in its inbox (#1)"), "{sent}");
    let again =
        ok(zs_as("admin", ADMIN.1, &["push", "bob", "note", "hello bob", "--id", "n1", "--server", &s.addr]));
    assert!(again.contains("not stored again"), "{again}");
    let nobody = zs_as("admin", ADMIN.1, &["push", "nobody", "note", "x", "--server", &s.addr]);
    assert!(stderr(&nobody).contains("no account nobody"), "{}", stderr(&nobody));
    let listed = ok(zs_as("bob", "bob's long password", &["inbox", "--ack", "--server", &s.addr]));
    assert!(listed.contains("#1 note from admin [n1]: hello bob"), "{listed}");
    assert!(listed.contains("acknowledged 1"), "{listed}");
    let empty = ok(zs_as("bob", "bob's long password", &["inbox", "--server", &s.addr]));
    assert!(!empty.contains("hello bob"), "{empty}");
    let refused = zs_as("bob", "bob's long password", &["push", "admin", "note", "x", "--server", &s.addr]);
    assert!(stderr(&refused).contains("forbidden"), "{}", stderr(&refused));
}

#[test]
fn the_order_of_services_does_not_matter() {
    // Push stores only for accounts that exist when accounts are served, listed before it
    // or after.
    for services in ["accounts,push", "push,accounts"] {
        let dir = tempfile::tempdir().unwrap();
        let s = serve_env(dir.path(), &[&FAST[..], &["--services", services]].concat(), &[ADMIN]);
        let nobody = zs_as("admin", ADMIN.1, &["push", "nobody", "note", "x", "--server", &s.addr]);
        assert!(!nobody.status.success(), "--services {services}: {}", stdout(&nobody));
        assert!(stderr(&nobody).contains("no account nobody"), "--services {services}: {}", stderr(&nobody));
    }
}

#[test]
fn a_killed_server_keeps_every_message_it_said_it_stored() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let args = [&FAST[..], &["--inbox-cap", "20000"]].concat();
    let mut s = serve_env(dir.path(), &args, &[ADMIN]);
    let addr = s.addr.clone();
    rt.block_on(async {
        let carol = login(&addr, "carol", "carol's long password").await;
        carol.call_console("account.logout", "{}").await.unwrap();
    });
    // Senders store messages m0..m9999 for carol, 64 at a time, noting each "stored".
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (acked, count, addr) = (acked.clone(), count.clone(), addr.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let admin = login(&addr, "admin", ADMIN.1).await;
                let next = Arc::new(AtomicUsize::new(0));
                let mut tasks = Vec::new();
                for _ in 0..64 {
                    let (peer, next, acked, count) =
                        (admin.peer().clone(), next.clone(), acked.clone(), count.clone());
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Relaxed);
                            if i >= MESSAGES {
                                return;
                            }
                            let opts = SendOptions { id: Some(format!("m{i}")), ..SendOptions::default() };
                            match client::send(&peer, "carol", "note", &format!("text {i}"), opts).await {
                                Ok(r) if r.stored.is_some() => {
                                    acked.lock().unwrap().insert(i);
                                    count.fetch_add(1, Relaxed);
                                }
                                Ok(r) => panic!("not stored: {r:?}"),
                                // The server is gone.
                                Err(_) => return,
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while count.load(Relaxed) < 2_000 {
        assert!(Instant::now() < deadline, "the senders never got going");
        assert!(!sending.is_finished(), "the senders stopped early");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.child.kill().unwrap(); // SIGKILL, mid-flow
    s.child.wait().unwrap();
    sending.join().unwrap();
    let acked: HashSet<usize> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 2_000 && acked.len() < MESSAGES, "killed midway: {} acknowledged", acked.len());

    let s = serve_env(dir.path(), &args, &[ADMIN]);
    rt.block_on(async {
        let carol = login(&s.addr, "carol", "carol's long password").await;
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let (page, more) = client::list(carol.peer(), after, 1000).await.unwrap();
            ids.extend(page.iter().map(|m| m.id.clone()));
            after = page.last().map_or(after, |m| m.seq);
            if !more {
                break;
            }
        }
        let present: HashSet<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(present.len(), ids.len(), "no message twice");
        for i in &acked {
            assert!(
                present.contains(format!("m{i}").as_str()),
                "m{i} was acknowledged as stored and is gone"
            );
        }
        // The senders retry everything while carol is away: what is there is not stored again.
        carol.call_console("account.logout", "{}").await.unwrap();
        let admin = login(&s.addr, "admin", ADMIN.1).await;
        let retries = (0..MESSAGES).map(|i| {
            let peer = admin.peer().clone();
            async move {
                let opts = SendOptions { id: Some(format!("m{i}")), ..SendOptions::default() };
                client::send(&peer, "carol", "note", &format!("text {i}"), opts).await.unwrap().duplicate
            }
        });
        let mut duplicates = 0;
        let mut retries = futures_util::stream::iter(retries).buffer_unordered(64);
        while let Some(d) = retries.next().await {
            duplicates += d as usize;
        }
        assert_eq!(duplicates, ids.len());
        // Exactly once each.
        let req = json!({ "user": "carol", "password": "carol's long password" }).to_string();
        carol.call_console("account.login", req).await.unwrap();
        let mut seen = HashSet::new();
        let handled = client::drain(carol.peer(), |m| {
            assert!(seen.insert(m.id.clone()), "{} delivered twice", m.id);
            async { true }
        })
        .await
        .unwrap();
        assert_eq!(handled, MESSAGES);
    });
}
