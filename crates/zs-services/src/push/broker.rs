//! The broker seam: live delivery to users and topics, subscriptions and presence go
//! through [`Broker`], so that a cluster can put one over NATS in place of the in-process
//! [`LocalBroker`] without changing the service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use zs::{Directory, Peer, Prepared, Text};

/// A one-way command to deliver: its name and payload.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The command the receiving client runs.
    pub command: String,
    /// Its payload.
    pub text: Text,
}

/// Who is in a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// Connections subscribed.
    pub connections: usize,
    /// Distinct users among them (connections without a login are not counted).
    pub count: usize,
    /// Those users by name, unless the topic is over the list limit (counts only).
    pub users: Option<Vec<String>>,
}

/// Why a subscription or a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// A limit (topics per connection, subscribers per topic, topics) was reached.
    #[error("{0}")]
    Limit(String),
    /// The broker cannot serve (a lost link to the cluster, say).
    #[error("{0}")]
    Unavailable(String),
}

/// Live delivery, topics and presence. The in-process [`LocalBroker`] serves one server;
/// a cluster's broker reaches every node.
pub trait Broker: Send + Sync + 'static {
    /// Called with the server's directory of peers once it is known (on the first
    /// connection).
    fn attach(&self, directory: &Directory);
    /// Delivers to every connection `user` holds; how many got it.
    fn to_user<'a>(&'a self, user: &'a str, message: &'a Delivery) -> BoxFuture<'a, usize>;
    /// Connections `user` holds.
    fn online<'a>(&'a self, user: &'a str) -> BoxFuture<'a, usize>;
    /// Subscribes `peer` to `topic` (with presence events when `presence`); the topic's
    /// connections after it.
    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        peer: &'a Peer,
        presence: bool,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;
    /// Unsubscribes `peer` from `topic`; whether it was subscribed.
    fn unsubscribe<'a>(&'a self, topic: &'a str, peer: &'a Peer) -> BoxFuture<'a, bool>;
    /// `peer` has gone: it leaves every topic.
    fn gone(&self, peer: &Peer);
    /// `peer`'s login changed: its topics' presence follows (`old` is the user it was).
    fn relogin(&self, peer: &Peer, old: Option<&str>);
    /// Delivers to every subscriber of `topic` (encoded once); how many got it.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: &'a Delivery,
    ) -> BoxFuture<'a, Result<usize, BrokerError>>;
    /// Who is in `topic`.
    fn presence<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Presence>;
    /// Delivers to every logged-in connection (on every node); how many got it.
    fn broadcast<'a>(&'a self, message: &'a Delivery) -> BoxFuture<'a, Result<usize, BrokerError>>;
}

/// Limits of a [`LocalBroker`].
#[derive(Debug, Clone)]
pub struct BrokerLimits {
    /// Topics one connection may be subscribed to (default 64).
    pub topics_per_connection: usize,
    /// Connections one topic may hold (default 100,000).
    pub subscribers_per_topic: usize,
    /// Topics with subscribers at once (default 100,000).
    pub max_topics: usize,
    /// Above this many users, a topic's presence is counts only (default 1,000).
    pub presence_list_max: usize,
    /// Presence changes of a topic are gathered for this long and sent as one event
    /// (default 250 ms), so a reconnect storm is not an event storm.
    pub presence_interval: Duration,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits {
            topics_per_connection: 64,
            subscribers_per_topic: 100_000,
            max_topics: 100_000,
            presence_list_max: 1_000,
            presence_interval: Duration::from_millis(250),
        }
    }
}

/// The command presence events arrive on, at subscribers that asked for them.
pub const PRESENCE_EVENT: &str = "presence.event";

/// One topic's subscribers.
#[derive(Default)]
struct Topic {
    /// Subscribed connections, and whether each wants presence events.
    members: HashMap<u64, (Peer, bool)>,
    /// Members that want presence events.
    watchers: usize,
    /// Connections subscribed on other nodes of a cluster.
    remote: usize,
    /// Connections per user among them.
    users: HashMap<String, usize>,
    /// Users who joined or left since the last event (true: joined), in order.
    changes: Vec<(String, bool)>,
    /// An event is due (a task will send it).
    flushing: bool,
}

impl Topic {
    fn add_user(&mut self, user: &str) {
        self.add_user_n(user, 1);
    }

    fn remove_user(&mut self, user: &str) {
        self.remove_user_n(user, 1);
    }

    /// `n` more connections of `user`.
    fn add_user_n(&mut self, user: &str, n: usize) {
        let count = self.users.entry(user.to_owned()).or_default();
        let was = *count;
        *count = count.saturating_add(n);
        if was == 0 && n > 0 {
            self.changes.push((user.to_owned(), true));
        }
    }

    /// `n` fewer connections of `user` (down to none).
    fn remove_user_n(&mut self, user: &str, n: usize) {
        if let Some(count) = self.users.get_mut(user) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.users.remove(user);
                self.changes.push((user.to_owned(), false));
            }
        }
    }
}

/// Told of each local membership change: a connection of a user (`None`: not logged in)
/// joins (+1) or leaves (-1) a topic. A cluster's broker passes them to the other nodes.
pub(crate) type Observer = Box<dyn Fn(&str, Option<&str>, i64) + Send + Sync>;

/// The in-process broker: one server's connections, through its [`Directory`].
pub struct LocalBroker {
    limits: BrokerLimits,
    observer: OnceLock<Observer>,
    directory: OnceLock<Directory>,
    topics: Mutex<HashMap<String, Topic>>,
    /// Topics by connection.
    subscriptions: Mutex<HashMap<u64, Vec<String>>>,
    /// Itself, for the tasks that send presence events later.
    me: std::sync::Weak<LocalBroker>,
}

impl LocalBroker {
    /// A broker with these limits.
    pub fn new(limits: BrokerLimits) -> Arc<LocalBroker> {
        Arc::new_cyclic(|me| LocalBroker {
            limits,
            observer: OnceLock::new(),
            directory: OnceLock::new(),
            topics: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Sets the observer of local membership changes (once).
    pub(crate) fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    fn observed(&self, topic: &str, user: Option<&str>, delta: i64) {
        if let Some(o) = self.observer.get() {
            o(topic, user, delta);
        }
    }

    /// A connection of `user` on another node joined (`delta` > 0) or left `topic`: counts
    /// and presence include it.
    pub(crate) fn remote_change(&self, name: &str, user: Option<&str>, delta: i64) {
        let mut topics = self.topics();
        let topic = topics.entry(name.to_owned()).or_default();
        let n = usize::try_from(delta.unsigned_abs()).unwrap_or(usize::MAX);
        match delta > 0 {
            true => {
                topic.remote = topic.remote.saturating_add(n);
                if let Some(u) = user {
                    topic.add_user_n(u, n);
                }
            }
            false => {
                // No more than there are: a node's messages never take away another's.
                let n = n.min(topic.remote);
                topic.remote -= n;
                if let Some(u) = user {
                    topic.remove_user_n(u, n);
                }
            }
        }
        match topic.members.is_empty() && topic.remote == 0 {
            true => {
                topics.remove(name);
            }
            false => self.changed(name, topic),
        }
    }

    /// Connections subscribed to `topic` on other nodes.
    pub(crate) fn remote_connections(&self, topic: &str) -> usize {
        self.topics().get(topic).map_or(0, |t| t.remote)
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<String>>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules `topic`'s presence event unless one is due already.
    fn changed(&self, name: &str, topic: &mut Topic) {
        if topic.changes.is_empty() || topic.flushing {
            return;
        }
        if topic.watchers == 0 {
            topic.changes.clear();
            return;
        }
        topic.flushing = true;
        let Some(me) = self.me.upgrade() else { return };
        let (name, wait) = (name.to_owned(), self.limits.presence_interval);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            me.flush(&name);
        });
    }

    /// Sends `topic`'s gathered presence changes as one event.
    fn flush(&self, name: &str) {
        let (event, to) = {
            let mut topics = self.topics();
            let Some(topic) = topics.get_mut(name) else { return };
            topic.flushing = false;
            // A user's changes alternate (join, leave, join...): an even number within the
            // interval nets out, an odd number is its first.
            let mut net: HashMap<String, bool> = HashMap::new();
            for (user, joined) in topic.changes.drain(..) {
                if net.remove(&user).is_none() {
                    net.insert(user, joined);
                }
            }
            let count = topic.users.len();
            let listed = count <= self.limits.presence_list_max;
            let pick = |joined: bool| -> Vec<&str> {
                let mut users: Vec<&str> =
                    net.iter().filter(|(_, j)| **j == joined).map(|(u, _)| u.as_str()).collect();
                users.sort_unstable();
                users
            };
            let event = match listed {
                true => {
                    serde_json::json!({ "topic": name, "count": count, "joined": pick(true), "left": pick(false) })
                }
                false => serde_json::json!({ "topic": name, "count": count }),
            };
            if net.is_empty() && listed {
                return;
            }
            let to: Vec<Peer> = topic.members.values().filter(|(_, w)| *w).map(|(p, _)| p.clone()).collect();
            (event.to_string(), to)
        };
        send_all(&to, &Delivery { command: PRESENCE_EVENT.into(), text: event.into() });
    }

    fn leave(&self, topic_name: &str, topics: &mut HashMap<String, Topic>, peer: &Peer) -> bool {
        let Some(topic) = topics.get_mut(topic_name) else { return false };
        let Some((_, watching)) = topic.members.remove(&peer.id()) else { return false };
        topic.watchers -= usize::from(watching);
        let user = peer.user();
        if let Some(user) = &user {
            topic.remove_user(&user.user);
        }
        self.observed(topic_name, user.as_ref().map(|u| u.user.as_str()), -1);
        if topic.members.is_empty() && topic.remote == 0 {
            topics.remove(topic_name);
        } else {
            self.changed(topic_name, topic);
        }
        true
    }
}

/// Sends `message` to each of `peers`, encoded once; how many took it.
fn send_all(peers: &[Peer], message: &Delivery) -> usize {
    let Some(first) = peers.first() else { return 0 };
    let Ok(prepared) = first.prepare_console(&message.command, message.text.clone()) else { return 0 };
    send_prepared_all(peers, &prepared)
}

fn send_prepared_all(peers: &[Peer], prepared: &Prepared) -> usize {
    peers.iter().filter(|p| p.send_prepared(prepared).is_ok()).count()
}

impl Broker for LocalBroker {
    fn attach(&self, directory: &Directory) {
        let _ = self.directory.set(directory.clone());
    }

    fn to_user<'a>(&'a self, user: &'a str, message: &'a Delivery) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let peers = self.directory.get().map(|d| d.user(user)).unwrap_or_default();
            send_all(&peers, message)
        })
    }

    fn online<'a>(&'a self, user: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(async move { self.directory.get().map_or(0, |d| d.user(user).len()) })
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        peer: &'a Peer,
        presence: bool,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let mut subs = self.subscriptions();
            let mine = subs.entry(peer.id()).or_default();
            let already = mine.iter().any(|t| t == topic);
            if !already && mine.len() >= self.limits.topics_per_connection {
                let max = self.limits.topics_per_connection;
                return Err(BrokerError::Limit(format!("at most {max} topics per connection")));
            }
            let mut topics = self.topics();
            if !topics.contains_key(topic) && topics.len() >= self.limits.max_topics {
                let max = self.limits.max_topics;
                return Err(BrokerError::Limit(format!("the server holds {max} topics already")));
            }
            let t = topics.entry(topic.to_owned()).or_default();
            if !already && t.members.len() >= self.limits.subscribers_per_topic {
                let max = self.limits.subscribers_per_topic;
                if t.members.is_empty() {
                    topics.remove(topic);
                }
                return Err(BrokerError::Limit(format!("topic {topic} has {max} subscribers already")));
            }
            match t.members.insert(peer.id(), (peer.clone(), presence)) {
                None => {
                    let user = peer.user();
                    if let Some(user) = &user {
                        t.add_user(&user.user);
                    }
                    self.observed(topic, user.as_ref().map(|u| u.user.as_str()), 1);
                    mine.push(topic.to_owned());
                }
                Some((_, was_watching)) => t.watchers -= usize::from(was_watching),
            }
            t.watchers += usize::from(presence);
            let n = t.members.len();
            self.changed(topic, t);
            Ok(n)
        })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a str, peer: &'a Peer) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut subs = self.subscriptions();
            if let Some(mine) = subs.get_mut(&peer.id()) {
                mine.retain(|t| t != topic);
                if mine.is_empty() {
                    subs.remove(&peer.id());
                }
            }
            let mut topics = self.topics();
            self.leave(topic, &mut topics, peer)
        })
    }

    fn gone(&self, peer: &Peer) {
        let Some(mine) = self.subscriptions().remove(&peer.id()) else { return };
        let mut topics = self.topics();
        for topic in mine {
            self.leave(&topic, &mut topics, peer);
        }
    }

    fn relogin(&self, peer: &Peer, old: Option<&str>) {
        let mine = self.subscriptions().get(&peer.id()).cloned().unwrap_or_default();
        let new = peer.user();
        let mut topics = self.topics();
        for name in mine {
            let Some(topic) = topics.get_mut(&name) else { continue };
            if let Some(old) = old {
                topic.remove_user(old);
            }
            if let Some(new) = &new {
                topic.add_user(&new.user);
            }
            self.observed(&name, old, -1);
            self.observed(&name, new.as_ref().map(|u| u.user.as_str()), 1);
            self.changed(&name, topic);
        }
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: &'a Delivery,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let peers: Vec<Peer> = match self.topics().get(topic) {
                Some(t) => t.members.values().map(|(p, _)| p.clone()).collect(),
                None => return Ok(0),
            };
            Ok(send_all(&peers, message))
        })
    }

    fn broadcast<'a>(&'a self, message: &'a Delivery) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(async move {
            let all = self.directory.get().map(|d| d.peers()).unwrap_or_default();
            let logged_in: Vec<Peer> = all.into_iter().filter(|p| p.user().is_some()).collect();
            Ok(send_all(&logged_in, message))
        })
    }

    fn presence<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Presence> {
        Box::pin(async move {
            let topics = self.topics();
            let Some(t) = topics.get(topic) else {
                return Presence { connections: 0, count: 0, users: Some(Vec::new()) };
            };
            let count = t.users.len();
            let users = (count <= self.limits.presence_list_max).then(|| {
                let mut u: Vec<String> = t.users.keys().cloned().collect();
                u.sort();
                u
            });
            Presence { connections: t.members.len() + t.remote, count, users }
        })
    }
}
