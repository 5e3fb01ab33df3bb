//! Bounds the services share: places handed out by a counter, and one budget for the big
//! IO buffers of every service in the process (file transfers, XNat visits).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Places (or bytes) out of at most a number a counter hands out; given back when dropped.
pub(crate) struct Counted(Arc<AtomicUsize>, usize);

impl Counted {
    /// A place of `counter`'s, if it has handed out fewer than `max`.
    pub(crate) fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Counted> {
        Counted::take_n(counter, 1, max)
    }

    /// `n` of `counter`'s, if that keeps it at most `max`.
    pub(crate) fn take_n(counter: &Arc<AtomicUsize>, n: usize, max: usize) -> Option<Counted> {
        if counter.fetch_add(n, Relaxed) + n > max {
            counter.fetch_sub(n, Relaxed);
            return None;
        }
        Some(Counted(counter.clone(), n))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Relaxed);
    }
}

/// Bytes the services may hold in big IO buffers at once (64 MiB); past it they work with
/// small ones, so a thousand transfers or visits hold a thousand small buffers and a few go
/// at full speed.
pub(crate) const BIG_BUDGET: usize = 64 << 20;

/// Bytes the services hold in big IO buffers now.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Bytes counted against [`BIG_BUDGET`] while it lives.
pub(crate) struct Held(usize);

impl Held {
    /// Counts `n` bytes if the budget allows (or `force`).
    pub(crate) fn take(n: usize, force: bool) -> Option<Held> {
        let before = HELD.fetch_add(n, Relaxed);
        if before + n > BIG_BUDGET && !force {
            HELD.fetch_sub(n, Relaxed);
            return None;
        }
        Some(Held(n))
    }

    /// Whether `n` more bytes would fit now.
    pub(crate) fn room_for(n: usize) -> bool {
        HELD.load(Relaxed) + n <= BIG_BUDGET
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Relaxed);
    }
}
