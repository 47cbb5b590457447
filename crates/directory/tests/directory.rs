//! The key directory end to end: a real SQLite file, real akd proofs, and
//! servers that lie.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use protobuf::Message as _;
use sotto_directory::storage::sqlite::SqliteDatabase;
use sotto_directory::{
    AccountState, DirectoryError, KeyDirectory, STORED_NODE_HASH_OFFSET, Username, VerifyError,
    VrfSecret, verify_audit, verify_history, verify_lookup,
};
use std::path::{Path, PathBuf};

const SECRET: [u8; 32] = [42; 32];

fn user(name: &str) -> Username {
    Username::parse(name).unwrap()
}

/// An account state whose keys are all derived from `seed`, with `devices` devices.
fn state(seed: u8, devices: u8) -> AccountState {
    AccountState {
        identity_key: [seed; 32],
        devices: (0..devices)
            .map(|d| ([d; 16], [seed.wrapping_add(d).wrapping_add(100); 32]))
            .collect(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.db");
        Self { _dir: dir, path }
    }

    async fn open(&self) -> KeyDirectory {
        open_at(&self.path).await
    }
}

async fn open_at(path: &Path) -> KeyDirectory {
    KeyDirectory::open(path, VrfSecret::from_bytes(SECRET))
        .await
        .unwrap()
}

#[tokio::test]
async fn lookup_returns_the_latest_version_and_it_verifies() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    dir.publish(vec![
        (alice.clone(), state(1, 1)),
        (bob.clone(), state(2, 1)),
    ])
    .await
    .unwrap();
    // Alice adds a device in epoch 2, Carol joins in epoch 3.
    dir.publish(vec![(alice.clone(), state(1, 2))])
        .await
        .unwrap();
    let head = dir
        .publish(vec![(carol.clone(), state(3, 1))])
        .await
        .unwrap();
    assert_eq!(head.epoch, 3);
    assert_eq!(dir.epoch_root(3).unwrap(), Some(head.root_hash));

    let answer = dir.lookup(&alice).await.unwrap();
    assert_eq!(
        (answer.epoch, answer.root_hash),
        (head.epoch, head.root_hash)
    );
    let got = verify_lookup(
        &dir.vrf_public_key(),
        &head.root_hash,
        head.epoch,
        &alice,
        &answer.proof,
    )
    .unwrap();
    assert_eq!(got.state, state(1, 2));
    assert_eq!((got.version, got.epoch), (2, 2));

    // The proof is for Alice only: checked as Bob's it fails.
    let as_bob = verify_lookup(
        &dir.vrf_public_key(),
        &head.root_hash,
        head.epoch,
        &bob,
        &answer.proof,
    );
    assert!(
        matches!(as_bob, Err(VerifyError::LookupRejected(_))),
        "{as_bob:?}"
    );

    // Removing every device is a version too.
    let head = dir.publish(vec![(bob.clone(), state(2, 0))]).await.unwrap();
    let answer = dir.lookup(&bob).await.unwrap();
    let got = verify_lookup(
        &dir.vrf_public_key(),
        &head.root_hash,
        head.epoch,
        &bob,
        &answer.proof,
    )
    .unwrap();
    assert!(got.state.devices.is_empty());
    assert_eq!(got.version, 2);
}

#[tokio::test]
async fn a_server_serving_an_old_version_is_caught() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    let alice = user("alice");
    let vrf = dir.vrf_public_key();
    dir.publish(vec![
        (alice.clone(), state(1, 1)),
        (user("bob"), state(2, 1)),
    ])
    .await
    .unwrap();
    let old = dir.lookup(&alice).await.unwrap();

    // A copy of the server as it was at epoch 1: the rollback a lying server would serve from.
    let stale_path = fx.path.with_file_name("stale.db");
    dir.database()
        .with_connection(|c| {
            c.execute("VACUUM INTO ?1", [stale_path.to_str().unwrap()])
                .map(|_| ())
        })
        .unwrap();

    // Alice's phone is stolen; she replaces her device set in epoch 2.
    let head = dir
        .publish(vec![(alice.clone(), state(9, 1))])
        .await
        .unwrap();

    // Against its own (old) root the old answer verifies: a client that never
    // saw epoch 2 cannot tell, which is why clients keep the newest root.
    verify_lookup(&vrf, &old.root_hash, old.epoch, &alice, &old.proof).unwrap();
    // Against the newest root it does not.
    let err = verify_lookup(&vrf, &head.root_hash, head.epoch, &alice, &old.proof).unwrap_err();
    assert!(matches!(err, VerifyError::LookupRejected(_)), "{err:?}");

    // The rolled-back server answers from its copy; the client, who knows epoch 2's root, refuses.
    let stale = open_at(&stale_path).await;
    let stale_answer = stale.lookup(&alice).await.unwrap();
    assert_eq!(stale_answer.epoch, 1);
    let err = verify_lookup(
        &vrf,
        &head.root_hash,
        head.epoch,
        &alice,
        &stale_answer.proof,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::LookupRejected(_)), "{err:?}");

    // A server that keeps the new proof but swaps in the old state (or the old
    // version number) is refused too: the value is committed in the leaf, and
    // the version's "stale" marker is in the tree.
    let fresh = dir.lookup(&alice).await.unwrap();
    let mut forged = akd::proto::specs::types::LookupProof::parse_from_bytes(&fresh.proof).unwrap();
    forged.set_value(state(1, 1).encode().unwrap());
    let err = verify_lookup(
        &vrf,
        &head.root_hash,
        head.epoch,
        &alice,
        &forged.write_to_bytes().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::LookupRejected(_)), "{err:?}");
    let mut forged = akd::proto::specs::types::LookupProof::parse_from_bytes(&fresh.proof).unwrap();
    forged.set_version(1);
    let err = verify_lookup(
        &vrf,
        &head.root_hash,
        head.epoch,
        &alice,
        &forged.write_to_bytes().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::LookupRejected(_)), "{err:?}");
}

#[tokio::test]
async fn key_history_lists_every_version_and_verifies() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    let alice = user("alice");
    dir.publish(vec![(alice.clone(), state(1, 1))])
        .await
        .unwrap();
    dir.publish(vec![(user("bob"), state(2, 1))]).await.unwrap();
    dir.publish(vec![(alice.clone(), state(1, 2))])
        .await
        .unwrap();
    let head = dir
        .publish(vec![(alice.clone(), state(1, 3))])
        .await
        .unwrap();

    let answer = dir.history(&alice).await.unwrap();
    let versions = verify_history(
        &dir.vrf_public_key(),
        &head.root_hash,
        head.epoch,
        &alice,
        &answer.proof,
    )
    .unwrap();
    let summary: Vec<(u64, u64, usize)> = versions
        .iter()
        .map(|v| (v.version, v.epoch, v.state.devices.len()))
        .collect();
    assert_eq!(summary, vec![(3, 4, 3), (2, 3, 2), (1, 1, 1)]);

    // An older root does not vouch for the newer history.
    let old_root = dir.epoch_root(3).unwrap().unwrap();
    let err =
        verify_history(&dir.vrf_public_key(), &old_root, 3, &alice, &answer.proof).unwrap_err();
    assert!(matches!(err, VerifyError::HistoryRejected(_)), "{err:?}");
}

#[tokio::test]
async fn audit_between_epochs_verifies_and_a_flipped_stored_byte_is_caught() {
    let fx = Fixture::new();
    {
        let dir = fx.open().await;
        dir.publish(vec![
            (user("alice"), state(1, 1)),
            (user("bob"), state(2, 1)),
        ])
        .await
        .unwrap();
        dir.publish(vec![
            (user("alice"), state(1, 2)),
            (user("carol"), state(3, 1)),
        ])
        .await
        .unwrap();
        dir.publish(vec![(user("dave"), state(4, 1))])
            .await
            .unwrap();

        for (from, to) in [(0, 1), (0, 3), (1, 2), (2, 3)] {
            let audit = dir.audit_proof(from, to).await.unwrap();
            assert_eq!(audit.roots.len() as u64, to - from + 1);
            verify_audit(&audit.roots, from, &audit.proof)
                .await
                .unwrap();
        }

        // A proof for other epochs than the auditor asked for is refused.
        let audit = dir.audit_proof(1, 2).await.unwrap();
        let err = verify_audit(&audit.roots, 0, &audit.proof)
            .await
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::AuditEpochsMismatch { .. }),
            "{err:?}"
        );
        // Roots swapped: refused.
        let audit = dir.audit_proof(1, 3).await.unwrap();
        let mut roots = audit.roots.clone();
        roots.swap(1, 2);
        let err = verify_audit(&roots, 1, &audit.proof).await.unwrap_err();
        assert!(matches!(err, VerifyError::AuditRejected { .. }), "{err:?}");
    }
    // The roots an auditor holds, recorded when each epoch was published.
    let roots: Vec<[u8; 32]> = {
        let dir = fx.open().await;
        (1..=2)
            .map(|e| dir.epoch_root(e).unwrap().unwrap())
            .collect()
    };

    // Flip one byte of the hash of a leaf stored in epoch 2, then reopen
    // (akd's read cache must not hide the change).
    let db = SqliteDatabase::open(&fx.path).unwrap();
    let changed = db
        .with_connection(|c| {
            let (len, val, mut latest): (u32, Vec<u8>, Vec<u8>) = c.query_row(
                "SELECT label_len, label_val, latest FROM akd_tree_nodes
                 WHERE last_epoch = 2 AND label_len = 256 LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            latest[STORED_NODE_HASH_OFFSET] ^= 0x01;
            c.execute(
                "UPDATE akd_tree_nodes SET latest = ?1 WHERE label_len = ?2 AND label_val = ?3",
                rusqlite::params![latest, len, val],
            )
        })
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let dir = fx.open().await;
    let audit = dir.audit_proof(1, 2).await.unwrap();
    let err = verify_audit(&roots, 1, &audit.proof).await.unwrap_err();
    // The leaf's value no longer hashes to epoch 2's published root.
    assert!(
        matches!(err, VerifyError::AuditRejected { from: 1, to: 2, .. }),
        "{err:?}"
    );

    // Lookups whose proofs pass by the flipped node no longer reach the
    // latest published root either (the stored root node was not touched,
    // so the server still claims the same root).
    let head = dir.latest().await.unwrap();
    let mut rejected = 0;
    for name in ["alice", "bob", "carol", "dave"] {
        let answer = dir.lookup(&user(name)).await.unwrap();
        assert_eq!(answer.root_hash, head.root_hash);
        let verdict = verify_lookup(
            &dir.vrf_public_key(),
            &head.root_hash,
            head.epoch,
            &user(name),
            &answer.proof,
        );
        match verdict {
            Ok(_) => {}
            Err(VerifyError::LookupRejected(_)) => rejected += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(rejected > 0, "no lookup noticed the flipped node");
}

#[tokio::test]
async fn the_directory_survives_reopening() {
    let fx = Fixture::new();
    let first_head = {
        let dir = fx.open().await;
        dir.publish(vec![(user("alice"), state(1, 1))])
            .await
            .unwrap();
        dir.publish(vec![(user("bob"), state(2, 1))]).await.unwrap()
    };
    let dir = fx.open().await;
    assert_eq!(dir.latest().await.unwrap(), first_head);
    let answer = dir.lookup(&user("alice")).await.unwrap();
    verify_lookup(
        &dir.vrf_public_key(),
        &first_head.root_hash,
        2,
        &user("alice"),
        &answer.proof,
    )
    .unwrap();
    // Publishing goes on from the stored epoch, and the old epochs stay auditable.
    let head = dir
        .publish(vec![(user("alice"), state(1, 2))])
        .await
        .unwrap();
    assert_eq!(head.epoch, 3);
    let audit = dir.audit_proof(0, 3).await.unwrap();
    verify_audit(&audit.roots, 0, &audit.proof).await.unwrap();
    drop(dir);

    // Another VRF key would hide every account: refused.
    let wrong = KeyDirectory::open(&fx.path, VrfSecret::from_bytes([1; 32])).await;
    assert!(
        matches!(wrong, Err(DirectoryError::WrongVrfKey)),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn published_data_lists_no_usernames() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    let names = ["zelda-secret-name", "yorick.hidden", "xavier_private"];
    dir.publish(names.iter().map(|n| (user(n), state(1, 1))).collect())
        .await
        .unwrap();
    dir.publish(vec![(user(names[0]), state(1, 2))])
        .await
        .unwrap();

    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    // Every published table, row by row.
    let published: Vec<Vec<u8>> = dir
        .database()
        .with_connection(|c| {
            let mut rows = Vec::new();
            for query in [
                "SELECT CAST(label_val || latest || COALESCE(previous, x'') AS BLOB) FROM akd_tree_nodes",
                "SELECT root_hash FROM akd_epoch_roots",
                "SELECT CAST(latest_epoch AS BLOB) FROM akd_azks",
            ] {
                let mut stmt = c.prepare(query)?;
                let found = stmt
                    .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.extend(found);
            }
            Ok(rows)
        })
        .unwrap();
    assert!(published.len() > 10);
    let audit = dir.audit_proof(0, 2).await.unwrap();
    let lookup = dir.lookup(&user(names[0])).await.unwrap();
    for name in names {
        assert!(
            !published.iter().any(|row| contains(row, name)),
            "{name} in a published row"
        );
        assert!(!contains(&audit.proof, name), "{name} in the audit proof");
        assert!(!contains(&lookup.proof, name), "{name} in a lookup proof");
    }
    // The one place usernames are: the server's private index, which is
    // never published (it is how the server finds an account's versions).
    let private: i64 = dir
        .database()
        .with_connection(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM akd_value_states WHERE username = CAST(?1 AS BLOB)",
                [names[0]],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(private, 2);
}

#[tokio::test]
async fn caller_mistakes_are_named() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    assert!(matches!(
        dir.publish(vec![]).await,
        Err(DirectoryError::NothingToPublish)
    ));
    let dup = dir
        .publish(vec![
            (user("alice"), state(1, 1)),
            (user("alice"), state(1, 2)),
        ])
        .await;
    assert!(
        matches!(dup, Err(DirectoryError::DuplicateAccount(_))),
        "{dup:?}"
    );
    let too_many = AccountState {
        identity_key: [0; 32],
        devices: (0..=64u8).map(|d| ([d; 16], [d; 32])).collect(),
    };
    let bad = dir.publish(vec![(user("alice"), too_many)]).await;
    assert!(matches!(bad, Err(DirectoryError::BadState(..))), "{bad:?}");
    dir.publish(vec![(user("alice"), state(1, 1))])
        .await
        .unwrap();
    let unknown = dir.lookup(&user("nobody")).await;
    assert!(
        matches!(unknown, Err(DirectoryError::UnknownAccount(_))),
        "{unknown:?}"
    );
    let range = dir.audit_proof(1, 1).await;
    assert!(
        matches!(range, Err(DirectoryError::BadEpochRange { .. })),
        "{range:?}"
    );
    let range = dir.audit_proof(0, 2).await;
    assert!(
        matches!(range, Err(DirectoryError::BadEpochRange { .. })),
        "{range:?}"
    );
    // Malformed bytes are the server's fault, named as such.
    let err = verify_lookup(
        &dir.vrf_public_key(),
        &[0; 32],
        1,
        &user("alice"),
        b"\xff\xff",
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed("lookup", _)),
        "{err:?}"
    );
}

/// 10,000 accounts, then an epoch of 100 changes: audit and lookups verify.
#[tokio::test]
async fn ten_thousand_accounts_audit() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    let names: Vec<Username> = (0..10_000).map(|i| user(&format!("user{i:05}"))).collect();
    dir.publish(names.iter().map(|n| (n.clone(), state(1, 2))).collect())
        .await
        .unwrap();
    let head = dir
        .publish(
            names
                .iter()
                .step_by(100)
                .map(|n| (n.clone(), state(2, 3)))
                .collect(),
        )
        .await
        .unwrap();
    let audit = dir.audit_proof(0, 2).await.unwrap();
    verify_audit(&audit.roots, 0, &audit.proof).await.unwrap();
    for name in [&names[0], &names[1], &names[9_999]] {
        let answer = dir.lookup(name).await.unwrap();
        verify_lookup(
            &dir.vrf_public_key(),
            &head.root_hash,
            head.epoch,
            name,
            &answer.proof,
        )
        .unwrap();
    }
}

/// The web-release label: its digest verifies, a new digest is a new
/// version, the same digest again is no new epoch, and its proof is no
/// account's (nor an account's proof the web release's).
#[tokio::test]
async fn the_web_release_label_is_versioned_apart_from_every_account() {
    let fx = Fixture::new();
    let dir = fx.open().await;
    let vrf = dir.vrf_public_key();
    assert!(dir.lookup_web_release().await.unwrap().is_none());

    let first = dir
        .publish_with_web_release(vec![(user("alice"), state(1, 1))], Some([7; 32]))
        .await
        .unwrap();
    let answer = dir.lookup_web_release().await.unwrap().unwrap();
    let found = sotto_directory::verify_web_release_lookup(
        &vrf,
        &first.root_hash,
        first.epoch,
        &answer.proof,
    )
    .unwrap();
    assert_eq!((found.version, found.digest), (1, [7; 32]));
    // The web release's proof is no account's, and no account's is it.
    let alice = dir.lookup(&user("alice")).await.unwrap();
    assert!(
        verify_lookup(
            &vrf,
            &first.root_hash,
            first.epoch,
            &user("alice"),
            &answer.proof
        )
        .is_err()
    );
    assert!(
        sotto_directory::verify_web_release_lookup(
            &vrf,
            &first.root_hash,
            first.epoch,
            &alice.proof
        )
        .is_err()
    );

    // The same digest again: nothing to publish, no new epoch.
    let same = dir
        .publish_with_web_release(Vec::new(), Some([7; 32]))
        .await
        .unwrap();
    assert_eq!(same, first);

    let second = dir
        .publish_with_web_release(Vec::new(), Some([8; 32]))
        .await
        .unwrap();
    assert_eq!(second.epoch, first.epoch + 1);
    let answer = dir.lookup_web_release().await.unwrap().unwrap();
    let found = sotto_directory::verify_web_release_lookup(
        &vrf,
        &second.root_hash,
        second.epoch,
        &answer.proof,
    )
    .unwrap();
    assert_eq!((found.version, found.digest), (2, [8; 32]));
    // A doctored proof does not verify.
    assert!(
        sotto_directory::verify_web_release_lookup(&vrf, &second.root_hash, second.epoch, &{
            let mut p = answer.proof.clone();
            let middle = p.len() / 2;
            p[middle] ^= 1;
            p
        })
        .is_err()
    );
    // Nothing published at all is refused.
    assert!(matches!(
        dir.publish_with_web_release(Vec::new(), None).await,
        Err(DirectoryError::NothingToPublish)
    ));
}
