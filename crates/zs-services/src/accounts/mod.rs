//! Accounts (the original's DoubleTunnel login, done safely): registration, login by
//! password, token, Noise client key or a shared service token, logout, password change,
//! roles, per-account directories, admin commands (list, disable, enable, delete, online,
//! kick), and an async [`Authenticator`] for applications that keep users elsewhere (the
//! original's VirtualAuth).
//!
//! Commands are console commands with JSON in and out (PROTOCOL.md §12). After a login the
//! connection carries its identity ([`zs::Peer::user`]); other services' commands require it
//! with `.requires_login()` or `.requires_role("admin")`.

mod commands;
mod limiter;
mod names;
mod password;
pub(crate) mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::live::Live;
use futures_util::future::BoxFuture;
use zs::{Identity, Router, Service};

pub use limiter::Lockout;
pub use names::{check_password, normalise_name};
pub use password::HashCost;

pub(crate) use commands::decode_any;
pub use store::{Store, StoreError, Token, User};

use password::Hasher;

/// What happens when an account logs in while it is logged in on other connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionPolicy {
    /// Every login stands: a user may hold several connections (its devices). The default.
    #[default]
    Many,
    /// The new login stands and the older connections are closed (`Kicked`).
    KickOld,
    /// The new login is refused (`Conflict`) while another connection is logged in.
    RefuseNew,
}

/// A user's password login, as an [`Authenticator`] sees it.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The account name (normalised).
    pub user: String,
    /// The password.
    pub password: String,
    /// Where the login came from.
    pub remote: SocketAddr,
}

/// An authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The login stands, with this identity.
    Accept(Identity),
    /// The login is refused; the reason is logged, the client is told only that it failed.
    Reject(String),
}

/// Decides password logins in place of the built-in store (the original's VirtualAuth):
/// the answer may come later, from another database or server. Any
/// `Fn(Credentials) -> impl Future<Output = Verdict>` is one.
pub trait Authenticator: Send + Sync + 'static {
    /// Accepts or rejects a login.
    fn authenticate(&self, credentials: Credentials) -> BoxFuture<'static, Verdict>;
}

impl<F, Fut> Authenticator for F
where
    F: Fn(Credentials) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Verdict> + Send + 'static,
{
    fn authenticate(&self, credentials: Credentials) -> BoxFuture<'static, Verdict> {
        Box::pin(self(credentials))
    }
}

/// Issues login tokens that every node of a cluster accepts (`cluster::ClusterTokens`), in
/// place of the store's own, which hold on one node only.
pub trait TokenAuthority: Send + Sync + 'static {
    /// A token for `who`, good for `ttl`: the token and when it expires (seconds since the
    /// epoch).
    fn issue(&self, who: &Identity, ttl: Duration) -> BoxFuture<'static, Result<(String, u64), String>>;
    /// What `token` proves: `None` if it is not one of this authority's (the store is asked
    /// then), else the identity, or why it is refused (forged, expired, revoked).
    fn verify(&self, token: &str) -> BoxFuture<'static, Option<Result<Identity, String>>>;
    /// Revokes every token of `user` issued until now.
    fn revoke_user(&self, user: &str) -> BoxFuture<'static, Result<(), String>>;
}

/// A secret that logs a server (or a tool) in as a service, without an account: for
/// server-to-server links.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    /// The secret (compared by its BLAKE3 hash, in constant time).
    pub secret: String,
    /// The identity it gives.
    pub identity: Identity,
}

/// Settings of the accounts service.
#[derive(Clone)]
pub struct AccountsConfig {
    /// Where the store (`accounts.redb`) and the accounts' directories (`users/`) live.
    pub data_dir: PathBuf,
    /// Anyone may make an account with `account.register` (default false).
    pub allow_register: bool,
    /// Shortest password, in characters (default 8).
    pub min_password: usize,
    /// Several logins of one account (default: [`SessionPolicy::Many`]).
    pub policy: SessionPolicy,
    /// How long a login token lasts (default 30 days).
    pub token_ttl: Duration,
    /// argon2id's cost (default: OWASP's minimum, see [`HashCost`]).
    pub hash: HashCost,
    /// Hashes run at once (default: the cores there are).
    pub hash_threads: usize,
    /// Hashes queued behind them before logins are told `RateLimited` (default 64).
    pub max_hash_queue: usize,
    /// Lockouts after failed logins from one address (default [`Lockout::per_address`]).
    pub address_lockout: Lockout,
    /// Lockouts after failed logins of one account (default [`Lockout::per_account`]).
    pub account_lockout: Lockout,
    /// Decides password logins instead of the store (default none: the store does).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Issues and checks tokens in place of the store (default none: the store's tokens).
    pub token_authority: Option<Arc<dyn TokenAuthority>>,
    /// Secrets that log in as a service (default none).
    pub service_tokens: Vec<ServiceToken>,
    /// The password of the `admin` account made on first start (default: generated and
    /// returned by [`Accounts::open`], to be printed once).
    pub admin_password: Option<String>,
}

impl AccountsConfig {
    /// Defaults, in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AccountsConfig {
            data_dir: data_dir.into(),
            allow_register: false,
            min_password: 8,
            policy: SessionPolicy::Many,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            hash: HashCost::default(),
            hash_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_hash_queue: 64,
            address_lockout: Lockout::per_address(),
            account_lockout: Lockout::per_account(),
            authenticator: None,
            token_authority: None,
            service_tokens: Vec::new(),
            admin_password: None,
        }
    }
}

impl std::fmt::Debug for AccountsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsConfig")
            .field("data_dir", &self.data_dir)
            .field("allow_register", &self.allow_register)
            .field("policy", &self.policy)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The accounts service. Mount it on a router (`router.mount(accounts)`); clone it to keep
/// a handle (the store, for tools).
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: AccountsConfig,
    pub(crate) store: Store,
    pub(crate) hasher: Hasher,
    pub(crate) limiter: limiter::Limiter,
    /// `config.allow_register` and `config.policy` as set now.
    pub(crate) allow_register: Live<bool>,
    pub(crate) policy: Live<SessionPolicy>,
}

/// The name the service mounts under.
pub const NAME: &str = "accounts";

/// Where a server whose data directory is `data_dir` keeps its accounts (`zs serve` and
/// `zs user` agree on it).
pub fn store_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("accounts")
}

impl Accounts {
    /// Opens the store in the data directory. On first start (no account yet) it makes an
    /// `admin` account (roles `admin` and `user`) and returns its password when it was
    /// generated, for the operator to see once.
    pub async fn open(config: AccountsConfig) -> Result<(Accounts, Option<String>), StoreError> {
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))??;
        let hasher =
            Hasher::new(config.hash, config.hash_threads, config.max_hash_queue).map_err(StoreError::Db)?;
        let limiter = limiter::Limiter::new(config.address_lockout, config.account_lockout);
        let (allow_register, policy) = (Live::new(config.allow_register), Live::new(config.policy));
        let inner = Arc::new(Inner { config, store, hasher, limiter, allow_register, policy });
        let accounts = Accounts { inner };
        let generated = accounts.bootstrap_admin().await?;
        Ok((accounts, generated))
    }

    /// Lets anyone make an account, or no one (`AccountsConfig::allow_register`), from now on.
    pub fn set_allow_register(&self, allow: bool) {
        self.inner.allow_register.set(allow);
    }

    /// Changes what a second login of an account does (`AccountsConfig::policy`), from the
    /// next login on.
    pub fn set_session_policy(&self, policy: SessionPolicy) {
        self.inner.policy.set(policy);
    }

    /// The account store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The owner-only directory of the account `user` (made on first use): where services
    /// keep what belongs to it.
    pub fn user_dir(&self, user: &str) -> Result<PathBuf, StoreError> {
        let account = self.inner.store.get(user)?.ok_or_else(|| StoreError::NotFound(user.to_owned()))?;
        self.inner.store.user_dir(&account)
    }

    async fn bootstrap_admin(&self) -> Result<Option<String>, StoreError> {
        let inner = self.inner.clone();
        if blocking(move || inner.store.count()).await? > 0 {
            return Ok(None);
        }
        let (password, generated) = match &self.inner.config.admin_password {
            Some(p) => (p.clone(), None),
            None => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        let hash = self.inner.hasher.hash(password).await.map_err(|e| StoreError::Db(e.to_string()))?;
        let inner = self.inner.clone();
        blocking(move || inner.store.create("admin", hash, vec!["admin".into(), "user".into()])).await?;
        tracing::info!(target: "zs::audit", user = "admin", "account created on first start");
        Ok(generated)
    }
}

impl Service for Accounts {
    fn name(&self) -> &str {
        NAME
    }

    fn mount(self: Arc<Self>, router: &mut Router) {
        commands::register(self.inner.clone(), router);
    }
}

/// Runs blocking store work off the connections' tasks.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::Db(e.to_string()))?
}

/// The argon2id hash (PHC string, random salt) of `password` at `cost`, computed at once on
/// this thread (for tools; the service hashes off the connections' tasks).
pub fn hash_password(cost: &HashCost, password: &str) -> Result<String, String> {
    password::hash_now(cost, password)
}

/// A random password (24 characters, URL-safe base64 of 18 random bytes).
pub fn generate_password() -> String {
    use base64::Engine;
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).expect("the operating system provides random bytes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
