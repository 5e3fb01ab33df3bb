//! The offline inbox: per user, in a redb database in the data directory. Writes go
//! through a group-commit thread ([`crate::commit`]): a sender hears "stored" only after
//! the fsynced commit that holds its message, and a write that fails is left out of the
//! transaction whole, its message id with it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::commit::{Batcher, Committer, Shape};
use futures_util::future::BoxFuture;

/// Messages by (user, sequence number): the inbox in delivery order. Sequence numbers are
/// unique server-wide and never reused, so a late acknowledgement never removes another
/// message.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// Sequence numbers by (user, message id): duplicates are found here.
const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("ids");
/// The next sequence number (key `next`), written once per commit.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Users whose message count the writer keeps in memory; past this the counts are
/// forgotten and counted again from the table when needed.
const COUNTED_USERS: usize = 100_000;

/// Writes waiting for the writer thread; past this, stores are refused as busy.
pub const QUEUE: usize = 4096;
/// Bytes of messages one listing returns at most (at least one message).
pub const LIST_BYTES: usize = 4 << 20;
/// Writes committed together at most.
const BATCH: usize = 1024;
/// How often expired messages are swept, and how many at most per sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_MAX: usize = 10_000;

/// A stored message, as the inbox lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Position in its user's inbox (delivery order; acknowledged by it).
    #[serde(default)]
    pub seq: u64,
    /// The sender's id for it (duplicates of an id are dropped).
    pub id: String,
    /// The command the client runs for it.
    pub command: String,
    /// Its payload.
    pub text: String,
    /// Who sent it (an account name), if a user did.
    pub from: Option<String>,
    /// When it was stored, milliseconds since the epoch.
    pub sent_at: u64,
    /// When it expires, milliseconds since the epoch.
    pub expires_at: u64,
}

/// What to do when a user's inbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Drop the oldest message to make room (counted). The default.
    #[default]
    DropOldest,
    /// Refuse the new message (counted); the sender is told.
    RefuseNewest,
}

/// The outcome of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// On disk at this sequence number.
    Stored(u64),
    /// A message with this id is already in the inbox (at this sequence number).
    Duplicate(u64),
    /// The inbox is full and refuses new messages.
    Full,
}

/// What the inbox has done since the server started.
#[derive(Debug, Default)]
pub struct InboxCounters {
    /// Messages stored.
    pub stored: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Oldest messages dropped for room.
    pub dropped_oldest: AtomicU64,
    /// New messages refused by a full inbox.
    pub refused: AtomicU64,
    /// Messages removed because they expired.
    pub expired: AtomicU64,
    /// Messages acknowledged (and removed).
    pub acked: AtomicU64,
    /// Commits (each one fsync).
    pub commits: AtomicU64,
}

/// Where offline messages are kept: the node's own redb [`Inbox`], or a store a cluster
/// shares (`cluster::JetStreamInbox`).
pub trait InboxStore: Send + Sync + 'static {
    /// Stores `message` for `user`; answers once it is durable.
    fn store<'a>(&'a self, user: &'a str, message: InboxMessage) -> BoxFuture<'a, Result<Stored, String>>;
    /// Removes the messages `seqs` of `user` (acknowledged); how many were there.
    fn ack<'a>(&'a self, user: &'a str, seqs: Vec<u64>) -> BoxFuture<'a, Result<u64, String>>;
    /// Up to `limit` unexpired messages of `user` after `after`, in order, and whether more follow.
    fn list<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<(Vec<InboxMessage>, bool), String>>;
    /// Messages `user` holds.
    fn count<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<u64, String>>;
    /// What the store has done since the server started.
    fn counters(&self) -> &InboxCounters;
    /// Changes the most messages a user holds (at least 1).
    fn set_cap(&self, cap: u64);
}

impl InboxStore for Inbox {
    fn store<'a>(&'a self, user: &'a str, message: InboxMessage) -> BoxFuture<'a, Result<Stored, String>> {
        Box::pin(Inbox::store(self, user, message))
    }

    fn ack<'a>(&'a self, user: &'a str, seqs: Vec<u64>) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(Inbox::ack(self, user, seqs))
    }

    fn list<'a>(
        &'a self,
        user: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<(Vec<InboxMessage>, bool), String>> {
        let (inbox, user) = (self.clone(), user.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inbox.list(&user, after, limit)).await.map_err(e)?
        })
    }

    fn count<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<u64, String>> {
        let (inbox, user) = (self.clone(), user.to_owned());
        Box::pin(async move { tokio::task::spawn_blocking(move || inbox.count(&user)).await.map_err(e)? })
    }

    fn counters(&self) -> &InboxCounters {
        Inbox::counters(self)
    }

    fn set_cap(&self, cap: u64) {
        Inbox::set_cap(self, cap)
    }
}

enum Write {
    Store { user: String, message: InboxMessage, done: oneshot::Sender<Result<Stored, String>> },
    Ack { user: String, seqs: Vec<u64>, done: oneshot::Sender<Result<u64, String>> },
}

/// The inbox database and its writer thread.
#[derive(Clone)]
pub struct Inbox {
    db: Arc<Database>,
    writes: Committer<Write>,
    counters: Arc<InboxCounters>,
    /// The most messages a user holds, changeable while running.
    cap: Arc<AtomicU64>,
}

fn e<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Inbox {
    /// Opens (or makes) the database at `path` and starts its writer: a user holds at most
    /// `cap` messages, `when_full` says which gives way.
    pub fn open(path: &Path, cap: u64, when_full: WhenFull) -> Result<Inbox, String> {
        let db = Database::create(path).map_err(|err| format!("{}: {err}", path.display()))?;
        let db = Arc::new(db);
        let counters = Arc::new(InboxCounters::default());
        let cap = Arc::new(AtomicU64::new(cap.max(1)));
        let writer = Writer::new(db.clone(), counters.clone(), cap.clone(), when_full)?;
        let shape = Shape { queue: QUEUE, batch: BATCH, idle_every: SWEEP_EVERY };
        let writes = Committer::start("zs-inbox", "inbox", writer, shape)?;
        Ok(Inbox { db, writes, counters, cap })
    }

    /// Changes the most messages a user holds (at least 1); a fuller inbox gives way as
    /// its next message arrives.
    pub fn set_cap(&self, cap: u64) {
        self.cap.store(cap.max(1), Relaxed);
    }

    /// The counters.
    pub fn counters(&self) -> &InboxCounters {
        &self.counters
    }

    fn send(&self, w: Write) -> Result<(), String> {
        self.writes.send(w)
    }

    /// Stores `message` for `user`; answers once it is on disk.
    pub async fn store(&self, user: &str, message: InboxMessage) -> Result<Stored, String> {
        let (done, rx) = oneshot::channel();
        self.send(Write::Store { user: user.to_owned(), message, done })?;
        rx.await.map_err(|_| "the inbox writer stopped".to_owned())?
    }

    /// Removes the messages `seqs` of `user` (acknowledged); how many were there.
    pub async fn ack(&self, user: &str, seqs: Vec<u64>) -> Result<u64, String> {
        let (done, rx) = oneshot::channel();
        self.send(Write::Ack { user: user.to_owned(), seqs, done })?;
        rx.await.map_err(|_| "the inbox writer stopped".to_owned())?
    }

    /// Up to `limit` unexpired messages of `user` after sequence number `after`, in order
    /// (fewer once they hold [`LIST_BYTES`], so a page fits in a reply), and whether more
    /// follow.
    pub fn list(&self, user: &str, after: u64, limit: usize) -> Result<(Vec<InboxMessage>, bool), String> {
        let now = now_ms();
        let txn = self.db.begin_read().map_err(e)?;
        let table = txn.open_table(MESSAGES).map_err(e)?;
        let (mut out, mut bytes) = (Vec::new(), 0);
        for row in table.range((user, after.saturating_add(1))..=(user, u64::MAX)).map_err(e)? {
            let (k, v) = row.map_err(e)?;
            let Ok(mut m) = serde_json::from_slice::<InboxMessage>(v.value()) else { continue };
            if m.expires_at <= now {
                continue;
            }
            if out.len() == limit || (bytes >= LIST_BYTES && !out.is_empty()) {
                return Ok((out, true));
            }
            bytes += m.text.len() + m.command.len() + m.id.len();
            m.seq = k.value().1;
            out.push(m);
        }
        Ok((out, false))
    }

    /// Messages `user` holds (expired ones not yet swept included).
    pub fn count(&self, user: &str) -> Result<u64, String> {
        let txn = self.db.begin_read().map_err(e)?;
        let messages = txn.open_table(MESSAGES).map_err(e)?;
        count_of(&messages, user)
    }
}

/// The next sequence number kept in `db` (1 in a new one).
fn next_seq(db: &Database) -> Result<u64, String> {
    let txn = db.begin_read().map_err(e)?;
    let meta = txn.open_table(META).map_err(e)?;
    Ok(meta.get("next").map_err(e)?.map_or(1, |v| v.value()))
}

/// Messages of `user` in `messages`.
fn count_of(
    messages: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    user: &str,
) -> Result<u64, String> {
    let mut n = 0;
    for row in messages.range((user, 0)..=(user, u64::MAX)).map_err(e)? {
        row.map_err(e)?;
        n += 1;
    }
    Ok(n)
}

struct Writer {
    db: Arc<Database>,
    counters: Arc<InboxCounters>,
    cap: Arc<AtomicU64>,
    when_full: WhenFull,
    /// The next sequence number.
    next: u64,
    /// Messages per user, for the users seen lately (exact: this thread makes every change).
    counts: HashMap<String, u64>,
    /// Messages the transaction being built drops for room: counted once it commits.
    pending: Dropped,
    /// `next` before the transaction being built.
    rollback_to: u64,
}

/// Messages a transaction removed to make room.
#[derive(Default)]
struct Dropped {
    oldest: u64,
    expired: u64,
}

/// What one write of a batch did (kept until the batch commits or is given up).
enum Outcome {
    Store(Result<Stored, String>),
    Ack(Result<u64, String>),
}

impl Outcome {
    fn failed(&self) -> bool {
        matches!(self, Outcome::Store(Err(_)) | Outcome::Ack(Err(_)))
    }
}

impl Writer {
    /// A writer of `db` (its tables made if new).
    fn new(
        db: Arc<Database>,
        counters: Arc<InboxCounters>,
        cap: Arc<AtomicU64>,
        when_full: WhenFull,
    ) -> Result<Writer, String> {
        let txn = db.begin_write().map_err(e)?;
        {
            txn.open_table(MESSAGES).map_err(e)?;
            txn.open_table(IDS).map_err(e)?;
            txn.open_table(META).map_err(e)?;
        }
        txn.commit().map_err(e)?;
        let next = next_seq(&db)?;
        let (counts, pending) = (HashMap::new(), Dropped::default());
        Ok(Writer { db, counters, cap, when_full, next, counts, pending, rollback_to: next })
    }

    /// Answers `w` with what it did (its transaction committed, or it failed), counted.
    fn answer_write(&self, w: Write, outcome: Outcome) {
        match (w, outcome) {
            (Write::Store { done, .. }, Outcome::Store(r)) => {
                match &r {
                    Ok(Stored::Stored(_)) => self.counters.stored.fetch_add(1, Relaxed),
                    Ok(Stored::Duplicate(_)) => self.counters.duplicates.fetch_add(1, Relaxed),
                    Ok(Stored::Full) => self.counters.refused.fetch_add(1, Relaxed),
                    Err(_) => 0,
                };
                let _ = done.send(r);
            }
            (Write::Ack { done, .. }, Outcome::Ack(r)) => {
                if let Ok(n) = &r {
                    self.counters.acked.fetch_add(*n, Relaxed);
                }
                let _ = done.send(r);
            }
            (w, _) => w.refuse("the inbox writer lost this write's outcome"),
        }
    }

    /// Messages `user` holds now (counted once, then kept).
    fn count(
        &mut self,
        messages: &redb::Table<'_, (&'static str, u64), &'static [u8]>,
        user: &str,
    ) -> Result<u64, String> {
        if let Some(&n) = self.counts.get(user) {
            return Ok(n);
        }
        if self.counts.len() >= COUNTED_USERS {
            self.counts.clear();
        }
        let n = count_of(messages, user)?;
        self.counts.insert(user.to_owned(), n);
        Ok(n)
    }

    fn store(
        &mut self,
        t: &mut Tables<'_, '_>,
        user: &str,
        m: &InboxMessage,
        now: u64,
    ) -> Result<Stored, String> {
        // A duplicate gets the sequence number its id holds.
        if let Some(held) = t.ids.get((user, m.id.as_str())).map_err(e)?.map(|v| v.value()) {
            return Ok(Stored::Duplicate(held));
        }
        let mut count = self.count(t.messages, user)?;
        // A full inbox makes room: expired messages at its front first, then as `when_full`
        // says. (Expired messages elsewhere are swept, and never listed.)
        let cap = self.cap.load(Relaxed);
        while count >= cap {
            let Some(oldest) = first_of(t.messages, user)? else { break };
            if oldest.1.expires_at > now {
                match self.when_full {
                    WhenFull::RefuseNewest => return Ok(Stored::Full),
                    WhenFull::DropOldest => self.pending.oldest += 1,
                };
            } else {
                self.pending.expired += 1;
            }
            t.messages.remove((user, oldest.0)).map_err(e)?;
            t.ids.remove((user, oldest.1.id.as_str())).map_err(e)?;
            count -= 1;
        }
        // The message and its id, together (and neither if this write fails: see `commit`).
        let seq = self.next;
        let bytes = serde_json::to_vec(m).map_err(e)?;
        t.messages.insert((user, seq), bytes.as_slice()).map_err(e)?;
        t.ids.insert((user, m.id.as_str()), seq).map_err(e)?;
        self.next += 1;
        self.counts.insert(user.to_owned(), count + 1);
        Ok(Stored::Stored(seq))
    }

    fn ack(&mut self, t: &mut Tables<'_, '_>, user: &str, seqs: &[u64]) -> Result<u64, String> {
        let mut removed = 0;
        for &seq in seqs {
            let Some(v) = t.messages.remove((user, seq)).map_err(e)? else { continue };
            if let Ok(m) = serde_json::from_slice::<InboxMessage>(v.value()) {
                t.ids.remove((user, m.id.as_str())).map_err(e)?;
            }
            removed += 1;
        }
        if let Some(n) = self.counts.get_mut(user) {
            *n = n.saturating_sub(removed);
        }
        Ok(removed)
    }

    /// Removes expired messages (at most `SWEEP_MAX`) in one transaction.
    fn sweep(&mut self) {
        let now = now_ms();
        let swept = (|| -> Result<u64, String> {
            let expired: Vec<(String, u64, String)> = {
                let txn = self.db.begin_read().map_err(e)?;
                let table = txn.open_table(MESSAGES).map_err(e)?;
                let mut found = Vec::new();
                for row in table.iter().map_err(e)? {
                    let (k, v) = row.map_err(e)?;
                    let Ok(m) = serde_json::from_slice::<InboxMessage>(v.value()) else { continue };
                    if m.expires_at <= now {
                        let (user, seq) = k.value();
                        found.push((user.to_owned(), seq, m.id));
                        if found.len() == SWEEP_MAX {
                            break;
                        }
                    }
                }
                found
            };
            if expired.is_empty() {
                return Ok(0);
            }
            let txn = self.db.begin_write().map_err(e)?;
            {
                let mut messages = txn.open_table(MESSAGES).map_err(e)?;
                let mut ids = txn.open_table(IDS).map_err(e)?;
                for (user, seq, id) in &expired {
                    if messages.remove((user.as_str(), *seq)).map_err(e)?.is_some() {
                        ids.remove((user.as_str(), id.as_str())).map_err(e)?;
                    }
                }
            }
            txn.commit().map_err(e)?;
            Ok(expired.len() as u64)
        })();
        // Counted again when next needed.
        self.counts.clear();
        match swept {
            Ok(n) => drop(self.counters.expired.fetch_add(n, Relaxed)),
            Err(why) => tracing::warn!("inbox sweep failed: {why}"),
        }
    }
}

impl Batcher for Writer {
    type Write = Write;
    type Outcome = Outcome;

    fn begin(&mut self) -> Result<WriteTransaction, String> {
        self.pending = Dropped::default();
        self.db.begin_write().map_err(e)
    }

    fn apply(&mut self, txn: &WriteTransaction, batch: &[Write]) -> Result<Vec<Outcome>, String> {
        self.rollback_to = self.next;
        let mut messages = txn.open_table(MESSAGES).map_err(e)?;
        let mut ids = txn.open_table(IDS).map_err(e)?;
        let mut t = Tables { messages: &mut messages, ids: &mut ids };
        let now = now_ms();
        let mut outcomes = Vec::with_capacity(batch.len());
        for w in batch {
            outcomes.push(match w {
                Write::Store { user, message, .. } => Outcome::Store(self.store(&mut t, user, message, now)),
                Write::Ack { user, seqs, .. } => Outcome::Ack(self.ack(&mut t, user, seqs)),
            });
        }
        txn.open_table(META).map_err(e)?.insert("next", self.next).map_err(e)?;
        Ok(outcomes)
    }

    fn failed(outcome: &Outcome) -> bool {
        outcome.failed()
    }

    fn rolled_back(&mut self) {
        // What this thread keeps is read again (counts lazily).
        self.counts.clear();
        self.next = next_seq(&self.db).unwrap_or(self.rollback_to);
    }

    fn committed(&mut self, _batch: &[Write], _outcomes: &[Outcome]) {
        self.counters.commits.fetch_add(1, Relaxed);
        self.counters.dropped_oldest.fetch_add(self.pending.oldest, Relaxed);
        self.counters.expired.fetch_add(self.pending.expired, Relaxed);
    }

    fn answer(&self, write: Write, outcome: Outcome) {
        self.answer_write(write, outcome);
    }

    fn fail(write: Write, why: &str) {
        write.refuse(why);
    }

    fn idle(&mut self) {
        self.sweep();
    }
}

struct Tables<'a, 't> {
    messages: &'a mut redb::Table<'t, (&'static str, u64), &'static [u8]>,
    ids: &'a mut redb::Table<'t, (&'static str, &'static str), u64>,
}

/// The first message of `user`'s inbox.
fn first_of(
    messages: &redb::Table<'_, (&'static str, u64), &'static [u8]>,
    user: &str,
) -> Result<Option<(u64, InboxMessage)>, String> {
    let mut range = messages.range((user, 0)..=(user, u64::MAX)).map_err(e)?;
    let Some(row) = range.next() else { return Ok(None) };
    let (k, v) = row.map_err(e)?;
    let m = serde_json::from_slice::<InboxMessage>(v.value()).map_err(e)?;
    Ok(Some((k.value().1, m)))
}

impl Write {
    /// Answers the writer that nothing was done, and why.
    fn refuse(self, why: &str) {
        match self {
            Write::Store { done, .. } => drop(done.send(Err(why.to_owned()))),
            Write::Ack { done, .. } => drop(done.send(Err(why.to_owned()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, ttl_ms: u64) -> InboxMessage {
        let now = now_ms();
        InboxMessage {
            seq: 0,
            id: id.into(),
            command: "note".into(),
            text: format!("text {id}"),
            from: None,
            sent_at: now,
            expires_at: now + ttl_ms,
        }
    }

    #[tokio::test]
    async fn stores_in_order_drops_duplicates_and_the_oldest_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(&dir.path().join("inbox.redb"), 3, WhenFull::DropOldest).unwrap();
        for id in ["a", "b", "c", "d"] {
            assert!(matches!(inbox.store("bob", message(id, 60_000)).await.unwrap(), Stored::Stored(_)));
        }
        assert_eq!(inbox.store("bob", message("d", 60_000)).await.unwrap(), Stored::Duplicate(4));
        let (list, more) = inbox.list("bob", 0, 10).unwrap();
        assert!(!more);
        assert_eq!(list.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["b", "c", "d"]);
        assert_eq!(list.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(inbox.counters().dropped_oldest.load(Relaxed), 1);
        assert_eq!(inbox.ack("bob", vec![2, 3, 99]).await.unwrap(), 2);
        assert_eq!(inbox.count("bob").unwrap(), 1);
        // An acknowledged id may come again.
        assert!(matches!(inbox.store("bob", message("b", 60_000)).await.unwrap(), Stored::Stored(5)));
        assert_eq!(inbox.list("alice", 0, 10).unwrap().0, vec![]);
    }

    /// A store for `user` as the inbox queues it, and where its answer comes.
    fn queued(user: &str, m: InboxMessage) -> (Write, oneshot::Receiver<Result<Stored, String>>) {
        let (done, rx) = oneshot::channel();
        (Write::Store { user: user.into(), message: m, done }, rx)
    }

    fn ids(inbox: &Inbox, user: &str) -> Vec<(u64, String)> {
        inbox.list(user, 0, 100).unwrap().0.into_iter().map(|m| (m.seq, m.id)).collect()
    }

    #[tokio::test]
    async fn a_write_that_fails_leaves_nothing_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.redb");
        {
            let db = Arc::new(Database::create(&path).unwrap());
            let cap = Arc::new(AtomicU64::new(2));
            let mut writer =
                Writer::new(db.clone(), Arc::default(), cap.clone(), WhenFull::DropOldest).unwrap();
            // Bob's inbox: a message, then one this version cannot read (as another
            // version might have written it).
            let txn = db.begin_write().unwrap();
            txn.open_table(MESSAGES).unwrap().insert(("bob", 1000), &b"not a message"[..]).unwrap();
            txn.commit().unwrap();
            let (x, x_rx) = queued("bob", message("x", 60_000));
            crate::commit::commit(&mut writer, vec![x]);
            assert_eq!(x_rx.await.unwrap(), Ok(Stored::Stored(1)));
            // Full at a cap of 1: a new message drops "x", then fails on the unreadable row.
            cap.store(1, Relaxed);
            let (a, a_rx) = queued("alice", message("a", 60_000));
            let (m, m_rx) = queued("bob", message("m", 60_000));
            let (c, c_rx) = queued("carol", message("c", 60_000));
            crate::commit::commit(&mut writer, vec![a, m, c]);
            assert_eq!(a_rx.await.unwrap(), Ok(Stored::Stored(2)));
            assert!(m_rx.await.unwrap().is_err());
            assert_eq!(c_rx.await.unwrap(), Ok(Stored::Stored(3)), "the rest of the batch commits");
            let counters = &writer.counters;
            assert_eq!((counters.stored.load(Relaxed), counters.commits.load(Relaxed)), (3, 2));
            assert_eq!(counters.dropped_oldest.load(Relaxed), 0, "nothing was dropped");
        }
        let inbox = Inbox::open(&path, 1, WhenFull::DropOldest).unwrap();
        assert_eq!(ids(&inbox, "alice"), [(2, "a".to_string())]);
        assert_eq!(ids(&inbox, "carol"), [(3, "c".to_string())]);
        // Bob's inbox is as it was; with room, the failed message's retry is stored (its id
        // was not recorded without it).
        assert_eq!(ids(&inbox, "bob"), [(1, "x".to_string())]);
        inbox.set_cap(10);
        assert_eq!(inbox.store("bob", message("m", 60_000)).await.unwrap(), Stored::Stored(4));
        assert_eq!(ids(&inbox, "bob"), [(1, "x".to_string()), (4, "m".to_string())]);
    }

    #[tokio::test]
    async fn a_listing_stops_at_its_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(&dir.path().join("inbox.redb"), 10, WhenFull::DropOldest).unwrap();
        for id in ["a", "b", "c"] {
            let m = InboxMessage { text: "x".repeat(3 << 20), ..message(id, 60_000) };
            inbox.store("bob", m).await.unwrap();
        }
        let (list, more) = inbox.list("bob", 0, 10).unwrap();
        assert_eq!((list.len(), more), (2, true));
        let (rest, more) = inbox.list("bob", list[1].seq, 10).unwrap();
        assert_eq!((rest.len(), more), (1, false));
    }

    #[tokio::test]
    async fn a_full_inbox_can_refuse_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(&dir.path().join("inbox.redb"), 2, WhenFull::RefuseNewest).unwrap();
        inbox.store("bob", message("a", 60_000)).await.unwrap();
        inbox.store("bob", message("b", 60_000)).await.unwrap();
        assert_eq!(inbox.store("bob", message("c", 60_000)).await.unwrap(), Stored::Full);
        // An expired message gives way even so.
        let dir2 = tempfile::tempdir().unwrap();
        let inbox2 = Inbox::open(&dir2.path().join("inbox.redb"), 1, WhenFull::RefuseNewest).unwrap();
        inbox2.store("bob", message("old", 0)).await.unwrap();
        assert!(matches!(inbox2.store("bob", message("new", 60_000)).await.unwrap(), Stored::Stored(2)));
        assert_eq!(inbox2.counters().expired.load(Relaxed), 1);
    }
}
