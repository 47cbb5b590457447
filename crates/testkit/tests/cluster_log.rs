//! Several server nodes on one PostgreSQL database (`SOTTO_TEST_POSTGRES`;
//! each test in a schema of its own, skipped without the variable): one
//! transparency log whatever node appends, every node proving the same
//! heads and the same key-directory epochs, one commit per epoch, and the
//! log writer's role moving to another node when its node goes away.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response};
use sotto_testkit::postgres::TestDatabase;
use sotto_testkit::wire::{self, Account, assert_done};
use sotto_testkit::{TestServer, register};

/// A node on `db`, without rate limits (the tests ask many questions on
/// one connection).
async fn node(db: &TestDatabase) -> TestServer {
    let url = db.url().to_owned();
    TestServer::start_with(move |config| {
        config.store = Some(url);
        config.limits.lift_rate_limits();
    })
    .await
}

async fn ask(client: &mut wire::Client, body: Body) -> response::Result {
    client
        .request(body)
        .await
        .result
        .expect("a response carries a result")
}

async fn head(client: &mut wire::Client) -> v1::SignedTreeHead {
    match ask(client, Body::GetLogHead(v1::GetLogHead {})).await {
        response::Result::LogHead(head) => head,
        other => panic!("expected a head, got {other:?}"),
    }
}

async fn account_log(client: &mut wire::Client, username: &str) -> v1::AccountLog {
    match ask(
        client,
        Body::GetAccountLog(v1::GetAccountLog {
            username: username.into(),
        }),
    )
    .await
    {
        response::Result::AccountLog(log) => log,
        other => panic!("expected {username}'s log, got {other:?}"),
    }
}

/// The whole log, put together from every account's own entries (the
/// server does not serve the log's entries in one list: they name every
/// account) and the web release, in log order. The nodes share one web
/// bundle, so the log holds exactly one web-release leaf, whichever node
/// appended it: the leaf no account has.
async fn all_entries(client: &mut wire::Client, usernames: &[&str]) -> Vec<v1::LogEntry> {
    let mut indexed = Vec::new();
    for name in usernames {
        for proven in account_log(client, name).await.entries {
            indexed.push((proven.index, proven.entry.expect("an entry")));
        }
    }
    indexed.sort_by_key(|(index, _)| *index);
    let web = match ask(client, Body::GetWebRelease(v1::GetWebRelease {})).await {
        response::Result::WebRelease(proof) => v1::LogEntry {
            signature: proof.signature,
            web_release: Some(proof.release.expect("a web release is published")),
            ..v1::LogEntry::default()
        },
        other => panic!("expected the web release, got {other:?}"),
    };
    let gap = (0..).zip(&indexed).find(|(i, (index, _))| *i != *index);
    let at = gap.map_or(indexed.len(), |(i, _)| usize::try_from(i).unwrap());
    indexed.insert(at, (at as u64, web));
    assert!(
        indexed
            .iter()
            .enumerate()
            .all(|(i, (index, _))| i as u64 == *index),
        "every log leaf but one web release belongs to one of the accounts"
    );
    indexed.into_iter().map(|(_, entry)| entry).collect()
}

/// `username`'s directory lookup from this node, verified against the
/// epoch it comes with; returns the epoch and how many devices it lists.
async fn lookup(client: &mut wire::Client, username: &str) -> (v1::SignedEpoch, usize) {
    let lookup = match ask(
        client,
        Body::LookupAccount(v1::LookupAccount {
            username: username.into(),
        }),
    )
    .await
    {
        response::Result::DirectoryLookup(lookup) => lookup,
        other => panic!("expected a lookup of {username}, got {other:?}"),
    };
    let epoch = lookup.epoch.expect("a lookup carries its epoch");
    sotto_transparency::verify_epoch(&client.log_key, &epoch).expect("the epoch is signed");
    let verified = sotto_directory::verify_lookup(
        &epoch.vrf_public_key.clone().try_into().unwrap(),
        &epoch.root_hash.clone().try_into().unwrap(),
        epoch.epoch,
        &sotto_directory::Username::parse(username).unwrap(),
        &lookup.proof,
    )
    .unwrap_or_else(|e| panic!("{username}'s lookup does not verify: {e}"));
    (epoch, verified.state.devices.len())
}

#[track_caller]
fn assert_logged_in(response: &v1::Response) {
    assert!(
        matches!(response.result, Some(response::Result::LoggedIn(_))),
        "expected LoggedIn, got {response:?}"
    );
}

/// Registers `account` on the node at `addr` and, with a second device,
/// logs in on the node at `other` and adds it there.
async fn register_then_add_elsewhere(account: Account, addr: SocketAddr, other: SocketAddr) {
    let mut client = wire::Client::connect(addr).await;
    assert_done(&client.register(&account).await);
    let mut elsewhere = wire::Client::connect(other).await;
    assert_logged_in(&elsewhere.login(&account).await);
    let second = account.another_device();
    assert_done(&elsewhere.request(account.add_device(&second, 2)).await);
}

/// Checks that every node serves the same log, with heads, inclusion and
/// consistency proofs that verify, and the same directory epochs, and
/// that the log replays (no account's history forked): `accounts` are
/// every account, with how many devices each has. Returns the head.
async fn assert_one_log(
    nodes: &[SocketAddr],
    accounts: &[(String, usize)],
    earlier: Option<&v1::SignedTreeHead>,
) -> v1::SignedTreeHead {
    let mut clients = Vec::new();
    for addr in nodes {
        clients.push(wire::Client::connect(*addr).await);
    }
    let first = head(&mut clients[0]).await;
    let log_key = clients[0].log_key.clone();
    let usernames: Vec<&str> = accounts.iter().map(|(name, _)| name.as_str()).collect();
    let entries = all_entries(&mut clients[0], &usernames).await;
    let report = sotto_transparency::audit(&log_key, entries.clone(), &first)
        .expect("the log audits: every account replays, the head's root is its entries'");
    assert_eq!(report.accounts, accounts.len() as u64, "{report:?}");
    let mut epochs: HashSet<(u64, Vec<u8>)> = HashSet::new();
    for client in &mut clients {
        assert_eq!(client.log_key, log_key, "every node signs with one log key");
        let head = head(client).await;
        sotto_transparency::verify_head(&log_key, &head).unwrap();
        assert_eq!(
            (head.tree_size, &head.root_hash),
            (first.tree_size, &first.root_hash),
            "every node serves the same log"
        );
        assert_eq!(all_entries(client, &usernames).await, entries);
        if let Some(earlier) = earlier {
            let path = match ask(
                client,
                Body::GetConsistency(v1::GetConsistency {
                    old_size: earlier.tree_size,
                    new_size: head.tree_size,
                }),
            )
            .await
            {
                response::Result::Consistency(proof) => proof.path,
                other => panic!("expected a consistency proof, got {other:?}"),
            };
            sotto_transparency::verify_consistency(earlier, &head, &path)
                .expect("the log only grew since the earlier head");
        }
        for (name, devices) in accounts {
            let devices = *devices;
            let log = account_log(client, name).await;
            let state = sotto_transparency::verify_account_log(&log_key, name, &log)
                .unwrap_or_else(|e| panic!("{name}'s log does not verify: {e}"));
            assert_eq!(state.devices.len(), devices, "{name}");
            let (epoch, listed) = lookup(client, name).await;
            assert_eq!(listed, devices, "{name}'s directory state");
            epochs.insert((epoch.epoch, epoch.root_hash));
        }
    }
    // Nothing was appended while asking: every node answers from one
    // epoch, with one root (a node with epochs of its own would show
    // another number, or another root for the same one).
    assert_eq!(
        epochs.len(),
        1,
        "nodes serve different directory epochs: {epochs:?}"
    );
    first
}

/// Accounts registered on one node get a second device on another, all at
/// once; one account gets two racing AddDevice at one `account_seq` on two
/// nodes. The log is one, proven alike by both nodes, and the racing pair
/// made one entry, not a fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_on_two_nodes_make_one_log_both_prove() {
    let Some(db) = TestDatabase::create("appends_on_two_nodes_make_one_log_both_prove").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let a = node(&db).await;
        let b = node(&db).await;
        let nodes = [a.addr(), b.addr()];
        let accounts: Vec<Account> = (0..12).map(|i| Account::new(&format!("user{i}"))).collect();
        let mut expected: Vec<(String, usize)> =
            accounts.iter().map(|a| (a.username.clone(), 2)).collect();
        let earlier = {
            let early = Account::new("early");
            let mut client = wire::Client::connect(b.addr()).await;
            assert_done(&client.register(&early).await);
            expected.push(("early".into(), 1));
            // Node a publishes a directory epoch now (b might not, were
            // the directory per node).
            lookup(&mut wire::Client::connect(a.addr()).await, "early").await;
            head(&mut client).await
        };
        join_all(accounts.into_iter().enumerate().map(|(i, account)| {
            register_then_add_elsewhere(account, nodes[i % 2], nodes[(i + 1) % 2])
        }))
        .await;

        // Two devices added at once, at one account_seq, through two nodes.
        let twin = Account::new("twin");
        let mut on_a = wire::Client::connect(a.addr()).await;
        assert_done(&on_a.register(&twin).await);
        let mut on_b = wire::Client::connect(b.addr()).await;
        assert_logged_in(&on_b.login(&twin).await);
        let (left, right) = (twin.another_device(), twin.another_device());
        let (from_a, from_b) = tokio::join!(
            on_a.request(twin.add_device(&left, 2)),
            on_b.request(twin.add_device(&right, 2))
        );
        let done = [&from_a, &from_b]
            .iter()
            .filter(|r| matches!(r.result, Some(response::Result::Done(_))))
            .count();
        assert_eq!(
            done, 1,
            "exactly one of the racing AddDevice: {from_a:?} {from_b:?}"
        );
        expected.push(("twin".into(), 2));

        let head = assert_one_log(&nodes, &expected, Some(&earlier)).await;
        // One web release (both nodes started with one bundle), then the accounts'.
        assert_eq!(head.tree_size, 1 + 2 + 13 * 3);
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("timed out");
}

/// Two nodes take commits for one group at the same epoch, round after
/// round: exactly one is accepted each time, and the other is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_on_two_nodes_one_accepted_per_epoch() {
    let Some(db) = TestDatabase::create("racing_commits_on_two_nodes_one_accepted_per_epoch").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let a = node(&db).await;
        let b = node(&db).await;
        let (mut left, left_account) = a.registered("left").await;
        let (mut right, _) = b.registered("right").await;
        let group = wire::create_group(&mut left).await;
        let recipient = left_account.device_id.clone();
        for epoch in 1..=20u64 {
            let (from_a, from_b) = tokio::join!(
                left.request(Body::SubmitCommit(wire::commit(
                    &wire::random_id(),
                    &group,
                    epoch,
                    &[&recipient],
                    b"left's commit",
                ))),
                right.request(Body::SubmitCommit(wire::commit(
                    &wire::random_id(),
                    &group,
                    epoch,
                    &[&recipient],
                    b"right's commit",
                )))
            );
            let accepted: Vec<_> = [&from_a, &from_b]
                .into_iter()
                .filter(|r| matches!(r.result, Some(response::Result::Done(_))))
                .collect();
            assert_eq!(
                accepted.len(),
                1,
                "epoch {epoch}: exactly one commit accepted: {from_a:?} {from_b:?}"
            );
            let refused = if accepted[0] == &from_a {
                &from_b
            } else {
                &from_a
            };
            match &refused.result {
                Some(response::Result::Error(e)) => {
                    assert_eq!(e.code, ErrorCode::StaleEpoch as i32, "{e:?}");
                }
                other => panic!("epoch {epoch}: the loser got {other:?}"),
            }
        }
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("timed out");
}

/// Registers `name` (one device) on the node `at`.
async fn add(at: &TestServer, name: &str, names: &mut Vec<(String, usize)>) {
    let account = Account::new(name);
    let mut client = wire::Client::connect(at.addr()).await;
    assert_done(&client.register(&account).await);
    names.push((name.to_owned(), 1));
}

/// Which backend session holds this schema's log writer lock, if any.
async fn writer_pid(db: &TestDatabase) -> Option<i32> {
    db.client()
        .await
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = 1349976067::oid AND objid = hashtext(current_schema())::oid",
            &[],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

async fn wait_for_writer(db: &TestDatabase, not: Option<i32>) -> i32 {
    for _ in 0..100 {
        if let Some(pid) = writer_pid(db).await
            && Some(pid) != not
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no node took the log writer lock");
}

/// The node holding the log writer lock loses its session (its database
/// connection is killed, as when the node dies), then stops: each time
/// another node takes over, the log keeps taking appends on every node,
/// directory epochs keep counting up with one root each, and a node
/// started afterwards serves the same epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_writer_role_moves_when_its_node_dies() {
    let Some(db) = TestDatabase::create("the_log_writer_role_moves_when_its_node_dies").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        // Node a starts alone, so it is the first writer.
        let a = node(&db).await;
        let first_writer = wait_for_writer(&db, None).await;
        let b = node(&db).await;
        let mut names = Vec::new();
        add(&a, "before1", &mut names).await;
        add(&b, "before2", &mut names).await;
        let (before, _) = lookup(&mut wire::Client::connect(b.addr()).await, "before1").await;
        assert_one_log(&[a.addr(), b.addr()], &names, None).await;

        // The writer's session dies: the lock moves (or comes back) within
        // the retry interval, and nothing is lost on the way.
        db.client()
            .await
            .execute("SELECT pg_terminate_backend($1)", &[&first_writer])
            .await
            .unwrap();
        let second_writer = wait_for_writer(&db, Some(first_writer)).await;
        assert_ne!(first_writer, second_writer);
        add(&a, "during1", &mut names).await;
        add(&b, "during2", &mut names).await;
        assert_one_log(&[a.addr(), b.addr()], &names, None).await;

        // Node a stops for good: b is (or becomes) the writer and carries
        // on alone (so the role moved from a to b at one of the two
        // steps), then a fresh node joins.
        a.stop().await;
        wait_for_writer(&db, Some(first_writer)).await;
        add(&b, "after1", &mut names).await;
        let (after, _) = lookup(&mut wire::Client::connect(b.addr()).await, "after1").await;
        assert!(
            after.epoch > before.epoch,
            "epochs go on counting up: {} then {}",
            before.epoch,
            after.epoch
        );
        let c = node(&db).await;
        add(&c, "after2", &mut names).await;
        assert_one_log(&[b.addr(), c.addr()], &names, None).await;
        b.stop().await;
        c.stop().await;
    })
    .await
    .expect("timed out");
}

/// Real clients on different nodes: a direct chat verifies the contact's
/// key log and directory lookup from the node each client is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_different_nodes_verify_each_other() {
    let Some(db) = TestDatabase::create("clients_on_different_nodes_verify_each_other").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let a = node(&db).await;
        let b = node(&db).await;
        let (mut alice, _alice_dir) = register(&a.url(), "alice").await;
        let (mut bob, _bob_dir) = register(&b.url(), "bob").await;
        alice.send_direct("bob", "hello from node a").await.unwrap();
        let got = bob.sync().await.unwrap();
        assert!(
            sotto_testkit::texts(&got).contains(&"hello from node a".to_owned()),
            "{got:?}"
        );
        bob.send_direct("alice", "hello from node b").await.unwrap();
        let got = alice.sync().await.unwrap();
        assert!(
            sotto_testkit::texts(&got).contains(&"hello from node b".to_owned()),
            "{got:?}"
        );
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("timed out");
}

/// Rate limits that must hold for the whole service hold across nodes:
/// registrations from one address, devices added to one account and
/// KeyPackage claims taking from one account's pool count on every node,
/// though each node's own bucket would still let them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_rate_limits_count_on_every_node() {
    let Some(db) = TestDatabase::create("global_rate_limits_count_on_every_node").await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let limited = |config: &mut sotto_server::ServerConfig| {
            config.limits.registrations_per_address = sotto_server::config::Rate {
                per_second: 1.0 / 3600.0,
                burst: 3.0,
            };
            config.limits.devices_added_per_account = sotto_server::config::Rate {
                per_second: 1.0 / 3600.0,
                burst: 2.0,
            };
            config.limits.claims_per_target = sotto_server::config::Rate {
                per_second: 1.0 / 3600.0,
                burst: 2.0,
            };
        };
        let url = db.url().to_owned();
        let start = |url: String| {
            TestServer::start_with(move |config| {
                config.store = Some(url);
                limited(config);
            })
        };
        let a = start(url.clone()).await;
        let b = start(url).await;
        // Three registrations from 127.0.0.1, over both nodes, then no more
        // on either (each node alone has counted at most two).
        let owner = Account::new("owner");
        let mut on_a = wire::Client::connect(a.addr()).await;
        assert_done(&on_a.register(&owner).await);
        assert_done(
            &wire::Client::connect(b.addr())
                .await
                .register(&Account::new("second"))
                .await,
        );
        assert_done(
            &wire::Client::connect(a.addr())
                .await
                .register(&Account::new("third"))
                .await,
        );
        for at in [b.addr(), a.addr()] {
            let refused = wire::Client::connect(at)
                .await
                .register(&Account::new("fourth"))
                .await;
            let e = wire::assert_error(&refused, ErrorCode::RateLimited);
            assert!(e.retry_after_ms > 0, "{e:?}");
        }
        // Two devices added to one account, one per node; the third is
        // refused though node a added only one.
        let mut on_b = wire::Client::connect(b.addr()).await;
        assert_logged_in(&on_b.login(&owner).await);
        assert_done(
            &on_a
                .request(owner.add_device(&owner.another_device(), 2))
                .await,
        );
        assert_done(
            &on_b
                .request(owner.add_device(&owner.another_device(), 3))
                .await,
        );
        let refused = on_a
            .request(owner.add_device(&owner.another_device(), 4))
            .await;
        wire::assert_error(&refused, ErrorCode::RateLimited);
        // Claims taking from one account's pool (it has none: each is told
        // so), over both nodes: the third is held to last-resort
        // KeyPackages, of which it has none either, so it is rate limited.
        let claim = || {
            Body::ClaimKeyPackages(v1::ClaimKeyPackages {
                username: "owner".into(),
                ..Default::default()
            })
        };
        let mut claimer_a = wire::Client::connect(a.addr()).await;
        let mut claimer_b = wire::Client::connect(b.addr()).await;
        wire::assert_error(&claimer_a.request(claim()).await, ErrorCode::NoKeyPackage);
        wire::assert_error(&claimer_b.request(claim()).await, ErrorCode::NoKeyPackage);
        wire::assert_error(&claimer_a.request(claim()).await, ErrorCode::RateLimited);
        // What is stored is keyed hashes, not the address or the name.
        let client = db.client().await;
        let keys: Vec<Vec<u8>> = client
            .query("SELECT key FROM rate_windows", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(keys.len(), 3, "one window per limited key");
        for key in keys {
            assert_eq!(key.len(), 32);
            assert!(!key.windows(5).any(|w| w == b"owner" || w == b"127.0"));
        }
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("timed out");
}

/// The process id of the node holding this schema's log writer lock (its
/// election connection names it).
async fn writer_process(db: &TestDatabase) -> Option<u32> {
    let row = db
        .client()
        .await
        .query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.classid = 1349976067::oid AND l.objid = hashtext(current_schema())::oid",
            &[],
        )
        .await
        .unwrap()?;
    let name: String = row.get(0);
    name.rsplit("pid ").next()?.parse().ok()
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Sends `count` texts from `me`, alternating the group and a direct chat,
/// with a pause between; returns each tag and whether it was acknowledged.
async fn send_load(
    me: usize,
    client: &mut sotto_client::Client,
    count: usize,
) -> Vec<(String, usize, Option<usize>, bool)> {
    let mut sent = Vec::new();
    for n in 0..count {
        let tag = format!("{}#{n}", USERS[me]);
        let peer = (me + 1 + n % 2) % USERS.len();
        let direct = n % 3 != 0;
        let result = tokio::time::timeout(Duration::from_secs(60), async {
            if direct {
                client.send_direct(USERS[peer], &tag).await.map(|_| ())
            } else {
                client.send_group("ops", &tag).await.map(|_| ())
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{tag}: send hung"));
        if let Err(e) = &result {
            eprintln!("{tag}: {e}");
        }
        sent.push((tag, me, direct.then_some(peer), result.is_ok()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent
}

/// Three `sotto-server` processes on one database behind a round-robin
/// proxy; real clients send under load while the process holding the log
/// writer lock is SIGKILLed. Clients reconnect through the proxy to the
/// nodes left; another node takes the writer's role (a new account is
/// registered and verified through it); afterwards every acknowledged
/// message reached each recipient exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_of_three_processes_loses_no_acknowledged_message() {
    use sotto_client::{Client, ConversationKind, EntryKind};
    use sotto_testkit::cluster_processes::ClusterProcesses;

    let Some(db) =
        TestDatabase::create("sigkill_of_one_of_three_processes_loses_no_acknowledged_message")
            .await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(300), async {
        let mut cluster = ClusterProcesses::start(db.url(), 3, &["--no-rate-limits"]).await;
        let url = cluster.url();
        let mut dirs = Vec::new();
        let mut clients = Vec::new();
        for user in USERS {
            let dir = tempfile::TempDir::new().unwrap();
            clients.push(Client::register(dir.path(), user, &url).await.unwrap());
            dirs.push(dir);
        }
        clients[0]
            .create_group("ops", &[USERS[1].into(), USERS[2].into()])
            .await
            .unwrap();
        for (a, b) in [(0, 1), (1, 2), (2, 0)] {
            clients[a].send_direct(USERS[b], "hello").await.unwrap();
        }
        for c in &mut clients {
            c.sync().await.unwrap();
        }
        let writer = writer_process(&db).await.expect("a node is the log writer");
        let victim = cluster
            .index_of_pid(writer)
            .expect("the writer is one of the nodes");

        let senders = join_all(
            clients
                .iter_mut()
                .enumerate()
                .map(|(i, c)| send_load(i, c, 40)),
        );
        let killer = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            cluster.kill(victim);
        };
        let (sent, ()) = tokio::join!(senders, killer);
        let sent: Vec<_> = sent.into_iter().flatten().collect();

        // Another process took the writer's role, and the log goes on: a
        // new account registers, and alice verifies it (its key log and
        // directory lookup) before writing to it.
        let mut new_writer = None;
        for _ in 0..50 {
            new_writer = writer_process(&db).await.filter(|p| *p != writer);
            if new_writer.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            new_writer.is_some(),
            "no live process took the log writer lock"
        );
        let dave_dir = tempfile::TempDir::new().unwrap();
        let mut dave = Client::register(dave_dir.path(), "dave", &url)
            .await
            .unwrap();
        clients[0]
            .send_direct("dave", "welcome dave")
            .await
            .unwrap();
        assert!(
            sotto_testkit::texts(&dave.sync().await.unwrap()).contains(&"welcome dave".to_owned())
        );

        // Drain: everyone syncs (resending its outbox) until quiet.
        let mut quiet = 0;
        for _ in 0..10 {
            let mut anything = false;
            for c in &mut clients {
                match c.sync().await {
                    Ok(entries) => anything |= !entries.is_empty(),
                    Err(e) => {
                        anything = true;
                        eprintln!("sync after the kill failed: {e}");
                    }
                }
                anything |= !c.outbox_payloads().unwrap().is_empty();
            }
            quiet = if anything { 0 } else { quiet + 1 };
            if quiet == 2 {
                break;
            }
        }
        assert_eq!(quiet, 2, "clients did not settle");

        let mut held: Vec<HashMap<String, usize>> = Vec::new();
        for (me, c) in clients.iter().enumerate() {
            let mut counts = HashMap::new();
            let mut conversations = vec![(ConversationKind::Group, "ops".to_owned())];
            for (peer, user) in USERS.iter().enumerate() {
                if peer != me {
                    conversations.push((ConversationKind::Direct, (*user).to_owned()));
                }
            }
            for (kind, name) in conversations {
                for e in c.history(kind, &name).unwrap() {
                    if e.kind == EntryKind::Text {
                        *counts.entry(e.text).or_insert(0) += 1;
                    }
                }
            }
            held.push(counts);
        }
        let (mut acknowledged, mut lost, mut duplicated) = (0, 0, 0);
        for (tag, sender, direct, ok) in &sent {
            let recipients: Vec<usize> = match direct {
                Some(peer) => vec![*peer],
                None => (0..USERS.len()).filter(|r| r != sender).collect(),
            };
            acknowledged += usize::from(*ok);
            for r in recipients {
                match held[r].get(tag).copied().unwrap_or(0) {
                    0 if *ok => {
                        lost += 1;
                        eprintln!("LOST: {tag} for {}", USERS[r]);
                    }
                    n if n > 1 => {
                        duplicated += 1;
                        eprintln!("DUPLICATE: {tag} seen {n} times by {}", USERS[r]);
                    }
                    _ => {}
                }
            }
        }
        eprintln!(
            "cluster SIGKILL: {} sends, {acknowledged} acknowledged, node {victim} (the log \
             writer) killed; lost {lost}, duplicated {duplicated}",
            sent.len()
        );
        assert!(acknowledged > 60, "most sends succeed: {acknowledged}");
        assert_eq!(lost, 0, "acknowledged messages were lost");
        assert_eq!(duplicated, 0, "messages were duplicated");
        for c in &mut clients {
            c.disconnect().await;
        }
    })
    .await
    .expect("timed out");
}

/// A node restarted on its own directory file resumes where the recorded
/// publishes say it stands; a file that holds an epoch no node recorded
/// (its node died between publishing and recording, or the file was
/// changed) is rebuilt from the recorded publishes, so the node never
/// serves that epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_file_out_of_step_is_rebuilt() {
    let Some(db) = TestDatabase::create("a_directory_file_out_of_step_is_rebuilt").await else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::TempDir::new().unwrap();
        let start_in = |data_dir: std::path::PathBuf| {
            let url = db.url().to_owned();
            TestServer::start_with(move |config| {
                config.store = Some(url);
                config.data_dir = data_dir;
                config.limits.lift_rate_limits();
            })
        };
        let a = start_in(dir.path().to_path_buf()).await;
        let b = node(&db).await;
        let mut names = Vec::new();
        add(&a, "one", &mut names).await;
        add(&b, "two", &mut names).await;
        assert_one_log(&[a.addr(), b.addr()], &names, None).await;
        a.stop().await;

        let a = start_in(dir.path().to_path_buf()).await;
        add(&a, "three", &mut names).await;
        assert_one_log(&[a.addr(), b.addr()], &names, None).await;
        a.stop().await;

        // An epoch of the file's own, with an account the log never had.
        let vrf: Vec<u8> = db
            .client()
            .await
            .query_one(
                "SELECT secret FROM server_keys WHERE name = 'directory_vrf'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let file = sotto_directory::KeyDirectory::open(
            &dir.path()
                .join(sotto_server::key_directory::DIRECTORY_FILE_NAME),
            sotto_directory::VrfSecret::from_bytes(vrf.try_into().unwrap()),
        )
        .await
        .unwrap();
        file.publish(vec![(
            sotto_directory::Username::parse("ghost").unwrap(),
            sotto_directory::AccountState {
                identity_key: [7; 32],
                devices: std::collections::BTreeMap::new(),
            },
        )])
        .await
        .unwrap();
        drop(file);

        let a = start_in(dir.path().to_path_buf()).await;
        add(&b, "four", &mut names).await;
        assert_one_log(&[a.addr(), b.addr()], &names, None).await;
        let mut client = wire::Client::connect(a.addr()).await;
        let answer = client
            .request(Body::LookupAccount(v1::LookupAccount {
                username: "ghost".into(),
            }))
            .await;
        wire::assert_error(&answer, ErrorCode::UnknownUser);
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("timed out");
}

/// Registrations and device changes (which take the log lock) on two nodes
/// while both nodes carry sends (which take the mailbox counter) to one
/// device: every one succeeds, none is failed to break a deadlock, and the
/// log stays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_appends_and_sends_on_two_nodes_do_not_deadlock() {
    let Some(db) = TestDatabase::create("log_appends_and_sends_on_two_nodes_do_not_deadlock").await
    else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        let a = node(&db).await;
        let b = node(&db).await;
        let (mut owner, owner_account) = a.registered("owner").await;
        let group = wire::create_group(&mut owner).await;
        let recipient = owner_account.device_id.clone();
        let sends = |at: SocketAddr, group: Vec<u8>, recipient: Vec<u8>| async move {
            let mut client = wire::Client::connect(at).await;
            for n in 0..60 {
                let response = client
                    .request(wire::send_message(
                        &wire::random_id(),
                        &group,
                        &[&recipient],
                        format!("message {n}").as_bytes(),
                    ))
                    .await;
                assert_done(&response);
            }
        };
        let registrations = |at: SocketAddr, prefix: &'static str| async move {
            let mut names = Vec::new();
            for n in 0..15 {
                let name = format!("{prefix}{n}");
                add_at(at, &name).await;
                names.push((name, 1));
            }
            names
        };
        let started = std::time::Instant::now();
        let senders = join_all(
            [a.addr(), b.addr(), a.addr(), b.addr(), a.addr(), b.addr()]
                .map(|at| sends(at, group.clone(), recipient.clone())),
        );
        let registering = join_all([
            registrations(a.addr(), "node_a_"),
            registrations(b.addr(), "node_b_"),
            registrations(a.addr(), "node_c_"),
            registrations(b.addr(), "node_d_"),
        ]);
        let (_, registered) = tokio::join!(senders, registering);
        eprintln!("mixed load on two nodes: {:?}", started.elapsed());
        let mut names = vec![("owner".to_owned(), 1)];
        names.extend(registered.into_iter().flatten());
        assert_one_log(&[a.addr(), b.addr()], &names, None).await;
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("timed out");
}

/// Registers `name` (one device) on the node at `at`.
async fn add_at(at: SocketAddr, name: &str) {
    let mut client = wire::Client::connect(at).await;
    assert_done(&client.register(&Account::new(name)).await);
}
