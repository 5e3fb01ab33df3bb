//! What one node knows of the others: their heartbeats (address, services, load) and the
//! users and topic memberships they hold, kept in step by the messages of [`Gossip`].

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name (`--node`).
    pub node: String,
    /// Where clients reach it.
    pub addrs: Vec<String>,
    /// The services it serves.
    pub services: Vec<String>,
    /// Connections it holds now.
    pub connections: u64,
    /// Calls it received per second, over the last heartbeat interval.
    pub calls_per_sec: f64,
    /// It is draining: it takes no new connections.
    pub draining: bool,
    /// When it started, milliseconds since the epoch.
    pub started_ms: u64,
}

/// A user's connections (`u`, +n/-n), or a connection of a user (`None`: not logged in)
/// joining or leaving a topic.
pub type OnlineChange = (String, i64);
/// `(topic, user, delta)`.
pub type TopicChange = (String, Option<String>, i64);

/// What nodes tell each other on the cluster's node subject, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Gossip {
    /// "I am alive": the node, and the last state message it sent.
    Heartbeat {
        /// The node.
        info: NodeInfo,
        /// Sequence number of its last `Delta` or `Full`.
        seq: u64,
    },
    /// Changes since the previous state message.
    Delta {
        /// The node.
        node: String,
        /// One more than the previous state message's.
        seq: u64,
        /// Users' connection changes.
        online: Vec<OnlineChange>,
        /// Topic membership changes.
        topics: Vec<TopicChange>,
    },
    /// Everything the node holds (it replaces what was known).
    Full {
        /// The node.
        node: String,
        /// Its sequence number.
        seq: u64,
        /// Users and their connections.
        online: Vec<OnlineChange>,
        /// Topic memberships and their connections.
        topics: Vec<TopicChange>,
    },
    /// The node is leaving.
    Bye {
        /// The node.
        node: String,
    },
}

/// The state of one node as another knows it.
#[derive(Debug)]
pub struct Known {
    /// Its last heartbeat, if one came.
    pub info: Option<NodeInfo>,
    /// When it was last heard.
    pub seen: Instant,
    /// The sequence number of the last state message applied; `None` until a `Full` came.
    pub seq: Option<u64>,
    /// Connections per user.
    pub online: HashMap<String, i64>,
    /// Connections per (topic, user).
    pub topics: HashMap<(String, Option<String>), i64>,
}

impl Known {
    /// A node just heard of.
    pub fn new() -> Known {
        Known { info: None, seen: Instant::now(), seq: None, online: HashMap::new(), topics: HashMap::new() }
    }

    /// Connections of `user` there.
    pub fn online(&self, user: &str) -> i64 {
        self.online.get(user).copied().unwrap_or(0).max(0)
    }
}

impl Default for Known {
    fn default() -> Self {
        Known::new()
    }
}

/// Adds `delta` to `map[key]`, removing it at zero.
pub fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, i64>, key: K, delta: i64) {
    use std::collections::hash_map::Entry;
    match map.entry(key) {
        Entry::Occupied(mut e) => {
            let v = e.get().saturating_add(delta);
            match v {
                0 => {
                    e.remove();
                }
                v => *e.get_mut() = v,
            }
        }
        Entry::Vacant(e) if delta != 0 => {
            e.insert(delta);
        }
        Entry::Vacant(_) => {}
    }
}

/// A node's own users and memberships (what its `Full` says), and the changes not yet sent.
#[derive(Debug, Default)]
pub struct Mine {
    /// Connections per user.
    pub online: HashMap<String, i64>,
    /// Connections per (topic, user).
    pub topics: HashMap<(String, Option<String>), i64>,
    /// Changes since the last state message.
    pub pending_online: HashMap<String, i64>,
    /// Topic changes since the last state message.
    pub pending_topics: HashMap<(String, Option<String>), i64>,
    /// The last state message's sequence number.
    pub seq: u64,
}

impl Mine {
    /// A user's connections changed by `delta`.
    pub fn online_changed(&mut self, user: &str, delta: i64) {
        add(&mut self.online, user.to_owned(), delta);
        add(&mut self.pending_online, user.to_owned(), delta);
    }

    /// A connection of `user` joined or left `topic`.
    pub fn topic_changed(&mut self, topic: &str, user: Option<&str>, delta: i64) {
        let key = (topic.to_owned(), user.map(str::to_owned));
        add(&mut self.topics, key.clone(), delta);
        add(&mut self.pending_topics, key, delta);
    }

    /// The next `Delta`, if anything changed.
    pub fn delta(&mut self, node: &str) -> Option<Gossip> {
        if self.pending_online.is_empty() && self.pending_topics.is_empty() {
            return None;
        }
        self.seq += 1;
        Some(Gossip::Delta {
            node: node.to_owned(),
            seq: self.seq,
            online: self.pending_online.drain().collect(),
            topics: self.pending_topics.drain().map(|((t, u), d)| (t, u, d)).collect(),
        })
    }

    /// A `Full` (it carries the pending changes too).
    pub fn full(&mut self, node: &str) -> Gossip {
        self.pending_online.clear();
        self.pending_topics.clear();
        self.seq += 1;
        Gossip::Full {
            node: node.to_owned(),
            seq: self.seq,
            online: self.online.iter().map(|(u, n)| (u.clone(), *n)).collect(),
            topics: self.topics.iter().map(|((t, u), n)| (t.clone(), u.clone(), *n)).collect(),
        }
    }
}

/// Whether `name` can be a node's name: 1 to 64 letters, digits, `-` or `_` (it is part of
/// NATS subjects).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_carry_net_changes_and_a_full_replaces_them() {
        let mut mine = Mine::default();
        mine.online_changed("alice", 1);
        mine.online_changed("bob", 1);
        mine.online_changed("bob", -1);
        mine.topic_changed("room", Some("alice"), 1);
        let Some(Gossip::Delta { seq, online, topics, .. }) = mine.delta("n1") else { panic!("a delta") };
        assert_eq!((seq, online, topics.len()), (1, vec![("alice".to_owned(), 1)], 1));
        assert!(mine.delta("n1").is_none(), "nothing new");
        mine.online_changed("carol", 2);
        let Gossip::Full { seq, online, .. } = mine.full("n1") else { panic!("a full") };
        assert_eq!(seq, 2);
        assert_eq!(online.len(), 2, "alice and carol: {online:?}");
        assert!(mine.delta("n1").is_none(), "the full carried the pending change");
    }

    #[test]
    fn node_names_are_subject_tokens() {
        assert!(valid_node_name("node-1_a"));
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(65)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }
}
