//! Admission of connections whose handshake is unfinished. There is no fixed pool that idle
//! sockets can fill: each source address may hold a bounded number of unfinished
//! handshakes and start a bounded number per second, and when a bound is reached the
//! **oldest** unfinished handshake (of that source, or of all) is dropped to make room, so a
//! new client gets in however many idle sockets are held open against it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::sync::Recover;

/// The limits on unfinished handshakes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_pending: usize,
    pub(super) max_per_source: usize,
    /// Handshakes a source may start per second (and in a burst).
    pub(super) rate_per_source: u32,
}

/// The unfinished handshakes of a server.
pub(super) struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Unfinished handshakes, oldest first: their source, and what drops them.
    order: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    sources: HashMap<IpAddr, Source>,
}

struct Source {
    /// Its unfinished handshakes, oldest first.
    pending: VecDeque<u64>,
    /// Handshakes it may still start now (refilled at the rate, up to one second's worth).
    tokens: f64,
    refilled: Instant,
}

/// One unfinished handshake's place; dropping it leaves.
pub(super) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    ip: IpAddr,
    /// Completes when this handshake is dropped to make room.
    pub(super) evicted: oneshot::Receiver<()>,
    left: bool,
}

/// What entering did.
pub(super) struct Entered {
    pub(super) ticket: Ticket,
    /// Older handshakes dropped to make room for this one.
    pub(super) evicted: usize,
}

impl Admission {
    pub(super) fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission { limits, state: Mutex::default() })
    }

    /// Registers a new connection from `ip`, dropping the oldest unfinished handshakes of
    /// that source, then of all, while a limit is reached.
    pub(super) fn enter(self: &Arc<Self>, ip: IpAddr) -> Entered {
        let mut st = self.state.lock_or_recover();
        let mut evicted = 0;
        let per_source = st.sources.get(&ip).map_or(0, |s| s.pending.len());
        if per_source >= self.limits.max_per_source.max(1) {
            let oldest = st.sources.get(&ip).and_then(|s| s.pending.front().copied());
            if let Some(id) = oldest {
                evicted += st.evict(id) as usize;
            }
        }
        while st.order.len() >= self.limits.max_pending.max(1) {
            let Some(&id) = st.order.keys().next() else { break };
            evicted += st.evict(id) as usize;
        }
        let id = st.next;
        st.next += 1;
        let (tx, evicted_rx) = oneshot::channel();
        st.order.insert(id, (ip, tx));
        let rate = f64::from(self.limits.rate_per_source.max(1));
        let source = st.sources.entry(ip).or_insert_with(|| Source {
            pending: VecDeque::new(),
            tokens: rate,
            refilled: Instant::now(),
        });
        source.pending.push_back(id);
        drop(st);
        Entered {
            ticket: Ticket { admission: self.clone(), id, ip, evicted: evicted_rx, left: false },
            evicted,
        }
    }

    /// Takes a token for starting a handshake from `ip`: `false` if the source has started
    /// its share this second.
    pub(super) fn start(&self, ip: IpAddr) -> bool {
        let rate = f64::from(self.limits.rate_per_source.max(1));
        let mut st = self.state.lock_or_recover();
        let Some(source) = st.sources.get_mut(&ip) else { return false };
        let now = Instant::now();
        let refill = now.saturating_duration_since(source.refilled).as_secs_f64() * rate;
        source.tokens = (source.tokens + refill).min(rate);
        source.refilled = now;
        if source.tokens < 1.0 {
            return false;
        }
        source.tokens -= 1.0;
        true
    }

    /// Unfinished handshakes now.
    pub(super) fn pending(&self) -> usize {
        self.state.lock_or_recover().order.len()
    }
}

impl State {
    /// Drops an unfinished handshake (its task sees `evicted`); `true` if it was there.
    fn evict(&mut self, id: u64) -> bool {
        let Some((ip, tx)) = self.order.remove(&id) else { return false };
        let _ = tx.send(());
        self.forget(ip, id);
        true
    }

    fn forget(&mut self, ip: IpAddr, id: u64) {
        if let Some(s) = self.sources.get_mut(&ip) {
            s.pending.retain(|&p| p != id);
            // A source with nothing pending and a full bucket says nothing worth keeping.
            let full = s.refilled.elapsed() >= Duration::from_secs(1);
            if s.pending.is_empty() && full {
                self.sources.remove(&ip);
            }
        }
        // Sources whose buckets refilled are dropped now and then, so spraying addresses
        // does not grow the table for good.
        if self.sources.len() > 2 * self.order.len() + 1024 {
            self.sources
                .retain(|_, s| !s.pending.is_empty() || s.refilled.elapsed() < Duration::from_secs(1));
        }
    }
}

impl Ticket {
    /// The handshake is done: leaves, and tells whether it was still admitted (not dropped
    /// to make room meanwhile).
    pub(super) fn finish(mut self) -> bool {
        self.leave()
    }

    /// Leaves the unfinished handshakes (once): `true` if it was still among them.
    fn leave(&mut self) -> bool {
        if self.left {
            return false;
        }
        self.left = true;
        let mut st = self.admission.state.lock_or_recover();
        let present = st.order.remove(&self.id).is_some();
        if present {
            st.forget(self.ip, self.id);
        }
        present
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // The receiver and the admission are dropped with the ticket, never forgotten: the
        // receiver holds the waker of the task that awaited it.
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_oldest_unfinished_handshake_makes_room() {
        let a = Admission::new(Limits { max_pending: 4, max_per_source: 2, rate_per_source: 10 });
        let mut first = a.enter(ip(1)).ticket;
        let second = a.enter(ip(1)).ticket;
        let third = a.enter(ip(1));
        assert_eq!(third.evicted, 1, "the source's oldest goes");
        assert!(first.evicted.try_recv().is_ok());
        assert!(!first.finish());
        let others: Vec<_> = (2..5).map(|i| a.enter(ip(i))).collect();
        assert_eq!(others.iter().map(|e| e.evicted).sum::<usize>(), 1, "then the oldest of all");
        assert!(!second.finish());
        assert!(third.ticket.finish());
        assert_eq!(a.pending(), 3);
        drop(others);
        assert_eq!(a.pending(), 0);
        assert_eq!(Arc::strong_count(&a), 1, "finished and dropped tickets hold nothing");
        assert!(a.state.lock().unwrap().sources.len() <= 4);
    }

    #[test]
    fn a_source_starts_no_more_than_its_rate() {
        let a = Admission::new(Limits { max_pending: 100, max_per_source: 100, rate_per_source: 5 });
        let tickets: Vec<_> = (0..10).map(|_| a.enter(ip(9))).collect();
        let started = (0..10).filter(|_| a.start(ip(9))).count();
        assert_eq!(started, 5);
        assert!(!a.start(ip(8)), "an address with nothing pending has no bucket");
        drop(tickets);
    }
}
