//! The built `sotto-server` binary: what it prints, that it serves, and that
//! SIGTERM stops it cleanly.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::process::Stdio;

use sotto_testkit::wire::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_prints_its_address_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = first
        .strip_prefix("sotto-server listening on http://")
        .expect(&first)
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0);
    let second = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        second,
        format!("connect with: sotto register NAME --server http://{addr}")
    );
    let third = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        third.starts_with(&format!("in a browser: http://{addr}/ ")),
        "{third}"
    );

    assert!(http_get(addr, "/health").await.ends_with("ok"));
    let mut client = Client::connect(addr).await;
    assert_done(&client.register(&Account::new("alice")).await);
    assert!(dir.path().join("sotto.db").exists());

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("server did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// `config example` prints a file `check-config` accepts; a file's keys take
/// effect (registration closed, a retention), a flag overrides its key, and
/// a mistake is named with its line.
#[tokio::test]
async fn the_config_file_is_read_and_flags_override_it() {
    use sotto_testkit::ServerProcess;
    let server_bin = env!("CARGO_BIN_EXE_sotto-server");
    let dir = tempfile::tempdir().unwrap();
    let example = std::process::Command::new(server_bin)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(example.status.success());
    let example_file = dir.path().join("example.toml");
    std::fs::write(&example_file, &example.stdout).unwrap();
    let checked = std::process::Command::new(server_bin)
        .arg("check-config")
        .arg(&example_file)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");

    let config = dir.path().join("sotto.toml");
    std::fs::write(&config, "[registration]\npolicy = \"closed\"\n").unwrap();
    let config_arg = config.to_str().unwrap();
    {
        let data = dir.path().join("closed");
        let server = ServerProcess::spawn_with_args(&data, &["--config", config_arg]);
        let addr: SocketAddr = server
            .url()
            .strip_prefix("http://")
            .unwrap()
            .parse()
            .unwrap();
        let mut client = Client::connect(addr).await;
        assert_error(
            &client.register(&Account::new("alice")).await,
            sotto_proto::v1::ErrorCode::RegistrationClosed,
        );
    }
    {
        // The flag wins over the file.
        let data = dir.path().join("open");
        let server = ServerProcess::spawn_with_args(
            &data,
            &["--config", config_arg, "--registration", "open"],
        );
        let addr: SocketAddr = server
            .url()
            .strip_prefix("http://")
            .unwrap()
            .parse()
            .unwrap();
        let mut client = Client::connect(addr).await;
        assert_done(&client.register(&Account::new("alice")).await);
    }

    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\nretention = 30\n",
    )
    .unwrap();
    let refused = std::process::Command::new(server_bin)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("line 4") && stderr.contains("retention"),
        "{stderr}"
    );
    // The server refuses to start on it, with the same message.
    let started = std::process::Command::new(server_bin)
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(!started.status.success());
    assert!(String::from_utf8_lossy(&started.stderr).contains("line 4"));
}

/// The operator's bookkeeping: invites are listed by hash (never the code)
/// and revoked by code or hash prefix; `stats` prints totals, and neither
/// names an account.
#[tokio::test]
async fn invites_are_listed_and_revoked_and_stats_are_totals() {
    use sotto_proto::v1::{ErrorCode, client_frame::Body};
    use sotto_testkit::ServerProcess;
    let server_bin = env!("CARGO_BIN_EXE_sotto-server");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(server_bin)
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let server = ServerProcess::spawn_with_args(&data, &["--registration", "invite"]);
    let (ok, codes, _) = run(&["invite", "create", "--count", "3"]);
    assert!(ok);
    let codes: Vec<&str> = codes.lines().collect();
    assert_eq!(codes.len(), 3);

    let addr: SocketAddr = server
        .url()
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    let mut client = Client::connect(addr).await;
    let alice = Account::new("alice");
    let Body::Register(mut register) = alice.register(&client.nonce) else {
        unreachable!()
    };
    register.invite_code = codes[0].to_owned();
    assert_done(&client.request(Body::Register(register)).await);

    let (ok, listed, _) = run(&["invite", "list"]);
    assert!(ok);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert_eq!(listed.lines().filter(|l| l.ends_with(" no")).count(), 2);
    for code in &codes {
        assert!(!listed.contains(code), "a code was printed: {listed}");
    }
    // Revoke one by its code, one by its hash prefix; a used one stays.
    assert!(run(&["invite", "revoke", codes[1]]).0);
    let unused = listed
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(" no"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .find(|prefix| {
            !sotto_server::store::invite_hash(codes[1])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .starts_with(prefix)
        })
        .unwrap();
    assert!(run(&["invite", "revoke", &unused]).0);
    let (ok, _, err) = run(&["invite", "revoke", codes[0]]);
    assert!(!ok && err.contains("already used or revoked"), "{err}");
    let (_, listed, _) = run(&["invite", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let mut late = Client::connect(addr).await;
    let Body::Register(mut register) = Account::new("bob").register(&late.nonce) else {
        unreachable!()
    };
    register.invite_code = codes[2].to_owned();
    assert_error(
        &late.request(Body::Register(register)).await,
        ErrorCode::RegistrationClosed,
    );

    let (ok, stats, _) = run(&["stats"]);
    assert!(ok);
    assert!(stats.contains("accounts:         1"), "{stats}");
    assert!(stats.contains("active devices:   1"), "{stats}");
    assert!(!stats.contains("alice"));
}

/// Packaging: both binaries print completion scripts and man pages.
#[test]
fn completions_and_man_pages_are_generated() {
    let run = |binary: &std::path::Path, args: &[&str]| {
        let output = std::process::Command::new(binary)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let server = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sotto-server"));
    let client = sotto_testkit::binary("sotto");
    assert!(run(&server, &["man"]).contains(".TH sotto-server 1"));
    assert!(run(&server, &["completions", "bash"]).contains("complete -F _sotto__server"));
    assert!(run(&client, &["man"]).contains(".TH sotto 1"));
    let bash = run(&client, &["completions", "bash"]);
    assert!(bash.contains("_sotto()") && bash.contains("register"));
    assert!(run(&client, &["completions", "zsh"]).starts_with("#compdef sotto"));
}

/// The systemd unit in packaging/ passes `systemd-analyze verify` (with
/// this build's binary in its ExecStart), where systemd-analyze exists.
#[test]
fn the_systemd_unit_verifies() {
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        println!("skipped: systemd-analyze is not installed here");
        return;
    }
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../packaging/sotto-server.service"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sotto-server.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/sotto-server",
            env!("CARGO_BIN_EXE_sotto-server"),
        ),
    )
    .unwrap();
    let verified = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// `--log-format json` writes one JSON object per line on stderr.
#[tokio::test]
async fn logs_can_be_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).expect(&first);
    assert!(line["level"].is_string(), "{first}");
    assert!(line["fields"]["message"].is_string(), "{first}");
    child.kill().await.unwrap();
}

/// `--bus` with no NATS server behind it: the server starts, serves and
/// says so (it keeps retrying); a bus that is not `nats://` is refused.
#[tokio::test]
async fn an_unreachable_bus_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bus = format!("nats://sotto:bus-password@{}", closed.local_addr().unwrap());
    drop(closed);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--listen", "127.0.0.1:0", "--bus", &bus, "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = first
        .strip_prefix("sotto-server listening on http://")
        .expect(&first)
        .parse()
        .unwrap();
    let mut client = Client::connect(addr).await;
    assert_done(&client.register(&Account::new("alice")).await);
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let warned = tokio::time::timeout(WAIT, async {
        while let Some(line) = errors.next_line().await.unwrap() {
            if line.contains("NATS bus is unreachable") {
                return line;
            }
        }
        panic!("no warning about the bus");
    })
    .await
    .expect("no warning about the bus");
    child.kill().await.unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = errors.next_line().await {
        rest.push_str(&line);
    }
    assert!(
        !warned.contains("bus-password") && !rest.contains("bus-password"),
        "the bus password is logged: {warned} {rest}"
    );

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--bus", "http://127.0.0.1:4222", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nats://HOST:PORT"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
