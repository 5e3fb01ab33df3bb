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

/// Connects through `dialer` to the first address of `addr` that answers, within `timeout`.
pub(crate) async fn dial_first<D: Dialer>(
    dialer: &D,
    addr: impl ToSocketAddrs,
    timeout: Duration,
) -> io::Result<D::Raw> {
    let attempt = async {
        let mut last_err = None;
        for a in lookup_host(addr).await? {
            match dialer.dial(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}"))
    })?
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
