//! Credit-window flow control, sans IO: a receiver lets its sender have at most a window of
//! bytes unread, and grants more as its reader consumes them; the sender spends credit and
//! waits when it has none. Big streams, virtual channels and the ZServer4D translation all
//! use these two types; the time is passed in, so they are tested without a clock.
//!
//! Totals, not deltas: the receiver keeps how much the sender may have sent in all
//! (`granted`), how much arrived and how much was read, so a sender that goes one byte past
//! its credit is caught exactly, whatever the order of grants and reads. The totals are
//! 32-bit and wrap, as TCP's sequence numbers do: only their differences matter, and those
//! never exceed a window. A receiver holds many windows (a channel each), so the policy is
//! passed in by the caller rather than kept in each.

use std::time::{Duration, Instant};

/// The sender's side: bytes it may still send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendCredit {
    available: u64,
}

impl SendCredit {
    /// Credit of `initial` bytes (the receiver's announced window).
    pub fn new(initial: u64) -> Self {
        SendCredit { available: initial }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// The receiver granted `n` more bytes.
    pub fn grant(&mut self, n: u64) {
        self.available = self.available.saturating_add(n);
    }

    /// Takes up to `want` bytes of credit; returns how many were taken (0 if there is none).
    pub fn take_up_to(&mut self, want: u64) -> u64 {
        let n = want.min(self.available);
        self.available -= n;
        n
    }

    /// Takes exactly `n` bytes of credit if there is that much (a whole chunk at once).
    pub fn take_exact(&mut self, n: u64) -> bool {
        let ok = self.available >= n;
        if ok {
            self.available -= n;
        }
        ok
    }
}

/// When a receiver grants, and how far its window may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPolicy {
    /// Grant once `1 / grant_divisor` of the window has been read since the last grant
    /// (2 for virtual channels, 4 for big streams).
    pub grant_divisor: u32,
    /// Also grant whenever the sender holds less than this: a sender that needs credit
    /// for a whole chunk at once would otherwise wait for a grant that never comes.
    pub min_credit: u32,
    /// Largest the window grows to; a window at or above it does not grow.
    pub max_window: u32,
    /// The window grows only once the shortest round trip measured is at least this long
    /// (zero: any). On loopback or a LAN a stalled sender's "round trip" is mostly its own
    /// time to make the next chunk, and a larger window there only holds more bytes in
    /// flight; over a long path it is the path, and the window must cover it.
    pub grow_from_rtt: Duration,
}

/// The receiver's side: checks arrivals against the credit given, and decides grants.
///
/// The window doubles (up to [`WindowPolicy::max_window`]) at a grant when the reader has
/// read everything and the window is under four times the measured bandwidth-delay
/// product: the rate data arrived at since the last grant times the shortest round trip
/// seen from a grant sent to a stalled sender (one that had used all its credit) to its
/// next data. A larger window would not make that sender faster, only queue its bytes
/// ahead of everything else on the connection.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    /// Bytes the sender may have sent in all (the initial window plus every grant), wrapping.
    granted: u32,
    /// Bytes that arrived in all, wrapping.
    received: u32,
    /// Bytes the reader took in all, wrapping.
    consumed: u32,
    /// Bytes that arrived since the last grant.
    arrived: u32,
    last_grant: Instant,
    /// A grant went to a stalled sender at this time: its next data measures a round trip.
    stalled_grant: Option<Instant>,
    /// The shortest round trip measured.
    rtt: Option<Duration>,
}

/// The sender sent more than its credit allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sender exceeded its credit: {sent} bytes sent with {credit} bytes of credit")]
pub struct CreditExceeded {
    /// Bytes it sent.
    pub sent: u64,
    /// Bytes of credit it had.
    pub credit: u64,
}

impl RecvWindow {
    /// A window of `initial` bytes (what the sender was told it may send before any grant).
    pub fn new(initial: u32, now: Instant) -> Self {
        RecvWindow {
            window: initial,
            granted: initial,
            received: 0,
            consumed: 0,
            arrived: 0,
            last_grant: now,
            stalled_grant: None,
            rtt: None,
        }
    }

    /// `n` bytes arrived; refused (and not counted) if they go past the credit given.
    pub fn on_data(&mut self, n: u64, now: Instant) -> Result<(), CreditExceeded> {
        let credit = self.sender_credit();
        if n > credit {
            return Err(CreditExceeded { sent: n, credit });
        }
        if n > 0 {
            if let Some(at) = self.stalled_grant.take() {
                let sample = now.saturating_duration_since(at);
                self.rtt = Some(self.rtt.map_or(sample, |r| r.min(sample)));
            }
        }
        self.received = self.received.wrapping_add(n as u32);
        self.arrived = self.arrived.saturating_add(n as u32);
        Ok(())
    }

    /// The reader took `n` bytes (at most what arrived and was not yet read). Returns the
    /// bytes to grant the sender, when `policy` says it is time to.
    pub fn on_consumed(&mut self, n: u64, now: Instant, policy: &WindowPolicy) -> Option<u32> {
        self.consumed = self.consumed.wrapping_add(n.min(self.unread()) as u32);
        let outstanding = u64::from(self.granted.wrapping_sub(self.consumed));
        let window = u64::from(self.window);
        let due = outstanding + window / u64::from(policy.grant_divisor.max(1)) <= window
            || outstanding < u64::from(policy.min_credit);
        if !due || outstanding >= window {
            return None;
        }
        // The sender has used all its credit: the grant that frees it times a round trip.
        if self.sender_credit() == 0 && self.stalled_grant.is_none() {
            self.stalled_grant = Some(now);
        }
        let elapsed = now.saturating_duration_since(std::mem::replace(&mut self.last_grant, now));
        let arrived = std::mem::take(&mut self.arrived);
        // window < 4 × BDP  ⇔  window × elapsed < 4 × arrived × rtt.
        let below_bdp = self.rtt.is_some_and(|rtt| {
            rtt >= policy.grow_from_rtt
                && u128::from(self.window) * elapsed.as_nanos() < 4 * u128::from(arrived) * rtt.as_nanos()
        });
        if self.unread() == 0 && self.window < policy.max_window && below_bdp {
            self.window = self.window.saturating_mul(2).min(policy.max_window);
        }
        let grant = (u64::from(self.window) - outstanding) as u32;
        self.granted = self.granted.wrapping_add(grant);
        Some(grant)
    }

    /// Sets the window the next grants aim at (a share of a connection's window that
    /// changes as streams open and close). A smaller window takes effect as the reader
    /// catches up: credit already given is not taken back.
    pub fn set_window(&mut self, window: u32) {
        self.window = window;
    }

    /// The window the grants aim at now.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// Bytes that arrived and were not read yet.
    pub fn unread(&self) -> u64 {
        u64::from(self.received.wrapping_sub(self.consumed))
    }

    /// Bytes the sender may still send.
    pub fn sender_credit(&self) -> u64 {
        u64::from(self.granted.wrapping_sub(self.received))
    }

    /// The shortest round trip measured, if any.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KIB: u32 = 1024;

    fn fixed(window: u32, divisor: u32, min_credit: u32) -> WindowPolicy {
        WindowPolicy { grant_divisor: divisor, min_credit, max_window: window, grow_from_rtt: Duration::ZERO }
    }

    #[test]
    fn one_byte_past_the_credit_is_refused() {
        let now = Instant::now();
        let mut w = RecvWindow::new(64 * KIB, now);
        w.on_data(u64::from(64 * KIB), now).unwrap();
        assert_eq!(w.on_data(1, now), Err(CreditExceeded { sent: 1, credit: 0 }));
        assert_eq!(w.unread(), u64::from(64 * KIB), "the refused byte is not counted");
    }

    #[test]
    fn grants_at_the_divisor_and_below_the_minimum_credit() {
        let now = Instant::now();
        let (half_policy, quarter_policy) = (fixed(100, 2, 0), fixed(100, 4, 90));
        let mut half = RecvWindow::new(100, now);
        half.on_data(100, now).unwrap();
        assert_eq!(half.on_consumed(49, now, &half_policy), None);
        assert_eq!(half.on_consumed(1, now, &half_policy), Some(50));
        let mut quarter = RecvWindow::new(100, now);
        quarter.on_data(20, now).unwrap();
        assert_eq!(quarter.on_consumed(5, now, &quarter_policy), None, "95 outstanding: neither rule");
        let granted = quarter.on_consumed(10, now, &quarter_policy);
        assert_eq!(granted, Some(15), "85 outstanding is under the minimum credit");
    }

    #[test]
    fn grows_only_with_a_measured_round_trip_and_a_reader_that_keeps_up() {
        let t0 = Instant::now();
        let policy = fixed(1 << 20, 2, 0);
        let mut w = RecvWindow::new(64 * KIB, t0);
        // The first window arrives, is read, and is granted again: no round trip yet.
        w.on_data(u64::from(64 * KIB), t0 + Duration::from_millis(1)).unwrap();
        assert_eq!(
            w.on_consumed(u64::from(64 * KIB), t0 + Duration::from_millis(1), &policy),
            Some(64 * KIB)
        );
        assert_eq!(w.window(), 64 * KIB);
        // Data comes back 10 ms after that grant to a stalled sender: the round trip.
        w.on_data(u64::from(64 * KIB), t0 + Duration::from_millis(11)).unwrap();
        assert_eq!(w.rtt(), Some(Duration::from_millis(10)));
        // 64 KiB in 10 ms with a 10 ms round trip: BDP 64 KiB, window 64 KiB < 4 × BDP.
        let grant = w.on_consumed(u64::from(64 * KIB), t0 + Duration::from_millis(11), &policy).unwrap();
        assert_eq!(w.window(), 128 * KIB);
        assert_eq!(grant, 64 * KIB + 64 * KIB, "what was read, plus the growth");
    }

    #[test]
    fn a_round_trip_shorter_than_the_policy_floor_does_not_grow_the_window() {
        let t0 = Instant::now();
        let floor = WindowPolicy { grow_from_rtt: Duration::from_millis(11), ..fixed(1 << 20, 2, 0) };
        for (policy, grown) in
            [(floor, false), (WindowPolicy { grow_from_rtt: Duration::from_millis(10), ..floor }, true)]
        {
            let mut w = RecvWindow::new(64 * KIB, t0);
            w.on_data(u64::from(64 * KIB), t0 + Duration::from_millis(1)).unwrap();
            w.on_consumed(u64::from(64 * KIB), t0 + Duration::from_millis(1), &policy).unwrap();
            w.on_data(u64::from(64 * KIB), t0 + Duration::from_millis(11)).unwrap();
            w.on_consumed(u64::from(64 * KIB), t0 + Duration::from_millis(11), &policy).unwrap();
            assert_eq!(
                w.window() > 64 * KIB,
                grown,
                "a 10 ms round trip against a {:?} floor",
                policy.grow_from_rtt
            );
        }
    }

    #[test]
    fn totals_wrap_like_sequence_numbers_over_a_long_life() {
        let now = Instant::now();
        let policy = fixed(1 << 20, 2, 0);
        let mut w = RecvWindow::new(1 << 20, now);
        let mut credit = 1u64 << 20;
        // 10 GiB through a 1 MiB window: the 32-bit totals wrap twice.
        for _ in 0..10 * 1024 {
            w.on_data(credit, now).unwrap();
            assert_eq!(w.on_data(1, now), Err(CreditExceeded { sent: 1, credit: 0 }));
            credit = u64::from(w.on_consumed(credit, now, &policy).expect("a grant"));
            assert_eq!(credit, 1 << 20);
            assert_eq!((w.unread(), w.sender_credit()), (0, 1 << 20));
        }
    }

    #[test]
    fn send_credit_takes_what_there_is() {
        let mut c = SendCredit::new(10);
        assert_eq!(c.take_up_to(4), 4);
        assert!(!c.take_exact(7));
        assert!(c.take_exact(6));
        assert_eq!(c.take_up_to(1), 0);
        c.grant(u64::MAX);
        c.grant(1);
        assert_eq!(c.available(), u64::MAX, "saturates");
    }

    /// What can happen next in a simulated sender, link and receiver.
    #[derive(Debug, Clone)]
    enum Step {
        /// The sender sends up to this many bytes of its credit.
        Send(u32),
        /// The link delivers up to this many bytes in flight.
        Arrive(u32),
        /// The reader reads up to this many bytes.
        Read(u32),
        /// Grants in flight reach the sender.
        Credit,
        /// Time passes (µs).
        Wait(u32),
        /// The connection's share changes.
        Share(u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..300_000u32).prop_map(Step::Send),
            (1..300_000u32).prop_map(Step::Arrive),
            (1..300_000u32).prop_map(Step::Read),
            Just(Step::Credit),
            (0..5_000u32).prop_map(Step::Wait),
            (64 * KIB..2 << 20).prop_map(Step::Share),
        ]
    }

    fn policy() -> impl Strategy<Value = (u32, WindowPolicy)> {
        (64 * KIB..1 << 20, prop_oneof![Just(2u32), Just(4)], 0..256 * KIB, 0..4u32).prop_map(
            |(initial, grant_divisor, min_credit, growth)| {
                let max_window = initial.saturating_mul(1 << growth);
                (
                    initial,
                    WindowPolicy {
                        grant_divisor,
                        min_credit: min_credit.min(initial),
                        max_window,
                        grow_from_rtt: Duration::ZERO,
                    },
                )
            },
        )
    }

    proptest! {
        /// A sender that spends only its credit is never refused; unread bytes never exceed
        /// the largest window; and when everything sent was read and every grant delivered,
        /// the sender has credit again (no deadlock).
        #[test]
        fn an_honest_sender_is_never_refused_and_never_stuck(
            (initial, policy) in policy(),
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut now = Instant::now();
            let mut rx = RecvWindow::new(initial, now);
            let mut tx = SendCredit::new(u64::from(initial));
            let (mut in_flight, mut grants) = (0u64, 0u64);
            let mut largest = initial;
            for s in steps {
                match s {
                    Step::Send(n) => in_flight += tx.take_up_to(u64::from(n)),
                    Step::Arrive(n) => {
                        let n = in_flight.min(u64::from(n));
                        in_flight -= n;
                        prop_assert!(rx.on_data(n, now).is_ok());
                    }
                    Step::Read(n) => {
                        let n = rx.unread().min(u64::from(n));
                        grants += u64::from(rx.on_consumed(n, now, &policy).unwrap_or(0));
                    }
                    Step::Credit => tx.grant(std::mem::take(&mut grants)),
                    Step::Wait(us) => now += Duration::from_micros(u64::from(us)),
                    Step::Share(w) => {
                        rx.set_window(w);
                        largest = largest.max(w);
                    }
                }
                largest = largest.max(rx.window());
                prop_assert!(rx.window() <= policy.max_window.max(largest));
                // Every byte of the window is somewhere: unread, in flight, credit or grant.
                let outstanding = rx.unread() + rx.sender_credit();
                prop_assert_eq!(outstanding, rx.unread() + in_flight + tx.available() + grants);
                prop_assert!(outstanding <= u64::from(largest), "at most the largest window");
            }
            // Drain: deliver everything, read everything, hand over the grants.
            rx.on_data(in_flight, now).unwrap();
            let unread = rx.unread();
            grants += u64::from(rx.on_consumed(unread, now, &policy).unwrap_or(0));
            tx.grant(grants);
            prop_assert!(tx.available() > 0, "a sender whose bytes were all read has credit");
        }

        /// Any byte beyond the credit given is refused, however it is split.
        #[test]
        fn a_sender_past_its_credit_is_refused(
            initial in 64 * KIB..1 << 20,
            parts in proptest::collection::vec(1..100_000u64, 1..40),
        ) {
            let now = Instant::now();
            let mut rx = RecvWindow::new(initial, now);
            let mut sent = 0u64;
            for n in parts {
                let r = rx.on_data(n, now);
                sent += n;
                prop_assert_eq!(r.is_ok(), sent <= u64::from(initial));
                if r.is_err() {
                    sent -= n;
                }
            }
            prop_assert_eq!(rx.unread(), sent);
        }
    }
}
