//! The accounts service's commands: console commands with JSON in and out (PROTOCOL §12).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use zs::wire::{ErrorCode, GoAwayCode};
use zs::{HandlerError, Identity, Peer, Router, Text};

use super::names::{check_password, normalise_name};
use super::store::{now_s, StoreError, Token, User};
use super::{blocking, Credentials, Inner, SessionPolicy, Verdict};
use crate::json::{err, request};

/// What a client is told when a login fails, whatever the reason: it never says whether
/// the account exists.
const LOGIN_FAILED: &str = "wrong user name, password or token";

fn store_err(e: StoreError) -> HandlerError {
    match e {
        StoreError::Exists(name) => {
            err(ErrorCode::Conflict, format!("an account named {name} exists already"))
        }
        StoreError::NotFound(name) => err(ErrorCode::NotFound, format!("no account named {name}")),
        StoreError::Db(why) => {
            tracing::error!(error = %why, "account store failed");
            err(ErrorCode::Application, "the account store failed; see the server's log")
        }
    }
}

fn busy(e: super::password::Busy) -> HandlerError {
    err(ErrorCode::RateLimited, e.to_string())
}

/// Decodes `text` as the request of every command, and checks each name and password in
/// it as the commands would: the body of the `accounts_request` fuzz target.
pub(crate) fn decode_any(text: &Text) {
    fn names<'a>(names: impl IntoIterator<Item = &'a String>) {
        for n in names {
            if let Ok(name) = normalise_name(n) {
                assert_eq!(normalise_name(&name).as_ref(), Ok(&name), "normalising is idempotent");
                assert!(name.chars().count() <= super::names::MAX_NAME);
            }
        }
    }
    if let Ok(r) = request::<LoginRequest>(text) {
        names(&r.user);
        let _ = r.password.map(|p| check_password(&p, 8));
    }
    if let Ok(r) = request::<NewAccount>(text) {
        names([&r.user].into_iter().chain(r.roles.iter().flatten()));
        let _ = check_password(&r.password, 8);
    }
    if let Ok(r) = request::<Passwd>(text) {
        let _ = check_password(&r.new, 8);
    }
    let _ = request::<Revoke>(text);
    if let Ok(r) = request::<Target>(text) {
        names([&r.user]);
    }
    if let Ok(r) = request::<SetPassword>(text) {
        names([&r.user]);
    }
    if let Ok(r) = request::<SetRoles>(text) {
        names([&r.user].into_iter().chain(&r.roles));
    }
    if let Ok(r) = request::<MapKey>(text) {
        names(&r.user);
        let _ = r.key.parse::<zs::Fingerprint>();
    }
}

fn name_arg(raw: &str) -> Result<String, HandlerError> {
    normalise_name(raw).map_err(|e| err(ErrorCode::InvalidArgument, e))
}

/// Registers every command of the service.
pub(crate) fn register(inner: Arc<Inner>, router: &mut Router) {
    macro_rules! command {
        ($name:expr, $f:ident) => {
            crate::json::json_command!(router, inner, $name, $f)
        };
    }
    command!("account.register", register_account);
    command!("account.login", login);
    command!("account.logout", logout);
    command!("account.whoami", whoami).requires_login();
    command!("account.passwd", passwd).requires_login();
    command!("account.token", new_token).requires_login();
    command!("account.revoke", revoke).requires_login();
    command!("account.add", admin_add).requires_role("admin");
    command!("account.list", admin_list).requires_role("admin");
    command!("account.disable", admin_disable).requires_role("admin");
    command!("account.enable", admin_enable).requires_role("admin");
    command!("account.delete", admin_delete).requires_role("admin");
    command!("account.set_password", admin_set_password).requires_role("admin");
    command!("account.set_roles", admin_set_roles).requires_role("admin");
    command!("account.online", admin_online).requires_role("admin");
    command!("account.kick", admin_kick).requires_role("admin");
    command!("account.map_key", admin_map_key).requires_role("admin");
}

fn identity_json(who: &Identity) -> Value {
    json!({ "user": who.user, "roles": who.roles })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    #[serde(default)]
    key: bool,
    service_token: Option<String>,
    #[serde(default)]
    issue_token: bool,
}

/// How a login proved itself, for the audit line.
#[derive(Clone, Copy)]
enum Method {
    Password,
    Token,
    Key,
    Service,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Token => "token",
            Method::Key => "client key",
            Method::Service => "service token",
        }
    }
}

async fn login(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: LoginRequest = request(&text)?;
    let ip = peer.remote_addr().ip();
    let (method, claimed) = match (&req.user, &req.password, &req.token, req.key, &req.service_token) {
        (Some(user), Some(_), None, false, None) => (Method::Password, user.clone()),
        (None, None, Some(_), false, None) => (Method::Token, String::new()),
        (None, None, None, true, None) => (Method::Key, String::new()),
        (None, None, None, false, Some(_)) => (Method::Service, String::new()),
        _ => {
            let why = "log in with one of: user and password, token, key, service_token";
            return Err(err(ErrorCode::InvalidArgument, why));
        }
    };
    // Names that cannot be accounts fail like wrong passwords, and count as such.
    // (Keyed by a short hash of what was sent: a megabyte of name is not kept, nor logged.)
    let account = normalise_name(&claimed)
        .unwrap_or_else(|_| format!("~invalid-{}", &blake3::hash(claimed.as_bytes()).to_hex()[..16]));
    if let Some(wait) = inner.limiter.locked(ip, &account) {
        tracing::info!(target: "zs::audit", user = %escaped(&account), remote = %peer.remote_addr(), "login refused: locked out");
        let msg = format!("too many failed logins; try again in {} s", wait.as_secs().max(1));
        return Err(err(ErrorCode::RateLimited, msg));
    }
    let verdict = match method {
        Method::Password => {
            password_login(inner, peer, &account, req.password.clone().unwrap_or_default()).await?
        }
        Method::Token => token_login(inner, req.token.as_deref().unwrap_or_default()).await?,
        Method::Key => key_login(inner, peer).await?,
        Method::Service => service_login(inner, req.service_token.as_deref().unwrap_or_default()),
    };
    let who = match verdict {
        Verdict::Accept(who) => who,
        Verdict::Reject(why) => {
            let lockout = inner.limiter.failed(ip, &account);
            tracing::info!(
                target: "zs::audit",
                user = %escaped(&account),
                remote = %peer.remote_addr(),
                method = method.name(),
                why = %escaped(&why),
                "login failed"
            );
            if let Some(d) = lockout {
                tracing::warn!(target: "zs::audit", user = %escaped(&account), %ip, seconds = d.as_secs_f64(), "locked out");
            }
            return Err(err(ErrorCode::AuthFailed, LOGIN_FAILED));
        }
    };
    inner.limiter.succeeded(&who.user);
    apply_policy(inner, peer, &who.user)?;
    peer.set_user(Some(who.clone()));
    tracing::info!(target: "zs::audit", user = %who.user, remote = %peer.remote_addr(), method = method.name(), "login");
    let mut reply = identity_json(&who);
    if req.issue_token {
        let (token, expires) = issue_token(inner, &who).await?;
        reply["token"] = json!(token);
        reply["expires"] = json!(expires);
    }
    Ok(reply)
}

async fn password_login(
    inner: &Arc<Inner>,
    peer: &Peer,
    account: &str,
    password: String,
) -> Result<Verdict, HandlerError> {
    if let Some(auth) = &inner.config.authenticator {
        let credentials = Credentials { user: account.to_owned(), password, remote: peer.remote_addr() };
        return Ok(auth.authenticate(credentials).await);
    }
    let inner2 = inner.clone();
    let name = account.to_owned();
    let user = blocking(move || inner2.store.get(&name)).await.map_err(store_err)?;
    let ok = inner.hasher.verify(password, user.as_ref().map(|u| u.hash.clone())).await.map_err(busy)?;
    Ok(match user {
        Some(u) if ok && u.disabled => return Err(err(ErrorCode::Forbidden, "this account is disabled")),
        Some(u) if ok => {
            touch(inner, &u.name);
            Verdict::Accept(Identity::new(u.name, u.roles))
        }
        Some(_) => Verdict::Reject("wrong password".into()),
        None => Verdict::Reject("no such account".into()),
    })
}

async fn token_login(inner: &Arc<Inner>, token: &str) -> Result<Verdict, HandlerError> {
    if let Some(authority) = &inner.config.token_authority {
        match authority.verify(token).await {
            Some(Ok(who)) => return Ok(Verdict::Accept(who)),
            Some(Err(why)) => return Ok(Verdict::Reject(why)),
            None => {}
        }
    }
    let hash = *blake3::hash(token.as_bytes()).as_bytes();
    let inner2 = inner.clone();
    let record = blocking(move || inner2.store.token(&hash)).await.map_err(store_err)?;
    let Some(record) = record else { return Ok(Verdict::Reject("unknown or revoked token".into())) };
    if record.expires <= now_s() {
        return Ok(Verdict::Reject("expired token".into()));
    }
    if record.user_id.is_empty() {
        // A token of a user the store does not keep (an authenticator's).
        return Ok(Verdict::Accept(Identity::new(record.user, ["user"])));
    }
    account_verdict(inner, &record.user, Some(&record.user_id)).await
}

async fn key_login(inner: &Arc<Inner>, peer: &Peer) -> Result<Verdict, HandlerError> {
    let Some(key) = peer.remote_key() else {
        return Ok(Verdict::Reject("no client key on this connection".into()));
    };
    let fp = key.to_string();
    let inner2 = inner.clone();
    let user = blocking(move || inner2.store.key_user(&fp)).await.map_err(store_err)?;
    match user {
        Some(user) => account_verdict(inner, &user, None).await,
        None => Ok(Verdict::Reject(format!("client key {key} is mapped to no account"))),
    }
}

/// An account's verdict for a proof that named it: it must exist (as the same account,
/// `id`) and be enabled.
async fn account_verdict(inner: &Arc<Inner>, name: &str, id: Option<&str>) -> Result<Verdict, HandlerError> {
    let inner2 = inner.clone();
    let n = name.to_owned();
    let user = blocking(move || inner2.store.get(&n)).await.map_err(store_err)?;
    Ok(match user {
        Some(u) if id.is_some_and(|id| id != u.id) => Verdict::Reject("token of an earlier account".into()),
        Some(u) if u.disabled => return Err(err(ErrorCode::Forbidden, "this account is disabled")),
        Some(u) => {
            touch(inner, &u.name);
            Verdict::Accept(Identity::new(u.name, u.roles))
        }
        None => Verdict::Reject("the account is gone".into()),
    })
}

fn service_login(inner: &Arc<Inner>, secret: &str) -> Verdict {
    let offered = blake3::hash(secret.as_bytes());
    // blake3::Hash compares in constant time.
    match inner.config.service_tokens.iter().find(|t| blake3::hash(t.secret.as_bytes()) == offered) {
        Some(t) => Verdict::Accept(t.identity.clone()),
        None => Verdict::Reject("unknown service token".into()),
    }
}

/// Records a login's time (not worth a wait: written in the background).
fn touch(inner: &Arc<Inner>, name: &str) {
    let (inner, name) = (inner.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        let _ = inner.store.touch_login(&name);
    });
}

/// Enforces the session policy for a login of `user` on `peer`.
fn apply_policy(inner: &Arc<Inner>, peer: &Peer, user: &str) -> Result<(), HandlerError> {
    let Some(directory) = peer.directory() else { return Ok(()) };
    let others: Vec<Peer> = directory.user(user).into_iter().filter(|p| p.id() != peer.id()).collect();
    match inner.policy.get() {
        SessionPolicy::Many => {}
        SessionPolicy::KickOld => {
            for other in others {
                tracing::info!(target: "zs::audit", %user, peer = other.id(), "older login closed");
                other.close_with(GoAwayCode::Kicked, "this account logged in elsewhere");
            }
        }
        SessionPolicy::RefuseNew if !others.is_empty() => {
            return Err(err(ErrorCode::Conflict, "this account is logged in on another connection"));
        }
        SessionPolicy::RefuseNew => {}
    }
    Ok(())
}

async fn issue_token(inner: &Arc<Inner>, who: &Identity) -> Result<(String, u64), HandlerError> {
    use base64::Engine;
    let user = who.user.as_str();
    if let Some(authority) = &inner.config.token_authority {
        let issued = authority.issue(who, inner.config.token_ttl).await;
        let (token, expires) =
            issued.map_err(|e| err(ErrorCode::Overloaded, format!("cannot issue a token: {e}")))?;
        tracing::info!(target: "zs::audit", %user, "cluster token issued");
        return Ok((token, expires));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system provides random bytes");
    let token = format!("zst_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let hash = *blake3::hash(token.as_bytes()).as_bytes();
    let expires = now_s() + inner.config.token_ttl.as_secs();
    let (inner2, name) = (inner.clone(), user.to_owned());
    blocking(move || {
        // Bound to the account (its id), or to the name alone for an authenticator's user.
        let user_id = inner2.store.get(&name)?.map(|u| u.id).unwrap_or_default();
        inner2.store.put_token(&hash, &Token { user: name, user_id, expires })
    })
    .await
    .map_err(store_err)?;
    tracing::info!(target: "zs::audit", %user, "token issued");
    Ok((token, expires))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    user: String,
    password: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// Makes an account (after checking its name and password); returns it.
async fn create(inner: &Arc<Inner>, req: NewAccount, roles: Vec<String>) -> Result<User, HandlerError> {
    let name = name_arg(&req.user)?;
    check_password(&req.password, inner.config.min_password)
        .map_err(|e| err(ErrorCode::InvalidArgument, e))?;
    let hash = inner.hasher.hash(req.password).await.map_err(busy)?;
    let inner2 = inner.clone();
    blocking(move || inner2.store.create(&name, hash, roles)).await.map_err(store_err)
}

async fn register_account(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    if !inner.allow_register.get() {
        return Err(err(ErrorCode::Forbidden, "this server does not take registrations"));
    }
    let req: NewAccount = request(&text)?;
    if req.roles.is_some() {
        return Err(err(ErrorCode::InvalidArgument, "roles are given by an administrator"));
    }
    let user = create(inner, req, vec!["user".into()]).await?;
    tracing::info!(target: "zs::audit", user = %user.name, remote = %peer.remote_addr(), "registered");
    let who = Identity::new(user.name, user.roles);
    peer.set_user(Some(who.clone()));
    Ok(identity_json(&who))
}

async fn logout(_inner: &Arc<Inner>, peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    if let Some(who) = peer.user() {
        tracing::info!(target: "zs::audit", user = %who.user, remote = %peer.remote_addr(), "logout");
    }
    peer.set_user(None);
    Ok(json!({}))
}

async fn whoami(_inner: &Arc<Inner>, peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let who = peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "not logged in"))?;
    Ok(identity_json(&who))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Passwd {
    old: String,
    new: String,
}

async fn passwd(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: Passwd = request(&text)?;
    let who = peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "not logged in"))?;
    check_password(&req.new, inner.config.min_password).map_err(|e| err(ErrorCode::InvalidArgument, e))?;
    let ip = peer.remote_addr().ip();
    if let Some(wait) = inner.limiter.locked(ip, &who.user) {
        return Err(err(ErrorCode::RateLimited, format!("try again in {} s", wait.as_secs().max(1))));
    }
    let (inner2, name) = (inner.clone(), who.user.clone());
    let user = blocking(move || inner2.store.get(&name)).await.map_err(store_err)?;
    let Some(user) = user else {
        return Err(err(ErrorCode::Forbidden, "this account's password is kept elsewhere"));
    };
    if !inner.hasher.verify(req.old, Some(user.hash)).await.map_err(busy)? {
        inner.limiter.failed(ip, &who.user);
        tracing::info!(target: "zs::audit", user = %who.user, remote = %peer.remote_addr(), "password change refused");
        return Err(err(ErrorCode::AuthFailed, "wrong password"));
    }
    set_password(inner, &who.user, req.new).await?;
    tracing::info!(target: "zs::audit", user = %who.user, remote = %peer.remote_addr(), "password changed");
    Ok(json!({}))
}

async fn set_password(inner: &Arc<Inner>, user: &str, password: String) -> Result<(), HandlerError> {
    let hash = inner.hasher.hash(password).await.map_err(busy)?;
    let (inner2, name) = (inner.clone(), user.to_owned());
    blocking(move || inner2.store.update(&name, move |u| u.hash = hash)).await.map_err(store_err)?;
    Ok(())
}

async fn new_token(inner: &Arc<Inner>, peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let who = peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "not logged in"))?;
    let (token, expires) = issue_token(inner, &who).await?;
    Ok(json!({ "token": token, "expires": expires }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    token: Option<String>,
}

async fn revoke(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: Revoke = request(&text)?;
    let who = peer.user().ok_or_else(|| err(ErrorCode::NotLoggedIn, "not logged in"))?;
    let hash = req.token.map(|t| *blake3::hash(t.as_bytes()).as_bytes());
    let (inner2, name) = (inner.clone(), who.user.clone());
    let n = blocking(move || inner2.store.revoke_tokens(hash.as_ref(), &name)).await.map_err(store_err)?;
    // A cluster token is not kept anywhere: revoking one revokes all of the user's.
    revoke_authority_tokens(inner, &who.user).await?;
    tracing::info!(target: "zs::audit", user = %who.user, revoked = n, "tokens revoked");
    Ok(json!({ "revoked": n }))
}

/// Revokes `user`'s tokens of the token authority, if there is one (its tokens carry the
/// account's roles and outlive a change made on one node otherwise).
async fn revoke_authority_tokens(inner: &Arc<Inner>, user: &str) -> Result<(), HandlerError> {
    match &inner.config.token_authority {
        Some(authority) => authority.revoke_user(user).await.map_err(|e| err(ErrorCode::Overloaded, e)),
        None => Ok(()),
    }
}

async fn admin_add(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let mut req: NewAccount = request(&text)?;
    let roles = req.roles.take().unwrap_or_else(|| vec!["user".into()]);
    let user = create(inner, req, roles).await?;
    audit_admin(peer, "account created", &user.name);
    Ok(json!({ "user": user.name, "roles": user.roles }))
}

async fn admin_list(inner: &Arc<Inner>, _peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let inner2 = inner.clone();
    let users = blocking(move || inner2.store.list()).await.map_err(store_err)?;
    let list: Vec<Value> = users
        .into_iter()
        .map(|u| {
            json!({ "user": u.name, "roles": u.roles, "disabled": u.disabled,
                    "created": u.created, "last_login": u.last_login })
        })
        .collect();
    Ok(Value::Array(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    user: String,
}

fn audit_admin(peer: &Peer, what: &str, target: &str) {
    let admin = peer.user().map(|w| w.user.clone()).unwrap_or_default();
    tracing::info!(target: "zs::audit", %admin, user = %target, what, "administration");
}

/// Closes every connection of `user` with a reason; returns how many.
fn kick(peer: &Peer, user: &str, why: &str) -> usize {
    let Some(directory) = peer.directory() else { return 0 };
    let peers = directory.user(user);
    for p in &peers {
        p.close_with(GoAwayCode::Kicked, why);
    }
    peers.len()
}

fn not_self(peer: &Peer, target: &str, what: &str) -> Result<(), HandlerError> {
    if peer.user().is_some_and(|w| w.user == target) {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("an administrator cannot {what} their own account"),
        ));
    }
    Ok(())
}

async fn admin_disable(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let name = name_arg(&request::<Target>(&text)?.user)?;
    not_self(peer, &name, "disable")?;
    let (inner2, n) = (inner.clone(), name.clone());
    blocking(move || inner2.store.update(&n, |u| u.disabled = true)).await.map_err(store_err)?;
    revoke_authority_tokens(inner, &name).await?;
    let kicked = kick(peer, &name, "this account was disabled");
    audit_admin(peer, "account disabled", &name);
    Ok(json!({ "kicked": kicked }))
}

async fn admin_enable(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let name = name_arg(&request::<Target>(&text)?.user)?;
    let (inner2, n) = (inner.clone(), name.clone());
    blocking(move || inner2.store.update(&n, |u| u.disabled = false)).await.map_err(store_err)?;
    audit_admin(peer, "account enabled", &name);
    Ok(json!({}))
}

async fn admin_delete(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let name = name_arg(&request::<Target>(&text)?.user)?;
    not_self(peer, &name, "delete")?;
    let (inner2, n) = (inner.clone(), name.clone());
    blocking(move || inner2.store.delete(&n)).await.map_err(store_err)?;
    revoke_authority_tokens(inner, &name).await?;
    let kicked = kick(peer, &name, "this account was deleted");
    audit_admin(peer, "account deleted", &name);
    Ok(json!({ "kicked": kicked }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPassword {
    user: String,
    password: String,
}

async fn admin_set_password(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: SetPassword = request(&text)?;
    let name = name_arg(&req.user)?;
    check_password(&req.password, inner.config.min_password)
        .map_err(|e| err(ErrorCode::InvalidArgument, e))?;
    set_password(inner, &name, req.password).await?;
    audit_admin(peer, "password set", &name);
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRoles {
    user: String,
    roles: Vec<String>,
}

async fn admin_set_roles(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: SetRoles = request(&text)?;
    let name = name_arg(&req.user)?;
    if req.roles.iter().any(|r| normalise_name(r).is_err()) {
        return Err(err(ErrorCode::InvalidArgument, "a role is a name (letters, digits, . _ - @)"));
    }
    if peer.user().is_some_and(|w| w.user == name) && !req.roles.iter().any(|r| r == "admin") {
        return Err(err(ErrorCode::InvalidArgument, "an administrator cannot drop their own admin role"));
    }
    let (inner2, n, roles) = (inner.clone(), name.clone(), req.roles.clone());
    blocking(move || inner2.store.update(&n, move |u| u.roles = roles)).await.map_err(store_err)?;
    revoke_authority_tokens(inner, &name).await?;
    audit_admin(peer, "roles set", &name);
    Ok(json!({ "user": name, "roles": req.roles }))
}

async fn admin_online(_inner: &Arc<Inner>, peer: &Peer, _text: Text) -> Result<Value, HandlerError> {
    let users = peer.directory().map(|d| d.users()).unwrap_or_default();
    Ok(Value::Array(users.into_iter().map(|(u, n)| json!({ "user": u, "connections": n })).collect()))
}

async fn admin_kick(_inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let name = name_arg(&request::<Target>(&text)?.user)?;
    let kicked = kick(peer, &name, "kicked by an administrator");
    audit_admin(peer, "kicked", &name);
    Ok(json!({ "kicked": kicked }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapKey {
    user: Option<String>,
    key: String,
}

async fn admin_map_key(inner: &Arc<Inner>, peer: &Peer, text: Text) -> Result<Value, HandlerError> {
    let req: MapKey = request(&text)?;
    let key: zs::Fingerprint =
        req.key.parse().map_err(|e| err(ErrorCode::InvalidArgument, format!("bad key: {e}")))?;
    let user = req.user.as_deref().map(name_arg).transpose()?;
    let inner2 = inner.clone();
    let (fp, u) = (key.to_string(), user.clone());
    blocking(move || {
        if let Some(u) = &u {
            if inner2.store.get(u)?.is_none() {
                return Err(StoreError::NotFound(u.clone()));
            }
        }
        inner2.store.map_key(&fp, u.as_deref())
    })
    .await
    .map_err(store_err)?;
    audit_admin(peer, "client key mapped", user.as_deref().unwrap_or("(none)"));
    Ok(json!({}))
}

/// A name a peer sent, safe in a log line.
fn escaped(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect()
}
