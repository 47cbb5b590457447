//! W3: messages queued for offline devices, then every device reconnects at
//! once: drain msg/s and time to empty.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::{Testbed, pair_handles};
use crate::load::{Pairs, Step, Tracker};
use crate::net::{self, SourceAddrs};
use crate::sotto::{self, PairKeys};
use crate::stats::{Recorder, StepFigures};

/// What W3 runs.
#[derive(Debug, Clone)]
pub struct OfflineDrainConfig {
    /// Offline receiver devices, each with its own sender and group.
    pub devices: usize,
    /// Messages queued in total, spread evenly over the devices.
    pub messages: u64,
    /// Total msg/s the mailboxes are filled at (filling is not what W3
    /// measures; the caller picks a rate the server absorbs).
    pub enqueue_rate: f64,
}

/// W3's figures.
#[derive(Debug, Clone, Default)]
pub struct OfflineDrain {
    pub devices: usize,
    /// Messages the server acknowledged while the receivers were offline.
    pub queued: u64,
    pub enqueue_per_s: f64,
    /// Deliveries the receivers saw once back.
    pub drained: u64,
    /// From the first reconnect until every receiver's Sync finished.
    pub drain_s: f64,
    pub drain_per_s: f64,
    /// Failed sends, failed reconnects and receiver errors.
    pub errors: u64,
}

/// W3: fills the mailboxes of offline devices, then has every device log
/// in at once and drain.
pub async fn measure_offline_drain(
    bed: &Testbed<'_>,
    config: &OfflineDrainConfig,
) -> anyhow::Result<OfflineDrain> {
    let devices = config.devices;
    let server = bed.start_server("w3").await?;
    let a = server.addr();
    let regs = sotto::register_pairs(a, bed.src, devices).await?;
    // Receivers go offline; senders stay connected.
    let mut keys = Vec::new();
    let mut senders = Vec::new();
    for (k, s, mut r) in regs {
        let _ = r.close(None).await;
        let k = Arc::new(k);
        keys.push(Arc::clone(&k));
        senders.push((k, s, None));
    }
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (sh, stop) = pair_handles(&rec, Tracker::default());
    let pairs = sotto::start_pairs(senders, &sh, stop);
    let (enq, elapsed) = fill_mailboxes(&pairs, &rec, config).await;
    let mut out = OfflineDrain {
        devices,
        queued: enq.acked,
        enqueue_per_s: enq.acked as f64 / elapsed.as_secs_f64().max(1e-3),
        errors: enq.errors,
        ..OfflineDrain::default()
    };
    pairs.shutdown().await;
    eprintln!(
        "  W3 queued {} messages for {} offline devices",
        out.queued, devices
    );

    // Everyone comes back at once and drains (Sync answers when empty).
    let t = Instant::now();
    out.errors += drain_all(a, bed.src, &keys, &rec).await;
    out.drain_s = t.elapsed().as_secs_f64();
    let f = rec.take();
    out.drained = f.delivered;
    out.errors += f.errors;
    out.drain_per_s = f.delivered as f64 / out.drain_s.max(1e-3);
    server.stop().await?;
    Ok(out)
}

/// Offers `config.messages` at `config.enqueue_rate`, spread evenly over the
/// senders, and waits (at most 60 s) until every send was acknowledged or
/// failed. Returns those figures and the time since the load was scheduled.
async fn fill_mailboxes(
    pairs: &Pairs,
    rec: &Recorder,
    config: &OfflineDrainConfig,
) -> (StepFigures, Duration) {
    let devices = config.devices.max(1);
    let dur = Duration::from_secs_f64(config.messages as f64 / config.enqueue_rate.max(1.0));
    let t = Instant::now();
    let start = t + Duration::from_millis(50);
    let per = config.enqueue_rate / devices as f64;
    for tx in &pairs.steps {
        let _ = tx
            .send(Step {
                rate: per,
                start,
                end: start + dur,
                max: (config.messages / devices as u64).max(1),
            })
            .await;
    }
    tokio::time::sleep_until((start + dur).into()).await;
    for _ in 0..6000 {
        if rec.acked.load(Ordering::Relaxed) + rec.errors.load(Ordering::Relaxed)
            >= rec.sent.load(Ordering::Relaxed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let figures = rec.take();
    (figures, t.elapsed())
}

/// Every receiver logs in at once (512 in flight) and syncs until its
/// mailbox is empty (at most 120 s each); returns how many failed to log in.
async fn drain_all(
    server: SocketAddr,
    src: &SourceAddrs,
    keys: &[Arc<PairKeys>],
    rec: &Arc<Recorder>,
) -> u64 {
    let (sh, _stop) = pair_handles(rec, Tracker::default());
    let mut failures = 0;
    let mut futs = futures_util::stream::iter(keys.iter().map(|k| {
        let k = Arc::clone(k);
        let s = src.pick();
        let sh = sh.clone();
        async move {
            let (ws, _) = net::connect_authenticated(server, s, &k.receiver, false).await?;
            sotto::receiver(ws, sh, Some(Duration::from_secs(120))).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(512);
    for _ in 0..keys.len() {
        match futs.next().await {
            Some(Ok(())) => {}
            Some(Err(_)) => failures += 1,
            None => break,
        }
    }
    failures
}
