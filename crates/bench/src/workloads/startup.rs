//! T8: how fast a fresh server starts, how much memory it holds while idle,
//! and how big its binary is.

use std::time::Duration;

use super::Testbed;
use crate::stats;

/// T8's figures.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// Median of `cold_starts_ms`.
    pub cold_start_ms: f64,
    /// Spawn → "listening on" of each start, on a fresh data directory.
    pub cold_starts_ms: Vec<f64>,
    /// Server VmRSS half a second after the last start, KiB.
    pub idle_rss_kib: u64,
    /// Size of the sotto-server binary (0 if it could not be read).
    pub binary_bytes: u64,
}

/// T8: starts `runs` fresh servers (at least one), one after another.
pub async fn measure_startup(bed: &Testbed<'_>, runs: usize) -> anyhow::Result<Startup> {
    let mut starts = Vec::new();
    let mut idle = 0;
    for i in 0..runs.max(1) {
        let server = bed.start_server(&format!("t8-{i}")).await?;
        starts.push(server.process.start_time.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        idle = server.process.rss_kib();
        server.process.stop(Duration::from_secs(5)).await?;
    }
    Ok(Startup {
        cold_start_ms: stats::median(starts.clone()),
        cold_starts_ms: starts,
        idle_rss_kib: idle,
        binary_bytes: std::fs::metadata(&bed.bin.path)
            .map(|m| m.len())
            .unwrap_or(0),
    })
}
