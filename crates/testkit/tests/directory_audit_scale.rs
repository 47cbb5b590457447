//! Auditing a large key directory end to end (issue #13 item 6): accounts
//! written straight into a server's store, the server publishes them (the
//! transition epoch) and a few more epochs; `sotto audit`'s library audits
//! every epoch over the protocol without receiving a username, and
//! `sotto-server audit` checks the stored epochs and names the one whose
//! stored byte was flipped.
//!
//! 10,000 accounts take about 15 s in a debug build (the transition epoch's
//! audit proof is about 750 KB, served in 256 KiB parts), so CI runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sotto_client::{Trust, audit_directory};
use sotto_proto::Message as _;
use sotto_proto::v1::ServerFrame;
use sotto_server::store::{AccountStore, LogStore, NewAccount, SignedDevice, SqliteStore};
use sotto_testkit::wire::Account;
use sotto_testkit::{ConnView, HostileProxy, TestServer};
use sotto_transparency::{LogKey, leaf_bytes};

/// Every account name starts with this (eight bytes: random proof bytes
/// do not match it by chance, as a two-byte prefix would), so any name in
/// the auditor's bytes is found.
const PREFIX: &str = "zqmember";

/// Registers `n` accounts straight through the store, with real signed
/// log entries (as if they had registered before the directory existed).
async fn populate(dir: &Path, n: usize) {
    let store = SqliteStore::open(dir).unwrap();
    store
        .log_key_secret(LogKey::generate().secret())
        .await
        .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let accounts: Vec<NewAccount> = chunk
            .iter()
            .map(|i| {
                let account = Account::new(&format!("{PREFIX}{i:05}"));
                NewAccount {
                    username: account.username.clone(),
                    identity_key: account.identity.verifying_key().to_bytes(),
                    device_id: sotto_server::store::DeviceId::from_slice(&account.device_id)
                        .unwrap(),
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
    }
    store.close().await;
}

/// Runs `sotto-server audit --data DIR` (the server is stopped by then).
fn server_audit(dir: &Path) -> (bool, String) {
    let output = std::process::Command::new(sotto_testkit::binary("sotto-server"))
        .arg("audit")
        .arg("--data")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn audit_a_directory_of(accounts: usize) {
    let temp = tempfile::TempDir::new().unwrap();
    populate(temp.path(), accounts).await;
    let started = Instant::now();
    let server = TestServer::start_in(temp.path()).await;
    eprintln!(
        "{accounts} accounts published in epoch 1 in {:.1?}",
        started.elapsed()
    );
    // Two more epochs of a few changes each.
    for name in [format!("{PREFIX}late1"), format!("{PREFIX}late2")] {
        server.registered(&name).await;
        let mut raw = server.connect().await;
        raw.request(sotto_proto::v1::client_frame::Body::GetDirectoryEpoch(
            sotto_proto::v1::GetDirectoryEpoch {},
        ))
        .await;
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = HostileProxy::start(&server.url(), {
        let seen = Arc::clone(&seen);
        move |_: &ConnView, frame: ServerFrame| {
            seen.lock().unwrap().extend(frame.encode_to_vec());
            Some(frame)
        }
    })
    .await;
    let started = Instant::now();
    let report = audit_directory(&proxy.url(), &Trust::web_roots(), None, None)
        .await
        .unwrap();
    let bytes = seen.lock().unwrap().len();
    eprintln!(
        "audit over the protocol: epochs 0 to {} in {:.1?}, {bytes} bytes received",
        report.epochs,
        started.elapsed()
    );
    assert_eq!(report.epochs, 3);
    assert!(!contains(&seen.lock().unwrap(), PREFIX.as_bytes()));
    drop(proxy);
    server.stop().await;

    let started = Instant::now();
    let (passed, text) = server_audit(temp.path());
    eprintln!("sotto-server audit in {:.1?}", started.elapsed());
    assert!(passed, "{text}");
    assert!(
        text.contains("key directory:  3 epochs append-only"),
        "{text}"
    );
    assert!(
        text.contains(&format!("accounts:       {}", accounts + 2)),
        "{text}"
    );
    assert!(!text.contains(PREFIX), "{text}");

    // One flipped byte in a node stored in epoch 1 (the big one).
    sotto_testkit::directory_file::flip_stored_leaf_hash(temp.path(), 1);
    let (passed, text) = server_audit(temp.path());
    assert!(!passed, "{text}");
    assert!(text.contains("epoch 0 to 1"), "{text}");
    assert!(!text.contains(PREFIX), "{text}");
}

#[tokio::test]
async fn a_directory_of_10000_accounts_audits_and_names_a_flipped_byte() {
    audit_a_directory_of(10_000).await;
}
