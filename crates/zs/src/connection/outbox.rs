//! The bounded queue through which other tasks hand frames to a connection's task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Context;

use crate::sync::Recover;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use zs_wire::GoAwayCode;

/// An instruction to a connection's task.
#[derive(Debug)]
pub(crate) enum Out {
    /// Write an encoded frame.
    Frame(Bytes),
    /// A delayed, async-elsewhere or HPC handler finished: write its reply (if any) and
    /// release its in-flight slot (and the ordered lane, if it held it).
    Done { frame: Option<Bytes>, ordered: bool },
    /// Close the connection with a reason.
    Close(GoAwayCode, String),
    /// Stop taking calls, finish those in flight, then close.
    Shutdown,
    /// An incoming stream's receiver is done with it: forget its id.
    StreamDone(u32),
    /// Open a virtual channel: register it and write its open frame.
    MuxOpen(std::sync::Arc<crate::mux::channel::Channel>, Bytes),
    /// Both ends are done with a virtual channel: forget it.
    MuxForget(u32),
    /// Take no new virtual channels (tell the other end why); those open carry on.
    MuxGoAway(String),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The connection is gone.
    Closed,
    /// The queue is at its byte limit.
    Full,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Out>,
    bytes: usize,
    /// Stream chunks, written after every small frame; created on first use.
    bulk: Option<Box<BulkLane>>,
    closed: bool,
}

#[derive(Debug, Default)]
struct BulkLane {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl State {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.bulk.as_ref().is_none_or(|b| b.chunks.is_empty())
    }
}

/// Many producers (any task or thread), one consumer (the connection's task). Frames are
/// bounded by bytes; control messages are bounded by the in-flight limit.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Set when the queue goes from empty to non-empty; cleared by the consumer.
    ready: AtomicBool,
    consumer: AtomicWaker,
    space: Notify,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            state: Mutex::default(),
            ready: AtomicBool::new(false),
            consumer: AtomicWaker::new(),
            space: Notify::new(),
        }
    }

    fn signal(&self) {
        self.ready.store(true, Ordering::Release);
        self.consumer.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }

    fn enqueue(&self, st: &mut State, out: Out) {
        if let Out::Frame(b) = &out {
            st.bytes += b.len();
        }
        let was_empty = st.is_empty();
        if st.queue.capacity() == 0 {
            st.queue = RECYCLED.take();
        }
        st.queue.push_back(out);
        if was_empty {
            self.signal();
        }
    }

    /// Queues a frame if there is room under `max` bytes (an empty queue always takes one
    /// frame); gives the frame back if not.
    pub(crate) fn try_push(&self, frame: Bytes, max: usize) -> Result<(), (PushError, Bytes)> {
        let mut st = self.lock();
        if st.closed {
            return Err((PushError::Closed, frame));
        }
        if st.bytes > 0 && st.bytes + frame.len() > max {
            return Err((PushError::Full, frame));
        }
        self.enqueue(&mut st, Out::Frame(frame));
        Ok(())
    }

    /// Queues a frame, waiting for room under `max` bytes.
    pub(crate) async fn push(&self, frame: Bytes, max: usize) -> Result<(), PushError> {
        self.push_lane(frame, false, max).await
    }

    /// Queues a stream chunk (or a stream's end) in the bulk lane, waiting for room under
    /// `max` bytes.
    pub(crate) async fn push_bulk(&self, frame: Bytes, max: usize) -> Result<(), PushError> {
        self.push_lane(frame, true, max).await
    }

    pub(crate) fn try_push_bulk(&self, frame: Bytes, max: usize) -> Result<(), (PushError, Bytes)> {
        let mut st = self.lock();
        if st.closed {
            return Err((PushError::Closed, frame));
        }
        let was_empty = st.is_empty();
        let lane = st.bulk.get_or_insert_with(Box::default);
        if lane.bytes > 0 && lane.bytes + frame.len() > max {
            return Err((PushError::Full, frame));
        }
        lane.bytes += frame.len();
        lane.chunks.push_back(frame);
        if was_empty {
            self.signal();
        }
        Ok(())
    }

    async fn push_lane(&self, frame: Bytes, bulk: bool, max: usize) -> Result<(), PushError> {
        self.until_room(frame, |f| if bulk { self.try_push_bulk(f, max) } else { self.try_push(f, max) })
            .await
    }

    /// Tries `attempt`, which hands its item back when the queue is full, until it succeeds
    /// or the outbox closes, waiting for room in between.
    async fn until_room<T>(
        &self,
        mut item: T,
        attempt: impl Fn(T) -> Result<(), (PushError, T)>,
    ) -> Result<(), PushError> {
        // Fast path: room now, no waiter registration.
        match attempt(item) {
            Ok(()) => return Ok(()),
            Err((PushError::Closed, _)) => return Err(PushError::Closed),
            Err((PushError::Full, back)) => item = back,
        }
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            match attempt(item) {
                Ok(()) => return Ok(()),
                Err((PushError::Closed, _)) => return Err(PushError::Closed),
                Err((PushError::Full, back)) => item = back,
            }
            notified.await;
        }
    }

    /// Queues a control message; fails only if the connection is gone.
    pub(crate) fn push_control(&self, out: Out) -> Result<(), PushError> {
        let mut st = self.lock();
        if st.closed {
            return Err(PushError::Closed);
        }
        self.enqueue(&mut st, out);
        Ok(())
    }

    /// Registers the consumer's waker and tells whether anything is queued.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        self.consumer.register(cx.waker());
        self.ready.swap(false, Ordering::Acquire)
    }

    /// Moves every small frame and control message into `into` (an empty deque) and wakes
    /// producers waiting for room; hand the emptied queue to [`recycle`] once done with it.
    pub(crate) fn drain(&self, into: &mut VecDeque<Out>) {
        let mut st = self.lock();
        std::mem::swap(&mut st.queue, into);
        let freed = std::mem::take(&mut st.bytes);
        drop(st);
        if freed > 0 {
            self.space.notify_waiters();
        }
    }

    /// Hands queued stream chunks to `out` up to `quantum` bytes (at least one chunk);
    /// returns whether anything remains queued, in either lane. Producers signal only when
    /// the outbox goes from empty to not, so the consumer must come back for anything that
    /// arrived since its last look; this answer is what tells it to.
    pub(crate) fn drain_bulk(&self, quantum: usize, mut out: impl FnMut(Bytes)) -> bool {
        let mut st = self.lock();
        let Some(lane) = st.bulk.as_mut() else { return !st.queue.is_empty() };
        let mut taken = 0;
        while taken < quantum.max(1) {
            let Some(chunk) = lane.chunks.pop_front() else { break };
            taken += chunk.len();
            out(chunk);
        }
        lane.bytes -= taken;
        if lane.chunks.is_empty() {
            st.bulk = None; // no lane kept while nothing streams
        }
        let more = !st.is_empty();
        drop(st);
        if taken > 0 {
            self.space.notify_waiters();
        }
        more
    }

    /// Marks the connection gone: queued items are dropped, producers fail from now on.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue = VecDeque::new();
        st.bytes = 0;
        st.bulk = None;
        drop(st);
        self.space.notify_waiters();
    }

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Hands a drained queue's room back for the next outbox that fills (see [`QueuePool`]).
pub(crate) fn recycle(queue: VecDeque<Out>) {
    RECYCLED.keep(queue);
}

/// Emptied queues, shared by every thread (producer and consumer threads differ).
static RECYCLED: QueuePool = QueuePool::new();

/// Emptied queues kept for outboxes that fill again. An outbox gives its queue to its
/// consumer whole (an idle connection holds no queue), so without these every burst of
/// frames allocated a queue and grew it by doubling on the producer's thread, and freed it
/// on the consumer's: under broadcast, allocator lock contention (13,500 `futex` calls a
/// second at 1,000 peers; 4,500 with this pool).
struct QueuePool {
    kept: Mutex<Vec<VecDeque<Out>>>,
}

impl QueuePool {
    /// Most queues kept.
    const KEEP: usize = 256;
    /// Largest queue kept, in entries (a burst beyond it is rare, and freed).
    const MAX_ENTRIES: usize = 256;

    const fn new() -> QueuePool {
        QueuePool { kept: Mutex::new(Vec::new()) }
    }

    /// An empty queue, with room if one was kept.
    fn take(&self) -> VecDeque<Out> {
        self.kept.lock_or_recover().pop().unwrap_or_default()
    }

    /// Keeps an emptied queue's room, within the bounds.
    fn keep(&self, mut queue: VecDeque<Out>) {
        queue.clear();
        if queue.capacity() == 0 || queue.capacity() > Self::MAX_ENTRIES {
            return;
        }
        let mut kept = self.kept.lock_or_recover();
        if kept.len() < Self::KEEP {
            kept.push(queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_kept_with_their_room_within_bounds() {
        let pool = QueuePool::new();
        assert_eq!(pool.take().capacity(), 0, "none kept yet");
        let mut used = VecDeque::with_capacity(64);
        used.push_back(Out::Shutdown);
        pool.keep(used);
        let again = pool.take();
        assert!(again.is_empty() && again.capacity() >= 64, "emptied, room kept");
        pool.keep(VecDeque::new());
        pool.keep(VecDeque::with_capacity(QueuePool::MAX_ENTRIES * 2));
        assert_eq!(pool.take().capacity(), 0, "no room, or too much, is not kept");
        for _ in 0..QueuePool::KEEP + 10 {
            pool.keep(VecDeque::with_capacity(4));
        }
        assert_eq!(pool.kept.lock_or_recover().len(), QueuePool::KEEP);
    }

    #[test]
    fn an_outbox_fills_a_recycled_queue_and_hands_it_over_whole() {
        let outbox = Outbox::new();
        for i in 0..100u8 {
            outbox.try_push(Bytes::from(vec![i; 10]), usize::MAX).unwrap();
        }
        let mut taken = VecDeque::new();
        outbox.drain(&mut taken);
        assert_eq!(taken.len(), 100);
        assert!(outbox.lock().queue.capacity() == 0, "an emptied outbox holds no queue");
        let first: Vec<u8> = taken.iter().map(|o| if let Out::Frame(b) = o { b[0] } else { 255 }).collect();
        assert_eq!(first, (0..100).collect::<Vec<u8>>(), "in order");
    }
}
