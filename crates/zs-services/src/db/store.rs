//! Named databases: one redb file each (`NAME.redb`) in the store's directory, written by a
//! group-commit thread of its own ([`crate::commit`]): a write is answered only after the
//! fsynced commit that holds it, and what queued meanwhile shares that commit. Every commit
//! is numbered; the changes it made go out on a bounded broadcast that watches follow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use super::predicate::field;
use super::record::{index_key, Data, Record};
use crate::commit::{Batcher, Committer, Shape};
use crate::push::now_ms;

/// Records by id.
pub(crate) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Secondary indexes: (field path, sortable value, id).
pub(crate) const INDEX: TableDefinition<(&str, &[u8], u64), ()> = TableDefinition::new("index");
/// Expiring records by (expiry, id).
const EXPIRY: TableDefinition<(u64, u64), ()> = TableDefinition::new("expiry");
/// `info` (JSON), `next` (the next id) and `seq` (commits made), the last two u64 LE.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Writes waiting for a database's writer; past this, writes are refused as busy.
pub const QUEUE: usize = 8192;
/// Writes committed together at most.
const BATCH: usize = 2048;
/// How often expired records are swept, and how many at most per sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_MAX: usize = 10_000;
/// Changes a slow watch may fall behind before it is told it missed some.
pub const CHANGES: usize = 4096;
/// Page cache of one open database unless configured (redb's default is 1 GiB each).
pub const DEFAULT_CACHE: usize = 64 << 20;

/// What went wrong, with the code a client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// No such database or record.
    #[error("{0}")]
    NotFound(String),
    /// A database of that name exists.
    #[error("{0}")]
    Exists(String),
    /// A compare-and-set found another version.
    #[error("{0}")]
    VersionMismatch(String),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// Over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Over a query's budget.
    #[error("{0}")]
    OverBudget(String),
    /// Not allowed for this user.
    #[error("{0}")]
    Forbidden(String),
    /// Too many writes waiting, or a compaction with queries running.
    #[error("{0}")]
    Busy(String),
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(String),
}

fn st<E: std::fmt::Display>(e: E) -> DbError {
    DbError::Storage(e.to_string())
}

/// A database's settings, kept in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Its name.
    pub name: String,
    /// Who made it (may do everything with it).
    pub owner: String,
    /// Who may read: user names, `role:NAME`, or `*` for any logged-in user.
    #[serde(default)]
    pub readers: Vec<String>,
    /// Who may write (and read), in the same form.
    #[serde(default)]
    pub writers: Vec<String>,
    /// Indexed fields of JSON records (dotted paths).
    #[serde(default)]
    pub indexes: Vec<String>,
    /// When it was made, milliseconds since the epoch.
    #[serde(default)]
    pub created_ms: u64,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A new record.
    Insert,
    /// A record changed.
    Update,
    /// A record removed (deleted, or expired).
    Delete,
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub struct Change {
    /// The commit that made it.
    pub seq: u64,
    /// What it did.
    pub op: Op,
    /// The record's id.
    pub id: u64,
    /// The record after it, encoded (`None` after a delete): decoded by the watches that
    /// look at it, not by the writer.
    pub new: Option<Vec<u8>>,
    /// The record before it (`None` before an insert).
    pub old: Option<Record>,
}

/// An update's parts (what is `None` stays).
#[derive(Debug, Clone)]
pub struct Patch {
    /// The version the record must have (compare-and-set).
    pub expect: Option<u64>,
    /// The new data.
    pub data: Data,
    /// The new expiry (`Some(None)`: never).
    pub expires_at: Option<Option<u64>>,
}

type Done<T> = oneshot::Sender<Result<T, DbError>>;

/// A record to insert, its value encoded by the writer's caller.
pub(crate) struct NewRecord {
    data: Data,
    expires_at: Option<u64>,
    payload: Vec<u8>,
}

/// A write queued for a database's writer.
pub(crate) enum Write {
    Insert {
        records: Vec<NewRecord>,
        done: Done<Vec<(u64, u64)>>,
    },
    /// Records with their ids and versions kept (a copy).
    Load {
        records: Vec<Record>,
        done: Done<usize>,
    },
    Update {
        id: u64,
        patch: Patch,
        done: Done<u64>,
    },
    Delete {
        id: u64,
        expect: Option<u64>,
        done: Done<bool>,
    },
    SetInfo {
        info: Info,
        done: Done<()>,
    },
}

/// An open database.
pub struct Handle {
    name: String,
    path: PathBuf,
    /// Shared to begin transactions; taken whole to compact.
    db: Arc<RwLock<Database>>,
    writes: Committer<Write>,
    info: RwLock<Arc<Info>>,
    changes: broadcast::Sender<Arc<Change>>,
    dropped: AtomicBool,
}

impl Handle {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings now.
    pub fn info(&self) -> Arc<Info> {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A consistent snapshot to read from.
    pub fn snapshot(&self) -> Result<ReadTransaction, DbError> {
        if self.dropped.load(Relaxed) {
            return Err(DbError::NotFound(format!("database `{}` was dropped", self.name)));
        }
        self.db.read().unwrap_or_else(|p| p.into_inner()).begin_read().map_err(st)
    }

    /// Follows the changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    async fn write<T>(&self, make: impl FnOnce(Done<T>) -> Write) -> Result<T, DbError> {
        if self.dropped.load(Relaxed) {
            return Err(DbError::NotFound(format!("database `{}` was dropped", self.name)));
        }
        let (done, rx) = oneshot::channel();
        self.writes.send(make(done)).map_err(DbError::Busy)?;
        rx.await.map_err(|_| DbError::Storage("the writer stopped".into()))?
    }

    /// Inserts records (data, expiry), all or none; their (id, version) once on disk.
    pub async fn insert(&self, records: Vec<(Data, Option<u64>)>) -> Result<Vec<(u64, u64)>, DbError> {
        // Values are encoded here, in the callers' tasks, not by the one writer thread.
        let records = records
            .into_iter()
            .map(|(data, expires_at)| NewRecord { payload: data.payload(), data, expires_at })
            .collect();
        self.write(|done| Write::Insert { records, done }).await
    }

    /// Writes records with the ids and versions they have (a copy from another database).
    pub async fn load(&self, records: Vec<Record>) -> Result<usize, DbError> {
        self.write(|done| Write::Load { records, done }).await
    }

    /// Changes record `id`; its new version once on disk.
    pub async fn update(&self, id: u64, patch: Patch) -> Result<u64, DbError> {
        self.write(|done| Write::Update { id, patch, done }).await
    }

    /// Removes record `id` (if at version `expect`); whether it was there.
    pub async fn delete(&self, id: u64, expect: Option<u64>) -> Result<bool, DbError> {
        self.write(|done| Write::Delete { id, expect, done }).await
    }

    /// Replaces the settings (an index added is built from the records, one removed is
    /// cleared), once on disk.
    pub async fn set_info(&self, info: Info) -> Result<(), DbError> {
        let kept = Arc::new(info.clone());
        self.write(|done| Write::SetInfo { info, done }).await?;
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = kept;
        Ok(())
    }

    /// Record `id` from a snapshot (`None` if absent or expired).
    pub fn get(&self, id: u64) -> Result<Option<Record>, DbError> {
        let txn = self.snapshot()?;
        let table = txn.open_table(RECORDS).map_err(st)?;
        let Some(raw) = table.get(id).map_err(st)? else { return Ok(None) };
        let r = Record::decode(id, raw.value()).map_err(DbError::Storage)?;
        Ok(r.expires_at.is_none_or(|t| t > now_ms()).then_some(r))
    }

    /// Records held (expired ones not yet swept included) and the file's size.
    pub fn size(&self) -> Result<(u64, u64), DbError> {
        let txn = self.snapshot()?;
        let n = txn.open_table(RECORDS).map_err(st)?.len().map_err(st)?;
        Ok((n, std::fs::metadata(&self.path).map_or(0, |m| m.len())))
    }

    /// Commits made to it since it was made (each one fsync).
    pub fn commits(&self) -> Result<u64, DbError> {
        let txn = self.snapshot()?;
        meta_u64(&txn.open_table(META).map_err(st)?, "seq")
    }

    /// Rewrites the file without its free space; `Busy` while queries or watches read.
    pub fn compact(&self) -> Result<bool, DbError> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        db.compact().map_err(|e| match e {
            redb::CompactionError::TransactionInProgress => {
                DbError::Busy("queries or writes are running on it; compact it when they are done".into())
            }
            e => st(e),
        })
    }
}

/// Every database in a directory, opened when first used.
pub struct Stores {
    dir: PathBuf,
    cache: usize,
    open: Mutex<HashMap<String, Arc<Handle>>>,
}

/// Whether `name` may name a database: 1 to 64 letters, digits, `_` or `-`, starting with a
/// letter or digit.
pub fn check_name(name: &str) -> Result<(), DbError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    match ok {
        true => Ok(()),
        false => Err(DbError::Invalid(
            "a database name is 1 to 64 letters, digits, _ or -, starting with a letter or digit".into(),
        )),
    }
}

impl Stores {
    /// The databases in `dir` (made if missing), each with a page cache of `cache` bytes.
    pub fn new(dir: &Path, cache: usize) -> Result<Stores, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Stores { dir: dir.to_owned(), cache, open: Mutex::new(HashMap::new()) })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.redb"))
    }

    /// The names of the databases there are, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".redb").map(str::to_owned))
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        names
    }

    /// Database `name`, opened if it is not.
    pub fn get(&self, name: &str) -> Result<Arc<Handle>, DbError> {
        check_name(name)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = open.get(name) {
            return Ok(h.clone());
        }
        let path = self.path(name);
        if !path.exists() {
            return Err(DbError::NotFound(format!("no database `{name}`")));
        }
        let h = Arc::new(open_handle(name, &path, None, self.cache)?);
        open.insert(name.to_owned(), h.clone());
        Ok(h)
    }

    /// Makes database `info.name`.
    pub fn create(&self, info: Info) -> Result<Arc<Handle>, DbError> {
        check_name(&info.name)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(&info.name);
        if open.contains_key(&info.name) || path.exists() {
            return Err(DbError::Exists(format!("database `{}` exists", info.name)));
        }
        let name = info.name.clone();
        let h = Arc::new(open_handle(&name, &path, Some(info), self.cache)?);
        open.insert(name, h.clone());
        Ok(h)
    }

    /// Removes database `name` and its file; queries running on it see it gone.
    pub fn drop_db(&self, name: &str) -> Result<(), DbError> {
        let h = self.get(name)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        h.dropped.store(true, Relaxed);
        open.remove(name);
        std::fs::remove_file(&h.path).map_err(st)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn open_handle(name: &str, path: &Path, new: Option<Info>, cache: usize) -> Result<Handle, DbError> {
    let mut builder = Database::builder();
    builder.set_cache_size(cache);
    let db = match new.is_some() {
        true => builder.create(path),
        false => builder.open(path),
    }
    .map_err(|e| DbError::Storage(format!("{}: {e}", path.display())))?;
    let txn = db.begin_write().map_err(st)?;
    {
        txn.open_table(RECORDS).map_err(st)?;
        txn.open_table(INDEX).map_err(st)?;
        txn.open_table(EXPIRY).map_err(st)?;
        let mut meta = txn.open_table(META).map_err(st)?;
        if let Some(info) = &new {
            meta.insert("info", serde_json::to_vec(info).map_err(st)?.as_slice()).map_err(st)?;
        }
    }
    txn.commit().map_err(st)?;
    let (info, next, seq) = {
        let txn = db.begin_read().map_err(st)?;
        let meta = txn.open_table(META).map_err(st)?;
        let info: Info = match meta.get("info").map_err(st)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(st)?,
            None => return Err(DbError::Storage(format!("{}: not a zserver database", path.display()))),
        };
        (info, meta_u64(&meta, "next")?.max(1), meta_u64(&meta, "seq")?)
    };
    let db = Arc::new(RwLock::new(db));
    let (changes, _) = broadcast::channel(CHANGES);
    let writer = Writer {
        db: db.clone(),
        info: info.clone(),
        next,
        seq,
        rollback: (next, seq),
        changes: changes.clone(),
    };
    let shape = Shape { queue: QUEUE, batch: BATCH, idle_every: SWEEP_EVERY };
    let writes =
        Committer::start(&format!("zs-db-{name}"), "database", writer, shape).map_err(DbError::Storage)?;
    Ok(Handle {
        name: name.to_owned(),
        path: path.to_owned(),
        db,
        writes,
        info: RwLock::new(Arc::new(info)),
        changes,
        dropped: AtomicBool::new(false),
    })
}

/// A u64 kept in META (0 when absent).
pub(crate) fn meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, DbError> {
    Ok(match meta.get(key).map_err(st)? {
        Some(v) => {
            u64::from_le_bytes(v.value().try_into().map_err(|_| DbError::Storage(format!("meta {key}")))?)
        }
        None => 0,
    })
}

struct Writer {
    db: Arc<RwLock<Database>>,
    info: Info,
    /// The next id, and the commits made.
    next: u64,
    seq: u64,
    /// `next` and `seq` before the transaction being built.
    rollback: (u64, u64),
    changes: broadcast::Sender<Arc<Change>>,
}

/// One write's outcome; its changes go out once the commit is done.
enum Outcome {
    Ok(Reply, Vec<Change>),
    Refused(DbError),
    Failed(DbError),
}

enum Reply {
    Ids(Vec<(u64, u64)>),
    Count(usize),
    Version(u64),
    Deleted(bool),
    Unit,
}

struct Tables<'t> {
    records: redb::Table<'t, u64, &'static [u8]>,
    index: redb::Table<'t, (&'static str, &'static [u8], u64), ()>,
    expiry: redb::Table<'t, (u64, u64), ()>,
}

impl Writer {
    fn tables<'t>(&self, txn: &'t WriteTransaction) -> Result<Tables<'t>, DbError> {
        Ok(Tables {
            records: txn.open_table(RECORDS).map_err(st)?,
            index: txn.open_table(INDEX).map_err(st)?,
            expiry: txn.open_table(EXPIRY).map_err(st)?,
        })
    }

    /// Index entries of a record holding `data`, for the indexed fields.
    fn index_entries(&self, data: &Data) -> Vec<(String, Vec<u8>)> {
        if self.info.indexes.is_empty() {
            return Vec::new();
        }
        let Data::Json(doc) = data else { return Vec::new() };
        self.info
            .indexes
            .iter()
            .filter_map(|path| {
                let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
                Some((path.clone(), index_key(field(doc, &steps))?))
            })
            .collect()
    }

    /// Writes `r` (replacing `old`, if any) with its index and expiry entries; its encoding.
    fn put(&self, t: &mut Tables<'_>, r: &Record, old: Option<&Record>) -> Result<Vec<u8>, DbError> {
        if let Some(old) = old {
            self.unput(t, old)?;
        }
        let encoded = r.encode();
        self.put_encoded(t, r.id, &r.data, r.expires_at, &encoded)?;
        Ok(encoded)
    }

    /// Writes record `id`, already `encoded`, with its index and expiry entries.
    fn put_encoded(
        &self,
        t: &mut Tables<'_>,
        id: u64,
        data: &Data,
        expires_at: Option<u64>,
        encoded: &[u8],
    ) -> Result<(), DbError> {
        t.records.insert(id, encoded).map_err(st)?;
        for (path, key) in self.index_entries(data) {
            t.index.insert((path.as_str(), key.as_slice(), id), ()).map_err(st)?;
        }
        if let Some(at) = expires_at {
            t.expiry.insert((at, id), ()).map_err(st)?;
        }
        Ok(())
    }

    /// Removes `r`'s index and expiry entries (not the record).
    fn unput(&self, t: &mut Tables<'_>, r: &Record) -> Result<(), DbError> {
        for (path, key) in self.index_entries(&r.data) {
            t.index.remove((path.as_str(), key.as_slice(), r.id)).map_err(st)?;
        }
        if let Some(at) = r.expires_at {
            t.expiry.remove((at, r.id)).map_err(st)?;
        }
        Ok(())
    }

    fn read(&self, t: &Tables<'_>, id: u64) -> Result<Option<Record>, DbError> {
        match t.records.get(id).map_err(st)? {
            Some(raw) => Record::decode(id, raw.value()).map(Some).map_err(DbError::Storage),
            None => Ok(None),
        }
    }

    fn apply_one(
        &mut self,
        t: &mut Tables<'_>,
        w: &Write,
        now: u64,
    ) -> Result<(Reply, Vec<Change>), DbError> {
        let seq = self.seq + 1;
        match w {
            Write::Insert { records, .. } => {
                let mut ids = Vec::with_capacity(records.len());
                let mut changes = Vec::with_capacity(records.len());
                // Values come encoded by the writers' tasks.
                for n in records {
                    let id = self.next;
                    self.next += 1;
                    let encoded = Record::encode_parts(1, n.expires_at, &n.data, &n.payload);
                    self.put_encoded(t, id, &n.data, n.expires_at, &encoded)?;
                    ids.push((id, 1));
                    changes.push(Change { seq, op: Op::Insert, id, new: Some(encoded), old: None });
                }
                Ok((Reply::Ids(ids), changes))
            }
            Write::Load { records, .. } => {
                let mut changes = Vec::with_capacity(records.len());
                for r in records {
                    let old = self.read(t, r.id)?;
                    let encoded = self.put(t, r, old.as_ref())?;
                    self.next = self.next.max(r.id + 1);
                    let op = if old.is_some() { Op::Update } else { Op::Insert };
                    changes.push(Change { seq, op, id: r.id, new: Some(encoded), old });
                }
                Ok((Reply::Count(records.len()), changes))
            }
            Write::Update { id, patch, .. } => {
                let old = self.read(t, *id)?.filter(|r| r.expires_at.is_none_or(|at| at > now));
                let Some(old) = old else { return Err(DbError::NotFound(format!("no record {id}"))) };
                if let Some(v) = patch.expect.filter(|v| *v != old.version) {
                    return Err(DbError::VersionMismatch(format!(
                        "record {id} is at version {}, not {v}",
                        old.version
                    )));
                }
                let r = Record {
                    id: *id,
                    version: old.version + 1,
                    expires_at: patch.expires_at.unwrap_or(old.expires_at),
                    data: patch.data.clone(),
                };
                let encoded = self.put(t, &r, Some(&old))?;
                let version = r.version;
                Ok((
                    Reply::Version(version),
                    vec![Change { seq, op: Op::Update, id: *id, new: Some(encoded), old: Some(old) }],
                ))
            }
            Write::Delete { id, expect, .. } => {
                let Some(old) = self.read(t, *id)? else { return Ok((Reply::Deleted(false), Vec::new())) };
                if let Some(v) = expect.filter(|v| *v != old.version) {
                    return Err(DbError::VersionMismatch(format!(
                        "record {id} is at version {}, not {v}",
                        old.version
                    )));
                }
                self.unput(t, &old)?;
                t.records.remove(*id).map_err(st)?;
                let live = old.expires_at.is_none_or(|at| at > now);
                Ok((
                    Reply::Deleted(live),
                    vec![Change { seq, op: Op::Delete, id: *id, new: None, old: Some(old) }],
                ))
            }
            Write::SetInfo { info, .. } => {
                let before = std::mem::replace(&mut self.info, info.clone());
                // Indexes added are built, indexes removed cleared.
                for path in before.indexes.iter().filter(|p| !info.indexes.contains(p)) {
                    let path = path.as_str();
                    let doomed: Vec<(Vec<u8>, u64)> = t
                        .index
                        .range((path, &[][..], 0)..)
                        .map_err(st)?
                        .map_while(|row| {
                            let (k, _) = row.ok()?;
                            let (p, key, id) = k.value();
                            (p == path).then(|| (key.to_vec(), id))
                        })
                        .collect();
                    for (key, id) in doomed {
                        t.index.remove((path, key.as_slice(), id)).map_err(st)?;
                    }
                }
                let added: Vec<String> =
                    info.indexes.iter().filter(|p| !before.indexes.contains(p)).cloned().collect();
                if !added.is_empty() {
                    let mut entries = Vec::new();
                    for row in t.records.iter().map_err(st)? {
                        let (k, v) = row.map_err(st)?;
                        let r = Record::decode(k.value(), v.value()).map_err(DbError::Storage)?;
                        let Data::Json(doc) = &r.data else { continue };
                        for path in &added {
                            let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
                            if let Some(key) = index_key(field(doc, &steps)) {
                                entries.push((path.clone(), key, r.id));
                            }
                        }
                    }
                    for (path, key, id) in entries {
                        t.index.insert((path.as_str(), key.as_slice(), id), ()).map_err(st)?;
                    }
                }
                Ok((Reply::Unit, Vec::new()))
            }
        }
    }

    /// Removes expired records (at most `SWEEP_MAX`) in one durable transaction.
    fn sweep(&mut self) {
        let now = now_ms();
        let seq_before = self.seq;
        let swept = (|| -> Result<Vec<Change>, DbError> {
            let txn = self.begin_txn()?;
            let mut changes = Vec::new();
            {
                let mut t = self.tables(&txn)?;
                let due: Vec<(u64, u64)> = t
                    .expiry
                    .range(..(now, u64::MAX))
                    .map_err(st)?
                    .take(SWEEP_MAX)
                    .filter_map(|row| row.ok().map(|(k, _)| k.value()))
                    .collect();
                if due.is_empty() {
                    return Ok(changes);
                }
                for (at, id) in due {
                    t.expiry.remove((at, id)).map_err(st)?;
                    if let Some(old) = self.read(&t, id)? {
                        self.unput(&mut t, &old)?;
                        t.records.remove(id).map_err(st)?;
                        changes.push(Change {
                            seq: self.seq + 1,
                            op: Op::Delete,
                            id,
                            new: None,
                            old: Some(old),
                        });
                    }
                }
            }
            self.seq += 1;
            txn.open_table(META).map_err(st)?.insert("seq", self.seq.to_le_bytes().as_slice()).map_err(st)?;
            txn.commit().map_err(st)?;
            Ok(changes)
        })();
        match swept {
            Ok(changes) => {
                for c in changes {
                    let _ = self.changes.send(Arc::new(c));
                }
            }
            Err(why) => {
                self.seq = seq_before;
                tracing::warn!("database sweep failed: {why}");
            }
        }
    }

    fn begin_txn(&self) -> Result<WriteTransaction, DbError> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).begin_write().map_err(st)
    }
}

impl Batcher for Writer {
    type Write = Write;
    type Outcome = Outcome;

    fn begin(&mut self) -> Result<WriteTransaction, String> {
        self.rollback = (self.next, self.seq);
        self.begin_txn().map_err(|e| e.to_string())
    }

    fn apply(&mut self, txn: &WriteTransaction, batch: &[Write]) -> Result<Vec<Outcome>, String> {
        let now = now_ms();
        let mut t = self.tables(txn).map_err(|e| e.to_string())?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for w in batch {
            outcomes.push(match self.apply_one(&mut t, w, now) {
                Ok((reply, changes)) => Outcome::Ok(reply, changes),
                // Refusals are found before anything is written.
                Err(e @ (DbError::NotFound(_) | DbError::VersionMismatch(_))) => Outcome::Refused(e),
                Err(e) => Outcome::Failed(e),
            });
        }
        drop(t);
        self.seq += 1;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let put = |meta: &mut redb::Table<'_, &'static str, &'static [u8]>, k: &str, v: &[u8]| {
            meta.insert(k, v).map(|_| ()).map_err(|e| e.to_string())
        };
        put(&mut meta, "next", &self.next.to_le_bytes())?;
        put(&mut meta, "seq", &self.seq.to_le_bytes())?;
        if batch.iter().any(|w| matches!(w, Write::SetInfo { .. })) {
            put(&mut meta, "info", &serde_json::to_vec(&self.info).map_err(|e| e.to_string())?)?;
        }
        Ok(outcomes)
    }

    fn failed(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Failed(_))
    }

    fn rolled_back(&mut self) {
        (self.next, self.seq) = self.rollback;
        // The settings as committed.
        if let Ok(txn) = self.db.read().unwrap_or_else(|p| p.into_inner()).begin_read() {
            if let Ok(Some(v)) =
                txn.open_table(META).and_then(|m| Ok(m.get("info")?.map(|v| v.value().to_vec())))
            {
                if let Ok(info) = serde_json::from_slice(&v) {
                    self.info = info;
                }
            }
        }
    }

    fn committed(&mut self, _batch: &[Write], _outcomes: &[Outcome]) {}

    fn answer(&self, w: Write, o: Outcome) {
        let (reply, changes) = match o {
            Outcome::Ok(reply, changes) => (Ok(reply), changes),
            Outcome::Refused(e) | Outcome::Failed(e) => (Err(e), Vec::new()),
        };
        // Watches hear of a change once it is on disk, before its writer does. With none
        // following now, none is owed it: one that starts later takes its snapshot after
        // this commit.
        if self.changes.receiver_count() > 0 {
            for c in changes {
                let _ = self.changes.send(Arc::new(c));
            }
        }
        match (w, reply) {
            (Write::Insert { done, .. }, Ok(Reply::Ids(ids))) => drop(done.send(Ok(ids))),
            (Write::Load { done, .. }, Ok(Reply::Count(n))) => drop(done.send(Ok(n))),
            (Write::Update { done, .. }, Ok(Reply::Version(v))) => drop(done.send(Ok(v))),
            (Write::Delete { done, .. }, Ok(Reply::Deleted(d))) => drop(done.send(Ok(d))),
            (Write::SetInfo { done, .. }, Ok(Reply::Unit)) => drop(done.send(Ok(()))),
            (w, Err(e)) => w.refuse(e),
            (w, Ok(_)) => w.refuse(DbError::Storage("the writer mixed up an answer".into())),
        }
    }

    fn fail(w: Write, why: &str) {
        w.refuse(DbError::Storage(why.to_owned()));
    }

    fn idle(&mut self) {
        self.sweep();
    }
}

impl Write {
    fn refuse(self, e: DbError) {
        match self {
            Write::Insert { done, .. } => drop(done.send(Err(e))),
            Write::Load { done, .. } => drop(done.send(Err(e))),
            Write::Update { done, .. } => drop(done.send(Err(e))),
            Write::Delete { done, .. } => drop(done.send(Err(e))),
            Write::SetInfo { done, .. } => drop(done.send(Err(e))),
        }
    }
}
