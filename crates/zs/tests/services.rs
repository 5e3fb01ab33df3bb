//! The seams services build on, over real sockets: guards and per-command access checks,
//! the identity a peer carries, the server's directory of peers by user, tickets that tie a
//! transfer to the call that prepared it, and services mounted on a router.

mod common;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{connect, serve, wait_until, within};
use zs::{CallError, ErrorCode, HandlerError, Identity, Peer, Router, Service, StreamOptions};

fn code<T: std::fmt::Debug>(r: Result<T, CallError>) -> ErrorCode {
    match r {
        Err(CallError::Remote { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// `login NAME[:ROLE,ROLE]` sets the caller's identity; `logout` clears it.
fn identity_commands(r: &mut Router) {
    r.console("login", |peer, t| {
        let (user, roles) = t.as_str().split_once(':').unwrap_or((t.as_str(), ""));
        let roles: Vec<&str> = roles.split(',').filter(|r| !r.is_empty()).collect();
        peer.set_user(Some(Identity::new(user, roles)));
        "ok"
    });
    r.console("logout", |peer, _| {
        peer.set_user(None);
        "ok"
    });
    r.console("whoami", |peer, _| peer.user().map(|w| w.user.clone()).unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_refuses_before_the_handler_runs_and_passes_the_rest() {
    let ran = Arc::new(AtomicU64::new(0));
    let mut r = Router::new();
    let counted = ran.clone();
    r.console("limited.work", move |_, t| {
        counted.fetch_add(1, Ordering::SeqCst);
        t
    });
    let counted = ran.clone();
    r.direct_console("limited.note", move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let counted = ran.clone();
    r.complete_buffer("limited.upload", move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok::<_, HandlerError>(())
    });
    r.console("echo", |_, t| t);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let names = seen.clone();
    r.guard(move |_peer, command| {
        names.lock().unwrap().push(command.to_string());
        match command.starts_with("limited.") {
            true => Err(HandlerError::with_code(ErrorCode::RateLimited, "slow down")),
            false => Ok(()),
        }
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();

    match within("a refused call", client.call_console("limited.work", "x")).await {
        Err(CallError::Remote { code, message }) => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(message.contains("slow down"), "{message}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    client.send_console("limited.note", "x").await.unwrap();
    let refused = within(
        "a refused buffer",
        client.send_complete_buffer("limited.upload", Bytes::from(vec![7; 1000])).into_future(),
    )
    .await;
    assert!(refused.is_err(), "the sender learns the buffer was refused");
    // Frames are handled in order: once this answers, the direct command was seen.
    assert_eq!(within("echo", client.call_console("echo", "still here")).await.unwrap(), "still here");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "no refused handler ran");
    let seen = seen.lock().unwrap().clone();
    for name in ["limited.work", "limited.note", "limited.upload", "echo"] {
        assert!(seen.iter().any(|s| s == name), "the guard saw {name}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_can_require_a_login_or_a_role() {
    let mut r = Router::new();
    identity_commands(&mut r);
    r.console("mine", |peer, _| format!("for {}", peer.user().unwrap().user)).requires_login();
    r.console("admin.only", |_, _| "done").requires_role("admin");
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();

    assert_eq!(code(within("mine", client.call_console("mine", "")).await), ErrorCode::NotLoggedIn);
    assert_eq!(code(within("admin", client.call_console("admin.only", "")).await), ErrorCode::NotLoggedIn);
    within("login", client.call_console("login", "alice:user")).await.unwrap();
    assert_eq!(within("mine", client.call_console("mine", "")).await.unwrap(), "for alice");
    assert_eq!(code(within("admin", client.call_console("admin.only", "")).await), ErrorCode::Forbidden);
    within("login", client.call_console("login", "root:user,admin")).await.unwrap();
    assert_eq!(within("admin", client.call_console("admin.only", "")).await.unwrap(), "done");
    within("logout", client.call_console("logout", "")).await.unwrap();
    assert_eq!(code(within("mine", client.call_console("mine", "")).await), ErrorCode::NotLoggedIn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_finds_peers_by_id_and_by_user() {
    let mut r = Router::new();
    identity_commands(&mut r);
    // A handler reaches the directory from its peer: how many connections `alice` holds.
    r.console("count", |peer, user| peer.directory().map_or(0, |d| d.user(user.as_str()).len()).to_string());
    let server = serve(r).await;
    let a1 = connect(&server).await.unwrap();
    let a2 = connect(&server).await.unwrap();
    let b = connect(&server).await.unwrap();
    for (c, who) in [(&a1, "alice"), (&a2, "alice"), (&b, "bob")] {
        within("login", c.call_console("login", who)).await.unwrap();
    }
    let dir = server.directory();
    assert_eq!(dir.len(), 3);
    assert_eq!(dir.user("alice").len(), 2, "a user may hold several connections");
    assert_eq!(dir.user("bob").len(), 1);
    assert!(dir.user("carol").is_empty());
    let mut users = dir.users();
    users.sort();
    assert_eq!(users, vec![("alice".to_string(), 2), ("bob".to_string(), 1)]);
    assert_eq!(within("count", b.call_console("count", "alice")).await.unwrap(), "2");
    for p in dir.user("alice") {
        assert_eq!(dir.peer(p.id()).map(|q| q.id()), Some(p.id()), "found by id too");
    }

    // Logging in as someone else moves the connection; closing one removes it.
    within("relogin", a2.call_console("login", "bob")).await.unwrap();
    assert_eq!(dir.user("alice").len(), 1);
    assert_eq!(dir.user("bob").len(), 2);
    a1.close();
    wait_until("alice's last connection leaves the directory", || dir.user("alice").is_empty()).await;
    assert_eq!(dir.users(), vec![("bob".to_string(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_tied_to_the_call_that_prepared_it() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut r = Router::new();
    // `prepare` keeps where the upload goes under a ticket and tells the client the ticket.
    r.console("prepare", |peer, dest| peer.issue_ticket(dest.to_string()).to_string());
    let log = got.clone();
    r.big_stream("upload", move |_peer, mut s: zs::IncomingStream| {
        let log = log.clone();
        async move {
            let dest: Option<String> = s.take_ticket();
            let again: Option<String> = s.take_ticket();
            let mut n = 0u64;
            while let Some(chunk) = s.next_chunk().await {
                n += chunk?.len() as u64;
            }
            log.lock().unwrap().push(format!("stream {dest:?} {again:?} {n}"));
            Ok::<_, CallError>(())
        }
    });
    let log = got.clone();
    r.complete_buffer_ticketed("put", move |peer: &Peer, data, ticket| {
        let dest = ticket.and_then(|t| peer.take_ticket::<String>(t));
        log.lock().unwrap().push(format!("buffer {dest:?} {}", data.len()));
        Ok::<_, HandlerError>(())
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    let other = connect(&server).await.unwrap();

    let ticket: u64 =
        within("prepare", client.call_console("prepare", "/a")).await.unwrap().as_str().parse().unwrap();
    let data = vec![5u8; 3 << 20];
    let opts = StreamOptions { ticket: Some(ticket), ..StreamOptions::with_len(data.len() as u64) };
    within("upload", client.send_big_stream("upload", std::io::Cursor::new(data), opts).into_future())
        .await
        .unwrap();
    // Taken once: the same ticket again finds nothing, and another connection's use of
    // a ticket it did not issue finds nothing.
    let t2: u64 =
        within("prepare", client.call_console("prepare", "/b")).await.unwrap().as_str().parse().unwrap();
    let reuse = StreamOptions { ticket: Some(ticket), ..StreamOptions::with_len(10) };
    within("reuse", client.send_big_stream("upload", std::io::Cursor::new(vec![1; 10]), reuse).into_future())
        .await
        .unwrap();
    let forged = StreamOptions { ticket: Some(t2), ..StreamOptions::with_len(10) };
    within(
        "forged",
        other.send_big_stream("upload", std::io::Cursor::new(vec![1; 10]), forged).into_future(),
    )
    .await
    .unwrap();
    let buffer = Bytes::from(vec![9u8; 100_000]);
    within("buffer", client.send_complete_buffer_ticketed("put", buffer, Some(t2)).into_future())
        .await
        .unwrap();

    let got = got.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            format!("stream Some(\"/a\") None {}", 3 << 20),
            "stream None None 10".to_string(),
            "stream None None 10".to_string(),
            "buffer Some(\"/b\") 100000".to_string(),
        ]
    );
}

/// A service of two commands and a guard, as services mount.
struct Quota {
    calls: AtomicU64,
    limit: u64,
}

impl Service for Quota {
    fn name(&self) -> &str {
        "quota"
    }

    fn mount(self: Arc<Self>, router: &mut Router) {
        let me = self.clone();
        router.console("quota.used", move |_, _| me.calls.load(Ordering::SeqCst).to_string());
        router.guard(move |_, command| {
            if command == "quota.used" {
                return Ok(());
            }
            match self.calls.fetch_add(1, Ordering::SeqCst) < self.limit {
                true => Ok(()),
                false => Err(HandlerError::with_code(ErrorCode::RateLimited, "quota spent")),
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_service_brings_its_commands_and_guards() {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.mount(Quota { calls: AtomicU64::new(0), limit: 3 });
    assert_eq!(r.services(), ["quota".to_string()]);
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            within("echo", client.call_console("echo", i.to_string())).await.unwrap(),
            i.to_string().as_str()
        );
    }
    assert_eq!(code(within("over quota", client.call_console("echo", "4")).await), ErrorCode::RateLimited);
    assert_eq!(within("quota.used", client.call_console("quota.used", "")).await.unwrap(), "4");
}

#[test]
#[should_panic(expected = "mounted twice")]
fn a_service_cannot_be_mounted_twice() {
    let mut r = Router::new();
    r.mount(Quota { calls: AtomicU64::new(0), limit: 1 });
    r.mount(Quota { calls: AtomicU64::new(0), limit: 1 });
}

#[tokio::test]
async fn metered_commands_count_calls_errors_and_latency_of_every_kind_of_handler() {
    let mut router = Router::new();
    router.console("fast", |_, t: zs::Text| t.to_owned());
    router.meter_commands();
    // Registered after metering was asked for: metered too.
    router.console("fails", |_, _t: zs::Text| Err::<String, _>(zs::HandlerError::new("no")));
    router.console_async("later", |_, t: zs::Text| async move { t.to_owned() });
    router.console_delayed("delayed", |_, t: zs::Text, r| r.reply(t.to_owned()));
    router.console("members", |_, t: zs::Text| t.to_owned()).requires_login();
    let server = zs::Server::bind("127.0.0.1:0", router, zs::ServerConfig::default()).await.unwrap();
    let client = zs::Client::connect(server.local_addr(), server.client_security()).await.unwrap();
    for _ in 0..3 {
        client.call_console("fast", "x").await.unwrap();
        client.call_console("later", "x").await.unwrap();
        client.call_console("delayed", "x").await.unwrap();
        assert!(client.call_console("fails", "x").await.is_err());
        assert!(client.call_console("members", "x").await.is_err(), "refused: not logged in");
    }
    let mut figures = server.command_figures();
    let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
    // The server's own `stats` command is metered too.
    assert_eq!(names, ["delayed", "fails", "fast", "later", "members", "stats"]);
    assert_eq!(figures.pop().unwrap().calls, 0);
    for f in &figures {
        assert_eq!(f.calls, 3, "{f:?}");
        let failing = matches!(f.name.as_str(), "fails" | "members");
        assert_eq!(f.errors, if failing { 3 } else { 0 }, "{f:?}");
        assert_eq!(*f.buckets.last().unwrap(), 3, "{f:?}");
        assert_eq!(f.buckets.len(), zs::rpc::LATENCY_BUCKETS_US.len() + 1);
    }
    // An unmetered router has none.
    let plain = zs::Server::bind("127.0.0.1:0", Router::new(), zs::ServerConfig::default()).await.unwrap();
    assert!(plain.command_figures().is_empty());
}
