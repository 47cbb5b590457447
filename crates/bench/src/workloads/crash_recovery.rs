//! W5: `kill -9` the server in the middle of 1:1 load, restart it on the
//! same data directory, drain every receiver: acknowledged messages lost
//! (must be 0) and duplicates seen by receivers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rand::Rng as _;
use tokio::sync::watch;

use super::Testbed;
use crate::load::{Shared, Step, Tracker};
use crate::net::{self, SourceAddrs};
use crate::sotto::{self, PairKeys};
use crate::stats::Recorder;

/// What W5 runs.
#[derive(Debug, Clone)]
pub struct CrashRecoveryConfig {
    /// Load → `kill -9` → restart → drain cycles, on one data directory.
    pub cycles: usize,
    /// Sender/receiver device pairs.
    pub pairs: usize,
    /// Total offered msg/s over all pairs (Poisson) while the kill comes.
    pub rate: f64,
}

/// W5's figures, summed over every cycle.
#[derive(Debug, Clone, Default)]
pub struct CrashRecovery {
    pub cycles: usize,
    pub pairs: usize,
    pub rate: f64,
    pub sent: u64,
    /// Messages whose sender got `Done`.
    pub acked: u64,
    /// Acknowledged but never delivered (must be 0).
    pub lost: u64,
    /// Extra copies receivers saw (at-least-once delivery allows them).
    pub duplicates: u64,
    /// Restart → "listening on" after each kill.
    pub restart_ms: Vec<f64>,
    /// What went wrong besides sends cut off by the kill.
    pub failures: Vec<String>,
}

/// W5: every cycle offers load, kills the server 0.3–0.9 s into it,
/// restarts it and drains every receiver; the tracker then compares what
/// was acknowledged with what arrived.
pub async fn measure_crash_recovery(
    bed: &Testbed<'_>,
    config: &CrashRecoveryConfig,
) -> anyhow::Result<CrashRecovery> {
    let server = bed.start_server("w5").await?;
    let a = server.addr();
    let (mut process, data_dir, port) = (server.process, server.data_dir, server.port);
    let regs = sotto::register_pairs(a, bed.src, config.pairs).await?;
    let rec = Arc::new(Recorder::new(Instant::now()));
    let tracker = Arc::new(Tracker {
        enabled: true,
        ..Tracker::default()
    });
    let mut keys: Vec<Arc<PairKeys>> = Vec::new();
    let mut socks = Vec::new();
    for (k, s, r) in regs {
        let k = Arc::new(k);
        keys.push(Arc::clone(&k));
        socks.push((k, s, Some(r)));
    }
    let mut out = CrashRecovery {
        cycles: config.cycles,
        pairs: config.pairs,
        rate: config.rate,
        ..CrashRecovery::default()
    };
    for c in 0..config.cycles {
        if c > 0 {
            socks.clear();
            for k in &keys {
                match sotto::login_pair(a, bed.src, k).await {
                    Ok((s, r)) => socks.push((Arc::clone(k), s, Some(r))),
                    Err(e) => out.failures.push(format!("cycle {c}: login: {e:#}")),
                }
            }
        }
        let (tx, rx) = watch::channel(false);
        let sh = Shared {
            // Message indexes stay unique across cycles.
            seq_base: (c as u64).saturating_mul(1 << 30),
            rec: Arc::clone(&rec),
            tracker: Arc::clone(&tracker),
            stop: rx,
        };
        let pairs = sotto::start_pairs(std::mem::take(&mut socks), &sh, tx);
        let start = Instant::now() + Duration::from_millis(20);
        let per = config.rate / config.pairs.max(1) as f64;
        for s in &pairs.steps {
            let _ = s
                .send(Step {
                    rate: per,
                    start,
                    end: start + Duration::from_secs(5),
                    max: (per * 10.0) as u64 + 10,
                })
                .await;
        }
        // Kill in the middle of the load.
        let kill_after = Duration::from_millis(rand::thread_rng().gen_range(300..900));
        tokio::time::sleep_until((start + kill_after).into()).await;
        process.kill9().await?;
        pairs.shutdown().await;
        let t = Instant::now();
        process = bed.bin.start(&data_dir, port, false).await?;
        out.restart_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let sh = Shared {
            seq_base: 0,
            rec: Arc::clone(&rec),
            tracker: Arc::clone(&tracker),
            stop: watch::channel(false).1,
        };
        for e in drain_receivers(a, bed.src, &keys, &sh).await {
            out.failures.push(format!("cycle {c}: drain: {e:#}"));
        }
        let f = rec.take();
        out.sent += f.sent;
        if let Some(e) = f.first_error
            && !e.starts_with("send:")
        {
            out.failures.push(format!("cycle {c}: {e}"));
        }
        let (acked, lost, dups) = tracker.verdict();
        eprintln!(
            "  W5 cycle {}: acked so far {acked}, lost {lost}, duplicates {dups}",
            c + 1
        );
    }
    process.stop(Duration::from_secs(10)).await?;
    let (acked, lost, dups) = tracker.verdict();
    out.acked = acked;
    out.lost = lost;
    out.duplicates = dups;
    Ok(out)
}

/// Every receiver logs in (32 at once) and syncs until its mailbox is empty
/// (at most 20 s each); returns the logins that failed.
async fn drain_receivers(
    server: SocketAddr,
    src: &SourceAddrs,
    keys: &[Arc<PairKeys>],
    sh: &Shared,
) -> Vec<anyhow::Error> {
    let mut failures = Vec::new();
    let mut futs = futures_util::stream::iter(keys.iter().map(|k| {
        let k = Arc::clone(k);
        let s = src.pick();
        let sh = sh.clone();
        async move {
            let (ws, _) = net::connect_authenticated(server, s, &k.receiver, false).await?;
            sotto::receiver(ws, sh, Some(Duration::from_secs(20))).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(32);
    for _ in 0..keys.len() {
        if let Some(Err(e)) = futs.next().await {
            failures.push(e);
        }
    }
    failures
}
