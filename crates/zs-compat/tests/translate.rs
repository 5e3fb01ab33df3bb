//! The translation between a ZServer4D client and a zserver connection, driven without IO
//! and with the time passed in: what a client's bytes become, what the connection's frames
//! become, and how a BigStream is paced by the connection's credit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use zs_compat::frame::{self, Body, CompatLimits, Decoded, FrameKind};
use zs_compat::seq::SeqConfig;
use zs_compat::translate::{Notice, Settings, Translator, READ_AHEAD};
use zs_compat::{Dfe, Element, HashKind};
use zs_wire::bulk::{StreamEnd, StreamOpen, INITIAL_WINDOW};
use zs_wire::{encode, Frame, FrameDecoder, Kind, Limits};

fn translator(started: Instant) -> Translator {
    let settings = Settings {
        limits: CompatLimits::default(),
        seq: SeqConfig::default(),
        max_pipelined: 64,
        idle_ms: 0,
        started,
        started_md5: [7; 16],
    };
    Translator::new(Arc::new(settings), 42)
}

/// Frames straight on the link (the client's first byte 0xF0 says so).
fn request(kind: FrameKind, command: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let payload = frame::request_payload(command, &Body::Text(text.into()));
    frame::encode_request(&mut out, kind, &payload, HashKind::Md5);
    out
}

fn feed(t: &mut Translator, bytes: &[u8], now: Instant) -> Vec<Frame> {
    t.input().extend_from_slice(bytes);
    t.received(now);
    frames(t)
}

fn frames(t: &mut Translator) -> Vec<Frame> {
    let mut buf = std::mem::take(t.to_connection());
    let mut d = FrameDecoder::new(Limits { max_frame_len: u32::MAX, ..Limits::default() });
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty(), "whole frames only");
    out
}

/// The result frames the client got, as payloads.
fn results(t: &mut Translator) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let buf = t.to_client().split();
    let mut at = 0;
    while let Some((r, n)) = frame::decode_reply(&buf[at..], &CompatLimits::default()).unwrap() {
        out.push(r.payload.to_vec());
        at += n;
    }
    out
}

fn answer(t: &mut Translator, frame: BytesMut, now: Instant) {
    t.from_connection(&frame, now).unwrap();
}

#[test]
fn requests_become_calls_and_results_go_back_in_request_order() {
    let now = Instant::now();
    let mut t = translator(now);
    let mut bytes = request(FrameKind::Console, "first", "a");
    bytes.extend(request(FrameKind::Console, "second", "b"));
    let calls = feed(&mut t, &bytes, now);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|f| f.header.kind == Kind::Call));
    // The second is answered first: nothing goes out until the first is.
    let mut reply = BytesMut::new();
    encode::frame(&mut reply, Kind::Reply, calls[1].header.request, |b| b.extend_from_slice(b"B"));
    answer(&mut t, reply, now);
    assert!(results(&mut t).is_empty(), "results keep the order of the requests");
    let mut error = BytesMut::new();
    encode::error(&mut error, calls[0].header.request, zs_wire::ErrorCode::Application, "no");
    answer(&mut t, error, now);
    assert_eq!(results(&mut t), vec![b"".to_vec(), b"B".to_vec()], "a failure is an empty result");
    assert_eq!(t.take_notices(), vec![Notice::RequestFailed("no".into())]);
}

#[test]
fn wait_answers_with_the_time_passed_in_once_the_frames_before_it_were_taken() {
    let started = Instant::now();
    let mut t = translator(started);
    let mut bytes = request(FrameKind::Console, "work", "x");
    bytes.extend(request(FrameKind::Console, "__@Wait", ""));
    let now = started + Duration::from_millis(0x1234);
    let frames = feed(&mut t, &bytes, now);
    assert_eq!(frames.iter().map(|f| f.header.kind).collect::<Vec<_>>(), [Kind::Call, Kind::Ping]);
    let mut pong = BytesMut::new();
    encode::control(&mut pong, Kind::Pong, frames[1].header.request);
    answer(&mut t, pong, now);
    assert!(results(&mut t).is_empty(), "the call before it is not answered yet");
    let mut reply = BytesMut::new();
    encode::frame(&mut reply, Kind::Reply, frames[0].header.request, |b| b.extend_from_slice(b"done"));
    answer(&mut t, reply, now);
    assert_eq!(results(&mut t), vec![b"done".to_vec(), b"0000000000001234".to_vec()], "16 hex digits");
}

#[test]
fn a_big_stream_is_handed_over_as_credit_allows_with_its_signals() {
    let now = Instant::now();
    let mut t = translator(now);
    let chunk: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let mut bytes = Vec::new();
    frame::encode_big_stream_head(&mut bytes, chunk.len() as i64, "sink");
    frame::encode_chunk_head(&mut bytes, chunk.len() as u32, false);
    bytes.extend_from_slice(&chunk);
    let first = feed(&mut t, &bytes, now);
    assert_eq!(first[0].header.kind, Kind::StreamOpen);
    let open = StreamOpen::parse(&first[0].body).unwrap();
    assert_eq!((open.name.as_str(), open.total), ("sink", chunk.len() as u64));
    let id = first[0].header.request;
    let data = |fs: &[Frame]| {
        fs.iter().filter(|f| f.header.kind == Kind::StreamData).map(|f| f.body.len()).sum::<usize>()
    };
    assert_eq!(data(&first), INITIAL_WINDOW as usize, "no more than the initial window without credit");
    assert!(results(&mut t).is_empty(), "no F6 before the chunk is handed over");
    let mut all = data(&first);
    while all < chunk.len() {
        let mut credit = BytesMut::new();
        encode::frame(&mut credit, Kind::StreamCredit, id, |b| {
            b.extend_from_slice(&(128u32 << 10).to_le_bytes())
        });
        answer(&mut t, credit, now);
        let more = frames(&mut t);
        all += data(&more);
        if all == chunk.len() {
            let end = more.iter().find(|f| f.header.kind == Kind::StreamEnd).expect("the end");
            let end = StreamEnd::parse(&end.body).unwrap();
            assert_eq!(end.bytes, chunk.len() as u64);
            let xxh3 = zs_wire::bulk::xxh3_end_hash(twox_hash::XxHash3_128::oneshot(&chunk));
            assert_eq!(end.hash, xxh3, "the XXH3-128 the stream declared");
        }
    }
    // The whole chunk is handed over: no F6 (it was the last), and F7 only once the
    // connection answered the stream.
    let out = t.to_client().split();
    assert!(frame::decode(&out, &CompatLimits::default()).unwrap().is_none());
    let mut result = BytesMut::new();
    encode::stream_result(&mut result, id, 0, "");
    answer(&mut t, result, now);
    let out = t.to_client().split();
    let (signal, _) = frame::decode(&out, &CompatLimits::default()).unwrap().unwrap();
    assert_eq!(signal, Decoded::DoneSignal);
}

#[test]
fn input_is_not_wanted_beyond_the_read_ahead_while_a_stream_waits_for_credit() {
    let now = Instant::now();
    let mut t = translator(now);
    let total = 4 * READ_AHEAD;
    let mut bytes = Vec::new();
    frame::encode_big_stream_head(&mut bytes, total as i64, "sink");
    frame::encode_chunk_head(&mut bytes, total as u32, false);
    bytes.resize(bytes.len() + READ_AHEAD + INITIAL_WINDOW as usize + 4096, 1);
    feed(&mut t, &bytes, now);
    assert!(!t.wants_input(), "a stalled transfer stops the reads");
}

#[test]
fn a_push_reaches_a_client_that_makes_no_requests_and_not_one_that_does() {
    let now = Instant::now();
    let mut t = translator(now);
    let mut push = BytesMut::new();
    let mut df = zs_wire::DataFrame::new();
    df.write_str("news");
    let mut w = zs_wire::FrameWriter::begin(&mut push, Kind::Send, zs_wire::Flags::DATAFRAME, 0, 0);
    zs_wire::CallBody::put_name(w.body(), "notify").unwrap();
    df.encode(w.body());
    w.finish(u32::MAX).unwrap();
    answer(&mut t, push.clone(), now);
    let out = t.to_client().split();
    let Some((Decoded::Request(r), _)) = frame::decode(&out, &CompatLimits::default()).unwrap() else {
        panic!("a direct stream request")
    };
    assert_eq!(r.kind, FrameKind::DirectStream);
    let (command, body) = frame::parse_request_payload(r.kind, &r.payload, 1 << 20).unwrap();
    assert_eq!(command, "notify");
    assert_eq!(body, Body::Frame(Dfe { elements: vec![Element::String("news".into())] }));
    feed(&mut t, &request(FrameKind::Console, "ask", ""), now);
    answer(&mut t, push, now);
    assert!(t.to_client().is_empty());
    assert!(matches!(&t.take_notices()[..], [Notice::DirectNotSent { command, .. }] if command == "notify"));
}

#[test]
fn garbage_fails_the_translation_with_a_reason() {
    let now = Instant::now();
    let mut t = translator(now);
    feed(&mut t, b"GET / HTTP/1.1\r\n", now);
    assert!(t.failed().unwrap().contains("not a ZServer4D client"), "{:?}", t.failed());
    assert_eq!(t.take_protocol_errors(), 1);
}

#[test]
fn a_compressed_chunk_is_inflated_a_piece_at_a_time_as_credit_allows() {
    let now = Instant::now();
    let mut t = translator(now);
    // 16 MiB of zeros packs into some 30 KB: whole, it would be 16 MiB held at once.
    let raw = 16 << 20;
    let packed = zs_compat::compress::parallel_compress(&vec![0u8; raw]);
    let mut bytes = Vec::new();
    frame::encode_big_stream_head(&mut bytes, raw as i64, "sink");
    frame::encode_chunk_head(&mut bytes, packed.len() as u32, true);
    bytes.extend_from_slice(&packed);
    let frames = feed(&mut t, &bytes, now);
    let handed: usize =
        frames.iter().filter(|f| f.header.kind == Kind::StreamData).map(|f| f.body.len()).sum();
    assert_eq!(handed, INITIAL_WINDOW as usize, "the initial window, no more");
    assert!(t.held_bytes() < 1 << 20, "held {} bytes for a 16 MiB chunk", t.held_bytes());
}

#[test]
fn a_container_that_claims_more_than_zlib_can_hold_is_refused() {
    let now = Instant::now();
    let mut t = translator(now);
    let mut packed = zs_compat::compress::parallel_compress(&vec![0u8; 1 << 20]);
    packed.truncate(packed.len().min(4096));
    let mut bytes = Vec::new();
    frame::encode_complete_buffer_head(&mut bytes, 60 << 20, packed.len() as u32, "upload");
    bytes.extend_from_slice(&packed);
    feed(&mut t, &bytes, now);
    let why = t.failed().expect("refused");
    assert!(why.contains("ratio"), "{why}");
}
