//! The page's account task ([`Messenger`]) natively, against a real
//! `sotto-server`: it listens while idle, runs requests in between, and
//! keeps running them while the server is away. (The browser runs the same
//! code in Chromium in the Playwright suite.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sotto_client::{ConversationKind, EntryKind, HistoryEntry};
use sotto_testkit::{TestServer, register, within};
use sotto_web::messenger::{Event, Messenger};
use std::time::Duration;
use tokio::sync::mpsc;

/// Starts `client`'s task on the current `LocalSet`; events arrive on the
/// returned channel.
fn start(client: sotto_client::Client) -> (Messenger, mpsc::UnboundedReceiver<Event>) {
    let (events, received) = mpsc::unbounded_channel();
    let (messenger, task) = Messenger::start(client, move |event| {
        let _ = events.send(event);
    });
    tokio::task::spawn_local(task);
    (messenger, received)
}

/// The next message among the events (skipping system lines, such as
/// "alice started a conversation", and other events).
async fn next_message(events: &mut mpsc::UnboundedReceiver<Event>) -> HistoryEntry {
    within(async {
        loop {
            match events.recv().await.expect("the task runs") {
                Event::Entry(entry) if entry.kind == EntryKind::Text => return *entry,
                Event::Entry(_) | Event::Offline { .. } => {}
            }
        }
    })
    .await
}

/// How long the task waits after the next connection failure it reports.
async fn next_offline(events: &mut mpsc::UnboundedReceiver<Event>) -> Duration {
    within(async {
        loop {
            if let Event::Offline { retry_in, .. } = events.recv().await.expect("the task runs") {
                return retry_in;
            }
        }
    })
    .await
}

#[tokio::test]
async fn deliveries_arrive_while_idle_and_requests_run_in_between() {
    let server = TestServer::start().await;
    let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
    let (bob, _bob_dir) = register(&server.url(), "bob").await;

    tokio::task::LocalSet::new()
        .run_until(async move {
            let (bob, mut events) = start(bob);

            alice.send_direct("bob", "first").await.unwrap();
            let line = next_message(&mut events).await;
            assert_eq!(
                (line.sender.as_str(), line.text.as_str()),
                ("alice", "first")
            );

            // A request while the task listens: it runs, and the task
            // listens again afterwards.
            let sent = bob
                .run(async |c| c.send_direct("alice", "reply").await)
                .await
                .unwrap();
            assert_eq!(sent.text, "reply");
            let got = alice.sync().await.unwrap();
            assert!(got.iter().any(|e| e.text == "reply"), "{got:?}");

            alice.send_direct("bob", "second").await.unwrap();
            assert_eq!(next_message(&mut events).await.text, "second");

            // Requests queue and run in order.
            let (a, b) = tokio::join!(
                bob.run(async |c| c.send_direct("alice", "one").await),
                bob.run(async |c| c.conversations()),
            );
            a.unwrap();
            let conversations = b.unwrap();
            assert_eq!(conversations.len(), 1);
            assert_eq!(conversations[0].name, "alice");
        })
        .await;
}

#[tokio::test]
async fn requests_still_run_while_the_server_is_away_and_it_reconnects() {
    let server = TestServer::start().await;
    let (mut alice, _alice_dir) = register(&server.url(), "alice").await;
    let (bob, _bob_dir) = register(&server.url(), "bob").await;
    alice.send_direct("bob", "before").await.unwrap();

    tokio::task::LocalSet::new()
        .run_until(async move {
            let (bob, mut events) = start(bob);
            assert_eq!(next_message(&mut events).await.text, "before");

            let server = server.restart().await;
            // The failure is reported, with when the task tries again.
            assert!(next_offline(&mut events).await >= Duration::from_secs(1));

            // Local requests do not wait for the server.
            let history = bob
                .run(async |c| c.history(ConversationKind::Direct, "alice"))
                .await
                .unwrap();
            let texts: Vec<_> = history.iter().map(|e| e.text.as_str()).collect();
            assert!(texts.contains(&"before"), "{texts:?}");

            // The restarted server listens on another port: both follow it
            // (bob's through a request, run while offline).
            let url = server.url();
            alice.set_server_url(&url).unwrap();
            bob.run(async move |c| c.set_server_url(&url))
                .await
                .unwrap();

            // Back: what was sent meanwhile arrives.
            alice.send_direct("bob", "after").await.unwrap();
            assert_eq!(next_message(&mut events).await.text, "after");

            // Once back, the next failure waits from the start again.
            let _server = server.restart().await;
            assert_eq!(next_offline(&mut events).await, Duration::from_secs(1));
        })
        .await;
}
