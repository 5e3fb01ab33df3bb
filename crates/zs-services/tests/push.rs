//! The push service over real loopback sockets: a user's every connection, the offline
//! inbox (order, acknowledgement, redelivery, expiry, cap, duplicates), topics with
//! permissions, and presence events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use zs::wire::ErrorCode;
use zs::{CallError, Client, ClientConfig, Identity, Router, ServerConfig, ServerHandle};
use zs_services::accounts::{Accounts, AccountsConfig, HashCost};
use zs_services::push::client::{self, SendOptions};
use zs_services::push::{Push, PushConfig, TopicPolicy, WhenFull, INBOX_WAITING, PRESENCE_EVENT};

const PATIENCE: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

struct Setup {
    server: ServerHandle,
    push: Push,
    _dir: tempfile::TempDir,
}

async fn serve(change: impl FnOnce(&mut PushConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut ac = AccountsConfig::new(dir.path().join("accounts"));
    ac.hash = HashCost::insecure_fast();
    ac.allow_register = true;
    ac.admin_password = Some("admin password".into());
    let (accounts, _) = Accounts::open(ac).await.unwrap();
    let mut pc = PushConfig::new(dir.path().join("push"));
    change(&mut pc);
    let push = Push::open(pc).unwrap();
    let mut router = Router::new();
    router.mount(accounts);
    router.mount(push.clone());
    let server = zs::Server::bind("127.0.0.1:0", router, ServerConfig::default()).await.unwrap();
    Setup { server, push, _dir: dir }
}

/// What a client was sent: (command, text).
type Inbox = mpsc::UnboundedReceiver<(String, String)>;

/// A client logged in as `user` (made if new) whose router records every push.
async fn user(s: &Setup, name: &str) -> (Client, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    for command in ["note", "chat", PRESENCE_EVENT, INBOX_WAITING] {
        let tx = tx.clone();
        r.direct_console(command, move |_peer, text| {
            let _ = tx.send((command.to_owned(), text.as_str().to_owned()));
        });
    }
    let config = ClientConfig::secured(s.server.client_security());
    let c = within("connect", Client::connect_with(s.server.local_addr(), r, config)).await.unwrap();
    let (password, register) = match name {
        "admin" => ("admin password", false),
        _ => ("a long password", true),
    };
    let req = json!({ "user": name, "password": password });
    if call(&c, "account.login", req.clone()).await.is_err() {
        assert!(register, "admin logs in");
        call(&c, "account.register", req).await.unwrap();
    }
    (c, rx)
}

async fn call(c: &Client, command: &str, request: Value) -> Result<Value, CallError> {
    let reply = within(command, c.call_console(command, request.to_string())).await?;
    Ok(serde_json::from_str(reply.as_str()).unwrap())
}

fn code(e: CallError) -> ErrorCode {
    match e {
        CallError::Remote { code, .. } => code,
        other => panic!("not a remote error: {other}"),
    }
}

fn push_code(e: client::PushError) -> ErrorCode {
    match e {
        client::PushError::Call(c) => code(c),
        other => panic!("not a call error: {other}"),
    }
}

async fn next(rx: &mut Inbox) -> (String, String) {
    within("a push", rx.recv()).await.expect("the client is alive")
}

/// Makes the account `name`, logged out (so it is offline once this returns).
async fn make_account(s: &Setup, name: &str) {
    let (c, _) = user(s, name).await;
    call(&c, "account.logout", json!({})).await.unwrap();
    c.close();
}

#[tokio::test]
async fn a_user_with_three_connections_gets_three_copies() {
    let s = serve(|_| {}).await;
    let (admin, _) = user(&s, "admin").await;
    let mut bobs = Vec::new();
    for _ in 0..3 {
        bobs.push(user(&s, "bob").await);
    }
    let report = client::send(admin.peer(), "bob", "note", "hello", SendOptions::default()).await.unwrap();
    assert_eq!((report.live, report.stored), (3, None));
    for (_, rx) in &mut bobs {
        assert_eq!(next(rx).await, ("note".to_owned(), "hello".to_owned()));
    }
    let online = client::online(admin.peer(), &["bob", "nobody"]).await.unwrap();
    assert_eq!(online, vec![("bob".to_owned(), 3), ("nobody".to_owned(), 0)]);
    // From the application, too.
    let report = s.push.send("bob", zs_services::push::Message::new("chat", "from the app")).await;
    assert_eq!(report.live, 3);
    for (_, rx) in &mut bobs {
        assert_eq!(next(rx).await.1, "from the app");
    }
}

#[tokio::test]
async fn only_privileged_accounts_send_to_users() {
    let s = serve(|_| {}).await;
    let (bob, _) = user(&s, "bob").await;
    let refused = client::send(bob.peer(), "admin", "note", "hi", SendOptions::default()).await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::Forbidden);
    let config = ClientConfig::secured(s.server.client_security());
    let stranger = Client::connect_with(s.server.local_addr(), Router::new(), config).await.unwrap();
    let refused =
        client::send(stranger.peer(), "bob", "note", "hi", SendOptions::default()).await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::NotLoggedIn);
    let (admin, _) = user(&s, "admin").await;
    let big = "x".repeat(70_000);
    let refused =
        client::send(admin.peer(), "carol", "note", &big, SendOptions::default()).await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::TooLarge);
    let bad =
        call(&admin, "push.send", json!({ "user": "bob", "command": "note", "text": "x", "ttl": -1 })).await;
    assert_eq!(code(bad.unwrap_err()), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn an_offline_user_gets_its_messages_in_order_after_login() {
    let s = serve(|_| {}).await;
    make_account(&s, "carol").await;
    let (admin, _) = user(&s, "admin").await;
    for i in 0..5 {
        let report = client::send(admin.peer(), "carol", "note", &format!("m{i}"), SendOptions::default())
            .await
            .unwrap();
        assert_eq!((report.live, report.stored), (0, Some(i + 1)), "stored on disk, in order");
    }
    let never = SendOptions { store: false, ..SendOptions::default() };
    let report = client::send(admin.peer(), "carol", "note", "live only", never).await.unwrap();
    assert_eq!((report.live, report.stored), (0, None));
    let (carol, mut rx) = user(&s, "carol").await;
    let (command, text) = next(&mut rx).await;
    assert_eq!(command, INBOX_WAITING);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["count"], 5);
    let mut seen = Vec::new();
    let handled = client::drain(carol.peer(), |m| {
        seen.push((m.command.clone(), m.text.clone(), m.from.clone()));
        async { true }
    })
    .await
    .unwrap();
    assert_eq!(handled, 5);
    let texts: Vec<&str> = seen.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(seen.iter().all(|(c, _, f)| c == "note" && f.as_deref() == Some("admin")));
    assert_eq!(client::list(carol.peer(), 0, 100).await.unwrap().0, vec![], "acknowledged: gone");
    assert_eq!(s.push.inbox().counters().acked.load(std::sync::atomic::Ordering::Relaxed), 5);
}

#[tokio::test]
async fn unacknowledged_messages_come_again_after_a_reconnect() {
    let s = serve(|_| {}).await;
    make_account(&s, "dave").await;
    let (admin, _) = user(&s, "admin").await;
    for i in 0..3 {
        client::send(admin.peer(), "dave", "note", &format!("m{i}"), SendOptions::default()).await.unwrap();
    }
    let (dave, _) = user(&s, "dave").await;
    let (first, more) = client::list(dave.peer(), 0, 100).await.unwrap();
    assert_eq!((first.len(), more), (3, false));
    dave.close();
    let (dave, _) = user(&s, "dave").await;
    let (again, _) = client::list(dave.peer(), 0, 100).await.unwrap();
    assert_eq!(again, first, "nothing acknowledged, nothing lost");
    // A handler that stops at the second message leaves it and the rest.
    let left = client::drain(dave.peer(), |m| async move { m.text == "m0" }).await.unwrap();
    assert_eq!(left, 1);
    let (rest, _) = client::list(dave.peer(), 0, 100).await.unwrap();
    assert_eq!(rest.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
    // Pages: one at a time.
    let (page, more) = client::list(dave.peer(), 0, 1).await.unwrap();
    assert_eq!((page.len(), more), (1, true));
    let (page2, more) = client::list(dave.peer(), page[0].seq, 1).await.unwrap();
    assert_eq!((page2[0].text.as_str(), more), ("m2", false));
}

#[tokio::test]
async fn expired_messages_are_never_delivered() {
    let s = serve(|_| {}).await;
    let (admin, _) = user(&s, "admin").await;
    let short = SendOptions { ttl: Some(Duration::from_millis(1)), ..SendOptions::default() };
    client::send(admin.peer(), "erin", "note", "short-lived", short).await.unwrap();
    client::send(admin.peer(), "erin", "note", "lasting", SendOptions::default()).await.unwrap();
    // The first expires a millisecond after it was stored.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (erin, _) = user(&s, "erin").await;
    let (list, _) = client::list(erin.peer(), 0, 100).await.unwrap();
    assert_eq!(list.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["lasting"]);
}

#[tokio::test]
async fn a_full_inbox_drops_the_oldest_or_refuses_the_newest() {
    let s = serve(|c| c.inbox_cap = 3).await;
    let (admin, _) = user(&s, "admin").await;
    for i in 0..5 {
        client::send(admin.peer(), "fred", "note", &format!("m{i}"), SendOptions::default()).await.unwrap();
    }
    let (fred, _) = user(&s, "fred").await;
    let (list, _) = client::list(fred.peer(), 0, 100).await.unwrap();
    assert_eq!(list.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m2", "m3", "m4"]);
    let stats = call(&admin, "push.stats", json!({})).await.unwrap();
    assert_eq!(stats["dropped_oldest"], 2);

    let s = serve(|c| {
        c.inbox_cap = 2;
        c.when_full = WhenFull::RefuseNewest;
    })
    .await;
    let (admin, _) = user(&s, "admin").await;
    for i in 0..2 {
        client::send(admin.peer(), "gina", "note", &format!("m{i}"), SendOptions::default()).await.unwrap();
    }
    let refused = client::send(admin.peer(), "gina", "note", "m2", SendOptions::default()).await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::RateLimited);
    assert_eq!(call(&admin, "push.stats", json!({})).await.unwrap()["refused"], 1);
}

#[tokio::test]
async fn a_message_id_is_stored_once() {
    let s = serve(|_| {}).await;
    let (admin, _) = user(&s, "admin").await;
    let opts = SendOptions { id: Some("order-17".into()), ..SendOptions::default() };
    let first = client::send(admin.peer(), "hank", "note", "once", opts.clone()).await.unwrap();
    let again = client::send(admin.peer(), "hank", "note", "once", opts).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.stored, again.stored);
    let (hank, _) = user(&s, "hank").await;
    assert_eq!(client::list(hank.peer(), 0, 100).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn a_retry_after_a_failed_store_is_stored() {
    // Ivan's inbox is full (cap 1) with a message this server cannot read, as another
    // version might have written it: making room for a new message fails on it.
    let s = serve(|c| {
        c.inbox_cap = 1;
        std::fs::create_dir_all(&c.dir).unwrap();
        let db = redb::Database::create(c.dir.join("inbox.redb")).unwrap();
        let messages: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("messages");
        let txn = db.begin_write().unwrap();
        txn.open_table(messages).unwrap().insert(("ivan", 0), &b"not a message"[..]).unwrap();
        txn.commit().unwrap();
    })
    .await;
    let (admin, _) = user(&s, "admin").await;
    let opts = SendOptions { id: Some("order-18".into()), ..SendOptions::default() };
    let failed = client::send(admin.peer(), "ivan", "note", "kept", opts.clone()).await.unwrap_err();
    assert_eq!(push_code(failed), ErrorCode::Application);
    // With room, the same id is stored: the failed store left nothing that makes it a
    // duplicate.
    s.push.set_inbox_cap(10);
    let again = client::send(admin.peer(), "ivan", "note", "kept", opts).await.unwrap();
    assert!(!again.duplicate, "{again:?}");
    let (ivan, _) = user(&s, "ivan").await;
    let (list, _) = client::list(ivan.peer(), 0, 100).await.unwrap();
    assert_eq!(
        list.iter().map(|m| (m.id.as_str(), m.text.as_str())).collect::<Vec<_>>(),
        [("order-18", "kept")]
    );
}

/// Topics under `secret.` are for admins.
struct NoSecrets;

impl TopicPolicy for NoSecrets {
    fn can_subscribe(&self, who: &Identity, topic: &str) -> bool {
        !topic.starts_with("secret.") || who.has_role("admin")
    }
    fn can_publish(&self, who: &Identity, topic: &str) -> bool {
        self.can_subscribe(who, topic)
    }
}

#[tokio::test]
async fn topics_reach_their_subscribers_and_refuse_without_permission() {
    let s = serve(|c| c.topic_policy = Arc::new(NoSecrets)).await;
    let (admin, _) = user(&s, "admin").await;
    let (bob, mut bob_rx) = user(&s, "bob").await;
    let (carol, mut carol_rx) = user(&s, "carol").await;
    assert_eq!(client::subscribe(bob.peer(), "room.1", false).await.unwrap(), 1);
    assert_eq!(client::subscribe(carol.peer(), "room.1", false).await.unwrap(), 2);
    assert_eq!(client::publish(admin.peer(), "room.1", "chat", "hi all").await.unwrap(), 2);
    assert_eq!(next(&mut bob_rx).await, ("chat".to_owned(), "hi all".to_owned()));
    assert_eq!(next(&mut carol_rx).await, ("chat".to_owned(), "hi all".to_owned()));
    let refused = client::subscribe(bob.peer(), "secret.plans", false).await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::Forbidden);
    let refused = client::publish(bob.peer(), "secret.plans", "chat", "x").await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::Forbidden);
    let bad = client::subscribe(bob.peer(), "no spaces, please", false).await.unwrap_err();
    assert_eq!(push_code(bad), ErrorCode::InvalidArgument);
    assert!(client::unsubscribe(bob.peer(), "room.1").await.unwrap());
    assert_eq!(client::publish(carol.peer(), "room.1", "chat", "just us").await.unwrap(), 1);
    assert_eq!(next(&mut carol_rx).await.1, "just us");
    // A closed connection leaves its topics.
    carol.close();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client::presence(admin.peer(), "room.1").await.unwrap().connections > 0 {
        assert!(tokio::time::Instant::now() < deadline, "carol left the topic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_connection_holds_a_bounded_number_of_topics() {
    let s = serve(|c| c.limits.topics_per_connection = 2).await;
    let (bob, _) = user(&s, "bob").await;
    client::subscribe(bob.peer(), "a", false).await.unwrap();
    client::subscribe(bob.peer(), "b", false).await.unwrap();
    client::subscribe(bob.peer(), "a", false).await.unwrap();
    let refused = client::subscribe(bob.peer(), "c", false).await.unwrap_err();
    assert_eq!(push_code(refused), ErrorCode::RateLimited);
}

fn event(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The next presence event `rx` receives.
async fn presence_event(rx: &mut Inbox) -> Value {
    loop {
        let (command, text) = next(rx).await;
        if command == PRESENCE_EVENT {
            return event(&text);
        }
    }
}

#[tokio::test]
async fn presence_tells_who_joins_and_leaves_gathered_and_counts_only_when_large() {
    let s = serve(|c| {
        c.limits.presence_interval = Duration::from_millis(50);
        c.limits.presence_list_max = 2;
    })
    .await;
    let (alice, mut alice_rx) = user(&s, "alice").await;
    client::subscribe(alice.peer(), "room", true).await.unwrap();
    assert_eq!(presence_event(&mut alice_rx).await["joined"], json!(["alice"]));
    let (bob, _) = user(&s, "bob").await;
    client::subscribe(bob.peer(), "room", false).await.unwrap();
    // A second connection of bob's is no new member.
    let (bob2, _) = user(&s, "bob").await;
    client::subscribe(bob2.peer(), "room", false).await.unwrap();
    let e = presence_event(&mut alice_rx).await;
    assert_eq!((e["joined"].clone(), e["count"].clone()), (json!(["bob"]), json!(2)));
    let p = client::presence(alice.peer(), "room").await.unwrap();
    assert_eq!((p.connections, p.count, p.users), (3, 2, Some(vec!["alice".to_owned(), "bob".to_owned()])));
    bob.close();
    bob2.close();
    let e = presence_event(&mut alice_rx).await;
    assert_eq!((e["left"].clone(), e["count"].clone()), (json!(["bob"]), json!(1)));
    // Past the list limit: counts only.
    let mut others = Vec::new();
    for name in ["carl", "dora"] {
        let (c, _) = user(&s, name).await;
        client::subscribe(c.peer(), "room", false).await.unwrap();
        others.push(c);
    }
    let p = client::presence(alice.peer(), "room").await.unwrap();
    assert_eq!((p.count, p.users), (3, None));
    let e = loop {
        let e = presence_event(&mut alice_rx).await;
        if e["count"] == 3 {
            break e;
        }
    };
    assert!(e.get("joined").is_none(), "counts only: {e}");
}

#[tokio::test]
async fn a_reconnect_storm_is_gathered_into_few_presence_events() {
    let s = serve(|c| c.limits.presence_interval = Duration::from_millis(300)).await;
    let (alice, mut alice_rx) = user(&s, "alice").await;
    client::subscribe(alice.peer(), "room", true).await.unwrap();
    presence_event(&mut alice_rx).await;
    // 20 connections come and go as fast as they can.
    for _ in 0..20 {
        let (c, _) = user(&s, "bob").await;
        client::subscribe(c.peer(), "room", false).await.unwrap();
        c.close();
    }
    // A last, distinct change: every event before it has arrived once its own has.
    let (zed, _) = user(&s, "zed").await;
    client::subscribe(zed.peer(), "room", false).await.unwrap();
    let mut events = 0;
    loop {
        let e = presence_event(&mut alice_rx).await;
        events += 1;
        if e["joined"].as_array().is_some_and(|j| j.contains(&json!("zed"))) {
            break;
        }
    }
    assert!(events < 41, "{events} events for 41 changes");
    let p = client::presence(alice.peer(), "room").await.unwrap();
    assert_eq!(p.users, Some(vec!["alice".to_owned(), "zed".to_owned()]));
}

#[tokio::test]
async fn oversized_requests_get_clear_errors() {
    let s = serve(|_| {}).await;
    let (bob, _) = user(&s, "bob").await;
    let too_many: Vec<u64> = (0..10_001).collect();
    let e = call(&bob, "inbox.ack", json!({ "seqs": too_many })).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidArgument);
    let names: Vec<String> = (0..1_001).map(|i| format!("u{i}")).collect();
    let e = call(&bob, "push.online", json!({ "users": names })).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidArgument);
    let e = call(&bob, "inbox.list", json!({ "after": "not a number" })).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidArgument);
    let long = "t".repeat(129);
    let e = call(&bob, "push.subscribe", json!({ "topic": long })).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidArgument);
    let e =
        call(&bob, "push.publish", json!({ "topic": "room", "command": "", "text": "x" })).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::InvalidArgument);
}
