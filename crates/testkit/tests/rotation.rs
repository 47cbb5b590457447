//! Cutting off a stolen device (issue #13, item 4): `device remove`
//! rotates the account's identity key. Contacts see a rotation, not an
//! unexplained change; the removed device's copy of the old key can log
//! nothing; a server that logs something with it anyway is caught.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{ClientError, ConversationKind, EntryKind};
use sotto_core::identity::IdentityKey;
use sotto_testkit::{Mallory, TestServer, link, register, server_log, texts, warnings, within};

/// Bob removes his "stolen" second device: his identity key is rotated,
/// Alice sees "bob's key was rotated by bob" (no warning, no refusal), her
/// safety number with him changes and loses its verified mark, and they
/// go on talking. Bob's third device, which did not get the new key, keeps
/// messaging and is told it cannot manage devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_device_rotates_the_identity_and_contacts_see_a_rotation() {
    within(async {
        let server = TestServer::start().await;
        let url = server.url();
        let (mut alice, _a) = register(&url, "alice").await;
        let (mut bob, _b) = register(&url, "bob").await;
        alice.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        let (before, _) = alice.safety_number("bob", false).await.unwrap();
        alice.mark_verified("bob").await.unwrap();
        let (stolen, _s) = link(&mut bob).await;
        let (mut tablet, _t) = link(&mut bob).await;
        tablet.sync().await.unwrap();
        alice.sync().await.unwrap();

        let old_key = bob.identity_key();
        let removal = bob
            .remove_device(&stolen.device_id().to_string())
            .await
            .unwrap();
        assert_eq!(removal.old_identity_key, old_key);
        assert_ne!(removal.new_identity_key, old_key);
        assert_eq!(bob.identity_key(), removal.new_identity_key);
        assert_eq!(
            removal.devices_given_new_key,
            [tablet.device_id().to_string()]
        );
        assert!(removal.devices_without_new_key.is_empty());
        assert_eq!(bob.devices().await.unwrap().len(), 2);
        assert!(
            bob.account_warnings(false).unwrap().is_empty(),
            "the remover knows its own rotation"
        );

        // Alice: a rotation, explained by the log; no warning, no refusal.
        let seen = alice.sync().await.unwrap();
        assert!(warnings(&seen).is_empty(), "{seen:?}");
        let (after, verified) = alice.safety_number("bob", false).await.unwrap();
        assert_ne!(after, before, "the safety number is made of identity keys");
        assert!(!verified, "the verified mark was for the old key");
        assert!(!alice.is_verified("bob").unwrap());
        let history = alice.history(ConversationKind::Direct, "bob").unwrap();
        let notice: Vec<_> = history
            .iter()
            .filter(|e| e.kind == EntryKind::System && e.text.contains("rotated"))
            .collect();
        assert_eq!(notice.len(), 1, "{history:?}");
        assert!(
            notice[0].text.starts_with("bob's key was rotated by bob"),
            "{}",
            notice[0].text
        );
        assert!(!notice[0].text.starts_with("WARNING"));

        // They go on talking, the device Bob kept included.
        alice.send_direct("bob", "still here").await.unwrap();
        assert_eq!(texts(&bob.sync().await.unwrap()), ["still here"]);
        assert_eq!(texts(&tablet.sync().await.unwrap()), ["still here"]);
        tablet
            .send_direct("alice", "from the tablet")
            .await
            .unwrap();
        assert_eq!(texts(&alice.sync().await.unwrap()), ["from the tablet"]);

        // The tablet was handed the new key and adopted it; nothing about
        // the rotation is unexplained to it, nor left as a notice.
        assert_eq!(tablet.identity_key(), removal.new_identity_key);
        assert_eq!(tablet.devices().await.unwrap().len(), 2);
        assert!(tablet.account_warnings(true).unwrap().is_empty());
        assert!(
            !tablet
                .device_warnings()
                .unwrap()
                .iter()
                .any(|(_, text)| text.contains("does not hold the new key")),
        );
        assert!(tablet.groups().unwrap().is_empty(), "no conversation shows");
    })
    .await;
}

/// Item 4's handover: Alice's phone removes her laptop-2 while her tablet
/// is offline. The tablet gets the new key from its mailbox when it syncs,
/// adopts it (the log names it), and can then link a new device; the
/// handover shows as no conversation and leaves no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_during_a_removal_gets_the_new_key_and_links_again() {
    within(async {
        let server = TestServer::start().await;
        let url = server.url();
        let (mut phone, _p) = register(&url, "alice").await;
        let (mut bob, _b) = register(&url, "bob").await;
        phone.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        let (laptop2, _l) = link(&mut phone).await;
        let (mut tablet, _t) = link(&mut phone).await;
        tablet.sync().await.unwrap();

        // The tablet is offline from here until it syncs.
        let removal = phone
            .remove_device(&laptop2.device_id().to_string())
            .await
            .unwrap();
        assert_eq!(
            removal.devices_given_new_key,
            [tablet.device_id().to_string()]
        );
        assert_ne!(tablet.identity_key(), removal.new_identity_key);

        // Before it fetches its mailbox, the tablet reads its log: it is
        // told it lacks the new key. (Managing devices would fetch the
        // mailbox first, and so the key.)
        assert_eq!(tablet.devices().await.unwrap().len(), 2);
        let lacks = |c: &sotto_client::Client| {
            c.device_warnings()
                .unwrap()
                .iter()
                .any(|(_, text)| text.contains("does not hold the new key"))
        };
        assert!(lacks(&tablet));
        let seen = tablet.sync().await.unwrap();
        assert!(warnings(&seen).is_empty(), "{seen:?}");
        assert_eq!(tablet.identity_key(), removal.new_identity_key);
        assert!(tablet.groups().unwrap().is_empty(), "no conversation shows");
        assert!(!lacks(&tablet), "the notice goes once the key is adopted");

        // A full link from the tablet: logged with the new key, and the new
        // device reads the conversation with Bob.
        let (mut desk, _d) = link(&mut tablet).await;
        desk.sync().await.unwrap();
        assert_eq!(tablet.devices().await.unwrap().len(), 3);
        assert_eq!(desk.identity_key(), removal.new_identity_key);
        bob.send_direct("alice", "to every device").await.unwrap();
        assert_eq!(texts(&desk.sync().await.unwrap()), ["to every device"]);
        let seen = phone.sync().await.unwrap();
        assert!(warnings(&seen).is_empty(), "{seen:?}");
        assert!(phone.account_warnings(true).unwrap().is_empty());
    })
    .await;
}

/// The removed device gets none of the handover: the server refuses it
/// and its mailbox is gone, the handover group was made without it, and
/// it keeps only the old key, with which it can change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_removed_device_gets_nothing_of_the_handover() {
    within(async {
        let server = TestServer::start().await;
        let url = server.url();
        let (mut phone, _p) = register(&url, "alice").await;
        let (mut laptop2, _l) = link(&mut phone).await;
        let (mut tablet, _t) = link(&mut phone).await;
        laptop2.sync().await.unwrap();
        tablet.sync().await.unwrap();
        let old_key = laptop2.identity_key();

        let removal = phone
            .remove_device(&laptop2.device_id().to_string())
            .await
            .unwrap();
        assert_eq!(
            removal.devices_given_new_key,
            [tablet.device_id().to_string()]
        );

        // Everything the server queued (the handover for the tablet among
        // it, not yet fetched): the removed device's MLS state opens none of
        // it as a handover.
        let payloads: Vec<Vec<u8>> = server
            .db()
            .prepare("SELECT payload FROM messages")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!payloads.is_empty());
        for payload in &payloads {
            if let Ok(plaintext) = laptop2.try_decrypt(payload) {
                let content = sotto_core::content::decode(&plaintext).unwrap();
                assert!(
                    !matches!(
                        content.body,
                        Some(sotto_core::content::Body::IdentityHandover(_))
                    ),
                    "the removed device read the handover"
                );
            }
        }
        tablet.sync().await.unwrap();
        assert_eq!(tablet.identity_key(), removal.new_identity_key);

        assert!(laptop2.sync().await.is_err(), "its logins are refused");
        assert_eq!(laptop2.identity_key(), old_key, "it never got the new key");
        assert!(
            laptop2
                .remove_device(&tablet.device_id().to_string())
                .await
                .is_err()
        );
        assert!(laptop2.open_link().await.is_err());
        assert_eq!(phone.devices().await.unwrap().len(), 2);
    })
    .await;
}

/// A member of another account hands Alice an identity key in a group
/// they share: an attack (a key Mallory holds, for Alice to sign with),
/// ignored with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_handed_over_by_another_account_is_ignored_with_a_warning() {
    within(async {
        let server = TestServer::start().await;
        let url = server.url();
        let (mut alice, _a) = register(&url, "alice").await;
        let mut mallory = Mallory::register(&url, "mallory").await;
        let alice_devices = mallory.claim("alice").await;
        let mut group = mallory.create_group(&[7; 16]);
        mallory.add(&mut group, &alice_devices).await.unwrap();
        let planted = IdentityKey::generate();
        mallory
            .say(
                &mut group,
                Mallory::identity_handover(planted.secret().as_slice()),
            )
            .await
            .unwrap();
        let before = alice.identity_key();

        let seen = alice.sync().await.unwrap();
        let warned = warnings(&seen);
        assert_eq!(warned.len(), 1, "{seen:?}");
        assert!(
            warned[0].contains("mallory sent this device an identity key"),
            "{}",
            warned[0]
        );
        assert_eq!(alice.identity_key(), before);
    })
    .await;
}

/// A device of the account hands over a key the log does not name (a
/// device whose keys someone holds, or a bug): not adopted, and a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_key_the_log_does_not_name_is_not_adopted() {
    within(async {
        let server = TestServer::start().await;
        let url = server.url();
        let (mut phone, _p) = register(&url, "alice").await;
        let (mut tablet, _t) = link(&mut phone).await;
        tablet.sync().await.unwrap();
        let before = tablet.identity_key();
        let unnamed = IdentityKey::generate();

        let given = phone
            .hand_over_identity(unnamed.secret().as_slice())
            .await
            .unwrap();
        assert_eq!(given, [tablet.device_id().to_string()]);

        let seen = tablet.sync().await.unwrap();
        let warned = warnings(&seen);
        assert_eq!(warned.len(), 1, "{seen:?}");
        assert!(
            warned[0].contains("which your account's key log does not name"),
            "{}",
            warned[0]
        );
        assert_eq!(tablet.identity_key(), before);
        assert!(tablet.groups().unwrap().is_empty());
        // It still manages the account with the key the log names.
        let (_desk, _d) = link(&mut tablet).await;
        assert_eq!(tablet.devices().await.unwrap().len(), 3);
    })
    .await;
}

/// The removed device still holds the old identity key. A server that logs
/// a device with it anyway (colluding with the thief) is caught: contacts
/// refuse the account's log, and the account's own devices are warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_logged_with_the_old_key_after_a_rotation_is_refused() {
    within(async {
        let server = TestServer::start().await;
        let url = server.url();
        let (mut alice, _a) = register(&url, "alice").await;
        let (mut bob, _b) = register(&url, "bob").await;
        alice.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        let (stolen, _s) = link(&mut bob).await;
        let old_secret = stolen.identity_secret();
        bob.remove_device(&stolen.device_id().to_string())
            .await
            .unwrap();
        alice.safety_number("bob", false).await.unwrap();

        // The thief's old key, appended by the server itself.
        server_log::add_device(server.data_dir(), "bob", &old_secret, |e| stolen.attest(e));

        let err = alice.safety_number("bob", false).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::KeyLog(why) if why.contains("rotated away from")),
            "{err}"
        );

        let seen = bob.sync().await.unwrap();
        let warned = warnings(&seen);
        assert_eq!(warned.len(), 1, "{seen:?}");
        assert!(
            warned[0].contains("your own account's key log does not add up"),
            "{}",
            warned[0]
        );
    })
    .await;
}

/// A rotation nobody of the account made (the server, or a thief holding
/// the key, logs one): contacts cannot tell it from Bob's own, but Bob's
/// devices can, and warn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_no_device_made_is_a_warning_on_the_account() {
    within(async {
        let server = TestServer::start().await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        bob.sync().await.unwrap();
        let old = sotto_core::identity::IdentityKey::from_secret(&bob.identity_secret()).unwrap();
        let user = sotto_core::identity::Username::parse("bob").unwrap();
        let new = sotto_core::identity::IdentityKey::generate();
        let seq = server_log::next_seq(server.data_dir(), "bob");
        server_log::append(
            server.data_dir(),
            "bob",
            &old.identity_rotated(&user, seq, &new),
        );

        let seen = bob.sync().await.unwrap();
        let warned = warnings(&seen);
        assert!(
            warned
                .iter()
                .any(|w| w.contains("your identity key was rotated")
                    && w.contains("none of your devices did it")),
            "{seen:?}"
        );
    })
    .await;
}
