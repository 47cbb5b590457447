//! `sotto-bench fixed-drain`: W3's shape (offline devices with a backlog,
//! then all log in at once and drain) at a fixed size, for counting the
//! server's instructions with `valgrind --tool=callgrind`.
//!
//! `devices` receivers register and go offline; one sender queues
//! `messages` for each of them (round-robin over the devices, as W3's
//! senders interleave, 128 sends in flight). Then `before_drain` runs (a
//! shell command: `callgrind_control -z PID` zeroes the server's counters,
//! so the count it writes when it stops is the drain's alone). Every
//! receiver then logs in at once, sends a `Sync` and acknowledges what it
//! receives as W3's receivers do (one `Ack` for whatever frames are ready,
//! up to 64), until `SyncDone`. Each receiver checks it got exactly its
//! `messages`, in order, once. `after_drain` runs once all are done (a
//! snapshot of the server's CPU time, say).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use sotto_proto::v1::{self, client_frame::Body, response, server_frame};
use tokio_tungstenite::tungstenite::Message;

use crate::net::{self, SourceAddrs};
use crate::sotto;

/// Sends the sender keeps in flight while filling.
const SENDS_IN_FLIGHT: u64 = 128;

/// Runs the workload against `server`; prints the drain's figures.
pub async fn run(
    server: SocketAddr,
    devices: usize,
    messages: u64,
    before_drain: Option<&str>,
    after_drain: Option<&str>,
) -> anyhow::Result<()> {
    let src = SourceAddrs::new(2 + std::process::id() % 200, 16);
    let tag = sotto::run_tag();
    let receivers: Vec<Arc<_>> = (0..devices)
        .map(|i| net::account(&format!("d{tag}{i}")).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let mut futs = futures_util::stream::iter(receivers.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick_for_registration();
        async move {
            let (mut ws, _) = net::connect_authenticated(server, s, &m, true).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(32);
    while let Some(r) = futs.next().await {
        r?;
    }
    drop(futs);
    fill(server, &src, &tag, &receivers, messages).await?;
    if let Some(command) = before_drain {
        shell(command).await?;
    }

    let t = Instant::now();
    let mut futs = futures_util::stream::iter(receivers.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick();
        async move {
            let (ws, early) = net::connect_authenticated(server, s, &m, false).await?;
            ensure!(early.is_empty(), "deliveries before the login response");
            drain(ws, messages).await
        }
    }))
    .buffer_unordered(512);
    let mut drained = 0;
    while let Some(r) = futs.next().await {
        drained += r?;
    }
    let secs = t.elapsed().as_secs_f64();
    if let Some(command) = after_drain {
        shell(command).await?;
    }
    println!(
        "fixed-drain: {devices} devices x {messages} messages, {drained} drained in {secs:.2} s \
         ({:.0} msg/s)",
        drained as f64 / secs.max(1e-6)
    );
    Ok(())
}

/// Runs `command` with `sh -c`; fails unless it succeeds.
pub(crate) async fn shell(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .with_context(|| format!("running {command}"))?;
    ensure!(status.success(), "{command}: {status}");
    Ok(())
}

/// Queues `messages` for each receiver from one sender, round-robin.
async fn fill(
    server: SocketAddr,
    src: &SourceAddrs,
    tag: &str,
    receivers: &[Arc<sotto_core::identity::Account>],
    messages: u64,
) -> anyhow::Result<()> {
    let sender = net::account(&format!("s{tag}"))?;
    let (mut ws, _) =
        net::connect_authenticated(server, src.pick_for_registration(), &sender, true).await?;
    let group = net::create_group(&mut ws, 2).await?.0;
    let filler = net::random_bytes(sotto::ENVELOPE);
    let total = messages * receivers.len() as u64;
    let mut sent = 0;
    let mut answered = 0;
    while answered < total {
        while sent < total && sent - answered < SENDS_IN_FLIGHT {
            let to = receivers
                .get((sent % receivers.len() as u64) as usize)
                .context("no receivers")?;
            let send = Body::SendMessage(v1::SendMessage {
                message_id: net::random_bytes(16),
                group_id: group.id.clone(),
                recipients: vec![to.device_id.as_bytes().to_vec()],
                payload: net::group_payload(&group.id, sent, 0, sotto::ENVELOPE, &filler),
                send_token: group.capability.clone(),
                ..v1::SendMessage::default()
            });
            ws.feed(net::encode(100 + sent, send)).await?;
            sent += 1;
        }
        ws.flush().await?;
        let frame = net::read_frame(&mut ws).await?;
        if let Some(server_frame::Body::Response(r)) = frame.body {
            net::check_done(&r, "fixed drain send")?;
            answered += 1;
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Syncs and acknowledges as W3's receivers do until `SyncDone`; checks
/// that exactly `messages` arrived, in seq order; returns how many.
async fn drain(mut ws: net::Ws, messages: u64) -> anyhow::Result<u64> {
    ws.send(net::encode(7, Body::Sync(v1::Sync {}))).await?;
    let mut last_seq = 0;
    let mut seen = 0;
    let mut synced = false;
    while !synced {
        let first = tokio::time::timeout(Duration::from_secs(600), ws.next())
            .await
            .context("receiver timed out")?
            .context("connection closed")??;
        let mut ready = vec![first];
        while ready.len() < 64 {
            match ws.next().now_or_never() {
                Some(Some(m)) => ready.push(m?),
                Some(None) | None => break,
            }
        }
        let mut seqs = Vec::new();
        for m in ready {
            let Message::Binary(bytes) = m else { continue };
            match sotto_proto::decode_server_frame(&bytes)?.body {
                Some(server_frame::Body::Delivery(d)) => {
                    ensure!(d.seq > last_seq, "seq {} after {last_seq}", d.seq);
                    last_seq = d.seq;
                    seen += 1;
                    seqs.push(d.seq);
                }
                Some(server_frame::Body::Response(r)) => match r.result {
                    Some(response::Result::SyncDone(_)) => synced = true,
                    Some(response::Result::Error(e)) => bail!("{:?}: {}", e.code(), e.message),
                    _ => {}
                },
                _ => {}
            }
        }
        if !seqs.is_empty() {
            ws.send(net::encode(0, Body::Ack(v1::Ack { seqs }))).await?;
        }
    }
    ensure!(seen == messages, "drained {seen}, expected {messages}");
    let _ = ws.close(None).await;
    Ok(seen)
}
