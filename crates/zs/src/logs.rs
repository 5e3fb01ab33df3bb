//! Log lines that a peer cannot flood or forge: strings a peer supplied are escaped before
//! they reach a line (a newline in a command name does not start a line of its own), and
//! events a stranger can cause at will (failed handshakes, refusals) are counted per cause
//! and reported once per interval instead of once each.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::Recover;

/// How often counted events are reported.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A peer-supplied string, safe in a log line: control characters (newlines among them)
/// and backslashes escaped, and at most 256 characters shown.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 256;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX {
                return f.write_str("…");
            }
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        Ok(())
    }
}

/// Events of one kind counted per cause, with the last of each, reported per interval.
pub(crate) struct Tally {
    what: &'static str,
    counts: Mutex<BTreeMap<&'static str, Count>>,
}

struct Count {
    n: u64,
    last_remote: Option<SocketAddr>,
    last_detail: String,
}

impl Tally {
    /// A tally of `what` ("handshakes failed", "connections refused"...).
    pub(crate) const fn new(what: &'static str) -> Tally {
        Tally { what, counts: Mutex::new(BTreeMap::new()) }
    }

    /// Counts one event (the detail is escaped when reported).
    pub(crate) fn add(&self, cause: &'static str, remote: Option<SocketAddr>, detail: impl fmt::Display) {
        let mut counts = self.counts.lock_or_recover();
        let c = counts.entry(cause).or_insert(Count { n: 0, last_remote: None, last_detail: String::new() });
        c.n += 1;
        c.last_remote = remote.or(c.last_remote);
        c.last_detail.clear();
        use std::fmt::Write;
        let _ = write!(c.last_detail, "{detail}");
        c.last_detail.truncate(512);
        tracing::debug!(what = self.what, cause, ?remote, detail = %Escaped(&c.last_detail), "counted");
    }

    /// Logs one line per cause counted since the last report, and starts over.
    pub(crate) fn report(&self, interval: Duration) {
        let counts = std::mem::take(&mut *self.counts.lock_or_recover());
        for (cause, c) in counts {
            tracing::info!(
                count = c.n,
                cause,
                last_remote = ?c.last_remote,
                last = %Escaped(&c.last_detail),
                "{} in the last {}s",
                self.what,
                interval.as_secs()
            );
        }
    }
}

/// Lets an event through at most once per `every`, counting those held back.
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) const fn new(every: Duration) -> Throttle {
        Throttle { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(held back since the last one)` when this event may be logged.
    pub(crate) fn pass(&self) -> Option<u64> {
        let mut st = self.state.lock_or_recover();
        let now = Instant::now();
        if st.0.is_some_and(|last| now.duration_since(last) < self.every) {
            st.1 += 1;
            return None;
        }
        st.0 = Some(now);
        Some(std::mem::take(&mut st.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_strings_cannot_forge_a_line() {
        let s = Escaped("evil\n2026-01-01 INFO forged \\ \u{7}").to_string();
        assert_eq!(s, "evil\\n2026-01-01 INFO forged \\\\ \\u{7}");
        assert!(!s.contains('\n'));
        assert_eq!(Escaped(&"x".repeat(1000)).to_string().chars().count(), 257);
    }

    #[test]
    fn a_throttle_counts_what_it_holds_back() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.pass(), Some(0));
        assert_eq!(t.pass(), None);
        assert_eq!(t.pass(), None);
        let t = Throttle { every: Duration::ZERO, state: Mutex::new((None, 5)) };
        assert_eq!(t.pass(), Some(5));
    }
}
