//! Mosquitto: MQTT 3.1.1, QoS 1, persistent sessions (store-and-forward
//! with acks), spoken by a minimal hand-written client over tokio.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::{Baseline, SIZE, sched_ns, version_of, which};
use crate::load::{Pacer, Pairs, Shared, Step, index};
use crate::net::{self, SourceAddrs};
use crate::procs::{self, Proc};

/// Starts mosquitto on `a` with a config of its own in `dir`, pinned to
/// `core`; records its version and durability settings in `b`.
pub(super) async fn start(
    a: SocketAddr,
    dir: &Path,
    core: Option<usize>,
    b: &mut Baseline,
) -> anyhow::Result<Proc> {
    let port = a.port();
    let bin = which("mosquitto")
        .or_else(|| Some(std::path::PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.is_file()))
        .context("mosquitto not installed (run scripts/bench-baselines.sh)")?;
    b.version = version_of(&bin, "-h");
    b.durability = "no fsync before PUBACK: the in-memory store is written to disk only on \
                    autosave_interval (1800 s default) and at shutdown; max_queued_messages 0 \
                    (unlimited), so nothing acked is dropped for being queued; TCP_NODELAY on, as in Sotto"
        .into();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 64\nmax_connections -1\nlog_dest stderr\nlog_type error\n\
             set_tcp_nodelay true\n",
            dir.display()
        ),
    )?;
    let mut cmd = procs::command(&bin, core);
    cmd.arg("-c").arg(&conf);
    procs::spawn_port(
        "mosquitto",
        cmd,
        a,
        &dir.join("mosquitto.log"),
        Duration::from_secs(10),
    )
    .await
}

fn mqtt_len(mut n: usize, out: &mut Vec<u8>) {
    for _ in 0..4 {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn mqtt_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn mqtt_packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![header];
    mqtt_len(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

async fn mqtt_read(r: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<(u8, Vec<u8>)> {
    let header = r.read_u8().await?;
    let mut len = 0usize;
    let mut mul = 1usize;
    for _ in 0..4 {
        let b = r.read_u8().await?;
        len += usize::from(b & 0x7f) * mul;
        mul *= 128;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok((header, body))
}

/// CONNECT with a persistent session (clean session off).
async fn mqtt_connect(
    a: SocketAddr,
    src: std::net::Ipv4Addr,
    id: &str,
) -> anyhow::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let stream = net::tcp_connect(a, src).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.push(4); // 3.1.1
    body.push(0x00); // clean session off: a persistent session
    body.extend_from_slice(&120u16.to_be_bytes());
    mqtt_str(id.as_bytes(), &mut body);
    w.write_all(&mqtt_packet(0x10, &body)).await?;
    let (h, b) = tokio::time::timeout(net::STEP_TIMEOUT, mqtt_read(&mut r)).await??;
    if h != 0x20 || b.get(1) != Some(&0) {
        bail!("MQTT CONNACK refused: {h:#x} {b:?}");
    }
    Ok((r, w))
}

/// Per pair a QoS 1 publisher (PUBACK → send→ack latency) and a QoS 1
/// subscriber on a persistent session that acks every PUBLISH.
pub(super) async fn pairs(
    a: SocketAddr,
    src: &SourceAddrs,
    n: usize,
    sh: &Shared,
    stop: watch::Sender<bool>,
) -> anyhow::Result<Pairs> {
    let mut steps = Vec::new();
    let mut tasks = Vec::new();
    let tag = crate::sotto::run_tag();
    for i in 0..n {
        let topic = format!("bench/{tag}/{i}");
        // Subscriber: QoS 1, persistent session, acks every PUBLISH.
        let (mut sr, mut sw) = mqtt_connect(a, src.pick(), &format!("s{tag}{i}")).await?;
        let mut body = 1u16.to_be_bytes().to_vec();
        mqtt_str(topic.as_bytes(), &mut body);
        body.push(1);
        sw.write_all(&mqtt_packet(0x82, &body)).await?;
        let (h, _) = tokio::time::timeout(net::STEP_TIMEOUT, mqtt_read(&mut sr)).await??;
        if h != 0x90 {
            bail!("expected SUBACK, got {h:#x}");
        }
        let rec = Arc::clone(&sh.rec);
        let mut stop_rx = sh.stop.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..u64::MAX {
                let m =
                    tokio::select! { _ = stop_rx.changed() => return, m = mqtt_read(&mut sr) => m };
                let Ok((h, body)) = m else { return };
                if h & 0xf0 != 0x30 {
                    continue;
                }
                let tlen = usize::from(u16::from_be_bytes([
                    *body.first().unwrap_or(&0),
                    *body.get(1).unwrap_or(&0),
                ]));
                let qos = (h >> 1) & 3;
                let mut pos = 2 + tlen;
                let pid = if qos > 0 {
                    let p = body.get(pos..pos + 2).map(|s| {
                        [
                            s.first().copied().unwrap_or(0),
                            s.get(1).copied().unwrap_or(0),
                        ]
                    });
                    pos += 2;
                    p
                } else {
                    None
                };
                if let Some((_, sched)) = body.get(pos..).and_then(net::parse_payload) {
                    rec.record_e2e(sched);
                }
                if let Some(pid) = pid
                    && sw.write_all(&[0x40, 0x02, pid[0], pid[1]]).await.is_err()
                {
                    return;
                }
            }
        }));
        // Publisher: QoS 1; PUBACK → send→ack latency.
        let (mut pr, mut pw) = mqtt_connect(a, src.pick(), &format!("p{tag}{i}")).await?;
        let pending = Arc::new(Mutex::new(HashMap::<u16, u64>::new()));
        let (tx, mut rx) = mpsc::channel::<Step>(4);
        steps.push(tx);
        let rec = Arc::clone(&sh.rec);
        let pend = Arc::clone(&pending);
        tasks.push(tokio::spawn(async move {
            let filler = net::random_bytes(SIZE);
            let mut seq = 1u64;
            let mut pid: u16 = 0;
            while let Some(step) = rx.recv().await {
                let mut pacer = Pacer::new(step);
                while let Some(at) = pacer.next().await {
                    pid = pid.checked_add(1).unwrap_or(1);
                    let s = sched_ns(&rec, at);
                    let mut body = Vec::with_capacity(SIZE + 64);
                    mqtt_str(topic.as_bytes(), &mut body);
                    body.extend_from_slice(&pid.to_be_bytes());
                    body.extend_from_slice(&net::bench_payload(index(i, seq), s, SIZE, &filler));
                    seq += 1;
                    if let Ok(mut p) = pend.lock() {
                        p.insert(pid, s);
                    }
                    rec.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if pw.write_all(&mqtt_packet(0x32, &body)).await.is_err() {
                        return;
                    }
                }
            }
        }));
        let rec = Arc::clone(&sh.rec);
        let mut stop_rx = sh.stop.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..u64::MAX {
                let m =
                    tokio::select! { _ = stop_rx.changed() => return, m = mqtt_read(&mut pr) => m };
                let Ok((h, body)) = m else { return };
                if h & 0xf0 == 0x40 {
                    let pid = u16::from_be_bytes([
                        *body.first().unwrap_or(&0),
                        *body.get(1).unwrap_or(&0),
                    ]);
                    if let Some(s) = pending.lock().ok().and_then(|mut p| p.remove(&pid)) {
                        rec.record_ack(s);
                    }
                }
            }
        }));
    }
    Ok(Pairs {
        steps,
        stop,
        tasks,
        has_acks: true,
    })
}
