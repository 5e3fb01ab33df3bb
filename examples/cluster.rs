//! A cluster of two nodes in one process, joined through a NATS server: a push sent on one
//! node reaches a user on the other; the user's node goes away and its `Failover` client
//! moves to the other node and logs in again by its cluster token, with no action of its
//! own; the next push reaches it there.
//!
//! Needs a NATS server with JetStream: `nats-server -js` (Debian's package nats-server),
//! then `cargo run -p zs-examples --example cluster` (ZS_NATS=nats://HOST:PORT to use another).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use zs::secure::NoiseServer;
use zs::{
    Client, ClientConfig, Failover, FailoverConfig, KeyPair, Router, Server, ServerConfig, ServerHandle,
    ServerSecurity,
};
use zs_services::accounts::{Accounts, AccountsConfig};
use zs_services::cluster::{Cluster, ClusterConfig, ClusterTokens, JetStreamInbox};
use zs_services::push::{Push, PushConfig, SendPolicy};

/// One node: accounts (tokens the cluster's), push through the cluster, the cluster's commands.
async fn node(
    name: &str,
    url: &str,
    key: &KeyPair,
) -> Result<(ServerHandle, Cluster), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zs-cluster-example-{}-{name}", std::process::id()));
    let cluster = Cluster::join(ClusterConfig::new(url, name)).await?;
    let mut accounts = AccountsConfig::new(dir.join("accounts"));
    accounts.allow_register = true;
    accounts.token_authority = Some(Arc::new(ClusterTokens::open(cluster.nats().clone()).await?));
    let (accounts, _) = Accounts::open(accounts).await?;
    let mut push = PushConfig::new(dir.join("push"));
    push.send_policy = SendPolicy::LoggedIn;
    push.broker = Some(Arc::new(cluster.clone()));
    let inbox = JetStreamInbox::open(cluster.nats().clone(), 1_000, push.max_ttl).await?;
    push.inbox_store = Some(Arc::new(inbox));
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(Push::open(push)?);
    router.mount(cluster.clone());
    // Every node presents the same key, so a client pinned to it may go to any of them.
    let security = ServerSecurity::Noise(NoiseServer { key: Some(key.clone()), allowed_clients: None });
    let server =
        Server::bind("127.0.0.1:0", router, ServerConfig { security, ..ServerConfig::default() }).await?;
    cluster.set_addrs(vec![server.local_addr().to_string()]);
    Ok((server, cluster))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ZS_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let key = KeyPair::generate();
    let (a, cluster_a) = node("a", &url, &key).await?;
    let (b, _cluster_b) = node("b", &url, &key).await?;
    let client_config = ClientConfig::secured(key.public());
    let who = json!({ "user": "alice", "password": "alice's long password", "issue_token": true });

    // Alice registers on node a and takes a token that every node accepts.
    let first = Client::connect_with(a.local_addr(), Router::new(), client_config.clone()).await?;
    let register = json!({ "user": "alice", "password": "alice's long password" });
    first.call_console("account.register", register.to_string()).await?;
    let reply: serde_json::Value =
        serde_json::from_str(first.call_console("account.login", who.to_string()).await?.as_str())?;
    let token = reply["token"].as_str().unwrap_or_default().to_owned();
    first.close();

    // Her app: a Failover client of both nodes, logging in by token on each connection.
    let (tx, mut notes) = mpsc::unbounded_channel();
    let mut config =
        FailoverConfig::new([a.local_addr().to_string(), b.local_addr().to_string()], client_config.clone());
    config.router = Arc::new(move || {
        let tx = tx.clone();
        let mut r = Router::new();
        r.direct_console("note", move |_, text| {
            let _ = tx.send(text.as_str().to_owned());
        });
        r
    });
    config.on_connect = Some(Arc::new(move |peer: zs::Peer| {
        let login = json!({ "token": token }).to_string();
        Box::pin(async move {
            peer.call_console("account.login", login).await.map(|_| ()).map_err(|e| e.to_string())
        })
    }));
    let alice = Failover::connect(config).await?;
    println!("alice is on node a ({:?})", alice.connected_to());

    // Bob, on node b, sends to alice: node b finds her on node a through the cluster.
    let bob = Client::connect_with(b.local_addr(), Router::new(), client_config).await?;
    let bob_login = json!({ "user": "bob", "password": "bob's long password" }).to_string();
    bob.call_console("account.register", bob_login).await?;
    let send = json!({ "user": "alice", "command": "note", "text": "hello from node b" }).to_string();
    // The nodes learn who is where within a few milliseconds of a login.
    let mut report = String::new();
    for _ in 0..100 {
        report = bob.call_console("push.send", send.clone()).await?.as_str().to_owned();
        if report.contains("\"live\":1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("bob's send: {report}; alice got {:?}", notes.recv().await);

    // Node a goes away: alice's client moves to node b and logs in again by itself.
    let made = alice.connections_made();
    cluster_a.leave().await;
    a.shutdown().await;
    alice.reconnected_after(made).await;
    println!("alice is now on node b ({:?})", alice.connected_to());
    let again = json!({ "user": "alice", "command": "note", "text": "still there?" }).to_string();
    println!(
        "bob's send: {}; alice got {:?}",
        bob.call_console("push.send", again).await?.as_str(),
        notes.recv().await
    );
    alice.close();
    Ok(())
}
