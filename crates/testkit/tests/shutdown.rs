//! Graceful shutdown under load: the real `sotto-server` binary gets
//! SIGTERM while real clients send. It stops accepting, finishes the
//! requests in flight, closes every connection with "going away" (1001),
//! lets the writer commit what it queued, and exits 0. Restarted on the
//! same address and data directory, the clients reconnect by themselves
//! (the next operation opens a new connection; a send cut off stays in the
//! outbox and is resent with its id), and every message whose send
//! returned `Ok` reaches its recipient exactly once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, ConversationKind, EntryKind};
use sotto_testkit::{ServerProcess, free_loopback_addr};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const CYCLES: usize = 3;
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// SIGTERM to exit: the server waits at most 10 s for connections.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(15);

/// Starts the server binary on `addr`, retrying while the port is still
/// held by the process that just exited.
fn spawn(data: &std::path::Path, addr: &str) -> ServerProcess {
    for attempt in 0..50 {
        match std::panic::catch_unwind(|| ServerProcess::spawn_at(data, addr)) {
            Ok(server) => return server,
            Err(_) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!()
}

/// Sends texts from `me` to the next user until `stop`: (tag, acknowledged).
async fn sender(me: usize, c: &mut Client, stop: &AtomicBool) -> Vec<(String, bool)> {
    let peer = USERS[(me + 1) % USERS.len()];
    let mut sent = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let tag = format!("{}#{n}", USERS[me]);
        let result = tokio::time::timeout(OP_TIMEOUT, c.send_direct(peer, &tag))
            .await
            .unwrap_or_else(|_| panic!("{tag}: send hung"));
        match &result {
            Ok(_) | Err(ClientError::Network(_)) => {}
            Err(e) => panic!("{tag}: refused: {e}"),
        }
        sent.push((tag, result.is_ok()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_message() {
    let data = tempfile::TempDir::new().unwrap();
    let addr = free_loopback_addr();
    let url = format!("http://{addr}");
    let server = spawn(data.path(), &addr);
    let mut profiles = Vec::new();
    let mut clients = Vec::new();
    for user in USERS {
        let dir = tempfile::TempDir::new().unwrap();
        clients.push(Client::register(dir.path(), user, &url).await.unwrap());
        profiles.push(dir);
    }
    for (me, c) in clients.iter_mut().enumerate() {
        c.send_direct(USERS[(me + 1) % USERS.len()], "hello")
            .await
            .unwrap();
    }

    let stop = AtomicBool::new(false);
    let senders = futures_util::future::join_all(
        clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| sender(i, c, &stop)),
    );
    let terminator = async {
        let mut server = Some(server);
        for _ in 0..CYCLES {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut old = server.take().unwrap();
            let (data_dir, listen) = (data.path().to_path_buf(), addr.clone());
            server = Some(
                tokio::task::spawn_blocking(move || {
                    let asked = Instant::now();
                    let status = old.terminate();
                    assert!(status.success(), "SIGTERM: the server exited with {status}");
                    assert!(
                        asked.elapsed() < SHUTDOWN_LIMIT,
                        "SIGTERM: the server took {:?} to stop",
                        asked.elapsed()
                    );
                    spawn(&data_dir, &listen)
                })
                .await
                .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        server.unwrap()
    };
    let (sent, server) = tokio::join!(senders, terminator);

    // The clients reconnect on their own: one more send each succeeds.
    for (me, c) in clients.iter_mut().enumerate() {
        c.send_direct(USERS[(me + 1) % USERS.len()], "after")
            .await
            .unwrap();
    }
    // Drain until quiet (sync also resends each outbox).
    let mut quiet = 0;
    for _ in 0..10 {
        let mut anything = false;
        for c in &mut clients {
            anything |= !c.sync().await.unwrap().is_empty();
            anything |= !c.outbox_payloads().unwrap().is_empty();
        }
        quiet = if anything { 0 } else { quiet + 1 };
        if quiet == 2 {
            break;
        }
    }
    assert_eq!(quiet, 2, "clients did not settle");

    let (mut acknowledged, mut lost, mut duplicated) = (0, 0, 0);
    for (me, attempts) in sent.iter().enumerate() {
        let peer = (me + 1) % USERS.len();
        let mut counts = BTreeMap::new();
        for e in clients[peer]
            .history(ConversationKind::Direct, USERS[me])
            .unwrap()
        {
            assert!(
                !(e.kind == EntryKind::System && e.text.starts_with("WARNING")),
                "{} got a warning: {}",
                USERS[peer],
                e.text
            );
            if e.kind == EntryKind::Text {
                *counts.entry(e.text).or_insert(0) += 1;
            }
        }
        for (tag, ok) in attempts {
            let seen = counts.get(tag).copied().unwrap_or(0);
            acknowledged += usize::from(*ok);
            if *ok && seen == 0 {
                lost += 1;
                eprintln!("LOST: {tag}");
            }
            if seen > 1 {
                duplicated += 1;
                eprintln!("DUPLICATE: {tag} seen {seen} times");
            }
        }
    }
    let total: usize = sent.iter().map(Vec::len).sum();
    eprintln!(
        "SIGTERM under load: {CYCLES} shutdowns, {total} sends, {acknowledged} acknowledged, \
         {lost} acknowledged lost, {duplicated} duplicated"
    );
    assert!(acknowledged > CYCLES, "too little load to mean anything");
    assert_eq!(lost, 0, "acknowledged messages were lost");
    assert_eq!(duplicated, 0, "messages were duplicated");
    for c in &mut clients {
        c.disconnect().await;
    }
    drop(server);
}
