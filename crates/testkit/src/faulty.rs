//! A faulty network for simulation tests: a WebSocket proxy between one
//! client and the real server whose misbehaviour is chosen by a seeded
//! random generator.
//!
//! It models faults a real network (or a real server restart) produces, and
//! nothing TCP rules out:
//!
//! - **resets**: a connection is cut after some frames, either before a
//!   frame is passed on (the request or delivery is lost) or right after (the
//!   server acted on a request but its answer is lost, so the client resends
//!   it with the same id on its next connection); sometimes with a clean
//!   WebSocket close (a forced reconnect), sometimes by dropping the sockets;
//! - **stalls**: a frame is held back a few milliseconds, delaying everything
//!   behind it on that connection. Frames are never reordered within one
//!   connection (TCP does not do that); the two connections of a client (its
//!   logged-in one for deliveries and its anonymous one for sends) do race
//!   each other, as on a real network;
//! - **partitions**: new connections are refused for a while;
//! - **redeliveries**: a delivery is passed on twice, as a server does when
//!   an acknowledgement is lost.
//!
//! Every choice is a pure function of the seed, the connection's number
//! (connections to one proxy are numbered in the order they arrive) and the
//! frame's position on it. Sockets, threads and timers still decide which
//! frame lands at which position, so a seed replays the same schedule of
//! faults but not necessarily the same interleaving.

use futures_util::{SinkExt as _, StreamExt as _};
use sotto_proto::Message as _;
use sotto_proto::v1::{ServerFrame, server_frame};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A small, fast, seeded generator (SplitMix64). Its output depends on the
/// seed alone, on every platform and in every version, which is what
/// replaying a seed needs.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent generator for sub-stream `stream` of `seed`.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut mixer = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Self(mixer.next_u64() ^ stream)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// An index into a slice of `len` items (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap_or(u64::MAX))).unwrap_or(0)
    }
}

/// How often each fault happens while the network is faulty. Probabilities
/// are in thousandths.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// A new connection is refused (a partition).
    pub refuse_per_mille: u32,
    /// A connection is cut at some point.
    pub cut_per_mille: u32,
    /// The cut comes after at most this many frames (both ways together).
    pub max_frames_before_cut: u64,
    /// A frame is held back.
    pub delay_per_mille: u32,
    /// For at most this long.
    pub max_delay_ms: u64,
    /// A delivery is passed on twice.
    pub redeliver_per_mille: u32,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            refuse_per_mille: 100,
            cut_per_mille: 500,
            max_frames_before_cut: 12,
            delay_per_mille: 150,
            max_delay_ms: 25,
            redeliver_per_mille: 60,
        }
    }
}

/// What the proxy did, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub connections: u64,
    pub refused: u64,
    pub cuts_before: u64,
    pub cuts_after: u64,
    pub delays: u64,
    pub redeliveries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    cuts_before: AtomicU64,
    cuts_after: AtomicU64,
    delays: AtomicU64,
    redeliveries: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    seed: u64,
    config: FaultConfig,
    healed: AtomicBool,
    /// Connections still to refuse, whatever the dice say.
    partition: AtomicU64,
    counters: Counters,
}

/// A running faulty proxy in front of one server.
#[derive(Debug)]
pub struct FaultyProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultyProxy {
    /// Listens on an ephemeral loopback port and relays to `upstream` (an
    /// `http://` server URL), with faults drawn from `seed`.
    pub async fn start(upstream: &str, seed: u64, config: FaultConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let upstream = sotto_client::transport::websocket_url(upstream).expect("upstream url");
        let shared = Arc::new(Shared {
            seed,
            config,
            healed: AtomicBool::new(false),
            partition: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let accept_shared = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut number = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&accept_shared);
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                let rng = SimRng::derive(shared.seed, number);
                number += 1;
                tokio::spawn(relay(stream, upstream.clone(), shared, rng));
            }
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops all faults, for connections open now and later.
    pub fn heal(&self) {
        self.shared.healed.store(true, Ordering::SeqCst);
        self.shared.partition.store(0, Ordering::SeqCst);
    }

    /// Faults again (after [`FaultyProxy::heal`]).
    pub fn break_again(&self) {
        self.shared.healed.store(false, Ordering::SeqCst);
    }

    /// Refuses the next `connections` connections (a partition), unless
    /// healed first.
    pub fn partition(&self, connections: u64) {
        self.shared.partition.store(connections, Ordering::SeqCst);
    }

    pub fn stats(&self) -> FaultStats {
        let c = &self.shared.counters;
        FaultStats {
            connections: c.connections.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            cuts_before: c.cuts_before.load(Ordering::Relaxed),
            cuts_after: c.cuts_after.load(Ordering::Relaxed),
            delays: c.delays.load(Ordering::Relaxed),
            redeliveries: c.redeliveries.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a connection is cut.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// The frame (counting both ways from 1) at which the cut happens.
    at_frame: u64,
    /// Pass that frame on first (its effect happens, its answer is lost).
    after_forwarding: bool,
    /// Close with a WebSocket close frame rather than dropping the sockets.
    clean: bool,
}

async fn relay(stream: TcpStream, upstream: String, shared: Arc<Shared>, mut rng: SimRng) {
    let config = shared.config.clone();
    // Draw the whole plan up front so it depends on the seed alone.
    let refuse_by_dice = rng.chance(config.refuse_per_mille);
    let cut = rng.chance(config.cut_per_mille).then(|| Cut {
        at_frame: rng.range(1, config.max_frames_before_cut.max(1)),
        after_forwarding: rng.chance(500),
        clean: rng.chance(500),
    });
    let faulty = || !shared.healed.load(Ordering::SeqCst);
    let partitioned = shared
        .partition
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if faulty() && (partitioned || refuse_by_dice) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        drop(stream);
        return;
    }
    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(&upstream).await else {
        return;
    };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    let mut frames = 0u64;
    // Bounded by the connection's life: every iteration consumes a frame
    // or ends the loop.
    loop {
        let (message, from_server_side) = tokio::select! {
            m = from_client.next() => (m, false),
            m = from_server.next() => (m, true),
        };
        let Some(Ok(message)) = message else { break };
        if !matches!(message, WsMessage::Binary(_)) {
            // Pings, pongs and closes pass through untouched.
            let sent = if from_server_side {
                to_client.send(message).await
            } else {
                to_server.send(message).await
            };
            if sent.is_err() {
                break;
            }
            continue;
        }
        frames += 1;
        // Per-frame dice are drawn whether or not the network is healed, so
        // a frame's fate depends only on its position.
        let delay = rng
            .chance(config.delay_per_mille)
            .then(|| rng.range(1, config.max_delay_ms.max(1)));
        let redeliver = rng.chance(config.redeliver_per_mille);
        let broken = faulty();
        if broken && let Some(ms) = delay {
            shared.counters.delays.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let cut_here = broken && cut.is_some_and(|c| c.at_frame == frames);
        if cut_here && cut.is_some_and(|c| !c.after_forwarding) {
            shared.counters.cuts_before.fetch_add(1, Ordering::Relaxed);
            close(to_client, to_server, cut.is_some_and(|c| c.clean)).await;
            return;
        }
        let twice = broken && from_server_side && redeliver && is_delivery(&message) && !cut_here;
        let sent = if from_server_side {
            if twice {
                shared.counters.redeliveries.fetch_add(1, Ordering::Relaxed);
                if to_client.send(message.clone()).await.is_err() {
                    break;
                }
            }
            to_client.send(message).await
        } else {
            to_server.send(message).await
        };
        if sent.is_err() {
            break;
        }
        if cut_here {
            shared.counters.cuts_after.fetch_add(1, Ordering::Relaxed);
            close(to_client, to_server, cut.is_some_and(|c| c.clean)).await;
            return;
        }
    }
}

fn is_delivery(message: &WsMessage) -> bool {
    let WsMessage::Binary(bytes) = message else {
        return false;
    };
    matches!(
        ServerFrame::decode(bytes.as_ref()).map(|f| f.body),
        Ok(Some(server_frame::Body::Delivery(_)))
    )
}

async fn close<C, S>(mut to_client: C, mut to_server: S, clean: bool)
where
    C: futures_util::Sink<WsMessage> + Unpin,
    S: futures_util::Sink<WsMessage> + Unpin,
{
    if clean {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = to_client.send(WsMessage::Close(None)).await;
            let _ = to_server.send(WsMessage::Close(None)).await;
        })
        .await;
    }
    // Dropping the halves (and the read halves, by returning) closes the
    // sockets.
    drop(to_client);
    drop(to_server);
}
