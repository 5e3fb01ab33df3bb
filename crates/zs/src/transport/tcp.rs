//! TCP over IPv4 and IPv6: the listener and dialer of the first transport.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{lookup_host, TcpListener, TcpStream, ToSocketAddrs};

use super::{Dialer, Listener};

/// Socket options of TCP links (both ends).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TcpOptions {
    /// Most bytes the kernel may hold unsent (Linux `TCP_NOTSENT_LOWAT`); `None` = the
    /// kernel's default.
    pub(crate) unsent_limit: Option<u32>,
}

/// A bound TCP listener whose accepted sockets are tuned with `options`.
pub(crate) struct TcpAcceptor {
    listener: TcpListener,
    options: TcpOptions,
}

impl TcpAcceptor {
    /// Binds on every address `addr` resolves to (see [`bind_listeners`]).
    pub(crate) async fn bind(
        addr: impl ToSocketAddrs,
        reuse_port: bool,
        backlog: u32,
        options: TcpOptions,
    ) -> io::Result<Vec<TcpAcceptor>> {
        let listeners = bind_listeners(addr, reuse_port, backlog).await?;
        Ok(listeners.into_iter().map(|listener| TcpAcceptor { listener, options }).collect())
    }
}

impl Listener for TcpAcceptor {
    type Raw = TcpStream;

    async fn accept(&mut self) -> io::Result<TcpStream> {
        let (stream, _) = self.listener.accept().await?;
        tune(&stream, self.options.unsent_limit);
        Ok(stream)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Makes TCP links, tuned with its options.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TcpDialer {
    pub(crate) options: TcpOptions,
}

impl Dialer for TcpDialer {
    type Raw = TcpStream;

    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
        tune(&stream, self.options.unsent_limit);
        Ok(stream)
    }
}

/// How long a connection attempt has before the next address is tried beside it (RFC 8305's
/// recommended "Connection Attempt Delay").
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects through `dialer` to the first address of `addr` that answers, within `timeout`:
/// happy eyeballs (RFC 8305) — the addresses, IPv6 and IPv4 taken in turn, are tried one
/// after another [`ATTEMPT_DELAY`] apart (or at once when the one before fails), racing,
/// and the first connection made wins.
pub(crate) async fn dial_first<D: Dialer>(
    dialer: &D,
    addr: impl ToSocketAddrs,
    timeout: Duration,
) -> io::Result<D::Raw> {
    let attempt = async {
        let addrs = interleave_families(lookup_host(addr).await?.collect());
        race(dialer, addrs, ATTEMPT_DELAY).await
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}"))
    })?
}

/// The addresses with the two families alternating, starting with the first's.
fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else { return addrs };
    let first_v6 = first.is_ipv6();
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.drain(..), b.drain(..));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Dials `addrs` staggered by `delay`; the first connection made, else the last error.
pub(crate) async fn race<D: Dialer>(
    dialer: &D,
    addrs: Vec<SocketAddr>,
    delay: Duration,
) -> io::Result<D::Raw> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut queue = addrs.into_iter();
    let mut running = FuturesUnordered::new();
    let mut last_err = None;
    match queue.next() {
        Some(a) => running.push(dialer.dial(a)),
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")),
    }
    loop {
        let next_due = tokio::time::sleep(delay);
        tokio::select! {
            done = running.next() => match done {
                Some(Ok(link)) => return Ok(link),
                Some(Err(e)) => {
                    last_err = Some(e);
                    if let Some(a) = queue.next() {
                        running.push(dialer.dial(a));
                    } else if running.is_empty() {
                        break;
                    }
                }
                None => break,
            },
            _ = next_due, if queue.len() > 0 => {
                if let Some(a) = queue.next() {
                    running.push(dialer.dial(a));
                }
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")))
}

/// Binds a listener on every address `addr` resolves to (e.g. `localhost` gives both
/// `127.0.0.1` and `::1`). Addresses asking for port 0 all get the port the first one got.
async fn bind_listeners(
    addr: impl ToSocketAddrs,
    reuse_port: bool,
    backlog: u32,
) -> io::Result<Vec<TcpListener>> {
    let mut out: Vec<TcpListener> = Vec::new();
    let mut last_err = None;
    let mut shared_port = None;
    for mut a in lookup_host(addr).await? {
        if a.port() == 0 {
            if let Some(port) = shared_port {
                a.set_port(port);
            }
        }
        match bind_one(a, reuse_port, backlog) {
            Ok(l) => {
                if a.port() == 0 {
                    shared_port = l.local_addr().ok().map(|l| l.port());
                }
                out.push(l)
            }
            Err(e) => last_err = Some(io::Error::new(e.kind(), format!("cannot listen on {a}: {e}"))),
        }
    }
    match (out.is_empty(), last_err) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")),
        _ => Ok(out),
    }
}

fn bind_one(addr: SocketAddr, reuse_port: bool, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Applies per-connection socket options: no Nagle delay, and a bound on unsent bytes in
/// the kernel where the platform has one.
fn tune(stream: &TcpStream, unsent_limit: Option<u32>) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(limit) = unsent_limit {
        let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(limit);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = unsent_limit;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dials real loopback addresses, but never answers for one: a black hole.
    struct HoleDialer {
        hole: SocketAddr,
    }

    impl Dialer for HoleDialer {
        type Raw = TcpStream;

        async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
            if addr == self.hole {
                std::future::pending::<()>().await;
            }
            TcpStream::connect(addr).await
        }
    }

    #[tokio::test]
    async fn an_address_that_never_answers_does_not_hold_the_next() {
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let hole: SocketAddr = "127.0.0.2:9".parse().unwrap();
        let dialer = HoleDialer { hole };
        // Tried one after the other, the hole would hold the connect for ever.
        let s = dial_first(&dialer, &[hole, live_addr][..], Duration::from_secs(60)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), live_addr);
    }

    #[test]
    fn families_alternate_starting_with_the_first() {
        let a: Vec<SocketAddr> =
            ["[::1]:1", "[::1]:2", "[::1]:3", "127.0.0.1:4"].iter().map(|s| s.parse().unwrap()).collect();
        let ports: Vec<u16> = interleave_families(a).iter().map(|a| a.port()).collect();
        assert_eq!(ports, [1, 4, 2, 3]);
    }
}
