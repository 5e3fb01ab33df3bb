//! Secure channels over real sockets: keys right and wrong, mutual authentication, a
//! tampered, replayed or reordered record, rekeying under load, the handshake's deadline
//! and limit, TLS with a self-signed certificate, and the wrong mode on either side.

mod common;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use zs::secure::{NoiseCipher, NoiseClient, NoiseServer, TlsClient, TlsServer};
use zs::wire::secure::{message_len, PREAMBLE_LEN};
use zs::{
    CallError, Client, ClientConfig, ClientSecurity, CloseReason, GoAwayCode, KeyPair, Router, ServerConfig,
    ServerSecurity, StreamOptions, Trust,
};

fn echo_router() -> Router {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.console("whoami", |peer, _| peer.remote_key().map(|k| k.to_string()).unwrap_or_default());
    r.console("binding", |peer, _| peer.channel().map(|c| hex(&c.binding)).unwrap_or_default());
    // The stream's BLAKE3 hash is checked on arrival: a lost or altered byte fails it.
    r.big_stream("sink", |_, mut s: zs::IncomingStream| async move {
        while let Some(chunk) = s.next_chunk().await {
            chunk?;
        }
        Ok::<_, CallError>(())
    });
    r
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Both ends of a connection hold the same binding, and no two connections share one.
async fn assert_bindings(server: &zs::ServerHandle) {
    let (a, b) = (connect(server).await.unwrap(), connect(server).await.unwrap());
    for c in [&a, &b] {
        let mine = hex(&c.channel().unwrap().binding);
        assert_eq!(c.call_console("binding", "").await.unwrap(), mine.as_str());
    }
    assert_ne!(a.channel().unwrap().binding, b.channel().unwrap().binding);
}

fn tls_server() -> (ServerSecurity, TlsServer, String) {
    let (cert, key) = zs::secure::self_signed(&["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let tls = TlsServer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    (ServerSecurity::Tls(tls.clone()), tls, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_key_connects_and_both_ends_know_who_is_who() {
    let server = serve(echo_router()).await;
    let server_key = server.fingerprint().expect("Noise by default");
    for cipher in [NoiseCipher::AesGcm, NoiseCipher::ChaChaPoly] {
        let me = KeyPair::generate();
        let security =
            ClientSecurity::Noise(NoiseClient { trust: server_key.into(), key: Some(me.clone()), cipher });
        let client = Client::connect(server.local_addr(), security).await.unwrap();
        assert_eq!(client.remote_key(), Some(server_key));
        assert_eq!(client.channel().unwrap().protocol, cipher.protocol_name());
        // The server saw the client's key.
        assert_eq!(client.call_console("whoami", "").await.unwrap(), me.public().to_string().as_str());
        let big = "x".repeat(200_000);
        assert_eq!(client.call_console("echo", big.clone()).await.unwrap(), big.as_str());
    }
    assert_eq!(server.stats().handshakes, 2);
    assert_bindings(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_unknown_key_is_refused_with_the_fingerprint_shown() {
    let server = serve(echo_router()).await;
    let real = server.fingerprint().unwrap();
    let wrong = KeyPair::generate().public();
    let err = Client::connect(server.local_addr(), wrong).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains(&real.to_string()) && err.to_string().contains("does not match"),
        "{err}"
    );

    // A known-servers file: unknown is refused, trust on first use records, a change is refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    let known = |first_use| Trust::KnownServers { file: file.clone(), name: Some("srv".into()), first_use };
    let err = Client::connect(server.local_addr(), known(false)).await.unwrap_err();
    assert!(err.to_string().contains(&real.to_string()), "{err}");
    let c = Client::connect(server.local_addr(), known(true)).await.unwrap();
    assert_eq!(c.call_console("echo", "tofu").await.unwrap(), "tofu");
    assert_eq!(zs::secure::known_server(&file, "srv").unwrap(), Some(real));
    Client::connect(server.local_addr(), known(false)).await.unwrap();
    let other = serve(echo_router()).await;
    let err = Client::connect(other.local_addr(), known(true)).await.unwrap_err();
    assert!(err.to_string().contains("SERVER KEY CHANGED"), "{err}");
    // The server logged the failed handshakes and keeps serving.
    wait_until("failures counted", || server.stats().handshakes_failed >= 2).await;
    assert_eq!(c.call_console("echo", "still").await.unwrap(), "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_can_admit_known_clients_only() {
    let friend = KeyPair::generate();
    let noise = NoiseServer { key: None, allowed_clients: Some(vec![friend.public()]) };
    let server = serve_with(
        echo_router(),
        ServerConfig { security: ServerSecurity::Noise(noise), ..ServerConfig::default() },
    )
    .await;
    let trust: Trust = server.fingerprint().unwrap().into();
    let as_friend =
        ClientSecurity::Noise(NoiseClient { trust: trust.clone(), key: Some(friend), ..Default::default() });
    let c = Client::connect(server.local_addr(), as_friend).await.unwrap();
    assert_eq!(c.call_console("echo", "hi").await.unwrap(), "hi");

    let stranger = Client::connect(server.local_addr(), trust).await.unwrap();
    let reason = within("stranger refused", stranger.closed()).await;
    match reason {
        CloseReason::PeerGoAway { code: GoAwayCode::NotAuthorized, message } => {
            assert!(message.contains("not allowed"), "{message}")
        }
        other => panic!("expected NotAuthorized, got {other}"),
    }
    assert_eq!(server.connection_count(), 1);
}

/// What the proxy does to the client's records.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Flip one bit of this record.
    Tamper,
    /// Send this record twice.
    Replay,
    /// Hold this record until the next one, then send the next one first.
    Swap,
}

/// A proxy that forwards a Noise connection message by message (preamble, handshake
/// messages, records) and applies `fault` to the first record after the handshake.
/// `held` is told when a record is being held for a swap.
async fn faulty_proxy(
    upstream: std::net::SocketAddr,
    fault: Fault,
    held: mpsc::UnboundedSender<()>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        let mut buf = BytesMut::new();
        while buf.len() < PREAMBLE_LEN {
            if cr.read_buf(&mut buf).await.unwrap() == 0 {
                return;
            }
        }
        sw.write_all(&buf.split_to(PREAMBLE_LEN)).await.unwrap();
        let mut index = 0; // 0, 1: handshake messages; 2: the first record
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let Some(n) = message_len(&buf) else {
                if cr.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                continue;
            };
            let mut msg = buf[..n].to_vec();
            buf.advance(n);
            match (index, fault) {
                (2, Fault::Tamper) => {
                    msg[n / 2] ^= 0x01;
                    sw.write_all(&msg).await.unwrap();
                }
                (2, Fault::Replay) => {
                    sw.write_all(&msg).await.unwrap();
                    sw.write_all(&msg).await.unwrap();
                }
                (2, Fault::Swap) => {
                    pending = Some(msg);
                    let _ = held.send(());
                }
                (3, Fault::Swap) => {
                    sw.write_all(&msg).await.unwrap();
                    sw.write_all(&pending.take().unwrap()).await.unwrap();
                }
                _ => {
                    if sw.write_all(&msg).await.is_err() {
                        return;
                    }
                }
            }
            index += 1;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_replayed_or_reordered_record_closes_the_connection() {
    let server = serve(echo_router()).await;
    let bystander = connect(&server).await.unwrap();
    for fault in [Fault::Tamper, Fault::Replay, Fault::Swap] {
        let (held_tx, mut held) = mpsc::unbounded_channel();
        let proxy = faulty_proxy(server.local_addr(), fault, held_tx).await;
        let config = ClientConfig {
            connection: zs::ConnectionConfig { keepalive_interval: None, ..Default::default() },
            ..ClientConfig::secured(server.client_security())
        };
        let client = Client::connect_with(proxy, Router::new(), config).await.unwrap();
        let first = {
            let c = client.peer().clone();
            tokio::spawn(async move { c.call_console("echo", "first").await })
        };
        if let Fault::Swap = fault {
            within("record held", held.recv()).await.unwrap();
            let c = client.peer().clone();
            tokio::spawn(async move { c.call_console("echo", "second").await });
        }
        let result = within("the faulty record fails", first).await.unwrap();
        assert!(matches!(result, Err(CallError::Disconnected(_))), "{fault:?}: {result:?}");
        wait_until("closed by the server", || server.connection_count() == 1).await;
    }
    // Everyone else was served throughout.
    assert_eq!(bystander.call_console("echo", "fine").await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roll_under_load_without_losing_a_byte() {
    for (name, security) in [("noise", ServerSecurity::default()), ("tls", tls_server().0)] {
        let mut config = ServerConfig { security, ..ServerConfig::default() };
        // The server sends less (compressed replies): it rolls its keys more often.
        config.connection.rekey_after_bytes = 8 << 10;
        let server = serve_with(echo_router(), config).await;
        let mut cc = ClientConfig::secured(server.client_security());
        cc.connection.rekey_after_bytes = 256 << 10;
        let client = connect_with(&server, Router::new(), cc).await.unwrap();
        let size = 16u64 << 20;
        // Incompressible, so every byte crosses the channel.
        let data = zs_bench::source::Noise::new(size, 7);
        let stream = client.send_big_stream("sink", data, StreamOptions::with_len(size));
        let calls = futures_util::future::join_all((0..300).map(|i| {
            let c = client.peer().clone();
            async move {
                let text = format!("{i}:{}", "y".repeat(i * 37 % 3000));
                assert_eq!(c.call_console("echo", text.clone()).await.unwrap(), text.as_str());
            }
        }));
        within("calls during the stream", calls).await;
        within("stream", stream.finish()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let (ours, theirs) = (client.stats().rekeys, server.stats().rekeys);
        assert!(ours >= 16, "{name}: the client rolled its keys {ours} times");
        assert!(theirs >= 1, "{name}: the server rolled its keys {theirs} times");
        assert_eq!(client.call_console("echo", "after").await.unwrap(), "after");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_at_the_handshake_deadline_and_handshakes_are_bounded() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        max_handshakes: 1,
        ..ServerConfig::default()
    };
    let server = serve_with(echo_router(), config).await;
    // Says nothing: dropped at the deadline.
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    // Starts a preamble and stalls: dropped too.
    let mut stalled = TcpStream::connect(server.local_addr()).await.unwrap();
    stalled.write_all(b"zs").await.unwrap();
    // With one handshake at a time, this client waits until the silent ones are gone.
    let client = within("connects once a handshake slot frees", connect(&server)).await.unwrap();
    assert!(server.stats().handshakes_failed >= 1, "{:?}", server.stats());
    assert_eq!(client.call_console("echo", "in").await.unwrap(), "in");
    let mut buf = [0u8; 16];
    assert_eq!(within("silent dropped", silent.read(&mut buf)).await.unwrap_or(0), 0);
    assert_eq!(within("stalled dropped", stalled.read(&mut buf)).await.unwrap_or(0), 0);
    wait_until("both counted", || server.stats().handshakes_failed == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate_prefers_post_quantum_key_exchange() {
    let (security, tls, cert_pem) = tls_server();
    let server = serve_with(echo_router(), ServerConfig { security, ..ServerConfig::default() }).await;
    assert_eq!(server.fingerprint(), Some(tls.fingerprint()));
    let client = connect(&server).await.unwrap();
    assert_eq!(client.call_console("echo", "tls").await.unwrap(), "tls");
    assert_eq!(client.remote_key(), Some(tls.fingerprint()));
    let protocol = &client.channel().unwrap().protocol;
    assert!(protocol.starts_with("TLS 1.3") && protocol.contains("X25519MLKEM768"), "{protocol}");
    assert_bindings(&server).await;

    // A pinned fingerprint that is not the server's is refused.
    let wrong = TlsClient::pinned(KeyPair::generate().public());
    let err = Client::connect(server.local_addr(), ClientSecurity::Tls(wrong)).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");

    // Verified against the certificate as a CA, by name.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let by_ca =
        TlsClient { ca_file: Some(ca.clone()), server_name: Some("localhost".into()), ..Default::default() };
    let c = Client::connect(server.local_addr(), ClientSecurity::Tls(by_ca)).await.unwrap();
    assert_eq!(c.call_console("echo", "ca").await.unwrap(), "ca");
    let wrong_name =
        TlsClient { ca_file: Some(ca), server_name: Some("example.com".into()), ..Default::default() };
    assert!(Client::connect(server.local_addr(), ClientSecurity::Tls(wrong_name)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_mode_on_either_side_is_told_what_to_do() {
    let noise = serve(echo_router()).await;
    let plain = serve_with(echo_router(), plaintext()).await;
    let (tls_security, _, _) = tls_server();
    let tls =
        serve_with(echo_router(), ServerConfig { security: tls_security, ..ServerConfig::default() }).await;

    // A plaintext client on an encrypted server gets a plaintext goaway saying why.
    for server in [&noise, &tls] {
        let c = Client::connect(server.local_addr(), ClientSecurity::Plaintext).await.unwrap();
        let err = c.call_console("echo", "in the clear").await.unwrap_err();
        assert!(err.to_string().contains("encryption required"), "{err}");
        let reason = within("refused", c.closed()).await;
        assert!(
            matches!(reason, CloseReason::PeerGoAway { code: GoAwayCode::EncryptionRequired, .. }),
            "{reason}"
        );
    }
    // A Noise client on a plaintext or TLS server.
    let any = || ClientSecurity::Noise(NoiseClient { trust: Trust::AnyServer, ..Default::default() });
    let err = Client::connect(plain.local_addr(), any()).await.unwrap_err();
    assert!(err.to_string().contains("--plaintext"), "{err}");
    let err = Client::connect(tls.local_addr(), any()).await.unwrap_err();
    assert!(err.to_string().contains("--tls"), "{err}");
    // A TLS client on a Noise server fails its handshake.
    let err =
        Client::connect(noise.local_addr(), ClientSecurity::Tls(TlsClient::default())).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    // Everyone stays up.
    for server in [&noise, &plain, &tls] {
        let c = connect(server).await.unwrap();
        assert_eq!(c.call_console("echo", "ok").await.unwrap(), "ok");
    }
}
