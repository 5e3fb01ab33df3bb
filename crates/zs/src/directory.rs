//! The server-wide directory of connected peers, by id and by user: how handlers reach
//! other connections (push to a user's devices, kick, who is online). A user may hold
//! several connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::budget::Budget;
use crate::peer::Peer;
use crate::sync::{Recover, RecoverRw};

/// The connected peers of a server, by id and by logged-in user. Cheap to clone.
#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    peers: RwLock<HashMap<u64, Peer>>,
    /// Every peer as of the last change, built when first asked for after one: a broadcast
    /// walks it without counting each peer up and down (1.5 % of a fan-out's time).
    snapshot: Mutex<Option<Arc<[Peer]>>>,
    /// Peer ids by user, in login order.
    users: RwLock<HashMap<Box<str>, Vec<u64>>>,
    /// The server's memory budget, which its peers charge.
    budget: Option<Arc<Budget>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("peers", &self.len()).finish()
    }
}

impl Directory {
    /// The directory of a server whose peers charge `budget`.
    pub(crate) fn new(budget: Arc<Budget>) -> Directory {
        Directory { inner: Arc::new(Inner { budget: Some(budget), ..Inner::default() }) }
    }

    /// The server's memory budget.
    pub(crate) fn budget(&self) -> Option<Arc<Budget>> {
        self.inner.budget.clone()
    }

    /// A handle that does not keep the directory alive (what a peer holds).
    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The directory a weak handle points to, while it lives.
    pub(crate) fn upgrade(weak: &Weak<Inner>) -> Option<Directory> {
        weak.upgrade().map(|inner| Directory { inner })
    }

    /// Registers a connected peer.
    pub(crate) fn insert(&self, peer: Peer) {
        let mut peers = self.inner.peers.write_or_recover();
        peers.insert(peer.id(), peer);
        self.changed();
    }

    /// Drops the snapshot; called with the peers' write lock held, so that no snapshot of
    /// the old set is stored after it.
    fn changed(&self) {
        *self.inner.snapshot.lock_or_recover() = None;
    }

    /// Every connected peer, shared until the set changes.
    pub(crate) fn snapshot(&self) -> Arc<[Peer]> {
        if let Some(peers) = self.inner.snapshot.lock_or_recover().as_ref() {
            return peers.clone();
        }
        let peers = self.inner.peers.read_or_recover();
        let built: Arc<[Peer]> = peers.values().cloned().collect();
        *self.inner.snapshot.lock_or_recover() = Some(built.clone());
        built
    }

    /// Forgets a peer that is gone (and its login); returns how many remain.
    pub(crate) fn remove(&self, id: u64) -> usize {
        let mut peers = self.inner.peers.write_or_recover();
        self.changed();
        if let Some(user) = peers.remove(&id).and_then(|p| p.user()) {
            self.unindex(&user.user, id);
        }
        peers.len()
    }

    /// A peer's login changed from `old` to `new` (by name).
    pub(crate) fn relogin(&self, id: u64, old: Option<&str>, new: Option<&str>) {
        if let Some(old) = old {
            self.unindex(old, id);
        }
        // A peer that already left is not indexed again.
        if let Some(new) = new.filter(|_| self.inner.peers.read_or_recover().contains_key(&id)) {
            let mut users = self.inner.users.write_or_recover();
            let ids = users.entry(new.into()).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }

    fn unindex(&self, user: &str, id: u64) {
        let mut users = self.inner.users.write_or_recover();
        if let Some(ids) = users.get_mut(user) {
            ids.retain(|&p| p != id);
            if ids.is_empty() {
                users.remove(user);
            }
        }
    }

    /// The peer with this id, if connected.
    pub fn peer(&self, id: u64) -> Option<Peer> {
        self.inner.peers.read_or_recover().get(&id).cloned()
    }

    /// Every connected peer.
    pub fn peers(&self) -> Vec<Peer> {
        self.inner.peers.read_or_recover().values().cloned().collect()
    }

    /// Peers connected now.
    pub fn len(&self) -> usize {
        self.inner.peers.read_or_recover().len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connections of `user` (every device it is logged in on), oldest login first.
    pub fn user(&self, user: &str) -> Vec<Peer> {
        let ids = self.inner.users.read_or_recover().get(user).cloned().unwrap_or_default();
        let peers = self.inner.peers.read_or_recover();
        ids.iter().filter_map(|id| peers.get(id).cloned()).collect()
    }

    /// The users logged in now, with how many connections each holds, by name.
    pub fn users(&self) -> Vec<(String, usize)> {
        let mut out: Vec<_> =
            self.inner.users.read_or_recover().iter().map(|(u, ids)| (u.to_string(), ids.len())).collect();
        out.sort();
        out
    }
}
