//! `zs bench files`: the file service as its users get it (`zs serve` processes, the
//! `files::client` API): a big file uploaded and downloaded against a plain TCP send of the
//! same file, plaintext and secured; a download over 1, 4 and 16 connections; and many
//! small downloads at once with the server's memory watched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use zs::{Client, Peer, Router};
use zs_services::files::client::{self, DownloadOptions, UploadOptions};

use crate::harness::{runtime, Secure, Target};
use crate::idle::{start_server_env, ServerProcess};

/// Options of the files scenario.
#[derive(Debug, Clone)]
pub struct FilesOptions {
    /// Bytes of the big file.
    pub size: u64,
    /// Rounds of the big-file comparison (the median is reported).
    pub rounds: usize,
    /// Connection counts of the multi-connection download.
    pub connections: Vec<usize>,
    /// Small downloads run at once (0 skips them).
    pub small: usize,
    /// Bytes of each small download.
    pub small_size: u64,
    /// The secured entry's mode (`none` skips it).
    pub secure: Secure,
    /// Where the files and the servers' data directories go (`None`: `/dev/shm` when there
    /// is one, so the figures compare software rather than this machine's disk).
    pub dir: Option<PathBuf>,
}

/// A transfer's rate.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Rate {
    /// Bytes per second (median of the rounds).
    pub bytes_per_s: f64,
    /// Seconds (median of the rounds).
    pub seconds: f64,
    /// CPU seconds both ends used (user and system; the median round's).
    pub cpu_seconds: f64,
}

/// Upload and download of the big file by one entry.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct UpDown {
    /// The file sent to the server.
    pub upload: Rate,
    /// The file fetched back.
    pub download: Rate,
    /// (ours) As many bytes as a plain big stream to the server's `sink` command, no file at
    /// either end: the bulk layer alone, so the files' own cost shows apart from it.
    pub stream: Rate,
}

/// The small downloads at once.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Many {
    /// Downloads run at once.
    pub downloads: usize,
    /// Bytes each.
    pub size: u64,
    /// Connections they were spread over.
    pub connections: usize,
    /// Downloads whose file was verified (BLAKE3) and identical.
    pub verified: usize,
    /// Seconds from first request to last verified file.
    pub seconds: f64,
    /// Server resident memory before, bytes.
    pub rss_before: u64,
    /// The most it reached during the downloads, bytes.
    pub rss_peak: u64,
    /// `rss_peak - rss_before`, bytes.
    pub growth: u64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct FilesReport {
    /// Always "files".
    pub scenario: &'static str,
    /// Bytes of the big file.
    pub size: u64,
    /// Rounds (medians reported).
    pub rounds: usize,
    /// Our server, plaintext.
    pub ours: UpDown,
    /// Our server secured as `secure` says (absent with `--secure none`).
    pub ours_secure: Option<UpDown>,
    /// The secured entry's mode.
    pub secure: Secure,
    /// Where the files were.
    pub dir: PathBuf,
    /// A plain TCP send of the same file (1 MiB reads and writes, the written file fsynced).
    pub floor: UpDown,
    /// The big file downloaded over N connections (plaintext): N and its rate.
    pub multi: Vec<(usize, Rate)>,
    /// Many small downloads at once.
    pub many: Option<Many>,
    /// `ours.upload / floor.upload`.
    pub ratio_upload: f64,
    /// `ours.download / floor.download`.
    pub ratio_download: f64,
    /// `ours_secure.upload / ours.upload`.
    pub ratio_secure_upload: Option<f64>,
    /// `ours_secure.download / ours.download`.
    pub ratio_secure_download: Option<f64>,
    /// `ours.upload / ours.stream`: what the file service keeps of the bulk layer's rate.
    pub ratio_upload_to_stream: f64,
    /// `ours.download / ours.stream`.
    pub ratio_download_to_stream: f64,
}

const ADMIN_PASSWORD: &str = "the benchmark's admin password";

/// Runs the scenario against `zs serve` processes started from `zs_exe`.
pub fn run(opts: FilesOptions, zs_exe: &Path) -> Result<FilesReport, String> {
    let base = opts.dir.clone().unwrap_or_else(|| match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => std::env::temp_dir(),
    });
    let work = tempfile::tempdir_in(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    let big = work.path().join("big.bin");
    write_random(&big, opts.size)?;
    let rt = runtime("zs-bench-files")?;
    let env = [("ZS_ADMIN_PASSWORD", ADMIN_PASSWORD), ("RUST_LOG", "warn")];
    let plain = start_server_env(zs_exe, Secure::None, 1, 1, &env, Some(&base))?;
    let secured = match opts.secure {
        Secure::None => None,
        mode => Some(start_server_env(zs_exe, mode, 1, 1, &env, Some(&base))?),
    };
    let (mut floor, mut ours, mut sec) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..opts.rounds.max(1) {
        // The floor and ours take turns going first.
        let f = || floor_round(&big, work.path());
        let o = |s: &ServerProcess| rt.block_on(ours_round(s, &big, work.path(), round));
        if round % 2 == 0 {
            floor.push(f()?);
            ours.push(o(&plain)?);
        } else {
            ours.push(o(&plain)?);
            floor.push(f()?);
        }
        if let Some(s) = &secured {
            sec.push(o(s)?);
        }
        let last = |v: &[UpDown]| v.last().map(UpDown::describe).unwrap_or_default();
        tracing::info!("round {round}: floor {}; ours {}; secured {}", last(&floor), last(&ours), last(&sec));
    }
    let (floor, ours) = (median(&floor), median(&ours));
    let ours_secure = secured.as_ref().map(|_| median(&sec));
    let mut multi = Vec::new();
    for &n in &opts.connections {
        multi.push((n, rt.block_on(multi_download(&plain, n, opts.size, work.path()))?));
    }
    let many = match opts.small {
        0 => None,
        n => Some(rt.block_on(many_downloads(&plain, n, opts.small_size, work.path()))?),
    };
    Ok(FilesReport {
        scenario: "files",
        size: opts.size,
        rounds: opts.rounds.max(1),
        ratio_upload: ours.upload.bytes_per_s / floor.upload.bytes_per_s.max(1e-9),
        ratio_download: ours.download.bytes_per_s / floor.download.bytes_per_s.max(1e-9),
        ratio_secure_upload: ours_secure.map(|s| s.upload.bytes_per_s / ours.upload.bytes_per_s.max(1e-9)),
        ratio_secure_download: ours_secure
            .map(|s| s.download.bytes_per_s / ours.download.bytes_per_s.max(1e-9)),
        ratio_upload_to_stream: ours.upload.bytes_per_s / ours.stream.bytes_per_s.max(1e-9),
        ratio_download_to_stream: ours.download.bytes_per_s / ours.stream.bytes_per_s.max(1e-9),
        ours,
        ours_secure,
        secure: opts.secure,
        dir: base,
        floor,
        multi,
        many,
    })
}

impl UpDown {
    /// One line: each rate with its CPU time.
    fn describe(&self) -> String {
        let one = |r: &Rate| format!("{:.2} GB/s ({:.2} CPU s)", r.bytes_per_s / 1e9, r.cpu_seconds);
        format!("up {}, down {}, stream {}", one(&self.upload), one(&self.download), one(&self.stream))
    }
}

fn median(runs: &[UpDown]) -> UpDown {
    let pick = |f: fn(&UpDown) -> Rate| {
        let mut v: Vec<Rate> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s));
        v[v.len() / 2]
    };
    UpDown { upload: pick(|r| r.upload), download: pick(|r| r.download), stream: pick(|r| r.stream) }
}

/// Times a transfer: wall time, and the CPU time of this process and the server's.
struct Clock {
    pids: Vec<String>,
    started: Instant,
    cpu: f64,
}

impl Clock {
    fn start(server: Option<&ServerProcess>) -> Clock {
        let mut pids = vec!["self".to_owned()];
        pids.extend(server.iter().flat_map(|s| s.pids.iter().map(|p| p.to_string())));
        let cpu = cpu_of(&pids);
        Clock { pids, started: Instant::now(), cpu }
    }

    /// The rate of `bytes` moved since the start.
    fn rate(&self, bytes: u64) -> Rate {
        let t = self.started.elapsed().as_secs_f64();
        let cpu_seconds = cpu_of(&self.pids) - self.cpu;
        Rate { bytes_per_s: bytes as f64 / t.max(1e-9), seconds: t, cpu_seconds }
    }
}

fn cpu_of(pids: &[String]) -> f64 {
    pids.iter().filter_map(|p| crate::procmem::cpu_seconds(p).ok()).sum()
}

/// Writes `size` bytes that do not compress.
fn write_random(path: &Path, size: u64) -> Result<(), String> {
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut noise = crate::source::Noise::new(size, 1);
    let mut block = vec![0u8; 1 << 20];
    while noise.left() > 0 {
        let n = noise.left().min(block.len() as u64) as usize;
        noise.fill(&mut block[..n]);
        f.write_all(&block[..n]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Copies `from` to `to` in 1 MiB reads and writes.
fn copy_1m(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let r = from.read(&mut buf)?;
        if r == 0 {
            return Ok(n);
        }
        to.write_all(&buf[..r])?;
        n += r as u64;
    }
}

/// The floor: the file sent over a plain TCP connection and written (fsynced) on the other
/// side, both ways, by blocking threads.
fn floor_round(big: &Path, work: &Path) -> Result<UpDown, String> {
    let e = |e: std::io::Error| e.to_string();
    let size = std::fs::metadata(big).map_err(e)?.len();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e)?;
    let addr = listener.local_addr().map_err(e)?;
    let received = work.join("floor.recv");
    // Upload: this side sends, a server thread writes.
    let server = {
        let received = received.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let (mut s, _) = listener.accept()?;
            let mut out = std::fs::File::create(&received)?;
            copy_1m(&mut s, &mut out)?;
            out.sync_all()?;
            s.write_all(b"k")
        })
    };
    let t = Clock::start(None);
    let mut s = TcpStream::connect(addr).map_err(e)?;
    copy_1m(&mut std::fs::File::open(big).map_err(e)?, &mut s).map_err(e)?;
    s.shutdown(std::net::Shutdown::Write).map_err(e)?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).map_err(e)?;
    let upload = t.rate(size);
    server.join().map_err(|_| "floor server panicked")?.map_err(e)?;
    // Download: a server thread sends, this side writes.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e)?;
    let addr: SocketAddr = listener.local_addr().map_err(e)?;
    let source = big.to_owned();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        copy_1m(&mut std::fs::File::open(&source)?, &mut s)?;
        Ok(())
    });
    let t = Clock::start(None);
    let mut s = TcpStream::connect(addr).map_err(e)?;
    let mut out = std::fs::File::create(&received).map_err(e)?;
    copy_1m(&mut s, &mut out).map_err(e)?;
    out.sync_all().map_err(e)?;
    let download = t.rate(size);
    server.join().map_err(|_| "floor server panicked")?.map_err(e)?;
    let _ = std::fs::remove_file(&received);
    Ok(UpDown { upload, download, stream: Rate::default() })
}

/// A client of `server` that can receive downloads, logged in as admin.
async fn admin(target: &Target) -> Result<Client, String> {
    let mut r = Router::new();
    client::register(&mut r);
    let c = Client::connect_with(target.addr, r, target.client_config()).await.map_err(|e| e.to_string())?;
    let login = json!({ "user": "admin", "password": ADMIN_PASSWORD }).to_string();
    c.call_console("account.login", login).await.map_err(|e| format!("login: {e}"))?;
    Ok(c)
}

async fn ours_round(server: &ServerProcess, big: &Path, work: &Path, round: usize) -> Result<UpDown, String> {
    let e = |e: client::FileError| e.to_string();
    let size = std::fs::metadata(big).map_err(|e| e.to_string())?.len();
    let c = admin(&server.target).await?;
    // A new name each round, and the bytes sent even though the server has them.
    let remote = format!("public/big{round}.bin");
    let opts = UploadOptions { no_instant: true, ..UploadOptions::default() };
    let t = Clock::start(Some(server));
    client::upload(&c, big, &remote, opts).await.map_err(e)?;
    let upload = t.rate(size);
    // Closed before the download, as `zs file put` then `zs file get` would be.
    drop(c);
    let back = work.join("ours.recv");
    let d = admin(&server.target).await?;
    let t = Clock::start(Some(server));
    client::download(&[d.peer().clone()], &remote, &back, DownloadOptions::default()).await.map_err(e)?;
    let download = t.rate(size);
    let _ = std::fs::remove_file(&back);
    if round > 0 {
        client::delete(&d, &format!("public/big{}.bin", round - 1), false).await.map_err(e)?;
    }
    let source = tokio::io::AsyncReadExt::take(tokio::io::repeat(0x5a), size);
    let sopts =
        zs::StreamOptions { compression: zs::bulk::Compression::None, ..zs::StreamOptions::with_len(size) };
    let t = Clock::start(Some(server));
    d.send_big_stream("sink", source, sopts).finish().await.map_err(|e| e.to_string())?;
    let stream = t.rate(size);
    Ok(UpDown { upload, download, stream })
}

async fn multi_download(server: &ServerProcess, n: usize, size: u64, work: &Path) -> Result<Rate, String> {
    let e = |e: client::FileError| e.to_string();
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(admin(&server.target).await?);
    }
    let peers: Vec<Peer> = clients.iter().map(|c| c.peer().clone()).collect();
    let list = client::list(&clients[0], "public", Some("big*.bin")).await.map_err(e)?;
    let name = list.first().ok_or("the big file is gone")?.name.clone();
    let back = work.join(format!("multi{n}.recv"));
    let t = Clock::start(Some(server));
    client::download(&peers, &format!("public/{name}"), &back, DownloadOptions::default())
        .await
        .map_err(e)?;
    let r = t.rate(size);
    let _ = std::fs::remove_file(&back);
    Ok(r)
}

async fn many_downloads(server: &ServerProcess, n: usize, size: u64, work: &Path) -> Result<Many, String> {
    let e = |e: client::FileError| e.to_string();
    let small = work.join("small.bin");
    write_random(&small, size)?;
    let first = admin(&server.target).await?;
    client::upload(
        &first,
        &small,
        "public/small.bin",
        UploadOptions { overwrite: true, ..Default::default() },
    )
    .await
    .map_err(e)?;
    // Each connection runs as many at once as the server allows one (16).
    let per_connection = 10;
    let connections = n.div_ceil(per_connection);
    let mut clients = vec![first];
    while clients.len() < connections {
        clients.push(admin(&server.target).await?);
    }
    let pid = server.pids[0].to_string();
    let rss_before = crate::procmem::rss(&pid)?;
    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), pid.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                if let Ok(r) = crate::procmem::rss(&pid) {
                    peak.fetch_max(r, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let dir = work.join("many");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let downloads = (0..n).map(|i| {
        let peer = clients[i % connections].peer().clone();
        let out: PathBuf = dir.join(format!("{i}.bin"));
        async move { client::download(&[peer], "public/small.bin", &out, DownloadOptions::default()).await }
    });
    let results = futures_util::future::join_all(downloads).await;
    let seconds = t.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let _ = watcher.join();
    let want = std::fs::read(&small).map_err(|e| e.to_string())?;
    let verified = results
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            r.is_ok() && std::fs::read(dir.join(format!("{i}.bin"))).is_ok_and(|got| got == want)
        })
        .count();
    let _ = std::fs::remove_dir_all(&dir);
    let rss_peak = peak.load(Relaxed);
    Ok(Many {
        downloads: n,
        size,
        connections,
        verified,
        seconds,
        rss_before,
        rss_peak,
        growth: rss_peak.saturating_sub(rss_before),
    })
}

/// A readable table of the report.
pub fn table(r: &FilesReport) -> String {
    let gb = |x: &Rate| x.bytes_per_s / 1e9;
    // CPU seconds of both ends per GiB moved, beside each rate.
    let cpu = |x: &Rate| x.cpu_seconds * (1u64 << 30) as f64 / r.size.max(1) as f64;
    let row = |name: &str, x: &UpDown| {
        format!(
            "{:<30}{:>12.2}{:>12.2}{:>10.2} / {:.2}\n",
            name,
            gb(&x.upload),
            gb(&x.download),
            cpu(&x.upload),
            cpu(&x.download)
        )
    };
    let mut s = format!(
        "files: a {} MiB file in {}, median of {} round(s)\n{:<30}{:>12}{:>12}{:>24}\n",
        r.size >> 20,
        r.dir.display(),
        r.rounds,
        "GB/s",
        "upload",
        "download",
        "CPU s/GiB up / down"
    );
    s += &row("floor (plain TCP send)", &r.floor);
    s += &row("ours (plaintext)", &r.ours);
    if let Some(x) = &r.ours_secure {
        s += &row(&format!("ours ({})", r.secure.name()), x);
    }
    s += &format!(
        "{:<30}{:>24.2}{:>16.2}\n",
        "ours, a big stream to `sink`",
        gb(&r.ours.stream),
        cpu(&r.ours.stream)
    );
    s += &format!("ratio ours/floor: upload {:.2}, download {:.2}\n", r.ratio_upload, r.ratio_download);
    s += &format!(
        "ratio files/big stream (the file service's own cost): upload {:.2}, download {:.2}\n",
        r.ratio_upload_to_stream, r.ratio_download_to_stream
    );
    if let (Some(u), Some(d)) = (r.ratio_secure_upload, r.ratio_secure_download) {
        s += &format!("ratio {}/plaintext: upload {u:.2}, download {d:.2}\n", r.secure.name());
    }
    for (n, x) in &r.multi {
        s += &format!("download over {n:>2} connection(s): {:.2} GB/s\n", gb(x));
    }
    if let Some(m) = &r.many {
        s += &format!(
            "{} downloads of {} KiB at once over {} connections: {} verified in {:.1} s; server RSS {:.1} MB -> peak {:.1} MB (+{:.1} MB)",
            m.downloads,
            m.size >> 10,
            m.connections,
            m.verified,
            m.seconds,
            m.rss_before as f64 / 1e6,
            m.rss_peak as f64 / 1e6,
            m.growth as f64 / 1e6
        );
    }
    s
}
