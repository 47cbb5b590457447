//! Several server nodes on one PostgreSQL schema and one NATS bus
//! (`SOTTO_TEST_POSTGRES` and `SOTTO_TEST_NATS`; skipped without them):
//! clients spread over the nodes get each other's messages pushed, link
//! devices across nodes, and lose nothing when NATS restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sotto_client::{Client, ClientError, ConversationKind, EntryKind, HistoryEntry};
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, server_frame};
use sotto_testkit::cluster::{Cluster, NatsServer};
use sotto_testkit::register;
use sotto_testkit::wire::{assert_done, assert_error};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a push from another node may take. Generous for a loaded CI
/// machine; without the bus the message would never come (nothing polls).
const PROMPTLY: Duration = Duration::from_secs(5);
/// How long a first message may take (it may come with the listener's
/// login instead of by push).
const EVENTUALLY: Duration = Duration::from_secs(30);

type Line = (String, String);

fn line(sender: &str, text: &str) -> Line {
    (sender.to_owned(), text.to_owned())
}

/// A client listening in the background (never calling `Sync` after its
/// login), handing over the texts it receives.
struct Listening {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(Client, Result<(), ClientError>)>,
    entries: mpsc::UnboundedReceiver<HistoryEntry>,
}

fn listen(mut client: Client) -> Listening {
    let (tx, entries) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let listened = client
            .listen_until(
                |entry| {
                    let _ = tx.send(entry.clone());
                },
                stopped,
            )
            .await
            .map(|_| ());
        (client, listened)
    });
    Listening {
        stop,
        task,
        entries,
    }
}

impl Listening {
    /// The next entry `pick` keeps (others are skipped), within `within`.
    async fn next_where(
        &mut self,
        within: Duration,
        what: &str,
        pick: impl Fn(&HistoryEntry) -> bool,
    ) -> HistoryEntry {
        tokio::time::timeout(within, async {
            loop {
                let entry = self.entries.recv().await.expect("listener ended");
                if pick(&entry) {
                    return entry;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} not pushed within {within:?}"))
    }

    /// The next text, which must be `want` and come within `within`.
    async fn expect(&mut self, want: Line, within: Duration) {
        let got = self
            .next_where(within, &format!("{want:?}"), |e| e.kind == EntryKind::Text)
            .await;
        assert_eq!((got.sender, got.text), want);
    }

    /// Stops listening and gives the client back (with no text unread).
    async fn stop(mut self) -> Client {
        let _ = self.stop.send(());
        let (client, listened) = self.task.await.expect("listener task");
        listened.expect("listen");
        while let Ok(entry) = self.entries.try_recv() {
            assert_ne!(entry.kind, EntryKind::Text, "an unexpected text: {entry:?}");
        }
        client
    }

    /// Waits for the server to end the listener's connection.
    async fn ended(self, within: Duration) -> ClientError {
        let (_, listened) = tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("still connected after {within:?}"))
            .expect("listener task");
        listened.expect_err("the connection was ended")
    }
}

/// Links a new device to `existing`'s account through node `url` (the code
/// names `existing`'s node; the new device reaches another, as behind a
/// load balancer).
async fn link_through(existing: &mut Client, url: String) -> (Client, TempDir) {
    let dir = TempDir::new().unwrap();
    let code = existing.open_link().await.unwrap();
    let (secret, _) = code
        .reveal()
        .split_once('@')
        .map(|(s, u)| (s.to_owned(), u.to_owned()))
        .unwrap();
    let text = format!("{secret}@{url}");
    let path = dir.path().to_path_buf();
    let (shown_tx, shown) = oneshot::channel();
    let joining = tokio::spawn(async move {
        let show = move |fingerprint| {
            let _ = shown_tx.send(fingerprint);
        };
        Client::join_link(&path, &text, &sotto_client::Trust::web_roots(), show).await
    });
    let request = existing.wait_for_link_request(&code).await.unwrap();
    assert_eq!(shown.await.unwrap(), request.fingerprint);
    existing.approve_link(&code, &request).await.unwrap();
    let new = joining.await.unwrap().expect("join across nodes");
    assert_eq!(new.device_id(), request.device_id);
    (new, dir)
}

/// Three nodes; alice, bob and carol each on a different one. A 1:1 chat
/// and a group of the three deliver by push across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_across_three_nodes_are_pushed() {
    let Some(cluster) = Cluster::start("chats_across_three_nodes_are_pushed", 3).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let (mut alice, _a) = register(&cluster.url(0), "alice").await;
        let (bob, _b) = register(&cluster.url(1), "bob").await;
        let (mut carol, _c) = register(&cluster.url(2), "carol").await;

        let mut bob = listen(bob);
        alice.send_direct("bob", "hello bob").await.unwrap();
        bob.expect(line("alice", "hello bob"), EVENTUALLY).await;
        // Bob is connected to node 1 now: this one can only come by push.
        alice.send_direct("bob", "still there?").await.unwrap();
        bob.expect(line("alice", "still there?"), PROMPTLY).await;
        let bob = bob.stop().await;

        carol.sync().await.unwrap();
        let mut bob = listen(bob);
        let mut carol = listen(carol);
        alice
            .create_group("team", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        alice.send_group("team", "welcome").await.unwrap();
        bob.expect(line("alice", "welcome"), EVENTUALLY).await;
        carol.expect(line("alice", "welcome"), EVENTUALLY).await;
        alice.send_group("team", "agenda").await.unwrap();
        bob.expect(line("alice", "agenda"), PROMPTLY).await;
        carol.expect(line("alice", "agenda"), PROMPTLY).await;

        // Carol (node 2) answers; alice (node 0) listens from before.
        let mut carol = carol.stop().await;
        let mut alice = listen(alice);
        carol.send_group("team", "thanks").await.unwrap();
        bob.expect(line("carol", "thanks"), PROMPTLY).await;
        alice.expect(line("carol", "thanks"), EVENTUALLY).await;
        carol.send_group("team", "bye").await.unwrap();
        alice.expect(line("carol", "bye"), PROMPTLY).await;
        bob.expect(line("carol", "bye"), PROMPTLY).await;
        let _ = alice.stop().await;
        let _ = bob.stop().await;
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// A new device joins, on node 1, a link its account's device opened on
/// node 0; then both get a message sent from node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_links_through_another_node() {
    let Some(cluster) = Cluster::start("a_device_links_through_another_node", 3).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let (mut alice, _a) = register(&cluster.url(0), "alice").await;
        let (mut bob, _b) = register(&cluster.url(2), "bob").await;
        let (mut phone, _p) = link_through(&mut alice, cluster.url(1)).await;
        phone.sync().await.unwrap();
        bob.send_direct("alice", "to both devices").await.unwrap();
        for device in [&mut alice, &mut phone] {
            let texts: Vec<Line> = device
                .sync()
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == EntryKind::Text)
                .map(|e| (e.sender, e.text))
                .collect();
            assert_eq!(texts, vec![line("bob", "to both devices")]);
        }

        // A code nobody opened is unknown on every node.
        let unknown = format!("{}@{}", "11".repeat(32), cluster.url(2));
        let dir = TempDir::new().unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(20),
            Client::join_link(
                dir.path(),
                &unknown,
                &sotto_client::Trust::web_roots(),
                |_| {},
            ),
        )
        .await
        .expect("an unknown link is refused, not waited on");
        assert!(refused.is_err(), "joined a link nobody opened");
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// Alice (node 0) and carol (node 2) send to bob (node 1, listening) while
/// the NATS server is killed and restarted: every acknowledged message
/// reaches bob's app exactly once and in each sender's order, without bob
/// syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_under_load_loses_nothing() {
    const TEST: &str = "nats_restarted_under_load_loses_nothing";
    if Cluster::bus_for(TEST).is_none() {
        return;
    }
    let mut nats = NatsServer::start();
    let Some(cluster) = Cluster::start_on(TEST, 3, &nats.url()).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(240), async {
        let (mut alice, _a) = register(&cluster.url(0), "alice").await;
        let (bob, _b) = register(&cluster.url(1), "bob").await;
        let (mut carol, _c) = register(&cluster.url(2), "carol").await;
        let mut bob = listen(bob);
        alice.send_direct("bob", "warm-up").await.unwrap();
        bob.expect(line("alice", "warm-up"), EVENTUALLY).await;
        carol.send_direct("bob", "warm-up").await.unwrap();
        bob.expect(line("carol", "warm-up"), EVENTUALLY).await;

        const EACH: usize = 40;
        let sent = Arc::new(AtomicUsize::new(0));
        let sender = |mut client: Client, name: &'static str| {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..EACH {
                    let text = format!("{name} {i}");
                    client.send_direct("bob", &text).await.unwrap();
                    acknowledged.push(line(name, &text));
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (client, acknowledged)
            })
        };
        let alice_sends = sender(alice, "alice");
        let carol_sends = sender(carol, "carol");
        let reached = |n: usize| {
            let sent = Arc::clone(&sent);
            async move {
                while sent.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        reached(EACH / 2).await;
        nats.kill();
        reached(EACH).await;
        nats.restart();
        let (_alice, from_alice) = alice_sends.await.unwrap();
        let (_carol, from_carol) = carol_sends.await.unwrap();

        // Everything, once, in each sender's order, pushed (bob never syncs).
        let mut got_alice = Vec::new();
        let mut got_carol = Vec::new();
        for _ in 0..2 * EACH {
            let entry = bob
                .next_where(EVENTUALLY, "the next message", |e| {
                    e.kind == EntryKind::Text
                })
                .await;
            let got = (entry.sender.clone(), entry.text.clone());
            if entry.sender == "alice" {
                got_alice.push(got);
            } else {
                got_carol.push(got);
            }
        }
        assert_eq!(got_alice, from_alice);
        assert_eq!(got_carol, from_carol);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut bob = bob.stop().await;
        let later: Vec<_> = bob
            .sync()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::Text)
            .collect();
        assert!(later.is_empty(), "delivered again: {later:?}");
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// The server starts and serves (on one node) while its NATS server is
/// unreachable, and delivers across nodes once NATS comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_without_nats_and_catch_up_when_it_comes() {
    const TEST: &str = "nodes_start_without_nats_and_catch_up_when_it_comes";
    if Cluster::bus_for(TEST).is_none() {
        return;
    }
    let mut nats = NatsServer::start();
    nats.kill();
    let Some(cluster) = Cluster::start_on(TEST, 2, &nats.url()).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let (mut alice, _a) = register(&cluster.url(0), "alice").await;
        let (bob, _b) = register(&cluster.url(1), "bob").await;
        let mut bob = listen(bob);
        alice
            .send_direct("bob", "sent while NATS is down")
            .await
            .unwrap();
        nats.restart();
        bob.expect(line("alice", "sent while NATS is down"), EVENTUALLY)
            .await;
        alice.send_direct("bob", "and now").await.unwrap();
        bob.expect(line("alice", "and now"), EVENTUALLY).await;
        let _ = bob.stop().await;
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// A typing indicator reaches a device on another node, and removing a
/// device closes its connection on another node at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_removal_reach_other_nodes() {
    let Some(cluster) = Cluster::start("typing_and_removal_reach_other_nodes", 3).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let (mut alice, _a) = register(&cluster.url(0), "alice").await;
        let (bob, _b) = register(&cluster.url(1), "bob").await;
        let mut bob = listen(bob);
        alice.send_direct("bob", "hi").await.unwrap();
        bob.expect(line("alice", "hi"), EVENTUALLY).await;
        alice
            .send_typing(ConversationKind::Direct, "bob", true)
            .await
            .unwrap();
        bob.next_where(PROMPTLY, "the typing indicator", |e| {
            e.text == "alice is typing…"
        })
        .await;
        let _ = bob.stop().await;

        // Alice's phone is on node 2; alice removes it from node 0.
        let (mut phone, _p) = link_through(&mut alice, cluster.url(2)).await;
        phone.sync().await.unwrap();
        let phone_id = phone.device_id().to_string();
        let phone = listen(phone);
        // Its connection is open on node 2 (it has logged in and synced).
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.remove_device(&phone_id).await.unwrap();
        let ended = phone.ended(PROMPTLY).await;
        eprintln!("the removed device's connection ended: {ended}");
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// The raw rendezvous across nodes: a link opened on node 0 is joined once,
/// from node 1; a second joiner on node 2 (someone who saw the code late)
/// is refused and gets nothing; the bundle reaches only the first joiner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_joined_once_across_nodes() {
    let Some(cluster) = Cluster::start("a_link_is_joined_once_across_nodes", 3).await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let (mut opener, _) = cluster.node(0).registered("alice").await;
        let link_id = sotto_testkit::wire::random_id();
        assert_eq!(link_id.len(), sotto_proto::LINK_ID_LEN);
        assert_done(
            &opener
                .request(Body::OpenLink(v1::OpenLink {
                    link_id: link_id.clone(),
                }))
                .await,
        );
        let join = |sealed: &[u8]| {
            Body::JoinLink(v1::JoinLink {
                link_id: link_id.clone(),
                sealed_request: sealed.to_vec(),
            })
        };
        let mut joiner = cluster.node(1).connect().await;
        assert_done(&joiner.request(join(b"first")).await);
        match opener.next_frame().await.body {
            Some(server_frame::Body::LinkRequest(r)) => {
                assert_eq!(r.link_id, link_id);
                assert_eq!(r.sealed_request, b"first");
            }
            other => panic!("expected the link request, got {other:?}"),
        }
        let mut late = cluster.node(2).connect().await;
        assert_error(&late.request(join(b"second")).await, ErrorCode::UnknownLink);
        let mut late_here = cluster.node(1).connect().await;
        assert_error(
            &late_here.request(join(b"third")).await,
            ErrorCode::UnknownLink,
        );
        opener.assert_quiet(Duration::from_millis(300)).await;

        assert_done(
            &opener
                .request(Body::CompleteLink(v1::CompleteLink {
                    link_id: link_id.clone(),
                    sealed_bundle: b"bundle".to_vec(),
                }))
                .await,
        );
        match joiner.next_frame().await.body {
            Some(server_frame::Body::LinkCompleted(c)) => assert_eq!(c.sealed_bundle, b"bundle"),
            other => panic!("expected the bundle, got {other:?}"),
        }
        late.assert_quiet(Duration::from_millis(300)).await;
        // Completed: gone on every node.
        assert_error(&late.request(join(b"again")).await, ErrorCode::UnknownLink);
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// Claims on node 0 drain the KeyPackage pool of bob, listening on node 1:
/// the KeyPackagesLow notice crosses the bus and bob's client tops the
/// pool up without syncing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_key_package_pool_is_told_across_nodes() {
    let Some(cluster) = Cluster::start("a_low_key_package_pool_is_told_across_nodes", 2).await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let db = cluster.db().client().await;
        let pool = || async {
            db.query_one("SELECT count(*) FROM key_packages", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        let (bob, _b) = register(&cluster.url(1), "bob").await;
        let full = pool().await;
        let bob = listen(bob);
        // Bob's listener has logged in (its connection is on node 1).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut claimer = cluster.node(0).connect().await;
        let claims = full - 5;
        for _ in 0..claims {
            let response = claimer
                .request(Body::ClaimKeyPackages(v1::ClaimKeyPackages {
                    username: "bob".into(),
                    device_ids: Vec::new(),
                }))
                .await;
            assert!(
                matches!(response.result, Some(v1::response::Result::KeyPackages(_))),
                "{response:?}"
            );
        }
        // Without the notice it would stay at 5 (bob may have topped it up
        // during the claims already).
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while pool().await <= 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bob's client was not told its pool is low"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = bob.stop().await;
    })
    .await
    .expect("test timed out");
    cluster.stop().await;
}

/// A member on one node sends while a member on another commits, in the
/// same group, round after round: each send and each commit succeeds (a
/// send framed in the epoch a commit just closed is still taken within
/// the grace period, though another node accepted the commit: the window
/// crosses the bus), and a third member on the third node reads every
/// message once. (`postgres_nodes_racing_a_send_and_a_commit_do_not_deadlock`
/// in the store conformance suite forces the interleaving that used to
/// deadlock the two nodes' transactions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_commits_racing_across_nodes_all_succeed() {
    let Some(cluster) =
        Cluster::start("sends_and_commits_racing_across_nodes_all_succeed", 3).await
    else {
        return;
    };
    sotto_testkit::within(async {
        let (mut committer, _a) = register(&cluster.url(0), "ada").await;
        let (mut sender, _b) = register(&cluster.url(1), "bob").await;
        let (mut reader, _c) = register(&cluster.url(2), "cyd").await;
        committer
            .create_group("busy", &["bob".into(), "cyd".into()])
            .await
            .unwrap();
        sender.sync().await.unwrap();
        const ROUNDS: usize = 10;
        let mut sent = Vec::new();
        for round in 0..ROUNDS {
            let text = format!("round {round}");
            let (committed, said) = tokio::join!(
                committer.update_keys("busy"),
                sender.send_group("busy", &text)
            );
            committed.unwrap_or_else(|e| panic!("round {round}: the commit failed: {e}"));
            said.unwrap_or_else(|e| panic!("round {round}: the send failed: {e}"));
            sent.push(text);
            // The sender catches up with the commit before the next round.
            sender.sync().await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(sotto_testkit::texts(&reader.sync().await.unwrap()));
        }
        assert_eq!(got, sent);
        let (epoch_a, auth_a) = committer
            .epoch_state(ConversationKind::Group, "busy")
            .unwrap();
        let (epoch_c, auth_c) = reader.epoch_state(ConversationKind::Group, "busy").unwrap();
        assert_eq!((epoch_a, auth_a), (epoch_c, auth_c));
    })
    .await;
    cluster.stop().await;
}
