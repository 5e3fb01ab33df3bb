//! Resumable sessions over real loopback links cut by a fault-injecting proxy.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{serve_with, within};
use zs::{ClientConfig, Router, ServerConfig, SessionConfig, SessionEvent};
use zs_bench::fault_proxy::{FaultProxy, Faults};

fn echo_router() -> Router {
    let mut r = Router::new();
    r.console("echo", |_, text| text.to_owned());
    r
}

fn session_client(server: &zs::ServerHandle) -> ClientConfig {
    ClientConfig {
        security: server.client_security(),
        session: Some(SessionConfig { min_backoff: Duration::from_millis(5), ..SessionConfig::default() }),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn calls_carry_on_across_cut_links() {
    let server = serve_with(echo_router(), ServerConfig::default()).await;
    let proxy = FaultProxy::start(server.local_addr(), Faults::default()).await.unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut router = Router::new();
    let seen = events.clone();
    router.on_session(move |_, e| seen.lock().unwrap().push(e.clone()));
    let client = zs::Client::connect_with(proxy.addr(), router, session_client(&server)).await.unwrap();
    assert!(client.session().is_some());
    for round in 0..20u32 {
        let calls: Vec<_> = (0..50).map(|i| client.call_console("echo", format!("{round}-{i}"))).collect();
        if round % 2 == 1 {
            proxy.cut_all();
        }
        for (i, c) in calls.into_iter().enumerate() {
            let reply = within("a call across a cut", c).await.expect("answered");
            assert_eq!(reply.as_str(), format!("{round}-{i}"));
        }
    }
    let status = client.session().unwrap();
    assert!(status.resumes >= 5, "{status:?}");
    assert_eq!(server.connection_count(), 1);
    let ev = events.lock().unwrap();
    assert!(ev.iter().any(|e| matches!(e, SessionEvent::Resumed { .. })), "{ev:?}");
}
