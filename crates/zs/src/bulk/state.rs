//! Per-peer bulk state: credit of outgoing streams, batch streams parked here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use zs_wire::window::SendCredit;

use crate::budget::Held;

use crate::error::CallError;
use crate::sync::Recover;

/// Credit and outcome of one outgoing stream, shared by its sender task and the
/// connection that receives its credits and result.
#[derive(Debug, Default)]
pub(crate) struct OutStream {
    state: Mutex<OutState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct OutState {
    credit: SendCredit,
    result: Option<Result<(), CallError>>,
    cancel: Option<String>,
}

impl OutStream {
    pub(crate) fn new(initial_credit: u64) -> Arc<Self> {
        Arc::new(OutStream {
            state: Mutex::new(OutState { credit: SendCredit::new(initial_credit), ..OutState::default() }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock_or_recover()
    }

    pub(crate) fn grant(&self, n: u32) {
        self.lock().credit.grant(n.into());
        self.changed.notify_waiters();
    }

    /// Records the receiver's verdict (or a local failure); the first one wins.
    pub(crate) fn finish(&self, r: Result<(), CallError>) {
        self.lock().result.get_or_insert(r);
        self.changed.notify_waiters();
    }

    /// Asks the sender task to stop.
    pub(crate) fn cancel(&self, reason: &str) {
        self.lock().cancel.get_or_insert_with(|| reason.to_owned());
        self.changed.notify_waiters();
    }

    /// Waits until `n` bytes of credit are available and takes them. Stops early with the
    /// outcome if the receiver has answered, or with the reason if cancelled.
    pub(crate) async fn take_credit(&self, n: u64) -> Result<(), Stop> {
        self.wait(|st| {
            if let Some(why) = &st.cancel {
                return Some(Err(Stop::Cancelled(why.clone())));
            }
            if let Some(r) = &st.result {
                return Some(Err(Stop::Answered(r.clone())));
            }
            (st.credit.available() >= n).then_some(Ok(()))
        })
        .await?;
        // Only this stream's sender task takes credit: what was there is still there.
        self.lock().credit.take_exact(n);
        Ok(())
    }

    /// Waits for the receiver's verdict (or a cancel).
    pub(crate) async fn outcome(&self) -> Stop {
        self.wait(|st| {
            st.result.clone().map(Stop::Answered).or_else(|| st.cancel.clone().map(Stop::Cancelled))
        })
        .await
    }

    /// Waits until this end cancels; gives the reason.
    pub(crate) async fn wait_cancel(&self) -> String {
        self.wait(|st| st.cancel.clone()).await
    }

    async fn wait<T>(&self, check: impl Fn(&OutState) -> Option<T>) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(t) = check(&self.lock()) {
                return t;
            }
            changed.await;
        }
    }
}

/// Why a sender stops before it is done.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// The receiver has answered (early: refused, cancelled, failed; or at the end).
    Answered(Result<(), CallError>),
    /// This end cancelled.
    Cancelled(String),
}

/// Bulk state of one peer; created on first use so idle peers carry none.
#[derive(Debug, Default)]
pub(crate) struct BulkState {
    pub(crate) outgoing: HashMap<u32, Arc<OutStream>>,
    /// Parked batch streams, each with what it is charged to the memory budget.
    pub(crate) batches: HashMap<u64, (Bytes, Held)>,
    pub(crate) batch_bytes: u64,
}
