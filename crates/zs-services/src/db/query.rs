//! Queries: a scan of one consistent snapshot of a database, in id order (or reverse), through
//! an index when the predicate pins an indexed field to a value, tested by the predicate and
//! an optional server-registered filter, within a budget of rows examined and CPU time.
//! A scan hands out batches; where it stopped is a resume token that starts it again there
//! (on a new snapshot) after a lost connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use redb::{ReadOnlyTable, ReadTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::predicate::{Path, Predicate, Subject};
use super::record::{index_key, pack, Data, Record};
use super::store::{meta_u64, DbError, Handle, INDEX, META, RECORDS};
use crate::push::now_ms;

/// A server-registered filter: a Rust function of a record and the query's parameters.
pub type Filter = Arc<dyn Fn(&Subject<'_>, &Map<String, Value>) -> bool + Send + Sync>;

/// Server-registered filters by name.
pub type Filters = HashMap<String, Filter>;

/// Longest resume token, in bytes.
pub const MAX_TOKEN: usize = 8192;

/// What a query asks for; with where it stopped, its resume token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The database.
    #[serde(default)]
    pub db: String,
    /// The predicate (empty: every record).
    #[serde(default, rename = "where")]
    pub predicate: String,
    /// Values of the predicate's and filter's `$parameters`.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// A server-registered filter by name, tested with the predicate.
    #[serde(default)]
    pub filter: Option<String>,
    /// Highest ids first.
    #[serde(default)]
    pub reverse: bool,
    /// Rows to deliver at most.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Resume after this id (the last one examined).
    #[serde(default)]
    pub after: Option<u64>,
    /// Rows delivered before (counted against `limit`).
    #[serde(default)]
    pub delivered: u64,
}

impl Spec {
    /// The token that starts this query again where it stopped.
    pub fn token(&self) -> String {
        let json = serde_json::to_vec(self).expect("a spec serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// The query a token stands for.
    pub fn from_token(token: &str) -> Result<Spec, DbError> {
        if token.len() > MAX_TOKEN {
            return Err(DbError::Invalid(format!("a resume token is at most {MAX_TOKEN} bytes")));
        }
        let bad = |e: String| DbError::Invalid(format!("not a resume token: {e}"));
        let json =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))
    }
}

/// How much one query may use.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Records examined at most.
    pub rows: u64,
    /// CPU time spent scanning at most.
    pub cpu: Duration,
}

impl Default for Budget {
    /// 10,000,000 records and 10 s of CPU.
    fn default() -> Self {
        Budget { rows: 10_000_000, cpu: Duration::from_secs(10) }
    }
}

/// A batch of a scan: matching records packed as rows carry them
/// ([`record::pack`](super::record::pack)).
#[derive(Debug, Default)]
pub struct Batch {
    /// The rows, packed.
    pub packed: Vec<u8>,
    /// How many.
    pub rows: usize,
    /// The scan has nothing more.
    pub done: bool,
}

/// A record as the source gave it: borrowed from the snapshot, or kept over a call.
enum Raw {
    Guard(redb::AccessGuard<'static, &'static [u8]>),
    Owned(Vec<u8>),
}

impl Raw {
    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Guard(g) => g.value(),
            Raw::Owned(v) => v,
        }
    }
}

enum Source {
    Ids(redb::Range<'static, u64, &'static [u8]>),
    Index(redb::Range<'static, (&'static str, &'static [u8], u64), ()>),
}

/// A running scan over one snapshot.
pub struct Scan {
    _txn: ReadTransaction,
    records: ReadOnlyTable<u64, &'static [u8]>,
    source: Source,
    predicate: Predicate,
    filter: Option<Filter>,
    /// Where it is (what its token says).
    pub spec: Spec,
    /// Records examined so far.
    pub examined: u64,
    cpu: Duration,
    budget: Budget,
    now: u64,
    done: bool,
    /// A record taken from the source but not yet examined.
    held: Option<(u64, Vec<u8>)>,
    /// The commit the snapshot holds everything up to.
    pub seq: u64,
}

impl Scan {
    /// Starts `spec` on a snapshot of `handle`.
    pub fn start(
        handle: &Arc<Handle>,
        spec: Spec,
        filters: &Filters,
        budget: Budget,
    ) -> Result<Scan, DbError> {
        let predicate = Predicate::parse(&spec.predicate, &spec.params)
            .map_err(|e| DbError::Invalid(format!("predicate {e}")))?;
        let filter = match &spec.filter {
            Some(name) => Some(
                filters
                    .get(name)
                    .cloned()
                    .ok_or_else(|| DbError::NotFound(format!("no query filter `{name}`")))?,
            ),
            None => None,
        };
        let txn = handle.snapshot()?;
        let st = |e: redb::TableError| DbError::Storage(e.to_string());
        let records = txn.open_table(RECORDS).map_err(st)?;
        let seq = meta_u64(&txn.open_table(META).map_err(st)?, "seq")?;
        let info = handle.info();
        let indexed = predicate.equality().into_iter().find_map(|(path, value)| match path {
            Path::Doc(steps) => {
                let path = steps.join(".");
                info.indexes.contains(&path).then_some(())?;
                Some((path, index_key(value)?))
            }
            _ => None,
        });
        let sr = |e: redb::StorageError| DbError::Storage(e.to_string());
        let source = match indexed {
            Some((path, key)) => {
                let index = txn.open_table(INDEX).map_err(st)?;
                let (p, k) = (path.as_str(), key.as_slice());
                let range = match (spec.reverse, spec.after) {
                    (false, Some(a)) => index.range((p, k, a.saturating_add(1))..=(p, k, u64::MAX)),
                    (true, Some(a)) => index.range((p, k, 0)..(p, k, a)),
                    (_, None) => index.range((p, k, 0)..=(p, k, u64::MAX)),
                };
                Source::Index(range.map_err(sr)?)
            }
            None => {
                let range = match (spec.reverse, spec.after) {
                    (false, Some(a)) => records.range(a.saturating_add(1)..),
                    (true, Some(a)) => records.range(..a),
                    (_, None) => records.range::<u64>(..),
                };
                Source::Ids(range.map_err(sr)?)
            }
        };
        Ok(Scan {
            _txn: txn,
            records,
            source,
            predicate,
            filter,
            spec,
            examined: 0,
            cpu: Duration::ZERO,
            budget,
            now: now_ms(),
            done: false,
            held: None,
            seq,
        })
    }

    /// Whether every record has been examined.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn next_raw(&mut self) -> Result<Option<(u64, Raw)>, DbError> {
        if let Some((id, held)) = self.held.take() {
            return Ok(Some((id, Raw::Owned(held))));
        }
        let sr = |e: redb::StorageError| DbError::Storage(e.to_string());
        loop {
            match &mut self.source {
                Source::Ids(range) => {
                    let row = if self.spec.reverse { range.next_back() } else { range.next() };
                    let Some(row) = row else { return Ok(None) };
                    let (k, v) = row.map_err(sr)?;
                    return Ok(Some((k.value(), Raw::Guard(v))));
                }
                Source::Index(range) => {
                    let row = if self.spec.reverse { range.next_back() } else { range.next() };
                    let Some(row) = row else { return Ok(None) };
                    let id = row.map_err(sr)?.0.value().2;
                    // An index entry always has its record in the same snapshot.
                    if let Some(v) = self.records.get(id).map_err(sr)? {
                        return Ok(Some((id, Raw::Guard(v))));
                    }
                }
            }
        }
    }

    /// Whether the record passes the predicate and filter (unexpired, well formed).
    fn passes(&self, id: u64, raw: &[u8]) -> Result<bool, DbError> {
        let expiry = Record::expiry_of(raw);
        if expiry != 0 && expiry <= self.now {
            return Ok(false);
        }
        if self.filter.is_none() && self.predicate.is_all() {
            return Ok(true);
        }
        let r = Record::decode(id, raw).map_err(DbError::Storage)?;
        let frame_fields;
        let doc = match &r.data {
            Data::Json(v) => v,
            other => {
                frame_fields = other.fields();
                &frame_fields
            }
        };
        let s = Subject { id, version: r.version, doc };
        Ok(self.predicate.test(&s) && self.filter.as_ref().is_none_or(|f| f(&s, &self.spec.params)))
    }

    /// Up to `max_rows` matching records, stopping once past `max_bytes` (at least one row
    /// when any is left). Over the budget: `OverBudget`, the spec saying where it stopped.
    pub fn next_batch(&mut self, max_rows: usize, max_bytes: usize) -> Result<Batch, DbError> {
        let start = Instant::now();
        let mut batch = Batch::default();
        let result = loop {
            if self.done || batch.rows >= max_rows.max(1) || batch.packed.len() >= max_bytes {
                break Ok(());
            }
            if self.spec.limit.is_some_and(|l| self.spec.delivered >= l) {
                self.done = true;
                break Ok(());
            }
            let Some((id, raw)) = self.next_raw()? else {
                self.done = true;
                break Ok(());
            };
            // Over the budget (with records left): the rows found so far go out first, the
            // error next time; the record in hand is kept for a later call.
            let over_rows = self.examined >= self.budget.rows;
            let over_cpu =
                !over_rows && self.examined % 256 == 255 && self.cpu + start.elapsed() > self.budget.cpu;
            if over_rows || over_cpu {
                self.held = Some((id, raw.bytes().to_vec()));
                if batch.rows > 0 {
                    break Ok(());
                }
                let what = match over_rows {
                    true => format!("examined {} records", self.examined),
                    false => format!("used {} ms of CPU", self.budget.cpu.as_millis()),
                };
                break Err(DbError::OverBudget(format!(
                    "the query {what}, its budget; the token resumes after record {}",
                    self.spec.after.unwrap_or(0)
                )));
            }
            self.examined += 1;
            self.spec.after = Some(id);
            if self.passes(id, raw.bytes())? {
                pack(&mut batch.packed, id, raw.bytes());
                batch.rows += 1;
                self.spec.delivered += 1;
            }
        };
        self.cpu += start.elapsed();
        batch.done = self.done;
        result.map(|()| batch)
    }
}

/// [`Scan::next_batch`] on the blocking pool (a scan reads the file): the scan comes back
/// with the batch.
pub async fn next_batch_blocking(
    mut scan: Scan,
    max_rows: usize,
    max_bytes: usize,
) -> (Scan, Result<Batch, DbError>) {
    tokio::task::spawn_blocking(move || {
        let r = scan.next_batch(max_rows, max_bytes);
        (scan, r)
    })
    .await
    .expect("a scan does not panic")
}
