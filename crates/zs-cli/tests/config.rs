//! `zs serve --config FILE`, `ZS_*` variables and flags, in that order of precedence;
//! `zs config check` and `zs config example` as a user runs them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// Starts `zs serve` with `args` and `env`, and returns the address it says it listens on.
fn listening(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(ZS)
        .arg("serve")
        .args(args)
        .env_remove("ZS_LISTEN")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start zs serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}")).to_owned()
}

#[test]
fn the_file_sets_the_environment_overrides_it_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zserver.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "# a comment\nlisten = [\"127.0.0.2:0\"]\ndata_dir = {:?}\nmax_connections = 500\nservices = [\"accounts\"]\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap();
    assert!(listening(&["--config", config], &[]).starts_with("127.0.0.2:"));
    assert!(listening(&["--config", config], &[("ZS_LISTEN", "127.0.0.3:0")]).starts_with("127.0.0.3:"));
    let flagged =
        listening(&["--config", config, "--listen", "127.0.0.4:0"], &[("ZS_LISTEN", "127.0.0.3:0")]);
    assert!(flagged.starts_with("127.0.0.4:"), "{flagged}");
    // ZS_CONFIG names the file when --config does not.
    assert!(listening(&[], &[("ZS_CONFIG", config)]).starts_with("127.0.0.2:"));
    // The file's data_dir was used: the server's key is there.
    assert!(data.join("server.key").exists() || std::fs::read_dir(&data).unwrap().next().is_some());
}

#[test]
fn a_bad_file_is_refused_with_its_lines_and_the_example_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_connections = \"lots\"\nlisten_on = \"x\"\n").unwrap();
    let o = zs(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("line 2: unknown key `listen_on`"), "{err}");
    // The server refuses it the same way, before listening.
    let o = zs(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 2: unknown key `listen_on`"), "{}", stderr(&o));
    std::fs::write(&bad, "max_connections = \"lots\"\n").unwrap();
    let o = zs(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(stderr(&o).contains("line 1: `max_connections`: invalid value 'lots'"), "{}", stderr(&o));

    // The example: checks clean, and a server runs on it.
    let o = zs(&["config", "example"]);
    assert!(o.status.success());
    let example = String::from_utf8(o.stdout).unwrap();
    for key in
        ["listen", "max_connections", "idle_timeout", "memory_budget", "services", "inbox_cap", "plaintext"]
    {
        assert!(
            example
                .lines()
                .any(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = "))),
            "{key} missing"
        );
    }
    let file = dir.path().join("example.toml");
    std::fs::write(&file, &example).unwrap();
    let o = zs(&["config", "check", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("all valid"));
    let data = dir.path().join("data");
    let addr = listening(
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.5:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(addr.starts_with("127.0.0.5:"), "{addr}");
}
