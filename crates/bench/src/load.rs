//! Open-loop load: each pair's sender follows its own Poisson schedule and
//! every latency is measured from the *scheduled* send time, so a stalled
//! server cannot hide its stall by slowing the generator (no coordinated
//! omission). Steps are bounded in time and in message count.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::procs::{self, Proc};
use crate::stats::{Recorder, StepFigures, exp_gap};

/// One step of offered load for one sender.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Messages per second for this sender.
    pub rate: f64,
    pub start: Instant,
    pub end: Instant,
    /// Hard cap on messages in this step.
    pub max: u64,
}

/// Yields the scheduled send times of a step, sleeping until each.
#[derive(Debug)]
pub struct Pacer {
    step: Step,
    next: Instant,
    count: u64,
}

impl Pacer {
    pub fn new(step: Step) -> Self {
        let first = step.start + Duration::from_secs_f64(exp_gap(step.rate));
        Self {
            step,
            next: first,
            count: 0,
        }
    }

    /// The next scheduled instant (after sleeping until it), or `None` when
    /// the step is over.
    pub async fn next(&mut self) -> Option<Instant> {
        if self.next >= self.step.end || self.count >= self.step.max {
            return None;
        }
        let at = self.next;
        tokio::time::sleep_until(at.into()).await;
        self.count = self.count.saturating_add(1);
        self.next = at + Duration::from_secs_f64(exp_gap(self.step.rate));
        Some(at)
    }
}

/// Which messages were acknowledged to senders and which reached receivers
/// (only filled when enabled: the crash workload).
#[derive(Debug, Default)]
pub struct Tracker {
    pub enabled: bool,
    pub acked: Mutex<HashSet<u64>>,
    pub seen: Mutex<HashMap<u64, u32>>,
    /// Fan-out: per message, (deliveries, latency to the latest one in µs).
    pub fanout: bool,
    pub last: Mutex<HashMap<u64, (u32, u64)>>,
}

impl Tracker {
    pub fn on_fanout(&self, index: u64, latency_us: u64) {
        if self.fanout
            && let Ok(mut l) = self.last.lock()
        {
            let e = l.entry(index).or_insert((0, 0));
            e.0 = e.0.saturating_add(1);
            e.1 = e.1.max(latency_us);
        }
    }

    pub fn on_ack(&self, index: u64) {
        if self.enabled
            && let Ok(mut a) = self.acked.lock()
        {
            a.insert(index);
        }
    }

    pub fn on_seen(&self, index: u64) {
        if self.enabled
            && let Ok(mut s) = self.seen.lock()
        {
            *s.entry(index).or_insert(0) += 1;
        }
    }

    /// (acknowledged, lost = acknowledged but never seen, duplicates = extra
    /// copies seen).
    pub fn verdict(&self) -> (u64, u64, u64) {
        let acked = self.acked.lock().map(|a| a.clone()).unwrap_or_default();
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let lost = acked.iter().filter(|i| !seen.contains_key(i)).count() as u64;
        let dups = seen.values().map(|&c| u64::from(c.saturating_sub(1))).sum();
        (acked.len() as u64, lost, dups)
    }
}

/// Long-lived pair tasks of one transport.
#[derive(Debug)]
pub struct Pairs {
    pub steps: Vec<mpsc::Sender<Step>>,
    pub stop: watch::Sender<bool>,
    pub tasks: Vec<JoinHandle<()>>,
    /// Whether senders get acknowledgements (Done, PUBACK, PubAck).
    pub has_acks: bool,
}

impl Pairs {
    pub async fn shutdown(self) {
        drop(self.steps);
        let _ = self.stop.send(true);
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                // The task is stuck on a dead socket; it is dropped with the
                // runtime.
            }
        }
    }
}

/// One measured rate step.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    pub offered: f64,
    pub figures: StepFigures,
    /// Delivered per second from step start until drained (or timed out).
    pub achieved: f64,
    /// Whether everything sent was delivered (and acked) within the drain
    /// window.
    pub drained: bool,
    /// Time after the step's end until everything was delivered.
    pub drain_s: f64,
    pub server_cpu_us_per_msg: f64,
    pub server_cpu_pct: f64,
    pub client_cpu_pct: f64,
}

impl StepResult {
    /// "Sustainable": all delivered within 1 s after the step, p99 ≤ 50 ms,
    /// no errors, and at least 95% of the offered rate achieved.
    pub fn sustainable(&self) -> bool {
        self.drained
            && self.drain_s <= 1.0
            && self.figures.e2e.p99 <= 50.0
            && self.figures.errors == 0
            && self.achieved >= 0.95 * self.offered
    }
}

/// How one rate step is timed.
#[derive(Debug, Clone, Copy)]
pub struct StepTiming {
    /// How long load is offered.
    pub offer_for: Duration,
    /// How long after that everything sent may take to be delivered (and
    /// acked) before the step counts as not drained.
    pub drain_within: Duration,
}

/// What a step loads and measures: the pairs offering the load, the
/// recorder they report to, and the processes (server, broker, or every
/// node of a cluster) whose CPU each step is charged.
#[derive(Debug, Clone, Copy)]
pub struct Rig<'a> {
    pub pairs: &'a Pairs,
    pub rec: &'a Recorder,
    /// Empty: server CPU is not measured.
    pub servers: &'a [&'a Proc],
}

impl Rig<'_> {
    /// The CPU ticks the measured processes have used so far.
    pub fn server_ticks(&self) -> u64 {
        self.servers.iter().map(|s| s.cpu_ticks()).sum()
    }
}

/// Runs one step of `total_rate` msg/s spread over all pairs, then waits
/// (at most `timing.drain_within`) for everything to arrive.
pub async fn run_step(rig: &Rig<'_>, total_rate: f64, timing: StepTiming) -> StepResult {
    let Rig { pairs, rec, .. } = *rig;
    let StepTiming {
        offer_for: dur,
        drain_within: drain,
    } = timing;
    let n = pairs.steps.len().max(1) as f64;
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + dur;
    let per = total_rate / n;
    let max = (per * dur.as_secs_f64() * 3.0) as u64 + 10;
    let tck = procs::clk_tck().max(1) as f64;
    let me = std::process::id();
    let srv0 = rig.server_ticks();
    let cli0 = procs::cpu_ticks(me).unwrap_or(0);
    for tx in &pairs.steps {
        let _ = tx
            .send(Step {
                rate: per,
                start,
                end,
                max,
            })
            .await;
    }
    tokio::time::sleep_until(end.into()).await;
    let deadline = end + drain;
    let mut drained = false;
    for _ in 0..100_000 {
        let sent = rec.sent.load(Ordering::Relaxed);
        let delivered = rec.delivered.load(Ordering::Relaxed);
        let acked = rec.acked.load(Ordering::Relaxed);
        if delivered >= sent && (!pairs.has_acks || acked >= sent) {
            drained = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = Instant::now();
    let wall = done.duration_since(start).as_secs_f64().max(1e-3);
    let srv1 = rig.server_ticks();
    let cli1 = procs::cpu_ticks(me).unwrap_or(0);
    let figures = rec.take();
    if !drained {
        settle(rec, &figures, pairs.has_acks).await;
    }
    let srv_s = srv1.saturating_sub(srv0) as f64 / tck;
    let cli_s = cli1.saturating_sub(cli0) as f64 / tck;
    StepResult {
        offered: total_rate,
        achieved: figures.delivered as f64 / wall,
        drained,
        drain_s: done.saturating_duration_since(end).as_secs_f64(),
        server_cpu_us_per_msg: if figures.delivered > 0 {
            srv_s * 1e6 / figures.delivered as f64
        } else {
            0.0
        },
        server_cpu_pct: 100.0 * srv_s / wall,
        client_cpu_pct: 100.0 * cli_s / wall,
        figures,
    }
}

/// After an overloaded step, waits (unmeasured, at most two minutes) until
/// its backlog is delivered and discards those late figures, so the next step
/// starts from an idle server instead of inheriting a queue.
async fn settle(rec: &Recorder, step: &StepFigures, has_acks: bool) {
    let missing_deliveries = step.sent.saturating_sub(step.delivered);
    let missing_acks = if has_acks {
        step.sent.saturating_sub(step.acked)
    } else {
        0
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline
        && (rec.delivered.load(Ordering::Relaxed) < missing_deliveries
            || rec.acked.load(Ordering::Relaxed) < missing_acks)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = rec.take();
}

/// Runs the rate ladder, stopping after two unsustainable steps in a row.
pub async fn ladder(
    rig: &Rig<'_>,
    rates: &[f64],
    timing: StepTiming,
    label: &str,
) -> Vec<StepResult> {
    let mut out = Vec::new();
    let mut bad = 0;
    for &rate in rates {
        let r = run_step(rig, rate, timing).await;
        eprintln!(
            "  {label} {rate:>7.0}/s: delivered {} ({:.0}/s) e2e p50 {:.2} p99 {:.2} p99.9 {:.2} ms, ack p99 {:.2} ms, drained {} ({:.2}s), errors {}{}",
            r.figures.delivered,
            r.achieved,
            r.figures.e2e.p50,
            r.figures.e2e.p99,
            r.figures.e2e.p999,
            r.figures.ack.p99,
            r.drained,
            r.drain_s,
            r.figures.errors,
            r.figures
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let ok = r.sustainable();
        out.push(r);
        bad = if ok { 0 } else { bad + 1 };
        if bad >= 2 {
            break;
        }
    }
    out
}

/// The highest offered rate whose step was sustainable (0 if none was).
pub fn max_sustainable(steps: &[StepResult]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustainable())
        .map(|s| s.offered)
        .fold(0.0, f64::max)
}

/// A tracked message index: high bits pair, low 40 bits sequence.
pub fn index(pair: usize, seq: u64) -> u64 {
    ((pair as u64) << 40) | (seq & ((1 << 40) - 1))
}

/// Shared handles each pair task gets.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Added to every sender's sequence numbers, so message indexes stay
    /// unique across reconnects (W5 cycles).
    pub seq_base: u64,
    pub rec: Arc<Recorder>,
    pub tracker: Arc<Tracker>,
    pub stop: watch::Receiver<bool>,
}
