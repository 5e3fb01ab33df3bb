//! A generated data source: fast, incompressible, the same bytes for every reader.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// `len` bytes of xorshift noise (zstd gives up on it at once, as on real media files).
#[derive(Debug, Clone)]
pub struct Noise {
    left: u64,
    state: u64,
}

impl Noise {
    /// A source of `len` bytes from `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        Noise { left: len, state: seed | 1 }
    }

    /// Fills `out` (and counts it off).
    pub fn fill(&mut self, out: &mut [u8]) {
        self.left -= out.len() as u64;
        let mut x = self.state;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut words = out.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&next().to_le_bytes());
        }
        // A partial word only when there is one, so reads whose sizes are multiples of 8
        // give the same bytes however the source is split.
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let last = next().to_le_bytes();
            tail.copy_from_slice(&last[..tail.len()]);
        }
        self.state = x;
    }

    /// Bytes left.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Counts `n` bytes off without generating them (for sources that send zeros).
    pub fn skip(&mut self, n: u64) {
        self.left -= n.min(self.left);
    }
}

impl AsyncRead for Noise {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        self.fill(buf.initialize_unfilled_to(n));
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}
