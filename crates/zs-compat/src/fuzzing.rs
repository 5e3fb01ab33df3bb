//! Bodies of the ZServer4D fuzz targets under `fuzz/` (`compat_frame`, `compat_seq`,
//! `compat_dfe`), as plain functions that ordinary tests also run over a corpus and random
//! inputs. Each returns normally for every input; whatever decodes re-encodes to the same
//! bytes (or the same value, where the decoder is lenient).

use bytes::BytesMut;

use crate::dfe::Dfe;
use crate::frame::{self, CompatLimits, Decoded};
use crate::hash::HashKind;
use crate::seq::{self, Parsed, SeqConfig, SeqLayer};

const LIMIT: u64 = 1 << 20;

/// Decodes `data` as frames (as requests, as results and as chunk heads); each frame
/// decoded re-encodes to its bytes, and each request payload is parsed.
pub fn frames(data: &[u8]) {
    let limits = CompatLimits { max_payload: 1 << 16, max_complete_buffer: 1 << 16, max_chunk: 1 << 16 };
    let mut at = 0;
    while let Ok(Some((f, n))) = frame::decode(&data[at..], &limits) {
        let mut again = Vec::new();
        match &f {
            Decoded::Request(r) => {
                let hash = HashKind::from_u8(r.hash).expect("a verified frame has a known hash kind");
                frame::encode_request(&mut again, r.kind, &r.payload, hash);
                assert_eq!(again, &data[at..at + n]);
                let _ = frame::parse_request_payload(r.kind, &r.payload, LIMIT);
            }
            Decoded::BigStreamHead { total, command } => {
                frame::encode_big_stream_head(&mut again, *total, command)
            }
            Decoded::FragmentSignal | Decoded::DoneSignal => {
                frame::encode_signal(&mut again, f == Decoded::DoneSignal)
            }
            Decoded::CompleteBufferHead { size, compressed, command } => {
                frame::encode_complete_buffer_head(&mut again, *size, *compressed, command)
            }
        }
        assert_eq!(frame::decode(&again, &limits).expect("re-decodes"), Some((f, again.len())));
        at += n;
    }
    if let Ok(Some((r, n))) = frame::decode_reply(data, &limits) {
        let mut again = Vec::new();
        frame::encode_reply(&mut again, &r.payload, HashKind::from_u8(r.hash).expect("known hash kind"));
        assert_eq!(again, &data[..n]);
    }
    if let Ok(Some(h)) = frame::decode_chunk_head(data, &limits) {
        let mut again = Vec::new();
        frame::encode_chunk_head(&mut again, h.size, h.compressed);
        assert_eq!(again, &data[..frame::CHUNK_HEAD_LEN]);
    }
}

/// Decodes `data` as sequence packets, each re-encoding to its bytes, and feeds them to a
/// sequence layer (which must stay within its memory bound or fail cleanly).
pub fn packets(data: &[u8]) {
    let now = std::time::Instant::now();
    let mut layer = SeqLayer::new(SeqConfig { max_memory: 1 << 16, ..SeqConfig::default() }, now);
    let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
    let mut at = 0;
    while let Ok(Some((p, n))) = seq::decode(&data[at..]) {
        if let Parsed::Packet(packet) = &p {
            let mut again = BytesMut::new();
            seq::encode(packet, &mut again);
            assert_eq!(&again[..], &data[at..at + n]);
        }
        if layer.receive(p, now, &mut input, &mut out).is_err() {
            return;
        }
        at += n;
    }
    assert!(input.len() <= data.len());
}

/// Decodes `data` as a DataFrameEngine (and as a parallel compression container); what
/// decodes re-encodes (plain and compressed) to bytes that decode to the same encoding,
/// converts to a `DataFrame` and back, and is read as a handshake answer.
pub fn dfe(data: &[u8]) {
    if let Ok(len) = crate::compress::parallel_len(data) {
        // Whole or a piece at a time, a container inflates to the same bytes (or fails).
        let whole = crate::compress::parallel_decompress(data, len, LIMIT);
        let pieces = crate::compress::ParallelInflater::new(bytes::Bytes::copy_from_slice(data), len, LIMIT)
            .and_then(|mut z| {
                let mut out = Vec::new();
                while let Some(p) = z.next_piece(997)? {
                    assert!(p.len() <= 997);
                    out.extend_from_slice(&p);
                }
                Ok(out)
            });
        if let (Ok(w), Ok(p)) = (&whole, &pieces) {
            assert_eq!(w, p);
        }
        assert!(
            whole.is_ok() || pieces.is_err() || len == 0,
            "pieces succeed where the whole fails: {whole:?}"
        );
    }
    let Ok(d) = Dfe::decode(data, LIMIT) else { return };
    if let Ok(model) = crate::handshake::CipherModel::from_dfe(&d) {
        let again = crate::handshake::CipherModel::from_dfe(&model.to_dfe()).expect("re-reads");
        assert_eq!(again, model);
    }
    let plain = d.encode();
    assert_eq!(Dfe::decode(&plain, LIMIT).expect("re-decodes").encode(), plain);
    let packed = d.encode_compressed();
    assert_eq!(Dfe::decode(&packed, LIMIT).expect("compressed re-decodes").encode(), plain);
    let _ = Dfe::from_dataframe(&d.to_dataframe()).encode();
}

/// Reads the corpus of `target` under `root/fuzz/corpus`, plus `n` inputs derived from it
/// and random ones (the same generator as zs-wire's targets).
pub fn inputs(root: &std::path::Path, target: &str, n: usize) -> Vec<Vec<u8>> {
    zs_wire::fuzzing::inputs(root, target, n)
}

/// Bytes from hex digits (test fixtures; panics on anything else).
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits")).collect()
}

/// A recorded capture of the original's traffic (`tests/fixtures/capture_*.txt`: `#`
/// comments, then one recv() chunk per line, `c2s` or `s2c` and its hex): (client to
/// server?, bytes) in order.
pub fn parse_capture(text: &str) -> Vec<(bool, Vec<u8>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (dir, bytes) = l.split_once(' ').expect("direction and hex");
            (dir == "c2s", hex(bytes))
        })
        .collect()
}

/// Feeds `data` to a translation as a client's bytes, split at a point it chooses, and
/// answers whatever calls and streams come out as a connection would (replies, credit,
/// results): the translation fails cleanly or goes on, never panics, and holds no more
/// input than it wants.
pub fn translate(data: &[u8]) {
    use crate::translate::{Settings, Translator};
    use zs_wire::{encode, FrameDecoder, Kind, Limits};
    let now = std::time::Instant::now();
    let settings = Settings {
        limits: CompatLimits { max_payload: 1 << 16, max_complete_buffer: 1 << 18, max_chunk: 1 << 16 },
        seq: SeqConfig { max_memory: 1 << 16, ..SeqConfig::default() },
        max_pipelined: 8,
        idle_ms: 0,
        started: now,
        started_md5: [0; 16],
    };
    let mut t = Translator::new(std::sync::Arc::new(settings), 1);
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut decoder = FrameDecoder::new(Limits::default());
    for part in [&data[..split], &data[split..]] {
        t.input().extend_from_slice(part);
        t.received(now);
        let mut frames = std::mem::take(t.to_connection());
        let mut answers = bytes::BytesMut::new();
        while let Ok(Some(f)) = decoder.decode(&mut frames) {
            match f.header.kind {
                Kind::Call => {
                    encode::frame(&mut answers, Kind::Reply, f.header.request, |b| b.extend_from_slice(b"ok"))
                }
                Kind::Ping => encode::control(&mut answers, Kind::Pong, f.header.request),
                Kind::StreamOpen | Kind::StreamData => {
                    encode::frame(&mut answers, Kind::StreamCredit, f.header.request, |b| {
                        b.extend_from_slice(&(64u32 << 10).to_le_bytes())
                    })
                }
                Kind::StreamEnd => encode::stream_result(&mut answers, f.header.request, 0, ""),
                _ => {}
            }
        }
        t.from_connection(&answers, now).expect("the connection's own frames");
        let _ = t.on_timer(now);
        t.to_client().clear();
        if t.failed().is_some() {
            return;
        }
    }
}
