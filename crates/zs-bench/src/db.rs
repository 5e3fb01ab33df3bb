//! `zs bench db`: the data store as its users get it (`zs serve --services accounts,db`,
//! plaintext, data on `/dev/shm` unless told; clients through `db::client`), beside raw
//! redb in this process on the same file system:
//! - durable inserts per second: single-record `db.insert` calls, many in flight, each
//!   answered after its fsynced commit; raw redb commits the same encoded records in
//!   transactions of the mean size ours made (the same batching);
//! - streamed scan rows per second: one query over every record, rows read as they come
//!   under credit (not decoded: the row is what a scan delivers), against a raw redb
//!   iteration that touches every value of a file of the same records;
//! - a predicate query over all records (rows that pass, records examined per second),
//!   through the index on `city` and without it, and the same as a count.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use zs::{Client, ClientConfig, Router};
use zs_services::db::client::{CreateOptions, DbClient, Feeds, Query};
use zs_services::db::{Data, Record};

use crate::harness::{runtime, Secure};
use crate::idle::start_server_args;

/// Options of the db scenario.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Records in the scanned and queried database.
    pub records: usize,
    /// Durable single-record inserts measured.
    pub inserts: usize,
    /// Inserts in flight at once.
    pub concurrency: usize,
    /// Scan rounds (ours and raw alternate; medians reported).
    pub rounds: usize,
    /// Where the server's data and raw redb's files go (`None`: `/dev/shm` when there is one).
    pub dir: Option<PathBuf>,
    /// Run the server with `--no-compress` (pushes of rows sent as they are).
    pub no_compress: bool,
}

/// A comparison: ours, the raw figure, their ratio.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Pair {
    /// Ours, per second.
    pub ours_per_s: f64,
    /// Raw redb, per second.
    pub raw_redb_per_s: f64,
    /// `ours_per_s / raw_redb_per_s`.
    pub ratio: f64,
}

impl Pair {
    fn new(ours: f64, raw: f64) -> Pair {
        Pair { ours_per_s: ours, raw_redb_per_s: raw, ratio: ours / raw }
    }
}

/// A predicate query's figures.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    /// The predicate.
    pub predicate: String,
    /// Rows that passed.
    pub rows: u64,
    /// Records examined.
    pub examined: u64,
    /// Seconds, to the last row.
    pub seconds: f64,
    /// Records examined per second.
    pub examined_per_s: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct DbReport {
    /// Always "db".
    pub scenario: &'static str,
    /// Records scanned and queried.
    pub records: usize,
    /// Bytes of one record as stored.
    pub record_bytes: usize,
    /// Where the data was.
    pub dir: PathBuf,
    /// Whether the server compressed pushes (its default).
    pub compressed: bool,
    /// Durable inserts over the network: one `db.insert` call per record.
    pub inserts: Pair,
    /// Mean inserts per commit ours made (raw redb commits batches of this size).
    pub batch: f64,
    /// Durable inserts through the service's API in this process (`Handle::insert`, as
    /// many in flight), against raw redb with the batches they made.
    pub inserts_in_process: Pair,
    /// Mean inserts per commit in process.
    pub batch_in_process: f64,
    /// Records loaded per second with 1,000-record inserts (for reference).
    pub load_per_s: f64,
    /// Streamed scan rows, medians of the rounds.
    pub scan: Pair,
    /// Every round's scan ratio.
    pub scan_ratios: Vec<f64>,
    /// A predicate query without an index.
    pub query: QueryFigures,
    /// The same with the index on `city`.
    pub query_indexed: QueryFigures,
    /// The unindexed predicate counted on the server, seconds.
    pub count_seconds: f64,
    /// `ours`: the headline ratio (durable inserts), as in the other scenarios.
    pub ratio: f64,
}

const ADMIN_PASSWORD: &str = "the benchmark's admin password";
/// Connections the inserts spread over.
const CONNECTIONS: usize = 8;

/// The record number `i` of the benchmark (about 100 bytes of JSON).
fn person(i: usize) -> Data {
    let city = ["Oslo", "Bergen", "Paris", "Rome", "Lima"][i % 5];
    Data::Json(
        json!({ "name": format!("person {i:08}"), "age": i % 97, "city": city, "score": (i * 7919) % 10_000 }),
    )
}

/// Runs the scenario against `zs serve` started from `zs_exe`.
pub fn run(opts: DbOptions, zs_exe: &Path) -> Result<DbReport, String> {
    let base = opts.dir.clone().unwrap_or_else(|| match Path::new("/dev/shm").is_dir() {
        true => PathBuf::from("/dev/shm"),
        false => std::env::temp_dir(),
    });
    let rt = runtime("zs-bench-db")?;
    let env = [("ZS_ADMIN_PASSWORD", ADMIN_PASSWORD), ("RUST_LOG", "warn")];
    let mut extra = vec!["--services", "accounts,db"];
    if opts.no_compress {
        extra.push("--no-compress");
    }
    let server = start_server_args(zs_exe, Secure::None, 1, 1, &env, Some(&base), &extra)?;
    let addr = server.target.addr;
    let record_bytes = Record { id: 1, version: 1, expires_at: None, data: person(1) }.encode().len();
    rt.block_on(async {
        let clients = connect(addr, CONNECTIONS).await?;
        let db = &clients[0].1;
        let e = |e: zs_services::db::client::DbClientError| e.to_string();
        // Durable inserts, one record a call.
        db.create("inserts", CreateOptions::default()).await.map_err(e)?;
        let commits_before = commits(db, "inserts").await?;
        let start = Instant::now();
        let dbs: Vec<DbClient> = clients.iter().map(|(_, d)| d.clone()).collect();
        let done: Vec<Result<(), String>> = futures_util::stream::iter(0..opts.inserts)
            .map(|i| {
                let db = dbs[i % dbs.len()].clone();
                async move { db.insert("inserts", person(i), None).await.map(drop).map_err(|x| x.to_string()) }
            })
            .buffer_unordered(opts.concurrency)
            .collect()
            .await;
        let insert_secs = start.elapsed().as_secs_f64();
        done.into_iter().collect::<Result<Vec<_>, _>>()?;
        let made = commits(db, "inserts").await? - commits_before;
        let batch = opts.inserts as f64 / made.max(1) as f64;
        let raw = raw_inserts(&base, opts.inserts, batch.round().max(1.0) as usize)?;
        let inserts = Pair::new(opts.inserts as f64 / insert_secs, raw);
        let (in_process, batch_in_process) = in_process_inserts(&base, &opts).await?;
        let raw = raw_inserts(&base, opts.inserts, batch_in_process.round().max(1.0) as usize)?;
        let inserts_in_process = Pair::new(in_process, raw);

        // The scanned database, loaded a thousand at a time.
        db.create("people", CreateOptions::default()).await.map_err(e)?;
        let start = Instant::now();
        let loads: Vec<Result<(), String>> = futures_util::stream::iter((0..opts.records).step_by(1000))
            .map(|from| {
                let db = dbs[(from / 1000) % dbs.len()].clone();
                let n = opts.records.min(from + 1000);
                async move {
                    let chunk: Vec<Data> = (from..n).map(person).collect();
                    db.insert_many("people", &chunk).await.map(drop).map_err(|x| x.to_string())
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        loads.into_iter().collect::<Result<Vec<_>, _>>()?;
        let load_per_s = opts.records as f64 / start.elapsed().as_secs_f64();

        // Scans: ours and raw redb in turns.
        let raw_dir = tempfile::tempdir_in(&base).map_err(|x| x.to_string())?;
        let raw_db = raw_file(raw_dir.path(), opts.records)?;
        let (mut ours_rates, mut raw_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.rounds.max(1) {
            let ours = scan(db, opts.records).await?;
            let raw = raw_scan(&raw_db, opts.records)?;
            ours_rates.push(ours);
            raw_rates.push(raw);
            ratios.push(ours / raw);
        }
        let scan = Pair::new(median(&mut ours_rates), median(&mut raw_rates));

        let predicate = "age >= 50 and city == \"Oslo\" and name matches \"5$\"";
        let query = timed_query(db, predicate).await?;
        db.index("people", "city", false).await.map_err(e)?;
        let query_indexed = timed_query(db, predicate).await?;
        db.index("people", "city", true).await.map_err(e)?;
        let start = Instant::now();
        db.count(&Query::new("people", predicate)).await.map_err(e)?;
        let count_seconds = start.elapsed().as_secs_f64();
        Ok(DbReport {
            scenario: "db",
            records: opts.records,
            record_bytes,
            dir: base.clone(),
            compressed: !opts.no_compress,
            ratio: inserts.ratio,
            inserts,
            batch,
            inserts_in_process,
            batch_in_process,
            load_per_s,
            scan,
            scan_ratios: ratios,
            query,
            query_indexed,
            count_seconds,
        })
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<(Client, DbClient)>, String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let feeds = Feeds::default();
        let mut r = Router::new();
        r.mount(feeds.clone());
        let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
        let c = Client::connect_with(addr, r, config).await.map_err(|e| e.to_string())?;
        let req = json!({ "user": "admin", "password": ADMIN_PASSWORD }).to_string();
        c.call_console("account.login", req).await.map_err(|e| format!("login: {e}"))?;
        let db = DbClient::new(c.peer().clone(), feeds);
        out.push((c, db));
    }
    Ok(out)
}

/// Inserts through the service's API in this process: a database of a `Db` opened here,
/// `concurrency` inserts in flight; inserts per second and per commit.
async fn in_process_inserts(base: &Path, opts: &DbOptions) -> Result<(f64, f64), String> {
    use zs_services::db::{Db, DbConfig, Info};
    let dir = tempfile::tempdir_in(base).map_err(err)?;
    let db = Db::open(DbConfig::new(dir.path()))?;
    let info = Info {
        name: "inserts".into(),
        owner: "bench".into(),
        readers: vec![],
        writers: vec![],
        indexes: vec![],
        created_ms: 0,
    };
    let h = db.stores().create(info).map_err(err)?;
    let before = h.commits().map_err(err)?;
    let start = Instant::now();
    let done: Vec<Result<(), String>> = futures_util::stream::iter(0..opts.inserts)
        .map(|i| {
            let h = h.clone();
            async move { h.insert(vec![(person(i), None)]).await.map(drop).map_err(err) }
        })
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    let secs = start.elapsed().as_secs_f64();
    done.into_iter().collect::<Result<Vec<_>, _>>()?;
    let commits = h.commits().map_err(err)? - before;
    Ok((opts.inserts as f64 / secs, opts.inserts as f64 / commits.max(1) as f64))
}

async fn commits(db: &DbClient, name: &str) -> Result<u64, String> {
    let info = db.info(name).await.map_err(|e| e.to_string())?;
    info["commits"].as_u64().ok_or_else(|| format!("no commits in {info}"))
}

/// Ours: rows per second of one query over every record, read raw as they come.
async fn scan(db: &DbClient, records: usize) -> Result<f64, String> {
    let q = Query { window: Some(200_000), window_bytes: Some(64 << 20), ..Query::new("people", "") };
    let start = Instant::now();
    let mut rows = db.query(&q).await.map_err(|e| e.to_string())?;
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(batch) = rows.next_raw().await {
        let batch = batch.map_err(|e| e.to_string())?;
        for row in batch.iter() {
            bytes += std::hint::black_box(row?.1).len();
            n += 1;
        }
    }
    if n != records || bytes == 0 {
        return Err(format!("the scan read {n} of {records} records"));
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn timed_query(db: &DbClient, predicate: &str) -> Result<QueryFigures, String> {
    let q = Query { window: Some(20_000), ..Query::new("people", predicate) };
    let start = Instant::now();
    let mut rows = db.query(&q).await.map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while let Some(batch) = rows.next_batch().await {
        n += batch.map_err(|e| e.to_string())?.len() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let examined = rows.examined();
    Ok(QueryFigures {
        predicate: predicate.into(),
        rows: n,
        examined,
        seconds,
        examined_per_s: examined as f64 / seconds,
    })
}

const RAW: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Raw redb: `n` records encoded as ours are, committed durably `batch` at a time under
/// ids in order; records per second.
fn raw_inserts(base: &Path, n: usize, batch: usize) -> Result<f64, String> {
    let dir = tempfile::tempdir_in(base).map_err(err)?;
    let db = redb::Database::create(dir.path().join("raw.redb")).map_err(err)?;
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let txn = db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(RAW).map_err(err)?;
            for _ in 0..batch.min(n - i) {
                let r = Record { id: i as u64 + 1, version: 1, expires_at: None, data: person(i) };
                t.insert(r.id, r.encode().as_slice()).map_err(err)?;
                i += 1;
            }
        }
        txn.commit().map_err(err)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A raw redb file of `n` records as ours stores them.
fn raw_file(dir: &Path, n: usize) -> Result<Arc<redb::Database>, String> {
    // The server's page cache, so that both read the same way.
    let db = redb::Database::builder()
        .set_cache_size(zs_services::db::store::DEFAULT_CACHE)
        .create(dir.join("scan.redb"))
        .map_err(err)?;
    let txn = db.begin_write().map_err(err)?;
    {
        let mut t = txn.open_table(RAW).map_err(err)?;
        for i in 0..n {
            let r = Record { id: i as u64 + 1, version: 1, expires_at: None, data: person(i) };
            t.insert(r.id, r.encode().as_slice()).map_err(err)?;
        }
    }
    txn.commit().map_err(err)?;
    Ok(Arc::new(db))
}

/// Raw redb: every record of a snapshot iterated, each value touched; records per second.
fn raw_scan(db: &redb::Database, n: usize) -> Result<f64, String> {
    use redb::ReadableDatabase;
    let start = Instant::now();
    let txn = db.begin_read().map_err(err)?;
    let t = txn.open_table(RAW).map_err(err)?;
    let (mut rows, mut bytes) = (0usize, 0usize);
    for row in t.range::<u64>(..).map_err(err)? {
        let (_, v) = row.map_err(err)?;
        bytes += std::hint::black_box(v.value()).len();
        rows += 1;
    }
    if rows != n || bytes == 0 {
        return Err(format!("raw redb iterated {rows} of {n} records"));
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

/// A readable table of the report.
pub fn table(r: &DbReport) -> String {
    let mut s = format!(
        "db: {} records of {} B, data in {}, pushes {}\n",
        r.records,
        r.record_bytes,
        r.dir.display(),
        if r.compressed { "lz4-compressed (the default)" } else { "uncompressed (--no-compress)" }
    );
    s += &format!(
        "durable inserts/s: ours {:.0} (one record a call, {:.1} per commit), raw redb same batches {:.0}: ratio {:.2}\n",
        r.inserts.ours_per_s, r.batch, r.inserts.raw_redb_per_s, r.inserts.ratio
    );
    s += &format!(
        "durable inserts/s in process (Handle::insert): ours {:.0} ({:.1} per commit), raw redb same batches {:.0}: ratio {:.2}\n",
        r.inserts_in_process.ours_per_s,
        r.batch_in_process,
        r.inserts_in_process.raw_redb_per_s,
        r.inserts_in_process.ratio
    );
    s += &format!("load, 1,000 records a call: {:.0} records/s\n", r.load_per_s);
    s += &format!(
        "streamed scan rows/s: ours {:.0}, raw redb iteration {:.0}: ratio {:.2} (rounds {:?})\n",
        r.scan.ours_per_s, r.scan.raw_redb_per_s, r.scan.ratio, r.scan_ratios
    );
    for (what, q) in [("no index", &r.query), ("index on city", &r.query_indexed)] {
        s += &format!(
            "query `{}` ({what}): {} rows, {} examined in {:.3} s ({:.0} examined/s)\n",
            q.predicate, q.rows, q.examined, q.seconds, q.examined_per_s
        );
    }
    s += &format!("the same counted on the server: {:.3} s", r.count_seconds);
    s
}
