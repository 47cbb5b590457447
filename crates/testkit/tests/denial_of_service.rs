//! Denial of service, end to end with real clients (real MLS, real SQLite
//! on both sides): what the server does against outsiders must leave honest
//! users working. The server-side limits are tested one by one in
//! `crates/server/tests/limits.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_proto::v1::{self, client_frame::Body};
use sotto_server::config::Rate;
use sotto_testkit::{TestServer, register, texts, within};

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

/// Every connection that has not logged in is closed once idle for the
/// handshake timeout, the client's anonymous connection (sends, claims,
/// key-log reads) included: the client opens a new one when it next needs
/// it, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anonymous_connection_is_reopened_after_its_handshake_deadline() {
    within(async {
        let server = TestServer::start_with(|c| {
            c.limits.handshake_timeout = std::time::Duration::from_millis(300);
        })
        .await;
        let (mut bob, _bob_dir) = register(&server.url(), "bob").await;
        let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
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
