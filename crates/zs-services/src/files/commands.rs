//! The file service's commands: console commands with JSON in and out, and the big stream
//! an upload's data arrives on (PROTOCOL §13).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use zs::wire::ErrorCode;
use zs::{HandlerError, Identity, Peer, Router, StreamOptions, Text};

use super::paths::Area;
use super::upload::{self, Record, Slot};
use super::{blocking, hash_range, internal, io_err, mtime_ns, Access, Counted, Inner, Running};
use crate::json::{err, request};

/// The command a download's data is sent to, on the client.
pub const DATA: &str = "file.data";
/// The command an upload's data is sent to, on the server.
pub const PUT_DATA: &str = "file.put.data";

/// Registers every command of the service.
pub(crate) fn register(inner: Arc<Inner>, router: &mut Router) {
    macro_rules! command {
        ($name:expr, $f:ident) => {
            crate::json::json_command!(router, inner, $name, $f)
        };
    }
    // Each checks the caller's access to the area it names (the public area may be open
    // to callers who have not logged in).
    command!("file.list", list);
    command!("file.stat", stat);
    command!("file.hash", range_hash);
    command!("file.get", get);
    command!("file.mkdir", mkdir);
    command!("file.rename", rename);
    command!("file.delete", delete);
    command!("file.put", put);
    command!("file.put.prove", prove);
    command!("file.usage", usage).requires_login();
    let inner2 = inner.clone();
    router.big_stream(PUT_DATA, move |peer, stream| upload::receive(inner2.clone(), peer, stream));
}

/// A transfer's places in its connection's and the server's limits, while it runs.
pub(crate) struct TransferSlot {
    _connection: Counted,
    _server: Counted,
}

pub(crate) fn start_transfer(inner: &Inner, peer: &Peer) -> Result<TransferSlot, HandlerError> {
    let running = match peer.state::<Running>() {
        Some(r) => r,
        None => {
            peer.set_state(Running::default());
            peer.state::<Running>().expect("just set")
        }
    };
    let max = inner.config.transfers_per_connection;
    let connection = Counted::take(&running.0, max).ok_or_else(|| {
        err(ErrorCode::RateLimited, format!("at most {max} transfers at once on one connection"))
    })?;
    let max = inner.config.max_transfers;
    let server = Counted::take(&inner.transfers, max).ok_or_else(|| {
        err(ErrorCode::RateLimited, format!("the server runs {max} transfers already; try again later"))
    })?;
    Ok(TransferSlot { _connection: connection, _server: server })
}

fn hex(hash: &[u8; 32]) -> String {
    blake3::Hash::from(*hash).to_hex().to_string()
}

fn parse_hash(hex: &str) -> Result<[u8; 32], HandlerError> {
    blake3::Hash::from_hex(hex)
        .map(|h| *h.as_bytes())
        .map_err(|_| err(ErrorCode::InvalidArgument, "a hash is 64 hex digits (BLAKE3)"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRequest {
    path: String,
    glob: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn list(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: ListRequest = request(&text)?;
    let (_, dir) = inner.locate(peer, &req.path, Access::Read)?;
    let pattern = match &req.glob {
        Some(g) => Some(
            glob::Pattern::new(g).map_err(|e| err(ErrorCode::InvalidArgument, format!("bad glob: {e}")))?,
        ),
        None => None,
    };
    let limit = req.limit.unwrap_or(inner.config.list_page).clamp(1, inner.config.list_page);
    blocking(move || {
        let mut entries: Vec<(String, std::fs::Metadata)> = std::fs::read_dir(&dir)
            .map_err(io_err)?
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.metadata().ok()?)))
            .filter(|(name, _)| pattern.as_ref().is_none_or(|p| p.matches(name)))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let total = entries.len();
        let page: Vec<Value> = entries
            .into_iter()
            .skip(req.offset)
            .take(limit)
            .map(|(name, m)| json!({ "name": name, "dir": m.is_dir(), "size": m.len(), "modified": mtime_ns(&m) }))
            .collect();
        let next = (req.offset + page.len() < total).then_some(req.offset + page.len());
        Ok(json!({ "entries": page, "total": total, "next": next }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatRequest {
    path: String,
    /// Include the content hash (default true; computed once and kept).
    hash: Option<bool>,
}

async fn stat(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: StatRequest = request(&text)?;
    let (path, full) = inner.locate(peer, &req.path, Access::Read)?;
    let _hashing = inner.hashing.acquire().await.map_err(|e| internal(e.to_string()))?;
    let inner = inner.clone();
    blocking(move || {
        let m = std::fs::metadata(&full).map_err(io_err)?;
        let hash = match (m.is_dir(), req.hash.unwrap_or(true)) {
            (false, true) => Some(hex(&inner.hash_file(&full)?)),
            _ => None,
        };
        Ok(json!({ "path": path.display(), "dir": m.is_dir(), "size": m.len(), "modified": mtime_ns(&m), "hash": hash }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeRequest {
    path: String,
    #[serde(default)]
    offset: u64,
    len: Option<u64>,
    /// `file.get`: the ticket the client's `file.data` handler expects the data under.
    #[serde(default)]
    ticket: u64,
}

/// The range `offset..offset+len` of a file of `size` bytes (to its end without `len`).
fn range(offset: u64, len: Option<u64>, size: u64) -> Result<u64, HandlerError> {
    if offset > size {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("offset {offset} is past the end ({size} bytes)"),
        ));
    }
    let len = len.unwrap_or(size - offset);
    if len > size - offset {
        return Err(err(ErrorCode::InvalidArgument, format!("the range ends past the end ({size} bytes)")));
    }
    Ok(len)
}

async fn range_hash(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: RangeRequest = request(&text)?;
    let (_, full) = inner.locate(peer, &req.path, Access::Read)?;
    let _hashing = inner.hashing.acquire().await.map_err(|e| internal(e.to_string()))?;
    let inner = inner.clone();
    blocking(move || {
        let size = file_size(&full)?;
        let len = range(req.offset, req.len, size)?;
        let hash = if req.offset == 0 && len == size {
            inner.hash_file(&full)?
        } else {
            hash_range(&full, req.offset, len)?
        };
        Ok(json!({ "offset": req.offset, "len": len, "hash": hex(&hash) }))
    })
    .await
}

fn file_size(full: &std::path::Path) -> Result<u64, HandlerError> {
    let m = std::fs::metadata(full).map_err(io_err)?;
    if m.is_dir() {
        return Err(err(ErrorCode::InvalidArgument, "it is a folder"));
    }
    Ok(m.len())
}

/// Starts sending a file's range to the caller's `file.data` command under its ticket;
/// answers at once with the file's size and the range.
async fn get(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: RangeRequest = request(&text)?;
    if req.ticket == 0 {
        return Err(err(
            ErrorCode::InvalidArgument,
            "file.get needs the ticket the data is to be sent under",
        ));
    }
    let (_, full) = inner.locate(peer, &req.path, Access::Read)?;
    let slot = start_transfer(inner, peer)?;
    let file = std::fs::File::open(&full).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(err(ErrorCode::InvalidArgument, "it is a folder"));
    }
    let len = range(req.offset, req.len, meta.len())?;
    // A whole file whose hash is kept is not hashed again as it goes.
    let known = match req.offset == 0 && len == meta.len() {
        true => inner.index.hash_of(&inner.rel(&full), meta.len(), mtime_ns(&meta)).ok().flatten(),
        false => None,
    };
    // Many transfers at once: downloads go in small chunks, so each holds little.
    let busy = inner.transfers.load(Relaxed) > super::BUSY_TRANSFERS;
    let chunk = if busy { 64 << 10 } else { 256 << 10 };
    let opts = StreamOptions {
        len: Some(len),
        offset: req.offset,
        ticket: Some(req.ticket),
        // Files are addressed by their BLAKE3: the receiver gets it verified for nothing.
        check: zs::StreamCheck::Blake3,
        hash: known,
        chunk_size: chunk,
        ..StreamOptions::default()
    };
    let reader = super::io::Reader::new(file, req.offset, len, chunk);
    let transfer = peer.send_big_stream(DATA, reader, opts);
    tokio::spawn(async move {
        let _slot = slot;
        let _ = transfer.finish().await;
    });
    Ok(json!({ "size": meta.len(), "modified": mtime_ns(&meta), "offset": req.offset, "len": len }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathRequest {
    path: String,
    #[serde(default)]
    recursive: bool,
}

async fn mkdir(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: PathRequest = request(&text)?;
    let (path, full) = inner.locate(peer, &req.path, Access::Write)?;
    if path.parts.is_empty() {
        return Err(err(ErrorCode::Conflict, "an area exists already"));
    }
    blocking(move || {
        if req.recursive { std::fs::create_dir_all(&full) } else { std::fs::create_dir(&full) }
            .map_err(io_err)?;
        Ok(json!({ "path": path.display() }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameRequest {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

async fn rename(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: RenameRequest = request(&text)?;
    let (from, src) = inner.locate(peer, &req.from, Access::Write)?;
    let (to, dest) = inner.locate(peer, &req.to, Access::Write)?;
    if from.parts.is_empty() || to.parts.is_empty() {
        return Err(err(ErrorCode::InvalidArgument, "an area cannot be renamed"));
    }
    if dest.starts_with(&src) {
        return Err(err(ErrorCode::InvalidArgument, "a folder cannot move inside itself"));
    }
    // What moves into home from another area is held to the quota, as an upload is.
    let into_home = (to.area == Area::Home && from.area != Area::Home).then(|| peer.user()).flatten();
    let inner = inner.clone();
    blocking(move || {
        let m = std::fs::symlink_metadata(&src).map_err(io_err)?;
        if !req.overwrite && std::fs::symlink_metadata(&dest).is_ok() {
            return Err(err(
                ErrorCode::Conflict,
                format!("{} exists (overwrite to replace it)", to.display()),
            ));
        }
        if let Some(who) = into_home {
            check_quota(&inner, &who, None, super::tree_usage(&src))?;
        }
        let known =
            (!m.is_dir()).then(|| inner.index.hash_of(&inner.rel(&src), m.len(), mtime_ns(&m))).transpose();
        std::fs::rename(&src, &dest).map_err(io_err)?;
        inner.index.forget(&inner.rel(&src)).map_err(internal)?;
        inner.index.forget(&inner.rel(&dest)).map_err(internal)?;
        if let Ok(Some(Some(hash))) = known {
            // A rename keeps the size and modification time: the hash stays true.
            inner.index.put(&inner.rel(&dest), m.len(), mtime_ns(&m), &hash).map_err(internal)?;
        }
        Ok(json!({ "from": from.display(), "to": to.display() }))
    })
    .await
}

async fn delete(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: PathRequest = request(&text)?;
    let (path, full) = inner.locate(peer, &req.path, Access::Write)?;
    if path.parts.is_empty() {
        return Err(err(ErrorCode::InvalidArgument, "an area cannot be deleted"));
    }
    let inner = inner.clone();
    blocking(move || {
        let m = std::fs::symlink_metadata(&full).map_err(io_err)?;
        match (m.is_dir(), req.recursive) {
            (true, true) => std::fs::remove_dir_all(&full),
            (true, false) => std::fs::remove_dir(&full),
            (false, _) => std::fs::remove_file(&full),
        }
        .map_err(io_err)?;
        inner.index.forget(&inner.rel(&full)).map_err(internal)?;
        Ok(json!({ "path": path.display() }))
    })
    .await
}

/// Refuses (TooLarge) adding `more` bytes and files to `who`'s private area when they do
/// not fit its quota; `except` is an upload being resumed (not counted as in use).
fn check_quota(
    inner: &Inner,
    who: &Identity,
    except: Option<&str>,
    more: (u64, u64),
) -> Result<(), HandlerError> {
    let (bytes, files) = inner.usage(who, except);
    let quota_bytes = inner.quota_bytes.get();
    let quota_files = inner.config.quota_files;
    if bytes.saturating_add(more.0) > quota_bytes || files.saturating_add(more.1) > quota_files {
        let why =
            format!("over quota: {bytes} of {quota_bytes} bytes and {files} of {quota_files} files in use");
        return Err(err(ErrorCode::TooLarge, why));
    }
    Ok(())
}

async fn usage(inner: &Arc<Inner>, peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let who = peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "not logged in"))?;
    let inner = inner.clone();
    blocking(move || {
        let (bytes, files) = inner.usage(&who, None);
        Ok(json!({ "bytes": bytes, "files": files, "quota_bytes": inner.quota_bytes.get(), "quota_files": inner.config.quota_files }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutRequest {
    path: String,
    size: u64,
    /// The file's BLAKE3 (hex): checked at the end, and what an instant upload looks for.
    hash: Option<String>,
    #[serde(default)]
    overwrite: bool,
    /// Ask for an instant upload when the server holds the content (default true).
    instant: Option<bool>,
}

/// A proof of possession the server asked for: keyed BLAKE3 of these ranges.
pub(crate) struct Challenge {
    source: std::path::PathBuf,
    dest: std::path::PathBuf,
    overwrite: bool,
    nonce: [u8; 32],
    ranges: Vec<(u64, u64)>,
    hash: [u8; 32],
    user: String,
}

/// Bytes per range of a proof, and ranges asked for.
const PROOF_RANGE: u64 = 16 << 10;
const PROOF_RANGES: usize = 3;

/// Begins or resumes an upload: answers the upload's id, where to resume from and the
/// ticket to send the data under; or, when the server already holds the content, a
/// challenge to prove possession of it.
async fn put(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: PutRequest = request(&text)?;
    let (path, dest) = inner.locate(peer, &req.path, Access::Write)?;
    if path.parts.is_empty() {
        return Err(err(ErrorCode::InvalidArgument, "name a file inside the area"));
    }
    let hash = req.hash.as_deref().map(parse_hash).transpose()?;
    let who = peer.user().map(|w| w.user.clone()).unwrap_or_default();
    let id = upload::upload_id(&who, &dest, req.size, req.hash.as_deref());
    let (inner2, peer2, id2) = (inner.clone(), peer.clone(), id.clone());
    let home = path.area == Area::Home;
    let holder = blocking(move || {
        let inner = inner2;
        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => return Err(err(ErrorCode::Conflict, "a folder of that name exists")),
            Ok(_) if !req.overwrite => {
                return Err(err(
                    ErrorCode::Conflict,
                    format!("{} exists (overwrite to replace it)", path.display()),
                ))
            }
            _ => {}
        }
        if !dest.parent().is_some_and(|p| p.is_dir()) {
            return Err(err(ErrorCode::NotFound, "the folder does not exist (make it with file.mkdir)"));
        }
        upload::sweep_hourly(&inner);
        if home {
            let who = peer2.user().expect("home needs a login");
            // This upload's own earlier part is what it adds: not counted twice.
            check_quota(&inner, &who, Some(&id2), (req.size, 1))?;
        }
        let holder = match (hash, req.instant.unwrap_or(true)) {
            (Some(h), true) if req.size > 0 => find_holder(&inner, &h, req.size)?,
            _ => None,
        };
        let record = Record {
            user: who.clone(),
            dest: dest.clone(),
            size: req.size,
            hash: req.hash.clone(),
            overwrite: req.overwrite,
            created: crate::accounts::store::now_s(),
        };
        match holder {
            Some(source) => Ok(Err((source, record))),
            None => upload::prepare(&inner, &id2, &record).map(|offset| Ok((offset, record))),
        }
    })
    .await?;
    match holder {
        Ok((offset, record)) => {
            let ticket = peer.issue_ticket(Slot { id: id.clone(), record });
            Ok(json!({ "upload": id, "offset": offset, "ticket": ticket }))
        }
        Err((source, record)) => {
            let mut nonce = [0u8; 32];
            getrandom::fill(&mut nonce).expect("the operating system provides random bytes");
            let ranges = proof_ranges(record.size);
            let challenge = Challenge {
                source,
                dest: record.dest,
                overwrite: record.overwrite,
                nonce,
                ranges: ranges.clone(),
                hash: hash.expect("an instant upload has a hash"),
                user: record.user,
            };
            let ticket = peer.issue_ticket(challenge);
            let nonce = hex(&nonce);
            Ok(json!({ "upload": id, "challenge": { "ticket": ticket, "nonce": nonce, "ranges": ranges } }))
        }
    }
}

/// A file the server holds with this content, checked against the disk.
fn find_holder(
    inner: &Inner,
    hash: &[u8; 32],
    size: u64,
) -> Result<Option<std::path::PathBuf>, HandlerError> {
    let Some(rel) = inner.index.holder(hash).map_err(internal)? else { return Ok(None) };
    let full = inner.config.root.join(&rel);
    let Ok(m) = std::fs::metadata(&full) else { return Ok(None) };
    let fresh =
        m.len() == size && inner.index.hash_of(&rel, m.len(), mtime_ns(&m)).map_err(internal)? == Some(*hash);
    Ok(fresh.then_some(full))
}

/// Ranges a proof covers: the whole file when small, else a few at random places.
fn proof_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= PROOF_RANGE * PROOF_RANGES as u64 {
        return vec![(0, size)];
    }
    (0..PROOF_RANGES)
        .map(|_| {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).expect("the operating system provides random bytes");
            (u64::from_le_bytes(r) % (size - PROOF_RANGE + 1), PROOF_RANGE)
        })
        .collect()
}

/// The keyed BLAKE3 of a file's ranges: what a proof of possession is.
pub fn proof(file: &std::path::Path, nonce: &[u8; 32], ranges: &[(u64, u64)]) -> std::io::Result<[u8; 32]> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file)?;
    let mut hasher = blake3::Hasher::new_keyed(nonce);
    for &(offset, len) in ranges {
        f.seek(SeekFrom::Start(offset))?;
        let n = std::io::copy(&mut (&mut f).take(len), &mut hasher)?;
        if n != len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a range is past the end"));
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProveRequest {
    ticket: u64,
    proof: String,
}

/// Completes an instant upload: the file is made from the server's copy if the proof is
/// right.
async fn prove(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: ProveRequest = request(&text)?;
    let offered = parse_hash(&req.proof)?;
    let c: Challenge = peer
        .take_ticket(req.ticket)
        .ok_or_else(|| err(ErrorCode::NotFound, "no such challenge on this connection"))?;
    let (inner, peer_id) = (inner.clone(), peer.id());
    blocking(move || {
        let expected = proof(&c.source, &c.nonce, &c.ranges).map_err(io_err)?;
        // blake3::Hash compares in constant time.
        if blake3::Hash::from(expected) != blake3::Hash::from(offered) {
            tracing::info!(target: "zs::files", user = %c.user, "instant upload refused: wrong proof");
            return Err(err(ErrorCode::AuthFailed, "the proof of possession is wrong; upload the file instead"));
        }
        let _writing = upload::Writing::claim(&inner, &c.dest, peer_id)?;
        // A copy of our own under a temporary name, then renamed into place.
        let tmp = inner.config.root.join(upload::PARTIAL_DIR).join(format!("{}.link", hex(&c.nonce)));
        if std::fs::hard_link(&c.source, &tmp).is_err() {
            std::fs::copy(&c.source, &tmp).map_err(io_err)?;
        }
        let placed = upload::install(&tmp, &c.dest, c.overwrite);
        let _ = std::fs::remove_file(&tmp);
        placed?;
        let m = std::fs::metadata(&c.dest).map_err(io_err)?;
        inner.index.put(&inner.rel(&c.dest), m.len(), mtime_ns(&m), &c.hash).map_err(internal)?;
        tracing::info!(target: "zs::files", user = %c.user, file = %inner.rel(&c.dest), bytes = m.len(), "instant upload");
        Ok(json!({ "size": m.len(), "hash": hex(&c.hash), "instant": true }))
    })
    .await
}

/// Decodes `text` as the request of every command: the body of the `files_request` fuzz
/// target (with each path checked as the commands check it).
pub(crate) fn decode_any(text: &Text) {
    use super::paths::AreaPath;
    let paths: Vec<String> = [
        request::<ListRequest>(text).ok().map(|r| vec![r.path]),
        request::<StatRequest>(text).ok().map(|r| vec![r.path]),
        request::<RangeRequest>(text).ok().map(|r| {
            let _ = range(r.offset, r.len, u64::MAX / 2);
            vec![r.path]
        }),
        request::<PathRequest>(text).ok().map(|r| vec![r.path]),
        request::<RenameRequest>(text).ok().map(|r| vec![r.from, r.to]),
        request::<PutRequest>(text).ok().map(|r| {
            let _ = r.hash.as_deref().map(parse_hash);
            vec![r.path]
        }),
        request::<ProveRequest>(text).ok().map(|r| {
            let _ = parse_hash(&r.proof);
            vec![]
        }),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .collect();
    for p in paths {
        if let Ok(parsed) = AreaPath::parse(&p) {
            assert!(parsed
                .parts
                .iter()
                .all(|c| c != ".." && c != "." && !c.contains('/') && !c.contains('\0')));
            assert_eq!(AreaPath::parse(&parsed.display()).as_ref(), Ok(&parsed), "display parses back");
        }
    }
}
