//! W6: scale-out. 1, 2 and 3 `sotto-server` nodes on one PostgreSQL
//! database (`--store`) with wake-ups over NATS (`--bus`), W2's 1:1 ladder
//! with every pair's sender and receiver on different nodes (when there is
//! more than one), then a reference step at one fixed rate where the CPU
//! of the nodes, of PostgreSQL and of NATS and PostgreSQL's commits and WAL
//! flushes are counted per message: where the time goes.
//!
//! It runs against the PostgreSQL and NATS servers that the tests use
//! (`SOTTO_TEST_POSTGRES`, `SOTTO_TEST_NATS`), in a fresh schema per node
//! count; without them it is skipped with that reason. The nodes share the
//! server's core (as W2's one server does); PostgreSQL and NATS are not
//! pinned, so on a 2-core machine they take time from both the nodes and
//! the generator. This measures the cost of the cluster path, not scaling.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use sotto_testkit::postgres::TestDatabase;

use super::{Testbed, loopback, start_registered_pairs};
use crate::load::{self, Rig, StepResult, StepTiming};
use crate::procs::{self, Proc};
use crate::sotto;

/// What W6 runs.
#[derive(Debug, Clone)]
pub struct ScaleOutConfig {
    /// Node counts, one deployment (and schema) each.
    pub nodes: Vec<usize>,
    /// Sender/receiver device pairs.
    pub pairs: usize,
    /// The ladder of total offered msg/s (as W2's).
    pub rates: Vec<f64>,
    /// How long each rate is offered.
    pub step: Duration,
    /// The rate of the step whose costs are broken down, the same for every
    /// node count so they compare.
    pub reference_rate: f64,
    /// How long the reference step lasts.
    pub reference_for: Duration,
}

/// Where a message's server-side costs go, from one reference step.
#[derive(Debug, Clone, Default)]
pub struct CostBreakdown {
    /// The step itself.
    pub step: StepResult,
    /// CPU of every sotto-server node together, µs per delivered message.
    pub nodes_us: f64,
    /// CPU of every PostgreSQL process, µs per delivered message.
    pub postgres_us: f64,
    /// CPU of the NATS server, µs per delivered message.
    pub nats_us: f64,
    /// PostgreSQL transactions committed in the database per message.
    pub commits_per_msg: f64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`) per message.
    pub wal_syncs_per_msg: f64,
}

/// One deployment's figures.
#[derive(Debug, Clone, Default)]
pub struct ScaleOutRun {
    pub nodes: usize,
    /// One per rate tried, in ladder order.
    pub steps: Vec<StepResult>,
    /// Highest offered rate whose step was sustainable (0 if none was).
    pub max_sustainable: f64,
    /// `None` if the reference step could not be broken down.
    pub costs: Option<CostBreakdown>,
}

/// W6's figures, or why it did not run.
#[derive(Debug, Clone, Default)]
pub struct ScaleOut {
    pub pairs: usize,
    pub step_s: f64,
    pub reference_rate: f64,
    pub runs: Vec<ScaleOutRun>,
    /// Set when W6 was skipped (no PostgreSQL or NATS configured).
    pub skipped: Option<String>,
}

/// W6: a deployment per node count, each on a fresh schema.
pub async fn measure_scale_out(
    bed: &Testbed<'_>,
    config: &ScaleOutConfig,
) -> anyhow::Result<ScaleOut> {
    let mut out = ScaleOut {
        pairs: config.pairs,
        step_s: config.step.as_secs_f64(),
        reference_rate: config.reference_rate,
        ..ScaleOut::default()
    };
    let Some(bus) = sotto_testkit::cluster::nats_configured() else {
        out.skipped = Some(format!(
            "{} is not set (the NATS server the tests use)",
            sotto_testkit::cluster::NATS_ENV
        ));
        return Ok(out);
    };
    if sotto_testkit::postgres::configured().is_none() {
        out.skipped = Some(format!(
            "{} is not set (the PostgreSQL server the tests use)",
            sotto_testkit::postgres::ENV
        ));
        return Ok(out);
    }
    for &count in &config.nodes {
        eprintln!("W6: {count} node(s) on PostgreSQL + NATS");
        let db = TestDatabase::create("W6")
            .await
            .context("SOTTO_TEST_POSTGRES is set")?;
        let mut nodes = Vec::new();
        for i in 0..count {
            let data = procs::scratch_dir(bed.scratch, &format!("w6-{count}-{i}"))?;
            let port = procs::free_port()?;
            // One after another: the first migrates the schema.
            let process = bed.bin.start_node(&data, port, db.url(), &bus).await?;
            nodes.push((process, port));
        }
        let result = measure_on(bed, &db, &nodes, config).await;
        for (process, _) in nodes {
            process.stop(Duration::from_secs(10)).await?;
        }
        out.runs.push(result?);
    }
    Ok(out)
}

async fn measure_on(
    bed: &Testbed<'_>,
    db: &TestDatabase,
    nodes: &[(Proc, u16)],
    config: &ScaleOutConfig,
) -> anyhow::Result<ScaleOutRun> {
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, port)| loopback(*port)).collect();
    let regs = sotto::register_pairs_across(&addrs, bed.src, config.pairs).await?;
    let (pairs, rec) = start_registered_pairs(regs).await;
    // Each step is charged the CPU of every node (PostgreSQL's and NATS's
    // only in the reference step below).
    let processes: Vec<&Proc> = nodes.iter().map(|(process, _)| process).collect();
    let rig = Rig {
        pairs: &pairs,
        rec: &rec,
        servers: &processes,
    };
    let timing = StepTiming {
        offer_for: config.step,
        drain_within: Duration::from_secs(5),
    };
    let label = format!("W6 {} node(s)", nodes.len());
    let steps = load::ladder(&rig, &config.rates, timing, &label).await;
    let max_sustainable = load::max_sustainable(&steps);
    let costs = reference_step(&rig, db, nodes, config).await;
    if let Err(e) = &costs {
        eprintln!("  {label}: no cost breakdown: {e:#}");
    }
    pairs.shutdown().await;
    Ok(ScaleOutRun {
        nodes: nodes.len(),
        steps,
        max_sustainable,
        costs: costs.ok(),
    })
}

/// PostgreSQL's counters for this database: (commits, WAL flushes).
async fn postgres_counters(client: &tokio_postgres::Client) -> anyhow::Result<(i64, i64)> {
    let commits: i64 = client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?
        .try_get(0)?;
    let syncs: i64 = client
        .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
        .await?
        .try_get(0)?;
    Ok((commits, syncs))
}

/// PostgreSQL publishes a backend's counters when it goes idle, at most
/// once a second: wait that long before reading them.
const STATS_FLUSH: Duration = Duration::from_millis(1_500);

/// One step at the reference rate with every process's CPU and
/// PostgreSQL's counters read around it.
async fn reference_step(
    rig: &Rig<'_>,
    db: &TestDatabase,
    nodes: &[(Proc, u16)],
    config: &ScaleOutConfig,
) -> anyhow::Result<CostBreakdown> {
    let client = db.client().await;
    let timing = StepTiming {
        offer_for: config.reference_for,
        drain_within: Duration::from_secs(5),
    };
    let node_ticks = || nodes.iter().map(|(p, _)| p.cpu_ticks()).sum::<u64>();
    tokio::time::sleep(STATS_FLUSH).await;
    let (commits0, syncs0) = postgres_counters(&client).await?;
    let (nodes0, pg0, nats0) = (
        node_ticks(),
        procs::cpu_ticks_of_command("postgres"),
        procs::cpu_ticks_of_command("nats-server"),
    );
    let step = load::run_step(rig, config.reference_rate, timing).await;
    let (nodes1, pg1, nats1) = (
        node_ticks(),
        procs::cpu_ticks_of_command("postgres"),
        procs::cpu_ticks_of_command("nats-server"),
    );
    tokio::time::sleep(STATS_FLUSH).await;
    let (commits1, syncs1) = postgres_counters(&client).await?;
    let delivered = step.figures.delivered.max(1) as f64;
    let us = |from: u64, to: u64| {
        to.saturating_sub(from) as f64 / procs::clk_tck().max(1) as f64 * 1e6 / delivered
    };
    let per_msg = |from: i64, to: i64| to.saturating_sub(from).max(0) as f64 / delivered;
    let costs = CostBreakdown {
        nodes_us: us(nodes0, nodes1),
        postgres_us: us(pg0, pg1),
        nats_us: us(nats0, nats1),
        commits_per_msg: per_msg(commits0, commits1),
        wal_syncs_per_msg: per_msg(syncs0, syncs1),
        step,
    };
    eprintln!(
        "  W6 {} node(s) at {:.0}/s: nodes {:.0} µs/msg, PostgreSQL {:.0} µs/msg, NATS {:.0} µs/msg, {:.2} commits/msg, {:.2} WAL flushes/msg",
        nodes.len(),
        config.reference_rate,
        costs.nodes_us,
        costs.postgres_us,
        costs.nats_us,
        costs.commits_per_msg,
        costs.wal_syncs_per_msg
    );
    Ok(costs)
}
