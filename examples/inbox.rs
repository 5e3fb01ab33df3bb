//! Push and the offline inbox: a server of accounts and push; the application sends a user
//! a command on every device it is logged in on; a user who is away finds its messages
//! waiting after login, in order, and acknowledges them; a topic with presence events.
//!
//! cargo run -p zs-examples --example inbox

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use zs::{Client, ClientConfig, Router, Server, ServerConfig};
use zs_services::accounts::{Accounts, AccountsConfig, HashCost};
use zs_services::push::client::{self, SendOptions};
use zs_services::push::{Message, Push, PushConfig, INBOX_WAITING, PRESENCE_EVENT};

/// A client logged in as `user` (registered if new) that prints what it is pushed.
async fn device(
    server: &zs::ServerHandle,
    user: &str,
    label: &str,
) -> Result<Client, Box<dyn std::error::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut router = Router::new();
    for command in ["note", INBOX_WAITING, PRESENCE_EVENT] {
        let (tx, label) = (tx.clone(), label.to_owned());
        router.direct_console(command, move |_peer, text| {
            let _ = tx.send(format!("{label} got {command}: {text}"));
        });
    }
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            println!("{line}");
        }
    });
    let client =
        Client::connect_with(server.local_addr(), router, ClientConfig::secured(server.client_security()))
            .await?;
    let req = json!({ "user": user, "password": "a long password" }).to_string();
    if client.call_console("account.login", req.clone()).await.is_err() {
        client.call_console("account.register", req).await?;
    }
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zs-inbox-example-{}", std::process::id()));
    let mut ac = AccountsConfig::new(dir.join("accounts"));
    ac.allow_register = true;
    ac.hash = HashCost::insecure_fast(); // an example: real servers keep the default cost
    let (accounts, _) = Accounts::open(ac).await?;
    let push = Push::open(PushConfig::new(dir.join("push")))?;
    let mut router = Router::new();
    router.mount(accounts).mount(push.clone());
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;

    // Alice on two devices: one push reaches both.
    let phone = device(&server, "alice", "alice's phone").await?;
    let _laptop = device(&server, "alice", "alice's laptop").await?;
    let report = push.send("alice", Message::new("note", "lunch at noon?")).await;
    println!("to alice: live on {} connection(s)", report.live);

    // Bob is away: the messages wait, on disk, in order.
    let bob = device(&server, "bob", "bob").await?;
    bob.call_console("account.logout", "{}").await?;
    for (i, text) in ["your order shipped", "it arrives tomorrow"].iter().enumerate() {
        let m = Message { id: Some(format!("order-17-{i}")), ..Message::new("note", *text) };
        let r = push.send("bob", m).await;
        println!("to bob: stored as #{:?}", r.stored);
    }
    let bob = device(&server, "bob", "bob").await?; // hears inbox.waiting {"count":2}
    let handled = client::drain(bob.peer(), |m| {
        println!("bob reads #{} from {:?}: {}", m.seq, m.from, m.text);
        async { true } // acknowledged: removed from the inbox
    })
    .await?;
    println!("bob handled {handled}; left: {}", client::list(bob.peer(), 0, 10).await?.0.len());

    // A topic: alice watches who comes and goes.
    client::subscribe(phone.peer(), "room.lobby", true).await?;
    client::subscribe(bob.peer(), "room.lobby", false).await?;
    println!(
        "delivered to {} subscriber(s)",
        client::publish(bob.peer(), "room.lobby", "note", "hi all").await?
    );
    let who = client::presence(phone.peer(), "room.lobby").await?;
    println!("in the lobby: {:?}", who.users);
    let opts = SendOptions { store: false, ..SendOptions::default() };
    let refused = client::send(bob.peer(), "alice", "note", "psst", opts).await;
    println!("bob may not push to users: {}", refused.unwrap_err());

    tokio::time::sleep(Duration::from_millis(400)).await; // let the presence event print
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
