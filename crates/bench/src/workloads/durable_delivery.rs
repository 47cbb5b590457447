//! W2: 1:1 durable delivery of 512-byte envelopes under open-loop
//! (Poisson) load, on a ladder of offered rates: end-to-end and send→ack
//! latency, server CPU per message, the max sustainable rate, and latency at
//! half of it (T3). The baselines run the same ladder.

use std::time::Duration;

use super::{Server, Testbed, start_registered_pairs};
use crate::load::{self, Rig, StepResult, StepTiming};
use crate::net::SourceAddrs;
use crate::sotto;

/// What W2 (and each baseline) runs.
#[derive(Debug, Clone)]
pub struct DurableDeliveryConfig {
    /// Sender/receiver device pairs, each with its own group and connections.
    pub pairs: usize,
    /// The ladder: total offered msg/s over all pairs, one step each, in
    /// order; it stops after two unsustainable steps in a row.
    pub rates: Vec<f64>,
    /// How long each rate is offered.
    pub step: Duration,
}

impl DurableDeliveryConfig {
    /// Each step offers load for `step`, then allows 5 s for the last
    /// deliveries and acks.
    pub fn timing(&self) -> StepTiming {
        StepTiming {
            offer_for: self.step,
            drain_within: Duration::from_secs(5),
        }
    }
}

/// W2's figures.
#[derive(Debug, Clone, Default)]
pub struct DurableDelivery {
    pub pairs: usize,
    /// Seconds each rate was offered.
    pub step_s: f64,
    /// One per rate tried, in ladder order.
    pub steps: Vec<StepResult>,
    /// Highest offered rate whose step was sustainable (0 if none was).
    pub max_sustainable: f64,
    /// A step at half of `max_sustainable` (T3); `None` if nothing was
    /// sustainable.
    pub half_load: Option<StepResult>,
}

/// W2: runs the ladder against a fresh server, then a step at half of the
/// max sustainable rate.
pub async fn measure_durable_delivery(
    bed: &Testbed<'_>,
    config: &DurableDeliveryConfig,
) -> anyhow::Result<DurableDelivery> {
    let server = bed.start_server("w2").await?;
    let result = measure_on(&server, bed.src, config).await;
    server.stop().await?;
    result
}

async fn measure_on(
    server: &Server,
    src: &SourceAddrs,
    config: &DurableDeliveryConfig,
) -> anyhow::Result<DurableDelivery> {
    let regs = sotto::register_pairs(server.addr(), src, config.pairs).await?;
    let (pairs, rec) = start_registered_pairs(regs).await;
    let rig = Rig {
        pairs: &pairs,
        rec: &rec,
        servers: &[&server.process],
    };
    let steps = load::ladder(&rig, &config.rates, config.timing(), "W2 sotto").await;
    let max = load::max_sustainable(&steps);
    // T3 is judged at half of the max sustainable rate.
    let half_load = if max > 0.0 {
        let r = load::run_step(&rig, max / 2.0, config.timing()).await;
        eprintln!(
            "  W2 sotto half load {:.0}/s: e2e p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
            max / 2.0,
            r.figures.e2e.p50,
            r.figures.e2e.p99,
            r.figures.e2e.p999
        );
        Some(r)
    } else {
        None
    };
    pairs.shutdown().await;
    Ok(DurableDelivery {
        pairs: config.pairs,
        step_s: config.step.as_secs_f64(),
        steps,
        max_sustainable: max,
        half_load,
    })
}
