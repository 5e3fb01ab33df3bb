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

        /// Counts of one connection not yet added to the shared [`Stats`]; published at
        /// least once per read, so 32 bits suffice (a read is at most one frame's size).
        #[derive(Debug, Default)]
        pub(crate) struct LocalStats { $(pub(crate) $name: u32,)* }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl LocalStats {
            /// Adds the local counts to `to` and zeroes them.
            pub(crate) fn flush(&mut self, to: &Stats) {
                $(if self.$name != 0 { to.$name.fetch_add(u64::from(std::mem::take(&mut self.$name)), Relaxed); })*
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
    /// Adds `n` to a counter chosen by a closure (for events outside a connection's batch).
    pub(crate) fn bump(&self, counter: impl Fn(&Stats) -> &AtomicU64) {
        counter(self).fetch_add(1, Relaxed);
    }
}
