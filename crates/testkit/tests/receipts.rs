//! Receipts and typing indicators end to end (issue #14, item 2): ordinary
//! padded MLS messages, sent after a random delay (the tests pass a later
//! time instead of waiting), only in conversations the user wrote in.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{ConversationKind, HistoryEntry, ReceiptState};
use sotto_testkit::{TestServer, register, within};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

const DIRECT: ConversationKind = ConversationKind::Direct;
const GROUP: ConversationKind = ConversationKind::Group;

/// Later than any receipt's random delay and rate limit.
fn later() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
        + 60_000
}

fn receipts_of(entries: &[HistoryEntry], id: &str) -> BTreeMap<String, ReceiptState> {
    entries
        .iter()
        .rev()
        .find(|e| e.id == id)
        .map(|e| e.chat.receipts.clone())
        .unwrap_or_default()
}

fn states(pairs: &[(&str, ReceiptState)]) -> BTreeMap<String, ReceiptState> {
    pairs.iter().map(|(m, s)| ((*m).to_owned(), *s)).collect()
}

use ReceiptState::{Delivered, Read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_between_two_users_and_none_for_a_stranger() {
    let server = TestServer::start().await;
    let (mut alice, _a) = within(register(&server.url(), "alice")).await;
    let (mut bob, _b) = within(register(&server.url(), "bob")).await;
    let (mut mallory, _m) = within(register(&server.url(), "mallory")).await;

    // Bob has not written to alice yet: no receipt for her first message.
    let first = within(alice.send_direct("bob", "hi bob")).await.unwrap();
    within(bob.sync()).await.unwrap();
    within(bob.send_due_receipts(later())).await.unwrap();
    within(alice.sync()).await.unwrap();
    let got = alice.history(DIRECT, "bob").unwrap();
    assert!(receipts_of(&got, &first.id).is_empty(), "{got:#?}");

    // Once he answers, he acknowledges what arrives.
    within(bob.send_direct("alice", "hi alice")).await.unwrap();
    within(alice.sync()).await.unwrap();
    let second = within(alice.send_direct("bob", "lunch?")).await.unwrap();
    within(bob.sync()).await.unwrap();
    // Not before the random delay.
    within(bob.sync()).await.unwrap();
    assert!(receipts_of(&alice.history(DIRECT, "bob").unwrap(), &second.id).is_empty());
    within(bob.send_due_receipts(later())).await.unwrap();
    // Receipts update history; sync hands out no line for them.
    let got = within(alice.sync()).await.unwrap();
    assert!(got.is_empty(), "{got:#?}");
    let got = alice.history(DIRECT, "bob").unwrap();
    assert_eq!(receipts_of(&got, &second.id), states(&[("bob", Delivered)]));

    // Reading the conversation sends read receipts (batched: both
    // messages in one).
    bob.history(DIRECT, "alice").unwrap();
    within(bob.send_due_receipts(later() + 60_000))
        .await
        .unwrap();
    within(alice.sync()).await.unwrap();
    let got = alice.history(DIRECT, "bob").unwrap();
    assert_eq!(receipts_of(&got, &second.id), states(&[("bob", Read)]));
    assert_eq!(receipts_of(&got, &first.id), states(&[("bob", Read)]));
    // A later delivered receipt does not take a read one back; the JSON
    // shape is member → state.
    let history = alice.history(DIRECT, "bob").unwrap();
    let line = history.iter().find(|e| e.id == second.id).unwrap();
    let json = serde_json::to_value(line).unwrap();
    assert_eq!(json["receipts"], serde_json::json!({ "bob": "read" }));

    // A stranger who starts a conversation learns nothing.
    let ping = within(mallory.send_direct("bob", "are you there?"))
        .await
        .unwrap();
    within(bob.sync()).await.unwrap();
    bob.history(DIRECT, "mallory").unwrap();
    within(bob.send_due_receipts(later() + 120_000))
        .await
        .unwrap();
    let got = within(mallory.sync()).await.unwrap();
    assert!(receipts_of(&got, &ping.id).is_empty(), "{got:#?}");
    assert!(receipts_of(&mallory.history(DIRECT, "bob").unwrap(), &ping.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_in_a_group_of_three_with_read_receipts_off_for_one() {
    let server = TestServer::start().await;
    let (mut alice, _a) = within(register(&server.url(), "alice")).await;
    let (mut bob, _b) = within(register(&server.url(), "bob")).await;
    let (mut carol, _c) = within(register(&server.url(), "carol")).await;
    within(alice.create_group("trio", &["bob".into(), "carol".into()]))
        .await
        .unwrap();
    within(bob.sync()).await.unwrap();
    within(carol.sync()).await.unwrap();
    within(bob.send_group("trio", "here")).await.unwrap();
    within(carol.send_group("trio", "me too")).await.unwrap();
    carol.set_read_receipts(false).unwrap();
    assert!(!carol.read_receipts().unwrap());

    let sent = within(alice.send_group("trio", "agenda?")).await.unwrap();
    for member in [&mut bob, &mut carol] {
        within(member.sync()).await.unwrap();
        member.history(GROUP, "trio").unwrap();
        within(member.send_due_receipts(later())).await.unwrap();
    }
    within(alice.sync()).await.unwrap();
    let line = alice.history(GROUP, "trio").unwrap();
    assert_eq!(
        receipts_of(&line, &sent.id),
        states(&[("bob", Read), ("carol", Delivered)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_only_a_device_online_now_and_is_stored_nowhere() {
    let server = TestServer::start().await;
    let (mut alice, _a) = within(register(&server.url(), "alice")).await;
    let (mut bob, bob_dir) = within(register(&server.url(), "bob")).await;
    within(alice.send_direct("bob", "hello")).await.unwrap();
    // Bob's client stays logged in after a sync: he is online.
    within(bob.sync()).await.unwrap();
    let payloads = |server: &TestServer| -> i64 {
        server
            .db()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap()
    };
    // Alice's own copies acknowledged, so the count stays put.
    within(alice.sync()).await.unwrap();
    let before = payloads(&server);
    within(alice.send_typing(DIRECT, "bob", true))
        .await
        .unwrap();
    assert_eq!(
        payloads(&server),
        before,
        "the server stored a typing indicator"
    );
    let got = within(bob.sync()).await.unwrap();
    assert!(got.iter().any(|e| e.text == "alice is typing…"), "{got:#?}");
    // Not in bob's history or database either.
    assert!(
        bob.history(DIRECT, "alice")
            .unwrap()
            .iter()
            .all(|e| !e.text.contains("typing"))
    );
    let db = rusqlite::Connection::open(bob_dir.path().join("sotto.db")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM messages WHERE body LIKE '%typing%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0);

    // Bob offline: dropped, not queued; he never sees it.
    bob.disconnect().await;
    within(alice.send_typing(DIRECT, "bob", true))
        .await
        .unwrap();
    assert_eq!(payloads(&server), before);
    let got = within(bob.sync()).await.unwrap();
    assert!(!got.iter().any(|e| e.text.contains("typing")), "{got:#?}");
}

/// What the server sees of a text, a receipt and a typing indicator: the
/// same size bucket on the same path (the anonymous connection), and the
/// same stored columns for the text and the receipt; the typing indicator
/// is not stored at all (only its `ephemeral` flag tells it apart, in
/// transit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_a_receipt_and_a_typing_indicator_look_alike_to_the_server() {
    use sotto_proto::v1::{ServerFrame, client_frame};
    use sotto_testkit::{ConnView, HostileProxy};
    use std::sync::{Arc, Mutex};

    let server = TestServer::start().await;
    // Every send of bob's as the server got it: (payload size, expiry,
    // ephemeral).
    let seen: Arc<Mutex<Vec<(usize, u64, bool)>>> = Arc::default();
    let recording = Arc::clone(&seen);
    let proxy = HostileProxy::start(&server.url(), move |conn: &ConnView, frame: ServerFrame| {
        if let Some(client_frame::Body::SendMessage(m)) = &conn.request {
            recording
                .lock()
                .unwrap()
                .push((m.payload.len(), m.expires_at, m.ephemeral));
        }
        Some(frame)
    })
    .await;
    let (mut alice, _a) = within(register(&server.url(), "alice")).await;
    let (mut bob, _b) = within(register(&proxy.url(), "bob")).await;
    within(alice.send_direct("bob", "hello")).await.unwrap();
    within(bob.sync()).await.unwrap();
    within(bob.send_direct("alice", "hi")).await.unwrap();
    within(bob.sync()).await.unwrap();
    let rows = |server: &TestServer| -> Vec<(i64, i64, Option<i64>)> {
        server
            .db()
            .prepare("SELECT id, length(payload), expires_at FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let newest = |server: &TestServer| *rows(server).last().unwrap();
    seen.lock().unwrap().clear();

    // Alice does not fetch: what she is sent stays queued.
    within(bob.send_direct("alice", "a text")).await.unwrap();
    let text = newest(&server);
    within(alice.sync()).await.unwrap();
    within(alice.send_direct("bob", "another")).await.unwrap();
    within(bob.sync()).await.unwrap();
    within(bob.send_due_receipts(later())).await.unwrap();
    let receipt = newest(&server);
    within(bob.send_typing(DIRECT, "alice", true))
        .await
        .unwrap();
    assert_eq!(newest(&server), receipt, "the typing indicator was stored");

    assert!(text.0 < receipt.0);
    assert_eq!(text.1, receipt.1, "stored text and receipt sizes differ");
    assert_eq!((text.2, receipt.2), (None, None));
    let sends = seen.lock().unwrap().clone();
    assert_eq!(sends.len(), 3, "{sends:?}");
    assert!(
        sends
            .iter()
            .all(|(size, expires, _)| *size == sends[0].0 && *expires == 0),
        "{sends:?}"
    );
    assert_eq!(
        sends.iter().map(|s| s.2).collect::<Vec<_>>(),
        [false, false, true]
    );
}

/// The server's debug log says the same about a text and a receipt, and
/// nothing about a typing indicator that it does not say about a text: no
/// line names a kind of content, and the lines each send causes (times and
/// numbers aside) are the same. (The one thing the server sees of a typing
/// indicator is its `ephemeral` flag, in transit: it drops the indicator
/// instead of queueing it, as issue #14 asks; see SERVER_DATA.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_log_tells_a_text_a_receipt_and_a_typing_indicator_apart_by_nothing() {
    use sotto_client::Client;
    use sotto_testkit::ServerProcess;
    use std::collections::BTreeSet;
    use std::time::Duration;

    let data = tempfile::TempDir::new().unwrap();
    let logs = tempfile::TempDir::new().unwrap();
    let log_file = logs.path().join("server.log");
    let server = ServerProcess::spawn_logged(data.path(), &log_file, "debug");
    let url = server.url().to_owned();
    let (pa, pb) = (
        tempfile::TempDir::new().unwrap(),
        tempfile::TempDir::new().unwrap(),
    );
    let mut alice = within(Client::register(pa.path(), "alice", &url))
        .await
        .unwrap();
    let mut bob = within(Client::register(pb.path(), "bob", &url))
        .await
        .unwrap();
    within(alice.send_direct("bob", "hello")).await.unwrap();
    within(bob.sync()).await.unwrap();
    within(bob.send_direct("alice", "hi")).await.unwrap();
    within(alice.sync()).await.unwrap();
    within(alice.send_direct("bob", "how are you"))
        .await
        .unwrap();
    within(bob.sync()).await.unwrap();
    alice.disconnect().await;

    // The log's length once the server stopped writing; its lines in a
    // range, with times and numbers left out.
    let settle = || async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let len = std::fs::metadata(&log_file).map_or(0, |m| m.len());
            if len == last {
                return len;
            }
            last = len;
        }
    };
    let lines = |from: u64, to: u64| -> BTreeSet<String> {
        let log = std::fs::read(&log_file).unwrap();
        let range = usize::try_from(from).unwrap()..usize::try_from(to).unwrap();
        String::from_utf8_lossy(&log[range])
            .lines()
            .map(|l| {
                l.split_once(' ')
                    .map_or(l, |(_time, rest)| rest)
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect()
            })
            .collect()
    };

    let start = settle().await;
    within(bob.send_direct("alice", "a text")).await.unwrap();
    let after_text = settle().await;
    within(bob.send_due_receipts(later())).await.unwrap();
    let after_receipt = settle().await;
    within(bob.send_typing(DIRECT, "alice", true))
        .await
        .unwrap();
    let after_typing = settle().await;
    let text = lines(start, after_text);
    let receipt = lines(after_text, after_receipt);
    let typing = lines(after_receipt, after_typing);

    for line in text.iter().chain(&receipt).chain(&typing) {
        let lower = line.to_lowercase();
        for word in ["typing", "receipt", "ephemeral"] {
            assert!(!lower.contains(word), "the log names {word:?}: {line}");
        }
    }
    assert!(
        typing.is_subset(&text),
        "the typing indicator logged lines a text does not: {:?}",
        typing.difference(&text).collect::<Vec<_>>()
    );
    assert!(
        receipt.is_subset(&text),
        "the receipt logged lines a text does not: {:?}",
        receipt.difference(&text).collect::<Vec<_>>()
    );
    bob.disconnect().await;
    drop(server);
}
