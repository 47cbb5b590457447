//! `sotto-bench fixed-fanout`: a fixed, timing-free group fan-out for
//! counting the server's instructions (`valgrind --tool=callgrind` on the
//! server; `perf stat -e instructions` where the machine supports it).
//!
//! `devices` recipients register and stay connected; one sender creates a
//! group of them and sends `messages` back to back; every recipient
//! acknowledges each delivery in its own `Ack` (the worst case of W4, where
//! each recipient sees one message at a time), then sends a `Sync` and
//! waits for `SyncDone` (so every acknowledgement is committed) before
//! closing. Run it twice against fresh servers with two message counts:
//! the difference of the server's instruction counts divided by the
//! difference of deliveries is the cost of one delivery, registration and
//! start-up cancelled out.
//!
//! `before_sends` runs once the group exists and the server had
//! [`SETTLE`] to publish the registrations in its key directory (a
//! background task, once a second): zeroing callgrind's counters there
//! keeps that task's work on 201 new accounts out of the count, which it
//! otherwise entered in some runs and not others (bench/OPTIMISATIONS.md
//! #10). `after_sends` runs once every recipient got `SyncDone`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use sotto_proto::v1::{self, client_frame::Body, response, server_frame};
use tokio_tungstenite::tungstenite::Message;

use crate::fixed_drain::shell;
use crate::net::{self, SourceAddrs};
use crate::sotto;

/// Time given to the server's key directory to publish the new accounts.
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the workload against `server`; prints deliveries and wall time.
pub async fn run(
    server: SocketAddr,
    devices: usize,
    messages: u64,
    before_sends: Option<&str>,
    after_sends: Option<&str>,
) -> anyhow::Result<()> {
    let src = SourceAddrs::new(2 + std::process::id() % 200, 16);
    let tag = sotto::run_tag();
    let members: Vec<Arc<_>> = (0..devices)
        .map(|i| net::account(&format!("f{tag}{i}")).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let mut sockets = Vec::new();
    let mut futs = futures_util::stream::iter(members.iter().map(|m| {
        let m = Arc::clone(m);
        let s = src.pick_for_registration();
        async move { net::connect_authenticated(server, s, &m, true).await }
    }))
    .buffer_unordered(32);
    while let Some(r) = futs.next().await {
        sockets.push(r?.0);
    }
    drop(futs);
    let recipients: Vec<Vec<u8>> = members
        .iter()
        .map(|m| m.device_id.as_bytes().to_vec())
        .collect();
    let sender = net::account(&format!("s{tag}"))?;
    let (mut ws, _) =
        net::connect_authenticated(server, src.pick_for_registration(), &sender, true).await?;
    let group = net::create_group(&mut ws, 2).await?.0;
    tokio::time::sleep(SETTLE).await;
    if let Some(command) = before_sends {
        shell(command).await?;
    }

    let t = Instant::now();
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(receive(ws, messages)))
        .collect();
    let filler = net::random_bytes(sotto::ENVELOPE);
    for i in 0..messages {
        let send = Body::SendMessage(v1::SendMessage {
            message_id: net::random_bytes(16),
            group_id: group.id.clone(),
            recipients: recipients.clone(),
            payload: net::group_payload(&group.id, i, 0, sotto::ENVELOPE, &filler),
            send_token: group.capability.clone(),
            ..v1::SendMessage::default()
        });
        let (r, _) = net::request(&mut ws, 100 + i, send).await?;
        net::check_done(&r, "fixed fan-out send")?;
    }
    let mut delivered = 0;
    for r in receivers {
        delivered += r.await.context("receiver task")??;
    }
    let secs = t.elapsed().as_secs_f64();
    if let Some(command) = after_sends {
        shell(command).await?;
    }
    let _ = ws.close(None).await;
    println!(
        "fixed-fanout: {devices} devices, {messages} messages, {delivered} deliveries in {secs:.2} s"
    );
    Ok(())
}

/// Receives `messages` deliveries, acknowledging each on its own, then
/// syncs and closes; returns the deliveries seen.
async fn receive(mut ws: net::Ws, messages: u64) -> anyhow::Result<u64> {
    let mut seen = 0;
    let mut synced = false;
    while !synced {
        let m = tokio::time::timeout(Duration::from_secs(600), ws.next())
            .await
            .context("receiver timed out")?
            .context("connection closed")??;
        let Message::Binary(bytes) = m else { continue };
        match sotto_proto::decode_server_frame(&bytes)?.body {
            Some(server_frame::Body::Delivery(d)) => {
                seen += 1;
                ws.send(net::encode(0, Body::Ack(v1::Ack { seqs: vec![d.seq] })))
                    .await?;
                if seen == messages {
                    ws.send(net::encode(7, Body::Sync(v1::Sync {}))).await?;
                }
            }
            Some(server_frame::Body::Response(r)) => match r.result {
                Some(response::Result::SyncDone(_)) => synced = true,
                Some(response::Result::Error(e)) => bail!("{:?}: {}", e.code(), e.message),
                _ => {}
            },
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}
