//! The original's compression containers: `SelectCompressStream` (a kind byte, the raw
//! size, a zlib stream) and `ParallelCompressMemory` (strips of about 16 KiB, each a
//! `SelectCompressStream`), used by DataFrameEngine, BigStream chunks and CompleteBuffers.

use std::io::{Read, Write};

use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};

use crate::CompatError;

/// Input bytes per strip of a parallel container.
const STRIP: usize = 16 << 10;
/// `SelectCompressStream` kinds that are zlib streams (ZLIB, ZLIB_Fast, ZLIB_Max).
const ZLIB_KINDS: [u8; 3] = [1, 2, 3];

/// zlib (RFC 1950) of `data`, fast level.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 16), Compression::fast());
    e.write_all(data).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// Inflates a zlib stream that must hold exactly `len` bytes.
pub fn unzlib(data: &[u8], len: u64, limit: u64) -> Result<Vec<u8>, CompatError> {
    if len > limit {
        return Err(CompatError::TooLarge { what: "uncompressed data", size: len, limit });
    }
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
    if len > limit {
        return Err(CompatError::TooLarge { what: "uncompressed data", size: len, limit });
    }
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
}
