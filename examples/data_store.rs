//! The data store: a database with an index, records with versions (compare-and-set), a
//! query whose rows stream under the client's credit, and a watch of live changes.
//!
//! cargo run -p zs-examples --example data_store

use serde_json::json;
use zs::{Client, ClientConfig, Router, Server, ServerConfig};
use zs_services::accounts::{Accounts, AccountsConfig};
use zs_services::db::client::{CreateOptions, DbClient, Feeds, Query, WatchEvent};
use zs_services::db::{Data, Db, DbConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zs-data-store-{}", std::process::id()));
    let mut accounts = AccountsConfig::new(dir.join("accounts"));
    accounts.admin_password = Some("correct horse battery staple".into());
    let (accounts, _) = Accounts::open(accounts).await?;
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(Db::open(DbConfig::new(dir.join("db")))?);
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;

    // The client mounts the feeds that carry rows and changes.
    let feeds = Feeds::default();
    let mut r = Router::new();
    r.mount(feeds.clone());
    let c =
        Client::connect_with(server.local_addr(), r, ClientConfig::secured(server.client_security())).await?;
    let login = json!({ "user": "admin", "password": "correct horse battery staple" });
    c.call_console("account.login", login.to_string()).await?;
    let db = DbClient::new(c.peer().clone(), feeds);

    db.create("sensors", CreateOptions { indexes: vec!["room".into()], ..Default::default() }).await?;
    let mut watch = db.watch("sensors", "celsius > 30", Default::default(), false).await?;
    let readings: Vec<Data> = (0..1000)
        .map(|i| Data::Json(json!({ "room": format!("r{}", i % 10), "celsius": 15 + i % 20 })))
        .collect();
    let ids = db.insert_many("sensors", &readings).await?;
    println!("inserted {} readings in one durable commit", ids.len());

    // Compare-and-set: only one of two writers holding version 1 wins.
    let first =
        db.update("sensors", ids[0], Data::Json(json!({ "room": "r0", "celsius": 31 })), Some(1)).await;
    let second =
        db.update("sensors", ids[0], Data::Json(json!({ "room": "r0", "celsius": 12 })), Some(1)).await;
    println!("first writer: {first:?}; second writer: {}", second.unwrap_err());
    if let Some(Ok(WatchEvent::Insert(r))) = watch.next().await {
        println!("the watch saw reading {} pass 30 °C", r.id);
    }

    // Through the index on `room`, 100 records are read, not 1,000; rows come 25 at a time.
    let q = Query { window: Some(50), ..Query::new("sensors", "room == $room and celsius >= 25") }
        .param("room", "r4");
    let mut rows = db.query(&q).await?;
    let mut n = 0;
    while let Some(batch) = rows.next_batch().await {
        n += batch?.len();
    }
    println!("{n} warm readings in room r4, {} records examined", rows.examined());
    println!("readings under 20 °C: {}", db.count(&Query::new("sensors", "celsius < 20")).await?);
    server.shutdown().await;
    Ok(())
}
