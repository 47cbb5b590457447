//! A hostile server against the key directory: it hides an account's
//! newest log entries (the removal of a stolen phone, a device it added to
//! your own account) while the directory holds them, replays an old lookup
//! after a newer epoch was seen, and signs epochs with another key. Each
//! test puts a `HostileProxy` between one client and the real server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::ClientError;
use sotto_proto::v1::{ServerFrame, client_frame, response, server_frame};
use sotto_testkit::{ConnView, HostileProxy, TestServer, link, register, server_log, within};
use sotto_transparency::LogKey;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

fn response_mut(frame: &mut ServerFrame) -> Option<&mut response::Result> {
    match &mut frame.body {
        Some(server_frame::Body::Response(r)) => r.result.as_mut(),
        _ => None,
    }
}

fn asks_log_of(conn: &ConnView, user: &str) -> bool {
    match &conn.request {
        Some(client_frame::Body::ClaimKeyPackages(c)) => c.username == user,
        Some(client_frame::Body::GetAccountLog(g)) => g.username == user,
        _ => false,
    }
}

fn looks_up(conn: &ConnView, user: &str) -> bool {
    matches!(&conn.request, Some(client_frame::Body::LookupAccount(l)) if l.username == user)
}

/// A proxy that, once `keep` is set above 0, shows only the first `keep`
/// log entries of `user` (the inclusion proofs of those still verify: the
/// server just leaves the newer ones out). The directory is left alone.
async fn hiding_newest_entries(
    server: &TestServer,
    user: &'static str,
) -> (HostileProxy, Arc<AtomicU64>) {
    let keep = Arc::new(AtomicU64::new(0));
    let keeping = Arc::clone(&keep);
    let proxy = HostileProxy::start(
        &server.url(),
        move |conn: &ConnView, mut frame: ServerFrame| {
            let keep = usize::try_from(keeping.load(Ordering::SeqCst)).unwrap();
            if keep > 0 && asks_log_of(conn, user) {
                match response_mut(&mut frame) {
                    Some(response::Result::AccountLog(log)) => log.entries.truncate(keep),
                    Some(response::Result::KeyPackages(bundle)) => {
                        if let Some(log) = bundle.account_log.as_mut() {
                            log.entries.truncate(keep);
                        }
                    }
                    _ => {}
                }
            }
            Some(frame)
        },
    )
    .await;
    (proxy, keep)
}

/// The acceptance test of issue 13: Bob's phone is stolen and he removes it;
/// the server hides the removal (and the rotation that came with it) from
/// Alice, so her client would keep the phone in Bob's device set. Her one
/// lookup in the directory catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_device_removal_is_caught_by_one_lookup() {
    within(async {
        let server = TestServer::start().await;
        let (proxy, keep) = hiding_newest_entries(&server, "bob").await;
        let (mut alice, _a) = register(&proxy.url(), "alice").await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        let (stolen, _s) = link(&mut bob).await;
        // The honest view verifies, directory included.
        alice.safety_number("bob", false).await.unwrap();

        keep.store(
            server_log::next_seq(server.data_dir(), "bob"),
            Ordering::SeqCst,
        );
        bob.remove_device(&stolen.device_id().to_string())
            .await
            .unwrap();
        let err = alice.safety_number("bob", false).await.unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ClientError::KeyLog(_)), "{shown}");
        assert!(shown.starts_with("WARNING"), "{shown}");
        assert!(
            shown.contains("not what its key log shows") && shown.contains("hiding or forging"),
            "{shown}"
        );

        // Shown the whole log, Alice accepts the rotation.
        keep.store(0, Ordering::SeqCst);
        alice.safety_number("bob", false).await.unwrap();
    })
    .await;
}

/// The server adds a device to Bob's account with his stolen identity key
/// and hides it from Bob's own log (so the own-account watch, which reads
/// the log, sees nothing new); the directory holds it, and Bob's device
/// warns at its next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_hidden_from_its_own_account_is_caught_at_sync() {
    within(async {
        let server = TestServer::start().await;
        let (proxy, keep) = hiding_newest_entries(&server, "bob").await;
        let (mut bob, _b) = register(&proxy.url(), "bob").await;
        assert!(bob.sync().await.unwrap().is_empty());
        keep.store(
            server_log::next_seq(server.data_dir(), "bob"),
            Ordering::SeqCst,
        );
        server_log::add_device(server.data_dir(), "bob", &bob.identity_secret(), |e| e);

        let seen = bob.sync().await.unwrap();
        let warned = sotto_testkit::warnings(&seen);
        assert!(
            warned
                .iter()
                .any(|w| w.contains("key directory entry does not add up")),
            "{seen:?}"
        );
        assert!(
            bob.account_warnings(false)
                .unwrap()
                .iter()
                .any(|a| a.text.contains("hiding or forging")),
        );
    })
    .await;
}

/// A proxy that keeps the first lookup of `user` it relays and, once told,
/// answers every later lookup of `user` with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_lookup_is_refused_after_a_newer_epoch_was_seen() {
    within(async {
        let server = TestServer::start().await;
        let first: Arc<Mutex<Option<response::Result>>> = Arc::default();
        let replay = Arc::new(AtomicBool::new(false));
        let (kept, replaying) = (Arc::clone(&first), Arc::clone(&replay));
        let proxy = HostileProxy::start(
            &server.url(),
            move |conn: &ConnView, mut frame: ServerFrame| {
                if looks_up(conn, "bob")
                    && let Some(result) = response_mut(&mut frame)
                {
                    let mut kept = kept.lock().unwrap();
                    match kept.as_ref() {
                        None => *kept = Some(result.clone()),
                        Some(old) if replaying.load(Ordering::SeqCst) => *result = old.clone(),
                        Some(_) => {}
                    }
                }
                Some(frame)
            },
        )
        .await;
        let (mut alice, _a) = register(&proxy.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        alice.safety_number("bob", false).await.unwrap();
        assert!(first.lock().unwrap().is_some(), "the proxy saw no lookup");
        // The directory moves on, and Alice verifies a newer epoch.
        let (_carol, _c) = register(&server.url(), "carol").await;
        alice.safety_number("carol", false).await.unwrap();

        replay.store(true, Ordering::SeqCst);
        let err = alice.safety_number("bob", false).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::KeyLog(m) if m.contains("though this device has seen epoch")),
            "{err:?}"
        );
    })
    .await;
}

/// An epoch signed by a key other than the server's pinned log key (a
/// directory someone else runs) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_signed_by_another_key_is_refused() {
    within(async {
        let server = TestServer::start().await;
        let other = LogKey::generate();
        let proxy = HostileProxy::start(
            &server.url(),
            move |conn: &ConnView, mut frame: ServerFrame| {
                if looks_up(conn, "bob")
                    && let Some(response::Result::DirectoryLookup(lookup)) =
                        response_mut(&mut frame)
                    && let Some(epoch) = lookup.epoch.as_mut()
                {
                    *epoch = other.sign_epoch(
                        &epoch.vrf_public_key.clone().try_into().unwrap(),
                        epoch.epoch,
                        &epoch.root_hash.clone().try_into().unwrap(),
                        epoch.timestamp_ms,
                    );
                }
                Some(frame)
            },
        )
        .await;
        let (mut alice, _a) = register(&proxy.url(), "alice").await;
        let (_bob, _b) = register(&server.url(), "bob").await;
        let err = alice.safety_number("bob", false).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::KeyLog(m) if m.contains("epoch does not verify")),
            "{err:?}"
        );
    })
    .await;
}
