//! `zs file`: the file service from the command line (ls, stat, put, get, rm, mv, mkdir),
//! with the connection options every client subcommand shares. Transfers show a progress
//! bar and resume when run again.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tokio::sync::watch;
use zs_services::files::client::{self, DownloadOptions, UploadOptions};

/// `zs file` and its subcommands.
#[derive(Args)]
pub struct FileArgs {
    #[command(subcommand)]
    command: FileCommand,
    #[command(flatten)]
    connect: crate::connect::ConnectArgs,
}

#[derive(Subcommand)]
enum FileCommand {
    /// List a folder (`public/`, `home/`, `shared/NAME/`...).
    Ls {
        path: String,
        /// Only names matching this glob (`*.txt`).
        #[arg(long)]
        glob: Option<String>,
    },
    /// Describe a file or folder (size, modification time, BLAKE3).
    Stat { path: String },
    /// Upload a local file (resumes an earlier run; instant if the server has the content).
    Put {
        local: PathBuf,
        remote: String,
        /// Replace a file of that name.
        #[arg(long)]
        overwrite: bool,
        /// Send the bytes even if the server holds the content.
        #[arg(long)]
        no_instant: bool,
    },
    /// Download a file (resumes an earlier run; verified by its BLAKE3).
    Get {
        remote: String,
        local: PathBuf,
        /// Connections to fetch ranges over at once (1 to 16).
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Replace a local file of that name.
        #[arg(long)]
        overwrite: bool,
    },
    /// Delete a file, or a folder.
    Rm {
        path: String,
        /// A folder with what it holds.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename or move.
    Mv {
        from: String,
        to: String,
        /// Replace what is there.
        #[arg(long)]
        overwrite: bool,
    },
    /// Make a folder.
    Mkdir {
        path: String,
        /// With its parents.
        #[arg(short, long)]
        parents: bool,
    },
}

pub fn run(args: FileArgs) -> Result<(), String> {
    crate::runtime()?.block_on(run_async(args))
}

/// A progress bar fed by a watch of bytes done.
fn progress_bar(total: u64, what: &str) -> (watch::Sender<u64>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(0u64);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    let task = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            bar.set_position(*rx.borrow());
        }
        bar.finish_and_clear();
    });
    (tx, task)
}

async fn run_async(args: FileArgs) -> Result<(), String> {
    let e = |e: client::FileError| e.to_string();
    let n = match &args.command {
        FileCommand::Get { connections, .. } if !(1..=16).contains(connections) => {
            return Err("--connections must be between 1 and 16".into())
        }
        FileCommand::Get { connections, .. } => *connections,
        _ => 1,
    };
    let clients = args
        .connect
        .connect_many(n, || {
            let mut r = zs::Router::new();
            client::register(&mut r);
            r
        })
        .await?;
    let peer = &clients[0];
    match args.command {
        FileCommand::Ls { path, glob } => {
            for entry in client::list(peer, &path, glob.as_deref()).await.map_err(e)? {
                let kind = if entry.dir { "/" } else { "" };
                println!("{:>14}  {}{kind}", entry.size, entry.name);
            }
        }
        FileCommand::Stat { path } => {
            let st = client::stat(peer, &path).await.map_err(e)?;
            println!("{}", serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?);
        }
        FileCommand::Put { local, remote, overwrite, no_instant } => {
            let size = std::fs::metadata(&local).map_err(|e| format!("{}: {e}", local.display()))?.len();
            let (tx, bar) = progress_bar(size, "put");
            let opts = UploadOptions { overwrite, no_instant, progress: Some(tx) };
            let done = client::upload(peer, &local, &remote, opts).await;
            bar.abort();
            let done = done.map_err(e)?;
            let how = match (done.instant, done.resumed_from) {
                (true, _) => "instantly (the server had the content)".to_string(),
                (false, 0) => "sent".to_string(),
                (false, n) => format!("resumed from byte {n}"),
            };
            println!("{remote}: {} bytes, {how}, blake3 {}", done.size, done.hash);
        }
        FileCommand::Get { remote, local, overwrite, .. } => {
            let size = client::stat(peer, &remote).await.map_err(e)?.size;
            let (tx, bar) = progress_bar(size, "get");
            let peers: Vec<zs::Peer> = clients.iter().map(|c| c.peer().clone()).collect();
            let opts = DownloadOptions { overwrite, progress: Some(tx) };
            let done = client::download(&peers, &remote, &local, opts).await;
            bar.abort();
            let done = done.map_err(e)?;
            let resumed = match done.resumed_from {
                0 => String::new(),
                n => format!(", resumed from byte {n}"),
            };
            println!(
                "{}: {} bytes over {} connection(s){resumed}, blake3 {} verified",
                local.display(),
                done.size,
                done.connections,
                done.hash
            );
        }
        FileCommand::Rm { path, recursive } => client::delete(peer, &path, recursive).await.map_err(e)?,
        FileCommand::Mv { from, to, overwrite } => {
            client::rename(peer, &from, &to, overwrite).await.map_err(e)?
        }
        FileCommand::Mkdir { path, parents } => client::mkdir(peer, &path, parents).await.map_err(e)?,
    }
    Ok(())
}
