//! Group commit for a redb database: one thread applies every write that has queued up in
//! one durable (fsynced) transaction and answers each writer after the commit, so a
//! thousand writers cost one fsync, not a thousand, and none hears "done" before its write
//! is on disk. A write that fails is left out whole: the transaction is given up and the
//! rest of the batch applied again without it. The inbox and the data store use it.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use redb::WriteTransaction;

/// What a group-commit thread does with the writes of one database.
pub(crate) trait Batcher: Send + 'static {
    /// A write, with the way to answer its writer.
    type Write: Send + 'static;
    /// What one write did, kept until its transaction commits or is given up.
    type Outcome;

    /// Begins a write transaction.
    fn begin(&mut self) -> Result<WriteTransaction, String>;
    /// Applies `batch` in `txn`, one outcome per write in order; an error fails the batch.
    fn apply(&mut self, txn: &WriteTransaction, batch: &[Self::Write]) -> Result<Vec<Self::Outcome>, String>;
    /// Whether this outcome is a failure (its write is answered and left out).
    fn failed(outcome: &Self::Outcome) -> bool;
    /// The transaction was given up: forget what `apply` kept in memory for it.
    fn rolled_back(&mut self);
    /// The transaction committed (before any writer is answered).
    fn committed(&mut self, _batch: &[Self::Write], _outcomes: &[Self::Outcome]) {}
    /// Answers a write with what it did.
    fn answer(&self, write: Self::Write, outcome: Self::Outcome);
    /// Answers a write that did not happen, and why.
    fn fail(write: Self::Write, why: &str);
    /// Runs every `idle_every` (housekeeping such as sweeping expired records).
    fn idle(&mut self) {}
}

/// How a group-commit thread runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Writes waiting at most; past it a write is refused as busy.
    pub(crate) queue: usize,
    /// Writes committed together at most.
    pub(crate) batch: usize,
    /// How often [`Batcher::idle`] runs.
    pub(crate) idle_every: Duration,
}

/// The writers' end of a group-commit thread.
pub(crate) struct Committer<W> {
    writes: SyncSender<W>,
    queue: usize,
    what: &'static str,
}

impl<W> Clone for Committer<W> {
    fn clone(&self) -> Self {
        Committer { writes: self.writes.clone(), queue: self.queue, what: self.what }
    }
}

impl<W: Send + 'static> Committer<W> {
    /// Starts the thread `name` running `batcher`; `what` names it in errors.
    pub(crate) fn start<B: Batcher<Write = W>>(
        name: &str,
        what: &'static str,
        batcher: B,
        shape: Shape,
    ) -> Result<Committer<W>, String> {
        let (writes, queue) = sync_channel(shape.queue);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(batcher, queue, shape))
            .map_err(|err| format!("cannot start the {what} writer: {err}"))?;
        Ok(Committer { writes, queue: shape.queue, what })
    }

    /// Queues `w`, or says why not (busy, stopped): never waits.
    pub(crate) fn send(&self, w: W) -> Result<(), String> {
        match self.writes.try_send(w) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err(format!("the {} is busy ({} writes waiting)", self.what, self.queue))
            }
            Err(TrySendError::Disconnected(_)) => Err(format!("the {} writer stopped", self.what)),
        }
    }
}

fn run<B: Batcher>(mut b: B, queue: Receiver<B::Write>, shape: Shape) {
    let mut last_idle = Instant::now();
    loop {
        let first = match queue.recv_timeout(shape.idle_every) {
            Ok(w) => w,
            Err(RecvTimeoutError::Timeout) => {
                b.idle();
                last_idle = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < shape.batch {
            match queue.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        commit(&mut b, batch);
        if last_idle.elapsed() >= shape.idle_every {
            b.idle();
            last_idle = Instant::now();
        }
    }
}

/// Applies `batch` in one transaction and answers each write after the commit.
pub(crate) fn commit<B: Batcher>(b: &mut B, mut batch: Vec<B::Write>) {
    loop {
        let txn = match b.begin() {
            Ok(t) => t,
            Err(why) => return fail_all::<B>(batch, &why),
        };
        let outcomes = match b.apply(&txn, &batch) {
            Ok(o) => o,
            Err(why) => {
                let _ = txn.abort();
                b.rolled_back();
                return fail_all::<B>(batch, &why);
            }
        };
        if outcomes.iter().any(B::failed) {
            // Give the transaction up, answer the failed writes, and apply the rest again.
            let _ = txn.abort();
            b.rolled_back();
            let mut rest = Vec::with_capacity(batch.len());
            for (w, o) in batch.into_iter().zip(outcomes) {
                match B::failed(&o) {
                    true => b.answer(w, o),
                    false => rest.push(w),
                }
            }
            if rest.is_empty() {
                return;
            }
            batch = rest;
            continue;
        }
        match txn.commit() {
            Ok(()) => {
                b.committed(&batch, &outcomes);
                for (w, o) in batch.into_iter().zip(outcomes) {
                    b.answer(w, o);
                }
            }
            Err(why) => {
                b.rolled_back();
                fail_all::<B>(batch, &why.to_string());
            }
        }
        return;
    }
}

fn fail_all<B: Batcher>(batch: Vec<B::Write>, why: &str) {
    for w in batch {
        B::fail(w, why);
    }
}
