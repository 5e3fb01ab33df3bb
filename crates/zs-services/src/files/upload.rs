//! Uploads: each goes to a partial file (`.partial/ID.part`, its record `ID.json`) that
//! survives reconnects and restarts, is resumed from its length, and becomes the named file
//! only when complete: fsynced, hash-checked, renamed into place (atomic), its directory
//! fsynced. A second writer of the same file is refused while the first writes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zs::wire::ErrorCode;
use zs::{HandlerError, IncomingStream, Peer};

use super::{blocking, internal, io_err, Inner};
use crate::json::err;

/// The folder of partial uploads, under the service's root.
pub(crate) const PARTIAL_DIR: &str = ".partial";

/// A partial upload's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Who uploads it.
    pub user: String,
    /// The file it will become.
    pub dest: PathBuf,
    /// Its size when complete.
    pub size: u64,
    /// The BLAKE3 the client announced (hex), checked at the end.
    pub hash: Option<String>,
    /// Replace a file of that name.
    pub overwrite: bool,
    /// Seconds since the epoch when it began.
    pub created: u64,
}

/// An upload the client may now send (kept under a ticket until its data arrives).
pub(crate) struct Slot {
    pub id: String,
    pub record: Record,
}

/// The id of an upload: the same user sending the same content to the same file gets the
/// same id, so running the same upload again resumes it.
pub(crate) fn upload_id(user: &str, dest: &Path, size: u64, hash: Option<&str>) -> String {
    let mut h = blake3::Hasher::new();
    for part in [
        user.as_bytes(),
        dest.as_os_str().as_encoded_bytes(),
        &size.to_le_bytes(),
        hash.unwrap_or("").as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().to_hex()[..32].to_string()
}

fn partial(inner: &Inner, id: &str, ext: &str) -> PathBuf {
    inner.config.root.join(PARTIAL_DIR).join(format!("{id}.{ext}"))
}

/// Records the upload (durably) if it is new; the bytes already received.
pub(crate) fn prepare(inner: &Inner, id: &str, record: &Record) -> Result<u64, HandlerError> {
    let meta = partial(inner, id, "json");
    if !meta.exists() {
        let tmp = partial(inner, id, "json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
        f.write_all(&serde_json::to_vec(record).map_err(|e| internal(e.to_string()))?).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, &meta).map_err(io_err)?;
        sync_dir(meta.parent().expect("in the partial folder"))?;
    }
    let have = std::fs::metadata(partial(inner, id, "part")).map_or(0, |m| m.len());
    Ok(if have > record.size { 0 } else { have })
}

/// Forgets a partial upload.
pub(crate) fn discard(inner: &Inner, id: &str) {
    let _ = std::fs::remove_file(partial(inner, id, "part"));
    let _ = std::fs::remove_file(partial(inner, id, "json"));
}

/// The file a writer holds while its data arrives; a second writer of it is refused.
pub(crate) struct Writing {
    inner: Arc<Inner>,
    dest: PathBuf,
}

impl Writing {
    pub(crate) fn claim(inner: &Arc<Inner>, dest: &Path, peer: u64) -> Result<Writing, HandlerError> {
        let mut writing = inner.writing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = writing.get(dest) {
            let why = format!(
                "this file is being uploaded on another connection (peer {other}); try again when it is done"
            );
            return Err(err(ErrorCode::Conflict, why));
        }
        writing.insert(dest.to_owned(), peer);
        Ok(Writing { inner: inner.clone(), dest: dest.to_owned() })
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.inner.writing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.dest);
    }
}

/// The `file.put.data` handler: writes the stream into the partial file from its offset;
/// once complete, checks and places the file.
pub(crate) async fn receive(
    inner: Arc<Inner>,
    peer: Peer,
    mut stream: IncomingStream,
) -> Result<(), HandlerError> {
    let slot: Slot = stream.take_ticket().ok_or_else(|| {
        err(ErrorCode::InvalidArgument, "send an upload's data with the ticket file.put gave")
    })?;
    let _running = super::commands::start_transfer(&inner, &peer)?;
    let _writing = Writing::claim(&inner, &slot.record.dest, peer.id())?;
    let path = partial(&inner, &slot.id, "part");
    let offset = stream.offset();
    let end = offset + stream.total().unwrap_or(u64::MAX - offset).min(u64::MAX - offset);
    if end > slot.record.size {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("the upload is {} bytes; this stream ends at {end}", slot.record.size),
        ));
    }
    let file = {
        let path = path.clone();
        blocking(move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err)?;
            let have = f.metadata().map_err(io_err)?.len();
            if offset > have {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("the partial upload holds {have} bytes: resume from there"),
                ));
            }
            f.set_len(offset).map_err(io_err)?;
            Ok(f)
        })
        .await?
    };
    let mut out = super::io::Writer::new(file, offset);
    let received = copy_stream(&mut stream, &mut out, None).await;
    let flushed = out.finish().await.map_err(io_err);
    received?;
    flushed?;
    if offset + stream.received() < slot.record.size {
        return Ok(()); // a part: the rest comes in a later transfer
    }
    // One transfer from the start: the stream's verified hash is the file's.
    let streamed = if offset == 0 { stream.verified_hash() } else { None };
    let inner2 = inner.clone();
    blocking(move || place(&inner2, &slot, &path, streamed)).await
}

/// Copies a stream's chunks to `out`, telling `progress` the bytes written so far.
pub(crate) async fn copy_stream(
    stream: &mut IncomingStream,
    out: &mut super::io::Writer,
    progress: Option<&tokio::sync::watch::Sender<u64>>,
) -> Result<(), HandlerError> {
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk.map_err(|e| err(ErrorCode::Cancelled, e.to_string()))?;
        let n = chunk.len() as u64;
        out.write(chunk).await.map_err(io_err)?;
        if let Some(p) = progress {
            p.send_modify(|done| *done += n);
        }
    }
    Ok(())
}

/// Checks a complete upload's hash and renames it into place.
fn place(inner: &Inner, slot: &Slot, part: &Path, streamed: Option<[u8; 32]>) -> Result<(), HandlerError> {
    let r = &slot.record;
    let hash = match streamed {
        Some(h) => h,
        None => super::hash_range(part, 0, r.size)?,
    };
    let hex = blake3::Hash::from(hash).to_hex().to_string();
    if r.hash.as_ref().is_some_and(|h| !h.eq_ignore_ascii_case(&hex)) {
        discard(inner, &slot.id);
        return Err(err(
            ErrorCode::ChecksumMismatch,
            "the file's hash differs from the one announced; the upload is discarded",
        ));
    }
    install(part, &r.dest, r.overwrite)?;
    let _ = std::fs::remove_file(partial(inner, &slot.id, "json"));
    let meta = std::fs::metadata(&r.dest).map_err(io_err)?;
    inner.index.put(&inner.rel(&r.dest), meta.len(), super::mtime_ns(&meta), &hash).map_err(internal)?;
    tracing::info!(target: "zs::files", user = %r.user, file = %inner.rel(&r.dest), bytes = r.size, "uploaded");
    Ok(())
}

/// Moves the durable file `from` to `dest` atomically, refusing to replace a file unless
/// `overwrite`, and makes the rename durable.
pub(crate) fn install(from: &Path, dest: &Path, overwrite: bool) -> Result<(), HandlerError> {
    let parent = dest.parent().ok_or_else(|| err(ErrorCode::InvalidArgument, "no folder"))?;
    if !parent.is_dir() {
        return Err(err(ErrorCode::NotFound, "the folder does not exist (make it with file.mkdir)"));
    }
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => return Err(err(ErrorCode::Conflict, "a folder of that name exists")),
        Ok(_) if !overwrite => {
            return Err(err(ErrorCode::Conflict, "a file of that name exists (overwrite to replace it)"))
        }
        _ => {}
    }
    std::fs::File::open(from).and_then(|f| f.sync_all()).map_err(io_err)?;
    std::fs::rename(from, dest).map_err(io_err)?;
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<(), HandlerError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)
}

fn records(inner: &Inner) -> Vec<(String, Record, std::fs::Metadata)> {
    let Ok(dir) = std::fs::read_dir(inner.config.root.join(PARTIAL_DIR)) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?.to_owned();
            let meta = e.metadata().ok()?;
            let record = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((id, record, meta))
        })
        .collect()
}

/// Bytes reserved and files begun by `user`'s partial uploads into their private area,
/// but for the upload `except`.
pub(crate) fn partial_usage(inner: &Inner, user: &str, except: Option<&str>) -> (u64, u64) {
    // Destinations are canonical (`resolve` gives them): so is the home they are checked
    // against, or a data directory reached through a link would count none of them.
    let home = inner.real_home(user);
    records(inner)
        .into_iter()
        .filter(|(id, r, _)| r.user == user && r.dest.starts_with(&home) && Some(id.as_str()) != except)
        .fold((0, 0), |(b, f), (_, r, _)| (b.saturating_add(r.size), f + 1))
}

/// Sweeps expired partial uploads if the last sweep was an hour ago or more.
pub(crate) fn sweep_hourly(inner: &Inner) {
    let now = crate::accounts::store::now_s();
    let last = inner.swept.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + 3600 && inner.swept.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        sweep(inner);
    }
}

/// Removes partial uploads older than the configured time that nobody is writing.
pub(crate) fn sweep(inner: &Inner) {
    let now = crate::accounts::store::now_s();
    inner.swept.store(now, Relaxed);
    let ttl = inner.config.partial_ttl.as_secs();
    for (id, record, _) in records(inner) {
        let busy = inner.writing.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&record.dest);
        if !busy && record.created.saturating_add(ttl) <= now {
            tracing::info!(target: "zs::files", user = %record.user, upload = %id, "partial upload expired");
            discard(inner, &id);
        }
    }
    // Temporary files of instant uploads a crash left behind.
    if let Ok(dir) = std::fs::read_dir(inner.config.root.join(PARTIAL_DIR)) {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".link") || name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
