//! `zs user`: manage accounts, in the data directory of a stopped server, or through a
//! running server as an administrator (`--server ADDR --user admin`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use zs_services::accounts::{check_password, normalise_name, HashCost, Store, User};

#[derive(Args)]
pub struct UserArgs {
    #[command(subcommand)]
    action: Action,
    /// The data directory of a stopped server (default: $ZS_DATA_DIR, else
    /// ~/.local/share/zserver). Ignored with --server.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    connect: crate::connect::ConnectArgs,
}

#[derive(Subcommand)]
enum Action {
    /// Make an account (its password from $ZS_NEW_PASSWORD, else, offline, $ZS_PASSWORD,
    /// else a prompt).
    Add {
        /// The account's name.
        name: String,
        /// A role (repeatable; default `user`).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List the accounts.
    List,
    /// Set an account's password (from $ZS_NEW_PASSWORD, else, offline, $ZS_PASSWORD, else
    /// a prompt).
    Passwd {
        /// The account's name.
        name: String,
    },
    /// Disable an account (it can no longer log in; its connections are closed).
    Disable {
        /// The account's name.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// The account's name.
        name: String,
    },
    /// Delete an account (its connections are closed, its tokens revoked).
    Del {
        /// The account's name.
        name: String,
    },
}

/// The shortest password `zs user` sets (the server's default minimum).
const MIN_PASSWORD: usize = 8;

pub fn run(args: UserArgs) -> Result<(), String> {
    if args.connect.server.is_some() {
        return crate::runtime()?.block_on(online(&args));
    }
    offline(&args)
}

fn name(raw: &str) -> Result<String, String> {
    normalise_name(raw)
}

/// The password to set for `user`: `$ZS_NEW_PASSWORD`, else (working offline, where no
/// one logs in) `$ZS_PASSWORD`, else a prompt.
fn new_password(user: &str, offline: bool) -> Result<String, String> {
    let from_env = std::env::var("ZS_NEW_PASSWORD")
        .ok()
        .or_else(|| offline.then(|| std::env::var("ZS_PASSWORD").ok()).flatten());
    let p = match from_env {
        Some(p) => p,
        None => crate::connect::ask(&format!("new password for {user}: "))?,
    };
    check_password(&p, MIN_PASSWORD)?;
    Ok(p)
}

fn print_users(users: &[User]) {
    for u in users {
        let state = if u.disabled { " (disabled)" } else { "" };
        println!("{}\t{}{state}", u.name, u.roles.join(","));
    }
}

/// Works on the store directly: the server must be stopped (the store is one process's).
fn offline(args: &UserArgs) -> Result<(), String> {
    let dir = args.data_dir.clone().unwrap_or_else(crate::security::default_data_dir);
    let store = Store::open(&zs_services::accounts::store_dir(&dir)).map_err(|e| {
        format!("{e} (is the server running? then use --server ADDR --user ADMIN to go through it)")
    })?;
    let hash = |p: &str| zs_services::accounts::hash_password(&HashCost::default(), p);
    match &args.action {
        Action::Add { name: raw, roles } => {
            let user = name(raw)?;
            let roles = if roles.is_empty() { vec!["user".to_string()] } else { roles.clone() };
            let p = new_password(&user, true)?;
            store.create(&user, hash(&p)?, roles).map_err(|e| e.to_string())?;
            println!("account {user} created");
        }
        Action::List => print_users(&store.list().map_err(|e| e.to_string())?),
        Action::Passwd { name: raw } => {
            let user = name(raw)?;
            let p = new_password(&user, true)?;
            let h = hash(&p)?;
            store.update(&user, |u| u.hash = h).map_err(|e| e.to_string())?;
            println!("password of {user} set");
        }
        Action::Disable { name: raw } | Action::Enable { name: raw } => {
            let user = name(raw)?;
            let disable = matches!(args.action, Action::Disable { .. });
            store.update(&user, |u| u.disabled = disable).map_err(|e| e.to_string())?;
            println!("account {user} {}", if disable { "disabled" } else { "enabled" });
        }
        Action::Del { name: raw } => {
            let user = name(raw)?;
            store.delete(&user).map_err(|e| e.to_string())?;
            println!("account {user} deleted");
        }
    }
    Ok(())
}

/// Works through a running server, logged in as an administrator.
async fn online(args: &UserArgs) -> Result<(), String> {
    if args.connect.user.is_none() {
        return Err("log in as an administrator: --user NAME (or ZS_USER)".into());
    }
    let client = args.connect.connect().await?;
    let call = |command: &'static str, request: serde_json::Value| {
        let client = &client;
        let timeout = args.connect.timeout;
        async move {
            client
                .call_console_timeout(command, request.to_string(), timeout)
                .await
                .map(|t| t.as_str().to_owned())
                .map_err(|e| format!("{command}: {e}"))
        }
    };
    match &args.action {
        Action::Add { name: raw, roles } => {
            let user = name(raw)?;
            let roles = if roles.is_empty() { vec!["user".to_string()] } else { roles.clone() };
            let password = new_password(&user, false)?;
            call("account.add", json!({ "user": user, "password": password, "roles": roles })).await?;
            println!("account {user} created");
        }
        Action::List => {
            let reply = call("account.list", json!({})).await?;
            let list: Vec<serde_json::Value> = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
            for u in list {
                let roles: Vec<String> = serde_json::from_value(u["roles"].clone()).unwrap_or_default();
                let state = if u["disabled"] == json!(true) { " (disabled)" } else { "" };
                println!("{}\t{}{state}", u["user"].as_str().unwrap_or(""), roles.join(","));
            }
        }
        Action::Passwd { name: raw } => {
            let user = name(raw)?;
            let password = new_password(&user, false)?;
            call("account.set_password", json!({ "user": user, "password": password })).await?;
            println!("password of {user} set");
        }
        Action::Disable { name: raw } => {
            call("account.disable", json!({ "user": name(raw)? })).await?;
            println!("account {raw} disabled");
        }
        Action::Enable { name: raw } => {
            call("account.enable", json!({ "user": name(raw)? })).await?;
            println!("account {raw} enabled");
        }
        Action::Del { name: raw } => {
            call("account.delete", json!({ "user": name(raw)? })).await?;
            println!("account {raw} deleted");
        }
    }
    Ok(())
}
