//! W4: group fan-out, one fresh server per group size: bytes stored per
//! message, latency to the last recipient, and deliveries/s in a burst.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use sotto_core::identity::Account;
use sotto_proto::v1::{self, client_frame::Body};
use tokio::task::JoinHandle;

use super::{Server, Testbed, pair_handles};
use crate::load::{self, Pairs, Rig, Shared, Step, StepTiming, Tracker};
use crate::net::{self, BenchGroup, SourceAddrs, Ws};
use crate::procs;
use crate::sotto::{self, PairKeys};
use crate::stats::{self, Recorder};

/// Sender devices, each with its own group of the same recipients: the
/// server limits sends per group capability (2,000/s by default).
const SENDERS: usize = 4;

/// Messages sent while every recipient is offline, to measure storage.
const STORED_MESSAGES: u64 = 20;

/// What W4 runs.
#[derive(Debug, Clone)]
pub struct GroupFanoutConfig {
    /// Group sizes in recipient devices; each gets its own fresh server.
    pub group_sizes: Vec<usize>,
    /// Offered messages/s (over all senders) while timing the last
    /// recipient; lowered so a group sees at most 2,000 deliveries/s (this
    /// measures latency, not a queue), and never below 0.5.
    pub latency_rate: f64,
    /// How long that rate is offered.
    pub latency_window: Duration,
    /// Deliveries the throughput burst aims at: messages = this ÷ group
    /// size, between 8 and 20,000.
    pub burst_deliveries: u64,
}

/// W4's figures for one group size.
#[derive(Debug, Clone, Default)]
pub struct GroupFanout {
    /// Recipient devices in the group.
    pub devices: usize,
    /// Growth of the SQLite database (page_count × page_size, WAL included)
    /// per message sent while every recipient was offline.
    pub stored_bytes_per_msg: f64,
    /// Of which `messages.payload` bytes.
    pub payload_bytes_per_msg: f64,
    pub mailbox_rows_per_msg: f64,
    /// (stored bytes − the 512-byte envelope) ÷ recipients.
    pub overhead_per_recipient: f64,
    /// Messages whose deliveries were timed for the latency figures.
    pub lat_msgs: usize,
    /// Scheduled send → the last recipient's delivery.
    pub last_p50_ms: f64,
    pub last_p99_ms: f64,
    /// Timed messages that did not reach every recipient.
    pub incomplete: usize,
    /// Messages in the throughput burst.
    pub burst_msgs: u64,
    /// Deliveries seen during the burst.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub server_cpu_us_per_delivery: f64,
    pub errors: u64,
}

/// W4: every group size in turn, each on a fresh server.
pub async fn measure_group_fanout(
    bed: &Testbed<'_>,
    config: &GroupFanoutConfig,
) -> anyhow::Result<Vec<GroupFanout>> {
    let mut out = Vec::new();
    for &g in &config.group_sizes {
        let server = bed.start_server(&format!("w4-{g}")).await?;
        let r = measure_group(&server, bed.src, g, config).await;
        server.stop().await?;
        let r = r.with_context(|| format!("W4 with {g} devices"))?;
        eprintln!(
            "  W4 {g} devices: last-recipient p99 {:.2} ms, {:.0} deliveries/s, {:.0} B stored/msg",
            r.last_p99_ms, r.deliveries_per_s, r.stored_bytes_per_msg
        );
        out.push(r);
    }
    Ok(out)
}

/// One group of `devices` recipients: storage while they are offline, then
/// they come online, then latency at a light rate, then a burst.
async fn measure_group(
    server: &Server,
    src: &SourceAddrs,
    devices: usize,
    config: &GroupFanoutConfig,
) -> anyhow::Result<GroupFanout> {
    let a = server.addr();
    let tag = sotto::run_tag();
    // Recipients register and go offline.
    let members: Vec<Arc<_>> = (0..devices)
        .map(|i| net::account(&format!("g{tag}{i}")).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    register_offline(a, src, &members).await?;
    let recipients: Vec<Vec<u8>> = members
        .iter()
        .map(|m| m.device_id.as_bytes().to_vec())
        .collect();
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let account = net::account(&format!("x{tag}{i}"))?;
        let (mut ws, _) =
            net::connect_authenticated(a, src.pick_for_registration(), &account, true).await?;
        let group = net::create_group(&mut ws, 2).await?.0;
        senders.push(GroupSender { account, ws, group });
    }

    let mut out = GroupFanout {
        devices,
        ..GroupFanout::default()
    };
    measure_storage(&server.data_dir, &mut senders, &recipients, &mut out).await?;

    // Everyone comes online and drains the backlog.
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (sh, stop) = pair_handles(
        &rec,
        Tracker {
            fanout: true,
            ..Tracker::default()
        },
    );
    let recv_tasks = bring_online(a, src, &members, &sh).await?;

    // The senders become pairs whose receiver is the whole group.
    let mut pair_socks = Vec::new();
    for GroupSender { account, ws, group } in senders {
        let keys = Arc::new(PairKeys {
            sender: account,
            receiver: net::account("unused")?,
            group,
            recipients: recipients.clone(),
        });
        pair_socks.push((keys, ws, None));
    }
    let pairs: Pairs = sotto::start_pairs(pair_socks, &sh, stop);
    let rig = Rig {
        pairs: &pairs,
        rec: &rec,
        servers: &[&server.process],
    };
    time_last_recipient(&rig, &sh.tracker, config, &mut out).await;
    burst(&rig, config, &mut out).await;
    pairs.shutdown().await;
    for t in recv_tasks {
        t.abort();
    }
    Ok(out)
}

/// A sender device with its connection and its group of every recipient.
#[derive(Debug)]
struct GroupSender {
    account: Account,
    ws: Ws,
    group: BenchGroup,
}

/// Registers every member (at most 64 at once) and closes its connection;
/// the first failure fails the workload.
async fn register_offline(
    server: SocketAddr,
    src: &SourceAddrs,
    members: &[Arc<Account>],
) -> anyhow::Result<()> {
    let mut futs = futures_util::stream::iter(members.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick_for_registration();
        async move {
            let (mut ws, _) = net::connect_authenticated(server, s, &m, true).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(64);
    for _ in 0..members.len() {
        if let Some(r) = futs.next().await {
            r?;
        }
    }
    Ok(())
}

/// Database size, in total and in what it holds.
#[derive(Debug, Clone, Copy)]
struct DbSize {
    /// page_count × page_size.
    file_bytes: u64,
    /// Sum of `messages.payload` lengths.
    payload_bytes: u64,
    /// Rows in `mailbox`.
    mailbox_rows: u64,
}

fn db_size(data_dir: &Path) -> anyhow::Result<DbSize> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let pages: u64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let page: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let payload_bytes: u64 = conn.query_row(
        "SELECT coalesce(sum(length(payload)), 0) FROM messages",
        [],
        |r| r.get(0),
    )?;
    let mailbox_rows: u64 = conn.query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))?;
    Ok(DbSize {
        file_bytes: pages.saturating_mul(page),
        payload_bytes,
        mailbox_rows,
    })
}

/// Storage: [`STORED_MESSAGES`] from the first sender while every recipient
/// is offline; fills the per-message storage figures of `out` (a group of
/// `out.devices`).
async fn measure_storage(
    data_dir: &Path,
    senders: &mut [GroupSender],
    recipients: &[Vec<u8>],
    out: &mut GroupFanout,
) -> anyhow::Result<()> {
    let before = db_size(data_dir)?;
    let filler = net::random_bytes(sotto::ENVELOPE);
    if let Some(GroupSender { ws, group, .. }) = senders.first_mut() {
        for i in 0..STORED_MESSAGES {
            let (r, _) = net::request(
                ws,
                100 + i,
                Body::SendMessage(v1::SendMessage {
                    message_id: net::random_bytes(16),
                    group_id: group.id.clone(),
                    recipients: recipients.to_vec(),
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
    let after = db_size(data_dir)?;
    let k = STORED_MESSAGES as f64;
    let stored = after.file_bytes.saturating_sub(before.file_bytes) as f64 / k;
    out.stored_bytes_per_msg = stored;
    out.payload_bytes_per_msg = after.payload_bytes.saturating_sub(before.payload_bytes) as f64 / k;
    out.mailbox_rows_per_msg = after.mailbox_rows.saturating_sub(before.mailbox_rows) as f64 / k;
    out.overhead_per_recipient = (stored - sotto::ENVELOPE as f64) / out.devices.max(1) as f64;
    Ok(())
}

/// Every member logs in (128 in flight) and receives; waits (at most 30 s)
/// for the stored backlog, then forgets its figures. Returns the receiver
/// tasks, which keep receiving until aborted.
async fn bring_online(
    server: SocketAddr,
    src: &SourceAddrs,
    members: &[Arc<Account>],
    sh: &Shared,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut recv_tasks = Vec::new();
    let mut futs = futures_util::stream::iter(members.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick();
        async move { net::connect_authenticated(server, s, &m, false).await }
    }))
    .buffer_unordered(128);
    for _ in 0..members.len() {
        if let Some(r) = futs.next().await {
            let (ws, _) = r?;
            recv_tasks.push(tokio::spawn(sotto::receiver(ws, sh.clone(), None)));
        }
    }
    drop(futs);
    let expect = STORED_MESSAGES * members.len() as u64;
    for _ in 0..3000 {
        if sh.rec.delivered.load(Ordering::Relaxed) >= expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = sh.rec.take();
    if let Ok(mut l) = sh.tracker.last.lock() {
        l.clear();
    }
    Ok(recv_tasks)
}

/// Latency to the last recipient at a light Poisson rate; fills the
/// latency figures of `out`.
async fn time_last_recipient(
    rig: &Rig<'_>,
    tracker: &Tracker,
    config: &GroupFanoutConfig,
    out: &mut GroupFanout,
) {
    let g = out.devices;
    let rate = config.latency_rate.min(2_000.0 / g.max(1) as f64).max(0.5);
    let timing = StepTiming {
        offer_for: config.latency_window,
        drain_within: Duration::from_secs(10),
    };
    let step = load::run_step(rig, rate, timing).await;
    let last = tracker.last.lock().map(|l| l.clone()).unwrap_or_default();
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

/// Throughput: a burst from every sender, back to back, until every
/// delivery arrived (at most 120 s); fills the burst figures of `out`.
async fn burst(rig: &Rig<'_>, config: &GroupFanoutConfig, out: &mut GroupFanout) {
    let g = out.devices;
    let senders = SENDERS as u64;
    let burst_msgs = (config.burst_deliveries / g.max(1) as u64).clamp(8, 20_000);
    let per_sender_rate = 1e6; // effectively back to back
    let tck = procs::clk_tck().max(1) as f64;
    let c0 = rig.server_ticks();
    let t = Instant::now();
    for tx in &rig.pairs.steps {
        let _ = tx
            .send(Step {
                rate: per_sender_rate,
                start: t,
                end: t + Duration::from_secs(60),
                max: burst_msgs / senders,
            })
            .await;
    }
    let expect = (burst_msgs / senders) * senders * g as u64;
    let deadline = t + Duration::from_secs(120);
    for _ in 0..120_000 {
        if rig.rec.delivered.load(Ordering::Relaxed) >= expect || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-3);
    let c1 = rig.server_ticks();
    let f = rig.rec.take();
    out.burst_msgs = (burst_msgs / senders) * senders;
    out.deliveries = f.delivered;
    out.deliveries_per_s = f.delivered as f64 / secs;
    out.server_cpu_us_per_delivery = if f.delivered > 0 {
        (c1.saturating_sub(c0) as f64 / tck) * 1e6 / f.delivered as f64
    } else {
        0.0
    };
    out.errors += f.errors;
}
