//! Sealed sender: sends are authorised by the group's capability, not by who
//! sends them, may come over a connection that never logged in, and are
//! held back by rate limits instead of identity.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sotto_proto::v1::{self, ErrorCode, client_frame::Body};
use sotto_server::config::Rate;
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;

#[tokio::test]
async fn an_anonymous_connection_sends_with_the_capability() {
    let server = TestServer::start().await;
    let (mut bob, bob_account) = server.registered("bob").await;
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await;

    // A connection that never logged in: the server cannot tell who sends.
    let mut anonymous = server.connect().await;
    assert_done(
        &anonymous
            .request(send_message(
                &random_id(),
                &group,
                &[&bob_account.device_id],
                b"sealed",
            ))
            .await,
    );
    let delivery = bob.next_delivery().await;
    assert_eq!(unframed(&delivery.payload), b"sealed");

    // Stored messages carry no sender: the messages table has no such column,
    // and the payload row is only the payload.
    let columns: Vec<String> = server
        .db()
        .prepare("SELECT name FROM pragma_table_info('messages')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        columns
            .iter()
            .all(|c| !c.contains("sender") && !c.contains("device") && !c.contains("user")),
        "{columns:?}"
    );
}

#[tokio::test]
async fn a_send_without_the_groups_capability_is_refused() {
    let server = TestServer::start().await;
    let (_bob, bob_account) = server.registered("bob").await;
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await;
    let mut anonymous = server.connect().await;
    let to_bob: &[&[u8]] = &[&bob_account.device_id];

    let mut no_token = v1::SendMessage {
        message_id: random_id(),
        group_id: group.clone(),
        recipients: vec![bob_account.device_id.clone()],
        payload: framed(
            &group,
            1,
            sotto_proto::mls_framing::ContentType::Application,
            b"x",
        ),
        send_token: Vec::new(),
        more_recipients: false,
        expires_at: 0,
        ephemeral: false,
    };
    assert_error(
        &anonymous.request(Body::SendMessage(no_token.clone())).await,
        ErrorCode::NotAuthorized,
    );
    no_token.send_token = capability(b"another group", 1);
    assert_error(
        &anonymous.request(Body::SendMessage(no_token)).await,
        ErrorCode::NotAuthorized,
    );

    // Two commits later, the epoch-1 capability has expired; the current and
    // previous ones work.
    for epoch in 1..=2 {
        assert_done(
            &alice
                .request(Body::SubmitCommit(commit(
                    &random_id(),
                    &group,
                    epoch,
                    &[],
                    b"c",
                )))
                .await,
        );
    }
    let stale = anonymous
        .request(send_message_at(1, &random_id(), &group, to_bob, b"old"))
        .await;
    let err = assert_error(&stale, ErrorCode::NotAuthorized);
    assert!(err.message.contains("capability"), "{}", err.message);
    for epoch in [2, 3] {
        assert_done(
            &anonymous
                .request(send_message_at(epoch, &random_id(), &group, to_bob, b"ok"))
                .await,
        );
    }

    // Only a holder of the current capability may commit.
    let mut outsider = commit(&random_id(), &group, 3, &[], b"takeover");
    outsider.send_token = capability(&group, 2);
    assert_error(
        &anonymous.request(Body::SubmitCommit(outsider)).await,
        ErrorCode::NotAuthorized,
    );
    assert_done(
        &anonymous
            .request(Body::SubmitCommit(commit(
                &random_id(),
                &group,
                3,
                &[],
                b"c",
            )))
            .await,
    );
}

#[tokio::test]
async fn anonymous_sends_are_rate_limited_per_connection_and_per_group() {
    let server = TestServer::start_with(|config| {
        config.limits.sends_per_connection = Rate {
            per_second: 0.5,
            burst: 3.0,
        };
        config.limits.sends_per_capability = Rate {
            per_second: 0.5,
            burst: 5.0,
        };
    })
    .await;
    let (_bob, bob_account) = server.registered("bob").await;
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await; // one send used: the creation
    let to_bob: &[&[u8]] = &[&bob_account.device_id];

    let mut first = server.connect().await;
    for _ in 0..3 {
        assert_done(
            &first
                .request(send_message(&random_id(), &group, to_bob, b"m"))
                .await,
        );
    }
    let limited = first
        .request(send_message(&random_id(), &group, to_bob, b"m"))
        .await;
    let err = assert_error(&limited, ErrorCode::RateLimited);
    assert!(
        err.retry_after_ms > 0 && err.message.contains("retry in"),
        "{err:?}"
    );

    // A fresh connection has its own bucket, but the group's capability has
    // used 4 of its 5 (the creation does not carry one).
    let mut second = server.connect().await;
    assert_done(
        &second
            .request(send_message(&random_id(), &group, to_bob, b"m"))
            .await,
    );
    assert_done(
        &second
            .request(send_message(&random_id(), &group, to_bob, b"m"))
            .await,
    );
    let err = assert_error(
        &second
            .request(send_message(&random_id(), &group, to_bob, b"m"))
            .await,
        ErrorCode::RateLimited,
    );
    assert!(err.message.contains("to this group"), "{}", err.message);
}

#[tokio::test]
async fn key_package_claims_are_rate_limited_per_target() {
    let server = TestServer::start_with(|config| {
        config.limits.claims_per_target = Rate {
            per_second: 0.1,
            burst: 2.0,
        };
    })
    .await;
    let (_bob, _) = server.registered("bob").await;
    let claim = || {
        Body::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: "bob".into(),
            device_ids: Vec::new(),
        })
    };
    // Anonymous claims work (NO_KEY_PACKAGE here: bob uploaded none) …
    let mut a = server.connect().await;
    for _ in 0..2 {
        assert_error(&a.request(claim()).await, ErrorCode::NoKeyPackage);
    }
    // … until bob's pool is protected, whichever connection asks: beyond
    // the rate only a last-resort KeyPackage is handed out, and bob has
    // none, so the claim is told when to retry (limits.rs has the flood
    // against an account that has one).
    let mut b = server.connect().await;
    let err = assert_error(&b.request(claim()).await, ErrorCode::RateLimited);
    assert!(err.message.contains("for this account"), "{}", err.message);
}

#[tokio::test]
async fn sends_are_rate_limited_per_address_across_connections() {
    let server = TestServer::start_with(|config| {
        config.limits.sends_per_address = Rate {
            per_second: 0.1,
            burst: 3.0,
        };
    })
    .await;
    let (_bob, bob_account) = server.registered("bob").await;
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await; // 1 of the address's 3
    let to_bob: &[&[u8]] = &[&bob_account.device_id];
    for _ in 0..2 {
        let mut fresh = server.connect().await;
        assert_done(
            &fresh
                .request(send_message(&random_id(), &group, to_bob, b"m"))
                .await,
        );
    }
    // A new connection does not reset the address's bucket.
    let mut fresh = server.connect().await;
    let err = assert_error(
        &fresh
            .request(send_message(&random_id(), &group, to_bob, b"m"))
            .await,
        ErrorCode::RateLimited,
    );
    assert!(err.message.contains("from your address"), "{}", err.message);
}
