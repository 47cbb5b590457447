//! A message burst driven straight through a real [`SqliteStore`] (no
//! network), for measuring what a burst does to the database file: one
//! recipient device, one group, `n` messages queued concurrently (so the
//! writer batches them as under load), then fetched and acknowledged.
//! Used by `crates/server/tests/space.rs` and the `space` example.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sotto_server::store::{
    AccountStore as _, CommitSubmission, DeviceId, Envelope, GroupId, GroupMessage,
    MailboxStore as _, MessageId, NewAccount, SignedDevice, SqliteStore,
};

/// The recipient device of the burst.
pub const DEVICE: DeviceId = DeviceId::new([1; 16]);
const TOKEN_HASH: [u8; 32] = [7; 32];
/// Sends in flight at once (about one writer batch).
const IN_FLIGHT: usize = 512;

/// Registers the recipient and creates the group; returns the group.
pub async fn prepare(store: &SqliteStore) -> GroupId {
    store
        .register(NewAccount {
            username: "burst".into(),
            identity_key: [1; 32],
            device_id: DEVICE,
            device_key: [2; 32],
            device: SignedDevice {
                certificate: vec![1; 5],
                identity_signature: vec![1; 64],
            },
            today: 20_000,
            log_entries: vec![vec![1, 0], vec![1, 1]],
            invite: None,
        })
        .await
        .expect("register");
    let group = GroupId::from_slice(&[9; 16]).expect("group id");
    store
        .submit_commit(CommitSubmission {
            group_id: group.clone(),
            epoch: 0,
            token_hash: None,
            next_token_hash: TOKEN_HASH,
            // Queued for nobody: the mailbox holds only the messages.
            commit: Envelope {
                recipients: Vec::new(),
                ..envelope(u64::MAX, b"create")
            },
            welcome: None,
            now: 1_000,
            invite_link: None,
        })
        .await
        .expect("create group");
    group
}

fn envelope(n: u64, payload: &[u8]) -> Envelope {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = 0xB5;
    Envelope {
        message_id: MessageId::new(id),
        recipients: vec![DEVICE],
        payload: payload.to_vec(),
        frank: None,
    }
}

/// Queues messages `first..first + n` of `payload_len` random-looking
/// bytes each (ciphertext does not compress); returns how long it took.
pub async fn enqueue(
    store: &SqliteStore,
    group: &GroupId,
    first: u64,
    n: u64,
    payload_len: usize,
) -> Duration {
    let started = Instant::now();
    futures_util::stream::iter(first..first + n)
        .map(|i| {
            let payload = payload(i, payload_len);
            store.enqueue(GroupMessage {
                group_id: group.clone(),
                token_hash: TOKEN_HASH,
                epoch: 1,
                previous_epoch_open: false,
                envelope: envelope(i, &payload),
                now: 1_000,
                expires_at: None,
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|queued| async move {
            queued.expect("enqueue");
        })
        .await;
    started.elapsed()
}

/// The payload of message `i`: bytes that look random (ciphertext does not
/// compress), different for every message.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Fetches and acknowledges everything queued after `after` (a mailbox
/// seq), `page` entries at a time; returns how many and how long it took.
pub async fn drain(store: &SqliteStore, after: u64, page: usize) -> (u64, Duration) {
    let started = Instant::now();
    let mut acked = 0;
    loop {
        let entries = store
            .fetch_mailbox(DEVICE, after, page)
            .await
            .expect("fetch");
        if entries.is_empty() {
            return (acked, started.elapsed());
        }
        acked += store
            .ack(DEVICE, entries.iter().map(|e| e.seq).collect())
            .await
            .expect("ack");
    }
}

/// Bytes of the database file and of its write-ahead log.
pub fn file_sizes(data_dir: &Path) -> (u64, u64) {
    let size = |name: &str| std::fs::metadata(data_dir.join(name)).map_or(0, |m| m.len());
    (size("sotto.db"), size("sotto.db-wal"))
}
