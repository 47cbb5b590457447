//! Watching your own account (issue 13, item 3): a change to Alice's
//! account that none of her devices made — a device the server adds with
//! her stolen identity key, a device a removed phone adds, an old entry
//! replayed, one of her own changes hidden — makes every Alice device warn
//! at its next sync, and the warning stays until she acknowledges it.
//! Changes her own devices make (a device linked later included) raise no
//! warning.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ConversationKind};
use sotto_core::identity::DeviceId;
use sotto_proto::v1::{LogEntry, ServerFrame, client_frame, response, server_frame};
use sotto_testkit::{
    ConnView, HostileProxy, Mallory, TestServer, link, register, server_log, warnings, within,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many log entries `username` has: the `account_seq` of the next one.
fn next_seq(server: &TestServer, username: &str) -> u64 {
    server_log::next_seq(server.data_dir(), username)
}

fn server_appends(server: &TestServer, username: &str, entry: &LogEntry) {
    server_log::append(server.data_dir(), username, entry);
}

fn server_adds_device(
    server: &TestServer,
    identity_secret: &[u8],
    attest: impl FnOnce(LogEntry) -> LogEntry,
) -> DeviceId {
    server_log::add_device(server.data_dir(), "alice", identity_secret, attest)
}

/// Syncs and returns the warnings the sync raised.
async fn sync_warnings(client: &mut Client) -> Vec<String> {
    warnings(&client.sync().await.unwrap())
}

/// The devices `client`'s account lists that none of its devices added.
async fn unknown_devices(client: &mut Client) -> Vec<String> {
    client
        .devices()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.unknown)
        .map(|d| d.device_id)
        .collect()
}

/// The acceptance test of the issue: a server that adds a device to
/// Alice's account with her stolen identity key. Both her devices warn at
/// their next sync, naming the device; `devices` marks it; the warning
/// stays (on each device) until acknowledged there; removing the device
/// settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_added_with_a_stolen_identity_key_makes_every_alice_device_warn() {
    within(async {
        let server = TestServer::start().await;
        let (mut phone, _p) = register(&server.url(), "alice").await;
        let (mut laptop, _l) = link(&mut phone).await;
        assert!(sync_warnings(&mut phone).await.is_empty());
        assert!(sync_warnings(&mut laptop).await.is_empty());

        let ghost = server_log::add_device_account(
            server.data_dir(),
            "alice",
            &phone.identity_secret(),
            |e| e,
        );
        let ghost_hex = ghost.device_id.to_string();
        // It logs in and offers KeyPackages, so it could be added.
        let _ghost = Mallory::log_in(&server.url(), ghost).await;

        for device in [&mut phone, &mut laptop] {
            let warned = sync_warnings(device).await;
            assert_eq!(warned.len(), 1, "{warned:?}");
            assert!(warned[0].contains(&ghost_hex), "{}", warned[0]);
            assert!(warned[0].contains("none of your devices"), "{}", warned[0]);
            assert_eq!(unknown_devices(device).await, vec![ghost_hex.clone()]);
            // Raised once, shown until acknowledged.
            assert!(sync_warnings(device).await.is_empty());
            let pending = device.account_warnings(false).unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].text, warned[0]);
        }

        // A conversation Alice starts now has her laptop in it, not the
        // unknown device.
        let (_bob, _b) = register(&server.url(), "bob").await;
        phone.send_direct("bob", "hi").await.unwrap();
        let members: Vec<String> = phone
            .conversation_members(ConversationKind::Direct, "bob")
            .unwrap()
            .into_iter()
            .map(|m| m.device_id)
            .collect();
        assert!(
            members.contains(&laptop.device_id().to_string()),
            "{members:?}"
        );
        assert!(!members.contains(&ghost_hex), "{members:?}");

        assert_eq!(phone.acknowledge_account_warnings().unwrap(), 1);
        assert!(phone.account_warnings(false).unwrap().is_empty());
        assert_eq!(phone.account_warnings(true).unwrap().len(), 1);
        // Acknowledged on the phone only.
        assert_eq!(laptop.account_warnings(false).unwrap().len(), 1);
        // Still marked until removed.
        assert_eq!(unknown_devices(&mut phone).await, vec![ghost_hex.clone()]);

        // The laptop removes the ghost: that settles its warning there, and
        // the phone learns of the removal without a warning.
        laptop.remove_device(&ghost_hex).await.unwrap();
        assert!(laptop.account_warnings(false).unwrap().is_empty());
        assert!(unknown_devices(&mut laptop).await.is_empty());
        assert!(sync_warnings(&mut phone).await.is_empty());
        assert!(unknown_devices(&mut phone).await.is_empty());
    })
    .await;
}

/// No false alarms: devices linked and removed by Alice's own devices —
/// including one linked later, which learns the history when linked, and
/// changes made after a device was linked — raise no warning anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_alices_own_devices_make_raise_no_warning() {
    within(async {
        let server = TestServer::start().await;
        let (mut phone, _p) = register(&server.url(), "alice").await;
        let (mut laptop, _l) = link(&mut phone).await;
        // Linked by the laptop, not by the device that registered.
        let (mut tablet, _t) = link(&mut laptop).await;
        // Linked after the laptop and tablet: they learn of it from the
        // phone's signature on the entry.
        let (desktop, _d) = link(&mut phone).await;
        for device in [&mut phone, &mut laptop, &mut tablet] {
            assert!(sync_warnings(device).await.is_empty());
        }
        tablet
            .remove_device(&desktop.device_id().to_string())
            .await
            .unwrap();
        for device in [&mut phone, &mut laptop, &mut tablet] {
            assert!(sync_warnings(device).await.is_empty());
            assert!(unknown_devices(device).await.is_empty());
            assert!(device.account_warnings(true).unwrap().is_empty());
            assert_eq!(device.devices().await.unwrap().len(), 3);
        }
    })
    .await;
}

/// A phone Alice removed still holds her identity key and its own device
/// key. The removal rotated her identity key, so what it signs with the old
/// one does not replay at all (`rotation.rs`); here the server holds the
/// new key too (leaked), adds a device with it and has the phone sign the
/// entry as its author: Alice's devices no longer trust the phone, so they
/// warn, and say which device claims to have done it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_that_adds_a_device_is_caught() {
    within(async {
        let server = TestServer::start().await;
        let (mut laptop, _l) = register(&server.url(), "alice").await;
        let (stolen_phone, _p) = link(&mut laptop).await;
        let phone_hex = stolen_phone.device_id().to_string();
        laptop.remove_device(&phone_hex).await.unwrap();
        assert!(sync_warnings(&mut laptop).await.is_empty());

        let ghost = server_adds_device(&server, &laptop.identity_secret(), |e| {
            stolen_phone.attest(e)
        });

        let warned = sync_warnings(&mut laptop).await;
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains(&ghost.to_string()), "{}", warned[0]);
        assert!(
            warned[0].contains(&format!("names device {phone_hex} as its author")),
            "{}",
            warned[0]
        );
        assert_eq!(unknown_devices(&mut laptop).await, [ghost.to_string()]);
    })
    .await;
}

/// The server replays one of Alice's old entries (same bytes, signed by
/// her): her account's history no longer replays, and she is warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_entry_is_caught() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (_laptop, _l) = link(&mut alice).await;
        assert!(sync_warnings(&mut alice).await.is_empty());
        let db = server.db();
        let old: Vec<u8> = db
            .query_row(
                "SELECT entry FROM log_entries WHERE username = 'alice' ORDER BY idx LIMIT 1 OFFSET 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let old = <LogEntry as sotto_proto::Message>::decode(old.as_slice()).unwrap();
        server_appends(&server, "alice", &old);

        let warned = sync_warnings(&mut alice).await;
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("your own account's key log does not add up"),
            "{}",
            warned[0]
        );
        assert_eq!(alice.account_warnings(false).unwrap().len(), 1);
    })
    .await;
}

/// The server hides Alice's newest entry (the identity rotation that came
/// with her removal of a stolen phone) from her own look-ups. The entries
/// it shows still verify, but her device knows it made that entry: it
/// warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_removal_is_caught_by_the_device_that_made_it() {
    within(async {
        let server = TestServer::start().await;
        let hiding = Arc::new(AtomicBool::new(false));
        let hide = Arc::clone(&hiding);
        let proxy = HostileProxy::start(
            &server.url(),
            move |conn: &ConnView, mut frame: ServerFrame| {
                let about_alice = matches!(
                    &conn.request,
                    Some(client_frame::Body::GetAccountLog(g)) if g.username == "alice"
                );
                if about_alice
                    && hide.load(Ordering::SeqCst)
                    && let Some(server_frame::Body::Response(r)) = &mut frame.body
                    && let Some(response::Result::AccountLog(log)) = &mut r.result
                {
                    log.entries.pop();
                }
                Some(frame)
            },
        )
        .await;
        let (mut laptop, _l) = register(&proxy.url(), "alice").await;
        let (phone, _p) = link(&mut laptop).await;
        // The removal's entry, then the identity rotation that goes with
        // it: the newest entry, the one the server hides.
        let seq = next_seq(&server, "alice") + 1;
        laptop
            .remove_device(&phone.device_id().to_string())
            .await
            .unwrap();
        assert!(sync_warnings(&mut laptop).await.is_empty());

        hiding.store(true, Ordering::SeqCst);
        let warned = sync_warnings(&mut laptop).await;
        // Caught twice: the key directory holds a newer version than the
        // log shown, and the device knows it made the hidden entry.
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(
            warned[0].contains("key directory entry does not add up"),
            "{}",
            warned[0]
        );
        assert!(
            warned[1].contains(&format!("no longer shows entry {seq} of your account")),
            "{}",
            warned[1]
        );
    })
    .await;
}

/// A device linked later starts from the history its linking device
/// hands it, not from the log as the server shows it: a ghost the server
/// added before the link (that the linking device had not yet seen) makes
/// the new device warn too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_after_a_ghost_was_added_warns_about_it() {
    within(async {
        let server = TestServer::start().await;
        let (mut phone, _p) = register(&server.url(), "alice").await;
        let ghost = server_adds_device(&server, &phone.identity_secret(), |e| e);
        let (mut laptop, _l) = link(&mut phone).await;
        for device in [&mut laptop, &mut phone] {
            let warned = sync_warnings(device).await;
            assert_eq!(warned.len(), 1, "{warned:?}");
            assert!(warned[0].contains(&ghost.to_string()), "{}", warned[0]);
        }
    })
    .await;
}

/// A profile made before the watch knows no entries: it trusts its log as
/// it finds it at its first check (no warning for the past), then watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_from_before_the_watch_starts_from_its_log_then_watches() {
    within(async {
        let server = TestServer::start().await;
        let dir = tempfile::TempDir::new().unwrap();
        let mut alice = Client::register(dir.path(), "alice", &server.url())
            .await
            .unwrap();
        let (_laptop, _l) = link(&mut alice).await;
        alice.disconnect().await;
        drop(alice);
        let db = rusqlite::Connection::open(dir.path().join("sotto.db")).unwrap();
        db.execute("DELETE FROM own_events", []).unwrap();
        drop(db);

        let mut alice = Client::open(dir.path()).unwrap();
        assert!(sync_warnings(&mut alice).await.is_empty());
        let ghost = server_adds_device(&server, &alice.identity_secret(), |e| e);
        let warned = sync_warnings(&mut alice).await;
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains(&ghost.to_string()), "{}", warned[0]);
    })
    .await;
}
