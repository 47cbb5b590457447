//! Bounded growth: after a burst of 100,000 messages is delivered and
//! acknowledged, the database file is back within 10 % of its size before
//! the burst (incremental auto-vacuum, stepped by the writer); delivered
//! ciphertext is not left in the file (`secure_delete`); and a database
//! created in the old mode is switched over at startup. Driven through the
//! store API: the network path would only make it slower.
//! `cargo run -p sotto-server --example space` measures the same burst and
//! the alternatives (bench/OPTIMISATIONS.md).

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use sotto_server::store::{MailboxStore as _, SpaceTuning, SqliteStore};
use sotto_testkit::burst;

const BURST: u64 = 100_000;
const PAYLOAD: usize = 256;
/// Messages that stay queued throughout: the database before the burst.
const BACKLOG: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_shrinks_back_after_a_burst_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let group = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let group = burst::prepare(&store).await;
        burst::enqueue(&store, &group, 0, BACKLOG, PAYLOAD).await;
        store.close().await;
        group
    };
    // Reopened: the write-ahead log was checkpointed into the file.
    let store = SqliteStore::open(dir.path()).unwrap();
    let (before, _) = burst::file_sizes(dir.path());

    let took = burst::enqueue(&store, &group, BACKLOG, BURST, PAYLOAD).await;
    let (peak, peak_wal) = burst::file_sizes(dir.path());
    let (acked, drained) = burst::drain(&store, BACKLOG, 1_000).await;
    assert_eq!(acked, BURST);
    assert!(
        peak + peak_wal > before * 10,
        "the burst did not grow the file: {before} -> {peak}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (size, _) = burst::file_sizes(dir.path());
        if size * 10 <= before * 11 || Instant::now() > deadline {
            break size;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, wal) = burst::file_sizes(dir.path());
    eprintln!(
        "before {before} B; after enqueueing {BURST} x {PAYLOAD} B in {took:?}: {peak} B (+ WAL {peak_wal} B); \
         drained in {drained:?}; then {after} B (+ WAL {wal} B)"
    );
    assert!(
        after * 10 <= before * 11,
        "the database file stayed at {after} bytes after the burst was delivered; before it: {before}"
    );
    // The write-ahead log is bounded too (journal_size_limit, 16 MiB).
    assert!(wal <= 16 << 20, "the WAL kept {wal} bytes");
    // The backlog is intact.
    let (left, _) = burst::drain(&store, 0, 1_000).await;
    assert_eq!(left, BACKLOG);
    store.close().await;
}

/// Delivered ciphertext does not stay in the file: `secure_delete`
/// overwrites it. (Without it, the bytes of one acknowledged message among
/// others still queued on the same page stay in the file: checked too, so
/// the test can tell.)
#[tokio::test]
async fn delivered_ciphertext_is_overwritten() {
    assert!(
        !acknowledged_payload_left(SpaceTuning::default()).await,
        "a delivered payload is still in the database file"
    );
    let insecure = SpaceTuning {
        secure_delete: false,
        ..SpaceTuning::default()
    };
    assert!(
        acknowledged_payload_left(insecure).await,
        "without secure_delete the payload should linger (is the check blind?)"
    );
}

/// Queues 40 messages, acknowledges one, closes the store (which
/// checkpoints the log into the file) and looks for that one's bytes.
async fn acknowledged_payload_left(tuning: SpaceTuning) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_tuned(dir.path(), None, tuning).unwrap();
    let group = burst::prepare(&store).await;
    burst::enqueue(&store, &group, 0, 40, 300).await;
    let marker = burst::payload(7, 300);
    let queued = store.fetch_mailbox(burst::DEVICE, 0, 100).await.unwrap();
    let seq = queued.iter().find(|e| e.payload == marker).unwrap().seq;
    assert_eq!(store.ack(burst::DEVICE, vec![seq]).await.unwrap(), 1);
    store.close().await;
    drop(store);
    let mut bytes = std::fs::read(dir.path().join("sotto.db")).unwrap();
    bytes.extend(std::fs::read(dir.path().join("sotto.db-wal")).unwrap_or_default());
    bytes.windows(marker.len()).any(|w| w == marker.as_slice())
}

/// A database made without incremental auto-vacuum (every database before
/// this change) is switched to it when the server opens it.
#[tokio::test]
async fn an_old_database_is_switched_to_incremental_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let old = SpaceTuning {
        secure_delete: false,
        reclaim: false,
    };
    let store = SqliteStore::open_tuned(dir.path(), None, old).unwrap();
    burst::prepare(&store).await;
    store.close().await;
    drop(store);
    let mode = || -> i64 {
        let conn = rusqlite::Connection::open(dir.path().join("sotto.db")).unwrap();
        conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(mode(), 0, "the old mode");
    let store = SqliteStore::open(dir.path()).unwrap();
    store.close().await;
    drop(store);
    assert_eq!(mode(), 2, "not switched to incremental auto-vacuum");
}
