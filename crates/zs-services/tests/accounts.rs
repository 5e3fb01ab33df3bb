//! The accounts service over real loopback sockets: registration, logins of every kind,
//! lockouts, session policies, an authenticator that answers late, tokens, a resumed
//! session, guards, administration and bad input.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use zs::wire::{ErrorCode, GoAwayCode};
use zs::{CallError, Client, ClientConfig, Identity, Router, ServerConfig, ServerHandle};
use zs_services::accounts::{
    Accounts, AccountsConfig, Credentials, HashCost, Lockout, ServiceToken, SessionPolicy, Verdict,
};

const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
}

struct Setup {
    server: ServerHandle,
    _dir: tempfile::TempDir,
    admin_password: String,
}

fn config(dir: &std::path::Path) -> AccountsConfig {
    let mut c = AccountsConfig::new(dir);
    c.hash = HashCost::insecure_fast();
    c.allow_register = true;
    c
}

/// A server with the accounts service and two commands of its own: `secret` (login) and
/// `admin_only` (role admin).
async fn serve(change: impl FnOnce(&mut AccountsConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    change(&mut c);
    let (accounts, password) = Accounts::open(c).await.unwrap();
    let mut router = Router::new();
    router.console("echo", |_, t| t);
    router.console("secret", |p, _| format!("hello {}", p.user().unwrap().user)).requires_login();
    router.console("admin_only", |_, _| "yes").requires_role("admin");
    router.mount(accounts);
    let server = zs::Server::bind("127.0.0.1:0", router, ServerConfig::default()).await.unwrap();
    Setup { server, _dir: dir, admin_password: password.expect("generated on first start") }
}

async fn client(s: &Setup) -> Client {
    within("connect", Client::connect(s.server.local_addr(), s.server.client_security())).await.unwrap()
}

async fn call(c: &Client, command: &str, request: Value) -> Result<Value, CallError> {
    let reply = within(command, c.call_console(command, request.to_string())).await?;
    Ok(serde_json::from_str(reply.as_str()).unwrap_or(Value::Null))
}

fn code(r: Result<Value, CallError>) -> ErrorCode {
    match r {
        Err(CallError::Remote { code, .. }) => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

async fn login(c: &Client, user: &str, password: &str) -> Result<Value, CallError> {
    call(c, "account.login", json!({ "user": user, "password": password })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_logout_and_change_password() {
    let s = serve(|_| {}).await;
    let c = client(&s).await;
    assert_eq!(code(call(&c, "secret", json!({})).await), ErrorCode::NotLoggedIn, "a call before login");
    let me =
        call(&c, "account.register", json!({ "user": "alice", "password": "correct horse" })).await.unwrap();
    assert_eq!(me["user"], "alice");
    assert_eq!(c.call_console("secret", "").await.unwrap(), "hello alice", "registered means logged in");
    assert_eq!(code(call(&c, "admin_only", json!({})).await), ErrorCode::Forbidden);
    call(&c, "account.logout", json!({})).await.unwrap();
    assert_eq!(code(call(&c, "account.whoami", json!({})).await), ErrorCode::NotLoggedIn);
    // Wrong password and no such account read the same.
    let wrong = login(&c, "alice", "battery staple").await.unwrap_err();
    let missing = login(&c, "nobody", "battery staple").await.unwrap_err();
    assert_eq!(wrong.to_string(), missing.to_string());
    assert_eq!(code(Err(wrong)), ErrorCode::AuthFailed);
    login(&c, "alice", "correct horse").await.unwrap();
    let passwd = |old: &str, new: &str| json!({ "old": old, "new": new });
    assert_eq!(code(call(&c, "account.passwd", passwd("nope", "new password")).await), ErrorCode::AuthFailed);
    assert_eq!(
        code(call(&c, "account.passwd", passwd("correct horse", "short")).await),
        ErrorCode::InvalidArgument
    );
    call(&c, "account.passwd", passwd("correct horse", "new password")).await.unwrap();
    let other = client(&s).await;
    assert_eq!(code(login(&other, "alice", "correct horse").await), ErrorCode::AuthFailed);
    login(&other, "alice", "new password").await.unwrap();
    // The same name twice is a conflict; registration closed is forbidden.
    let again = call(&other, "account.register", json!({ "user": "alice", "password": "whatever123" })).await;
    assert_eq!(code(again), ErrorCode::Conflict);
    let closed = serve(|c| c.allow_register = false).await;
    let c = client(&closed).await;
    let r = call(&c, "account.register", json!({ "user": "bob", "password": "whatever123" })).await;
    assert_eq!(code(r), ErrorCode::Forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_out_and_the_lockout_expires() {
    let lockout =
        Lockout { free_failures: 2, first: Duration::from_millis(300), max: Duration::from_secs(2) };
    let s = serve(|c| c.account_lockout = lockout).await;
    let c = client(&s).await;
    call(&c, "account.register", json!({ "user": "carol", "password": "right password" })).await.unwrap();
    let c = client(&s).await;
    for _ in 0..3 {
        assert_eq!(code(login(&c, "carol", "wrong").await), ErrorCode::AuthFailed);
    }
    // Locked out: even the right password waits.
    assert_eq!(code(login(&c, "carol", "right password").await), ErrorCode::RateLimited);
    within("the lockout expires", async {
        loop {
            match login(&c, "carol", "right password").await {
                Ok(_) => break,
                Err(e) => assert_eq!(code(Err(e)), ErrorCode::RateLimited),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_session_policy() {
    for policy in [SessionPolicy::Many, SessionPolicy::KickOld, SessionPolicy::RefuseNew] {
        let s = serve(|c| c.policy = policy).await;
        let first = client(&s).await;
        call(&first, "account.register", json!({ "user": "dave", "password": "dave's password" }))
            .await
            .unwrap();
        let second = client(&s).await;
        let r = login(&second, "dave", "dave's password").await;
        match policy {
            SessionPolicy::Many => {
                r.unwrap();
                assert_eq!(s.server.directory().user("dave").len(), 2, "one user, two devices");
                assert_eq!(first.call_console("secret", "").await.unwrap(), "hello dave");
            }
            SessionPolicy::KickOld => {
                r.unwrap();
                match within("the first is closed", first.closed()).await {
                    zs::CloseReason::PeerGoAway { code, .. } => assert_eq!(code, GoAwayCode::Kicked),
                    other => panic!("{other:?}"),
                }
                assert_eq!(second.call_console("secret", "").await.unwrap(), "hello dave");
            }
            SessionPolicy::RefuseNew => {
                assert_eq!(code(r), ErrorCode::Conflict);
                assert_eq!(first.call_console("secret", "").await.unwrap(), "hello dave");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticator_that_answers_late_holds_no_one_else_up() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let auth = move |c: Credentials| {
        counter.fetch_add(1, Relaxed);
        async move {
            // As if asking another server.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if c.user == "Test" && c.password == "Test" {
                Verdict::Accept(Identity::new("Test", ["user"]))
            } else {
                Verdict::Reject("not in the other database".into())
            }
        }
    };
    let s = serve(|c| c.authenticator = Some(Arc::new(auth))).await;
    let c = client(&s).await;
    let bystander = client(&s).await;
    let slow = tokio::spawn(async move {
        let r = login(&c, "Test", "Test").await;
        (r, c)
    });
    // Another connection is served while the login waits.
    for _ in 0..10 {
        assert_eq!(bystander.call_console("echo", "meanwhile").await.unwrap(), "meanwhile");
    }
    let (r, c) = within("the late answer", slow).await.unwrap();
    r.unwrap();
    assert_eq!(c.call_console("secret", "").await.unwrap(), "hello Test");
    assert_eq!(code(login(&bystander, "Test", "nope").await), ErrorCode::AuthFailed);
    assert_eq!(asked.load(Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_log_in_until_revoked() {
    let s = serve(|_| {}).await;
    let c = client(&s).await;
    call(&c, "account.register", json!({ "user": "erin", "password": "erin's password" })).await.unwrap();
    let r = call(
        &c,
        "account.login",
        json!({ "user": "erin", "password": "erin's password", "issue_token": true }),
    )
    .await
    .unwrap();
    let token = r["token"].as_str().unwrap().to_owned();
    assert!(r["expires"].as_u64().unwrap() > 0);
    let fresh = client(&s).await;
    let me = call(&fresh, "account.login", json!({ "token": token })).await.unwrap();
    assert_eq!(me["user"], "erin");
    let revoked = call(&c, "account.revoke", json!({ "token": token })).await.unwrap();
    assert_eq!(revoked["revoked"], 1);
    let later = client(&s).await;
    assert_eq!(code(call(&later, "account.login", json!({ "token": token })).await), ErrorCode::AuthFailed);
    assert_eq!(
        code(call(&later, "account.login", json!({ "token": "zst_made_up" })).await),
        ErrorCode::AuthFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_stays_logged_in() {
    let s = serve(|_| {}).await;
    let proxy =
        zs_bench::fault_proxy::FaultProxy::start(s.server.local_addr(), Default::default()).await.unwrap();
    let session = zs::SessionConfig { min_backoff: Duration::from_millis(5), ..Default::default() };
    let config = ClientConfig { session: Some(session), ..ClientConfig::secured(s.server.client_security()) };
    let c = Client::connect_with(proxy.addr(), Router::new(), config).await.unwrap();
    call(&c, "account.register", json!({ "user": "frank", "password": "frank's password" })).await.unwrap();
    for _ in 0..3 {
        proxy.cut_all();
        assert_eq!(within("after a cut", c.call_console("secret", "")).await.unwrap(), "hello frank");
    }
    assert!(c.session().unwrap().resumes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_list_kick_disable_delete_and_map_keys() {
    let s = serve(|_| {}).await;
    let admin = client(&s).await;
    login(&admin, "admin", &s.admin_password).await.unwrap();
    assert_eq!(admin.call_console("admin_only", "").await.unwrap(), "yes");
    call(&admin, "account.add", json!({ "user": "grace", "password": "grace's password" })).await.unwrap();
    let grace = client(&s).await;
    login(&grace, "grace", "grace's password").await.unwrap();
    let online = call(&admin, "account.online", json!({})).await.unwrap();
    assert!(online.as_array().unwrap().iter().any(|u| u["user"] == "grace"), "{online}");
    let list = call(&admin, "account.list", json!({})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    // Kick: her connection closes, with the reason.
    let kicked = call(&admin, "account.kick", json!({ "user": "grace" })).await.unwrap();
    assert_eq!(kicked["kicked"], 1);
    assert!(matches!(
        within("kicked", grace.closed()).await,
        zs::CloseReason::PeerGoAway { code: GoAwayCode::Kicked, .. }
    ));
    // Disabled while connected: closed, and no login until enabled.
    let grace = client(&s).await;
    login(&grace, "grace", "grace's password").await.unwrap();
    call(&admin, "account.disable", json!({ "user": "grace" })).await.unwrap();
    within("disabled and closed", grace.closed()).await;
    let grace = client(&s).await;
    assert_eq!(code(login(&grace, "grace", "grace's password").await), ErrorCode::Forbidden);
    call(&admin, "account.enable", json!({ "user": "grace" })).await.unwrap();
    login(&grace, "grace", "grace's password").await.unwrap();
    // A Noise client key mapped to her account logs in without a password.
    let key = zs::KeyPair::generate();
    call(&admin, "account.map_key", json!({ "user": "grace", "key": key.public().to_string() }))
        .await
        .unwrap();
    let noise = zs::secure::NoiseClient { key: Some(key), ..zs::secure::NoiseClient::default() };
    let mut security = s.server.client_security();
    if let zs::ClientSecurity::Noise(n) = &mut security {
        n.key = noise.key.clone();
    }
    let by_key = Client::connect(s.server.local_addr(), security).await.unwrap();
    let me = call(&by_key, "account.login", json!({ "key": true })).await.unwrap();
    assert_eq!(me["user"], "grace");
    let anonymous = client(&s).await;
    assert_eq!(code(call(&anonymous, "account.login", json!({ "key": true })).await), ErrorCode::AuthFailed);
    // Deleted: closed, and gone.
    call(&admin, "account.delete", json!({ "user": "grace" })).await.unwrap();
    within("deleted and closed", by_key.closed()).await;
    assert_eq!(code(login(&anonymous, "grace", "grace's password").await), ErrorCode::AuthFailed);
    // An administrator cannot lock themselves out.
    assert_eq!(
        code(call(&admin, "account.delete", json!({ "user": "admin" })).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(call(&grace_less(&s).await, "account.list", json!({})).await), ErrorCode::NotLoggedIn);
}

async fn grace_less(s: &Setup) -> Client {
    client(s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_token_logs_a_server_in() {
    let token = ServiceToken {
        secret: "s3cret-between-servers".into(),
        identity: Identity::new("relay", ["service"]),
    };
    let s = serve(|c| c.service_tokens = vec![token]).await;
    let c = client(&s).await;
    let me = call(&c, "account.login", json!({ "service_token": "s3cret-between-servers" })).await.unwrap();
    assert_eq!(me, json!({ "user": "relay", "roles": ["service"] }));
    let other = client(&s).await;
    assert_eq!(
        code(call(&other, "account.login", json!({ "service_token": "guess" })).await),
        ErrorCode::AuthFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_codes_and_the_store_stays_whole() {
    let s = serve(|_| {}).await;
    let c = client(&s).await;
    let reg = |user: &str, password: &str| json!({ "user": user, "password": password });
    for (user, password) in
        [("a b", "long enough"), ("x".repeat(65).as_str(), "long enough"), ("ok", ""), ("ok", "short")]
    {
        let r = call(&c, "account.register", reg(user, password)).await;
        assert_eq!(code(r), ErrorCode::InvalidArgument, "{user:?} {password:?}");
    }
    for bad in ["not json", "[1,2]", "{\"user\":1}", "{\"user\":\"a\",\"password\":\"b\",\"extra\":true}"] {
        let r = within("bad", c.call_console("account.login", bad)).await;
        assert!(matches!(r, Err(CallError::Remote { code: ErrorCode::InvalidArgument, .. })), "{bad}: {r:?}");
    }
    let both = json!({ "user": "a", "password": "b", "token": "t" });
    assert_eq!(code(call(&c, "account.login", both).await), ErrorCode::InvalidArgument);
    assert_eq!(code(call(&c, "account.list", json!({})).await), ErrorCode::NotLoggedIn);
    // Nothing was half-made: only the first-start admin exists.
    let admin = client(&s).await;
    login(&admin, "admin", &s.admin_password).await.unwrap();
    assert_eq!(call(&admin, "account.list", json!({})).await.unwrap().as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_turned_away_while_others_are_served() {
    let s = serve(|c| {
        // Real cost, one at a time, a short queue.
        c.hash = HashCost::default();
        c.hash_threads = 1;
        c.max_hash_queue = 4;
        c.address_lockout = Lockout { free_failures: 1000, ..Lockout::per_address() };
    })
    .await;
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let addr = s.server.local_addr();
            let security = s.server.client_security();
            tokio::spawn(async move {
                let c = Client::connect(addr, security).await.unwrap();
                let r = login(&c, &format!("user{i}"), "not the password").await;
                code(r)
            })
        })
        .collect();
    let bystander = client(&s).await;
    for _ in 0..20 {
        assert_eq!(bystander.call_console("echo", "still here").await.unwrap(), "still here");
    }
    let mut codes = Vec::new();
    for f in flood {
        codes.push(within("a login answered", f).await.unwrap());
    }
    assert!(codes.contains(&ErrorCode::RateLimited), "a full queue turns logins away: {codes:?}");
    assert!(codes.contains(&ErrorCode::AuthFailed), "the queued ones are still answered: {codes:?}");
}
