//! A hostile server: the operator tries to add a ghost device, swap a key,
//! show two people different key logs, withhold a roster change, and forge
//! a missed-messages notice. Each test puts a `HostileProxy` between one
//! client and the real server (or, for the notice, writes the operator's
//! own database) and asserts the warning the user sees, and that nothing
//! reached the ghost.
//!
//! Tests written with `on_each_backend!` also run against three nodes on
//! PostgreSQL and NATS (`NAME::cluster`). The swapped key, the forked log and the
//! forged notice stay on SQLite: the operator's forgeries are built from
//! (or written into) the SQLite file — the log key, the log's leaves, a
//! mailbox row — and what they test is the client's check, which does not
//! depend on where the server keeps its data.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_client::{ClientError, ConversationKind};
use sotto_core::identity::{Account, Username};
use sotto_proto::v1::{
    self, AccountLog, ClaimedKeyPackage, IdentityRegistered, LogEntry, ProvenEntry, ServerFrame,
    SignedTreeHead, account_event::Change, client_frame, response, server_frame,
};
use sotto_testkit::{
    ConnView, Deployment, HostileProxy, Reorder, TestServer, on_each_backend, register, texts,
    warnings, within,
};
use sotto_transparency::{LogKey, MerkleLog, leaf_bytes};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The operator's copy of the server's log key.
fn stolen_log_key(server: &TestServer) -> LogKey {
    let db = rusqlite::Connection::open(server.data_dir().join("sotto.db")).unwrap();
    let secret: Vec<u8> = db
        .query_row(
            "SELECT secret FROM server_keys WHERE name = 'log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    LogKey::from_secret(&secret).unwrap()
}

/// Every leaf of the real log, straight from the server's database.
fn real_log_entries(server: &TestServer) -> Vec<LogEntry> {
    use sotto_proto::Message as _;
    let db = rusqlite::Connection::open(server.data_dir().join("sotto.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT entry FROM log_entries ORDER BY idx")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|bytes| LogEntry::decode(bytes.unwrap().as_slice()).unwrap())
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn response_mut(frame: &mut ServerFrame) -> Option<&mut response::Result> {
    match &mut frame.body {
        Some(server_frame::Body::Response(r)) => r.result.as_mut(),
        _ => None,
    }
}

fn is_for(conn: &ConnView, user: &str) -> bool {
    conn.username.as_deref() == Some(user)
}

fn asks_about(conn: &ConnView, user: &str) -> bool {
    match &conn.request {
        Some(client_frame::Body::ClaimKeyPackages(c)) => c.username == user,
        Some(client_frame::Body::GetAccountLog(g)) => g.username == user,
        _ => false,
    }
}

on_each_backend! {
    /// (a) The server offers Alice an extra "device" for Bob. It cannot sign a
    /// certificate with Bob's identity key, and the log does not list it, so
    /// Alice refuses to talk to Bob at all rather than encrypt to the ghost.
    async fn a_ghost_device_is_refused_and_never_encrypted_to(deployment) {
        within(async {
            let ghost = Account::generate(Username::parse("bob").unwrap());
            let provider = OpenMlsRustCrypto::default();
            let ghost_device = ClaimedKeyPackage {
                device: Some(ghost.signed_device()),
                key_package: sotto_core::group::new_key_package(&provider, &ghost, false).unwrap(),
            };
            let proxy = HostileProxy::start(
                &deployment.url(),
                move |conn: &ConnView, mut frame: ServerFrame| {
                    // Only Alice connects through this proxy; her claims and
                    // lookups use a connection that never logs in.
                    if asks_about(conn, "bob")
                        && let Some(response::Result::KeyPackages(bundle)) = response_mut(&mut frame)
                    {
                        bundle.devices.push(ghost_device.clone());
                    }
                    Some(frame)
                },
            )
            .await;
            let (mut alice, _a) = register(&proxy.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;

            let err = alice.send_direct("bob", "for bob only").await.unwrap_err();
            let shown = err.to_string();
            assert!(matches!(err, ClientError::KeyLog(_)), "{shown}");
            assert!(
                shown.starts_with("WARNING") && shown.contains("refused a device"),
                "{shown}"
            );
            // Nothing was encrypted or sent: no conversation, nothing queued.
            assert!(alice.history(ConversationKind::Direct, "bob").is_err());
            assert!(alice.outbox_payloads().unwrap().is_empty());
            assert!(bob.sync().await.unwrap().is_empty());
        })
        .await;
    }
}

/// A forged account log for `username`: a fresh identity with one device,
/// in a two-leaf tree whose head the operator signs with the real log key.
fn forged_account_log(key: &LogKey, username: &str) -> AccountLog {
    let fake = Account::generate(Username::parse(username).unwrap());
    let entries = fake.registration_log_entries();
    let mut tree = MerkleLog::new();
    for entry in &entries {
        tree.push(&leaf_bytes(entry));
    }
    let head = key.sign_head(tree.len(), tree.root(), now_ms());
    AccountLog {
        head: Some(head),
        entries: entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| ProvenEntry {
                index: i as u64,
                inclusion_path: tree.inclusion_path(i as u64, 2).unwrap(),
                entry: Some(entry),
            })
            .collect(),
    }
}

/// (b) The operator swaps Bob's identity key (with a log it signs itself).
/// Alice pinned Bob's key when they first talked: she is warned, the
/// verified mark is gone, and nothing is sent to the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_identity_key_warns_and_clears_the_verified_mark() {
    within(async {
        let server = TestServer::start().await;
        let swap = Arc::new(AtomicBool::new(false));
        let key = stolen_log_key(&server);
        let forged = forged_account_log(&key, "bob");
        let swapping = Arc::clone(&swap);
        let proxy = HostileProxy::start(
            &server.url(),
            move |conn: &ConnView, mut frame: ServerFrame| {
                if swapping.load(Ordering::SeqCst) && asks_about(conn, "bob") {
                    match response_mut(&mut frame) {
                        Some(response::Result::AccountLog(log)) => *log = forged.clone(),
                        Some(response::Result::KeyPackages(bundle)) => {
                            bundle.account_log = Some(forged.clone())
                        }
                        _ => {}
                    }
                }
                Some(frame)
            },
        )
        .await;
        let (mut alice, _a) = register(&proxy.url(), "alice").await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        alice.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        let (number, _) = alice.safety_number("bob", false).await.unwrap();
        alice.mark_verified("bob").await.unwrap();

        swap.store(true, Ordering::SeqCst);
        let err = alice.safety_number("bob", false).await.unwrap_err();
        assert!(
            matches!(err, ClientError::IdentityChanged(ref who) if who == "bob"),
            "{err}"
        );
        assert!(err.to_string().starts_with("WARNING"), "{err}");
        let err = alice
            .create_group("with-bob", &["bob".into()])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::IdentityChanged(_)), "{err}");

        assert!(
            !alice.is_verified("bob").unwrap(),
            "the verified mark survived a key change"
        );
        // Even if Alice chose to accept the new key, the forged log does not
        // extend the log she already saw: refused again.
        let err = alice.safety_number("bob", true).await.unwrap_err();
        assert!(err.to_string().contains("key log forked"), "{err}");
        // Bob's real key still gives the number she compared.
        swap.store(false, Ordering::SeqCst);
        assert_eq!(alice.safety_number("bob", true).await.unwrap().0, number);
    })
    .await;
}

/// A view of the log forked from the real one: the real leaves up to now,
/// then one the operator adds for Bob's eyes only.
struct Fork {
    tree: MerkleLog,
    key: LogKey,
}

impl Fork {
    fn new(server: &TestServer) -> Self {
        let mut tree = MerkleLog::new();
        for entry in real_log_entries(server) {
            tree.push(&leaf_bytes(&entry));
        }
        let extra = Account::generate(Username::parse("mallory").unwrap());
        let entry = extra.identity.sign_event(
            &extra.username,
            0,
            Change::IdentityRegistered(IdentityRegistered {}),
        );
        tree.push(&leaf_bytes(&entry));
        Self {
            tree,
            key: stolen_log_key(server),
        }
    }

    fn head(&self) -> SignedTreeHead {
        self.key
            .sign_head(self.tree.len(), self.tree.root(), now_ms())
    }

    /// Rewrites a response so that it shows the forked log.
    fn rewrite(&self, request: Option<&client_frame::Body>, result: &mut response::Result) {
        let size = self.tree.len();
        let reprove = |log: &mut AccountLog| {
            log.head = Some(self.head());
            for proven in &mut log.entries {
                proven.inclusion_path = self.tree.inclusion_path(proven.index, size).unwrap();
            }
        };
        if let Some(client_frame::Body::GetConsistency(asked)) = request
            && asked.new_size <= size
        {
            *result = response::Result::Consistency(v1::ConsistencyProof {
                old_size: asked.old_size,
                new_size: asked.new_size,
                path: self
                    .tree
                    .consistency_path(asked.old_size, asked.new_size)
                    .unwrap(),
            });
            return;
        }
        match result {
            response::Result::LogHead(head) => *head = self.head(),
            response::Result::AccountLog(log) => reprove(log),
            response::Result::KeyPackages(bundle) => {
                if let Some(log) = &mut bundle.account_log {
                    reprove(log);
                }
            }
            _ => {}
        }
    }
}

/// (c) The operator shows Bob a different log than everyone else. Alice's
/// messages carry her log head; Bob's client checks it against his own and
/// catches the fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_logs_for_different_people_are_caught() {
    within(async {
        let server = TestServer::start().await;
        let fork: Arc<Mutex<Option<Fork>>> = Arc::new(Mutex::new(None));
        let forking = Arc::clone(&fork);
        let proxy = HostileProxy::start(
            &server.url(),
            move |conn: &ConnView, mut frame: ServerFrame| {
                // Only Bob connects through this proxy.
                if let Some(fork) = forking.lock().unwrap().as_ref()
                    && let Some(result) = response_mut(&mut frame)
                {
                    fork.rewrite(conn.request.as_ref(), result);
                }
                Some(frame)
            },
        )
        .await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (mut bob, _b) = register(&proxy.url(), "bob").await;
        alice.send_direct("bob", "hi").await.unwrap();
        assert_eq!(texts(&bob.sync().await.unwrap()), ["hi"]);

        // From now on Bob sees a log with an extra account in it; on its own,
        // it looks like a normal extension of what he saw before.
        *fork.lock().unwrap() = Some(Fork::new(&server));
        bob.disconnect().await;
        assert!(warnings(&bob.sync().await.unwrap()).is_empty());

        // The real log moves on, and Alice's next message carries her head.
        let (_dave, _d) = register(&server.url(), "dave").await;
        alice.disconnect().await;
        alice
            .send_direct("bob", "what log do you see?")
            .await
            .unwrap();

        let got = bob.sync().await.unwrap();
        assert_eq!(texts(&got), ["what log do you see?"]);
        let warned = warnings(&got);
        assert_eq!(warned.len(), 1, "{got:?}");
        assert!(
            warned[0].contains("the key log alice sees disagrees with yours"),
            "{}",
            warned[0]
        );
    })
    .await;
}

/// The payload of the newest message still queued on the server (in the
/// SQLite file, or in the cluster's PostgreSQL schema).
async fn bob_sent_payload(deployment: &Deployment) -> Vec<u8> {
    const NEWEST: &str = "SELECT payload FROM messages ORDER BY id DESC LIMIT 1";
    match deployment.cluster() {
        Some(cluster) => cluster
            .db()
            .client()
            .await
            .query_one(NEWEST, &[])
            .await
            .unwrap()
            .get(0),
        None => {
            let server = deployment.node(0);
            let db = rusqlite::Connection::open(server.data_dir().join("sotto.db")).unwrap();
            db.query_row(NEWEST, [], |r| r.get(0)).unwrap()
        }
    }
}

on_each_backend! {
    /// (d) The operator drops the commit that adds a member, so Bob would not
    /// see the new reader. The messages after it are framed in a later epoch;
    /// that clear-text number proves nothing by itself (it is not
    /// authenticated, and the server refuses such messages from anyone but
    /// itself), so Bob is warned and holds them, and nothing durable changes.
    /// Nothing he sends meanwhile is readable by the new member, whose epoch
    /// starts after his. (`a_message_ahead_of_its_commit_is_held_then_shown` shows the release.)
    async fn a_withheld_roster_change_is_caught(deployment) {
        within(async {
            let drop_next = Arc::new(AtomicBool::new(false));
            let dropping = Arc::clone(&drop_next);
            let proxy =
                HostileProxy::start(&deployment.url(), move |conn: &ConnView, frame: ServerFrame| {
                    let is_delivery = matches!(frame.body, Some(server_frame::Body::Delivery(_)));
                    if is_for(conn, "bob") && is_delivery && dropping.swap(false, Ordering::SeqCst) {
                        return None;
                    }
                    Some(frame)
                })
                .await;
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&proxy.url(), "bob").await;
            let (mut eve, _e) = register(&deployment.url(), "eve").await;
            alice.create_group("team", &["bob".into()]).await.unwrap();
            alice.send_group("team", "hi bob").await.unwrap();
            assert_eq!(texts(&bob.sync().await.unwrap()), ["hi bob"]);

            drop_next.store(true, Ordering::SeqCst);
            alice.add_member("team", "eve").await.unwrap(); // Bob never gets this commit
            eve.sync().await.unwrap();
            alice.send_group("team", "eve can read this").await.unwrap();

            let got = bob.sync().await.unwrap();
            assert!(texts(&got).is_empty(), "{got:?}");
            let warned = warnings(&got);
            assert!(
                !warned.is_empty() && warned.iter().all(|w| w.contains("withheld")),
                "{got:?}"
            );
            // Unauthenticated input changed nothing durable: no history line,
            // the conversation still in use.
            let history = bob.history(ConversationKind::Group, "team").unwrap();
            assert!(
                history
                    .iter()
                    .all(|e| !e.text.contains("withheld") && !e.text.contains("eve")),
                "{history:?}"
            );
            assert_eq!(bob.groups().unwrap(), ["team"]);

            // What Bob sends meanwhile is in the epoch he knows: Alice reads it,
            // the member added behind his back cannot.
            bob.send_group("team", "only for those I know")
                .await
                .unwrap();
            let sent = bob_sent_payload(&deployment).await;
            assert!(
                eve.try_decrypt(&sent).is_err(),
                "eve read a message of an epoch before hers"
            );
            let to_alice = alice.sync().await.unwrap();
            assert_eq!(texts(&to_alice), ["only for those I know"]);
        })
        .await;
    }
}

/// The operator forges a missed-messages notice (it is the server's word,
/// not authenticated by MLS): Carol sees the warning, and nothing else
/// changes: she keeps reading and sending in the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_missed_messages_notice_only_warns() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
        let (mut carol, _carol_dir) = register(&server.url(), "carol").await;
        alice.create_group("team", &["carol".into()]).await.unwrap();
        carol.sync().await.unwrap();

        let db = rusqlite::Connection::open(server.data_dir().join("sotto.db")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let group_id: Vec<u8> = db
            .query_row("SELECT group_id FROM mls_groups", [], |r| r.get(0))
            .unwrap();
        let forged = sotto_proto::missed_notice::encode(&v1::MissedMessages {
            group_id,
            messages: 0,
            commits: 1,
            welcomes: 0,
        });
        db.execute(
            "INSERT INTO messages (message_id, payload) VALUES (?1, ?2)",
            rusqlite::params![[0x5a_u8; 16].as_slice(), forged],
        )
        .unwrap();
        db.execute(
            "INSERT INTO mailbox (device_num, message_ref, enqueued_day) \
             VALUES ((SELECT num FROM devices WHERE device_id = ?1), last_insert_rowid(), 0)",
            [carol.device_id().as_bytes()],
        )
        .unwrap();
        drop(db);

        carol.sync().await.unwrap();
        let shown = warnings(&carol.history(ConversationKind::Group, "team").unwrap());
        assert!(
            shown
                .iter()
                .any(|w| w.contains("can no longer read this conversation")),
            "{shown:?}"
        );
        alice.send_group("team", "still readable").await.unwrap();
        assert_eq!(texts(&carol.sync().await.unwrap()), ["still readable"]);
        carol.send_group("team", "and writable").await.unwrap();
        assert_eq!(texts(&alice.sync().await.unwrap()), ["and writable"]);
    })
    .await;
}

on_each_backend! {
    /// The operator (or a reordering path) delivers a message before the commit
    /// that starts its epoch. Bob holds it, with a notice, and shows it right
    /// after the commit, in order; nothing is refused.
    async fn a_message_ahead_of_its_commit_is_held_then_shown(deployment) {
        within(async {
            let delay_next = Arc::new(AtomicBool::new(false));
            let delaying = Arc::clone(&delay_next);
            let proxy = HostileProxy::start(
                &deployment.url(),
                // The commit comes after the two messages that follow it (the
                // new member's ConversationInfo, then the text).
                Reorder {
                    after: 2,
                    pick: move |conn: &ConnView, frame: &ServerFrame| {
                        let is_delivery = matches!(frame.body, Some(server_frame::Body::Delivery(_)));
                        is_for(conn, "bob") && is_delivery && delaying.swap(false, Ordering::SeqCst)
                    },
                },
            )
            .await;
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&proxy.url(), "bob").await;
            let (_eve, _e) = register(&deployment.url(), "eve").await;
            alice.create_group("team", &["bob".into()]).await.unwrap();
            assert!(warnings(&bob.sync().await.unwrap()).is_empty());

            delay_next.store(true, Ordering::SeqCst);
            alice.add_member("team", "eve").await.unwrap(); // its commit reaches Bob late
            alice.send_group("team", "hello eve and bob").await.unwrap();
            let got = bob.sync().await.unwrap();
            let shown: Vec<&str> = got
                .iter()
                .filter(|e| !e.text.starts_with("WARNING"))
                .map(|e| e.text.as_str())
                .collect();
            assert_eq!(shown, ["alice added eve", "hello eve and bob"], "{got:?}");
            assert!(
                !warnings(&got).is_empty(),
                "Bob was told a message was held: {got:?}"
            );
            assert_eq!(bob.groups().unwrap(), ["team"]);
            let history: Vec<String> = bob
                .history(ConversationKind::Group, "team")
                .unwrap()
                .into_iter()
                .map(|e| e.text)
                .collect();
            assert!(
                history.iter().all(|t| !t.starts_with("WARNING")),
                "{history:?}"
            );
        })
        .await;
    }
}

on_each_backend! {
    /// A server that replays an old head (to hide key changes made since) is
    /// caught once the head is older than the maximum age and the device has
    /// seen a newer one.
    async fn a_stale_head_is_refused_once_a_newer_one_was_seen(deployment) {
        within(async {
            // The proxy keeps the first head it relays, and replays it once
            // told to.
            let first: Arc<Mutex<Option<SignedTreeHead>>> = Arc::default();
            let replay = Arc::new(AtomicBool::new(false));
            let (kept, replaying) = (Arc::clone(&first), Arc::clone(&replay));
            let proxy = HostileProxy::start(
                &deployment.url(),
                move |_: &ConnView, mut frame: ServerFrame| {
                    if let Some(server_frame::Body::Response(r)) = frame.body.as_mut()
                        && let Some(response::Result::LogHead(head)) = r.result.as_mut()
                    {
                        let mut kept = kept.lock().unwrap();
                        match kept.as_ref() {
                            None => *kept = Some(head.clone()),
                            Some(old) if replaying.load(Ordering::SeqCst) => *head = old.clone(),
                            Some(_) => {}
                        }
                    }
                    Some(frame)
                },
            )
            .await;
            let (mut alice, _a) = register(&proxy.url(), "alice").await;
            alice.set_max_head_age(std::time::Duration::from_millis(500));
            // Each login asks for the current head.
            alice.disconnect().await;
            alice.sync().await.unwrap();
            assert!(first.lock().unwrap().is_some(), "the proxy saw no head");
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            // The log grows and alice pins a newer head.
            let (_bob, _b) = register(&deployment.url(), "bob").await;
            alice.disconnect().await;
            alice.sync().await.unwrap();
            // Now the server shows the old head again.
            replay.store(true, Ordering::SeqCst);
            alice.disconnect().await;
            let err = alice
                .sync()
                .await
                .expect_err("a stale head must be refused");
            assert!(
                matches!(&err, ClientError::KeyLog(m) if m.contains("seen a newer one")),
                "{err:?}"
            );
        })
        .await;
    }
}
