//! Three `zs serve` nodes and a NATS server (Debian's `nats-server`, with JetStream) on
//! loopback: a send to a user reaches it on another node, topic publishes and presence span
//! the nodes, `zs cluster status` and `cluster.route` see every node with its load, a node
//! killed with SIGKILL is forgotten (its users leave their topics) and loses no offline
//! message it acknowledged, and a drained node sends its clients to another node.

mod common;

use std::io::BufRead;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zs::{Client, ClientConfig, Router};
use zs_bench::nats::NatsServer;

const PATIENCE: Duration = Duration::from_secs(60);

/// A `nats-server -js` on a free loopback port (.ci/run installs Debian's package).
fn nats() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

fn node(nats: &NatsServer, name: &str, extra: &[&str]) -> Served {
    let base = ["--plaintext", "--insecure-fast-hashing", "--allow-register", "--user-push"];
    let cluster = ["--cluster", &nats.url, "--node", name];
    serve_with(&[&base[..], &cluster[..], extra].concat())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// A logged-in client of `addr` (registered there if new) whose pushes of `commands` come
/// out of the channel as (command, text).
async fn user(
    addr: &str,
    name: &str,
    commands: &[&'static str],
) -> (Client, mpsc::UnboundedReceiver<(String, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    for &c in commands {
        let tx = tx.clone();
        r.direct_console(c, move |_peer, text| {
            let _ = tx.send((c.to_owned(), text.as_str().to_owned()));
        });
    }
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let c = Client::connect_with(addr.parse::<std::net::SocketAddr>().unwrap(), r, config).await.unwrap();
    let req = json!({ "user": name, "password": format!("{name}'s long password") }).to_string();
    if c.call_console("account.login", req.clone()).await.is_err() {
        c.call_console("account.register", req).await.unwrap();
    }
    (c, rx)
}

async fn call(c: &Client, command: &str, req: Value) -> Value {
    let reply = c.call_console(command, req.to_string()).await.unwrap_or_else(|e| panic!("{command}: {e}"));
    serde_json::from_str(reply.as_str()).unwrap()
}

/// Calls until `done` holds of the answer (the cluster converges within a heartbeat or
/// two); the last answer.
async fn until(c: &Client, command: &str, req: Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = call(c, command, req.clone()).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{command} {req} never came to pass: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polls the cluster's state; bounded above
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, String)>, command: &str) -> Value {
    loop {
        let (c, text) = tokio::time::timeout(PATIENCE, rx.recv()).await.expect("a push").expect("open");
        if c == command {
            return serde_json::from_str(&text).unwrap_or(Value::String(text));
        }
    }
}

#[test]
fn users_topics_and_presence_span_the_nodes_and_a_drained_node_sends_its_clients_on() {
    let nats = nats();
    let n1 = node(&nats, "n1", &[]);
    let mut n2 = node(&nats, "n2", &["--admin", "127.0.0.1:0"]);
    let mut admin_line = String::new();
    n2.out.read_line(&mut admin_line).unwrap(); // node line
    while !admin_line.contains("admin API on") {
        admin_line.clear();
        n2.out.read_line(&mut admin_line).unwrap();
    }
    let admin = admin_line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let n3 = node(&nats, "n3", &["--services", "accounts,push"]);
    let rt = runtime();
    rt.block_on(async {
        let (alice, mut alice_rx) =
            user(&n1.addr, "alice", &["chat.msg", "presence.event", "room.say"]).await;
        let (bob, _) = user(&n2.addr, "bob", &[]).await;
        let (carol, mut carol_rx) = user(&n3.addr, "carol", &["room.say", "zs.draining"]).await;

        // Every node is listed, with its services and address.
        let nodes =
            until(&bob, "cluster.nodes", json!({}), |v| v["nodes"].as_array().unwrap().len() == 3).await;
        let names: Vec<&str> =
            nodes["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert!(nodes["nodes"][0]["addrs"][0] == n1.addr.as_str(), "{nodes}");
        assert!(nodes["nodes"][2]["services"].as_array().unwrap().contains(&json!("push")), "{nodes}");

        // A send on n2 reaches alice on n1, live.
        until(&bob, "push.online", json!({ "users": ["alice"] }), |v| v["users"]["alice"] == 1).await;
        let sent =
            call(&bob, "push.send", json!({ "user": "alice", "command": "chat.msg", "text": "hi from n2" }))
                .await;
        assert_eq!(sent["live"], 1, "{sent}");
        assert_eq!(next(&mut alice_rx, "chat.msg").await, json!("hi from n2"));
        // 300 at once (batched per node on the way): each answered live, each received once.
        let sends = (0..300).map(|i| {
            let req = json!({ "user": "alice", "command": "chat.msg", "text": format!("m{i}") });
            call(&bob, "push.send", req)
        });
        for sent in futures_util::future::join_all(sends).await {
            assert_eq!(sent["live"], 1, "{sent}");
        }
        let mut got = std::collections::HashSet::new();
        while got.len() < 300 {
            assert!(got.insert(next(&mut alice_rx, "chat.msg").await), "a message came twice");
        }

        // A topic with members on n1 and n3: a publish on n2 reaches both; presence counts both.
        call(&alice, "push.subscribe", json!({ "topic": "room", "presence": true })).await;
        call(&carol, "push.subscribe", json!({ "topic": "room" })).await;
        let p = until(&bob, "push.presence", json!({ "topic": "room" }), |v| v["count"] == 2).await;
        assert_eq!(p["users"], json!(["alice", "carol"]));
        assert_eq!(p["connections"], 2);
        let published =
            call(&bob, "push.publish", json!({ "topic": "room", "command": "room.say", "text": "all" }))
                .await;
        assert_eq!(published["delivered"], 2, "{published}");
        assert_eq!(next(&mut alice_rx, "room.say").await, json!("all"));
        assert_eq!(next(&mut carol_rx, "room.say").await, json!("all"));
        // Alice (on n1) hears carol (on n3) join, then leave.
        loop {
            let e = next(&mut alice_rx, "presence.event").await;
            if e["joined"].as_array().unwrap().contains(&json!("carol")) {
                break;
            }
        }
        call(&carol, "push.unsubscribe", json!({ "topic": "room" })).await;
        loop {
            let e = next(&mut alice_rx, "presence.event").await;
            if e["left"].as_array().unwrap().contains(&json!("carol")) {
                assert_eq!(e["count"], 1, "{e}");
                break;
            }
        }

        // A broadcast on n2 reaches every logged-in connection of every node.
        let sent = call(&bob, "push.broadcast", json!({ "command": "room.say", "text": "to all" })).await;
        assert!(sent["delivered"].as_u64().unwrap() >= 3, "alice, bob, carol at least: {sent}");
        assert_eq!(next(&mut alice_rx, "room.say").await, json!("to all"));
        assert_eq!(next(&mut carol_rx, "room.say").await, json!("to all"));

        // Routing by load: the node with fewest connections that serves a service. n3 serves
        // no data store; n1 and n2 get five more connections each.
        for _ in 0..10 {
            let db = call(&bob, "cluster.route", json!({ "service": "db" })).await;
            assert_ne!(db["node"], "n3", "n3 serves no db: {db}");
        }
        let config = || ClientConfig::secured(zs::ClientSecurity::Plaintext);
        let mut extra = Vec::new();
        for addr in [&n1.addr, &n2.addr].iter().flat_map(|a| std::iter::repeat_n(*a, 5)) {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            extra.push(Client::connect_with(addr, Router::new(), config()).await.unwrap());
        }
        let route = until(&bob, "cluster.route", json!({ "service": "push" }), |v| v["node"] == "n3").await;
        assert_eq!(route["addrs"][0], n3.addr.as_str(), "{route}");
        drop(extra);
        let none = bob.call_console("cluster.route", json!({ "service": "nothing" }).to_string()).await;
        assert!(none.unwrap_err().to_string().contains("no live node serves nothing"));

        // Draining n3 (through n2's admin API it would be n2; n3 here by SIGUSR1 is covered in
        // drain.rs): n2 drained, its client is told to go to another node.
        let (dora, mut dora_rx) = user(&n2.addr, "dora", &["zs.draining"]).await;
        let drained = Command::new(ZS).args(["admin", "drain", "--admin", &admin]).output().unwrap();
        assert!(drained.status.success(), "{}", stderr(&drained));
        let hint = next(&mut dora_rx, "zs.draining").await;
        let to = hint["hint"].as_str().unwrap();
        assert!(to == n1.addr || to == n3.addr, "a drained node sends its clients to another: {hint}");
        dora.close();
        bob.close();
        drop(carol_rx);
    });
    // `zs cluster status` lists the nodes that are left.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = Command::new(ZS).args(["cluster", "status", "--cluster", &nats.url]).output().unwrap();
        let table = stdout(&out);
        if table.contains("n1") && table.contains("n3") && !table.contains("n2 ") {
            assert!(table.contains(&n1.addr) && table.contains("serving"), "{table}");
            break;
        }
        assert!(Instant::now() < deadline, "zs cluster status: {table} {}", stderr(&out));
    }
}

#[test]
fn a_killed_node_is_forgotten_and_loses_no_message_it_acknowledged() {
    let nats = nats();
    let n1 = node(&nats, "n1", &[]);
    let mut n2 = node(&nats, "n2", &[]);
    let rt = runtime();
    rt.block_on(async {
        let (alice, mut alice_rx) = user(&n1.addr, "alice", &["presence.event"]).await;
        let (erin, _) = user(&n2.addr, "erin", &[]).await;
        // Erin registers on n1 too (each node keeps its accounts) and goes offline there.
        let (e1, _) = user(&n1.addr, "erin", &[]).await;
        e1.close();
        let (frank, _) = user(&n2.addr, "frank", &[]).await;
        call(&alice, "push.subscribe", json!({ "topic": "lobby", "presence": true })).await;
        call(&frank, "push.subscribe", json!({ "topic": "lobby" })).await;
        until(&alice, "push.presence", json!({ "topic": "lobby" }), |v| v["count"] == 2).await;
        // Erin goes offline; frank (on n2) sends her 50 messages: stored, in the cluster's inbox.
        erin.close();
        until(&frank, "push.online", json!({ "users": ["erin"] }), |v| v["users"]["erin"] == 0).await;
        let mut acked = Vec::new();
        for i in 0..50 {
            let r = call(
                &frank,
                "push.send",
                json!({ "user": "erin", "command": "note", "text": format!("m{i}"), "id": format!("id{i}") }),
            )
            .await;
            assert!(r["stored"].is_u64(), "{r}");
            acked.push(r["stored"].as_u64().unwrap());
        }
        // n2 dies at once.
        n2.child.kill().unwrap();
        n2.child.wait().unwrap();
        // n1 forgets it: frank leaves the lobby.
        loop {
            let e = next(&mut alice_rx, "presence.event").await;
            if e["left"].as_array().unwrap().contains(&json!("frank")) {
                assert_eq!(e["count"], 1, "{e}");
                break;
            }
        }
        // Erin logs in on n1: she is told of the 50 and lists every one, in order.
        let (erin, mut erin_rx) = user(&n1.addr, "erin", &["inbox.waiting"]).await;
        assert_eq!(next(&mut erin_rx, "inbox.waiting").await["count"], 50);
        let listed = call(&erin, "inbox.list", json!({ "limit": 1000 })).await;
        let texts: Vec<&str> =
            listed["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        let want: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, want);
        let seqs: Vec<u64> =
            listed["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, acked, "the sequence numbers the sender was told");
        // A resend of an id is not stored twice; another user cannot acknowledge erin's.
        let again = call(
            &alice,
            "push.send",
            json!({ "user": "erin", "command": "note", "text": "m0", "id": "id0", "store": true }),
        )
        .await;
        assert_eq!(again["live"], 1, "erin is online now: {again}");
        let stolen = call(&alice, "inbox.ack", json!({ "seqs": seqs })).await;
        assert_eq!(stolen["removed"], 0);
        let removed = call(&erin, "inbox.ack", json!({ "seqs": seqs })).await;
        assert_eq!(removed["removed"], 50);
        let empty = call(&erin, "inbox.list", json!({})).await;
        assert_eq!(empty["messages"], json!([]));
    });
}

#[test]
fn a_client_of_a_killed_node_logs_in_again_on_another_by_token() {
    use std::sync::{Arc, Mutex};
    let nats = nats();
    let mut n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let rt = runtime();
    rt.block_on(async {
        // Alice has an account on n1 only; her token is the cluster's.
        let (a, _) = user(&n1.addr, "alice", &[]).await;
        let issued = call(&a, "account.token", json!({})).await;
        let token = issued["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("zsc_"), "{token}");
        a.close();

        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let mut config = zs::FailoverConfig::new(
            [dead, n1.addr.clone(), n2.addr.clone()],
            ClientConfig::secured(zs::ClientSecurity::Plaintext),
        );
        let logins = Arc::new(Mutex::new(Vec::new()));
        let (t, seen) = (token.clone(), logins.clone());
        config.on_connect = Some(Arc::new(move |peer: zs::Peer| {
            let (t, seen) = (t.clone(), seen.clone());
            Box::pin(async move {
                peer.call_console("account.login", json!({ "token": t }).to_string())
                    .await
                    .map_err(|e| format!("the login by token failed: {e}"))?;
                seen.lock().unwrap().push(peer.remote_addr().to_string());
                Ok(())
            })
        }));
        let f = zs::Failover::connect(config).await.unwrap();
        assert_eq!(f.connected_to().unwrap().to_string(), n1.addr, "the dead endpoint is passed over");
        let who: Value =
            serde_json::from_str(f.call_console("account.whoami", "{}").await.unwrap().as_str()).unwrap();
        assert_eq!(who["user"], "alice");

        // n1 dies: the client moves to n2 and is alice there, with no account on n2.
        n1.child.kill().unwrap();
        n1.child.wait().unwrap();
        tokio::time::timeout(PATIENCE, f.reconnected_after(1)).await.expect("connected again");
        assert_eq!(f.connected_to().unwrap().to_string(), n2.addr);
        let who: Value =
            serde_json::from_str(f.call_console("account.whoami", "{}").await.unwrap().as_str()).unwrap();
        assert_eq!(who["user"], "alice", "{who}");
        assert_eq!(*logins.lock().unwrap(), [n1.addr.clone(), n2.addr.clone()]);

        // A token altered by one character is refused; a revoked one too, on any node.
        let (other, _) = user(&n2.addr, "bob", &[]).await;
        // (A character inside the signature: all six of its bits count.)
        let mut forged = token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let refused = other.call_console("account.login", json!({ "token": forged }).to_string()).await;
        assert!(refused.is_err(), "a forged token logged in");
        f.call_console("account.revoke", "{}").await.unwrap();
        let revoked = other.call_console("account.login", json!({ "token": token }).to_string()).await;
        assert!(revoked.is_err(), "a revoked token logged in");
        f.close();
    });
}

#[test]
fn cluster_arguments_and_unreachable_servers_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let serve = |extra: &[&str]| {
        let base = ["serve", "--listen", "127.0.0.1:0", "--plaintext", "--data-dir", data];
        zs(&[&base[..], extra].concat())
    };
    let refused = |o: std::process::Output, why: &str| {
        assert!(!o.status.success(), "accepted: {}", stdout(&o));
        assert!(stderr(&o).contains(why), "{why:?} not in: {}", stderr(&o));
    };
    refused(serve(&["--node", "n1"]), "give --cluster too");
    let nats = nats();
    refused(serve(&["--cluster", &nats.url]), "needs --node");
    refused(serve(&["--cluster", &nats.url, "--node", "a.b"]), "cannot be a node name");
    refused(zs(&["cluster", "status", "--cluster", "nats://127.0.0.1:1"]), "cannot reach the cluster");
    refused(zs(&["cluster", "status", "--cluster", &nats.url, "--wait", "0.2"]), "no node of the cluster");
    refused(zs(&["admin", "drain", "--admin", "127.0.0.1:1"]), "cannot reach 127.0.0.1:1");
}
