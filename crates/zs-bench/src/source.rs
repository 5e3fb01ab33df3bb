//! A generated data source: fast, incompressible, the same bytes for every reader.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// `len` bytes of xorshift noise (zstd gives up on it at once, as on real media files):
/// four interleaved xorshift64 lanes, word `w` from lane `w % 4`, so the generator runs
/// at several GB/s and is never what limits a benchmark's floor.
#[derive(Debug, Clone)]
pub struct Noise {
    left: u64,
    lanes: [u64; 4],
    /// Words emitted so far (picks the next word's lane).
    word: u64,
}

/// Writes `src` over `dst` (the same length): one copy, no per-byte loop.
fn put(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: `dst` has room for `src` (checked above); the regions are distinct.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len()) }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

impl Noise {
    /// A source of `len` bytes from `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        // Each lane from its own splitmix64 output: lanes taken from one xorshift sequence
        // would repeat each other's words a step apart (and compress).
        let lane = |k: u64| {
            let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) | 1
        };
        let lanes = [lane(1), lane(2), lane(3), lane(4)];
        Noise { left: len, lanes, word: 0 }
    }

    fn next_word(&mut self) -> u64 {
        let lane = (self.word & 3) as usize;
        self.word += 1;
        xorshift(&mut self.lanes[lane])
    }

    /// Fills `out` (and counts it off).
    pub fn fill(&mut self, out: &mut [u8]) {
        // SAFETY: `fill_uninit` writes only initialised bytes, so `out` stays initialised.
        let out = unsafe { &mut *(out as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.fill_uninit(out);
    }

    /// Fills `out`, which may be uninitialised (and counts it off): a reader's buffer
    /// taken as it is, with no pass to zero it first and no copy through another buffer.
    pub fn fill_uninit(&mut self, out: &mut [MaybeUninit<u8>]) {
        self.left -= out.len() as u64;
        let whole = out.len() / 8 * 8;
        let (words, tail) = out.split_at_mut(whole);
        let mut i = 0;
        // Word by word up to a lane boundary, then the four lanes side by side.
        while self.word & 3 != 0 && i < words.len() {
            put(&mut words[i..i + 8], &self.next_word().to_le_bytes());
            i += 8;
        }
        let [mut a, mut b, mut c, mut d] = self.lanes;
        self.word += ((words.len() - i) / 32 * 4) as u64;
        let mut quads = words[i..].chunks_exact_mut(32);
        for q in &mut quads {
            let four = [xorshift(&mut a), xorshift(&mut b), xorshift(&mut c), xorshift(&mut d)];
            let bytes: [[u8; 8]; 4] = four.map(u64::to_le_bytes);
            put(q, bytes.as_flattened());
        }
        self.lanes = [a, b, c, d];
        for w in quads.into_remainder().chunks_exact_mut(8) {
            let word = self.next_word().to_le_bytes();
            put(w, &word);
        }
        // A partial word only when there is one, so reads whose sizes are multiples of 8
        // give the same bytes however the source is split.
        if !tail.is_empty() {
            let last = self.next_word().to_le_bytes();
            put(tail, &last[..tail.len()]);
        }
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
        // Straight into the reader's room: zero-filling it first (`initialize_unfilled_to`)
        // or going through a small block cost a pass over each 256 KiB chunk.
        let n = (buf.remaining() as u64).min(self.left) as usize;
        // SAFETY: only initialised bytes are written into the room.
        let room = unsafe { &mut buf.unfilled_mut()[..n] };
        self.fill_uninit(room);
        // SAFETY: `fill_uninit` initialised the first `n` bytes of the room.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::Noise;

    #[test]
    fn the_bytes_do_not_depend_on_how_reads_are_split() {
        let mut whole = vec![0u8; 10_000];
        Noise::new(10_000, 42).fill(&mut whole);
        for split in [8, 24, 40, 256, 4096, 9992] {
            let mut parts = vec![0u8; 10_000];
            let mut src = Noise::new(10_000, 42);
            for chunk in parts.chunks_mut(split) {
                src.fill(chunk);
            }
            assert_eq!(parts, whole, "split into {split}-byte reads");
            assert_eq!(src.left(), 0);
        }
        let mut other = vec![0u8; 10_000];
        Noise::new(10_000, 43).fill(&mut other);
        assert_ne!(other, whole);
        assert!(zs_wire::compress::zstd(&whole).is_none(), "noise must not compress");
    }

    #[tokio::test]
    async fn reading_gives_the_bytes_fill_gives() {
        use tokio::io::AsyncReadExt;
        let mut whole = vec![0u8; 100_000];
        Noise::new(100_000, 7).fill(&mut whole);
        let mut read = Vec::with_capacity(100_000);
        let mut src = Noise::new(100_000, 7);
        while src.left() > 0 {
            let mut part = bytes::BytesMut::with_capacity(4_104);
            src.read_buf(&mut part).await.expect("noise never fails");
            read.extend_from_slice(&part);
        }
        assert_eq!(read, whole);
    }
}
