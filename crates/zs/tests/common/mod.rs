//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs::wire::{Flags, FrameDecoder, FrameWriter, Kind};
use zs::{ServerConfig, ServerHandle};

/// Generous bound for anything that should happen "at once" on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Starts a server on an ephemeral loopback port.
pub async fn serve(router: zs::Router) -> ServerHandle {
    serve_with(router, ServerConfig::default()).await
}

pub async fn serve_with(router: zs::Router, config: ServerConfig) -> ServerHandle {
    zs::Server::bind("127.0.0.1:0", router, config).await.expect("bind")
}

/// Runs `f` with the test's patience as a timeout.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: did not happen within {PATIENCE:?}"))
}

/// Polls `cond` every few milliseconds until it holds (bounded by the test's patience).
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Encodes one raw frame.
pub fn raw_frame(kind: Kind, flags: Flags, request: u32, body: &[u8]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let mut w = FrameWriter::begin(&mut out, kind, flags, 0, request);
    w.body().extend_from_slice(body);
    w.finish(u32::MAX).unwrap();
    out.to_vec()
}

/// A raw call body: name then payload.
pub fn call_body(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(payload);
    b
}

/// Writes `bytes` on a raw socket, then reads every frame until the server closes.
pub async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<zs::wire::Frame> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    within("server closes the connection", s.read_to_end(&mut buf)).await.ok();
    let mut dec = FrameDecoder::default();
    let mut b = bytes::BytesMut::from(&buf[..]);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut b) {
        frames.push(f);
    }
    frames
}

/// Connects a client to `server` with default settings, trusting the server's identity.
pub async fn connect(server: &ServerHandle) -> std::io::Result<zs::Client> {
    connect_with(server, zs::Router::new(), zs::ClientConfig::default()).await
}

/// Connects with a router and settings, trusting the server's identity.
pub async fn connect_with(
    server: &ServerHandle,
    router: zs::Router,
    mut config: zs::ClientConfig,
) -> std::io::Result<zs::Client> {
    config.security = server.client_security();
    zs::Client::connect_with(server.local_addr(), router, config).await
}

/// Server settings without encryption, for tests that speak raw frames.
pub fn plaintext() -> ServerConfig {
    ServerConfig { security: zs::ServerSecurity::Plaintext, ..ServerConfig::default() }
}

/// The code and message of the goaway that ends `frames`.
pub fn goaway_of(frames: &[zs::wire::Frame]) -> (zs::GoAwayCode, String) {
    let last = frames.last().expect("a goaway");
    assert_eq!(last.header.kind, zs::wire::Kind::GoAway);
    let (code, msg) = zs::wire::body::parse_code_message(&last.body).unwrap();
    (zs::GoAwayCode::from_code(code), msg.to_owned())
}

/// Reads a whole incoming stream and returns its BLAKE3 hash (or the stream's error).
pub async fn hash_stream(s: &mut zs::IncomingStream) -> Result<blake3::Hash, zs::CallError> {
    let mut h = blake3::Hasher::new();
    while let Some(chunk) = s.next_chunk().await {
        h.update(&chunk?);
    }
    Ok(h.finalize())
}

/// A router with `echo` (console), `echo_stream` (stream) and `hash` (a big stream read
/// whole): what the transport tests drive.
pub fn transport_router() -> zs::Router {
    let mut router = zs::Router::new();
    router.console("echo", |_, text| text.to_owned());
    router.stream("echo_stream", |_, frame| frame.clone());
    router.big_stream("hash", |_peer: zs::Peer, mut stream: zs::IncomingStream| async move {
        hash_stream(&mut stream).await?;
        Ok::<_, zs::HandlerError>(())
    });
    router
}
