//! The server checks the MLS framing it can see: a message must be framed
//! for the group and the epoch its capability is for, the previous epoch's
//! capability lasts only a grace period after a commit (and not across a
//! restart), and creating a group delivers nothing to anyone. Each test
//! plays a former member or an outsider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use sotto_proto::mls_framing::ContentType;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body};
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;
use std::time::Duration;

/// A send with a valid capability for one group, carrying an MLS message of
/// another: a member (or a former member within the grace period) would
/// otherwise reach the other group's members.
#[tokio::test]
async fn a_message_framed_for_another_group_is_refused() {
    let server = TestServer::start().await;
    let (mut bob, bob_account) = server.registered("bob").await;
    let (mut mallory, _) = server.registered("mallory").await;
    let mine = create_group(&mut mallory).await;
    let victims = random_id();
    let mut anonymous = server.connect().await;
    let forged = Body::SendMessage(v1::SendMessage {
        message_id: random_id(),
        group_id: mine.clone(),
        recipients: vec![bob_account.device_id.clone()],
        payload: framed(&victims, 1, ContentType::Application, b"for their group"),
        send_token: capability(&mine, 1),
        more_recipients: false,
        expires_at: 0,
        ephemeral: false,
    });
    let err = assert_error(
        &anonymous.request(forged).await,
        ErrorCode::MismatchedFraming,
    );
    assert!(err.message.contains("MLS group"), "{}", err.message);
    // A commit smuggled in as a message is refused too: commits go through
    // the sequencer.
    let commit_as_message = Body::SendMessage(v1::SendMessage {
        message_id: random_id(),
        group_id: mine.clone(),
        recipients: vec![bob_account.device_id.clone()],
        payload: framed(&mine, 1, ContentType::Commit, b"c"),
        send_token: capability(&mine, 1),
        more_recipients: false,
        expires_at: 0,
        ephemeral: false,
    });
    assert_error(
        &anonymous.request(commit_as_message).await,
        ErrorCode::MismatchedFraming,
    );
    // Not MLS at all.
    let noise = Body::SendMessage(v1::SendMessage {
        message_id: random_id(),
        group_id: mine.clone(),
        recipients: vec![bob_account.device_id.clone()],
        payload: b"noise".to_vec(),
        send_token: capability(&mine, 1),
        more_recipients: false,
        expires_at: 0,
        ephemeral: false,
    });
    assert_error(&anonymous.request(noise).await, ErrorCode::InvalidRequest);
    assert!(bob.sync().await.is_empty(), "nothing reached bob");
}

/// A message framed for a later epoch than its capability's: the shape of a
/// forged "a commit was withheld from you" message.
#[tokio::test]
async fn a_message_framed_for_a_later_epoch_is_refused() {
    let server = TestServer::start().await;
    let (mut bob, bob_account) = server.registered("bob").await;
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await;
    let mut anonymous = server.connect().await;
    let future = Body::SendMessage(v1::SendMessage {
        message_id: random_id(),
        group_id: group.clone(),
        recipients: vec![bob_account.device_id.clone()],
        payload: framed(&group, 2, ContentType::Application, b"from the future"),
        send_token: capability(&group, 1),
        more_recipients: false,
        expires_at: 0,
        ephemeral: false,
    });
    let err = assert_error(
        &anonymous.request(future).await,
        ErrorCode::MismatchedFraming,
    );
    assert!(err.message.contains("epoch 2"), "{}", err.message);
    // A commit whose framing disagrees with the epoch it is submitted for.
    let mut lying = commit(&random_id(), &group, 1, &[], b"c");
    lying.commit = framed(&group, 5, ContentType::Commit, b"c");
    assert_error(
        &alice.request(Body::SubmitCommit(lying)).await,
        ErrorCode::MismatchedFraming,
    );
    assert!(bob.sync().await.is_empty(), "nothing reached bob");
}

/// The previous epoch's capability (what a member removed by the last
/// commit still holds) works only for the grace period after that commit.
#[tokio::test]
async fn the_previous_epoch_capability_expires_after_the_grace_period() {
    let server =
        TestServer::start_with(|c| c.previous_epoch_grace = Duration::from_millis(500)).await;
    let (mut bob, bob_account) = server.registered("bob").await;
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await;
    let to_bob: &[&[u8]] = &[&bob_account.device_id];
    assert_done(
        &alice
            .request(Body::SubmitCommit(commit(
                &random_id(),
                &group,
                1,
                &[],
                b"removes mallory",
            )))
            .await,
    );
    let mut mallory = server.connect().await;
    // Just after the commit: a message sent just before it still goes through.
    assert_done(
        &mallory
            .request(send_message_at(
                1,
                &random_id(),
                &group,
                to_bob,
                b"in flight",
            ))
            .await,
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let err = assert_error(
        &mallory
            .request(send_message_at(
                1,
                &random_id(),
                &group,
                to_bob,
                b"still here",
            ))
            .await,
        ErrorCode::NotAuthorized,
    );
    assert!(err.message.contains("capability"), "{}", err.message);
    // Members of the current epoch are unaffected.
    assert_done(
        &mallory
            .request(send_message_at(2, &random_id(), &group, to_bob, b"current"))
            .await,
    );
    let got: Vec<Vec<u8>> = bob
        .sync()
        .await
        .iter()
        .map(|d| unframed(&d.payload))
        .collect();
    assert_eq!(got, [b"in flight".to_vec(), b"current".to_vec()]);
}

/// The grace period lives in memory: after a restart the previous epoch's
/// capability is refused at once.
#[tokio::test]
async fn after_a_restart_the_previous_epoch_capability_is_refused() {
    let server = TestServer::start().await;
    let (bob_conn, bob_account) = server.registered("bob").await;
    drop(bob_conn);
    let (mut alice, _) = server.registered("alice").await;
    let group = create_group(&mut alice).await;
    assert_done(
        &alice
            .request(Body::SubmitCommit(commit(
                &random_id(),
                &group,
                1,
                &[],
                b"c",
            )))
            .await,
    );
    drop(alice);
    let server = server.restart().await;
    let mut mallory = server.connect().await;
    let to_bob: &[&[u8]] = &[&bob_account.device_id];
    assert_error(
        &mallory
            .request(send_message_at(1, &random_id(), &group, to_bob, b"old"))
            .await,
        ErrorCode::NotAuthorized,
    );
    assert_done(
        &mallory
            .request(send_message_at(2, &random_id(), &group, to_bob, b"new"))
            .await,
    );
    server.stop().await;
}

/// Creating a group needs no capability, so it must not be a way for an
/// outsider to deliver something to anyone: the creating commit has no
/// recipients, and a Welcome must be a Welcome.
#[tokio::test]
async fn creating_a_group_delivers_nothing_but_a_welcome() {
    let server = TestServer::start().await;
    let (mut bob, bob_account) = server.registered("bob").await;
    // Never registered, never logged in.
    let mut outsider = server.connect().await;
    let to_bob: &[&[u8]] = &[&bob_account.device_id];
    let create = commit(&random_id(), &random_id(), 0, to_bob, b"anything");
    let err = assert_error(
        &outsider.request(Body::SubmitCommit(create)).await,
        ErrorCode::InvalidRequest,
    );
    assert!(err.message.contains("no recipients"), "{}", err.message);
    let fake_welcome = v1::SubmitCommit {
        welcome_message_id: random_id(),
        welcome_recipients: vec![bob_account.device_id.clone()],
        welcome: framed(b"g", 1, ContentType::Application, b"not a welcome"),
        ..commit(&random_id(), &random_id(), 0, &[], b"c")
    };
    assert_error(
        &outsider.request(Body::SubmitCommit(fake_welcome)).await,
        ErrorCode::MismatchedFraming,
    );
    assert!(bob.sync().await.is_empty(), "nothing reached bob");
}
