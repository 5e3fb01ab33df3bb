//! Body of the `secure` fuzz target, a plain function so an ordinary test runs it too.

use std::io::IoSlice;

use bytes::{Buf, BytesMut};
use zs_wire::secure::{message_len, parse_opening, preamble, NoiseCipher, Opening, PREAMBLE_LEN};

use super::link::Records;
use super::noise::NoiseRecords;

fn state(initiator: bool, cipher: NoiseCipher, s: u8, e: u8) -> snow::HandshakeState {
    let (s, e, prologue) = ([s; 32], [e; 32], preamble(cipher, false));
    let b = snow::Builder::new(cipher.protocol_name().parse().expect("valid name"))
        .local_private_key(&s)
        .and_then(|b| b.prologue(&prologue))
        .expect("builder")
        .fixed_ephemeral_key_for_testing_only(&e);
    if initiator { b.build_initiator() } else { b.build_responder() }.expect("handshake state")
}

/// An initiator and a responder that finished a (deterministic) XX handshake.
pub(crate) fn handshaken(cipher: NoiseCipher) -> (snow::HandshakeState, snow::HandshakeState) {
    let (mut i, mut r) = (state(true, cipher, 1, 2), state(false, cipher, 3, 4));
    let (mut msg, mut payload) = ([0u8; 256], [0u8; 256]);
    for initiator_writes in [true, false, true] {
        let (w, rd) = if initiator_writes { (&mut i, &mut r) } else { (&mut r, &mut i) };
        let n = w.write_message(&[], &mut msg).expect("handshake write");
        rd.read_message(&msg[..n], &mut payload).expect("handshake read");
    }
    (i, r)
}

/// Two record layers that finished a handshake with each other.
pub(crate) fn pair(cipher: NoiseCipher) -> (NoiseRecords, NoiseRecords) {
    let (mut i, mut r) = handshaken(cipher);
    (NoiseRecords::new(&mut i, cipher), NoiseRecords::new(&mut r, cipher))
}

/// Feeds `data` to a Noise responder as a client's opening and handshake messages, then
/// seals `data` into records (with a rekey in the middle), optionally alters one byte,
/// and opens them: unaltered records must give `data` back, altered ones must fail.
pub fn secure_channel(data: &[u8]) {
    responder(data);
    records(data);
}

fn responder(data: &[u8]) {
    let Ok(Some(Opening::Noise(cipher, false))) = parse_opening(data) else { return };
    let mut buf = BytesMut::from(&data[PREAMBLE_LEN..]);
    let mut hs = state(false, cipher, 5, 6);
    let (mut payload, mut msg) = (vec![0u8; 65535], [0u8; 256]);
    let Some(n) = message_len(&buf) else { return };
    if hs.read_message(&buf[2..n], &mut payload).is_err() {
        return;
    }
    buf.advance(n);
    hs.write_message(&[], &mut msg).expect("the second message is always writable");
    let Some(n) = message_len(&buf) else { return };
    if hs.read_message(&buf[2..n], &mut payload).is_err() {
        return;
    }
    buf.advance(n);
    if !hs.is_handshake_finished() {
        return;
    }
    let (mut plain, mut out) = (BytesMut::new(), BytesMut::new());
    let _ = NoiseRecords::new(&mut hs, cipher).open(&mut buf, &mut plain, &mut out);
}

fn records(data: &[u8]) {
    let cipher =
        if data.first().is_some_and(|b| b & 1 == 1) { NoiseCipher::ChaChaPoly } else { NoiseCipher::AesGcm };
    let (mut tx, mut rx) = pair(cipher);
    let mut sealed = BytesMut::new();
    let (a, b) = data.split_at(data.len() / 2);
    // Two buffers, so records spanning both are gathered.
    let taken = tx.seal(&[IoSlice::new(a), IoSlice::new(b)], usize::MAX, &mut sealed).expect("seal");
    assert_eq!(taken, data.len());
    tx.rekey(&mut sealed).expect("rekey");
    tx.seal(&[IoSlice::new(data)], usize::MAX, &mut sealed).expect("seal after rekey");
    let alter = data
        .get(1)
        .map(|&b| b as usize * 7919 % sealed.len().max(1))
        .filter(|_| data.len().is_multiple_of(3));
    if let Some(at) = alter {
        sealed[at] ^= 0x20;
    }
    // The same records opened where they lie, after plaintext already there, by a
    // receiver with the same keys: the same plaintext up to the first failure.
    let mut within = b"before".to_vec();
    within.extend_from_slice(&sealed);
    let within_opened = pair(cipher).1.open_within(&mut within, 6);
    let (mut plain, mut out) = (BytesMut::new(), BytesMut::new());
    let opened = rx.open(&mut sealed, &mut plain, &mut out);
    match (&opened, &within_opened) {
        (Ok(_), Ok((end, partial))) => {
            assert_eq!(&within[6..*end], &plain[..], "the same plaintext");
            assert_eq!(within.len() - partial, sealed.len(), "the same partial record left");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("open and open_within disagree: {opened:?} / {within_opened:?}"),
    }
    match alter {
        None => {
            opened.expect("unaltered records open");
            assert!(sealed.is_empty(), "every record consumed");
            assert_eq!(&plain[..data.len()], data);
            assert_eq!(&plain[data.len()..], data);
        }
        // A changed length prefix may leave a record incomplete instead of failing.
        Some(_) => assert!(opened.is_err() || !sealed.is_empty() || plain.len() < 2 * data.len()),
    }
}
