//! Accounts as an operator meets them: the `admin` made on first start, `zs user` offline
//! and through a running server, `zs call --user`, and registrations that survive the
//! server being killed with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The server flags of these tests: plaintext, and hashing cheap enough for a loaded CI.
const FAST: [&str; 2] = ["--plaintext", "--insecure-fast-hashing"];

/// `zs ARGS` with only the environment given (none of the caller's `ZS_*`), and `input` on
/// standard input.
fn zs_env(args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let mut cmd = Command::new(ZS);
    for var in ["ZS_PASSWORD", "ZS_NEW_PASSWORD", "ZS_USER", "ZS_SERVER", "ZS_DATA_DIR"] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The rest of what a killed server printed.
fn rest_of_output(mut s: Served) -> String {
    let _ = s.child.kill();
    let _ = s.child.wait();
    let mut rest = String::new();
    while s.out.read_line(&mut rest).unwrap_or(0) > 0 {}
    rest
}

#[test]
fn first_start_makes_an_admin_and_zs_user_manages_accounts_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_env(dir.path(), &FAST, &[]);
    let mut line = String::new();
    s.out.read_line(&mut line).unwrap();
    let admin_pw = line
        .strip_prefix("created account admin with password ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("third line: {line:?}"))
        .to_owned();
    let addr = s.addr.clone();
    let as_admin = [("ZS_PASSWORD", admin_pw.as_str())];
    let online = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = args.to_vec();
        a.extend(["--server", &addr, "--plaintext"]);
        zs_env(&a, env, "")
    };

    // zs call --user logs in first; a wrong password is refused with a clear message.
    let o = zs_env(&["call", &addr, "--plaintext", "--user", "admin", "account.whoami"], &as_admin, "");
    assert!(o.status.success(), "{}", stderr(&o));
    let me: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(me["user"], "admin");
    assert!(me["roles"].as_array().unwrap().iter().any(|r| r == "admin"), "{me}");
    let o = zs_env(
        &["call", &addr, "--plaintext", "--user", "admin", "echo", "x"],
        &[("ZS_PASSWORD", "wrong")],
        "",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot log in as admin"), "{}", stderr(&o));
    // Admin commands need an admin login.
    let o = zs_env(&["call", &addr, "--plaintext", "account.list"], &[], "");
    assert!(!o.status.success() && stderr(&o).contains("not logged in"), "{}", stderr(&o));

    // Through the server: the new account's password from ZS_NEW_PASSWORD.
    let o = online(
        &["user", "add", "bob", "--user", "admin"],
        &[as_admin[0], ("ZS_NEW_PASSWORD", "bobs password")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "account bob created");
    let o = online(&["user", "list", "--user", "admin"], &as_admin);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l == "bob\tuser"), "{}", stdout(&o));
    let bob = [("ZS_PASSWORD", "bobs password")];
    let o = zs_env(&["call", &addr, "--plaintext", "--user", "bob", "account.whoami"], &bob, "");
    assert!(o.status.success(), "{}", stderr(&o));
    // bob is no administrator.
    let o = online(&["user", "list", "--user", "bob"], &bob);
    assert!(!o.status.success() && stderr(&o).contains("forbidden"), "{}", stderr(&o));
    let o = online(&["user", "disable", "bob", "--user", "admin"], &as_admin);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = zs_env(&["call", &addr, "--plaintext", "--user", "bob", "echo", "x"], &bob, "");
    assert!(!o.status.success(), "a disabled account cannot log in");

    // Offline, on the data directory of the stopped server: it says "printed once".
    assert!(!rest_of_output(s).contains("created account"));
    let data = dir.path().to_str().unwrap();
    let o = zs_env(&["user", "list", "--data-dir", data], &[], "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l == "bob\tuser (disabled)"), "{}", stdout(&o));
    let o = zs_env(&["user", "enable", "bob", "--data-dir", data], &[], "");
    assert!(o.status.success(), "{}", stderr(&o));
    // No terminal: the password is a line of standard input; too short is refused.
    let o = zs_env(&["user", "add", "carol", "--data-dir", data], &[], "short\n");
    assert!(!o.status.success() && stderr(&o).contains("at least 8"), "{}", stderr(&o));
    let o =
        zs_env(&["user", "add", "carol", "--role", "admin", "--data-dir", data], &[], "carols password\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let o =
        zs_env(&["user", "passwd", "bob", "--data-dir", data], &[("ZS_PASSWORD", "bobs new password")], "");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = zs_env(&["user", "del", "nobody", "--data-dir", data], &[], "");
    assert!(!o.status.success() && stderr(&o).contains("no account named nobody"), "{}", stderr(&o));

    // Restarted: no new admin password, and the offline changes are what it serves.
    let mut s = serve_env(dir.path(), &FAST, &[]);
    let addr = s.addr.clone();
    for (user, pw) in [("bob", "bobs new password"), ("carol", "carols password")] {
        let o = zs_env(
            &["call", &addr, "--plaintext", "--user", user, "account.whoami"],
            &[("ZS_PASSWORD", pw)],
            "",
        );
        assert!(o.status.success(), "{user}: {}", stderr(&o));
    }
    // The offline tool refuses a store the running server holds, and says what to do.
    let o = zs_env(&["user", "list", "--data-dir", data], &[], "");
    assert!(!o.status.success() && stderr(&o).contains("--server"), "{}", stderr(&o));
    let _ = s.child.kill();
    let mut rest = String::new();
    while s.out.read_line(&mut rest).unwrap_or(0) > 0 {}
    assert!(!rest.contains("created account"), "{rest}");
}

#[test]
fn acknowledged_registrations_survive_the_server_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let admin = [("ZS_ADMIN_PASSWORD", "the admin password")];
    let mut s =
        serve_env(dir.path(), &["--plaintext", "--insecure-fast-hashing", "--allow-register"], &admin);
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let total = 1000;
    let kill_after = 400;
    let answered = rt.block_on(async {
        let config = zs::ClientConfig::secured(zs::ClientSecurity::Plaintext);
        let client = zs::Client::connect_with(addr, zs::Router::new(), config).await.unwrap();
        let client = Arc::new(client);
        // 8 registrations in flight at a time; the server is killed with SIGKILL once 400
        // are acknowledged, while the others are under way.
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (client, acked, next) = (client.clone(), acked.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= total {
                            return;
                        }
                        let name = format!("user{i:04}");
                        let req =
                            serde_json::json!({ "user": name, "password": format!("password of {name}") });
                        let call = client.call_console_timeout(
                            "account.register",
                            req.to_string(),
                            Duration::from_secs(30),
                        );
                        match call.await {
                            Ok(_) => {
                                acked.lock().unwrap().insert(name);
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().len() < kill_after && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        s.child.kill().unwrap(); // SIGKILL
        for w in workers {
            w.await.unwrap();
        }
        acked.lock().unwrap().len()
    });
    assert!(answered >= kill_after, "only {answered} registrations acknowledged");
    assert!(answered < total, "the kill came before the last registration");
    let _ = s.child.wait();

    // Every acknowledged registration is in the store, whole: offline, then served again.
    let data = dir.path().to_str().unwrap();
    let o = zs_env(&["user", "list", "--data-dir", data], &[], "");
    assert!(o.status.success(), "the store opens after the kill: {}", stderr(&o));
    let listed: BTreeSet<String> =
        stdout(&o).lines().filter_map(|l| l.split('\t').next()).map(str::to_owned).collect();
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<_> = acked.difference(&listed).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(listed.contains("admin"));
    let s = serve_env(dir.path(), &FAST, &admin);
    let last = acked.iter().next_back().unwrap();
    let o = zs_env(
        &["call", &s.addr, "--plaintext", "--user", last, "account.whoami"],
        &[("ZS_PASSWORD", &format!("password of {last}"))],
        "",
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_shortest_password_is_set_by_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let admin = [("ZS_ADMIN_PASSWORD", "the admin password")];
    let s =
        serve_env(dir.path(), &[&FAST[..], &["--allow-register", "--min-password", "12"]].concat(), &admin);
    let register = |password: &str| {
        let req = format!(r#"{{"user":"carol","password":"{password}"}}"#);
        zs_env(&["call", &s.addr, "--plaintext", "account.register", &req], &[], "")
    };
    let short = register("eleven char");
    assert!(!short.status.success(), "an 11-character password was taken: {}", stdout(&short));
    assert!(stderr(&short).contains("at least 12 characters"), "{}", stderr(&short));
    let long = register("twelve chars");
    assert!(long.status.success(), "a 12-character password was refused: {}", stderr(&long));
    // Out of range is a clear error at start.
    let o = zs_env(&["serve", "--plaintext", "--min-password", "0"], &[], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--min-password"), "{}", stderr(&o));
}
