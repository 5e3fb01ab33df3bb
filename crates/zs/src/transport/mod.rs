//! Transports: what carries bytes between two ends. The connection driver needs only
//! readiness and non-blocking reads and writes ([`Link`]), so that an idle connection holds
//! no buffer; the secure, session and mux layers implement the same surface over it.
//!
//! A transport plugs in below the secure layer with a [`Listener`] (server) and a
//! [`Dialer`] (client), each yielding a raw link: TCP today ([`tcp`]); a WebSocket or QUIC
//! stream is one more pair. Raw links of any transport travel as [`RawLink`], so the layers
//! above have one type to run on whatever carried the bytes.

mod link_io;
mod openings;
pub mod quic;
mod raw;
mod stream_link;
pub(crate) mod tcp;
pub mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

pub(crate) use link_io::LinkIo;
pub(crate) use raw::{erase_dialer, Boxed, DialFn, RawLink};
pub use stream_link::{StreamLink, STREAM_LINK_QUEUE};

/// Where a server's raw links come from: a bound listener of some transport.
pub trait Listener: Send + 'static {
    /// The link an accepted connection arrives as.
    type Raw: Link;
    /// Waits for the next connection. An error is about that one attempt (out of file
    /// descriptors, say); the listener stays usable.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Raw>> + Send;
    /// The address listened on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// How a client makes raw links to a server.
pub trait Dialer: Send + Sync + 'static {
    /// The link a connection is made as.
    type Raw: Link;
    /// Connects to `addr` (one resolved address; the caller tries each in turn).
    fn dial(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Raw>> + Send;
}

/// Most input discarded while a closing link waits for its peer to close.
const CLOSE_DISCARD: usize = 16 << 20;

/// Half-closes `link`, then reads and discards what the peer still sends until it closes,
/// 16 MiB were discarded, or `deadline`: closing with unread input would reset the
/// connection, and the peer would lose what was just sent (a goaway and its reason).
pub(crate) async fn close_after_draining(link: &mut impl Link, deadline: tokio::time::Instant) {
    if link.shutdown_write().is_err() {
        return;
    }
    // What the shutdown queued (a TLS close_notify behind a full socket) goes out first.
    while link.has_pending() {
        match link.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
            Ok(()) => break,
        }
        let ready =
            tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| link.poll_write_ready(cx))).await;
        if !matches!(ready, Ok(Ok(()))) {
            return;
        }
    }
    let mut sink = BytesMut::new();
    let mut discarded = 0;
    while discarded < CLOSE_DISCARD {
        let ready =
            tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| link.poll_read_ready(cx))).await;
        if !matches!(ready, Ok(Ok(()))) {
            return;
        }
        sink.clear();
        sink.reserve(64 << 10);
        match link.try_read_buf(&mut sink) {
            Ok(0) => return,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Writes all of `bytes` to `link` and flushes what the link buffered.
pub(crate) async fn write_all(link: &mut impl Link, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() || link.has_pending() {
        std::future::poll_fn(|cx| link.poll_write_ready(cx)).await?;
        let r = if bytes.is_empty() { link.flush().map(|()| 0) } else { link.try_write(bytes) };
        match r {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what arrives first on `link` (at least one byte): readiness alone may be a false
/// alarm on a fresh socket, so this waits for bytes. End of stream is an error.
pub(crate) async fn read_some(link: &mut impl Link) -> io::Result<BytesMut> {
    let mut buf = BytesMut::new();
    loop {
        std::future::poll_fn(|cx| link.poll_read_ready(cx)).await?;
        buf.reserve(4096);
        match link.try_read_buf(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before sending anything"))
            }
            Ok(_) => return Ok(buf),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads from `link` until `parse` finds a whole message at the front of what arrived;
/// returns it and the bytes read past it.
pub(crate) async fn read_message<T, E: std::fmt::Display>(
    link: &mut impl Link,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> io::Result<(T, BytesMut)> {
    let mut buf = BytesMut::new();
    loop {
        match parse(&buf) {
            Ok(Some((message, used))) => {
                let _ = buf.split_to(used);
                return Ok((message, buf));
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        std::future::poll_fn(|cx| link.poll_read_ready(cx)).await?;
        buf.reserve(4096);
        match link.try_read_buf(&mut buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the other end")),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The first `limit` bytes of `bufs`, as slices in order.
pub(crate) fn up_to<'a>(
    bufs: &'a [std::io::IoSlice<'_>],
    mut limit: usize,
) -> impl Iterator<Item = &'a [u8]> {
    bufs.iter().map(move |b| {
        let take = b.len().min(limit);
        limit -= take;
        &b[..take]
    })
}

/// A byte link driven by readiness, as tokio's sockets are.
pub trait Link: Send + Sync + 'static {
    /// Ready when a read may make progress.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is available into `buf` (its spare capacity, or more); `WouldBlock` if
    /// nothing is. A read that leaves spare capacity may have emptied the link, which may
    /// then wait for new bytes without a `WouldBlock` first (TCP does): a layer that acts
    /// when input pauses acts on such a read too.
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
    /// As [`try_read_buf`](Self::try_read_buf), reading at most `max` bytes where the link
    /// can (TCP); others read as much as `try_read_buf` does.
    fn try_read_buf_upto(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let _ = max;
        self.try_read_buf(buf)
    }
    /// How many bytes past `max` a [`try_read_buf_upto`](Self::try_read_buf_upto) may
    /// append at most (a secure link opens whole records), if the link bounds it.
    fn read_overshoot(&self) -> Option<usize> {
        None
    }
    /// Ready when a write may make progress.
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes as much of `buf` as the link takes now; `WouldBlock` if none.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Writes as much of `bufs`, in order, as the link takes now; `WouldBlock` if none.
    fn try_write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize>;
    /// Writes as much of `segments` then `tail`, in order, as the link takes now;
    /// `WouldBlock` if none. The segments are shared, so a link that keeps what it writes
    /// (a session's replay queue) takes them without a copy.
    fn try_write_shared(&mut self, segments: &[Bytes], tail: &[u8]) -> io::Result<usize> {
        // On the stack (a write may take less than it is offered, so 64 slices are plenty).
        let mut iov = [std::io::IoSlice::new(&[]); 64];
        let parts = segments.iter().map(|s| &s[..]).chain((!tail.is_empty()).then_some(tail));
        let mut n = 0;
        for (slot, part) in iov.iter_mut().zip(parts) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        self.try_write_vectored(&iov[..n])
    }
    /// Bytes taken by a write are still buffered in the link (sealed records, say).
    fn has_pending(&self) -> bool {
        false
    }
    /// Writes what the link buffered; `WouldBlock` if some remains.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Drops empty buffers: the connection is going idle.
    fn release_idle(&mut self) {}
    /// The link is down and waiting to be resumed (a session between links): the
    /// connection's idle clocks stop meanwhile.
    fn detached(&self) -> bool {
        false
    }
    /// The connection found the link dead (nothing received for too long). A link that
    /// can recover drops the physical connection and returns `true`; others return
    /// `false` and the connection closes.
    fn abandon(&mut self, _why: &str) -> bool {
        false
    }
    /// Closes the sending direction (the other end reads end-of-stream).
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// The other end's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// This end's address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Link for tokio::net::TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.try_read_buf_upto(buf, usize::MAX)
    }
    fn read_overshoot(&self) -> Option<usize> {
        Some(0)
    }
    fn try_read_buf_upto(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let stream: &tokio::net::TcpStream = self;
        let spare = buf.spare_capacity_mut();
        let room = spare.len().min(max);
        let spare = &mut spare[..room];
        if room == 0 {
            return tokio::net::TcpStream::try_read_buf(self, buf);
        }
        // A read that leaves room in the buffer emptied the socket: the reactor is told so
        // (readiness cleared, as on `WouldBlock`), and the next poll waits for new bytes
        // instead of the read that would find none. Bytes or a close arriving meanwhile are
        // a newer event, which clearing leaves alone. Layers above learn of the pause from
        // the short read (see `Link::try_read_buf`).
        let mut drained = 0;
        let read = stream.try_io(tokio::io::Interest::READABLE, || {
            match socket2::SockRef::from(stream).recv(spare)? {
                n if n > 0 && n < room => {
                    drained = n;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                n => Ok(n),
            }
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained > 0 => drained,
            Err(e) => return Err(e),
        };
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_write_ready(self, cx)
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write(self, buf)
    }
    fn try_write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write_vectored(self, bufs)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        socket2::SockRef::from(&*self).shutdown(std::net::Shutdown::Write)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::peer_addr(self)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::local_addr(self)
    }
}

impl<L: Link + ?Sized> Link for Box<L> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_read_ready(cx)
    }
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        (**self).try_read_buf(buf)
    }
    fn try_read_buf_upto(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        (**self).try_read_buf_upto(buf, max)
    }
    fn read_overshoot(&self) -> Option<usize> {
        (**self).read_overshoot()
    }
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_write_ready(cx)
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (**self).try_write(buf)
    }
    fn try_write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
        (**self).try_write_vectored(bufs)
    }
    fn try_write_shared(&mut self, segments: &[Bytes], tail: &[u8]) -> io::Result<usize> {
        (**self).try_write_shared(segments, tail)
    }
    fn has_pending(&self) -> bool {
        (**self).has_pending()
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn release_idle(&mut self) {
        (**self).release_idle()
    }
    fn detached(&self) -> bool {
        (**self).detached()
    }
    fn abandon(&mut self, why: &str) -> bool {
        (**self).abandon(why)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        (**self).shutdown_write()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        (**self).peer_addr()
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        (**self).local_addr()
    }
}

/// Implements [`Link`] for an enum whose variants each hold a link, by forwarding every
/// method to the variant's link: `link_enum!(impl[S: Link] Enum<S> { Enum::A, Enum::B })`.
macro_rules! link_enum {
    (impl[$($g:tt)*] $ty:ty { $($v:path),+ $(,)? }) => {
        impl<$($g)*> $crate::transport::Link for $ty {
            fn poll_read_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
                match self { $($v(l) => l.poll_read_ready(cx),)+ }
            }
            fn try_read_buf(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
                match self { $($v(l) => l.try_read_buf(buf),)+ }
            }
            fn try_read_buf_upto(&mut self, buf: &mut bytes::BytesMut, max: usize) -> std::io::Result<usize> {
                match self { $($v(l) => l.try_read_buf_upto(buf, max),)+ }
            }
            fn read_overshoot(&self) -> Option<usize> {
                match self { $($v(l) => l.read_overshoot(),)+ }
            }
            fn poll_write_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
                match self { $($v(l) => l.poll_write_ready(cx),)+ }
            }
            fn try_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                match self { $($v(l) => l.try_write(buf),)+ }
            }
            fn try_write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                match self { $($v(l) => l.try_write_vectored(bufs),)+ }
            }
            fn try_write_shared(&mut self, segments: &[bytes::Bytes], tail: &[u8]) -> std::io::Result<usize> {
                match self { $($v(l) => l.try_write_shared(segments, tail),)+ }
            }
            fn has_pending(&self) -> bool {
                match self { $($v(l) => l.has_pending(),)+ }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                match self { $($v(l) => $crate::transport::Link::flush(l),)+ }
            }
            fn release_idle(&mut self) {
                match self { $($v(l) => l.release_idle(),)+ }
            }
            fn detached(&self) -> bool {
                match self { $($v(l) => l.detached(),)+ }
            }
            fn abandon(&mut self, why: &str) -> bool {
                match self { $($v(l) => l.abandon(why),)+ }
            }
            fn shutdown_write(&mut self) -> std::io::Result<()> {
                match self { $($v(l) => l.shutdown_write(),)+ }
            }
            fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                match self { $($v(l) => $crate::transport::Link::peer_addr(l),)+ }
            }
            fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                match self { $($v(l) => $crate::transport::Link::local_addr(l),)+ }
            }
        }
    };
}

pub(crate) use link_enum;

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::Link;

    #[tokio::test]
    async fn a_tcp_read_takes_no_more_than_asked() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut writer =
            tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (mut reader, _) = listener.accept().await.expect("accept");
        writer.write_all(&[7u8; 1000]).await.expect("write");
        let mut buf = BytesMut::with_capacity(4096);
        let mut got = 0;
        while got < 100 {
            reader.readable().await.expect("readable");
            match reader.try_read_buf_upto(&mut buf, 100 - got) {
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        assert_eq!(buf.len(), 100, "a read past the limit");
        // The rest is still there for the next read.
        while buf.len() < 1000 {
            reader.readable().await.expect("readable");
            match Link::try_read_buf(&mut reader, &mut buf) {
                Ok(n) => assert!(n > 0, "closed early"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        assert_eq!(&buf[..], &[7u8; 1000][..]);
    }
}
