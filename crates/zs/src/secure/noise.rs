//! The Noise channel: the XX handshake (each side proves its static key) and the record
//! layer (AEAD records with implicit nonces, so a replayed, reordered or altered record
//! fails to open; an empty record rolls the sender's key).

use std::cell::RefCell;
use std::io::{self, IoSlice};

use bytes::{Buf, BufMut, BytesMut};
use snow::{HandshakeState, TransportState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs_wire::secure::{
    length_prefix, message_len, preamble, NoiseCipher, MAX_PLAINTEXT, MAX_RECORD, TAG_LEN,
};

use super::keys::KeyPair;
use super::link::Records;

/// Noise transport records.
pub(crate) struct NoiseRecords {
    state: TransportState,
}

thread_local! {
    /// Gathers a record's plaintext when it spans several buffers.
    static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn closed(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl NoiseRecords {
    pub(crate) fn new(state: TransportState) -> Self {
        NoiseRecords { state }
    }

    fn seal_one(&mut self, payload: &[u8], out: &mut BytesMut) -> io::Result<()> {
        let len = payload.len() + TAG_LEN;
        out.reserve(2 + len);
        out.put_slice(&length_prefix(len));
        let start = out.len();
        out.resize(start + len, 0);
        self.state
            .write_message(payload, &mut out[start..])
            .map_err(|_| closed("record encryption failed"))?;
        Ok(())
    }
}

impl Records for NoiseRecords {
    fn seal(&mut self, bufs: &[IoSlice<'_>], max: usize, out: &mut BytesMut) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum::<usize>().min(max);
        let (mut taken, mut i, mut off) = (0, 0, 0);
        while taken < total {
            let len = (total - taken).min(MAX_PLAINTEXT);
            while bufs[i].len() == off {
                (i, off) = (i + 1, 0);
            }
            if bufs[i].len() - off >= len {
                // The record lies within one buffer: sealed straight from it.
                self.seal_one(&bufs[i][off..off + len], out)?;
                off += len;
            } else {
                GATHER.with_borrow_mut(|g| {
                    g.clear();
                    while g.len() < len {
                        if bufs[i].len() == off {
                            (i, off) = (i + 1, 0);
                        }
                        let take = (len - g.len()).min(bufs[i].len() - off);
                        g.extend_from_slice(&bufs[i][off..off + take]);
                        off += take;
                    }
                    self.seal_one(g, out)
                })?;
            }
            taken += len;
        }
        Ok(taken)
    }

    fn open(&mut self, input: &mut BytesMut, plain: &mut BytesMut, _out: &mut BytesMut) -> io::Result<usize> {
        let mut produced = 0;
        while let Some(total) = message_len(input) {
            let record = &input[2..total];
            if record.len() < TAG_LEN {
                return Err(closed("record shorter than its authentication tag"));
            }
            let len = record.len() - TAG_LEN;
            let start = plain.len();
            plain.resize(start + len, 0);
            if self.state.read_message(record, &mut plain[start..]).is_err() {
                plain.truncate(start);
                return Err(closed("record failed authentication (altered, replayed or reordered)"));
            }
            if len == 0 {
                self.state.rekey_incoming();
            }
            produced += len;
            input.advance(total);
        }
        Ok(produced)
    }

    fn rekey(&mut self, out: &mut BytesMut) -> io::Result<()> {
        self.seal_one(&[], out)?;
        self.state.rekey_outgoing();
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

fn finish(hs: HandshakeState, leftover: BytesMut) -> io::Result<Handshaken> {
    let mut remote_key = [0; 32];
    remote_key.copy_from_slice(hs.get_remote_static().ok_or_else(|| closed("peer sent no static key"))?);
    let mut binding = [0; 32];
    binding.copy_from_slice(&hs.get_handshake_hash()[..32]);
    let records = NoiseRecords::new(hs.into_transport_mode().map_err(handshake_error)?);
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
    finish(hs, buf)
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
    finish(hs, buf)
}
