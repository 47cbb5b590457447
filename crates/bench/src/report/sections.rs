//! One report section per workload, W1–W8.

use std::fmt::Write as _;

use super::{Results, f0, f2, step_rows};
use crate::workloads::{
    CrashRecovery, DurableDelivery, GroupFanout, IdleConnections, OfflineDrain, ProcessShare, Soak,
    SoakSample, TlsReconnect,
};

/// W1.
pub(super) fn idle_connections(o: &mut String, w1: &IdleConnections) {
    let _ = writeln!(o, "## W1 — idle authenticated connections\n");
    let _ = writeln!(
        o,
        "Target {} connections. {} accounts registered first ({:.0} registrations/s, connections closed), then logged in and kept idle in five steps, \
         each client sending a WebSocket ping every {} s. RSS is the server's VmRSS; per connection = (RSS at the top − RSS before the ramp) / connections. \
         Failures: {}.\n",
        w1.target, w1.registered, w1.register_per_s, w1.heartbeat_s, w1.failures
    );
    let _ = writeln!(o, "| connections | server RSS KiB |\n|---:|---:|");
    for (c, rss) in &w1.ramp {
        let _ = writeln!(o, "| {c} | {rss} |");
    }
    let _ = writeln!(
        o,
        "\n- RSS per idle authenticated connection: **{:.1} KiB** (bare tokio-tungstenite: ~10.8 KiB per bench/TARGETS.md)\n\
         - logins/s during the ramp (128 in flight): **{:.0}**\n\
         - idle server CPU at {} connections over {:.0} s: **{:.2} % of a core**\n\
         - all {} drop and reconnect at once over plain WebSocket (512 in flight): **{:.2} s**; CPU during the storm: {}\n",
        w1.rss_per_conn_kib,
        w1.login_per_s,
        w1.ramp.last().map_or(0, |l| l.0),
        w1.idle_window_s,
        w1.idle_cpu_pct,
        w1.plain_reconnect_n,
        w1.plain_reconnect_s,
        storm_cpu(
            w1.plain_server_cpu_s,
            w1.plain_generator_cpu_s,
            w1.plain_reconnect_s
        )
    );
    match (&w1.tls, &w1.tls_failure) {
        (Some(tls), _) => idle_connections_tls(o, tls),
        (None, Some(why)) => {
            let _ = writeln!(
                o,
                "Over TLS: not measured, the phase failed: {}\n",
                why.replace('\n', " ")
            );
        }
        (None, None) => {}
    }
    if !w1.reuse_port.is_empty() {
        let _ = writeln!(
            o,
            "Several processes on one port (`sotto-server --reuse-port`, same data directory; accounts registered beforehand): {} connections spread as:\n",
            w1.reuse_port_conns
        );
        let _ = writeln!(o, "| pid | open fds | RSS KiB |\n|---:|---:|---:|");
        for ProcessShare {
            pid,
            open_fds,
            rss_kib,
        } in &w1.reuse_port
        {
            let _ = writeln!(o, "| {pid} | {open_fds} | {rss_kib} |");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "![RSS against connections](rss_vs_connections.svg)\n");
}

/// W1's TLS phase.
fn idle_connections_tls(o: &mut String, tls: &TlsReconnect) {
    let _ = writeln!(
        o,
        "Over TLS: the server restarted on the same data directory with `--tls-cert/--tls-key` ({}); every client verifies it \
         against that CA and makes a full handshake (no session resumption: separate devices cannot share tickets); first handshake: {}.\n\n\
         - {} TLS connections open: server RSS {} KiB ({} KiB after the restart, before any connection), **{:.1} KiB per idle TLS connection** \
         (this includes the SQLite page cache filling again after the restart)\n\
         - TLS logins/s while they opened (128 in flight): **{:.0}**\n\
         - all {} drop and reconnect at once over TLS (512 in flight): **{:.2} s**; CPU during the storm: {} \
         (the generator's one core also runs every client's handshake: near 100 % of it, the figure is the generator's limit as much as the server's)\n",
        tls.certificate,
        tls.negotiated,
        tls.connections,
        tls.rss_open_kib,
        tls.rss_before_kib,
        tls.rss_per_conn_kib,
        tls.login_per_s,
        tls.reconnect_n,
        tls.reconnect_s,
        storm_cpu(tls.server_cpu_s, tls.generator_cpu_s, tls.reconnect_s)
    );
}

/// "server 1.20 s (80 % of its core), generator …" for a storm of `wall_s`.
fn storm_cpu(server_s: f64, generator_s: f64, wall_s: f64) -> String {
    let pct = |cpu: f64| 100.0 * cpu / wall_s.max(1e-3);
    format!(
        "server {server_s:.2} s ({:.0} % of its core), generator {generator_s:.2} s ({:.0} % of its core)",
        pct(server_s),
        pct(generator_s)
    )
}

/// W2.
pub(super) fn durable_delivery(o: &mut String, w2: &DurableDelivery) {
    let _ = writeln!(o, "## W2 — 1:1 durable delivery (512-byte envelopes)\n");
    let _ = writeln!(
        o,
        "{} sender/receiver device pairs, each pair its own group and connections; {} s per step; Sotto answers `Done` only after the SQLite \
         transaction (WAL, `synchronous=FULL`) committed, i.e. **fsync before ack**. e2e = scheduled send → delivery at the receiver; \
         send→ack = scheduled send → `Done`. Receivers acknowledge every delivery (batched per read).\n",
        w2.pairs, w2.step_s
    );
    step_rows(o, &w2.steps, true);
    let _ = writeln!(
        o,
        "\nMax sustainable rate: **{} msg/s**.",
        f0(w2.max_sustainable)
    );
    if let Some(h) = &w2.half_load {
        let _ = writeln!(
            o,
            "At half of it ({} msg/s): e2e p50 {} ms, p99 {} ms, p99.9 {} ms; send→ack p99 {} ms.\n",
            f0(h.offered),
            f2(h.figures.e2e.p50),
            f2(h.figures.e2e.p99),
            f2(h.figures.e2e.p999),
            f2(h.figures.ack.p99)
        );
    }
    let _ = writeln!(o, "![latency against offered load](latency_vs_load.svg)\n");
}

/// W3.
pub(super) fn offline_drain(o: &mut String, w3: &OfflineDrain) {
    let _ = writeln!(o, "## W3 — offline drain\n");
    let _ = writeln!(
        o,
        "{} messages queued for {} offline devices (enqueued at {:.0} msg/s), then every device logs in at once and drains (`Sync` answers when its mailbox is empty): \
         **{} delivered in {:.2} s = {:.0} msg/s**; errors {}. (W3 in bench/TARGETS.md is 1M messages for 10k devices; this run is scaled down to stay in the time budget.)\n",
        w3.queued, w3.devices, w3.enqueue_per_s, w3.drained, w3.drain_s, w3.drain_per_s, w3.errors
    );
}

/// W4, a row per group size.
pub(super) fn group_fanout(o: &mut String, groups: &[GroupFanout]) {
    let _ = writeln!(o, "## W4 — group fan-out\n");
    let _ = writeln!(
        o,
        "One group per size; four sender devices; every message names all recipient devices. Storage: 20 messages queued while every recipient is offline; \
         bytes = growth of the SQLite database (page_count × page_size, WAL included) per message. Latency: Poisson sends at a light rate, \
         time from the scheduled send to the **last** recipient's delivery. Throughput: a burst from four senders, deliveries/s until all arrived.\n"
    );
    let _ = writeln!(
        o,
        "| devices | stored bytes/msg | payload bytes/msg | mailbox rows/msg | bytes/recipient above payload | msgs timed | last-recipient p50 ms | p99 ms | incomplete | burst msgs | deliveries | deliveries/s | server CPU µs/delivery | errors |"
    );
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for g in groups {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g.devices,
            f0(g.stored_bytes_per_msg),
            f0(g.payload_bytes_per_msg),
            f0(g.mailbox_rows_per_msg),
            f0(g.overhead_per_recipient),
            g.lat_msgs,
            f2(g.last_p50_ms),
            f2(g.last_p99_ms),
            g.incomplete,
            g.burst_msgs,
            g.deliveries,
            f0(g.deliveries_per_s),
            f2(g.server_cpu_us_per_delivery),
            g.errors
        );
    }
    let _ = writeln!(o);
}

/// W5.
pub(super) fn crash_recovery(o: &mut String, w5: &CrashRecovery) {
    let _ = writeln!(o, "## W5 — crash during load\n");
    let _ = writeln!(
        o,
        "{} cycles: {} pairs at {} msg/s (Poisson); `kill -9` of the server 0.3–0.9 s into the load; restart on the same data directory; every receiver logs in and drains (Sync). \
         A message counts as acknowledged when its sender got `Done`.\n\n\
         | cycles | sent | acknowledged | **lost (acked, never delivered)** | duplicates seen by receivers | restart median ms |\n|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | **{}** | {} | {} |\n",
        w5.cycles,
        w5.pairs,
        f0(w5.rate),
        w5.cycles,
        w5.sent,
        w5.acked,
        w5.lost,
        w5.duplicates,
        f0(crate::stats::median(w5.restart_ms.clone()))
    );
    let _ = writeln!(
        o,
        "Duplicates are deliveries a receiver saw twice because its Ack had not been committed when the server died; \
         the protocol is at-least-once and clients de-duplicate on the message id.\n"
    );
    for f in w5.failures.iter().take(10) {
        let _ = writeln!(o, "- failure: {f}");
    }
}

/// W8.
pub(super) fn soak(o: &mut String, w8: &Soak) {
    let _ = writeln!(
        o,
        "## W8 — soak: RSS and database size under steady traffic\n"
    );
    let (Some(first), Some(warm), Some(last)) =
        (w8.samples.first(), w8.warmed(), w8.samples.last())
    else {
        let _ = writeln!(o, "No samples.\n");
        return;
    };
    let errors: u64 = w8.samples.iter().map(|s| s.errors).sum();
    let delivered: u64 = w8.samples.iter().map(|s| s.delivered).sum();
    let _ = writeln!(
        o,
        "{} devices ({} pairs, each its own group) at {} msg/s (Poisson, 512 B) for {:.0} s; a sample after every window. \
         Delivered {delivered}, errors {errors}. Flat = RSS and database files (`sotto.db` with its WAL) grew at most 10 % from \
         the end of the warm-up (the first fifth of the run) to the end: **{}**.\n\n\
         | | s | RSS MiB | database MiB |\n|---|---:|---:|---:|",
        w8.devices,
        w8.devices / 2,
        f0(w8.rate),
        last.t_s,
        if w8.flat() { "flat" } else { "not flat" }
    );
    for (what, sample) in [
        ("first window", first),
        ("warm-up end", warm),
        ("end", last),
    ] {
        soak_row(o, what, sample);
    }
    let _ = writeln!(o, "\n![RSS and database size over time](soak.svg)\n");
}

fn soak_row(o: &mut String, what: &str, s: &SoakSample) {
    let _ = writeln!(
        o,
        "| {what} | {:.0} | {:.1} | {:.2} |",
        s.t_s,
        s.rss_kib as f64 / 1024.0,
        s.file_bytes as f64 / 1_048_576.0
    );
}

/// W6: the ladder per node count, and where a message's time goes.
pub(super) fn scale_out(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## W6 — scale-out (PostgreSQL + NATS)\n");
    let Some(w6) = &r.scale_out else {
        let _ = writeln!(o, "Not run.\n");
        return;
    };
    if let Some(why) = &w6.skipped {
        let _ = writeln!(o, "Not measured: {why}.\n");
        return;
    }
    let _ = writeln!(
        o,
        "W2's ladder ({} pairs, {:.0} s per step) against 1, 2 and 3 `sotto-server` nodes sharing one PostgreSQL database \
         (`--store postgres://…`, a fresh schema each) and the NATS server (`--bus nats://…`) the tests use. With more than \
         one node, every pair's sender and receiver are on different nodes, so every delivery takes the cross-node path: \
         commit in PostgreSQL, wake-up over NATS, the receiver's node reads the mailbox. The nodes share the server core as W2's \
         one server does; **PostgreSQL and NATS are not pinned**, so on this 2-core machine they take CPU from the nodes and \
         the generator alike. This measures what the cluster path costs and that it stays correct under load, not scaling: \
         every node here competes for the same core. The breakdown is one step at {:.0} msg/s per deployment, with the CPU of \
         every process read from /proc and PostgreSQL's own counters (`pg_stat_database.xact_commit`, `pg_stat_wal.wal_sync`) \
         read around it; PostgreSQL's CPU covers all its processes, including any other activity on the server. In the \
         per-step tables below, \"server CPU\" is every node's together (not PostgreSQL's or NATS's).\n",
        w6.pairs, w6.step_s, w6.reference_rate
    );
    let embedded = r
        .durable_delivery
        .as_ref()
        .map(|w2| w2.max_sustainable)
        .filter(|m| *m > 0.0);
    let _ = writeln!(
        o,
        "| nodes | max sustainable msg/s | vs embedded SQLite (W2) | e2e p99 at that rate, ms | e2e p99 at {:.0} msg/s, ms | nodes CPU µs/msg | PostgreSQL CPU µs/msg | NATS CPU µs/msg | PostgreSQL commits/msg | WAL flushes/msg |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        w6.reference_rate
    );
    for run in &w6.runs {
        let top = run
            .steps
            .iter()
            .find(|s| run.max_sustainable > 0.0 && (s.offered - run.max_sustainable).abs() < 0.5);
        let ratio = embedded.map_or_else(
            || "–".to_owned(),
            |e| format!("{:.2}×", run.max_sustainable / e),
        );
        let (reference_p99, nodes_us, pg_us, nats_us, commits, syncs) =
            run.costs.as_ref().map_or_else(
                || {
                    [
                        "–".to_owned(),
                        "–".into(),
                        "–".into(),
                        "–".into(),
                        "–".into(),
                        "–".into(),
                    ]
                    .into()
                },
                |c| {
                    (
                        f2(c.step.figures.e2e.p99),
                        f0(c.nodes_us),
                        f0(c.postgres_us),
                        f0(c.nats_us),
                        f2(c.commits_per_msg),
                        f2(c.wal_syncs_per_msg),
                    )
                },
            );
        let _ = writeln!(
            o,
            "| {} | {} | {ratio} | {} | {reference_p99} | {nodes_us} | {pg_us} | {nats_us} | {commits} | {syncs} |",
            run.nodes,
            f0(run.max_sustainable),
            top.map_or_else(|| "–".to_owned(), |s| f2(s.figures.e2e.p99)),
        );
    }
    let _ = writeln!(o);
    if let Some(c) = w6.runs.iter().rev().find_map(|run| run.costs.as_ref()) {
        let _ = writeln!(
            o,
            "Per-node capacity, estimated from the largest deployment's per-message costs: the nodes together spend {:.0} µs \
             of CPU per message (the sender's node accepts and commits it, the receiver's node is woken and delivers it), so \
             a cluster whose nodes each have a core of their own carries about {:.0} msg/s per node core; PostgreSQL spends \
             {:.0} µs per message and {:.2} WAL flushes, so one PostgreSQL core carries about {:.0} msg/s before its disk's \
             flush rate or its CPU is the limit; NATS spends {:.0} µs per message. More than one WAL flush per message would \
             mean a node commits each message on its own instead of in a batch.\n",
            c.nodes_us,
            1e6 / c.nodes_us.max(1.0),
            c.postgres_us,
            c.wal_syncs_per_msg,
            1e6 / c.postgres_us.max(1.0),
            c.nats_us
        );
    }
    for run in &w6.runs {
        let _ = writeln!(o, "### {} node(s)\n", run.nodes);
        step_rows(o, &run.steps, true);
        let _ = writeln!(o);
    }
}

/// W7: criterion timings and bytes on the wire.
pub(super) fn mls(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## W7 — client MLS costs (criterion)\n");
    let _ = writeln!(o, "{}\n", r.mls_note);
    if !r.mls_timings.is_empty() {
        let _ = writeln!(
            o,
            "| benchmark (operation/group size) | time per op |\n|---|---:|"
        );
        for (name, ns) in &r.mls_timings {
            let t = if *ns >= 1e6 {
                format!("{:.2} ms", ns / 1e6)
            } else {
                format!("{:.1} µs", ns / 1e3)
            };
            let _ = writeln!(o, "| {name} | {t} |");
        }
        let _ = writeln!(o);
    }
    if !r.mls_wire_sizes.is_empty() {
        let _ = writeln!(o, "Bytes on the wire (100-byte plaintext):\n");
        let _ = writeln!(
            o,
            "| members | application message | update commit | add-one commit | add-one Welcome | remove-one commit |\n|---:|---:|---:|---:|---:|---:|"
        );
        for s in &r.mls_wire_sizes {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                s.size,
                s.app_message,
                s.update_commit,
                s.add_commit,
                s.add_welcome,
                s.remove_commit
            );
        }
        let _ = writeln!(o);
    }
}
