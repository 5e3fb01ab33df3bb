//! Golden tests: the real traffic of the original (FPC/Synapse build) recorded in
//! `../shared/reference/zserver4d-wire-capture.txt`, copied into `tests/fixtures/`. Every
//! captured packet, frame and DataFrameEngine decodes to the values the capture lists, and
//! our encoders reproduce the captured bytes wherever the original is deterministic.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use zs_compat::dfe::{Dfe, Element};
use zs_compat::frame::{self, Body, CompatLimits, Decoded, FrameKind};
use zs_compat::fuzzing::{hex, parse_capture};
use zs_compat::handshake::{self, CipherModel};
use zs_compat::seq::{self, Packet, Parsed, SeqConfig, SeqLayer};
use zs_compat::{CompatError, HashKind};

/// The chunks of a capture, in order: (client to server?, bytes).
fn capture(name: &str) -> Vec<(bool, Vec<u8>)> {
    let path = format!("{}/tests/fixtures/capture_{name}.txt", env!("CARGO_MANIFEST_DIR"));
    parse_capture(&std::fs::read_to_string(path).expect("fixture"))
}

/// One direction's packets, as (sizes and seqs of data packets, acks sent), and the
/// reassembled payload; checks each MD5 and that our layer acknowledges what the peer did.
struct Direction {
    data: Vec<(u32, usize)>,
    acks: Vec<u32>,
    payload: BytesMut,
    /// The data packets' bytes, in order.
    packets: Vec<u8>,
    /// The acks our layer writes for them.
    our_acks: BytesMut,
}

fn direction(chunks: &[(bool, Vec<u8>)], c2s: bool) -> Direction {
    let bytes: Vec<u8> = chunks.iter().filter(|c| c.0 == c2s).flat_map(|c| c.1.clone()).collect();
    let now = Instant::now();
    let mut layer = SeqLayer::new(SeqConfig::default(), now);
    let mut d = Direction {
        data: vec![],
        acks: vec![],
        payload: BytesMut::new(),
        packets: vec![],
        our_acks: BytesMut::new(),
    };
    let mut at = 0;
    while at < bytes.len() {
        let (p, n) = seq::decode(&bytes[at..]).expect("a packet").expect("whole");
        match &p {
            Parsed::Packet(Packet::Data { seq, data }) => {
                d.data.push((*seq, data.len()));
                d.packets.extend_from_slice(&bytes[at..at + n]);
                layer.receive(p.clone(), now, &mut d.payload, &mut d.our_acks).unwrap();
            }
            Parsed::Packet(Packet::Ack(seq)) => d.acks.push(*seq),
            other => panic!("unexpected {other:?}"),
        }
        at += n;
    }
    d
}

fn requests(payload: &[u8]) -> Vec<(Decoded, Vec<u8>)> {
    let limits = CompatLimits::default();
    let mut at = 0;
    let mut out = vec![];
    while at < payload.len() {
        match frame::decode(&payload[at..], &limits) {
            Ok(Some((f, n))) => {
                out.push((f, payload[at..at + n].to_vec()));
                at += n;
            }
            other => panic!("at {at}: {other:?}"),
        }
    }
    out
}

fn replies(payload: &[u8]) -> Vec<(Bytes, Vec<u8>)> {
    let limits = CompatLimits::default();
    let mut at = 0;
    let mut out = vec![];
    while at < payload.len() {
        let (r, n) = frame::decode_reply(&payload[at..], &limits).unwrap().expect("whole");
        out.push((r.payload, payload[at..at + n].to_vec()));
        at += n;
    }
    out
}

fn text(s: &str) -> Body {
    Body::Text(s.into())
}

fn frame_of(elements: Vec<Element>) -> Body {
    Body::Frame(Dfe { elements })
}

fn the_plain_session() -> Vec<(FrameKind, &'static str, Body)> {
    vec![
        (FrameKind::Stream, "__@CipherModel", Body::Frame(handshake::cipher_model_request(8))),
        (FrameKind::Console, "echo", text("hello zserver4d")),
        (
            FrameKind::Stream,
            "echo_s",
            frame_of(vec![Element::String("stream hello".into()), Element::Integer(12345)]),
        ),
        (FrameKind::DirectConsole, "dc", text("direct console")),
        (FrameKind::DirectStream, "ds", frame_of(vec![Element::String("direct stream".into())])),
        (FrameKind::Console, "stat", text("")),
    ]
}

#[test]
fn capture_b_plain_profile_decodes_to_the_listed_values_and_reencodes_byte_for_byte() {
    let chunks = capture("b");
    let c2s = direction(&chunks, true);
    let s2c = direction(&chunks, false);
    // The listing: sizes and sequence numbers of each direction's packets, and the acks.
    assert_eq!(c2s.data, vec![(0, 98), (1, 72), (2, 107), (3, 69), (4, 99), (5, 57)]);
    assert_eq!(s2c.data, vec![(0, 115), (1, 31), (2, 64), (3, 63)]);
    assert_eq!(c2s.acks, vec![0, 1, 2, 3], "the client acknowledged the server's four packets");
    assert_eq!(s2c.acks, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(c2s.payload.len(), 502);
    assert_eq!(s2c.payload.len(), 273);
    // Our layer acknowledges exactly as the original did.
    let mut acks = BytesMut::new();
    for seq in 0..6 {
        seq::encode(&Packet::Ack(seq), &mut acks);
    }
    assert_eq!(c2s.our_acks, acks);

    // Requests: kinds, commands, bodies; and our encoder gives the same bytes.
    let frames = requests(&c2s.payload);
    let expected = the_plain_session();
    assert_eq!(frames.len(), expected.len());
    let mut ours = Vec::new();
    for ((decoded, bytes), (kind, command, body)) in frames.iter().zip(&expected) {
        let Decoded::Request(r) = decoded else { panic!("{decoded:?}") };
        assert_eq!(r.kind, *kind);
        assert_eq!(r.hash, 0, "hsNone");
        let (c, b) = frame::parse_request_payload(r.kind, &r.payload, 1 << 20).unwrap();
        assert_eq!((c.as_str(), &b), (*command, body));
        let mut again = Vec::new();
        frame::encode_request(&mut again, *kind, &frame::request_payload(command, body), HashKind::None);
        assert_eq!(&again, bytes, "{command}");
        ours.extend_from_slice(&again);
    }
    // Cut into sequence packets as the original cut them (one write per frame, but the
    // three frames sent together travel as three packets).
    let mut layer = SeqLayer::new(SeqConfig::default(), Instant::now());
    let mut packets = BytesMut::new();
    for (_, bytes) in &frames {
        layer.send(bytes, Instant::now(), &mut packets).unwrap();
    }
    assert_eq!(&packets[..], &c2s.packets[..]);

    // Results: the handshake answer, then the three replies.
    let results = replies(&s2c.payload);
    assert_eq!(results.len(), 4);
    let model = CipherModel::from_dfe(&Dfe::decode(&results[0].0, 1 << 20).unwrap()).unwrap();
    assert_eq!(model.peer_id, 1);
    assert_eq!(model.cipher, 0);
    assert_eq!(&model.key[..], &[0]);
    assert_eq!(model.started_md5[..4], [0x47, 0x98, 0x2c, 0x3a]);
    assert_eq!(model.flags, [false, true, true, false, true, true]);
    assert_eq!(
        (model.idle_timeout_ms, model.send_compressed, model.complete_buffer_compressed),
        (0, false, false)
    );
    assert_eq!((model.max_complete_buffer, model.progress_max_delay), (134_217_728, 0));
    assert_eq!(&results[1].0[..], b"hello zserver4d");
    let echo = Dfe::decode(&results[2].0, 1 << 20).unwrap();
    assert_eq!(echo.elements, vec![Element::String("stream hello".into()), Element::Integer(2)]);
    assert_eq!(&results[3].0[..], b"conn=1 console=1 stream=1 direct=2 big=0 cb=0/0");
    // zserver's "no cipher" answer with the same id, time and limits is the same bytes.
    let plain = CipherModel::plain(1, model.started_md5, 0, 134_217_728);
    let mut again = Vec::new();
    frame::encode_reply(&mut again, &plain.to_dfe().encode(), HashKind::None);
    assert_eq!(again, results[0].1);
    for (payload, bytes) in &results[1..] {
        let mut again = Vec::new();
        frame::encode_reply(&mut again, payload, HashKind::None);
        assert_eq!(&again, bytes);
    }
}

#[test]
fn captures_a_and_0_default_profile_handshakes_reencode_and_encrypted_frames_are_refused_clearly() {
    for (name, cipher, key_len) in [("a", 4u8, 17usize), ("0", 3, 25)] {
        let chunks = capture(name);
        let c2s = direction(&chunks, true);
        let s2c = direction(&chunks, false);
        // The client's first chunk is one packet carrying the handshake with an MD5 verify
        // code: our encoder writes the very same 137 bytes.
        let mut frame_bytes = Vec::new();
        let body = Body::Frame(handshake::cipher_model_request(handshake::PLATFORM_LINUX64));
        frame::encode_request(
            &mut frame_bytes,
            FrameKind::Stream,
            &frame::request_payload(handshake::CIPHER_MODEL, &body),
            HashKind::FastMd5,
        );
        let mut first = BytesMut::new();
        SeqLayer::new(SeqConfig::default(), Instant::now())
            .send(&frame_bytes, Instant::now(), &mut first)
            .unwrap();
        assert_eq!(&first[..], &chunks[0].1[..], "capture {name}");

        // The server's answer names the cipher and carries the key in clear.
        let (reply, n) = frame::decode_reply(&s2c.payload, &CompatLimits::default()).unwrap().unwrap();
        assert_eq!(reply.hash, HashKind::FastMd5 as u8);
        let model = CipherModel::from_dfe(&Dfe::decode(&reply.payload, 1 << 20).unwrap()).unwrap();
        assert_eq!((model.cipher, model.key.len()), (cipher, key_len), "capture {name}");
        let mut again = Vec::new();
        frame::encode_reply(&mut again, &model.to_dfe().encode(), HashKind::FastMd5);
        assert_eq!(again, &s2c.payload[..n]);

        // The next request is encrypted with that cipher: refused with a reason.
        let (_, used) = frame::decode(&c2s.payload, &CompatLimits::default()).unwrap().unwrap();
        assert_eq!(
            frame::decode(&c2s.payload[used..], &CompatLimits::default()),
            Err(CompatError::Encrypted(cipher))
        );
    }
}

#[test]
fn the_documented_examples_decode() {
    // §2.4: a plain console request for echo("hi") under hsFastMD5.
    let listed = "f0f0f0f0 f1 2a000000 01 1000 8a24223e2e60e4d9e60c1548cb318c5b 00 \
               ff 14000000 00 00000000000000000000000000000000 02000000 00 04000000 6563686f 00 02000000 6869 \
               f1f1f1f1";
    let bytes = hex(&listed.split_whitespace().collect::<String>());
    let (f, n) = frame::decode(&bytes, &CompatLimits::default()).unwrap().unwrap();
    assert_eq!(n, 75);
    let Decoded::Request(r) = f else { panic!() };
    assert_eq!(frame::parse_request_payload(r.kind, &r.payload, 1024).unwrap(), ("echo".into(), text("hi")));
    // §2.5: the result "echo:hi" with hsNone.
    let mut reply = Vec::new();
    frame::encode_reply(&mut reply, b"echo:hi", HashKind::None);
    assert_eq!(reply, [&[0xf0; 4][..], &[7, 0, 0, 0, 0, 0, 0, 0], b"echo:hi", &[0xf1; 4]].concat());
    // §5.1: the empty DataFrameEngine is 26 bytes.
    let empty = Dfe::new().encode();
    assert_eq!(empty, [&[0xff, 4, 0, 0, 0, 0][..], &[0; 16], &[0, 0, 0, 0]].concat());
}

#[test]
fn capture_a_every_packet_and_frame_envelope_matches_the_listing() {
    let chunks = capture("a");
    let c2s = direction(&chunks, true);
    let s2c = direction(&chunks, false);
    assert_eq!(c2s.data, vec![(0, 114), (1, 88), (2, 123), (3, 85), (4, 115), (5, 73)]);
    assert_eq!(s2c.data, vec![(0, 147), (1, 47), (2, 80), (3, 79)]);
    assert_eq!((c2s.acks, s2c.acks), (vec![0, 1, 2, 3], vec![0, 1, 2, 3, 4, 5]));
    assert_eq!((c2s.payload.len(), s2c.payload.len()), (598, 353));
    let limits = CompatLimits::default();
    let listed = |payload: &[u8], result: bool, want: &[(Option<FrameKind>, usize, &str, u8)]| {
        let mut at = 0;
        for (i, (kind, size, code, cipher)) in want.iter().enumerate() {
            let e = frame::envelope(&payload[at..], result, &limits).unwrap().expect("whole");
            assert_eq!(
                (e.kind, e.payload.len(), e.hash, e.code, e.cipher),
                (*kind, *size, 1, &hex(code)[..], *cipher),
                "frame {i}"
            );
            at += e.len;
        }
        assert_eq!(at, payload.len());
    };
    let (s, c, dc, ds) =
        (FrameKind::Stream, FrameKind::Console, FrameKind::DirectConsole, FrameKind::DirectStream);
    listed(
        &c2s.payload,
        false,
        &[
            (Some(s), 81, "4565fb8a1e670f2530e1ed73512ffbc2", 0),
            (Some(c), 55, "d945ab6a3c95ce3a12493e03f293ace4", 4),
            (Some(s), 90, "9acf67b4adc2e02fe279cfa329b881c5", 4),
            (Some(dc), 52, "4991169c96ddcc0eb17bfb70efdb817c", 4),
            (Some(ds), 82, "6238a1b915c4baa96c10417a4a045874", 4),
            (Some(c), 40, "c54e88797b3870824efcc5824e6d7fd7", 4),
        ],
    );
    listed(
        &s2c.payload,
        true,
        &[
            (None, 115, "af82d8f1bb72f60db14a87663647779e", 0),
            (None, 15, "81340a8ee57a8b8f0a3b0fb123918abc", 4),
            (None, 48, "ba7c42d69f6e4c73d08c360c57494f4c", 4),
            (None, 47, "0dd52c64d3de354588de831884a1a51a", 4),
        ],
    );
    // The verify code is the MD5 of the plaintext: capture B's plaintext requests and
    // results are capture A's (same commands, same values), and their MD5s are A's codes.
    let plain = direction(&capture("b"), true);
    let frames = requests(&plain.payload);
    let Decoded::Request(echo) = &frames[1].0 else { panic!() };
    assert_eq!(zs_compat::hash::md5(&echo.payload).to_vec(), hex("d945ab6a3c95ce3a12493e03f293ace4"));
    assert_eq!(zs_compat::hash::md5(b"hello zserver4d").to_vec(), hex("81340a8ee57a8b8f0a3b0fb123918abc"));
}
