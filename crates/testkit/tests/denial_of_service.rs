//! Denial of service, end to end with real clients (real MLS, real SQLite
//! on both sides): what the server does against outsiders must leave honest
//! users working. The server-side limits are tested one by one in
//! `crates/server/tests/limits.rs`. Tests written with `on_each_backend!`
//! also run against three PostgreSQL + NATS nodes (`NAME::cluster`); the
//! others count rows in the SQLite file to show what the cap kept out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ConversationKind};
use sotto_proto::v1::{self, client_frame::Body};
use sotto_server::config::Rate;
use sotto_testkit::wire::{create_group, random_id, send_message};
use sotto_testkit::{TestServer, on_each_backend, register, texts, warnings, within};

/// Mallory claims Bob's KeyPackages far beyond Bob's claim rate. Beyond it
/// the server hands out only Bob's reusable last-resort KeyPackage, so his
/// pool is not drained and Alice, claiming after the flood, can still add
/// him to a conversation: the Welcome reaches him and he can answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_flood_does_not_stop_a_contact_from_adding_the_victim() {
    within(async {
        let server = TestServer::start_with(|c| {
            c.limits.claims_per_target = Rate {
                per_second: 0.001,
                burst: 2.0,
            };
        })
        .await;
        let (mut bob, _bob_dir) = register(&server.url(), "bob").await;
        let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
        let pool_before: i64 = server
            .db()
            .query_row("SELECT count(*) FROM key_packages", [], |r| r.get(0))
            .unwrap();

        let mut mallory = server.connect().await;
        for _ in 0..30 {
            let response = mallory
                .request(Body::ClaimKeyPackages(v1::ClaimKeyPackages {
                    username: "bob".into(),
                    device_ids: Vec::new(),
                }))
                .await;
            assert!(
                matches!(response.result, Some(v1::response::Result::KeyPackages(_))),
                "{response:?}"
            );
        }
        let pool_after: i64 = server
            .db()
            .query_row("SELECT count(*) FROM key_packages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            pool_before - pool_after,
            2,
            "only the claims within Bob's rate took from the pool"
        );

        alice.send_direct("bob", "hi bob").await.unwrap();
        let received = bob.sync().await.unwrap();
        assert_eq!(texts(&received), ["hi bob"]);
        bob.send_direct("alice", "hi alice").await.unwrap();
        assert_eq!(texts(&alice.sync().await.unwrap()), ["hi alice"]);
    })
    .await;
}

on_each_backend! {
    /// Every connection that has not logged in is closed once idle for the
    /// handshake timeout, the client's anonymous connection (sends, claims,
    /// key-log reads) included: the client opens a new one when it next needs
    /// it, and nothing is lost.
    async fn the_anonymous_connection_is_reopened_after_its_handshake_deadline(
        deployment,
        |c| c.limits.handshake_timeout = std::time::Duration::from_millis(300)
    ) {
        within(async {
            let (mut bob, _bob_dir) = register(&deployment.url(), "bob").await;
            let (mut alice, _alice_dir) = register(&deployment.url(), "alice").await;
            alice.send_direct("bob", "one").await.unwrap();
            // Well past the deadline: the server closed Alice's anonymous
            // connection.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            alice.send_direct("bob", "two").await.unwrap();
            assert_eq!(texts(&bob.sync().await.unwrap()), ["one", "two"]);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            bob.send_direct("alice", "three").await.unwrap();
            assert_eq!(texts(&alice.sync().await.unwrap()), ["three"]);
        })
        .await;
    }
}

/// Mailbox entries the server holds for `client`'s device, missed-messages
/// notices not counted: what the cap limits.
fn queued_messages(server: &TestServer, client: &Client) -> i64 {
    server
        .db()
        .query_row(
            "SELECT count(*) FROM mailbox m JOIN devices d ON d.num = m.device_num \
             WHERE d.device_id = ?1 AND m.message_ref NOT IN (SELECT message_ref FROM missed)",
            [client.device_id().as_bytes()],
            |r| r.get(0),
        )
        .unwrap()
}

/// The mailbox warnings in a conversation's history, joined.
fn mailbox_warnings(client: &Client, group: &str) -> Option<String> {
    let found: Vec<String> = warnings(&client.history(ConversationKind::Group, group).unwrap())
        .into_iter()
        .filter(|w| w.contains("mailbox on the server was full"))
        .collect();
    (!found.is_empty()).then(|| found.join("\n"))
}

/// A member floods Carol's mailbox with valid sends (real MLS messages, the
/// group's capability) while she is offline. The group keeps working:
/// the sends past her cap and Alice's commit are stored for everyone else
/// (the senders count the skip and carry on), Bob reads on, and Carol,
/// once back, finds a warning in the conversation saying messages and a
/// commit were lost and that she must be removed and added again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_a_mailbox_does_not_freeze_the_group() {
    within(async {
        const CAP: i64 = 6;
        let server = TestServer::start_with(|c| c.limits.max_mailbox_entries = CAP as u32).await;
        let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
        let (mut bob, _bob_dir) = register(&server.url(), "bob").await;
        let (mut carol, _carol_dir) = register(&server.url(), "carol").await;
        alice
            .create_group("team", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        bob.sync().await.unwrap();
        carol.sync().await.unwrap();
        carol.disconnect().await;

        for i in 0..CAP + 2 {
            bob.send_group("team", &format!("spam {i}")).await.unwrap();
            if i % 4 == 3 {
                alice.sync().await.unwrap();
            }
        }
        assert_eq!(
            bob.skipped_recipients(),
            2,
            "two sends skipped Carol, and only her"
        );
        assert_eq!(queued_messages(&server, &carol), CAP, "the cap held");

        // The group moves on: a commit, then a message, both skip Carol.
        alice.sync().await.unwrap();
        alice.update_keys("team").await.unwrap();
        alice.send_group("team", "still here").await.unwrap();
        assert_eq!(alice.skipped_recipients(), 2);
        let received = bob.sync().await.unwrap();
        assert!(
            texts(&received).contains(&"still here".to_owned()),
            "{received:?}"
        );
        assert_eq!(queued_messages(&server, &carol), CAP);

        // Carol drains: what fitted, then the warning.
        let received = carol.sync().await.unwrap();
        assert_eq!(texts(&received).len(), CAP as usize);
        let warning =
            mailbox_warnings(&carol, "team").expect("a mailbox warning in the conversation");
        assert!(
            warning.contains("messages of this conversation were lost"),
            "{warning}"
        );
        assert!(
            warning.contains("can no longer read this conversation"),
            "a lost commit is said to be fatal to the group: {warning}"
        );
        assert!(mailbox_warnings(&bob, "team").is_none());

        // What the warning asks for repairs it: Carol removed from the
        // group she cannot follow, and a new conversation with her.
        alice.remove_member("team", "carol").await.unwrap();
        alice
            .create_group("team again", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        alice
            .send_group("team again", "welcome back")
            .await
            .unwrap();
        let received = carol.sync().await.unwrap();
        assert!(
            texts(&received).contains(&"welcome back".to_owned()),
            "{received:?}"
        );
        bob.sync().await.unwrap();
        alice.send_group("team", "without carol").await.unwrap();
        assert_eq!(texts(&bob.sync().await.unwrap()), ["without carol"]);
    })
    .await;
}

/// An outsider who knows Carol's device id (the key log is public) fills
/// her mailbox with garbage from a group of its own. Alice's group with
/// her is not frozen: messages and commits still reach Bob, and Carol,
/// draining, is told in the conversation what she lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_filling_a_mailbox_does_not_freeze_the_victims_groups() {
    within(async {
        let server = TestServer::start_with(|c| c.limits.max_mailbox_entries = 4).await;
        let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
        let (mut bob, _bob_dir) = register(&server.url(), "bob").await;
        let (mut carol, _carol_dir) = register(&server.url(), "carol").await;
        alice
            .create_group("team", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        bob.sync().await.unwrap();
        carol.sync().await.unwrap();
        carol.disconnect().await;

        let mut mallory = server.connect().await;
        let garbage = create_group(&mut mallory).await;
        let carol_device = carol.device_id().as_bytes().to_vec();
        for _ in 0..10 {
            let response = mallory
                .request(send_message(
                    &random_id(),
                    &garbage,
                    &[&carol_device],
                    b"junk",
                ))
                .await;
            assert!(
                matches!(response.result, Some(v1::response::Result::Done(_))),
                "{response:?}"
            );
        }
        assert_eq!(queued_messages(&server, &carol), 4);

        alice.send_group("team", "hello").await.unwrap();
        alice.update_keys("team").await.unwrap();
        alice.send_group("team", "after the commit").await.unwrap();
        assert_eq!(
            alice.skipped_recipients(),
            3,
            "Carol, for each of the three"
        );
        let received = bob.sync().await.unwrap();
        assert_eq!(texts(&received), ["hello", "after the commit"]);
        assert_eq!(queued_messages(&server, &carol), 4);

        carol.sync().await.unwrap();
        let warning =
            mailbox_warnings(&carol, "team").expect("a mailbox warning in the conversation");
        assert!(
            warning.contains("can no longer read this conversation"),
            "{warning}"
        );
        // The garbage group's loss is reported in the device log.
        assert!(
            carol
                .device_warnings()
                .unwrap()
                .iter()
                .any(|(_, w)| w.contains("conversation this device is not in")),
            "{:?}",
            carol.device_warnings()
        );
    })
    .await;
}

/// Carol's mailbox is full when Alice adds her: the group is created all
/// the same (the commit is not refused), and Carol is told in her device
/// log that an invitation was lost. Removed and added again, she joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_lost_to_a_full_mailbox_is_reported_and_can_be_sent_again() {
    within(async {
        let server = TestServer::start_with(|c| c.limits.max_mailbox_entries = 3).await;
        let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
        let (mut bob, _bob_dir) = register(&server.url(), "bob").await;
        let (mut carol, _carol_dir) = register(&server.url(), "carol").await;
        carol.disconnect().await;
        let mut mallory = server.connect().await;
        let garbage = create_group(&mut mallory).await;
        let carol_device = carol.device_id().as_bytes().to_vec();
        for _ in 0..3 {
            mallory
                .request(send_message(
                    &random_id(),
                    &garbage,
                    &[&carol_device],
                    b"junk",
                ))
                .await;
        }

        alice
            .create_group("team", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        assert_eq!(
            alice.skipped_recipients(),
            2,
            "only Carol was skipped: for the Welcome and the conversation's info"
        );
        alice.send_group("team", "hi").await.unwrap();
        assert_eq!(texts(&bob.sync().await.unwrap()), ["hi"]);

        carol.sync().await.unwrap();
        let log = carol.device_warnings().unwrap();
        assert!(
            log.iter()
                .any(|(_, w)| w.contains("the invitation was lost")),
            "{log:?}"
        );
        assert!(carol.groups().unwrap().is_empty());

        // (Carol drains as she goes: the cap is tiny.)
        alice.remove_member("team", "carol").await.unwrap();
        carol.sync().await.unwrap();
        alice.add_member("team", "carol").await.unwrap();
        carol.sync().await.unwrap();
        alice.send_group("team", "now with carol").await.unwrap();
        let received = carol.sync().await.unwrap();
        assert_eq!(
            texts(&received),
            ["now with carol"],
            "{received:?} {:?}",
            carol.device_warnings()
        );
    })
    .await;
}
