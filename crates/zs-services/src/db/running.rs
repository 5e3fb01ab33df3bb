//! The queries and watches a connection runs: each a task that sends `db.rows` or
//! `db.change` pushes, a query only as far as the client's credit goes. A connection runs
//! a bounded number; they end with it (with a resumable session the connection, and so
//! they, outlive a cut link).
//!
//! A `db.rows` push is a DataFrame: query id, kind (`rows`, `end`, `error`), resume token,
//! records examined, error code (0) and message (""), then the rows packed in one bytes
//! item ([`pack`]). A `db.change` push: watch id, kind (`snapshot`, `synced`, `insert`,
//! `update`, `delete`, `overflow`, `error`), commit number, the rows packed (then the error
//! code and message, or the changes missed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Notify};
use zs::wire::{DataFrame, ErrorCode};
use zs::Peer;

use super::predicate::{Predicate, Subject};
use super::query::{next_batch_blocking, Batch, Filter, Scan};
use super::record::{pack, Data, Record};
use super::store::{Change, DbError, Op};
use super::{Inner, CHANGE, ROWS};

/// A running query's or watch's controls.
pub(crate) struct Ctl {
    /// Its place among the server's running queries and watches.
    _place: crate::limits::Counted,
    rows: AtomicU64,
    bytes: AtomicU64,
    paused: AtomicBool,
    stopped: AtomicBool,
    wake: Notify,
}

impl Ctl {
    /// Adds credit (a paused query stays paused).
    pub(crate) fn grant(&self, rows: u64, bytes: u64) {
        let add = |a: &AtomicU64, n: u64| a.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(n)));
        let _ = (add(&self.rows, rows), add(&self.bytes, bytes));
        self.wake.notify_one();
    }

    pub(crate) fn pause(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Relaxed);
        self.wake.notify_one();
    }

    fn ready(&self) -> bool {
        !self.paused.load(Relaxed) && self.rows.load(Relaxed) > 0 && self.bytes.load(Relaxed) > 0
    }
}

/// What a connection runs, by the ids its client gave.
#[derive(Default)]
struct Running(Mutex<HashMap<String, Arc<Ctl>>>);

fn running(peer: &Peer) -> Arc<Running> {
    if let Some(r) = peer.state::<Running>() {
        return r;
    }
    peer.set_state(Running::default());
    peer.state::<Running>().expect("just set")
}

/// Registers `id` on `peer` (at most `max` at once on it, and `inner`'s server-wide bound;
/// ids unique).
pub(crate) fn register(inner: &Inner, peer: &Peer, id: &str, max: usize) -> Result<Arc<Ctl>, DbError> {
    if id.is_empty() || id.len() > 64 {
        return Err(DbError::Invalid("a query or watch id is 1 to 64 bytes".into()));
    }
    let r = running(peer);
    let mut map = r.0.lock().unwrap_or_else(|p| p.into_inner());
    if map.contains_key(id) {
        return Err(DbError::Exists(format!("`{id}` is running on this connection")));
    }
    if map.len() >= max {
        return Err(DbError::Busy(format!("a connection runs at most {max} queries and watches")));
    }
    let total = inner.config.max_running_total;
    let Some(place) = crate::limits::Counted::take(&inner.running, total) else {
        return Err(DbError::Busy(format!("the server runs {total} queries and watches, its most")));
    };
    let ctl = Arc::new(Ctl {
        _place: place,
        rows: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        wake: Notify::new(),
    });
    map.insert(id.to_owned(), ctl.clone());
    Ok(ctl)
}

/// The controls of `id` on `peer`.
pub(crate) fn find(peer: &Peer, id: &str) -> Result<Arc<Ctl>, DbError> {
    let r = running(peer);
    let map = r.0.lock().unwrap_or_else(|p| p.into_inner());
    map.get(id).cloned().ok_or_else(|| DbError::NotFound(format!("no query or watch `{id}` runs here")))
}

fn forget(peer: &Peer, id: &str) {
    if let Some(r) = peer.state::<Running>() {
        r.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Stops everything `peer` runs (it is gone).
pub(crate) fn stop_all(peer: &Peer) {
    if let Some(r) = peer.state::<Running>() {
        for ctl in r.0.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, c)| c) {
            ctl.stop();
        }
    }
}

/// The code a client sees for `e`.
pub(crate) fn code(e: &DbError) -> ErrorCode {
    match e {
        DbError::NotFound(_) => ErrorCode::NotFound,
        DbError::Exists(_) => ErrorCode::Conflict,
        DbError::VersionMismatch(_) => ErrorCode::VersionMismatch,
        DbError::Invalid(_) => ErrorCode::InvalidArgument,
        DbError::TooLarge(_) => ErrorCode::TooLarge,
        DbError::OverBudget(_) => ErrorCode::OverBudget,
        DbError::Forbidden(_) => ErrorCode::Forbidden,
        DbError::Busy(_) => ErrorCode::Overloaded,
        DbError::Storage(_) => ErrorCode::Application,
    }
}

fn rows_frame(
    id: &str,
    kind: &str,
    token: &str,
    examined: u64,
    error: Option<&DbError>,
    batch: Batch,
) -> DataFrame {
    let mut f = DataFrame::new();
    f.push(id).push(kind).push(token).push(examined);
    f.push(error.map_or(0, |e| code(e).code())).push(error.map_or(String::new(), |e| e.to_string()));
    f.push(batch.packed);
    f
}

/// Streams `scan`'s rows to `peer` as credit allows, until done, stopped, or the
/// connection ends.
pub(crate) async fn run_query(inner: Arc<Inner>, peer: Peer, id: String, mut scan: Scan, ctl: Arc<Ctl>) {
    let (max_rows, max_bytes) = (inner.config.batch_rows as u64, inner.config.batch_bytes as u64);
    loop {
        // Wait for credit (or a stop); a query paused too long stops, its token kept.
        while !ctl.ready() && !ctl.stopped.load(Relaxed) {
            if tokio::time::timeout(inner.config.paused_for, ctl.wake.notified()).await.is_err() {
                let why =
                    DbError::Busy("the query waited too long for credit: resume it with its token".into());
                let f =
                    rows_frame(&id, "error", &scan.spec.token(), scan.examined, Some(&why), Batch::default());
                let _ = peer.send_stream(ROWS, f).await;
                forget(&peer, &id);
                return;
            }
        }
        if ctl.stopped.load(Relaxed) {
            let f = rows_frame(&id, "end", &scan.spec.token(), scan.examined, None, Batch::default());
            let _ = peer.send_stream(ROWS, f).await;
            forget(&peer, &id);
            return;
        }
        let rows = ctl.rows.load(Relaxed).min(max_rows) as usize;
        let bytes = ctl.bytes.load(Relaxed).min(max_bytes) as usize;
        let (back, result) = next_batch_blocking(scan, rows, bytes).await;
        scan = back;
        let token = scan.spec.token();
        let (frame, end) = match result {
            Ok(batch) => {
                let (n, b) = (batch.rows as u64, batch.packed.len() as u64);
                let _ = ctl.rows.fetch_update(Relaxed, Relaxed, |r| Some(r.saturating_sub(n)));
                let _ = ctl.bytes.fetch_update(Relaxed, Relaxed, |r| Some(r.saturating_sub(b)));
                let done = batch.done;
                (rows_frame(&id, if done { "end" } else { "rows" }, &token, scan.examined, None, batch), done)
            }
            Err(e) => (rows_frame(&id, "error", &token, scan.examined, Some(&e), Batch::default()), true),
        };
        if peer.send_stream(ROWS, frame).await.is_err() || end {
            forget(&peer, &id);
            return;
        }
    }
}

/// What a watch tests changes with.
pub(crate) struct Watching {
    pub(crate) predicate: Predicate,
    pub(crate) filter: Option<Filter>,
    pub(crate) params: serde_json::Map<String, serde_json::Value>,
}

impl Watching {
    fn passes(&self, r: &Record) -> bool {
        let fields;
        let doc = match &r.data {
            Data::Json(v) => v,
            other => {
                fields = other.fields();
                &fields
            }
        };
        let s = Subject { id: r.id, version: r.version, doc };
        self.predicate.test(&s) && self.filter.as_ref().is_none_or(|f| f(&s, &self.params))
    }
}

fn change_frame(id: &str, kind: &str, seq: u64, packed: Vec<u8>) -> DataFrame {
    let mut f = DataFrame::new();
    f.push(id).push(kind).push(seq).push(packed);
    f
}

/// Sends `snapshot`'s rows (if any), then every matching change committed after it, until
/// stopped or the connection ends. A watch that falls more than [`super::store::CHANGES`]
/// changes behind is told `overflow` and ends: its client watches again with a snapshot.
pub(crate) async fn run_watch(
    inner: Arc<Inner>,
    peer: Peer,
    id: String,
    mut changes: broadcast::Receiver<Arc<Change>>,
    snapshot: Option<Scan>,
    watching: Watching,
    ctl: Arc<Ctl>,
) {
    let mut after = 0;
    if let Some(mut scan) = snapshot {
        after = scan.seq;
        loop {
            let (rows, bytes) = (inner.config.batch_rows, inner.config.batch_bytes);
            let (back, result) = next_batch_blocking(scan, rows, bytes).await;
            scan = back;
            match result {
                Ok(batch) => {
                    let frame = change_frame(&id, "snapshot", after, batch.packed);
                    if peer.send_stream(CHANGE, frame).await.is_err() {
                        return forget(&peer, &id);
                    }
                    if batch.done {
                        break;
                    }
                }
                Err(e) => {
                    let mut f = change_frame(&id, "error", after, Vec::new());
                    f.push(code(&e).code()).push(e.to_string());
                    let _ = peer.send_stream(CHANGE, f).await;
                    return forget(&peer, &id);
                }
            }
            if ctl.stopped.load(Relaxed) {
                return forget(&peer, &id);
            }
        }
        if peer.send_stream(CHANGE, change_frame(&id, "synced", after, Vec::new())).await.is_err() {
            return forget(&peer, &id);
        }
    }
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = ctl.wake.notified() => {
                if ctl.stopped.load(Relaxed) { return forget(&peer, &id); }
                continue;
            }
        };
        let c = match change {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let mut f = change_frame(&id, "overflow", after, Vec::new());
                f.push(missed);
                let _ = peer.send_stream(CHANGE, f).await;
                return forget(&peer, &id);
            }
            Err(broadcast::error::RecvError::Closed) => return forget(&peer, &id),
        };
        if c.seq <= after {
            continue;
        }
        let new = match c.new.as_deref().map(|raw| Record::decode(c.id, raw)) {
            Some(Ok(r)) => Some(r),
            Some(Err(why)) => {
                tracing::warn!("a change the writer made does not decode: {why}");
                None
            }
            None => None,
        };
        let new_passes = new.as_ref().is_some_and(|r| watching.passes(r));
        let old_passed = c.old.as_ref().is_some_and(|r| watching.passes(r));
        let (kind, raw) = match (c.op, new_passes, old_passed) {
            (Op::Insert, true, _) | (Op::Update, true, false) => ("insert", c.new.clone()),
            (Op::Update, true, true) => ("update", c.new.clone()),
            (Op::Update, false, true) | (Op::Delete, _, true) => {
                ("delete", c.old.as_ref().map(Record::encode))
            }
            _ => continue,
        };
        let mut packed = Vec::new();
        pack(&mut packed, c.id, &raw.expect("a change that passes has its record"));
        let frame = change_frame(&id, kind, c.seq, packed);
        if peer.send_stream(CHANGE, frame).await.is_err() {
            return forget(&peer, &id);
        }
    }
}
