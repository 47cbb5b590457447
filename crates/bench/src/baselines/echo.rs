//! The transport floor: a bare WebSocket echo server (tokio-tungstenite,
//! run as `sotto-bench echo-server`) and pairs whose messages come back to
//! them. Nothing is stored, so nothing is acknowledged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{Baseline, SIZE, sched_ns};
use crate::load::{Pacer, Pairs, Shared, Step, index};
use crate::net::{self, SourceAddrs};
use crate::procs::{self, Proc};

/// Starts this binary's echo server on `a`, pinned to `core`; records its
/// version and durability in `b`.
pub(super) async fn start(
    self_exe: &Path,
    a: SocketAddr,
    dir: &Path,
    core: Option<usize>,
    b: &mut Baseline,
) -> anyhow::Result<Proc> {
    b.version = format!("tokio-tungstenite 0.29 (in {})", self_exe.display());
    b.durability = "none: nothing is stored; the echo is the round trip (transport floor)".into();
    let mut cmd = procs::command(self_exe, core);
    cmd.arg("echo-server").arg("--listen").arg(a.to_string());
    procs::spawn_ready(
        "echo",
        cmd,
        "echo listening",
        &dir.join("echo.log"),
        Duration::from_secs(10),
    )
    .await
}

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

/// One connection per pair; each sender's messages come back on its own
/// connection, so e2e is the round trip (there are no acks).
pub(super) async fn pairs(
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
