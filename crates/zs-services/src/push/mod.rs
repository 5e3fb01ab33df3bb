//! Push (DoubleTunnel, part 3): send a command to a user (every connection it holds, or
//! its durable offline inbox), topics with permission checks, presence with gathered
//! events, and the inbox the client lists and acknowledges.
//!
//! Commands are console commands with JSON in and out (PROTOCOL.md §14). Live delivery,
//! topics and presence go through a [`Broker`]: [`LocalBroker`] in one process, another
//! over NATS in a cluster.

mod broker;
pub mod client;
mod commands;
pub use commands::decode_any;
mod inbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use zs::{Identity, Router, Service, Text};

use crate::live::Live;

pub use broker::{Broker, BrokerError, BrokerLimits, Delivery, LocalBroker, Presence, PRESENCE_EVENT};
pub use inbox::{
    now_ms, Inbox, InboxCounters, InboxMessage, InboxStore, Stored, WhenFull, QUEUE as INBOX_QUEUE,
};

/// The name the service mounts under.
pub const NAME: &str = "push";

/// The command a client is sent after its login when its inbox holds messages:
/// `{"count": N}`.
pub const INBOX_WAITING: &str = "inbox.waiting";

/// Where a server whose data directory is `data_dir` keeps its inbox.
pub fn push_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("push")
}

/// Who may subscribe and publish to a topic.
pub trait TopicPolicy: Send + Sync + 'static {
    /// Whether `who` may subscribe to `topic`.
    fn can_subscribe(&self, who: &Identity, topic: &str) -> bool;
    /// Whether `who` may publish to `topic`.
    fn can_publish(&self, who: &Identity, topic: &str) -> bool;
}

/// The default topic policy: any logged-in user may subscribe and publish, except that
/// topics named `admin.*` are for admins only.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenTopics;

impl TopicPolicy for OpenTopics {
    fn can_subscribe(&self, who: &Identity, topic: &str) -> bool {
        !topic.starts_with("admin.") || who.has_role("admin")
    }

    fn can_publish(&self, who: &Identity, topic: &str) -> bool {
        self.can_subscribe(who, topic)
    }
}

/// Who may send to a user with `push.send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendPolicy {
    /// Accounts with the role `admin` or `push` (the default).
    #[default]
    Privileged,
    /// Any logged-in user (a chat between users).
    LoggedIn,
}

/// Whether a name is an account (see [`PushConfig::known_user`]).
pub type KnownUser = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Settings of the push service.
#[derive(Clone)]
pub struct PushConfig {
    /// Where the inbox (`inbox.redb`) lives.
    pub dir: PathBuf,
    /// Messages a user's inbox holds (default 1,000).
    pub inbox_cap: u64,
    /// What gives way in a full inbox (default: the oldest message).
    pub when_full: WhenFull,
    /// How long a stored message lives unless its sender says (default 7 days).
    pub default_ttl: Duration,
    /// The longest a sender may ask for (default 30 days).
    pub max_ttl: Duration,
    /// Largest payload of a message, in bytes (default 64 KiB).
    pub max_message_bytes: usize,
    /// Who may send to users (default: admins and the `push` role).
    pub send_policy: SendPolicy,
    /// Who may subscribe and publish (default [`OpenTopics`]).
    pub topic_policy: Arc<dyn TopicPolicy>,
    /// Whether a name is an account messages may be stored for (default: any valid name;
    /// `zs serve` asks the accounts store).
    pub known_user: Option<KnownUser>,
    /// Limits of the in-process broker.
    pub limits: BrokerLimits,
    /// The broker (default: a [`LocalBroker`] with `limits`).
    pub broker: Option<Arc<dyn Broker>>,
    /// Where offline messages are kept (default: `inbox.redb` in `dir`).
    pub inbox_store: Option<Arc<dyn InboxStore>>,
}

impl PushConfig {
    /// Defaults, with the inbox in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PushConfig {
            dir: dir.into(),
            inbox_cap: 1_000,
            when_full: WhenFull::DropOldest,
            default_ttl: Duration::from_secs(7 * 24 * 3600),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            max_message_bytes: 64 << 10,
            send_policy: SendPolicy::Privileged,
            topic_policy: Arc::new(OpenTopics),
            known_user: None,
            limits: BrokerLimits::default(),
            broker: None,
            inbox_store: None,
        }
    }
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("dir", &self.dir)
            .field("inbox_cap", &self.inbox_cap)
            .field("when_full", &self.when_full)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the service tells a sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SendReport {
    /// Connections of the user that got it live.
    pub live: usize,
    /// It is in the user's inbox, on disk (at this sequence number).
    pub stored: Option<u64>,
    /// A message with its id was in the inbox already: not stored again.
    pub duplicate: bool,
    /// Neither delivered nor stored, and why.
    pub refused: Option<String>,
}

/// A message to send to a user.
#[derive(Debug, Clone)]
pub struct Message {
    /// The command the client runs.
    pub command: String,
    /// Its payload.
    pub text: String,
    /// An id for de-duplication (default: a random one).
    pub id: Option<String>,
    /// How long it waits in the inbox (default: the service's).
    pub ttl: Option<Duration>,
    /// Store it when the user has no connection (default true).
    pub store: bool,
    /// Who sends it.
    pub from: Option<String>,
}

impl Message {
    /// A message running `command` with `text`, stored if the user is offline.
    pub fn new(command: impl Into<String>, text: impl Into<String>) -> Message {
        Message { command: command.into(), text: text.into(), id: None, ttl: None, store: true, from: None }
    }
}

/// The push service. Mount it on a router (`router.mount(push.clone())`) and keep a clone
/// to send from the application ([`Push::send`], [`Push::publish`]).
#[derive(Clone)]
pub struct Push {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: PushConfig,
    pub(crate) inbox: Arc<dyn InboxStore>,
    pub(crate) broker: Arc<dyn Broker>,
    /// `config.send_policy` as set now.
    pub(crate) send_policy: Live<SendPolicy>,
}

/// A random message id (128 bits, hex).
fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system provides random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Push {
    /// Opens the inbox in the configured directory.
    pub fn open(config: PushConfig) -> Result<Push, String> {
        let inbox: Arc<dyn InboxStore> = match &config.inbox_store {
            Some(store) => store.clone(),
            None => {
                std::fs::create_dir_all(&config.dir).map_err(|e| format!("{}: {e}", config.dir.display()))?;
                Arc::new(Inbox::open(&config.dir.join("inbox.redb"), config.inbox_cap, config.when_full)?)
            }
        };
        let broker = config.broker.clone().unwrap_or_else(|| LocalBroker::new(config.limits.clone()));
        let send_policy = Live::new(config.send_policy);
        Ok(Push { inner: Arc::new(Inner { config, inbox, broker, send_policy }) })
    }

    /// Changes who may send to users (`PushConfig::send_policy`), from now on.
    pub fn set_send_policy(&self, policy: SendPolicy) {
        self.inner.send_policy.set(policy);
    }

    /// Changes how many messages a user's inbox holds (`PushConfig::inbox_cap`, at least
    /// 1): an inbox over a smaller cap gives way as its next message arrives.
    pub fn set_inbox_cap(&self, cap: u64) {
        self.inner.inbox.set_cap(cap);
    }

    /// The inbox (counters, listing).
    pub fn inbox(&self) -> &Arc<dyn InboxStore> {
        &self.inner.inbox
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Sends `message` to `user`: live to every connection it holds; if none, into its
    /// inbox (answered once on disk) unless the message says not to.
    pub async fn send(&self, user: &str, message: Message) -> SendReport {
        self.inner.send(user, message).await
    }

    /// Sends `command` with `text` to every subscriber of `topic`; how many got it.
    pub async fn publish(
        &self,
        topic: &str,
        command: &str,
        text: impl Into<Text>,
    ) -> Result<usize, BrokerError> {
        let delivery = Delivery { command: command.to_owned(), text: text.into() };
        self.inner.broker.publish(topic, &delivery).await
    }
}

/// Why a message was neither delivered nor stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooLarge(String),
    UnknownUser(String),
    Full(String),
    Failed(String),
}

impl Refusal {
    fn message(&self) -> &str {
        match self {
            Refusal::TooLarge(m) | Refusal::UnknownUser(m) | Refusal::Full(m) | Refusal::Failed(m) => m,
        }
    }
}

impl Inner {
    pub(crate) async fn send(&self, user: &str, message: Message) -> SendReport {
        let mut report = SendReport { live: 0, stored: None, duplicate: false, refused: None };
        if let Err(r) = self.try_send(user, message, &mut report).await {
            report.refused = Some(r.message().to_owned());
        }
        report
    }

    /// Delivers or stores, filling `report`.
    pub(crate) async fn try_send(
        &self,
        user: &str,
        message: Message,
        report: &mut SendReport,
    ) -> Result<(), Refusal> {
        if message.text.len() > self.config.max_message_bytes {
            return Err(Refusal::TooLarge(format!(
                "a message is at most {} bytes",
                self.config.max_message_bytes
            )));
        }
        let delivery = Delivery { command: message.command.clone(), text: message.text.clone().into() };
        report.live = self.broker.to_user(user, &delivery).await;
        if report.live > 0 || !message.store {
            return Ok(());
        }
        if let Some(known) = &self.config.known_user {
            if !known(user) {
                return Err(Refusal::UnknownUser(format!("no account {user}")));
            }
        }
        let ttl = message.ttl.unwrap_or(self.config.default_ttl).min(self.config.max_ttl);
        let now = now_ms();
        let stored = InboxMessage {
            seq: 0,
            id: message.id.unwrap_or_else(random_id),
            command: message.command,
            text: message.text,
            from: message.from,
            sent_at: now,
            expires_at: now.saturating_add(ttl.as_millis() as u64),
        };
        match self.inbox.store(user, stored).await {
            Ok(Stored::Stored(seq)) => report.stored = Some(seq),
            Ok(Stored::Duplicate(seq)) => {
                report.stored = Some(seq);
                report.duplicate = true;
            }
            Ok(Stored::Full) => return Err(Refusal::Full(format!("the inbox of {user} is full"))),
            Err(why) if why.contains("busy") => return Err(Refusal::Full(why)),
            Err(why) => return Err(Refusal::Failed(why)),
        }
        Ok(())
    }
}

impl Service for Push {
    fn name(&self) -> &str {
        NAME
    }

    fn mount(self: Arc<Self>, router: &mut Router) {
        let broker = self.inner.broker.clone();
        router.on_connect(move |peer| {
            if let Some(d) = peer.directory() {
                broker.attach(&d);
            }
        });
        let broker = self.inner.broker.clone();
        router.on_disconnect(move |peer, _| broker.gone(peer));
        let inner = self.inner.clone();
        router.on_login(move |peer, old| {
            inner.broker.relogin(peer, old.map(|i| i.user.as_str()));
            // Tell a newly logged-in connection that messages wait for it.
            let Some(user) = peer.user() else { return };
            if old.is_some_and(|o| o.user == user.user) {
                return;
            }
            let (inner, peer, user) = (inner.clone(), peer.clone(), user.clone());
            tokio::spawn(async move {
                let count = inner.inbox.count(&user.user).await.unwrap_or(0);
                if count > 0 {
                    let _ = peer
                        .send_console(INBOX_WAITING, serde_json::json!({ "count": count }).to_string())
                        .await;
                }
            });
        });
        commands::register(self.inner.clone(), router);
    }
}
