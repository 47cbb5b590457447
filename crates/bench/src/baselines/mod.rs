//! Baselines measured in the same run with the same open-loop generator and
//! the W2 ladder, one module per baseline:
//!
//! - [`echo`]: a bare WebSocket echo server (the transport floor, written
//!   here with tokio-tungstenite);
//! - [`mosquitto`]: Mosquitto (MQTT 3.1.1, QoS 1, persistent sessions);
//! - [`nats`]: NATS JetStream (file storage).
//!
//! The MQTT and NATS clients are minimal hand-written protocol clients over
//! tokio (no extra dependencies). This module starts a broker, runs the
//! ladder against it and records the result.

mod echo;
mod mosquitto;
mod nats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use echo::echo_server;

use crate::load::{self, Rig, Shared, StepResult, Tracker};
use crate::procs::{self, Proc};
use crate::stats::Recorder;
use crate::workloads::{DurableDeliveryConfig, Testbed};

/// Payload bytes per message, as Sotto's envelopes.
const SIZE: usize = crate::sotto::ENVELOPE;

/// Nanoseconds from the recorder's time base to the scheduled send `at`.
fn sched_ns(rec: &Recorder, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(rec.base).as_nanos()).unwrap_or(u64::MAX)
}

/// One baseline's ladder, or why it was skipped.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub name: String,
    pub version: String,
    /// What the broker has done with a message when it acknowledges it.
    pub durability: String,
    pub steps: Vec<StepResult>,
    pub max_sustainable: f64,
    /// Why it did not run (not installed, say); `None` when it ran.
    pub skipped: Option<String>,
}

/// The baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Mosquitto,
    Nats,
}

impl Kind {
    /// How the report names it.
    fn name(self) -> &'static str {
        match self {
            Kind::Echo => "WebSocket echo (tokio-tungstenite)",
            Kind::Mosquitto => "Mosquitto, MQTT QoS 1, persistent sessions",
            Kind::Nats => "NATS JetStream, file storage",
        }
    }
}

/// Runs `config`'s ladder against one baseline, its broker pinned to the
/// server's core. A baseline that cannot run is returned as skipped, with
/// the reason.
pub async fn run(
    kind: Kind,
    bed: &Testbed<'_>,
    self_exe: &Path,
    config: &DurableDeliveryConfig,
) -> Baseline {
    let mut b = Baseline {
        name: kind.name().into(),
        ..Baseline::default()
    };
    match measure(kind, bed, self_exe, config, &mut b).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("  baseline {} skipped: {e:#}", b.name);
            b.skipped = Some(format!("{e:#}"));
        }
    }
    b
}

async fn measure(
    kind: Kind,
    bed: &Testbed<'_>,
    self_exe: &Path,
    config: &DurableDeliveryConfig,
    b: &mut Baseline,
) -> anyhow::Result<()> {
    let port = procs::free_port()?;
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = procs::scratch_dir(bed.scratch, &format!("baseline-{kind:?}"))?;
    let core = bed.bin.core;
    let broker: Proc = match kind {
        Kind::Echo => echo::start(self_exe, a, &dir, core, b).await?,
        Kind::Mosquitto => mosquitto::start(a, &dir, core, b).await?,
        Kind::Nats => nats::start(a, &dir, core, b).await?,
    };
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (tx, rx) = watch::channel(false);
    let sh = Shared {
        seq_base: 0,
        rec: Arc::clone(&rec),
        tracker: Arc::new(Tracker::default()),
        stop: rx,
    };
    let pairs = match kind {
        Kind::Echo => echo::pairs(a, bed.src, config.pairs, &sh, tx).await,
        Kind::Mosquitto => mosquitto::pairs(a, bed.src, config.pairs, &sh, tx).await,
        Kind::Nats => nats::pairs(a, bed.src, config.pairs, &sh, tx).await,
    };
    let pairs = match pairs {
        Ok(p) => p,
        Err(e) => {
            broker.stop(Duration::from_secs(5)).await?;
            return Err(e);
        }
    };
    let _ = rec.take();
    let rig = Rig {
        pairs: &pairs,
        rec: &rec,
        servers: &[&broker],
    };
    b.steps = load::ladder(&rig, &config.rates, config.timing(), &format!("{kind:?}")).await;
    b.max_sustainable = load::max_sustainable(&b.steps);
    pairs.shutdown().await;
    broker.stop(Duration::from_secs(10)).await?;
    Ok(())
}

/// `cmd` on the PATH.
fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

/// The first line `cmd arg` prints (stdout, then stderr).
fn version_of(cmd: &Path, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}
