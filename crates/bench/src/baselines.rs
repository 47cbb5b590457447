//! Baselines measured in the same run with the same open-loop generator:
//! a bare WebSocket echo server (the transport floor, written here with
//! tokio-tungstenite), Mosquitto (MQTT 3.1.1, QoS 1, persistent sessions)
//! and NATS JetStream (file storage). The MQTT and NATS clients are minimal
//! hand-written protocol clients over tokio (no extra dependencies).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, Pacer, Pairs, Shared, Step, StepResult, Tracker, index};
use crate::net::{self, SourceAddrs};
use crate::procs::{self, Proc};
use crate::stats::Recorder;

const SIZE: usize = crate::sotto::ENVELOPE;

fn sched_ns(rec: &Recorder, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(rec.base).as_nanos()).unwrap_or(u64::MAX)
}

// ------------------------------------------------------------------ echo

/// The echo server (run as `sotto-bench echo-server --listen ADDR`).
pub async fn echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("echo listening on {listen}");
    for _ in 0..u64::MAX {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) =
                tokio_tungstenite::accept_async_with_config(stream, Some(crate::net::ws_config()))
                    .await
            else {
                return;
            };
            for _ in 0..u64::MAX {
                match ws.next().await {
                    Some(Ok(m @ Message::Binary(_))) => {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
        });
    }
    Ok(())
}

async fn echo_pairs(
    a: SocketAddr,
    src: &SourceAddrs,
    n: usize,
    sh: &Shared,
    stop: watch::Sender<bool>,
) -> anyhow::Result<Pairs> {
    let mut steps = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let ws = net::ws_connect(a, src.pick(), "/").await?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::channel::<Step>(4);
        steps.push(tx);
        let rec = Arc::clone(&sh.rec);
        tasks.push(tokio::spawn(async move {
            let filler = net::random_bytes(SIZE);
            let mut seq = 1u64;
            while let Some(step) = rx.recv().await {
                let mut pacer = Pacer::new(step);
                while let Some(at) = pacer.next().await {
                    let p = net::bench_payload(index(i, seq), sched_ns(&rec, at), SIZE, &filler);
                    seq += 1;
                    rec.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if sink.send(Message::Binary(p.into())).await.is_err() {
                        return;
                    }
                }
            }
        }));
        let rec = Arc::clone(&sh.rec);
        let mut stop = sh.stop.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..u64::MAX {
                let m = tokio::select! { _ = stop.changed() => return, m = stream.next() => m };
                match m {
                    Some(Ok(Message::Binary(b))) => {
                        if let Some((_, sched)) = net::parse_payload(&b) {
                            rec.record_e2e(sched);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }));
    }
    Ok(Pairs {
        steps,
        stop,
        tasks,
        has_acks: false,
    })
}

// ------------------------------------------------------------------ MQTT

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

async fn mqtt_pairs(
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

// ------------------------------------------------------------------ NATS

async fn nats_connect(
    a: SocketAddr,
    src: std::net::Ipv4Addr,
) -> anyhow::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let stream = net::tcp_connect(a, src).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    tokio::time::timeout(net::STEP_TIMEOUT, r.read_line(&mut line)).await??;
    if !line.starts_with("INFO") {
        bail!("expected NATS INFO, got {line:?}");
    }
    w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\nPING\r\n").await?;
    line.clear();
    tokio::time::timeout(net::STEP_TIMEOUT, r.read_line(&mut line)).await??;
    if !line.starts_with("PONG") {
        bail!("expected PONG, got {line:?}");
    }
    Ok((r, w))
}

/// One NATS protocol message: (subject, reply, payload); PINGs answered.
enum NatsIn {
    Msg {
        subject: String,
        reply: String,
        payload: Vec<u8>,
    },
    Ping,
    Other(String),
}

async fn nats_read(r: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<NatsIn> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        bail!("closed");
    }
    let l = line.trim_end();
    let parts: Vec<&str> = l.split(' ').collect();
    match parts.first().copied() {
        Some("MSG") => {
            // MSG <subject> <sid> [reply] <#bytes>
            let len: usize = parts
                .last()
                .and_then(|s| s.parse().ok())
                .context("MSG length")?;
            let reply = if parts.len() == 5 {
                parts.get(3).map(|s| (*s).to_owned()).unwrap_or_default()
            } else {
                String::new()
            };
            let mut payload = vec![0u8; len + 2];
            r.read_exact(&mut payload).await?;
            payload.truncate(len);
            let subject = parts.get(1).map(|s| (*s).to_owned()).unwrap_or_default();
            Ok(NatsIn::Msg {
                subject,
                reply,
                payload,
            })
        }
        Some("HMSG") => {
            // HMSG <subject> <sid> [reply] <#hdr> <#total>
            let total: usize = parts
                .last()
                .and_then(|s| s.parse().ok())
                .context("HMSG length")?;
            let mut buf = vec![0u8; total + 2];
            r.read_exact(&mut buf).await?;
            Ok(NatsIn::Other("HMSG".into()))
        }
        Some("PING") => Ok(NatsIn::Ping),
        _ => Ok(NatsIn::Other(l.to_owned())),
    }
}

async fn nats_request(
    r: &mut BufReader<OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    subject: &str,
    body: &str,
) -> anyhow::Result<String> {
    let inbox = format!("_INBOX.{}", crate::sotto::run_tag());
    w.write_all(
        format!(
            "SUB {inbox} 99\r\nPUB {subject} {inbox} {}\r\n{body}\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    for _ in 0..100 {
        match tokio::time::timeout(net::STEP_TIMEOUT, nats_read(r)).await?? {
            NatsIn::Msg { payload, .. } => {
                w.write_all(b"UNSUB 99\r\n").await?;
                let s = String::from_utf8_lossy(&payload).into_owned();
                if s.contains("\"error\"") {
                    bail!("{subject}: {s}");
                }
                return Ok(s);
            }
            NatsIn::Ping => w.write_all(b"PONG\r\n").await?,
            NatsIn::Other(l) if l.starts_with("-ERR") => bail!("{subject}: {l}"),
            NatsIn::Other(_) => {}
        }
    }
    bail!("no reply to {subject}")
}

async fn nats_pairs(
    a: SocketAddr,
    src: &SourceAddrs,
    n: usize,
    sh: &Shared,
    stop: watch::Sender<bool>,
) -> anyhow::Result<Pairs> {
    let tag = crate::sotto::run_tag();
    let stream_name = format!("B{tag}");
    {
        let (mut r, mut w) = nats_connect(a, src.pick()).await?;
        nats_request(
            &mut r,
            &mut w,
            &format!("$JS.API.STREAM.CREATE.{stream_name}"),
            &format!("{{\"name\":\"{stream_name}\",\"subjects\":[\"b{tag}.>\"],\"storage\":\"file\",\"retention\":\"limits\",\"num_replicas\":1}}"),
        )
        .await?;
    }
    let mut steps = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let subject = format!("b{tag}.{i}");
        // Consumer: durable push consumer with explicit acks.
        let (mut cr, mut cw) = nats_connect(a, src.pick()).await?;
        let deliver = format!("d{tag}.{i}");
        nats_request(
            &mut cr,
            &mut cw,
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream_name}.c{i}"),
            &format!("{{\"stream_name\":\"{stream_name}\",\"config\":{{\"durable_name\":\"c{i}\",\"deliver_subject\":\"{deliver}\",\"filter_subject\":\"{subject}\",\"ack_policy\":\"explicit\",\"max_ack_pending\":64,\"deliver_policy\":\"all\"}}}}"),
        )
        .await?;
        cw.write_all(format!("SUB {deliver} 1\r\n").as_bytes())
            .await?;
        let rec = Arc::clone(&sh.rec);
        let mut stop_rx = sh.stop.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..u64::MAX {
                let m =
                    tokio::select! { _ = stop_rx.changed() => return, m = nats_read(&mut cr) => m };
                match m {
                    Ok(NatsIn::Msg { reply, payload, .. }) => {
                        if let Some((_, sched)) = net::parse_payload(&payload) {
                            rec.record_e2e(sched);
                        }
                        if !reply.is_empty()
                            && cw
                                .write_all(format!("PUB {reply} 0\r\n\r\n").as_bytes())
                                .await
                                .is_err()
                        {
                            return;
                        }
                    }
                    Ok(NatsIn::Ping) => {
                        if cw.write_all(b"PONG\r\n").await.is_err() {
                            return;
                        }
                    }
                    Ok(NatsIn::Other(_)) => {}
                    Err(_) => return,
                }
            }
        }));
        // Publisher: every PUB carries a reply inbox; JetStream answers with
        // a PubAck once the message is stored.
        let (mut pr, mut pw) = nats_connect(a, src.pick()).await?;
        let inbox = format!("_INBOX.p{tag}{i}");
        pw.write_all(format!("SUB {inbox}.* 2\r\n").as_bytes())
            .await?;
        let (tx, mut rx) = mpsc::channel::<Step>(4);
        steps.push(tx);
        let rec = Arc::clone(&sh.rec);
        tasks.push(tokio::spawn(async move {
            let filler = net::random_bytes(SIZE);
            let mut seq = 1u64;
            while let Some(step) = rx.recv().await {
                let mut pacer = Pacer::new(step);
                while let Some(at) = pacer.next().await {
                    let s = sched_ns(&rec, at);
                    let p = net::bench_payload(index(i, seq), s, SIZE, &filler);
                    seq += 1;
                    let mut frame =
                        format!("PUB {subject} {inbox}.{s} {}\r\n", p.len()).into_bytes();
                    frame.extend_from_slice(&p);
                    frame.extend_from_slice(b"\r\n");
                    rec.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if pw.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            }
        }));
        let rec = Arc::clone(&sh.rec);
        let mut stop_rx = sh.stop.clone();
        tasks.push(tokio::spawn(async move {
            // The reader needs the writer half for PONG; PINGs from the
            // server are rare (2 min) and steps are short, so they are
            // ignored here.
            for _ in 0..u64::MAX {
                let m =
                    tokio::select! { _ = stop_rx.changed() => return, m = nats_read(&mut pr) => m };
                match m {
                    Ok(NatsIn::Msg {
                        subject, payload, ..
                    }) => {
                        let s = String::from_utf8_lossy(&payload);
                        if s.contains("\"error\"") {
                            rec.error(s.into_owned());
                        } else if let Some(sched) = subject
                            .rsplit('.')
                            .next()
                            .and_then(|t| t.parse::<u64>().ok())
                        {
                            rec.record_ack(sched);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
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

// ------------------------------------------------------------------ runs

/// One baseline's ladder, or why it was skipped.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    pub name: String,
    pub version: String,
    pub durability: String,
    pub steps: Vec<StepResult>,
    pub max_sustainable: f64,
    pub skipped: Option<String>,
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

fn version_of(cmd: &Path, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Mosquitto,
    Nats,
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    kind: Kind,
    self_exe: &Path,
    root: &Path,
    src: &SourceAddrs,
    core: Option<usize>,
    pairs_n: usize,
    rates: &[f64],
    dur: Duration,
) -> Baseline {
    let mut b = Baseline {
        name: match kind {
            Kind::Echo => "WebSocket echo (tokio-tungstenite)",
            Kind::Mosquitto => "Mosquitto, MQTT QoS 1, persistent sessions",
            Kind::Nats => "NATS JetStream, file storage",
        }
        .into(),
        ..Baseline::default()
    };
    match run_inner(kind, self_exe, root, src, core, pairs_n, rates, dur, &mut b).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("  baseline {} skipped: {e:#}", b.name);
            b.skipped = Some(format!("{e:#}"));
        }
    }
    b
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    kind: Kind,
    self_exe: &Path,
    root: &Path,
    src: &SourceAddrs,
    core: Option<usize>,
    pairs_n: usize,
    rates: &[f64],
    dur: Duration,
    b: &mut Baseline,
) -> anyhow::Result<()> {
    let port = procs::free_port()?;
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = procs::scratch_dir(root, &format!("baseline-{kind:?}"))?;
    let proc_: Proc = match kind {
        Kind::Echo => {
            b.version = format!("tokio-tungstenite 0.29 (in {})", self_exe.display());
            b.durability =
                "none: nothing is stored; the echo is the round trip (transport floor)".into();
            let mut cmd = procs::command(self_exe, core);
            cmd.arg("echo-server").arg("--listen").arg(a.to_string());
            procs::spawn_ready(
                "echo",
                cmd,
                "echo listening",
                &dir.join("echo.log"),
                Duration::from_secs(10),
            )
            .await?
        }
        Kind::Mosquitto => {
            let bin = which("mosquitto")
                .or_else(|| {
                    Some(std::path::PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.is_file())
                })
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
            .await?
        }
        Kind::Nats => {
            let bin = which("nats-server")
                .or_else(|| {
                    Some(std::path::PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file())
                })
                .context("nats-server not installed (run scripts/bench-baselines.sh)")?;
            b.version = version_of(&bin, "--version");
            b.durability = "written to the file store before the PubAck, fsynced on a timer \
                            (sync_interval, 2 min default); nats-server 2.9 cannot fsync before \
                            acking (sync_interval: always needs 2.10+)"
                .into();
            let conf = dir.join("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "listen: 127.0.0.1:{port}\nmax_payload: 1048576\njetstream {{\n  store_dir: \"{}\"\n  max_file_store: 10G\n}}\n",
                    dir.display()
                ),
            )?;
            let mut cmd = procs::command(&bin, core);
            cmd.arg("-c").arg(&conf);
            procs::spawn_port(
                "nats-server",
                cmd,
                a,
                &dir.join("nats.log"),
                Duration::from_secs(10),
            )
            .await?
        }
    };
    let rec = Arc::new(Recorder::new(Instant::now()));
    let (tx, rx) = watch::channel(false);
    let sh = Shared {
        seq_base: 0,
        rec: Arc::clone(&rec),
        tracker: Arc::new(Tracker::default()),
        stop: rx,
    };
    let pairs = match kind {
        Kind::Echo => echo_pairs(a, src, pairs_n, &sh, tx).await,
        Kind::Mosquitto => mqtt_pairs(a, src, pairs_n, &sh, tx).await,
        Kind::Nats => nats_pairs(a, src, pairs_n, &sh, tx).await,
    };
    let pairs = match pairs {
        Ok(p) => p,
        Err(e) => {
            proc_.stop(Duration::from_secs(5)).await?;
            return Err(e);
        }
    };
    let _ = rec.take();
    b.steps = load::ladder(
        &pairs,
        &rec,
        rates,
        dur,
        Duration::from_secs(5),
        Some(&proc_),
        &format!("{kind:?}"),
    )
    .await;
    b.max_sustainable = crate::workloads::max_sustainable(&b.steps);
    pairs.shutdown().await;
    proc_.stop(Duration::from_secs(10)).await?;
    Ok(())
}
