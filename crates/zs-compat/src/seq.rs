//! The sequence-packet layer (`zserver4d-core.md` §3.1): on by default on the original's
//! physical links, below the frames. Each write is cut into numbered packets with an MD5;
//! the receiver acknowledges each, asks again for a gap or a bad MD5, and answers
//! keepalives; the sender keeps a copy of each packet until it is acknowledged and writes
//! again those unacknowledged for 3 s.
//!
//! ```text
//! 01 quiet  | size u16 | seq u32 | md5 16 B | data    (no ack)
//! 02 packet | size u16 | seq u32 | md5 16 B | data    (answered by 03)
//! 03 ack    | seq u32
//! 04 keepalive | len u16 | data   (answered by 05 with the same data)
//! 05 keepalive echo | len u16 | data
//! 06 resend request | seq u32
//! ```
//! Sans-IO: the caller passes the time in and writes what the layer appends.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::hash::md5;
use crate::CompatError;

/// Most data bytes in one packet (the original's MTU 1024 less 23).
pub const MAX_DATA: usize = 1001;
/// Bytes before a data packet's data.
pub const HEAD_LEN: usize = 23;

/// One sequence packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// 01: data, not acknowledged.
    Quiet {
        /// Sequence number.
        seq: u32,
        /// Data.
        data: Bytes,
    },
    /// 02: data, acknowledged.
    Data {
        /// Sequence number.
        seq: u32,
        /// Data.
        data: Bytes,
    },
    /// 03: acknowledges a data packet.
    Ack(u32),
    /// 04: keepalive; answered with an echo of the same bytes.
    KeepAlive(Bytes),
    /// 05: keepalive echo.
    KeepAliveEcho(Bytes),
    /// 06: asks for a data packet again.
    Resend(u32),
}

/// What [`decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A packet.
    Packet(Packet),
    /// A data packet whose MD5 does not match its data: to be asked for again.
    Corrupt(u32),
}

/// Decodes the packet at the front of `buf`; `Ok(None)` until it is whole.
pub fn decode(buf: &[u8]) -> Result<Option<(Parsed, usize)>, CompatError> {
    let Some(&ty) = buf.first() else { return Ok(None) };
    let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    match ty {
        1 | 2 => {
            if buf.len() < HEAD_LEN {
                return Ok(None);
            }
            let size = u16_at(1);
            let end = HEAD_LEN + size;
            if buf.len() < end {
                return Ok(None);
            }
            let seq = u32_at(3);
            let data = &buf[HEAD_LEN..end];
            if md5(data) != buf[7..23] {
                return Ok(Some((Parsed::Corrupt(seq), end)));
            }
            let data = Bytes::copy_from_slice(data);
            let p = if ty == 1 { Packet::Quiet { seq, data } } else { Packet::Data { seq, data } };
            Ok(Some((Parsed::Packet(p), end)))
        }
        3 | 6 => {
            if buf.len() < 5 {
                return Ok(None);
            }
            let seq = u32_at(1);
            Ok(Some((Parsed::Packet(if ty == 3 { Packet::Ack(seq) } else { Packet::Resend(seq) }), 5)))
        }
        4 | 5 => {
            if buf.len() < 3 {
                return Ok(None);
            }
            let end = 3 + u16_at(1);
            if buf.len() < end {
                return Ok(None);
            }
            let data = Bytes::copy_from_slice(&buf[3..end]);
            Ok(Some((
                Parsed::Packet(if ty == 4 { Packet::KeepAlive(data) } else { Packet::KeepAliveEcho(data) }),
                end,
            )))
        }
        other => Err(CompatError::UnknownPacket(other)),
    }
}

fn put_data(out: &mut BytesMut, ty: u8, seq: u32, data: &[u8]) {
    out.put_u8(ty);
    out.put_u16_le(data.len() as u16);
    out.put_u32_le(seq);
    out.put_slice(&md5(data));
    out.put_slice(data);
}

/// Appends `packet`'s bytes (data longer than [`MAX_DATA`] is the caller's mistake: the
/// original's receivers take at most 65,535).
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    match packet {
        Packet::Quiet { seq, data } => put_data(out, 1, *seq, data),
        Packet::Data { seq, data } => put_data(out, 2, *seq, data),
        Packet::Ack(seq) | Packet::Resend(seq) => {
            out.put_u8(if matches!(packet, Packet::Ack(_)) { 3 } else { 6 });
            out.put_u32_le(*seq);
        }
        Packet::KeepAlive(d) | Packet::KeepAliveEcho(d) => {
            out.put_u8(if matches!(packet, Packet::KeepAlive(_)) { 4 } else { 5 });
            out.put_u16_le(d.len() as u16);
            out.put_slice(d);
        }
    }
}

/// Timers and bounds of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqConfig {
    /// A packet unacknowledged this long is written again (the original: 3 s).
    pub resend_after: Duration,
    /// How often the unacknowledged packets are looked at (the original: 1 s).
    pub check_every: Duration,
    /// Most bytes written again per look (the original: about 100 KB).
    pub resend_per_check: usize,
    /// Send a keepalive after this long without traffic (the original: 1 s); `None`: never.
    pub keepalive_after: Option<Duration>,
    /// Most bytes kept for the peer's acknowledgement plus packets parked out of order;
    /// beyond it the connection fails (the original: unlimited by default). Default 32 MiB.
    pub max_memory: usize,
}

impl Default for SeqConfig {
    fn default() -> Self {
        SeqConfig {
            resend_after: Duration::from_secs(3),
            check_every: Duration::from_secs(1),
            resend_per_check: 100_000,
            keepalive_after: None,
            max_memory: 32 << 20,
        }
    }
}

/// One end of the sequence layer.
#[derive(Debug)]
pub struct SeqLayer {
    config: SeqConfig,
    next_send: u32,
    /// Packets written and not yet acknowledged: (seq, encoded packet, last written).
    unacked: VecDeque<(u32, Bytes, Instant)>,
    unacked_bytes: usize,
    expected: u32,
    /// Packets that arrived ahead of a gap.
    parked: BTreeMap<u32, Bytes>,
    parked_bytes: usize,
    last_check: Instant,
    last_traffic: Instant,
    /// Packets discarded as already received.
    pub discarded: u64,
}

/// `a` comes after `b`, with wrap-around.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl SeqLayer {
    /// A new layer (both directions start at sequence number 0).
    pub fn new(config: SeqConfig, now: Instant) -> Self {
        SeqLayer {
            config,
            next_send: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            expected: 0,
            parked: BTreeMap::new(),
            parked_bytes: 0,
            last_check: now,
            last_traffic: now,
            discarded: 0,
        }
    }

    fn memory_check(&self) -> Result<(), CompatError> {
        let used = self.unacked_bytes + self.parked_bytes;
        if used > self.config.max_memory {
            return Err(CompatError::TooLarge {
                what: "unacknowledged and out-of-order sequence packets",
                size: used as u64,
                limit: self.config.max_memory as u64,
            });
        }
        Ok(())
    }

    /// Cuts `data` into acknowledged packets appended to `out`, keeping a copy of each.
    pub fn send(&mut self, data: &[u8], now: Instant, out: &mut BytesMut) -> Result<(), CompatError> {
        for piece in data.chunks(MAX_DATA) {
            let start = out.len();
            put_data(out, 2, self.next_send, piece);
            let packet = Bytes::copy_from_slice(&out[start..]);
            self.unacked_bytes += packet.len();
            self.unacked.push_back((self.next_send, packet, now));
            self.next_send = self.next_send.wrapping_add(1);
        }
        self.last_traffic = now;
        self.memory_check()
    }

    /// Handles one decoded packet: data in order is appended to `input` (with what was
    /// parked behind it), answers (acks, echoes, resends, resend requests) to `out`.
    pub fn receive(
        &mut self,
        parsed: Parsed,
        now: Instant,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), CompatError> {
        self.last_traffic = now;
        let (seq, data, ack) = match parsed {
            Parsed::Corrupt(seq) => {
                encode(&Packet::Resend(seq), out);
                return Ok(());
            }
            Parsed::Packet(Packet::Data { seq, data }) => (seq, data, true),
            Parsed::Packet(Packet::Quiet { seq, data }) => (seq, data, false),
            Parsed::Packet(Packet::Ack(seq)) => {
                if let Some(i) = self.unacked.iter().position(|(s, ..)| *s == seq) {
                    let (_, p, _) = self.unacked.remove(i).expect("found");
                    self.unacked_bytes -= p.len();
                }
                return Ok(());
            }
            Parsed::Packet(Packet::Resend(seq)) => {
                if let Some((_, p, at)) = self.unacked.iter_mut().find(|(s, ..)| *s == seq) {
                    out.put_slice(p);
                    *at = now;
                }
                return Ok(());
            }
            Parsed::Packet(Packet::KeepAlive(d)) => {
                encode(&Packet::KeepAliveEcho(d), out);
                return Ok(());
            }
            Parsed::Packet(Packet::KeepAliveEcho(_)) => return Ok(()),
        };
        if ack {
            encode(&Packet::Ack(seq), out);
        }
        if seq == self.expected {
            input.put_slice(&data);
            self.expected = self.expected.wrapping_add(1);
            while let Some(next) = self.parked.remove(&self.expected) {
                self.parked_bytes -= next.len();
                input.put_slice(&next);
                self.expected = self.expected.wrapping_add(1);
            }
        } else if after(seq, self.expected) {
            if !self.parked.contains_key(&seq) {
                self.parked_bytes += data.len();
                self.parked.insert(seq, data);
            }
            encode(&Packet::Resend(self.expected), out);
            self.memory_check()?;
        } else {
            self.discarded += 1;
        }
        Ok(())
    }

    /// Runs the timers: writes again packets unacknowledged for `resend_after` (once per
    /// `check_every`), and a keepalive after `keepalive_after` of silence. Returns when to
    /// call again, if anything is waiting.
    pub fn on_timer(&mut self, now: Instant, out: &mut BytesMut) -> Option<Instant> {
        if !self.unacked.is_empty() && now.duration_since(self.last_check) >= self.config.check_every {
            self.last_check = now;
            let mut budget = self.config.resend_per_check;
            for (_, p, at) in self.unacked.iter_mut() {
                if budget == 0 || now.duration_since(*at) < self.config.resend_after {
                    break;
                }
                out.put_slice(p);
                *at = now;
                budget = budget.saturating_sub(p.len());
            }
        }
        if self.config.keepalive_after.is_some_and(|k| now.duration_since(self.last_traffic) >= k) {
            encode(&Packet::KeepAlive(Bytes::new()), out);
            self.last_traffic = now;
        }
        let resend = (!self.unacked.is_empty()).then(|| {
            let oldest = self.unacked.front().expect("not empty").2;
            (oldest + self.config.resend_after).max(self.last_check + self.config.check_every)
        });
        let keepalive = self.config.keepalive_after.map(|k| self.last_traffic + k);
        match (resend, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes kept for the peer's acknowledgement.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(buf: &[u8]) -> Vec<Parsed> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((p, n)) = decode(&buf[at..]).unwrap() {
            out.push(p);
            at += n;
        }
        assert_eq!(at, buf.len());
        out
    }

    #[test]
    fn out_of_order_and_corrupt_packets_are_asked_again_and_delivered_once_in_order() {
        let t = Instant::now();
        let mut a = SeqLayer::new(SeqConfig::default(), t);
        let mut b = SeqLayer::new(SeqConfig::default(), t);
        let data: Vec<u8> = (0..3500u32).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        a.send(&data, t, &mut wire).unwrap();
        let mut sent = packets(&wire);
        assert_eq!(sent.len(), 4, "1001-byte packets");
        // Deliver 1 first (parked, resend of 0 asked), a corrupt copy of 2, then 0, 3, 2.
        sent.swap(0, 1);
        let (mut input, mut answers) = (BytesMut::new(), BytesMut::new());
        let corrupt = Parsed::Corrupt(2);
        for p in
            [sent[0].clone(), corrupt, sent[1].clone(), sent[3].clone(), sent[2].clone(), sent[1].clone()]
        {
            b.receive(p, t, &mut input, &mut answers).unwrap();
        }
        assert_eq!(&input[..], &data[..]);
        assert_eq!(b.discarded, 1, "the duplicate of packet 0");
        let answers = packets(&answers);
        assert!(answers.contains(&Parsed::Packet(Packet::Resend(0))));
        assert!(answers.contains(&Parsed::Packet(Packet::Resend(2))));
        // The acks free the sender's copies; a resend request before that rewrites one.
        let mut again = BytesMut::new();
        a.receive(Parsed::Packet(Packet::Resend(2)), t, &mut input, &mut again).unwrap();
        assert_eq!(packets(&again), vec![sent[2].clone()]);
        for p in answers {
            a.receive(p, t, &mut input, &mut again).unwrap();
        }
        assert_eq!(a.unacked_bytes(), 0);
    }

    #[test]
    fn unacknowledged_packets_are_written_again_after_three_seconds() {
        let t = Instant::now();
        let mut a = SeqLayer::new(SeqConfig::default(), t);
        let mut wire = BytesMut::new();
        a.send(b"hello", t, &mut wire).unwrap();
        let mut out = BytesMut::new();
        let next = a.on_timer(t + Duration::from_millis(1500), &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(next, t + Duration::from_secs(3));
        a.on_timer(next, &mut out);
        assert_eq!(out, wire, "the same packet again");
        // Too much unacknowledged data fails the layer instead of growing without bound.
        let mut small = SeqLayer::new(SeqConfig { max_memory: 10_000, ..SeqConfig::default() }, t);
        assert!(small.send(&[0; 20_000], t, &mut BytesMut::new()).is_err());
    }
}
