//! A transport of one's own plugs in below the secure layer: a listener and a dialer that
//! yield raw links. Here: TCP wrapped in a link that counts its bytes and can be killed,
//! served by a running server beside its TCP listener and dialed by a client.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use common::{serve, transport_router, within};
use tokio::net::{TcpListener, TcpStream};
use zs::transport::{Dialer, Link, Listener, StreamLink};
use zs::{ClientConfig, Router, SessionConfig, StreamOptions};
use zs_bench::source::Noise;

/// Bytes that went through the links of one end, and a switch that kills them.
#[derive(Default)]
struct Wire {
    read: AtomicU64,
    written: AtomicU64,
    links: AtomicU64,
    /// Kill switches of the links made so far.
    kills: Mutex<Vec<Arc<AtomicBool>>>,
}

impl Wire {
    fn kill_all(&self) {
        for k in self.kills.lock().unwrap().iter() {
            k.store(true, Relaxed);
        }
    }
}

struct CountingLink {
    tcp: TcpStream,
    wire: Arc<Wire>,
    killed: Arc<AtomicBool>,
}

impl CountingLink {
    fn new(tcp: TcpStream, wire: &Arc<Wire>) -> Self {
        let killed = Arc::new(AtomicBool::new(false));
        wire.kills.lock().unwrap().push(killed.clone());
        wire.links.fetch_add(1, Relaxed);
        CountingLink { tcp, wire: wire.clone(), killed }
    }

    fn alive(&self) -> io::Result<()> {
        if self.killed.load(Relaxed) {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "killed by the test"));
        }
        Ok(())
    }
}

impl Link for CountingLink {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed.load(Relaxed) {
            return Poll::Ready(Ok(())); // the read reports it
        }
        self.tcp.poll_read_ready(cx)
    }
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.alive()?;
        let n = self.tcp.try_read_buf(buf)?;
        self.wire.read.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.alive()?;
        let n = self.tcp.try_write(buf)?;
        self.wire.written.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
    fn try_write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.alive()?;
        let n = self.tcp.try_write_vectored(bufs)?;
        self.wire.written.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

struct CountingListener {
    tcp: TcpListener,
    wire: Arc<Wire>,
}

impl Listener for CountingListener {
    type Raw = CountingLink;
    async fn accept(&mut self) -> io::Result<CountingLink> {
        let (tcp, _) = self.tcp.accept().await?;
        Ok(CountingLink::new(tcp, &self.wire))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

struct CountingDialer {
    wire: Arc<Wire>,
}

impl Dialer for CountingDialer {
    type Raw = CountingLink;
    async fn dial(&self, addr: SocketAddr) -> io::Result<CountingLink> {
        Ok(CountingLink::new(TcpStream::connect(addr).await?, &self.wire))
    }
}

#[tokio::test]
async fn calls_and_big_streams_go_over_a_transport_of_ones_own() {
    let server = serve(transport_router()).await;
    let server_wire = Arc::new(Wire::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.serve(CountingListener { tcp, wire: server_wire.clone() }).unwrap();
    assert_ne!(addr, server.local_addr(), "a listener beside the TCP one");
    let client_wire = Arc::new(Wire::default());
    let dialer = CountingDialer { wire: client_wire.clone() };
    let config = ClientConfig::secured(server.client_security());
    let client =
        within("connect", zs::Client::connect_over(dialer, addr, Router::new(), config)).await.unwrap();
    assert!(client.channel().is_some(), "the server's Noise mode runs over it");
    assert_eq!(client.call_console("echo", "over my transport").await.unwrap(), "over my transport");
    let size = 4 << 20;
    let transfer = client.send_big_stream("hash", Noise::new(size, 7), StreamOptions::with_len(size));
    assert_eq!(within("the stream", transfer.finish()).await.unwrap(), size);
    // Every byte went through the custom links, encrypted (so a little more than sent).
    assert!(client_wire.written.load(Relaxed) > size, "client wrote {:?}", client_wire.written);
    assert!(server_wire.read.load(Relaxed) > size, "server read {:?}", server_wire.read);
    assert_eq!(server_wire.links.load(Relaxed), 1);
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn a_session_over_a_transport_of_ones_own_resumes_through_its_dialer() {
    let server = serve(transport_router()).await;
    let server_wire = Arc::new(Wire::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.serve(CountingListener { tcp, wire: server_wire.clone() }).unwrap();
    let client_wire = Arc::new(Wire::default());
    let dialer = CountingDialer { wire: client_wire.clone() };
    let session = SessionConfig { min_backoff: Duration::from_millis(5), ..SessionConfig::default() };
    let config = ClientConfig { session: Some(session), ..ClientConfig::secured(server.client_security()) };
    let client =
        within("connect", zs::Client::connect_over(dialer, addr, Router::new(), config)).await.unwrap();
    for round in 0..5 {
        let calls: Vec<_> = (0..20).map(|i| client.call_console("echo", format!("{round}-{i}"))).collect();
        client_wire.kill_all();
        for (i, c) in calls.into_iter().enumerate() {
            let reply = within("a call across a killed link", c).await.unwrap();
            assert_eq!(reply.as_str(), format!("{round}-{i}"));
        }
    }
    let status = client.session().unwrap();
    assert!(status.resumes >= 1, "{status:?}");
    assert!(client_wire.links.load(Relaxed) > 1, "new links were dialed through the custom dialer");
    assert!(server_wire.links.load(Relaxed) > 1, "and accepted through the custom listener");
    assert_eq!(server.connection_count(), 1, "one logical connection throughout");
}

/// Makes each link an in-memory pipe whose other end it hands to `server`.
struct PipeDialer {
    server: zs::ServerHandle,
}

impl Dialer for PipeDialer {
    type Raw = StreamLink<tokio::io::DuplexStream>;
    async fn dial(&self, addr: SocketAddr) -> io::Result<Self::Raw> {
        // A small pipe: the stream links' queues fill and drain many times per stream.
        let (ours, theirs) = tokio::io::duplex(8 << 10);
        let here = SocketAddr::from(([127, 0, 0, 1], 1));
        self.server.accept_link(StreamLink::new(theirs, addr, here));
        Ok(StreamLink::new(ours, here, addr))
    }
}

#[tokio::test]
async fn a_server_with_no_listener_serves_byte_streams_handed_to_it() {
    let server = zs::Server::unbound(transport_router(), zs::ServerConfig::default()).await.unwrap();
    assert_eq!(server.local_addr(), SocketAddr::from(([0, 0, 0, 0], 0)));
    let config = ClientConfig::secured(server.client_security());
    let dialer = PipeDialer { server: server.clone() };
    let addr = SocketAddr::from(([127, 0, 0, 1], 2));
    let client =
        within("connect", zs::Client::connect_over(dialer, addr, Router::new(), config)).await.unwrap();
    assert!(client.channel().is_some(), "the server's Noise mode runs over the pipe");
    assert_eq!(client.call_console("echo", "through a pipe").await.unwrap(), "through a pipe");
    let size = 4 << 20;
    let transfer = client.send_big_stream("hash", Noise::new(size, 9), StreamOptions::with_len(size));
    assert_eq!(within("the stream", transfer.finish()).await.unwrap(), size);
    let big = "b".repeat(1 << 20);
    assert_eq!(within("a big echo", client.call_console("echo", big.clone())).await.unwrap().as_str(), big);
    assert_eq!(server.connection_count(), 1);
    client.close();
    within("the server sees the close", async {
        while server.connection_count() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}
