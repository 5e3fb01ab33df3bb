//! `Openings`: connections whose transport opens in a task of its listener (a `wss` TLS
//! handshake, a QUIC connection's first stream) before the accept loop sees them. Bounded in
//! all and per source address, each within a deadline; a source at its bound makes room by
//! dropping its own oldest, so one client with many sockets holds a few places, not all.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

use crate::sync::Recover;

/// Openings under way at once in one listener, at most; past it, newcomers are turned away.
pub(crate) const MAX_OPENINGS: usize = 256;
/// Openings one source address may have under way; past it, its oldest is dropped.
pub(crate) const MAX_OPENINGS_PER_SOURCE: usize = 64;
/// How long an opening may take.
pub(crate) const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

/// The openings of one listener.
pub(crate) struct Openings {
    permits: Arc<Semaphore>,
    /// Openings under way, oldest first, by source.
    by_source: Mutex<HashMap<IpAddr, VecDeque<(u64, AbortHandle)>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Openings {
    pub(crate) fn new() -> Arc<Openings> {
        Arc::new(Openings {
            permits: Arc::new(Semaphore::new(MAX_OPENINGS)),
            by_source: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Runs `open` for a connection from `source` (within the deadline) and sends what it
    /// opens to `ready`; `false` if the listener is full (the caller turns it away).
    pub(crate) fn start<T, F>(
        self: &Arc<Self>,
        source: IpAddr,
        what: &'static str,
        ready: &mpsc::Sender<T>,
        open: F,
    ) -> bool
    where
        T: Send + 'static,
        F: Future<Output = io::Result<T>> + Send + 'static,
    {
        let mut by_source = self.by_source.lock_or_recover();
        let mine = by_source.entry(source).or_default();
        if mine.len() >= MAX_OPENINGS_PER_SOURCE {
            // Dropping the task gives its permit back at once.
            if let Some((_, oldest)) = mine.pop_front() {
                oldest.abort();
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            if mine.is_empty() {
                by_source.remove(&source);
            }
            return false;
        };
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (me, ready) = (self.clone(), ready.clone());
        let task = tokio::spawn(async move {
            let opened = tokio::time::timeout(OPENING_TIMEOUT, open).await;
            me.forget(source, id);
            drop(permit);
            match opened {
                Ok(Ok(link)) => {
                    let _ = ready.send(link).await;
                }
                Ok(Err(e)) => tracing::debug!(%source, error = %e, "{what}: not opened"),
                Err(_) => tracing::debug!(%source, "{what}: not opened in time"),
            }
        });
        mine.push_back((id, task.abort_handle()));
        true
    }

    fn forget(&self, source: IpAddr, id: u64) {
        let mut by_source = self.by_source.lock_or_recover();
        if let Some(mine) = by_source.get_mut(&source) {
            mine.retain(|(i, _)| *i != id);
            if mine.is_empty() {
                by_source.remove(&source);
            }
        }
    }
}
