//! Bad input to each ZServer4D decoder gets a clear error (never a panic, never an
//! allocation of an announced size before it is checked).

use zs_compat::dfe::Dfe;
use zs_compat::frame::{self, Body, CompatLimits, FrameKind};
use zs_compat::seq::{self, Packet, Parsed};
use zs_compat::{CompatError, HashKind};

fn request(kind: FrameKind, command: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_request(
        &mut out,
        kind,
        &frame::request_payload(command, &Body::Text(text.into())),
        HashKind::Md5,
    );
    out
}

#[test]
fn malformed_frames_are_refused_with_their_reason() {
    let limits = CompatLimits::default();
    let good = request(FrameKind::Console, "echo", "hello");
    assert!(frame::decode(&good, &limits).unwrap().is_some());
    for cut in 0..good.len() {
        assert_eq!(frame::decode(&good[..cut], &limits), Ok(None), "a partial frame waits for more");
    }
    let mut bad_head = good.clone();
    bad_head[1] = 0;
    assert_eq!(frame::decode(&bad_head, &limits), Err(CompatError::BadHead(0xf000f0f0)));
    let mut bad_tail = good.clone();
    *bad_tail.last_mut().unwrap() = 0;
    assert!(matches!(frame::decode(&bad_tail, &limits), Err(CompatError::BadTail(_))));
    let mut bad_hash = good.clone();
    let at = bad_hash.len() - 6;
    bad_hash[at] ^= 1; // a payload byte: the MD5 no longer matches
    assert!(matches!(frame::decode(&bad_hash, &limits), Err(CompatError::VerifyMismatch(_))));
    let mut unknown = good.clone();
    unknown[4] = 0x99;
    assert_eq!(frame::decode(&unknown, &limits), Err(CompatError::UnknownType(0x99)));
    // An oversize announcement is refused from the first 9 bytes.
    let mut huge = good[..9].to_vec();
    huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(frame::decode(&huge, &limits), Err(CompatError::TooLarge { .. })));
    let mut big_buffer = Vec::new();
    frame::encode_complete_buffer_head(&mut big_buffer, 65 << 20, 0, "upload");
    assert!(matches!(
        frame::decode(&big_buffer, &limits),
        Err(CompatError::TooLarge { what: "CompleteBuffer", .. })
    ));
    assert!(matches!(
        frame::decode_chunk_head(&[0xff, 0xff, 0xff, 0x7f, 0], &limits),
        Err(CompatError::TooLarge { .. })
    ));
    assert!(frame::decode_chunk_head(&[1, 0, 0, 0, 7], &limits).is_err(), "compressed flag 7");
    let mut lockbox = Vec::new();
    frame::encode_request(&mut lockbox, FrameKind::Console, &[0; 40], HashKind::None);
    lockbox[9] = 12; // hs64, a LockBox digest
    assert_eq!(frame::decode(&lockbox, &limits), Err(CompatError::UnsupportedHash(12)));
    // A request whose payload is not a command.
    assert!(frame::parse_request_payload(FrameKind::Console, &Dfe::new().encode(), 1024).is_err());
}

#[test]
fn malformed_packets_and_dataframes_are_refused_with_their_reason() {
    let mut p = bytes::BytesMut::new();
    seq::encode(&Packet::Data { seq: 7, data: bytes::Bytes::from_static(b"payload") }, &mut p);
    p[25] ^= 1;
    assert_eq!(seq::decode(&p).unwrap(), Some((Parsed::Corrupt(7), p.len())), "a bad MD5 is asked for again");
    assert_eq!(seq::decode(&[9, 0, 0]), Err(CompatError::UnknownPacket(9)));
    assert_eq!(seq::decode(&[2, 5, 0]), Ok(None));

    let mut d = Dfe::new();
    d.push(zs_compat::Element::String("x".repeat(100)));
    let good = d.encode();
    for cut in 0..good.len() {
        assert!(Dfe::decode(&good[..cut], 1 << 20).is_err());
    }
    let mut lying = good.clone();
    lying[26..30].copy_from_slice(&i32::MAX.to_le_bytes()); // the string's length
    assert!(matches!(Dfe::decode(&lying, 1 << 20), Err(CompatError::Malformed { .. })));
    let mut edition = good.clone();
    edition[0] = 0x01;
    assert!(Dfe::decode(&edition, 1 << 20).is_err());
    let mut deflate = good.clone();
    deflate[5] = 2;
    assert!(Dfe::decode(&deflate, 1 << 20).unwrap_err().to_string().contains("Deflate"));
    // A compressed body that would inflate past the limit is refused before inflating.
    let big = {
        let mut d = Dfe::new();
        d.push(zs_compat::Element::Stream(vec![0; 200_000].into()));
        d.encode_compressed()
    };
    assert!(matches!(Dfe::decode(&big, 100_000), Err(CompatError::TooLarge { .. })));
    assert_eq!(Dfe::decode(&big, 1 << 20).unwrap().encode().len(), 22 + 4 + 1 + 4 + 200_000);
}

#[test]
fn fuzz_targets_run_over_their_corpus_and_random_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for input in zs_compat::fuzzing::inputs(&root, "compat_frame", 20_000) {
        zs_compat::fuzzing::frames(&input);
    }
    for input in zs_compat::fuzzing::inputs(&root, "compat_seq", 20_000) {
        zs_compat::fuzzing::packets(&input);
    }
    for input in zs_compat::fuzzing::inputs(&root, "compat_dfe", 20_000) {
        zs_compat::fuzzing::dfe(&input);
    }
    for input in zs_compat::fuzzing::inputs(&root, "compat_translate", 20_000) {
        zs_compat::fuzzing::translate(&input);
    }
}
