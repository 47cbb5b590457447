//! W7: client-side MLS costs per operation, by group size, through
//! `sotto_core::group` (openmls 0.9, ciphersuite 0x0001, OpenMlsRustCrypto).
//!
//! Sizes: `SOTTO_BENCH_MLS_SIZES` (comma-separated, default `2,10,100,1000`).
//! Kept short: 10 samples, 1 s of measurement each.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use sotto_bench::mls::{Device, Fixture, join};

fn sizes() -> Vec<usize> {
    std::env::var("SOTTO_BENCH_MLS_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![2, 10, 100, 1000])
}

fn mls(c: &mut Criterion) {
    let mut g = c.benchmark_group("mls");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for size in sizes() {
        let f = std::cell::RefCell::new(Fixture::build(size).expect("fixture"));
        let plaintext = [7u8; 100];
        // Decrypt first: encrypt alone advances the sender's ratchet
        // further than the member will skip ahead.
        g.bench_function(BenchmarkId::new("decrypt", size), |b| {
            b.iter_batched(
                || f.borrow_mut().encrypt(&plaintext).expect("encrypt"),
                |ct| f.borrow().decrypt(&ct).expect("decrypt"),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("encrypt", size), |b| {
            b.iter(|| f.borrow_mut().encrypt(&plaintext).expect("encrypt"))
        });
        g.bench_function(BenchmarkId::new("commit_update", size), |b| {
            b.iter(|| f.borrow_mut().commit_update().expect("update"))
        });
        let kp = Device::new("extra")
            .expect("device")
            .key_package(false)
            .expect("kp");
        g.bench_function(BenchmarkId::new("commit_add", size), |b| {
            b.iter(|| f.borrow_mut().commit_add(&kp).expect("add"))
        });
        g.bench_function(BenchmarkId::new("commit_remove", size), |b| {
            b.iter(|| f.borrow_mut().commit_remove().expect("remove"))
        });
        g.bench_function(BenchmarkId::new("join", size), |b| {
            b.iter_batched(
                || f.borrow_mut().welcome_for_new_device().expect("welcome"),
                |(joiner, welcome)| join(&joiner, &welcome).expect("join"),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, mls);
criterion_main!(benches);
