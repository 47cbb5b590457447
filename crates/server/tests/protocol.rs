//! The protocol, end to end: a real server on port 0 and raw clients.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response, server_frame};
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;

const QUIET: Duration = Duration::from_millis(300);

// ------------------------------------------------------------ authentication

#[tokio::test]
async fn register_then_login_on_a_new_connection() {
    let server = TestServer::start().await;
    let (_alice, account) = server.registered("alice").await;

    let mut again = server.connect().await;
    let response = again.login(&account).await;
    match response.result {
        Some(response::Result::LoggedIn(l)) => {
            assert_eq!(l.key_packages_remaining, 0);
            assert!(!l.has_last_resort);
        }
        other => panic!("expected LoggedIn, got {other:?}"),
    }
    // Authenticated now: a second login is refused, the connection stays.
    assert_error(
        &again.login(&account).await,
        ErrorCode::AlreadyAuthenticated,
    );
    assert_error(
        &again.register(&Account::new("alice2")).await,
        ErrorCode::AlreadyAuthenticated,
    );
    assert!(again.sync().await.is_empty());
}

#[tokio::test]
async fn bad_login_signature_fails_and_other_clients_are_unaffected() {
    let server = TestServer::start().await;
    let (mut bob, _) = server.registered("bob").await;
    let (_, alice) = server.registered("alice").await;

    let mut attacker = server.connect().await;
    // Signed over someone else's nonce: does not verify.
    let forged = Body::Login(v1::Login {
        username: alice.username.clone(),
        device_id: alice.device_id.clone(),
        challenge_signature: alice.sign_challenge(&[0; 32]),
    });
    let bad_signature = assert_error(
        &attacker.request(forged).await,
        ErrorCode::AuthenticationFailed,
    );
    // Unknown user gets exactly the same answer.
    let ghost = Account::new("ghost");
    let unknown_user = assert_error(
        &attacker.login(&ghost).await,
        ErrorCode::AuthenticationFailed,
    );
    assert_eq!(
        bad_signature.message,
        "login failed: unknown device or bad signature"
    );
    assert_eq!(bad_signature.message, unknown_user.message);
    // Still unauthenticated, still connected; then a correct login works.
    assert_error(
        &attacker.request(Body::Sync(v1::Sync {})).await,
        ErrorCode::NotAuthenticated,
    );
    assert!(matches!(
        attacker.login(&alice).await.result,
        Some(response::Result::LoggedIn(_))
    ));

    assert!(bob.sync().await.is_empty());
}

#[tokio::test]
async fn username_taken_and_invalid_username() {
    let server = TestServer::start().await;
    let _alice = server.registered("alice").await;

    let mut client = server.connect().await;
    let taken = assert_error(
        &client.register(&Account::new("alice")).await,
        ErrorCode::UsernameTaken,
    );
    assert!(taken.message.contains("alice"), "{}", taken.message);
    assert_error(
        &client.register(&Account::new("Not Valid")).await,
        ErrorCode::InvalidUsername,
    );
    assert_error(
        &client.register(&Account::new("ab")).await,
        ErrorCode::InvalidUsername,
    );
    // The same connection can still register a free name.
    assert_done(&client.register(&Account::new("carol")).await);
}

#[tokio::test]
async fn register_checks_signatures_and_certificate() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let account = Account::new("dave");

    let Body::Register(mut wrong_challenge) = account.register(&[7; 32]) else {
        unreachable!()
    };
    wrong_challenge.username = "dave".into();
    assert_error(
        &client.request(Body::Register(wrong_challenge)).await,
        ErrorCode::AuthenticationFailed,
    );

    let Body::Register(mut wrong_identity) = account.register(&client.nonce) else {
        unreachable!()
    };
    wrong_identity.identity_key = Account::new("x")
        .identity
        .verifying_key()
        .to_bytes()
        .to_vec();
    assert_error(
        &client.request(Body::Register(wrong_identity)).await,
        ErrorCode::AuthenticationFailed,
    );

    // Certificate for another name than the one registered.
    let other = Account::new("erin");
    let Body::Register(mut mismatched) = other.register(&client.nonce) else {
        unreachable!()
    };
    mismatched.username = "frank".into();
    assert_error(
        &client.request(Body::Register(mismatched)).await,
        ErrorCode::InvalidRequest,
    );

    assert_done(&client.register(&account).await);
}

#[tokio::test]
async fn requests_before_authentication_are_refused() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    // Sends, claims and log reads need no login (sealed sender); anything
    // about one's own device does.
    let upload = Body::UploadKeyPackages(v1::UploadKeyPackages {
        key_packages: vec![b"kp".to_vec()],
        last_resort: Vec::new(),
    });
    assert_error(&client.request(upload).await, ErrorCode::NotAuthenticated);
    let sync = Body::Sync(v1::Sync {});
    assert_error(&client.request(sync).await, ErrorCode::NotAuthenticated);
    assert_done(&client.register(&Account::new("alice")).await);
}

#[tokio::test]
async fn unauthenticated_connections_are_closed_after_the_handshake_timeout() {
    let server =
        TestServer::start_with(|c| c.limits.handshake_timeout = Duration::from_millis(200)).await;
    let mut client = server.connect().await;
    client.assert_closed_within(Duration::from_secs(5)).await;
}

// ------------------------------------------------------------ key packages

#[tokio::test]
async fn key_packages_are_claimed_once_then_last_resort() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let upload = Body::UploadKeyPackages(v1::UploadKeyPackages {
        key_packages: vec![b"kp1".to_vec(), b"kp2".to_vec()],
        last_resort: b"last".to_vec(),
    });
    assert_done(&alice.request(upload).await);

    let (mut bob, _) = server.registered("bob").await;
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let response = bob
            .request(Body::ClaimKeyPackages(v1::ClaimKeyPackages {
                username: "alice".into(),
                ..Default::default()
            }))
            .await;
        let Some(response::Result::KeyPackages(bundle)) = response.result else {
            panic!("{response:?}")
        };
        assert_eq!(bundle.devices.len(), 1);
        let device = bundle.devices[0].device.clone().unwrap();
        let cert: v1::DeviceCertificate =
            prost::Message::decode(device.certificate.as_slice()).unwrap();
        assert_eq!(cert.username, "alice");
        claimed.push(bundle.devices[0].key_package.clone());
    }
    assert_eq!(
        claimed,
        [b"kp1".to_vec(), b"kp2".to_vec(), b"last".to_vec()]
    );

    // Alice's pool went below the low-water mark: she is told.
    let frame = alice.next_frame().await;
    assert!(
        matches!(frame.body, Some(server_frame::Body::KeyPackagesLow(_))),
        "{frame:?}"
    );

    let unknown = bob
        .request(Body::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: "nobody".into(),
            ..Default::default()
        }))
        .await;
    let e = assert_error(&unknown, ErrorCode::UnknownUser);
    assert!(e.message.contains("nobody"));

    // A user that never uploaded anything has no KeyPackage at all.
    let _carol = server.registered("carol").await;
    let none = bob
        .request(Body::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: "carol".into(),
            ..Default::default()
        }))
        .await;
    assert_error(&none, ErrorCode::NoKeyPackage);
}

// ------------------------------------------------------------ delivery

#[tokio::test]
async fn offline_device_receives_on_connect_and_acked_is_not_redelivered() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let (bob_conn, bob) = server.registered("bob").await;
    drop(bob_conn);
    let group = create_group(&mut alice).await;

    let id = random_id();
    assert_done(
        &alice
            .request(send_message(&id, &group, &[&bob.device_id], b"hello bob"))
            .await,
    );

    let mut bob_conn = server.connect().await;
    assert!(matches!(
        bob_conn.login(&bob).await.result,
        Some(response::Result::LoggedIn(_))
    ));
    let delivery = bob_conn.next_delivery().await;
    assert_eq!(delivery.message_id, id);
    assert_eq!(unframed(&delivery.payload), b"hello bob");
    bob_conn.ack(&[delivery.seq]).await;
    assert!(bob_conn.sync().await.is_empty());
    drop(bob_conn);

    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    assert!(bob_conn.sync().await.is_empty());
    bob_conn.assert_quiet(QUIET).await;
}

#[tokio::test]
async fn unacknowledged_messages_are_redelivered_on_reconnect() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let (mut bob_conn, bob) = server.registered("bob").await;
    let group = create_group(&mut alice).await;

    let id = random_id();
    assert_done(
        &alice
            .request(send_message(&id, &group, &[&bob.device_id], b"one"))
            .await,
    );
    // Online: pushed at once.
    let first = bob_conn.next_delivery().await;
    assert_eq!(first.message_id, id);
    drop(bob_conn); // without acknowledging

    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    let again = bob_conn.next_delivery().await;
    assert_eq!((again.seq, again.message_id), (first.seq, id));
}

#[tokio::test]
async fn same_message_id_is_queued_once_and_payload_stored_once() {
    let server = TestServer::start().await;
    let (mut alice, alice_account) = server.registered("alice").await;
    let (bob_conn, bob) = server.registered("bob").await;
    let (carol_conn, carol) = server.registered("carol").await;
    drop((bob_conn, carol_conn));
    let group = create_group(&mut alice).await;

    let id = random_id();
    let recipients: [&[u8]; 3] = [&bob.device_id, &carol.device_id, &alice_account.device_id];
    assert_done(
        &alice
            .request(send_message(&id, &group, &recipients, b"to all"))
            .await,
    );
    assert_done(
        &alice
            .request(send_message(&id, &group, &recipients, b"to all"))
            .await,
    );

    let db = server.db();
    let payloads: i64 = db
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    let entries: i64 = db
        .query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!((payloads, entries), (1, 3));

    let delivered = alice.sync().await;
    assert_eq!(delivered.len(), 1);
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    assert_eq!(bob_conn.sync().await.len(), 1);
    let mut carol_conn = server.connect().await;
    carol_conn.login(&carol).await;
    assert_eq!(carol_conn.sync().await.len(), 1);

    // Every recipient acknowledged: the payload is gone.
    let payloads: i64 = db
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    let entries: i64 = db
        .query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!((payloads, entries), (0, 0));
}

#[tokio::test]
async fn sync_completes_after_pending_deliveries_are_acknowledged() {
    let server = TestServer::start_with(|c| c.limits.max_in_flight = 2).await;
    let (mut alice, _) = server.registered("alice").await;
    let (bob_conn, bob) = server.registered("bob").await;
    drop(bob_conn);
    let group = create_group(&mut alice).await;
    for i in 0..5u8 {
        assert_done(
            &alice
                .request(send_message(&random_id(), &group, &[&bob.device_id], &[i]))
                .await,
        );
    }

    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    // Only the window is pushed until something is acknowledged.
    let first = bob_conn.next_delivery().await;
    let second = bob_conn.next_delivery().await;
    bob_conn.assert_quiet(QUIET).await;
    bob_conn.ack(&[first.seq, second.seq]).await;
    // The rest arrives in order; SyncDone only after all are acknowledged.
    let rest = bob_conn.sync().await;
    let payloads: Vec<Vec<u8>> = rest.iter().map(|d| unframed(&d.payload)).collect();
    assert_eq!(payloads, [vec![2], vec![3], vec![4]]);
    assert!(rest.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// Acknowledgements sent in quick succession are coalesced into fewer store
/// writes (`session/delivery.rs`); none may be lost on the way. `SyncDone`
/// waits until every acknowledgement before it is committed, and a
/// connection that closes with some still waiting commits them: only what
/// was never acknowledged is delivered again.
#[tokio::test]
async fn coalesced_acknowledgements_are_all_committed() {
    let server = TestServer::start_with(|c| c.limits.max_in_flight = 1_000).await;
    let (mut alice, _) = server.registered("alice").await;
    let (bob_conn, bob) = server.registered("bob").await;
    drop(bob_conn);
    let group = create_group(&mut alice).await;
    let mailbox_rows = || -> i64 {
        server
            .db()
            .query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))
            .unwrap()
    };
    let total: u16 = 300;
    send_numbered(&mut alice, &group, &bob, total, &[]).await;

    // One Ack per delivery, as fast as they arrive: while one commits, the
    // next ones wait and are merged.
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    let mut numbers = Vec::new();
    for _ in 0..total {
        let delivery = bob_conn.next_delivery().await;
        bob_conn.ack(&[delivery.seq]).await;
        let body = unframed(&delivery.payload);
        numbers.push(u16::from_be_bytes([body[0], body[1]]));
    }
    assert_eq!(numbers, (0..total).collect::<Vec<_>>());
    assert!(bob_conn.sync().await.is_empty());
    assert_eq!(
        mailbox_rows(),
        0,
        "SyncDone came before every Ack committed"
    );
    drop(bob_conn);
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    assert!(
        bob_conn.sync().await.is_empty(),
        "acknowledged, yet redelivered"
    );

    // All but the last acknowledged, then the connection closes at once.
    let more: u16 = 50;
    send_numbered(&mut alice, &group, &bob, more, &[]).await;
    let mut deliveries = Vec::new();
    for _ in 0..more {
        deliveries.push(bob_conn.next_delivery().await);
    }
    let (unacked, acked) = deliveries.split_last().unwrap();
    for delivery in acked {
        bob_conn.ack(&[delivery.seq]).await;
    }
    drop(bob_conn);
    // The closed connection's acknowledgements commit after it is gone.
    for _ in 0..200 {
        if mailbox_rows() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mailbox_rows(),
        1,
        "acknowledgements lost when the connection closed"
    );
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    let again = bob_conn.sync().await;
    assert_eq!(
        again.iter().map(|d| d.seq).collect::<Vec<_>>(),
        [unacked.seq],
        "only the unacknowledged entry comes again"
    );
}

/// Sends `total` messages to `to`, each starting with its number (two bytes,
/// big-endian) followed by `filler`.
async fn send_numbered(from: &mut Client, group: &[u8], to: &Account, total: u16, filler: &[u8]) {
    for i in 0..total {
        let mut payload = i.to_be_bytes().to_vec();
        payload.extend_from_slice(filler);
        assert_done(
            &from
                .request(send_message(
                    &random_id(),
                    group,
                    &[&to.device_id],
                    &payload,
                ))
                .await,
        );
    }
}

/// Reads and acknowledges `total` deliveries one at a time (no `Sync`),
/// returning the numbers `send_numbered` put in front of them.
async fn receive_numbered(conn: &mut Client, total: u16) -> Vec<u16> {
    let mut seen = Vec::new();
    while seen.len() < usize::from(total) {
        let delivery = conn.next_delivery().await;
        conn.ack(&[delivery.seq]).await;
        let body = unframed(&delivery.payload);
        seen.push(u16::from_be_bytes([body[0], body[1]]));
    }
    seen
}

/// An online device gets new messages pushed without asking; when its window
/// is full the rest comes from storage, still in order and exactly once.
#[tokio::test]
async fn online_device_gets_every_message_in_order_even_when_it_falls_behind() {
    let server = TestServer::start_with(|c| c.limits.max_in_flight = 4).await;
    let (mut alice, _) = server.registered("alice").await;
    let (mut bob_conn, bob) = server.registered("bob").await;
    let group = create_group(&mut alice).await;
    let first = b"first".to_vec();
    assert_done(
        &alice
            .request(send_message(
                &random_id(),
                &group,
                &[&bob.device_id],
                &first,
            ))
            .await,
    );
    let pushed = bob_conn.next_delivery().await;
    assert_eq!(unframed(&pushed.payload), first, "pushed without a Sync");
    bob_conn.ack(&[pushed.seq]).await;

    // Bob stops reading while far more arrives than his window holds.
    let total: u16 = 400;
    send_numbered(&mut alice, &group, &bob, total, &[]).await;
    let seen = receive_numbered(&mut bob_conn, total).await;
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
    bob_conn.assert_quiet(QUIET).await;
}

/// A backlog many windows long goes out a page at a time (each page's
/// frames written with one flush, pages larger than the write buffer). A
/// device that drops its connection in the middle of the drain gets, on
/// the next one, everything it did not acknowledge, in order, and nothing
/// it did.
#[tokio::test]
async fn a_backlog_of_many_windows_is_drained_in_order_across_a_reconnect() {
    let server = TestServer::start_with(|c| c.limits.max_in_flight = 8).await;
    let (mut alice, _) = server.registered("alice").await;
    let (bob_conn, bob) = server.registered("bob").await;
    drop(bob_conn);
    let group = create_group(&mut alice).await;
    let mailbox_rows = || -> i64 {
        server
            .db()
            .query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))
            .unwrap()
    };
    let number = |d: &v1::Delivery| {
        let body = unframed(&d.payload);
        u16::from_be_bytes([body[0], body[1]])
    };
    // 3 KB each: a page of 8 is more than the 4 KiB write buffer.
    let total: u16 = 100;
    send_numbered(&mut alice, &group, &bob, total, &[0x33; 3_000]).await;

    // Read 22, acknowledging four at a time in one Ack; the last two stay
    // unacknowledged when the connection goes away.
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    let mut seen = Vec::new();
    let mut unacked = Vec::new();
    while seen.len() < 22 {
        let delivery = bob_conn.next_delivery().await;
        seen.push(number(&delivery));
        unacked.push(delivery.seq);
        if unacked.len() == 4 {
            bob_conn.ack(&std::mem::take(&mut unacked)).await;
        }
    }
    assert_eq!(seen, (0..22).collect::<Vec<_>>());
    drop(bob_conn);
    // The closed connection's acknowledgements commit after it is gone.
    for _ in 0..200 {
        if mailbox_rows() == i64::from(total) - 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mailbox_rows(), i64::from(total) - 20);

    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    let rest: Vec<u16> = bob_conn.sync().await.iter().map(number).collect();
    assert_eq!(
        rest,
        (20..total).collect::<Vec<_>>(),
        "the unacknowledged two again, then the rest, in order, once"
    );
    assert_eq!(mailbox_rows(), 0, "SyncDone before the acknowledgements");
    drop(bob_conn);
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    assert!(
        bob_conn.sync().await.is_empty(),
        "acknowledged, yet redelivered"
    );
}

/// A device that stops reading blocks its connection on a full socket; the
/// hub then drops that connection's events and flags it. Nothing is lost:
/// once it reads again, everything arrives in order and exactly once.
#[tokio::test]
async fn a_stalled_connection_loses_nothing_when_its_pushes_are_dropped() {
    let server = TestServer::start_with(|c| c.limits.max_in_flight = 100_000).await;
    let (mut alice, _) = server.registered("alice").await;
    let (mut bob_conn, bob) = server.registered("bob").await;
    let group = create_group(&mut alice).await;
    // ~30 MB: more than loopback socket buffers hold, so the server's writes
    // to Bob block while the hub keeps handing his connection new entries.
    let total: u16 = 600;
    send_numbered(&mut alice, &group, &bob, total, &[0x5a; 48 * 1024]).await;
    let seen = receive_numbered(&mut bob_conn, total).await;
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
    bob_conn.assert_quiet(QUIET).await;
}

#[tokio::test]
async fn queued_messages_survive_a_restart() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let (bob_conn, bob) = server.registered("bob").await;
    drop(bob_conn);
    let group = create_group(&mut alice).await;
    let id = random_id();
    assert_done(
        &alice
            .request(send_message(&id, &group, &[&bob.device_id], b"durable"))
            .await,
    );
    drop(alice);

    let server = server.restart().await;
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    let delivered = bob_conn.sync().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (
            delivered[0].message_id.clone(),
            unframed(&delivered[0].payload)
        ),
        (id, b"durable".to_vec())
    );
    server.stop().await;
}

#[tokio::test]
async fn send_validation_errors_keep_the_connection_open() {
    let server = TestServer::start().await;
    let (mut alice, account) = server.registered("alice").await;

    // Malformed bytes.
    alice.send_raw(vec![0xff, 0xff, 0xff, 0xff]).await;
    let response = alice.response_to(0).await;
    assert_error(&response, ErrorCode::MalformedFrame);

    let group = create_group(&mut alice).await;
    let me: &[u8] = &account.device_id;
    let too_big = vec![0u8; sotto_proto::MAX_PAYLOAD_BYTES + 1];
    let e = assert_error(
        &alice
            .request(send_message(&random_id(), &group, &[me], &too_big))
            .await,
        ErrorCode::TooLarge,
    );
    assert!(
        e.message.contains(&format!(
            "the limit is {} bytes",
            sotto_proto::MAX_PAYLOAD_BYTES
        )),
        "{}",
        e.message
    );

    let unknown_group = random_id();
    let e = assert_error(
        &alice
            .request(send_message(&random_id(), &unknown_group, &[me], b"x"))
            .await,
        ErrorCode::UnknownGroup,
    );
    assert_eq!(
        e.message,
        format!("unknown group {}", hex::encode(&unknown_group))
    );

    let stranger = random_id();
    let e = assert_error(
        &alice
            .request(send_message(&random_id(), &group, &[&stranger], b"x"))
            .await,
        ErrorCode::UnknownDevice,
    );
    assert!(e.message.contains(&hex::encode(&stranger)));

    assert_error(
        &alice
            .request(send_message(&[1, 2, 3], &group, &[me], b"x"))
            .await,
        ErrorCode::InvalidRequest,
    );
    assert_error(
        &alice
            .request(send_message(&random_id(), &group, &[], b"x"))
            .await,
        ErrorCode::InvalidRequest,
    );

    // Nothing of the refused messages was queued; a good send still works.
    assert_done(
        &alice
            .request(send_message(&random_id(), &group, &[me], b"fine"))
            .await,
    );
    let delivered = alice.sync().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(unframed(&delivered[0].payload), b"fine");
}

// ------------------------------------------------------------ commits

#[tokio::test]
async fn one_commit_wins_each_epoch_and_only_its_welcome_is_delivered() {
    let server = TestServer::start().await;
    let (mut alice, alice_account) = server.registered("alice").await;
    let (mut bob, bob_account) = server.registered("bob").await;
    let (carol_conn, carol) = server.registered("carol").await;
    drop(carol_conn);
    let group = create_group(&mut alice).await;

    let with_welcome = |payload: &[u8], welcome: &[u8], welcome_id: &[u8]| {
        let recipients: [&[u8]; 2] = [&alice_account.device_id, &bob_account.device_id];
        Body::SubmitCommit(v1::SubmitCommit {
            welcome_message_id: welcome_id.to_vec(),
            welcome_recipients: vec![carol.device_id.clone()],
            welcome: sotto_testkit::wire::welcome(welcome),
            ..commit(&random_id(), &group, 1, &recipients, payload)
        })
    };
    let (winner_welcome, loser_welcome) = (random_id(), random_id());
    assert_done(
        &alice
            .request(with_welcome(
                b"alice's commit",
                b"welcome from alice",
                &winner_welcome,
            ))
            .await,
    );
    let stale = bob
        .request(with_welcome(
            b"bob's commit",
            b"welcome from bob",
            &loser_welcome,
        ))
        .await;
    let e = assert_error(&stale, ErrorCode::StaleEpoch);
    assert_eq!(e.current_epoch, 2);
    assert_eq!(
        e.message,
        "commit for epoch 1 rejected: group is at epoch 2; process pending messages and retry"
    );

    // Bob sees the winning commit; Carol only the winner's Welcome.
    let to_bob = bob.sync().await;
    assert_eq!(
        to_bob
            .iter()
            .map(|d| unframed(&d.payload))
            .collect::<Vec<_>>(),
        [b"alice's commit".to_vec()]
    );
    let mut carol_conn = server.connect().await;
    carol_conn.login(&carol).await;
    let to_carol = carol_conn.sync().await;
    assert_eq!(to_carol.len(), 1);
    assert_eq!(
        (
            to_carol[0].message_id.clone(),
            unframed(&to_carol[0].payload)
        ),
        (winner_welcome, b"welcome from alice".to_vec())
    );

    // The next epoch is open again, and an unknown group needs epoch 0.
    let next = commit(&random_id(), &group, 2, &[], b"epoch 2");
    assert_done(&bob.request(Body::SubmitCommit(next.clone())).await);
    // Resending the accepted commit is idempotent.
    assert_done(&bob.request(Body::SubmitCommit(next)).await);
    let orphan = commit(&random_id(), &random_id(), 5, &[], b"x");
    assert_error(
        &bob.request(Body::SubmitCommit(orphan)).await,
        ErrorCode::UnknownGroup,
    );
}

// ------------------------------------------------------------ transport

#[tokio::test]
async fn text_frames_are_malformed_and_health_answers() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    alice.send_text("hello").await;
    assert_error(&alice.response_to(0).await, ErrorCode::MalformedFrame);
    assert!(alice.sync().await.is_empty());

    let body = http_get(server.addr(), "/health").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("ok"), "{body}");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server =
        TestServer::start_with(|c| c.limits.idle_timeout = Duration::from_millis(300)).await;
    let (mut alice, _) = server.registered("alice").await;
    alice.assert_closed_within(Duration::from_secs(5)).await;
}

/// Browsers cannot send WebSocket pings, so the web client keeps its
/// connection with an `Ack` of nothing: that must count as activity, and
/// must get no answer (no frame, no error) however often it comes.
#[tokio::test]
async fn an_empty_ack_keeps_an_idle_connection_open() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start_with(|c| c.limits.idle_timeout = idle).await;
    let (mut alice, _) = server.registered("alice").await;
    for _ in 0..8 {
        alice.ack(&[]).await;
        alice.assert_quiet(idle / 2).await;
    }
    // Four idle timeouts later the connection still works...
    assert!(alice.sync().await.is_empty());
    // ...and without the keep-alive it is closed as usual.
    alice.assert_closed_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn oversized_frames_close_only_that_connection() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let (mut bob, _) = server.registered("bob").await;
    bob.send_raw(vec![0; sotto_proto::MAX_FRAME_BYTES + 1])
        .await;
    bob.assert_closed_within(Duration::from_secs(5)).await;
    assert!(alice.sync().await.is_empty());
}

#[tokio::test]
async fn concurrent_senders_are_all_stored_and_delivered() {
    let server = TestServer::start().await;
    let (bob_conn, bob) = server.registered("bob").await;
    drop(bob_conn);
    let (mut creator, _) = server.registered("creator").await;
    let group = create_group(&mut creator).await;

    let mut senders = Vec::new();
    for i in 0..8 {
        let (mut client, _) = server.registered(&format!("sender{i}")).await;
        let (group, bob_device) = (group.clone(), bob.device_id.clone());
        senders.push(tokio::spawn(async move {
            for j in 0..5u8 {
                let send = send_message(&random_id(), &group, &[&bob_device], &[i, j]);
                assert_done(&client.request(send).await);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut bob_conn = server.connect().await;
    bob_conn.login(&bob).await;
    assert_eq!(bob_conn.sync().await.len(), 40);
}

/// Typing indicators: an ephemeral send needs the capability like any
/// other, reaches only connections open now, is stored nowhere, and gets
/// the same answer whether anyone was online.
#[tokio::test]
async fn ephemeral_sends_reach_only_open_connections_and_need_the_capability() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let (mut bob_conn, bob) = server.registered("bob").await;
    let (carol_conn, carol) = server.registered("carol").await;
    drop(carol_conn);
    let group = create_group(&mut alice).await;
    let ephemeral = |to: &[u8]| -> v1::SendMessage {
        let Body::SendMessage(mut m) = send_message(&random_id(), &group, &[to], b"typing") else {
            unreachable!()
        };
        m.ephemeral = true;
        m
    };
    let stored = || -> i64 {
        server
            .db()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap()
    };
    let before = stored();

    let online = alice
        .request(Body::SendMessage(ephemeral(&bob.device_id)))
        .await;
    let offline = alice
        .request(Body::SendMessage(ephemeral(&carol.device_id)))
        .await;
    assert_done(&online);
    assert_eq!(
        online.result, offline.result,
        "the answer tells who is online"
    );
    let pushed = bob_conn.next_delivery().await;
    assert_eq!(
        (pushed.seq, unframed(&pushed.payload)),
        (0, b"typing".to_vec())
    );
    bob_conn.ack(&[pushed.seq]).await;
    assert!(bob_conn.sync().await.is_empty());
    assert_eq!(stored(), before, "an ephemeral send was stored");

    // Carol, offline then, never gets hers.
    let mut carol_conn = server.connect().await;
    carol_conn.login(&carol).await;
    assert!(carol_conn.sync().await.is_empty());

    // Without the group's capability, or for another epoch: refused.
    let mut forged = ephemeral(&bob.device_id);
    forged.send_token = vec![9; 32];
    assert_error(
        &alice.request(Body::SendMessage(forged)).await,
        ErrorCode::NotAuthorized,
    );
    let Body::SendMessage(mut later) =
        send_message_at(2, &random_id(), &group, &[&bob.device_id], b"typing")
    else {
        unreachable!()
    };
    later.ephemeral = true;
    assert!(
        alice
            .request(Body::SendMessage(later))
            .await
            .result
            .is_some()
    );
    bob_conn.assert_quiet(QUIET).await;
}
