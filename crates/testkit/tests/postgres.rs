//! End to end on a PostgreSQL-backed server (`SOTTO_TEST_POSTGRES`; each
//! test in a schema of its own, skipped without the variable): real
//! sockets, real PostgreSQL, real MLS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use sotto_client::{Client, EntryKind, HistoryEntry};
use sotto_testkit::postgres::TestDatabase;
use sotto_testkit::{TestServer, register};
use std::time::Duration;

fn texts(entries: &[HistoryEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Text)
        .map(|e| (e.sender.clone(), e.text.clone()))
        .collect()
}

fn pair(sender: &str, text: &str) -> (String, String) {
    (sender.to_owned(), text.to_owned())
}

/// Two clients chat 1:1 (one of them offline at first), then in a group
/// with a third; what they sent is in PostgreSQL's tables only as
/// ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_server_carries_direct_and_group_chats() {
    let Some(db) = TestDatabase::create("postgres_server_carries_direct_and_group_chats").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let server = TestServer::start_postgres(db.url()).await;
        let url = server.url();
        let (mut alice, _alice_dir) = register(&url, "alice").await;
        let (mut bob, bob_dir) = register(&url, "bob").await;
        let (mut carol, _c) = register(&url, "carol").await;
        bob.disconnect().await;
        drop(bob);

        alice
            .send_direct("bob", "hi bob, secret words")
            .await
            .unwrap();
        let mut bob = Client::open(bob_dir.path()).unwrap();
        assert_eq!(
            texts(&bob.sync().await.unwrap()),
            vec![pair("alice", "hi bob, secret words")]
        );
        bob.send_direct("alice", "hello alice").await.unwrap();
        assert_eq!(
            texts(&alice.sync().await.unwrap()),
            vec![pair("bob", "hello alice")]
        );

        alice
            .create_group("team", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        alice.send_group("team", "welcome").await.unwrap();
        for member in [&mut bob, &mut carol] {
            assert_eq!(
                texts(&member.sync().await.unwrap()),
                vec![pair("alice", "welcome")]
            );
        }
        carol.send_group("team", "thanks").await.unwrap();

        // Queued for alice and bob, in PostgreSQL, as ciphertext only.
        let client = db.client().await;
        let queued: i64 = client
            .query_one("SELECT count(*) FROM mailbox", &[])
            .await
            .unwrap()
            .get(0);
        assert!(queued >= 2, "carol's message is queued: {queued}");
        for row in client
            .query("SELECT payload FROM messages", &[])
            .await
            .unwrap()
        {
            let payload: Vec<u8> = row.get(0);
            assert!(
                !payload.windows(6).any(|w| w == b"thanks"),
                "plaintext in the database"
            );
        }

        for member in [&mut alice, &mut bob] {
            assert_eq!(
                texts(&member.sync().await.unwrap()),
                vec![pair("carol", "thanks")]
            );
        }
    })
    .await
    .expect("test timed out");
}
