//! bench/REPORT.md and its SVG plots: the machine and method, the
//! targets table (T1–T8, as in `bench/TARGETS.md`), a section per workload
//! and the baselines.
//!
//! - [`targets`]: the T1–T8 table, each target judged from the workloads;
//! - [`sections`]: one section per workload, W1–W7;
//! - [`baselines`]: Sotto against the baselines of the same run;
//! - [`plots`]: the SVG plots the report embeds.

mod baselines;
mod plots;
mod sections;
mod targets;

use std::fmt::Write as _;
use std::path::Path;

use crate::baselines::Baseline;
use crate::load::StepResult;
use crate::workloads::{
    CrashRecovery, DurableDelivery, GroupFanout, IdleConnections, OfflineDrain, Startup,
};

/// Everything one run measured; `None` (or empty) where a workload did not
/// run or failed.
#[derive(Debug, Default)]
pub struct Results {
    /// The flag the run was started with (`--all`, `--quick`, `--smoke`).
    pub mode: String,
    /// (what, value) rows describing the machine and the build.
    pub machine: Vec<(String, String)>,
    /// How server and generator shared the cores.
    pub core_split: String,
    /// T8.
    pub startup: Option<Startup>,
    /// W1.
    pub idle_connections: Option<IdleConnections>,
    /// W2.
    pub durable_delivery: Option<DurableDelivery>,
    /// W3.
    pub offline_drain: Option<OfflineDrain>,
    /// W4, one per group size.
    pub group_fanout: Vec<GroupFanout>,
    /// W5.
    pub crash_recovery: Option<CrashRecovery>,
    /// W7: (criterion benchmark, ns per operation).
    pub mls_timings: Vec<(String, f64)>,
    /// W7: bytes on the wire per group size.
    pub mls_wire_sizes: Vec<sotto_bench::mls::WireSizes>,
    /// W7: how the criterion figures were obtained (or why they were not).
    pub mls_note: String,
    /// W2's ladder against the baselines.
    pub baselines: Vec<Baseline>,
    /// Workloads that failed, with why.
    pub errors: Vec<String>,
    /// How long the whole run took.
    pub wall_s: f64,
}

fn f0(v: f64) -> String {
    format!("{v:.0}")
}
fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn step_rows(out: &mut String, steps: &[StepResult], acks: bool) {
    let _ = writeln!(
        out,
        "| offered msg/s | delivered | achieved msg/s | e2e p50 ms | e2e p99 ms | e2e p99.9 ms | {}server CPU µs/msg | server CPU % | generator CPU % | drained (s after step) | errors | sustainable |",
        if acks {
            "send→ack p50 / p99 / p99.9 ms | "
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|{}---:|---:|---:|---|---:|---|",
        if acks { "---|" } else { "" }
    );
    for s in steps {
        let f = &s.figures;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} |",
            f0(s.offered),
            f.delivered,
            f0(s.achieved),
            f2(f.e2e.p50),
            f2(f.e2e.p99),
            f2(f.e2e.p999),
            if acks {
                format!(
                    "{} / {} / {} | ",
                    f2(f.ack.p50),
                    f2(f.ack.p99),
                    f2(f.ack.p999)
                )
            } else {
                String::new()
            },
            f0(s.server_cpu_us_per_msg),
            f0(s.server_cpu_pct),
            f0(s.client_cpu_pct),
            if s.drained {
                format!("yes ({:.2})", s.drain_s)
            } else {
                "no".into()
            },
            f.errors,
            if s.sustainable() { "yes" } else { "no" }
        );
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// Writes `REPORT.md` and its plots into `dir`.
pub fn write(dir: &Path, r: &Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("REPORT.md"), render(r))?;
    plots::latency_vs_load(dir, r)?;
    plots::rss_vs_connections(dir, r)?;
    Ok(())
}

/// The markdown of `REPORT.md`.
fn render(r: &Results) -> String {
    let mut o = String::new();
    header(&mut o, r);
    targets::table(&mut o, r);
    if let Some(w1) = &r.idle_connections {
        sections::idle_connections(&mut o, w1);
    }
    if let Some(w2) = &r.durable_delivery {
        sections::durable_delivery(&mut o, w2);
    }
    if !r.baselines.is_empty() {
        baselines::section(&mut o, r);
    }
    if let Some(w3) = &r.offline_drain {
        sections::offline_drain(&mut o, w3);
    }
    if !r.group_fanout.is_empty() {
        sections::group_fanout(&mut o, &r.group_fanout);
    }
    if let Some(w5) = &r.crash_recovery {
        sections::crash_recovery(&mut o, w5);
    }
    sections::scale_out(&mut o);
    sections::mls(&mut o, r);
    if !r.errors.is_empty() {
        errors(&mut o, &r.errors);
    }
    o
}

/// Title, how the run was made, the machine, and the method.
fn header(o: &mut String, r: &Results) {
    let _ = writeln!(o, "# Sotto benchmark report\n");
    let _ = writeln!(
        o,
        "Generated by `cargo run --release -p sotto-bench -- {}` in {:.0} s. Every figure below comes from this one run; \
         ratios compare Sotto with baselines measured in the same run on the same machine. \
         Numbers from a shared 2-core machine are noisy: read them as an order of magnitude and a direction, \
         and rerun before relying on a second digit.\n",
        r.mode, r.wall_s
    );
    let _ = writeln!(o, "## Machine and method\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(o, "| core split | {} |", r.core_split);
    let _ = writeln!(
        o,
        "\nMethod: open-loop load. Each sender follows its own Poisson schedule (the sum is Poisson at the offered rate); \
         every latency is measured from the **scheduled** send time, so a stall shows up as latency instead of silently \
         slowing the generator (no coordinated omission). Latencies go into HdrHistogram (1 µs – 10 min, 3 significant digits). \
         Client sockets bind 127.0.0.2, 127.0.0.3, … (traffic stays on 127.0.0.0/8). Sotto is driven over its real protocol \
         (WebSocket + protobuf, Ed25519 register/login, SubmitCommit, SendMessage, Delivery, Ack); envelopes are 512 bytes of \
         random bytes instead of MLS ciphertext, which the server cannot tell apart. A group is created with an epoch-0 \
         SubmitCommit carrying random bytes. \"Sustainable\" = everything delivered within 1 s after the step, e2e p99 ≤ 50 ms, \
         no errors, ≥ 95 % of the offered rate achieved; the ladder stops after two unsustainable steps.\n"
    );
}

fn errors(o: &mut String, errors: &[String]) {
    let _ = writeln!(o, "## Errors during the run\n");
    for e in errors {
        let _ = writeln!(o, "- {}", e.replace('\n', " "));
    }
    let _ = writeln!(o);
}
