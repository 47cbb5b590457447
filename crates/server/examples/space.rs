//! What a message burst does to the database file, and what giving the
//! space back costs: `n` messages queued, then delivered and acknowledged,
//! through the real store (no network), under one of three policies:
//!
//! - `incremental` (the server's): incremental auto-vacuum stepped by the
//!   writer;
//! - `vacuum`: no auto-vacuum; one `VACUUM` after the burst (what a periodic
//!   `VACUUM` would do);
//! - `none`: the file keeps its largest size.
//!
//! A backlog of `--backlog` messages (default 2,000) stays queued throughout.
//! While the space is given back, a probe queues one message every 5 ms
//! and records its worst latency: how long writes stall.
//!
//! ```sh
//! cargo run -p sotto-server --example space -- --reclaim incremental
//! cargo run -p sotto-server --example space -- --reclaim vacuum --secure-delete off
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)] // a measurement tool: fails loudly

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sotto_server::store::{GroupId, SpaceTuning, SqliteStore};
use sotto_testkit::burst;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reclaim {
    Incremental,
    Vacuum,
    None,
}

struct Options {
    messages: u64,
    backlog: u64,
    payload: usize,
    reclaim: Reclaim,
    secure_delete: bool,
}

fn options() -> Options {
    let mut options = Options {
        messages: 100_000,
        backlog: 2_000,
        payload: 256,
        reclaim: Reclaim::Incremental,
        secure_delete: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--messages" => options.messages = value.parse().expect("--messages N"),
            "--backlog" => options.backlog = value.parse().expect("--backlog N"),
            "--payload" => options.payload = value.parse().expect("--payload BYTES"),
            "--reclaim" => {
                options.reclaim = match value {
                    "incremental" => Reclaim::Incremental,
                    "vacuum" => Reclaim::Vacuum,
                    "none" => Reclaim::None,
                    other => panic!("--reclaim incremental|vacuum|none, not {other}"),
                }
            }
            "--secure-delete" => options.secure_delete = value == "on",
            other => panic!("unknown option {other}"),
        }
    }
    options
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Queues one message every 5 ms until `stop`; the worst latency seen.
async fn probe(store: SqliteStore, group: GroupId, stop: Arc<AtomicBool>) -> Duration {
    let mut worst = Duration::ZERO;
    let mut n = 1u64 << 40;
    while !stop.load(Ordering::Relaxed) {
        let took = burst::enqueue(&store, &group, n, 1, 64).await;
        worst = worst.max(took);
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worst
}

fn vacuum(path: &Path) -> Duration {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(60)).unwrap();
    let started = Instant::now();
    conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let tuning = SpaceTuning {
        secure_delete: options.secure_delete,
        reclaim: options.reclaim == Reclaim::Incremental,
    };
    // A backlog that stays queued: the database before the burst.
    let backlog = options.backlog;
    let group = {
        let store = SqliteStore::open_tuned(dir.path(), None, tuning).unwrap();
        let group = burst::prepare(&store).await;
        burst::enqueue(&store, &group, 0, backlog, options.payload).await;
        store.close().await;
        group
    };
    // Reopened: the write-ahead log was checkpointed into the file.
    let store = SqliteStore::open_tuned(dir.path(), None, tuning).unwrap();
    let (before, _) = burst::file_sizes(dir.path());

    let enqueued = burst::enqueue(&store, &group, backlog, options.messages, options.payload).await;
    let (peak, peak_wal) = burst::file_sizes(dir.path());
    let (acked, drained) = burst::drain(&store, backlog, 1_000).await;
    let (after_drain, _) = burst::file_sizes(dir.path());

    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(store.clone(), group.clone(), Arc::clone(&stop)));
    let reclaim_started = Instant::now();
    let vacuum_took = match options.reclaim {
        Reclaim::Vacuum => {
            let path = store.path().to_path_buf();
            Some(
                tokio::task::spawn_blocking(move || vacuum(&path))
                    .await
                    .unwrap(),
            )
        }
        Reclaim::Incremental => {
            let deadline = Instant::now() + Duration::from_secs(60);
            while burst::file_sizes(dir.path()).0 * 10 > before * 11 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }
        Reclaim::None => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            None
        }
    };
    let reclaimed_in = reclaim_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst_write = prober.await.unwrap();
    let (after, after_wal) = burst::file_sizes(dir.path());
    store.close().await;

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "reclaim={:?} secure_delete={} messages={} backlog={} payload={}B",
        options.reclaim, options.secure_delete, options.messages, backlog, options.payload
    );
    println!(
        "  enqueue {:.0} msg/s ({:.2?}); fetch+ack {:.0} msg/s ({:.2?})",
        rate(options.messages, enqueued),
        enqueued,
        rate(acked, drained),
        drained
    );
    println!(
        "  sotto.db: before {:.2} MiB, peak {:.2} MiB (+ WAL {:.2} MiB), after ack {:.2} MiB, after reclaim {:.2} MiB (+ WAL {:.2} MiB)",
        mib(before),
        mib(peak),
        mib(peak_wal),
        mib(after_drain),
        mib(after),
        mib(after_wal)
    );
    println!(
        "  reclaim took {reclaimed_in:.2?}{}; worst probe write meanwhile {worst_write:.2?}",
        vacuum_took.map_or_else(String::new, |t| format!(" (VACUUM {t:.2?})"))
    );
}
