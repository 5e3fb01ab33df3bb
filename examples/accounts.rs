//! Accounts: a server composed of the accounts service and a command of its own that only
//! logged-in users may call; registration, login by password and by token, an admin who
//! lists who is online; then the same server deciding logins with an authenticator of the
//! application's (the original's VirtualAuth).
//!
//! cargo run -p zs-examples --example accounts

use std::sync::Arc;

use serde_json::json;
use zs::{Client, Router, Server, ServerConfig};
use zs_services::accounts::{Accounts, AccountsConfig, Credentials, HashCost, Verdict};

/// The application's own command: a note kept in the caller's account directory.
fn app_commands(router: &mut Router, accounts: &Accounts) {
    let accounts = accounts.clone();
    router
        .console("notes.add", move |peer, text| {
            let who = peer.user().expect("requires_login let only logged-in callers in");
            let dir = accounts.user_dir(&who.user).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("note.txt"), text.as_str()).map_err(|e| e.to_string())?;
            Ok::<_, String>(format!("kept for {}", who.user))
        })
        .requires_login();
}

/// Calls `command` with a JSON request; the reply as JSON.
async fn call(
    client: &Client,
    command: &str,
    request: serde_json::Value,
) -> Result<serde_json::Value, zs::CallError> {
    let reply = client.call_console(command, request.to_string()).await?;
    Ok(serde_json::from_str(reply.as_str()).unwrap_or_else(|_| json!(reply.as_str())))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zs-accounts-example-{}", std::process::id()));

    // 1. The built-in store, with registration open. On first start it makes `admin`.
    let mut config = AccountsConfig::new(&dir);
    config.allow_register = true;
    config.admin_password = Some("admin password for the example".into());
    config.hash = HashCost::default(); // argon2id, 19 MiB, 2 passes: OWASP's minimum
    let (accounts, _) = Accounts::open(config).await?;
    let mut router = Router::new();
    app_commands(&mut router, &accounts);
    router.mount(accounts);
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    let key = server.fingerprint().expect("a Noise server has a key");

    let alice = Client::connect(server.local_addr(), key).await?;
    // Before logging in, the command is refused with NotLoggedIn.
    println!("before login: {}", call(&alice, "notes.add", json!("hello")).await.unwrap_err());
    call(&alice, "account.register", json!({ "user": "alice", "password": "correct horse battery" })).await?;
    let login = json!({ "user": "alice", "password": "correct horse battery", "issue_token": true });
    let token = call(&alice, "account.login", login).await?["token"].clone();
    println!("logged in: {}", call(&alice, "account.whoami", json!({})).await?);
    println!("{}", alice.call_console("notes.add", "hello").await?);

    // A new connection logs in with the token: the client keeps no password.
    let again = Client::connect(server.local_addr(), key).await?;
    call(&again, "account.login", json!({ "token": token })).await?;
    println!("by token: {}", call(&again, "account.whoami", json!({})).await?);

    // A wrong password says only that the login failed, never whether the account exists.
    let stranger = Client::connect(server.local_addr(), key).await?;
    let wrong = call(&stranger, "account.login", json!({ "user": "alice", "password": "guess" })).await;
    println!("wrong password: {}", wrong.unwrap_err());

    // The admin sees who is online.
    let admin = Client::connect(server.local_addr(), key).await?;
    call(&admin, "account.login", json!({ "user": "admin", "password": "admin password for the example" }))
        .await?;
    println!("online: {}", call(&admin, "account.online", json!({})).await?);
    server.shutdown().await;

    // 2. Logins decided by the application, later (e.g. by asking another database).
    let mut config = AccountsConfig::new(dir.join("second"));
    config.admin_password = Some("admin password for the example".into());
    config.authenticator = Some(Arc::new(|c: Credentials| async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        match c.password == "from the directory" {
            true => Verdict::Accept(zs::Identity::new(c.user, ["user"])),
            false => Verdict::Reject(format!("{} is not in the directory", c.user)),
        }
    }));
    let (accounts, _) = Accounts::open(config).await?;
    let mut router = Router::new();
    router.mount(accounts);
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;
    let client = Client::connect(server.local_addr(), server.fingerprint().unwrap()).await?;
    let login = json!({ "user": "bob", "password": "from the directory" });
    println!("authenticator: {}", call(&client, "account.login", login).await?);
    server.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
