//! Send a file as a big stream with a progress bar; the server writes it to disk, and the
//! sender learns once the server has verified every byte (BLAKE3).
//!
//! cargo run --release -p zs-examples --example big_stream [FILE]
//!
//! Without FILE, a 256 MiB file is made in the temp directory first.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use zs::{Client, IncomingStream, Router, Server, ServerConfig, StreamOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = match std::env::args().nth(1) {
        Some(path) => PathBuf::from(path),
        None => make_sample(256 << 20).await?,
    };
    let received = std::env::temp_dir().join("zs-big-stream-received");

    // The server stores what arrives; the data is verified before the sender hears "ok".
    let mut router = Router::new();
    let target = received.clone();
    router.big_stream("upload", move |_peer, mut stream: IncomingStream| {
        let target = target.clone();
        async move {
            let mut file = tokio::fs::File::create(&target).await?;
            while let Some(chunk) = stream.next_chunk().await {
                file.write_all(&chunk?).await?;
            }
            file.flush().await?;
            Ok::<_, zs::HandlerError>(())
        }
    });
    let server = Server::bind("127.0.0.1:0", router, ServerConfig::default()).await?;

    let client = Client::connect(server.local_addr(), server.client_security()).await?;
    let file = tokio::fs::File::open(&source).await?;
    let len = file.metadata().await?.len();
    let started = Instant::now();
    let transfer = client.send_big_stream("upload", file, StreamOptions::with_len(len));

    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")?);
    let mut progress = transfer.watch_progress();
    let watcher = tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            bar.set_position(progress.borrow().done);
        }
        bar.finish();
    });
    let sent = transfer.await?;
    watcher.await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {} ({sent} bytes) in {secs:.2} s, {:.0} MB/s; the server stored {} bytes at {}",
        source.display(),
        sent as f64 / secs / 1e6,
        tokio::fs::metadata(&received).await?.len(),
        received.display()
    );
    server.shutdown().await;
    Ok(())
}

/// Writes `len` bytes of varied text to a temp file.
async fn make_sample(len: usize) -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join("zs-big-stream-sample");
    let line = b"zserver moves big streams in windows of chunks, verified end to end.\n";
    let mut data = Vec::with_capacity(len);
    let mut i = 0u64;
    while data.len() < len {
        data.extend_from_slice(format!("{i:>12} ").as_bytes());
        data.extend_from_slice(line);
        i += 1;
    }
    data.truncate(len);
    tokio::fs::write(&path, &data).await?;
    Ok(path)
}
