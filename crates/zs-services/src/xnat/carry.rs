//! Carrying a visitor's bytes both ways: a small buffer while it is quiet, a big one while
//! it moves bulk, an optional idle timeout and a byte rate shared by a service's visitors.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::Held;

/// Bytes of each direction's copy buffer while a visitor moves bulk (tokio's default of
/// 8 KiB made a frame on the agent's link per 8 KiB and cost the tunnel most of its
/// throughput), while the services' big-buffer budget has room; a quiet visitor holds only
/// [`SMALL_BUFFER`] per direction.
pub(crate) const COPY_BUFFER: usize = 64 << 10;
/// Bytes of each direction's buffer while a visitor is quiet.
pub(crate) const SMALL_BUFFER: usize = 4 << 10;

/// Has the system probe a visitor that sent nothing for `secs` seconds (0: never), three
/// times a third of that apart, and close it if its end no longer answers.
pub(crate) fn watch_for_a_gone_end(visitor: &tokio::net::TcpStream, secs: u64) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(visitor);
    if secs == 0 {
        return socket.set_keepalive(false);
    }
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(secs))
        .with_interval(Duration::from_secs((secs / 3).max(1)))
        .with_retries(3);
    socket.set_tcp_keepalive(&probes)
}

/// When bytes last moved, for an idle timeout.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// Returns once nothing has moved for `limit`.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A byte rate shared by a service's visitors (a token bucket holding one second's worth).
pub(crate) struct Rate {
    per_s: u64,
    /// Bytes that may go now, and when that was computed.
    state: Mutex<(f64, Instant)>,
}

impl Rate {
    pub(crate) fn new(per_s: u64) -> Rate {
        Rate { per_s: per_s.max(1), state: Mutex::new((per_s as f64, Instant::now())) }
    }

    /// Waits until `n` more bytes may go.
    async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.per_s as f64;
            s.0 = (s.0 + refill).min(self.per_s as f64) - n as f64;
            s.1 = now;
            // In debt: wait until it is paid back.
            (s.0 < 0.0).then(|| Duration::from_secs_f64(-s.0 / self.per_s as f64))
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

/// What a visit is held to.
#[derive(Default, Clone, Copy)]
pub(crate) struct Bounds<'a> {
    /// Close the visit when nothing moves either way for this long.
    pub(crate) idle: Option<Duration>,
    /// Bytes per second, both ways together, shared with the service's other visitors.
    pub(crate) rate: Option<&'a Rate>,
}

/// Carries bytes both ways between `a` and `b` until both directions have ended (each
/// closed as its side closes), or the visit has been idle too long; the bytes from `a` to
/// `b` and back.
pub(crate) async fn carry<A, B>(a: &mut A, b: &mut B, bounds: Bounds<'_>) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let activity = Activity::new();
    let both = async {
        tokio::try_join!(
            one_way(&mut ar, &mut bw, &activity, bounds),
            one_way(&mut br, &mut aw, &activity, bounds)
        )
    };
    match bounds.idle {
        None => both.await,
        Some(limit) => tokio::select! {
            moved = both => moved,
            _ = activity.idle(limit) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle")),
        },
    }
}

/// Copies `r` to `w` until `r` ends, then shuts `w` down: through a small buffer, and a big
/// one only while reads fill the small one (so an idle visitor holds no big buffer).
async fn one_way<R, W>(r: &mut R, w: &mut W, activity: &Activity, bounds: Bounds<'_>) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL_BUFFER];
    // The big buffer counts against the services' shared budget; without room, small it is.
    let mut big: Option<(Vec<u8>, Held)> = None;
    let mut total = 0u64;
    loop {
        let n = match big.as_mut() {
            Some((b, _)) => r.read(b).await?,
            None => r.read(&mut small).await?,
        };
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        activity.touch();
        if let Some(rate) = bounds.rate {
            rate.take(n).await;
        }
        match big.as_ref() {
            Some((b, _)) => w.write_all(&b[..n]).await?,
            None => w.write_all(&small[..n]).await?,
        }
        // A writer that buffers (sealed records, a channel's queued frame) sends what it
        // took only when flushed or written again: the source may now stay quiet.
        w.flush().await?;
        total += n as u64;
        match &big {
            None if n == SMALL_BUFFER => {
                big = Held::take(COPY_BUFFER, false).map(|h| (vec![0; COPY_BUFFER], h))
            }
            Some(_) if n < SMALL_BUFFER => big = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn a_visitor_socket_is_probed_as_configured_or_not_at_all() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let _visitor =
            tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let socket = socket2::SockRef::from(&accepted);
        assert!(!socket.keepalive().expect("read"), "off until asked");
        super::watch_for_a_gone_end(&accepted, 30).expect("set");
        assert!(socket.keepalive().expect("read"));
        assert_eq!(socket.tcp_keepalive_time().expect("time"), Duration::from_secs(30));
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), Duration::from_secs(10));
        assert_eq!(socket.tcp_keepalive_retries().expect("retries"), 3);
        super::watch_for_a_gone_end(&accepted, 2).expect("set");
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), Duration::from_secs(1));
        super::watch_for_a_gone_end(&accepted, 0).expect("off");
        assert!(!socket.keepalive().expect("read"));
    }
}
