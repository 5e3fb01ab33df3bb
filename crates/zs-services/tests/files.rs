//! The file service over real loopback sockets: round trips, resumed uploads and downloads
//! through a proxy that cuts links, ranges, multi-connection downloads, instant uploads with
//! and without proof, the sandbox, quotas, concurrent writers and expiry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use zs::wire::ErrorCode;
use zs::{CallError, Client, ClientConfig, Router, ServerConfig, ServerHandle, StreamOptions};
use zs_bench::fault_proxy::{FaultProxy, Faults};
use zs_bench::source::Noise;
use zs_services::accounts::{Accounts, AccountsConfig, HashCost};
use zs_services::files::client::{self, DownloadOptions, FileError, UploadOptions};
use zs_services::files::{Files, FilesConfig, SharedFolder};

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

struct Setup {
    server: ServerHandle,
    dir: tempfile::TempDir,
    files: PathBuf,
}

/// Starts the upload `put` from `client` and sends the first MiB of `bytes`, holding the
/// stream open; returns the sending end and the transfer once the server's `.part` file
/// under `partial` holds that MiB.
async fn first_mib_sent(
    client: &Client,
    put: Value,
    bytes: &[u8],
    partial: &Path,
) -> (tokio::io::DuplexStream, zs::Transfer) {
    use tokio::io::AsyncWriteExt;
    let first = call(client, "file.put", put).await.unwrap();
    let (mut tx, rx) = tokio::io::duplex(64 << 10);
    let opts = StreamOptions {
        len: Some(bytes.len() as u64),
        ticket: first["ticket"].as_u64(),
        ..Default::default()
    };
    let transfer = client.send_big_stream("file.put.data", rx, opts);
    tx.write_all(&bytes[..1 << 20]).await.unwrap();
    within("the first MiB arrives", async {
        loop {
            let part = std::fs::read_dir(partial)
                .unwrap()
                .flatten()
                .find(|e| e.path().extension().is_some_and(|x| x == "part"));
            if part.and_then(|p| p.metadata().ok()).is_some_and(|m| m.len() == 1 << 20) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    (tx, transfer)
}

async fn serve(change: impl FnOnce(&mut FilesConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut ac = AccountsConfig::new(dir.path().join("accounts"));
    ac.hash = HashCost::insecure_fast();
    ac.allow_register = true;
    ac.admin_password = Some("admin password".into());
    let (accounts, _) = Accounts::open(ac).await.unwrap();
    let files_dir = dir.path().join("files");
    let mut fc = FilesConfig::new(&files_dir);
    fc.shared = vec![SharedFolder {
        name: "team".into(),
        readers: vec!["bob".into()],
        writers: vec!["alice".into()],
    }];
    change(&mut fc);
    let files = Files::open(fc).unwrap();
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(files);
    let server = zs::Server::bind("127.0.0.1:0", router, ServerConfig::default()).await.unwrap();
    Setup { server, dir, files: files_dir }
}

/// A client (registered for downloads) to `addr`, logged in as `user` (made if new).
async fn user_at(s: &Setup, addr: std::net::SocketAddr, user: Option<&str>) -> Client {
    let mut r = Router::new();
    client::register(&mut r);
    let config = ClientConfig::secured(s.server.client_security());
    let c = within("connect", Client::connect_with(addr, r, config)).await.unwrap();
    match user {
        Some("admin") => {
            call(&c, "account.login", json!({ "user": "admin", "password": "admin password" }))
                .await
                .unwrap();
        }
        Some(u) => {
            let req = json!({ "user": u, "password": "a long password" });
            if call(&c, "account.login", req.clone()).await.is_err() {
                call(&c, "account.register", req).await.unwrap();
            }
        }
        None => {}
    }
    c
}

async fn user(s: &Setup, name: &str) -> Client {
    user_at(s, s.server.local_addr(), Some(name)).await
}

async fn call(c: &Client, command: &str, request: Value) -> Result<Value, CallError> {
    let reply = within(command, c.call_console(command, request.to_string())).await?;
    Ok(serde_json::from_str(reply.as_str()).unwrap_or(Value::Null))
}

fn code<T: std::fmt::Debug>(r: Result<T, CallError>) -> ErrorCode {
    match r {
        Err(CallError::Remote { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn file_code<T: std::fmt::Debug>(r: Result<T, FileError>) -> ErrorCode {
    match r {
        Err(FileError::Call(CallError::Remote { code, .. })) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// `len` bytes that do not compress and differ per `seed`.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    Noise::new(len as u64, seed).fill(&mut out);
    out
}

fn local(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_0_1_and_many_bytes_go_up_and_come_back_identical() {
    let s = serve(|_| {}).await;
    let alice = user(&s, "alice").await;
    let work = tempfile::tempdir().unwrap();
    for (name, len) in [("empty", 0usize), ("one", 1), ("many", 5 << 20)] {
        let bytes = data(len, len as u64);
        let up = within(
            "upload",
            client::upload(
                &alice,
                &local(work.path(), name, &bytes),
                &format!("home/{name}"),
                UploadOptions::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!((up.size, up.resumed_from, up.instant), (len as u64, 0, false));
        let back = work.path().join(format!("{name}.back"));
        let down = within(
            "download",
            client::download(
                &[alice.peer().clone()],
                &format!("home/{name}"),
                &back,
                DownloadOptions::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(down.hash, up.hash);
        assert_eq!(std::fs::read(&back).unwrap(), bytes, "{name} came back identical");
        let st = client::stat(&alice, &format!("home/{name}")).await.unwrap();
        assert_eq!((st.size, st.hash.as_deref()), (len as u64, Some(up.hash.as_str())));
    }
    let names: Vec<String> =
        client::list(&alice, "home", None).await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["empty", "many", "one"]);
    let txt: Vec<String> =
        client::list(&alice, "home", Some("m*")).await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(txt, ["many"]);
    // Nothing of the uploads is left behind.
    assert_eq!(std::fs::read_dir(s.files.join(".partial")).unwrap().count(), 0);
    // A local file of that name is not replaced unless asked.
    let again = client::download(
        &[alice.peer().clone()],
        "home/one",
        &work.path().join("one.back"),
        DownloadOptions::default(),
    )
    .await;
    assert!(matches!(again, Err(FileError::Local(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_resume_after_links_cut_at_random_points() {
    let s = serve(|_| {}).await;
    let faults = Faults { cut_after: Some((512 << 10)..(6 << 20)), seed: 7, ..Faults::default() };
    let proxy = FaultProxy::start(s.server.local_addr(), faults).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let bytes = data(12 << 20, 3);
    let path = local(work.path(), "big", &bytes);
    let (mut resumed, mut done) = (0, None);
    for _ in 0..60 {
        let c = user_at(&s, proxy.addr(), Some("alice")).await;
        match within("upload", client::upload(&c, &path, "home/big", UploadOptions::default())).await {
            Ok(up) => {
                resumed += u64::from(up.resumed_from > 0);
                done = Some(up);
                break;
            }
            Err(_) => continue, // cut; the next run resumes
        }
    }
    let up = done.expect("the upload finished within 60 attempts");
    assert!(resumed > 0 || up.resumed_from > 0, "some run resumed an earlier one");
    assert_eq!(std::fs::read(s.files.join("private/alice/big")).unwrap(), bytes);

    let back = work.path().join("big.back");
    let (mut resumed, mut ok) = (0u64, false);
    for _ in 0..60 {
        let Ok(c) =
            tokio::time::timeout(PATIENCE, async { user_at(&s, proxy.addr(), Some("alice")).await }).await
        else {
            continue;
        };
        match within(
            "download",
            client::download(&[c.peer().clone()], "home/big", &back, DownloadOptions::default()),
        )
        .await
        {
            Ok(d) => {
                resumed += d.resumed_from;
                ok = true;
                break;
            }
            Err(_) => continue,
        }
    }
    assert!(ok, "the download finished within 60 attempts");
    assert!(resumed > 0, "the last run resumed where a cut one stopped");
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    assert!(proxy.stats().cuts.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_hashes_and_multi_connection_downloads() {
    let s = serve(|_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let bytes = data(9 << 20, 11);
    let admin = user(&s, "admin").await;
    client::upload(&admin, &local(work.path(), "f", &bytes), "public/f", UploadOptions::default())
        .await
        .unwrap();
    let bob = user(&s, "bob").await;
    let part = blake3::hash(&bytes[1000..301_000]).to_hex().to_string();
    assert_eq!(client::hash_range(&bob, "public/f", 1000, 300_000).await.unwrap(), part);
    assert_eq!(
        code(call(&bob, "file.hash", json!({ "path": "public/f", "offset": 9 << 20, "len": 1 })).await),
        ErrorCode::InvalidArgument
    );
    for n in [1usize, 4, 16] {
        let mut peers = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..n {
            let c = user(&s, "bob").await;
            peers.push(c.peer().clone());
            clients.push(c);
        }
        let out = work.path().join(format!("f{n}"));
        let d = within("download", client::download(&peers, "public/f", &out, DownloadOptions::default()))
            .await
            .unwrap();
        assert_eq!(d.connections, n);
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "{n} connections");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_uploads_need_a_proof_of_possession() {
    let s = serve(|_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let bytes = data(1 << 20, 5);
    let alice = user(&s, "alice").await;
    let file = local(work.path(), "f", &bytes);
    client::upload(&alice, &file, "home/f", UploadOptions::default()).await.unwrap();
    let hash = blake3::hash(&bytes).to_hex().to_string();

    // Bob holds the same content: it is not sent again.
    let bob = user(&s, "bob").await;
    let up = client::upload(&bob, &file, "home/copy", UploadOptions::default()).await.unwrap();
    assert!(up.instant, "the server had the content");
    assert_eq!(std::fs::read(s.files.join("private/bob/copy")).unwrap(), bytes);

    // Mallory knows only the hash: the challenge cannot be answered, nothing is made.
    let mallory = user(&s, "mallory").await;
    let put = call(&mallory, "file.put", json!({ "path": "home/stolen", "size": bytes.len(), "hash": hash }))
        .await
        .unwrap();
    let ticket = put["challenge"]["ticket"].as_u64().expect("a challenge");
    let guess = blake3::hash(hash.as_bytes()).to_hex().to_string();
    let r = call(&mallory, "file.put.prove", json!({ "ticket": ticket, "proof": guess })).await;
    assert_eq!(code(r), ErrorCode::AuthFailed);
    assert!(!s.files.join("private/mallory/stolen").exists());
    // A challenge is answered once.
    let r = call(&mallory, "file.put.prove", json!({ "ticket": ticket, "proof": guess })).await;
    assert_eq!(code(r), ErrorCode::NotFound);
    // Opting out sends the bytes.
    let up = client::upload(
        &mallory,
        &file,
        "home/sent",
        UploadOptions { no_instant: true, ..Default::default() },
    )
    .await
    .unwrap();
    assert!(!up.instant);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_every_way_out() {
    let s = serve(|_| {}).await;
    let alice = user(&s, "alice").await;
    let refused = |path: String| {
        let alice = &alice;
        async move { code(call(alice, "file.stat", json!({ "path": path })).await) }
    };
    for bad in [
        "home/../../etc/passwd",
        "/etc/passwd",
        "home/./x",
        "public/a\u{0}b",
        "public/CON",
        "public/lpt1.txt",
        "nowhere/x",
        "",
    ] {
        assert_eq!(refused(bad.to_string()).await, ErrorCode::InvalidArgument, "{bad:?}");
    }
    assert_eq!(
        refused(format!("home/{}", "a".repeat(256))).await,
        ErrorCode::InvalidArgument,
        "overlong component"
    );
    assert_eq!(refused("home/a".repeat(700)).await, ErrorCode::InvalidArgument, "overlong path");
    // A symbolic link that leads out of the area.
    let home = s.files.join("private/alice");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(s.dir.path(), home.join("out")).unwrap();
    assert_eq!(refused("home/out/accounts".into()).await, ErrorCode::Forbidden);
    let r = call(&alice, "file.put", json!({ "path": "home/out/x", "size": 1 })).await;
    assert_eq!(code(r), ErrorCode::Forbidden);
    // One that stays inside is followed.
    std::fs::create_dir(home.join("real")).unwrap();
    std::os::unix::fs::symlink(home.join("real"), home.join("inside")).unwrap();
    call(&alice, "file.stat", json!({ "path": "home/inside" })).await.unwrap();
    // Areas: public is written by admins only, shared folders by their grants.
    assert_eq!(code(call(&alice, "file.mkdir", json!({ "path": "public/x" })).await), ErrorCode::Forbidden);
    call(&alice, "file.mkdir", json!({ "path": "shared/team/x" })).await.unwrap();
    let bob = user(&s, "bob").await;
    call(&bob, "file.list", json!({ "path": "shared/team" })).await.unwrap();
    assert_eq!(
        code(call(&bob, "file.mkdir", json!({ "path": "shared/team/y" })).await),
        ErrorCode::Forbidden
    );
    let carol = user(&s, "carol").await;
    assert_eq!(code(call(&carol, "file.list", json!({ "path": "shared/team" })).await), ErrorCode::Forbidden);
    assert_eq!(code(call(&carol, "file.list", json!({ "path": "shared/other" })).await), ErrorCode::NotFound);
    // Each user's home is their own.
    assert!(client::list(&carol, "home", None).await.unwrap().is_empty());
    // Not logged in: nothing but a clear refusal.
    let stranger = user_at(&s, s.server.local_addr(), None).await;
    assert_eq!(code(call(&stranger, "file.list", json!({ "path": "public" })).await), ErrorCode::NotLoggedIn);
    assert_eq!(code(call(&stranger, "file.list", json!({ "path": "home" })).await), ErrorCode::NotLoggedIn);
    // Malformed requests and areas that cannot be removed.
    assert_eq!(code(call(&alice, "file.list", json!({ "path": 5 })).await), ErrorCode::InvalidArgument);
    assert_eq!(
        code(call(&alice, "file.delete", json!({ "path": "home" })).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(call(&alice, "file.put.prove", json!({ "ticket": 1, "proof": "zz" })).await),
        ErrorCode::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_enforced_before_data_is_accepted() {
    let s = serve(|c| {
        c.quota_bytes = 1 << 20;
        c.quota_files = 3;
    })
    .await;
    let alice = user(&s, "alice").await;
    let work = tempfile::tempdir().unwrap();
    let f = local(work.path(), "f", &data(600 << 10, 1));
    client::upload(&alice, &f, "home/a", UploadOptions::default()).await.unwrap();
    let r =
        client::upload(&alice, &f, "home/b", UploadOptions { no_instant: true, ..Default::default() }).await;
    assert_eq!(file_code(r), ErrorCode::TooLarge, "over the byte quota");
    assert!(!s.files.join("private/alice/b").exists());
    assert_eq!(std::fs::read_dir(s.files.join(".partial")).unwrap().count(), 0, "no data was taken");
    let small = local(work.path(), "s", b"x");
    for name in ["c", "d"] {
        client::upload(&alice, &small, &format!("home/{name}"), UploadOptions::default()).await.unwrap();
    }
    let r = client::upload(&alice, &small, "home/e", UploadOptions::default()).await;
    assert_eq!(file_code(r), ErrorCode::TooLarge, "over the file quota");
    let usage = call(&alice, "file.usage", json!({})).await.unwrap();
    assert_eq!((usage["bytes"].as_u64(), usage["files"].as_u64()), (Some((600 << 10) + 2), Some(3)));
    // Deleting makes room.
    client::delete(&alice, "home/a", false).await.unwrap();
    client::upload(&alice, &small, "home/e", UploadOptions::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_a_file_gets_a_conflict_and_names_are_kept() {
    let s = serve(|_| {}).await;
    let alice = user(&s, "alice").await;
    let bytes = data(2 << 20, 9);
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let put = json!({ "path": "home/f", "size": bytes.len(), "hash": hash, "instant": false });
    // The first writer sends half and holds its stream open.
    let (mut tx, transfer) = first_mib_sent(&alice, put.clone(), &bytes, &s.files.join(".partial")).await;
    assert!(!s.files.join("private/alice/f").exists(), "no half file under its name");
    // A second connection writing the same file is refused while the first writes.
    let other = user(&s, "alice").await;
    let second = call(&other, "file.put", put.clone()).await.unwrap();
    assert_eq!(second["offset"], 1 << 20, "it would resume where the first stands");
    let opts = StreamOptions {
        len: Some(1 << 20),
        offset: 1 << 20,
        ticket: second["ticket"].as_u64(),
        ..Default::default()
    };
    let r = other
        .send_big_stream("file.put.data", std::io::Cursor::new(bytes[1 << 20..].to_vec()), opts)
        .finish()
        .await;
    assert_eq!(code(r), ErrorCode::Conflict);
    tokio::io::AsyncWriteExt::write_all(&mut tx, &bytes[1 << 20..]).await.unwrap();
    drop(tx);
    within("the first finishes", transfer.finish()).await.unwrap();
    assert_eq!(std::fs::read(s.files.join("private/alice/f")).unwrap(), bytes);
    // Names are not replaced unless asked; renames keep the content's hash.
    assert_eq!(code(call(&alice, "file.put", put.clone()).await), ErrorCode::Conflict);
    client::mkdir(&alice, "home/d/e", true).await.unwrap();
    client::rename(&alice, "home/f", "home/d/e/g", false).await.unwrap();
    assert_eq!(client::stat(&alice, "home/d/e/g").await.unwrap().hash.as_deref(), Some(hash.as_str()));
    assert_eq!(
        code(call(&alice, "file.rename", json!({ "from": "home/d", "to": "home/d/e/h" })).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(call(&alice, "file.delete", json!({ "path": "home/d" })).await),
        ErrorCode::Conflict,
        "not empty"
    );
    client::delete(&alice, "home/d", true).await.unwrap();
    assert_eq!(code(call(&alice, "file.stat", json!({ "path": "home/d" })).await), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_partial_uploads_expire() {
    for (ttl, left) in [(Duration::from_secs(3600), 1), (Duration::ZERO, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FilesConfig::new(dir.path());
        config.partial_ttl = ttl;
        let files = Files::open(config).unwrap();
        let mut router = Router::new();
        router.console("login", |peer, t| {
            peer.set_user(Some(zs::Identity::new(t.as_str(), ["user"])));
            "ok"
        });
        router.mount(files.clone());
        let server = zs::Server::bind("127.0.0.1:0", router, ServerConfig::default()).await.unwrap();
        let c =
            within("connect", Client::connect(server.local_addr(), server.client_security())).await.unwrap();
        c.call_console("login", "alice").await.unwrap();
        call(&c, "file.put", json!({ "path": "home/f", "size": 10 })).await.unwrap();
        let partial = dir.path().join(".partial");
        assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 1, "its record is kept");
        files.sweep();
        assert_eq!(std::fs::read_dir(&partial).unwrap().count(), left, "time to live {ttl:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_a_bounded_number_of_transfers() {
    let s = serve(|c| c.max_transfers = 1).await;
    let alice = user(&s, "alice").await;
    let work = tempfile::tempdir().unwrap();
    client::upload(&alice, &local(work.path(), "f", b"hello"), "home/f", UploadOptions::default())
        .await
        .unwrap();
    // An upload whose bytes never come holds the server's one transfer.
    let put = call(&alice, "file.put", json!({ "path": "home/g", "size": 10 })).await.unwrap();
    let (tx, rx) = tokio::io::duplex(1024);
    let opts = StreamOptions { len: Some(10), ticket: put["ticket"].as_u64(), ..Default::default() };
    let held = alice.send_big_stream("file.put.data", rx, opts);
    let other = user(&s, "alice").await;
    let (peers, back) = ([other.peer().clone()], work.path().join("back"));
    let fetch = || client::download(&peers, "home/f", &back, DownloadOptions::default());
    within("the limit is reached", async {
        loop {
            match fetch().await {
                Err(FileError::Call(CallError::Remote { code: ErrorCode::RateLimited, .. })) => break,
                Ok(_) => {
                    std::fs::remove_file(&back).unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    // Once it ends, the next transfer runs.
    drop(tx);
    let _ = held.finish().await;
    within("the limit is free again", async {
        while fetch().await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(std::fs::read(&back).unwrap(), b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_uploads_count_and_resume_under_a_quota_through_a_symlinked_data_directory() {
    // The data directory is reached through a symbolic link: the service's paths as it
    // resolves them differ from those it was configured with.
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("real")).unwrap();
    std::os::unix::fs::symlink(base.path().join("real"), base.path().join("data")).unwrap();
    let root = base.path().join("data/files");
    let s = serve(|c| {
        c.root = root.clone();
        c.quota_bytes = 3 << 20;
    })
    .await;
    let alice = user(&s, "alice").await;
    let work = tempfile::tempdir().unwrap();
    let bytes = data(2 << 20, 21);
    let file = local(work.path(), "f", &bytes);
    let hash = blake3::hash(&bytes).to_hex().to_string();
    // An upload whose link is cut halfway.
    let put = json!({ "path": "home/f", "size": bytes.len(), "hash": hash, "overwrite": false });
    let (tx, transfer) = first_mib_sent(&alice, put, &bytes, &root.join(".partial")).await;
    drop(tx);
    assert!(within("the cut", transfer.finish()).await.is_err(), "the stream ended short");
    // The partial upload holds its whole size of the quota...
    let usage = call(&alice, "file.usage", json!({})).await.unwrap();
    assert_eq!((usage["bytes"].as_u64(), usage["files"].as_u64()), (Some(2 << 20), Some(1)));
    let r = call(&alice, "file.put", json!({ "path": "home/g", "size": 2 << 20 })).await;
    assert_eq!(code(r), ErrorCode::TooLarge, "the partial upload counts");
    // ...and is resumed within it (once the server has seen the cut and let go of it).
    let up = within("resume", async {
        loop {
            match client::upload(&alice, &file, "home/f", UploadOptions::default()).await {
                Err(FileError::Call(CallError::Remote { code: ErrorCode::Conflict, .. })) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                done => break done.unwrap(),
            }
        }
    })
    .await;
    assert_eq!(up.resumed_from, 1 << 20);
    assert_eq!(std::fs::read(root.join("private/alice/f")).unwrap(), bytes);
    let usage = call(&alice, "file.usage", json!({})).await.unwrap();
    assert_eq!((usage["bytes"].as_u64(), usage["files"].as_u64()), (Some(2 << 20), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_into_home_are_held_to_the_quota() {
    let s = serve(|c| {
        c.quota_bytes = 1 << 20;
        c.quota_files = 3;
    })
    .await;
    let alice = user(&s, "alice").await;
    let work = tempfile::tempdir().unwrap();
    let up = |local: PathBuf, remote: &'static str| {
        let alice = &alice;
        async move { client::upload(alice, &local, remote, UploadOptions::default()).await.unwrap() }
    };
    up(local(work.path(), "a", &data(600 << 10, 1)), "home/a").await;
    // A shared folder is not the user's: a file there moves home only if it fits.
    up(local(work.path(), "big", &data(600 << 10, 2)), "shared/team/big").await;
    let r = client::rename(&alice, "shared/team/big", "home/big", false).await;
    assert_eq!(file_code(r), ErrorCode::TooLarge, "over the byte quota");
    assert!(s.files.join("shared/team/big").exists());
    assert!(!s.files.join("private/alice/big").exists());
    // A folder counts every file in it.
    let small = local(work.path(), "s", b"x");
    client::mkdir(&alice, "shared/team/d", false).await.unwrap();
    for name in ["shared/team/d/x", "shared/team/d/y", "shared/team/d/z"] {
        up(small.clone(), name).await;
    }
    let r = client::rename(&alice, "shared/team/d", "home/d", false).await;
    assert_eq!(file_code(r), ErrorCode::TooLarge, "over the file quota");
    assert!(!s.files.join("private/alice/d").exists());
    client::delete(&alice, "shared/team/d/z", false).await.unwrap();
    client::rename(&alice, "shared/team/d", "home/d", false).await.unwrap();
    let usage = call(&alice, "file.usage", json!({})).await.unwrap();
    assert_eq!((usage["bytes"].as_u64(), usage["files"].as_u64()), (Some((600 << 10) + 2), Some(3)));
    // Moves inside home change nothing and are not refused.
    client::rename(&alice, "home/d", "home/e", false).await.unwrap();
}
