//! `SecureLink`: a raw link (of any transport) whose bytes are records of a record layer
//! (Noise or TLS). The connection driver sees plaintext through the same readiness-based
//! [`Link`] surface as the raw link: reads decrypt every whole record that arrived, writes
//! seal what they are given into records and write them with one syscall.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use zs_wire::secure::MAX_RECORD;

use crate::stats::Stats;
use crate::transport::{Link, RawLink};

/// Most sealed bytes held before the socket takes them; writes wait beyond it.
const MAX_SEALED: usize = 256 << 10;
/// Smallest socket read while records are arriving.
const MIN_READ: usize = 16 << 10;

/// A record layer: turns plaintext into records and records back into plaintext.
pub(crate) trait Records: Send + Sync + 'static {
    /// Seals up to `max` bytes of `bufs`, in order, into records appended to `out`;
    /// returns the plaintext bytes taken.
    fn seal(&mut self, bufs: &[IoSlice<'_>], max: usize, out: &mut BytesMut) -> io::Result<usize>;
    /// Opens every whole record at the front of `input` (consuming it), appending the
    /// plaintext to `plain` and any record the layer must answer with to `out`; returns
    /// the plaintext bytes produced.
    fn open(&mut self, input: &mut BytesMut, plain: &mut BytesMut, out: &mut BytesMut) -> io::Result<usize>;
    /// Whether the layer opens records where they lie ([`open_within`](Self::open_within)).
    const OPENS_WITHIN: bool = false;
    /// Opens every whole record of `buf[from..]` where it lies, its plaintext moved down to
    /// `from` in the same pass; returns where the plaintext ends and where a partial record
    /// begins. Only called on a layer whose `OPENS_WITHIN` is true.
    fn open_within(&mut self, _buf: &mut [u8], _from: usize) -> io::Result<(usize, usize)> {
        Err(io::Error::other("this record layer does not open records within a buffer"))
    }
    /// Bytes that would complete the partial record `partial` (at least one), if the layer
    /// can tell; `usize::MAX` if not.
    fn rest_of_record(&self, _partial: &[u8]) -> usize {
        usize::MAX
    }
    /// Rolls both directions to new keys, appending the records that tell the peer.
    fn rekey(&mut self, out: &mut BytesMut) -> io::Result<()>;
    /// Appends the records that end the channel cleanly, if the layer has any.
    fn close(&mut self, _out: &mut BytesMut) {}
}

/// When a secure channel's sending keys are rolled: after this many bytes or this much
/// time, whichever comes first (default 1 GiB or 10 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Bytes sealed under one key.
    pub after_bytes: u64,
    /// Time since the last roll (checked at the next record sent).
    pub after_time: Duration,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy { after_bytes: 1 << 30, after_time: Duration::from_secs(600) }
    }
}

/// Where the shutdown of a secure link's sending side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Open,
    /// The closing records are queued; the raw link is shut down once they are written.
    Pending,
    Done,
}

/// A secure channel over the raw link `S`.
pub(crate) struct SecureLink<R, S = RawLink> {
    raw: S,
    records: R,
    /// Received bytes not yet a whole record.
    sealed_in: BytesMut,
    /// Sealed records not yet taken by the socket.
    sealed_out: BytesMut,
    /// Data may be buffered from the handshake: report readable until a read finds the
    /// socket drained (so the reader sees `WouldBlock` and can drop its buffers).
    primed: bool,
    /// The last read in place opened no whole record: the partial record grows in
    /// `sealed_in` until whole, instead of being moved in and out of the reader's buffer
    /// on every read (a peer sending a record in small pieces would have made each piece
    /// cost up to two record-sized copies).
    trickling: bool,
    /// Where the shutdown of the sending side stands: the raw link is shut down once the
    /// records that end the channel are written (a full socket must not lose them).
    shutdown: Shutdown,
    rekey: RekeyPolicy,
    sealed_since_rekey: u64,
    last_rekey: Instant,
    stats: Arc<Stats>,
}

impl<R: Records, S: Link> SecureLink<R, S> {
    /// Wraps a raw link whose handshake is done; `leftover` is what was read past it.
    pub(crate) fn new(raw: S, records: R, leftover: BytesMut, rekey: RekeyPolicy, stats: Arc<Stats>) -> Self {
        SecureLink {
            raw,
            records,
            sealed_in: leftover,
            sealed_out: BytesMut::new(),
            primed: true,
            trickling: false,
            shutdown: Shutdown::Open,
            rekey,
            sealed_since_rekey: 0,
            last_rekey: Instant::now(),
            stats,
        }
    }

    /// Writes sealed records until the socket would block.
    fn flush_sealed(&mut self) -> io::Result<()> {
        while !self.sealed_out.is_empty() {
            let n = self.raw.try_write(&self.sealed_out)?;
            self.sealed_out.advance(n);
        }
        // A raw link that buffers (a stream of another layer's) writes its own out too.
        if self.raw.has_pending() {
            self.raw.flush()?;
        }
        Ok(())
    }

    fn flush_ignoring_block(&mut self) -> io::Result<()> {
        match self.flush_sealed() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads records straight into `buf` after its plaintext and opens them there (the
    /// partial record left by the last read goes first): the plaintext is not copied out of
    /// a buffer of records, which was 13 % of a receiver's time in a Noise bulk transfer.
    fn read_within(&mut self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        loop {
            // Whole records left from the handshake, or grown while trickling, are opened
            // as before.
            let n = self.records.open(&mut self.sealed_in, buf, &mut self.sealed_out)?;
            if n > 0 {
                self.trickling = false;
                return Ok(n);
            }
            if self.trickling {
                // No more than completes the record (or a minimum read): what grows aside
                // stays within a record, however large the reader's buffer.
                let rest = self.records.rest_of_record(&self.sealed_in).max(MIN_READ);
                if let Some(done) = self.read_sealed(want.min(rest)) {
                    return done;
                }
                continue;
            }
            let from = buf.len();
            buf.extend_from_slice(&self.sealed_in);
            self.sealed_in.clear();
            buf.reserve(MIN_READ);
            let read = self.raw.try_read_buf_upto(buf, want);
            if !matches!(read, Ok(n) if n > 0) {
                // Nothing new: the partial record goes back where it waits.
                self.sealed_in.extend_from_slice(&buf[from..]);
                buf.truncate(from);
            }
            if let Some(done) = self.read_ended(read) {
                return done;
            }
            let (end, partial) = match self.records.open_within(&mut buf[..], from) {
                Ok(at) => at,
                Err(e) => {
                    buf.truncate(from);
                    return Err(e);
                }
            };
            self.sealed_in.extend_from_slice(&buf[partial..]);
            buf.truncate(end);
            if end > from {
                return Ok(end - from);
            }
            self.trickling = true;
        }
    }

    /// Reads up to `want` more record bytes into `sealed_in`, after a partial record, with
    /// no copy: `None` if bytes came, else what the read asked of this link returns.
    fn read_sealed(&mut self, want: usize) -> Option<io::Result<usize>> {
        if !self.sealed_in.try_reclaim(want) {
            // A new buffer with the partial record moved into it, and room for a record
            // more than a read, so later reads find room by moving a partial record to the
            // front (`try_reclaim`): growing the old one (realloc) copied all of it, 8 % of
            // a receiver's time.
            let mut fresh = BytesMut::with_capacity(want + MAX_RECORD);
            fresh.extend_from_slice(&self.sealed_in);
            self.sealed_in = fresh;
        }
        let read = self.raw.try_read_buf_upto(&mut self.sealed_in, want);
        self.read_ended(read)
    }

    /// What a raw read of records means for the read asked of this link: `None` if bytes
    /// came (go on), else what that read returns.
    fn read_ended(&mut self, read: io::Result<usize>) -> Option<io::Result<usize>> {
        match read {
            Ok(0) if self.sealed_in.is_empty() => Some(Ok(0)),
            Ok(0) => {
                Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a record")))
            }
            Ok(_) => None,
            Err(e) => {
                // Only now is the socket known to be drained: the handshake's reads may
                // have taken its readiness along with the first records.
                self.primed = false;
                Some(Err(e))
            }
        }
    }

    fn rekey_if_due(&mut self) -> io::Result<()> {
        if self.sealed_since_rekey >= self.rekey.after_bytes
            || self.last_rekey.elapsed() >= self.rekey.after_time
        {
            self.records.rekey(&mut self.sealed_out)?;
            self.sealed_since_rekey = 0;
            self.last_rekey = Instant::now();
            self.stats.bump(|s| &s.rekeys);
        }
        Ok(())
    }
}

impl<R: Records, S: Link> Link for SecureLink<R, S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.primed {
            return Poll::Ready(Ok(()));
        }
        self.raw.poll_read_ready(cx)
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.try_read_buf_upto(buf, usize::MAX)
    }

    /// Reads at most `max` bytes of records (or `MIN_READ`), so the plaintext appended
    /// passes `max` by less than one record's.
    fn try_read_buf_upto(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let want = (buf.capacity() - buf.len()).min(max).max(MIN_READ);
        if R::OPENS_WITHIN {
            return self.read_within(buf, want);
        }
        loop {
            let n = self.records.open(&mut self.sealed_in, buf, &mut self.sealed_out)?;
            if !self.sealed_out.is_empty() {
                self.flush_ignoring_block()?;
            }
            if n > 0 {
                return Ok(n);
            }
            if let Some(done) = self.read_sealed(want) {
                return done;
            }
        }
    }

    fn read_overshoot(&self) -> Option<usize> {
        // What the raw link may add, a read of `MIN_READ` when less was asked, and the
        // partial record before it, opened whole.
        self.raw.read_overshoot().map(|raw| raw + MIN_READ + MAX_RECORD)
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.raw.poll_write_ready(cx)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush_ignoring_block()?;
        let room = MAX_SEALED.saturating_sub(self.sealed_out.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.rekey_if_due()?;
        let n = self.records.seal(bufs, room, &mut self.sealed_out)?;
        self.sealed_since_rekey += n as u64;
        self.flush_ignoring_block()?;
        Ok(n)
    }

    fn has_pending(&self) -> bool {
        !self.sealed_out.is_empty() || self.raw.has_pending() || self.shutdown == Shutdown::Pending
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_sealed()?;
        if self.shutdown == Shutdown::Pending {
            self.raw.shutdown_write()?;
            self.shutdown = Shutdown::Done;
        }
        Ok(())
    }

    fn release_idle(&mut self) {
        if self.sealed_in.is_empty() {
            self.sealed_in = BytesMut::new();
        }
        if self.sealed_out.is_empty() {
            self.sealed_out = BytesMut::new();
        }
    }

    /// Queues the closing records and shuts the raw link down once they are written: if
    /// the socket is full, that is left pending ([`has_pending`](Link::has_pending)) for
    /// [`flush`](Link::flush) to finish.
    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.shutdown == Shutdown::Open {
            self.records.close(&mut self.sealed_out);
            self.shutdown = Shutdown::Pending;
        }
        match self.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            done => done,
        }
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.raw.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.raw.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};

    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;
    use zs_wire::secure::NoiseCipher;

    use super::{Records, RekeyPolicy, SecureLink, MAX_RECORD, MIN_READ};
    use crate::transport::Link;

    /// Reads from `link` until it says something other than `WouldBlock`.
    async fn read(
        link: &mut SecureLink<super::super::noise::NoiseRecords, tokio::net::TcpStream>,
    ) -> io::Result<usize> {
        let mut buf = BytesMut::with_capacity(1 << 16);
        loop {
            std::future::poll_fn(|cx| link.poll_read_ready(cx)).await?;
            match link.try_read_buf(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// `plain` sealed into Noise records, a socket to write them to, and the secure link
    /// reading the other end with the matching keys.
    async fn sealed_and_linked(
        plain: &[u8],
    ) -> (BytesMut, tokio::net::TcpStream, SecureLink<super::super::noise::NoiseRecords, tokio::net::TcpStream>)
    {
        let (mut tx, rx) = super::super::fuzzing::pair(NoiseCipher::AesGcm);
        let mut sealed = BytesMut::new();
        tx.seal(&[IoSlice::new(plain)], usize::MAX, &mut sealed).expect("seal");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let writer =
            tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (reader, _) = listener.accept().await.expect("accept");
        let link = SecureLink::new(reader, rx, BytesMut::new(), RekeyPolicy::default(), Default::default());
        (sealed, writer, link)
    }

    #[tokio::test]
    async fn a_peer_that_closes_inside_a_record_is_an_error_and_after_one_a_clean_end() {
        for cut in [true, false] {
            let (sealed, mut writer, mut link) = sealed_and_linked(b"a whole record").await;
            let len = if cut { sealed.len() - 5 } else { sealed.len() };
            writer.write_all(&sealed[..len]).await.expect("write");
            writer.shutdown().await.expect("shutdown");
            if cut {
                let e = read(&mut link).await.expect_err("a cut record is no clean end");
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            } else {
                assert_eq!(read(&mut link).await.expect("the record"), 14);
                assert_eq!(read(&mut link).await.expect("a clean end"), 0);
            }
        }
    }

    #[tokio::test]
    async fn records_sent_in_small_pieces_grow_aside_and_arrive_whole() {
        let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let (sealed, mut writer, mut link) = sealed_and_linked(&plain).await;
        let (mut got, mut trickled, mut aside) = (BytesMut::with_capacity(256 << 10), 0, 0);
        for piece in sealed.chunks(1000) {
            writer.write_all(piece).await.expect("write");
            // Read until the piece is taken (a read takes all there is: far more than a piece).
            let before = link.sealed_in.len() + got.len();
            while link.sealed_in.len() + got.len() <= before {
                std::future::poll_fn(|cx| link.poll_read_ready(cx)).await.expect("ready");
                match link.try_read_buf(&mut got) {
                    Ok(n) => assert!(n > 0, "closed early"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            trickled += usize::from(link.trickling);
            aside = aside.max(link.sealed_in.capacity());
        }
        assert_eq!(&got[..], &plain[..], "every record opened, in order");
        // Only a piece that completed a record was read in place; the rest grew aside.
        assert!(trickled > sealed.len() / 1000 - 10, "grew aside {trickled} times");
        // A 256 KiB reader's buffer does not size what the link holds aside: at most a
        // read to the record's end and a record's room (was 256 KiB + a record).
        assert!(aside <= 2 * MAX_RECORD + MIN_READ, "{aside} bytes held aside");
    }

    /// Records that seal as they are and end the channel with `bye`.
    struct Plain;

    impl Records for Plain {
        fn seal(&mut self, bufs: &[IoSlice<'_>], max: usize, out: &mut BytesMut) -> io::Result<usize> {
            let before = out.len();
            crate::transport::up_to(bufs, max).for_each(|b| out.extend_from_slice(b));
            Ok(out.len() - before)
        }
        fn open(&mut self, _: &mut BytesMut, _: &mut BytesMut, _: &mut BytesMut) -> io::Result<usize> {
            Ok(0)
        }
        fn rekey(&mut self, _: &mut BytesMut) -> io::Result<()> {
            Ok(())
        }
        fn close(&mut self, out: &mut BytesMut) {
            out.extend_from_slice(b"bye");
        }
    }

    /// A socket that takes `room` more bytes, then would block.
    #[derive(Default)]
    struct Narrow {
        room: usize,
        taken: Vec<u8>,
        shut: bool,
    }

    impl Link for Narrow {
        fn poll_read_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
        fn try_read_buf(&mut self, _: &mut BytesMut) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn poll_write_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
            assert!(!self.shut, "written after the shutdown");
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.try_write(&bufs.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>())
        }
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }
        fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
            Ok(([127, 0, 0, 1], 1).into())
        }
        fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
            self.peer_addr()
        }
    }

    #[test]
    fn a_shutdown_behind_a_full_socket_waits_for_its_closing_records() {
        let raw = Narrow { room: 4, ..Narrow::default() };
        let mut link =
            SecureLink::new(raw, Plain, BytesMut::new(), RekeyPolicy::default(), Default::default());
        assert_eq!(link.try_write(b"hello").expect("write"), 5);
        link.shutdown_write().expect("shutdown");
        assert!(!link.raw.shut, "not shut down with bytes still queued");
        assert!(link.has_pending());
        assert_eq!(link.flush().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        link.raw.room = 64;
        link.flush().expect("flush");
        assert_eq!(&link.raw.taken[..], b"hellobye", "the data, then the closing records");
        assert!(link.raw.shut && !link.has_pending());
        // Shut down again: nothing more is queued.
        link.shutdown_write().expect("again");
        assert_eq!(&link.raw.taken[..], b"hellobye");
    }
}
