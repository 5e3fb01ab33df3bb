//! Timeouts, disconnects and bad input: each gets a clear error, and the server keeps
//! serving everyone else.

mod common;

use std::time::Duration;

use common::*;
use zs::wire::{ErrorCode, Flags, GoAwayCode, Kind, HEADER_LEN};
use zs::{CallError, DataFrame, Router, ServerConfig};

fn router() -> Router {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.stream("echo_stream", |_, df| df);
    r.console("boom", |_, _| -> String { panic!("handler bug") });
    r.console_async("boom_async", |_, _| async { panic!("async handler bug") as String });
    r.console_delayed("boom_delayed", |_, _, _responder| panic!("delayed handler bug"));
    r.console("fails", |_, _| Err::<String, _>("no luck"));
    r.console_delayed("never", |_, _, responder| std::mem::forget(responder));
    r.direct_console("oneway", |_, _| {});
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_gets_an_error_that_names_it() {
    let server = serve(router()).await;
    let client = connect(&server).await.unwrap();
    let err = client.call_console("no_such_thing", "x").await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownCommand));
    assert!(err.to_string().contains("no_such_thing"), "{err}");
    let err = client.call_stream("missing_stream", DataFrame::new()).await.unwrap_err();
    assert!(err.to_string().contains("missing_stream"), "{err}");
    // A direct command nobody registered is counted and dropped; the connection lives.
    client.send_console("nobody", "x").await.unwrap();
    assert_eq!(client.call_console("echo", "still here").await.unwrap(), "still here");
    assert_eq!(server.stats().unknown_commands, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_form_and_handler_errors_are_error_replies() {
    let server = serve(router()).await;
    let client = connect(&server).await.unwrap();
    let err = client.call_stream("echo", DataFrame::new()).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::BadPayload));
    assert!(err.to_string().contains("takes text, got a DataFrame"), "{err}");
    let err = client.call_console("echo_stream", "x").await.unwrap_err();
    assert!(err.to_string().contains("takes a DataFrame, got text"), "{err}");
    let err = client.call_console("oneway", "x").await.unwrap_err();
    assert!(err.to_string().contains("one-way"), "{err}");
    let err = client.call_console("fails", "").await.unwrap_err();
    assert_eq!(err, CallError::Remote { code: ErrorCode::Application, message: "no luck".into() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handlers_reply_with_an_error_and_the_connection_lives() {
    let server = serve(router()).await;
    let client = connect(&server).await.unwrap();
    for name in ["boom", "boom_async", "boom_delayed"] {
        let err = client.call_console(name, "").await.unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::HandlerPanicked), "{name}: {err}");
        assert_eq!(client.call_console("echo", name).await.unwrap(), name, "connection lives after {name}");
    }
    assert_eq!(server.stats().handler_panics, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_time_out_and_late_replies_are_ignored() {
    let mut r = router();
    r.console_async("slow", |_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "slow"
    });
    let server = serve(r).await;
    let client = connect(&server).await.unwrap();
    let err = client.call_console_timeout("never", "", Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err, CallError::Timeout(Duration::from_millis(50)));
    let err = client.call_console_timeout("slow", "", Duration::from_millis(10)).await.unwrap_err();
    assert!(matches!(err, CallError::Timeout(_)));
    // The late reply arrives after the timeout and must not confuse the next call.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.call_console("echo", "next").await.unwrap(), "next");
    assert_eq!(client.stats().call_timeouts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_call_times_out_on_time_behind_a_long_one() {
    // Calls have no timer each: the connection wakes at the earliest deadline, which a
    // later call with a shorter timeout moves forward.
    let server = serve(router()).await;
    let client = connect(&server).await.unwrap();
    let p = client.peer().clone();
    let long =
        tokio::spawn(async move { p.call_console_timeout("never", "", Duration::from_secs(3600)).await });
    wait_until("the long call reaches the server", || server.stats().console_in >= 1).await;
    let short = client.call_console_timeout("never", "", Duration::from_millis(100));
    let err = tokio::time::timeout(Duration::from_secs(10), short).await.expect("not held by the long one");
    assert_eq!(err.unwrap_err(), CallError::Timeout(Duration::from_millis(100)));
    assert!(!long.is_finished(), "the long call still waits");
    // A call its caller gives up on is forgotten, not counted as timed out.
    let given_up = tokio::time::timeout(Duration::from_millis(50), client.call_console("never", "")).await;
    assert!(given_up.is_err());
    assert_eq!(client.call_console("echo", "still").await.unwrap(), "still");
    assert_eq!(client.stats().call_timeouts, 1);
    long.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pending_call_fails_at_once_when_the_connection_drops() {
    let server = serve(router()).await;
    let client = connect(&server).await.unwrap();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let p = client.peer().clone();
            tokio::spawn(async move { p.call_console_timeout("never", "", Duration::from_secs(3600)).await })
        })
        .collect();
    wait_until("calls reach the server", || server.stats().console_in >= 50).await;
    // The server side goes away (all its peers closed), not the client.
    for p in server.peers() {
        p.close();
    }
    for c in calls {
        let err = within("pending call fails", c).await.unwrap().unwrap_err();
        assert!(
            matches!(err, CallError::Disconnected(ref why) if why.contains("closed by application")),
            "{err}"
        );
    }
    let err = client.call_console("echo", "x").await.unwrap_err();
    assert!(matches!(err, CallError::Disconnected(_)), "new calls fail at once: {err}");
}

async fn assert_goaway(frames: &[zs::wire::Frame], code: GoAwayCode, text: &str) {
    let last = frames.last().expect("a goaway frame");
    assert_eq!(last.header.kind, Kind::GoAway);
    let (c, msg) = zs::wire::body::parse_code_message(&last.body).unwrap();
    assert_eq!(GoAwayCode::from_code(c), code, "{msg}");
    assert!(msg.contains(text), "{msg:?} should mention {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection() {
    let server = serve_with(router(), plaintext()).await;
    let bystander = connect(&server).await.unwrap();
    let addr = server.local_addr();

    let frames = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_goaway(&frames, GoAwayCode::ProtocolError, "not a zserver peer").await;

    let mut bad = raw_frame(Kind::Call, Flags::NONE, 1, &call_body("echo", b"hi"));
    bad[1] = 9;
    assert_goaway(&raw_exchange(addr, &bad).await, GoAwayCode::ProtocolError, "version 9").await;

    let mut bad = raw_frame(Kind::Call, Flags::NONE, 1, b"");
    bad[2] = 0x6E;
    assert_goaway(&raw_exchange(addr, &bad).await, GoAwayCode::ProtocolError, "unknown frame kind").await;

    let bad = raw_frame(Kind::Call, Flags::NONE, 1, &[10, b'a']);
    assert_goaway(&raw_exchange(addr, &bad).await, GoAwayCode::ProtocolError, "name runs past").await;

    let bad = raw_frame(Kind::Call, Flags::NONE, 0, &call_body("echo", b"x"));
    assert_goaway(&raw_exchange(addr, &bad).await, GoAwayCode::ProtocolError, "no request id").await;

    let bad = raw_frame(Kind::Error, Flags::NONE, 1, &[1]);
    assert_goaway(&raw_exchange(addr, &bad).await, GoAwayCode::ProtocolError, "error body").await;

    // Valid frames before a bad one are answered first.
    let mut stream = raw_frame(Kind::Call, Flags::NONE, 7, &call_body("echo", b"first"));
    stream.extend(raw_frame(Kind::Call, Flags(0x04), 8, &call_body("echo", b"x")));
    let frames = raw_exchange(addr, &stream).await;
    assert_eq!(frames[0].header.kind, Kind::Reply);
    assert_eq!(&frames[0].body[..], b"first");
    assert_goaway(&frames, GoAwayCode::ProtocolError, "invalid flags").await;

    // Text that is not UTF-8 and an undecodable DataFrame are error replies, not closes.
    let mut stream = raw_frame(Kind::Call, Flags::NONE, 1, &call_body("echo", &[0xff, 0xfe]));
    stream.extend(raw_frame(Kind::Call, Flags::DATAFRAME, 2, &call_body("echo_stream", &[0x91])));
    stream.extend(raw_frame(Kind::GoAway, Flags::NONE, 0, &[0, 0]));
    let frames = raw_exchange(addr, &stream).await;
    assert_eq!(frames.len(), 2, "two error replies, and the server closes after our goaway");
    for f in &frames {
        assert_eq!(f.header.kind, Kind::Error);
        let (code, _) = zs::wire::body::parse_code_message(&f.body).unwrap();
        assert_eq!(ErrorCode::from_code(code), ErrorCode::BadPayload);
    }

    assert_eq!(bystander.call_console("echo", "unharmed").await.unwrap(), "unharmed");
    assert!(server.stats().protocol_errors >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_are_refused_on_the_header() {
    let mut config = plaintext();
    config.connection.limits.max_frame_len = 1024;
    let server = serve_with(router(), config).await;
    let bystander = connect(&server).await.unwrap();
    // Only the header is sent: the server must refuse on the announced length alone.
    let big = raw_frame(Kind::Call, Flags::NONE, 1, &call_body("echo", &[b'a'; 4000]));
    let frames = raw_exchange(server.local_addr(), &big[..HEADER_LEN]).await;
    assert_goaway(&frames, GoAwayCode::FrameTooLarge, "exceeds the limit of 1024").await;
    // A client with a larger limit sends it: it is told why its connection closed.
    let sender = connect(&server).await.unwrap();
    let err = sender.call_console("echo", "a".repeat(1 << 20)).await.unwrap_err();
    assert!(matches!(err, CallError::Disconnected(ref why) if why.contains("exceeds the limit")), "{err}");
    // The client checks its own limit (16 MiB by default) before sending.
    let err = bystander.call_console("echo", "a".repeat(17 << 20)).await.unwrap_err();
    assert!(matches!(err, CallError::Encode(_)), "{err}");
    // A reply over the limit becomes an error reply.
    let mut r = Router::new();
    r.console("grow", |_, _| "b".repeat(2048));
    let mut config = ServerConfig::default();
    config.connection.limits.max_frame_len = 1024;
    let small = serve_with(r, config).await;
    let c = connect(&small).await.unwrap();
    let err = c.call_console("grow", "").await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::ReplyTooLarge), "{err}");
    assert_eq!(bystander.call_console("echo", "ok").await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_bounded_and_cut_off() {
    let mut config = plaintext();
    config.connection.max_write_buffer = 64 << 10;
    config.connection.idle_timeout = Some(Duration::from_millis(1500));
    config.connection.keepalive_interval = None;
    let mut r = Router::new();
    r.console("big", |_, _| "x".repeat(32 << 10));
    let server = serve_with(r, config).await;
    let bystander = connect(&server).await.unwrap();
    // Flood calls for big replies and never read one.
    let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let call = raw_frame(Kind::Call, Flags::NONE, 1, &call_body("big", b""));
    let flood: Vec<u8> = call.iter().copied().cycle().take(call.len() * 2000).collect();
    use tokio::io::AsyncWriteExt;
    // The server stops reading once its output is full, so this write stalls: bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&flood)).await;
    assert_eq!(bystander.call_console("big", "").await.unwrap().len(), 32 << 10);
    wait_until("slow peer is cut off", || server.connection_count() <= 1).await;
}
