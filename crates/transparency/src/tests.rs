//! Unit tests of the log: trees, proofs, heads, account replay and the
//! audit. Over the ~600 lines source files keep to because each proof and
//! replay case is spelled out on its own; there is no logic here.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ed25519_dalek::{Signer, SigningKey};
use sotto_proto::v1::{DeviceAdded, DeviceRemoved, IdentityRegistered, IdentityRotated};

use super::*;

fn identity(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn signed(key: &SigningKey, event: &AccountEvent) -> LogEntry {
    let event = event.encode_to_vec();
    let signature = key.sign(&sotto_proto::log_event_transcript(&event));
    LogEntry {
        event,
        signature: signature.to_bytes().to_vec(),
        ..LogEntry::default()
    }
}

fn event(key: &SigningKey, user: &str, seq: u64, change: account_event::Change) -> AccountEvent {
    AccountEvent {
        username: user.into(),
        identity_key: key.verifying_key().to_bytes().to_vec(),
        account_seq: seq,
        change: Some(change),
    }
}

fn registered(key: &SigningKey, user: &str) -> LogEntry {
    signed(
        key,
        &event(
            key,
            user,
            0,
            account_event::Change::IdentityRegistered(IdentityRegistered {}),
        ),
    )
}

fn device_key(id: u8) -> [u8; 32] {
    identity(id.wrapping_add(100)).verifying_key().to_bytes()
}

fn added(key: &SigningKey, user: &str, seq: u64, id: u8) -> LogEntry {
    signed(
        key,
        &event(
            key,
            user,
            seq,
            account_event::Change::DeviceAdded(DeviceAdded {
                device_id: vec![id; 16],
                device_key: device_key(id).to_vec(),
            }),
        ),
    )
}

fn removed(key: &SigningKey, user: &str, seq: u64, id: u8) -> LogEntry {
    signed(
        key,
        &event(
            key,
            user,
            seq,
            account_event::Change::DeviceRemoved(DeviceRemoved {
                device_id: vec![id; 16],
            }),
        ),
    )
}

fn leaves(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
}

fn log_of(leaves: &[Vec<u8>]) -> MerkleLog {
    let mut log = MerkleLog::new();
    for leaf in leaves {
        log.push(leaf);
    }
    log
}

/// The root ct-merkle computes for a tree built directly of these leaves.
fn reference_root(leaves: &[Vec<u8>]) -> Hash {
    let mut tree = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    for leaf in leaves {
        tree.push(leaf.clone());
    }
    (*tree.root().as_bytes()).into()
}

#[test]
fn directory_epoch_round_trip_and_tampering() {
    let key = LogKey::generate();
    let epoch = key.sign_epoch(&[3; 32], 7, &[9; 32], 1_000);
    verify_epoch(&key.public(), &epoch).unwrap();
    assert!(matches!(
        verify_epoch(&LogKey::generate().public(), &epoch),
        Err(LogError::BadSignature(_))
    ));
    for tampered in [
        SignedEpoch {
            epoch: 8,
            ..epoch.clone()
        },
        SignedEpoch {
            timestamp_ms: 1_001,
            ..epoch.clone()
        },
        SignedEpoch {
            root_hash: vec![8; 32],
            ..epoch.clone()
        },
        SignedEpoch {
            vrf_public_key: vec![4; 32],
            ..epoch.clone()
        },
    ] {
        assert!(matches!(
            verify_epoch(&key.public(), &tampered),
            Err(LogError::BadSignature(_))
        ));
    }
    // A tree head's signature is not an epoch's (domain separation).
    let head = key.sign_head(7, [9; 32], 1_000);
    let as_epoch = SignedEpoch {
        signature: head.signature,
        ..epoch.clone()
    };
    assert!(verify_epoch(&key.public(), &as_epoch).is_err());
    let short = SignedEpoch {
        vrf_public_key: vec![3; 31],
        ..epoch
    };
    assert!(matches!(
        verify_epoch(&key.public(), &short),
        Err(LogError::Malformed(_))
    ));
}

#[test]
fn head_round_trip_and_tampering() {
    let key = LogKey::generate();
    let head = key.sign_head(5, [9; 32], 1_000);
    verify_head(&key.public(), &head).unwrap();

    let other = LogKey::generate();
    assert!(matches!(
        verify_head(&other.public(), &head),
        Err(LogError::BadSignature(_))
    ));
    for tampered in [
        SignedTreeHead {
            tree_size: 6,
            ..head.clone()
        },
        SignedTreeHead {
            timestamp_ms: 1_001,
            ..head.clone()
        },
        SignedTreeHead {
            root_hash: vec![8; 32],
            ..head.clone()
        },
    ] {
        assert!(matches!(
            verify_head(&key.public(), &tampered),
            Err(LogError::BadSignature(_))
        ));
    }
    let short_root = SignedTreeHead {
        root_hash: vec![9; 31],
        ..head.clone()
    };
    assert!(matches!(
        verify_head(&key.public(), &short_root),
        Err(LogError::Malformed(_))
    ));
    assert!(matches!(
        verify_head(&[1; 31], &head),
        Err(LogError::Malformed(_))
    ));

    let reloaded = LogKey::from_secret(&*key.secret()).unwrap();
    assert_eq!(reloaded.public(), key.public());
    assert!(LogKey::from_secret(&[1; 31]).is_err());
}

#[test]
fn log_key_debug_has_no_secret() {
    let key = LogKey::from_secret(&[0xab; 32]).unwrap();
    let shown = format!("{key:?}");
    assert!(!shown.contains(&hex::encode([0xab; 32])), "{shown}");
    assert!(!shown.contains("171, 171"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    assert!(shown.contains(&hex::encode(key.public())), "{shown}");
}

#[test]
fn empty_log_root_is_the_hash_of_nothing() {
    let log = MerkleLog::new();
    assert!(log.is_empty());
    assert_eq!(log.root(), empty_root());
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn known_answer_rfc6962_leaf_and_node_hashes() {
    // Leaf hash = SHA-256(0x00 || leaf); node = SHA-256(0x01 || l || r).
    let mut log = MerkleLog::new();
    log.push(b"a");
    let leaf_a: Hash = Sha256::digest([&[0u8][..], b"a"].concat()).into();
    assert_eq!(log.root(), leaf_a);
    log.push(b"b");
    let leaf_b: Hash = Sha256::digest([&[0u8][..], b"b"].concat()).into();
    let node: Hash = Sha256::digest([&[1u8][..], &leaf_a, &leaf_b].concat()).into();
    assert_eq!(log.root(), node);
}

#[test]
fn inclusion_round_trips_at_every_size_and_tampering_fails() {
    let key = LogKey::generate();
    let all = leaves(20);
    let log = log_of(&all);
    for size in 1..=20u64 {
        let prefix = &all[..size as usize];
        assert_eq!(log.root_at(size).unwrap(), reference_root(prefix));
        let head = key.sign_head(size, log.root_at(size).unwrap(), 0);
        for index in 0..size {
            let leaf = &all[index as usize];
            let path = log.inclusion_path(index, size).unwrap();
            verify_inclusion(&head, index, leaf, &path).unwrap();

            // Another leaf, another index, a changed path or root: refused.
            assert!(verify_inclusion(&head, index, b"forged", &path).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(&head, other, leaf, &path).is_err());
            }
            if let Some(first) = path.first() {
                let mut bad = path.clone();
                bad[0][0] ^= 1;
                assert!(verify_inclusion(&head, index, leaf, &bad).is_err());
                let mut short = path.clone();
                short[0] = first[..31].to_vec();
                assert!(matches!(
                    verify_inclusion(&head, index, leaf, &short),
                    Err(LogError::Malformed(_))
                ));
            }
            let mut bad_root = head.clone();
            bad_root.root_hash[0] ^= 1;
            assert!(verify_inclusion(&bad_root, index, leaf, &path).is_err());
        }
        assert!(verify_inclusion(&head, size, b"x", &[]).is_err());
    }
    assert!(matches!(
        log.inclusion_path(3, 3),
        Err(LogError::OutOfRange(_))
    ));
    assert!(matches!(
        log.inclusion_path(0, 21),
        Err(LogError::OutOfRange(_))
    ));
}

#[test]
fn huge_sizes_and_indices_are_refused_without_panicking() {
    let head = SignedTreeHead {
        tree_size: u64::MAX,
        root_hash: vec![0; 32],
        timestamp_ms: 0,
        signature: vec![0; 64],
    };
    assert!(verify_inclusion(&head, u64::MAX - 1, b"x", &[]).is_err());
    let half = SignedTreeHead {
        tree_size: u64::MAX / 2 + 2,
        ..head.clone()
    };
    assert!(verify_inclusion(&half, u64::MAX / 2 + 1, b"x", &[]).is_err());
    assert!(verify_consistency(&half, &head, &[]).is_err());
    let small = SignedTreeHead {
        tree_size: 3,
        ..head.clone()
    };
    assert!(verify_consistency(&small, &head, &vec![vec![0; 32]; 200]).is_err());
}

/// Roots and proofs against earlier sizes are put together from stored
/// subtree roots; they must be exactly what `ct-merkle` gives for a tree
/// of just that prefix (the current size, which it proves itself).
#[test]
fn proofs_against_earlier_sizes_equal_a_rebuilt_trees_byte_for_byte() {
    let all = leaves(70);
    let log = log_of(&all);
    for new in 1..=70u64 {
        let prefix = log_of(&all[..new as usize]);
        assert_eq!(log.root_at(new).unwrap(), prefix.root(), "root at {new}");
        for index in 0..new {
            assert_eq!(
                log.inclusion_path(index, new).unwrap(),
                prefix.inclusion_path(index, new).unwrap(),
                "inclusion of {index} at {new}"
            );
        }
        for old in 1..=new {
            assert_eq!(
                log.consistency_path(old, new).unwrap(),
                prefix.consistency_path(old, new).unwrap(),
                "consistency {old} -> {new}"
            );
        }
    }
    assert_eq!(log.root_at(0).unwrap(), empty_root());
}

#[test]
fn consistency_across_sizes_1_to_20_matches_ct_merkle() {
    let key = LogKey::generate();
    let all = leaves(20);
    let log = log_of(&all);
    for old in 1..=20u64 {
        for new in old..=20u64 {
            let old_head = key.sign_head(old, reference_root(&all[..old as usize]), 0);
            let new_head = key.sign_head(new, reference_root(&all[..new as usize]), 0);
            let path = log.consistency_path(old, new).unwrap();
            verify_consistency(&old_head, &new_head, &path)
                .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));

            // A rewritten old tree is caught.
            let mut forged = old_head.clone();
            forged.root_hash[5] ^= 1;
            assert!(
                verify_consistency(&forged, &new_head, &path).is_err(),
                "{old} -> {new}"
            );
            if let Some(first) = path.first() {
                let mut bad = path.clone();
                bad[0] = first.iter().map(|b| b ^ 0xff).collect();
                assert!(
                    verify_consistency(&old_head, &new_head, &bad).is_err(),
                    "{old} -> {new}"
                );
            }
        }
    }
    // Empty old tree: anything is consistent; shrinking never is.
    let empty = key.sign_head(0, empty_root(), 0);
    let full = key.sign_head(20, log.root(), 0);
    verify_consistency(&empty, &full, &[]).unwrap();
    assert!(verify_consistency(&full, &empty, &[]).is_err());
    assert!(log.consistency_path(0, 20).unwrap().is_empty());
    assert!(matches!(
        log.consistency_path(5, 4),
        Err(LogError::OutOfRange(_))
    ));
    assert!(matches!(
        log.consistency_path(5, 21),
        Err(LogError::OutOfRange(_))
    ));
    // Same size, different roots: a fork.
    let fork = key.sign_head(20, [1; 32], 0);
    assert!(matches!(
        verify_consistency(&full, &fork, &[]),
        Err(LogError::BadProof(_))
    ));
}

fn three_entries(key: &SigningKey) -> Vec<LogEntry> {
    vec![
        registered(key, "alice"),
        added(key, "alice", 1, 1),
        added(key, "alice", 2, 2),
    ]
}

#[test]
fn replay_builds_the_device_set() {
    let key = identity(1);
    let mut entries = three_entries(&key);
    entries.push(removed(&key, "alice", 3, 1));
    let state = AccountState::replay("alice", &entries).unwrap();
    assert_eq!(state.username, "alice");
    assert_eq!(state.identity_key, key.verifying_key().to_bytes());
    assert_eq!(state.next_seq, 4);
    assert_eq!(
        state.devices.into_iter().collect::<Vec<_>>(),
        [([2; 16], device_key(2))]
    );
    assert_eq!(
        open_entry(&entries[3]).unwrap().change,
        Some(account_event::Change::DeviceRemoved(DeviceRemoved {
            device_id: vec![1; 16]
        }))
    );
}

#[test]
fn replay_rejects_each_broken_rule() {
    let key = identity(1);
    let other = identity(2);
    let base = three_entries(&key);
    let with = |extra: LogEntry| {
        let mut entries = base.clone();
        entries.push(extra);
        AccountState::replay("alice", &entries)
    };
    let replay_error = |result: Result<AccountState, LogError>| match result {
        Err(LogError::Replay(message)) => message,
        other => panic!("expected a replay error, got {other:?}"),
    };

    replay_error(AccountState::replay("alice", &[]));
    // First entry not IdentityRegistered, or not seq 0.
    replay_error(AccountState::replay("alice", &base[1..]));
    let late_start = signed(
        &key,
        &event(
            &key,
            "alice",
            1,
            account_event::Change::IdentityRegistered(IdentityRegistered {}),
        ),
    );
    replay_error(AccountState::replay("alice", &[late_start]));
    // Another account's entries.
    assert!(replay_error(AccountState::replay("bob", &base)).contains("alice"));
    // Username changes midway.
    replay_error(with(added(&key, "alicia", 3, 3)));
    // Another identity key (validly self-signed).
    replay_error(with(added(&other, "alice", 3, 3)));
    // Gap, repeat.
    replay_error(with(added(&key, "alice", 4, 3)));
    replay_error(with(added(&key, "alice", 2, 3)));
    // A second IdentityRegistered.
    replay_error(with(signed(
        &key,
        &event(
            &key,
            "alice",
            3,
            account_event::Change::IdentityRegistered(IdentityRegistered {}),
        ),
    )));
    // Device added twice; unknown device removed; removed twice.
    replay_error(with(added(&key, "alice", 3, 2)));
    replay_error(with(removed(&key, "alice", 3, 9)));
    let mut twice = base.clone();
    twice.push(removed(&key, "alice", 3, 1));
    twice.push(removed(&key, "alice", 4, 1));
    replay_error(AccountState::replay("alice", &twice));

    // Signatures: a tampered event or signature fails before any rule.
    let mut tampered = base.clone();
    tampered[1].signature[0] ^= 1;
    assert!(matches!(
        AccountState::replay("alice", &tampered),
        Err(LogError::BadSignature(_))
    ));
    let mut forged = added(&key, "alice", 3, 3);
    forged.signature = other
        .sign(&sotto_proto::log_event_transcript(&forged.event))
        .to_bytes()
        .to_vec();
    assert!(matches!(with(forged), Err(LogError::BadSignature(_))));
    assert!(matches!(
        with(LogEntry {
            event: vec![0xff, 0xff],
            signature: vec![],
            ..LogEntry::default()
        }),
        Err(LogError::Malformed(_))
    ));

    // A failed apply leaves the state untouched.
    let mut state = AccountState::replay("alice", &base).unwrap();
    let before = state.clone();
    assert!(state.apply(&added(&key, "alice", 3, 2)).is_err());
    assert_eq!(state, before);
}

fn published(key: &LogKey, entries: &[LogEntry]) -> (MerkleLog, SignedTreeHead) {
    let mut log = MerkleLog::new();
    for entry in entries {
        log.push(&leaf_bytes(entry));
    }
    let head = key.sign_head(log.len(), log.root(), 42);
    (log, head)
}

#[test]
fn account_log_verifies_and_tampering_fails() {
    let log_key = LogKey::generate();
    let alice = identity(1);
    let bob = identity(2);
    let entries = vec![
        registered(&alice, "alice"),
        registered(&bob, "bob"),
        added(&alice, "alice", 1, 1),
        added(&bob, "bob", 1, 2),
        added(&alice, "alice", 2, 3),
    ];
    let (log, head) = published(&log_key, &entries);
    let proven = |indices: &[u64]| AccountLog {
        head: Some(head.clone()),
        entries: indices
            .iter()
            .map(|&i| ProvenEntry {
                index: i,
                entry: Some(entries[i as usize].clone()),
                inclusion_path: log.inclusion_path(i, log.len()).unwrap(),
            })
            .collect(),
    };
    let state = verify_account_log(&log_key.public(), "alice", &proven(&[0, 2, 4])).unwrap();
    assert_eq!(state.devices.len(), 2);

    // Wrong log key; out of order; missing entry; wrong index.
    assert!(
        verify_account_log(&LogKey::generate().public(), "alice", &proven(&[0, 2, 4])).is_err()
    );
    assert!(verify_account_log(&log_key.public(), "alice", &proven(&[0, 4, 2])).is_err());
    assert!(matches!(
        verify_account_log(&log_key.public(), "alice", &proven(&[0, 4])),
        Err(LogError::Replay(_))
    ));
    let mut moved = proven(&[0, 2, 4]);
    moved.entries[1].index = 3;
    assert!(matches!(
        verify_account_log(&log_key.public(), "alice", &moved),
        Err(LogError::BadProof(_))
    ));
    // An entry the log never held (validly signed by Alice) is refused.
    let mut ghost = proven(&[0, 2, 4]);
    ghost.entries[2].entry = Some(added(&alice, "alice", 2, 9));
    assert!(matches!(
        verify_account_log(&log_key.public(), "alice", &ghost),
        Err(LogError::BadProof(_))
    ));
    let mut headless = proven(&[0]);
    headless.head = None;
    assert!(verify_account_log(&log_key.public(), "alice", &headless).is_err());
}

#[test]
fn audit_passes_and_names_the_first_bad_entry() {
    let log_key = LogKey::generate();
    let alice = identity(1);
    let bob = identity(2);
    let entries = vec![
        registered(&alice, "alice"),
        added(&alice, "alice", 1, 1),
        registered(&bob, "bob"),
        added(&bob, "bob", 1, 2),
        added(&bob, "bob", 2, 3),
        removed(&bob, "bob", 3, 2),
    ];
    let (log, head) = published(&log_key, &entries);
    let report = audit(&log_key.public(), entries.clone(), &head).unwrap();
    assert_eq!(
        report,
        AuditReport {
            entries: 6,
            accounts: 2,
            devices: 2,
            web_releases: 0,
            tree_size: 6,
            root: log.root()
        }
    );

    // One flipped byte in entry 3's event: its signature fails.
    let mut tampered = entries.clone();
    tampered[3].event[2] ^= 1;
    let error = audit(&log_key.public(), tampered, &head).unwrap_err();
    assert!(
        matches!(error, AuditError::BadEntry { index: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().starts_with("log entry 3:"), "{error}");

    // A validly signed entry that breaks the rules (device re-added).
    let mut rule_broken = entries.clone();
    rule_broken.push(added(&alice, "alice", 2, 1));
    let (_, longer) = published(&log_key, &rule_broken);
    assert!(matches!(
        audit(&log_key.public(), rule_broken, &longer),
        Err(AuditError::BadEntry { index: 6, .. })
    ));

    // Valid entries that are not the ones the head was signed over.
    let mut reordered = entries.clone();
    reordered.swap(1, 2);
    assert!(matches!(
        audit(&log_key.public(), reordered, &head),
        Err(AuditError::RootMismatch { tree_size: 6, .. })
    ));
    assert!(matches!(
        audit(&log_key.public(), entries[..4].to_vec(), &head),
        Err(AuditError::MissingEntries {
            tree_size: 6,
            entries: 4
        })
    ));
    assert!(matches!(
        audit(&LogKey::generate().public(), entries.clone(), &head),
        Err(AuditError::BadHead(_))
    ));
    // An older head audits the prefix; later entries still follow the rules.
    let old_head = log_key.sign_head(4, log.root_at(4).unwrap(), 1);
    assert_eq!(
        audit(&log_key.public(), entries, &old_head)
            .unwrap()
            .tree_size,
        4
    );
}

// ---------------------------------------------------------------- web releases

fn web_release(files: &[(&str, u8)]) -> WebRelease {
    WebRelease {
        files: files
            .iter()
            .map(|(path, byte)| WebFile {
                path: (*path).into(),
                sha256: vec![*byte; 32],
            })
            .collect(),
    }
}

#[test]
fn audit_checks_web_releases_by_the_log_key_and_replays_no_account_from_them() {
    let log_key = LogKey::generate();
    let alice = identity(1);
    let release = web_release(&[("app.js", 1), ("index.html", 2)]);
    let mut entries = vec![
        log_key.sign_web_release(&release),
        registered(&alice, "alice"),
        added(&alice, "alice", 1, 1),
        log_key.sign_web_release(&web_release(&[("app.js", 3), ("index.html", 2)])),
    ];
    let (log, head) = published(&log_key, &entries);
    let report = audit(&log_key.public(), entries.clone(), &head).unwrap();
    assert_eq!(
        report,
        AuditReport {
            entries: 4,
            accounts: 1,
            devices: 1,
            web_releases: 2,
            tree_size: 4,
            root: log.root()
        }
    );
    assert_eq!(
        verify_web_release(&log_key.public(), &entries[0]).unwrap(),
        release
    );
    // No account's replay takes a web release in.
    assert!(open_entry(&entries[0]).is_err());
    assert!(AccountState::replay("alice", &[entries[1].clone(), entries[0].clone()]).is_err());

    // A release signed by another key (the leaf re-hashed into the head):
    // an error naming the entry, never a panic.
    let mut forged = entries.clone();
    forged[3] = LogKey::generate().sign_web_release(&web_release(&[("app.js", 9)]));
    let (_, forged_head) = published(&log_key, &forged);
    let error = audit(&log_key.public(), forged, &forged_head).unwrap_err();
    assert!(
        matches!(error, AuditError::BadEntry { index: 3, .. }),
        "{error}"
    );

    // A file hash changed after signing.
    let mut altered = entries.clone();
    if let Some(r) = altered[0].web_release.as_mut() {
        r.files[0].sha256[0] ^= 1;
    }
    let (_, altered_head) = published(&log_key, &altered);
    assert!(matches!(
        audit(&log_key.public(), altered, &altered_head),
        Err(AuditError::BadEntry { index: 0, .. })
    ));

    // A release that also carries an account event is refused.
    let mut mixed = entries.clone();
    mixed[0].event = entries[1].event.clone();
    let (_, mixed_head) = published(&log_key, &mixed);
    assert!(matches!(
        audit(&log_key.public(), mixed, &mixed_head),
        Err(AuditError::BadEntry { index: 0, .. })
    ));

    // Malformed releases: unsorted, duplicate, bad hash length, no files.
    for bad in [
        web_release(&[("index.html", 1), ("app.js", 2)]),
        web_release(&[("app.js", 1), ("app.js", 2)]),
        web_release(&[("../etc", 1)]),
        WebRelease {
            files: vec![WebFile {
                path: "a".into(),
                sha256: vec![1; 31],
            }],
        },
        WebRelease::default(),
    ] {
        entries[3] = log_key.sign_web_release(&bad);
        let (_, bad_head) = published(&log_key, &entries);
        assert!(matches!(
            audit(&log_key.public(), entries.clone(), &bad_head),
            Err(AuditError::BadEntry { index: 3, .. })
        ));
    }
}

// ---------------------------------------------------------------- own account

/// `entry` marked as made by device `id` (signed with `signer`'s device key).
fn authored(mut entry: LogEntry, id: u8, signer: u8) -> LogEntry {
    entry.author_device_id = vec![id; 16];
    entry.author_signature = identity(signer.wrapping_add(100))
        .sign(&sotto_proto::log_author_transcript(&entry.event))
        .to_bytes()
        .to_vec();
    entry
}

/// Alice's registration (identity, device 1), known to the device.
fn alice_known(key: &SigningKey) -> (Vec<LogEntry>, BTreeMap<u64, LogEntry>) {
    let entries = vec![registered(key, "alice"), added(key, "alice", 1, 1)];
    let known = entries
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, e)| (i as u64, e))
        .collect();
    (entries, known)
}

use std::collections::BTreeMap;

#[test]
fn an_entry_a_trusted_device_signed_is_explained_and_its_device_trusted() {
    let key = identity(1);
    let (mut entries, known) = alice_known(&key);
    entries.push(authored(added(&key, "alice", 2, 2), 1, 1));
    entries.push(authored(added(&key, "alice", 3, 3), 2, 2));
    entries.push(authored(removed(&key, "alice", 4, 3), 2, 2));
    let review = review_own_account("alice", &entries, &known).unwrap();
    assert!(review.findings.is_empty(), "{:?}", review.findings);
    assert!(review.unknown_devices.is_empty());
    let seqs: Vec<u64> = review.newly_explained.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(review.state.devices.len(), 2);
}

#[test]
fn an_entry_signed_only_with_the_identity_key_is_unexplained_and_so_is_what_its_device_signs() {
    let key = identity(1);
    let (mut entries, known) = alice_known(&key);
    entries.push(added(&key, "alice", 2, 9));
    entries.push(authored(added(&key, "alice", 3, 8), 9, 9));
    let review = review_own_account("alice", &entries, &known).unwrap();
    assert_eq!(
        review.findings,
        [
            Finding::Unexplained {
                account_seq: 2,
                change: OwnChange::DeviceAdded([9; 16]),
                author: None,
            },
            Finding::Unexplained {
                account_seq: 3,
                change: OwnChange::DeviceAdded([8; 16]),
                author: Some([9; 16]),
            },
        ]
    );
    assert_eq!(review.unknown_devices, [[8; 16], [9; 16]].into());
    assert!(review.newly_explained.is_empty());
}

#[test]
fn a_removed_device_or_a_wrong_device_signature_explains_nothing() {
    let key = identity(1);
    let (mut entries, known) = alice_known(&key);
    entries.push(authored(added(&key, "alice", 2, 2), 1, 1));
    entries.push(authored(removed(&key, "alice", 3, 2), 1, 1));
    // The removed device 2 still has its keys.
    entries.push(authored(added(&key, "alice", 4, 7), 2, 2));
    // Device 1's id, someone else's signature.
    entries.push(authored(removed(&key, "alice", 5, 1), 1, 7));
    let review = review_own_account("alice", &entries, &known).unwrap();
    let unexplained: Vec<u64> = review
        .findings
        .iter()
        .map(|f| match f {
            Finding::Unexplained { account_seq, .. } => *account_seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(unexplained, [4, 5]);
}

#[test]
fn a_known_entry_replaced_or_hidden_is_a_finding() {
    let key = identity(1);
    let (mut entries, mut known) = alice_known(&key);
    known.insert(2, authored(added(&key, "alice", 2, 2), 1, 1));
    known.insert(3, authored(removed(&key, "alice", 3, 2), 1, 1));
    // The log shows another device at seq 2, and stops there.
    entries.push(authored(added(&key, "alice", 2, 5), 1, 1));
    let review = review_own_account("alice", &entries, &known).unwrap();
    assert_eq!(
        review.findings,
        [
            Finding::Replaced {
                account_seq: 2,
                change: OwnChange::DeviceAdded([5; 16]),
            },
            Finding::Hidden { account_seq: 3 },
        ]
    );
    assert_eq!(review.unknown_devices, [[5; 16]].into());
}

// ---------------------------------------------------------------- identity rotation

fn rotated_with_proof(
    old: &SigningKey,
    new: &SigningKey,
    prover: &SigningKey,
    user: &str,
    seq: u64,
) -> LogEntry {
    let new_key = new.verifying_key().to_bytes();
    let proof = prover.sign(&sotto_proto::identity_rotation_transcript(
        user,
        &old.verifying_key().to_bytes(),
        &new_key,
        seq,
    ));
    signed(
        old,
        &event(
            old,
            user,
            seq,
            account_event::Change::IdentityRotated(IdentityRotated {
                new_identity_key: new_key.to_vec(),
                new_key_signature: proof.to_bytes().to_vec(),
            }),
        ),
    )
}

fn rotated(old: &SigningKey, new: &SigningKey, user: &str, seq: u64) -> LogEntry {
    rotated_with_proof(old, new, new, user, seq)
}

/// Alice: identity 1, devices 1 and 2, device 2 removed and the identity
/// rotated to key 2.
fn alice_rotated() -> Vec<LogEntry> {
    let (old, new) = (identity(1), identity(2));
    vec![
        registered(&old, "alice"),
        added(&old, "alice", 1, 1),
        added(&old, "alice", 2, 2),
        removed(&old, "alice", 3, 2),
        rotated(&old, &new, "alice", 4),
    ]
}

#[test]
fn a_rotation_hands_the_account_to_the_new_key_and_keeps_its_devices() {
    let state = AccountState::replay("alice", &alice_rotated()).unwrap();
    assert_eq!(state.identity_key, identity(2).verifying_key().to_bytes());
    assert_eq!(
        state.former_identity_keys,
        [identity(1).verifying_key().to_bytes()]
    );
    assert!(state.rotated_from(&identity(1).verifying_key().to_bytes()));
    assert_eq!(state.devices.len(), 1);
    assert_eq!(state.next_seq, 5);

    // The new key signs from now on, and may rotate again.
    let mut entries = alice_rotated();
    entries.push(added(&identity(2), "alice", 5, 3));
    entries.push(rotated(&identity(2), &identity(3), "alice", 6));
    let state = AccountState::replay("alice", &entries).unwrap();
    assert_eq!(state.former_identity_keys.len(), 2);
    assert!(state.rotated_from(&identity(1).verifying_key().to_bytes()));
    assert_eq!(state.devices.len(), 2);
}

#[test]
fn after_a_rotation_the_old_key_can_log_nothing() {
    let old = identity(1);
    for late in [
        added(&old, "alice", 5, 9),
        removed(&old, "alice", 5, 1),
        rotated(&old, &identity(9), "alice", 5),
    ] {
        let mut entries = alice_rotated();
        entries.push(late);
        let err = AccountState::replay("alice", &entries).unwrap_err();
        assert!(
            matches!(&err, LogError::Replay(why) if why.contains("rotated away from")),
            "{err}"
        );
    }
}

#[test]
fn a_rotation_without_the_new_keys_proof_or_back_to_an_old_key_is_refused() {
    let (old, new) = (identity(1), identity(2));
    let base = || alice_rotated()[..4].to_vec();
    // Proof signed by someone else than the new key.
    let mut entries = base();
    entries.push(rotated_with_proof(&old, &new, &identity(7), "alice", 4));
    assert!(matches!(
        AccountState::replay("alice", &entries),
        Err(LogError::BadSignature(_))
    ));
    // A proof made for another account_seq (replayed) does not verify.
    let mut entries = base();
    let mut stale = rotated(&old, &new, "alice", 3);
    let mut event = AccountEvent::decode(stale.event.as_slice()).unwrap();
    event.account_seq = 4;
    stale = signed(&old, &event);
    entries.push(stale);
    assert!(matches!(
        AccountState::replay("alice", &entries),
        Err(LogError::BadSignature(_))
    ));
    // Rotating to the current key, or back to a former one.
    let mut entries = base();
    entries.push(rotated(&old, &old, "alice", 4));
    assert!(matches!(
        AccountState::replay("alice", &entries),
        Err(LogError::Replay(_))
    ));
    let mut entries = alice_rotated();
    entries.push(rotated(&new, &old, "alice", 5));
    assert!(matches!(
        AccountState::replay("alice", &entries),
        Err(LogError::Replay(_))
    ));
    // A rotation cannot be an account's first entry.
    assert!(AccountState::replay("alice", &[rotated(&old, &new, "alice", 0)]).is_err());
}

#[test]
fn a_rotation_by_a_trusted_device_is_explained_and_one_by_nobody_is_not() {
    let (old, new) = (identity(1), identity(2));
    let (mut entries, known) = alice_known(&old);
    entries.push(authored(added(&old, "alice", 2, 2), 1, 1));
    entries.push(authored(removed(&old, "alice", 3, 2), 1, 1));
    entries.push(authored(rotated(&old, &new, "alice", 4), 1, 1));
    let review = review_own_account("alice", &entries, &known).unwrap();
    assert!(review.findings.is_empty(), "{:?}", review.findings);
    assert_eq!(review.state.identity_key, new.verifying_key().to_bytes());

    let (mut entries, known) = alice_known(&old);
    entries.push(rotated(&old, &new, "alice", 2));
    let review = review_own_account("alice", &entries, &known).unwrap();
    assert_eq!(
        review.findings,
        [Finding::Unexplained {
            account_seq: 2,
            change: OwnChange::IdentityRotated(new.verifying_key().to_bytes()),
            author: None,
        }]
    );
}

#[test]
fn old_logs_without_rotations_replay_as_before() {
    let key = identity(1);
    let entries = three_entries(&key);
    let state = AccountState::replay("alice", &entries).unwrap();
    assert!(state.former_identity_keys.is_empty());
    assert_eq!(state.identity_key, key.verifying_key().to_bytes());
}

#[test]
fn a_countersignature_verifies_and_any_change_breaks_it() {
    let log = LogKey::from_secret(&[3; 32]).unwrap();
    let auditor = AuditorKey::from_secret(&[4; 32]).unwrap();
    let epoch = log.sign_epoch(&[6; 32], 5, &[8; 32], 1_700_000_000_000);
    let good = auditor.countersign(&log.public(), &epoch, 1_700_000_060_000);
    assert_eq!(good.auditor_key, auditor.public().to_vec());
    assert_eq!(
        (good.epoch, good.root_hash.as_slice()),
        (5, [8; 32].as_slice())
    );
    verify_countersignature(&log.public(), &good).unwrap();
    // Under another log key, or with any field changed, it fails.
    assert!(verify_countersignature(&[9; 32], &good).is_err());
    let changed = [
        Countersignature {
            epoch: 6,
            ..good.clone()
        },
        Countersignature {
            root_hash: vec![7; 32],
            ..good.clone()
        },
        Countersignature {
            signed_at_ms: 1_800_000_000_000,
            ..good.clone()
        },
        Countersignature {
            auditor_key: AuditorKey::generate().public().to_vec(),
            ..good.clone()
        },
        Countersignature {
            root_hash: vec![8; 31],
            ..good.clone()
        },
        Countersignature {
            epoch: MAX_TREE_SIZE + 1,
            ..good.clone()
        },
        Countersignature {
            signature: vec![0; 64],
            ..good.clone()
        },
    ];
    for bad in changed {
        assert!(
            verify_countersignature(&log.public(), &bad).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn an_auditor_key_round_trips_and_never_prints_its_secret() {
    let key = AuditorKey::generate();
    let again = AuditorKey::from_secret(key.secret().as_slice()).unwrap();
    assert_eq!(key.public(), again.public());
    assert!(AuditorKey::from_secret(&[1; 31]).is_err());
    let shown = format!("{key:?}");
    assert!(shown.contains("redacted"), "{shown}");
    assert!(
        !shown.contains(&hex::encode(key.secret().as_slice())),
        "{shown}"
    );
}
