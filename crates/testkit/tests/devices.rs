//! Multi-device: linking a second device, what it receives, removing it, and
//! safety numbers. Each test body runs against one SQLite server
//! (`NAME::sqlite`) and three PostgreSQL + NATS nodes (`NAME::cluster`),
//! where the new device joins through another node than its account's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, ConversationKind, EntryKind, HistoryEntry, Trust};
use sotto_testkit::{link_through, on_each_backend, register, within};
use tempfile::TempDir;

fn texts(entries: &[HistoryEntry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Text)
        .map(|e| (e.conversation.clone(), e.sender.clone(), e.text.clone()))
        .collect()
}

fn line(conversation: &str, sender: &str, text: &str) -> (String, String, String) {
    (conversation.into(), sender.into(), text.into())
}

on_each_backend! {
    async fn a_linked_device_gets_new_messages_and_its_accounts_own(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            let (mut carol, _c) = register(&deployment.url(), "carol").await;
            alice.send_direct("bob", "before linking").await.unwrap();
            alice
                .create_group("trio", &["bob".into(), "carol".into()])
                .await
                .unwrap();
            alice
                .send_group("trio", "group before linking")
                .await
                .unwrap();
            bob.sync().await.unwrap();
            carol.sync().await.unwrap();

            let (mut bob2, _b2) = link_through(&mut bob, &deployment.url()).await;
            let devices = bob2.devices().await.unwrap();
            assert_eq!(devices.len(), 2);
            assert_eq!(devices.iter().filter(|d| d.this_device).count(), 1);

            // Peers learn of the new device through the commits that added it.
            let seen = alice.sync().await.unwrap();
            assert!(
                seen.iter()
                    .any(|e| e.text.starts_with("bob added your device")
                        || e.text.contains("bob added bob")),
                "{seen:?}"
            );
            alice.send_direct("bob", "after linking").await.unwrap();
            alice
                .send_group("trio", "group after linking")
                .await
                .unwrap();

            let got = bob2.sync().await.unwrap();
            assert_eq!(
                texts(&got),
                vec![
                    line("alice", "alice", "after linking"),
                    line("trio", "alice", "group after linking")
                ]
            );
            // The first device still gets everything too.
            let got = bob.sync().await.unwrap();
            assert_eq!(
                texts(&got),
                vec![
                    line("alice", "alice", "after linking"),
                    line("trio", "alice", "group after linking")
                ]
            );

            // What one device sends, the other sees as sent by its account.
            bob.send_direct("alice", "from the first device")
                .await
                .unwrap();
            assert_eq!(
                texts(&bob2.sync().await.unwrap()),
                vec![line("alice", "bob", "from the first device")]
            );
            bob2.send_group("trio", "from the second device")
                .await
                .unwrap();
            assert_eq!(
                texts(&bob.sync().await.unwrap()),
                vec![line("trio", "bob", "from the second device")]
            );
            assert_eq!(
                texts(&alice.sync().await.unwrap()),
                vec![
                    line("bob", "bob", "from the first device"),
                    line("trio", "bob", "from the second device")
                ]
            );
            assert_eq!(
                texts(&carol.sync().await.unwrap()),
                vec![
                    line("trio", "alice", "group after linking"),
                    line("trio", "bob", "from the second device")
                ]
            );
        })
        .await;
    }
}

on_each_backend! {
    async fn a_removed_device_can_neither_decrypt_nor_log_in(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            alice.send_direct("bob", "hello").await.unwrap();
            bob.sync().await.unwrap();
            let (mut bob2, _b2) = link_through(&mut bob, &deployment.url()).await;
            bob2.sync().await.unwrap();
            alice.sync().await.unwrap();

            bob.remove_device(&bob2.device_id().to_string())
                .await
                .unwrap();
            assert_eq!(bob.devices().await.unwrap().len(), 1);

            // Alice processes the removal, then writes; capture the ciphertext.
            alice.sync().await.unwrap();
            alice
                .queue_text(
                    ConversationKind::Direct,
                    "bob",
                    "not for the removed device",
                )
                .unwrap();
            let ciphertext = alice.outbox_payloads().unwrap().pop().unwrap();
            alice.submit_staged().await.unwrap();
            assert!(
                bob2.try_decrypt(&ciphertext).is_err(),
                "the removed device decrypted a new message"
            );
            assert_eq!(
                texts(&bob.sync().await.unwrap()),
                vec![line("alice", "alice", "not for the removed device")]
            );

            bob2.disconnect().await;
            let err = bob2.sync().await.unwrap_err();
            assert!(
                err.server_code() == Some(sotto_proto::v1::ErrorCode::DeviceRemoved),
                "a removed device logged in: {err}"
            );
        })
        .await;
    }
}

on_each_backend! {
    async fn safety_numbers_match_and_can_be_marked_verified(deployment) {
        within(async {
            let (mut alice, _a) = register(&deployment.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            let (from_alice, verified) = alice.safety_number("bob", false).await.unwrap();
            let (from_bob, _) = bob.safety_number("alice", false).await.unwrap();
            assert_eq!(from_alice, from_bob);
            assert!(!verified);
            assert_eq!(alice.mark_verified("bob").await.unwrap(), from_alice);
            assert!(alice.safety_number("bob", false).await.unwrap().1);
            let err = alice.safety_number("nobody", false).await.unwrap_err();
            assert!(matches!(err, ClientError::Usage(_)), "{err}");
        })
        .await;
    }
}

on_each_backend! {
    async fn a_wrong_link_code_is_refused(deployment) {
        within(async {
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            let _code = bob.open_link().await.unwrap();
            let other = sotto_client::LinkCode::generate(&deployment.url());
            let dir = TempDir::new().unwrap();
            let err = Client::join_link(dir.path(), &other.reveal(), &Trust::web_roots(), |_| {})
                .await
                .unwrap_err();
            assert!(err.to_string().contains("unknown or expired"), "{err}");
            let err = Client::join_link(dir.path(), "not-a-code", &Trust::web_roots(), |_| {})
                .await
                .unwrap_err();
            assert!(err.to_string().contains("not a link code"), "{err}");
        })
        .await;
    }
}

on_each_backend! {
    /// The linking device hands the new one its pinned log key inside the
    /// sealed bundle: a server (or someone in the way) that shows the new
    /// device another key is refused, and nothing is saved.
    async fn a_new_device_refuses_a_server_whose_log_key_differs_from_its_other_devices_pin(deployment) {
        use sotto_proto::v1::server_frame;
        use sotto_testkit::HostileProxy;
        within(async {
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            // The new device reaches the server through a proxy that swaps the
            // log key in every challenge.
            let proxy = HostileProxy::start(
                &deployment.url(),
                |_: &_, mut frame: sotto_proto::v1::ServerFrame| {
                    if let Some(server_frame::Body::Challenge(c)) = frame.body.as_mut() {
                        c.log_key = vec![7; 32];
                    }
                    Some(frame)
                },
            )
            .await;
            let code = bob.open_link().await.unwrap();
            let secret = code.reveal().split('@').next().unwrap().to_owned();
            let text = format!("{secret}@{}", proxy.url());
            let dir = TempDir::new().unwrap();
            let path = dir.path().to_path_buf();
            let joining = tokio::spawn(async move {
                Client::join_link(&path, &text, &Trust::web_roots(), |_| {}).await
            });
            let request = bob.wait_for_link_request(&code).await.unwrap();
            bob.approve_link(&code, &request).await.unwrap();
            let err = joining
                .await
                .unwrap()
                .expect_err("a swapped log key must be refused");
            assert!(
                matches!(&err, ClientError::KeyLog(m) if m.contains("your other device pinned")),
                "{err:?}"
            );
            let reopened = Client::open(dir.path());
            assert!(reopened.is_err(), "a profile was saved despite the refusal");
        })
        .await;
    }
}
