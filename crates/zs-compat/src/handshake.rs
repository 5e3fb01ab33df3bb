//! `__@CipherModel`: the one exchange every ZServer4D client makes after connecting
//! (`zserver4d-core.md` §2.11). zserver answers "no cipher" (kind 0, key `[00]`), so the
//! client sends everything in clear; security comes from TLS or a tunnel around it.

use bytes::Bytes;

use crate::dfe::{Dfe, Element};
use crate::CompatError;

/// The handshake command (a stream command).
pub const CIPHER_MODEL: &str = "__@CipherModel";
/// The barrier command: its result means everything sent before it was handled.
pub const WAIT: &str = "__@Wait";
/// `TExecutePlatform` of Linux x86-64, which zserver's compat client announces.
pub const PLATFORM_LINUX64: i32 = 8;

/// The server's answer to `__@CipherModel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherModel {
    /// The connection's id on the server (the client adopts it).
    pub peer_id: u32,
    /// The cipher the client is to use (0: none).
    pub cipher: u8,
    /// The key buffer (style byte + key; `[00]` for none).
    pub key: Bytes,
    /// MD5 of the server's start time.
    pub started_md5: [u8; 16],
    /// UsedParallelEncrypt, SyncOnResult, SyncOnCompleteBuffer,
    /// EnabledAtomicLockAndMultiThread, TimeOutKeepAlive, QuietMode.
    pub flags: [bool; 6],
    /// The server's idle timeout in ms (0: none).
    pub idle_timeout_ms: u64,
    /// The server compresses what it sends.
    pub send_compressed: bool,
    /// The server compresses its CompleteBuffers.
    pub complete_buffer_compressed: bool,
    /// Largest CompleteBuffer the server takes.
    pub max_complete_buffer: u32,
    /// The server's ProgressMaxDelay.
    pub progress_max_delay: u64,
}

impl CipherModel {
    /// zserver's answer: no cipher, no compression, the given id and limits.
    pub fn plain(
        peer_id: u32,
        started_md5: [u8; 16],
        idle_timeout_ms: u64,
        max_complete_buffer: u32,
    ) -> Self {
        CipherModel {
            peer_id,
            cipher: 0,
            key: Bytes::from_static(&[0]),
            started_md5,
            flags: [false, true, true, false, true, true],
            idle_timeout_ms,
            send_compressed: false,
            complete_buffer_compressed: false,
            max_complete_buffer,
            progress_max_delay: 0,
        }
    }

    /// The result DataFrameEngine, in the original's order.
    pub fn to_dfe(&self) -> Dfe {
        let mut d = Dfe::new();
        d.push(Element::Cardinal(self.peer_id))
            .push(Element::Byte(self.cipher))
            .push(Element::ArrayByte(self.key.clone()))
            .push(Element::ArrayByte(Bytes::copy_from_slice(&self.started_md5)));
        for f in self.flags {
            d.push(Element::Byte(f as u8));
        }
        d.push(Element::UInt64(self.idle_timeout_ms))
            .push(Element::Byte(self.send_compressed as u8))
            .push(Element::Byte(self.complete_buffer_compressed as u8))
            .push(Element::Cardinal(self.max_complete_buffer))
            .push(Element::UInt64(self.progress_max_delay));
        d
    }

    /// Reads a server's answer; items after the key are optional (older servers).
    pub fn from_dfe(d: &Dfe) -> Result<Self, CompatError> {
        let bad = |why: &str| CompatError::malformed("__@CipherModel result", why.to_string());
        let e = &d.elements;
        let int = |i: usize| -> Option<u64> {
            match e.get(i)? {
                Element::Byte(v) => Some(*v as u64),
                Element::Word(v) => Some(*v as u64),
                Element::Integer(v) => u64::try_from(*v).ok(),
                Element::Cardinal(v) => Some(*v as u64),
                Element::UInt64(v) => Some(*v),
                Element::Int64(v) => u64::try_from(*v).ok(),
                _ => None,
            }
        };
        if e.is_empty() {
            return Err(bad("empty: the server refused the connection"));
        }
        let peer_id = int(0).and_then(|v| u32::try_from(v).ok()).ok_or_else(|| bad("no peer id"))?;
        let cipher = int(1).and_then(|v| u8::try_from(v).ok()).ok_or_else(|| bad("no cipher"))?;
        let Some(Element::ArrayByte(key)) = e.get(2) else { return Err(bad("no key")) };
        let mut started_md5 = [0; 16];
        if let Some(Element::ArrayByte(m)) = e.get(3) {
            if m.len() == 16 {
                started_md5.copy_from_slice(m);
            }
        }
        let flag = |i: usize| int(i).is_some_and(|v| v != 0);
        Ok(CipherModel {
            peer_id,
            cipher,
            key: key.clone(),
            started_md5,
            flags: std::array::from_fn(|i| flag(4 + i)),
            idle_timeout_ms: int(10).unwrap_or(0),
            send_compressed: flag(11),
            complete_buffer_compressed: flag(12),
            max_complete_buffer: int(13).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            progress_max_delay: int(14).unwrap_or(0),
        })
    }
}

/// The client's `__@CipherModel` request body: `[Integer platform]`.
pub fn cipher_model_request(platform: i32) -> Dfe {
    Dfe { elements: vec![Element::Integer(platform)] }
}
