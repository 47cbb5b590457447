//! Secrets stay private on disk: the server's data directory (log and legal
//! keys, queued messages) and a profile (identity and device keys, MLS
//! secrets, history) are owner-only, and a looser one is tightened when it
//! is opened.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sotto_client::Client;
use sotto_testkit::{TestServer, register};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The database file and its WAL companions, where they exist.
fn db_files(dir: &Path) -> Vec<std::path::PathBuf> {
    ["sotto.db", "sotto.db-wal", "sotto.db-shm"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_data_and_profiles_are_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let server = TestServer::start_in(&data).await;
    let profile = parent.path().join("alice");
    let mut alice = Client::register(&profile, "alice", &server.url())
        .await
        .unwrap();
    alice.disconnect().await;
    for dir in [&data, &profile] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        let files = db_files(dir);
        assert!(files.len() >= 2, "{files:?}");
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_left_readable_is_made_private_when_opened() {
    let server = TestServer::start().await;
    let (mut alice, dir) = register(&server.url(), "alice").await;
    alice.disconnect().await;
    drop(alice);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.path().join("sotto.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _alice = Client::open(dir.path()).unwrap();
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&db), 0o600);
}
