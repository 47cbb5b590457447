//! Where a received application message's time goes, by group size: the
//! whole `group::process`, and two of its parts alone (loading the group
//! from storage, listing its members). For bench/OPTIMISATIONS.md:
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
    const N: u32 = 100;
    println!("size | process µs | load µs | members µs");
    for size in sizes {
        let mut f = Fixture::build(size).expect("fixture");
        let group_id = f.group.group_id().as_slice().to_vec();
        let cts: Vec<Vec<u8>> = (0..N).map(|_| f.encrypt(&[7u8; 100]).unwrap()).collect();
        let t = Instant::now();
        for ct in &cts {
            f.decrypt(ct).expect("decrypt");
        }
        let process = t.elapsed() / N;
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(group::load(&f.member.provider, &group_id).unwrap());
        }
        let load = t.elapsed() / N;
        let g = group::load(&f.member.provider, &group_id).unwrap();
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(group::members(&g));
        }
        let members = t.elapsed() / N;
        println!(
            "{size} | {} | {} | {}",
            process.as_micros(),
            load.as_micros(),
            members.as_micros()
        );
    }
}
