//! The data store's commands: console commands with JSON in and out (PROTOCOL §18), a
//! bulk insert as a big stream of JSON lines.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use zs::bulk::IncomingStream;
use zs::wire::ErrorCode;
use zs::{HandlerError, Identity, Peer, Router, Text};

use super::predicate::Predicate;
use super::query::{Scan, Spec};
use super::record::Data;
use super::running::{self, Watching};
use super::store::{check_name, DbError, Handle, Info, Patch};
use super::{Inner, BULK_DATA};
use crate::json::{err, request};
use crate::push::now_ms;

/// Records one `db.insert` takes at most.
pub const MAX_INSERT: usize = 10_000;
/// Records a bulk insert commits together at most ...
const BULK_CHUNK: usize = 1_000;
/// ... and bytes (so a stream of large records holds a few MiB, not a thousand of them).
const BULK_CHUNK_BYTES: usize = 4 << 20;
/// Results of bulk inserts a connection keeps for `db.bulk.result`.
const BULK_RESULTS: usize = 16;

/// Registers every command of the service.
pub(crate) fn register(inner: Arc<Inner>, router: &mut Router) {
    macro_rules! command {
        ($name:expr, $f:ident) => {
            crate::json::json_command!(router, inner, $name, $f).requires_login()
        };
    }
    command!("db.create", create);
    command!("db.drop", drop_db);
    command!("db.list", list);
    command!("db.info", info);
    command!("db.grant", grant);
    command!("db.index", index);
    command!("db.copy", copy);
    command!("db.compact", compact);
    command!("db.insert", insert);
    command!("db.get", get);
    command!("db.update", update);
    command!("db.delete", delete);
    command!("db.query", query);
    command!("db.credit", credit);
    command!("db.pause", pause);
    command!("db.resume", resume);
    command!("db.stop", stop);
    command!("db.watch", watch);
    command!("db.unwatch", stop);
    command!("db.bulk", bulk);
    command!("db.bulk.result", bulk_result);
    let inner2 = inner.clone();
    router
        .big_stream(BULK_DATA, move |peer, stream| bulk_data(inner2.clone(), peer, stream))
        .requires_login();
}

fn fail(e: DbError) -> HandlerError {
    err(running::code(&e), e.to_string())
}

fn me(peer: &Peer) -> Result<Arc<Identity>, HandlerError> {
    peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "log in first"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    Own,
}

fn allowed(who: &Identity, info: &Info, access: Access) -> bool {
    if who.has_role("admin") || info.owner == who.user {
        return true;
    }
    let listed = |list: &[String]| {
        list.iter()
            .any(|e| e == "*" || *e == who.user || e.strip_prefix("role:").is_some_and(|r| who.has_role(r)))
    };
    match access {
        Access::Own => false,
        Access::Write => listed(&info.writers),
        Access::Read => listed(&info.writers) || listed(&info.readers),
    }
}

/// Database `name` if `peer` may use it so; one it may not read is "not found".
fn open(inner: &Inner, peer: &Peer, name: &str, access: Access) -> Result<Arc<Handle>, HandlerError> {
    let who = me(peer)?;
    let h = inner.stores.get(name).map_err(fail)?;
    let info = h.info();
    if !allowed(&who, &info, Access::Read) {
        return Err(err(ErrorCode::NotFound, format!("no database `{name}`")));
    }
    if !allowed(&who, &info, access) {
        let what = if access == Access::Own { "its owner's" } else { "write" };
        return Err(err(ErrorCode::Forbidden, format!("database `{name}` needs {what} access for this")));
    }
    Ok(h)
}

fn check_acl(list: &[String]) -> Result<(), HandlerError> {
    let ok = list.len() <= 256 && list.iter().all(|e| !e.is_empty() && e.len() <= 128);
    match ok {
        true => Ok(()),
        false => {
            Err(err(ErrorCode::InvalidArgument, "an access list has at most 256 entries of 1 to 128 bytes"))
        }
    }
}

fn check_field(path: &str) -> Result<(), HandlerError> {
    let ok = !path.is_empty()
        && path.len() <= 256
        && path
            .split('.')
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    match ok {
        true => Ok(()),
        false => {
            Err(err(ErrorCode::InvalidArgument, "an indexed field is a dotted path of letters, digits and _"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    db: String,
    #[serde(default)]
    readers: Vec<String>,
    #[serde(default)]
    writers: Vec<String>,
    #[serde(default)]
    indexes: Vec<String>,
}

async fn create(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: CreateRequest = request(&text)?;
    let who = me(peer)?;
    if let Some(role) = &inner.config.create_role {
        if !who.has_role(role) && !who.has_role("admin") {
            return Err(err(ErrorCode::Forbidden, format!("making databases needs the role {role}")));
        }
    }
    check_name(&req.db).map_err(fail)?;
    check_acl(&req.readers)?;
    check_acl(&req.writers)?;
    for f in &req.indexes {
        check_field(f)?;
    }
    if inner.stores.names().len() >= inner.config.max_databases {
        return Err(err(
            ErrorCode::Overloaded,
            format!("the store holds {} databases, its most", inner.config.max_databases),
        ));
    }
    let info = Info {
        name: req.db,
        owner: who.user.clone(),
        readers: req.readers,
        writers: req.writers,
        indexes: req.indexes,
        created_ms: now_ms(),
    };
    let stores = inner.clone();
    let h = blocking(move || stores.stores.create(info)).await?;
    Ok(json!({ "created": h.name() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbRequest {
    db: String,
}

async fn drop_db(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: DbRequest = request(&text)?;
    open(inner, peer, &req.db, Access::Own)?;
    let i = inner.clone();
    blocking(move || i.stores.drop_db(&req.db)).await?;
    Ok(json!({ "dropped": true }))
}

async fn list(inner: &Arc<Inner>, peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let who = me(peer)?;
    let i = inner.clone();
    let names = blocking(move || Ok(i.stores.names())).await?;
    let mut out = Vec::new();
    for name in names {
        let Ok(h) = inner.stores.get(&name) else { continue };
        let info = h.info();
        if !allowed(&who, &info, Access::Read) {
            continue;
        }
        let access = [(Access::Own, "own"), (Access::Write, "write"), (Access::Read, "read")]
            .into_iter()
            .find(|(a, _)| allowed(&who, &info, *a))
            .map_or("read", |(_, s)| s);
        out.push(json!({ "name": name, "owner": info.owner, "access": access }));
    }
    Ok(json!({ "databases": out }))
}

async fn info(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: DbRequest = request(&text)?;
    let h = open(inner, peer, &req.db, Access::Read)?;
    let h2 = h.clone();
    let (records, bytes, commits) =
        blocking(move || Ok((h2.size()?, h2.commits()?))).await.map(|((r, b), c)| (r, b, c))?;
    let mut v = serde_json::to_value(&*h.info()).map_err(|e| err(ErrorCode::Application, e.to_string()))?;
    v["records"] = json!(records);
    v["bytes"] = json!(bytes);
    v["commits"] = json!(commits);
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    db: String,
    readers: Option<Vec<String>>,
    writers: Option<Vec<String>>,
}

async fn grant(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: GrantRequest = request(&text)?;
    let h = open(inner, peer, &req.db, Access::Own)?;
    let mut info = (*h.info()).clone();
    if let Some(r) = req.readers {
        check_acl(&r)?;
        info.readers = r;
    }
    if let Some(w) = req.writers {
        check_acl(&w)?;
        info.writers = w;
    }
    h.set_info(info.clone()).await.map_err(fail)?;
    Ok(json!({ "readers": info.readers, "writers": info.writers }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    db: String,
    field: String,
    #[serde(default)]
    remove: bool,
}

async fn index(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: IndexRequest = request(&text)?;
    check_field(&req.field)?;
    let h = open(inner, peer, &req.db, Access::Own)?;
    let mut info = (*h.info()).clone();
    info.indexes.retain(|f| *f != req.field);
    if !req.remove {
        if info.indexes.len() >= 16 {
            return Err(err(ErrorCode::InvalidArgument, "a database has at most 16 indexes"));
        }
        info.indexes.push(req.field);
    }
    h.set_info(info.clone()).await.map_err(fail)?;
    Ok(json!({ "indexes": info.indexes }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyRequest {
    from: String,
    to: String,
}

async fn copy(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: CopyRequest = request(&text)?;
    let from = open(inner, peer, &req.from, Access::Read)?;
    let who = me(peer)?;
    let mut info = (*from.info()).clone();
    info.name = req.to.clone();
    info.owner = who.user.clone();
    info.created_ms = now_ms();
    let i = inner.clone();
    let to = blocking(move || i.stores.create(info)).await?;
    let spec = Spec { db: req.from, ..Spec::default() };
    let budget = super::Budget { rows: u64::MAX, cpu: std::time::Duration::MAX };
    let scan = Scan::start(&from, spec, &inner.config.filters, budget).map_err(fail)?;
    let (copied, _) = drain_into(scan, &to).await.map_err(fail)?;
    Ok(json!({ "copied": copied }))
}

/// Runs `scan` to its end, writing what it finds into `to` (ids and versions kept), a
/// thousand records a commit; what it wrote and examined.
async fn drain_into(mut scan: Scan, to: &Arc<Handle>) -> Result<(u64, u64), DbError> {
    let mut written = 0;
    loop {
        let (back, batch) = super::query::next_batch_blocking(scan, BULK_CHUNK, 4 << 20).await;
        scan = back;
        let batch = batch?;
        let records = super::record::unpack(&batch.packed)
            .map(|row| row.and_then(|(id, raw)| super::Record::decode(id, raw)).map_err(DbError::Storage))
            .collect::<Result<Vec<_>, _>>()?;
        written += records.len() as u64;
        if !records.is_empty() {
            to.load(records).await?;
        }
        if batch.done {
            return Ok((written, scan.examined));
        }
    }
}

async fn compact(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: DbRequest = request(&text)?;
    let h = open(inner, peer, &req.db, Access::Own)?;
    let before = h.size().map_err(fail)?.1;
    let h2 = h.clone();
    let compacted = blocking(move || h2.compact()).await?;
    Ok(json!({ "compacted": compacted, "bytes_before": before, "bytes_after": h.size().map_err(fail)?.1 }))
}

/// The request's object, with only `allowed` keys.
fn object(text: &Text, allowed: &[&str]) -> Result<Map<String, Value>, HandlerError> {
    let v: Value = request(text)?;
    let Value::Object(m) = v else {
        return Err(err(ErrorCode::InvalidArgument, "a request is a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(ErrorCode::InvalidArgument, format!("bad request: unknown field `{k}`")));
    }
    Ok(m)
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, HandlerError> {
    m.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| err(ErrorCode::InvalidArgument, format!("`{k}` is a string")))
}

fn u64_field(m: &Map<String, Value>, k: &str) -> Result<Option<u64>, HandlerError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(ErrorCode::InvalidArgument, format!("`{k}` is a whole number"))),
    }
}

/// The expiry a `ttl` (seconds) gives.
fn expiry(m: &Map<String, Value>) -> Result<Option<u64>, HandlerError> {
    match m.get("ttl") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() && t > 0.0 => {
                Ok(Some(now_ms().saturating_add((t.min(1e10) * 1000.0) as u64)))
            }
            _ => Err(err(ErrorCode::InvalidArgument, "`ttl` is a positive number of seconds")),
        },
    }
}

/// A record's data and expiry from its request object, within the size limit.
fn record_of(inner: &Inner, m: &Map<String, Value>) -> Result<(Data, Option<u64>), HandlerError> {
    let data = Data::from_request(m).map_err(|e| err(ErrorCode::InvalidArgument, e))?;
    let size = data.size();
    if size > inner.config.max_record_bytes {
        return Err(err(
            ErrorCode::TooLarge,
            format!("a record is at most {} bytes; this one is {size}", inner.config.max_record_bytes),
        ));
    }
    Ok((data, expiry(m)?))
}

async fn insert(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let m = object(&text, &["db", "json", "bytes", "frame", "ttl", "records"])?;
    let h = open(inner, peer, str_field(&m, "db")?, Access::Write)?;
    if let Some(list) = m.get("records") {
        let Some(list) = list.as_array() else {
            return Err(err(ErrorCode::InvalidArgument, "`records` is an array of records"));
        };
        if list.len() > MAX_INSERT {
            return Err(err(ErrorCode::TooLarge, format!("one insert takes at most {MAX_INSERT} records")));
        }
        let mut records = Vec::with_capacity(list.len());
        for r in list {
            let Some(r) = r.as_object() else {
                return Err(err(ErrorCode::InvalidArgument, "a record is an object"));
            };
            records.push(record_of(inner, r)?);
        }
        let ids = h.insert(records).await.map_err(fail)?;
        return Ok(json!({ "ids": ids.iter().map(|(id, _)| id).collect::<Vec<_>>() }));
    }
    let ids = h.insert(vec![record_of(inner, &m)?]).await.map_err(fail)?;
    let (id, version) = ids[0];
    Ok(json!({ "id": id, "version": version }))
}

async fn get(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let m = object(&text, &["db", "id"])?;
    let h = open(inner, peer, str_field(&m, "db")?, Access::Read)?;
    let id = u64_field(&m, "id")?.ok_or_else(|| err(ErrorCode::InvalidArgument, "`id` is a whole number"))?;
    match blocking(move || h.get(id)).await? {
        Some(r) => Ok(r.to_json()),
        None => Err(err(ErrorCode::NotFound, format!("no record {id}"))),
    }
}

async fn update(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let m = object(&text, &["db", "id", "version", "json", "bytes", "frame", "ttl"])?;
    let h = open(inner, peer, str_field(&m, "db")?, Access::Write)?;
    let id = u64_field(&m, "id")?.ok_or_else(|| err(ErrorCode::InvalidArgument, "`id` is a whole number"))?;
    let (data, expires_at) = record_of(inner, &m)?;
    let expires_at = m.contains_key("ttl").then_some(expires_at);
    let version =
        h.update(id, Patch { expect: u64_field(&m, "version")?, data, expires_at }).await.map_err(fail)?;
    Ok(json!({ "id": id, "version": version }))
}

async fn delete(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let m = object(&text, &["db", "id", "version"])?;
    let h = open(inner, peer, str_field(&m, "db")?, Access::Write)?;
    let id = u64_field(&m, "id")?.ok_or_else(|| err(ErrorCode::InvalidArgument, "`id` is a whole number"))?;
    let deleted = h.delete(id, u64_field(&m, "version")?).await.map_err(fail)?;
    Ok(json!({ "deleted": deleted }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    /// The id its rows come under (needed unless `count` or `into`).
    query: Option<String>,
    #[serde(flatten)]
    spec: Spec,
    /// A resume token (in place of the spec).
    resume: Option<String>,
    #[serde(default)]
    count: bool,
    into: Option<String>,
    /// First credit: rows (default 1,000) and bytes (default 4 MiB).
    credit_rows: Option<u64>,
    credit_bytes: Option<u64>,
}

async fn query(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: QueryRequest = request(&text)?;
    let spec = match &req.resume {
        Some(token) => Spec::from_token(token).map_err(fail)?,
        None => req.spec,
    };
    let h = open(inner, peer, &spec.db, Access::Read)?;
    let filters = &inner.config.filters;
    let budget = inner.config.budget;
    if req.count {
        let (h2, filters) = (h.clone(), filters.clone());
        return blocking(move || {
            let mut scan = Scan::start(&h2, spec, &filters, budget)?;
            let mut count = 0;
            while !scan.is_done() {
                count += scan.next_batch(10_000, usize::MAX)?.rows as u64;
            }
            Ok(json!({ "count": count, "examined": scan.examined }))
        })
        .await;
    }
    if let Some(into) = &req.into {
        let to = open(inner, peer, into, Access::Write)?;
        if Arc::ptr_eq(&to, &h) {
            return Err(err(
                ErrorCode::InvalidArgument,
                "a query writes into another database than it reads",
            ));
        }
        let scan = Scan::start(&h, spec, filters, budget).map_err(fail)?;
        let (written, examined) = drain_into(scan, &to).await.map_err(fail)?;
        return Ok(json!({ "written": written, "examined": examined }));
    }
    let Some(id) = req.query else {
        return Err(err(ErrorCode::InvalidArgument, "a query streamed to you needs an id: `query`"));
    };
    let scan = Scan::start(&h, spec, filters, budget).map_err(fail)?;
    let ctl = running::register(inner, peer, &id, inner.config.max_running).map_err(fail)?;
    ctl.grant(req.credit_rows.unwrap_or(1_000), req.credit_bytes.unwrap_or(4 << 20));
    tokio::spawn(running::run_query(inner.clone(), peer.clone(), id.clone(), scan, ctl));
    Ok(json!({ "query": id }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditRequest {
    query: String,
    #[serde(default)]
    rows: u64,
    #[serde(default)]
    bytes: u64,
}

async fn credit(_inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: CreditRequest = request(&text)?;
    running::find(peer, &req.query).map_err(fail)?.grant(req.rows, req.bytes);
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdRequest {
    #[serde(alias = "watch")]
    query: String,
}

async fn pause(_inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: IdRequest = request(&text)?;
    running::find(peer, &req.query).map_err(fail)?.pause(true);
    Ok(json!({}))
}

async fn resume(_inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: IdRequest = request(&text)?;
    running::find(peer, &req.query).map_err(fail)?.pause(false);
    Ok(json!({}))
}

async fn stop(_inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: IdRequest = request(&text)?;
    running::find(peer, &req.query).map_err(fail)?.stop();
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchRequest {
    watch: String,
    db: String,
    #[serde(default, rename = "where")]
    predicate: String,
    #[serde(default)]
    params: Map<String, Value>,
    filter: Option<String>,
    #[serde(default)]
    snapshot: bool,
}

async fn watch(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: WatchRequest = request(&text)?;
    let h = open(inner, peer, &req.db, Access::Read)?;
    let predicate = Predicate::parse(&req.predicate, &req.params)
        .map_err(|e| err(ErrorCode::InvalidArgument, format!("predicate {e}")))?;
    let filter = match &req.filter {
        Some(name) => Some(
            inner
                .config
                .filters
                .get(name)
                .cloned()
                .ok_or_else(|| err(ErrorCode::NotFound, format!("no query filter `{name}`")))?,
        ),
        None => None,
    };
    // Follow the changes before the snapshot is taken: none falls between them.
    let changes = h.subscribe();
    let snapshot = match req.snapshot {
        true => {
            let spec = Spec {
                db: req.db.clone(),
                predicate: req.predicate.clone(),
                params: req.params.clone(),
                filter: req.filter.clone(),
                ..Spec::default()
            };
            Some(Scan::start(&h, spec, &inner.config.filters, inner.config.budget).map_err(fail)?)
        }
        false => None,
    };
    let ctl = running::register(inner, peer, &req.watch, inner.config.max_running).map_err(fail)?;
    let watching = Watching { predicate, filter, params: req.params };
    let task =
        running::run_watch(inner.clone(), peer.clone(), req.watch.clone(), changes, snapshot, watching, ctl);
    tokio::spawn(task);
    Ok(json!({ "watch": req.watch }))
}

/// A bulk insert's target, under its ticket.
struct BulkSlot {
    handle: Arc<Handle>,
}

/// Outcomes of this connection's bulk inserts by ticket (the latest few).
#[derive(Default)]
struct BulkResults(Mutex<VecDeque<(u64, BulkOutcome)>>);

/// Records inserted, or those and why it stopped.
type BulkOutcome = Result<u64, (u64, String)>;

async fn bulk(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: DbRequest = request(&text)?;
    let handle = open(inner, peer, &req.db, Access::Write)?;
    Ok(json!({ "ticket": peer.issue_ticket(BulkSlot { handle }) }))
}

fn keep_result(peer: &Peer, ticket: u64, result: BulkOutcome) {
    let results = match peer.state::<BulkResults>() {
        Some(r) => r,
        None => {
            peer.set_state(BulkResults::default());
            peer.state::<BulkResults>().expect("just set")
        }
    };
    let mut q = results.0.lock().unwrap_or_else(|p| p.into_inner());
    if q.len() >= BULK_RESULTS {
        q.pop_front();
    }
    q.push_back((ticket, result));
}

/// The `db.bulk.data` handler: one JSON record per line, committed a thousand at a time.
async fn bulk_data(inner: Arc<Inner>, peer: Peer, mut stream: IncomingStream) -> Result<(), HandlerError> {
    let ticket = stream.ticket().unwrap_or(0);
    let Some(slot) = stream.take_ticket::<BulkSlot>() else {
        return Err(err(ErrorCode::InvalidArgument, "send a bulk insert with the ticket db.bulk gave"));
    };
    let max_line = inner.config.max_record_bytes * 2 + 1024;
    let (mut line, mut chunk, mut inserted, mut chunk_bytes) = (Vec::new(), Vec::new(), 0u64, 0usize);
    let mut outcome: Result<(), HandlerError> = Ok(());
    'read: while let Some(next) = stream.next_chunk().await {
        let bytes = match next {
            Ok(b) => b,
            Err(e) => {
                outcome = Err(err(ErrorCode::Cancelled, e.to_string()));
                break;
            }
        };
        for part in bytes.split_inclusive(|b| *b == b'\n') {
            line.extend_from_slice(part);
            if line.len() > max_line {
                outcome = Err(err(ErrorCode::TooLarge, format!("a line is at most {max_line} bytes")));
                break 'read;
            }
            if line.last() != Some(&b'\n') {
                continue;
            }
            let parsed = parse_line(&inner, &line);
            line.clear();
            match parsed {
                Ok(Some(r)) => {
                    chunk_bytes += r.0.size();
                    chunk.push(r);
                }
                Ok(None) => {}
                Err(e) => {
                    outcome = Err(e);
                    break 'read;
                }
            }
            if chunk.len() >= BULK_CHUNK || chunk_bytes >= BULK_CHUNK_BYTES {
                chunk_bytes = 0;
                match slot.handle.insert(std::mem::take(&mut chunk)).await {
                    Ok(ids) => inserted += ids.len() as u64,
                    Err(e) => {
                        outcome = Err(fail(e));
                        break 'read;
                    }
                }
            }
        }
    }
    if outcome.is_ok() && !line.is_empty() {
        match parse_line(&inner, &line) {
            Ok(Some(r)) => chunk.push(r),
            Ok(None) => {}
            Err(e) => outcome = Err(e),
        }
    }
    if outcome.is_ok() && !chunk.is_empty() {
        match slot.handle.insert(chunk).await {
            Ok(ids) => inserted += ids.len() as u64,
            Err(e) => outcome = Err(fail(e)),
        }
    }
    let kept = match &outcome {
        Ok(()) => Ok(inserted),
        Err(e) => Err((inserted, e.to_string())),
    };
    keep_result(&peer, ticket, kept);
    outcome
}

/// A bulk line's record (`None` for a blank line).
fn parse_line(inner: &Inner, line: &[u8]) -> Result<Option<(Data, Option<u64>)>, HandlerError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| err(ErrorCode::InvalidArgument, "a bulk line is UTF-8 JSON"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| err(ErrorCode::InvalidArgument, format!("bad bulk line: {e}")))?;
    let Value::Object(m) = v else {
        return Err(err(ErrorCode::InvalidArgument, "a bulk line is a JSON object"));
    };
    record_of(inner, &m).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketRequest {
    ticket: u64,
}

async fn bulk_result(_inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: TicketRequest = request(&text)?;
    let results = peer.state::<BulkResults>();
    let found = results.and_then(|r| {
        let q = r.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().find(|(t, _)| *t == req.ticket).map(|(_, r)| r.clone())
    });
    match found {
        Some(Ok(n)) => Ok(json!({ "inserted": n })),
        Some(Err((n, why))) => Ok(json!({ "inserted": n, "error": why })),
        None => Err(err(ErrorCode::NotFound, "no bulk insert with that ticket has ended on this connection")),
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| err(ErrorCode::Application, e.to_string()))?
        .map_err(fail)
}

/// Decodes `text` as the request of every command (for the fuzz target), checking what
/// the commands check before they touch a database.
pub(crate) fn decode_any(text: &str) {
    let t = Text::from(text.to_owned());
    let _ = request::<CreateRequest>(&t).map(|r| {
        let _ = check_name(&r.db);
        let _ = check_acl(&r.readers);
        for f in &r.indexes {
            let _ = check_field(f);
        }
    });
    let _ = request::<GrantRequest>(&t);
    let _ = request::<IndexRequest>(&t).map(|r| check_field(&r.field));
    let _ = request::<CopyRequest>(&t);
    let _ = request::<CreditRequest>(&t);
    let _ = request::<IdRequest>(&t);
    let _ = request::<TicketRequest>(&t);
    let _ = request::<WatchRequest>(&t).map(|r| Predicate::parse(&r.predicate, &r.params));
    let _ = request::<QueryRequest>(&t).map(|r| {
        let spec = match &r.resume {
            Some(token) => Spec::from_token(token).ok(),
            None => Some(r.spec),
        };
        spec.map(|s| Predicate::parse(&s.predicate, &s.params))
    });
    let _ = object(&t, &["db", "id", "version", "json", "bytes", "frame", "ttl", "records"]).map(|m| {
        let _ = (Data::from_request(&m), expiry(&m), u64_field(&m, "id"));
    });
}
