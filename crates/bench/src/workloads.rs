//! W1, W2, W3, W4, W5 and T8 against real `sotto-server` processes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use sotto_proto::v1::{self, client_frame::Body};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, Pairs, Shared, Step, StepResult, Tracker};
use crate::net::{self, SourceAddrs, Ws};
use crate::procs::{self, Proc, SottoBin};
use crate::sotto::{self, PairKeys};
use crate::stats::{self, Recorder};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn shared(rec: &Arc<Recorder>, tracker: Tracker) -> (Shared, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    (
        Shared {
            seq_base: 0,
            rec: Arc::clone(rec),
            tracker: Arc::new(tracker),
            stop: rx,
        },
        tx,
    )
}

// ------------------------------------------------------------------ T8

#[derive(Debug, Clone, Default)]
pub struct T8 {
    pub cold_start_ms: f64,
    pub cold_starts_ms: Vec<f64>,
    pub idle_rss_kib: u64,
    pub binary_bytes: u64,
}

pub async fn t8(bin: &SottoBin, root: &Path, runs: usize) -> anyhow::Result<T8> {
    let mut starts = Vec::new();
    let mut idle = 0;
    for i in 0..runs.max(1) {
        let dir = procs::scratch_dir(root, &format!("t8-{i}"))?;
        let port = procs::free_port()?;
        let p = bin.start(&dir, port, false).await?;
        starts.push(p.start_time.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        idle = p.rss_kib();
        p.stop(Duration::from_secs(5)).await?;
    }
    Ok(T8 {
        cold_start_ms: stats::median(starts.clone()),
        cold_starts_ms: starts,
        idle_rss_kib: idle,
        binary_bytes: std::fs::metadata(&bin.path).map(|m| m.len()).unwrap_or(0),
    })
}

// ------------------------------------------------------------------ W1

#[derive(Debug, Clone, Default)]
pub struct W1 {
    pub target: usize,
    pub registered: usize,
    pub register_per_s: f64,
    /// (connections, server RSS KiB)
    pub ramp: Vec<(usize, u64)>,
    pub rss_before_kib: u64,
    pub rss_per_conn_kib: f64,
    pub login_per_s: f64,
    pub idle_cpu_pct: f64,
    pub idle_window_s: f64,
    pub heartbeat_s: u64,
    pub reconnect_n: usize,
    pub reconnect_s: f64,
    pub failures: usize,
    /// Several processes behind SO_REUSEPORT: (pid, fds, RSS KiB) each.
    pub reuse_port: Vec<(u32, usize, u64)>,
    pub reuse_port_conns: usize,
}

async fn idle_conn(mut ws: Ws, hb: Duration, mut stop: watch::Receiver<bool>) {
    let offset =
        Duration::from_millis(rand::thread_rng().gen_range(0..hb.as_millis().max(1) as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, hb);
    for _ in 0..1_000_000u64 {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                break;
            }
            _ = tick.tick() => {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            m = ws.next() => {
                if !matches!(m, Some(Ok(_))) {
                    break;
                }
            }
        }
    }
}

/// Opens logins for `accounts` (at most `conc` at once); returns the idle
/// tasks and the number of failures.
async fn open_idle(
    server: SocketAddr,
    src: &SourceAddrs,
    accounts: &[Arc<sotto_core::identity::Account>],
    conc: usize,
    hb: Duration,
    stop: &watch::Receiver<bool>,
) -> (Vec<tokio::task::JoinHandle<()>>, usize) {
    let mut tasks = Vec::with_capacity(accounts.len());
    let mut failures = 0;
    let mut futs = futures_util::stream::iter(accounts.iter().map(|a| {
        let a = Arc::clone(a);
        let s = src.pick();
        async move { net::connect_authenticated(server, s, &a, false).await }
    }))
    .buffer_unordered(conc.max(1));
    for _ in 0..accounts.len() {
        match futs.next().await {
            Some(Ok((ws, _))) => tasks.push(tokio::spawn(idle_conn(ws, hb, stop.clone()))),
            Some(Err(_)) => failures += 1,
            None => break,
        }
    }
    (tasks, failures)
}

async fn close_all(stop: watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    let _ = stop.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
}

pub async fn w1(
    bin: &SottoBin,
    root: &Path,
    src: &SourceAddrs,
    n: usize,
    idle_window: Duration,
    reuse_procs: usize,
) -> anyhow::Result<W1> {
    let dir = procs::scratch_dir(root, "w1")?;
    let port = procs::free_port()?;
    let server = bin.start(&dir, port, false).await?;
    let a = addr(port);
    let hb = Duration::from_secs(30);
    let mut out = W1 {
        target: n,
        heartbeat_s: hb.as_secs(),
        idle_window_s: idle_window.as_secs_f64(),
        ..W1::default()
    };

    // Register every account first (connections closed), so the ramp below
    // measures connection memory, not database cache.
    let tag = sotto::run_tag();
    let accounts: Vec<Arc<_>> = (0..n)
        .map(|i| net::account(&format!("w{tag}{i}")).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    let mut futs = futures_util::stream::iter(accounts.iter().map(|acc| {
        let acc = Arc::clone(acc);
        let s = src.pick_for_registration();
        async move {
            let (mut ws, _) = net::connect_authenticated(a, s, &acc, true).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(64);
    for _ in 0..n {
        match futs.next().await {
            Some(Ok(())) => out.registered += 1,
            Some(Err(e)) => {
                out.failures += 1;
                if out.failures == 1 {
                    eprintln!("  W1 register failed: {e:#}");
                }
            }
            None => break,
        }
    }
    drop(futs);
    out.register_per_s = out.registered as f64 / t0.elapsed().as_secs_f64().max(1e-3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.rss_before_kib = server.rss_kib();
    out.ramp.push((0, out.rss_before_kib));

    // Ramp in 5 steps.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut open_time = Duration::ZERO;
    let steps = 5;
    let mut done = 0;
    for s in 1..=steps {
        let upto = n * s / steps;
        let Some(slice) = accounts.get(done..upto) else {
            break;
        };
        let t = Instant::now();
        let (mut t2, f) = open_idle(a, src, slice, 128, hb, &stop_rx).await;
        open_time += t.elapsed();
        out.failures += f;
        tasks.append(&mut t2);
        done = upto;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_kib();
        eprintln!("  W1 {} connections: server RSS {} KiB", tasks.len(), rss);
        out.ramp.push((tasks.len(), rss));
    }
    let open = tasks.len();
    out.login_per_s = open as f64 / open_time.as_secs_f64().max(1e-3);
    if let Some(&(c, rss)) = out.ramp.last()
        && c > 0
    {
        out.rss_per_conn_kib = rss.saturating_sub(out.rss_before_kib) as f64 / c as f64;
    }
    // Idle CPU with every connection open.
    let tck = procs::clk_tck().max(1) as f64;
    let c0 = server.cpu_ticks();
    tokio::time::sleep(idle_window).await;
    let c1 = server.cpu_ticks();
    out.idle_cpu_pct = 100.0 * (c1.saturating_sub(c0) as f64 / tck) / idle_window.as_secs_f64();

    // Everyone drops and reconnects at once (plain WebSocket; no TLS yet).
    close_all(stop_tx, tasks).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let t = Instant::now();
    let (tasks, f) = open_idle(a, src, &accounts, 512, hb, &stop_rx).await;
    out.reconnect_s = t.elapsed().as_secs_f64();
    out.reconnect_n = tasks.len();
    out.failures += f;
    close_all(stop_tx, tasks).await;
    server.stop(Duration::from_secs(10)).await?;

    // Several processes sharing the port (SO_REUSEPORT), same database.
    if reuse_procs > 1 {
        let port = procs::free_port()?;
        let mut servers: Vec<Proc> = Vec::new();
        for _ in 0..reuse_procs {
            servers.push(bin.start(&dir, port, true).await?);
        }
        let m = n.min(4000 * reuse_procs);
        let slice = accounts.get(..m).unwrap_or(&[]);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tasks, f) = open_idle(addr(port), src, slice, 128, hb, &stop_rx).await;
        out.failures += f;
        out.reuse_port_conns = tasks.len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in &servers {
            let fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid))
                .map(|d| d.count())
                .unwrap_or(0);
            out.reuse_port.push((s.pid, fds, s.rss_kib()));
        }
        close_all(stop_tx, tasks).await;
        for s in servers {
            s.stop(Duration::from_secs(10)).await?;
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ W2

#[derive(Debug, Clone, Default)]
pub struct W2 {
    pub pairs: usize,
    pub step_s: f64,
    pub steps: Vec<StepResult>,
    pub max_sustainable: f64,
    pub half_load: Option<StepResult>,
}

pub fn max_sustainable(steps: &[StepResult]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustainable())
        .map(|s| s.offered)
        .fold(0.0, f64::max)
}

pub async fn w2(
    bin: &SottoBin,
    root: &Path,
    src: &SourceAddrs,
    pairs_n: usize,
    rates: &[f64],
    dur: Duration,
) -> anyhow::Result<W2> {
    let dir = procs::scratch_dir(root, "w2")?;
    let port = procs::free_port()?;
    let server = bin.start(&dir, port, false).await?;
    let result = w2_on(&server, addr(port), src, pairs_n, rates, dur).await;
    server.stop(Duration::from_secs(10)).await?;
    result
}

async fn w2_on(
    server: &Proc,
    a: SocketAddr,
    src: &SourceAddrs,
    pairs_n: usize,
    rates: &[f64],
    dur: Duration,
) -> anyhow::Result<W2> {
    let regs = sotto::register_pairs(a, src, pairs_n).await?;
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (sh, stop) = shared(&rec, Tracker::default());
    let pairs = sotto::start_pairs(
        regs.into_iter()
            .map(|(k, s, r)| (Arc::new(k), s, Some(r)))
            .collect(),
        &sh,
        stop,
    );
    // Let the group-creation commits drain, then forget them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = rec.take();
    let steps = load::ladder(
        &pairs,
        &rec,
        rates,
        dur,
        Duration::from_secs(5),
        Some(server),
        "W2 sotto",
    )
    .await;
    let max = max_sustainable(&steps);
    // T3 is judged at half of the max sustainable rate.
    let half_load = if max > 0.0 {
        let r = load::run_step(
            &pairs,
            &rec,
            max / 2.0,
            dur,
            Duration::from_secs(5),
            Some(server),
        )
        .await;
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
    Ok(W2 {
        pairs: pairs_n,
        step_s: dur.as_secs_f64(),
        steps,
        max_sustainable: max,
        half_load,
    })
}

// ------------------------------------------------------------------ W3

#[derive(Debug, Clone, Default)]
pub struct W3 {
    pub devices: usize,
    pub queued: u64,
    pub enqueue_per_s: f64,
    pub drained: u64,
    pub drain_s: f64,
    pub drain_per_s: f64,
    pub errors: u64,
}

pub async fn w3(
    bin: &SottoBin,
    root: &Path,
    src: &SourceAddrs,
    devices: usize,
    messages: u64,
    enqueue_rate: f64,
) -> anyhow::Result<W3> {
    let dir = procs::scratch_dir(root, "w3")?;
    let port = procs::free_port()?;
    let server = bin.start(&dir, port, false).await?;
    let a = addr(port);
    let regs = sotto::register_pairs(a, src, devices).await?;
    let mut keys = Vec::new();
    let mut with_socks = Vec::new();
    for (k, s, mut r) in regs {
        let _ = r.close(None).await;
        let k = Arc::new(k);
        keys.push(Arc::clone(&k));
        with_socks.push((k, s, None));
    }
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (sh, stop) = shared(&rec, Tracker::default());
    let pairs = sotto::start_pairs(with_socks, &sh, stop);
    let dur = Duration::from_secs_f64(messages as f64 / enqueue_rate.max(1.0));
    let t = Instant::now();
    let start = t + Duration::from_millis(50);
    let per = enqueue_rate / devices.max(1) as f64;
    for tx in &pairs.steps {
        let _ = tx
            .send(Step {
                rate: per,
                start,
                end: start + dur,
                max: (messages / devices.max(1) as u64).max(1),
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
    let enq = rec.take();
    let mut out = W3 {
        devices,
        queued: enq.acked,
        enqueue_per_s: enq.acked as f64 / t.elapsed().as_secs_f64().max(1e-3),
        errors: enq.errors,
        ..W3::default()
    };
    pairs.shutdown().await;
    eprintln!(
        "  W3 queued {} messages for {} offline devices",
        out.queued, devices
    );

    // Everyone comes back at once and drains (Sync answers when empty).
    let (sh, _stop) = shared(&rec, Tracker::default());
    let t = Instant::now();
    let mut futs = futures_util::stream::iter(keys.iter().map(|k| {
        let k = Arc::clone(k);
        let s = src.pick();
        let sh = sh.clone();
        async move {
            let (ws, _) = net::connect_authenticated(a, s, &k.receiver, false).await?;
            sotto::receiver(ws, sh, Some(Duration::from_secs(120))).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(512);
    for _ in 0..keys.len() {
        match futs.next().await {
            Some(Ok(())) => {}
            Some(Err(_)) => out.errors += 1,
            None => break,
        }
    }
    out.drain_s = t.elapsed().as_secs_f64();
    let f = rec.take();
    out.drained = f.delivered;
    out.errors += f.errors;
    out.drain_per_s = f.delivered as f64 / out.drain_s.max(1e-3);
    server.stop(Duration::from_secs(10)).await?;
    Ok(out)
}

// ------------------------------------------------------------------ W4

#[derive(Debug, Clone, Default)]
pub struct W4Size {
    pub devices: usize,
    pub stored_bytes_per_msg: f64,
    pub payload_bytes_per_msg: f64,
    pub mailbox_rows_per_msg: f64,
    pub overhead_per_recipient: f64,
    pub lat_msgs: usize,
    pub last_p50_ms: f64,
    pub last_p99_ms: f64,
    pub incomplete: usize,
    pub burst_msgs: u64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub server_cpu_us_per_delivery: f64,
    pub errors: u64,
}

fn db_size(dir: &Path) -> anyhow::Result<(u64, u64, u64)> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let pages: u64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let page: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let payload: u64 = conn.query_row(
        "SELECT coalesce(sum(length(payload)), 0) FROM messages",
        [],
        |r| r.get(0),
    )?;
    let rows: u64 = conn.query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))?;
    Ok((pages.saturating_mul(page), payload, rows))
}

pub async fn w4(
    bin: &SottoBin,
    root: &Path,
    src: &SourceAddrs,
    sizes: &[usize],
    lat_rate: f64,
    lat_dur: Duration,
    burst_deliveries: u64,
) -> anyhow::Result<Vec<W4Size>> {
    let mut out = Vec::new();
    for &g in sizes {
        let dir = procs::scratch_dir(root, &format!("w4-{g}"))?;
        let port = procs::free_port()?;
        let server = bin.start(&dir, port, false).await?;
        let r = w4_one(
            &server,
            &dir,
            addr(port),
            src,
            g,
            lat_rate,
            lat_dur,
            burst_deliveries,
        )
        .await;
        server.stop(Duration::from_secs(10)).await?;
        let r = r.with_context(|| format!("W4 with {g} devices"))?;
        eprintln!(
            "  W4 {g} devices: last-recipient p99 {:.2} ms, {:.0} deliveries/s, {:.0} B stored/msg",
            r.last_p99_ms, r.deliveries_per_s, r.stored_bytes_per_msg
        );
        out.push(r);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn w4_one(
    server: &Proc,
    dir: &Path,
    a: SocketAddr,
    src: &SourceAddrs,
    g: usize,
    lat_rate: f64,
    lat_dur: Duration,
    burst_deliveries: u64,
) -> anyhow::Result<W4Size> {
    let tag = sotto::run_tag();
    // Recipients register and go offline.
    let members: Vec<Arc<_>> = (0..g)
        .map(|i| net::account(&format!("g{tag}{i}")).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let mut futs = futures_util::stream::iter(members.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick_for_registration();
        async move {
            let (mut ws, _) = net::connect_authenticated(a, s, &m, true).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(64);
    for _ in 0..g {
        if let Some(r) = futs.next().await {
            r?;
        }
    }
    drop(futs);
    let recipients: Vec<Vec<u8>> = members
        .iter()
        .map(|m| m.device_id.as_bytes().to_vec())
        .collect();
    // Four senders, each with its own group of the same recipients (the
    // server limits sends per group capability, 2,000/s by default).
    let mut senders = Vec::new();
    for i in 0..4 {
        let acc = net::account(&format!("x{tag}{i}"))?;
        let (mut ws, _) =
            net::connect_authenticated(a, src.pick_for_registration(), &acc, true).await?;
        let group = net::create_group(&mut ws, 2).await?.0;
        senders.push((acc, ws, group));
    }

    // Storage: K messages while everyone is offline.
    let k = 20u64;
    let (size0, pay0, rows0) = db_size(dir)?;
    let filler = net::random_bytes(sotto::ENVELOPE);
    if let Some((_, ws, group)) = senders.first_mut() {
        for i in 0..k {
            let (r, _) = net::request(
                ws,
                100 + i,
                Body::SendMessage(v1::SendMessage {
                    message_id: net::random_bytes(16),
                    group_id: group.id.clone(),
                    recipients: recipients.clone(),
                    payload: net::group_payload(
                        &group.id,
                        u64::MAX - i,
                        0,
                        sotto::ENVELOPE,
                        &filler,
                    ),
                    send_token: group.capability.clone(),
                    ..v1::SendMessage::default()
                }),
            )
            .await?;
            net::check_done(&r, "fan-out send")?;
        }
    }
    let (size1, pay1, rows1) = db_size(dir)?;
    let kf = k as f64;
    let stored = size1.saturating_sub(size0) as f64 / kf;
    let mut out = W4Size {
        devices: g,
        stored_bytes_per_msg: stored,
        payload_bytes_per_msg: pay1.saturating_sub(pay0) as f64 / kf,
        mailbox_rows_per_msg: rows1.saturating_sub(rows0) as f64 / kf,
        overhead_per_recipient: (stored - sotto::ENVELOPE as f64) / g.max(1) as f64,
        ..W4Size::default()
    };

    // Everyone comes online and drains the backlog.
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (sh, stop) = shared(
        &rec,
        Tracker {
            fanout: true,
            ..Tracker::default()
        },
    );
    let mut recv_tasks = Vec::new();
    let mut futs = futures_util::stream::iter(members.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick();
        async move { net::connect_authenticated(a, s, &m, false).await }
    }))
    .buffer_unordered(128);
    for _ in 0..g {
        if let Some(r) = futs.next().await {
            let (ws, _) = r?;
            recv_tasks.push(tokio::spawn(sotto::receiver(ws, sh.clone(), None)));
        }
    }
    drop(futs);
    let expect = k * g as u64;
    for _ in 0..3000 {
        if rec.delivered.load(Ordering::Relaxed) >= expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = rec.take();
    if let Ok(mut l) = sh.tracker.last.lock() {
        l.clear();
    }

    // Latency to the last recipient at a light, Poisson rate.
    let mut pair_socks = Vec::new();
    for (acc, ws, group) in senders {
        let keys = Arc::new(PairKeys {
            sender: acc,
            receiver: net::account("unused")?,
            group,
            recipients: recipients.clone(),
        });
        pair_socks.push((keys, ws, None));
    }
    let pairs: Pairs = sotto::start_pairs(pair_socks, &sh, stop);
    // Keep the offered deliveries/s light (≤ 2,000/s) so this measures
    // latency, not a queue.
    let lat_rate = lat_rate.min(2_000.0 / g.max(1) as f64).max(0.5);
    let step = load::run_step(
        &pairs,
        &rec,
        lat_rate,
        lat_dur,
        Duration::from_secs(10),
        Some(server),
    )
    .await;
    {
        let last = sh
            .tracker
            .last
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let mut h = stats::new_hist();
        for &(count, us) in last.values() {
            if count as usize >= g {
                h.saturating_record(us.max(1));
            } else {
                out.incomplete += 1;
            }
        }
        let p = stats::pcts(&h);
        out.lat_msgs = last.len();
        out.last_p50_ms = p.p50;
        out.last_p99_ms = p.p99;
        out.errors += step.figures.errors;
    }

    // Throughput: a burst from four senders, as fast as the server takes it.
    let burst_msgs = (burst_deliveries / g.max(1) as u64).clamp(8, 20_000);
    let per_sender_rate = 1e6; // effectively back to back
    let tck = procs::clk_tck().max(1) as f64;
    let c0 = server.cpu_ticks();
    let t = Instant::now();
    for tx in &pairs.steps {
        let _ = tx
            .send(Step {
                rate: per_sender_rate,
                start: t,
                end: t + Duration::from_secs(60),
                max: burst_msgs / 4,
            })
            .await;
    }
    let expect = (burst_msgs / 4) * 4 * g as u64;
    let deadline = t + Duration::from_secs(120);
    for _ in 0..120_000 {
        if rec.delivered.load(Ordering::Relaxed) >= expect || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-3);
    let c1 = server.cpu_ticks();
    let f = rec.take();
    out.burst_msgs = (burst_msgs / 4) * 4;
    out.deliveries = f.delivered;
    out.deliveries_per_s = f.delivered as f64 / secs;
    out.server_cpu_us_per_delivery = if f.delivered > 0 {
        (c1.saturating_sub(c0) as f64 / tck) * 1e6 / f.delivered as f64
    } else {
        0.0
    };
    out.errors += f.errors;
    pairs.shutdown().await;
    for t in recv_tasks {
        t.abort();
    }
    Ok(out)
}

// ------------------------------------------------------------------ W5

#[derive(Debug, Clone, Default)]
pub struct W5 {
    pub cycles: usize,
    pub pairs: usize,
    pub rate: f64,
    pub sent: u64,
    pub acked: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub restart_ms: Vec<f64>,
    pub failures: Vec<String>,
}

pub async fn w5(
    bin: &SottoBin,
    root: &Path,
    src: &SourceAddrs,
    cycles: usize,
    pairs_n: usize,
    rate: f64,
) -> anyhow::Result<W5> {
    let dir = procs::scratch_dir(root, "w5")?;
    let port = procs::free_port()?;
    let a = addr(port);
    let mut server = bin.start(&dir, port, false).await?;
    let regs = sotto::register_pairs(a, src, pairs_n).await?;
    let rec = Arc::new(Recorder::new(Instant::now()));
    let tracker = Arc::new(Tracker {
        enabled: true,
        ..Tracker::default()
    });
    let mut keys: Vec<Arc<PairKeys>> = Vec::new();
    let mut socks = Vec::new();
    for (k, s, r) in regs {
        let k = Arc::new(k);
        keys.push(Arc::clone(&k));
        socks.push((k, s, Some(r)));
    }
    let mut out = W5 {
        cycles,
        pairs: pairs_n,
        rate,
        ..W5::default()
    };
    for c in 0..cycles {
        if c > 0 {
            socks.clear();
            for k in &keys {
                match sotto::login_pair(a, src, k).await {
                    Ok((s, r)) => socks.push((Arc::clone(k), s, Some(r))),
                    Err(e) => out.failures.push(format!("cycle {c}: login: {e:#}")),
                }
            }
        }
        let (tx, rx) = watch::channel(false);
        let sh = Shared {
            seq_base: (c as u64).saturating_mul(1 << 30),
            rec: Arc::clone(&rec),
            tracker: Arc::clone(&tracker),
            stop: rx,
        };
        let pairs = sotto::start_pairs(std::mem::take(&mut socks), &sh, tx);
        let start = Instant::now() + Duration::from_millis(20);
        let per = rate / pairs_n.max(1) as f64;
        for s in &pairs.steps {
            let _ = s
                .send(Step {
                    rate: per,
                    start,
                    end: start + Duration::from_secs(5),
                    max: (per * 10.0) as u64 + 10,
                })
                .await;
        }
        // Kill in the middle of the load.
        let kill_after = Duration::from_millis(rand::thread_rng().gen_range(300..900));
        tokio::time::sleep_until((start + kill_after).into()).await;
        server.kill9().await?;
        pairs.shutdown().await;
        let t = Instant::now();
        server = bin.start(&dir, port, false).await?;
        out.restart_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // Drain every receiver (Sync answers once its mailbox is empty).
        let sh = Shared {
            seq_base: 0,
            rec: Arc::clone(&rec),
            tracker: Arc::clone(&tracker),
            stop: watch::channel(false).1,
        };
        let mut futs = futures_util::stream::iter(keys.iter().map(|k| {
            let k = Arc::clone(k);
            let s = src.pick();
            let sh = sh.clone();
            async move {
                let (ws, _) = net::connect_authenticated(a, s, &k.receiver, false).await?;
                sotto::receiver(ws, sh, Some(Duration::from_secs(20))).await;
                anyhow::Ok(())
            }
        }))
        .buffer_unordered(32);
        for _ in 0..keys.len() {
            if let Some(Err(e)) = futs.next().await {
                out.failures.push(format!("cycle {c}: drain: {e:#}"));
            }
        }
        drop(futs);
        let f = rec.take();
        out.sent += f.sent;
        if let Some(e) = f.first_error
            && !e.starts_with("send:")
        {
            out.failures.push(format!("cycle {c}: {e}"));
        }
        let (acked, lost, dups) = tracker.verdict();
        eprintln!(
            "  W5 cycle {}: acked so far {acked}, lost {lost}, duplicates {dups}",
            c + 1
        );
    }
    server.stop(Duration::from_secs(10)).await?;
    let (acked, lost, dups) = tracker.verdict();
    out.acked = acked;
    out.lost = lost;
    out.duplicates = dups;
    Ok(out)
}
