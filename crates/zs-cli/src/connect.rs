//! The connection options every client subcommand shares (`zs user`, and those to come:
//! `zs file`, `zs push`, `zs db`...): the server, the account to log in as, and the
//! security options of `zs call`. Passwords come from `ZS_PASSWORD` (a password being set:
//! `ZS_NEW_PASSWORD`) or a prompt, never from an argument.

use std::time::Duration;

use clap::Args;
use zs::transport::ws::WsDialer;
use zs::{Client, ClientConfig, Router};

/// Where to connect and as whom.
#[derive(Args)]
pub struct ConnectArgs {
    /// The server's address (default: $ZS_SERVER).
    #[arg(long, global = true, env = "ZS_SERVER", value_name = "ADDR")]
    pub server: Option<String>,
    /// Log in as this account (its password from $ZS_PASSWORD, else a prompt).
    #[arg(long, global = true, env = "ZS_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// Seconds to wait for the connection and each reply.
    #[arg(long, global = true, default_value = "10", value_parser = crate::seconds)]
    pub timeout: Duration,
    #[command(flatten)]
    pub security: crate::security::ClientSecurityArgs,
}

impl ConnectArgs {
    /// Connects to `--server` and logs in as `--user` if given.
    pub async fn connect(&self) -> Result<Client, String> {
        Ok(self.connect_many(1, Router::new).await?.remove(0))
    }

    /// Opens `n` connections to `--server`, each with a router made by `router`, each
    /// logged in as `--user` if given (the password asked once).
    pub async fn connect_many(&self, n: usize, router: impl Fn() -> Router) -> Result<Vec<Client>, String> {
        let addr = self.server.as_deref().ok_or("no server: give --server ADDR (or set ZS_SERVER)")?;
        let password = match &self.user {
            Some(user) => Some(password(&format!("password for {user}: "))?),
            None => None,
        };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let client = connect(addr, &self.security, self.timeout, router()).await?;
            if let (Some(user), Some(password)) = (&self.user, &password) {
                login_with(&client, user, password, self.timeout).await?;
            }
            out.push(client);
        }
        Ok(out)
    }
}

/// Connects to `addr`, secured as `security` says, serving `router` to the server.
pub async fn connect(
    addr: &str,
    security: &crate::security::ClientSecurityArgs,
    timeout: Duration,
    router: Router,
) -> Result<Client, String> {
    // `ws://`, `wss://` (TLS under the WebSocket) or `quic://` before `HOST:PORT`: the
    // server's mode runs inside each as over TCP.
    let (scheme, rest) = addr.split_once("://").unwrap_or(("tcp", addr));
    let host = rest.split('/').next().unwrap_or(rest);
    let security_args = security;
    let security = security.resolve(host)?;
    let config = ClientConfig { connect_timeout: timeout, security, ..ClientConfig::default() };
    let connected = match scheme {
        "wss" => {
            let path = &rest[host.len()..];
            let dialer = WsDialer::secure(if path.is_empty() { "/" } else { path }, security_args.wss(host));
            Client::connect_over(dialer, host, router, config).await
        }
        _ => Client::connect_url(addr, router, config).await,
    };
    connected.map_err(|e| match e.to_string() {
        // The transport's message already names the address it tried.
        m if m.contains(addr) => m,
        m => format!("cannot connect to {addr}: {m}"),
    })
}

/// Logs `client` in as `user` (password from `ZS_PASSWORD` or a prompt).
pub async fn login(client: &Client, user: &str, timeout: Duration) -> Result<(), String> {
    let password = password(&format!("password for {user}: "))?;
    login_with(client, user, &password, timeout).await
}

async fn login_with(client: &Client, user: &str, password: &str, timeout: Duration) -> Result<(), String> {
    let request = serde_json::json!({ "user": user, "password": password }).to_string();
    client
        .call_console_timeout("account.login", request, timeout)
        .await
        .map_err(|e| format!("cannot log in as {user}: {e}"))?;
    Ok(())
}

/// A password: `$ZS_PASSWORD`, else asked on the terminal (not echoed), else read as a
/// line from standard input.
pub fn password(prompt: &str) -> Result<String, String> {
    if let Ok(p) = std::env::var("ZS_PASSWORD") {
        return Ok(p);
    }
    ask(prompt)
}

/// Asks for a secret on the terminal (not echoed), else reads a line from standard input.
pub fn ask(prompt: &str) -> Result<String, String> {
    if let Ok(p) = rpassword::prompt_password(prompt) {
        return Ok(p);
    }
    // No terminal: one line of standard input, without its line end.
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read a password: {e}"))?;
    let p = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    match p.is_empty() {
        true => Err("no password given (set ZS_PASSWORD, or type it)".into()),
        false => Ok(p.to_owned()),
    }
}
