//! Statistics counters. Connections count into a local copy and add it to the shared
//! atomics once per wake-up, so no shared cache line is written per frame.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident,)*) => {
        /// Shared counters of a server or client (all its connections).
        #[derive(Debug, Default)]
        pub struct Stats { $(pub(crate) $name: AtomicU64,)* }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct StatsSnapshot { $($(#[$m])* pub $name: u64,)* }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Connections accepted or established.
    connections_opened,
    /// Connections closed.
    connections_closed,
    /// Connections refused because of `max_connections`.
    connections_refused,
    /// Frames received.
    frames_in,
    /// Frames sent.
    frames_out,
    /// Bytes received.
    bytes_in,
    /// Bytes sent.
    bytes_out,
    /// Console calls received.
    console_in,
    /// Stream calls received.
    stream_in,
    /// Direct console commands received.
    direct_console_in,
    /// Direct stream commands received.
    direct_stream_in,
    /// Calls and direct commands sent.
    commands_out,
    /// Error replies sent.
    errors_out,
    /// Calls received for a command nobody registered.
    unknown_commands,
    /// Handlers that panicked.
    handler_panics,
    /// Connections closed for a protocol violation.
    protocol_errors,
    /// Calls sent that timed out.
    call_timeouts,
    /// Connections closed by the idle timeout.
    idle_timeouts,
    /// Streams announced to this end (big streams, complete buffers, batch streams).
    streams_in,
    /// Secure handshakes completed.
    handshakes,
    /// Secure handshakes that failed, timed out or were refused.
    handshakes_failed,
    /// Times a connection rolled its sending keys.
    rekeys,
    /// Virtual channels opened (by either end) on this end's connections.
    channels_opened,
    /// Virtual channels closed, reset, refused after opening, or failed with their connection.
    channels_closed,
    /// Resumable sessions opened.
    sessions_opened,
    /// Times a session resumed over a new link.
    sessions_resumed,
    /// Sessions that ended because their link did not come back in time (or the other end
    /// no longer knew them).
    sessions_expired,
    /// Resume attempts refused for a wrong proof.
    sessions_refused,
    /// Physical links a session lost.
    session_links_lost,
    /// Bytes sent again after resumes.
    session_replayed_bytes,
    /// Detached sessions ended early to stay within the caps on detached sessions.
    sessions_evicted,
    /// Unfinished handshakes dropped to make room for newer connections (per source or in
    /// all).
    handshakes_evicted,
    /// Handshakes refused because their source address started too many per second.
    handshakes_rate_limited,
    /// Connections that sent nothing within the first-bytes deadline.
    handshakes_silent,
    /// Charges refused by the memory budget (the connection or transfer that would have
    /// held the most is refused).
    budget_refusals,
    /// Connections told to close because the memory budget was short and they held the
    /// most.
    budget_closes,
    /// Bytes charged to the memory budget now (a gauge).
    memory_held,
}

/// The per-frame counts of one connection not yet added to the shared [`Stats`];
/// published at least once per read, so 32 bits suffice. Rare events (errors, timeouts)
/// go straight to the shared counters.
#[derive(Debug, Default)]
pub(crate) struct LocalStats {
    pub(crate) frames_in: u32,
    pub(crate) frames_out: u32,
    pub(crate) bytes_in: u32,
    pub(crate) bytes_out: u32,
    pub(crate) console_in: u32,
    pub(crate) stream_in: u32,
    pub(crate) direct_console_in: u32,
    pub(crate) direct_stream_in: u32,
}

impl LocalStats {
    /// Adds the local counts to `to` and zeroes them.
    pub(crate) fn flush(&mut self, to: &Stats) {
        let add = |c: &AtomicU64, v: &mut u32| {
            if *v != 0 {
                c.fetch_add(u64::from(std::mem::take(v)), Relaxed);
            }
        };
        add(&to.frames_in, &mut self.frames_in);
        add(&to.frames_out, &mut self.frames_out);
        add(&to.bytes_in, &mut self.bytes_in);
        add(&to.bytes_out, &mut self.bytes_out);
        add(&to.console_in, &mut self.console_in);
        add(&to.stream_in, &mut self.stream_in);
        add(&to.direct_console_in, &mut self.direct_console_in);
        add(&to.direct_stream_in, &mut self.direct_stream_in);
    }
}

impl StatsSnapshot {
    /// Connections open now.
    pub fn connections_active(&self) -> u64 {
        self.connections_opened.saturating_sub(self.connections_closed)
    }

    /// The counters as a JSON object (with `connections_active` added).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("connections_active".into(), self.connections_active().into());
        }
        v
    }
}

impl Stats {
    /// Adds one to a counter chosen by a closure (rare events, and those outside a
    /// connection's batch).
    pub(crate) fn bump(&self, counter: impl Fn(&Stats) -> &AtomicU64) {
        counter(self).fetch_add(1, Relaxed);
    }

    /// Adds `n` to a counter chosen by a closure.
    pub(crate) fn add(&self, counter: impl Fn(&Stats) -> &AtomicU64, n: u64) {
        counter(self).fetch_add(n, Relaxed);
    }
}
