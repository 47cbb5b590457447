//! Measures the directory's costs: publish time, proof sizes, audit time.
//!
//! ```text
//! cargo run --release -p sotto-directory --example directory_cost -- 100000 1000
//! ```
//! The first argument is how many accounts the first epoch publishes, the
//! second how many of them change in the next epoch. Timing is a benchmark,
//! not a test: it prints and asserts nothing but correctness.
//!
//! Measured 2026-12-01 on the 2-core development machine (shared, so timings
//! are rough), release build:
//!
//! | accounts | changed in epoch 2 | publish epoch 1 | publish epoch 2 | lookup proof (median / max) | audit proof 1→2 | audit build / verify |
//! |---|---|---|---|---|---|---|
//! | 10,000 | 100 | 1.33 s | 83 ms | 3,020 / 3,510 B | 70 KB | 5 ms / 13 ms |
//! | 100,000 | 100 | ≈17 s | — | 3,627 / 3,961 B | 101 KB | 28 ms / 44 ms |
//! | 100,000 | 1,000 | 16.98 s | 1.03 s | 3,627 / 3,961 B | 692 KB | 136 ms / 149 ms |
//!
//! A history proof of an account with 2 versions is 3.5 KB at 100k accounts;
//! the SQLite file (with its WAL) is about 150 MiB at 100k accounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use sotto_directory::{
    AccountState, KeyDirectory, Username, VrfSecret, verify_audit, verify_history, verify_lookup,
};
use std::time::Instant;

fn state(seed: u32, devices: u8) -> AccountState {
    let mut identity_key = [0u8; 32];
    identity_key[..4].copy_from_slice(&seed.to_be_bytes());
    AccountState {
        identity_key,
        devices: (0..devices).map(|d| ([d; 16], [d ^ 0x5a; 32])).collect(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let accounts: u32 = args
        .next()
        .map_or(100_000, |a| a.parse().expect("number of accounts"));
    let changes: u32 = args
        .next()
        .map_or(1_000, |a| a.parse().expect("number of changes"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(run(accounts, changes.min(accounts)));
}

async fn run(accounts: u32, changes: u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.db");
    let directory = KeyDirectory::open(&path, VrfSecret::from_bytes([9; 32]))
        .await
        .unwrap();
    let vrf = directory.vrf_public_key();
    let names: Vec<Username> = (0..accounts)
        .map(|i| Username::parse(&format!("user{i:07}")).unwrap())
        .collect();

    let t = Instant::now();
    directory
        .publish(names.iter().map(|n| (n.clone(), state(1, 2))).collect())
        .await
        .unwrap();
    println!("accounts: {accounts}");
    println!(
        "publish epoch 1 ({accounts} new accounts): {:.2?}",
        t.elapsed()
    );

    let step = (accounts / changes.max(1)).max(1) as usize;
    let changed: Vec<Username> = names
        .iter()
        .step_by(step)
        .take(changes as usize)
        .cloned()
        .collect();
    let t = Instant::now();
    let head = directory
        .publish(changed.iter().map(|n| (n.clone(), state(2, 3))).collect())
        .await
        .unwrap();
    println!(
        "publish epoch 2 ({} changed accounts): {:.2?}",
        changed.len(),
        t.elapsed()
    );

    let mut sizes = Vec::new();
    let t = Instant::now();
    for name in names.iter().step_by((accounts as usize / 50).max(1)) {
        let answer = directory.lookup(name).await.unwrap();
        verify_lookup(&vrf, &head.root_hash, head.epoch, name, &answer.proof).unwrap();
        sizes.push(answer.proof.len());
    }
    sizes.sort_unstable();
    println!(
        "lookup proof bytes over {} accounts: min {} median {} max {} (lookup+verify {:.2?} each)",
        sizes.len(),
        sizes[0],
        sizes[sizes.len() / 2],
        sizes[sizes.len() - 1],
        t.elapsed() / sizes.len() as u32
    );

    let history = directory.history(&changed[0]).await.unwrap();
    verify_history(
        &vrf,
        &head.root_hash,
        head.epoch,
        &changed[0],
        &history.proof,
    )
    .unwrap();
    println!("history proof bytes (2 versions): {}", history.proof.len());

    let t = Instant::now();
    let audit = directory.audit_proof(1, 2).await.unwrap();
    let built = t.elapsed();
    let t = Instant::now();
    verify_audit(&audit.roots, 1, &audit.proof).await.unwrap();
    println!(
        "audit epoch 1->2 ({} changes): proof {} bytes, built in {:.2?}, verified in {:.2?}",
        changed.len(),
        audit.proof.len(),
        built,
        t.elapsed()
    );
    let db_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("sqlite file + wal: {:.1} MiB", db_bytes as f64 / 1048576.0);
}
