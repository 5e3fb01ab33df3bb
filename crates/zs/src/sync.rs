//! Locks that outlive a panic: a handler that panics while another task holds a lock must
//! not take every later user of that lock down with it. The state behind each of these
//! locks is valid between any two statements (counters, queues, maps), so a poisoned lock
//! is taken over as it is.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock methods that take a poisoned lock over instead of failing.
pub(crate) trait Recover<T> {
    /// The guard of a `Mutex`.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

/// Read and write methods of an `RwLock` that take a poisoned lock over.
pub(crate) trait RecoverRw<T> {
    /// A read guard.
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard.
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> Recover<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> RecoverRw<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}
