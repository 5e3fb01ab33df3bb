//! Files: a server with the accounts and file services; a user uploads a file to their own
//! area, a second upload of the same content is instant (after a proof of possession), the
//! file comes back over three connections at once and is verified, and a path that tries
//! to leave its area is refused.
//!
//! cargo run -p zs-examples --example files

use serde_json::json;
use zs::{Client, ClientConfig, Router, Server, ServerConfig};
use zs_services::accounts::{Accounts, AccountsConfig};
use zs_services::files::client::{self, DownloadOptions, UploadOptions};
use zs_services::files::{Files, FilesConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zs-files-example-{}", std::process::id()));
    let mut accounts = AccountsConfig::new(dir.join("accounts"));
    accounts.allow_register = true;
    let (accounts, _) = Accounts::open(accounts).await?;
    let files = Files::open(FilesConfig::new(dir.join("files")))?;
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(files);
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;

    // A client registers `file.data` (downloads arrive there) and logs in.
    let connect = || async {
        let mut r = Router::new();
        client::register(&mut r);
        let config = ClientConfig::secured(server.client_security());
        let c = Client::connect_with(server.local_addr(), r, config).await?;
        let login = json!({ "user": "alice", "password": "correct horse battery" }).to_string();
        if c.call_console("account.login", login.clone()).await.is_err() {
            c.call_console("account.register", login).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(c)
    };
    let alice = connect().await?;

    let local = dir.join("report.bin");
    std::fs::write(&local, (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>())?;
    let up = client::upload(&alice, &local, "home/report.bin", UploadOptions::default()).await?;
    println!("uploaded {} bytes, blake3 {}", up.size, up.hash);
    let again = client::upload(&alice, &local, "home/copy.bin", UploadOptions::default()).await?;
    println!("second upload instant: {}", again.instant);

    // Three connections (a client closes its connection when dropped: keep them).
    let clients = [connect().await?, connect().await?];
    let peers = vec![alice.peer().clone(), clients[0].peer().clone(), clients[1].peer().clone()];
    let back = dir.join("back.bin");
    let down = client::download(&peers, "home/report.bin", &back, DownloadOptions::default()).await?;
    println!("downloaded over {} connections, verified {}", down.connections, down.hash);
    for e in client::list(&alice, "home", None).await? {
        println!("  home/{} {} bytes", e.name, e.size);
    }
    let escape = client::stat(&alice, "home/../../etc/passwd").await;
    println!("home/../../etc/passwd: {}", escape.unwrap_err());
    server.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
