//! NATS JetStream with file storage (a durable broker), spoken by a minimal
//! hand-written client over tokio (core protocol plus the JetStream API).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::{Baseline, SIZE, sched_ns, version_of, which};
use crate::load::{Pacer, Pairs, Shared, Step, index};
use crate::net::{self, SourceAddrs};
use crate::procs::{self, Proc};

/// Starts nats-server with JetStream on `a`, storing in `dir`, pinned to
/// `core`; records its version and durability settings in `b`.
pub(super) async fn start(
    a: SocketAddr,
    dir: &Path,
    core: Option<usize>,
    b: &mut Baseline,
) -> anyhow::Result<Proc> {
    let port = a.port();
    let bin = which("nats-server")
        .or_else(|| Some(std::path::PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
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
    .await
}

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

/// A file-storage stream for the run, and per pair a durable push
/// consumer with explicit acks and a publisher whose every PUB asks for a
/// PubAck (send→ack latency).
pub(super) async fn pairs(
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
