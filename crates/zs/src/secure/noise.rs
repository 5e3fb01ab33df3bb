//! The Noise channel: the XX handshake (each side proves its static key) and the record
//! layer (AEAD records with implicit nonces, so a replayed, reordered or altered record
//! fails to open; an empty record rolls the sender's key).

use std::io::{self, IoSlice};

use bytes::{Buf, BufMut, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use snow::HandshakeState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs_wire::secure::{
    length_prefix, message_len, preamble, NoiseCipher, MAX_PLAINTEXT, MAX_RECORD, TAG_LEN,
};

use super::keys::KeyPair;
use super::link::Records;

/// Noise transport records, sealed and opened in place with the keys the handshake split
/// (snow's transport state would need a zero-filled output buffer for every record and
/// a copy; `ring` seals where the plaintext was appended and opens where the record lies).
pub(crate) struct NoiseRecords {
    send: RecordKey,
    recv: RecordKey,
}

/// One direction's key and nonce counter, as the Noise spec's CipherState.
struct RecordKey {
    key: LessSafeKey,
    cipher: NoiseCipher,
    nonce: u64,
}

impl RecordKey {
    fn new(cipher: NoiseCipher, key: &[u8; 32]) -> Self {
        RecordKey { key: less_safe_key(cipher, key), cipher, nonce: 0 }
    }

    /// The Noise nonce: 32 zero bits, then the counter (big-endian for AES-GCM,
    /// little-endian for ChaCha20-Poly1305).
    fn nonce(&self, n: u64) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&match self.cipher {
            NoiseCipher::AesGcm => n.to_be_bytes(),
            NoiseCipher::ChaChaPoly => n.to_le_bytes(),
        });
        Nonce::assume_unique_for_key(bytes)
    }

    /// The next nonce; 2^64 - 1 is reserved for rekeying (Noise §5.1).
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        if self.nonce == u64::MAX {
            return Err(closed("record counter exhausted"));
        }
        self.nonce += 1;
        Ok(self.nonce(self.nonce - 1))
    }

    fn seal_in_place(&mut self, in_out: &mut [u8]) -> io::Result<Tag> {
        let nonce = self.next_nonce()?;
        self.key
            .seal_in_place_separate_tag(nonce, Aad::empty(), in_out)
            .map_err(|_| closed("record encryption failed"))
    }

    /// Opens a record (ciphertext and tag) in place; returns the plaintext's length.
    fn open_in_place(&mut self, record: &mut [u8]) -> io::Result<usize> {
        let nonce = self.next_nonce()?;
        self.key
            .open_in_place(nonce, Aad::empty(), record)
            .map(|plain| plain.len())
            .map_err(|_| closed("record failed authentication (altered, replayed or reordered)"))
    }

    /// Opens the record at `in_out[src..]` (ciphertext and tag), writing its plaintext at
    /// the start of `in_out` in the same pass; returns the plaintext's length.
    fn open_within(&mut self, in_out: &mut [u8], src: std::ops::RangeFrom<usize>) -> io::Result<usize> {
        let nonce = self.next_nonce()?;
        self.key
            .open_within(nonce, Aad::empty(), in_out, src)
            .map(|plain| plain.len())
            .map_err(|_| closed("record failed authentication (altered, replayed or reordered)"))
    }

    /// Noise's REKEY: the new key is the first 32 bytes of sealing 32 zero bytes under the
    /// reserved nonce; the counter goes on.
    fn rekey(&mut self) {
        let mut next = [0u8; 32];
        // Sealing 32 bytes cannot fail (only oversize input can).
        let _ = self.key.seal_in_place_separate_tag(self.nonce(u64::MAX), Aad::empty(), &mut next);
        self.key = less_safe_key(self.cipher, &next);
    }
}

fn less_safe_key(cipher: NoiseCipher, key: &[u8; 32]) -> LessSafeKey {
    let algorithm = match cipher {
        NoiseCipher::AesGcm => &AES_256_GCM,
        NoiseCipher::ChaChaPoly => &CHACHA20_POLY1305,
    };
    LessSafeKey::new(UnboundKey::new(algorithm, key).expect("a 32-byte key fits both ciphers"))
}

fn closed(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl NoiseRecords {
    /// The record layer of a finished handshake with `cipher`.
    pub(crate) fn new(hs: &mut HandshakeState, cipher: NoiseCipher) -> Self {
        // The first key seals the initiator's records, the second the responder's.
        let (to_responder, to_initiator) = hs.dangerously_get_raw_split();
        let (send, recv) =
            if hs.is_initiator() { (to_responder, to_initiator) } else { (to_initiator, to_responder) };
        NoiseRecords { send: RecordKey::new(cipher, &send), recv: RecordKey::new(cipher, &recv) }
    }

    /// Appends a record of the next `len` bytes of `bufs` (from buffer `*i` at `*off`,
    /// across buffers if it spans them), sealed where it was appended.
    fn seal_record(
        &mut self,
        bufs: &[IoSlice<'_>],
        (i, off): (&mut usize, &mut usize),
        len: usize,
        out: &mut BytesMut,
    ) -> io::Result<()> {
        out.reserve(2 + len + TAG_LEN);
        out.put_slice(&length_prefix(len + TAG_LEN));
        let start = out.len();
        while out.len() - start < len {
            if bufs[*i].len() == *off {
                (*i, *off) = (*i + 1, 0);
            }
            let take = (len - (out.len() - start)).min(bufs[*i].len() - *off);
            out.put_slice(&bufs[*i][*off..*off + take]);
            *off += take;
        }
        let tag = self.send.seal_in_place(&mut out[start..])?;
        out.put_slice(tag.as_ref());
        Ok(())
    }
}

impl Records for NoiseRecords {
    fn seal(&mut self, bufs: &[IoSlice<'_>], max: usize, out: &mut BytesMut) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum::<usize>().min(max);
        // Room for every record at once: grown record by record, the buffer was moved
        // (realloc) several times per write, 6 % of a sender's time.
        out.reserve(total + total.div_ceil(MAX_PLAINTEXT).max(1) * (2 + TAG_LEN));
        let (mut taken, mut i, mut off) = (0, 0, 0);
        while taken < total {
            let len = (total - taken).min(MAX_PLAINTEXT);
            self.seal_record(bufs, (&mut i, &mut off), len, out)?;
            taken += len;
        }
        Ok(taken)
    }

    fn open(&mut self, input: &mut BytesMut, plain: &mut BytesMut, _out: &mut BytesMut) -> io::Result<usize> {
        let mut produced = 0;
        while let Some(total) = message_len(input) {
            if total - 2 < TAG_LEN {
                return Err(closed("record shorter than its authentication tag"));
            }
            let len = self.recv.open_in_place(&mut input[2..total])?;
            plain.extend_from_slice(&input[2..2 + len]);
            if len == 0 {
                self.recv.rekey();
            }
            produced += len;
            input.advance(total);
        }
        Ok(produced)
    }

    const OPENS_WITHIN: bool = true;

    fn open_within(&mut self, buf: &mut [u8], from: usize) -> io::Result<(usize, usize)> {
        let (mut w, mut r) = (from, from);
        while let Some(total) = message_len(&buf[r..]) {
            if total - 2 < TAG_LEN {
                return Err(closed("record shorter than its authentication tag"));
            }
            // The plaintext lands at `w`, over the framing of the records before it.
            let len = self.recv.open_within(&mut buf[w..r + total], r + 2 - w..)?;
            if len == 0 {
                self.recv.rekey();
            }
            w += len;
            r += total;
        }
        Ok((w, r))
    }

    fn rest_of_record(&self, partial: &[u8]) -> usize {
        match partial {
            [hi, lo, ..] => {
                (2 + u16::from_be_bytes([*hi, *lo]) as usize).saturating_sub(partial.len()).max(1)
            }
            _ => 2 - partial.len(),
        }
    }

    fn rekey(&mut self, out: &mut BytesMut) -> io::Result<()> {
        self.seal_record(&[], (&mut 0, &mut 0), 0, out)?;
        self.send.rekey();
        Ok(())
    }
}

/// The result of a handshake: the record layer, the peer's static key, and bytes read
/// past the handshake.
pub(crate) struct Handshaken {
    pub(crate) records: NoiseRecords,
    pub(crate) remote_key: [u8; 32],
    /// The handshake hash: the same on both ends, unique to this handshake.
    pub(crate) binding: [u8; 32],
    pub(crate) leftover: BytesMut,
}

/// A handshake state with this side's key and the preamble as prologue.
fn handshake_state(
    key: &KeyPair,
    cipher: NoiseCipher,
    session: bool,
    initiator: bool,
) -> io::Result<HandshakeState> {
    let opening = preamble(cipher, session);
    let builder = snow::Builder::new(cipher.protocol_name().parse().expect("valid protocol name"))
        .local_private_key(&key.private)
        .and_then(|b| b.prologue(&opening))
        .map_err(handshake_error)?;
    if initiator { builder.build_initiator() } else { builder.build_responder() }.map_err(handshake_error)
}

fn handshake_error(e: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("handshake failed: {e}"))
}

/// Reads one length-prefixed handshake message into the front of `buf`; returns its length
/// with prefix. `check_first` may turn the first bytes into an error (a plaintext reply).
pub(crate) async fn read_message<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    mut check_first: impl FnMut(&[u8]) -> Option<io::Error>,
) -> io::Result<usize> {
    loop {
        if let Some(e) = check_first(buf) {
            return Err(e);
        }
        if let Some(total) = message_len(buf) {
            return Ok(total);
        }
        buf.reserve(1024);
        if buf.len() > 2 + MAX_RECORD || io.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ));
        }
    }
}

fn write_message(hs: &mut HandshakeState, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut msg = [0u8; 1024];
    let n = hs.write_message(payload, &mut msg).map_err(handshake_error)?;
    out.extend_from_slice(&length_prefix(n));
    out.extend_from_slice(&msg[..n]);
    Ok(())
}

fn read_into(hs: &mut HandshakeState, buf: &mut BytesMut, total: usize) -> io::Result<()> {
    let mut payload = [0u8; 1024];
    hs.read_message(&buf[2..total], &mut payload).map_err(handshake_error)?;
    buf.advance(total);
    Ok(())
}

fn finish(mut hs: HandshakeState, cipher: NoiseCipher, leftover: BytesMut) -> io::Result<Handshaken> {
    let mut remote_key = [0; 32];
    remote_key.copy_from_slice(hs.get_remote_static().ok_or_else(|| closed("peer sent no static key"))?);
    let mut binding = [0; 32];
    binding.copy_from_slice(&hs.get_handshake_hash()[..32]);
    if !hs.is_handshake_finished() {
        return Err(closed("handshake not finished"));
    }
    let records = NoiseRecords::new(&mut hs, cipher);
    Ok(Handshaken { records, remote_key, binding, leftover })
}

/// The client's side: `-> e`, `<- e ee s es`, `-> s se`. `verify` sees the server's key
/// before this side reveals its own.
pub(crate) async fn initiate<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut S,
    key: &KeyPair,
    cipher: NoiseCipher,
    session: bool,
    check_reply: impl FnMut(&[u8]) -> Option<io::Error>,
    verify: impl FnOnce(&[u8; 32]) -> io::Result<()>,
) -> io::Result<Handshaken> {
    let mut hs = handshake_state(key, cipher, session, true)?;
    let mut out = preamble(cipher, session).to_vec();
    write_message(&mut hs, &[], &mut out)?;
    io.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let total = read_message(io, &mut buf, check_reply).await?;
    read_into(&mut hs, &mut buf, total)?;
    let mut server = [0; 32];
    server.copy_from_slice(hs.get_remote_static().ok_or_else(|| closed("server sent no static key"))?);
    verify(&server)?;
    out.clear();
    write_message(&mut hs, &[], &mut out)?;
    io.write_all(&out).await?;
    finish(hs, cipher, buf)
}

/// The server's side, after the preamble (`opening`, already read and checked) and with
/// `buf` holding what was read past it.
pub(crate) async fn respond<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut S,
    key: &KeyPair,
    cipher: NoiseCipher,
    session: bool,
    mut buf: BytesMut,
) -> io::Result<Handshaken> {
    let mut hs = handshake_state(key, cipher, session, false)?;
    let total = read_message(io, &mut buf, |_| None).await?;
    read_into(&mut hs, &mut buf, total)?;
    let mut out = Vec::with_capacity(128);
    write_message(&mut hs, &[], &mut out)?;
    io.write_all(&out).await?;
    let total = read_message(io, &mut buf, |_| None).await?;
    read_into(&mut hs, &mut buf, total)?;
    finish(hs, cipher, buf)
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use bytes::BytesMut;
    use zs_wire::secure::{length_prefix, message_len, NoiseCipher};

    use super::NoiseRecords;
    use crate::secure::fuzzing::handshaken;
    use crate::secure::link::Records;

    /// Opens every record of `sealed` with snow's transport state, as the spec's reference
    /// behaviour: an empty record rolls its receiving key.
    fn snow_open(theirs: &mut snow::TransportState, sealed: &mut BytesMut) -> Vec<u8> {
        let mut plain = Vec::new();
        while let Some(total) = message_len(sealed) {
            let mut out = vec![0u8; total];
            let n = theirs.read_message(&sealed[2..total], &mut out).expect("snow opens our record");
            if n == 0 {
                theirs.rekey_incoming();
            }
            plain.extend_from_slice(&out[..n]);
            let _ = sealed.split_to(total);
        }
        plain
    }

    fn snow_seal(theirs: &mut snow::TransportState, data: &[u8], into: &mut BytesMut) {
        for part in data.chunks(40_000) {
            let mut out = vec![0u8; part.len() + 16];
            let n = theirs.write_message(part, &mut out).expect("snow seals");
            into.extend_from_slice(&length_prefix(n));
            into.extend_from_slice(&out[..n]);
        }
    }

    #[test]
    fn records_opened_within_a_buffer_match_snow_across_a_rekey_and_leave_a_partial_one() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
        for cipher in [NoiseCipher::AesGcm, NoiseCipher::ChaChaPoly] {
            let (i, mut r) = handshaken(cipher);
            let (mut ours, mut theirs) =
                (NoiseRecords::new(&mut r, cipher), i.into_transport_mode().expect("t"));
            // Snow's records: data, an empty rekey record, more data; then half a record.
            let mut sealed = BytesMut::new();
            snow_seal(&mut theirs, &data, &mut sealed);
            let mut out = vec![0u8; 16];
            let n = theirs.write_message(&[], &mut out).expect("snow's empty record");
            theirs.rekey_outgoing();
            sealed.extend_from_slice(&length_prefix(n));
            sealed.extend_from_slice(&out[..n]);
            snow_seal(&mut theirs, b"after the rekey", &mut sealed);
            let whole = sealed.len();
            snow_seal(&mut theirs, b"the next record", &mut sealed);
            let cut = whole + 10;
            // After plaintext already in the buffer, as the connection's read buffer has.
            let mut buf = b"earlier".to_vec();
            buf.extend_from_slice(&sealed[..cut]);
            let (end, partial) = ours.open_within(&mut buf, 7).expect("opens");
            let mut want = b"earlier".to_vec();
            want.extend_from_slice(&data);
            want.extend_from_slice(b"after the rekey");
            assert_eq!(&buf[..end], &want[..], "{cipher:?}");
            assert_eq!(partial, 7 + whole, "the partial record starts where it was cut");
            assert_eq!(&buf[partial..], &sealed[whole..cut]);
            // The rest of the cut record, opened next, is in order under the new key.
            let mut rest = buf[partial..].to_vec();
            rest.extend_from_slice(&sealed[cut..]);
            let (end, partial) = ours.open_within(&mut rest, 0).expect("opens");
            assert_eq!((&rest[..end], partial), (&b"the next record"[..], rest.len()));
            // An altered record fails.
            let mut record = BytesMut::new();
            snow_seal(&mut theirs, b"altered", &mut record);
            let last = record.len() - 1;
            record[last] ^= 1;
            assert!(ours.open_within(&mut record, 0).is_err(), "{cipher:?}");
        }
    }

    #[test]
    fn records_sealed_and_opened_in_place_match_snow_both_ways_across_rekeys() {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for cipher in [NoiseCipher::AesGcm, NoiseCipher::ChaChaPoly] {
            for we_initiate in [true, false] {
                let (mut i, mut r) = handshaken(cipher);
                let (mut ours, mut theirs) = if we_initiate {
                    (NoiseRecords::new(&mut i, cipher), r.into_transport_mode().expect("transport"))
                } else {
                    (NoiseRecords::new(&mut r, cipher), i.into_transport_mode().expect("transport"))
                };
                for round in 0..3 {
                    // Ours to snow, split over buffers so a record spans two of them.
                    let mut sealed = BytesMut::new();
                    let (a, b) = data.split_at(70_001);
                    let n = ours
                        .seal(&[IoSlice::new(a), IoSlice::new(b)], usize::MAX, &mut sealed)
                        .expect("seal");
                    assert_eq!(n, data.len());
                    assert_eq!(snow_open(&mut theirs, &mut sealed), data, "{cipher:?} round {round}");
                    // Snow to ours.
                    let mut sealed = BytesMut::new();
                    snow_seal(&mut theirs, &data, &mut sealed);
                    let (mut plain, mut out) = (BytesMut::new(), BytesMut::new());
                    ours.open(&mut sealed, &mut plain, &mut out).expect("open snow's records");
                    assert_eq!(&plain[..], &data[..], "{cipher:?} round {round}");
                    assert!(sealed.is_empty());
                    // Both roll their sending keys, each telling the other with an empty record.
                    let mut sealed = BytesMut::new();
                    ours.rekey(&mut sealed).expect("rekey");
                    assert!(snow_open(&mut theirs, &mut sealed).is_empty());
                    let mut out = vec![0u8; 16];
                    let n = theirs.write_message(&[], &mut out).expect("snow's empty record");
                    theirs.rekey_outgoing();
                    let mut sealed = BytesMut::from(&length_prefix(n)[..]);
                    sealed.extend_from_slice(&out[..n]);
                    let mut plain = BytesMut::new();
                    ours.open(&mut sealed, &mut plain, &mut BytesMut::new()).expect("open the rekey record");
                    assert!(plain.is_empty());
                }
                // A record replayed fails, and so does an altered one.
                let mut record = BytesMut::new();
                snow_seal(&mut theirs, b"once", &mut record);
                let mut plain = BytesMut::new();
                ours.open(&mut record.clone(), &mut plain, &mut BytesMut::new()).expect("first time");
                assert_eq!(&plain[..], b"once");
                assert!(ours.open(&mut record, &mut plain, &mut BytesMut::new()).is_err(), "a replay");
                let (mut i, r) = handshaken(cipher);
                let (mut ours, mut theirs) =
                    (NoiseRecords::new(&mut i, cipher), r.into_transport_mode().expect("t"));
                let mut record = BytesMut::new();
                snow_seal(&mut theirs, b"altered", &mut record);
                let last = record.len() - 1;
                record[last] ^= 1;
                assert!(
                    ours.open(&mut record, &mut plain, &mut BytesMut::new()).is_err(),
                    "an altered record"
                );
            }
        }
    }
}
