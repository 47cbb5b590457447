//! Cases for the operator's roles: [`LegalStore`] (the legal key, the
//! export recorded in the transparency report, the canary) and
//! [`AdminStore`] (invites, the auditor's reads). Written against the
//! traits only, like the rest of the suite.

use super::conformance::*;
use super::log_cases::{new_device, removal};
use super::*;
use sotto_server::store::{
    AdminStore, CanaryRecord, LegalStore, ReportRecord, StoreError, invite_hash,
};
use zeroize::Zeroizing;

/// A backend that serves the server and the operator's commands.
pub trait OperatorBackend: Store + LegalStore + AdminStore {}
impl<S: Store + LegalStore + AdminStore> OperatorBackend for S {}

/// The caller's own error type that `record_export` carries through.
#[derive(Debug)]
enum ExportError {
    Store(StoreError),
    Refused(&'static str),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn report_entry(seq: u8) -> ReportRecord {
    ReportRecord {
        seq: seq.into(),
        request_id: format!("R-{seq}"),
        day: 20_000,
        kind: "export".into(),
        accounts: 1,
        prev_hash: vec![seq.wrapping_sub(1); 32],
        hash: vec![seq; 32],
        signature: vec![1; 64],
    }
}

/// The plan sees the accounts in the order asked (`None` for an unknown
/// one) and the report's last entry; an entry is kept only if both the
/// plan and the delivery succeed, and a seq is never reused.
pub async fn export_is_recorded_only_when_delivered<S: OperatorBackend>(store: S) {
    store.register(account("alice", 1)).await.unwrap();
    store.add_device(new_device("alice", 3, 2)).await.unwrap();
    store.remove_device(removal("alice", 3, 3)).await.unwrap();
    store
        .upload_key_packages(device_id(1), vec![vec![1]; 2], Some(vec![1, 1]))
        .await
        .unwrap();
    let g = with_group(&store, "g").await;
    store
        .enqueue(GroupMessage {
            expires_at: None,
            group_id: g,
            token_hash: TOKEN_HASH,
            epoch: 1,
            previous_epoch_open: false,
            envelope: envelope(1, &[1], b"12345"),
            now: 1_000,
        })
        .await
        .unwrap();

    let seen = store
        .record_export(
            vec!["alice".into(), "nobody".into()],
            |snapshot| Ok::<_, ExportError>((report_entry(1), snapshot)),
            |_| Ok(()),
        )
        .await
        .unwrap();
    let [Some(alice), None] = seen.accounts.as_slice() else {
        panic!("{:?}", seen.accounts);
    };
    assert_eq!(seen.last_entry, None);
    assert_eq!(
        (
            alice.username.as_str(),
            alice.identity_key,
            alice.created_day,
            alice.log_entries
        ),
        ("alice", [1; 32], 20_000, 4)
    );
    let devices: Vec<_> = alice
        .devices
        .iter()
        .map(|d| {
            (
                d.device_id,
                d.removed_day,
                d.key_packages,
                d.last_resort_key_package,
                d.queued_messages,
                d.queued_bytes,
            )
        })
        .collect();
    assert_eq!(
        devices,
        [
            (device_id(1), None, 2, true, 1, 5),
            (device_id(3), Some(20_002), 0, false, 0, 0)
        ],
        "every device the account ever had, in the order added"
    );
    assert_eq!(store.report_entries().await.unwrap(), [report_entry(1)]);

    let refused = store
        .record_export(
            vec!["alice".into()],
            |_| Err::<(ReportRecord, ()), _>(ExportError::Refused("plan")),
            |()| Ok(()),
        )
        .await;
    assert!(matches!(refused, Err(ExportError::Refused("plan"))));
    let undelivered = store
        .record_export(
            vec!["alice".into()],
            |snapshot| Ok((report_entry(2), snapshot.last_entry)),
            |_| Err(ExportError::Refused("deliver")),
        )
        .await;
    assert!(matches!(undelivered, Err(ExportError::Refused("deliver"))));
    assert_eq!(
        store.report_entries().await.unwrap(),
        [report_entry(1)],
        "nothing is recorded for a refused or undelivered export"
    );

    let last = store
        .record_export(
            vec![],
            |snapshot| Ok::<_, ExportError>((report_entry(2), snapshot.last_entry)),
            |_| Ok(()),
        )
        .await
        .unwrap();
    assert_eq!(last, Some(report_entry(1)), "the plan chains onto the last");
    let delivered = std::sync::atomic::AtomicBool::new(false);
    let delivered = std::sync::Arc::new(delivered);
    let flag = std::sync::Arc::clone(&delivered);
    let again = store
        .record_export(
            vec![],
            |_| Ok((report_entry(2), ())),
            move |()| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            },
        )
        .await;
    let Err(ExportError::Store(refused)) = again else {
        panic!("a seq already used must be refused by the store: {again:?}");
    };
    assert!(!refused.to_string().is_empty());
    assert!(
        !delivered.load(std::sync::atomic::Ordering::SeqCst),
        "nothing is delivered for an entry that cannot be appended"
    );
    assert_eq!(
        store.report_entries().await.unwrap(),
        [report_entry(1), report_entry(2)]
    );
}

/// The report reads back byte for byte, even rows a verifier would reject
/// (the legal module, not the backend, judges them).
pub async fn report_entries_read_back_unchanged<S: OperatorBackend>(store: S) {
    assert!(store.report_entries().await.unwrap().is_empty());
    let odd = ReportRecord {
        prev_hash: vec![9; 3],
        hash: vec![],
        signature: vec![0; 7],
        ..report_entry(1)
    };
    let kept = odd.clone();
    store
        .record_export(
            vec![],
            move |_| Ok::<_, ExportError>((kept, ())),
            |()| Ok(()),
        )
        .await
        .unwrap();
    assert_eq!(store.report_entries().await.unwrap(), [odd]);
}

pub async fn legal_key_is_stored_once_apart_from_the_log_key<S: OperatorBackend>(store: S) {
    let key = store
        .legal_key_secret(Zeroizing::new([8; 32]))
        .await
        .unwrap();
    assert_eq!(*key, [8; 32]);
    let again = store
        .legal_key_secret(Zeroizing::new([9; 32]))
        .await
        .unwrap();
    assert_eq!(*again, [8; 32], "the first key stays");
    let log_key = store
        .log_key_secret(Zeroizing::new([10; 32]))
        .await
        .unwrap();
    assert_eq!(*log_key, [10; 32], "the log key is a different key");
    let legal = store
        .legal_key_secret(Zeroizing::new([11; 32]))
        .await
        .unwrap();
    assert_eq!(*legal, [8; 32]);
}

pub async fn the_latest_canary_is_the_last_published<S: OperatorBackend>(store: S) {
    assert_eq!(store.latest_canary().await.unwrap(), None);
    let canary = |day, statement: &str| CanaryRecord {
        day,
        statement: statement.into(),
        key: [8; 32],
        signature: [11; 64],
    };
    store.publish_canary(canary(5, "first")).await.unwrap();
    assert_eq!(
        store.latest_canary().await.unwrap(),
        Some(canary(5, "first"))
    );
    store.publish_canary(canary(4, "second")).await.unwrap();
    assert_eq!(
        store.latest_canary().await.unwrap(),
        Some(canary(4, "second")),
        "the latest published, whatever its day"
    );
}

/// Invites are stored as hashes, all or none, each usable for one
/// registration.
pub async fn invites_are_added_atomically_and_used_once<S: OperatorBackend>(store: S) {
    let (first, second, third) = (
        invite_hash("code-1"),
        invite_hash("code-2"),
        invite_hash("code-3"),
    );
    store
        .add_invites(vec![first, second], 20_000)
        .await
        .unwrap();
    assert!(
        store.add_invites(vec![third, first], 20_000).await.is_err(),
        "a hash already stored is refused"
    );
    let with_invite = |name: &str, device, invite| NewAccount {
        invite: Some(invite),
        ..account(name, device)
    };
    assert!(
        matches!(
            store.register(with_invite("carol", 3, third)).await,
            Err(RegisterError::BadInvite)
        ),
        "a refused batch stores none of its codes"
    );
    store
        .register(with_invite("alice", 1, first))
        .await
        .unwrap();
    assert!(matches!(
        store.register(with_invite("bob", 2, first)).await,
        Err(RegisterError::BadInvite)
    ));
    assert!(
        store.device("bob", device_id(2)).await.unwrap().is_none(),
        "a refused registration stores nothing"
    );
    store.register(with_invite("bob", 2, second)).await.unwrap();

    // The operator lists codes (hashes only) and revokes an unused one.
    let fourth = invite_hash("code-4");
    store.add_invites(vec![fourth], 20_001).await.unwrap();
    let listed = store.invites().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| (i.code_hash, i.created_day, i.used_day.is_some()))
            .collect::<Vec<_>>(),
        {
            let mut used = vec![(first, 20_000, true), (second, 20_000, true)];
            used.sort_by_key(|(hash, ..)| *hash);
            used.push((fourth, 20_001, false));
            used
        }
    );
    assert!(
        !store.revoke_invite(first).await.unwrap(),
        "a used code stays"
    );
    assert!(store.revoke_invite(fourth).await.unwrap());
    assert!(!store.revoke_invite(fourth).await.unwrap());
    assert!(matches!(
        store.register(with_invite("dave", 4, fourth)).await,
        Err(RegisterError::BadInvite)
    ));
    assert_eq!(store.invites().await.unwrap().len(), 2);
}

/// What the auditor reads: the stored log key (never created by reading),
/// every identity, and only the active devices.
pub async fn auditor_reads_what_is_stored<S: OperatorBackend>(store: S) {
    assert!(store.stored_log_key().await.unwrap().is_none());
    assert!(store.account_identities().await.unwrap().is_empty());
    assert!(
        store.stored_log_key().await.unwrap().is_none(),
        "reading does not create a key"
    );
    store.log_key_secret(Zeroizing::new([4; 32])).await.unwrap();
    assert_eq!(
        store
            .stored_log_key()
            .await
            .unwrap()
            .as_deref()
            .map(Vec::as_slice),
        Some([4; 32].as_slice())
    );

    store.register(account("alice", 1)).await.unwrap();
    store.register(account("bob", 2)).await.unwrap();
    store.add_device(new_device("alice", 3, 2)).await.unwrap();
    store.add_device(new_device("alice", 4, 3)).await.unwrap();
    store.remove_device(removal("alice", 3, 4)).await.unwrap();

    let mut identities: Vec<_> = store
        .account_identities()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.username, a.identity_key))
        .collect();
    identities.sort();
    assert_eq!(
        identities,
        [("alice".into(), vec![1; 32]), ("bob".into(), vec![2; 32])]
    );
    let mut devices: Vec<_> = store
        .active_devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.username, d.device_id, d.device_key))
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        [
            ("alice".into(), vec![1; 16], vec![101; 32]),
            ("alice".into(), vec![4; 16], vec![104; 32]),
            ("bob".into(), vec![2; 16], vec![102; 32]),
        ],
        "removed devices are left out"
    );
}

/// `sotto-server stats` counts queued bytes once per payload, however many
/// devices it waits for, and none once delivered.
pub async fn queued_bytes_count_each_payload_once<S: OperatorBackend>(store: S) {
    assert_eq!(store.queued_bytes().await.unwrap(), 0);
    store.register(account("alice", 1)).await.unwrap();
    store.register(account("bob", 2)).await.unwrap();
    let g = with_group(&store, "g").await;
    store.enqueue(to(&g, 1, 1, &[1, 2])).await.unwrap();
    store.enqueue(to(&g, 1, 2, &[2])).await.unwrap();
    assert_eq!(
        store.queued_bytes().await.unwrap(),
        2 * u64::try_from(b"hello".len()).unwrap()
    );
    drain(&store, 1).await;
    drain(&store, 2).await;
    assert_eq!(store.queued_bytes().await.unwrap(), 0);
}

/// `set_account_disabled`: the plan sees the account's standing and the
/// report's last entry; the entry and the new standing are kept together,
/// or neither (a refusing plan); the device lookup reports the standing.
pub async fn disabling_an_account_is_recorded_with_it<S: OperatorBackend>(store: S) {
    store.register(account("alice", 1)).await.unwrap();
    assert_eq!(standing(&store).await, None);

    let unknown = store
        .set_account_disabled("nobody".into(), Some(9), |snapshot| {
            assert!(!snapshot.exists);
            Err::<ReportRecord, _>(ExportError::Refused("unknown"))
        })
        .await;
    assert!(matches!(unknown, Err(ExportError::Refused("unknown"))));

    let kept = store
        .set_account_disabled("alice".into(), Some(20_007), |snapshot| {
            assert!(snapshot.exists);
            assert_eq!(snapshot.disabled_until_day, None);
            assert_eq!(snapshot.last_entry, None);
            Ok::<_, ExportError>(report_entry(1))
        })
        .await
        .unwrap();
    assert_eq!(kept, report_entry(1));
    assert_eq!(standing(&store).await, Some(20_007));

    // A refusing plan changes nothing.
    let refused = store
        .set_account_disabled("alice".into(), None, |snapshot| {
            assert_eq!(snapshot.disabled_until_day, Some(20_007));
            assert_eq!(snapshot.last_entry, Some(report_entry(1)));
            Err::<ReportRecord, _>(ExportError::Refused("no"))
        })
        .await;
    assert!(matches!(refused, Err(ExportError::Refused("no"))));
    assert_eq!(standing(&store).await, Some(20_007));
    assert_eq!(store.report_entries().await.unwrap(), [report_entry(1)]);

    store
        .set_account_disabled("alice".into(), None, |_| {
            Ok::<_, ExportError>(report_entry(2))
        })
        .await
        .unwrap();
    assert_eq!(standing(&store).await, None);
    assert_eq!(
        store.report_entries().await.unwrap(),
        [report_entry(1), report_entry(2)]
    );
    // The largest day is stored as it is.
    store
        .set_account_disabled(
            "alice".into(),
            Some(sotto_server::store::DISABLED_UNTIL_ENABLED),
            |_| Ok::<_, ExportError>(report_entry(3)),
        )
        .await
        .unwrap();
    assert_eq!(
        standing(&store).await,
        Some(sotto_server::store::DISABLED_UNTIL_ENABLED)
    );
}

/// Alice's `disabled_until_day`, as the login's device lookup reads it.
async fn standing<S: OperatorBackend>(store: &S) -> Option<u64> {
    store
        .device("alice", device_id(1))
        .await
        .unwrap()
        .unwrap()
        .disabled_until_day
}
