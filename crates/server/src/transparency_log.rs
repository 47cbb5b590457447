//! The server's side of the transparency log: the signing key, the
//! in-memory Merkle tree, and the answers to log requests.
//!
//! The store is the source of truth. Leaves are appended by the store in
//! the same transaction as the change they describe (registration, device
//! added or removed); the in-memory [`MerkleLog`] follows the committed
//! leaves in index order: before every answer it reads any leaves it has
//! not seen yet. So the tree can never differ from what was committed, a
//! request that was cancelled after its commit leaves nothing behind, and
//! another server node on the same database would stay in step too.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use sotto_proto::v1;
use sotto_transparency::{LogKey, MerkleLog};
use tokio::sync::{Mutex, MutexGuard};

use crate::store::{LogRecord, Store, StoreError};

/// Leaves read from the store per query while catching up.
const CATCH_UP_BATCH: usize = 1000;

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the log answers to a request that can be refused.
pub(crate) type Answer<T> = Result<Result<T, String>, StoreError>;

/// The log signing key and the tree, and the franking key the log key
/// vouches for.
#[derive(Debug)]
pub(crate) struct TransparencyLog {
    key: LogKey,
    tree: Mutex<MerkleLog>,
    franking: FrankingKey,
}

/// The server's franking key (`sotto_core::franking`): it signs the frank
/// of every franked application message the server accepts. Its `Debug`
/// shows only the public key.
pub(crate) struct FrankingKey {
    key: ed25519_dalek::SigningKey,
    /// The key and the log key's signature over it, as `Challenge` carries it.
    vouched: v1::FrankingKey,
}

impl std::fmt::Debug for FrankingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrankingKey")
            .field("public", &hex::encode(&self.vouched.key))
            .finish_non_exhaustive()
    }
}

impl FrankingKey {
    /// Loads (or creates, on first start) the franking key.
    pub async fn open<S: Store>(store: &S, log_key: &LogKey) -> Result<Self, StoreError> {
        let fresh = zeroize::Zeroizing::new(
            ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).to_bytes(),
        );
        let secret = store.franking_key_secret(fresh).await?;
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        let public = key.verifying_key().to_bytes();
        let vouched = v1::FrankingKey {
            key: public.to_vec(),
            log_signature: log_key.certify_franking_key(&public).to_vec(),
        };
        Ok(Self { key, vouched })
    }

    /// The frank of `tag`, accepted for `group_id` at `accepted_at_ms`.
    pub fn frank(&self, tag: &[u8; 32], group_id: &[u8], accepted_at_ms: u64) -> [u8; 64] {
        sotto_core::franking::sign_frank(&self.key, tag, group_id, accepted_at_ms)
    }

    /// The public key, vouched for by the log key.
    pub fn vouched(&self) -> &v1::FrankingKey {
        &self.vouched
    }
}

impl TransparencyLog {
    /// Loads (or creates, on first start) the log key and rebuilds the
    /// tree from the stored leaves.
    pub async fn open<S: Store>(store: &S) -> Result<Self, StoreError> {
        let secret = store.log_key_secret(LogKey::generate().secret()).await?;
        let key = LogKey::from_secret(secret.as_slice())
            .map_err(|e| StoreError::Backend(format!("the stored log key is unusable: {e}")))?;
        let franking = FrankingKey::open(store, &key).await?;
        let log = Self {
            key,
            tree: Mutex::new(MerkleLog::new()),
            franking,
        };
        let size = log.caught_up(store).await?.len();
        tracing::info!(size, "transparency log loaded");
        Ok(log)
    }

    /// The franking key.
    pub fn franking(&self) -> &FrankingKey {
        &self.franking
    }

    /// The public key that signs heads (sent in every `Challenge`).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// The log key's certificate for the operator's legal key (served with
    /// the warrant canary).
    pub fn certify_legal_key(&self, legal_key: &[u8; 32]) -> [u8; 64] {
        self.key.certify_legal_key(legal_key)
    }

    /// How many entries the log holds.
    pub async fn size<S: Store>(&self, store: &S) -> Result<u64, StoreError> {
        Ok(self.caught_up(store).await?.len())
    }

    /// The tree, after appending every leaf committed since last time.
    async fn caught_up<S: Store>(
        &self,
        store: &S,
    ) -> Result<MutexGuard<'_, MerkleLog>, StoreError> {
        let mut tree = self.tree.lock().await;
        loop {
            let batch = store.log_entries(tree.len(), CATCH_UP_BATCH).await?;
            for record in &batch {
                if record.index != tree.len() {
                    return Err(StoreError::Backend(format!(
                        "log entry {} follows entry {}: the stored log has a gap",
                        record.index,
                        tree.len().wrapping_sub(1)
                    )));
                }
                tree.push(&record.entry);
            }
            if batch.len() < CATCH_UP_BATCH {
                return Ok(tree);
            }
        }
    }

    fn sign(&self, tree: &MerkleLog) -> v1::SignedTreeHead {
        self.key.sign_head(tree.len(), tree.root(), now_ms())
    }

    /// A freshly signed head of the whole log.
    pub async fn head<S: Store>(&self, store: &S) -> Result<v1::SignedTreeHead, StoreError> {
        let tree = self.caught_up(store).await?;
        Ok(self.sign(&tree))
    }

    /// Every entry of `username` with inclusion proofs against one fresh
    /// head. `None`: the account has no entries.
    pub async fn account_log<S: Store>(
        &self,
        store: &S,
        username: &str,
    ) -> Result<Option<v1::AccountLog>, StoreError> {
        // Only accounts: the web releases' leaves are filed under a name
        // no account can have.
        if !sotto_proto::is_valid_username(username) {
            return Ok(None);
        }
        // Read the account's leaves first: the catch-up that follows sees
        // at least everything they include.
        let records = store.account_log(username).await?;
        if records.is_empty() {
            return Ok(None);
        }
        let tree = self.caught_up(store).await?;
        let head = self.sign(&tree);
        let entries = records
            .into_iter()
            .map(|record| prove(&tree, record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(v1::AccountLog {
            head: Some(head),
            entries,
        }))
    }

    /// A consistency proof between two sizes of the log.
    pub async fn consistency<S: Store>(
        &self,
        store: &S,
        old_size: u64,
        new_size: u64,
    ) -> Answer<v1::ConsistencyProof> {
        let tree = self.caught_up(store).await?;
        if old_size > new_size || new_size > tree.len() {
            return Ok(Err(format!(
                "cannot prove consistency from {old_size} to {new_size} entries: the log has {} \
                 entries and the old size must not exceed the new one",
                tree.len()
            )));
        }
        Ok(tree
            .consistency_path(old_size, new_size)
            .map(|path| v1::ConsistencyProof {
                old_size,
                new_size,
                path,
            })
            .map_err(|e| e.to_string()))
    }
}

fn decode_leaf(index: u64, leaf: &[u8]) -> Result<v1::LogEntry, StoreError> {
    v1::LogEntry::decode(leaf)
        .map_err(|_| StoreError::Backend(format!("stored log entry {index} is not a LogEntry")))
}

/// Decodes stored leaves back into entries.
pub(crate) fn decode_records(records: &[LogRecord]) -> Result<Vec<v1::LogEntry>, StoreError> {
    records
        .iter()
        .map(|r| decode_leaf(r.index, &r.entry))
        .collect()
}

fn prove(tree: &MerkleLog, record: LogRecord) -> Result<v1::ProvenEntry, StoreError> {
    let inclusion_path = tree.inclusion_path(record.index, tree.len()).map_err(|e| {
        StoreError::Backend(format!("cannot prove log entry {}: {e}", record.index))
    })?;
    Ok(v1::ProvenEntry {
        index: record.index,
        entry: Some(decode_leaf(record.index, &record.entry)?),
        inclusion_path,
    })
}
