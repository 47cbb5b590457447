//! Disk full: a server with a small database quota (`--max-db-bytes`,
//! SQLite `max_page_count`) refuses sends once the quota is reached, with an
//! error rather than a `Done`, never acknowledges a message it did not
//! store, and recovers when restarted with a larger quota.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, ConversationKind, EntryKind};
use sotto_proto::v1::ErrorCode;
use sotto_server::{Server, ServerConfig};
use sotto_testkit::free_loopback_addr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Sends tried before the quota must have been hit.
const MAX_SENDS: usize = 400;
/// A few kilobytes per message, so the quota fills quickly.
const TEXT_BYTES: usize = 3_000;

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(data: &Path, listen: &str, max_db_bytes: Option<u64>) -> Running {
    sotto_testkit::init_tracing();
    let config = ServerConfig {
        listen: listen.parse().unwrap(),
        data_dir: data.to_path_buf(),
        max_db_bytes,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).await.unwrap();
    let (shutdown, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running { shutdown, task }
}

async fn stop(server: Running) {
    let _ = server.shutdown.send(());
    tokio::time::timeout(Duration::from_secs(30), server.task)
        .await
        .expect("server stops")
        .unwrap();
}

/// Pages in use and the page size of the server's database.
fn db_size(data: &Path) -> (u64, u64) {
    let conn = rusqlite::Connection::open(data.join("sotto.db")).unwrap();
    let pages: u64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .unwrap()
        .try_into()
        .unwrap();
    let size: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
        .unwrap()
        .try_into()
        .unwrap();
    (pages, size)
}

fn text(n: usize) -> String {
    let head = format!("m{n} ");
    let filler: String = (0..TEXT_BYTES - head.len())
        .map(|i| char::from(b'a' + u8::try_from((i * 7 + n) % 26).unwrap()))
        .collect();
    head + &filler
}

fn tag_of(text: &str) -> &str {
    text.split(' ').next().unwrap()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(240), f)
        .await
        .expect("test step timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_sends_and_recovers() {
    within(async {
        let data = tempfile::TempDir::new().unwrap();
        let listen = free_loopback_addr();
        let url = format!("http://{listen}");

        // Accounts and a direct chat, with no quota; bob then goes offline.
        let server = start(data.path(), &listen, None).await;
        let alice_dir = tempfile::TempDir::new().unwrap();
        let bob_dir = tempfile::TempDir::new().unwrap();
        let mut alice = Client::register(alice_dir.path(), "alice", &url)
            .await
            .unwrap();
        let mut bob = Client::register(bob_dir.path(), "bob", &url).await.unwrap();
        alice.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        bob.disconnect().await;
        drop(bob);
        alice.disconnect().await;
        stop(server).await;

        // A quota a little above what is in use now.
        let (pages, page_size) = db_size(data.path());
        let quota = (pages + 48) * page_size;
        eprintln!("database: {pages} pages of {page_size} bytes; quota {quota} bytes");
        let server = start(data.path(), &listen, Some(quota)).await;

        let mut acknowledged = Vec::new();
        let mut failures = Vec::new();
        for n in 0..MAX_SENDS {
            let t = text(n);
            match alice.send_direct("bob", &t).await {
                Ok(_) => acknowledged.push(tag_of(&t).to_owned()),
                Err(e) => {
                    failures.push(e);
                    // A few more attempts must fail too, each with an error.
                    if failures.len() >= 3 {
                        break;
                    }
                }
            }
        }
        eprintln!(
            "{} sends acknowledged before the quota; then: {}",
            acknowledged.len(),
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert!(!acknowledged.is_empty(), "no send fit under the quota");
        assert!(
            failures.len() >= 3,
            "the quota was never reached in {MAX_SENDS} sends"
        );
        for e in &failures {
            match e {
                ClientError::Server(err) => {
                    let code = ErrorCode::try_from(err.code).ok();
                    let says_full = err.message.to_lowercase().contains("full");
                    assert!(
                        code == Some(ErrorCode::Internal) || says_full,
                        "unexpected refusal: {err:?}"
                    );
                    if !says_full {
                        eprintln!(
                            "NOTE: the refusal does not say storage is full: {:?}",
                            err.message
                        );
                    }
                }
                other => panic!("a full database must refuse with a server error, got {other}"),
            }
        }
        // What the server holds is still what it acknowledged: nothing it
        // refused sneaked in as stored (the sender took those out of history).
        let own: Vec<String> = alice
            .history(ConversationKind::Direct, "bob")
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Text && e.sender == "alice" && e.text.starts_with('m'))
            .map(|e| tag_of(&e.text).to_owned())
            .collect();
        assert_eq!(
            own, acknowledged,
            "alice's history holds exactly the acknowledged sends"
        );
        alice.disconnect().await;
        stop(server).await;

        // A larger quota: new sends work and everything acknowledged arrives.
        let server = start(data.path(), &listen, Some(quota * 4)).await;
        for n in MAX_SENDS..MAX_SENDS + 3 {
            let t = text(n);
            alice.send_direct("bob", &t).await.unwrap();
            acknowledged.push(tag_of(&t).to_owned());
        }
        let mut bob = Client::open(bob_dir.path()).unwrap();
        bob.sync().await.unwrap();
        let received: Vec<String> = bob
            .history(ConversationKind::Direct, "alice")
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Text && e.text.starts_with('m'))
            .map(|e| tag_of(&e.text).to_owned())
            .collect();
        assert_eq!(
            received, acknowledged,
            "bob receives every acknowledged message exactly once, in order, and nothing else"
        );
        eprintln!(
            "recovered: {} acknowledged messages delivered after raising the quota",
            received.len()
        );
        alice.disconnect().await;
        bob.disconnect().await;
        stop(server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_can_drain_a_full_database() {
    within(async {
        let data = tempfile::TempDir::new().unwrap();
        let listen = free_loopback_addr();
        let url = format!("http://{listen}");
        let server = start(data.path(), &listen, None).await;
        let alice_dir = tempfile::TempDir::new().unwrap();
        let bob_dir = tempfile::TempDir::new().unwrap();
        let mut alice = Client::register(alice_dir.path(), "alice", &url)
            .await
            .unwrap();
        let mut bob = Client::register(bob_dir.path(), "bob", &url).await.unwrap();
        alice.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        bob.disconnect().await;
        alice.disconnect().await;
        stop(server).await;

        let (pages, page_size) = db_size(data.path());
        let quota = (pages + 48) * page_size;
        let server = start(data.path(), &listen, Some(quota)).await;
        let mut acknowledged = Vec::new();
        let mut full = false;
        for n in 0..MAX_SENDS {
            let t = text(n);
            match alice.send_direct("bob", &t).await {
                Ok(_) => acknowledged.push(tag_of(&t).to_owned()),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "the quota was never reached");
        // Still full: bob logs in and drains (deleting frees pages), and
        // then alice can send again, all without a restart.
        let synced = bob.sync().await;
        eprintln!(
            "bob's sync on a full database: {}",
            match &synced {
                Ok(entries) => format!("ok, {} lines", entries.len()),
                Err(e) => format!("failed: {e}"),
            }
        );
        synced.expect("a recipient can log in and drain a full server");
        let received: Vec<String> = bob
            .history(ConversationKind::Direct, "alice")
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Text && e.text.starts_with('m'))
            .map(|e| tag_of(&e.text).to_owned())
            .collect();
        assert_eq!(received, acknowledged);
        let t = text(MAX_SENDS);
        alice
            .send_direct("bob", &t)
            .await
            .expect("after the mailbox drained, sends fit again");
        alice.disconnect().await;
        bob.disconnect().await;
        stop(server).await;
    })
    .await;
}

/// Sends from `c` to bob until three sends failed; returns the tags of the
/// acknowledged ones and of the refused ones.
async fn fill(c: &mut Client, prefix: &str) -> (Vec<String>, Vec<String>) {
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for n in 0..MAX_SENDS {
        let t = format!("{prefix}{}", text(n));
        match c.send_direct("bob", &t).await {
            Ok(_) => acknowledged.push(tag_of(&t).to_owned()),
            Err(_) => {
                refused.push(tag_of(&t).to_owned());
                if refused.len() >= 3 {
                    break;
                }
            }
        }
    }
    (acknowledged, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_at_the_quota_get_the_truth() {
    within(async {
        let data = tempfile::TempDir::new().unwrap();
        let listen = free_loopback_addr();
        let url = format!("http://{listen}");
        let server = start(data.path(), &listen, None).await;
        let mut senders = Vec::new();
        let mut dirs = Vec::new();
        for name in ["alice", "carol", "dave"] {
            let dir = tempfile::TempDir::new().unwrap();
            senders.push(Client::register(dir.path(), name, &url).await.unwrap());
            dirs.push(dir);
        }
        let bob_dir = tempfile::TempDir::new().unwrap();
        let mut bob = Client::register(bob_dir.path(), "bob", &url).await.unwrap();
        for c in &mut senders {
            c.send_direct("bob", "hello").await.unwrap();
        }
        bob.sync().await.unwrap();
        bob.disconnect().await;
        drop(bob);
        stop(server).await;

        let (pages, page_size) = db_size(data.path());
        let quota = (pages + 64) * page_size;
        let server = start(data.path(), &listen, Some(quota)).await;
        // Several senders at once, so the writer commits them in shared
        // batches when the quota is hit.
        let results = futures_util::future::join_all(
            senders
                .iter_mut()
                .zip(["a", "c", "d"])
                .map(|(c, prefix)| fill(c, prefix)),
        )
        .await;
        let acknowledged: std::collections::BTreeSet<String> =
            results.iter().flat_map(|(a, _)| a.iter().cloned()).collect();
        let refused: std::collections::BTreeSet<String> =
            results.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        for c in &mut senders {
            c.disconnect().await;
        }
        stop(server).await;

        let server = start(data.path(), &listen, None).await;
        let mut bob = Client::open(bob_dir.path()).unwrap();
        bob.sync().await.unwrap();
        let mut received = std::collections::BTreeSet::new();
        for peer in ["alice", "carol", "dave"] {
            for e in bob.history(ConversationKind::Direct, peer).unwrap() {
                if e.kind == EntryKind::Text && e.text != "hello" {
                    assert!(received.insert(tag_of(&e.text).to_owned()), "duplicate {}", e.text);
                }
            }
        }
        let lost: Vec<_> = acknowledged.difference(&received).collect();
        let refused_but_stored: Vec<_> = refused.intersection(&received).collect();
        eprintln!(
            "{} acknowledged, {} refused; acknowledged but lost: {lost:?}; refused but delivered: {refused_but_stored:?}",
            acknowledged.len(),
            refused.len()
        );
        assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
        assert!(
            refused_but_stored.is_empty(),
            "sends answered with an error were stored and delivered anyway: {refused_but_stored:?}"
        );
        bob.disconnect().await;
        stop(server).await;
    })
    .await;
}
