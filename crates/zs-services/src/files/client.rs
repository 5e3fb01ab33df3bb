//! The file service from a client: register [`register`] on the client's router (it
//! receives downloads), then [`upload`], [`download`] (over one connection or several) and
//! the small commands. Uploads and downloads resume: run the same one again after a cut.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use zs::{CallError, HandlerError, IncomingStream, Peer, Router, StreamOptions};

use super::commands::{proof, DATA, PUT_DATA};
use super::upload::copy_stream;

/// What went wrong in a file operation.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The server refused or failed (its code says why).
    #[error("{0}")]
    Call(#[from] CallError),
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(#[from] std::io::Error),
    /// The downloaded file's hash differs from the server's (the partial file is removed).
    #[error("the downloaded file's hash differs from the server's; run again to download it afresh")]
    Corrupt,
    /// The server's answer was not what this client expects.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// A file's or folder's description.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Stat {
    /// Its path.
    pub path: String,
    /// A folder.
    pub dir: bool,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified: u64,
    /// BLAKE3 (hex) of a file.
    pub hash: Option<String>,
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// A folder.
    pub dir: bool,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified: u64,
}

async fn call(peer: &Peer, command: &str, request: Value) -> Result<Value, FileError> {
    let reply = peer.call_console(command, request.to_string()).await?;
    serde_json::from_str(reply.as_str()).map_err(|e| FileError::Protocol(e.to_string()))
}

fn field<T: for<'de> Deserialize<'de>>(v: &Value, name: &str) -> Result<T, FileError> {
    serde_json::from_value(v.get(name).cloned().unwrap_or(Value::Null))
        .map_err(|e| FileError::Protocol(format!("{name}: {e}")))
}

/// Describes a path.
pub async fn stat(peer: &Peer, path: &str) -> Result<Stat, FileError> {
    let v = call(peer, "file.stat", json!({ "path": path })).await?;
    serde_json::from_value(v).map_err(|e| FileError::Protocol(e.to_string()))
}

/// Lists a folder (every page), optionally only names matching `glob`.
pub async fn list(peer: &Peer, path: &str, glob: Option<&str>) -> Result<Vec<Entry>, FileError> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let v = call(peer, "file.list", json!({ "path": path, "glob": glob, "offset": offset })).await?;
        out.extend(field::<Vec<Entry>>(&v, "entries")?);
        match field::<Option<usize>>(&v, "next")? {
            Some(next) if next > offset => offset = next,
            _ => return Ok(out),
        }
    }
}

/// Makes a folder (and its parents when `recursive`).
pub async fn mkdir(peer: &Peer, path: &str, recursive: bool) -> Result<(), FileError> {
    call(peer, "file.mkdir", json!({ "path": path, "recursive": recursive })).await.map(drop)
}

/// Renames (or moves) a file or folder.
pub async fn rename(peer: &Peer, from: &str, to: &str, overwrite: bool) -> Result<(), FileError> {
    call(peer, "file.rename", json!({ "from": from, "to": to, "overwrite": overwrite })).await.map(drop)
}

/// Deletes a file, or a folder (with what it holds when `recursive`).
pub async fn delete(peer: &Peer, path: &str, recursive: bool) -> Result<(), FileError> {
    call(peer, "file.delete", json!({ "path": path, "recursive": recursive })).await.map(drop)
}

/// The BLAKE3 (hex) of a range of a remote file.
pub async fn hash_range(peer: &Peer, path: &str, offset: u64, len: u64) -> Result<String, FileError> {
    let v = call(peer, "file.hash", json!({ "path": path, "offset": offset, "len": len })).await?;
    field(&v, "hash")
}

/// The BLAKE3 of `len` bytes of a local file from `offset` (off the async threads).
pub async fn hash_local(path: &Path, offset: u64, len: u64) -> Result<[u8; 32], FileError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<[u8; 32]> {
        if offset == 0 && std::fs::metadata(&path)?.len() == len {
            // A whole file: mapped and hashed on every core.
            let mut hasher = blake3::Hasher::new();
            hasher.update_mmap_rayon(&path)?;
            return Ok(*hasher.finalize().as_bytes());
        }
        super::blake3_of(&path, offset, len).map(|(hash, _)| hash)
    })
    .await
    .map_err(|e| FileError::Protocol(e.to_string()))?
    .map_err(FileError::Local)
}

/// How to upload.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Replace a file of that name.
    pub overwrite: bool,
    /// Do not ask for an instant upload (send the bytes even if the server has them).
    pub no_instant: bool,
    /// Told the bytes sent so far (of those this run sends).
    pub progress: Option<watch::Sender<u64>>,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes of the file.
    pub size: u64,
    /// Where this run started (bytes the server already had of an earlier run).
    pub resumed_from: u64,
    /// The server had the content: nothing was sent but a proof.
    pub instant: bool,
    /// BLAKE3 (hex).
    pub hash: String,
}

/// Uploads `local` to `remote`, resuming an earlier upload of the same file, or instantly
/// when the server already holds its content (after proving possession).
pub async fn upload(
    peer: &Peer,
    local: &Path,
    remote: &str,
    opts: UploadOptions,
) -> Result<Uploaded, FileError> {
    let size = tokio::fs::metadata(local).await?.len();
    let hash = blake3::Hash::from(hash_local(local, 0, size).await?).to_hex().to_string();
    let mut request = json!({ "path": remote, "size": size, "hash": hash, "overwrite": opts.overwrite });
    if opts.no_instant {
        request["instant"] = json!(false);
    }
    let v = call(peer, "file.put", request.clone()).await?;
    if let Some(challenge) = v.get("challenge") {
        let nonce: String = field(challenge, "nonce")?;
        let nonce = blake3::Hash::from_hex(&nonce).map_err(|e| FileError::Protocol(e.to_string()))?;
        let ranges: Vec<(u64, u64)> = field(challenge, "ranges")?;
        let ticket: u64 = field(challenge, "ticket")?;
        let local2 = local.to_owned();
        let answer = tokio::task::spawn_blocking(move || proof(&local2, nonce.as_bytes(), &ranges))
            .await
            .map_err(|e| FileError::Protocol(e.to_string()))??;
        let answer = blake3::Hash::from(answer).to_hex().to_string();
        call(peer, "file.put.prove", json!({ "ticket": ticket, "proof": answer })).await?;
        return Ok(Uploaded { size, resumed_from: size, instant: true, hash });
    }
    let offset: u64 = field(&v, "offset")?;
    let ticket: u64 = field(&v, "ticket")?;
    let file = std::fs::File::open(local)?;
    let len = size - offset;
    // From the start, the hash is the file's, computed above: not computed again.
    let known = (offset == 0).then(|| *blake3::Hash::from_hex(&hash).expect("our own hex").as_bytes());
    let sopts = StreamOptions {
        len: Some(len),
        offset,
        ticket: Some(ticket),
        // Files are addressed by their BLAKE3: the server gets it verified for nothing.
        check: zs::StreamCheck::Blake3,
        hash: known,
        ..StreamOptions::default()
    };
    let transfer =
        peer.send_big_stream(PUT_DATA, super::io::Reader::new(file, offset, len, 256 << 10), sopts);
    let reporting = opts.progress.map(|tx| {
        let mut rx = transfer.watch_progress();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let done = rx.borrow().done;
                let _ = tx.send(done);
            }
        })
    });
    let sent = transfer.finish().await;
    if let Some(r) = reporting {
        r.abort();
    }
    sent?;
    Ok(Uploaded { size, resumed_from: offset, instant: false, hash })
}

/// Where a download's data goes (kept under the ticket the request names).
struct Sink {
    path: PathBuf,
    offset: u64,
    progress: Option<watch::Sender<u64>>,
    done: oneshot::Sender<Result<Option<[u8; 32]>, String>>,
}

/// Registers on a client's router the command downloads arrive on.
pub fn register(router: &mut Router) {
    router.big_stream(DATA, |_peer, stream: IncomingStream| receive(stream));
}

async fn receive(mut stream: IncomingStream) -> Result<(), HandlerError> {
    let sink: Sink =
        stream.take_ticket().ok_or_else(|| HandlerError::new("no download is waiting for this data"))?;
    let result = write_range(&mut stream, &sink).await;
    let _ = sink.done.send(result.clone().map_err(|e| e.message.clone()));
    result.map(drop)
}

/// Writes the stream at its offset; the stream's verified BLAKE3.
async fn write_range(stream: &mut IncomingStream, sink: &Sink) -> Result<Option<[u8; 32]>, HandlerError> {
    if stream.offset() != sink.offset {
        return Err(HandlerError::new("the data starts where it was not asked for"));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&sink.path)
        .map_err(|e| HandlerError::new(e.to_string()))?;
    let mut out = super::io::Writer::new(file, sink.offset);
    let copied = copy_stream(stream, &mut out, sink.progress.as_ref()).await;
    let flushed = out.finish().await.map_err(|e| HandlerError::new(e.to_string()));
    copied?;
    flushed?;
    Ok(stream.verified_hash())
}

/// Fetches `len` bytes of `remote` from `offset` into `part` at the same offset; the
/// BLAKE3 of those bytes, verified in transit.
async fn fetch(
    peer: &Peer,
    remote: &str,
    part: &Path,
    offset: u64,
    len: u64,
    progress: Option<watch::Sender<u64>>,
) -> Result<Option<[u8; 32]>, FileError> {
    let (done, rx) = oneshot::channel();
    let ticket = peer.issue_ticket(Sink { path: part.to_owned(), offset, progress, done });
    let request = json!({ "path": remote, "offset": offset, "len": len, "ticket": ticket });
    if let Err(e) = call(peer, "file.get", request).await {
        peer.take_ticket::<Sink>(ticket);
        return Err(e);
    }
    match rx.await {
        Ok(Ok(hash)) => Ok(hash),
        Ok(Err(why)) => Err(FileError::Call(CallError::Cancelled(why))),
        Err(_) => Err(FileError::Call(CallError::Disconnected("the download's data never came".into()))),
    }
}

/// How to download.
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    /// Replace a local file of that name.
    pub overwrite: bool,
    /// Told the bytes received so far (of those this run fetches).
    pub progress: Option<watch::Sender<u64>>,
}

/// What a download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes of the file.
    pub size: u64,
    /// Bytes an earlier run had fetched already.
    pub resumed_from: u64,
    /// Connections used.
    pub connections: usize,
    /// BLAKE3 (hex), verified.
    pub hash: String,
}

/// What an unfinished download keeps beside its partial file (`LOCAL.zspart.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    size: u64,
    modified: u64,
    hash: String,
    /// Ranges fetched whole.
    done: Vec<(u64, u64)>,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Downloads `remote` to `local` over one connection or several (`peers`, each logged in),
/// each fetching a range; resumes an earlier run's partial file if the remote file has not
/// changed; verifies the whole file's BLAKE3 before it takes its name.
pub async fn download(
    peers: &[Peer],
    remote: &str,
    local: &Path,
    opts: DownloadOptions,
) -> Result<Downloaded, FileError> {
    let first = peers.first().ok_or_else(|| FileError::Protocol("no connection to download over".into()))?;
    if !opts.overwrite && tokio::fs::try_exists(local).await? {
        let why = format!("{} exists (overwrite to replace it)", local.display());
        return Err(FileError::Local(std::io::Error::new(std::io::ErrorKind::AlreadyExists, why)));
    }
    let st = stat(first, remote).await?;
    if st.dir {
        return Err(FileError::Protocol(format!("{remote} is a folder")));
    }
    let hash =
        st.hash.clone().ok_or_else(|| FileError::Protocol("no hash in the file's description".into()))?;
    let (part, state) = (with_suffix(local, ".zspart"), with_suffix(local, ".zspart.json"));
    let fresh = Progress { size: st.size, modified: st.modified, hash: hash.clone(), done: Vec::new() };
    let mut progress =
        match tokio::fs::read(&state).await.ok().and_then(|b| serde_json::from_slice::<Progress>(&b).ok()) {
            Some(p) if p.size == fresh.size && p.modified == fresh.modified && p.hash == fresh.hash => p,
            _ => {
                let _ = tokio::fs::remove_file(&part).await;
                fresh
            }
        };
    tokio::fs::write(&state, serde_json::to_vec(&progress).expect("serialisable")).await?;
    // Made before any data comes: an empty file gets none.
    tokio::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&part).await?;
    let have = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    let ranges = plan(st.size, have, &progress.done, peers.len());
    let resumed_from = st.size - ranges.iter().map(|r| r.1).sum::<u64>();
    let progress_tx = opts.progress.clone();
    let fetching = ranges.into_iter().enumerate().map(|(i, (offset, len))| {
        let peer = peers[i % peers.len()].clone();
        let (remote, part, tx) = (remote.to_owned(), part.clone(), progress_tx.clone());
        async move { fetch(&peer, &remote, &part, offset, len, tx).await.map(|h| (offset, len, h)) }
    });
    let results = futures_util::future::join_all(fetching).await;
    let (mut failed, mut whole) = (None, None);
    for r in results {
        match r {
            Ok((offset, len, hash)) => {
                progress.done.push((offset, len));
                // One transfer of the whole file: its hash, verified in transit, is the file's.
                if offset == 0 && len == st.size {
                    whole = hash;
                }
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    tokio::fs::write(&state, serde_json::to_vec(&progress).expect("serialisable")).await?;
    if let Some(e) = failed {
        return Err(e);
    }
    let got = match whole {
        Some(h) => blake3::Hash::from(h),
        None => blake3::Hash::from(hash_local(&part, 0, st.size).await?),
    }
    .to_hex()
    .to_string();
    if got != hash {
        let _ = tokio::fs::remove_file(&part).await;
        let _ = tokio::fs::remove_file(&state).await;
        return Err(FileError::Corrupt);
    }
    tokio::fs::rename(&part, local).await?;
    let _ = tokio::fs::remove_file(&state).await;
    Ok(Downloaded { size: st.size, resumed_from, connections: peers.len(), hash })
}

/// The ranges still to fetch, over `n` connections: with one, from the partial file's end
/// (`have`); with several, what no earlier range covered, split evenly (at least 1 MiB each).
fn plan(size: u64, have: u64, done: &[(u64, u64)], n: usize) -> Vec<(u64, u64)> {
    let mut missing: Vec<(u64, u64)> = Vec::new();
    if done.is_empty() {
        let from = if n <= 1 { have.min(size) } else { 0 };
        missing.push((from, size - from));
    } else {
        let mut sorted = done.to_vec();
        sorted.sort_unstable();
        let mut at = 0;
        for (o, l) in sorted {
            if o > at {
                missing.push((at, o - at));
            }
            at = at.max(o + l);
        }
        if at < size {
            missing.push((at, size - at));
        }
    }
    if n <= 1 {
        return missing.into_iter().filter(|r| r.1 > 0).collect();
    }
    let total: u64 = missing.iter().map(|r| r.1).sum();
    let piece = total.div_ceil(n as u64).max(1 << 20);
    let mut out = Vec::new();
    for (mut o, mut l) in missing {
        while l > 0 {
            let take = l.min(piece);
            out.push((o, take));
            o += take;
            l -= take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn plans_cover_what_is_missing() {
        assert_eq!(plan(100, 40, &[], 1), vec![(40, 60)]);
        assert_eq!(plan(100, 100, &[], 1), vec![]);
        assert_eq!(
            plan(8 << 20, 0, &[], 4),
            vec![(0, 2 << 20), (2 << 20, 2 << 20), (4 << 20, 2 << 20), (6 << 20, 2 << 20)]
        );
        // Ranges of at least 1 MiB.
        assert_eq!(plan(3 << 20, 0, &[], 16).len(), 3);
        let done = [(0, 1 << 20), (2 << 20, 1 << 20)];
        assert_eq!(plan(4 << 20, 0, &done, 4), vec![(1 << 20, 1 << 20), (3 << 20, 1 << 20)]);
    }
}
