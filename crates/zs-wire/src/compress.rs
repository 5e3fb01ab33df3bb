//! Payload compression: lz4 for rpc frames, zstd for stream chunks. Data is compressed only
//! when it is at least [`MIN_LEN`] bytes and shrinks to at most 9/10 of its size; decoders
//! refuse anything that would expand past a limit before allocating it.

use crate::WireError;

/// Smallest payload worth compressing.
pub const MIN_LEN: usize = 1024;
/// Most an lz4 block inflates per byte (its format's limit is about 255).
const LZ4_MAX_RATIO: u64 = 256;

/// Whether `compressed` saves enough over `original` to be worth sending.
fn worth_it(compressed: usize, original: usize) -> bool {
    compressed * 10 <= original * 9
}

/// lz4 block with its uncompressed size prepended (u32 LE), if worth it.
pub fn lz4(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < MIN_LEN {
        return None;
    }
    let c = lz4_flex::compress_prepend_size(data);
    worth_it(c.len(), data.len()).then_some(c)
}

/// Reverses [`lz4`], refusing an uncompressed size over `max`.
pub fn unlz4(data: &[u8], max: u32) -> Result<Vec<u8>, WireError> {
    let bad = |why| WireError::Malformed { what: "lz4 payload", why };
    let size = data.get(..4).ok_or(bad("missing size prefix"))?;
    let size = u32::from_le_bytes(size.try_into().expect("4 bytes"));
    if size > max {
        return Err(WireError::FrameTooLarge { len: size.into(), max });
    }
    // An lz4 block cannot inflate more than about 255 times: a larger claim is a lie, refused
    // before anything is allocated for it.
    if u64::from(size) > (data.len() as u64).saturating_mul(LZ4_MAX_RATIO) + 64 {
        return Err(bad("declares more than an lz4 block can hold"));
    }
    let out = lz4_flex::decompress_size_prepended(data).map_err(|_| bad("corrupt lz4 block"))?;
    // lz4_flex accepts a block that decodes to fewer bytes than it declares.
    if out.len() != size as usize {
        return Err(bad("decodes to another size than it declares"));
    }
    Ok(out)
}

/// zstd (level 1) of a chunk, if worth it.
pub fn zstd(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < MIN_LEN {
        return None;
    }
    let c = zstd::bulk::compress(data, 1).ok()?;
    worth_it(c.len(), data.len()).then_some(c)
}

/// Reverses [`zstd`], refusing output over `max` bytes.
pub fn unzstd(data: &[u8], max: usize) -> Result<Vec<u8>, WireError> {
    zstd::bulk::decompress(data, max).map_err(|_| WireError::Malformed {
        what: "zstd chunk",
        why: "corrupt or larger than the chunk limit",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_only_what_pays() {
        let text = "the quick brown fox jumps over the lazy dog ".repeat(100);
        let c = lz4(text.as_bytes()).expect("text compresses");
        assert!(c.len() < text.len() / 2);
        assert_eq!(unlz4(&c, 1 << 20).unwrap(), text.as_bytes());
        assert!(lz4(b"short").is_none(), "small data is sent as is");
        use rand::{RngCore, SeedableRng};
        let mut noise = vec![0u8; 4096];
        rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut noise);
        assert!(lz4(&noise).is_none(), "incompressible data is sent as is");
        assert!(zstd(&noise).is_none());

        let z = zstd(text.as_bytes()).unwrap();
        assert_eq!(unzstd(&z, 1 << 20).unwrap(), text.as_bytes());
    }

    #[test]
    fn decompression_is_bounded() {
        let big = vec![0u8; 100_000];
        let c = lz4(&big).unwrap();
        assert_eq!(unlz4(&c, 1000), Err(WireError::FrameTooLarge { len: 100_000, max: 1000 }));
        assert!(unlz4(&[1, 0], 10).is_err());
        assert!(unlz4(&[5, 0, 0, 0, 0xff], 10).is_err());
        assert!(unlz4(&[9, 0, 0, 0, 1], 10).is_err(), "declares 9 bytes, decodes to none");
        let mut lie = c.clone();
        lie[..4].copy_from_slice(&(c.len() as u32 * 300).to_le_bytes());
        assert_eq!(
            unlz4(&lie, u32::MAX),
            Err(WireError::Malformed {
                what: "lz4 payload",
                why: "declares more than an lz4 block can hold"
            })
        );
        let z = zstd(&big).unwrap();
        assert!(unzstd(&z, 1000).is_err());
        assert!(unzstd(b"not zstd", 1000).is_err());
    }
}
