//! `zs file` as a user meets it: put, ls, stat, get (over several connections), mv, rm; and
//! an upload whose server is killed with SIGKILL midway, then restarted: the same command
//! resumes it, and no half file is ever visible under its name.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use zs_bench::fault_proxy::{FaultProxy, Faults};
use zs_bench::source::Noise;

const FAST: [&str; 2] = ["--plaintext", "--insecure-fast-hashing"];
const ADMIN: (&str, &str) = ("ZS_ADMIN_PASSWORD", "the admin password");

/// `zs file ARGS` against `addr` as admin.
fn file(addr: &str, args: &[&str]) -> Output {
    file_cmd(addr, args).output().expect("run zs file")
}

fn file_cmd(addr: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(ZS);
    for var in ["ZS_PASSWORD", "ZS_USER", "ZS_SERVER"] {
        cmd.env_remove(var);
    }
    cmd.args(["file", "--server", addr, "--user", "admin", "--plaintext"])
        .args(args)
        .env("ZS_PASSWORD", ADMIN.1)
        .stdin(Stdio::null());
    cmd
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "zs file failed: {}", stderr(&o));
    stdout(&o)
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Noise::new(len as u64, 1).fill(&mut out);
    out
}

#[test]
fn zs_file_puts_lists_gets_moves_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_env(dir.path(), &FAST, &[ADMIN]);
    let work = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(3 << 20);
    let local = work.path().join("data.bin");
    std::fs::write(&local, &bytes).unwrap();
    let put = ok(file(&s.addr, &["put", local.to_str().unwrap(), "home/data.bin"]));
    assert!(put.contains("3145728 bytes, sent"), "{put}");
    ok(file(&s.addr, &["mkdir", "-p", "home/a/b"]));
    assert!(ok(file(&s.addr, &["ls", "home"])).contains("data.bin"));
    let stat = ok(file(&s.addr, &["stat", "home/data.bin"]));
    assert!(stat.contains(&blake3::hash(&bytes).to_hex().to_string()), "{stat}");
    let back = work.path().join("back.bin");
    let got = ok(file(&s.addr, &["get", "home/data.bin", back.to_str().unwrap(), "--connections", "3"]));
    assert!(got.contains("over 3 connection(s)"), "{got}");
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    // Again: the content is on the server already.
    let again = ok(file(&s.addr, &["put", local.to_str().unwrap(), "home/copy.bin"]));
    assert!(again.contains("instantly"), "{again}");
    ok(file(&s.addr, &["mv", "home/copy.bin", "home/a/b/c.bin"]));
    ok(file(&s.addr, &["rm", "-r", "home/a"]));
    let listing = ok(file(&s.addr, &["ls", "home"]));
    assert!(!listing.contains("a/"), "{listing}");
    let bad = file(&s.addr, &["stat", "home/../../etc/passwd"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid argument"), "{}", stderr(&bad));
    let wrong = file(&s.addr, &["get", "home/data.bin", back.to_str().unwrap()]);
    assert!(stderr(&wrong).contains("exists"), "a local file is not replaced: {}", stderr(&wrong));
}

fn part_len(files: &Path) -> Option<u64> {
    let dir = std::fs::read_dir(files.join(".partial")).ok()?;
    dir.flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "part"))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

#[test]
fn an_upload_cut_by_a_killed_server_resumes_after_restart() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let work = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(24 << 20);
    let local = work.path().join("big.bin");
    std::fs::write(&local, &bytes).unwrap();

    let mut s = serve_env(dir.path(), &FAST, &[ADMIN]);
    // Slowed to 4 MiB/s so the kill lands midway.
    let faults = Faults { bytes_per_s: Some(4 << 20), ..Faults::default() };
    let proxy = rt.block_on(FaultProxy::start(s.addr.parse().unwrap(), faults)).unwrap();
    let proxied = proxy.addr().to_string();
    let mut upload = file_cmd(&proxied, &["put", local.to_str().unwrap(), "home/big.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while part_len(&files).unwrap_or(0) < 4 << 20 {
        assert!(Instant::now() < deadline, "the upload never got going");
        assert!(!files.join("private/admin/big.bin").exists(), "no half file under its name");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let status = upload.wait().unwrap();
    assert!(!status.success(), "the cut upload reports failure");
    let kept = part_len(&files).expect("the partial upload survives");
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");
    assert!(!files.join("private/admin/big.bin").exists(), "no half file under its name");
    drop(proxy);

    let s = serve_env(dir.path(), &FAST, &[ADMIN]);
    let again = ok(file(&s.addr, &["put", local.to_str().unwrap(), "home/big.bin"]));
    let from: u64 = again
        .split("resumed from byte ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second run resumed: {again}"));
    assert!(from > 0 && from <= kept, "resumed from {from}, {kept} were kept");
    assert_eq!(std::fs::read(files.join("private/admin/big.bin")).unwrap(), bytes);
    assert_eq!(part_len(&files), None, "the partial upload is gone");
}
