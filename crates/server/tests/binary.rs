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
