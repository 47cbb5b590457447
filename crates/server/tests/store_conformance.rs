//! The store conformance suite: the server's roles ([`Store`]) and the
//! operator's ([`LegalStore`], [`AdminStore`], in `store_conformance/operator.rs`).
//! Every backend runs every case unchanged: add one
//! `store_conformance_tests!` line per backend at the bottom.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sotto_proto::v1::MissedMessages;
use sotto_server::store::{
    AccountStore, AddDeviceError, CommitError, CommitSubmission, CountersignatureRecord, DeviceId,
    DeviceRemoval, EnqueueError, Enqueued, Envelope, Expired, GroupId, GroupMessage,
    IdentityRotation, MAX_MISSED_NOTICES, MailboxEntry, MessageId, NewAccount, NewDevice, Queued,
    RegisterError, RemoveDeviceError, SignedDevice, SqliteStore, Store,
};
use sotto_server::store::{MailboxStore as _, PostgresStore};
use sotto_testkit::postgres::TestDatabase;

/// The conformance cases, each a function of a fresh, empty store.
mod conformance {
    use super::*;

    pub fn device_id(n: u8) -> DeviceId {
        DeviceId::new([n; 16])
    }

    pub fn message_id(n: u8) -> MessageId {
        MessageId::new([n; 16])
    }

    pub fn group(name: &str) -> GroupId {
        GroupId::from_slice(name.as_bytes()).unwrap()
    }

    pub fn account(username: &str, device: u8) -> NewAccount {
        NewAccount {
            username: username.into(),
            identity_key: [device; 32],
            device_id: device_id(device),
            device_key: [device.wrapping_add(100); 32],
            device: SignedDevice {
                certificate: vec![device; 5],
                identity_signature: vec![device; 64],
            },
            today: 20_000,
            log_entries: vec![vec![device, 0], vec![device, 1]],
            invite: None,
        }
    }

    pub fn envelope(id: u8, recipients: &[u8], payload: &[u8]) -> Envelope {
        Envelope {
            message_id: message_id(id),
            recipients: recipients.iter().map(|&d| device_id(d)).collect(),
            payload: payload.to_vec(),
            frank: None,
        }
    }

    /// The hash of every epoch's send capability in these tests.
    pub const TOKEN_HASH: [u8; 32] = [7; 32];

    pub fn commit(group_id: &GroupId, epoch: u64, id: u8, recipients: &[u8]) -> CommitSubmission {
        CommitSubmission {
            group_id: group_id.clone(),
            epoch,
            token_hash: (epoch > 0).then_some(TOKEN_HASH),
            next_token_hash: TOKEN_HASH,
            commit: envelope(id, recipients, b"commit"),
            welcome: None,
            now: 1_000,
            invite_link: None,
        }
    }

    pub async fn with_group<S: Store>(store: &S, name: &str) -> GroupId {
        let g = group(name);
        store.submit_commit(commit(&g, 0, 200, &[])).await.unwrap();
        g
    }

    pub async fn register_and_look_up<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        let found = store.device("alice", device_id(1)).await.unwrap().unwrap();
        assert_eq!(found.device_key, [101; 32]);
        assert_eq!(found.username, "alice");
        // Unknown user and unknown device look the same: None.
        assert!(store.device("bob", device_id(1)).await.unwrap().is_none());
        assert!(store.device("alice", device_id(2)).await.unwrap().is_none());

        assert!(matches!(
            store.register(account("alice", 2)).await,
            Err(RegisterError::UsernameTaken)
        ));
        assert!(matches!(
            store.register(account("bob", 1)).await,
            Err(RegisterError::DeviceIdTaken(_))
        ));
        store.touch_device(device_id(1), 20_001).await.unwrap();
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.accounts, stats.devices), (1, 1));
    }

    pub async fn key_packages_are_claimed_once_then_last_resort<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("bob", 2)).await.unwrap();
        let status = store
            .upload_key_packages(
                device_id(1),
                vec![b"a".to_vec(), b"b".to_vec()],
                Some(b"last".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!((status.remaining, status.has_last_resort), (2, true));

        let mut claimed = Vec::new();
        for _ in 0..4 {
            let bundle = store
                .claim_key_packages("alice", vec![])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(bundle.identity_key, [1; 32]);
            assert_eq!(bundle.devices.len(), 1);
            let c = &bundle.devices[0];
            assert_eq!(c.device_id, device_id(1));
            assert_eq!(c.device.certificate, vec![1; 5]);
            claimed.push((c.key_package.clone(), c.remaining, c.last_resort));
        }
        assert_eq!(
            claimed,
            [
                (b"a".to_vec(), 1, false),
                (b"b".to_vec(), 0, false),
                (b"last".to_vec(), 0, true),
                (b"last".to_vec(), 0, true)
            ]
        );
        // A new last resort replaces the old one.
        store
            .upload_key_packages(device_id(1), vec![], Some(b"newer".to_vec()))
            .await
            .unwrap();
        let bundle = store
            .claim_key_packages("alice", vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bundle.devices[0].key_package, b"newer");

        assert!(
            store
                .claim_key_packages("nobody", vec![])
                .await
                .unwrap()
                .is_none()
        );
        // Bob has neither kind: his device is skipped.
        assert!(
            store
                .claim_key_packages("bob", vec![])
                .await
                .unwrap()
                .unwrap()
                .devices
                .is_empty()
        );
        let status = store.key_package_status(device_id(2)).await.unwrap();
        assert_eq!((status.remaining, status.has_last_resort), (0, false));
    }

    pub async fn concurrent_claims_never_hand_out_a_key_package_twice<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        let kps: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i]).collect();
        store
            .upload_key_packages(device_id(1), kps, None)
            .await
            .unwrap();
        let claims = futures_util::future::join_all(
            (0..20).map(|_| store.claim_key_packages("alice", vec![])),
        )
        .await;
        let mut got: Vec<Vec<u8>> = claims
            .into_iter()
            .map(|b| b.unwrap().unwrap().devices[0].key_package.clone())
            .collect();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 20);
    }

    pub async fn commits_are_sequenced_one_per_epoch<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("carol", 3)).await.unwrap();
        let g = group("g");
        assert!(matches!(
            store.submit_commit(commit(&g, 3, 10, &[1])).await,
            Err(CommitError::UnknownGroup(_))
        ));
        assert_eq!(store.group_epoch(&g).await.unwrap(), None);

        let created = store.submit_commit(commit(&g, 0, 11, &[1])).await.unwrap();
        assert_eq!((created.new_epoch, created.outcome), (1, Enqueued::Queued));

        // Two commits race for epoch 1: exactly one wins.
        let with_welcome = |id: u8, welcome_id: u8| CommitSubmission {
            welcome: Some(envelope(welcome_id, &[3], b"welcome")),
            ..commit(&g, 1, id, &[1])
        };
        let (a, b) = tokio::join!(
            store.submit_commit(with_welcome(12, 22)),
            store.submit_commit(with_welcome(13, 23))
        );
        let (winner, loser) = match (&a, &b) {
            (Ok(_), Err(_)) => (22, b),
            (Err(_), Ok(_)) => (23, a),
            other => panic!("expected exactly one winner: {other:?}"),
        };
        assert!(
            matches!(
                loser,
                Err(CommitError::StaleEpoch {
                    submitted: 1,
                    current: 2
                })
            ),
            "{loser:?}"
        );
        assert_eq!(store.group_epoch(&g).await.unwrap(), Some(2));

        // Only the winner's Welcome reached Carol.
        let carol = store.fetch_mailbox(device_id(3), 0, 10).await.unwrap();
        assert_eq!(
            carol.iter().map(|e| e.message_id).collect::<Vec<_>>(),
            [message_id(winner)]
        );

        // Resending the accepted commit is idempotent, even with no
        // recipients left to hold it.
        let resend = store.submit_commit(commit(&g, 2, 14, &[])).await.unwrap();
        assert_eq!(resend.new_epoch, 3);
        let again = store.submit_commit(commit(&g, 2, 14, &[])).await.unwrap();
        assert_eq!(again.outcome, Enqueued::Duplicate);
        assert_eq!(store.group_epoch(&g).await.unwrap(), Some(3));

        // A refused commit leaves nothing behind.
        let before = store.stats().await.unwrap();
        assert!(matches!(
            store.submit_commit(commit(&g, 3, 15, &[99])).await,
            Err(CommitError::UnknownDevice(_))
        ));
        assert_eq!(store.group_epoch(&g).await.unwrap(), Some(3));
        assert_eq!(store.stats().await.unwrap(), before);
    }

    /// Invite links: a member publishes with the current capability and
    /// epoch, the link id stays bound to its group, a joiner's external
    /// commit is admitted only by an open link of its group, and closing
    /// refuses everything of the group's links, recorded atomically.
    pub async fn invite_links_admit_until_closed<S: Store + sotto_server::store::LegalStore>(
        store: S,
    ) {
        use sotto_server::store::{
            GroupInfoPublication, InviteLinkError, ReportRecord, StoreError,
        };
        store.register(account("alice", 1)).await.unwrap();
        let g = with_group(&store, "g").await;
        let publication = |link: u8, epoch: u64, sealed: &[u8]| GroupInfoPublication {
            link_id: [link; 16],
            group_id: g.clone(),
            epoch,
            token_hash: TOKEN_HASH,
            sealed: sealed.to_vec(),
            now: 1_000,
        };
        let outsider = GroupInfoPublication {
            token_hash: [1; 32],
            ..publication(1, 1, b"v1")
        };
        assert!(matches!(
            store.publish_group_info(outsider).await,
            Err(InviteLinkError::NotAuthorized)
        ));
        assert!(matches!(
            store.publish_group_info(publication(1, 0, b"v0")).await,
            Err(InviteLinkError::StaleEpoch {
                submitted: 0,
                current: 1
            })
        ));
        assert!(matches!(
            store.invite_group_info([1; 16]).await,
            Err(InviteLinkError::UnknownLink)
        ));
        store
            .publish_group_info(publication(1, 1, b"v1"))
            .await
            .unwrap();
        let info = store.invite_group_info([1; 16]).await.unwrap();
        assert_eq!(
            (&info.group_id, info.epoch, info.sealed.as_slice()),
            (&g, 1, &b"v1"[..])
        );
        // A link id stays bound to its group.
        let h = with_group(&store, "h").await;
        let moved = GroupInfoPublication {
            group_id: h,
            ..publication(1, 1, b"x")
        };
        assert!(matches!(
            store.publish_group_info(moved).await,
            Err(InviteLinkError::NotAuthorized)
        ));

        // A joiner's external commit: only by an open link of the group.
        let join = |id: u8, link: u8, epoch: u64| CommitSubmission {
            token_hash: None,
            invite_link: Some([link; 16]),
            ..commit(&g, epoch, id, &[1])
        };
        assert!(matches!(
            store.submit_commit(join(30, 9, 1)).await,
            Err(CommitError::NotAuthorized)
        ));
        let accepted = store.submit_commit(join(31, 1, 1)).await.unwrap();
        assert_eq!(accepted.new_epoch, 2);
        store
            .publish_group_info(publication(1, 2, b"v2"))
            .await
            .unwrap();

        let entry = ReportRecord {
            seq: 1,
            request_id: "R-1".into(),
            day: 20_001,
            kind: "invite-link-close".into(),
            accounts: 0,
            prev_hash: vec![0; 32],
            hash: vec![1; 32],
            signature: vec![2; 64],
        };
        let kept = entry.clone();
        let (closed, recorded) = store
            .close_invite_links(g.clone(), 20_001, move |snapshot| {
                assert_eq!(snapshot.open_links, 1);
                assert!(snapshot.last_entry.is_none());
                Ok::<_, StoreError>(kept)
            })
            .await
            .unwrap();
        assert_eq!((closed, &recorded), (1, &entry));
        assert_eq!(store.report_entries().await.unwrap(), [entry]);
        assert!(matches!(
            store.invite_group_info([1; 16]).await,
            Err(InviteLinkError::Closed)
        ));
        assert!(matches!(
            store.submit_commit(join(32, 1, 2)).await,
            Err(CommitError::InviteLinkClosed)
        ));
        // No link of the group is published again, old or new.
        for link in [1, 5] {
            assert!(matches!(
                store.publish_group_info(publication(link, 2, b"v3")).await,
                Err(InviteLinkError::Closed)
            ));
        }
        // Members go on committing with their capability.
        store.submit_commit(commit(&g, 2, 33, &[1])).await.unwrap();
    }

    pub async fn enqueue_is_idempotent_and_stores_the_payload_once<S: Store>(store: S) {
        for (name, d) in [("alice", 1), ("bob", 2), ("carol", 3)] {
            store.register(account(name, d)).await.unwrap();
        }
        let g = with_group(&store, "g").await;
        let message = |id: u8, recipients: &[u8]| GroupMessage {
            expires_at: None,
            group_id: g.clone(),
            token_hash: TOKEN_HASH,
            epoch: 1,
            previous_epoch_open: false,
            envelope: envelope(id, recipients, b"hello"),
            now: 1_000,
        };
        assert_eq!(
            store
                .enqueue(message(1, &[1, 2, 3, 2]))
                .await
                .unwrap()
                .outcome,
            Enqueued::Queued
        );
        assert_eq!(
            store.enqueue(message(1, &[1, 2, 3])).await.unwrap().outcome,
            Enqueued::Duplicate
        );
        // De-duplication comes after authorisation: without the capability
        // a queued id is not a duplicate (an outsider cannot probe ids)...
        let outsider = GroupMessage {
            expires_at: None,
            token_hash: [8; 32],
            envelope: envelope(1, &[1], b"other bytes"),
            ..message(1, &[1])
        };
        assert!(matches!(
            store.enqueue(outsider).await,
            Err(EnqueueError::NotAuthorized)
        ));
        // ...an authorised sender cannot reuse it for other bytes...
        let reused = GroupMessage {
            expires_at: None,
            envelope: envelope(1, &[1], b"other bytes"),
            ..message(1, &[1])
        };
        match store.enqueue(reused).await {
            Err(EnqueueError::IdInUse(id)) => assert_eq!(id, message_id(1)),
            other => panic!("expected IdInUse, got {other:?}"),
        }
        // ...and a resend of the same bytes is a duplicate even with a
        // capability that is no longer current (a resend after a crash).
        let resend = GroupMessage {
            expires_at: None,
            token_hash: [8; 32],
            ..message(1, &[1])
        };
        assert_eq!(
            store.enqueue(resend).await.unwrap().outcome,
            Enqueued::Duplicate
        );
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.payloads, stats.mailbox_entries), (1, 3));
        for d in 1..=3 {
            let entries = store.fetch_mailbox(device_id(d), 0, 10).await.unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(
                (entries[0].message_id, entries[0].payload.as_slice()),
                (message_id(1), b"hello".as_slice())
            );
        }

        let unknown_group = GroupMessage {
            expires_at: None,
            group_id: group("nope"),
            ..message(2, &[1])
        };
        assert!(matches!(
            store.enqueue(unknown_group).await,
            Err(EnqueueError::UnknownGroup(_))
        ));
        match store.enqueue(message(3, &[1, 9])).await {
            Err(EnqueueError::UnknownDevice(d)) => assert_eq!(d, device_id(9)),
            other => panic!("expected UnknownDevice, got {other:?}"),
        }
        assert_eq!(
            store.stats().await.unwrap(),
            stats,
            "refused messages store nothing"
        );

        // A commit is held to the same rule: a queued message's id with
        // other bytes is refused (once authorised), and so is its Welcome's.
        assert!(matches!(
            store.submit_commit(commit(&g, 1, 1, &[2])).await,
            Err(CommitError::IdInUse(_))
        ));
        let welcome_clash = CommitSubmission {
            welcome: Some(envelope(1, &[3], b"welcome")),
            ..commit(&g, 1, 30, &[2])
        };
        assert!(matches!(
            store.submit_commit(welcome_clash).await,
            Err(CommitError::IdInUse(_))
        ));
        let outsider = CommitSubmission {
            token_hash: Some([8; 32]),
            ..commit(&g, 1, 1, &[2])
        };
        assert!(matches!(
            store.submit_commit(outsider).await,
            Err(CommitError::NotAuthorized)
        ));
        assert_eq!(store.group_epoch(&g).await.unwrap(), Some(1));
        assert_eq!(store.stats().await.unwrap(), stats);
    }

    /// The missed-messages notice in a mailbox entry, if it is one.
    pub fn notice_of(entry: &MailboxEntry) -> Option<MissedMessages> {
        sotto_proto::missed_notice::parse(&entry.payload)
    }

    pub fn to(g: &GroupId, epoch: u64, id: u8, recipients: &[u8]) -> GroupMessage {
        GroupMessage {
            expires_at: None,
            group_id: g.clone(),
            token_hash: TOKEN_HASH,
            epoch,
            previous_epoch_open: false,
            envelope: envelope(id, recipients, b"hello"),
            now: 1_000,
        }
    }

    /// A group with more devices than one frame may name gets a message and
    /// a commit in parts: the same id and bytes, stored once, more
    /// recipients each time, under the same checks as the first part.
    pub async fn large_groups_are_sent_in_parts<S: Store>(store: S) {
        for (name, d) in [
            ("alice", 1),
            ("bob", 2),
            ("carol", 3),
            ("dave", 4),
            ("erin", 5),
        ] {
            store.register(account(name, d)).await.unwrap();
        }
        let g = with_group(&store, "g").await;
        let holders = |id: u8| {
            let store = &store;
            async move {
                let mut holders = Vec::new();
                for d in 1..=5 {
                    let entries = store.fetch_mailbox(device_id(d), 0, 100).await.unwrap();
                    if entries.iter().any(|e| e.message_id == message_id(id)) {
                        holders.push(d);
                    }
                }
                holders
            }
        };

        let first = store.enqueue(to(&g, 1, 1, &[1, 2])).await.unwrap();
        assert_eq!(first.outcome, Enqueued::Queued);
        let more = store.enqueue_more(to(&g, 1, 1, &[2, 3, 4])).await.unwrap();
        assert_eq!(more.outcome, Enqueued::Queued);
        assert_eq!(holders(1).await, [1, 2, 3, 4], "bob is not queued twice");
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.payloads, stats.mailbox_entries), (1, 4));
        // A resent part adds nothing.
        let again = store.enqueue_more(to(&g, 1, 1, &[3, 4])).await.unwrap();
        assert_eq!(again.outcome, Enqueued::Duplicate);
        // A part needs the capability, even with the same bytes...
        let stranger = GroupMessage {
            expires_at: None,
            token_hash: [8; 32],
            ..to(&g, 1, 1, &[5])
        };
        assert!(matches!(
            store.enqueue_more(stranger).await,
            Err(EnqueueError::NotAuthorized)
        ));
        // ...and the same bytes.
        let other_bytes = GroupMessage {
            expires_at: None,
            envelope: envelope(1, &[5], b"other bytes"),
            ..to(&g, 1, 1, &[5])
        };
        assert!(matches!(
            store.enqueue_more(other_bytes).await,
            Err(EnqueueError::IdInUse(_))
        ));
        assert_eq!(store.stats().await.unwrap(), stats);
        // Once every recipient acknowledged, a late part stores it again.
        for d in 1..=4 {
            drain(&store, d).await;
        }
        let late = store.enqueue_more(to(&g, 1, 1, &[5])).await.unwrap();
        assert_eq!(late.outcome, Enqueued::Queued);
        assert_eq!(holders(1).await, [5]);
        drain(&store, 5).await;

        // A commit: the first part is sequenced, the others add recipients
        // and the Welcome's.
        let accepted = store
            .submit_commit(commit(&g, 1, 20, &[1, 2]))
            .await
            .unwrap();
        assert_eq!(accepted.new_epoch, 2);
        let with_welcome = CommitSubmission {
            welcome: Some(envelope(21, &[5], b"welcome")),
            ..commit(&g, 1, 20, &[3, 4])
        };
        let more = store
            .submit_commit_more(with_welcome.clone())
            .await
            .unwrap();
        assert_eq!((more.new_epoch, more.outcome), (2, Enqueued::Queued));
        assert_eq!(holders(20).await, [1, 2, 3, 4]);
        assert_eq!(holders(21).await, [5]);
        assert_eq!(
            store.group_epoch(&g).await.unwrap(),
            Some(2),
            "a part is not a new epoch"
        );
        let again = store.submit_commit_more(with_welcome).await.unwrap();
        assert_eq!(again.outcome, Enqueued::Duplicate);
        // Parts of a commit need the capability of the epoch it ended and
        // the next capability it set.
        let stranger = CommitSubmission {
            token_hash: Some([8; 32]),
            ..commit(&g, 1, 20, &[5])
        };
        assert!(matches!(
            store.submit_commit_more(stranger).await,
            Err(CommitError::NotAuthorized)
        ));
        let other_next = CommitSubmission {
            next_token_hash: [9; 32],
            ..commit(&g, 1, 20, &[5])
        };
        assert!(matches!(
            store.submit_commit_more(other_next).await,
            Err(CommitError::NotAuthorized)
        ));
        // Only the latest commit takes parts.
        store.submit_commit(commit(&g, 2, 22, &[1])).await.unwrap();
        assert!(matches!(
            store.submit_commit_more(commit(&g, 1, 20, &[5])).await,
            Err(CommitError::StaleEpoch {
                submitted: 1,
                current: 3
            })
        ));
        assert!(matches!(
            store.submit_commit_more(commit(&g, 3, 23, &[5])).await,
            Err(CommitError::StaleEpoch { .. })
        ));
        assert!(matches!(
            store
                .submit_commit_more(commit(&group("nope"), 1, 24, &[5]))
                .await,
            Err(CommitError::UnknownGroup(_))
        ));
        assert_eq!(holders(20).await, [1, 2, 3, 4]);
    }

    /// Acknowledges everything in a device's mailbox.
    pub async fn drain<S: Store>(store: &S, d: u8) {
        let seqs = store.fetch_mailbox(device_id(d), 0, 100).await.unwrap();
        let seqs: Vec<u64> = seqs.iter().map(|e| e.seq).collect();
        store.ack(device_id(d), seqs).await.unwrap();
    }

    /// A device whose mailbox is at the cap is skipped (and told, by a
    /// notice), never a reason to refuse a message or a commit; the cap
    /// holds.
    pub async fn full_mailboxes_skip_only_their_device<S: Store>(store: S) {
        store.set_mailbox_limit(2);
        for (name, d) in [("alice", 1), ("bob", 2), ("carol", 3)] {
            store.register(account(name, d)).await.unwrap();
        }
        let g = with_group(&store, "g").await;
        for id in [1, 2] {
            assert!(
                store
                    .enqueue(to(&g, 1, id, &[1]))
                    .await
                    .unwrap()
                    .skipped
                    .is_empty()
            );
        }

        // A message: stored for 2 and 3, device 1 skipped and told.
        let sent = store.enqueue(to(&g, 1, 3, &[2, 1, 3])).await.unwrap();
        assert_eq!(
            (sent.outcome, sent.skipped),
            (Enqueued::Queued, vec![device_id(1)])
        );
        assert_eq!(
            store.enqueue(to(&g, 1, 3, &[2, 1, 3])).await.unwrap(),
            Queued {
                outcome: Enqueued::Duplicate,
                skipped: vec![]
            },
            "a resend is a duplicate"
        );
        for d in [2, 3] {
            let mailbox = store.fetch_mailbox(device_id(d), 0, 10).await.unwrap();
            assert_eq!(mailbox.len(), 1);
            assert_eq!(mailbox[0].message_id, message_id(3));
            drain(&store, d).await;
        }
        let mailbox = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        assert_eq!(mailbox.len(), 3, "two messages, then the notice");
        let first_notice = mailbox[2].clone();
        assert_eq!(
            notice_of(&first_notice),
            Some(MissedMessages {
                group_id: b"g".to_vec(),
                messages: 1,
                commits: 0,
                welcomes: 0
            })
        );
        assert!(mailbox[..2].iter().all(|e| notice_of(e).is_none()));

        // Another lost message updates the queued notice in place.
        let sent = store.enqueue(to(&g, 1, 4, &[1, 2])).await.unwrap();
        assert_eq!(sent.skipped, vec![device_id(1)]);
        let mailbox = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        assert_eq!(mailbox.len(), 3);
        assert_eq!(
            (mailbox[2].seq, mailbox[2].message_id),
            (first_notice.seq, first_notice.message_id)
        );
        assert_eq!(notice_of(&mailbox[2]).unwrap().messages, 2);

        // A commit is accepted for everyone else; device 1 gets a second
        // notice, since it may already have processed the first.
        let accepted = store
            .submit_commit(commit(&g, 1, 5, &[1, 2, 3]))
            .await
            .unwrap();
        assert_eq!(
            (accepted.new_epoch, accepted.outcome, accepted.skipped),
            (2, Enqueued::Queued, vec![device_id(1)])
        );
        assert_eq!(store.group_epoch(&g).await.unwrap(), Some(2));
        for d in [2, 3] {
            let mailbox = store.fetch_mailbox(device_id(d), 0, 10).await.unwrap();
            assert_eq!(mailbox.last().unwrap().message_id, message_id(5));
            drain(&store, d).await;
        }
        let mailbox = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        assert_eq!(mailbox.len(), 4);
        assert_eq!(
            notice_of(&mailbox[3]),
            Some(MissedMessages {
                group_id: b"g".to_vec(),
                messages: 0,
                commits: 1,
                welcomes: 0
            })
        );
        // Once a commit is reported, later losses join that notice.
        store.enqueue(to(&g, 2, 6, &[1, 2])).await.unwrap();
        let welcome = CommitSubmission {
            welcome: Some(envelope(8, &[1, 3], b"welcome")),
            ..commit(&g, 2, 7, &[2])
        };
        let accepted = store.submit_commit(welcome).await.unwrap();
        assert_eq!(
            accepted.skipped,
            vec![device_id(1)],
            "a full Welcome recipient is named"
        );
        let mailbox = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        assert_eq!(mailbox.len(), 4, "the cap holds: no new entry for device 1");
        assert_eq!(
            notice_of(&mailbox[3]),
            Some(MissedMessages {
                group_id: b"g".to_vec(),
                messages: 1,
                commits: 1,
                welcomes: 1
            })
        );

        // Notices do not count against the cap: acknowledging one message
        // makes room for exactly one more.
        assert_eq!(
            store.ack(device_id(1), vec![mailbox[0].seq]).await.unwrap(),
            1
        );
        let sent = store.enqueue(to(&g, 3, 9, &[1])).await.unwrap();
        assert!(sent.skipped.is_empty());
        let sent = store.enqueue(to(&g, 3, 10, &[1, 3])).await.unwrap();
        assert_eq!(sent.skipped, vec![device_id(1)]);
        let mailbox = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        let messages: Vec<MessageId> = mailbox
            .iter()
            .filter(|e| notice_of(e).is_none())
            .map(|e| e.message_id)
            .collect();
        assert_eq!(messages, [message_id(2), message_id(9)]);
        assert_eq!(
            notice_of(&mailbox[2]),
            Some(MissedMessages {
                group_id: b"g".to_vec(),
                messages: 2,
                commits: 1,
                welcomes: 1
            }),
            "a queued notice that reports a commit takes every later loss of its group"
        );

        // An acknowledged notice is gone with its payload.
        let before = store.stats().await.unwrap();
        let notices: Vec<u64> = mailbox
            .iter()
            .filter(|e| notice_of(e).is_some())
            .map(|e| e.seq)
            .collect();
        assert_eq!(notices.len(), 2);
        assert_eq!(store.ack(device_id(1), notices).await.unwrap(), 2);
        let after = store.stats().await.unwrap();
        assert_eq!(
            (after.mailbox_entries, after.payloads),
            (before.mailbox_entries - 2, before.payloads - 2)
        );
    }

    /// Losses in more groups than `MAX_MISSED_NOTICES` are counted in one
    /// notice that names no group.
    pub async fn missed_notices_are_bounded_per_device<S: Store>(store: S) {
        store.set_mailbox_limit(1);
        store.register(account("alice", 1)).await.unwrap();
        let first = with_group(&store, "first").await;
        store.enqueue(to(&first, 1, 1, &[1])).await.unwrap();
        let groups = MAX_MISSED_NOTICES as usize + 2;
        for n in 0..groups {
            let g = group(&format!("group {n}"));
            let mut create = commit(&g, 0, 0, &[]);
            create.commit.message_id =
                MessageId::new([0xc0, n as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            store.submit_commit(create).await.unwrap();
            let mut m = to(&g, 1, 0, &[1]);
            m.envelope.message_id =
                MessageId::new([0xd0, n as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(store.enqueue(m).await.unwrap().skipped, vec![device_id(1)]);
        }
        let mailbox = store.fetch_mailbox(device_id(1), 0, 1_000).await.unwrap();
        let notices: Vec<MissedMessages> = mailbox.iter().filter_map(notice_of).collect();
        assert_eq!(notices.len(), MAX_MISSED_NOTICES as usize + 1);
        assert!(
            notices[..MAX_MISSED_NOTICES as usize]
                .iter()
                .all(|n| !n.group_id.is_empty())
        );
        assert_eq!(
            notices.last(),
            Some(&MissedMessages {
                group_id: vec![],
                messages: 2,
                commits: 0,
                welcomes: 0
            })
        );
    }

    pub async fn mailbox_is_fetched_in_order_in_windows<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        let g = with_group(&store, "g").await;
        for i in 1..=5u8 {
            let m = GroupMessage {
                expires_at: None,
                group_id: g.clone(),
                token_hash: TOKEN_HASH,
                epoch: 1,
                previous_epoch_open: false,
                envelope: envelope(i, &[1], &[i]),
                now: 1_000,
            };
            store.enqueue(m).await.unwrap();
        }
        let first = store.fetch_mailbox(device_id(1), 0, 2).await.unwrap();
        assert_eq!(
            first.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            [vec![1], vec![2]]
        );
        let rest = store
            .fetch_mailbox(device_id(1), first[1].seq, 10)
            .await
            .unwrap();
        assert_eq!(
            rest.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            [vec![3], vec![4], vec![5]]
        );
        assert!(
            store
                .fetch_mailbox(device_id(2), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn ack_deletes_entries_and_then_the_payload<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("bob", 2)).await.unwrap();
        let g = with_group(&store, "g").await;
        let m = GroupMessage {
            expires_at: None,
            group_id: g.clone(),
            token_hash: TOKEN_HASH,
            epoch: 1,
            previous_epoch_open: false,
            envelope: envelope(1, &[1, 2], b"x"),
            now: 1_000,
        };
        store.enqueue(m).await.unwrap();
        let alice = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        let bob = store.fetch_mailbox(device_id(2), 0, 10).await.unwrap();

        // Bob cannot acknowledge Alice's entry; unknown seqs are ignored.
        assert_eq!(
            store
                .ack(device_id(2), vec![alice[0].seq, 9_999])
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store.ack(device_id(1), vec![alice[0].seq]).await.unwrap(),
            1
        );
        assert!(
            store
                .fetch_mailbox(device_id(1), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.stats().await.unwrap().payloads,
            1,
            "Bob still needs the payload"
        );
        assert_eq!(store.fetch_mailbox(device_id(2), 0, 10).await.unwrap(), bob);

        assert_eq!(
            store
                .ack(device_id(2), vec![bob[0].seq, bob[0].seq])
                .await
                .unwrap(),
            1
        );
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.payloads, stats.mailbox_entries), (0, 0));
    }

    /// Every recipient of a group message acknowledging it at once (the
    /// SQLite store commits acknowledgements that queue up together): each
    /// is answered with its own count, and the payload goes with the last.
    pub async fn concurrent_acks_are_each_counted<S: Store>(store: S) {
        let devices: Vec<u8> = (1..=24).collect();
        for &d in &devices {
            store
                .register(account(&format!("user{d}"), d))
                .await
                .unwrap();
        }
        let g = with_group(&store, "g").await;
        for id in [1, 2] {
            store
                .enqueue(GroupMessage {
                    expires_at: None,
                    group_id: g.clone(),
                    token_hash: TOKEN_HASH,
                    epoch: 1,
                    previous_epoch_open: false,
                    envelope: envelope(id, &devices, &[id]),
                    now: 1_000,
                })
                .await
                .unwrap();
        }
        let mut seqs = Vec::new();
        for &d in &devices {
            let mailbox = store.fetch_mailbox(device_id(d), 0, 10).await.unwrap();
            assert_eq!(mailbox.len(), 2);
            seqs.push((d, mailbox[0].seq, mailbox[1].seq));
        }
        // Everyone acknowledges the first message (twice, with an unknown
        // seq); only device 1 the second.
        let acks = seqs.iter().map(|&(d, first, second)| {
            let store = &store;
            async move {
                let mut wanted = vec![first, first, 9_999];
                if d == 1 {
                    wanted.push(second);
                }
                (d, store.ack(device_id(d), wanted).await.unwrap())
            }
        });
        for (d, deleted) in futures_util::future::join_all(acks).await {
            assert_eq!(deleted, if d == 1 { 2 } else { 1 }, "device {d}");
        }
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (stats.payloads, stats.mailbox_entries),
            (1, 23),
            "the first payload is gone, the second still needed"
        );
    }

    /// An offline drain's acknowledgements, in the shape of quick W3: 200
    /// devices, each with a backlog of 100 messages of its own (512 bytes
    /// each, 20,000 payloads), acknowledge all of it at once. The SQLite
    /// store commits acknowledgements that queue up in one write job; each
    /// must complete (within the case's timeout) with its own count. Run in
    /// one SAVEPOINT, such a job kept the writer busy for minutes (quick W3
    /// never got `SyncDone`, bench/OPTIMISATIONS.md #7).
    pub async fn a_drained_backlog_acknowledged_at_once_is_deleted<S: Store>(store: S) {
        let devices: Vec<u8> = (1..=200).collect();
        let per_device: u8 = 100;
        for &d in &devices {
            store
                .register(account(&format!("user{d}"), d))
                .await
                .unwrap();
        }
        let g = with_group(&store, "g").await;
        let fills = devices.iter().map(|&d| {
            let (store, g) = (&store, g.clone());
            async move {
                for n in 0..per_device {
                    let mut id = [0; 16];
                    id[0] = d;
                    id[1] = n;
                    store
                        .enqueue(GroupMessage {
                            expires_at: None,
                            group_id: g.clone(),
                            token_hash: TOKEN_HASH,
                            epoch: 1,
                            previous_epoch_open: false,
                            envelope: Envelope {
                                message_id: MessageId::new(id),
                                recipients: vec![device_id(d)],
                                payload: [d, n].repeat(256),
                                frank: None,
                            },
                            now: 1_000,
                        })
                        .await
                        .unwrap();
                }
            }
        });
        futures_util::future::join_all(fills).await;
        let mut backlogs = Vec::new();
        for &d in &devices {
            let mailbox = store
                .fetch_mailbox(device_id(d), 0, usize::from(per_device))
                .await
                .unwrap();
            assert_eq!(mailbox.len(), usize::from(per_device), "device {d}");
            backlogs.push((d, mailbox.iter().map(|e| e.seq).collect::<Vec<_>>()));
        }
        let acks = backlogs.into_iter().map(|(d, seqs)| {
            let store = &store;
            async move { (d, store.ack(device_id(d), seqs).await.unwrap()) }
        });
        for (d, deleted) in futures_util::future::join_all(acks).await {
            assert_eq!(deleted, u64::from(per_device), "device {d}");
        }
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.payloads, stats.mailbox_entries), (0, 0));
    }

    pub async fn expiry_deletes_old_entries_and_orphaned_payloads<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("bob", 2)).await.unwrap();
        let g = with_group(&store, "g").await;
        let at = |id: u8, recipients: &[u8], now| GroupMessage {
            expires_at: None,
            group_id: g.clone(),
            token_hash: TOKEN_HASH,
            epoch: 1,
            previous_epoch_open: false,
            envelope: envelope(id, recipients, &[id]),
            now,
        };
        // Queue times are kept as days: day 0, and day 2.
        const DAY: u64 = 86_400;
        store.enqueue(at(1, &[1, 2], 100)).await.unwrap();
        store.enqueue(at(2, &[1], 2 * DAY + 1_000)).await.unwrap();
        // A cutoff inside day 0 deletes nothing: whole days only.
        let expired = |mailbox_entries| Expired {
            mailbox_entries,
            groups: 0,
        };
        assert_eq!(store.expire(DAY - 1).await.unwrap(), expired(0));
        assert_eq!(store.expire(2 * DAY + 5_000).await.unwrap(), expired(2));
        let left = store.fetch_mailbox(device_id(1), 0, 10).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.message_id).collect::<Vec<_>>(),
            [message_id(2)]
        );
        assert!(
            store
                .fetch_mailbox(device_id(2), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.payloads, stats.mailbox_entries), (1, 1));
        assert_eq!(store.expire(2 * DAY + 5_000).await.unwrap(), expired(0));
    }

    /// An ephemeral send is checked like `enqueue` (group, capability,
    /// epoch) and stores nothing.
    pub async fn check_send_checks_and_stores_nothing<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("bob", 2)).await.unwrap();
        let g = with_group(&store, "g").await;
        let before = store.stats().await.unwrap();
        let send = |token_hash, epoch, group: &GroupId| GroupMessage {
            expires_at: None,
            group_id: group.clone(),
            token_hash,
            epoch,
            previous_epoch_open: false,
            envelope: envelope(1, &[1, 2], b"typing"),
            now: 1_000,
        };
        store.check_send(send(TOKEN_HASH, 1, &g)).await.unwrap();
        assert!(matches!(
            store.check_send(send([9; 32], 1, &g)).await,
            Err(EnqueueError::NotAuthorized)
        ));
        assert!(matches!(
            store.check_send(send(TOKEN_HASH, 2, &g)).await,
            Err(EnqueueError::WrongEpoch { .. })
        ));
        assert!(matches!(
            store.check_send(send(TOKEN_HASH, 1, &group("nope"))).await,
            Err(EnqueueError::UnknownGroup(_))
        ));
        assert_eq!(store.stats().await.unwrap(), before);
        assert!(ids(&store, 2).await.is_empty());
    }

    /// The ids of a device's queued messages, in order.
    pub async fn ids<S: Store>(store: &S, d: u8) -> Vec<MessageId> {
        store
            .fetch_mailbox(device_id(d), 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.message_id)
            .collect()
    }

    /// Disappearing messages: a message sent with an expiry is deleted
    /// with all its entries once the sweep runs at or after it; others,
    /// and notices, stay.
    pub async fn disappearing_messages_are_deleted_at_expiry<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("bob", 2)).await.unwrap();
        let g = with_group(&store, "g").await;
        let at = |id: u8, expires_at| GroupMessage {
            expires_at,
            group_id: g.clone(),
            token_hash: TOKEN_HASH,
            epoch: 1,
            previous_epoch_open: false,
            envelope: envelope(id, &[1, 2], &[id]),
            now: 1_000,
        };
        store.enqueue(at(1, Some(1_010))).await.unwrap();
        store.enqueue(at(2, None)).await.unwrap();
        store.enqueue(at(3, Some(1_020))).await.unwrap();
        // A resend with a later expiry changes nothing.
        store.enqueue(at(1, Some(9_999))).await.unwrap();
        assert_eq!(store.expire_disappearing(1_009).await.unwrap(), 0);
        assert_eq!(store.expire_disappearing(1_010).await.unwrap(), 2);
        assert_eq!(ids(&store, 1).await, [message_id(2), message_id(3)]);
        // Bob fetched message 3 already; it goes all the same.
        assert_eq!(store.expire_disappearing(50_000).await.unwrap(), 2);
        assert_eq!(ids(&store, 2).await, [message_id(2)]);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.payloads, stats.mailbox_entries), (1, 2));
        // The id is free again once the payload is gone.
        store.enqueue(at(1, None)).await.unwrap();
        assert_eq!(store.expire_disappearing(u64::MAX / 2).await.unwrap(), 0);
    }

    /// A group with no accepted commit or message within the retention
    /// period is deleted with its accepted-commit ids; a message or a
    /// commit keeps a group alive.
    pub async fn dead_groups_expire_with_the_retention_period<S: Store>(store: S) {
        const DAY: u64 = 86_400;
        store.register(account("alice", 1)).await.unwrap();
        let at_day = |day: u64, commit: CommitSubmission| CommitSubmission {
            now: day * DAY,
            ..commit
        };
        let (dead, talking, committing) = (group("dead"), group("talking"), group("committing"));
        for (i, g) in [&dead, &talking, &committing].into_iter().enumerate() {
            let id = 100 + u8::try_from(i).unwrap();
            store
                .submit_commit(at_day(10, commit(g, 0, id, &[])))
                .await
                .unwrap();
        }
        // Day 20: a message to one group, a commit in another.
        store
            .enqueue(GroupMessage {
                expires_at: None,
                group_id: talking.clone(),
                token_hash: TOKEN_HASH,
                epoch: 1,
                previous_epoch_open: false,
                envelope: envelope(1, &[1], b"hi"),
                now: 20 * DAY,
            })
            .await
            .unwrap();
        store
            .submit_commit(at_day(20, commit(&committing, 1, 111, &[1])))
            .await
            .unwrap();

        // A cutoff on day 10 keeps groups active on day 10.
        let kept = store.expire(10 * DAY).await.unwrap();
        assert_eq!(kept.groups, 0);
        assert_eq!(store.group_epoch(&dead).await.unwrap(), Some(1));
        // A cutoff on day 11 deletes only the group unused since day 10.
        let expired = store.expire(11 * DAY).await.unwrap();
        assert_eq!(expired.groups, 1);
        assert_eq!(store.group_epoch(&dead).await.unwrap(), None);
        assert_eq!(store.group_epoch(&talking).await.unwrap(), Some(1));
        assert_eq!(store.group_epoch(&committing).await.unwrap(), Some(2));
        assert!(matches!(
            store
                .enqueue(GroupMessage {
                    expires_at: None,
                    group_id: dead.clone(),
                    token_hash: TOKEN_HASH,
                    epoch: 1,
                    previous_epoch_open: false,
                    envelope: envelope(2, &[1], b"late"),
                    now: 21 * DAY,
                })
                .await,
            Err(EnqueueError::UnknownGroup(_))
        ));
        // Its accepted commit is forgotten too: the creation is not a
        // resend any more, so it creates the group afresh.
        let again = store
            .submit_commit(at_day(21, commit(&dead, 0, 100, &[])))
            .await
            .unwrap();
        assert_eq!((again.new_epoch, again.outcome), (1, Enqueued::Queued));

        // Past day 20 the others go as well.
        let expired = store.expire(21 * DAY).await.unwrap();
        assert_eq!(expired.groups, 2);
        assert_eq!(store.group_epoch(&talking).await.unwrap(), None);
        assert_eq!(store.group_epoch(&committing).await.unwrap(), None);
        assert_eq!(store.group_epoch(&dead).await.unwrap(), Some(1));
    }
}

/// Transparency log and device cases.
mod log_cases {
    use super::conformance::*;
    use super::*;

    pub fn new_device(username: &str, device: u8, seq: u64) -> NewDevice {
        NewDevice {
            username: username.into(),
            device_id: device_id(device),
            device_key: [device.wrapping_add(100); 32],
            device: SignedDevice {
                certificate: vec![device; 5],
                identity_signature: vec![device; 64],
            },
            today: 20_001,
            log_entry: vec![device, 2],
            account_seq: seq,
        }
    }

    pub fn removal(username: &str, device: u8, seq: u64) -> DeviceRemoval {
        DeviceRemoval {
            username: username.into(),
            device_id: device_id(device),
            today: 20_002,
            log_entry: vec![device, 3],
            account_seq: seq,
            rotation: None,
        }
    }

    pub async fn log_append_is_atomic_with_register<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        let log = store.log_entries(0, 10).await.unwrap();
        assert_eq!(
            log.iter()
                .map(|r| (r.index, r.username.as_str(), r.entry.clone()))
                .collect::<Vec<_>>(),
            [(0, "alice", vec![1, 0]), (1, "alice", vec![1, 1])]
        );
        // Refused registrations append nothing.
        assert!(store.register(account("alice", 2)).await.is_err());
        assert!(store.register(account("bob", 1)).await.is_err());
        assert_eq!(store.log_entries(0, 10).await.unwrap(), log);
        assert!(store.account_log("bob").await.unwrap().is_empty());
    }

    /// A web release is appended once per distinct release, filed under
    /// the name no account has, between account leaves; concurrent
    /// appends of one release (nodes starting together) append it once.
    pub async fn web_release_is_appended_once_per_release<S: Store>(store: S) {
        let web = sotto_proto::WEB_RELEASE_USERNAME;
        store.register(account("alice", 1)).await.unwrap();
        let (a, b, c) = tokio::join!(
            store.append_web_release(vec![9, 1]),
            store.append_web_release(vec![9, 1]),
            store.append_web_release(vec![9, 1])
        );
        assert_eq!(
            [a.unwrap(), b.unwrap(), c.unwrap()]
                .iter()
                .filter(|appended| **appended)
                .count(),
            1
        );
        assert!(!store.append_web_release(vec![9, 1]).await.unwrap());
        store.add_device(new_device("alice", 3, 2)).await.unwrap();
        // The latest release is compared, not any earlier one.
        assert!(store.append_web_release(vec![9, 2]).await.unwrap());
        assert!(store.append_web_release(vec![9, 1]).await.unwrap());
        let all = store.log_entries(0, 100).await.unwrap();
        assert_eq!(
            all.iter()
                .map(|r| (r.index, r.username.as_str(), r.entry.clone()))
                .collect::<Vec<_>>(),
            [
                (0, "alice", vec![1, 0]),
                (1, "alice", vec![1, 1]),
                (2, web, vec![9, 1]),
                (3, "alice", vec![3, 2]),
                (4, web, vec![9, 2]),
                (5, web, vec![9, 1]),
            ]
        );
        assert_eq!(store.account_log("alice").await.unwrap().len(), 3);
        assert_eq!(store.account_log(web).await.unwrap().len(), 3);
    }

    pub async fn account_log_is_in_order_and_entries_page<S: Store>(store: S) {
        let (a, b) = tokio::join!(
            store.register(account("alice", 1)),
            store.register(account("bob", 2))
        );
        a.unwrap();
        b.unwrap();
        store.add_device(new_device("alice", 3, 2)).await.unwrap();
        let all = store.log_entries(0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let alice = store.account_log("alice").await.unwrap();
        assert_eq!(
            alice.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
            [vec![1, 0], vec![1, 1], vec![3, 2]]
        );
        assert!(alice.windows(2).all(|w| w[0].index < w[1].index));
        let page = store.log_entries(3, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0], all[3]);
        assert!(store.log_entries(5, 10).await.unwrap().is_empty());
    }

    pub async fn devices_are_added_and_removed<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.register(account("bob", 2)).await.unwrap();
        assert!(matches!(
            store.add_device(new_device("alice", 3, 1)).await,
            Err(AddDeviceError::StaleSequence { expected: 2 })
        ));
        assert!(matches!(
            store.add_device(new_device("alice", 2, 2)).await,
            Err(AddDeviceError::DeviceIdTaken(_))
        ));
        assert!(matches!(
            store.add_device(new_device("nobody", 3, 0)).await,
            Err(AddDeviceError::UnknownUser)
        ));
        store.add_device(new_device("alice", 3, 2)).await.unwrap();
        let added = store.device("alice", device_id(3)).await.unwrap().unwrap();
        assert!(!added.removed);
        assert_eq!(store.stats().await.unwrap().devices, 3);

        // Device 3 has KeyPackages and mail; removing it deletes both.
        store
            .upload_key_packages(device_id(3), vec![b"k".to_vec()], Some(b"l".to_vec()))
            .await
            .unwrap();
        let g = with_group(&store, "g").await;
        let mail = |id: u8, to: &[u8]| GroupMessage {
            expires_at: None,
            group_id: g.clone(),
            token_hash: TOKEN_HASH,
            epoch: 1,
            previous_epoch_open: false,
            envelope: envelope(id, to, b"m"),
            now: 1_000,
        };
        store.enqueue(mail(1, &[1, 3])).await.unwrap();
        store.enqueue(mail(2, &[3])).await.unwrap();

        assert!(matches!(
            store.remove_device(removal("bob", 3, 2)).await,
            Err(RemoveDeviceError::UnknownDevice)
        ));
        assert!(matches!(
            store.remove_device(removal("alice", 3, 2)).await,
            Err(RemoveDeviceError::StaleSequence { expected: 3 })
        ));
        let before = store.log_entries(0, 100).await.unwrap().len();
        store.remove_device(removal("alice", 3, 3)).await.unwrap();
        assert_eq!(store.log_entries(0, 100).await.unwrap().len(), before + 1);
        assert!(matches!(
            store.remove_device(removal("alice", 3, 4)).await,
            Err(RemoveDeviceError::UnknownDevice)
        ));

        let record = store.device("alice", device_id(3)).await.unwrap().unwrap();
        assert!(
            record.removed,
            "a removed device is still found, marked removed"
        );
        assert!(
            store
                .fetch_mailbox(device_id(3), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let status = store.key_package_status(device_id(3)).await.unwrap();
        assert_eq!((status.remaining, status.has_last_resort), (0, false));
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (stats.devices, stats.mailbox_entries, stats.payloads),
            (2, 1, 1),
            "only Alice's first device's mail and its payload are left"
        );
        // Not a recipient any more (skipped, nothing stored), and its id
        // stays taken.
        store.enqueue(mail(3, &[3])).await.unwrap();
        let after = store.stats().await.unwrap();
        assert_eq!((after.mailbox_entries, after.payloads), (1, 1));
        assert!(matches!(
            store.add_device(new_device("alice", 3, 4)).await,
            Err(AddDeviceError::DeviceIdTaken(_))
        ));
    }

    pub async fn removed_device_is_not_claimable<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.add_device(new_device("alice", 3, 2)).await.unwrap();
        for d in [1, 3] {
            store
                .upload_key_packages(device_id(d), vec![vec![d]; 3], Some(vec![d, d]))
                .await
                .unwrap();
        }
        let both = store
            .claim_key_packages("alice", vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(both.devices.len(), 2);
        let only = store
            .claim_key_packages("alice", vec![device_id(3)])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            only.devices.iter().map(|c| c.device_id).collect::<Vec<_>>(),
            [device_id(3)]
        );
        store.remove_device(removal("alice", 3, 3)).await.unwrap();
        let left = store
            .claim_key_packages("alice", vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            left.devices.iter().map(|c| c.device_id).collect::<Vec<_>>(),
            [device_id(1)]
        );
    }

    /// A removal with an identity rotation: both leaves, in order, the new
    /// identity key and the renewed certificates, all at once; a stale
    /// sequence changes nothing.
    pub async fn a_rotation_replaces_the_identity_with_the_removal<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        store.add_device(new_device("alice", 3, 2)).await.unwrap();
        for d in [1, 3] {
            store
                .upload_key_packages(device_id(d), vec![vec![d]; 3], Some(vec![d, d]))
                .await
                .unwrap();
        }
        let renewed = SignedDevice {
            certificate: vec![7; 5],
            identity_signature: vec![7; 64],
        };
        let rotating = |seq: u64| DeviceRemoval {
            rotation: Some(IdentityRotation {
                log_entry: vec![3, 4],
                identity_key: [9; 32],
                devices: vec![(device_id(1), renewed.clone())],
            }),
            ..removal("alice", 3, seq)
        };
        assert!(matches!(
            store.remove_device(rotating(2)).await,
            Err(RemoveDeviceError::StaleSequence { expected: 3 })
        ));
        assert_eq!(store.account_log("alice").await.unwrap().len(), 3);
        store.remove_device(rotating(3)).await.unwrap();
        let log = store.account_log("alice").await.unwrap();
        assert_eq!(
            log.iter().map(|r| r.entry.clone()).collect::<Vec<_>>()[3..],
            [vec![3, 3], vec![3, 4]]
        );
        let bundle = store
            .claim_key_packages("alice", vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bundle.identity_key, [9; 32]);
        assert_eq!(bundle.devices.len(), 1);
        assert_eq!(bundle.devices[0].device, renewed);
    }

    /// Claims beyond an account's rate get only last-resort KeyPackages
    /// and take nothing, so a flood neither drains a pool nor finds nothing
    /// to hand out.
    pub async fn last_resort_claims_take_nothing<S: Store>(store: S) {
        store.register(account("alice", 1)).await.unwrap();
        for d in [3, 4, 5] {
            let seq = u64::from(d) - 1;
            store.add_device(new_device("alice", d, seq)).await.unwrap();
        }
        store
            .upload_key_packages(device_id(1), vec![vec![1]; 2], Some(b"last-1".to_vec()))
            .await
            .unwrap();
        // Device 3 has no last-resort KeyPackage; device 5 is removed.
        store
            .upload_key_packages(device_id(3), vec![vec![3]], None)
            .await
            .unwrap();
        store
            .upload_key_packages(device_id(4), vec![], Some(b"last-4".to_vec()))
            .await
            .unwrap();
        store
            .upload_key_packages(device_id(5), vec![], Some(b"last-5".to_vec()))
            .await
            .unwrap();
        store.remove_device(removal("alice", 5, 5)).await.unwrap();

        for _ in 0..3 {
            let bundle = store
                .last_resort_key_packages("alice", vec![])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(bundle.identity_key, [1; 32]);
            let got: Vec<_> = bundle
                .devices
                .iter()
                .map(|c| {
                    (
                        c.device_id,
                        c.key_package.clone(),
                        c.last_resort,
                        c.remaining,
                        c.device.certificate.clone(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    (device_id(1), b"last-1".to_vec(), true, 2, vec![1; 5]),
                    (device_id(4), b"last-4".to_vec(), true, 0, vec![4; 5]),
                ]
            );
        }
        let only = store
            .last_resort_key_packages("alice", vec![device_id(4), device_id(3)])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            only.devices.iter().map(|c| c.device_id).collect::<Vec<_>>(),
            [device_id(4)]
        );
        assert!(
            store
                .last_resort_key_packages("nobody", vec![])
                .await
                .unwrap()
                .is_none()
        );
        for (d, remaining, last_resort) in [(1, 2, true), (3, 1, false), (4, 0, true)] {
            let status = store.key_package_status(device_id(d)).await.unwrap();
            assert_eq!(
                (status.remaining, status.has_last_resort),
                (remaining, last_resort),
                "device {d} lost nothing"
            );
        }
    }

    pub async fn log_key_is_stored_once<S: Store>(store: S) {
        let first = store
            .log_key_secret(zeroize::Zeroizing::new([1; 32]))
            .await
            .unwrap();
        assert_eq!(*first, [1; 32]);
        let second = store
            .log_key_secret(zeroize::Zeroizing::new([2; 32]))
            .await
            .unwrap();
        assert_eq!(*second, [1; 32]);
    }

    /// Web Push: the VAPID key is stored once; an endpoint is set, read,
    /// replaced and cleared per device, only for active devices; a stale
    /// clear (404/410 for an older endpoint) keeps a newer one; removing
    /// the device clears it.
    pub async fn push_endpoints_are_per_device_and_cleared<S: Store>(store: S) {
        let first = store
            .push_key_secret(zeroize::Zeroizing::new([1; 32]))
            .await
            .unwrap();
        let second = store
            .push_key_secret(zeroize::Zeroizing::new([2; 32]))
            .await
            .unwrap();
        assert_eq!((*first, *second), ([1; 32], [1; 32]));
        store.register(account("alice", 1)).await.unwrap();
        store.add_device(new_device("alice", 3, 2)).await.unwrap();
        let both = vec![device_id(1), device_id(3), device_id(9)];
        assert!(
            store.push_endpoints(both.clone()).await.unwrap().is_empty(),
            "off by default"
        );
        assert!(
            store
                .set_push_endpoint(device_id(1), Some("https://a.example/1".into()))
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_push_endpoint(device_id(9), Some("https://a.example/9".into()))
                .await
                .unwrap(),
            "no such device"
        );
        assert_eq!(
            store.push_endpoints(both.clone()).await.unwrap(),
            [(device_id(1), "https://a.example/1".to_owned())]
        );
        store
            .set_push_endpoint(device_id(3), Some("https://a.example/3".into()))
            .await
            .unwrap();
        store
            .set_push_endpoint(device_id(1), Some("https://a.example/1b".into()))
            .await
            .unwrap();
        // A stale clear keeps the newer endpoint.
        store
            .clear_push_endpoint(device_id(1), "https://a.example/1".into())
            .await
            .unwrap();
        let mut found = store.push_endpoints(both.clone()).await.unwrap();
        found.sort();
        assert_eq!(
            found,
            [
                (device_id(1), "https://a.example/1b".to_owned()),
                (device_id(3), "https://a.example/3".to_owned())
            ]
        );
        store
            .clear_push_endpoint(device_id(1), "https://a.example/1b".into())
            .await
            .unwrap();
        store.remove_device(removal("alice", 3, 3)).await.unwrap();
        assert!(store.push_endpoints(both).await.unwrap().is_empty());
        assert!(
            !store
                .set_push_endpoint(device_id(3), Some("https://a.example/3".into()))
                .await
                .unwrap(),
            "a removed device gets no endpoint"
        );
        assert!(store.set_push_endpoint(device_id(1), None).await.unwrap());
    }

    fn countersignature(auditor: u8, epoch: u64, signed_at_ms: u64) -> CountersignatureRecord {
        CountersignatureRecord {
            auditor_key: vec![auditor; 32],
            epoch,
            signed_at_ms,
            countersignature: vec![auditor, 0xc5, epoch as u8, signed_at_ms as u8],
        }
    }

    pub async fn countersignatures_keep_the_newest_per_auditor<S: Store>(store: S) {
        assert_eq!(store.countersignature(&[1; 32], 100).await.unwrap(), None);
        for size in 1..=5 {
            store
                .add_countersignature(countersignature(1, size, size * 10), 3, 0)
                .await
                .unwrap();
        }
        store
            .add_countersignature(countersignature(2, 2, 7), 3, 0)
            .await
            .unwrap();
        // The newest of at most the size asked, per auditor.
        let newest = store.countersignature(&[1; 32], 100).await.unwrap();
        assert_eq!(newest, Some(countersignature(1, 5, 50)));
        let at_4 = store.countersignature(&[1; 32], 4).await.unwrap();
        assert_eq!(at_4, Some(countersignature(1, 4, 40)));
        assert_eq!(
            store.countersignature(&[2; 32], 100).await.unwrap(),
            Some(countersignature(2, 2, 7))
        );
        assert_eq!(store.countersignature(&[2; 32], 1).await.unwrap(), None);
        // Only the 3 newest of auditor 1 are kept.
        assert_eq!(store.countersignature(&[1; 32], 2).await.unwrap(), None);
        // The same size signed again later replaces it; earlier does not.
        store
            .add_countersignature(countersignature(1, 5, 99), 3, 0)
            .await
            .unwrap();
        store
            .add_countersignature(countersignature(1, 5, 60), 3, 0)
            .await
            .unwrap();
        assert_eq!(
            store.countersignature(&[1; 32], 5).await.unwrap(),
            Some(countersignature(1, 5, 99))
        );
        // Everything signed before the cutoff goes, whoever signed it.
        store
            .add_countersignature(countersignature(3, 1, 200), 3, 60)
            .await
            .unwrap();
        assert_eq!(store.countersignature(&[2; 32], 100).await.unwrap(), None);
        assert_eq!(
            store.countersignature(&[1; 32], 100).await.unwrap(),
            Some(countersignature(1, 5, 99))
        );
        assert_eq!(store.countersignature(&[1; 32], 4).await.unwrap(), None);
    }
}

#[path = "store_conformance/operator.rs"]
mod operator;

/// Runs every conformance case against a backend. `$make` is an async
/// expression yielding `Some((store, guard))`, or `None` when the backend is
/// not available here (it says so); the guard lives as long as the test.
macro_rules! store_conformance_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            store_conformance_tests!(@cases $make;
                register_and_look_up,
                key_packages_are_claimed_once_then_last_resort,
                concurrent_claims_never_hand_out_a_key_package_twice,
                commits_are_sequenced_one_per_epoch,
                enqueue_is_idempotent_and_stores_the_payload_once,
                large_groups_are_sent_in_parts,
                mailbox_is_fetched_in_order_in_windows,
                full_mailboxes_skip_only_their_device,
                missed_notices_are_bounded_per_device,
                ack_deletes_entries_and_then_the_payload,
                concurrent_acks_are_each_counted,
                expiry_deletes_old_entries_and_orphaned_payloads,
                disappearing_messages_are_deleted_at_expiry,
                check_send_checks_and_stores_nothing,
                dead_groups_expire_with_the_retention_period,
                invite_links_admit_until_closed,
            );
            store_conformance_tests!(@log_cases $make;
                log_append_is_atomic_with_register,
                account_log_is_in_order_and_entries_page,
                web_release_is_appended_once_per_release,
                devices_are_added_and_removed,
                removed_device_is_not_claimable,
                a_rotation_replaces_the_identity_with_the_removal,
                last_resort_claims_take_nothing,
                log_key_is_stored_once,
                countersignatures_keep_the_newest_per_auditor,
                push_endpoints_are_per_device_and_cleared,
            );
            store_conformance_tests!(@operator_cases $make;
                export_is_recorded_only_when_delivered,
                report_entries_read_back_unchanged,
                legal_key_is_stored_once_apart_from_the_log_key,
                the_latest_canary_is_the_last_published,
                invites_are_added_atomically_and_used_once,
                auditor_reads_what_is_stored,
                queued_bytes_count_each_payload_once,
                disabling_an_account_is_recorded_with_it,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $make.await else { return };
                tokio::time::timeout(std::time::Duration::from_secs(20), conformance::$case(store))
                    .await
                    .expect("conformance case timed out");
            }
        )*
    };
    (@operator_cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $make.await else { return };
                tokio::time::timeout(std::time::Duration::from_secs(20), operator::$case(store))
                    .await
                    .expect("conformance case timed out");
            }
        )*
    };
    (@log_cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = $make.await else { return };
                tokio::time::timeout(std::time::Duration::from_secs(20), log_cases::$case(store))
                    .await
                    .expect("conformance case timed out");
            }
        )*
    };
}

async fn sqlite_store() -> Option<(SqliteStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    Some((store, dir))
}

store_conformance_tests!(sqlite, sqlite_store());

/// A store in a fresh schema of the server `SOTTO_TEST_POSTGRES` names;
/// `None` (the test says it is skipped) without the variable.
async fn postgres_store() -> Option<(PostgresStore, TestDatabase)> {
    let db = TestDatabase::create("store_conformance").await?;
    let store = PostgresStore::open(db.url()).await.unwrap();
    Some((store, db))
}

store_conformance_tests!(postgres, postgres_store());

/// SQLite only: the acknowledgement job it shares between connections is
/// what this checks, and PostgreSQL fills the 20,000-message backlog in
/// about as long as the timeout.
#[tokio::test]
async fn sqlite_a_drained_backlog_acknowledged_at_once_is_deleted() {
    let Some((store, _dir)) = sqlite_store().await else {
        return;
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        conformance::a_drained_backlog_acknowledged_at_once_is_deleted(store),
    )
    .await
    .expect("the drain's acknowledgements timed out");
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store
        .register(conformance::account("alice", 1))
        .await
        .unwrap();
    store.close().await;
    assert!(
        store
            .register(conformance::account("bob", 2))
            .await
            .is_err(),
        "closed stores take no writes"
    );
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(
        store
            .device("alice", conformance::device_id(1))
            .await
            .unwrap()
            .is_some()
    );
}

/// Two nodes (two stores on one database) race commits for every epoch of
/// one group: the database accepts exactly one per epoch, and the loser is
/// told the epoch moved on, never both accepted.
#[tokio::test]
async fn postgres_nodes_racing_commits_get_one_per_epoch() {
    let Some(db) = TestDatabase::create("postgres_nodes_racing_commits_get_one_per_epoch").await
    else {
        return;
    };
    let a = PostgresStore::open(db.url()).await.unwrap();
    let b = PostgresStore::open(db.url()).await.unwrap();
    let g = conformance::with_group(&a, "raced").await;
    for epoch in 1..=20u64 {
        let id = u8::try_from(epoch).unwrap();
        let mut first = conformance::commit(&g, epoch, id, &[]);
        first.commit.payload = b"from a".to_vec();
        let mut second = conformance::commit(&g, epoch, id + 100, &[]);
        second.commit.payload = b"from b".to_vec();
        let (x, y) = tokio::join!(a.submit_commit(first), b.submit_commit(second));
        let won = [&x, &y]
            .iter()
            .filter(|r| matches!(r, Ok(accepted) if accepted.outcome == Enqueued::Queued))
            .count();
        assert_eq!(won, 1, "epoch {epoch}: {x:?} / {y:?}");
        for r in [&x, &y] {
            assert!(
                matches!(r, Ok(_) | Err(CommitError::StaleEpoch { .. })),
                "epoch {epoch}: {r:?}"
            );
        }
        assert_eq!(a.group_epoch(&g).await.unwrap(), Some(epoch + 1));
        assert_eq!(b.group_epoch(&g).await.unwrap(), Some(epoch + 1));
    }
    a.close().await;
    b.close().await;
}

/// Two nodes start at once with one web bundle: one leaf, not two.
#[tokio::test]
async fn postgres_nodes_starting_together_log_one_web_release() {
    use sotto_server::store::LogStore as _;
    let Some(db) =
        TestDatabase::create("postgres_nodes_starting_together_log_one_web_release").await
    else {
        return;
    };
    let a = PostgresStore::open(db.url()).await.unwrap();
    let b = PostgresStore::open(db.url()).await.unwrap();
    for round in 0..10u8 {
        let (x, y) = tokio::join!(
            a.append_web_release(vec![round]),
            b.append_web_release(vec![round])
        );
        assert_eq!(
            u8::from(x.unwrap()) + u8::from(y.unwrap()),
            1,
            "round {round}"
        );
    }
    assert_eq!(a.log_entries(0, 100).await.unwrap().len(), 10);
    a.close().await;
    b.close().await;
}

/// Backends of this database waiting for a lock (the tests of this binary
/// share it, in schemas of their own; only this one holds locks long).
async fn lock_waiters(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits (up to 5 s) until at least `n` backends wait for a lock.
async fn until_waiting(admin: &tokio_postgres::Client, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lock_waiters(admin).await < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Node A's batch holds a send (which takes the `mailbox_seq` row) and then
/// a commit for group G; node B's commit for G's same epoch has taken G's
/// row and wants `mailbox_seq` next. Two outside transactions hold each
/// side at the right point, so the interleaving is forced, not hoped for.
/// Without one lock order across nodes this is a deadlock that PostgreSQL
/// breaks after a second by failing one of them (SQLSTATE 40P01, a server
/// error for its client); with it, the send is queued, one commit wins and
/// the other is told the epoch moved on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_racing_a_send_and_a_commit_do_not_deadlock() {
    use conformance::{account, commit, to, with_group};
    let test = "postgres_nodes_racing_a_send_and_a_commit_do_not_deadlock";
    let Some(db) = TestDatabase::create(test).await else {
        return;
    };
    let a = std::sync::Arc::new(PostgresStore::open(db.url()).await.unwrap());
    let b = std::sync::Arc::new(PostgresStore::open(db.url()).await.unwrap());
    a.register(account("alice", 1)).await.unwrap();
    a.register(account("bob", 2)).await.unwrap();
    let chat = with_group(&*a, "chat").await;
    let raced = with_group(&*a, "raced").await;
    let parked = with_group(&*a, "parked").await;
    let admin = db.client().await;
    let holds_parked = db.client().await;
    let holds_b_commit = db.client().await;

    // Holds the row of a third group: A's writer blocks there on a first
    // batch, so the send and the commit queued meanwhile form its next.
    holds_parked
        .batch_execute(
            "BEGIN; UPDATE mls_groups SET active_day = active_day WHERE group_id = 'parked'",
        )
        .await
        .unwrap();
    // Holds the id of B's commit: B stops after taking the raced group's
    // row, before it takes `mailbox_seq`.
    let b_commit = commit(&raced, 1, 61, &[1, 2]);
    holds_b_commit.execute("BEGIN", &[]).await.unwrap();
    holds_b_commit
        .execute(
            "INSERT INTO messages (message_id, payload) VALUES ($1, 'x')",
            &[&b_commit.commit.message_id.as_bytes().as_slice()],
        )
        .await
        .unwrap();

    let parked_commit = tokio::spawn({
        let a = std::sync::Arc::clone(&a);
        async move { a.submit_commit(commit(&parked, 1, 60, &[])).await }
    });
    until_waiting(&admin, 1).await;
    let send = tokio::spawn({
        let a = std::sync::Arc::clone(&a);
        async move { a.enqueue(to(&chat, 1, 62, &[1, 2])).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let a_commit = tokio::spawn({
        let a = std::sync::Arc::clone(&a);
        let raced = raced.clone();
        async move { a.submit_commit(commit(&raced, 1, 63, &[1, 2])).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let b_commit = tokio::spawn({
        let b = std::sync::Arc::clone(&b);
        async move { b.submit_commit(b_commit).await }
    });
    until_waiting(&admin, 2).await;

    // A's writer moves on to the send and its commit.
    holds_parked.batch_execute("COMMIT").await.unwrap();
    parked_commit.await.unwrap().unwrap();
    until_waiting(&admin, 2).await;
    // B moves on to `mailbox_seq`.
    holds_b_commit.batch_execute("ROLLBACK").await.unwrap();

    let outcomes = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        (
            send.await.unwrap(),
            a_commit.await.unwrap(),
            b_commit.await.unwrap(),
        )
    })
    .await
    .expect("the send and the commits finish");
    let (send, a_commit, b_commit) = outcomes;
    assert!(send.is_ok(), "the send failed: {send:?}");
    let won = [&a_commit, &b_commit]
        .iter()
        .filter(|r| matches!(r, Ok(accepted) if accepted.outcome == Enqueued::Queued))
        .count();
    assert_eq!(won, 1, "{a_commit:?} / {b_commit:?}");
    for r in [&a_commit, &b_commit] {
        assert!(
            matches!(r, Ok(_) | Err(CommitError::StaleEpoch { .. })),
            "a commit failed otherwise than by losing the race: {r:?}"
        );
    }
    assert_eq!(a.group_epoch(&raced).await.unwrap(), Some(2));
    a.close().await;
    b.close().await;
}
