//! Third-party auditors (issue #13 item 5): an auditor follows a real
//! server's key directory, countersigns every epoch it audited and hands
//! the countersignatures to the server; a client that requires the auditor
//! refuses epochs without a fresh one; a directory forked under the auditor
//! is reported as a fork; the server stores countersignatures only from
//! auditors its operator invited, a bounded number each, refuses
//! countersignatures of epochs it never published, and clients ignore
//! forged ones.

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
    self, Countersignature, ErrorCode, SignedEpoch, client_frame::Body, response,
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

/// A server whose operator invited these auditors (and lifted the
/// registration limit, for tests that register a dozen accounts).
async fn server_inviting(auditors: &[&AuditorKey]) -> TestServer {
    let keys: Vec<[u8; 32]> = auditors.iter().map(|k| k.public()).collect();
    TestServer::start_with(move |config| {
        config.auditors = keys;
        config.limits.lift_rate_limits();
    })
    .await
}

fn follower(url: &str, key: &AuditorKey) -> Follower {
    let key = AuditorKey::from_secret(key.secret().as_slice()).unwrap();
    Follower::new(url, &Trust::web_roots(), key, None)
}

/// What the server serves for `auditor` at `max_epoch`.
async fn served(server: &TestServer, auditor: &[u8], max_epoch: u64) -> Vec<Countersignature> {
    let mut raw = server.connect().await;
    let response = raw
        .request(Body::GetCountersignatures(v1::GetCountersignatures {
            max_epoch,
            auditor_keys: vec![auditor.to_vec()],
        }))
        .await;
    match response.result {
        Some(response::Result::Countersignatures(c)) => c.countersignatures,
        other => panic!("expected countersignatures, got {other:?}"),
    }
}

async fn directory_epoch(server: &TestServer) -> (SignedEpoch, Vec<u8>) {
    let mut raw = server.connect().await;
    let log_key = raw.log_key.clone();
    match raw
        .request(Body::GetDirectoryEpoch(v1::GetDirectoryEpoch {}))
        .await
        .result
    {
        Some(response::Result::DirectoryEpoch(epoch)) => (epoch, log_key),
        other => panic!("expected an epoch, got {other:?}"),
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
async fn an_auditor_follows_a_server_and_countersigns_every_epoch() {
    within(async {
        let key = AuditorKey::generate();
        let server = server_inviting(&[&key]).await;
        let (_alice, _a) = register(&server.url(), "alice").await;
        let mut auditor = follower(&server.url(), &key);
        let auditor_key = auditor.public_key();
        let t0 = now_ms();

        let first = auditor.step(t0).await.unwrap();
        assert!(first.epoch.epoch > 0);
        assert_eq!(first.new_epochs, first.epoch.epoch);

        let (_bob, _b) = register(&server.url(), "bob").await;
        let second = auditor.step(t0 + 1000).await.unwrap();
        assert!(second.epoch.epoch > first.epoch.epoch);
        assert_eq!(second.new_epochs, second.epoch.epoch - first.epoch.epoch);

        // Nothing new: the same epoch is countersigned again, later.
        let third = auditor.step(t0 + 2000).await.unwrap();
        assert_eq!(third.new_epochs, 0);
        assert_eq!(third.epoch.epoch, second.epoch.epoch);
        assert_eq!(third.countersignature.root_hash, second.epoch.root_hash);

        // The server serves the newest countersignature of an epoch of at
        // most the one asked, as the auditor made it.
        let (_, log_key) = directory_epoch(&server).await;
        let newest = served(&server, &auditor_key, second.epoch.epoch).await;
        assert_eq!(newest, vec![third.countersignature.clone()]);
        verify_countersignature(&log_key, &newest[0]).unwrap();
        let older = served(&server, &auditor_key, second.epoch.epoch - 1).await;
        assert_eq!(older, vec![first.countersignature]);
        assert!(
            served(&server, &auditor_key, first.epoch.epoch - 1)
                .await
                .is_empty()
        );
        assert!(served(&server, &[7; 32], u64::MAX >> 2).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_client_requiring_an_auditor_refuses_epochs_without_a_fresh_countersignature() {
    within(async {
        let key = AuditorKey::generate();
        let server = server_inviting(&[&key]).await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        const HOUR_MS: u64 = 3_600_000;
        let mut auditor = follower(&server.url(), &key);
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

        // An epoch the auditor has not reached yet is accepted while it
        // extends an epoch the auditor countersigned within the lag (the
        // client checks the append-only proofs between them).
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
async fn a_forked_epoch_shown_to_the_auditor_is_reported_and_stops_it() {
    within(async {
        let key = AuditorKey::generate();
        let server = server_inviting(&[&key]).await;
        let (_alice, _a) = register(&server.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        // The operator shows the auditor, once it has audited the real
        // directory, another root for the same epoch (signed with the
        // server's own log key): the directory forked.
        let log_key = stolen_log_key(&server);
        let forking = Arc::new(AtomicBool::new(false));
        let proxy = HostileProxy::start(&server.url(), {
            let forking = Arc::clone(&forking);
            move |_: &ConnView, mut frame: ServerFrame| {
                if forking.load(Ordering::SeqCst)
                    && let Some(server_frame::Body::Response(r)) = &mut frame.body
                    && let Some(response::Result::DirectoryEpoch(epoch)) = &mut r.result
                {
                    let vrf: [u8; 32] = epoch.vrf_public_key.as_slice().try_into().unwrap();
                    *epoch = log_key.sign_epoch(&vrf, epoch.epoch, &[7; 32], epoch.timestamp_ms);
                }
                Some(frame)
            }
        })
        .await;
        let mut auditor = follower(&proxy.url(), &key);
        let audited = auditor.step(now_ms()).await.unwrap().epoch;

        forking.store(true, Ordering::SeqCst);
        let fork = match auditor.step(now_ms()).await {
            Err(FollowError::Fork(fork)) => fork,
            other => panic!("the forked epoch was not reported as a fork: {other:?}"),
        };
        assert_eq!(fork.audited, audited);
        assert_eq!(fork.presented.epoch, audited.epoch);
        assert_eq!(fork.presented.root_hash, vec![7; 32]);
        let report = fork.to_string();
        assert!(report.starts_with("FORK"), "{report}");
        assert!(report.contains(&hex(&audited.root_hash)), "{report}");
        assert!(report.contains(&hex(&[7; 32])), "{report}");
        // Nothing was countersigned, and the auditor stays at the epoch it
        // audited: every later step reports the fork again.
        assert_eq!(auditor.audited(), Some(&audited));
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
async fn countersignatures_of_epochs_the_server_never_published_are_refused_and_forgeries_ignored()
{
    within(async {
        let key = AuditorKey::generate();
        let trusted = AuditorKey::generate();
        let server = server_inviting(&[&key, &trusted]).await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        let (epoch, log_key) = directory_epoch(&server).await;
        let mut raw = server.connect().await;
        let submit = |countersignature| {
            Body::SubmitCountersignature(v1::SubmitCountersignature {
                countersignature: Some(countersignature),
            })
        };

        // Another root at this epoch, an epoch never published, another
        // log key, a bad signature, a date in the future: all refused.
        let other_root = SignedEpoch {
            root_hash: vec![9; 32],
            ..epoch.clone()
        };
        let too_new = SignedEpoch {
            epoch: epoch.epoch + 1,
            ..epoch.clone()
        };
        let refused = [
            key.countersign(&log_key, &other_root, now_ms()),
            key.countersign(&log_key, &too_new, now_ms()),
            key.countersign(&[5; 32], &epoch, now_ms()),
            Countersignature {
                signature: vec![0; 64],
                ..key.countersign(&log_key, &epoch, now_ms())
            },
            key.countersign(&log_key, &epoch, now_ms() + 3_600_000),
        ];
        for countersignature in refused {
            let response = raw.request(submit(countersignature)).await;
            assert_error(&response, ErrorCode::InvalidRequest);
        }
        assert!(served(&server, &key.public(), epoch.epoch).await.is_empty());
        let too_many = raw
            .request(Body::GetCountersignatures(v1::GetCountersignatures {
                max_epoch: epoch.epoch,
                auditor_keys: vec![vec![1; 32]; sotto_proto::MAX_AUDITORS_PER_REQUEST + 1],
            }))
            .await;
        assert_error(&too_many, ErrorCode::InvalidRequest);
        assert_done(
            &raw.request(submit(key.countersign(&log_key, &epoch, now_ms())))
                .await,
        );

        // The operator plants a forged countersignature of a trusted
        // auditor: clients do not count it.
        let impostor = AuditorKey::generate();
        let forged = Countersignature {
            auditor_key: trusted.public().to_vec(),
            ..impostor.countersign(&log_key, &epoch, now_ms())
        };
        operator_db(&server)
            .execute(
                "INSERT INTO countersignatures \
                 (auditor_key, epoch, signed_at_ms, countersignature) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    trusted.public().to_vec(),
                    i64::try_from(epoch.epoch).unwrap(),
                    i64::try_from(forged.signed_at_ms).unwrap(),
                    forged.encode_to_vec()
                ],
            )
            .unwrap();
        assert_eq!(
            served(&server, &trusted.public(), epoch.epoch).await,
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

/// Nobody can fill the server's disk with countersignatures: an auditor
/// the operator did not invite is refused before anything is stored, and
/// an invited one keeps at most its 8 newest epochs.
#[tokio::test]
async fn only_invited_auditors_are_stored_and_each_keeps_a_bounded_number() {
    within(async {
        let invited = AuditorKey::generate();
        let server = server_inviting(&[&invited]).await;
        let stranger = AuditorKey::generate();
        let (_alice, _a) = register(&server.url(), "alice").await;
        let (epoch, log_key) = directory_epoch(&server).await;
        let mut raw = server.connect().await;
        let response = raw
            .request(Body::SubmitCountersignature(v1::SubmitCountersignature {
                countersignature: Some(stranger.countersign(&log_key, &epoch, now_ms())),
            }))
            .await;
        let error = assert_error(&response, ErrorCode::NotAuthorized);
        assert!(error.message.contains("not invited"), "{error}");
        // Nor can the stranger follow the server as an auditor.
        let mut uninvited = follower(&server.url(), &stranger);
        assert!(uninvited.step(now_ms()).await.is_err());

        // Twelve epochs, each countersigned: eight are kept, the newest.
        let mut auditor = follower(&server.url(), &invited);
        let mut _accounts = Vec::new();
        let mut epochs = Vec::new();
        for i in 0..12 {
            _accounts.push(register(&server.url(), &format!("user{i}")).await);
            epochs.push(auditor.step(now_ms()).await.unwrap().epoch.epoch);
        }
        let rows: i64 = operator_db(&server)
            .query_row("SELECT COUNT(*) FROM countersignatures", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 8);
        let oldest_kept: i64 = operator_db(&server)
            .query_row("SELECT MIN(epoch) FROM countersignatures", [], |r| r.get(0))
            .unwrap();
        let mut distinct = epochs.clone();
        distinct.dedup();
        assert_eq!(
            u64::try_from(oldest_kept).unwrap(),
            distinct[distinct.len() - 8]
        );
    })
    .await;
}

/// The server shows a client requiring an auditor an epoch that does not
/// extend the one the auditor countersigned (here: audit answers whose root
/// of the countersigned epoch is another): refused, though the epoch and
/// the lookup are signed and verify.
#[tokio::test]
async fn an_epoch_that_does_not_extend_the_countersigned_one_is_refused() {
    within(async {
        let key = AuditorKey::generate();
        let server = server_inviting(&[&key]).await;
        let hiding = Arc::new(AtomicBool::new(false));
        let proxy = HostileProxy::start(&server.url(), {
            let hiding = Arc::clone(&hiding);
            move |_: &ConnView, mut frame: ServerFrame| {
                if hiding.load(Ordering::SeqCst)
                    && let Some(server_frame::Body::Response(r)) = &mut frame.body
                    && let Some(response::Result::DirectoryAudit(audit)) = &mut r.result
                {
                    audit.roots[0] = vec![7; 32];
                }
                Some(frame)
            }
        })
        .await;
        let (mut alice, _a) = register(&proxy.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        let mut auditor = follower(&server.url(), &key);
        let countersigned = auditor.step(now_ms()).await.unwrap().epoch;
        alice
            .trust_auditor(&auditor.public_key(), Duration::from_secs(3600))
            .unwrap();
        alice.safety_number("bob", false).await.unwrap();

        // A newer epoch: alice checks the proofs from the countersigned one.
        let (_carol, _c) = register(&server.url(), "carol").await;
        hiding.store(true, Ordering::SeqCst);
        assert_refused(
            alice.safety_number("carol", false).await,
            &format!("does not extend epoch {}", countersigned.epoch),
        );
        hiding.store(false, Ordering::SeqCst);
        alice.safety_number("carol", false).await.unwrap();
    })
    .await;
}
