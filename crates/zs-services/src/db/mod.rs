//! The data store (the original's ZDB, done durably): named databases of typed records
//! (JSON documents, bytes, DataFrames) with stable ids and versions, compare-and-set
//! updates, secondary indexes on JSON fields, expiry, queries by predicate or by
//! server-registered filter streamed in batches under the client's credit, and watches.
//!
//! Each database is a redb file in the data directory with a group-commit writer: a write
//! is answered only once it is on disk. Commands are console commands with JSON in and out,
//! rows and changes come as `db.rows` / `db.change` stream pushes (PROTOCOL.md §18).

pub mod client;
mod commands;
pub mod predicate;
pub mod query;
pub mod record;
mod running;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zs::{Router, Service};

pub use predicate::{ParseError, Predicate, Subject};
pub use query::{Budget, Filter, Filters, Scan, Spec};
pub use record::{Data, Record};
pub use store::{Change, DbError, Handle, Info, Op, Patch, Stores};

/// The name the service mounts under.
pub const NAME: &str = "db";

/// The push that carries a query's rows.
pub const ROWS: &str = "db.rows";
/// The push that carries a watch's changes.
pub const CHANGE: &str = "db.change";
/// The big stream that carries a bulk insert's records.
pub const BULK_DATA: &str = "db.bulk.data";

/// Where a server whose data directory is `data_dir` keeps its databases.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Settings of the data store.
#[derive(Clone)]
pub struct DbConfig {
    /// Where the databases (`NAME.redb`) live.
    pub dir: PathBuf,
    /// Largest record, in bytes of its encoding (default 1 MiB).
    pub max_record_bytes: usize,
    /// Databases at most (default 1,000).
    pub max_databases: usize,
    /// The role that may make databases (default `None`: any logged-in user).
    pub create_role: Option<String>,
    /// What one query may use (default [`Budget::default`]).
    pub budget: Budget,
    /// Queries and watches one connection runs at once (default 16).
    pub max_running: usize,
    /// Queries and watches the server runs at once (default 1,024): each holds a snapshot
    /// and up to one push of rows, so a thousand sockets cannot hold sixteen thousand.
    pub max_running_total: usize,
    /// Rows per `db.rows` push at most (default 4,096) ...
    pub batch_rows: usize,
    /// ... and bytes (default 1 MiB; at least one row).
    pub batch_bytes: usize,
    /// A query left without credit this long is stopped (default 5 minutes); its last
    /// token resumes it.
    pub paused_for: Duration,
    /// Page cache of each open database, in bytes (default 64 MiB; redb's own default is
    /// 1 GiB each). Scans of a database larger than it read pages from the file again.
    pub cache_bytes: usize,
    /// Server-registered query filters by name.
    pub filters: Filters,
}

impl DbConfig {
    /// Defaults, with the databases in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DbConfig {
            dir: dir.into(),
            max_record_bytes: 1 << 20,
            max_databases: 1_000,
            create_role: None,
            budget: Budget::default(),
            max_running: 16,
            max_running_total: 1_024,
            batch_rows: 4_096,
            batch_bytes: 1 << 20,
            paused_for: Duration::from_secs(300),
            cache_bytes: store::DEFAULT_CACHE,
            filters: Filters::new(),
        }
    }

    /// Registers query filter `name` (a query names it with `"filter": name`).
    pub fn filter(
        mut self,
        name: &str,
        f: impl Fn(&Subject<'_>, &serde_json::Map<String, serde_json::Value>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filters.insert(name.to_owned(), Arc::new(f));
        self
    }
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("dir", &self.dir)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("max_databases", &self.max_databases)
            .field("budget", &self.budget)
            .field("filters", &self.filters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The data store service. Mount it on a router (`router.mount(db.clone())`); keep a
/// clone to reach the databases from the application ([`Db::stores`]).
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: DbConfig,
    pub(crate) stores: Stores,
    /// Queries and watches running on the server.
    pub(crate) running: Arc<std::sync::atomic::AtomicUsize>,
}

impl Db {
    /// Opens the store in the configured directory.
    pub fn open(config: DbConfig) -> Result<Db, String> {
        let stores = Stores::new(&config.dir, config.cache_bytes)?;
        Ok(Db { inner: Arc::new(Inner { config, stores, running: Arc::default() }) })
    }

    /// The databases.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }
}

/// Reads `data` every way the data store reads what a peer sends (for the fuzz target
/// `db_input`): as a command's JSON request, a predicate (then tested on documents), a
/// stored record, a resume token, and a `db.rows` / `db.change` push.
pub(crate) fn decode_any(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    commands::decode_any(&text);
    let params = serde_json::json!({"a": 1, "s": "x", "l": [1, 2]});
    if let Ok(p) = Predicate::parse(&text, params.as_object().expect("an object")) {
        let docs =
            [serde_json::json!({"a": 1, "b": {"c": "xyz"}, "l": [1, "2"]}), serde_json::json!([1, "x"])];
        for doc in docs.iter().chain(serde_json::from_slice::<serde_json::Value>(data).ok().as_ref()) {
            p.test(&Subject { id: 1, version: 1, doc });
        }
    }
    if let Ok(r) = Record::decode(1, data) {
        let _ = (r.to_json(), r.data.fields(), r.data.size());
    }
    let _ = Spec::from_token(&text);
    let bytes = bytes::Bytes::copy_from_slice(data);
    if let Ok(frame) = zs::wire::DataFrame::decode(&bytes, &zs::wire::Limits::default()) {
        client::read_push(&frame);
    }
}

impl Service for Db {
    fn name(&self) -> &str {
        NAME
    }

    fn mount(self: Arc<Self>, router: &mut Router) {
        router.on_disconnect(|peer, _| running::stop_all(peer));
        commands::register(self.inner.clone(), router);
    }
}
