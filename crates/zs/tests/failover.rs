//! `Failover` over real loopback servers: endpoints race and a dead one does not hold the
//! connect; a lost connection moves to another node, runs the hook again (a login), fails
//! the calls caught by the loss with a clear reason and sends idempotent ones again; a
//! draining node's clients move to the node it hints.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use zs::{CallError, ClientConfig, Failover, FailoverConfig, Router, ServerHandle};

/// A node that answers `who` with its name, `maybe` (marked idempotent by the clients) with
/// its name too unless it is `a`, and never answers `hang`; each call of `hang` or of
/// `maybe` on `a` is told on `calls`.
async fn node(name: &'static str, calls: mpsc::UnboundedSender<&'static str>) -> ServerHandle {
    let mut r = Router::new();
    r.console("who", move |_, _| name.to_string());
    let tx = calls.clone();
    r.console_async("hang", move |_, _| {
        let _ = tx.send("hang");
        std::future::pending::<String>()
    });
    r.console_async("maybe", move |_, _| {
        let tx = calls.clone();
        async move {
            if name == "a" {
                let _ = tx.send("maybe");
                std::future::pending::<()>().await;
            }
            name.to_string()
        }
    });
    serve_with(r, plaintext()).await
}

fn config(endpoints: &[String], hooks: Arc<AtomicUsize>) -> FailoverConfig {
    let mut c = FailoverConfig::new(endpoints.to_vec(), ClientConfig::secured(zs::ClientSecurity::Plaintext));
    c.idempotent.insert("maybe".into());
    c.on_connect = Some(Arc::new(move |peer: zs::Peer| {
        let hooks = hooks.clone();
        Box::pin(async move {
            // What a login would do: one call on the new connection before any other.
            peer.call_console("who", "").await.map_err(|e| e.to_string())?;
            hooks.fetch_add(1, Relaxed);
            Ok(())
        })
    }));
    c
}

/// An address on which nothing listens (its port was just freed).
fn dead() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_lost_node_is_left_for_another_and_calls_caught_by_it_fail_or_go_again() {
    let (tx, mut calls) = mpsc::unbounded_channel();
    let a = node("a", tx.clone()).await;
    let b = node("b", tx).await;
    let hooks = Arc::new(AtomicUsize::new(0));
    let endpoints = [dead(), a.local_addr().to_string(), b.local_addr().to_string()];
    let f = within("connect", Failover::connect(config(&endpoints, hooks.clone()))).await.unwrap();
    assert_eq!(f.connected_to(), Some(a.local_addr()), "the dead endpoint is passed over");
    assert_eq!(f.call_console("who", "").await.unwrap(), "a");
    assert_eq!(hooks.load(Relaxed), 1);

    // Two calls out on a when it dies: one not idempotent, one idempotent.
    let (f1, f2) = (f.clone(), f.clone());
    let hang = tokio::spawn(async move { f1.call_console("hang", "").await });
    let maybe = tokio::spawn(async move { f2.call_console("maybe", "").await });
    let mut seen = vec![within("calls reach a", calls.recv()).await.unwrap()];
    seen.push(within("calls reach a", calls.recv()).await.unwrap());
    seen.sort();
    assert_eq!(seen, ["hang", "maybe"]);
    for peer in a.peers() {
        peer.close();
    }
    let lost = within("the lost call", hang).await.unwrap();
    match lost {
        Err(CallError::Disconnected(why)) => assert!(why.contains("may or may not have run"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(within("the call sent again", maybe).await.unwrap().unwrap(), "b");
    within("reconnected", f.reconnected_after(1)).await;
    assert_eq!(f.connected_to(), Some(b.local_addr()));
    assert_eq!(f.call_console("who", "").await.unwrap(), "b");
    assert_eq!(hooks.load(Relaxed), 2, "the hook ran on the new connection");
    f.close();
}

#[tokio::test]
async fn a_draining_node_sends_its_failover_clients_to_the_node_it_hints() {
    let (tx, _calls) = mpsc::unbounded_channel();
    let a = node("a", tx.clone()).await;
    let b = node("b", tx.clone()).await;
    let c = node("c", tx).await;
    let hooks = Arc::new(AtomicUsize::new(0));
    let endpoints = [a.local_addr().to_string(), b.local_addr().to_string(), c.local_addr().to_string()];
    let f = within("connect", Failover::connect(config(&endpoints, hooks))).await.unwrap();
    assert_eq!(f.connected_to(), Some(a.local_addr()));
    let hint = c.local_addr().to_string();
    let drained = tokio::spawn({
        let a = a.clone();
        async move { a.drain(&hint, Duration::from_secs(60)).await }
    });
    within("moved", f.reconnected_after(1)).await;
    assert_eq!(f.connected_to(), Some(c.local_addr()), "to the hinted node, not the next endpoint");
    assert_eq!(f.call_console("who", "").await.unwrap(), "c");
    // Once its client has gone, the drained node stops.
    assert_eq!(within("a drained", drained).await.unwrap(), 0);
    f.close();
}

#[tokio::test]
async fn no_endpoint_answering_is_an_error_and_calls_wait_then_fail_clearly() {
    let endpoints = [dead(), dead()];
    let e = Failover::connect(config(&endpoints, Arc::default())).await.unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
    let none = Failover::connect(FailoverConfig::new(Vec::<String>::new(), ClientConfig::default())).await;
    assert!(none.unwrap_err().to_string().contains("no endpoint"));

    // A node that goes for good: a call waits for a connection, then says none came.
    let (tx, _calls) = mpsc::unbounded_channel();
    let a = node("a", tx).await;
    let mut c = config(&[a.local_addr().to_string()], Arc::default());
    c.wait = Duration::from_millis(300);
    let f = within("connect", Failover::connect(c)).await.unwrap();
    a.shutdown().await;
    wait_until("the loss is seen", || f.connected_to().is_none()).await;
    let e = within("the call", f.call_console("who", "")).await.unwrap_err();
    assert!(e.to_string().contains("no node of the cluster answered"), "{e}");
}
