//! The admin listener's status page in headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs): it loads, and its numbers change while a load runs.

mod common;

use std::io::BufRead;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use common::*;

/// The text of the element with `id` in `dom`.
fn element(dom: &str, id: &str) -> String {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in:\n{dom}"));
    let open = start + dom[start..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    dom[open..close].to_owned()
}

#[test]
fn the_status_page_shows_numbers_that_change_while_a_load_runs() {
    let mut s = serve_with(&["--services", "none", "--admin", "127.0.0.1:0"]);
    let mut line = String::new();
    s.out.read_line(&mut line).unwrap();
    let admin = line
        .strip_prefix("admin API on http://")
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();

    // A load: one client calling `echo` back to back until the page has been read.
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, key) = (s.addr.clone(), s.client_args[1].clone());
    let halt = stop.clone();
    let load = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let key: zs::Fingerprint = key.parse().unwrap();
            let client = zs::Client::connect(addr.as_str(), zs::ClientSecurity::from(key)).await.unwrap();
            let mut calls = 0u64;
            while !halt.load(Relaxed) {
                client.call_console("echo", "load").await.unwrap();
                calls += 1;
            }
            calls
        })
    });

    // Five seconds of the page's own clock (it polls once a second); its fetches run in
    // real time meanwhile.
    // A profile of its own, and nothing that reaches beyond this machine (its closed
    // network refuses Chromium's background connections).
    let profile = tempfile::tempdir().unwrap();
    let browser = Command::new("timeout")
        .args(["120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--disable-quic", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://{admin}/"))
        .output()
        .expect("chromium: install it (apt-get install chromium; .ci/run does)");
    stop.store(true, Relaxed);
    let calls = load.join().unwrap();
    let dom = String::from_utf8_lossy(&browser.stdout).to_string();
    assert!(
        browser.status.success() && dom.contains("zserver status"),
        "chromium: {}\n{dom}",
        String::from_utf8_lossy(&browser.stderr)
    );

    // The totals it saw, poll by poll: several, and growing with the load.
    let observed: Vec<u64> = serde_json::from_str(&element(&dom, "observed"))
        .unwrap_or_else(|e| panic!("#observed ({e}) in:\n{dom}"));
    assert!(observed.len() >= 3, "polls: {observed:?}");
    assert!(observed.windows(2).all(|w| w[0] <= w[1]) && observed.last() > observed.first(), "{observed:?}");
    assert!(*observed.last().unwrap() <= calls + 1, "{observed:?} against {calls} calls made");
    assert_eq!(element(&dom, "connections"), "1", "the load's one connection");
    assert_ne!(element(&dom, "calls-per-s"), "-", "a rate once two polls were in");
    assert!(dom.contains("<td>echo</td>"), "the commands table lists echo:\n{dom}");
    assert_eq!(element(&dom, "error"), "", "no error shown");
}
