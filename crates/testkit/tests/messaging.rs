//! End-to-end messaging through real servers in-process: real sockets, real
//! MLS, and each test body run twice (see `sotto_testkit::deployment`):
//! against one server on SQLite (`NAME::sqlite`) and against three nodes on
//! PostgreSQL and NATS with the clients spread across them
//! (`NAME::cluster`, skipped without `SOTTO_TEST_POSTGRES` and
//! `SOTTO_TEST_NATS`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, CommitOutcome, ConversationKind, EntryKind, HistoryEntry};
use sotto_testkit::{TestServer, on_each_backend, register, within};

const DIRECT: ConversationKind = ConversationKind::Direct;
const GROUP: ConversationKind = ConversationKind::Group;

fn texts(entries: &[HistoryEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Text)
        .map(|e| (e.sender.clone(), e.text.clone()))
        .collect()
}

fn pair(sender: &str, text: &str) -> (String, String) {
    (sender.to_owned(), text.to_owned())
}

on_each_backend! {
    async fn direct_messages_both_ways_with_bob_offline(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, bob_dir) = register(&deployment.url(), "bob").await;
            // Bob goes offline entirely: no connection, client dropped.
            bob.disconnect().await;
            drop(bob);

            alice
                .send_direct("bob", "hi bob, are you there?")
                .await
                .unwrap();
            alice.send_direct("bob", "second message").await.unwrap();

            let mut bob = Client::open(bob_dir.path()).unwrap();
            let received = bob.sync().await.unwrap();
            assert_eq!(
                texts(&received),
                vec![
                    pair("alice", "hi bob, are you there?"),
                    pair("alice", "second message")
                ]
            );
            assert!(
                received
                    .iter()
                    .all(|e| e.conversation == "alice" && e.conversation_kind == DIRECT)
            );

            bob.send_direct("alice", "yes, hello alice").await.unwrap();
            let received = alice.sync().await.unwrap();
            assert_eq!(texts(&received), vec![pair("bob", "yes, hello alice")]);

            // Both sides keep the same history, and a second sync brings nothing new.
            let alice_history = texts(&alice.history(DIRECT, "bob").unwrap());
            let bob_history = texts(&bob.history(DIRECT, "alice").unwrap());
            assert_eq!(alice_history, bob_history);
            assert_eq!(alice_history.len(), 3);
            assert!(bob.sync().await.unwrap().is_empty());
        })
        .await;
    }
}

on_each_backend! {
    async fn group_of_three_then_remove_and_add(deployment) {
        within(async {
            let (mut a, _ad) = register(&deployment.url(), "anna").await;
            let (mut b, _bd) = register(&deployment.url(), "ben").await;
            let (mut c, _cd) = register(&deployment.url(), "cleo").await;
            let (mut d, _dd) = register(&deployment.url(), "dina").await;

            a.create_group("team", &["ben".into(), "cleo".into()])
                .await
                .unwrap();
            a.send_group("team", "welcome, both").await.unwrap();
            for member in [&mut b, &mut c] {
                let got = member.sync().await.unwrap();
                assert_eq!(texts(&got), vec![pair("anna", "welcome, both")]);
                assert!(
                    got.iter()
                        .any(|e| e.kind == EntryKind::System && e.text == "anna added you to team")
                );
            }
            b.send_group("team", "thanks anna").await.unwrap();
            assert_eq!(
                texts(&a.sync().await.unwrap()),
                vec![pair("ben", "thanks anna")]
            );
            assert_eq!(
                texts(&c.sync().await.unwrap()),
                vec![pair("ben", "thanks anna")]
            );

            // A message D must never see: sent before D is added.
            a.send_group("team", "before dina").await.unwrap();

            a.remove_member("team", "cleo").await.unwrap();
            a.add_member("team", "dina").await.unwrap();
            a.send_group("team", "after the changes").await.unwrap();

            // C learns it was removed, and gets nothing after that.
            let got = c.sync().await.unwrap();
            assert_eq!(texts(&got), vec![pair("anna", "before dina")]);
            assert!(got.iter().any(|e| e.text == "anna removed you"), "{got:?}");
            assert!(c.groups().unwrap().is_empty());

            // The ciphertext the server stored for B: C cannot decrypt it, B can.
            let b_view = b.sync().await.unwrap();
            assert_eq!(
                texts(&b_view),
                vec![
                    pair("anna", "before dina"),
                    pair("anna", "after the changes")
                ]
            );
            a.queue_text(GROUP, "team", "secret after removal").unwrap();
            let raw = outbox_payload(&a);
            assert!(
                c.try_decrypt(&raw).is_err(),
                "a removed member decrypted a later message"
            );
            let plain = b.try_decrypt(&raw).unwrap();
            assert!(String::from_utf8_lossy(&plain).contains("secret after removal"));
            a.submit_staged().await.unwrap();

            // D sees messages from after the add, none from before.
            let got = d.sync().await.unwrap();
            assert_eq!(
                texts(&got),
                vec![
                    pair("anna", "after the changes"),
                    pair("anna", "secret after removal")
                ]
            );
            assert_eq!(d.groups().unwrap(), vec!["team".to_string()]);
            let members: Vec<String> = d
                .members("team")
                .unwrap()
                .into_iter()
                .map(|m| m.username)
                .collect();
            assert_eq!(members, ["anna", "ben", "dina"]);

            // And D can talk to the group.
            d.send_group("team", "hi from dina").await.unwrap();
            assert_eq!(
                texts(&b.sync().await.unwrap()),
                vec![
                    pair("anna", "secret after removal"),
                    pair("dina", "hi from dina")
                ]
            );
            assert_eq!(
                texts(&a.sync().await.unwrap()),
                vec![pair("dina", "hi from dina")]
            );
            assert!(texts(&c.sync().await.unwrap()).is_empty());
        })
        .await;
    }
}

/// The last SendMessage payload in `client`'s outbox.
fn outbox_payload(client: &Client) -> Vec<u8> {
    client
        .outbox_payloads()
        .unwrap()
        .pop()
        .expect("a queued message")
}

on_each_backend! {
    async fn concurrent_commits_one_wins_the_other_retries(deployment) {
        within(async {
            let (mut a, _ad) = register(&deployment.url(), "alma").await;
            let (mut b, _bd) = register(&deployment.url(), "boris").await;
            let (mut c, _cd) = register(&deployment.url(), "carla").await;
            a.create_group("race", &["boris".into(), "carla".into()])
                .await
                .unwrap();
            b.sync().await.unwrap();
            c.sync().await.unwrap();

            // Both stage a commit for the same epoch before either is sent.
            a.stage_key_update("race").unwrap();
            b.stage_key_update("race").unwrap();
            let first = a.submit_staged().await.unwrap();
            let second = b.submit_staged().await.unwrap();
            assert_eq!(first, vec![CommitOutcome::Accepted]);
            assert!(
                matches!(
                    second.as_slice(),
                    [CommitOutcome::Rejected { current_epoch: 2 }]
                ),
                "{second:?}"
            );

            // The loser retries through the normal path: it processes the winner
            // and commits on top of it.
            b.update_keys("race").await.unwrap();
            a.sync().await.unwrap();
            c.sync().await.unwrap();
            let (epoch_a, auth_a) = a.epoch_state(GROUP, "race").unwrap();
            let (epoch_b, auth_b) = b.epoch_state(GROUP, "race").unwrap();
            let (epoch_c, auth_c) = c.epoch_state(GROUP, "race").unwrap();
            assert_eq!(epoch_a, 3);
            assert_eq!((epoch_a, &auth_a), (epoch_b, &auth_b));
            assert_eq!((epoch_a, &auth_a), (epoch_c, &auth_c));

            // And the group still works.
            b.send_group("race", "still here").await.unwrap();
            assert_eq!(
                texts(&a.sync().await.unwrap()),
                vec![pair("boris", "still here")]
            );
        })
        .await;
    }
}

on_each_backend! {
    async fn resent_message_is_delivered_once(deployment) {
        within(async {
            let (mut alice, alice_dir) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            alice.send_direct("bob", "first").await.unwrap();
            bob.sync().await.unwrap();

            // Queue a message, and keep a copy of the profile as it is now: what
            // a crash right after the server's acknowledgement would leave.
            alice.queue_text(DIRECT, "bob", "exactly once").unwrap();
            alice.disconnect().await;
            drop(alice);
            let snapshot = tempfile::TempDir::new().unwrap();
            copy_dir(alice_dir.path(), snapshot.path());

            let mut alice = Client::open(alice_dir.path()).unwrap();
            alice.sync().await.unwrap(); // connects, sends the outbox
            alice.disconnect().await;
            drop(alice);

            // "Crash": the profile goes back to before the outbox entry was cleared.
            copy_dir(snapshot.path(), alice_dir.path());
            let mut alice = Client::open(alice_dir.path()).unwrap();
            alice.sync().await.unwrap(); // resends with the same message id

            let got = bob.sync().await.unwrap();
            assert_eq!(texts(&got), vec![pair("alice", "exactly once")]);
            assert!(bob.sync().await.unwrap().is_empty());
        })
        .await;
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(to).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// SQLite only: it restarts the one server on its data directory. Across
/// nodes, the same promise (nothing queued is lost when a node goes) is
/// `cluster_log.rs`'s SIGKILL test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_server_restart() {
    within(async {
        let data = tempfile::TempDir::new().unwrap();
        let server = TestServer::start_in(data.path()).await;
        let url = server.url();
        let (mut alice, _a) = register(&url, "alice").await;
        let (bob, bob_dir) = register(&url, "bob").await;
        drop(bob);
        alice
            .send_direct("bob", "kept across restarts")
            .await
            .unwrap();
        alice.disconnect().await;
        server.stop().await;

        // A new server on the same data directory, on another port.
        let server = TestServer::start_in(data.path()).await;
        let mut bob = Client::open(bob_dir.path()).unwrap();
        bob.set_server_url(&server.url()).unwrap();
        assert_eq!(
            texts(&bob.sync().await.unwrap()),
            vec![pair("alice", "kept across restarts")]
        );
    })
    .await;
}

on_each_backend! {
    /// Nothing a client typed is in the server's files (SQLite: the data
    /// directory's bytes; cluster: every PostgreSQL table, and each node's
    /// data directory).
    async fn server_database_holds_no_plaintext(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            let (mut carol, _c) = register(&deployment.url(), "carol").await;
            let secrets = [
                "PLAINTEXT-direct-4f1c",
                "PLAINTEXT-group-9b2e",
                "PLAINTEXT-reply-77aa",
            ];
            alice.send_direct("bob", secrets[0]).await.unwrap();
            alice
                .create_group("secret-club", &["bob".into(), "carol".into()])
                .await
                .unwrap();
            alice.send_group("secret-club", secrets[1]).await.unwrap();
            // Search while the messages are still queued for offline recipients.
            assert_no_plaintext(&deployment, &secrets[..2]).await;
            bob.sync().await.unwrap();
            bob.send_group("secret-club", secrets[2]).await.unwrap();
            carol.sync().await.unwrap();
            alice.sync().await.unwrap();
            assert_no_plaintext(&deployment, &secrets).await;
            // The group's name is inside MLS too.
            assert_no_plaintext(&deployment, &["secret-club"]).await;
        })
        .await;
    }
}

async fn assert_no_plaintext(deployment: &sotto_testkit::Deployment, secrets: &[&str]) {
    let mut files = 0;
    for i in 0..deployment.node_count() {
        files += assert_no_plaintext_in_files(deployment.node(i).data_dir(), secrets);
    }
    if deployment.single().is_some() {
        assert!(files >= 1, "no database files");
    }
    if let Some(cluster) = deployment.cluster() {
        let found = cluster.db().tables_containing(secrets).await;
        assert!(
            found.is_empty(),
            "found in plaintext in PostgreSQL: {found:?}"
        );
    }
}

/// Checks every file in `dir`; returns how many there were.
fn assert_no_plaintext_in_files(dir: &std::path::Path, secrets: &[&str]) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for secret in secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(
                !found,
                "{secret:?} found in plaintext in {}",
                path.display()
            );
        }
    }
    files
}

on_each_backend! {
    async fn clear_errors_for_unknown_users_and_groups(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let err = alice.send_direct("nobody", "hello?").await.unwrap_err();
            assert!(err.to_string().contains("no account named nobody"), "{err}");
            let err = alice
                .send_group("no-such-group", "hello?")
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("no group named no-such-group"),
                "{err}"
            );
            let err = alice
                .create_group("g", &["ghost".into()])
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::Usage(_)), "{err}");
            // The username is taken.
            let dir = tempfile::TempDir::new().unwrap();
            let err = Client::register(dir.path(), "alice", &deployment.url())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("USERNAME_TAKEN"), "{err}");
            // And the client still works.
            let (_bob, _b) = register(&deployment.url(), "bob").await;
            alice.send_direct("bob", "fine").await.unwrap();
        })
        .await;
    }
}

on_each_backend! {
    async fn leaving_a_group_is_committed_by_a_remaining_member(deployment) {
        within(async {
            let (mut a, _ad) = register(&deployment.url(), "ada").await;
            let (mut b, _bd) = register(&deployment.url(), "bea").await;
            let (mut c, _cd) = register(&deployment.url(), "cai").await;
            a.create_group("club", &["bea".into(), "cai".into()])
                .await
                .unwrap();
            b.sync().await.unwrap();
            c.sync().await.unwrap();

            c.leave_group("club").await.unwrap();
            assert!(c.groups().unwrap().is_empty());
            // The next member to sync commits C's removal.
            let got = a.sync().await.unwrap();
            assert!(got.iter().any(|e| e.text == "cai left"), "{got:?}");
            let members: Vec<String> = a
                .members("club")
                .unwrap()
                .into_iter()
                .map(|m| m.username)
                .collect();
            assert_eq!(members, ["ada", "bea"]);
            a.send_group("club", "just us").await.unwrap();
            assert_eq!(
                texts(&b.sync().await.unwrap()),
                vec![pair("ada", "just us")]
            );
            assert!(texts(&c.sync().await.unwrap()).is_empty());
        })
        .await;
    }
}

on_each_backend! {
    /// A group with more member devices than one frame may name (the server's
    /// cap, lowered here to 2 on anna's side) gets its Welcome, its messages and
    /// its commits in parts, and every member gets each exactly once.
    async fn a_group_larger_than_one_frame_is_sent_in_parts(deployment) {
        use sotto_proto::v1::client_frame::Body;
        use sotto_testkit::{ConnView, HostileProxy};
        use std::sync::{Arc, Mutex};

        within(async {
            // Anna's connections go through a proxy that records her frames.
            let frames: Arc<Mutex<Vec<Body>>> = Arc::default();
            let record = Arc::clone(&frames);
            let proxy = HostileProxy::start(&deployment.url(), move |conn: &ConnView, frame| {
                if let Some(request @ (Body::SendMessage(_) | Body::SubmitCommit(_))) = &conn.request {
                    record.lock().unwrap().push(request.clone());
                }
                Some(frame)
            })
            .await;
            let (mut anna, _ad) = register(&proxy.url(), "anna").await;
            anna.set_recipients_per_frame(2);
            let (mut ben, _bd) = register(&deployment.url(), "ben").await;
            let (mut cleo, _cd) = register(&deployment.url(), "cleo").await;
            let (mut dina, _dd) = register(&deployment.url(), "dina").await;
            let (mut emil, _ed) = register(&deployment.url(), "emil").await;

            // Three Welcomes, four devices for each message, four for the commit
            // that adds emil.
            anna.create_group("big", &["ben".into(), "cleo".into(), "dina".into()])
                .await
                .unwrap();
            anna.send_group("big", "hello all").await.unwrap();
            anna.add_member("big", "emil").await.unwrap();
            anna.send_group("big", "and emil").await.unwrap();

            for member in [&mut ben, &mut cleo, &mut dina] {
                assert_eq!(
                    texts(&member.sync().await.unwrap()),
                    vec![pair("anna", "hello all"), pair("anna", "and emil")]
                );
            }
            assert_eq!(
                texts(&emil.sync().await.unwrap()),
                vec![pair("anna", "and emil")]
            );
            // A member with the normal cap answers; everyone gets it once.
            emil.send_group("big", "thanks").await.unwrap();
            for member in [&mut anna, &mut ben, &mut cleo, &mut dina] {
                assert_eq!(
                    texts(&member.sync().await.unwrap()),
                    vec![pair("emil", "thanks")]
                );
            }
            for member in [&mut anna, &mut ben, &mut cleo, &mut dina, &mut emil] {
                assert!(member.sync().await.unwrap().is_empty());
                assert_eq!(
                    member.members("big").unwrap().len(),
                    5,
                    "every member sees the same roster"
                );
            }

            let frames = frames.lock().unwrap();
            let mut parts = 0;
            for frame in frames.iter() {
                let (named, more) = match frame {
                    Body::SendMessage(m) => (m.recipients.len(), m.more_recipients),
                    Body::SubmitCommit(c) => (
                        c.recipients.len().max(c.welcome_recipients.len()),
                        c.more_recipients,
                    ),
                    _ => unreachable!(),
                };
                assert!(named <= 2, "a frame named {named} recipients: {frame:?}");
                parts += usize::from(more);
            }
            // Welcomes 2+1, messages 2+2 twice, the commit adding emil 2+2 and
            // its Welcome 1: at least one extra part for each.
            assert!(parts >= 4, "only {parts} frames were extra parts");
        })
        .await;
    }
}
