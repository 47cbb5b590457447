//! Crash harness: the real `sotto-server` binary is killed with SIGKILL at
//! random moments while real clients keep sending, restarted on the same
//! address and data directory, and the clients reconnect (a send that failed
//! with a network error stays in the client's outbox and is resent with the
//! same id). Afterwards every client drains its mailbox and the test checks
//! the durability contract: every message whose send returned `Ok` reached
//! each recipient exactly once.
//!
//! `cargo test` runs a few cycles. `SOTTO_CRASH_CYCLES=100` (see
//! `scripts/long-runs.sh`) runs more; `SOTTO_CRASH_SEED` picks the seed of
//! the kill timing and the send schedule (the seed is printed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, ConversationKind, EntryKind};
use sotto_testkit::faulty::SimRng;
use sotto_testkit::{ServerProcess, free_loopback_addr};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const GROUP: &str = "ops";
const DEFAULT_CYCLES: u64 = 4;
/// A single client operation must finish within this, crashes included.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Sync rounds after the last restart before giving up on quiet.
const MAX_DRAIN_ROUNDS: usize = 10;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Where a message went: the group, or the direct chat with `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Group,
    Direct(usize),
}

#[derive(Debug)]
struct Attempt {
    tag: String,
    sender: usize,
    target: Target,
    ok: bool,
    network_error: bool,
}

/// Starts the server binary on `addr`, retrying while the port is still
/// held by the process just killed.
fn spawn(data: &std::path::Path, addr: &str) -> ServerProcess {
    for attempt in 0..50 {
        let started = std::panic::catch_unwind(|| ServerProcess::spawn_at(data, addr));
        match started {
            Ok(server) => return server,
            Err(_) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!()
}

/// Sends texts from client `me` until `stop`, with random pauses: to the
/// group or to a direct peer, chosen by `rng`.
async fn sender(
    me: usize,
    c: &mut Client,
    mut rng: SimRng,
    stop: &AtomicBool,
    max_sends: usize,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for n in 0..max_sends {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let target = if rng.chance(600) {
            Target::Group
        } else {
            Target::Direct((me + 1 + rng.index(USERS.len() - 1)) % USERS.len())
        };
        let tag = format!("{}#{n}", USERS[me]);
        let result = tokio::time::timeout(OP_TIMEOUT, async {
            match target {
                Target::Group => c.send_group(GROUP, &tag).await.map(|_| ()),
                Target::Direct(peer) => c.send_direct(USERS[peer], &tag).await.map(|_| ()),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{tag}: send hung for {OP_TIMEOUT:?}"));
        match &result {
            Ok(()) | Err(ClientError::Network(_)) => {}
            Err(e) => eprintln!("{tag}: refused: {e}"),
        }
        attempts.push(Attempt {
            tag,
            sender: me,
            target,
            ok: result.is_ok(),
            network_error: matches!(result, Err(ClientError::Network(_))),
        });
        tokio::time::sleep(Duration::from_millis(rng.range(0, 40))).await;
    }
    attempts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let cycles = env_u64("SOTTO_CRASH_CYCLES").unwrap_or(DEFAULT_CYCLES);
    let seed = env_u64("SOTTO_CRASH_SEED").unwrap_or_else(rand_seed);
    eprintln!(
        "crash harness: {cycles} cycles, seed {seed} (SOTTO_CRASH_SEED={seed} replays the schedule)"
    );
    let started = Instant::now();
    let data = tempfile::TempDir::new().unwrap();
    let addr = free_loopback_addr();
    let url = format!("http://{addr}");
    let server = spawn(data.path(), &addr);

    // Accounts, a group of three and the direct chats, before any crash.
    let mut profiles = Vec::new();
    let mut clients = Vec::new();
    for user in USERS {
        let dir = tempfile::TempDir::new().unwrap();
        clients.push(Client::register(dir.path(), user, &url).await.unwrap());
        profiles.push(dir);
    }
    clients[0]
        .create_group(GROUP, &[USERS[1].into(), USERS[2].into()])
        .await
        .unwrap();
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        clients[a].send_direct(USERS[b], "hello").await.unwrap();
    }
    for c in &mut clients {
        c.sync().await.unwrap();
    }
    // Senders run while the killer crashes and restarts the server.
    let stop = AtomicBool::new(false);
    let max_sends = usize::try_from(cycles.saturating_mul(40).max(40)).unwrap();
    let senders = futures_util::future::join_all(
        clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| sender(i, c, SimRng::derive(seed, i as u64), &stop, max_sends)),
    );
    let killer = async {
        let mut rng = SimRng::derive(seed, 99);
        let mut server = Some(server);
        for cycle in 0..cycles {
            tokio::time::sleep(Duration::from_millis(rng.range(50, 600))).await;
            let mut old = server.take().unwrap();
            let pause = Duration::from_millis(rng.range(0, 300));
            let data_dir = data.path().to_path_buf();
            let listen = addr.clone();
            server = Some(
                tokio::task::spawn_blocking(move || {
                    old.kill();
                    drop(old);
                    std::thread::sleep(pause);
                    spawn(&data_dir, &listen)
                })
                .await
                .unwrap(),
            );
            if cycle % 10 == 9 {
                eprintln!(
                    "  {} cycles, {:.0}s",
                    cycle + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(50, 300))).await;
        stop.store(true, Ordering::SeqCst);
        server.unwrap()
    };
    let (attempts, mut server) = tokio::join!(senders, killer);
    let attempts: Vec<Attempt> = attempts.into_iter().flatten().collect();

    // Drain: everyone syncs (which also resends their outbox) until quiet.
    let mut quiet = 0;
    for _ in 0..MAX_DRAIN_ROUNDS {
        let mut anything = false;
        for c in &mut clients {
            match tokio::time::timeout(OP_TIMEOUT, c.sync()).await {
                Ok(Ok(entries)) => anything |= !entries.is_empty(),
                Ok(Err(e)) => {
                    anything = true;
                    eprintln!("sync after the last restart failed: {e}");
                }
                Err(_) => panic!("sync hung after the last restart"),
            }
            anything |= !c.outbox_payloads().unwrap().is_empty();
        }
        quiet = if anything { 0 } else { quiet + 1 };
        if quiet == 2 {
            break;
        }
    }
    assert_eq!(
        quiet, 2,
        "clients did not settle after {MAX_DRAIN_ROUNDS} sync rounds"
    );

    // Count what each recipient holds, by tag.
    let mut held: Vec<BTreeMap<String, usize>> = Vec::new();
    for (me, c) in clients.iter().enumerate() {
        let mut counts = BTreeMap::new();
        let mut conversations = vec![(ConversationKind::Group, GROUP.to_owned())];
        for (peer, user) in USERS.iter().enumerate() {
            if peer != me {
                conversations.push((ConversationKind::Direct, (*user).to_owned()));
            }
        }
        for (kind, name) in conversations {
            for e in c.history(kind, &name).unwrap() {
                if e.kind == EntryKind::System && e.text.starts_with("WARNING") {
                    panic!("{} got a warning: {}", USERS[me], e.text);
                }
                if e.kind == EntryKind::Text {
                    *counts.entry(e.text).or_insert(0) += 1;
                }
            }
        }
        held.push(counts);
    }
    // A send that failed may still have been staged (encrypted, in history
    // and outbox): then the outbox must deliver it eventually. One that
    // failed before staging (no connection) left no trace.
    let staged = |a: &Attempt| held[a.sender].contains_key(&a.tag);
    let mut acknowledged = 0;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut unacknowledged_delivered = 0;
    let mut unacknowledged_missing = 0;
    for a in &attempts {
        let recipients: Vec<usize> = match a.target {
            Target::Group => (0..USERS.len()).filter(|&r| r != a.sender).collect(),
            Target::Direct(peer) => vec![peer],
        };
        if a.ok {
            acknowledged += 1;
        }
        for r in recipients {
            let count = held[r].get(&a.tag).copied().unwrap_or(0);
            match (a.ok, count) {
                (true, 1) => {}
                (true, 0) => {
                    lost += 1;
                    eprintln!("LOST: {} for {} ({:?})", a.tag, USERS[r], a.target);
                }
                (_, n) if n > 1 => {
                    duplicated += 1;
                    eprintln!("DUPLICATE: {} seen {n} times by {}", a.tag, USERS[r]);
                }
                (false, 0) if staged(a) => {
                    unacknowledged_missing += 1;
                    eprintln!(
                        "NOT RESENT: {} is in its sender's history (outbox) but never reached {}",
                        a.tag, USERS[r]
                    );
                }
                (false, 0) => {}
                (false, _) => unacknowledged_delivered += 1,
                _ => {}
            }
        }
    }
    let network_errors = attempts.iter().filter(|a| a.network_error).count();
    eprintln!(
        "crash harness: {cycles} SIGKILL cycles in {:.1}s (seed {seed}); {} sends, {acknowledged} acknowledged, \
         {network_errors} network errors; acknowledged messages lost: {lost}; duplicates seen: {duplicated}; \
         failed sends delivered later by the outbox: {unacknowledged_delivered}; \
         staged sends never delivered: {unacknowledged_missing}",
        started.elapsed().as_secs_f64(),
        attempts.len()
    );
    assert!(acknowledged > 0, "no send succeeded at all");
    assert_eq!(lost, 0, "acknowledged messages were lost (seed {seed})");
    assert_eq!(duplicated, 0, "messages were duplicated (seed {seed})");
    assert_eq!(
        unacknowledged_missing, 0,
        "messages left in an outbox were never delivered (seed {seed})"
    );
    for c in &mut clients {
        c.disconnect().await;
    }
    server.kill();
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
