//! Per-command figures: calls, errors and how long handlers took, in fixed buckets. Each
//! command's counters are split in cache-line shards picked by thread, so connections on
//! different threads do not write the same line for every call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the latency buckets, in microseconds (a last bucket takes the rest).
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];
const BUCKETS: usize = LATENCY_BUCKETS_US.len() + 1;
const SHARDS: usize = 8;

#[derive(Default)]
#[repr(align(64))]
struct Shard {
    errors: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// One command's counters.
#[derive(Default)]
pub(crate) struct Meter {
    shards: [Shard; SHARDS],
}

/// The shard of this thread.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl Meter {
    /// Counts a call that took `took` (from its start to its reply), failed or not.
    pub(crate) fn record(&self, took: Duration, failed: bool) {
        let s = &self.shards[shard()];
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Calls are the buckets' total: one add fewer per call.
        if failed {
            s.errors.fetch_add(1, Relaxed);
        }
        s.micros.fetch_add(us, Relaxed);
        let bucket = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS - 1);
        s.buckets[bucket].fetch_add(1, Relaxed);
    }

    /// The counters summed over the shards.
    pub(crate) fn figures(&self, name: &str) -> CommandFigures {
        let sum =
            |f: &dyn Fn(&Shard) -> &AtomicU64| self.shards.iter().map(|s| f(s).load(Relaxed)).sum::<u64>();
        let mut cumulative = 0;
        let buckets = (0..BUCKETS)
            .map(|i| {
                cumulative += sum(&|s| &s.buckets[i]);
                cumulative
            })
            .collect();
        CommandFigures {
            name: name.to_owned(),
            calls: cumulative,
            errors: sum(&|s| &s.errors),
            micros: sum(&|s| &s.micros),
            buckets,
        }
    }
}

/// A command's figures at one moment (see [`crate::Router::meter_commands`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandFigures {
    /// The command's name as registered.
    pub name: String,
    /// Calls and direct commands received (refused ones too).
    pub calls: u64,
    /// Those answered with an error (refused, failed, panicked).
    pub errors: u64,
    /// Microseconds from each call's start to its reply, summed.
    pub micros: u64,
    /// Calls that took at most each bound of [`LATENCY_BUCKETS_US`], cumulative, and all
    /// of them last.
    pub buckets: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_fall_in_their_buckets_and_sum_over_threads() {
        let meter = std::sync::Arc::new(Meter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = meter.clone();
                std::thread::spawn(move || {
                    m.record(Duration::from_micros(5), false);
                    m.record(Duration::from_micros(300), true);
                    m.record(Duration::from_secs(3), false);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let f = meter.figures("x");
        assert_eq!((f.calls, f.errors), (12, 4));
        assert_eq!(f.micros, 4 * (5 + 300 + 3_000_000));
        assert_eq!(f.buckets[0], 4, "<= 10 us");
        assert_eq!(f.buckets[4], 4, "<= 250 us: only the 5 us ones");
        assert_eq!(f.buckets[5], 8, "<= 500 us");
        assert_eq!(f.buckets[BUCKETS - 2], 8, "<= 1 s");
        assert_eq!(f.buckets[BUCKETS - 1], 12, "all");
    }
}
