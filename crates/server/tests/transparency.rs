//! The transparency log, device management and device linking, over the
//! real protocol; and `sotto-server audit` on a real data directory.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use prost::Message as _;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response, server_frame};
use sotto_server::store::{AccountStore, LogStore, NewAccount, SignedDevice, SqliteStore};
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;
use sotto_transparency::{
    LogKey, leaf_bytes, verify_account_log, verify_consistency, verify_head, verify_inclusion,
};

/// Leaves in a fresh server's log: the web release it logs at start.
const WEB: u64 = 1;

async fn head(client: &mut Client) -> v1::SignedTreeHead {
    match client
        .request(Body::GetLogHead(v1::GetLogHead {}))
        .await
        .result
    {
        Some(response::Result::LogHead(head)) => head,
        other => panic!("expected a head, got {other:?}"),
    }
}

async fn account_log(client: &mut Client, username: &str) -> v1::AccountLog {
    let response = client
        .request(Body::GetAccountLog(v1::GetAccountLog {
            username: username.into(),
        }))
        .await;
    match response.result {
        Some(response::Result::AccountLog(log)) => log,
        other => panic!("expected an account log, got {other:?}"),
    }
}

async fn consistency(client: &mut Client, old_size: u64, new_size: u64) -> v1::Response {
    client
        .request(Body::GetConsistency(v1::GetConsistency {
            old_size,
            new_size,
        }))
        .await
}

#[tokio::test]
async fn register_appends_two_entries_that_verify() {
    let server = TestServer::start().await;
    let (mut alice, account) = server.registered("alice").await;
    let log = account_log(&mut alice, "alice").await;
    assert_eq!(log.entries.len(), 2);
    assert_eq!(
        log.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [WEB, WEB + 1]
    );
    let state = verify_account_log(&alice.log_key, "alice", &log).unwrap();
    assert_eq!(
        state.identity_key,
        account.identity.verifying_key().to_bytes()
    );
    assert_eq!(
        state.devices.keys().map(|k| k.to_vec()).collect::<Vec<_>>(),
        std::slice::from_ref(&account.device_id)
    );

    // Unknown (or invalid) names: UNKNOWN_USER, on an unauthenticated
    // connection too.
    let mut anonymous = server.connect().await;
    for name in ["nobody", "NOT VALID"] {
        let response = anonymous
            .request(Body::GetAccountLog(v1::GetAccountLog {
                username: name.into(),
            }))
            .await;
        assert_error(&response, ErrorCode::UnknownUser);
    }
    // Log requests keep an unauthenticated connection past the handshake.
    let log = account_log(&mut anonymous, "alice").await;
    let state2 = verify_account_log(&anonymous.log_key, "alice", &log).unwrap();
    assert_eq!(state2, state);
}

#[tokio::test]
async fn register_requires_matching_signed_log_entries() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let account = Account::new("alice");
    let with_entries = |client: &Client, entries: Vec<v1::LogEntry>| {
        let Body::Register(mut register) = account.register(&client.nonce) else {
            unreachable!()
        };
        register.log_entries = entries;
        Body::Register(register)
    };

    let none = with_entries(&client, vec![]);
    let e = assert_error(&client.request(none).await, ErrorCode::InvalidRequest);
    assert!(e.message.contains("IdentityRegistered"), "{e}");

    // The DeviceAdded entry names another device.
    let other = account.another_device();
    let mut entries = account.registration_entries();
    entries[1] = account.log_entry(1, other.device_added());
    let wrong_device = with_entries(&client, entries);
    let e = assert_error(
        &client.request(wrong_device).await,
        ErrorCode::InvalidRequest,
    );
    assert!(e.message.contains("DeviceAdded"), "{e}");

    // Entries signed by someone else's identity key.
    let stranger = Account::new("alice");
    let foreign = with_entries(&client, stranger.registration_entries());
    assert_error(&client.request(foreign).await, ErrorCode::InvalidRequest);

    // A broken signature.
    let mut entries = account.registration_entries();
    entries[0].signature[3] ^= 1;
    let forged = with_entries(&client, entries);
    assert_error(
        &client.request(forged).await,
        ErrorCode::AuthenticationFailed,
    );

    // Nothing was logged; the proper registration still works.
    assert_eq!(head(&mut client).await.tree_size, WEB);
    assert_done(&client.register(&account).await);
    assert_eq!(head(&mut client).await.tree_size, WEB + 2);
}

#[tokio::test]
async fn heads_are_consistent_and_entries_are_included() {
    let server = TestServer::start().await;
    let mut auditor = server.connect().await;
    let empty = head(&mut auditor).await;
    verify_head(&auditor.log_key, &empty).unwrap();
    assert_eq!(empty.tree_size, WEB);

    let _alice = server.registered("alice").await;
    let _bob = server.registered("bob").await;
    let first = head(&mut auditor).await;
    verify_head(&auditor.log_key, &first).unwrap();
    assert_eq!(first.tree_size, WEB + 4);

    for i in 0..5 {
        let _ = server.registered(&format!("user{i}")).await;
    }
    let second = head(&mut auditor).await;
    verify_head(&auditor.log_key, &second).unwrap();
    assert_eq!(second.tree_size, WEB + 14);

    for (old, new) in [(&empty, &second), (&first, &second), (&second, &second)] {
        let response = consistency(&mut auditor, old.tree_size, new.tree_size).await;
        let Some(response::Result::Consistency(proof)) = response.result else {
            panic!("expected a consistency proof, got {response:?}");
        };
        assert_eq!(
            (proof.old_size, proof.new_size),
            (old.tree_size, new.tree_size)
        );
        verify_consistency(old, new, &proof.path).unwrap();
    }
    // A proof against a size that is no longer the newest still verifies.
    let _late = server.registered("late").await;
    let response = consistency(&mut auditor, first.tree_size, second.tree_size).await;
    let Some(response::Result::Consistency(proof)) = response.result else {
        panic!("{response:?}");
    };
    verify_consistency(&first, &second, &proof.path).unwrap();

    assert_error(
        &consistency(&mut auditor, 5, 4).await,
        ErrorCode::InvalidRequest,
    );
    assert_error(
        &consistency(&mut auditor, 1, 1_000).await,
        ErrorCode::InvalidRequest,
    );

    // The log's entries are not served whole: they name every account.
    // Each account's own entries come with proofs of inclusion.
    let newest = head(&mut auditor).await;
    let response = auditor
        .request(Body::GetLogEntries(v1::GetLogEntries {
            start: 0,
            count: 100,
        }))
        .await;
    assert_error(&response, ErrorCode::NotAuthorized);
    let bob = account_log(&mut auditor, "bob").await;
    for proven in &bob.entries {
        verify_inclusion(
            bob.head.as_ref().unwrap(),
            proven.index,
            &leaf_bytes(proven.entry.as_ref().unwrap()),
            &proven.inclusion_path,
        )
        .unwrap();
    }
    assert!(newest.tree_size >= 16);

    // The log, and its key, survive a restart.
    let key = auditor.log_key.clone();
    drop(auditor);
    let server = server.restart().await;
    let mut again = server.connect().await;
    assert_eq!(again.log_key, key);
    let after = head(&mut again).await;
    assert_eq!(after.tree_size, newest.tree_size);
    assert_eq!(after.root_hash, newest.root_hash);
}

#[tokio::test]
async fn devices_are_added_then_removed() {
    let server = TestServer::start().await;
    let (mut alice, account) = server.registered("alice").await;
    let (mut bob, _) = server.registered("bob").await;
    let laptop = account.another_device();

    // Wrong account_seq; entry for another device than the certificate.
    let e = assert_error(
        &alice.request(account.add_device(&laptop, 1)).await,
        ErrorCode::InvalidRequest,
    );
    assert!(e.message.contains("account_seq"), "{e}");
    let Body::AddDevice(mut mismatched) = account.add_device(&laptop, 2) else {
        unreachable!()
    };
    mismatched.device = Some(account.another_device().signed_device());
    assert_error(
        &alice.request(Body::AddDevice(mismatched)).await,
        ErrorCode::InvalidRequest,
    );
    // Bob cannot add a device to Alice's account (his own certificate for
    // Alice's name does not verify with her identity key).
    assert!(matches!(
        bob.request(account.add_device(&laptop, 2)).await.result,
        Some(response::Result::Error(_))
    ));

    assert_done(&alice.request(account.add_device(&laptop, 2)).await);
    let mut laptop_conn = server.connect().await;
    assert!(matches!(
        laptop_conn.login(&laptop).await.result,
        Some(response::Result::LoggedIn(_))
    ));
    assert_done(
        &laptop_conn
            .request(Body::UploadKeyPackages(v1::UploadKeyPackages {
                key_packages: vec![b"laptop-kp".to_vec()],
                last_resort: b"laptop-last".to_vec(),
            }))
            .await,
    );
    assert_done(
        &alice
            .request(Body::UploadKeyPackages(v1::UploadKeyPackages {
                key_packages: vec![b"phone-kp".to_vec()],
                last_resort: b"phone-last".to_vec(),
            }))
            .await,
    );
    let log = account_log(&mut bob, "alice").await;
    let state = verify_account_log(&bob.log_key, "alice", &log).unwrap();
    assert_eq!(state.devices.len(), 2);
    assert_eq!(state.next_seq, 3);

    // Claims carry the account log, which covers every claimed device.
    let claim = |only: Vec<Vec<u8>>| {
        Body::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: "alice".into(),
            device_ids: only,
        })
    };
    let Some(response::Result::KeyPackages(bundle)) = bob.request(claim(vec![])).await.result
    else {
        panic!("expected KeyPackages");
    };
    assert_eq!(bundle.devices.len(), 2);
    let claimed_state =
        verify_account_log(&bob.log_key, "alice", bundle.account_log.as_ref().unwrap()).unwrap();
    assert_eq!(claimed_state.devices, state.devices);

    // Remove the laptop: its live connection closes, it cannot log in, its
    // KeyPackages are gone, and it is no longer a recipient.
    assert_done(
        &alice
            .request(account.remove_device(&laptop.device_id, 3))
            .await,
    );
    laptop_conn.assert_closed_within(WAIT).await;
    let mut again = server.connect().await;
    let e = assert_error(&again.login(&laptop).await, ErrorCode::DeviceRemoved);
    assert_eq!(e.message, "this device was removed from its account");
    let Some(response::Result::KeyPackages(bundle)) = bob.request(claim(vec![])).await.result
    else {
        panic!("expected KeyPackages");
    };
    let claimed: Vec<Vec<u8>> = bundle
        .devices
        .iter()
        .map(|c| {
            v1::DeviceCertificate::decode(c.device.as_ref().unwrap().certificate.as_slice())
                .unwrap()
                .device_id
        })
        .collect();
    assert_eq!(claimed, std::slice::from_ref(&account.device_id));
    let state =
        verify_account_log(&bob.log_key, "alice", bundle.account_log.as_ref().unwrap()).unwrap();
    assert_eq!(state.devices.len(), 1);
    // A removed device is skipped as a recipient (a sender's roster may be a
    // moment old), so nothing reaches it.
    let group = create_group(&mut bob).await;
    bob.request(send_message(
        &random_id(),
        &group,
        &[&laptop.device_id],
        b"hi",
    ))
    .await;
    // Removing it again is refused; the removed id cannot come back.
    assert_error(
        &alice
            .request(account.remove_device(&laptop.device_id, 4))
            .await,
        ErrorCode::UnknownDevice,
    );

    // A device may remove itself; its connection then closes.
    assert_done(
        &alice
            .request(account.remove_device(&account.device_id, 4))
            .await,
    );
    alice.assert_closed_within(WAIT).await;
}

#[tokio::test]
async fn link_rendezvous_relays_to_an_unauthenticated_joiner() {
    let server = TestServer::start_with(|config| {
        config.limits.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let (mut alice, _) = server.registered("alice").await;
    let link_id = random_id();
    let mut joiner = server.connect().await;

    // Unknown links, and opening without logging in.
    let join = |id: &[u8], request: &[u8]| {
        Body::JoinLink(v1::JoinLink {
            link_id: id.to_vec(),
            sealed_request: request.to_vec(),
        })
    };
    let e = assert_error(
        &joiner.request(join(&link_id, b"req")).await,
        ErrorCode::UnknownLink,
    );
    assert_eq!(
        e.message,
        "this link code is unknown or expired; ask for a new one"
    );
    let open = Body::OpenLink(v1::OpenLink {
        link_id: link_id.clone(),
    });
    assert_error(
        &joiner.request(open.clone()).await,
        ErrorCode::NotAuthenticated,
    );

    assert_done(&alice.request(open).await);
    assert_error(
        &joiner
            .request(join(&link_id, &vec![0; 16 * 1024 + 1]))
            .await,
        ErrorCode::TooLarge,
    );
    assert_done(&joiner.request(join(&link_id, b"sealed request")).await);
    match alice.next_frame().await.body {
        Some(server_frame::Body::LinkRequest(request)) => {
            assert_eq!(request.link_id, link_id);
            assert_eq!(request.sealed_request, b"sealed request");
        }
        other => panic!("expected a LinkRequest, got {other:?}"),
    }
    // One join per link.
    let mut second = server.connect().await;
    assert_error(
        &second.request(join(&link_id, b"again")).await,
        ErrorCode::UnknownLink,
    );

    // The joiner waits past the handshake timeout while the link is open.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_done(
        &alice
            .request(Body::CompleteLink(v1::CompleteLink {
                link_id: link_id.clone(),
                sealed_bundle: b"sealed bundle".to_vec(),
            }))
            .await,
    );
    match joiner.next_frame().await.body {
        Some(server_frame::Body::LinkCompleted(completed)) => {
            assert_eq!(completed.sealed_bundle, b"sealed bundle");
        }
        other => panic!("expected LinkCompleted, got {other:?}"),
    }
    // The link is gone.
    assert_error(
        &alice
            .request(Body::CompleteLink(v1::CompleteLink {
                link_id,
                sealed_bundle: b"x".to_vec(),
            }))
            .await,
        ErrorCode::UnknownLink,
    );
    // The connection that only failed to join is closed by the handshake
    // timeout; the joiner, done, gets a fresh one.
    second.assert_closed_within(WAIT).await;
    joiner.assert_closed_within(WAIT).await;
}

#[tokio::test]
async fn links_close_with_their_opener() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.registered("alice").await;
    let link_id = random_id();
    assert_done(
        &alice
            .request(Body::OpenLink(v1::OpenLink {
                link_id: link_id.clone(),
            }))
            .await,
    );
    drop(alice);
    // Give the server a moment to notice the closed socket.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut joiner = server.connect().await;
    let response = joiner
        .request(Body::JoinLink(v1::JoinLink {
            link_id,
            sealed_request: b"r".to_vec(),
        }))
        .await;
    assert_error(&response, ErrorCode::UnknownLink);
}

/// Registers `n` accounts straight through the store, with real signed
/// log entries.
async fn populate(dir: &std::path::Path, n: usize) {
    let store = SqliteStore::open(dir).unwrap();
    store
        .log_key_secret(LogKey::generate().secret())
        .await
        .unwrap();
    let accounts: Vec<NewAccount> = (0..n)
        .map(|i| {
            let account = Account::new(&format!("user{i:04}"));
            NewAccount {
                username: account.username.clone(),
                identity_key: account.identity.verifying_key().to_bytes(),
                device_id: sotto_server::store::DeviceId::from_slice(&account.device_id).unwrap(),
                device_key: account.device.verifying_key().to_bytes(),
                device: SignedDevice {
                    certificate: account.certificate.clone(),
                    identity_signature: account.signed_device().identity_signature,
                },
                today: 20_000,
                log_entries: account
                    .registration_entries()
                    .iter()
                    .map(leaf_bytes)
                    .collect(),
                invite: None,
            }
        })
        .collect();
    let results =
        futures_util::future::join_all(accounts.into_iter().map(|a| store.register(a))).await;
    for result in results {
        result.unwrap();
    }
    store.close().await;
}

async fn run_audit(dir: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .arg("audit")
        .arg("--data")
        .arg(dir)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn audit_passes_on_1000_accounts_and_names_a_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 1_000).await;

    let output = run_audit(dir.path()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("entries:        2000"), "{stdout}");
    assert!(stdout.contains("accounts:       1000"), "{stdout}");
    assert!(stdout.contains("active devices: 1000"), "{stdout}");
    assert!(stdout.contains("tree size:      2000"), "{stdout}");
    // Filled through the store alone: no server ever logged a web release.
    assert!(stdout.contains("web releases:   0"), "{stdout}");

    // Flip one byte of one stored entry.
    {
        let db = rusqlite::Connection::open(dir.path().join("sotto.db")).unwrap();
        let mut entry: Vec<u8> = db
            .query_row("SELECT entry FROM log_entries WHERE idx = 1234", [], |r| {
                r.get(0)
            })
            .unwrap();
        let last = entry.len() - 1;
        entry[last] ^= 0x01;
        db.execute(
            "UPDATE log_entries SET entry = ?1 WHERE idx = 1234",
            [&entry],
        )
        .unwrap();
    }
    let output = run_audit(dir.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("log entry 1234"), "{stderr}");
}

#[tokio::test]
async fn audit_catches_a_ghost_device() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3).await;
    assert_eq!(
        sotto_server::audit::audit_data_dir(dir.path(), None)
            .await
            .unwrap()
            .report
            .devices,
        3
    );
    let ghost = Account::new("user0001");
    {
        let db = rusqlite::Connection::open(dir.path().join("sotto.db")).unwrap();
        db.execute(
            "INSERT INTO devices (device_id, username, certificate, identity_signature, device_key, \
             created_day, last_seen_day) VALUES (?1, 'user0001', x'00', x'00', ?2, 0, 0)",
            rusqlite::params![ghost.device_id, ghost.device.verifying_key().to_bytes().to_vec()],
        )
        .unwrap();
    }
    let error = sotto_server::audit::audit_data_dir(dir.path(), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("user0001"), "{error}");
    let wrong_key = sotto_server::audit::audit_data_dir(dir.path(), Some(&[0; 32]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            wrong_key,
            sotto_server::audit::AuditFailure::KeyMismatch { .. }
        ),
        "{wrong_key}"
    );
}

/// Removing a device with an identity rotation: both entries are logged in
/// one request, the remaining devices' certificates are renewed, and the
/// old key (which the removed device still holds) can change nothing more.
#[tokio::test]
async fn a_rotation_with_a_removal_locks_the_old_key_out() {
    let server = TestServer::start().await;
    let (mut alice, account) = server.registered("alice").await;
    let laptop = account.another_device();
    assert_done(&alice.request(account.add_device(&laptop, 2)).await);
    let new_identity = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);

    // Certificates must cover every remaining device, by the new key.
    let Body::RemoveDevice(mut partial) =
        account.remove_and_rotate(&laptop.device_id, 3, &new_identity, &[&account])
    else {
        unreachable!()
    };
    partial.devices.clear();
    assert_error(
        &alice.request(Body::RemoveDevice(partial)).await,
        ErrorCode::InvalidRequest,
    );
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let Body::RemoveDevice(mut forged) =
        account.remove_and_rotate(&laptop.device_id, 3, &new_identity, &[&account])
    else {
        unreachable!()
    };
    forged.devices = vec![account.with_identity(&stranger).signed_device()];
    let refused = alice.request(Body::RemoveDevice(forged)).await;
    assert!(
        matches!(refused.result, Some(response::Result::Error(_))),
        "a certificate by another key than the new one: {refused:?}"
    );
    assert_eq!(
        server
            .db()
            .query_row("SELECT count(*) FROM log_entries", [], |r| r
                .get::<_, i64>(0))
            .unwrap(),
        3 + WEB as i64,
        "a refused rotation logs nothing, not even the removal"
    );

    assert_done(
        &alice
            .request(account.remove_and_rotate(&laptop.device_id, 3, &new_identity, &[&account]))
            .await,
    );
    let log = account_log(&mut alice, "alice").await;
    let state = verify_account_log(&alice.log_key, "alice", &log).unwrap();
    assert_eq!(state.identity_key, new_identity.verifying_key().to_bytes());
    assert!(state.rotated_from(&account.identity.verifying_key().to_bytes()));
    assert_eq!(state.devices.len(), 1);
    assert_eq!(state.next_seq, 5);

    // The old key can log nothing: neither a device (its certificate is
    // not the account's key's) nor a removal (refused by the replay rule).
    let ghost = account.another_device();
    let refused = alice.request(account.add_device(&ghost, 5)).await;
    assert!(
        matches!(refused.result, Some(response::Result::Error(_))),
        "{refused:?}"
    );
    let e = assert_error(
        &alice
            .request(account.remove_device(&account.device_id, 5))
            .await,
        ErrorCode::InvalidRequest,
    );
    assert!(e.message.contains("rotated away from"), "{}", e.message);

    // Claims hand out certificates by the new key, and the new key works.
    assert_done(
        &alice
            .request(Body::UploadKeyPackages(v1::UploadKeyPackages {
                key_packages: vec![b"alice-kp".to_vec()],
                last_resort: b"alice-last".to_vec(),
            }))
            .await,
    );
    let Some(response::Result::KeyPackages(bundle)) = alice
        .request(Body::ClaimKeyPackages(v1::ClaimKeyPackages {
            username: "alice".into(),
            device_ids: vec![],
        }))
        .await
        .result
    else {
        panic!("expected KeyPackages");
    };
    assert_eq!(bundle.identity_key, new_identity.verifying_key().to_bytes());
    let renewed = account.with_identity(&new_identity);
    assert_eq!(
        bundle.devices[0].device,
        Some(renewed.signed_device()),
        "the remaining device's certificate is by the new key"
    );
    let phone = renewed.another_device();
    assert_done(&alice.request(renewed.add_device(&phone, 5)).await);
    let audit = sotto_server::audit::audit_data_dir(server.data_dir(), None).await;
    assert!(audit.is_ok(), "the server's own audit: {audit:?}");
}
