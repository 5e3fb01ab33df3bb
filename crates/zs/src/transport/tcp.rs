//! TCP over IPv4 and IPv6.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{lookup_host, TcpListener, TcpStream, ToSocketAddrs};

/// Binds a listener on every address `addr` resolves to (e.g. `localhost` gives both
/// `127.0.0.1` and `::1`). Addresses asking for port 0 all get the port the first one got.
pub(crate) async fn bind_listeners(
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

/// Connects with a timeout, to the first address of `addr` that answers.
pub(crate) async fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<TcpStream> {
    let attempt = async {
        let mut last_err = None;
        for a in lookup_host(addr).await? {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(io::Error::new(e.kind(), format!("cannot connect to {a}: {e}"))),
            }
        }
        Err(last_err
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")))
    };
    let stream = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}"))
    })??;
    Ok(stream)
}

/// Applies per-connection socket options: no Nagle delay, and a bound on unsent bytes in
/// the kernel where the platform has one.
pub(crate) fn tune(stream: &TcpStream, unsent_limit: Option<u32>) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(limit) = unsent_limit {
        let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(limit);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = unsent_limit;
}
