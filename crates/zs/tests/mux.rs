//! Virtual channels over one real loopback connection: many at once, flow control, refusals,
//! resets from either end, the link's end, and channels opened by the server.

mod common;

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use common::{goaway_of, plaintext, raw_exchange, serve, serve_with, wait_until, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zs::wire::mux::{ChannelKind, MuxCode, MuxFrame};
use zs::{Client, ClientConfig, Router, VirtualListener, VirtualStream};

/// Accepts channels and echoes each back until its end.
fn echo(mut listener: VirtualListener) {
    tokio::spawn(async move {
        while let Some(mut s) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
}

async fn round_trip(s: &mut VirtualStream, data: &[u8]) -> Vec<u8> {
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 16 << 10]);
    let mut sent = 0;
    while got.len() < data.len() {
        if sent < data.len() {
            let n = (data.len() - sent).min(8 << 10);
            s.write_all(&data[sent..sent + n]).await.unwrap();
            sent += n;
        }
        while got.len() < sent {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "channel {} ended early", s.id());
            got.extend_from_slice(&buf[..n]);
        }
    }
    got
}

/// The server's handle of its one connection (it registers it as the client connects).
async fn server_peer(server: &zs::ServerHandle) -> zs::Peer {
    within("the server to see the client", async {
        loop {
            if let Some(p) = server.peers().pop() {
                break p;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

async fn client(server: &zs::ServerHandle, router: Router) -> Client {
    let config = ClientConfig { security: server.client_security(), ..ClientConfig::default() };
    Client::connect_with(server.local_addr(), router, config).await.unwrap()
}

#[tokio::test]
async fn ten_thousand_channels_exchange_at_once_over_one_connection() {
    let mut router = Router::new();
    echo(router.listen_with_backlog("echo", 10_000));
    let server = serve(router).await;
    let c = client(&server, Router::new()).await;
    let tasks: Vec<_> = (0..10_000u32)
        .map(|i| {
            let peer = c.peer().clone();
            tokio::spawn(async move {
                let mut s = peer.open_stream("echo").await.unwrap();
                let data: Vec<u8> = (0..(64 + i % 2000)).map(|j| (i.wrapping_mul(31) ^ j) as u8).collect();
                let got = round_trip(&mut s, &data).await;
                assert_eq!(got, data, "channel {}", s.id());
                s.shutdown().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
                s.id()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(within("a channel's exchange", t).await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10_000);
    assert!(ids.iter().all(|id| id % 2 == 1), "the connecting end opens odd channels");
    assert_eq!(server.connection_count(), 1);
    // Every channel was forgotten by both ends once both had closed it.
    let all_forgotten = |s: zs::StatsSnapshot| s.channels_opened == 10_000 && s.channels_closed == 10_000;
    wait_until("the server to forget its channels", || all_forgotten(server.stats())).await;
    wait_until("the client to forget its channels", || all_forgotten(c.stats())).await;
}

#[tokio::test]
async fn a_slow_reader_holds_only_its_window_and_slows_no_one_else() {
    let mut router = Router::new();
    let mut slow = router.listen("slow");
    echo(router.listen("echo"));
    let server = serve(router).await;
    let c = client(&server, Router::new()).await;
    // Accepted, never read.
    let (stalled, _unread) =
        within("open and accept", async { tokio::join!(c.peer().open_stream("slow"), slow.accept()) }).await;
    let mut stalled = stalled.unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 16 << 10];
        for _ in 0..1024 {
            if stalled.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len() as u64, Relaxed);
        }
    });
    // Meanwhile another channel on the same connection does a thousand round trips.
    let mut other = c.peer().open_stream("echo").await.unwrap();
    for i in 0..1000u32 {
        let data = i.to_le_bytes().repeat(16);
        assert_eq!(round_trip(&mut other, &data).await, data);
    }
    let window = zs::MuxConfig::default().initial_window as u64;
    let w = written.load(Relaxed);
    assert!(w <= window, "the writer got {w} bytes past a reader that reads nothing (window {window})");
    assert!(!writer.is_finished(), "16 MiB went to a reader that reads nothing");
    writer.abort();
}

#[tokio::test]
async fn opens_are_refused_clearly_when_no_one_listens_or_the_backlog_is_full() {
    let mut router = Router::new();
    let parked = router.listen_with_backlog("parked", 2);
    let server = serve(router).await;
    let c = client(&server, Router::new()).await;
    let e = c.peer().open_stream("nobody").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert!(e.to_string().contains("nothing listens on \"nobody\""), "{e}");
    // Two opens wait in the backlog (never accepted); the third is refused at once.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let peer = c.peer().clone();
            tokio::spawn(async move { peer.open_stream("parked").await })
        })
        .collect();
    wait_until("two opens in the backlog", || parked.pending() == 2).await;
    let refused = within("the third open", c.peer().open_stream("parked")).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert!(refused.to_string().contains("the backlog of \"parked\" is full"), "{refused}");
    for w in &waiting {
        assert!(!w.is_finished(), "an open in the backlog completed without an accept");
    }
    let e = c.peer().open_stream("").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // The connection is unharmed.
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn a_reset_from_either_end_reaches_the_other_with_its_reason() {
    let mut router = Router::new();
    let mut listener = router.listen("svc");
    let server = serve(router).await;
    let c = client(&server, Router::new()).await;
    for server_resets in [true, false] {
        let opening = {
            let peer = c.peer().clone();
            tokio::spawn(async move { peer.open_stream("svc").await.unwrap() })
        };
        let mut accepted = within("accept", listener.accept()).await.unwrap();
        let mut opened = within("open", opening).await.unwrap();
        let (resetter, other) =
            if server_resets { (&mut accepted, &mut opened) } else { (&mut opened, &mut accepted) };
        resetter.reset("no more, thanks");
        let mut buf = [0u8; 8];
        let e = within("the reset to arrive", other.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert!(e.to_string().contains("no more, thanks"), "{e}");
        assert!(other.write_all(b"x").await.is_err());
    }
    // Dropping an open channel resets it too.
    let opening = {
        let peer = c.peer().clone();
        tokio::spawn(async move { peer.open_stream("svc").await.unwrap() })
    };
    let accepted = within("accept", listener.accept()).await.unwrap();
    let mut opened = within("open", opening).await.unwrap();
    drop(accepted);
    let e = within("the drop to arrive", opened.read(&mut [0u8; 8])).await.unwrap_err();
    assert!(e.to_string().contains("dropped"), "{e}");
}

#[tokio::test]
async fn the_server_opens_channels_to_a_client_and_the_link_ending_fails_them() {
    let server = serve(Router::new()).await;
    let mut client_router = Router::new();
    echo(client_router.listen("behind-nat"));
    let c = client(&server, client_router).await;
    let peer = server_peer(&server).await;
    let mut s = peer.open_stream_port("behind-nat", 8080).await.unwrap();
    assert_eq!(s.id() % 2, 0, "the accepting end opens even channels");
    assert_eq!(round_trip(&mut s, b"reverse p2pVM").await, b"reverse p2pVM");
    let mut held = peer.open_stream("behind-nat").await.unwrap();
    c.peer().close();
    let e = within("the link's end to reach the channel", held.read(&mut [0u8; 8])).await.unwrap_err();
    assert!(e.to_string().contains("connection closed"), "{e}");
    let e = peer.open_stream("behind-nat").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
}

#[tokio::test]
async fn a_go_away_refuses_new_channels_and_the_open_ones_carry_on() {
    let mut router = Router::new();
    echo(router.listen("echo"));
    let server = serve(router).await;
    let c = client(&server, Router::new()).await;
    let mut open = c.peer().open_stream("echo").await.unwrap();
    let server_peer = server_peer(&server).await;
    server_peer.refuse_new_channels("draining for a deploy");
    let e = within("the refusal", c.peer().open_stream("echo")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert!(e.to_string().contains("takes no new channels"), "{e}");
    assert_eq!(round_trip(&mut open, b"still here").await, b"still here");
    // Nor may this end open any.
    let e = within("the local refusal", server_peer.open_stream("anything")).await.unwrap_err();
    assert!(e.to_string().contains("takes no new channels"), "{e}");
}

fn raw(frames: &[MuxFrame]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for f in frames {
        f.encode(&mut out).unwrap();
    }
    out.to_vec()
}

fn open_frame(channel: u32, name: &str) -> MuxFrame {
    MuxFrame::Open { channel, kind: ChannelKind::Stream, port: 0, window: 1 << 20, name: name.to_owned() }
}

#[tokio::test]
async fn hostile_mux_frames_get_refusals_resets_or_a_goaway_and_hurt_no_one_else() {
    let mut router = Router::new();
    let _svc = router.listen("svc");
    echo(router.listen("echo"));
    let server = serve_with(router, plaintext()).await;
    let addr = server.local_addr();
    let bystander = client(&server, Router::new()).await;
    let mut channel = bystander.peer().open_stream("echo").await.unwrap();

    // A zero grant is malformed: the connection closes with the reason.
    let mut zero = bytes::BytesMut::new();
    zs::wire::FrameWriter::begin(&mut zero, zs::wire::Kind::MuxCredit, zs::wire::Flags::NONE, 1, 0)
        .finish(u32::MAX)
        .unwrap();
    zero.extend_from_slice(&[0; 4]);
    zero[12] = 4;
    let (code, msg) = goaway_of(&raw_exchange(addr, &zero).await);
    assert_eq!(code, zs::GoAwayCode::ProtocolError);
    assert!(msg.contains("mux credit"), "{msg}");

    // Data past the window the server advertised resets that channel (not the connection);
    // an open with the server's parity, or of an id already open, is refused; then a
    // malformed frame ends the exchange.
    let big = bytes::Bytes::from(vec![1u8; 200 << 10]);
    let mut wire = raw(&[
        open_frame(1, "svc"),
        MuxFrame::Data { channel: 1, data: big.clone() },
        MuxFrame::Data { channel: 1, data: big },
        open_frame(2, "svc"),
        open_frame(3, "svc"),
        open_frame(3, "svc"),
    ]);
    wire.extend(raw(&[MuxFrame::Close { channel: 5 }]));
    wire.extend_from_slice(&[0x5A, 1, 0x35, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // close with a body
    let frames = raw_exchange(addr, &wire).await;
    let mux: Vec<MuxFrame> = frames
        .iter()
        .filter(|f| MuxFrame::is_mux(f.header.kind))
        .map(|f| MuxFrame::decode(&f.header, f.body.clone()).unwrap())
        .collect();
    assert!(
        mux.iter().any(|m| matches!(m, MuxFrame::Reset { channel: 1, code: MuxCode::FlowControl, .. })),
        "{mux:?}"
    );
    assert!(
        mux.iter().any(|m| matches!(m, MuxFrame::Refuse { channel: 2, code: MuxCode::Protocol, reason } if reason.contains("parity"))),
        "{mux:?}"
    );
    assert!(
        mux.iter().any(|m| matches!(m, MuxFrame::Refuse { channel: 3, code: MuxCode::Protocol, reason } if reason.contains("already open"))),
        "{mux:?}"
    );
    let (code, msg) = goaway_of(&frames);
    assert_eq!(code, zs::GoAwayCode::ProtocolError);
    assert!(msg.contains("mux close"), "{msg}");

    // The bystander's channel never noticed.
    assert_eq!(round_trip(&mut channel, b"unharmed").await, b"unharmed");
}

#[tokio::test]
async fn virtual_clients_are_full_peers_over_one_connection() {
    let mut router = Router::new();
    router.console("whoami", |peer, text| format!("{} on peer {}", text, peer.id()));
    router.serve_channels("chat").serve_channels("files");
    let server = serve(router).await;
    let mut client_router = Router::new();
    client_router.console("pushed", |_, text| format!("client saw {text}"));
    let config = ClientConfig {
        security: server.client_security(),
        virtual_clients: vec!["chat".into(), "files".into()],
        ..ClientConfig::default()
    };
    let c = Client::connect_with(server.local_addr(), client_router, config).await.unwrap();
    let (chat, files) = (c.virtual_client("chat").unwrap(), c.virtual_client("files").unwrap());
    assert!(c.virtual_client("nope").is_none());
    let a = chat.call_console("hello", "x").await.unwrap_err();
    assert!(a.to_string().contains("hello"), "unknown commands are named: {a}");
    let a = chat.call_console("whoami", "chat").await.unwrap();
    let b = files.call_console("whoami", "files").await.unwrap();
    let main = c.peer().call_console("whoami", "main").await.unwrap();
    // Three distinct peers at the server, over one connection.
    let ids: std::collections::HashSet<_> =
        [&a, &b, &main].iter().map(|t| t.split(' ').next_back().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 3, "{a} / {b} / {main}");
    assert_eq!(server.connection_count(), 1);
    // Concurrent calls on both virtual clients.
    let calls: Vec<_> = (0..500)
        .map(|i| {
            let p = if i % 2 == 0 { chat.clone() } else { files.clone() };
            tokio::spawn(async move {
                p.call_console("whoami", i.to_string()).await.unwrap().starts_with(&format!("{i} "))
            })
        })
        .collect();
    for call in calls {
        assert!(within("a call on a virtual client", call).await.unwrap());
    }
    // A service the server does not serve is refused clearly.
    let config = ClientConfig {
        security: server.client_security(),
        virtual_clients: vec!["missing".into()],
        ..ClientConfig::default()
    };
    let Err(e) = Client::connect_with(server.local_addr(), Router::new(), config).await else {
        panic!("a virtual client of a service nobody serves was opened")
    };
    assert!(e.to_string().contains("no peer service \"missing\""), "{e}");
}

#[tokio::test]
async fn the_server_hosts_nothing_and_calls_a_service_behind_the_client() {
    let server = serve(Router::new()).await;
    let mut client_router = Router::new();
    client_router.console("behind", |_, text| format!("from behind the NAT: {text}"));
    client_router.serve_channels("agent");
    let _c = client(&server, client_router).await;
    let physical = server_peer(&server).await;
    let agent = physical.open_peer("agent").await.unwrap();
    assert_eq!(agent.call_console("behind", "ping").await.unwrap(), "from behind the NAT: ping");
}

#[tokio::test]
async fn virtual_channels_carry_on_when_the_session_link_is_cut() {
    use zs_bench::fault_proxy::{FaultProxy, Faults};
    let mut router = Router::new();
    router.console("echo", |_, text| text.to_owned());
    router.serve_channels("svc");
    echo(router.listen("raw"));
    let server = serve(router).await;
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
    let config = ClientConfig {
        security: server.client_security(),
        session: Some(zs::SessionConfig {
            min_backoff: std::time::Duration::from_millis(5),
            ..Default::default()
        }),
        virtual_clients: vec!["svc".into()],
        ..ClientConfig::default()
    };
    let c = Client::connect_with(proxy.addr(), Router::new(), config).await.unwrap();
    let svc = c.virtual_client("svc").unwrap().clone();
    let mut raw = c.peer().open_stream("raw").await.unwrap();
    for round in 0..20u32 {
        let text = format!("round {round}");
        assert_eq!(svc.call_console("echo", text.clone()).await.unwrap(), text.as_str());
        let data = round.to_le_bytes().repeat(1000);
        assert_eq!(round_trip(&mut raw, &data).await, data);
        proxy.cut_all();
    }
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_peer_channels_exchange_calls_at_once() {
    let mut router = Router::new();
    router.console("double", |_, text| text.repeat(2));
    router.serve_channels("svc");
    let server = serve(router).await;
    let c = client(&server, Router::new()).await;
    let tasks: Vec<_> = (0..10_000u32)
        .map(|i| {
            let physical = c.peer().clone();
            tokio::spawn(async move {
                let peer = physical.open_peer("svc").await.unwrap();
                for round in 0..3 {
                    let text = format!("{i}.{round}");
                    assert_eq!(
                        peer.call_console("double", text.clone()).await.unwrap(),
                        text.repeat(2).as_str()
                    );
                }
                peer.close();
            })
        })
        .collect();
    for t in tasks {
        within("a virtual peer's calls", t).await.unwrap();
    }
    assert_eq!(server.connection_count(), 1);
    wait_until("the server to forget the closed channels", || {
        let s = server.stats();
        s.channels_opened == 10_000 && s.channels_closed == 10_000
    })
    .await;
    wait_until("the client to forget them", || c.stats().channels_closed == 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shut_down_and_dropped_still_delivers_everything_in_order() {
    let mut router = Router::new();
    let mut listener = router.listen("sink");
    let server = serve_with(router, plaintext()).await;
    let config = ClientConfig::secured(zs::ClientSecurity::Plaintext);
    let c = Client::connect_with(server.local_addr(), Router::new(), config).await.unwrap();
    let (w, r) =
        within("open and accept", async { tokio::join!(c.peer().open_stream("sink"), listener.accept()) })
            .await;
    let (mut w, mut r) = (w.unwrap(), r.unwrap());
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.map(|_| got)
    });
    w.write_all(&data).await.unwrap();
    w.shutdown().await.unwrap();
    drop(w);
    let got = within("everything to arrive", reader).await.unwrap().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes arrived changed or out of order");
}

#[tokio::test]
async fn windows_set_below_one_frame_are_raised_and_data_still_flows() {
    let mux = zs::MuxConfig { initial_window: 0, max_window: 0, ..zs::MuxConfig::default() };
    let connection = zs::ConnectionConfig { mux, ..Default::default() };
    let mut router = Router::new();
    echo(router.listen("echo"));
    let server = serve_with(
        router,
        zs::ServerConfig { connection: connection.clone(), ..zs::ServerConfig::default() },
    )
    .await;
    let config = ClientConfig { security: server.client_security(), connection, ..ClientConfig::default() };
    let c = Client::connect_with(server.local_addr(), Router::new(), config).await.unwrap();
    let mut s = c.peer().open_stream("echo").await.unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    assert!(within("1 MiB through zero-sized windows", round_trip(&mut s, &data)).await == data);
}
