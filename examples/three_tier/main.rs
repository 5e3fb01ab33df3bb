//! The seed's "standard three-tier paradigm" as three processes: a data-store server (the
//! accounts and data store services), an internet-facing server that answers its clients'
//! business-card commands by forwarding them to the store and replying later (delayed
//! replies: the original's event bridge), and a client that adds, finds, changes and
//! removes cards.
//!
//! cargo run -p zs-examples --example three_tier
//!
//! With no argument it runs all three: the store and the front end as child processes of
//! this program, the client in it. `three_tier store`, `three_tier front STORE_ADDR KEY`
//! and `three_tier client FRONT_ADDR KEY` run one tier each.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{json, Value};
use zs::{
    CallError, Client, ClientConfig, Fingerprint, HandlerError, Identity, Router, Server, ServerConfig,
};
use zs_services::accounts::{Accounts, AccountsConfig, ServiceToken};
use zs_services::db::client::{CreateOptions, DbClient, DbClientError, Feeds, Query};
use zs_services::db::{Data, Db, DbConfig};

/// The secret the front end logs in to the store with (a real deployment reads it from a
/// file or the environment).
const FRONT_SECRET: &str = "front-end secret shared with the store";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["store"] => store().await,
        ["front", addr, key] => front(addr, key).await,
        ["client", addr, key] => client(addr, key).await,
        [] => all_three().await,
        _ => Err("usage: three_tier [store | front STORE_ADDR KEY | client FRONT_ADDR KEY]".into()),
    }
}

/// Starts this program as `tier`; returns it and the address and key it printed.
fn spawn(tier: &[&str]) -> Result<(Child, String, String)> {
    let mut child = Command::new(std::env::current_exe()?).args(tier).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let mut words = line.split_whitespace().skip(1);
    let (addr, key) = (words.next().ok_or("no address")?, words.next().ok_or("no key")?);
    Ok((child, addr.to_owned(), key.to_owned()))
}

async fn all_three() -> Result<()> {
    let (mut store, store_addr, store_key) = spawn(&["store"])?;
    let (mut front, front_addr, front_key) = spawn(&["front", &store_addr, &store_key])?;
    let done = client(&front_addr, &front_key).await;
    for child in [&mut front, &mut store] {
        child.kill()?;
        child.wait()?;
    }
    done
}

/// Tier 3: the data store, reachable only by the front end (its service token).
async fn store() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("zs-three-tier-{}", std::process::id()));
    let mut accounts = AccountsConfig::new(dir.join("accounts"));
    accounts.service_tokens =
        vec![ServiceToken { secret: FRONT_SECRET.into(), identity: Identity::new("front", ["service"]) }];
    let (accounts, _) = Accounts::open(accounts).await?;
    let db = Db::open(DbConfig::new(dir.join("db")))?;
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(db);
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    let key = server.fingerprint().ok_or("a Noise server has a key")?;
    println!("store {} {key}", server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// Tier 2: faces the clients; every card command becomes a call to the store, answered
/// when the store answers (the connection's other calls go on meanwhile).
async fn front(store_addr: &str, store_key: &str) -> Result<()> {
    let feeds = Feeds::default();
    let mut r = Router::new();
    r.mount(feeds.clone());
    let security: zs::ClientSecurity = Fingerprint::from_str(store_key)?.into();
    let link =
        Client::connect_with(store_addr.parse::<std::net::SocketAddr>()?, r, ClientConfig::secured(security))
            .await?;
    link.call_console("account.login", json!({ "service_token": FRONT_SECRET }).to_string()).await?;
    let db = DbClient::new(link.peer().clone(), feeds);
    match db.create("cards", CreateOptions { indexes: vec!["company".into()], ..Default::default() }).await {
        Ok(()) | Err(_) => {} // made, or made by an earlier run of this store
    }
    let db = Arc::new(db);
    let mut router = Router::new();
    for command in ["card.add", "card.get", "card.find", "card.update", "card.remove"] {
        let db = db.clone();
        router.console_delayed(command, move |_peer, text, responder| {
            let db = db.clone();
            tokio::spawn(async move {
                let answer = forward(&db, command, text.as_str()).await;
                responder.reply(answer.map(|v| v.to_string()));
            });
        });
    }
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    let key = server.fingerprint().ok_or("a Noise server has a key")?;
    println!("front {} {key}", server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

fn bad(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::new(e.to_string())
}

/// The store's refusal, passed on with its code (a stale version stays `VersionMismatch`).
fn pass(e: DbClientError) -> HandlerError {
    match e {
        DbClientError::Call(CallError::Remote { code, message }) => HandlerError::with_code(code, message),
        other => bad(other),
    }
}

/// One card command, done on the store.
async fn forward(db: &DbClient, command: &str, text: &str) -> std::result::Result<Value, HandlerError> {
    let req: Value = serde_json::from_str(text).map_err(bad)?;
    let id = || req["id"].as_u64().ok_or_else(|| bad("a card id is a number"));
    match command {
        "card.add" => {
            let (id, _) = db.insert("cards", Data::Json(req["card"].clone()), None).await.map_err(pass)?;
            Ok(json!({ "id": id }))
        }
        "card.get" => match db.get("cards", id()?).await.map_err(pass)? {
            Some(r) => Ok(r.to_json()),
            None => Err(bad("no such card")),
        },
        "card.find" => {
            let q = Query::new("cards", "company == $company").param("company", req["company"].clone());
            let rows = db.query(&q).await.map_err(pass)?.collect().await.map_err(pass)?;
            Ok(Value::Array(rows.iter().map(|r| r.to_json()).collect()))
        }
        "card.update" => {
            let expect = req["version"].as_u64();
            let v = db.update("cards", id()?, Data::Json(req["card"].clone()), expect).await.map_err(pass)?;
            Ok(json!({ "version": v }))
        }
        "card.remove" => Ok(json!({ "removed": db.delete("cards", id()?, None).await.map_err(pass)? })),
        _ => Err(bad("no such command")),
    }
}

/// Tier 1: a client of the front end, which never sees the store.
async fn client(addr: &str, key: &str) -> Result<()> {
    let security: zs::ClientSecurity = Fingerprint::from_str(key)?.into();
    let c = Client::connect_with(
        addr.parse::<std::net::SocketAddr>()?,
        Router::new(),
        ClientConfig::secured(security),
    )
    .await?;
    let call = |command: &'static str, req: Value| {
        let c = &c;
        async move {
            let reply = c.call_console(command, req.to_string()).await?;
            Ok::<Value, Box<dyn std::error::Error + Send + Sync>>(serde_json::from_str(reply.as_str())?)
        }
    };
    let ada =
        call("card.add", json!({ "card": { "name": "Ada Lovelace", "company": "Analytical" } })).await?;
    call("card.add", json!({ "card": { "name": "Charles Babbage", "company": "Analytical" } })).await?;
    call("card.add", json!({ "card": { "name": "Grace Hopper", "company": "Navy" } })).await?;
    let id = ada["id"].clone();
    println!("added Ada as card {id}");
    let found = call("card.find", json!({ "company": "Analytical" })).await?;
    println!("cards at Analytical: {}", found.as_array().map_or(0, Vec::len));
    let card = call("card.get", json!({ "id": id })).await?;
    let v = card["version"].clone();
    let new = json!({ "name": "Ada King", "company": "Analytical", "title": "Countess" });
    let updated = call("card.update", json!({ "id": id, "version": v, "card": new })).await?;
    println!("updated card {id} to version {}", updated["version"]);
    // The same version again is stale: the store refuses it, the front end passes that on.
    let stale =
        c.call_console("card.update", json!({ "id": id, "version": v, "card": {} }).to_string()).await;
    println!("a stale update: {}", stale.err().map_or("accepted?!".into(), |e| e.to_string()));
    call("card.remove", json!({ "id": id })).await?;
    println!(
        "removed card {id}; left at Analytical: {}",
        call("card.find", json!({ "company": "Analytical" })).await?.as_array().map_or(0, Vec::len)
    );
    Ok(())
}
