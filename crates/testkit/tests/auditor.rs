//! Third-party auditors (issue #13 item 5): an auditor follows a real
//! server, countersigns every head it checked and hands the
//! countersignatures to the server; a client that requires the auditor
//! refuses heads without a fresh one; a log rewritten under the auditor is
//! reported as a fork; the server refuses countersignatures of heads it
//! never signed, and clients ignore forged ones.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use sotto_client::auditor::{AuditorKey, FollowError, Follower};
use sotto_client::{ClientError, Trust};
use sotto_proto::v1::{
    self, Countersignature, ErrorCode, SignedTreeHead, client_frame::Body, response,
};
use sotto_proto::v1::{ServerFrame, server_frame};
use sotto_testkit::wire::{assert_done, assert_error};
use sotto_testkit::{ConnView, HostileProxy, TestServer, register, within};
use sotto_transparency::{LogKey, verify_countersignature};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write access to the server's database, as its operator has.
fn operator_db(server: &TestServer) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(server.data_dir().join("sotto.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db
}

fn follower(url: &str) -> Follower {
    Follower::new(url, &Trust::web_roots(), AuditorKey::generate(), None)
}

/// What the server serves for `auditor` at `max_tree_size`.
async fn served(server: &TestServer, auditor: &[u8], max_tree_size: u64) -> Vec<Countersignature> {
    let mut raw = server.connect().await;
    let response = raw
        .request(Body::GetCountersignatures(v1::GetCountersignatures {
            max_tree_size,
            auditor_keys: vec![auditor.to_vec()],
        }))
        .await;
    match response.result {
        Some(response::Result::Countersignatures(c)) => c.countersignatures,
        other => panic!("expected countersignatures, got {other:?}"),
    }
}

async fn log_head(server: &TestServer) -> (SignedTreeHead, Vec<u8>) {
    let mut raw = server.connect().await;
    let log_key = raw.log_key.clone();
    match raw
        .request(Body::GetLogHead(v1::GetLogHead {}))
        .await
        .result
    {
        Some(response::Result::LogHead(head)) => (head, log_key),
        other => panic!("expected a head, got {other:?}"),
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, ClientError>, why: &str) {
    match result {
        Err(ClientError::KeyLog(message)) => {
            assert!(message.contains(why), "{message}");
            assert!(message.contains("sotto trust-auditor"), "{message}");
        }
        other => panic!("expected a key-log refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_auditor_follows_a_server_and_countersigns_every_step() {
    within(async {
        let server = TestServer::start().await;
        let (_alice, _a) = register(&server.url(), "alice").await;
        let mut auditor = follower(&server.url());
        let auditor_key = auditor.public_key();
        let t0 = now_ms();

        let first = auditor.step(t0).await.unwrap();
        assert!(first.head.tree_size > 0);
        assert_eq!(first.new_entries, first.head.tree_size);
        assert_eq!(first.report.accounts, 1);

        let (_bob, _b) = register(&server.url(), "bob").await;
        let second = auditor.step(t0 + 1000).await.unwrap();
        assert!(second.head.tree_size > first.head.tree_size);
        assert_eq!(
            second.new_entries,
            second.head.tree_size - first.head.tree_size
        );
        assert_eq!(second.report.accounts, 2);

        // Nothing new: the same tree is countersigned again, later.
        let third = auditor.step(t0 + 2000).await.unwrap();
        assert_eq!(third.new_entries, 0);
        assert_eq!(third.head.tree_size, second.head.tree_size);

        // The server serves the newest countersignature of a head of at
        // most the size asked, as the auditor made it.
        let (_, log_key) = log_head(&server).await;
        let newest = served(&server, &auditor_key, second.head.tree_size).await;
        assert_eq!(newest, vec![third.countersignature.clone()]);
        verify_countersignature(&log_key, &newest[0]).unwrap();
        let older = served(&server, &auditor_key, second.head.tree_size - 1).await;
        assert_eq!(older, vec![first.countersignature]);
        assert!(
            served(&server, &auditor_key, first.head.tree_size - 1)
                .await
                .is_empty()
        );
        assert!(served(&server, &[7; 32], u64::MAX >> 2).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_client_requiring_an_auditor_refuses_heads_without_a_fresh_countersignature() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        const HOUR_MS: u64 = 3_600_000;
        let mut auditor = follower(&server.url());
        // The auditor last countersigned two hours ago; alice allows one.
        auditor.step(now_ms() - 2 * HOUR_MS).await.unwrap();
        alice
            .trust_auditor(&auditor.public_key(), Duration::from_secs(3600))
            .unwrap();
        assert_refused(
            alice.safety_number("bob", false).await,
            "no fresh countersignature",
        );

        // The auditor catches up: accepted.
        auditor.step(now_ms()).await.unwrap();
        alice.safety_number("bob", false).await.unwrap();

        // A head the auditor has not reached yet is accepted while it
        // extends a head the auditor countersigned within the lag.
        let (_carol, _c) = register(&server.url(), "carol").await;
        alice.safety_number("carol", false).await.unwrap();

        // The newest countersignature the server holds is older than the
        // lag (the auditor's clock put it two hours back, as if it had
        // stopped then): refused again.
        let (_dave, _d) = register(&server.url(), "dave").await;
        auditor.step(now_ms() - 2 * HOUR_MS).await.unwrap();
        assert_refused(
            alice.safety_number("dave", false).await,
            "no fresh countersignature",
        );

        // An auditor that never countersigned anything: refused.
        alice
            .trust_auditor(&AuditorKey::generate().public(), Duration::from_secs(3600))
            .unwrap();
        assert_refused(
            alice.safety_number("bob", false).await,
            "no fresh countersignature",
        );
        assert_eq!(alice.trusted_auditors().unwrap().len(), 2);
    })
    .await;
}

/// The operator's copy of the server's log key.
fn stolen_log_key(server: &TestServer) -> LogKey {
    let secret: Vec<u8> = server
        .db()
        .query_row(
            "SELECT secret FROM server_keys WHERE name = 'log'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    LogKey::from_secret(&secret).unwrap()
}

#[tokio::test]
async fn a_forked_log_shown_to_the_auditor_is_reported_and_stops_it() {
    within(async {
        let server = TestServer::start().await;
        let (_alice, _a) = register(&server.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        // The operator shows the auditor, once it has audited the real
        // log, a head of the same size over other entries (signed with
        // the server's own log key): the log forked.
        let key = stolen_log_key(&server);
        let forking = Arc::new(AtomicBool::new(false));
        let proxy = HostileProxy::start(&server.url(), {
            let forking = Arc::clone(&forking);
            move |_: &ConnView, mut frame: ServerFrame| {
                if forking.load(Ordering::SeqCst)
                    && let Some(server_frame::Body::Response(r)) = &mut frame.body
                    && let Some(response::Result::LogHead(head)) = &mut r.result
                {
                    *head = key.sign_head(head.tree_size, [7; 32], head.timestamp_ms);
                }
                Some(frame)
            }
        })
        .await;
        let mut auditor = follower(&proxy.url());
        let audited = auditor.step(now_ms()).await.unwrap().head;

        forking.store(true, Ordering::SeqCst);
        let fork = match auditor.step(now_ms()).await {
            Err(FollowError::Fork(fork)) => fork,
            other => panic!("the forked head was not reported as a fork: {other:?}"),
        };
        assert_eq!(fork.audited, audited);
        assert_eq!(fork.presented.tree_size, audited.tree_size);
        assert_eq!(fork.presented.root_hash, vec![7; 32]);
        let report = fork.to_string();
        assert!(report.starts_with("FORK"), "{report}");
        assert!(report.contains(&hex(&audited.root_hash)), "{report}");
        assert!(report.contains(&hex(&[7; 32])), "{report}");
        // Nothing was countersigned, and the auditor stays at the head it
        // audited: every later step reports the fork again.
        assert_eq!(auditor.head(), Some(&audited));
        assert!(matches!(
            auditor.step(now_ms()).await,
            Err(FollowError::Fork(_))
        ));
        let served = served(&server, &auditor.public_key(), u64::MAX >> 2).await;
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].root_hash, audited.root_hash);
    })
    .await;
}

#[tokio::test]
async fn countersignatures_of_heads_the_server_never_signed_are_refused_and_forgeries_ignored() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        let (head, log_key) = log_head(&server).await;
        let key = AuditorKey::generate();
        let mut raw = server.connect().await;
        let submit = |countersignature| {
            Body::SubmitCountersignature(v1::SubmitCountersignature {
                countersignature: Some(countersignature),
            })
        };

        // Another root at this size, a size the log never had, another
        // log key, a bad signature: all refused.
        let other_root = SignedTreeHead {
            root_hash: vec![9; 32],
            ..head.clone()
        };
        let too_big = SignedTreeHead {
            tree_size: head.tree_size + 1,
            ..head.clone()
        };
        let refused = [
            key.countersign(&log_key, &other_root, now_ms()),
            key.countersign(&log_key, &too_big, now_ms()),
            key.countersign(&[5; 32], &head, now_ms()),
            Countersignature {
                signature: vec![0; 64],
                ..key.countersign(&log_key, &head, now_ms())
            },
            key.countersign(&log_key, &head, now_ms() + 3_600_000),
        ];
        for countersignature in refused {
            let response = raw.request(submit(countersignature)).await;
            assert_error(&response, ErrorCode::InvalidRequest);
        }
        assert!(
            served(&server, &key.public(), head.tree_size)
                .await
                .is_empty()
        );
        let too_many = raw
            .request(Body::GetCountersignatures(v1::GetCountersignatures {
                max_tree_size: head.tree_size,
                auditor_keys: vec![vec![1; 32]; sotto_proto::MAX_AUDITORS_PER_REQUEST + 1],
            }))
            .await;
        assert_error(&too_many, ErrorCode::InvalidRequest);
        assert_done(
            &raw.request(submit(key.countersign(&log_key, &head, now_ms())))
                .await,
        );

        // The operator plants a forged countersignature of a trusted
        // auditor: clients do not count it.
        let trusted = AuditorKey::generate();
        let impostor = AuditorKey::generate();
        let forged = Countersignature {
            auditor_key: trusted.public().to_vec(),
            ..impostor.countersign(&log_key, &head, now_ms())
        };
        operator_db(&server)
            .execute(
                "INSERT INTO countersignatures \
                 (auditor_key, tree_size, signed_at_ms, countersignature) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    trusted.public().to_vec(),
                    i64::try_from(head.tree_size).unwrap(),
                    i64::try_from(forged.signed_at_ms).unwrap(),
                    forged.encode_to_vec()
                ],
            )
            .unwrap();
        assert_eq!(
            served(&server, &trusted.public(), head.tree_size).await,
            vec![forged]
        );
        alice
            .trust_auditor(&trusted.public(), Duration::from_secs(3600))
            .unwrap();
        assert_refused(
            alice.safety_number("bob", false).await,
            "no fresh countersignature",
        );
    })
    .await;
}
