//! Buffers that connections let go of when their input pauses, kept by the thread for the
//! next connection that reads or writes on it.
//!
//! An idle connection holds no buffer; before this, a busy one made a fresh read buffer for
//! every read and grew a fresh write buffer for every write (6 % of a Client API run's
//! samples went to growing them, with the page faults and trims that follow). Each thread
//! keeps at most one read buffer and one write buffer, of at most [`KEEP_MAX`] bytes each.
//!
//! A read buffer is handed on as the unused tail of its allocation: frames already cut
//! from its front live on as shared `Bytes`, and the next connection's bytes go after
//! them, so one allocation serves many small reads of many connections.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};

/// Largest buffer a thread keeps.
const KEEP_MAX: usize = 256 << 10;
/// Smallest room left in a read buffer that is worth keeping and reading into.
pub(crate) const MIN_ROOM: usize = 2 << 10;

/// Frames encoded by callers come out of chunks of this size (one allocation for many).
const ENCODE_CHUNK: usize = 16 << 10;
/// Largest frame encoded in a shared chunk; a larger one gets its own buffer.
const ENCODE_SHARED_MAX: usize = 2 << 10;

thread_local! {
    static READ: Cell<BytesMut> = Cell::new(BytesMut::new());
    static WRITE: Cell<BytesMut> = Cell::new(BytesMut::new());
    static ENCODE: Cell<BytesMut> = Cell::new(BytesMut::new());
}

/// Encodes one frame of about `size` bytes with `encode` and returns it as shared bytes:
/// small frames are cut from the thread's current chunk, so a caller's frame costs no
/// allocation of its own (the chunk is freed once every frame cut from it is).
pub(crate) fn encode<E>(
    size: usize,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    if size > ENCODE_SHARED_MAX {
        let mut out = BytesMut::with_capacity(size);
        encode(&mut out)?;
        return Ok(out.freeze());
    }
    ENCODE.with(|slot| {
        let mut chunk = slot.take();
        if chunk.capacity() < size {
            chunk = BytesMut::with_capacity(ENCODE_CHUNK);
        }
        let result = encode(&mut chunk);
        let frame = chunk.split().freeze();
        slot.set(chunk);
        result.map(|()| frame)
    })
}

/// A read buffer with room for at least [`MIN_ROOM`] bytes, if the thread has one.
pub(crate) fn take_read() -> BytesMut {
    READ.with(Cell::take)
}

/// Keeps an emptied read buffer's room for the thread, if there is enough of it.
pub(crate) fn keep_read(mut buf: BytesMut) {
    debug_assert!(buf.is_empty());
    // Every frame cut from it gone: the whole allocation is room again (asking for more
    // than its room left reclaims the front, or does nothing while frames hold it).
    let _ = buf.try_reclaim(buf.capacity() + 1);
    if (MIN_ROOM..=KEEP_MAX).contains(&buf.capacity()) {
        READ.with(|slot| keep_larger(slot, buf));
    }
}

/// A write buffer with no bytes in it, if the thread has one.
pub(crate) fn take_write() -> BytesMut {
    WRITE.with(Cell::take)
}

/// Keeps an emptied write buffer for the thread.
pub(crate) fn keep_write(buf: BytesMut) {
    debug_assert!(buf.is_empty());
    if buf.capacity() > 0 && buf.capacity() <= KEEP_MAX {
        WRITE.with(|slot| keep_larger(slot, buf));
    }
}

/// Of the buffer held and `buf`, the one with more room stays.
fn keep_larger(slot: &Cell<BytesMut>, buf: BytesMut) {
    let held = slot.take();
    slot.set(if held.capacity() > buf.capacity() { held } else { buf });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_whose_frames_are_gone_is_handed_on_whole() {
        let mut buf = BytesMut::with_capacity(16 << 10);
        buf.extend_from_slice(&[7; 10 << 10]);
        let frame = buf.split().freeze();
        let _ = take_read();
        keep_read(buf);
        assert!(take_read().capacity() < 7 << 10, "a frame alive: only the room after it");
        let mut buf = BytesMut::with_capacity(16 << 10);
        buf.extend_from_slice(&[7; 10 << 10]);
        drop(buf.split().freeze());
        keep_read(buf);
        assert!(take_read().capacity() >= 16 << 10, "every frame gone: the whole buffer");
        assert_eq!(frame[0], 7);
    }

    #[test]
    fn a_kept_read_buffer_is_handed_on_with_its_room_and_the_larger_one_stays() {
        let mut buf = BytesMut::with_capacity(16 << 10);
        buf.extend_from_slice(b"frame");
        let frame = buf.split().freeze();
        keep_read(buf);
        let mut again = take_read();
        assert!(again.capacity() >= (16 << 10) - 5);
        assert!(take_read().capacity() == 0, "taken once");
        again.extend_from_slice(b"next");
        assert_eq!(&frame[..], b"frame", "earlier frames are untouched");
        again.clear();
        keep_read(BytesMut::with_capacity(4 << 10));
        keep_read(again);
        assert!(take_read().capacity() >= 15 << 10);
        keep_read(BytesMut::with_capacity(1 << 10));
        assert_eq!(take_read().capacity(), 0, "too little room is not kept");
        keep_read(BytesMut::with_capacity(1 << 20));
        assert_eq!(take_read().capacity(), 0, "too large is not kept");
    }

    /// Encodes `bytes` as a frame would be.
    fn put(size: usize, bytes: &[u8]) -> Bytes {
        encode(size, |out| {
            out.extend_from_slice(bytes);
            Ok::<_, ()>(())
        })
        .unwrap()
    }

    #[test]
    fn small_frames_share_a_chunk_and_a_failed_one_leaves_nothing() {
        let a = put(100, &[1; 100]);
        let b = put(100, &[2; 100]);
        assert_eq!((&a[..], &b[..]), (&[1u8; 100][..], &[2u8; 100][..]));
        assert_eq!(a.as_ptr().wrapping_add(100), b.as_ptr(), "cut one after the other");
        let failed = encode(10, |out| {
            out.extend_from_slice(b"half");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        assert_eq!(&put(4, b"next")[..], b"next");
        let big = put(64 << 10, &[7; 64 << 10]);
        assert_eq!(big.len(), 64 << 10);
    }

    #[test]
    fn a_kept_write_buffer_is_handed_on() {
        keep_write(BytesMut::with_capacity(8 << 10));
        keep_write(BytesMut::with_capacity(1 << 10));
        assert!(take_write().capacity() >= 8 << 10);
        assert_eq!(take_write().capacity(), 0);
    }
}
