//! Backups that restore: `sotto-server backup` copies the database of the
//! running server while real clients send; `sotto-server restore` puts the
//! copy in a new directory; a server started there, on the same address,
//! serves the same clients on. Every message acknowledged before the backup
//! began reaches its recipient; the restored log audits clean under the
//! same key. Also: what restore refuses (an existing database, a truncated
//! or corrupted file, a backup without keys unless `--keys-from`), and
//! that `--exclude-keys` leaves no key byte in the file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, ConversationKind, EntryKind};
use sotto_testkit::{ServerProcess, binary, free_loopback_addr};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Runs `sotto-server ARGS` to completion.
fn server_command(args: &[&str]) -> Output {
    std::process::Command::new(binary("sotto-server"))
        .args(args)
        .output()
        .expect("run sotto-server")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `log key:` line of a passing `sotto-server audit`.
fn audited_log_key(data: &Path) -> String {
    let out = server_command(&["audit", "--data", path(data)]);
    assert!(out.status.success(), "audit failed: {}", stderr(&out));
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("log key:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Starts the server binary on `addr`, retrying while the port is still
/// held by the process that just exited.
fn spawn(data: &Path, addr: &str) -> ServerProcess {
    for attempt in 0..50 {
        match std::panic::catch_unwind(|| ServerProcess::spawn_at(data, addr)) {
            Ok(server) => return server,
            Err(_) if attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!()
}

/// Sends texts from `me` to the next user until `stop`: (tag, when the
/// send returned, acknowledged).
async fn sender(me: usize, c: &mut Client, stop: &AtomicBool) -> Vec<(String, Instant, bool)> {
    let peer = USERS[(me + 1) % USERS.len()];
    let mut sent = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let tag = format!("{}#{n}", USERS[me]);
        let result = c.send_direct(peer, &tag).await;
        match &result {
            Ok(_) | Err(ClientError::Network(_)) => {}
            Err(e) => panic!("{tag}: refused: {e}"),
        }
        sent.push((tag, Instant::now(), result.is_ok()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_load_restores_and_clients_continue() {
    let old = tempfile::TempDir::new().unwrap();
    let backups = tempfile::TempDir::new().unwrap();
    let full = backups.path().join("full.db");
    let keyless = backups.path().join("keyless.db");
    let addr = free_loopback_addr();
    let url = format!("http://{addr}");
    let mut server = spawn(old.path(), &addr);
    let mut profiles = Vec::new();
    let mut clients = Vec::new();
    for user in USERS {
        let dir = tempfile::TempDir::new().unwrap();
        clients.push(Client::register(dir.path(), user, &url).await.unwrap());
        profiles.push(dir);
    }
    for (me, c) in clients.iter_mut().enumerate() {
        c.send_direct(USERS[(me + 1) % USERS.len()], "hello")
            .await
            .unwrap();
    }

    // Both backups while the clients send.
    let stop = AtomicBool::new(false);
    let backup_started = Mutex::new(None);
    let senders = futures_util::future::join_all(
        clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| sender(i, c, &stop)),
    );
    let backer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        *backup_started.lock().unwrap() = Some(Instant::now());
        let (data, full, keyless) = (old.path().to_owned(), full.clone(), keyless.clone());
        let outs = tokio::task::spawn_blocking(move || {
            let a = server_command(&["backup", "--data", path(&data), "--out", path(&full)]);
            let b = server_command(&[
                "backup",
                "--data",
                path(&data),
                "--out",
                path(&keyless),
                "--exclude-keys",
            ]);
            (a, b)
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        outs
    };
    let (sent, (full_out, keyless_out)) = tokio::join!(senders, backer);
    assert!(full_out.status.success(), "backup: {}", stderr(&full_out));
    assert!(
        stdout(&full_out).contains("signing keys:    directory_vrf, franking, log"),
        "{}",
        stdout(&full_out)
    );
    let carried = stdout(&full_out)
        .lines()
        .find_map(|l| l.strip_prefix("key directory:"))
        .and_then(|bytes| bytes.trim().strip_suffix(" bytes"))
        .and_then(|bytes| bytes.parse::<u64>().ok());
    assert!(
        carried.is_some_and(|bytes| bytes > 0),
        "the backup left the key directory out: {}",
        stdout(&full_out)
    );
    assert!(keyless_out.status.success(), "{}", stderr(&keyless_out));
    assert!(stdout(&keyless_out).contains("signing keys:    none"));
    let backup_started = backup_started.lock().unwrap().unwrap();
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("partial"))
            .collect()
    };
    assert!(
        leftovers(old.path()).is_empty(),
        "{:?}",
        leftovers(old.path())
    );
    assert!(leftovers(backups.path()).is_empty());
    let log_key = audited_log_key(old.path());

    // --exclude-keys: not one byte of a key in the file.
    let keys: Vec<Vec<u8>> = {
        let db = rusqlite::Connection::open(old.path().join("sotto.db")).unwrap();
        let mut stmt = db.prepare("SELECT secret FROM server_keys").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(!keys.is_empty());
    let keyless_bytes = std::fs::read(&keyless).unwrap();
    let full_bytes = std::fs::read(&full).unwrap();
    for key in &keys {
        assert!(full_bytes.windows(key.len()).any(|w| w == key.as_slice()));
        assert!(
            !keyless_bytes
                .windows(key.len())
                .any(|w| w == key.as_slice()),
            "a key is in the --exclude-keys backup"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&full).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the backup is readable by others");
    }
    let again = server_command(&["backup", "--data", path(old.path()), "--out", path(&full)]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("never overwrites"),
        "{}",
        stderr(&again)
    );

    // The old server goes; the backup is restored in a new directory and
    // served at the same address.
    assert!(server.terminate().success());
    let new = tempfile::TempDir::new().unwrap();
    let restored_dir = new.path().join("data");
    let out = server_command(&[
        "restore",
        "--from",
        path(&full),
        "--data",
        path(&restored_dir),
    ]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert!(
        restored_dir.join("directory.db").is_file(),
        "the restore did not bring the key directory back"
    );
    let again = server_command(&[
        "restore",
        "--from",
        path(&full),
        "--data",
        path(&restored_dir),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("never overwrites a database"),
        "{}",
        stderr(&again)
    );
    assert_eq!(audited_log_key(&restored_dir), log_key);
    let server = spawn(&restored_dir, &addr);

    // The clients carry on against the restored server.
    for (me, c) in clients.iter_mut().enumerate() {
        c.send_direct(USERS[(me + 1) % USERS.len()], "after the restore")
            .await
            .unwrap();
    }
    let mut quiet = 0;
    for _ in 0..10 {
        let mut anything = false;
        for c in &mut clients {
            anything |= !c.sync().await.unwrap().is_empty();
            anything |= !c.outbox_payloads().unwrap().is_empty();
        }
        quiet = if anything { 0 } else { quiet + 1 };
        if quiet == 2 {
            break;
        }
    }
    assert_eq!(quiet, 2, "clients did not settle");
    // The key directory came back with the backup: the epochs each device
    // verified before are still there (a rebuilt directory would restart at
    // epoch 1, and every device's own-account check would warn).
    for (me, c) in clients.iter().enumerate() {
        let warnings = c.account_warnings(true).unwrap();
        assert!(
            warnings.is_empty(),
            "{} was warned: {warnings:?}",
            USERS[me]
        );
    }

    let (mut before, mut lost, mut after_delivered, mut after_lost) = (0, 0, 0, 0);
    for (me, attempts) in sent.iter().enumerate() {
        let peer = (me + 1) % USERS.len();
        let mut counts = BTreeMap::new();
        for e in clients[peer]
            .history(ConversationKind::Direct, USERS[me])
            .unwrap()
        {
            assert!(
                !(e.kind == EntryKind::System && e.text.starts_with("WARNING")),
                "{} got a warning: {}",
                USERS[peer],
                e.text
            );
            if e.kind == EntryKind::Text {
                *counts.entry(e.text).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.get("after the restore"), Some(&1));
        for (tag, at, ok) in attempts {
            let seen = counts.get(tag).copied().unwrap_or(0);
            assert!(seen <= 1, "{tag} seen {seen} times");
            match (*ok, *at < backup_started, seen) {
                (true, true, 1) => before += 1,
                (true, true, _) => {
                    lost += 1;
                    eprintln!("LOST: {tag}, acknowledged before the backup");
                }
                (true, false, 1) => after_delivered += 1,
                (true, false, _) => after_lost += 1,
                (false, _, _) => {}
            }
        }
    }
    eprintln!(
        "backup under load: {before} messages acknowledged before the backup, {lost} of them lost; \
         acknowledged after it: {after_delivered} delivered (read before the restore), \
         {after_lost} lost with the old server"
    );
    assert!(before > 0, "no load before the backup");
    assert_eq!(lost, 0, "messages acknowledged before the backup were lost");
    assert_eq!(audited_log_key(&restored_dir), log_key);
    for c in &mut clients {
        c.disconnect().await;
    }
    drop(server);

    // A backup without keys is refused unless the keys come from elsewhere.
    let keyless_dir = new.path().join("keyless");
    let out = server_command(&[
        "restore",
        "--from",
        path(&keyless),
        "--data",
        path(&keyless_dir),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--keys-from"), "{}", stderr(&out));
    assert!(!keyless_dir.join("sotto.db").exists());
    let out = server_command(&[
        "restore",
        "--from",
        path(&keyless),
        "--data",
        path(&keyless_dir),
        "--keys-from",
        path(&full),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(audited_log_key(&keyless_dir), log_key);

    // A keyless database put in place by hand: the server will not start
    // with a new key (clients pinned the old one).
    let by_hand = new.path().join("by-hand");
    std::fs::create_dir(&by_hand).unwrap();
    std::fs::copy(&keyless, by_hand.join("sotto.db")).unwrap();
    let out = server_command(&["--listen", "127.0.0.1:0", "--data", path(&by_hand)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("log signing key is missing"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn restore_refuses_damaged_backups() {
    let old = tempfile::TempDir::new().unwrap();
    let mut server = ServerProcess::spawn(old.path());
    let work = tempfile::TempDir::new().unwrap();
    let full = work.path().join("full.db");
    let out = server_command(&["backup", "--data", path(old.path()), "--out", path(&full)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.terminate().success());
    let bytes = std::fs::read(&full).unwrap();

    let refused = |name: &str, content: &[u8], expect: &str| {
        let file = work.path().join(name);
        std::fs::write(&file, content).unwrap();
        let target = work.path().join(format!("{name}-restored"));
        let out = server_command(&["restore", "--from", path(&file), "--data", path(&target)]);
        assert!(!out.status.success(), "{name} was restored");
        assert!(stderr(&out).contains(expect), "{name}: {}", stderr(&out));
        assert!(!target.join("sotto.db").exists());
    };
    refused("truncated", &bytes[..bytes.len() - 1000], "damaged");
    refused("half", &bytes[..bytes.len() / 2], "damaged");
    let mut corrupted = bytes.clone();
    for b in &mut corrupted[4096..4096 + 64] {
        *b ^= 0x5a;
    }
    refused("corrupted", &corrupted, "damaged");
    refused(
        "text",
        b"not a database at all, just some text",
        "not an SQLite database",
    );
}
