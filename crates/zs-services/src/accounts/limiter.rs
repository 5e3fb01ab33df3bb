//! Failed logins limited per address and per account, with growing lockouts: a few
//! failures are free, then each one more locks the address (or account) out for twice as
//! long as the last, up to a cap. A success clears the account's record; records of the
//! quiet are forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How failures turn into lockouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failures allowed before the first lockout.
    pub free_failures: u32,
    /// The first lockout; each later failure doubles it.
    pub first: Duration,
    /// The longest lockout.
    pub max: Duration,
}

impl Lockout {
    /// Per address: 10 free, then 1 s, 2 s, 4 s ... up to 15 minutes.
    pub fn per_address() -> Self {
        Lockout { free_failures: 10, first: Duration::from_secs(1), max: Duration::from_secs(900) }
    }

    /// Per account: 5 free, then 1 s, 2 s, 4 s ... up to 15 minutes.
    pub fn per_account() -> Self {
        Lockout { free_failures: 5, first: Duration::from_secs(1), max: Duration::from_secs(900) }
    }

    fn after(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free_failures + 1)?;
        let factor = 1u32.checked_shl(over.min(30)).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(factor).min(self.max))
    }
}

struct Record {
    failures: u32,
    until: Option<Instant>,
    last: Instant,
}

/// Records of one kind of key.
struct Table<K> {
    policy: Lockout,
    records: Mutex<HashMap<K, Record>>,
}

/// Most records kept of each kind; beyond it, those quiet for the longest lockout go.
const MAX_RECORDS: usize = 100_000;

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: Lockout) -> Self {
        Table { policy, records: Mutex::default() }
    }

    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let until = records.get(key)?.until?;
        (until > now).then(|| until - now)
    }

    fn fail(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= MAX_RECORDS && !records.contains_key(key) {
            let quiet = self.policy.max;
            records.retain(|_, r| now.duration_since(r.last) < quiet);
            // All recent: the tenth quiet longest make room, so the table stays bounded and
            // the next thousands of failures do not scan it again.
            if records.len() >= MAX_RECORDS {
                let mut lasts: Vec<Instant> = records.values().map(|r| r.last).collect();
                let (_, cut, _) = lasts.select_nth_unstable(MAX_RECORDS / 10);
                let cut = *cut;
                records.retain(|_, r| r.last > cut);
            }
        }
        let r = records.entry(key.clone()).or_insert(Record { failures: 0, until: None, last: now });
        // A long quiet spell starts the count again.
        if now.duration_since(r.last) >= self.policy.max {
            r.failures = 0;
        }
        r.failures += 1;
        r.last = now;
        r.until = self.policy.after(r.failures).map(|d| now + d);
        r.until.map(|u| u - now)
    }

    fn clear(&self, key: &K) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Failed logins by address and by account.
pub(crate) struct Limiter {
    by_address: Table<IpAddr>,
    by_account: Table<String>,
}

impl Limiter {
    pub(crate) fn new(address: Lockout, account: Lockout) -> Self {
        Limiter { by_address: Table::new(address), by_account: Table::new(account) }
    }

    /// How long this address or account must still wait, if it is locked out.
    pub(crate) fn locked(&self, address: IpAddr, account: &str) -> Option<Duration> {
        let now = Instant::now();
        let a = self.by_address.locked(&address, now);
        let b = self.by_account.locked(&account.to_owned(), now);
        a.max(b)
    }

    /// Counts a failure; returns the lockout it started, if any.
    pub(crate) fn failed(&self, address: IpAddr, account: &str) -> Option<Duration> {
        let now = Instant::now();
        let a = self.by_address.fail(&address, now);
        let b = self.by_account.fail(&account.to_owned(), now);
        a.max(b)
    }

    /// A login succeeded: the account's failures are forgotten (the address's fade).
    pub(crate) fn succeeded(&self, account: &str) {
        self.by_account.clear(&account.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_grow_and_a_success_clears_the_account() {
        let policy =
            Lockout { free_failures: 2, first: Duration::from_millis(100), max: Duration::from_secs(1) };
        let l = Limiter::new(Lockout { free_failures: 100, ..policy }, policy);
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(l.failed(ip, "bob"), None);
        assert_eq!(l.failed(ip, "bob"), None);
        assert_eq!(l.failed(ip, "bob"), Some(Duration::from_millis(100)));
        assert_eq!(l.failed(ip, "bob"), Some(Duration::from_millis(200)));
        assert!(l.locked(ip, "bob").is_some());
        assert!(l.locked(ip, "carol").is_none(), "another account from the same address");
        for _ in 0..10 {
            l.failed(ip, "bob");
        }
        assert!(l.locked(ip, "bob").unwrap() <= Duration::from_secs(1), "capped");
        l.succeeded("bob");
        assert!(l.locked(ip, "bob").is_none());
    }

    #[test]
    fn the_tables_stay_bounded_when_every_record_is_recent() {
        let l = Limiter::new(Lockout::per_address(), Lockout::per_account());
        let ip = IpAddr::from([127, 0, 0, 1]);
        for i in 0..MAX_RECORDS + 10 {
            l.failed(ip, &format!("user{i}"));
        }
        let accounts = l.by_account.records.lock().unwrap().len();
        assert!(accounts <= MAX_RECORDS, "{accounts}");
        assert!(l.by_account.records.lock().unwrap().contains_key(&format!("user{}", MAX_RECORDS + 9)));
    }
}
