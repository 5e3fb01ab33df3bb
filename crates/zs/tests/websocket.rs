//! WebSocket: a server's WebSocket listener beside its TCP one, Rust clients dialing it in
//! each security mode (calls, a big stream, pushes, a session that resumes), and what a
//! hostile or confused WebSocket peer gets: a clear refusal, while others go on.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{plaintext, serve, serve_with, transport_router, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zs::transport::ws::{WsDialer, WsListener, WsSettings};
use zs::wire::websocket::{self as ws, Origins};
use zs::{ClientConfig, Router, ServerHandle, SessionConfig, StreamOptions};
use zs_bench::fault_proxy::{FaultProxy, Faults};
use zs_bench::source::Noise;

/// Serves WebSocket on an ephemeral port beside the server's TCP listener.
async fn ws_listen(server: &ServerHandle, settings: WsSettings) -> std::net::SocketAddr {
    let mut listeners = WsListener::bind("127.0.0.1:0", settings).await.unwrap();
    server.serve(listeners.remove(0)).unwrap()
}

async fn ws_client(server: &ServerHandle, addr: std::net::SocketAddr, config: ClientConfig) -> zs::Client {
    let config = ClientConfig { security: server.client_security(), ..config };
    within(
        "connect over WebSocket",
        zs::Client::connect_over(WsDialer::default(), addr, Router::new(), config),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn calls_streams_and_pushes_go_over_websocket_in_every_mode() {
    let noise = serve(transport_router()).await;
    let plain = serve_with(transport_router(), plaintext()).await;
    let (cert, key) = zs::secure::self_signed(&["127.0.0.1".to_string()]).unwrap();
    let tls = zs::secure::TlsServer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let tls = serve_with(
        transport_router(),
        zs::ServerConfig { security: zs::ServerSecurity::Tls(tls), ..Default::default() },
    )
    .await;
    for server in [&noise, &plain, &tls] {
        let addr = ws_listen(server, WsSettings::default()).await;
        let client = ws_client(server, addr, ClientConfig::default()).await;
        assert_eq!(client.call_console("echo", "over a WebSocket").await.unwrap(), "over a WebSocket");
        let mut frame = zs::DataFrame::new();
        frame.write_str("typed").write_u64(u64::MAX).write_bytes(vec![7u8; 300_000]);
        assert_eq!(client.call_stream("echo_stream", frame.clone()).await.unwrap(), frame);
        // Bigger than any one message: the stream is split over many.
        let size = 3 << 20;
        let transfer = client.send_big_stream("hash", Noise::new(size, 3), StreamOptions::with_len(size));
        assert_eq!(within("a big stream", transfer.finish()).await.unwrap(), size);
        // Many calls in flight at once.
        let calls = (0..200).map(|i| client.call_console("echo", i.to_string()));
        let replies = within("200 calls", futures_util::future::try_join_all(calls)).await.unwrap();
        assert!(replies.iter().enumerate().all(|(i, r)| **r == *i.to_string()));
        assert_eq!(server.connection_count(), 1);
        drop(client);
    }
    // A push from the server reaches a WebSocket client's router.
    let addr = ws_listen(&plain, WsSettings::default()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut router = Router::new();
    router.direct_console("news", move |_, text| {
        let _ = tx.send(text.to_owned());
    });
    let config = ClientConfig::secured(plain.client_security());
    let client =
        within("connect", zs::Client::connect_over(WsDialer::new("/any/path"), addr, router, config))
            .await
            .unwrap();
    common::wait_until("the client is counted", || plain.connection_count() >= 1).await;
    assert!(plain.broadcast_console("news", "pushed", |_| true).unwrap() >= 1);
    assert_eq!(within("the push", rx.recv()).await.unwrap(), "pushed");
    drop(client);
}

#[tokio::test]
async fn a_session_over_websocket_resumes_when_its_link_is_cut() {
    let server = serve(transport_router()).await;
    let addr = ws_listen(&server, WsSettings::default()).await;
    let session = SessionConfig { min_backoff: Duration::from_millis(5), ..SessionConfig::default() };
    // The WebSocket's TCP connections go through a proxy that can cut them.
    let proxy = FaultProxy::start(addr, Faults::default()).await.unwrap();
    let client =
        ws_client(&server, proxy.addr(), ClientConfig { session: Some(session), ..Default::default() }).await;
    for round in 0..5 {
        let calls: Vec<_> = (0..50).map(|i| client.call_console("echo", format!("{round}-{i}"))).collect();
        proxy.cut_all();
        let replies = within("calls across a cut", futures_util::future::try_join_all(calls)).await.unwrap();
        assert!(replies.iter().enumerate().all(|(i, r)| **r == *format!("{round}-{i}")));
    }
    assert!(proxy.stats().cuts.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(client.call_console("echo", "after").await.unwrap(), "after");
    assert_eq!(server.session_count(), 1, "one session, resumed over new WebSockets");
}

/// Sends a raw upgrade request and returns the HTTP answer's status line and the socket.
async fn upgrade_raw(addr: std::net::SocketAddr, extra_headers: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if within("the answer", s.read(&mut b)).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), s)
}

/// Reads until the server closes and returns the close code of the first close frame.
async fn close_code(mut s: TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    within("the server closes", s.read_to_end(&mut buf)).await.ok();
    let mut reader = ws::FrameReader::new(false, 1 << 24);
    let (mut input, mut out) = (BytesMut::from(&buf[..]), BytesMut::new());
    while let Ok(Some(event)) = reader.read(&mut input, &mut out) {
        if let ws::Event::Closed(code) = event {
            return Some(code);
        }
    }
    None
}

#[tokio::test]
async fn bad_websocket_peers_are_refused_clearly_and_others_go_on() {
    let server = serve_with(transport_router(), plaintext()).await;
    let origins = Origins::These(vec!["https://app.example".into()]);
    let settings = WsSettings { origins, max_message: 64 << 10, ..WsSettings::default() };
    let addr = ws_listen(&server, settings).await;
    let good = ws_client(&server, addr, ClientConfig::default()).await;
    let proto = "Sec-WebSocket-Protocol: zserver.v1\r\n";

    let (status, _) = upgrade_raw(addr, "").await;
    assert!(status.contains("400"), "no subprotocol: {status}");
    let (status, _) = upgrade_raw(addr, "Sec-WebSocket-Protocol: chat\r\n").await;
    assert!(status.contains("400"), "a wrong subprotocol: {status}");
    let (status, _) = upgrade_raw(addr, &format!("{proto}Origin: https://evil.example\r\n")).await;
    assert!(status.contains("403"), "a foreign origin: {status}");
    let (status, _) = upgrade_raw(addr, &format!("{proto}Origin: https://app.example\r\n")).await;
    assert!(status.contains("101"), "a listed origin: {status}");
    let mut plain_http = TcpStream::connect(addr).await.unwrap();
    plain_http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    within("a plain GET's answer", plain_http.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");

    // A text message: closed with 1003.
    let (status, mut s) = upgrade_raw(addr, proto).await;
    assert!(status.contains("101"), "{status}");
    let mut frame = BytesMut::from(&[0x81u8, 0x82, 1, 2, 3, 4][..]);
    frame.extend_from_slice(&[b'h' ^ 1, b'i' ^ 2]);
    s.write_all(&frame).await.unwrap();
    assert_eq!(close_code(s).await, Some(ws::close::UNSUPPORTED));

    // A message over the limit: closed with 1009 before its payload is taken.
    let (_, mut s) = upgrade_raw(addr, proto).await;
    let mut big = BytesMut::new();
    ws::put_binary_header(&mut big, 100 << 10, Some([0; 4]));
    s.write_all(&big).await.unwrap();
    assert_eq!(close_code(s).await, Some(ws::close::TOO_BIG));

    // An unmasked client frame: a protocol error, 1002.
    let (_, mut s) = upgrade_raw(addr, proto).await;
    let mut unmasked = BytesMut::new();
    ws::put_binary(&mut unmasked, b"x", None);
    s.write_all(&unmasked).await.unwrap();
    assert_eq!(close_code(s).await, Some(ws::close::PROTOCOL));

    // Frames split anywhere and a ping in the middle of them: the stream goes through.
    let (_, mut s) = upgrade_raw(addr, proto).await;
    let call = common::raw_frame(
        zs::wire::Kind::Call,
        zs::wire::Flags::NONE,
        1,
        &common::call_body("echo", b"split"),
    );
    let mut wire = BytesMut::new();
    ws::put_binary(&mut wire, &call[..5], Some([9, 8, 7, 6]));
    wire.extend_from_slice(&[0x89, 0x81, 0, 0, 0, 0, b'p']);
    ws::put_binary(&mut wire, &call[5..], Some([1, 1, 1, 1]));
    for byte in wire.chunks(3) {
        s.write_all(byte).await.unwrap();
    }
    let mut reader = ws::FrameReader::new(false, 1 << 20);
    let (mut input, mut stream) = (BytesMut::new(), BytesMut::new());
    let mut decoder = zs::wire::FrameDecoder::default();
    let reply = within("the reply", async {
        loop {
            let mut b = [0u8; 4096];
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed");
            input.extend_from_slice(&b[..n]);
            while reader.read(&mut input, &mut stream).unwrap().is_some() {}
            if let Some(frame) = decoder.decode(&mut stream).unwrap() {
                return frame;
            }
        }
    })
    .await;
    assert_eq!(&reply.body[..], b"split");

    assert_eq!(good.call_console("echo", "still here").await.unwrap(), "still here");
}

#[tokio::test]
async fn wss_puts_tls_under_the_websocket_and_the_servers_mode_inside() {
    let (cert, key) = zs::secure::self_signed(&["127.0.0.1".to_string()]).unwrap();
    let tls = zs::secure::TlsServer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let server = serve(transport_router()).await; // Noise inside
    let addr = ws_listen(&server, WsSettings { tls: Some(tls.clone()), ..WsSettings::default() }).await;
    let config = ClientConfig::secured(server.client_security());
    let dialer = WsDialer::secure("/", zs::secure::TlsClient::pinned(tls.fingerprint()));
    let client =
        within("connect over wss", zs::Client::connect_over(dialer, addr, Router::new(), config.clone()))
            .await
            .unwrap();
    assert!(client.channel().is_some(), "Noise runs inside the wss stream");
    assert_eq!(client.call_console("echo", "over wss").await.unwrap(), "over wss");
    let size = 2 << 20;
    let transfer = client.send_big_stream("hash", Noise::new(size, 9), StreamOptions::with_len(size));
    assert_eq!(within("a big stream over wss", transfer.finish()).await.unwrap(), size);
    // Another fingerprint pinned (the Noise key's): refused at TLS, before any WebSocket.
    let wrong = server.fingerprint().unwrap();
    assert_ne!(wrong, tls.fingerprint());
    let dialer = WsDialer::secure("/", zs::secure::TlsClient::pinned(wrong));
    let refused = within("a wrong pin", zs::Client::connect_over(dialer, addr, Router::new(), config)).await;
    assert!(refused.is_err());
    // A plain ws:// client on a wss listener does not get in either.
    let plain = ClientConfig::secured(server.client_security());
    let refused =
        within("ws on wss", zs::Client::connect_over(WsDialer::default(), addr, Router::new(), plain)).await;
    assert!(refused.is_err());
    assert_eq!(client.call_console("echo", "still here").await.unwrap(), "still here");
    // One client holding 300 sockets that never start TLS holds a few places, not all: a
    // newcomer from anywhere (here the same address) still gets through.
    let silent: Vec<_> =
        futures_util::future::join_all((0..300).map(|_| tokio::net::TcpStream::connect(addr))).await;
    assert!(silent.iter().all(Result::is_ok));
    let config = ClientConfig::secured(server.client_security());
    let dialer = WsDialer::secure("/", zs::secure::TlsClient::pinned(tls.fingerprint()));
    let late = within(
        "a wss client past 300 silent sockets",
        zs::Client::connect_over(dialer, addr, Router::new(), config),
    )
    .await
    .unwrap();
    assert_eq!(late.call_console("echo", "through").await.unwrap(), "through");
}
