//! A connection's pending output: whole frames in order, written with one vectored write.
//! Small frames are appended to one buffer; large ones (stream chunks) are queued as the
//! shared `Bytes` they already are, so they go out without a copy.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, Bytes, BytesMut};

use crate::transport::Link;

/// Most segments handed to one vectored write.
const MAX_IOV: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Frames queued ahead of `small`, in order.
    segments: VecDeque<Bytes>,
    /// Small frames being accumulated; always written after `segments`.
    small: BytesMut,
}

impl Output {
    /// The buffer small frames are encoded into.
    pub(crate) fn small(&mut self) -> &mut BytesMut {
        if self.small.capacity() == 0 {
            self.small = super::spare::take_write();
        }
        &mut self.small
    }

    /// Queues a whole frame without copying it.
    pub(crate) fn push_frame(&mut self, frame: Bytes) {
        if !self.small.is_empty() {
            let before = self.small.split().freeze();
            self.segments.push_back(before);
        }
        self.segments.push_back(frame);
    }

    /// Bytes not yet written (segments are few: a quantum of chunks at most).
    pub(crate) fn len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum::<usize>() + self.small.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes as much as the link takes now; `Ok(0)` if it takes nothing (would block).
    pub(crate) fn write_to(&mut self, link: &mut impl Link) -> io::Result<usize> {
        let n = if self.segments.is_empty() {
            link.try_write(&self.small)?
        } else {
            let segments = self.segments.make_contiguous();
            let tail: &[u8] = if segments.len() < MAX_IOV { &self.small } else { &[] };
            link.try_write_shared(&segments[..segments.len().min(MAX_IOV - 1)], tail)?
        };
        self.advance(n);
        Ok(n)
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                // All written: cleared, the buffer keeps its whole room (advancing past
                // the bytes would leave it none to hand on).
                match n == self.small.len() {
                    true => self.small.clear(),
                    false => self.small.advance(n),
                }
                return;
            };
            let take = n.min(front.len());
            front.advance(take);
            n -= take;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
    }

    /// Lets go of the buffers if nothing is pending (an idle connection holds none): the
    /// write buffer is kept by the thread for the next connection that writes.
    pub(crate) fn release_if_empty(&mut self) {
        if self.is_empty() {
            super::spare::keep_write(std::mem::take(self).small);
        }
    }
}
