//! QUIC: a server's QUIC listener beside its TCP one, Rust clients dialing it (calls, a big
//! stream, a session that resumes when its QUIC connection is lost), and peers that break
//! the mapping: refused with a reason, others unaffected.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{plaintext, serve, serve_with, transport_router, within};
use zs::transport::quic::{QuicDialer, QuicLink, QuicListener};
use zs::transport::Dialer;
use zs::{ClientConfig, Router, ServerHandle, SessionConfig, StreamOptions};
use zs_bench::source::Noise;

fn quic_listen(server: &ServerHandle) -> SocketAddr {
    let listener = QuicListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (rcv, snd) = listener.buffer_sizes();
    assert!(rcv > 0 && snd > 0);
    server.serve(listener).unwrap()
}

/// A QUIC dialer that keeps each connection it makes, so the test can lose them.
#[derive(Clone, Default)]
struct Losable(Arc<Mutex<Vec<quinn::Connection>>>);

impl Dialer for Losable {
    type Raw = QuicLink;
    async fn dial(&self, addr: SocketAddr) -> std::io::Result<QuicLink> {
        let link = QuicDialer.dial(addr).await?;
        self.0.lock().unwrap().push(link.stream().connection().clone());
        Ok(link)
    }
}

#[tokio::test]
async fn calls_and_big_streams_go_over_quic_in_each_mode() {
    for server in [serve(transport_router()).await, serve_with(transport_router(), plaintext()).await] {
        let addr = quic_listen(&server);
        let config = ClientConfig::secured(server.client_security());
        let client =
            within("connect over QUIC", zs::Client::connect_over(QuicDialer, addr, Router::new(), config))
                .await
                .unwrap();
        assert_eq!(client.call_console("echo", "over QUIC").await.unwrap(), "over QUIC");
        let calls = (0..200).map(|i| client.call_console("echo", i.to_string()));
        let replies = within("200 calls", futures_util::future::try_join_all(calls)).await.unwrap();
        assert!(replies.iter().enumerate().all(|(i, r)| **r == *i.to_string()));
        let size = 8 << 20;
        let transfer = client.send_big_stream("hash", Noise::new(size, 5), StreamOptions::with_len(size));
        assert_eq!(within("a big stream", transfer.finish()).await.unwrap(), size);
        assert_eq!(server.connection_count(), 1);
    }
}

#[tokio::test]
async fn a_session_over_quic_resumes_when_its_connection_is_lost() {
    let server = serve(transport_router()).await;
    let addr = quic_listen(&server);
    let dialer = Losable::default();
    let session = SessionConfig { min_backoff: Duration::from_millis(5), ..SessionConfig::default() };
    let config = ClientConfig { session: Some(session), ..ClientConfig::secured(server.client_security()) };
    let client = within("connect", zs::Client::connect_over(dialer.clone(), addr, Router::new(), config))
        .await
        .unwrap();
    for round in 0..3 {
        let calls: Vec<_> = (0..50).map(|i| client.call_console("echo", format!("{round}-{i}"))).collect();
        for c in dialer.0.lock().unwrap().iter() {
            c.close(7u32.into(), b"lost by the test");
        }
        let replies = within("calls across a lost connection", futures_util::future::try_join_all(calls))
            .await
            .unwrap();
        assert!(replies.iter().enumerate().all(|(i, r)| **r == *format!("{round}-{i}")));
    }
    assert!(dialer.0.lock().unwrap().len() >= 2, "new QUIC connections were made");
    assert_eq!(server.session_count(), 1);
}

#[tokio::test]
async fn a_stream_that_is_not_ours_is_refused_and_no_second_one_opens() {
    let server = serve_with(transport_router(), plaintext()).await;
    let addr = quic_listen(&server);
    // A wrong version byte: the connection is closed with the reason.
    let (_endpoint, conn) = within("a QUIC connection", QuicDialer.connection(addr)).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[9]).await.unwrap();
    let reason = within("the server closes it", conn.closed()).await.to_string();
    assert!(reason.contains("not a zserver QUIC stream"), "{reason}");
    // A good stream works; a second one cannot even be opened (the stream limit is one).
    let (_endpoint, conn) = within("a QUIC connection", QuicDialer.connection(addr)).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let call =
        common::raw_frame(zs::wire::Kind::Call, zs::wire::Flags::NONE, 1, &common::call_body("echo", b"ok"));
    send.write_all(&call).await.unwrap();
    let mut reply = vec![0u8; 16 + 2];
    within("the reply", recv.read_exact(&mut reply)).await.unwrap();
    assert_eq!(&reply[16..], b"ok");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await.is_err(),
        "a second stream opened"
    );
    // 300 QUIC connections that never open their stream hold a few places, not all.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(within("an idle QUIC connection", QuicDialer.connection(addr)).await.unwrap());
    }
    // Others are unaffected.
    let config = ClientConfig::secured(server.client_security());
    let client = zs::Client::connect_over(QuicDialer, addr, Router::new(), config).await.unwrap();
    assert_eq!(client.call_console("echo", "still fine").await.unwrap(), "still fine");
}
