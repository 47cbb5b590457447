//! Where a received application message's time goes, by group size: the
//! whole `group::process` one message at a time (as before W7), the same
//! messages as one batch (`group::process_loaded`, the group loaded once,
//! as the client's receive does per transaction), and two parts alone
//! (loading the group from storage, listing its members). For
//! bench/OPTIMISATIONS.md:
//! `cargo run --release -p sotto-bench --example decrypt_parts [SIZES]`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use sotto_bench::mls::Fixture;
use sotto_core::group;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![2, 100, 1000]);
    // Messages per measurement (SOTTO_BENCH_MESSAGES, default 100).
    let n: u32 = std::env::var("SOTTO_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // Past epochs the receiver keeps (SOTTO_BENCH_PAST_EPOCHS, default 0:
    // it has just joined; a living group's members keep up to 5).
    let past_epochs: usize = std::env::var("SOTTO_BENCH_PAST_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!("size | process µs | batched µs | load µs | members µs");
    for size in sizes {
        let mut f = Fixture::build(size).expect("fixture");
        f.advance_epochs(past_epochs).expect("advance epochs");
        let group_id = f.group.group_id().as_slice().to_vec();
        let cts: Vec<Vec<u8>> = (0..n).map(|_| f.encrypt(&[7u8; 100]).unwrap()).collect();
        let t = Instant::now();
        for ct in &cts {
            f.decrypt(ct).expect("decrypt");
        }
        let process = t.elapsed() / n;
        let cts: Vec<Vec<u8>> = (0..n).map(|_| f.encrypt(&[7u8; 100]).unwrap()).collect();
        let t = Instant::now();
        f.decrypt_batch(&cts).expect("decrypt batch");
        let batched = t.elapsed() / n;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(group::load(&f.member.provider, &group_id).unwrap());
        }
        let load = t.elapsed() / n;
        let g = group::load(&f.member.provider, &group_id).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(group::members(&g));
        }
        let members = t.elapsed() / n;
        println!(
            "{size} | {} | {} | {} | {}",
            process.as_micros(),
            batched.as_micros(),
            load.as_micros(),
            members.as_micros()
        );
    }
}
