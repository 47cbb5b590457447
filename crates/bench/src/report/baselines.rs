//! Sotto against the baselines measured in the same run: max sustainable
//! rates and their ratio, e2e p99 at each offered rate, and each baseline's
//! own ladder.

use std::fmt::Write as _;

use super::{Results, f0, f2, step_rows};

/// The baselines section (only called when at least one baseline ran or
/// was skipped).
pub(super) fn section(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Baselines in the same run\n");
    let _ = writeln!(
        o,
        "Same generator, same pair count, same 512-byte payloads, same rate ladder, broker pinned to the server's core. \
         MQTT and NATS are spoken by small hand-written clients in this crate (MQTT 3.1.1 QoS 1; NATS core protocol + JetStream API), \
         which avoids pulling rumqttc/async-nats and their TLS stacks into the build.\n"
    );
    let _ = writeln!(
        o,
        "| system | version | durability before ack | max sustainable msg/s | Sotto ÷ baseline |\n|---|---|---|---:|---:|"
    );
    let sotto_max = r
        .durable_delivery
        .as_ref()
        .map_or(0.0, |w| w.max_sustainable);
    let _ = writeln!(
        o,
        "| Sotto | this commit | **fsync before ack** (SQLite WAL, synchronous=FULL, batched commits) | {} | 1.00 |",
        f0(sotto_max)
    );
    for b in &r.baselines {
        if let Some(why) = &b.skipped {
            let _ = writeln!(
                o,
                "| {} | – | – | skipped: {} | – |",
                b.name,
                why.replace('|', "/")
            );
            continue;
        }
        let ratio = if b.max_sustainable > 0.0 {
            format!("{:.2}", sotto_max / b.max_sustainable)
        } else {
            "–".into()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            b.name,
            b.version.replace('|', "/"),
            b.durability,
            f0(b.max_sustainable),
            ratio
        );
    }
    let _ = writeln!(o);
    // Ratios per step where both ran.
    if let Some(w2) = &r.durable_delivery {
        let _ = writeln!(
            o,
            "e2e p99 at each offered rate (ms; Sotto ÷ baseline in brackets):\n"
        );
        let mut head = "| offered msg/s | Sotto |".to_string();
        let mut sep = "|---:|---:|".to_string();
        for b in r.baselines.iter().filter(|b| b.skipped.is_none()) {
            head.push_str(&format!(" {} |", b.name));
            sep.push_str("---:|");
        }
        let _ = writeln!(o, "{head}\n{sep}");
        let rates: Vec<f64> = {
            let mut v: Vec<f64> = w2.steps.iter().map(|s| s.offered).collect();
            for b in &r.baselines {
                for s in &b.steps {
                    if !v.iter().any(|x| (x - s.offered).abs() < 0.5) {
                        v.push(s.offered);
                    }
                }
            }
            v.sort_by(|a, b| a.total_cmp(b));
            v
        };
        for rate in rates {
            let sotto = w2.steps.iter().find(|s| (s.offered - rate).abs() < 0.5);
            let mut row = format!(
                "| {} | {} |",
                f0(rate),
                sotto.map_or("–".into(), |s| f2(s.figures.e2e.p99))
            );
            for b in r.baselines.iter().filter(|b| b.skipped.is_none()) {
                let cell = match (
                    b.steps.iter().find(|s| (s.offered - rate).abs() < 0.5),
                    sotto,
                ) {
                    (Some(bs), Some(ss)) if bs.figures.e2e.p99 > 0.0 => format!(
                        "{} ({:.1}×)",
                        f2(bs.figures.e2e.p99),
                        ss.figures.e2e.p99 / bs.figures.e2e.p99
                    ),
                    (Some(bs), _) => f2(bs.figures.e2e.p99),
                    _ => "–".into(),
                };
                row.push_str(&format!(" {cell} |"));
            }
            let _ = writeln!(o, "{row}");
        }
        let _ = writeln!(o);
    }
    for b in r.baselines.iter().filter(|b| b.skipped.is_none()) {
        let _ = writeln!(o, "### {}\n\n{}\n", b.name, b.durability);
        step_rows(o, &b.steps, !b.name.contains("echo"));
        let _ = writeln!(o);
    }
}
