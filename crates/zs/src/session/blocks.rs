//! The copies a session keeps for replay, in fixed blocks that are used again once every
//! copy in them is acknowledged: steady traffic allocates nothing.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bytes of one block.
pub(crate) const BLOCK: usize = 64 << 10;

/// Blocks being filled and blocks whose copies await their acks.
pub(crate) struct CopyBlocks {
    /// The block being filled (empty until the first copy).
    current: BytesMut,
    /// Filled blocks, oldest first: each can be used again once no copy shares it.
    filled: VecDeque<BytesMut>,
    /// Most filled blocks remembered (the replay budget's worth, and a little more).
    max_filled: usize,
    /// `current` is a block (not the empty handle of a fresh or released set).
    has_block: bool,
}

impl CopyBlocks {
    /// Blocks for a replay budget of `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        CopyBlocks {
            current: BytesMut::new(),
            filled: VecDeque::new(),
            max_filled: budget / BLOCK + 2,
            has_block: false,
        }
    }

    /// Copies `bufs` in order and hands each block's share of them to `keep`.
    pub(crate) fn copy<'a>(&mut self, bufs: impl IntoIterator<Item = &'a [u8]>, mut keep: impl FnMut(Bytes)) {
        for mut b in bufs {
            while !b.is_empty() {
                if self.current.len() == self.current.capacity() {
                    self.seal(&mut keep);
                    self.next_block();
                }
                let take = b.len().min(self.current.capacity() - self.current.len());
                self.current.extend_from_slice(&b[..take]);
                b = &b[take..];
            }
        }
        self.seal(&mut keep);
    }

    /// Drops every block (call once nothing unacknowledged is held: only then is memory freed).
    pub(crate) fn release(&mut self) {
        self.current = BytesMut::new();
        self.filled = VecDeque::new();
        self.has_block = false;
    }

    fn seal(&mut self, keep: &mut impl FnMut(Bytes)) {
        if !self.current.is_empty() {
            keep(self.current.split().freeze());
        }
    }

    /// Moves on to the oldest filled block if all its copies are acknowledged, else to a new one.
    fn next_block(&mut self) {
        let full = std::mem::take(&mut self.current);
        if self.has_block {
            // A handle with no room left still owns its block: kept to reuse the block.
            self.filled.push_back(full);
            if self.filled.len() > self.max_filled {
                self.filled.pop_front();
            }
        }
        self.has_block = true;
        if let Some(oldest) = self.filled.front_mut() {
            if oldest.try_reclaim(BLOCK) {
                self.current = self.filled.pop_front().expect("just seen");
                return;
            }
        }
        self.current = BytesMut::with_capacity(BLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied(blocks: &mut CopyBlocks, bufs: &[&[u8]]) -> Vec<Bytes> {
        let mut pieces = Vec::new();
        blocks.copy(bufs.iter().copied(), |p| pieces.push(p));
        pieces
    }

    #[test]
    fn copies_cross_blocks_in_order_and_blocks_return_once_acknowledged() {
        let mut blocks = CopyBlocks::new(4 * BLOCK);
        let data: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        let pieces = copied(&mut blocks, &[&data[..10], &data[10..]]);
        assert!(pieces.iter().all(|p| p.len() <= BLOCK));
        assert_eq!(pieces.concat(), data);
        let first = pieces[0].as_ptr();
        // While a copy is held its block is not reused: new copies land elsewhere.
        let more = copied(&mut blocks, &[&data[..BLOCK]]);
        assert!(more.iter().all(|p| !p.as_ptr_range().contains(&first)));
        drop((pieces, more));
        // Everything acknowledged: the oldest block is used again, not a new allocation.
        let again = copied(&mut blocks, &[&data[..BLOCK]]);
        assert_eq!(again.concat(), &data[..BLOCK]);
        assert!(again.iter().any(|p| p.as_ptr() == first), "the first block was not reused");
    }

    #[test]
    fn remembered_blocks_are_bounded_and_release_forgets_them() {
        let mut blocks = CopyBlocks::new(2 * BLOCK);
        let data = vec![7u8; BLOCK];
        let held: Vec<Bytes> = (0..10).flat_map(|_| copied(&mut blocks, &[&data])).collect();
        assert!(blocks.filled.len() <= blocks.max_filled);
        drop(held);
        blocks.release();
        assert_eq!(blocks.current.capacity(), 0);
        assert!(blocks.filled.is_empty());
    }
}
