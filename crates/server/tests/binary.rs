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
