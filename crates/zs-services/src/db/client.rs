//! The data store from a client: databases, records, queries whose rows stream under this
//! end's credit, watches, and bulk inserts.
//!
//! Rows and changes arrive as pushes: mount a [`Feeds`] on the client's router and hand the
//! same `Feeds` to [`DbClient::new`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use zs::wire::{DataFrame, ErrorCode, Value as Item};
use zs::{CallError, Peer, Router, Service, StreamOptions};

use super::record::{Data, Record};
use super::{BULK_DATA, CHANGE, ROWS};

/// Pushes a query or watch may have waiting before the client reads them (a watch whose
/// reader falls this far behind is cut off: its [`Watch::next`] ends).
pub const FEED_QUEUE: usize = 1024;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DbClientError {
    /// A call failed: the server refused (its code says why) or the connection ended.
    #[error("{0}")]
    Call(#[from] CallError),
    /// A query or watch ended with an error on the server.
    #[error("{message} (code {code})")]
    Server {
        /// The error code (PROTOCOL §4).
        code: u16,
        /// Why.
        message: String,
        /// A token that resumes the query where it stopped.
        token: String,
    },
    /// The watch fell behind by this many changes and ended: watch again with a snapshot.
    #[error("the watch fell behind by {0} changes")]
    Overflow(u64),
    /// The connection ended while rows or changes were coming.
    #[error("the connection ended")]
    Closed,
    /// An answer this client does not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

type Routes = Arc<Mutex<HashMap<String, mpsc::Sender<DataFrame>>>>;

/// Routes `db.rows` and `db.change` pushes to this client's queries and watches; mount it
/// on the client's router.
#[derive(Clone, Default)]
pub struct Feeds {
    routes: Routes,
}

impl Feeds {
    fn open(&self, id: &str) -> mpsc::Receiver<DataFrame> {
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), tx);
        rx
    }

    fn close(&self, id: &str) {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn route(routes: &Routes, frame: DataFrame) {
        let Some(Item::Str(id)) = frame.values().first() else { return };
        let id = id.clone();
        let mut map = routes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = map.get(id.as_str()) else { return };
        // A feed that stopped reading is cut off: its reader sees the end.
        if tx.try_send(frame).is_err() {
            map.remove(&id);
        }
    }
}

impl Service for Feeds {
    fn name(&self) -> &str {
        "db-feeds"
    }

    fn mount(self: Arc<Self>, router: &mut Router) {
        for name in [ROWS, CHANGE] {
            let routes = self.routes.clone();
            router.direct_stream(name, move |_peer, frame| Feeds::route(&routes, frame));
        }
    }
}

/// A database as [`DbClient::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DbEntry {
    /// Its name.
    pub name: String,
    /// Who made it.
    pub owner: String,
    /// What this user may do: `own`, `write` or `read`.
    pub access: String,
}

/// How to make a database.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Who may read (user names, `role:NAME`, `*`).
    pub readers: Vec<String>,
    /// Who may write.
    pub writers: Vec<String>,
    /// Fields of JSON records to index.
    pub indexes: Vec<String>,
}

/// A query to run.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The database.
    pub db: String,
    /// The predicate (empty: every record).
    pub predicate: String,
    /// Its parameters.
    pub params: Map<String, Value>,
    /// A server-registered filter.
    pub filter: Option<String>,
    /// Highest ids first.
    pub reverse: bool,
    /// Rows at most.
    pub limit: Option<u64>,
    /// Rows granted ahead (default 1,000); granted again as they are read.
    pub window: Option<u64>,
    /// Bytes granted ahead (default 4 MiB).
    pub window_bytes: Option<u64>,
}

impl Query {
    /// Every record of `db` that passes `predicate`.
    pub fn new(db: &str, predicate: &str) -> Query {
        Query { db: db.to_owned(), predicate: predicate.to_owned(), ..Query::default() }
    }

    /// Sets parameter `$name`.
    pub fn param(mut self, name: &str, value: impl Into<Value>) -> Query {
        self.params.insert(name.to_owned(), value.into());
        self
    }
}

/// The data store through one connection.
#[derive(Clone)]
pub struct DbClient {
    peer: Peer,
    feeds: Feeds,
    next: Arc<AtomicU64>,
}

fn decode<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, DbClientError> {
    serde_json::from_value(v).map_err(|e| DbClientError::Protocol(e.to_string()))
}

/// A record's request fields.
fn data_fields(data: &Data) -> Map<String, Value> {
    let mut m = Map::new();
    let b64 = |b: &[u8]| Value::String(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b));
    match data {
        Data::Json(v) => m.insert("json".into(), v.clone()),
        Data::Bytes(b) => m.insert("bytes".into(), b64(b)),
        Data::Frame(b) => m.insert("frame".into(), b64(b)),
    };
    m
}

fn record_of(v: Value) -> Result<Record, DbClientError> {
    let bad = |what: &str| DbClientError::Protocol(format!("a record without {what}"));
    let m = v.as_object().ok_or_else(|| bad("fields"))?;
    let id = m.get("id").and_then(Value::as_u64).ok_or_else(|| bad("id"))?;
    let version = m.get("version").and_then(Value::as_u64).ok_or_else(|| bad("version"))?;
    let data = Data::from_request(m).map_err(DbClientError::Protocol)?;
    Ok(Record { id, version, expires_at: m.get("expires_at").and_then(Value::as_u64), data })
}

impl DbClient {
    /// The data store on `peer`'s server; `feeds` must be mounted on the client's router.
    pub fn new(peer: Peer, feeds: Feeds) -> DbClient {
        DbClient { peer, feeds, next: Arc::new(AtomicU64::new(1)) }
    }

    async fn call(&self, command: &str, request: Value) -> Result<Value, DbClientError> {
        let reply = self.peer.call_console(command, request.to_string()).await?;
        serde_json::from_str(reply.as_str()).map_err(|e| DbClientError::Protocol(e.to_string()))
    }

    /// Sends `command` without waiting for it (from a drop), when a runtime is there.
    fn stop_later(&self, command: &'static str, request: Value) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let peer = self.peer.clone();
            rt.spawn(async move { peer.call_console(command, request.to_string()).await });
        }
    }

    fn id(&self, kind: &str) -> String {
        format!("{kind}{}", self.next.fetch_add(1, Relaxed))
    }

    /// Makes database `db`.
    pub async fn create(&self, db: &str, opts: CreateOptions) -> Result<(), DbClientError> {
        let req =
            json!({ "db": db, "readers": opts.readers, "writers": opts.writers, "indexes": opts.indexes });
        self.call("db.create", req).await.map(drop)
    }

    /// Removes database `db` (its owner or an admin).
    pub async fn drop_db(&self, db: &str) -> Result<(), DbClientError> {
        self.call("db.drop", json!({ "db": db })).await.map(drop)
    }

    /// The databases this user may read.
    pub async fn list(&self) -> Result<Vec<DbEntry>, DbClientError> {
        decode(self.call("db.list", json!({})).await?["databases"].take())
    }

    /// Database `db`'s settings, records and bytes.
    pub async fn info(&self, db: &str) -> Result<Value, DbClientError> {
        self.call("db.info", json!({ "db": db })).await
    }

    /// Indexes `field` of `db`'s JSON records (or stops, with `remove`).
    pub async fn index(&self, db: &str, field: &str, remove: bool) -> Result<(), DbClientError> {
        self.call("db.index", json!({ "db": db, "field": field, "remove": remove })).await.map(drop)
    }

    /// Sets who may read and write `db` (`None` keeps a list).
    pub async fn grant(
        &self,
        db: &str,
        readers: Option<Vec<String>>,
        writers: Option<Vec<String>>,
    ) -> Result<(), DbClientError> {
        self.call("db.grant", json!({ "db": db, "readers": readers, "writers": writers })).await.map(drop)
    }

    /// Copies `from` into a new database `to`; the records copied.
    pub async fn copy(&self, from: &str, to: &str) -> Result<u64, DbClientError> {
        decode(self.call("db.copy", json!({ "from": from, "to": to })).await?["copied"].take())
    }

    /// Compacts `db`'s file; whether it shrank.
    pub async fn compact(&self, db: &str) -> Result<bool, DbClientError> {
        decode(self.call("db.compact", json!({ "db": db })).await?["compacted"].take())
    }

    /// Inserts a record (expiring after `ttl`); its (id, version) once on disk.
    pub async fn insert(
        &self,
        db: &str,
        data: Data,
        ttl: Option<Duration>,
    ) -> Result<(u64, u64), DbClientError> {
        let mut req = data_fields(&data);
        req.insert("db".into(), json!(db));
        if let Some(t) = ttl {
            req.insert("ttl".into(), json!(t.as_secs_f64()));
        }
        let v = self.call("db.insert", Value::Object(req)).await?;
        Ok((decode(v["id"].clone())?, decode(v["version"].clone())?))
    }

    /// Inserts many records in one commit, all or none; their ids.
    pub async fn insert_many(&self, db: &str, records: &[Data]) -> Result<Vec<u64>, DbClientError> {
        let records: Vec<Value> = records.iter().map(|d| Value::Object(data_fields(d))).collect();
        decode(self.call("db.insert", json!({ "db": db, "records": records })).await?["ids"].take())
    }

    /// Record `id` (`None` if there is none).
    pub async fn get(&self, db: &str, id: u64) -> Result<Option<Record>, DbClientError> {
        match self.call("db.get", json!({ "db": db, "id": id })).await {
            Ok(v) => record_of(v).map(Some),
            Err(DbClientError::Call(CallError::Remote { code: ErrorCode::NotFound, .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces record `id`'s data, if it is at version `expect` (when given); its new
    /// version. Another version: `VersionMismatch`.
    pub async fn update(
        &self,
        db: &str,
        id: u64,
        data: Data,
        expect: Option<u64>,
    ) -> Result<u64, DbClientError> {
        let mut req = data_fields(&data);
        req.insert("db".into(), json!(db));
        req.insert("id".into(), json!(id));
        if let Some(v) = expect {
            req.insert("version".into(), json!(v));
        }
        decode(self.call("db.update", Value::Object(req)).await?["version"].take())
    }

    /// Removes record `id` (if at version `expect`); whether it was there.
    pub async fn delete(&self, db: &str, id: u64, expect: Option<u64>) -> Result<bool, DbClientError> {
        decode(
            self.call("db.delete", json!({ "db": db, "id": id, "version": expect })).await?["deleted"].take(),
        )
    }

    fn spec(q: &Query) -> Value {
        json!({
            "db": q.db, "where": q.predicate, "params": q.params, "filter": q.filter,
            "reverse": q.reverse, "limit": q.limit,
        })
    }

    /// Runs `q`; its rows come as they are read, under this end's credit.
    pub async fn query(&self, q: &Query) -> Result<Rows, DbClientError> {
        self.start_rows(Self::spec(q), q.window, q.window_bytes).await
    }

    /// Starts again a query that stopped (a lost connection, an error, a stop) where its
    /// token says.
    pub async fn resume(&self, token: &str, window: Option<u64>) -> Result<Rows, DbClientError> {
        self.start_rows(json!({ "resume": token }), window, None).await
    }

    async fn start_rows(
        &self,
        mut req: Value,
        window: Option<u64>,
        bytes: Option<u64>,
    ) -> Result<Rows, DbClientError> {
        let id = self.id("q");
        let window = window.unwrap_or(1_000).max(1);
        let bytes = bytes.unwrap_or(4 << 20).max(1);
        req["query"] = json!(id);
        req["credit_rows"] = json!(window);
        req["credit_bytes"] = json!(bytes);
        let rx = self.feeds.open(&id);
        if let Err(e) = self.call("db.query", req).await {
            self.feeds.close(&id);
            return Err(e);
        }
        Ok(Rows {
            client: self.clone(),
            id,
            rx,
            buffer: VecDeque::new(),
            token: String::new(),
            pending_token: String::new(),
            window: (window, bytes),
            used: (0, 0),
            done: false,
            examined: 0,
        })
    }

    /// How many records of `q.db` pass `q` (counted on the server).
    pub async fn count(&self, q: &Query) -> Result<u64, DbClientError> {
        let mut req = Self::spec(q);
        req["count"] = json!(true);
        decode(self.call("db.query", req).await?["count"].take())
    }

    /// Writes the records that pass `q` into database `into` (ids kept); how many.
    pub async fn query_into(&self, q: &Query, into: &str) -> Result<u64, DbClientError> {
        let mut req = Self::spec(q);
        req["into"] = json!(into);
        decode(self.call("db.query", req).await?["written"].take())
    }

    /// Watches `db`'s records that pass `predicate`: inserts, updates and deletes as they
    /// are committed, after a snapshot of those there are (when `snapshot`).
    pub async fn watch(
        &self,
        db: &str,
        predicate: &str,
        params: Map<String, Value>,
        snapshot: bool,
    ) -> Result<Watch, DbClientError> {
        let id = self.id("w");
        let rx = self.feeds.open(&id);
        let req =
            json!({ "watch": id, "db": db, "where": predicate, "params": params, "snapshot": snapshot });
        if let Err(e) = self.call("db.watch", req).await {
            self.feeds.close(&id);
            return Err(e);
        }
        Ok(Watch { client: self.clone(), id, rx, buffer: VecDeque::new(), stopped: false })
    }

    /// Inserts the records read from `lines` (one JSON object per line, as `db.insert`
    /// takes one; a file, standard input, a `Cursor` of bytes) through a big stream,
    /// committed a thousand at a time; how many.
    pub async fn bulk_insert<R>(&self, db: &str, lines: R) -> Result<u64, DbClientError>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        let ticket: u64 = decode(self.call("db.bulk", json!({ "db": db })).await?["ticket"].take())?;
        let opts = StreamOptions { ticket: Some(ticket), ..StreamOptions::default() };
        let sent = self.peer.send_big_stream(BULK_DATA, lines, opts).finish().await;
        let result = self.call("db.bulk.result", json!({ "ticket": ticket })).await?;
        if let Some(why) = result.get("error").and_then(Value::as_str) {
            return Err(DbClientError::Protocol(format!(
                "{why} (after {} records were inserted)",
                result["inserted"].as_u64().unwrap_or(0)
            )));
        }
        sent?;
        decode(result["inserted"].clone())
    }
}

fn string(frame: &DataFrame, i: usize) -> String {
    match frame.values().get(i) {
        Some(Item::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

fn number(frame: &DataFrame, i: usize) -> u64 {
    frame.values().get(i).and_then(|v| v.as_i128()).map_or(0, |n| n as u64)
}

/// A batch of rows as the server stores them, not decoded: for consumers that count or
/// pass rows on ([`RawRows::iter`] gives (id, encoding); [`Record::decode`] reads one).
#[derive(Debug, Clone, Default)]
pub struct RawRows {
    packed: Bytes,
}

impl RawRows {
    /// The rows: (id, the record's encoding).
    pub fn iter(&self) -> super::record::Unpack<'_> {
        super::record::unpack(&self.packed)
    }

    /// Bytes of the packed rows.
    pub fn bytes(&self) -> usize {
        self.packed.len()
    }

    /// The rows, decoded.
    pub fn decode(&self) -> Result<Vec<Record>, DbClientError> {
        self.iter()
            .map(|row| row.and_then(|(id, raw)| Record::decode(id, raw)).map_err(DbClientError::Protocol))
            .collect()
    }
}

/// The packed rows of item `at`.
fn packed(frame: &DataFrame, at: usize) -> Result<RawRows, DbClientError> {
    match frame.values().get(at) {
        Some(Item::Bytes(b)) => Ok(RawRows { packed: b.clone() }),
        _ => Err(DbClientError::Protocol(format!("item {at} of a push is not its rows"))),
    }
}

/// Reads a `db.rows` or `db.change` push as this client would (for the fuzz target).
pub(crate) fn read_push(frame: &DataFrame) {
    let _ = (string(frame, 1), string(frame, 2), number(frame, 3), number(frame, 4), string(frame, 5));
    let _ = (packed(frame, 6).map(|r| r.decode()), packed(frame, 3).map(|r| r.decode()));
}

/// A running query's rows.
pub struct Rows {
    client: DbClient,
    id: String,
    rx: mpsc::Receiver<DataFrame>,
    buffer: VecDeque<Record>,
    /// The token after the last batch read whole, and after the one being read.
    token: String,
    pending_token: String,
    window: (u64, u64),
    /// Rows and bytes read since credit was last granted.
    used: (u64, u64),
    done: bool,
    examined: u64,
}

impl Rows {
    /// The next row (`None` after the last).
    pub async fn next(&mut self) -> Option<Result<Record, DbClientError>> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                if self.buffer.is_empty() {
                    self.token = std::mem::take(&mut self.pending_token);
                }
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            let before = self.token.clone();
            match self.next_batch().await {
                Some(Ok(batch)) => {
                    // Until this batch is read whole, the token is the one before it.
                    self.pending_token = std::mem::replace(&mut self.token, before);
                    if batch.is_empty() {
                        self.token = std::mem::take(&mut self.pending_token);
                    }
                    self.buffer.extend(batch)
                }
                Some(Err(e)) => return Some(Err(e)),
                None => return None,
            }
        }
    }

    /// The next batch of rows as the server sent it (`None` after the last).
    pub async fn next_batch(&mut self) -> Option<Result<Vec<Record>, DbClientError>> {
        Some(self.next_raw().await?.and_then(|raw| raw.decode()))
    }

    /// The next batch as the server stores its rows, not decoded.
    pub async fn next_raw(&mut self) -> Option<Result<RawRows, DbClientError>> {
        if self.done {
            return None;
        }
        let Some(frame) = self.rx.recv().await else {
            self.done = true;
            return Some(Err(DbClientError::Closed));
        };
        let (kind, token) = (string(&frame, 1), string(&frame, 2));
        self.examined = number(&frame, 3);
        if kind == "error" {
            self.finish();
            self.token = token.clone();
            return Some(Err(DbClientError::Server {
                code: number(&frame, 4) as u16,
                message: string(&frame, 5),
                token,
            }));
        }
        let rows = match packed(&frame, 6) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        self.token = token;
        if kind == "end" {
            self.finish();
            return Some(Ok(rows));
        }
        // Grant what was used once half the window is.
        self.used.0 += rows.iter().count() as u64;
        self.used.1 += rows.bytes() as u64;
        if self.used.0 * 2 >= self.window.0 || self.used.1 * 2 >= self.window.1 {
            let (rows_back, bytes_back) = std::mem::take(&mut self.used);
            let req = json!({ "query": self.id, "rows": rows_back, "bytes": bytes_back });
            match self.client.call("db.credit", req).await {
                // The query ended meanwhile: its last push is on its way.
                Err(DbClientError::Call(CallError::Remote { code: ErrorCode::NotFound, .. })) => {}
                Err(e) => return Some(Err(e)),
                Ok(_) => {}
            }
        }
        Some(Ok(rows))
    }

    fn finish(&mut self) {
        self.done = true;
        self.client.feeds.close(&self.id);
    }

    /// A token that starts this query again after the last row read (rows of a batch read
    /// only in part come again).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Records the server examined so far.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Stops sending until [`resume`](Self::resume).
    pub async fn pause(&self) -> Result<(), DbClientError> {
        self.client.call("db.pause", json!({ "query": self.id })).await.map(drop)
    }

    /// Sends again after a pause.
    pub async fn resume(&self) -> Result<(), DbClientError> {
        self.client.call("db.resume", json!({ "query": self.id })).await.map(drop)
    }

    /// Ends the query; rows already sent are still read.
    pub async fn stop(&self) -> Result<(), DbClientError> {
        self.client.call("db.stop", json!({ "query": self.id })).await.map(drop)
    }

    /// Every row left.
    pub async fn collect(mut self) -> Result<Vec<Record>, DbClientError> {
        let mut out = Vec::new();
        while let Some(r) = self.next().await {
            out.push(r?);
        }
        Ok(out)
    }
}

impl Drop for Rows {
    /// A query dropped before its end is stopped on the server (its snapshot let go).
    fn drop(&mut self) {
        self.client.feeds.close(&self.id);
        if !self.done {
            self.client.stop_later("db.stop", json!({ "query": self.id }));
        }
    }
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A record of the snapshot.
    Snapshot(Record),
    /// The snapshot is complete; changes follow.
    Synced,
    /// A record now passes (inserted, or changed to pass).
    Insert(Record),
    /// A passing record changed.
    Update(Record),
    /// A record that passed is gone (deleted, expired, or changed not to pass): as it was.
    Delete(Record),
}

/// A running watch.
pub struct Watch {
    client: DbClient,
    id: String,
    rx: mpsc::Receiver<DataFrame>,
    buffer: VecDeque<WatchEvent>,
    stopped: bool,
}

impl Watch {
    /// The next event (`None` once the watch has ended).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, DbClientError>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            let frame = self.rx.recv().await?;
            let kind = string(&frame, 1);
            let records = match kind.as_str() {
                "overflow" => return Some(Err(DbClientError::Overflow(number(&frame, 4)))),
                "error" => {
                    let (code, message) = (number(&frame, 4) as u16, string(&frame, 5));
                    return Some(Err(DbClientError::Server { code, message, token: String::new() }));
                }
                "synced" => {
                    self.buffer.push_back(WatchEvent::Synced);
                    continue;
                }
                _ => match packed(&frame, 3).and_then(|r| r.decode()) {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                },
            };
            let event = match kind.as_str() {
                "snapshot" => WatchEvent::Snapshot,
                "insert" => WatchEvent::Insert,
                "update" => WatchEvent::Update,
                "delete" => WatchEvent::Delete,
                other => return Some(Err(DbClientError::Protocol(format!("a change of kind `{other}`")))),
            };
            self.buffer.extend(records.into_iter().map(event));
        }
    }

    /// Ends the watch.
    pub async fn stop(mut self) -> Result<(), DbClientError> {
        self.stopped = true;
        self.client.call("db.unwatch", json!({ "watch": self.id })).await.map(drop)
    }
}

impl Drop for Watch {
    /// A watch dropped is ended on the server.
    fn drop(&mut self) {
        self.client.feeds.close(&self.id);
        if !self.stopped {
            self.client.stop_later("db.unwatch", json!({ "watch": self.id }));
        }
    }
}
