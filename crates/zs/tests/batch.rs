//! Batches of calls (`call_console_batch`, `call_stream_batch`): sent together, each reply
//! its own result in order, over real sockets.

mod common;

use std::time::Duration;

use common::{connect, connect_with, plaintext, serve_with, within};
use zs::{CallError, ClientConfig, DataFrame, Router, Text};

fn router() -> Router {
    let mut r = Router::new();
    r.console("echo", |_, t| t);
    r.console("check", |_, t: Text| if t.starts_with("bad") { Err(format!("refused {t}")) } else { Ok(t) });
    r.console_async("late", |_, t: Text| async move {
        if t == "never" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        t
    });
    r.stream("sum", |_, d: DataFrame| {
        let mut rd = d.reader();
        let (a, b) = (rd.read_i64()?, rd.read_i64()?);
        let mut out = DataFrame::new();
        out.write_i64(a + b);
        Ok::<_, zs::HandlerError>(out)
    });
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_comes_back_in_order_with_each_reply_its_own_result() {
    let server = serve_with(router(), plaintext()).await;
    let client = connect(&server).await.unwrap();
    let texts: Vec<String> = (0..500).map(|i| format!("call {i}")).collect();
    let replies = within("a batch of 500", client.call_console_batch("echo", texts.clone())).await;
    let replies: Vec<String> = replies.into_iter().map(|r| r.unwrap().to_string()).collect();
    assert_eq!(replies, texts);

    // A refusal is the result of its own call only.
    let replies = client.call_console_batch("check", ["one", "bad two", "three"]).await;
    assert_eq!(replies[0].as_ref().unwrap(), "one");
    match &replies[1] {
        Err(CallError::Remote { message, .. }) => assert!(message.contains("refused bad two"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(replies[2].as_ref().unwrap(), "three");
    // An unknown command fails each call; an empty batch is empty.
    let replies = client.call_console_batch("nowhere", ["a", "b"]).await;
    assert!(replies.iter().all(|r| matches!(r, Err(CallError::Remote { .. }))), "{replies:?}");
    assert!(client.call_console_batch("echo", Vec::<String>::new()).await.is_empty());

    let frames: Vec<DataFrame> = (0..100i64)
        .map(|i| {
            let mut d = DataFrame::new();
            d.write_i64(i).write_i64(1000);
            d
        })
        .collect();
    let sums = client.call_stream_batch("sum", frames).await;
    for (i, r) in sums.into_iter().enumerate() {
        assert_eq!(r.unwrap().reader().read_i64().unwrap(), i as i64 + 1000);
    }
    // Single calls go on beside batches.
    assert_eq!(client.call_console("echo", "single").await.unwrap(), "single");
    // A batch leaves as one piece, but every call in it is a frame of its own.
    let stats = client.stats();
    assert_eq!(stats.commands_out, 500 + 3 + 2 + 100 + 1);
    assert!(
        stats.frames_out >= stats.commands_out,
        "{} frames for {} calls",
        stats.frames_out,
        stats.commands_out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_reply_times_out_alone_and_a_closed_peer_fails_them_all() {
    let server = serve_with(router(), plaintext()).await;
    let mut config = ClientConfig::default();
    config.connection.call_timeout = Duration::from_millis(500);
    let client = connect_with(&server, Router::new(), config).await.unwrap();
    let replies = within("the batch's timeout", client.call_console_batch("late", ["a", "never", "c"])).await;
    assert_eq!(replies[0].as_ref().unwrap(), "a");
    assert!(matches!(replies[1], Err(CallError::Timeout(_))), "{:?}", replies[1]);
    assert_eq!(replies[2].as_ref().unwrap(), "c");
    // The late reply, if it ever came, would find nobody: the next batch is unaffected.
    let replies = client.call_console_batch("echo", ["x", "y"]).await;
    assert!(replies.iter().all(Result::is_ok));

    client.close();
    within("closed", client.closed()).await;
    let replies = client.call_console_batch("echo", ["after", "close"]).await;
    assert!(replies.iter().all(|r| matches!(r, Err(CallError::Disconnected(_)))), "{replies:?}");
}
