//! Passwords: argon2id (RustCrypto `argon2`), salted per password, never logged, verified
//! in constant time. Hashing is deliberately slow and memory-hard, so it runs on tokio's
//! blocking pool, a few at a time, behind a bounded queue: a login flood gets
//! `RateLimited` answers instead of stalling the connections' tasks.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// argon2id's cost. The default is OWASP's minimum for argon2id (19 MiB of memory, 2
/// passes, 1 lane): about 20–40 ms of one core on this project's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB (default 19,456).
    pub memory_kib: u32,
    /// Passes (default 2).
    pub passes: u32,
    /// Lanes (default 1).
    pub lanes: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost { memory_kib: 19 * 1024, passes: 2, lanes: 1 }
    }
}

impl HashCost {
    /// A cost far below OWASP's minimum, for tests and benchmarks that make thousands of
    /// accounts; never for a real server.
    pub fn insecure_fast() -> Self {
        HashCost { memory_kib: 64, passes: 1, lanes: 1 }
    }

    fn argon2(&self) -> Result<Argon2<'static>, String> {
        let params =
            Params::new(self.memory_kib, self.passes, self.lanes, None).map_err(|e| e.to_string())?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Too many hashes are queued: try later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many logins in progress; try again in a moment")]
pub struct Busy;

/// Hashes and verifies passwords off the connections' tasks.
pub(crate) struct Hasher {
    cost: HashCost,
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// A hash of nothing anybody knows, verified when an account does not exist, so a
    /// login takes as long whether it does or not.
    decoy: String,
}

impl Hasher {
    /// At most `parallel` hashes at once and `max_waiting` more queued.
    pub(crate) fn new(cost: HashCost, parallel: usize, max_waiting: usize) -> Result<Hasher, String> {
        let decoy = hash_now(&cost, &crate::accounts::store::random_hex(16))?;
        Ok(Hasher {
            cost,
            running: Arc::new(Semaphore::new(parallel.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            decoy,
        })
    }

    /// The PHC string of `password` (a new random salt).
    pub(crate) async fn hash(&self, password: String) -> Result<String, Busy> {
        let cost = self.cost;
        self.run(move || hash_now(&cost, &password)).await?.map_err(|_| Busy)
    }

    /// Whether `password` matches `phc` (`None`: no such account, still takes the time).
    pub(crate) async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Busy> {
        let (known, phc) = match phc {
            Some(p) => (true, p),
            None => (false, self.decoy.clone()),
        };
        let cost = self.cost;
        let ok = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&phc) else { return false };
                let argon = cost.argon2().unwrap_or_default();
                argon.verify_password(password.as_bytes(), &parsed).is_ok()
            })
            .await?;
        Ok(known && ok)
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        if self.waiting.fetch_add(1, Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Relaxed);
            return Err(Busy);
        }
        let permit = self.running.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Relaxed);
        let permit = permit.map_err(|_| Busy)?;
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await;
        out.map_err(|_| Busy)
    }
}

/// Hashes at once, on this thread.
pub(crate) fn hash_now(cost: &HashCost, password: &str) -> Result<String, String> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("the operating system provides random bytes");
    let salt = SaltString::encode_b64(&random).map_err(|e| e.to_string())?;
    let hash = cost.argon2()?.hash_password(password.as_bytes(), &salt).map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password_and_a_flood_is_turned_away() {
        let h = Hasher::new(HashCost::insecure_fast(), 1, 2).unwrap();
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(h.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!h.verify("wrong".into(), Some(phc.clone())).await.unwrap());
        assert!(!h.verify("correct horse".into(), None).await.unwrap(), "no account: never");
        let again = h.hash("correct horse".into()).await.unwrap();
        assert_ne!(again, phc, "salted");
        // The one hashing slot taken while the flood arrives, so that the hashes cannot
        // finish as fast as they come (on a loaded machine they did, and none was refused).
        let held = h.running.clone().try_acquire_owned().unwrap();
        let flood = futures_util::future::join_all((0..20).map(|_| h.hash("x".into())));
        let release = async {
            tokio::task::yield_now().await;
            drop(held);
        };
        let (flood, ()) = tokio::join!(flood, release);
        assert!(flood.contains(&Err(Busy)), "a full queue turns hashes away");
        assert!(flood.iter().any(|r| r.is_ok()));
        assert_eq!(HashCost::default().memory_kib, 19_456, "OWASP's minimum for argon2id");
    }
}
