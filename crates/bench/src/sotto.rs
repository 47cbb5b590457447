//! Sotto pairs for W2/W5: a sender device and a receiver device per pair,
//! sharing a group created with an epoch-0 commit; the sender sends
//! 512-byte envelopes of random bytes (the server cannot tell them from MLS
//! ciphertext), the receiver acknowledges every delivery.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use sotto_core::identity::Account;
use sotto_proto::v1::{self, client_frame::Body, response, server_frame};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::load::{Pacer, Pairs, Shared, Step, index};
use crate::net::{self, SourceAddrs, Ws};

pub const ENVELOPE: usize = 512;

/// The accounts and group of one pair, kept to reconnect after a crash.
#[derive(Debug)]
pub struct PairKeys {
    pub sender: Account,
    pub receiver: Account,
    pub group: net::BenchGroup,
    /// Device ids every message goes to (the receiver, or a whole group).
    pub recipients: Vec<Vec<u8>>,
}

/// A short random tag so usernames are unique within a data directory.
pub fn run_tag() -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    (0..6)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect()
}

/// Registers `n` pairs and creates their groups (at most 16 at once).
pub async fn register_pairs(
    server: SocketAddr,
    src: &SourceAddrs,
    n: usize,
) -> anyhow::Result<Vec<(PairKeys, Ws, Ws)>> {
    register_pairs_across(&[server], src, n).await
}

/// [`register_pairs`] on several nodes of one deployment: pair `i`'s sender
/// connects to node `i mod k` and its receiver to the next node, so with
/// more than one node every delivery crosses nodes.
pub async fn register_pairs_across(
    nodes: &[SocketAddr],
    src: &SourceAddrs,
    n: usize,
) -> anyhow::Result<Vec<(PairKeys, Ws, Ws)>> {
    let node = |i: usize| {
        nodes
            .get(i % nodes.len().max(1))
            .copied()
            .context("no server to register on")
    };
    let tag = run_tag();
    let mut out = Vec::with_capacity(n);
    let mut futs = futures_util::stream::iter((0..n).map(|i| {
        let tag = tag.clone();
        let s_src = src.pick_for_registration();
        let r_src = src.pick_for_registration();
        let (sender_node, receiver_node) = (node(i), node(i + 1));
        async move {
            let (sender_node, receiver_node) = (sender_node?, receiver_node?);
            let sender = net::account(&format!("s{tag}{i}"))?;
            let receiver = net::account(&format!("r{tag}{i}"))?;
            let (rws, _) =
                net::connect_authenticated(receiver_node, r_src, &receiver, true).await?;
            let (mut sws, _) =
                net::connect_authenticated(sender_node, s_src, &sender, true).await?;
            let (group, _) = net::create_group(&mut sws, 2).await?;
            let recipients = vec![receiver.device_id.as_bytes().to_vec()];
            anyhow::Ok((
                PairKeys {
                    sender,
                    receiver,
                    group,
                    recipients,
                },
                sws,
                rws,
            ))
        }
    }))
    .buffer_unordered(16);
    for _ in 0..n {
        match futs.next().await {
            Some(r) => out.push(r?),
            None => break,
        }
    }
    Ok(out)
}

/// Starts the tasks of each pair on already authenticated sockets.
pub fn start_pairs(
    pairs: Vec<(Arc<PairKeys>, Ws, Option<Ws>)>,
    shared: &Shared,
    stop: watch::Sender<bool>,
) -> Pairs {
    let mut steps = Vec::new();
    let mut tasks = Vec::new();
    for (i, (keys, sws, rws)) in pairs.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Step>(4);
        steps.push(tx);
        let pending = Arc::new(Mutex::new(HashMap::<u64, u64>::new()));
        let (sink, stream) = sws.split();
        tasks.push(tokio::spawn(sender_writer(
            i,
            Arc::clone(&keys),
            sink,
            rx,
            Arc::clone(&pending),
            shared.clone(),
        )));
        tasks.push(tokio::spawn(sender_reader(stream, pending, shared.clone())));
        if let Some(rws) = rws {
            tasks.push(tokio::spawn(receiver(rws, shared.clone(), None)));
        }
    }
    Pairs {
        steps,
        stop,
        tasks,
        has_acks: true,
    }
}

async fn sender_writer(
    pair: usize,
    keys: Arc<PairKeys>,
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut steps: mpsc::Receiver<Step>,
    pending: Arc<Mutex<HashMap<u64, u64>>>,
    shared: Shared,
) {
    let filler = net::random_bytes(ENVELOPE);
    let salt = net::random_bytes(8);
    let recipients = keys.recipients.clone();
    let mut seq: u64 = shared.seq_base.saturating_add(1);
    let rec = &shared.rec;
    while let Some(step) = steps.recv().await {
        let mut pacer = Pacer::new(step);
        while let Some(at) = pacer.next().await {
            let idx = index(pair, seq);
            seq = seq.saturating_add(1);
            let sched = u64::try_from(at.saturating_duration_since(rec.base).as_nanos())
                .unwrap_or(u64::MAX);
            let mut message_id = salt.clone();
            message_id.extend_from_slice(&idx.to_le_bytes());
            let frame = net::encode(
                idx,
                Body::SendMessage(v1::SendMessage {
                    message_id,
                    group_id: keys.group.id.clone(),
                    recipients: recipients.clone(),
                    payload: net::group_payload(&keys.group.id, idx, sched, ENVELOPE, &filler),
                    send_token: keys.group.capability.clone(),
                    ..v1::SendMessage::default()
                }),
            );
            if let Ok(mut p) = pending.lock() {
                p.insert(idx, sched);
            }
            rec.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = sink.send(frame).await {
                rec.error(format!("send: {e}"));
                return;
            }
        }
    }
}

async fn sender_reader(
    mut stream: futures_util::stream::SplitStream<Ws>,
    pending: Arc<Mutex<HashMap<u64, u64>>>,
    shared: Shared,
) {
    let mut stop = shared.stop.clone();
    for _ in 0..u64::MAX {
        let message = tokio::select! {
            _ = stop.changed() => return,
            m = stream.next() => m,
        };
        let Some(Ok(message)) = message else { return };
        let Message::Binary(bytes) = message else {
            continue;
        };
        let Ok(frame) = sotto_proto::decode_server_frame(&bytes) else {
            shared.rec.error("undecodable frame".into());
            continue;
        };
        if let Some(server_frame::Body::Response(r)) = frame.body {
            let sched = pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&r.request_id));
            match (r.result, sched) {
                (Some(response::Result::Done(_)), Some(sched)) => {
                    shared.rec.record_ack(sched);
                    shared.tracker.on_ack(r.request_id);
                }
                (Some(response::Result::Error(e)), _) => {
                    shared.rec.error(format!("{:?}: {}", e.code(), e.message));
                }
                _ => {}
            }
        }
    }
}

/// Handles one delivery: records it and queues its ack.
fn on_delivery(d: &v1::Delivery, shared: &Shared, seqs: &mut Vec<u64>) {
    if let Some((idx, sched)) = net::parse_group_payload(&d.payload) {
        shared.rec.record_e2e(sched);
        shared.tracker.on_seen(idx);
        if shared.tracker.fanout {
            let us = shared.rec.now_ns().saturating_sub(sched) / 1000;
            shared.tracker.on_fanout(idx, us);
        }
    }
    seqs.push(d.seq);
}

/// Receives and acknowledges deliveries until stopped or disconnected. If
/// `sync` is set, sends a Sync first and returns when SyncDone arrives.
pub async fn receiver(mut ws: Ws, shared: Shared, sync: Option<Duration>) {
    let mut stop = shared.stop.clone();
    let deadline = sync.map(|d| tokio::time::Instant::now() + d);
    if sync.is_some()
        && ws
            .send(net::encode(7, Body::Sync(v1::Sync {})))
            .await
            .is_err()
    {
        return;
    }
    let mut synced = false;
    for _ in 0..u64::MAX {
        let message = tokio::select! {
            _ = stop.changed(), if sync.is_none() => break,
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                shared.rec.error("drain timed out before SyncDone".into());
                break;
            }
            m = ws.next() => m,
        };
        let mut seqs = Vec::new();
        let mut closed = false;
        let mut handle = |m: Message, seqs: &mut Vec<u64>| {
            if let Message::Binary(bytes) = m
                && let Ok(frame) = sotto_proto::decode_server_frame(&bytes)
            {
                match frame.body {
                    Some(server_frame::Body::Delivery(d)) => on_delivery(&d, &shared, seqs),
                    Some(server_frame::Body::Response(r))
                        if matches!(r.result, Some(response::Result::SyncDone(_))) =>
                    {
                        synced = true;
                    }
                    _ => {}
                }
            }
        };
        match message {
            Some(Ok(m)) => handle(m, &mut seqs),
            _ => break,
        }
        for _ in 0..63 {
            match ws.next().now_or_never() {
                Some(Some(Ok(m))) => handle(m, &mut seqs),
                Some(_) => {
                    closed = true;
                    break;
                }
                None => break,
            }
        }
        if !seqs.is_empty()
            && ws
                .send(net::encode(0, Body::Ack(v1::Ack { seqs })))
                .await
                .is_err()
        {
            break;
        }
        if closed || (sync.is_some() && synced) {
            break;
        }
    }
    if sync.is_some() {
        let _ = ws.close(None).await;
    }
}

/// Reconnects a pair after a restart (Login on both sides).
pub async fn login_pair(
    server: SocketAddr,
    src: &SourceAddrs,
    keys: &PairKeys,
) -> anyhow::Result<(Ws, Ws)> {
    let (sws, early) = net::connect_authenticated(server, src.pick(), &keys.sender, false).await?;
    if !early.is_empty() {
        // The sender gets nothing in these workloads; ignore.
    }
    let (rws, early) = net::connect_authenticated(server, src.pick(), &keys.receiver, false)
        .await
        .context("receiver login")?;
    if !early.is_empty() {
        bail!("deliveries before the login response; the receiver loop would miss them");
    }
    Ok((sws, rws))
}
