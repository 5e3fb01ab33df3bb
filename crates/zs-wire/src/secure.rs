//! Secure channel framing, sans IO: the client's opening preamble and the 2-byte length
//! prefix of every handshake message and encrypted record (`docs/PROTOCOL.md` §9).

use crate::frame::MAGIC;
use crate::wire_enum;

/// The preamble's first three bytes. Chosen so that no plaintext frame (first byte
/// [`MAGIC`]) and no TLS record (first byte 0x16) can be mistaken for it.
pub const PREAMBLE_MAGIC: [u8; 3] = *b"zsn";
/// Version of the secure channel this build speaks.
pub const SECURE_VERSION: u8 = 1;
/// Bytes of the preamble: magic, version, cipher.
pub const PREAMBLE_LEN: usize = 5;
/// Largest handshake message or record, including its tag (the Noise maximum).
pub const MAX_RECORD: usize = 65535;
/// Bytes of the authentication tag ending every record.
pub const TAG_LEN: usize = 16;
/// Most plaintext bytes one record carries.
pub const MAX_PLAINTEXT: usize = MAX_RECORD - TAG_LEN;

wire_enum! {
    /// The AEAD cipher of a Noise channel, chosen by the client in its preamble.
    #[derive(Default)]
    pub enum NoiseCipher: u8 {
        /// ChaCha20-Poly1305: fastest without AES instructions.
        ChaChaPoly = 0 => "chacha20-poly1305",
        /// AES-256-GCM: fastest with AES instructions (the default).
        #[default]
        AesGcm = 1 => "aes-256-gcm",
    }
}

impl NoiseCipher {
    /// The Noise protocol name using this cipher.
    pub fn protocol_name(self) -> &'static str {
        match self {
            NoiseCipher::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            NoiseCipher::AesGcm => "Noise_XX_25519_AESGCM_BLAKE2s",
        }
    }
}

/// Bit of the preamble's cipher byte: the client opens a resumable session once the
/// handshake is done (its first plaintext is a session hello).
pub const SESSION_FLAG: u8 = 0x80;

/// What the first bytes a server receives say about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A Noise client with this cipher; `true` if a session hello follows the handshake.
    Noise(NoiseCipher, bool),
    /// A plaintext zserver client (its first frame header).
    Plaintext,
    /// A TLS client (a TLS handshake record).
    Tls,
}

/// Why an opening is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpeningError {
    /// Not a zserver client at all.
    #[error("not a zserver client (first bytes {0:02x?})")]
    Unknown([u8; 3]),
    /// A secure channel version this build does not speak.
    #[error("unsupported secure channel version {0}")]
    Version(u8),
    /// A cipher code this build does not know.
    #[error("unknown cipher code {0}")]
    Cipher(u8),
}

/// The preamble a Noise client sends first (also the Noise prologue, so it is
/// authenticated by the handshake); `session` says a session hello follows.
pub fn preamble(cipher: NoiseCipher, session: bool) -> [u8; PREAMBLE_LEN] {
    let m = PREAMBLE_MAGIC;
    let flag = if session { SESSION_FLAG } else { 0 };
    [m[0], m[1], m[2], SECURE_VERSION, cipher.code() | flag]
}

/// Classifies a connection by its first bytes; `Ok(None)` until enough have arrived.
pub fn parse_opening(buf: &[u8]) -> Result<Option<Opening>, OpeningError> {
    match buf.first() {
        None => return Ok(None),
        Some(&MAGIC) => return Ok(Some(Opening::Plaintext)),
        Some(0x16) => return Ok(Some(Opening::Tls)),
        Some(_) => {}
    }
    if buf.len() < PREAMBLE_LEN {
        return if PREAMBLE_MAGIC.starts_with(buf) || buf.starts_with(&PREAMBLE_MAGIC) {
            Ok(None)
        } else {
            Err(OpeningError::Unknown(first3(buf)))
        };
    }
    if buf[..3] != PREAMBLE_MAGIC {
        return Err(OpeningError::Unknown(first3(buf)));
    }
    if buf[3] != SECURE_VERSION {
        return Err(OpeningError::Version(buf[3]));
    }
    let session = buf[4] & SESSION_FLAG != 0;
    let code = buf[4] & !SESSION_FLAG;
    let cipher = NoiseCipher::from_code(code).ok_or(OpeningError::Cipher(code))?;
    Ok(Some(Opening::Noise(cipher, session)))
}

fn first3(buf: &[u8]) -> [u8; 3] {
    let mut out = [0; 3];
    let n = buf.len().min(3);
    out[..n].copy_from_slice(&buf[..n]);
    out
}

/// The length of the length-prefixed message at the start of `buf` (prefix included), if
/// it has arrived whole.
pub fn message_len(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (buf.len() >= 2 + len).then_some(2 + len)
}

/// Writes the 2-byte length prefix of a message of `len` bytes (at most [`MAX_RECORD`]).
pub fn length_prefix(len: usize) -> [u8; 2] {
    debug_assert!(len <= MAX_RECORD);
    (len as u16).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_are_told_apart() {
        assert_eq!(parse_opening(&[]), Ok(None));
        assert_eq!(parse_opening(b"zs"), Ok(None));
        assert_eq!(parse_opening(&[MAGIC, 1]), Ok(Some(Opening::Plaintext)));
        assert_eq!(parse_opening(&[0x16, 3, 1]), Ok(Some(Opening::Tls)));
        for c in [NoiseCipher::AesGcm, NoiseCipher::ChaChaPoly] {
            for s in [false, true] {
                assert_eq!(parse_opening(&preamble(c, s)), Ok(Some(Opening::Noise(c, s))));
            }
        }
        assert_eq!(parse_opening(b"GET / HTTP/1.1"), Err(OpeningError::Unknown(*b"GET")));
        assert_eq!(parse_opening(b"zx"), Err(OpeningError::Unknown(*b"zx\0")));
        assert_eq!(parse_opening(b"zsn\x09\x01"), Err(OpeningError::Version(9)));
        assert_eq!(parse_opening(b"zsn\x01\x07"), Err(OpeningError::Cipher(7)));
    }

    #[test]
    fn messages_are_length_prefixed() {
        assert_eq!(message_len(&[]), None);
        assert_eq!(message_len(&[0]), None);
        assert_eq!(message_len(&[0, 0]), Some(2));
        assert_eq!(message_len(&[0, 3, 1, 2]), None);
        assert_eq!(message_len(&[0, 3, 1, 2, 3, 9]), Some(5));
        assert_eq!(length_prefix(MAX_RECORD), [0xff, 0xff]);
    }
}
