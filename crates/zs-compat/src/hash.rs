//! Verify codes: the hash of a frame's plaintext payload, of the kind the sender chose.

use md5::{Digest, Md5};

use crate::CompatError;

zs_wire::wire_enum! {
    /// The original's `THashSecurity` ordinals (the hash kind byte of a frame).
    pub enum HashKind: u8 {
        /// No verify code (but see [`verify_code`]: 1 to 5 bytes always carry an MD5).
        None = 0 => "none",
        /// MD5 (the default profiles use this).
        FastMd5 = 1 => "fast md5",
        /// MD5.
        Md5 = 2 => "md5",
        /// SHA-1.
        Sha1 = 3 => "sha1",
        /// SHA-256.
        Sha256 = 4 => "sha256",
        /// SHA-512.
        Sha512 = 5 => "sha512",
        /// SHA3-224.
        Sha3_224 = 6 => "sha3-224",
        /// SHA3-256.
        Sha3_256 = 7 => "sha3-256",
        /// SHA3-384.
        Sha3_384 = 8 => "sha3-384",
        /// SHA3-512.
        Sha3_512 = 9 => "sha3-512",
    }
}

impl HashKind {
    /// The kind of a hash kind byte; the original's LockBox, ELF, Mix128 and CRC kinds
    /// (10-19) are not supported.
    pub fn from_u8(b: u8) -> Result<HashKind, CompatError> {
        HashKind::from_code(b).ok_or(CompatError::UnsupportedHash(b))
    }
}

/// MD5 of `data`.
pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The verify code a sender writes for `data`: empty for no data; **always an MD5 for 1 to
/// 5 bytes**, whatever the kind says (the original's rule, which its receivers enforce);
/// else the kind's digest.
pub fn verify_code(kind: HashKind, data: &[u8]) -> Vec<u8> {
    match data.len() {
        0 => Vec::new(),
        1..6 => md5(data).to_vec(),
        _ => match kind {
            HashKind::None => Vec::new(),
            HashKind::FastMd5 | HashKind::Md5 => md5(data).to_vec(),
            HashKind::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashKind::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashKind::Sha512 => sha2::Sha512::digest(data).to_vec(),
            HashKind::Sha3_224 => sha3::Sha3_224::digest(data).to_vec(),
            HashKind::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            HashKind::Sha3_384 => sha3::Sha3_384::digest(data).to_vec(),
            HashKind::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
        },
    }
}

/// Checks a received verify code of kind byte `kind` against `data`.
pub fn check(kind: u8, code: &[u8], data: &[u8]) -> Result<(), CompatError> {
    let kind = HashKind::from_u8(kind)?;
    if verify_code(kind, data) == code {
        Ok(())
    } else {
        Err(CompatError::VerifyMismatch("the payload's hash differs from the frame's verify code"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_payloads_always_carry_md5_and_empty_ones_nothing() {
        // [seen on the wire]: `abcdef` under hsFastMD5 → e80b5017...978e.
        assert_eq!(verify_code(HashKind::FastMd5, b"abcdef")[..2], [0xe8, 0x0b]);
        assert_eq!(verify_code(HashKind::None, b"abc"), md5(b"abc").to_vec());
        assert!(verify_code(HashKind::None, b"abcdef").is_empty());
        assert!(verify_code(HashKind::Sha256, b"").is_empty());
        assert_eq!(verify_code(HashKind::Sha256, b"abcdef").len(), 32);
        assert!(check(0, &[], b"abc").is_err(), "hsNone without the MD5 of a short payload");
        assert!(check(12, &[], b"abcdefgh").is_err(), "LockBox kinds are refused");
        check(0, &md5(b"abc"), b"abc").unwrap();
    }
}
