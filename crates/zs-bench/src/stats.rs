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
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
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
