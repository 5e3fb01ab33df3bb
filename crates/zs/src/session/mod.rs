//! Resumable sessions: a logical connection that outlives its physical links. Both ends
//! count the bytes of the frame stream, keep what the other has not acknowledged, and
//! after a reconnect replay from where the other stopped; the connection above never
//! notices. See `docs/PROTOCOL.md` §10 and ARCHITECTURE "Resumable sessions".

mod blocks;
mod link;
mod open;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use zs_wire::session::{ID_LEN, SECRET_LEN};

pub(crate) use link::SessionLink;
pub(crate) use open::{accept, connect, Admitted, Reach};

use crate::secure::{Fingerprint, SecuredLink};
use crate::sync::Recover;

/// Settings of resumable sessions (both ends).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Most unacknowledged bytes each end keeps for replay (default 4 MiB); a writer waits
    /// beyond it until acks free room.
    pub replay_budget: usize,
    /// How long a server keeps a session whose link dropped, and how long a client keeps
    /// trying to resume it (default 5 minutes).
    pub keep_detached: Duration,
    /// First delay before a client reconnects (default 50 ms); it doubles after each
    /// failure up to `max_backoff` (default 5 s), each delay jittered by ±50 %.
    pub min_backoff: Duration,
    /// Longest delay between reconnect attempts.
    pub max_backoff: Duration,
    /// An ack is sent once this many bytes arrived unacknowledged (default 64 KiB)...
    pub ack_every: usize,
    /// ...or this long after the first of them (default 20 ms), whichever is first. Acks
    /// ride along with outgoing writes when there are any.
    pub ack_delay: Duration,
    /// Most sessions a server keeps without a link at once (default 10,000); one more
    /// ends the session detached the longest. Detached sessions are counted apart from
    /// live connections: a server full of them still takes live clients.
    pub max_detached: usize,
    /// Most detached sessions of one client (its Noise key, or its address without one)
    /// at once (default 256); one more ends that client's oldest.
    pub max_detached_per_client: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            replay_budget: 4 << 20,
            keep_detached: Duration::from_secs(300),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            ack_every: 64 << 10,
            ack_delay: Duration::from_millis(20),
            max_detached: 10_000,
            max_detached_per_client: 256,
        }
    }
}

/// What happened to a session's link; given to [`Router::on_session`](crate::Router::on_session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The physical link dropped; the session waits to be resumed.
    LinkLost {
        /// Why the link dropped.
        reason: String,
    },
    /// The session carries on over a new link.
    Resumed {
        /// How long it was without a link.
        after: Duration,
        /// Bytes this end sent again.
        replayed: u64,
    },
    /// The session is over without a link coming back: the connection closes next.
    Expired {
        /// Why.
        reason: String,
    },
}

/// A session's state, as [`Peer::session`](crate::Peer::session) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// The session id (hex).
    pub id: String,
    /// Whether a physical link carries it now.
    pub attached: bool,
    /// Times it resumed over a new link.
    pub resumes: u64,
    /// Bytes this end sent again after resumes.
    pub replayed_bytes: u64,
    /// Bytes this end sent that the other has not acknowledged (held for replay).
    pub unacked_bytes: u64,
}

/// What a new physical link brings to a session, or why none will come.
pub(crate) enum Attach {
    /// A resumed link: the other end received `peer_received` bytes; `leftover` is what
    /// was read past the session answer; `answer` says this end (the server) still owes
    /// the resumed answer.
    Link { link: SecuredLink, peer_received: u64, leftover: BytesMut, answer: bool },
    /// The session cannot resume.
    Failed(String),
}

/// The part of a session shared between its link (in the connection's task), the server's
/// registry or the client's reconnect task, and the peer handle.
pub(crate) struct SessionShared {
    pub(crate) id: [u8; ID_LEN],
    pub(crate) secret: [u8; SECRET_LEN],
    /// The key the client proved when the session began; a resume must prove the same.
    pub(crate) client_key: Option<Fingerprint>,
    offered: Mutex<Option<Attach>>,
    /// Set while `offered` holds something: the connection checks it on every poll.
    has_offer: AtomicBool,
    waker: AtomicWaker,
    attached: AtomicBool,
    ended: AtomicBool,
    resumes: AtomicU64,
    replayed: AtomicU64,
    unacked: AtomicU64,
    /// Bytes received (published when the link drops, for the client's resume hello).
    received: AtomicU64,
    /// Ended early to keep within the caps on detached sessions.
    evicted: AtomicBool,
}

impl SessionShared {
    fn new(id: [u8; ID_LEN], secret: [u8; SECRET_LEN], client_key: Option<Fingerprint>) -> Arc<Self> {
        Arc::new(SessionShared {
            id,
            secret,
            client_key,
            offered: Mutex::new(None),
            has_offer: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            attached: AtomicBool::new(true),
            ended: AtomicBool::new(false),
            resumes: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            unacked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
        })
    }

    /// Hands the session a new link (or its failure) and wakes its connection.
    pub(crate) fn offer(&self, attach: Attach) {
        *self.offered.lock_or_recover() = Some(attach);
        self.has_offer.store(true, SeqCst);
        self.waker.wake();
    }

    fn take_offer(&self) -> Option<Attach> {
        // Loaded first: the common case (no offer) costs no locked instruction.
        if !self.has_offer.load(SeqCst) || !self.has_offer.swap(false, SeqCst) {
            return None;
        }
        self.offered.lock_or_recover().take()
    }

    fn ended(&self) -> bool {
        self.ended.load(Relaxed)
    }

    /// The status reported to the application.
    pub(crate) fn status(&self) -> SessionStatus {
        SessionStatus {
            id: hex(&self.id),
            attached: self.attached.load(Relaxed),
            resumes: self.resumes.load(Relaxed),
            replayed_bytes: self.replayed.load(Relaxed),
            unacked_bytes: self.unacked.load(Relaxed),
        }
    }
}

impl fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &hex(&self.id)).finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sessions a server keeps, by id, and which of them wait without a link.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<[u8; ID_LEN], Arc<SessionShared>>>,
    detached: Mutex<Detached>,
    /// (global, per client) caps on detached sessions.
    caps: (usize, usize),
}

/// Whose a session is, for the per-client cap: the key the client proved, or its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    Key([u8; 32]),
    Addr(std::net::IpAddr),
}

/// Detached sessions, oldest first.
#[derive(Default)]
struct Detached {
    next: u64,
    order: std::collections::BTreeMap<u64, (Arc<SessionShared>, Owner)>,
    /// Where each is in `order`.
    at: HashMap<[u8; ID_LEN], u64>,
    per_owner: HashMap<Owner, usize>,
}

impl Detached {
    fn remove(&mut self, id: &[u8; ID_LEN]) -> Option<(Arc<SessionShared>, Owner)> {
        let seq = self.at.remove(id)?;
        let (shared, owner) = self.order.remove(&seq)?;
        if let Some(n) = self.per_owner.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(&owner);
            }
        }
        Some((shared, owner))
    }
}

impl Registry {
    /// A registry with the caps of `config` (none when the server keeps no sessions).
    pub(crate) fn new(config: Option<&SessionConfig>) -> Self {
        let caps = config.map_or((0, 0), |c| (c.max_detached, c.max_detached_per_client));
        Registry { caps, ..Registry::default() }
    }

    /// A session lost its link: it is counted as detached, and the oldest detached
    /// sessions (of its owner, then of all) end while a cap is exceeded.
    pub(crate) fn detach(&self, shared: &Arc<SessionShared>, owner: Owner) {
        let mut evicted = Vec::new();
        {
            let mut d = self.detached.lock_or_recover();
            let seq = d.next;
            d.next += 1;
            d.order.insert(seq, (shared.clone(), owner));
            d.at.insert(shared.id, seq);
            *d.per_owner.entry(owner).or_insert(0) += 1;
            while d.per_owner.get(&owner).copied().unwrap_or(0) > self.caps.1.max(1) {
                let oldest = d.order.iter().find(|(_, (_, o))| *o == owner).map(|(_, (s, _))| s.id);
                let Some(id) = oldest else { break };
                evicted.extend(d.remove(&id));
            }
            while d.order.len() > self.caps.0.max(1) {
                let Some(id) = d.order.values().next().map(|(s, _)| s.id) else { break };
                evicted.extend(d.remove(&id));
            }
        }
        for (s, _) in evicted {
            s.offer(Attach::Failed("session ended: too many sessions were waiting to be resumed".into()));
            s.evicted.store(true, Relaxed);
        }
    }

    /// A session has a link again (or is gone).
    pub(crate) fn attach(&self, id: &[u8; ID_LEN]) {
        self.detached.lock_or_recover().remove(id);
    }

    /// Sessions kept now without a link.
    pub(crate) fn detached(&self) -> usize {
        self.detached.lock_or_recover().order.len()
    }

    fn insert(&self, s: Arc<SessionShared>) {
        self.sessions.lock_or_recover().insert(s.id, s);
    }

    fn get(&self, id: &[u8; ID_LEN]) -> Option<Arc<SessionShared>> {
        self.sessions.lock_or_recover().get(id).cloned()
    }

    fn remove(&self, id: &[u8; ID_LEN]) {
        self.sessions.lock_or_recover().remove(id);
        self.attach(id);
    }

    /// Sessions kept now (with or without a link).
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock_or_recover().len()
    }
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides random bytes");
    b
}

/// The MAC that proves knowledge of a session's secret on one connection.
fn proof(secret: &[u8; SECRET_LEN], id: &[u8; ID_LEN], received: u64, binding: &[u8; 32]) -> blake3::Hash {
    blake3::keyed_hash(secret, &zs_wire::session::proof_message(id, received, binding))
}
