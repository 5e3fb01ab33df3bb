//! Bodies of the fuzz targets under `fuzz/`, as plain functions so that ordinary tests run
//! them too (over a corpus and random inputs) on the stable toolchain.
//!
//! Each returns normally for every input; a panic is a bug. Whatever decodes must also
//! re-encode to an equal value.

use bytes::{Bytes, BytesMut};

use crate::body::{parse_code_message, CallBody};
use crate::{DataFrame, FrameDecoder, FrameWriter, Kind, Limits};

/// Feeds `data` to a frame decoder in pieces, then decodes each frame's body.
pub fn frame_stream(data: &[u8]) {
    let limits = Limits { max_frame_len: 1 << 16, ..Limits::default() };
    let mut dec = FrameDecoder::new(limits);
    let mut buf = BytesMut::new();
    // Split points come from the data itself so the fuzzer explores partial reads.
    let step = 1 + data.first().map_or(0, |b| *b as usize % 17);
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => check_frame(&frame, &limits),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn check_frame(frame: &crate::Frame, limits: &Limits) {
    let h = frame.header;
    assert_eq!(h.len as usize, frame.body.len());
    let mut out = BytesMut::new();
    let mut w = FrameWriter::begin(&mut out, h.kind, h.flags, h.channel, h.request);
    w.body().extend_from_slice(&frame.body);
    w.finish(limits.max_frame_len).expect("a decoded frame re-encodes");
    let mut again = FrameDecoder::new(*limits);
    assert_eq!(again.decode(&mut out).expect("re-decodes").as_ref(), Some(frame));
    match h.kind {
        Kind::Call | Kind::Send => {
            // The word-at-a-time check and the general one agree on every body.
            assert_eq!(crate::body::utf8(&frame.body).ok(), std::str::from_utf8(&frame.body).ok());
            let split = crate::body::split_call(&frame.body);
            if let Ok(call) = CallBody::parse(&frame.body) {
                let (name, at) = split.expect("a body that parses splits");
                assert_eq!((call.name(), &call.payload[..]), (name, &frame.body[at..]));
                assert!(!call.name().is_empty());
                if h.flags.contains(crate::Flags::DATAFRAME) {
                    dataframe(&call.payload);
                }
            } else {
                assert!(split.is_err(), "a body that does not parse does not split");
            }
        }
        Kind::Error | Kind::GoAway => {
            let _ = parse_code_message(&frame.body);
        }
        _ => {}
    }
}

/// Parses `data` as a session hello and as an answer (whatever parses re-encodes to the
/// same bytes), and walks it as a session's frame stream in pieces, checking the acks
/// found against a walk in one piece.
pub fn session(data: &[u8]) {
    use crate::session::{Answer, FrameWalker, Hello};
    if let Ok(Some((hello, used))) = Hello::parse(data) {
        let mut again = BytesMut::new();
        hello.encode(&mut again);
        assert_eq!(&again[..], &data[..used], "a hello re-encodes to its bytes");
    }
    if let Ok(Some((answer, used))) = Answer::parse(data) {
        let mut again = BytesMut::new();
        answer.encode(&mut again);
        assert_eq!(Answer::parse(&again), Ok(Some((answer, again.len()))));
        assert!(used <= data.len());
    }
    let (mut whole, mut pieces) = (Vec::new(), Vec::new());
    let mut w = FrameWalker::default();
    w.walk(data, |a| whole.push(a));
    let mut w2 = FrameWalker::default();
    let step = 1 + data.first().map_or(0, |b| *b as usize % 29);
    for chunk in data.chunks(step) {
        w2.walk(chunk, |a| pieces.push(a));
    }
    assert_eq!(whole, pieces, "acks do not depend on how the stream is split");
    assert_eq!(w.at_boundary(), w2.at_boundary());
}

/// Splits `data` into frames and decodes every multiplexer frame among them: whatever
/// decodes re-encodes to the same frame (a reason longer than allowed never decodes).
pub fn mux(data: &[u8]) {
    use crate::mux::MuxFrame;
    let limits = Limits { max_frame_len: 1 << 16, ..Limits::default() };
    let mut dec = FrameDecoder::new(limits);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = dec.decode(&mut buf) {
        if !MuxFrame::is_mux(frame.header.kind) {
            continue;
        }
        if let Ok(m) = MuxFrame::decode(&frame.header, frame.body.clone()) {
            assert_eq!(m.channel(), frame.header.channel);
            let mut again = BytesMut::new();
            m.encode(&mut again).expect("a decoded mux frame re-encodes");
            let mut dec2 = FrameDecoder::new(limits);
            let f2 = dec2.decode(&mut again).expect("re-decodes").expect("whole");
            assert_eq!(MuxFrame::decode(&f2.header, f2.body).as_ref(), Ok(&m));
        }
    }
}

/// Decodes `data` as a DataFrame; whatever decodes must re-encode to an equal frame.
pub fn dataframe(data: &[u8]) {
    let limits = Limits { max_elements: 1 << 14, max_depth: 16, ..Limits::default() };
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(df) = DataFrame::decode(&bytes, &limits) {
        let _ = df.to_json();
        let mut r = df.reader();
        while r.remaining() > 0 {
            let _ = r.read_i64().or_else(|_| r.read_value().map(|_| 0));
        }
        let again = DataFrame::decode(&df.to_bytes(), &limits).expect("re-encoded frame decodes");
        // NaN is never equal to itself; compare encodings instead of values.
        assert_eq!(again.to_bytes(), df.to_bytes());
    }
}

/// Decodes `data` as every bulk body and as compressed payloads; what decodes re-encodes.
pub fn bulk_and_compressed(data: &[u8]) {
    use crate::bulk::{parse_batch_clear, parse_credit, StreamEnd, StreamOpen};
    use crate::compress::{lz4, unlz4, unzstd};
    if let Ok(open) = StreamOpen::parse(data) {
        let mut out = BytesMut::new();
        open.encode(&mut out).expect("a parsed open re-encodes");
        assert_eq!(&out[..], data);
    }
    if let Ok(end) = StreamEnd::parse(data) {
        let mut out = BytesMut::new();
        end.encode(&mut out);
        assert_eq!(&out[..], data);
    }
    let _ = parse_credit(data);
    let _ = parse_batch_clear(data);
    if let Ok(plain) = unlz4(data, 1 << 16) {
        assert!(plain.len() <= 1 << 16);
        assert_eq!(plain.len() as u64, u64::from(u32::from_le_bytes(data[..4].try_into().unwrap())));
        if let Some(c) = lz4(&plain) {
            assert_eq!(unlz4(&c, 1 << 16).expect("round trip"), plain);
        }
    }
    if let Ok(plain) = unzstd(data, 1 << 16) {
        assert!(plain.len() <= 1 << 16);
    }
}

/// The checked-in corpus of a fuzz target (`fuzz/corpus/TARGET` under `root`), plus `n`
/// inputs derived from it: random bytes, and corpus entries with bits flipped and tails
/// cut. Deterministic, so a failure repeats.
pub fn inputs(root: &std::path::Path, target: &str, n: usize) -> Vec<Vec<u8>> {
    let dir = root.join("fuzz/corpus").join(target);
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())) {
        seeds.push(std::fs::read(entry.expect("corpus entry").path()).expect("corpus file"));
    }
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds.sort();
    let mut rng = SplitMix(0x5A5A);
    let mut out = seeds.clone();
    for i in 0..n {
        let mut v = if i % 2 == 0 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[i % seeds.len()].clone()
        };
        if !v.is_empty() {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(v.len());
                v[at] ^= 1 << rng.below(8);
            }
            if rng.below(10) < 3 {
                v.truncate(rng.below(v.len()));
            }
        }
        out.push(v);
    }
    out
}

/// A small seeded generator (SplitMix64) for fuzz inputs and fault points: deterministic,
/// so a failure repeats; not for anything secret.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reads `data` as a WebSocket upgrade request and as a server's answer, then as frames in
/// pieces on both sides: what a reader yields split anywhere equals what it yields whole.
pub fn websocket(data: &[u8]) {
    use crate::websocket::{self as ws, Event, FrameReader, Origins};
    for origins in [Origins::SameOrigin, Origins::Any] {
        if let Ok(Some(up)) = ws::parse_upgrade(data, &origins) {
            assert!(up.used <= data.len());
            assert!(up.response.starts_with(b"HTTP/1.1 101"));
        }
    }
    let _ = ws::parse_answer(data, "dGhlIHNhbXBsZSBub25jZQ==");
    let step = 1 + data.first().map_or(0, |b| *b as usize % 13);
    for server in [true, false] {
        let read = |pieces: &mut dyn Iterator<Item = &[u8]>| {
            let mut reader = FrameReader::new(server, 1 << 16);
            let (mut input, mut out, mut events) = (BytesMut::new(), BytesMut::new(), Vec::new());
            for piece in pieces {
                input.extend_from_slice(piece);
                loop {
                    match reader.read(&mut input, &mut out) {
                        Ok(Some(Event::Data(_))) => {}
                        Ok(Some(e)) => events.push(e),
                        Ok(None) => break,
                        Err(e) => return (out, events, Some(e.close)),
                    }
                }
            }
            (out, events, None)
        };
        let whole = read(&mut std::iter::once(data));
        let split = read(&mut data.chunks(step));
        assert_eq!(whole.0, split.0, "stream bytes depend on the split");
        assert_eq!(whole.2, split.2, "the verdict depends on the split");
        let closes = |e: &Vec<Event>| e.iter().filter(|e| matches!(e, Event::Closed(_))).count();
        assert_eq!(closes(&whole.1), closes(&split.1));
    }
}
