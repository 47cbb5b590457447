//! The key directory over the real protocol: signed epochs, lookups that
//! follow the log, bounded audits that name nobody, and the transition of
//! a server that had accounts before the directory.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sotto_directory::{AccountState, Username, verify_audit, verify_lookup};
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response};
use sotto_server::key_directory::DIRECTORY_FILE_NAME;
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;
use sotto_transparency::{verify_account_log, verify_epoch};

async fn signed_epoch(client: &mut Client) -> v1::SignedEpoch {
    match client
        .request(Body::GetDirectoryEpoch(v1::GetDirectoryEpoch {}))
        .await
        .result
    {
        Some(response::Result::DirectoryEpoch(epoch)) => epoch,
        other => panic!("expected a signed epoch, got {other:?}"),
    }
}

async fn lookup(client: &mut Client, username: &str) -> v1::Response {
    client
        .request(Body::LookupAccount(v1::LookupAccount {
            username: username.into(),
        }))
        .await
}

/// Looks `username` up and verifies the answer: the epoch's signature by
/// the log key, the proof against it, and that the version is the state
/// the account's log replays to. Returns the epoch and the version.
async fn verified_lookup(client: &mut Client, username: &str) -> (v1::SignedEpoch, u64) {
    let answer = match lookup(client, username).await.result {
        Some(response::Result::DirectoryLookup(answer)) => answer,
        other => panic!("expected a lookup, got {other:?}"),
    };
    let epoch = answer.epoch.unwrap();
    verify_epoch(&client.log_key, &epoch).unwrap();
    let verified = verify_lookup(
        &epoch.vrf_public_key.clone().try_into().unwrap(),
        &epoch.root_hash.clone().try_into().unwrap(),
        epoch.epoch,
        &Username::parse(username).unwrap(),
        &answer.proof,
    )
    .unwrap();
    let log = match client
        .request(Body::GetAccountLog(v1::GetAccountLog {
            username: username.into(),
        }))
        .await
        .result
    {
        Some(response::Result::AccountLog(log)) => log,
        other => panic!("expected an account log, got {other:?}"),
    };
    let replayed = verify_account_log(&client.log_key, username, &log).unwrap();
    assert_eq!(verified.state, AccountState::of_log(&replayed));
    (epoch, verified.version)
}

async fn audit(client: &mut Client, from_epoch: u64, to_epoch: u64) -> v1::Response {
    client
        .request(Body::GetDirectoryAudit(v1::GetDirectoryAudit {
            from_epoch,
            to_epoch,
            offset: 0,
        }))
        .await
}

#[tokio::test]
async fn lookups_follow_the_log_against_signed_epochs() {
    let server = TestServer::start().await;
    let (mut alice, account) = server.registered("alice").await;
    let (first, version) = verified_lookup(&mut alice, "alice").await;
    assert_eq!(version, 1);
    assert!(first.epoch >= 1);

    // A device added is a new version, published before the next lookup
    // answers (no waiting for the publisher's tick).
    let laptop = account.another_device();
    assert_done(&alice.request(account.add_device(&laptop, 2)).await);
    let mut anonymous = server.connect().await;
    let (second, version) = verified_lookup(&mut anonymous, "alice").await;
    assert_eq!(version, 2);
    assert!(second.epoch > first.epoch);
    assert_eq!(second.vrf_public_key, first.vrf_public_key);
    assert_eq!(signed_epoch(&mut anonymous).await.epoch, second.epoch);

    // No such account, or not a username: UNKNOWN_USER, naming nobody else.
    for name in ["nobody", "NOT VALID"] {
        let e = assert_error(&lookup(&mut anonymous, name).await, ErrorCode::UnknownUser);
        assert!(!e.message.contains("alice"), "{e}");
    }
}

#[tokio::test]
async fn an_idle_directory_signs_its_epoch_again() {
    let server = TestServer::start_with(|c| {
        c.directory_epoch_interval = std::time::Duration::from_secs(1);
    })
    .await;
    let (mut alice, _) = server.registered("alice").await;
    let first = signed_epoch(&mut alice).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let later = signed_epoch(&mut alice).await;
    verify_epoch(&alice.log_key, &later).unwrap();
    // The same epoch (nothing changed), signed again with a newer time.
    assert_eq!(
        (later.epoch, &later.root_hash),
        (first.epoch, &first.root_hash)
    );
    assert!(later.timestamp_ms >= first.timestamp_ms + 1000, "{later:?}");
}

#[tokio::test]
async fn audits_are_bounded_verify_and_name_nobody() {
    let server = TestServer::start().await;
    let names = ["zelda-secret", "yorick-hidden", "xavier-private"];
    let mut clients = Vec::new();
    for name in names {
        let (client, _) = server.registered(name).await;
        clients.push(client);
        // One epoch per account: each lookup publishes what is pending.
        verified_lookup(&mut clients[0], name).await;
    }
    let mut auditor = server.connect().await;
    let head = signed_epoch(&mut auditor).await;
    assert!(head.epoch >= 3, "{head:?}");
    let answer = match audit(&mut auditor, 0, head.epoch).await.result {
        Some(response::Result::DirectoryAudit(answer)) => answer,
        other => panic!("expected an audit, got {other:?}"),
    };
    let roots: Vec<[u8; 32]> = answer
        .roots
        .iter()
        .map(|r| r.clone().try_into().unwrap())
        .collect();
    assert_eq!(roots.len() as u64, head.epoch + 1);
    assert_eq!(roots.last().unwrap().as_slice(), head.root_hash.as_slice());
    // Small enough to come in one part.
    assert_eq!(answer.proof_len, answer.proof.len() as u64);
    verify_audit(&roots, 0, &answer.proof).await.unwrap();
    // A part from past the proof's end: refused.
    let past = auditor
        .request(Body::GetDirectoryAudit(v1::GetDirectoryAudit {
            from_epoch: 0,
            to_epoch: head.epoch,
            offset: answer.proof_len + 1,
        }))
        .await;
    assert_error(&past, ErrorCode::InvalidRequest);
    // What an auditor gets names no account.
    let bytes = prost::Message::encode_to_vec(&answer);
    for name in names {
        assert!(
            !bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} in an audit answer"
        );
    }

    // Bounded: more than 16 epochs, past the latest, or backwards: refused.
    for (from, to) in [(0, 17), (0, head.epoch + 1), (2, 1), (1, 1)] {
        assert_error(
            &audit(&mut auditor, from, to).await,
            ErrorCode::InvalidRequest,
        );
    }
}

#[tokio::test]
async fn existing_accounts_are_published_once_and_survive_restarts() {
    let temp = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_in(temp.path()).await;
    server.registered("alice").await;
    server.registered("bob").await;
    server.stop().await;
    // A server from before the directory: accounts, and no directory file.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(temp.path().join(format!("{DIRECTORY_FILE_NAME}{suffix}")));
    }

    let server = TestServer::start_in(temp.path()).await;
    let mut client = server.connect().await;
    let head = signed_epoch(&mut client).await;
    assert_eq!(head.epoch, 1, "every existing account in one epoch");
    for name in ["alice", "bob"] {
        let (epoch, version) = verified_lookup(&mut client, name).await;
        assert_eq!((epoch.epoch, version), (1, 1));
    }
    server.stop().await;

    // A restart publishes nothing new: the directory already holds the log.
    let server = TestServer::start_in(temp.path()).await;
    let mut client = server.connect().await;
    let again = signed_epoch(&mut client).await;
    assert_eq!(
        (again.epoch, &again.root_hash),
        (head.epoch, &head.root_hash)
    );
    assert_eq!(again.vrf_public_key, head.vrf_public_key);
    server.stop().await;
}

/// `sotto-server audit` checks every epoch from the stored nodes, and names
/// the epoch whose stored node was changed.
#[tokio::test]
async fn the_offline_audit_checks_every_epoch_and_names_a_flipped_byte() {
    let temp = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_in(temp.path()).await;
    let (mut client, _) = server.registered("alice").await;
    verified_lookup(&mut client, "alice").await;
    server.registered("bob").await;
    verified_lookup(&mut client, "bob").await;
    server.stop().await;

    let summary = sotto_server::audit::audit_data_dir(temp.path(), None)
        .await
        .unwrap();
    // Epoch 1 published the server's web release (at start), then one
    // epoch per account.
    assert_eq!(summary.directory.unwrap().epoch, 3);

    // One byte of the hash of a leaf stored in epoch 3.
    sotto_testkit::directory_file::flip_stored_leaf_hash(temp.path(), 3);
    let err = sotto_server::audit::audit_data_dir(temp.path(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sotto_server::audit::AuditFailure::Directory(_)),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 2 to 3"), "{err}");
}

async fn run_server_audit(dir: &std::path::Path) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .arg("audit")
        .arg("--data")
        .arg(dir)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `sotto-server audit` (the binary) audits every directory epoch, prints
/// no username whether it passes or fails, and names the epoch whose
/// stored node was changed.
#[tokio::test]
async fn the_server_audit_command_names_the_bad_epoch_and_no_account() {
    const NAMES: [&str; 2] = ["quokkazanzibar", "marmalade.ferret"];
    let temp = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_in(temp.path()).await;
    let (mut client, _) = server.registered(NAMES[0]).await;
    verified_lookup(&mut client, NAMES[0]).await;
    server.registered(NAMES[1]).await;
    verified_lookup(&mut client, NAMES[1]).await;
    server.stop().await;

    let (passed, text) = run_server_audit(temp.path()).await;
    assert!(passed, "{text}");
    assert!(
        text.contains("key directory:  3 epochs append-only"),
        "{text}"
    );
    for name in NAMES {
        assert!(!text.contains(&name[..6]), "{name} in: {text}");
    }

    sotto_testkit::directory_file::flip_stored_leaf_hash(temp.path(), 3);
    let (passed, text) = run_server_audit(temp.path()).await;
    assert!(!passed, "{text}");
    assert!(text.contains("epoch 2 to 3"), "{text}");
    for name in NAMES {
        assert!(!text.contains(&name[..6]), "{name} in: {text}");
    }
}
