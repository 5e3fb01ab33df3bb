//! `zs db` as a user meets it, and the data store's durability: a server killed with
//! SIGKILL during 10,000 inserts keeps every insert it acknowledged, whole.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use zs::{Client, ClientConfig, Router};
use zs_services::db::client::{CreateOptions, DbClient, Feeds, Query};
use zs_services::db::Data;

const FAST: [&str; 5] =
    ["--plaintext", "--insecure-fast-hashing", "--allow-register", "--services", "accounts,db"];
const INSERTS: usize = 10_000;

fn zs_db(addr: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(ZS);
    for var in ["ZS_PASSWORD", "ZS_USER", "ZS_SERVER"] {
        cmd.env_remove(var);
    }
    cmd.arg("db")
        .args(args)
        .args(["--server", addr, "--user", "ada", "--plaintext"])
        .env("ZS_PASSWORD", "ada's long password")
        .stdin(Stdio::null());
    cmd
}

fn run(addr: &str, args: &[&str]) -> Output {
    zs_db(addr, args).output().expect("run zs")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "zs failed: {}", stderr(&o));
    stdout(&o)
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A plaintext data store client of `addr`, logged in as ada (registered if new).
async fn ada(addr: &str) -> (Client, DbClient) {
    let feeds = Feeds::default();
    let mut router = Router::new();
    router.mount(feeds.clone());
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let c =
        Client::connect_with(addr.parse::<std::net::SocketAddr>().unwrap(), router, config).await.unwrap();
    let req = json!({ "user": "ada", "password": "ada's long password" }).to_string();
    if c.call_console("account.login", req.clone()).await.is_err() {
        c.call_console("account.register", req).await.unwrap();
    }
    let db = DbClient::new(c.peer().clone(), feeds);
    (c, db)
}

#[test]
fn zs_db_makes_puts_gets_queries_watches_and_drops() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_env(dir.path(), &FAST, &[]);
    runtime().block_on(ada(&s.addr));
    assert_eq!(ok(run(&s.addr, &["create", "cards", "--index", "city"])), "made cards");
    let put = json_lines(&ok(run(&s.addr, &["put", "cards", r#"{"name":"Ada","city":"London"}"#])));
    assert_eq!(put[0]["version"], 1);
    let id = put[0]["id"].as_u64().unwrap().to_string();
    ok(run(&s.addr, &["put", "cards", r#"{"name":"Grace","city":"New York"}"#]));
    let got = json_lines(&ok(run(&s.addr, &["get", "cards", &id])));
    assert_eq!(got[0]["json"]["name"], "Ada");
    // A stale version is refused and says so.
    ok(run(&s.addr, &["put", "cards", r#"{"name":"Ada L."}"#, "--id", &id, "--version", "1"]));
    let stale = run(&s.addr, &["put", "cards", r#"{"name":"Ada?"}"#, "--id", &id, "--version", "1"]);
    assert!(!stale.status.success() && stderr(&stale).contains("version"), "{}", stderr(&stale));
    let found = json_lines(&ok(run(&s.addr, &["query", "cards", "city == $c", "--param", "c=New York"])));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["json"]["name"], "Grace");
    let counted = json_lines(&ok(run(&s.addr, &["query", "cards", "--count"])));
    assert_eq!(counted[0]["count"], 2);
    let bad = run(&s.addr, &["query", "cards", "name =="]);
    assert!(stderr(&bad).contains("at byte 7"), "{}", stderr(&bad));
    // A watch: the snapshot, then the changes as they are committed.
    let mut watch = zs_db(&s.addr, &["watch", "cards", "city prefix \"New\"", "--snapshot", "--count", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = || serde_json::from_str::<Value>(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(next()["change"], "snapshot");
    assert_eq!(next()["change"], "synced");
    ok(run(&s.addr, &["put", "cards", r#"{"name":"Alan","city":"Newcastle"}"#]));
    ok(run(&s.addr, &["put", "cards", r#"{"name":"Edsger","city":"Nuenen"}"#]));
    ok(run(&s.addr, &["del", "cards", &id]));
    let grace = found[0]["id"].as_u64().unwrap().to_string();
    ok(run(&s.addr, &["del", "cards", &grace]));
    let inserted = next();
    assert_eq!(
        (inserted["change"].as_str(), inserted["record"]["json"]["name"].as_str()),
        (Some("insert"), Some("Alan"))
    );
    let deleted = next();
    assert_eq!(
        (deleted["change"].as_str(), deleted["record"]["json"]["name"].as_str()),
        (Some("delete"), Some("Grace"))
    );
    assert!(watch.wait().unwrap().success());
    // Bulk from a file, listing, dropping.
    let file = dir.path().join("lines.jsonl");
    std::fs::write(&file, (0..500).map(|i| format!("{{\"json\":{{\"n\":{i}}}}}\n")).collect::<String>())
        .unwrap();
    assert_eq!(json_lines(&ok(run(&s.addr, &["bulk", "cards", file.to_str().unwrap()])))[0]["inserted"], 500);
    let ls = json_lines(&ok(run(&s.addr, &["ls"])));
    assert_eq!((ls[0]["name"].as_str(), ls[0]["access"].as_str()), (Some("cards"), Some("own")));
    assert_eq!(ok(run(&s.addr, &["drop", "cards"])), "dropped cards");
    let gone = run(&s.addr, &["get", "cards", "1"]);
    assert!(
        stderr(&gone).contains("no record") || stderr(&gone).contains("no database"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn a_killed_server_keeps_every_insert_it_acknowledged_whole() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_env(dir.path(), &FAST, &[]);
    let addr = s.addr.clone();
    rt.block_on(async {
        let (_c, db) = ada(&addr).await;
        db.create("log", CreateOptions::default()).await.unwrap();
    });
    // Writers insert n = 0..9999, 64 at a time, noting each acknowledged id.
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writing = {
        let (acked, count, addr) = (acked.clone(), count.clone(), addr.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let (_c, db) = ada(&addr).await;
                let next = Arc::new(AtomicUsize::new(0));
                let mut tasks = Vec::new();
                for _ in 0..64 {
                    let (db, next, acked, count) = (db.clone(), next.clone(), acked.clone(), count.clone());
                    tasks.push(tokio::spawn(async move {
                        loop {
                            let n = next.fetch_add(1, Relaxed);
                            if n >= INSERTS {
                                return;
                            }
                            let doc = json!({ "n": n, "pad": "x".repeat(n % 700) });
                            match db.insert("log", Data::Json(doc), None).await {
                                Ok((id, 1)) => {
                                    acked.lock().unwrap().insert(id, n);
                                    count.fetch_add(1, Relaxed);
                                }
                                Ok(other) => panic!("a new record at version {other:?}"),
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
        assert!(Instant::now() < deadline, "the writers never got going");
        assert!(!writing.is_finished(), "the writers stopped early");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.child.kill().unwrap(); // SIGKILL, mid-flow
    s.child.wait().unwrap();
    writing.join().unwrap();
    let acked: HashMap<u64, usize> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 2_000 && acked.len() < INSERTS, "killed midway: {} acknowledged", acked.len());

    let s = serve_env(dir.path(), &FAST, &[]);
    rt.block_on(async {
        let (_c, db) = ada(&s.addr).await;
        let rows = db.query(&Query::new("log", "")).await.unwrap().collect().await.unwrap();
        let mut found = HashMap::new();
        for r in &rows {
            // Every record there is whole: its document as it was written.
            let Data::Json(doc) = &r.data else { panic!("record {} is not JSON", r.id) };
            let n = doc["n"].as_u64().unwrap() as usize;
            assert_eq!(doc["pad"].as_str().unwrap().len(), n % 700, "record {} is torn", r.id);
            found.insert(r.id, n);
        }
        for (id, n) in &acked {
            assert_eq!(found.get(id), Some(n), "acknowledged record {id} (n = {n}) is lost");
        }
        assert!(rows.len() >= acked.len());
        // The store goes on: new ids after the old ones.
        let (id, _) = db.insert("log", Data::Json(json!({"n": -1})), None).await.unwrap();
        assert!(rows.iter().all(|r| r.id < id));
    });
}
