//! `zs db`: the data store from the command line, JSON in and out (one record per line).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use zs::Router;
use zs_services::db::client::{CreateOptions, DbClient, DbClientError, Feeds, Query, WatchEvent};
use zs_services::db::{Data, Record};

/// `zs db`.
#[derive(Args)]
pub struct DbArgs {
    #[command(subcommand)]
    cmd: DbCmd,
    #[command(flatten)]
    connect: crate::connect::ConnectArgs,
}

#[derive(Subcommand)]
enum DbCmd {
    /// Make a database.
    Create {
        db: String,
        /// Fields of JSON records to index (repeatable).
        #[arg(long = "index")]
        indexes: Vec<String>,
        /// Who may read: a user, role:NAME or * (repeatable).
        #[arg(long = "reader")]
        readers: Vec<String>,
        /// Who may write, in the same form (repeatable).
        #[arg(long = "writer")]
        writers: Vec<String>,
    },
    /// List the databases this user may read.
    Ls,
    /// A database's settings, records and bytes.
    Info { db: String },
    /// Insert a JSON document (or, with --id, replace record ID's); prints its id and version.
    Put {
        db: String,
        /// The document, as JSON.
        json: String,
        /// Replace this record instead of inserting one.
        #[arg(long)]
        id: Option<u64>,
        /// Only if the record is at this version (compare-and-set).
        #[arg(long, requires = "id")]
        version: Option<u64>,
        /// Seconds the record lives.
        #[arg(long, value_parser = crate::seconds)]
        ttl: Option<Duration>,
    },
    /// Print record ID.
    Get { db: String, id: u64 },
    /// Remove record ID.
    Del {
        db: String,
        id: u64,
        /// Only if the record is at this version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Print the records that pass PREDICATE (all without one), one JSON line each.
    Query(QueryArgs),
    /// Print changes to the records that pass PREDICATE as they are committed.
    Watch {
        db: String,
        predicate: Option<String>,
        /// Values of $parameters: NAME=JSON (repeatable).
        #[arg(long = "param", value_parser = param)]
        params: Vec<(String, Value)>,
        /// First the records there are, then `synced`, then changes.
        #[arg(long)]
        snapshot: bool,
        /// Stop after this many changes (default: run until stopped).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Insert the records of a file of JSON lines (`-`: standard input), each as
    /// `{"json": ...}`, `{"bytes": BASE64}` or `{"frame": BASE64}`, with an optional "ttl".
    Bulk { db: String, file: String },
    /// Index (or with --remove, stop indexing) a field of JSON records.
    Index {
        db: String,
        field: String,
        #[arg(long)]
        remove: bool,
    },
    /// Copy a database into a new one.
    Copy { from: String, to: String },
    /// Give a database's file its free space back.
    Compact { db: String },
    /// Remove a database and its records.
    Drop { db: String },
}

#[derive(Args)]
struct QueryArgs {
    db: String,
    predicate: Option<String>,
    /// Values of $parameters: NAME=JSON (repeatable).
    #[arg(long = "param", value_parser = param)]
    params: Vec<(String, Value)>,
    /// A server-registered filter.
    #[arg(long)]
    filter: Option<String>,
    /// Highest ids first.
    #[arg(long)]
    reverse: bool,
    /// At most this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Print only how many pass.
    #[arg(long, conflicts_with = "into")]
    count: bool,
    /// Write the records into this database instead of printing them.
    #[arg(long)]
    into: Option<String>,
    /// Start again where a query stopped (its printed token).
    #[arg(long, conflicts_with_all = ["count", "into"])]
    resume: Option<String>,
}

/// `NAME=JSON` (a bare word that is not JSON is a string).
fn param(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s.split_once('=').ok_or("a parameter is NAME=VALUE")?;
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), v))
}

fn e(e: DbClientError) -> String {
    e.to_string()
}

fn print(r: &Record) {
    println!("{}", r.to_json());
}

pub fn db(args: DbArgs) -> Result<(), String> {
    crate::runtime()?.block_on(async {
        let feeds = Feeds::default();
        let f = feeds.clone();
        let c = args
            .connect
            .connect_many(1, move || {
                let mut r = Router::new();
                r.mount(f.clone());
                r
            })
            .await?
            .remove(0);
        let db = DbClient::new(c.peer().clone(), feeds);
        run(&db, args.cmd).await
    })
}

async fn run(db: &DbClient, cmd: DbCmd) -> Result<(), String> {
    match cmd {
        DbCmd::Create { db: name, indexes, readers, writers } => {
            db.create(&name, CreateOptions { readers, writers, indexes }).await.map_err(e)?;
            println!("made {name}");
        }
        DbCmd::Ls => {
            for d in db.list().await.map_err(e)? {
                println!("{}", json!({ "name": d.name, "owner": d.owner, "access": d.access }));
            }
        }
        DbCmd::Info { db: name } => println!("{}", db.info(&name).await.map_err(e)?),
        DbCmd::Put { db: name, json, id, version, ttl } => {
            let doc: Value = serde_json::from_str(&json).map_err(|err| format!("not JSON: {err}"))?;
            let (id, version) = match id {
                Some(id) => (id, db.update(&name, id, Data::Json(doc), version).await.map_err(e)?),
                None => db.insert(&name, Data::Json(doc), ttl).await.map_err(e)?,
            };
            println!("{}", json!({ "id": id, "version": version }));
        }
        DbCmd::Get { db: name, id } => match db.get(&name, id).await.map_err(e)? {
            Some(r) => print(&r),
            None => return Err(format!("no record {id} in {name}")),
        },
        DbCmd::Del { db: name, id, version } => {
            println!("{}", json!({ "deleted": db.delete(&name, id, version).await.map_err(e)? }));
        }
        DbCmd::Query(q) => query(db, q).await?,
        DbCmd::Watch { db: name, predicate, params, snapshot, count } => {
            let params: Map<String, Value> = params.into_iter().collect();
            let mut w =
                db.watch(&name, predicate.as_deref().unwrap_or(""), params, snapshot).await.map_err(e)?;
            let mut changes = 0;
            while count.is_none_or(|n| changes < n) {
                let Some(event) = w.next().await else { return Err("the watch ended".into()) };
                let (kind, r) = match event.map_err(e)? {
                    WatchEvent::Snapshot(r) => ("snapshot", Some(r)),
                    WatchEvent::Synced => ("synced", None),
                    WatchEvent::Insert(r) => ("insert", Some(r)),
                    WatchEvent::Update(r) => ("update", Some(r)),
                    WatchEvent::Delete(r) => ("delete", Some(r)),
                };
                if !matches!(kind, "snapshot" | "synced") {
                    changes += 1;
                }
                let line = match r {
                    Some(r) => json!({ "change": kind, "record": r.to_json() }),
                    None => json!({ "change": kind }),
                };
                println!("{line}");
            }
        }
        DbCmd::Bulk { db: name, file } => {
            // Streamed from the file as it is read, not loaded whole.
            let n = match file.as_str() {
                "-" => db.bulk_insert(&name, tokio::io::stdin()).await,
                path => {
                    let f = tokio::fs::File::open(path).await.map_err(|err| format!("{path}: {err}"))?;
                    db.bulk_insert(&name, f).await
                }
            }
            .map_err(e)?;
            println!("{}", json!({ "inserted": n }));
        }
        DbCmd::Index { db: name, field, remove } => {
            db.index(&name, &field, remove).await.map_err(e)?;
            println!("{}", json!({ "indexed": !remove, "field": field }));
        }
        DbCmd::Copy { from, to } => {
            println!("{}", json!({ "copied": db.copy(&from, &to).await.map_err(e)? }))
        }
        DbCmd::Compact { db: name } => {
            println!("{}", json!({ "compacted": db.compact(&name).await.map_err(e)? }))
        }
        DbCmd::Drop { db: name } => {
            db.drop_db(&name).await.map_err(e)?;
            println!("dropped {name}");
        }
    }
    Ok(())
}

async fn query(db: &DbClient, a: QueryArgs) -> Result<(), String> {
    let q = Query {
        db: a.db,
        predicate: a.predicate.unwrap_or_default(),
        params: a.params.into_iter().collect(),
        filter: a.filter,
        reverse: a.reverse,
        limit: a.limit,
        ..Query::default()
    };
    if a.count {
        println!("{}", json!({ "count": db.count(&q).await.map_err(e)? }));
        return Ok(());
    }
    if let Some(into) = a.into {
        println!("{}", json!({ "written": db.query_into(&q, &into).await.map_err(e)? }));
        return Ok(());
    }
    let mut rows = match a.resume {
        Some(token) => db.resume(&token, None).await,
        None => db.query(&q).await,
    }
    .map_err(e)?;
    while let Some(r) = rows.next().await {
        match r {
            Ok(r) => print(&r),
            Err(err) => {
                // Say how to go on: a stopped query resumes from its token.
                eprintln!("resume with: zs db query --resume {}", rows.token());
                return Err(e(err));
            }
        }
    }
    Ok(())
}
