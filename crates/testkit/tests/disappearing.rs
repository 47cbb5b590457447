//! Disappearing messages end to end (issue #14, item 3): any member sets a
//! conversation's timer, everyone sees who did, and a message sent under it
//! is deleted from both profiles' SQLite files (not hidden) once it
//! expires, and from the server's while still undelivered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{ConversationKind, EntryKind, HistoryEntry};
use sotto_testkit::{TestServer, register, within};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DIRECT: ConversationKind = ConversationKind::Direct;
const GROUP: ConversationKind = ConversationKind::Group;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `text` is anywhere in the profile's database files, after
/// folding the write-ahead log into the database (as SQLite does by
/// itself from time to time): rows, free pages, the log.
fn profile_holds(profile: &Path, text: &str) -> bool {
    let db_path = profile.join("sotto.db");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let in_rows: i64 = db
        .query_row(
            "SELECT (SELECT count(*) FROM messages WHERE body LIKE ?1)
                  + (SELECT count(*) FROM message_versions WHERE body LIKE ?1)",
            [format!("%{text}%")],
            |r| r.get(0),
        )
        .unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(db);
    let mut in_files = false;
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db_path.display())) {
            in_files |= contains(&bytes, text.as_bytes());
        }
    }
    in_rows > 0 || in_files
}

/// How many payloads the server holds with a disappearing-message expiry,
/// and their expiries.
fn server_expiries(server: &TestServer) -> Vec<u64> {
    let db = server.db();
    let mut stmt = db
        .prepare("SELECT expires_at FROM messages WHERE expires_at IS NOT NULL")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| u64::try_from(r.unwrap()).unwrap())
        .collect()
}

fn system_lines(entries: &[HistoryEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::System)
        .map(|e| e.text.clone())
        .collect()
}

fn find<'a>(entries: &'a [HistoryEntry], text: &str) -> Option<&'a HistoryEntry> {
    entries.iter().find(|e| e.text == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_timer_deletes_messages_from_both_profiles_and_the_server() {
    let server = TestServer::start().await;
    let (mut alice, alice_dir) = within(register(&server.url(), "alice")).await;
    let (mut bob, bob_dir) = within(register(&server.url(), "bob")).await;
    within(alice.send_direct("bob", "hello, kept"))
        .await
        .unwrap();
    within(bob.sync()).await.unwrap();

    // Bob, not the one who started the conversation, sets the timer.
    let line = within(bob.set_timer(DIRECT, "alice", 5)).await.unwrap();
    assert_eq!(line.text, "bob set disappearing messages to 5s");
    let got = within(alice.sync()).await.unwrap();
    assert!(
        system_lines(&got).contains(&"bob set disappearing messages to 5s".to_owned()),
        "{got:#?}"
    );

    // Both sides' messages now disappear.
    let before = now_ms();
    let sent = within(alice.send_direct("bob", "SECRET-alice-5s"))
        .await
        .unwrap();
    let expires = sent.chat.expires_at.expect("a disappearing message");
    assert!(
        expires >= before + 5_000 && expires <= now_ms() + 6_000,
        "{expires}"
    );
    let got = within(bob.sync()).await.unwrap();
    assert_eq!(
        find(&got, "SECRET-alice-5s").unwrap().chat.expires_at,
        Some(expires)
    );
    within(bob.send_direct("alice", "SECRET-bob-5s"))
        .await
        .unwrap();
    within(alice.sync()).await.unwrap();
    // One alice never fetches: the server holds it, with its coarse
    // expiry (at or after the real one, on a 10-second bucket).
    let undelivered = within(bob.send_direct("alice", "SECRET-undelivered-5s"))
        .await
        .unwrap();
    let real = undelivered.chat.expires_at.unwrap() / 1000;
    let buckets = server_expiries(&server);
    assert!(
        buckets
            .iter()
            .any(|b| *b >= real && *b < real + 10 && b % 10 == 0),
        "{buckets:?} vs {real}"
    );
    assert!(profile_holds(alice_dir.path(), "SECRET-alice-5s"));
    assert!(profile_holds(bob_dir.path(), "SECRET-undelivered-5s"));

    // The server's sweep deletes it (bucket up to 10 s, sweep every 5 s).
    within(async {
        while !server_expiries(&server).is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let got = within(alice.sync()).await.unwrap();
    assert!(
        find(&got, "SECRET-undelivered-5s").is_none(),
        "delivered after expiry: {got:#?}"
    );
    // Each client deleted its copies (every command purges): no row, and
    // not in the files either.
    within(bob.sync()).await.unwrap();
    for (who, dir) in [("alice", &alice_dir), ("bob", &bob_dir)] {
        for secret in ["SECRET-alice-5s", "SECRET-bob-5s", "SECRET-undelivered-5s"] {
            assert!(
                !profile_holds(dir.path(), secret),
                "{who} still holds {secret}"
            );
        }
    }
    let history = alice.history(DIRECT, "bob").unwrap();
    assert!(find(&history, "hello, kept").is_some());
    assert!(find(&history, "bob set disappearing messages to 5s").is_some());
    assert!(history.iter().all(|e| !e.text.starts_with("SECRET")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_group_member_changes_the_timer_and_everyone_sees_it() {
    let server = TestServer::start().await;
    let (mut alice, _a) = within(register(&server.url(), "alice")).await;
    let (mut bob, _b) = within(register(&server.url(), "bob")).await;
    let (mut carol, _c) = within(register(&server.url(), "carol")).await;
    within(alice.create_group("trio", &["bob".into(), "carol".into()]))
        .await
        .unwrap();
    within(bob.sync()).await.unwrap();
    within(carol.sync()).await.unwrap();

    within(carol.set_timer(GROUP, "trio", 3_600)).await.unwrap();
    for member in [&mut alice, &mut bob] {
        let got = within(member.sync()).await.unwrap();
        assert!(
            system_lines(&got).contains(&"carol set disappearing messages to 1h".to_owned()),
            "{got:#?}"
        );
    }
    let before = now_ms();
    let sent = within(bob.send_group("trio", "an hour")).await.unwrap();
    let expires = sent.chat.expires_at.unwrap();
    assert!(expires >= before + 3_600_000 && expires <= now_ms() + 3_601_000);
    // The server is told only the hour it ends in.
    let buckets = server_expiries(&server);
    assert!(!buckets.is_empty());
    assert!(buckets.iter().all(|b| b % 3_600 == 0), "{buckets:?}");
    for member in [&mut alice, &mut carol] {
        let got = within(member.sync()).await.unwrap();
        assert_eq!(
            find(&got, "an hour").unwrap().chat.expires_at,
            Some(expires)
        );
    }

    within(alice.set_timer(GROUP, "trio", 0)).await.unwrap();
    within(bob.sync()).await.unwrap();
    let kept = within(bob.send_group("trio", "kept")).await.unwrap();
    assert_eq!(kept.chat.expires_at, None);
    let got = within(carol.sync()).await.unwrap();
    assert!(
        system_lines(&got).contains(&"alice turned off disappearing messages".to_owned()),
        "{got:#?}"
    );
    assert_eq!(find(&got, "kept").unwrap().chat.expires_at, None);
}
