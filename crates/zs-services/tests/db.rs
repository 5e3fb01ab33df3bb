//! The data store over real loopback sockets: records and compare-and-set, queries (the
//! predicate language, indexes, order, limits, counts, results into another database),
//! rows under credit with pause, resume and stop, one snapshot per scan, resume tokens
//! across connections and a session across cut links, watches, bulk inserts, access
//! control and bad input.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use zs::wire::{DataFrame, ErrorCode, Value as Item};
use zs::{CallError, Client, ClientConfig, Router, ServerConfig, ServerHandle};
use zs_services::accounts::{Accounts, AccountsConfig, HashCost};
use zs_services::db::client::{CreateOptions, DbClient, DbClientError, Feeds, Query, WatchEvent};
use zs_services::db::{Budget, Data, Db, DbConfig};

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

struct Setup {
    server: ServerHandle,
    _dir: tempfile::TempDir,
}

async fn serve(change: impl FnOnce(&mut DbConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut ac = AccountsConfig::new(dir.path().join("accounts"));
    ac.hash = HashCost::insecure_fast();
    ac.allow_register = true;
    ac.admin_password = Some("admin password".into());
    let (accounts, _) = Accounts::open(ac).await.unwrap();
    let mut dc = DbConfig::new(dir.path().join("db")).filter("older_than", |s, params| {
        let min = params.get("age").and_then(Value::as_u64).unwrap_or(0);
        s.doc.get("age").and_then(Value::as_u64).is_some_and(|a| a > min)
    });
    change(&mut dc);
    let db = Db::open(dc).unwrap();
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(db);
    let server = zs::Server::bind("127.0.0.1:0", router, ServerConfig::default()).await.unwrap();
    Setup { server, _dir: dir }
}

/// A client logged in as `name` (registered if new), with the data store's feeds mounted.
async fn user_with(s: &Setup, name: &str, mut router: Router, config: ClientConfig) -> (Client, DbClient) {
    let feeds = Feeds::default();
    if !router.contains("db.rows") {
        router.mount(feeds.clone());
    }
    let c = within("connect", Client::connect_with(s.server.local_addr(), router, config)).await.unwrap();
    let password = if name == "admin" { "admin password" } else { "a long password" };
    let req = json!({ "user": name, "password": password });
    if call(&c, "account.login", req.clone()).await.is_err() {
        call(&c, "account.register", req).await.unwrap();
    }
    let db = DbClient::new(c.peer().clone(), feeds);
    (c, db)
}

async fn user(s: &Setup, name: &str) -> (Client, DbClient) {
    user_with(s, name, Router::new(), ClientConfig::secured(s.server.client_security())).await
}

async fn call(c: &Client, command: &str, request: Value) -> Result<Value, CallError> {
    let reply = within(command, c.call_console(command, request.to_string())).await?;
    Ok(serde_json::from_str(reply.as_str()).unwrap())
}

fn code(e: DbClientError) -> ErrorCode {
    match e {
        DbClientError::Call(CallError::Remote { code, .. }) => code,
        other => panic!("not a remote error: {other}"),
    }
}

fn call_code(e: CallError) -> ErrorCode {
    match e {
        CallError::Remote { code, .. } => code,
        other => panic!("not a remote error: {other}"),
    }
}

fn person(i: u64) -> Data {
    let city = ["Oslo", "Bergen", "Paris"][i as usize % 3];
    Data::Json(json!({ "name": format!("p{i:04}"), "age": i % 90, "city": city, "tags": [i % 2] }))
}

/// `db` made and filled with `n` people; their ids.
async fn people(db: &DbClient, name: &str, n: u64) -> Vec<u64> {
    db.create(name, CreateOptions::default()).await.unwrap();
    let all: Vec<Data> = (0..n).map(person).collect();
    let mut ids = Vec::new();
    for chunk in all.chunks(1000) {
        ids.extend(within("insert", db.insert_many(name, chunk)).await.unwrap());
    }
    ids
}

fn names(records: &[zs_services::db::Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r.data {
            Data::Json(v) => v["name"].as_str().unwrap().to_owned(),
            other => panic!("not a person: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_inserted_read_updated_with_a_version_check_and_deleted() {
    let s = serve(|_| {}).await;
    let (_c, db) = user(&s, "ada").await;
    db.create("cards", CreateOptions::default()).await.unwrap();
    let (id, v) = db.insert("cards", Data::Json(json!({"name": "Ada", "phone": "1"})), None).await.unwrap();
    assert_eq!(v, 1);
    let mut frame = DataFrame::new();
    frame.push(7u32).push("seven");
    let frame = frame.to_bytes().to_vec();
    let (fid, _) = db.insert("cards", Data::Frame(frame.clone()), None).await.unwrap();
    let (bid, _) = db.insert("cards", Data::Bytes(vec![0, 1, 255]), None).await.unwrap();
    assert!(id < fid && fid < bid, "ids are given in order");
    assert_eq!(db.get("cards", fid).await.unwrap().unwrap().data, Data::Frame(frame));
    assert_eq!(db.get("cards", bid).await.unwrap().unwrap().data, Data::Bytes(vec![0, 1, 255]));
    // Compare-and-set: the right version wins once, a stale one is refused.
    let v2 = db.update("cards", id, Data::Json(json!({"name": "Ada", "phone": "2"})), Some(1)).await.unwrap();
    assert_eq!(v2, 2);
    let stale = db.update("cards", id, Data::Json(json!({"name": "Ada", "phone": "3"})), Some(1)).await;
    assert_eq!(code(stale.unwrap_err()), ErrorCode::VersionMismatch);
    let r = db.get("cards", id).await.unwrap().unwrap();
    assert_eq!((r.version, r.data), (2, Data::Json(json!({"name": "Ada", "phone": "2"}))));
    // Without a version the update always applies.
    assert_eq!(db.update("cards", id, Data::Json(json!({"phone": "4"})), None).await.unwrap(), 3);
    assert_eq!(code(db.delete("cards", id, Some(2)).await.unwrap_err()), ErrorCode::VersionMismatch);
    assert!(db.delete("cards", id, Some(3)).await.unwrap());
    assert!(!db.delete("cards", id, None).await.unwrap());
    assert_eq!(db.get("cards", id).await.unwrap(), None);
    assert_eq!(
        code(db.update("cards", id, Data::Bytes(vec![]), None).await.unwrap_err()),
        ErrorCode::NotFound
    );
    // A record past its time to live is gone at once (and swept later).
    let (tid, _) = db.insert("cards", Data::Bytes(vec![1]), Some(Duration::from_millis(1))).await.unwrap();
    within("expiry", async {
        while db.get("cards", tid).await.unwrap().is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let info = db.info("cards").await.unwrap();
    assert_eq!(info["owner"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_order_limit_count_and_write_into_another_database() {
    let s = serve(|_| {}).await;
    let (_c, db) = user(&s, "ada").await;
    people(&db, "people", 300).await;
    let q =
        Query::new("people", "city == $city and age >= 30 and not name prefix \"p00\"").param("city", "Oslo");
    let oslo = db.query(&q).await.unwrap().collect().await.unwrap();
    let expected: Vec<String> =
        (0..300u64).filter(|i| i % 3 == 0 && i % 90 >= 30 && *i >= 100).map(|i| format!("p{i:04}")).collect();
    assert_eq!(names(&oslo), expected);
    // Regex, nested fields, reverse and limit.
    let q = Query {
        reverse: true,
        limit: Some(3),
        ..Query::new("people", "name matches \"^p01[0-9]7$\" or tags.0 == 5")
    };
    assert_eq!(names(&db.query(&q).await.unwrap().collect().await.unwrap()), ["p0197", "p0187", "p0177"]);
    // Counting on the server.
    assert_eq!(db.count(&Query::new("people", "city == \"Paris\"")).await.unwrap(), 100);
    assert_eq!(db.count(&Query::new("people", "")).await.unwrap(), 300);
    // A server-registered filter, with the predicate.
    let q = Query {
        filter: Some("older_than".into()),
        ..Query::new("people", "city == \"Bergen\"").param("age", 85)
    };
    let old = db.query(&q).await.unwrap().collect().await.unwrap();
    assert_eq!(names(&old), ["p0088", "p0178", "p0268"]);
    // Through an index: the same rows, only the matching ones examined.
    db.index("people", "city", false).await.unwrap();
    let q = Query::new("people", "city == \"Paris\" and age < 10");
    let mut rows = db.query(&q).await.unwrap();
    let mut through_index = Vec::new();
    while let Some(r) = rows.next().await {
        through_index.push(r.unwrap());
    }
    assert_eq!(rows.examined(), 100, "the index picked the Paris records only");
    let expected: Vec<String> =
        (0..300u64).filter(|i| i % 3 == 2 && i % 90 < 10).map(|i| format!("p{i:04}")).collect();
    assert_eq!(names(&through_index), expected);
    // Records written later are indexed too; updates move them.
    let (nid, _) = db
        .insert("people", Data::Json(json!({"name": "new", "city": "Paris", "age": 1})), None)
        .await
        .unwrap();
    assert_eq!(db.count(&Query::new("people", "city == \"Paris\"")).await.unwrap(), 101);
    db.update("people", nid, Data::Json(json!({"name": "new", "city": "Rome"})), None).await.unwrap();
    assert_eq!(db.count(&Query::new("people", "city == \"Paris\"")).await.unwrap(), 100);
    assert_eq!(db.count(&Query::new("people", "city == \"Rome\"")).await.unwrap(), 1);
    // Into another database, ids kept.
    db.create("parisians", CreateOptions::default()).await.unwrap();
    assert_eq!(db.query_into(&Query::new("people", "city == \"Paris\""), "parisians").await.unwrap(), 100);
    let copied = db.query(&Query::new("parisians", "")).await.unwrap().collect().await.unwrap();
    assert_eq!(copied.len(), 100);
    assert!(copied.iter().all(|r| r.id % 3 == 0), "ids kept: Paris people are every third from id 3");
}

/// A raw client that records every `db.rows` push: (kind, token, row ids).
async fn raw_rows(s: &Setup, name: &str) -> (Client, mpsc::UnboundedReceiver<(String, String, Vec<u64>)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    r.direct_stream("db.rows", move |_peer, f: DataFrame| {
        let v = f.values();
        let s = |i: usize| match &v[i] {
            Item::Str(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let Item::Bytes(packed) = &v[6] else { panic!("rows are packed bytes") };
        let ids = zs_services::db::record::unpack(packed).map(|r| r.unwrap().0).collect();
        let _ = tx.send((s(1), s(2), ids));
    });
    let (c, _) = user_with(s, name, r, ClientConfig::secured(s.server.client_security())).await;
    (c, rx)
}

/// Rows received until `n` in all, with every push's kind.
async fn take_rows(
    rx: &mut mpsc::UnboundedReceiver<(String, String, Vec<u64>)>,
    n: usize,
) -> (Vec<u64>, Vec<String>) {
    let (mut ids, mut kinds) = (Vec::new(), Vec::new());
    while ids.len() < n {
        let (kind, _, got) = within("rows", rx.recv()).await.unwrap();
        ids.extend(got);
        kinds.push(kind);
    }
    (ids, kinds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_come_only_as_far_as_the_credit_goes_and_pause_resume_stop_work() {
    let s = serve(|c| c.batch_rows = 4).await;
    let (c, mut rx) = raw_rows(&s, "ada").await;
    let feeds = Feeds::default();
    let db = DbClient::new(c.peer().clone(), feeds);
    let ids = people(&db, "people", 100).await;
    call(&c, "db.query", json!({"query": "a", "db": "people", "credit_rows": 10})).await.unwrap();
    let (got, kinds) = take_rows(&mut rx, 10).await;
    assert_eq!(got, ids[..10]);
    assert!(kinds.iter().all(|k| k == "rows"), "{kinds:?}");
    // Paused, a grant sends nothing; resumed, exactly the grant comes.
    call(&c, "db.pause", json!({"query": "a"})).await.unwrap();
    call(&c, "db.credit", json!({"query": "a", "rows": 5})).await.unwrap();
    call(&c, "db.resume", json!({"query": "a"})).await.unwrap();
    let (got, _) = take_rows(&mut rx, 5).await;
    assert_eq!(got, ids[10..15]);
    // Stopped: the end comes next, with no row past the credit before it, and its token
    // starts the rest.
    call(&c, "db.stop", json!({"query": "a"})).await.unwrap();
    let (kind, token, got) = within("the end", rx.recv()).await.unwrap();
    assert_eq!((kind.as_str(), got.len()), ("end", 0));
    let (_c2, db2) = user(&s, "ada").await;
    let rest = db2.resume(&token, None).await.unwrap().collect().await.unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), ids[15..]);
    // The id is free again; unknown ids are refused.
    assert_eq!(
        call_code(call(&c, "db.credit", json!({"query": "a", "rows": 1})).await.unwrap_err()),
        ErrorCode::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_reads_one_snapshot_while_the_database_changes() {
    let s = serve(|c| c.batch_rows = 10).await;
    let (_c, db) = user(&s, "ada").await;
    let ids = people(&db, "people", 100).await;
    let q = Query { window: Some(10), ..Query::new("people", "") };
    let mut rows = db.query(&q).await.unwrap();
    let first = rows.next_batch().await.unwrap().unwrap();
    assert_eq!(first.len(), 10);
    // Everything changes under the scan.
    for id in &ids[50..] {
        db.delete("people", *id, None).await.unwrap();
    }
    db.update("people", ids[60], Data::Bytes(vec![]), None).await.unwrap_err();
    db.update("people", ids[20], Data::Json(json!({"name": "changed"})), None).await.unwrap();
    db.insert_many("people", &[person(1000), person(1001)]).await.unwrap();
    let mut seen: Vec<_> = first;
    while let Some(r) = rows.next().await {
        seen.push(r.unwrap());
    }
    assert_eq!(seen.iter().map(|r| r.id).collect::<Vec<_>>(), ids, "the snapshot's records, all and only");
    assert_eq!(names(&seen[20..21]), ["p0020"], "as they were when the scan began");
    assert_eq!(db.count(&Query::new("people", "")).await.unwrap(), 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_resumes_a_query_on_a_new_connection() {
    let s = serve(|c| c.batch_rows = 10).await;
    let (c, db) = user(&s, "ada").await;
    let ids = people(&db, "people", 100).await;
    let q = Query { window: Some(20), ..Query::new("people", "age >= 0") };
    let mut rows = db.query(&q).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 30 {
        seen.extend(rows.next_batch().await.unwrap().unwrap().into_iter().map(|r| r.id));
    }
    let token = rows.token().to_owned();
    c.close();
    within("closed", c.closed()).await;
    let (_c2, db2) = user(&s, "ada").await;
    let rest = db2.resume(&token, Some(7)).await.unwrap().collect().await.unwrap();
    seen.extend(rest.iter().map(|r| r.id));
    assert_eq!(seen, ids, "nothing lost, nothing twice");
    // A token is checked like any query: another user may not read the database.
    let (_c3, eve) = user(&s, "eve").await;
    assert_eq!(code(eve.resume(&token, None).await.err().unwrap()), ErrorCode::NotFound);
    assert_eq!(code(eve.resume("not a token", None).await.err().unwrap()), ErrorCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_on_a_resumable_session_goes_on_across_cut_links() {
    let s = serve(|c| c.batch_rows = 16).await;
    let proxy =
        zs_bench::fault_proxy::FaultProxy::start(s.server.local_addr(), Default::default()).await.unwrap();
    let session = zs::SessionConfig { min_backoff: Duration::from_millis(5), ..Default::default() };
    let feeds = Feeds::default();
    let mut router = Router::new();
    router.mount(feeds.clone());
    let config = ClientConfig { session: Some(session), ..ClientConfig::secured(s.server.client_security()) };
    let c = within("connect", Client::connect_with(proxy.addr(), router, config)).await.unwrap();
    call(&c, "account.register", json!({"user": "ada", "password": "a long password"})).await.unwrap();
    let db = DbClient::new(c.peer().clone(), feeds);
    let ids = people(&db, "people", 2000).await;
    let mut rows = db.query(&Query { window: Some(64), ..Query::new("people", "") }).await.unwrap();
    let mut seen = Vec::new();
    let mut cuts = 0;
    while let Some(r) = within("rows", rows.next()).await {
        seen.push(r.unwrap().id);
        if seen.len() % 300 == 0 {
            proxy.cut_all();
            cuts += 1;
        }
    }
    assert_eq!(seen, ids, "every row once, in order, across {cuts} cuts");
    assert!(c.session().unwrap().resumes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_a_snapshot_then_every_matching_change() {
    let s = serve(|_| {}).await;
    let (_c, db) = user(&s, "ada").await;
    people(&db, "people", 30).await;
    let mut w = db.watch("people", "city == \"Oslo\"", Map::new(), true).await.unwrap();
    let mut snapshot = Vec::new();
    loop {
        match within("watch", w.next()).await.unwrap().unwrap() {
            WatchEvent::Snapshot(r) => snapshot.push(r),
            WatchEvent::Synced => break,
            other => panic!("before the sync: {other:?}"),
        }
    }
    assert_eq!(snapshot.len(), 10);
    let (oslo, _) =
        db.insert("people", Data::Json(json!({"name": "o", "city": "Oslo"})), None).await.unwrap();
    db.insert("people", Data::Json(json!({"name": "r", "city": "Rome"})), None).await.unwrap();
    db.update("people", oslo, Data::Json(json!({"name": "o2", "city": "Oslo"})), None).await.unwrap();
    db.update("people", snapshot[0].id, Data::Json(json!({"name": "moved", "city": "Rome"})), None)
        .await
        .unwrap();
    let (rome, _) =
        db.insert("people", Data::Json(json!({"name": "r2", "city": "Rome"})), None).await.unwrap();
    db.update("people", rome, Data::Json(json!({"name": "r2", "city": "Oslo"})), None).await.unwrap();
    db.delete("people", oslo, None).await.unwrap();
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(within("change", w.next()).await.unwrap().unwrap());
    }
    let summary: Vec<(String, u64)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Insert(r) => ("insert".into(), r.id),
            WatchEvent::Update(r) => ("update".into(), r.id),
            WatchEvent::Delete(r) => ("delete".into(), r.id),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected =
        [("insert", oslo), ("update", oslo), ("delete", snapshot[0].id), ("insert", rome), ("delete", oslo)];
    assert_eq!(summary, expected.map(|(k, id)| (k.to_owned(), id)));
    w.stop().await.unwrap();
    // Without a snapshot, changes only.
    let mut w = db.watch("people", "", Map::new(), false).await.unwrap();
    let (id, _) = db.insert("people", Data::Bytes(vec![1]), None).await.unwrap();
    assert!(
        matches!(within("change", w.next()).await.unwrap().unwrap(), WatchEvent::Insert(r) if r.id == id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_inserts_come_from_a_big_stream() {
    let s = serve(|_| {}).await;
    let (_c, db) = user(&s, "ada").await;
    db.create("bulk", CreateOptions::default()).await.unwrap();
    let mut lines = String::new();
    for i in 0..10_000 {
        lines.push_str(&json!({"json": {"n": i}}).to_string());
        lines.push('\n');
    }
    assert_eq!(
        within("bulk", db.bulk_insert("bulk", std::io::Cursor::new(lines.into_bytes()))).await.unwrap(),
        10_000
    );
    assert_eq!(db.count(&Query::new("bulk", "n >= 5000")).await.unwrap(), 5_000);
    // A bad line stops it, with a clear error; what came before it stays.
    let mut lines = String::new();
    for i in 0..1500 {
        lines.push_str(&json!({"json": {"n": i}}).to_string());
        lines.push('\n');
    }
    lines.push_str("{not json\n");
    let e =
        within("bulk", db.bulk_insert("bulk", std::io::Cursor::new(lines.into_bytes()))).await.unwrap_err();
    assert!(e.to_string().contains("bad bulk line") && e.to_string().contains("1000 records"), "{e}");
    assert_eq!(db.count(&Query::new("bulk", "")).await.unwrap(), 11_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_are_listed_copied_compacted_shared_and_dropped() {
    let s = serve(|_| {}).await;
    let (_c, ada) = user(&s, "ada").await;
    let (_c2, bob) = user(&s, "bob").await;
    people(&ada, "mine", 50).await;
    assert_eq!(bob.list().await.unwrap(), vec![], "bob sees none of ada's");
    assert_eq!(bob.get("mine", 1).await.unwrap(), None);
    assert_eq!(code(bob.info("mine").await.unwrap_err()), ErrorCode::NotFound);
    ada.grant("mine", Some(vec!["bob".into()]), None).await.unwrap();
    assert_eq!(bob.list().await.unwrap()[0].access, "read");
    assert!(bob.get("mine", 1).await.unwrap().is_some());
    assert_eq!(code(bob.insert("mine", Data::Bytes(vec![]), None).await.unwrap_err()), ErrorCode::Forbidden);
    assert_eq!(code(bob.drop_db("mine").await.unwrap_err()), ErrorCode::Forbidden);
    ada.grant("mine", None, Some(vec!["role:user".into()])).await.unwrap();
    bob.insert("mine", Data::Bytes(vec![]), None).await.unwrap();
    // Bob copies it into his own.
    assert_eq!(bob.copy("mine", "bobs").await.unwrap(), 51);
    assert_eq!(bob.count(&Query::new("bobs", "")).await.unwrap(), 51);
    // Compaction of a file with free space.
    for id in 1..=40 {
        ada.delete("mine", id, None).await.unwrap();
    }
    ada.compact("mine").await.unwrap();
    assert_eq!(ada.count(&Query::new("mine", "")).await.unwrap(), 11);
    ada.drop_db("mine").await.unwrap();
    assert_eq!(code(ada.info("mine").await.unwrap_err()), ErrorCode::NotFound);
    ada.create("mine", CreateOptions::default()).await.unwrap();
    assert_eq!(
        ada.count(&Query::new("mine", "")).await.unwrap(),
        0,
        "a new database of an old name is empty"
    );
    let names: Vec<String> = bob.list().await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["bobs"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_store_stays_whole() {
    let s = serve(|c| {
        c.max_record_bytes = 1024;
        c.budget = Budget { rows: 50, cpu: Duration::from_secs(10) };
    })
    .await;
    let (c, db) = user(&s, "ada").await;
    let ids = people(&db, "people", 100).await;
    let err = |r: Result<Value, CallError>| match r.unwrap_err() {
        CallError::Remote { code, message } => (code, message),
        other => panic!("{other}"),
    };
    let (code_, message) =
        err(call(&c, "db.query", json!({"query": "x", "db": "people", "where": "age >"})).await);
    assert_eq!(code_, ErrorCode::InvalidArgument);
    assert!(message.contains("at byte 5"), "{message}");
    let (code_, _) = err(call(&c, "db.get", json!({"db": "nope", "id": 1})).await);
    assert_eq!(code_, ErrorCode::NotFound);
    let (code_, _) = err(call(&c, "db.create", json!({"db": "../etc"})).await);
    assert_eq!(code_, ErrorCode::InvalidArgument);
    let (code_, _) = err(call(&c, "db.create", json!({"db": "people"})).await);
    assert_eq!(code_, ErrorCode::Conflict);
    let (code_, _) = err(call(&c, "db.insert", json!({"db": "people", "json": "x".repeat(2000)})).await);
    assert_eq!(code_, ErrorCode::TooLarge);
    let (code_, message) = err(call(&c, "db.insert", json!({"db": "people", "json": 1, "extra": 2})).await);
    assert!(code_ == ErrorCode::InvalidArgument && message.contains("extra"), "{message}");
    let (code_, _) =
        err(call(&c, "db.insert", json!({"db": "people", "records": [{"json": 1}, {"nothing": 2}]})).await);
    assert_eq!(code_, ErrorCode::InvalidArgument);
    let (code_, _) =
        err(call(&c, "db.update", json!({"db": "people", "id": ids[0], "version": 9, "json": 1})).await);
    assert_eq!(code_, ErrorCode::VersionMismatch);
    let (code_, _) = err(call(&c, "db.query", json!({"query": "y", "db": "people", "filter": "nope"})).await);
    assert_eq!(code_, ErrorCode::NotFound);
    // Over the budget: a clear error, and a token to go on from.
    let (code_, message) = err(call(&c, "db.query", json!({"db": "people", "count": true})).await);
    assert!(code_ == ErrorCode::OverBudget && message.contains("50 records"), "{message}");
    let mut rows = db.query(&Query::new("people", "")).await.unwrap();
    let mut got = 0;
    let e = loop {
        match rows.next().await.unwrap() {
            Ok(_) => got += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(&e, DbClientError::Server { code, .. } if *code == ErrorCode::OverBudget.code()), "{e}");
    assert_eq!(got, 50);
    let rest = db.resume(rows.token(), None).await.unwrap().collect().await.unwrap();
    assert_eq!(rest.len(), 50);
    // Nothing of it changed the store.
    assert_eq!(db.info("people").await.unwrap()["records"], 100);
    let all = db
        .query(&Query { limit: Some(50), ..Query::new("people", "") })
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| (r.id, r.version)).collect::<BTreeSet<_>>().len(), 50);
    assert!(all.iter().all(|r| r.version == 1));
    // Too many at once on one connection.
    for i in 0..16 {
        call(&c, "db.watch", json!({"watch": format!("w{i}"), "db": "people"})).await.unwrap();
    }
    let (code_, _) = err(call(&c, "db.watch", json!({"watch": "w16", "db": "people"})).await);
    assert_eq!(code_, ErrorCode::Overloaded);
    let (code_, _) = err(call(&c, "db.watch", json!({"watch": "w1", "db": "people"})).await);
    assert_eq!(code_, ErrorCode::Conflict);
    // Not logged in: nothing.
    let anon = Client::connect_with(
        s.server.local_addr(),
        Router::new(),
        ClientConfig::secured(s.server.client_security()),
    )
    .await
    .unwrap();
    assert_eq!(call_code(call(&anon, "db.list", json!({})).await.unwrap_err()), ErrorCode::NotLoggedIn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_watches_dropped_by_the_client_end_on_the_server() {
    let s = serve(|_| {}).await;
    let (_c, db) = user(&s, "ada").await;
    people(&db, "people", 100).await;
    // Each holds one row of credit's worth and is dropped before its end: without a stop on
    // the server, the sixteen places of the connection would stay taken for minutes.
    for round in 0..3 {
        for _ in 0..16 {
            let mut rows = db.query(&Query { window: Some(1), ..Query::new("people", "") }).await.unwrap();
            rows.next().await.unwrap().unwrap();
            let w = db.watch("people", "", Map::new(), false).await.unwrap();
            drop((rows, w));
            // Its place comes back once the stop has reached the server.
            within("a place", async {
                loop {
                    match db.query(&Query { limit: Some(1), ..Query::new("people", "") }).await {
                        Ok(r) => break r.collect().await.unwrap(),
                        Err(DbClientError::Call(CallError::Remote {
                            code: ErrorCode::Overloaded, ..
                        })) => tokio::task::yield_now().await,
                        Err(e) => panic!("round {round}: {e}"),
                    }
                }
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_a_bounded_number_of_queries_and_watches_across_connections() {
    let s = serve(|c| c.max_running_total = 2).await;
    let (c1, db) = user(&s, "ada").await;
    let (c2, _) = user(&s, "ada").await;
    people(&db, "people", 10).await;
    call(&c1, "db.watch", json!({"watch": "a", "db": "people"})).await.unwrap();
    call(&c2, "db.watch", json!({"watch": "b", "db": "people"})).await.unwrap();
    let full = call(&c2, "db.watch", json!({"watch": "c", "db": "people"})).await.unwrap_err();
    assert_eq!(call_code(full), ErrorCode::Overloaded);
    // A place comes back once a watch ends.
    call(&c1, "db.unwatch", json!({"watch": "a"})).await.unwrap();
    within("a place", async {
        while call(&c2, "db.watch", json!({"watch": "c", "db": "people"})).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}
