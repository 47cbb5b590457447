//! A locked profile holds nothing readable at rest: after `lock`, no file in
//! the profile directory (the database, its WAL and shared-memory files,
//! anything else) contains the identity key, the device key, openmls'
//! secrets or a message's text — not even while the profile is open and
//! chatting. With the passphrase it keeps working; without it, or with a
//! wrong one, it refuses and changes nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::store::lock;
use sotto_client::{Client, ClientError, LockError, Passphrase};
use sotto_testkit::{TestServer, register, texts, within};
use std::path::Path;

const SECRET_TEXT: &str = "the heron flies at midnight";

fn passphrase(text: &str) -> Passphrase {
    Passphrase::new(text.to_owned()).unwrap()
}

/// openmls' tables that hold private keys and epoch secrets.
const MLS_SECRET_TABLES: &[&str] = &[
    "openmls_encryption_keys",
    "openmls_epoch_keys_pairs",
    "openmls_signature_keys",
    "openmls_key_packages",
    "openmls_group_data",
];

/// Every byte string in a JSON value: arrays of numbers 0..=255 (how serde
/// writes bytes), at least 16 long so they are keys and secrets, not flags;
/// each both as JSON text and as raw bytes.
fn byte_strings(value: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
    match value {
        serde_json::Value::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            match bytes {
                Some(bytes) if bytes.len() >= 16 => {
                    // As stored (JSON text) and as the raw key bytes.
                    out.push(serde_json::to_vec(&bytes).unwrap());
                    out.push(bytes);
                }
                _ => items.iter().for_each(|v| byte_strings(v, out)),
            }
        }
        serde_json::Value::Object(fields) => fields.values().for_each(|v| byte_strings(v, out)),
        _ => {}
    }
}

/// The secrets a plain profile holds: its identity and device keys, and
/// every byte string in openmls' secret tables, as raw bytes and as the
/// JSON text stored.
fn secrets_of(dir: &Path) -> Vec<Vec<u8>> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (identity, device): (Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT identity_secret, device_secret FROM profile",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((identity.len(), device.len()), (32, 32));
    let mut secrets = vec![identity, device];
    let mut mls_values = 0;
    for table in MLS_SECRET_TABLES {
        let mut stmt = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let Ok(blob) = row.get::<_, Vec<u8>>(i) else {
                    continue;
                };
                let Ok(json) = serde_json::from_slice::<serde_json::Value>(&blob) else {
                    continue;
                };
                mls_values += 1;
                byte_strings(&json, &mut secrets);
                if blob.len() >= 32 {
                    secrets.push(blob);
                }
            }
        }
    }
    assert!(mls_values > 10, "openmls stored only {mls_values} values");
    secrets.push(SECRET_TEXT.as_bytes().to_vec());
    secrets
}

/// Which secrets some file in `dir` contains (a 16-byte prefix is enough to
/// count: nothing random repeats 128 bits by chance).
fn found_in_files(dir: &Path, secrets: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for secret in secrets {
            let needle = &secret[..secret.len().min(16)];
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(format!("{} holds {}", path.display(), hex_prefix(needle)));
            }
        }
    }
    found
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_profile_holds_no_secret_in_clear_and_keeps_chatting() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, alice_dir) = register(&server.url(), "alice").await;
        let (mut bob, _bob_dir) = register(&server.url(), "bob").await;
        alice.send_direct("bob", SECRET_TEXT).await.unwrap();
        assert_eq!(texts(&bob.sync().await.unwrap()), vec![SECRET_TEXT]);
        bob.send_direct("alice", "noted").await.unwrap();
        assert_eq!(texts(&alice.sync().await.unwrap()), vec!["noted"]);
        alice.disconnect().await;
        drop(alice);

        let dir = alice_dir.path();
        let secrets = secrets_of(dir);
        // The search works: the plain profile shows the account's keys, the
        // message and openmls' secrets.
        let plain = found_in_files(dir, &secrets);
        assert!(plain.len() >= 10, "{plain:?}");
        for secret in &secrets[..2] {
            assert!(!found_in_files(dir, std::slice::from_ref(secret)).is_empty());
        }
        let text = [SECRET_TEXT.as_bytes().to_vec()];
        assert!(!found_in_files(dir, &text).is_empty());

        lock::lock(dir, &passphrase("correct horse battery")).unwrap();
        assert!(lock::is_locked(dir).unwrap());
        assert_eq!(found_in_files(dir, &secrets), Vec::<String>::new());
        assert_eq!(file_names(dir), vec!["sotto.db"]);

        // Without the passphrase, or with a wrong one: refused, nothing lost.
        let before = std::fs::read(dir.join("sotto.db")).unwrap();
        assert!(matches!(
            Client::open(dir),
            Err(ClientError::Lock(LockError::NeedsPassphrase(_)))
        ));
        let wrong = Client::open_with_passphrase(dir, Some(&passphrase("wrong horse")));
        let Err(ClientError::Lock(LockError::WrongPassphrase(_))) = wrong else {
            panic!("a wrong passphrase opened the profile: {:?}", wrong.err());
        };
        assert!(
            wrong_text_is_clear(&ClientError::Lock(LockError::WrongPassphrase(dir.into()))),
            "the message should say what happened"
        );
        assert_eq!(std::fs::read(dir.join("sotto.db")).unwrap(), before);

        // Bob writes while Alice's profile is locked; she reads with the
        // passphrase and answers, and her files stay opaque while open.
        bob.send_direct("alice", "sent while you were locked")
            .await
            .unwrap();
        let mut alice =
            Client::open_with_passphrase(dir, Some(&passphrase("correct horse battery"))).unwrap();
        assert_eq!(
            texts(&alice.sync().await.unwrap()),
            vec!["sent while you were locked"]
        );
        alice
            .send_direct("bob", "read you, still locked")
            .await
            .unwrap();
        assert_eq!(
            found_in_files(dir, &secrets),
            Vec::<String>::new(),
            "while open"
        );
        assert_eq!(
            texts(&bob.sync().await.unwrap()),
            vec!["read you, still locked"]
        );
        alice.disconnect().await;
        drop(alice);
        assert!(lock::is_locked(dir).unwrap());
        assert_eq!(found_in_files(dir, &secrets), Vec::<String>::new());

        // A new passphrase, then unlocked: plain again, history whole.
        lock::change_passphrase(
            dir,
            &passphrase("correct horse battery"),
            &passphrase("new staple"),
        )
        .unwrap();
        lock::unlock(dir, &passphrase("new staple")).unwrap();
        assert!(!lock::is_locked(dir).unwrap());
        let mut alice = Client::open(dir).unwrap();
        let history = alice
            .history(sotto_client::ConversationKind::Direct, "bob")
            .unwrap();
        assert_eq!(
            texts(&history),
            vec![
                SECRET_TEXT,
                "noted",
                "sent while you were locked",
                "read you, still locked"
            ]
        );
        bob.send_direct("alice", "and unlocked").await.unwrap();
        assert_eq!(texts(&alice.sync().await.unwrap()), vec!["and unlocked"]);
        alice.disconnect().await;
        bob.disconnect().await;
        server.stop().await;
    })
    .await;
}

fn wrong_text_is_clear(e: &ClientError) -> bool {
    let text = e.to_string();
    text.contains("wrong passphrase") && text.contains("nothing was changed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_profile_is_not_overwritten_by_register() {
    within(async {
        let server = TestServer::start().await;
        let (mut alice, alice_dir) = register(&server.url(), "alice").await;
        alice.disconnect().await;
        drop(alice);
        lock::lock(alice_dir.path(), &passphrase("pass")).unwrap();
        let again = Client::register(alice_dir.path(), "carol", &server.url()).await;
        let Err(ClientError::Usage(text)) = again else {
            panic!("register into a locked profile: {:?}", again.err());
        };
        assert!(text.contains("locked"), "{text}");
        assert!(Client::open_with_passphrase(alice_dir.path(), Some(&passphrase("pass"))).is_ok());
        server.stop().await;
    })
    .await;
}
