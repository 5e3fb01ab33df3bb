//! Throughput and latency figures of one measured run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Requests per second and latency percentiles of one run.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Figures {
    /// Completed requests per second.
    pub req_per_s: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: u64,
    /// Requests completed.
    pub completed: u64,
}

/// A latency histogram in microseconds (1 µs to 60 s, 3 significant digits).
/// The middle of `v` (the upper middle of an even count); `v` must not be empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Latencies of one load task, added to its histogram [`Recorder::BATCH`] at a time: a
/// histogram's counters span about 100 KiB, and hundreds of tasks each recording one call
/// at a time missed the cache on nearly every record (6 % of a Client API run's samples).
pub(crate) struct Recorder {
    hist: Histogram<u64>,
    recent: Vec<u32>,
}

impl Recorder {
    /// Latencies kept before they go into the histogram together.
    const BATCH: usize = 1024;

    /// An empty recorder.
    pub(crate) fn new() -> Recorder {
        Recorder { hist: histogram(), recent: Vec::with_capacity(Self::BATCH) }
    }

    /// Records one latency.
    pub(crate) fn record(&mut self, took: Duration) {
        self.recent.push(took.as_micros().clamp(1, u32::MAX as u128) as u32);
        if self.recent.len() == Self::BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for us in self.recent.drain(..) {
            self.hist.saturating_record(us as u64);
        }
    }

    /// The histogram of everything recorded.
    pub(crate) fn finish(mut self) -> Histogram<u64> {
        self.flush();
        self.hist
    }
}

impl Figures {
    pub(crate) fn from(h: &Histogram<u64>, elapsed: Duration) -> Figures {
        let completed = h.len();
        Figures {
            req_per_s: completed as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            completed,
        }
    }
}
