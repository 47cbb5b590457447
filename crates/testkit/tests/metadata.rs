//! What the server keeps after people talk: no plaintext, no sender on any
//! stored message, no IP address, no list of group members — in the
//! database files and in the log, at debug level.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::Client;
use sotto_testkit::{ServerProcess, on_each_backend};
use std::path::Path;
use tempfile::TempDir;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every column of every table in the server's database.
fn schema(db: &rusqlite::Connection) -> Vec<(String, String)> {
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut columns = Vec::new();
    for table in tables {
        let mut stmt = db
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        for column in stmt.query_map([], |r| r.get::<_, String>(0)).unwrap() {
            columns.push((table.clone(), column.unwrap()));
        }
    }
    columns
}

const SECRETS: [&str; 3] = [
    "PLAINTEXT-one-to-one-5c1d",
    "PLAINTEXT-group-a8e2",
    "PLAINTEXT-reply-31f0",
];

/// Alice, Bob and Carol (each on `urls[i]`) talk 1:1 and in "the-club";
/// Carol stays offline, so her copies stay queued while the test looks.
async fn talk(urls: [&str; 3]) -> (Vec<TempDir>, Senders) {
    let profiles: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut alice = Client::register(profiles[0].path(), "alice", urls[0])
        .await
        .unwrap();
    let mut bob = Client::register(profiles[1].path(), "bob", urls[1])
        .await
        .unwrap();
    let mut carol = Client::register(profiles[2].path(), "carol", urls[2])
        .await
        .unwrap();
    alice.send_direct("bob", SECRETS[0]).await.unwrap();
    alice
        .create_group("the-club", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    alice.send_group("the-club", SECRETS[1]).await.unwrap();
    bob.sync().await.unwrap();
    bob.send_group("the-club", SECRETS[2]).await.unwrap();
    bob.send_direct("alice", SECRETS[2]).await.unwrap();
    alice.sync().await.unwrap();
    let senders = [(&alice, "alice"), (&bob, "bob")]
        .iter()
        .map(|(c, name)| ((*name).to_owned(), c.device_id().as_bytes().to_vec()))
        .collect();
    for client in [&mut alice, &mut bob, &mut carol] {
        client.disconnect().await;
    }
    (profiles, senders)
}

/// The accounts that sent, with their device ids.
type Senders = Vec<(String, Vec<u8>)>;

/// Stored franked messages: (payload, frank, acceptance time in ms).
type FrankedRows = Vec<(Vec<u8>, Vec<u8>, i64)>;

/// Franked messages (every application message is): the stored frank and
/// its time name no sender, and no debug log line about franks does.
fn assert_franks_name_no_sender(franked: &FrankedRows, senders: &Senders, log_file: &Path) {
    assert!(!franked.is_empty(), "Carol's queued messages carry franks");
    for (payload, frank, at) in franked {
        assert_eq!(frank.len(), 64);
        assert_eq!(at % 60_000, 0, "acceptance times are kept to the minute");
        for (name, device) in senders {
            for stored in [payload, frank] {
                assert!(
                    !contains(stored, device),
                    "{name}'s device id in a franked row"
                );
                assert!(
                    !contains(stored, name.as_bytes()),
                    "{name} in a franked row"
                );
            }
        }
    }
    let log = std::fs::read_to_string(log_file).unwrap();
    for line in log.lines().filter(|l| l.contains("frank")) {
        for (name, device) in senders {
            let hex: String = device.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!line.contains(&hex), "{line}");
            assert!(!line.contains(name.as_str()), "{line}");
        }
    }
}

/// No sender on stored messages (nothing in `messages` or `mailbox` names
/// an account, and the only device column is the recipient's mailbox), no
/// address column, and no table pairing a group with a device or account.
fn assert_no_sender_address_or_member_list(columns: &[(String, String)]) {
    for (table, column) in columns {
        if table == "messages" {
            assert!(
                !column.contains("user")
                    && !column.contains("device")
                    && !column.contains("sender"),
                "{table}.{column}"
            );
        }
        if table == "mailbox" {
            assert!(
                !column.contains("user") && !column.contains("sender") && !column.contains("group"),
                "{table}.{column}"
            );
        }
        assert!(
            !column.contains("ip") && !column.contains("addr"),
            "{table}.{column} looks like an address"
        );
    }
    let tables: std::collections::BTreeSet<&String> = columns.iter().map(|(t, _)| t).collect();
    for table in tables {
        let cols: Vec<&str> = columns
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, c)| c.as_str())
            .collect();
        let has_group = cols.iter().any(|c| c.contains("group"));
        let has_member = cols
            .iter()
            .any(|c| c.contains("device") || c.contains("user"));
        assert!(
            !(has_group && has_member),
            "{table} links groups to members: {cols:?}"
        );
    }
}

/// No plaintext, no group name, no address in any file of `dir`; returns
/// how many files there were.
fn assert_files_clean(dir: &Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for needle in SECRETS.iter().chain(&["the-club", "127.0.0.1"]) {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle:?} found in {}",
                path.display()
            );
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_no_sender_no_address_no_plaintext_and_no_member_list() {
    let data = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    let log_file = logs.path().join("server.log");
    let server = ServerProcess::spawn_logged(data.path(), &log_file, "debug");
    let url = server.url().to_owned();
    let (_profiles, senders) = talk([url.as_str(), url.as_str(), url.as_str()]).await;

    let db = rusqlite::Connection::open(data.path().join("sotto.db")).unwrap();
    assert_no_sender_address_or_member_list(&schema(&db));
    let franked: FrankedRows = db
        .prepare("SELECT payload, frank, franked_at_ms FROM messages WHERE frank IS NOT NULL")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_franks_name_no_sender(&franked, &senders, &log_file);
    assert!(assert_files_clean(data.path()) >= 1);

    // The log, at debug level: no plaintext, no group name, no address
    // (other than the address the server itself listens on).
    assert_log_clean(
        &log_file,
        &SECRETS,
        &[server.url().trim_start_matches("http://")],
    );
}

/// The same on three `sotto-server` processes sharing PostgreSQL and NATS,
/// with Alice, Bob and Carol each on their own node: every column of the
/// schema, every row of every table, each node's data directory and each
/// node's debug log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_keeps_no_sender_no_address_no_plaintext_and_no_member_list() {
    let test = "the_cluster_keeps_no_sender_no_address_no_plaintext_and_no_member_list";
    let Some(bus) = sotto_testkit::cluster::Cluster::bus_for(test) else {
        return;
    };
    let Some(db) = sotto_testkit::postgres::TestDatabase::create(test).await else {
        return;
    };
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let logs = TempDir::new().unwrap();
    // One after the other: the first creates the schema's tables.
    let nodes: Vec<(ServerProcess, std::path::PathBuf)> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let log_file = logs.path().join(format!("node{i}.log"));
            let node = ServerProcess::spawn_logged_with_args(
                dir.path(),
                &log_file,
                "debug",
                &["--store", db.url(), "--bus", bus.as_str()],
            );
            (node, log_file)
        })
        .collect();
    let (_profiles, senders) = talk([nodes[0].0.url(), nodes[1].0.url(), nodes[2].0.url()]).await;

    let columns: Vec<(String, String)> = db
        .client()
        .await
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = $1 ORDER BY 1, 2",
            &[&db.schema()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(!columns.is_empty());
    assert_no_sender_address_or_member_list(&columns);
    let needles: Vec<&str> = SECRETS
        .iter()
        .copied()
        .chain(["the-club", "127.0.0.1"])
        .collect();
    let found = db.tables_containing(&needles).await;
    assert!(found.is_empty(), "found in PostgreSQL: {found:?}");
    for dir in &dirs {
        assert_files_clean(dir.path());
    }
    let franked: FrankedRows = db
        .client()
        .await
        .query(
            "SELECT payload, frank, franked_at_ms FROM messages WHERE frank IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    for (_, log_file) in &nodes {
        assert_franks_name_no_sender(&franked, &senders, log_file);
    }
    // Each node may name where it listens, its database and its bus (and
    // the NATS and PostgreSQL clients' own lines name where they connect).
    let bus_addr = bus.trim_start_matches("nats://").to_owned();
    let store_addrs = [
        "127.0.0.1:5432",
        "host=127.0.0.1",
        "127.0.0.1/",
        " async_nats",
        " tokio_postgres",
    ];
    for (node, log_file) in &nodes {
        let mut own = vec![node.url().trim_start_matches("http://"), bus_addr.as_str()];
        own.extend(store_addrs);
        assert_log_clean(log_file, &SECRETS, &own);
    }
}

/// The log holds no plaintext and no group name, and no address but on
/// lines that name the server's own (`own`: where it listens, its
/// database, its bus).
fn assert_log_clean(log_file: &Path, secrets: &[&str], own: &[&str]) {
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(!log.is_empty(), "the server logged nothing at debug level");
    for line in log.lines() {
        for secret in secrets.iter().chain(&["the-club"]) {
            assert!(!line.contains(secret), "{secret} in the log: {line}");
        }
        if own.iter().any(|address| line.contains(address)) {
            continue;
        }
        assert!(!line.contains("127.0.0.1"), "an address in the log: {line}");
    }
}

on_each_backend! {
    /// Sealed sender holds only if the recipient list does not name the sender
    /// by leaving it out: every message and commit Alice sends lists every
    /// member device, hers included (her client drops its own copy unread).
    async fn the_sender_cannot_be_told_from_the_recipient_list(deployment) {
        use sotto_proto::v1::{ServerFrame, client_frame};
        use sotto_testkit::{ConnView, HostileProxy, register};
        use std::sync::{Arc, Mutex};

        // Recipient lists of Alice's sends and commits, as the server saw them.
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recording = Arc::clone(&seen);
        let proxy = HostileProxy::start(&deployment.url(), move |conn: &ConnView, frame: ServerFrame| {
            match &conn.request {
                Some(client_frame::Body::SendMessage(m)) => {
                    recording
                        .lock()
                        .unwrap()
                        .push(("message", m.recipients.clone()));
                }
                Some(client_frame::Body::SubmitCommit(c)) => {
                    recording
                        .lock()
                        .unwrap()
                        .push(("commit", c.recipients.clone()));
                }
                _ => {}
            }
            Some(frame)
        })
        .await;
        let (mut alice, _a) = register(&proxy.url(), "alice").await;
        let (mut bob, _b) = register(&deployment.url(), "bob").await;
        let (mut carol, _c) = register(&deployment.url(), "carol").await;
        alice
            .create_group("trio", &["bob".into(), "carol".into()])
            .await
            .unwrap();
        alice.send_group("trio", "from alice").await.unwrap();
        alice.send_direct("bob", "just bob").await.unwrap();

        let mut trio: Vec<Vec<u8>> = [&alice, &bob, &carol]
            .iter()
            .map(|c| c.device_id().as_bytes().to_vec())
            .collect();
        trio.sort();
        let mut pair = vec![device_of(&alice), device_of(&bob)];
        pair.sort();
        let seen = seen.lock().unwrap().clone();
        assert!(seen.len() >= 4, "{seen:?}");
        for (what, recipients) in &seen {
            let mut recipients = recipients.clone();
            recipients.sort();
            // A group's first commit goes to nobody (its Welcome to the others).
            if *what == "commit" && recipients.is_empty() {
                continue;
            }
            assert!(
                recipients == trio || recipients == pair,
                "a {what} left someone out: {recipients:?}"
            );
            assert!(
                recipients.contains(&device_of(&alice)),
                "the sender was left out"
            );
        }
        // Alice's own copies are acknowledged unread; the others read theirs.
        let mine = alice.sync().await.unwrap();
        assert!(
            mine.iter().all(|e| !e.text.starts_with("WARNING")),
            "{mine:?}"
        );
        assert!(mine.iter().all(|e| e.text != "from alice"), "{mine:?}");
        let to_bob: Vec<String> = bob
            .sync()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert!(
            to_bob.contains(&"from alice".to_owned()) && to_bob.contains(&"just bob".to_owned()),
            "{to_bob:?}"
        );
        let to_carol: Vec<String> = carol
            .sync()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert!(to_carol.contains(&"from alice".to_owned()), "{to_carol:?}");
    }
}

/// What a request was, and the recipient device ids it named.
type Recorded = (&'static str, Vec<Vec<u8>>);

fn device_of(client: &Client) -> Vec<u8> {
    client.device_id().as_bytes().to_vec()
}

on_each_backend! {
    /// Sealed sender holds only if the anonymous connection never says whose
    /// it is: every request on it that names an account names someone else
    /// (this account's own log and KeyPackages go on the logged-in
    /// connection), and it carries sends for one group only (two groups'
    /// sends on one connection would tie the sender to both rosters).
    async fn the_anonymous_connection_never_names_its_owner_and_carries_one_group(deployment) {
        use sotto_proto::v1::client_frame::Body;
        use sotto_testkit::{ConnView, HostileProxy, link, register, within};
        use std::sync::{Arc, Mutex};

        within(async {
            // Only alice's devices go through the proxy: every connection it
            // sees is hers.
            let seen: Arc<Mutex<Vec<ConnView>>> = Arc::default();
            let record = Arc::clone(&seen);
            let proxy = HostileProxy::start(&deployment.url(), move |conn: &ConnView, frame| {
                if conn.request.is_some() {
                    record.lock().unwrap().push(conn.clone());
                }
                Some(frame)
            })
            .await;
            let (mut alice, _a) = register(&proxy.url(), "alice").await;
            let (mut bob, _b) = register(&deployment.url(), "bob").await;
            let (_carol, _c) = register(&deployment.url(), "carol").await;
            // A second device: starting a conversation now claims KeyPackages
            // of alice's own other device and reads her own log.
            let (mut alice2, _a2) = link(&mut alice).await;
            alice.send_direct("bob", "one").await.unwrap();
            alice
                .create_group("club", &["bob".into(), "carol".into()])
                .await
                .unwrap();
            alice.send_group("club", "two").await.unwrap();
            alice.send_direct("bob", "three").await.unwrap();
            alice.send_group("club", "four").await.unwrap();
            alice2.sync().await.unwrap();
            alice2.send_direct("bob", "five").await.unwrap();
            assert_eq!(
                sotto_testkit::texts(&bob.sync().await.unwrap()),
                ["one", "two", "three", "four", "five"]
            );

            let seen = seen.lock().unwrap();
            let mut groups_per_connection: std::collections::HashMap<u64, Vec<Vec<u8>>> =
                std::collections::HashMap::new();
            let mut anonymous_lookups = 0;
            for conn in seen.iter().filter(|c| c.username.is_none()) {
                match conn.request.as_ref().unwrap() {
                    Body::GetAccountLog(r) => {
                        anonymous_lookups += 1;
                        assert_ne!(r.username, "alice", "own log looked up anonymously");
                    }
                    Body::ClaimKeyPackages(r) => {
                        anonymous_lookups += 1;
                        assert_ne!(r.username, "alice", "own KeyPackages claimed anonymously");
                    }
                    Body::SendMessage(m) => groups_per_connection
                        .entry(conn.connection)
                        .or_default()
                        .push(m.group_id.clone()),
                    Body::SubmitCommit(c) => groups_per_connection
                        .entry(conn.connection)
                        .or_default()
                        .push(c.group_id.clone()),
                    _ => {}
                }
            }
            assert!(anonymous_lookups > 0, "the test saw no anonymous look-up");
            let mut distinct_groups = std::collections::HashSet::new();
            for (connection, mut groups) in groups_per_connection {
                distinct_groups.extend(groups.iter().cloned());
                groups.dedup();
                assert_eq!(
                    groups.len(),
                    1,
                    "connection {connection} carried several groups"
                );
            }
            assert!(
                distinct_groups.len() >= 2,
                "the test sent to one group only"
            );
            // Her own log and devices were asked for, on a logged-in connection.
            assert!(seen.iter().any(|c| c.username.as_deref() == Some("alice")
                && matches!(c.request, Some(Body::ClaimKeyPackages(ref r)) if r.username == "alice")));
        })
        .await;
    }
}
