//! W8: soak. Steady 1:1 durable traffic from many devices for a long time,
//! sampling the server's RSS and its database files' size after every
//! window: both should level off after the first minutes and stay flat
//! (issue #15: SQLite keeps freed pages unless vacuumed; a leak grows RSS).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Testbed, start_registered_pairs};
use crate::load::{self, Rig, StepTiming};
use crate::sotto;

/// What W8 runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Sender/receiver pairs (devices = 2 × pairs), each its own group.
    pub pairs: usize,
    /// Total offered msg/s, steady.
    pub rate: f64,
    /// How long the load runs.
    pub duration: Duration,
    /// One sample per window.
    pub window: Duration,
}

/// One window of W8.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoakSample {
    /// Seconds since the load began, at the window's end.
    pub t_s: f64,
    pub rss_kib: u64,
    /// `sotto.db` plus its write-ahead log.
    pub file_bytes: u64,
    pub delivered: u64,
    pub errors: u64,
}

/// W8's figures.
#[derive(Debug, Clone, Default)]
pub struct Soak {
    pub devices: usize,
    pub rate: f64,
    pub samples: Vec<SoakSample>,
}

impl Soak {
    /// The sample at the end of the warm-up: the first one at or after a
    /// fifth of the run (at least one window in).
    pub fn warmed(&self) -> Option<&SoakSample> {
        let end = self.samples.last()?.t_s;
        self.samples.iter().find(|s| s.t_s >= end / 5.0)
    }

    /// Growth of (RSS, file size) from the warm-up's end to the last
    /// sample, as fractions (0.1 = 10 %).
    pub fn growth(&self) -> Option<(f64, f64)> {
        let (warm, last) = (self.warmed()?, self.samples.last()?);
        let grew = |from: u64, to: u64| (to as f64 - from as f64) / (from.max(1) as f64);
        Some((
            grew(warm.rss_kib, last.rss_kib),
            grew(warm.file_bytes, last.file_bytes),
        ))
    }

    /// Flat: neither grew more than 10 % after the warm-up.
    pub fn flat(&self) -> bool {
        self.growth()
            .is_some_and(|(rss, file)| rss <= 0.10 && file <= 0.10)
    }
}

/// W8 against a fresh server.
pub async fn measure_soak(bed: &Testbed<'_>, config: &SoakConfig) -> anyhow::Result<Soak> {
    let server = bed.start_server("w8").await?;
    let regs = sotto::register_pairs(server.addr(), bed.src, config.pairs).await?;
    let (pairs, rec) = start_registered_pairs(regs).await;
    let rig = Rig {
        pairs: &pairs,
        rec: &rec,
        servers: &[&server.process],
    };
    let timing = StepTiming {
        offer_for: config.window,
        drain_within: Duration::from_secs(5),
    };
    let began = Instant::now();
    let mut samples = Vec::new();
    while began.elapsed() < config.duration {
        let step = load::run_step(&rig, config.rate, timing).await;
        let sample = SoakSample {
            t_s: began.elapsed().as_secs_f64(),
            rss_kib: server.process.rss_kib(),
            file_bytes: database_bytes(&server.data_dir),
            delivered: step.figures.delivered,
            errors: step.figures.errors,
        };
        eprintln!(
            "  W8 {:>6.0} s: RSS {:.1} MiB, database {:.2} MiB, delivered {}, errors {}",
            sample.t_s,
            sample.rss_kib as f64 / 1024.0,
            sample.file_bytes as f64 / 1_048_576.0,
            sample.delivered,
            sample.errors
        );
        samples.push(sample);
    }
    pairs.shutdown().await;
    server.stop().await?;
    Ok(Soak {
        devices: config.pairs * 2,
        rate: config.rate,
        samples,
    })
}

/// Bytes of the server's database files (`sotto.db`, `-wal`, `-shm`).
fn database_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("sotto.db"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss_kib: u64, file_bytes: u64) -> SoakSample {
        SoakSample {
            t_s,
            rss_kib,
            file_bytes,
            ..SoakSample::default()
        }
    }

    #[test]
    fn flat_is_judged_after_the_warm_up() {
        let mut soak = Soak {
            samples: vec![
                sample(10.0, 10_000, 1_000),
                sample(20.0, 20_000, 5_000),
                sample(50.0, 21_000, 5_200),
                sample(100.0, 21_500, 5_400),
            ],
            ..Soak::default()
        };
        // The jump in the first window is warm-up; after it, +7.5 % and +8 %.
        assert!(soak.flat());
        soak.samples.push(sample(120.0, 30_000, 5_400));
        assert!(!soak.flat(), "RSS grew over 40 % after the warm-up");
        assert!(!Soak::default().flat(), "no samples is not flat");
    }
}
