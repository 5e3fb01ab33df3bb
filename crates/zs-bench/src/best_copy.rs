//! The strongest floor for bulk comparisons: the fastest raw loopback copy this machine
//! allows, found by trying tokio and blocking threads with writes of 64 KiB to 1 MiB.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::source::Noise;

/// What the sending end writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The benches' generated noise, made as it is sent (the same work our sender does).
    Noise,
    /// One constant buffer written again and again (no work but the copy).
    Constant,
}

/// One way of copying and the rate it reached.
#[derive(Debug, Clone, Serialize)]
pub struct CopyWay {
    /// How: runtime, write size and source, e.g. `threads, 1 MiB writes`.
    pub way: String,
    /// Bytes per second.
    pub bytes_per_s: f64,
}

/// Every way tried, and the fastest.
#[derive(Debug, Clone, Serialize)]
pub struct BestCopy {
    /// Each way, in the order tried.
    pub ways: Vec<CopyWay>,
    /// The fastest way's rate, bytes per second: the floor.
    pub best: f64,
    /// The fastest way's name.
    pub best_way: String,
}

/// Write sizes tried.
const WRITE_SIZES: [usize; 3] = [64 << 10, 256 << 10, 1 << 20];

/// Copies `total` bytes from `source` over `connections` loopback connections, once per way
/// (tokio on the caller's runtime and blocking threads, each write size), and keeps the
/// fastest. Each connection carries an equal share.
pub async fn best_copy(total: u64, connections: usize, source: Source) -> Result<BestCopy, String> {
    let connections = connections.max(1);
    let share = total / connections as u64;
    let mut ways = Vec::new();
    for &size in &WRITE_SIZES {
        let rate = tokio_copy(share, connections, size, source).await?;
        ways.push(CopyWay { way: format!("tokio, {} writes", kib(size)), bytes_per_s: rate });
        let rate = tokio::task::spawn_blocking(move || threads_copy(share, connections, size, source))
            .await
            .map_err(|e| e.to_string())??;
        ways.push(CopyWay { way: format!("threads, {} writes", kib(size)), bytes_per_s: rate });
    }
    let best = ways.iter().max_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s)).expect("ways tried");
    Ok(BestCopy { best: best.bytes_per_s, best_way: best.way.clone(), ways })
}

fn kib(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

/// Fills `buf` from the source (constant buffers are filled once, by the caller).
fn refill(src: &mut Noise, buf: &mut [u8], source: Source) {
    match source {
        Source::Noise => src.fill(buf),
        Source::Constant => src.skip(buf.len() as u64),
    }
}

async fn tokio_copy(share: u64, connections: usize, size: usize, source: Source) -> Result<f64, String> {
    let e = |e: std::io::Error| e.to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(e)?;
    let addr = listener.local_addr().map_err(e)?;
    let start = Instant::now();
    let receivers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (mut s, _) = listener.accept().await?;
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; size];
                let mut got = 0u64;
                loop {
                    match s.read(&mut buf).await? {
                        0 => return Ok::<_, std::io::Error>(got),
                        n => got += n as u64,
                    }
                }
            }));
        }
        let mut got = 0;
        for t in tasks {
            got += t.await.map_err(std::io::Error::other)??;
        }
        Ok::<_, std::io::Error>(got)
    });
    let senders: Vec<_> = (0..connections)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                let mut src = Noise::new(share, i as u64 + 1);
                let mut buf = vec![0x5Au8; size];
                while src.left() > 0 {
                    let n = (src.left() as usize).min(size);
                    refill(&mut src, &mut buf[..n], source);
                    s.write_all(&buf[..n]).await?;
                }
                s.shutdown().await
            })
        })
        .collect();
    for t in senders {
        t.await.map_err(|e| e.to_string())?.map_err(e)?;
    }
    let got = receivers.await.map_err(|e| e.to_string())?.map_err(e)?;
    check(got, share * connections as u64)?;
    Ok(got as f64 / start.elapsed().as_secs_f64())
}

fn threads_copy(share: u64, connections: usize, size: usize, source: Source) -> Result<f64, String> {
    let e = |e: std::io::Error| e.to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(e)?;
    let addr: SocketAddr = listener.local_addr().map_err(e)?;
    let start = Instant::now();
    let acceptor = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut readers = Vec::new();
        for _ in 0..connections {
            let (mut s, _) = listener.accept()?;
            readers.push(std::thread::spawn(move || -> std::io::Result<u64> {
                let mut buf = vec![0u8; size];
                let mut got = 0u64;
                loop {
                    match s.read(&mut buf)? {
                        0 => return Ok(got),
                        n => got += n as u64,
                    }
                }
            }));
        }
        let mut got = 0;
        for r in readers {
            got += r.join().map_err(|_| std::io::Error::other("a reader panicked"))??;
        }
        Ok(got)
    });
    let senders: Vec<_> = (0..connections)
        .map(|i| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut s = std::net::TcpStream::connect(addr)?;
                let mut src = Noise::new(share, i as u64 + 1);
                let mut buf = vec![0x5Au8; size];
                while src.left() > 0 {
                    let n = (src.left() as usize).min(size);
                    refill(&mut src, &mut buf[..n], source);
                    s.write_all(&buf[..n])?;
                }
                s.shutdown(std::net::Shutdown::Write)
            })
        })
        .collect();
    for t in senders {
        t.join().map_err(|_| "a sender panicked")?.map_err(e)?;
    }
    let got = acceptor.join().map_err(|_| "the acceptor panicked")?.map_err(e)?;
    check(got, share * connections as u64)?;
    Ok(got as f64 / start.elapsed().as_secs_f64())
}

fn check(got: u64, sent: u64) -> Result<(), String> {
    if got == sent {
        Ok(())
    } else {
        Err(format!("the floor copy lost bytes: {got} of {sent} arrived"))
    }
}
