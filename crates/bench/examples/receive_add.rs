//! What a receiver pays to process a commit that adds one member, by group
//! size (issue #19: at most 20 ms at 1,000 members). The group is built by
//! one commit adding everyone (setup time printed), then the creator adds
//! fresh devices one at a time and the joined member processes each
//! commit. For bench/OPTIMISATIONS.md (W7):
//! `cargo run --release -p sotto-bench --example receive_add [SIZES] [ADDS]`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sotto_bench::mls::{Device, Fixture};
use sotto_core::group;

fn main() {
    let mut args = std::env::args().skip(1);
    let sizes: Vec<usize> = args
        .next()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10_000]);
    let adds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    println!(
        "size | setup s | commit bytes | sender add+merge ms | receiver process ms (min / mean / max) | of which load ms"
    );
    for size in sizes {
        let t = Instant::now();
        let mut f = Fixture::build(size).expect("fixture");
        let setup = t.elapsed();
        let group_id = f.group.group_id().as_slice().to_vec();
        let mut send = Duration::ZERO;
        let mut receive = Vec::new();
        let mut load = Duration::ZERO;
        let mut bytes = 0;
        for i in 0..adds {
            let kp = Device::new(&format!("added{i}"))
                .unwrap()
                .key_package(false)
                .unwrap();
            let t = Instant::now();
            let commit = f.commit_add_merged(&kp).expect("add");
            send += t.elapsed();
            bytes = commit.len();
            let t = Instant::now();
            std::hint::black_box(group::load(&f.member.provider, &group_id).unwrap());
            load += t.elapsed();
            let t = Instant::now();
            f.receive_commit(&commit).expect("receive");
            receive.push(t.elapsed());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mean = receive.iter().sum::<Duration>() / adds;
        println!(
            "{size} | {:.1} | {bytes} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1}",
            setup.as_secs_f64(),
            ms(send / adds),
            ms(*receive.iter().min().unwrap()),
            ms(mean),
            ms(*receive.iter().max().unwrap()),
            ms(load / adds),
        );
    }
}
