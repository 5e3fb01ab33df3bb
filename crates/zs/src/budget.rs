//! The server-wide memory budget: what peers can make a server hold before they are
//! answered (partial frames, complete buffers and batch streams being received, ZServer4D
//! staging, detached sessions' buffers). A connection's holdings are charged as they grow,
//! as bytes arrive, never by what a header announces. When the budget runs short, the
//! connections holding the most are told to close first, with a reason; a connection that
//! holds the most itself is refused instead. Everyone else carries on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::stats::Stats;
use crate::sync::Recover;

/// A closer of one connection, given why.
type Closer = Box<dyn Fn(&str) + Send + Sync>;

/// A server's budget.
pub(crate) struct Budget {
    /// Changeable while running ([`Budget::set_limit`]).
    limit: AtomicU64,
    used: AtomicU64,
    /// Connections holding something now, by id.
    holders: Mutex<HashMap<u64, Arc<Holding>>>,
    stats: Arc<Stats>,
}

/// What one connection holds.
struct Holding {
    id: u64,
    held: AtomicU64,
    /// Told to close to free its memory: not asked again, counted as on its way back.
    closing: AtomicBool,
    /// What of `held` is the connection's read buffer (a large frame in progress).
    read_buffer: AtomicU64,
    close: Closer,
}

/// Why a charge was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverBudget {
    /// What the connection would hold.
    pub(crate) wanted: u64,
    /// The budget.
    pub(crate) limit: u64,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's memory budget ({} bytes) is short, and this connection would hold the most ({} bytes)",
            self.limit, self.wanted
        )
    }
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: u64, stats: Arc<Stats>) -> Arc<Budget> {
        Arc::new(Budget {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            holders: Mutex::default(),
            stats,
        })
    }

    /// The budget, in bytes.
    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Relaxed)
    }

    /// Changes the budget: holdings over a smaller one are reclaimed as they next grow.
    pub(crate) fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Relaxed);
    }

    /// Bytes held now, by every connection.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// The charge of connection `id`; `close` is how the budget closes it when it holds the
    /// most and the budget is short.
    pub(crate) fn charge(self: &Arc<Self>, id: u64, close: impl Fn(&str) + Send + Sync + 'static) -> Charge {
        let holding = Arc::new(Holding {
            id,
            held: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            read_buffer: AtomicU64::new(0),
            close: Box::new(close),
        });
        Charge { budget: self.clone(), holding }
    }

    fn grow(&self, h: &Arc<Holding>, n: u64) -> Result<(), OverBudget> {
        let before = self.used.fetch_add(n, Relaxed);
        let was = h.held.fetch_add(n, Relaxed);
        if was == 0 {
            self.holders.lock_or_recover().insert(h.id, h.clone());
        }
        let limit = self.limit();
        if before + n <= limit {
            self.publish();
            return Ok(());
        }
        // Short: free the room from those who hold the most, or refuse this one.
        let holders = self.holders.lock_or_recover();
        let reclaiming: u64 =
            holders.values().filter(|o| o.closing.load(Relaxed)).map(|o| o.held.load(Relaxed)).sum();
        let mut shortfall = (before + n).saturating_sub(limit).saturating_sub(reclaiming);
        let mut biggest: Vec<&Arc<Holding>> = holders.values().filter(|o| !o.closing.load(Relaxed)).collect();
        biggest.sort_unstable_by_key(|o| std::cmp::Reverse(o.held.load(Relaxed)));
        let mine = was + n;
        for other in biggest {
            if shortfall == 0 {
                break;
            }
            let theirs = other.held.load(Relaxed);
            if Arc::ptr_eq(other, h) || theirs <= mine {
                drop(holders);
                self.release(h, n);
                self.stats.bump(|s| &s.budget_refusals);
                return Err(OverBudget { wanted: mine, limit });
            }
            other.closing.store(true, Relaxed);
            self.stats.bump(|s| &s.budget_closes);
            let why = format!(
                "the server's memory budget ({limit} bytes) is short and this connection held the most ({theirs} bytes)"
            );
            (other.close)(&why);
            shortfall = shortfall.saturating_sub(theirs);
        }
        drop(holders);
        self.publish();
        Ok(())
    }

    /// Charges `n` more bytes only if they fit now; closes no one.
    fn try_grow(&self, h: &Arc<Holding>, n: u64) -> bool {
        let limit = self.limit();
        if self.used.fetch_update(Relaxed, Relaxed, |used| (used + n <= limit).then_some(used + n)).is_err() {
            return false;
        }
        if h.held.fetch_add(n, Relaxed) == 0 {
            self.holders.lock_or_recover().insert(h.id, h.clone());
        }
        self.publish();
        true
    }

    /// Gives back up to `n` bytes of what `h` holds.
    fn release(&self, h: &Holding, n: u64) {
        if n == 0 {
            return;
        }
        let before = h.held.fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(n))).unwrap_or(0);
        let freed = before.min(n);
        if freed == 0 {
            return;
        }
        self.used.fetch_sub(freed, Relaxed);
        if freed == before {
            self.holders.lock_or_recover().remove(&h.id);
        }
        self.publish();
    }

    fn publish(&self) {
        self.stats.memory_held.store(self.used.load(Relaxed), Relaxed);
    }
}

/// A connection's charge against the budget, shared by what holds its memory (its driver,
/// its link, its transfers). Each keeps what it charged and gives it back; whatever is left
/// when the connection ends is released with [`release_all`](Self::release_all).
#[derive(Clone)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    holding: Arc<Holding>,
}

impl Charge {
    /// Charges `n` more bytes.
    pub(crate) fn grow(&self, n: u64) -> Result<(), OverBudget> {
        if n == 0 {
            return Ok(());
        }
        self.budget.grow(&self.holding, n)
    }

    /// Releases `n` bytes charged before.
    pub(crate) fn shrink(&self, n: u64) {
        self.budget.release(&self.holding, n);
    }

    /// Moves a part charged at `*part` bytes to `now` bytes (grows or shrinks by the
    /// difference); on refusal the part keeps what it had.
    pub(crate) fn resize(&self, part: &mut u64, now: u64) -> Result<(), OverBudget> {
        if now > *part {
            self.grow(now - *part)?;
        } else {
            self.shrink(*part - now);
        }
        *part = now;
        Ok(())
    }

    /// Charges the connection's read buffer at `bytes` (from what it was); on refusal it
    /// keeps what it had.
    pub(crate) fn set_read_buffer(&self, bytes: u64) -> Result<(), OverBudget> {
        let mut part = self.holding.read_buffer.load(Relaxed);
        let r = self.resize(&mut part, bytes);
        self.holding.read_buffer.store(part, Relaxed);
        r
    }

    /// Charges the connection's read buffer at `bytes` if that fits in the budget now,
    /// closing no one (for room that is only worth having when it is free); `false`, and
    /// it keeps what it had, if not.
    pub(crate) fn try_set_read_buffer(&self, bytes: u64) -> bool {
        let part = self.holding.read_buffer.load(Relaxed);
        if bytes <= part {
            self.shrink(part - bytes);
        } else if !self.budget.try_grow(&self.holding, bytes - part) {
            return false;
        }
        self.holding.read_buffer.store(bytes, Relaxed);
        true
    }

    /// What the connection's read buffer holds charged.
    pub(crate) fn read_buffer(&self) -> u64 {
        self.holding.read_buffer.load(Relaxed)
    }

    /// What this connection holds now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.holding.held.load(Relaxed)
    }

    /// The connection ended: everything still charged goes back.
    pub(crate) fn release_all(&self) {
        self.budget.release(&self.holding, u64::MAX);
    }
}

/// Bytes charged for something being received or kept (a complete buffer, a parked batch
/// stream), given back when it is dropped.
#[derive(Default)]
pub(crate) struct Held {
    charge: Option<Charge>,
    bytes: u64,
}

impl Held {
    /// Nothing held yet, charged to `charge` as it grows (nothing is charged without one).
    pub(crate) fn new(charge: Option<Charge>) -> Held {
        Held { charge, bytes: 0 }
    }

    /// Charges `n` more bytes.
    pub(crate) fn grow(&mut self, n: u64) -> Result<(), OverBudget> {
        if let Some(c) = &self.charge {
            c.grow(n)?;
        }
        self.bytes += n;
        Ok(())
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("bytes", &self.bytes).finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(c) = &self.charge {
            c.shrink(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A budget of `limit` bytes, its stats, and a count of the connections told to close.
    fn counting(limit: u64) -> (Arc<Stats>, Arc<Budget>, Arc<AtomicUsize>) {
        let stats = Arc::new(Stats::default());
        (stats.clone(), Budget::new(limit, stats), Arc::new(AtomicUsize::new(0)))
    }

    /// A charge whose connection, told to close, counts in `closed`.
    fn counted_charge(budget: &Arc<Budget>, id: u64, closed: &Arc<AtomicUsize>) -> Charge {
        let closed = closed.clone();
        budget.charge(id, move |_| {
            closed.fetch_add(1, Relaxed);
        })
    }

    #[test]
    fn the_biggest_holders_are_closed_first_and_the_biggest_requester_refused() {
        let (stats, budget, closed) = counting(1000);
        let charge = |id| counted_charge(&budget, id, &closed);
        let (a, b, c) = (charge(1), charge(2), charge(3));
        a.grow(600).unwrap();
        b.grow(300).unwrap();
        // c needs 200: a holds the most and is told to close; c gets its room.
        c.grow(200).unwrap();
        assert_eq!(closed.load(Relaxed), 1);
        assert_eq!(budget.used(), 1100, "over until a's task lets go");
        // 500 more fits once a's 600 are back; 900 more would make b the biggest: refused.
        b.grow(500).unwrap();
        b.shrink(500);
        assert_eq!(b.grow(900), Err(OverBudget { wanted: 1200, limit: 1000 }));
        assert_eq!(b.held(), 300);
        a.release_all();
        assert_eq!(budget.used(), 500);
        let mut part = 200;
        c.resize(&mut part, 50).unwrap();
        assert_eq!((c.held(), part), (50, 50));
        assert_eq!(stats.snapshot().memory_held, 350);
        assert_eq!(stats.snapshot().budget_refusals, 1);
    }

    #[test]
    fn a_read_buffer_tried_is_charged_only_when_it_fits_and_closes_no_one() {
        let (stats, budget, closed) = counting(1000);
        let charge = |id| counted_charge(&budget, id, &closed);
        let (a, b) = (charge(1), charge(2));
        a.grow(700).unwrap();
        assert!(b.try_set_read_buffer(300));
        assert_eq!((b.read_buffer(), budget.used()), (300, 1000));
        assert!(!b.try_set_read_buffer(301), "one byte over");
        assert_eq!((b.read_buffer(), b.held(), budget.used()), (300, 300, 1000), "kept what it had");
        assert_eq!(closed.load(Relaxed), 0, "no one told to close");
        assert!(b.try_set_read_buffer(100), "smaller always fits");
        assert_eq!((b.held(), budget.used()), (100, 800));
        assert!(b.try_set_read_buffer(0));
        assert_eq!(stats.snapshot().memory_held, 700);
        assert_eq!(stats.snapshot().budget_refusals, 0);
    }
}
