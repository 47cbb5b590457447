//! bench/REPORT.md and its SVG plots: the machine and method, the
//! targets table (T1–T8, as in `bench/TARGETS.md`), a section per workload
//! and the baselines.
//!
//! - [`targets`]: the T1–T8 table, each target judged from the workloads;
//! - [`sections`]: one section per workload, W1–W8;
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
    CrashRecovery, DurableDelivery, GroupFanout, IdleConnections, OfflineDrain, ScaleOut, Soak,
    Startup,
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
    /// W6.
    pub scale_out: Option<ScaleOut>,
    /// W8.
    pub soak: Option<Soak>,
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
    plots::soak(dir, r)?;
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
    sections::scale_out(&mut o, r);
    sections::mls(&mut o, r);
    if let Some(w8) = &r.soak {
        sections::soak(&mut o, w8);
    }
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
         (WebSocket + protobuf, Ed25519 register/login, SubmitCommit, SendMessage, Delivery, Ack); envelopes are 512-byte \
         MLS PrivateMessages whose ciphertext is random bytes (the server reads only the clear-text framing and cannot \
         tell the rest from real ciphertext). A group is created with an epoch-0 SubmitCommit framed the same way. \"Sustainable\" = everything delivered within 1 s after the step, e2e p99 ≤ 50 ms, \
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Pcts, StepFigures};
    use crate::workloads::{CostBreakdown, ProcessShare, ScaleOutRun, TlsReconnect};

    /// A measured step at `offered` msg/s with an e2e p99 of `p99` ms.
    fn step(offered: f64, p99: f64, drained: bool) -> StepResult {
        StepResult {
            offered,
            figures: StepFigures {
                sent: 100,
                acked: 99,
                delivered: 98,
                errors: 1,
                first_error: None,
                e2e: Pcts {
                    p50: 1.25,
                    p99,
                    p999: p99 * 2.0,
                },
                ack: Pcts {
                    p50: 0.5,
                    p99: 0.75,
                    p999: 3.0,
                },
            },
            achieved: offered * 0.97,
            drained,
            drain_s: 0.25,
            server_cpu_us_per_msg: 71.4,
            server_cpu_pct: 55.0,
            client_cpu_pct: 33.3,
        }
    }

    /// A run in which every workload produced figures, one baseline was
    /// skipped and one workload failed: every section of the report appears.
    fn every_section() -> Results {
        Results {
            mode: "--all".into(),
            machine: vec![("cores".into(), "2".into()), ("CPU".into(), "x".into())],
            core_split: "pinned".into(),
            startup: Some(Startup {
                cold_start_ms: 12.5,
                cold_starts_ms: vec![12.0, 13.0],
                idle_rss_kib: 9000,
                binary_bytes: 12_000_000,
            }),
            idle_connections: Some(IdleConnections {
                target: 19000,
                registered: 19000,
                register_per_s: 1234.5,
                ramp: vec![(0, 10000), (3800, 50000), (19000, 250000)],
                rss_before_kib: 10000,
                rss_per_conn_kib: 12.6,
                login_per_s: 2000.4,
                idle_cpu_pct: 1.234,
                idle_window_s: 10.0,
                heartbeat_s: 30,
                plain_reconnect_n: 19000,
                plain_reconnect_s: 3.3,
                plain_server_cpu_s: 3.0,
                plain_generator_cpu_s: 2.0,
                tls: Some(TlsReconnect {
                    negotiated: "TLSv1_3, TLS13_AES_256_GCM_SHA384, X25519".into(),
                    certificate: "ECDSA P-256".into(),
                    rss_before_kib: 11000,
                    connections: 19000,
                    rss_open_kib: 400000,
                    rss_per_conn_kib: 20.5,
                    login_per_s: 3000.0,
                    reconnect_n: 19000,
                    reconnect_s: 4.2,
                    server_cpu_s: 2.5,
                    generator_cpu_s: 4.0,
                }),
                tls_failure: None,
                failures: 3,
                reuse_port: vec![
                    ProcessShare {
                        pid: 100,
                        open_fds: 2000,
                        rss_kib: 30000,
                    },
                    ProcessShare {
                        pid: 101,
                        open_fds: 2100,
                        rss_kib: 31000,
                    },
                ],
                reuse_port_conns: 4100,
            }),
            durable_delivery: Some(DurableDelivery {
                pairs: 200,
                step_s: 5.0,
                steps: vec![step(1000.0, 3.0, true), step(5000.0, 80.0, false)],
                max_sustainable: 1000.0,
                half_load: Some(step(500.0, 2.0, true)),
            }),
            offline_drain: Some(OfflineDrain {
                devices: 2000,
                queued: 192480,
                enqueue_per_s: 15655.2,
                drained: 192480,
                drain_s: 14.84,
                drain_per_s: 12974.1,
                errors: 0,
            }),
            group_fanout: vec![
                GroupFanout {
                    devices: 10,
                    stored_bytes_per_msg: 1500.0,
                    payload_bytes_per_msg: 540.0,
                    mailbox_rows_per_msg: 10.0,
                    overhead_per_recipient: 98.8,
                    lat_msgs: 100,
                    last_p50_ms: 1.5,
                    last_p99_ms: 4.5,
                    incomplete: 0,
                    burst_msgs: 2000,
                    deliveries: 20000,
                    deliveries_per_s: 100000.0,
                    server_cpu_us_per_delivery: 3.25,
                    errors: 0,
                },
                GroupFanout {
                    devices: 1000,
                    stored_bytes_per_msg: 50000.0,
                    payload_bytes_per_msg: 540.0,
                    mailbox_rows_per_msg: 1000.0,
                    overhead_per_recipient: 49.5,
                    lat_msgs: 10,
                    last_p50_ms: 20.5,
                    last_p99_ms: 45.5,
                    incomplete: 1,
                    burst_msgs: 300,
                    deliveries: 300000,
                    deliveries_per_s: 160000.0,
                    server_cpu_us_per_delivery: 1.25,
                    errors: 2,
                },
            ],
            crash_recovery: Some(CrashRecovery {
                cycles: 20,
                pairs: 20,
                rate: 2000.0,
                sent: 50000,
                acked: 49000,
                lost: 0,
                duplicates: 12,
                restart_ms: vec![30.0, 40.0, 35.0],
                failures: vec!["cycle 1: oops".into()],
            }),
            scale_out: Some(ScaleOut {
                pairs: 100,
                step_s: 5.0,
                reference_rate: 1000.0,
                runs: vec![ScaleOutRun {
                    nodes: 3,
                    steps: vec![step(1000.0, 4.0, true), step(2000.0, 80.0, false)],
                    max_sustainable: 1000.0,
                    costs: Some(CostBreakdown {
                        step: step(1000.0, 5.0, true),
                        nodes_us: 250.0,
                        postgres_us: 400.0,
                        nats_us: 20.0,
                        commits_per_msg: 0.2,
                        wal_syncs_per_msg: 0.1,
                    }),
                }],
                skipped: None,
            }),
            soak: Some(Soak {
                devices: 10_000,
                rate: 2000.0,
                samples: [
                    (15.0, 40_000, 5_000_000),
                    (300.0, 52_000, 9_000_000),
                    (1200.0, 53_000, 9_100_000),
                ]
                .into_iter()
                .map(|(t_s, rss_kib, file_bytes)| crate::workloads::SoakSample {
                    t_s,
                    rss_kib,
                    file_bytes,
                    delivered: 30_000,
                    errors: 0,
                })
                .collect(),
            }),
            mls_timings: vec![
                ("mls/encrypt/2".into(), 12345.0),
                ("mls/join/1000".into(), 12_345_678.0),
            ],
            mls_wire_sizes: vec![sotto_bench::mls::WireSizes {
                size: 2,
                app_message: 200,
                update_commit: 300,
                add_commit: 400,
                add_welcome: 500,
                remove_commit: 600,
            }],
            mls_note: "a note".into(),
            baselines: vec![
                crate::baselines::Baseline {
                    name: "WebSocket echo (tokio-tungstenite)".into(),
                    version: "v|1".into(),
                    durability: "none".into(),
                    steps: vec![step(1000.0, 0.5, true), step(100000.0, 9.0, true)],
                    max_sustainable: 100000.0,
                    skipped: None,
                },
                crate::baselines::Baseline {
                    name: "Mosquitto, MQTT QoS 1, persistent sessions".into(),
                    version: "2.0".into(),
                    durability: "no fsync".into(),
                    steps: vec![step(1000.0, 0.0, true)],
                    max_sustainable: 0.0,
                    skipped: None,
                },
                crate::baselines::Baseline {
                    name: "NATS JetStream, file storage".into(),
                    skipped: Some("not | installed".into()),
                    ..Default::default()
                },
            ],
            errors: vec!["W6: a\nb".into()],
            wall_s: 568.2,
        }
    }

    fn targets_md() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/TARGETS.md");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// T1..T8 and W1..W8 as they appear in `text` (a letter, then digits, as
    /// a word of its own).
    fn ids_in(text: &str) -> std::collections::BTreeSet<String> {
        let mut ids = std::collections::BTreeSet::new();
        let mut prev = ' ';
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if (c == 'T' || c == 'W') && !prev.is_alphanumeric() {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let next = chars.peek().copied().unwrap_or(' ');
                if !digits.is_empty() && !next.is_alphanumeric() {
                    ids.insert(format!("{c}{digits}"));
                }
                prev = digits.chars().last().unwrap_or(c);
                continue;
            }
            prev = c;
        }
        ids
    }

    #[test]
    fn w6_shows_each_deployment_its_ratio_to_the_embedded_store_and_where_time_goes() {
        let report = render(&every_section());
        let w6 = report
            .split("## W6")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_default();
        // Three nodes sustained 1000 msg/s; the embedded store's max is W2's.
        let w2 = every_section()
            .durable_delivery
            .map(|w| w.max_sustainable)
            .unwrap_or_default();
        let row = format!(
            "| 3 | 1000 | {:.2}× | 4.00 | 5.00 | 250 | 400 | 20 | 0.20 | 0.10 |",
            1000.0 / w2
        );
        assert!(w6.contains(&row), "{row} missing:\n{w6}");
        assert!(w6.contains("### 3 node(s)"), "{w6}");
        assert!(w6.contains("about 4000 msg/s per node core"), "{w6}");
        let skipped = render(&Results {
            scale_out: Some(ScaleOut {
                skipped: Some("SOTTO_TEST_NATS is not set".into()),
                ..ScaleOut::default()
            }),
            ..Results::default()
        });
        assert!(
            skipped.contains("Not measured: SOTTO_TEST_NATS is not set."),
            "{skipped}"
        );
    }

    #[test]
    fn the_report_names_bench_targets_md_and_nothing_outside_the_repository() {
        let report = render(&every_section());
        assert!(report.contains("bench/TARGETS.md"));
        assert!(!report.contains("BENCHMARKS"), "{report}");
        assert!(!report.contains("shared/"), "{report}");
    }

    #[test]
    fn every_target_and_workload_the_report_names_is_defined_in_bench_targets_md() {
        let targets = targets_md();
        let ids = ids_in(&render(&every_section()));
        let expected: Vec<String> = (1..=8)
            .map(|i| format!("T{i}"))
            .chain((1..=8).map(|i| format!("W{i}")))
            .collect();
        assert_eq!(ids.iter().cloned().collect::<Vec<_>>(), expected);
        for id in &ids {
            assert!(
                targets.contains(&format!("\n| {id} | ")),
                "{id} has no row in bench/TARGETS.md"
            );
        }
    }

    /// The T5 row of `report`.
    fn t5_row(report: &str) -> &str {
        report
            .lines()
            .find(|l| l.starts_with("| T5 |"))
            .unwrap_or_else(|| panic!("no T5 row:\n{report}"))
    }

    #[test]
    fn t5_is_judged_on_the_tls_storm_with_the_plain_one_beside_it() {
        let mut r = every_section();
        let report = render(&r);
        let row = t5_row(&report);
        assert!(row.contains("19000 TLS clients in 4.20 s"), "{row}");
        assert!(row.contains("TLSv1_3"), "{row}");
        assert!(
            row.contains("plain WebSocket in the same run: 19000 in 3.30 s"),
            "{row}"
        );
        assert!(row.ends_with("| **met** |"), "{row}");

        // A fast plain storm does not meet T5 when the TLS one is slow.
        if let Some(w1) = r.idle_connections.as_mut() {
            w1.tls = w1.tls.take().map(|t| TlsReconnect {
                reconnect_s: 5.5,
                ..t
            });
        }
        let report = render(&r);
        assert!(t5_row(&report).ends_with("| **not met** |"), "{report}");
    }

    #[test]
    fn without_a_tls_storm_t5_is_not_met_and_says_why() {
        let mut r = every_section();
        if let Some(w1) = r.idle_connections.as_mut() {
            w1.tls = None;
            w1.tls_failure = Some("sotto-server did not start | at all".into());
        }
        let report = render(&r);
        let row = t5_row(&report);
        assert!(
            row.contains("TLS storm not measured (sotto-server did not start   at all)"),
            "{row}"
        );
        assert!(row.ends_with("| **not met** (TLS not measured) |"), "{row}");
        assert!(report.contains("Over TLS: not measured"), "{report}");
    }

    #[test]
    fn an_empty_run_still_renders_every_always_present_section() {
        let report = render(&Results::default());
        for heading in [
            "# Sotto benchmark report",
            "## The bar ([bench/TARGETS.md](TARGETS.md)) — T1–T8",
            "## W6 — scale-out",
            "## W7 — client MLS costs",
        ] {
            assert!(report.contains(heading), "{heading} missing:\n{report}");
        }
        assert!(!report.contains("## Errors during the run"));
    }

    #[test]
    fn write_puts_the_report_and_both_plots_in_the_directory() {
        let dir =
            std::env::temp_dir().join(format!("sotto-bench-report-test-{}", std::process::id()));
        write(&dir, &every_section()).unwrap();
        for file in [
            "REPORT.md",
            "latency_vs_load.svg",
            "rss_vs_connections.svg",
            "soak.svg",
        ] {
            assert!(dir.join(file).is_file(), "{file} missing");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
