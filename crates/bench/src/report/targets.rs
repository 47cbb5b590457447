//! The T1–T8 table: each target of `bench/TARGETS.md`, what this run
//! measured for it, and whether it is met.

use std::fmt::Write as _;

use super::{Results, f0, f2, mark};
use crate::workloads::IdleConnections;

/// The T1–T8 table.
pub(super) fn table(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## The bar ([bench/TARGETS.md](TARGETS.md)) — T1–T8\n");
    let _ = writeln!(o, "| id | target | measured | status |\n|---|---|---|---|");
    if let Some(w1) = &r.idle_connections {
        let ok = w1.rss_per_conn_kib <= 8.0 && w1.ramp.last().is_some_and(|l| l.0 >= 19_000);
        let extrap = w1.rss_per_conn_kib * 100_000.0 / 1024.0 / 1024.0;
        let _ = writeln!(
            o,
            "| T1 | ≤ 8 KiB RSS per idle authenticated connection; ≥ 19k per process; 100k in ≤ 1.5 GiB | {:.1} KiB/connection at {} connections (one process); 100k extrapolated: {:.2} GiB + {} KiB base per process | {} |",
            w1.rss_per_conn_kib,
            w1.ramp.last().map_or(0, |l| l.0),
            extrap,
            w1.rss_before_kib,
            mark(ok)
        );
    } else {
        let _ = writeln!(o, "| T1 | ≤ 8 KiB per idle connection | not run | – |");
    }
    if let Some(w2) = &r.durable_delivery {
        let _ = writeln!(
            o,
            "| T2 | ≥ 50,000 durable msg/s (acked after fsync) | max sustainable {} msg/s (highest offered step that passed) | {} |",
            f0(w2.max_sustainable),
            mark(w2.max_sustainable >= 50_000.0)
        );
        match &w2.half_load {
            Some(h) => {
                let e = &h.figures.e2e;
                let _ = writeln!(
                    o,
                    "| T3 | at half of max: p50 ≤ 2 ms, p99 ≤ 15 ms, p99.9 ≤ 50 ms | at {} msg/s: p50 {} / p99 {} / p99.9 {} ms | {} |",
                    f0(h.offered),
                    f2(e.p50),
                    f2(e.p99),
                    f2(e.p999),
                    mark(e.p50 <= 2.0 && e.p99 <= 15.0 && e.p999 <= 50.0)
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "| T3 | at half of max load | no sustainable step | **not met** |"
                );
            }
        }
    }
    if let Some(g) = r.group_fanout.iter().find(|g| g.devices >= 1000) {
        let ok = g.last_p99_ms <= 50.0
            && g.deliveries_per_s >= 150_000.0
            && g.overhead_per_recipient <= 64.0;
        let _ = writeln!(
            o,
            "| T4 | 1,000-device group: last recipient p99 ≤ 50 ms; ≥ 150k deliveries/s; stored ≈ payload + ≤ 64 B/recipient | p99 {} ms; {} deliveries/s; {} B/recipient above the payload | {} |",
            f2(g.last_p99_ms),
            f0(g.deliveries_per_s),
            f0(g.overhead_per_recipient),
            mark(ok)
        );
    } else {
        let _ = writeln!(
            o,
            "| T4 | 1,000-device group | not run at 1,000 in this mode | – |"
        );
    }
    if let Some(w1) = &r.idle_connections {
        t5(o, w1);
    }
    match &r.offline_drain {
        Some(w3) => {
            let _ = writeln!(
                o,
                "| T6 | offline drain ≥ 50k msg/s | {} msg/s ({} messages, {} devices) | {} |",
                f0(w3.drain_per_s),
                w3.drained,
                w3.devices,
                mark(w3.drain_per_s >= 50_000.0)
            );
        }
        None => {
            let _ = writeln!(o, "| T6 | offline drain ≥ 50k msg/s | not run | – |");
        }
    }
    if let (Some(w5), Some(w1)) = (&r.crash_recovery, &r.idle_connections) {
        let _ = writeln!(
            o,
            "| T7 | 0 acked messages lost across crashes; idle CPU < 5 % of a core at 19k connections | {} lost of {} acked over {} kill -9 cycles ({} duplicates); idle CPU {:.2} % at {} connections | {} |",
            w5.lost,
            w5.acked,
            w5.cycles,
            w5.duplicates,
            w1.idle_cpu_pct,
            w1.ramp.last().map_or(0, |l| l.0),
            mark(
                w5.lost == 0
                    && w5.failures.is_empty()
                    && w1.idle_cpu_pct < 5.0
                    && w1.ramp.last().is_some_and(|l| l.0 >= 19_000)
            )
        );
    }
    if let Some(t8) = &r.startup {
        let mib = t8.binary_bytes as f64 / 1024.0 / 1024.0;
        let idle = t8.idle_rss_kib as f64 / 1024.0;
        let _ = writeln!(
            o,
            "| T8 | cold start ≤ 100 ms; idle RSS ≤ 20 MiB; binary ≤ 30 MiB | cold start {} ms (median of {}; spawn → \"listening on\", fresh data dir); idle RSS {:.1} MiB; binary {:.1} MiB | {} |",
            f0(t8.cold_start_ms),
            t8.cold_starts_ms.len(),
            idle,
            mib,
            mark(t8.cold_start_ms <= 100.0 && idle <= 20.0 && mib <= 30.0)
        );
    }
    let _ = writeln!(o);
}

/// T5 is judged on the TLS storm; the plain one of the same run is shown
/// beside it for comparison.
fn t5(o: &mut String, w1: &IdleConnections) {
    let plain = format!(
        "plain WebSocket in the same run: {} in {:.2} s",
        w1.plain_reconnect_n, w1.plain_reconnect_s
    );
    match &w1.tls {
        Some(tls) => {
            let _ = writeln!(
                o,
                "| T5 | 19k TLS clients reconnect in ≤ 5 s | {} TLS clients in {:.2} s (a full handshake each, {}; 512 in flight); {} | {} |",
                tls.reconnect_n,
                tls.reconnect_s,
                tls.negotiated,
                plain,
                mark(tls.reconnect_n >= 19_000 && tls.reconnect_s <= 5.0)
            );
        }
        None => {
            let _ = writeln!(
                o,
                "| T5 | 19k TLS clients reconnect in ≤ 5 s | TLS storm not measured ({}); {} | **not met** (TLS not measured) |",
                w1.tls_failure
                    .as_deref()
                    .unwrap_or("did not run")
                    .replace(['|', '\n'], " "),
                plain
            );
        }
    }
}
