//! The original's compression containers: `SelectCompressStream` (a kind byte, the raw
//! size, a zlib stream) and `ParallelCompressMemory` (strips of about 16 KiB, each a
//! `SelectCompressStream`), used by DataFrameEngine, BigStream chunks and CompleteBuffers.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression, Decompress, FlushDecompress, Status};

use crate::CompatError;

/// Input bytes per strip of a parallel container.
const STRIP: usize = 16 << 10;
/// `SelectCompressStream` kinds that are zlib streams (ZLIB, ZLIB_Fast, ZLIB_Max).
const ZLIB_KINDS: [u8; 3] = [1, 2, 3];

/// Most a zlib stream can inflate per byte (deflate's limit is about 1032:1): a container
/// announcing more raw bytes than this many times its size is refused before inflating.
pub const MAX_RATIO: u64 = 1100;

/// Refuses an announced raw size beyond `limit`, or beyond what `packed` bytes can hold.
fn check_size(len: u64, packed: usize, limit: u64) -> Result<(), CompatError> {
    if len > limit {
        return Err(CompatError::TooLarge { what: "uncompressed data", size: len, limit });
    }
    let most = (packed as u64).saturating_mul(MAX_RATIO).max(64);
    if len > most {
        return Err(CompatError::TooLarge {
            what: "inflation ratio (raw bytes announced)",
            size: len,
            limit: most,
        });
    }
    Ok(())
}

/// zlib (RFC 1950) of `data`, fast level.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 16), Compression::fast());
    e.write_all(data).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// Inflates a zlib stream that must hold exactly `len` bytes.
pub fn unzlib(data: &[u8], len: u64, limit: u64) -> Result<Vec<u8>, CompatError> {
    check_size(len, data.len(), limit)?;
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    ZlibDecoder::new(data)
        .take(len + 1)
        .read_to_end(&mut out)
        .map_err(|e| CompatError::malformed("zlib stream", e.to_string()))?;
    if out.len() as u64 != len {
        return Err(CompatError::malformed("zlib stream", format!("{} bytes, announced {len}", out.len())));
    }
    Ok(out)
}

/// `ParallelCompressMemory` of `data`: `i32 strips`, then per strip `i64 len` and a
/// `SelectCompressStream` (`u8 kind=2 (ZLIB_Fast) | i64 raw size | zlib`).
pub fn parallel_compress(data: &[u8]) -> Vec<u8> {
    let strips = (data.len() / STRIP).max(1);
    let per = data.len() / strips;
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    out.extend_from_slice(&(strips as i32).to_le_bytes());
    for i in 0..strips {
        let end = if i + 1 == strips { data.len() } else { (i + 1) * per };
        let strip = &data[i * per..end];
        let z = zlib(strip);
        out.extend_from_slice(&(1 + 8 + z.len() as i64).to_le_bytes());
        out.push(2);
        out.extend_from_slice(&(strip.len() as i64).to_le_bytes());
        out.extend_from_slice(&z);
    }
    out
}

/// The raw size a `ParallelCompressMemory` container announces (the sum of its strips').
pub fn parallel_len(data: &[u8]) -> Result<u64, CompatError> {
    let mut r = crate::dfe::Cursor::new(data, "parallel compression container");
    let strips = r.i32()?;
    let mut total = 0u64;
    for _ in 0..strips.max(0) {
        let strip_len = usize::try_from(r.i64()?).unwrap_or(usize::MAX);
        let mut s = crate::dfe::Cursor::new(r.take(strip_len)?, "compressed strip");
        s.u8()?;
        let raw = u64::try_from(s.i64()?)
            .map_err(|_| CompatError::malformed("compressed strip", "negative size"))?;
        total = total.saturating_add(raw);
    }
    Ok(total)
}

/// Inflates a `ParallelCompressMemory` container that must hold exactly `len` bytes.
pub fn parallel_decompress(data: &[u8], len: u64, limit: u64) -> Result<Vec<u8>, CompatError> {
    check_size(len, data.len(), limit)?;
    let mut r = crate::dfe::Cursor::new(data, "parallel compression container");
    let strips = r.i32()?;
    if strips < 0 || strips as usize > data.len() {
        return Err(CompatError::malformed("parallel compression container", "bad strip count"));
    }
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    for _ in 0..strips {
        let strip_len = r.i64()?;
        let strip = r.take(usize::try_from(strip_len).unwrap_or(usize::MAX))?;
        let mut s = crate::dfe::Cursor::new(strip, "compressed strip");
        let kind = s.u8()?;
        let raw = u64::try_from(s.i64()?)
            .map_err(|_| CompatError::malformed("compressed strip", "negative size"))?;
        let room = len - out.len() as u64;
        if raw > room {
            return Err(CompatError::malformed("parallel compression container", "strips exceed the total"));
        }
        match kind {
            0 => out.extend_from_slice(s.take(raw as usize)?),
            k if ZLIB_KINDS.contains(&k) => out.extend_from_slice(&unzlib(s.rest(), raw, room)?),
            k => {
                return Err(CompatError::malformed(
                    "compressed strip",
                    format!("compressor {k} not supported"),
                ))
            }
        }
    }
    if out.len() as u64 != len {
        return Err(CompatError::malformed(
            "parallel compression container",
            "strips fall short of the total",
        ));
    }
    Ok(out)
}

/// Inflates a `ParallelCompressMemory` container piece by piece, no more at a time than the
/// reader asks for: a small container that announces a large size costs its compressed
/// bytes and one piece, not the whole, and a lie is found when it is reached.
pub struct ParallelInflater {
    data: Bytes,
    /// Where the next strip's length is.
    at: usize,
    strips_left: u32,
    strip: Option<Strip>,
    /// Raw bytes still to come (the total the container announces).
    remaining: u64,
}

/// The strip being read: its bytes in `data[at..end]`, `raw_left` still to produce.
struct Strip {
    zlib: Option<Box<Decompress>>,
    at: usize,
    end: usize,
    raw_left: u64,
}

fn bad(why: &str) -> CompatError {
    CompatError::malformed("parallel compression container", why.to_string())
}

impl ParallelInflater {
    /// A reader of `data`, which must hold exactly `len` raw bytes, at most `limit`.
    pub fn new(data: Bytes, len: u64, limit: u64) -> Result<Self, CompatError> {
        check_size(len, data.len(), limit)?;
        let count = data.get(..4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")));
        let strips = count.ok_or_else(|| bad("no strip count"))?;
        if strips < 0 || strips as usize > data.len() {
            return Err(bad("bad strip count"));
        }
        Ok(ParallelInflater { data, at: 4, strips_left: strips as u32, strip: None, remaining: len })
    }

    /// Raw bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next piece of at most `max` raw bytes; `None` once all of it came (and the
    /// container held exactly what it announced).
    pub fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>, CompatError> {
        loop {
            if self.strip.is_none() {
                if self.strips_left == 0 {
                    return if self.remaining == 0 {
                        Ok(None)
                    } else {
                        Err(bad("strips fall short of the total"))
                    };
                }
                self.strip = Some(self.open_strip()?);
            }
            let strip = self.strip.as_mut().expect("a strip");
            if strip.raw_left == 0 {
                if let Some(z) = strip.zlib.as_mut() {
                    // The stream must end here, checksum and all: one more byte would be more
                    // than announced.
                    let mut extra = [0u8; 1];
                    let before = z.total_out();
                    let status = z
                        .decompress(&self.data[strip.at..strip.end], &mut extra, FlushDecompress::Finish)
                        .map_err(|e| CompatError::malformed("zlib stream", e.to_string()))?;
                    if z.total_out() > before {
                        return Err(CompatError::malformed("zlib stream", "more bytes than announced"));
                    }
                    if status != Status::StreamEnd {
                        return Err(CompatError::malformed("zlib stream", "incomplete deflate stream"));
                    }
                }
                self.strip = None;
                continue;
            }
            let want = (max.max(1) as u64).min(strip.raw_left) as usize;
            let piece = match strip.zlib.as_mut() {
                None => {
                    let piece = self.data.slice(strip.at..strip.at + want);
                    strip.at += want;
                    piece
                }
                Some(z) => {
                    let mut out = Vec::with_capacity(want);
                    let (in_before, out_before) = (z.total_in(), z.total_out());
                    let status = z
                        .decompress_vec(&self.data[strip.at..strip.end], &mut out, FlushDecompress::None)
                        .map_err(|e| CompatError::malformed("zlib stream", e.to_string()))?;
                    let consumed = (z.total_in() - in_before) as usize;
                    strip.at += consumed;
                    let stuck = consumed == 0 || status == Status::StreamEnd || strip.at == strip.end;
                    if z.total_out() == out_before && stuck {
                        return Err(CompatError::malformed("zlib stream", "fewer bytes than announced"));
                    }
                    Bytes::from(out)
                }
            };
            strip.raw_left -= piece.len() as u64;
            self.remaining -= piece.len() as u64;
            if !piece.is_empty() {
                return Ok(Some(piece));
            }
        }
    }

    /// Reads the next strip's header.
    fn open_strip(&mut self) -> Result<Strip, CompatError> {
        let mut r = crate::dfe::Cursor::new(&self.data[self.at..], "parallel compression container");
        let strip_len = usize::try_from(r.i64()?).map_err(|_| bad("negative strip length"))?;
        let start = self.at + 8;
        let end = start
            .checked_add(strip_len)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad("a strip runs past the end"))?;
        let mut s = crate::dfe::Cursor::new(&self.data[start..end], "compressed strip");
        let kind = s.u8()?;
        let raw = u64::try_from(s.i64()?)
            .map_err(|_| CompatError::malformed("compressed strip", "negative size"))?;
        if raw > self.remaining {
            return Err(bad("strips exceed the total"));
        }
        self.at = end;
        self.strips_left -= 1;
        let body = start + 9;
        let zlib = match kind {
            0 if (end - body) as u64 == raw => None,
            0 => return Err(CompatError::malformed("compressed strip", "stored size differs")),
            k if ZLIB_KINDS.contains(&k) => Some(Box::new(Decompress::new(true))),
            k => {
                return Err(CompatError::malformed(
                    "compressed strip",
                    format!("compressor {k} not supported"),
                ))
            }
        };
        Ok(Strip { zlib, at: body, end, raw_left: raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_containers_round_trip_and_reject_lies() {
        for n in [0usize, 1, 100, STRIP, 3 * STRIP + 7, 200_000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 ^ (i / 997) as u8).collect();
            let c = parallel_compress(&data);
            assert_eq!(parallel_len(&c).unwrap(), n as u64);
            assert_eq!(parallel_decompress(&c, n as u64, 1 << 30).unwrap(), data);
            assert!(parallel_decompress(&c, n as u64 + 1, 1 << 30).is_err());
        }
        assert!(matches!(parallel_decompress(&[], 10, 5), Err(CompatError::TooLarge { .. })));
        assert!(unzlib(&zlib(b"hello"), 4, 100).is_err(), "more than announced");
    }

    #[test]
    fn the_inflater_gives_pieces_and_catches_lies_where_they_are() {
        for n in [0usize, 1, 100, STRIP, 3 * STRIP + 7, 200_000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 ^ (i / 997) as u8).collect();
            let c = Bytes::from(parallel_compress(&data));
            let mut r = ParallelInflater::new(c.clone(), n as u64, 1 << 30).unwrap();
            let mut out = Vec::new();
            while let Some(p) = r.next_piece(4096).unwrap() {
                assert!(p.len() <= 4096);
                out.extend_from_slice(&p);
            }
            assert_eq!(out, data);
            let mut long = ParallelInflater::new(c.clone(), n as u64 + 1, 1 << 30).unwrap();
            let lie = std::iter::from_fn(|| long.next_piece(1 << 20).transpose()).find(Result::is_err);
            assert!(lie.is_some(), "{n}: a container short of what was announced fails");
        }
        // 64 MiB of zeros announced by 2 KiB: refused before anything is inflated.
        let zeros = parallel_compress(&vec![0u8; 100_000]);
        let mut lie = zeros.clone();
        lie.truncate(2048);
        assert!(matches!(
            ParallelInflater::new(Bytes::from(lie), 64 << 20, 1 << 30),
            Err(CompatError::TooLarge { .. })
        ));
        // Real zeros inflate in pieces: memory is a piece at a time.
        let mut r = ParallelInflater::new(Bytes::from(zeros), 100_000, 1 << 30).unwrap();
        assert_eq!(r.next_piece(1000).unwrap().unwrap().len(), 1000);
        assert_eq!(r.remaining(), 99_000);
    }
}
