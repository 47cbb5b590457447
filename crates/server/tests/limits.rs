//! Every limit and rate limit, hit on purpose: each answers with an error
//! that says what happened (and when to retry), and the server keeps serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sotto_proto::missed_notice;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body};
use sotto_server::RegistrationPolicy;
use sotto_server::config::Rate;
use sotto_server::store::{AdminStore as _, SqliteStore, invite_hash, new_invite_code};
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SLOW: Rate = Rate {
    per_second: 0.01,
    burst: 2.0,
};

fn register_with_invite(account: &Account, nonce: &[u8], code: &str) -> Body {
    let Body::Register(mut register) = account.register(nonce) else {
        unreachable!()
    };
    register.invite_code = code.to_owned();
    Body::Register(register)
}

#[tokio::test]
async fn registration_policies_open_invite_and_closed() {
    let closed = TestServer::start_with(|c| c.registration = RegistrationPolicy::Closed).await;
    let mut client = closed.connect().await;
    let err = assert_error(
        &client.register(&Account::new("alice")).await,
        ErrorCode::RegistrationClosed,
    );
    assert!(
        err.message.contains("does not accept new accounts"),
        "{}",
        err.message
    );

    let invite_only = TestServer::start_with(|c| c.registration = RegistrationPolicy::Invite).await;
    let mut client = invite_only.connect().await;
    let alice = Account::new("alice");
    let err = assert_error(
        &client.register(&alice).await,
        ErrorCode::RegistrationClosed,
    );
    assert!(
        err.message.contains("needs an invite code"),
        "{}",
        err.message
    );
    let err = assert_error(
        &client
            .request(register_with_invite(&alice, &client.nonce.clone(), "0123"))
            .await,
        ErrorCode::RegistrationClosed,
    );
    assert!(
        err.message.contains("unknown or was already used"),
        "{}",
        err.message
    );

    // As `sotto-server invite create` does while the server runs: through
    // the store's admin role, on the same database.
    let codes = [new_invite_code()];
    let admin = SqliteStore::open_existing(invite_only.data_dir()).unwrap();
    admin
        .add_invites(codes.iter().map(|c| invite_hash(c)).collect(), 20_000)
        .await
        .unwrap();
    admin.close().await;
    let nonce = client.nonce.clone();
    assert_done(
        &client
            .request(register_with_invite(&alice, &nonce, &codes[0]))
            .await,
    );
    // One use only.
    let mut other = invite_only.connect().await;
    let nonce = other.nonce.clone();
    let err = assert_error(
        &other
            .request(register_with_invite(
                &Account::new("bob"),
                &nonce,
                &codes[0],
            ))
            .await,
        ErrorCode::RegistrationClosed,
    );
    assert!(err.message.contains("already used"), "{}", err.message);
    // Only the code's hash is stored.
    let stored: Vec<u8> = invite_only
        .db()
        .query_row("SELECT code_hash FROM invites", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, codes[0].as_bytes());
}

#[tokio::test]
async fn registrations_are_rate_limited_per_address() {
    let server = TestServer::start_with(|c| c.limits.registrations_per_address = SLOW).await;
    server.registered("alice").await;
    server.registered("bob").await;
    let mut third = server.connect().await;
    let err = assert_error(
        &third.register(&Account::new("carol")).await,
        ErrorCode::RateLimited,
    );
    assert!(
        err.retry_after_ms > 0 && err.message.contains("registrations"),
        "{err:?}"
    );
}

#[tokio::test]
async fn link_attempts_and_log_requests_are_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.limits.link_attempts_per_address = SLOW;
        c.limits.log_requests_per_connection = SLOW;
    })
    .await;
    let mut guesser = server.connect().await;
    let join = || {
        Body::JoinLink(v1::JoinLink {
            link_id: random_id(),
            sealed_request: b"guess".to_vec(),
        })
    };
    for _ in 0..2 {
        assert_error(&guesser.request(join()).await, ErrorCode::UnknownLink);
    }
    let err = assert_error(&guesser.request(join()).await, ErrorCode::RateLimited);
    assert!(
        err.message.contains("device-link attempts"),
        "{}",
        err.message
    );

    let mut reader = server.connect().await;
    for _ in 0..2 {
        let response = reader.request(Body::GetLogHead(v1::GetLogHead {})).await;
        assert!(matches!(
            response.result,
            Some(v1::response::Result::LogHead(_))
        ));
    }
    let err = assert_error(
        &reader.request(Body::GetLogHead(v1::GetLogHead {})).await,
        ErrorCode::RateLimited,
    );
    assert!(err.message.contains("key-log requests"), "{}", err.message);
}

/// The devices a successful send skipped because their mailbox was full.
#[track_caller]
fn skipped(response: &v1::Response) -> Vec<Vec<u8>> {
    match &response.result {
        Some(v1::response::Result::Done(done)) => done.skipped_recipients.clone(),
        other => panic!("expected Done, got {other:?}"),
    }
}

/// An outsider fills a member's mailbox with garbage from a group of its
/// own: the member's groups keep working. Messages and commits are stored
/// for everyone else, the response names exactly the skipped device, the
/// full mailbox does not grow, and the device finds out what it missed, in
/// order, once it drains.
#[tokio::test]
async fn a_full_mailbox_skips_only_its_device() {
    let server = TestServer::start_with(|c| c.limits.max_mailbox_entries = 2).await;
    let (bob, bob_account) = server.registered("bob").await;
    drop(bob);
    let (mut carol, carol_account) = server.registered("carol").await;
    let (mut alice, alice_account) = server.registered("alice").await;
    let bob_id: &[u8] = &bob_account.device_id;

    // The outsider: an anonymous connection and a group of its own.
    let mut mallory = server.connect().await;
    let garbage = create_group(&mut mallory).await;
    for _ in 0..2 {
        let sent = mallory
            .request(send_message(&random_id(), &garbage, &[bob_id], b"junk"))
            .await;
        assert!(skipped(&sent).is_empty());
    }
    let sent = mallory
        .request(send_message(&random_id(), &garbage, &[bob_id], b"junk"))
        .await;
    assert_eq!(
        skipped(&sent),
        [bob_id.to_vec()],
        "a full mailbox is skipped, not refused"
    );

    // The victim's group: a message reaches everyone else.
    let group = create_group(&mut alice).await;
    let members: &[&[u8]] = &[&alice_account.device_id, bob_id, &carol_account.device_id];
    let sent = alice
        .request(send_message(&random_id(), &group, members, b"hello"))
        .await;
    assert_eq!(
        skipped(&sent),
        [bob_id.to_vec()],
        "exactly the full device is named"
    );
    // (Alice's own copy, acknowledged unread as a real client does.)
    alice.sync().await;
    let delivered = carol.sync().await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(unframed(&delivered[0].payload), b"hello");

    // A commit is never refused because a recipient is full, and the group
    // moves on.
    let sent = alice
        .request(Body::SubmitCommit(commit(
            &random_id(),
            &group,
            1,
            members,
            b"commit",
        )))
        .await;
    assert_eq!(skipped(&sent), [bob_id.to_vec()]);
    alice.sync().await;
    let sent = alice
        .request(send_message_at(2, &random_id(), &group, members, b"after"))
        .await;
    assert_eq!(skipped(&sent), [bob_id.to_vec()]);
    let delivered = carol.sync().await;
    assert_eq!(
        delivered
            .iter()
            .map(|d| unframed(&d.payload))
            .collect::<Vec<_>>(),
        [b"commit".to_vec(), b"after".to_vec()]
    );

    // Bob drains: his two messages, then what he missed, in order; the
    // mailbox did not grow past the cap.
    let mut bob = server.connect().await;
    bob.login(&bob_account).await;
    let delivered = bob.sync().await;
    let (notices, messages): (Vec<_>, Vec<_>) = delivered
        .iter()
        .partition(|d| missed_notice::parse(&d.payload).is_some());
    assert_eq!(messages.len(), 2, "the cap held");
    assert!(
        delivered[..2]
            .iter()
            .all(|d| missed_notice::parse(&d.payload).is_none())
    );
    let notices: Vec<v1::MissedMessages> = notices
        .iter()
        .filter_map(|d| missed_notice::parse(&d.payload))
        .collect();
    assert_eq!(
        notices,
        [
            v1::MissedMessages {
                group_id: garbage.clone(),
                messages: 1,
                commits: 0,
                welcomes: 0
            },
            v1::MissedMessages {
                group_id: group.clone(),
                messages: 1,
                commits: 0,
                welcomes: 0
            },
            v1::MissedMessages {
                group_id: group.clone(),
                messages: 1,
                commits: 1,
                welcomes: 0
            },
        ]
    );

    // Drained, bob gets messages again.
    let sent = alice
        .request(send_message_at(2, &random_id(), &group, members, b"again"))
        .await;
    assert!(skipped(&sent).is_empty());
    assert_eq!(unframed(&bob.next_delivery().await.payload), b"again");
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_address = 2).await;
    let _a = server.connect().await;
    let _b = server.connect().await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr())).await;
    let err = refused.expect_err("a third connection from one address");
    assert!(err.to_string().contains("429"), "{err}");
    drop(_a);
    // Freed when one closes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _c = server.connect().await;
}

#[tokio::test]
async fn browser_origins_must_be_allowed() {
    let server =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://chat.example.org".into()])
            .await;
    let with_origin = |origin: &str| {
        let mut request = format!("ws://{}/ws", server.addr())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    let err = tokio_tungstenite::connect_async(with_origin("https://evil.example"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("403"), "{err}");
    tokio_tungstenite::connect_async(with_origin("https://chat.example.org"))
        .await
        .unwrap();
    tokio_tungstenite::connect_async(with_origin(&format!("http://{}", server.addr())))
        .await
        .unwrap();
    // Native clients send no Origin.
    server.connect().await;
}

/// Every device is a log entry each contact downloads: an account cannot
/// bloat its log (and so everyone's lookups of it) at will.
#[tokio::test]
async fn adding_devices_is_rate_limited_and_capped() {
    let server = TestServer::start_with(|c| {
        c.limits.devices_added_per_account = Rate {
            per_second: 0.001,
            burst: 1.0,
        };
    })
    .await;
    let (mut alice, account) = server.registered("alice").await;
    let (first, second) = (account.another_device(), account.another_device());
    assert_done(&alice.request(account.add_device(&first, 2)).await);
    let err = assert_error(
        &alice.request(account.add_device(&second, 3)).await,
        ErrorCode::RateLimited,
    );
    assert!(
        err.message.contains("devices added to this account"),
        "{err:?}"
    );

    let server = TestServer::start_with(|c| c.limits.max_devices_per_account = 2).await;
    let (mut bob, account) = server.registered("bob").await;
    let (first, second) = (account.another_device(), account.another_device());
    assert_done(&bob.request(account.add_device(&first, 2)).await);
    let err = assert_error(
        &bob.request(account.add_device(&second, 3)).await,
        ErrorCode::TooLarge,
    );
    assert!(err.message.contains("remove one"), "{err:?}");
    // Removing one makes room again.
    assert_done(
        &bob.request(account.remove_device(&first.device_id, 3))
            .await,
    );
    assert_done(&bob.request(account.add_device(&second, 4)).await);
}

/// Creating a group needs no capability and no account, so it is rate
/// limited per connection and per address.
#[tokio::test]
async fn creating_groups_is_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.limits.groups_created_per_connection = Rate {
            per_second: 0.001,
            burst: 2.0,
        };
        c.limits.groups_created_per_address = Rate {
            per_second: 0.001,
            burst: 3.0,
        };
    })
    .await;
    let create = || Body::SubmitCommit(commit(&random_id(), &random_id(), 0, &[], b"c"));
    let mut first = server.connect().await;
    assert_done(&first.request(create()).await);
    assert_done(&first.request(create()).await);
    let err = assert_error(&first.request(create()).await, ErrorCode::RateLimited);
    assert!(
        err.message.contains("new groups on this connection"),
        "{err:?}"
    );
    // A new connection has its own bucket, but the address has one left.
    let mut second = server.connect().await;
    assert_done(&second.request(create()).await);
    let err = assert_error(&second.request(create()).await, ErrorCode::RateLimited);
    assert!(
        err.message.contains("new groups from your address"),
        "{err:?}"
    );
}

fn claim(username: &str) -> Body {
    Body::ClaimKeyPackages(v1::ClaimKeyPackages {
        username: username.into(),
        device_ids: Vec::new(),
    })
}

/// The KeyPackages a claim handed out.
fn claimed(response: &v1::Response) -> Vec<Vec<u8>> {
    match &response.result {
        Some(v1::response::Result::KeyPackages(bundle)) => bundle
            .devices
            .iter()
            .map(|d| d.key_package.clone())
            .collect(),
        other => panic!("expected KeyPackages, got {other:?}"),
    }
}

/// A flood of claims against one account neither drains its pool nor
/// stops anyone from adding it: beyond the account's claim rate, claims get
/// its reusable last-resort KeyPackage and take nothing, and its devices
/// are not told about them. The claimer's own limits still refuse.
#[tokio::test]
async fn a_claim_flood_neither_drains_a_pool_nor_stops_adds() {
    let server = TestServer::start_with(|c| {
        c.limits.claims_per_target = SLOW;
        c.limits.claims_per_connection = Rate {
            per_second: 0.001,
            burst: 22.0,
        };
    })
    .await;
    let (mut bob, _) = server.registered("bob").await;
    assert_done(
        &bob.request(Body::UploadKeyPackages(v1::UploadKeyPackages {
            key_packages: vec![b"kp-1".to_vec(), b"kp-2".to_vec(), b"kp-3".to_vec()],
            last_resort: b"kp-last".to_vec(),
        }))
        .await,
    );

    let mut mallory = server.connect().await;
    // Within bob's rate (a burst of 2): one-time KeyPackages.
    for expected in [b"kp-1", b"kp-2"] {
        assert_eq!(claimed(&mallory.request(claim("bob")).await), [expected]);
    }
    // Beyond it: the last-resort one, as often as asked.
    for _ in 0..20 {
        assert_eq!(claimed(&mallory.request(claim("bob")).await), [b"kp-last"]);
    }
    // The claimer's own bucket (here the connection's) still refuses.
    let err = assert_error(&mallory.request(claim("bob")).await, ErrorCode::RateLimited);
    assert!(err.message.contains("on this connection"), "{err:?}");

    // Alice can still add bob, and one of his one-time KeyPackages is left.
    let mut alice = server.connect().await;
    assert_eq!(claimed(&alice.request(claim("bob")).await), [b"kp-last"]);
    let left: i64 = server
        .db()
        .query_row("SELECT count(*) FROM key_packages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
    // Bob heard of the two claims that took from his pool, not the flood.
    for remaining in [2, 1] {
        match bob.next_frame().await.body {
            Some(v1::server_frame::Body::KeyPackagesLow(low)) => {
                assert_eq!(low.remaining, remaining);
            }
            other => panic!("expected KeyPackagesLow, got {other:?}"),
        }
    }
    bob.assert_quiet(std::time::Duration::from_millis(300))
        .await;
}

/// Every connection that has not logged in has a handshake deadline, also
/// one that only reads the key log (or sends anonymously): each such
/// request renews it, pings do not. So a connection cannot take a slot for
/// free, while the anonymous connection lives as long as it works; logged-in
/// connections are unaffected.
#[tokio::test]
async fn connections_that_never_log_in_have_a_handshake_deadline() {
    use std::time::Duration;
    let server =
        TestServer::start_with(|c| c.limits.handshake_timeout = Duration::from_millis(300)).await;
    let head = || Body::GetLogHead(v1::GetLogHead {});
    let (mut alice, _) = server.registered("alice").await;

    // A log reader that keeps asking stays open well past the deadline.
    let mut reader = server.connect().await;
    for _ in 0..8 {
        let response = reader.request(head()).await;
        assert!(
            matches!(response.result, Some(v1::response::Result::LogHead(_))),
            "{response:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once it stops, pinging does not keep it.
    assert!(
        reader
            .pings_until_closed(Duration::from_millis(50), Duration::from_secs(5))
            .await,
        "an idle log reader keeps its connection"
    );

    // One that read the log once, then only pings, is closed too.
    let mut once = server.connect().await;
    once.request(head()).await;
    assert!(
        once.pings_until_closed(Duration::from_millis(50), Duration::from_secs(5))
            .await
    );

    // A logged-in connection is not held to it.
    alice.assert_quiet(Duration::from_millis(600)).await;
    let response = alice.request(head()).await;
    assert!(matches!(
        response.result,
        Some(v1::response::Result::LogHead(_))
    ));
}

/// Recipients must be devices the server knows: a send or a commit naming
/// a device id no account has is refused whole (nothing stored, no mailbox
/// made, the epoch still free), so nobody with a group's capability can
/// make the server keep mailboxes for invented devices. A removed device is
/// skipped rather than refused, with nothing queued for it: the commit that
/// removes it from its groups still names it, and refusing would block
/// every removal. The real recipient keeps getting everything.
#[tokio::test]
async fn recipients_must_be_registered_devices() {
    let server = TestServer::start().await;
    let (mut bob, bob_account) = server.registered("bob").await;
    let (mut alice, alice_account) = server.registered("alice").await;
    let laptop = alice_account.another_device();
    assert_done(&alice.request(alice_account.add_device(&laptop, 2)).await);
    assert_done(
        &alice
            .request(alice_account.remove_device(&laptop.device_id, 3))
            .await,
    );
    let group = create_group(&mut alice).await;
    let bob_device = bob_account.device_id.as_slice();
    let invented: Vec<Vec<u8>> = (1..sotto_proto::MAX_RECIPIENTS)
        .map(|_| random_id())
        .collect();
    let mut many: Vec<&[u8]> = invented.iter().map(Vec::as_slice).collect();
    many.push(bob_device);

    let err = assert_error(
        &alice
            .request(send_message(&random_id(), &group, &many, b"m"))
            .await,
        ErrorCode::UnknownDevice,
    );
    assert!(err.message.contains("nothing was sent"), "{}", err.message);
    let one_invented: &[&[u8]] = &[bob_device, &invented[0]];
    assert_error(
        &alice
            .request(Body::SubmitCommit(commit(
                &random_id(),
                &group,
                1,
                one_invented,
                b"c",
            )))
            .await,
        ErrorCode::UnknownDevice,
    );
    let mut invented_welcome = commit(&random_id(), &group, 1, &[bob_device], b"c");
    invented_welcome.welcome_message_id = random_id();
    invented_welcome.welcome_recipients = vec![invented[1].clone()];
    invented_welcome.welcome = welcome(b"w");
    assert_error(
        &alice.request(Body::SubmitCommit(invented_welcome)).await,
        ErrorCode::UnknownDevice,
    );
    let stored: i64 = server
        .db()
        .query_row(
            "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM mailbox)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0, "a refused request stores nothing");

    // The epoch is still free for an honest commit; the removed device is
    // skipped, and Bob gets both.
    let with_removed: &[&[u8]] = &[bob_device, &laptop.device_id];
    assert_done(
        &alice
            .request(Body::SubmitCommit(commit(
                &random_id(),
                &group,
                1,
                with_removed,
                b"c",
            )))
            .await,
    );
    assert_done(
        &alice
            .request(send_message_at(
                2,
                &random_id(),
                &group,
                with_removed,
                b"hi",
            ))
            .await,
    );
    let queued_for_removed: i64 = server
        .db()
        .query_row(
            "SELECT count(*) FROM mailbox WHERE device_num = \
             (SELECT num FROM devices WHERE device_id = ?1)",
            [&laptop.device_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(queued_for_removed, 0);
    let delivered = bob.sync().await;
    assert_eq!(
        delivered
            .iter()
            .map(|d| unframed(&d.payload))
            .collect::<Vec<_>>(),
        [b"c".to_vec(), b"hi".to_vec()]
    );
}
