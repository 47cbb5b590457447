//! The server's side of the key directory (`sotto_directory`, an AKD): it
//! follows the transparency log and publishes each changed account's new
//! state, and answers lookups and audits against signed epochs.
//!
//! The log stays the source of truth. The directory follows the committed
//! leaves as [`crate::transparency_log`] does: a cursor (in memory) over
//! the log; every account named by a leaf past it gets its state replayed
//! from its whole account log and published. Changes are coalesced: the
//! background task ([`run`]) publishes what is pending every second, and
//! every lookup first publishes what is pending, so a lookup is never older
//! than the account log a client read just before it. akd skips a state
//! equal to the account's latest version, so after a restart the cursor
//! starts at 0 and the first catch-up republishes nothing that is already
//! there (and a crash between a log commit and its publish loses nothing).
//!
//! A directory with no epoch while the log has accounts (a server from
//! before the directory) gets every account's current state in one epoch at
//! start: the explicit, logged transition.
//!
//! akd makes no epoch without a change, so freshness comes from the
//! signature: the latest epoch is signed again, with a new time, whenever
//! its signature is older than the directory epoch interval.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sotto_directory::{
    AccountState, DirectoryError, KeyDirectory, LookupAnswer, Username, VrfSecret,
};
use sotto_proto::v1;
use sotto_transparency::LogKey;
use tokio::sync::{Mutex, watch};

use crate::store::{LogStore, StoreError};
use crate::transparency_log::{decode_records, now_ms};

/// The directory's file in the data directory (tables `akd_*`).
pub const DIRECTORY_FILE_NAME: &str = "directory.db";

/// Log leaves read per query while catching up.
const CATCH_UP_BATCH: usize = 1000;

/// How often pending changes are published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The directory, its signing key and where it stands in the log.
pub(crate) struct ServerDirectory {
    key: LogKey,
    vrf_public_key: [u8; 32],
    interval_ms: u64,
    state: Mutex<Following>,
}

impl std::fmt::Debug for ServerDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerDirectory")
            .field("vrf_public_key", &hex::encode(self.vrf_public_key))
            .finish_non_exhaustive()
    }
}

struct Following {
    directory: KeyDirectory,
    /// Log leaves below this index are published.
    cursor: u64,
    /// The latest epoch, signed.
    head: v1::SignedEpoch,
    /// The last audit proof built, served in parts
    /// ([`sotto_proto::AUDIT_PROOF_PART_BYTES`]) without building it again
    /// for each part. Published epochs never change, so it stays valid.
    last_audit: Option<Arc<sotto_directory::AuditAnswer>>,
}

fn failed(e: DirectoryError) -> StoreError {
    StoreError::Backend(format!("key directory: {e}"))
}

impl ServerDirectory {
    /// Opens the directory in `data_dir` (creating it and its VRF key on
    /// first start), and publishes whatever the log holds that it does not.
    pub async fn open<S: LogStore>(
        store: &S,
        data_dir: &Path,
        interval: Duration,
    ) -> Result<Self, StoreError> {
        let log_secret = store.log_key_secret(LogKey::generate().secret()).await?;
        let key = LogKey::from_secret(log_secret.as_slice())
            .map_err(|e| StoreError::Backend(format!("the stored log key is unusable: {e}")))?;
        let fresh = VrfSecret::generate(&mut rand::rngs::OsRng);
        let vrf_secret = store
            .directory_vrf_secret(zeroize::Zeroizing::new(*fresh.expose_secret()))
            .await?;
        let directory = KeyDirectory::open(
            &data_dir.join(DIRECTORY_FILE_NAME),
            VrfSecret::from_bytes(*vrf_secret),
        )
        .await
        .map_err(failed)?;
        let vrf_public_key = directory.vrf_public_key();
        let latest = directory.latest().await.map_err(failed)?;
        let head = key.sign_epoch(&vrf_public_key, latest.epoch, &latest.root_hash, now_ms());
        let this = Self {
            key,
            vrf_public_key,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            state: Mutex::new(Following {
                directory,
                cursor: 0,
                head,
                last_audit: None,
            }),
        };
        let published = this.catch_up(store).await?;
        if latest.epoch == 0 && published > 0 {
            tracing::info!(
                accounts = published,
                "key directory created: every existing account's current state published in \
                 epoch 1 (transition from the log alone; clients verify lookups from now on)"
            );
        }
        let head = this.state.lock().await.head.epoch;
        tracing::info!(epoch = head, "key directory loaded");
        Ok(this)
    }

    /// Publishes every account the log changed since the last call, in one
    /// epoch. Returns how many accounts got a new version.
    pub async fn catch_up<S: LogStore>(&self, store: &S) -> Result<usize, StoreError> {
        let mut following = self.state.lock().await;
        self.catch_up_locked(store, &mut following).await
    }

    async fn catch_up_locked<S: LogStore>(
        &self,
        store: &S,
        following: &mut Following,
    ) -> Result<usize, StoreError> {
        let mut changed = std::collections::BTreeSet::new();
        let mut cursor = following.cursor;
        loop {
            let batch = store.log_entries(cursor, CATCH_UP_BATCH).await?;
            for record in &batch {
                cursor = record.index.saturating_add(1);
                changed.insert(record.username.clone());
            }
            if batch.len() < CATCH_UP_BATCH {
                break;
            }
        }
        let mut updates = Vec::with_capacity(changed.len());
        for name in changed {
            let records = store.account_log(&name).await?;
            let entries = decode_records(&records)?;
            let (Some(username), Ok(replayed)) = (
                Username::parse(&name),
                sotto_transparency::AccountState::replay(&name, &entries),
            ) else {
                // The store checked every entry before committing it; a log
                // that does not replay is a bug or damage, not a request.
                tracing::error!("an account's log does not replay; left out of the key directory");
                continue;
            };
            updates.push((username, AccountState::of_log(&replayed)));
        }
        let count = updates.len();
        if count > 0 {
            let root = following.directory.publish(updates).await.map_err(failed)?;
            if root.epoch != following.head.epoch {
                following.head = self.key.sign_epoch(
                    &self.vrf_public_key,
                    root.epoch,
                    &root.root_hash,
                    now_ms(),
                );
                tracing::debug!(epoch = root.epoch, accounts = count, "key directory epoch");
            }
        }
        following.cursor = cursor;
        Ok(count)
    }

    /// Signs the latest epoch again if its signature is older than the interval.
    fn refresh(&self, following: &mut Following) -> Result<(), StoreError> {
        let now = now_ms();
        if now.saturating_sub(following.head.timestamp_ms) >= self.interval_ms {
            let root = sotto_directory::RootHash::try_from(following.head.root_hash.as_slice())
                .map_err(|_| StoreError::Backend("signed epoch root is not 32 bytes".into()))?;
            following.head =
                self.key
                    .sign_epoch(&self.vrf_public_key, following.head.epoch, &root, now);
        }
        Ok(())
    }

    /// The latest published epoch's number (for metrics: nothing is
    /// published first).
    pub async fn latest_epoch(&self) -> u64 {
        self.state.lock().await.head.epoch
    }

    /// The stored root of `epoch`, if it was published (to check an
    /// auditor's countersignature).
    pub async fn epoch_root(
        &self,
        epoch: u64,
    ) -> Result<Option<sotto_directory::RootHash>, StoreError> {
        let following = self.state.lock().await;
        following.directory.epoch_root(epoch).map_err(failed)
    }

    /// The latest epoch, signed (pending changes published first).
    pub async fn signed_epoch<S: LogStore>(
        &self,
        store: &S,
    ) -> Result<v1::SignedEpoch, StoreError> {
        let mut following = self.state.lock().await;
        self.catch_up_locked(store, &mut following).await?;
        self.refresh(&mut following)?;
        Ok(following.head.clone())
    }

    /// The latest version of `username`'s account with its proof, and the
    /// signed epoch it is proven at. `None`: not in the directory.
    pub async fn lookup<S: LogStore>(
        &self,
        store: &S,
        username: &Username,
    ) -> Result<Option<v1::DirectoryLookup>, StoreError> {
        let mut following = self.state.lock().await;
        self.catch_up_locked(store, &mut following).await?;
        self.refresh(&mut following)?;
        let LookupAnswer {
            epoch,
            root_hash,
            proof,
        } = match following.directory.lookup(username).await {
            Ok(answer) => answer,
            Err(DirectoryError::UnknownAccount(_)) => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        if epoch != following.head.epoch || root_hash.as_slice() != following.head.root_hash {
            return Err(StoreError::Backend(format!(
                "key directory: a lookup answered at epoch {epoch}, the signed epoch is {}",
                following.head.epoch
            )));
        }
        Ok(Some(v1::DirectoryLookup {
            epoch: Some(following.head.clone()),
            proof,
        }))
    }

    /// Proof that epochs `from ..= to` only appended, from stored nodes:
    /// the part of it from byte `offset`, and its whole length (an epoch of
    /// many changes has a proof of many frames). `Ok(Err(_))`: the request
    /// is refused (the caller's mistake).
    pub async fn audit(
        &self,
        from: u64,
        to: u64,
        offset: u64,
    ) -> Result<Result<v1::DirectoryAudit, String>, StoreError> {
        if to.saturating_sub(from) > sotto_proto::MAX_AUDIT_EPOCHS_PER_REQUEST {
            return Ok(Err(format!(
                "at most {} epochs per audit request",
                sotto_proto::MAX_AUDIT_EPOCHS_PER_REQUEST
            )));
        }
        let mut following = self.state.lock().await;
        let answer = match &following.last_audit {
            Some(answer) if answer.from_epoch == from && answer.to_epoch == to => {
                Arc::clone(answer)
            }
            _ => match following.directory.audit_proof(from, to).await {
                Ok(answer) if answer.proof.len() > sotto_proto::MAX_AUDIT_PROOF_BYTES => {
                    return Ok(Err(format!(
                        "the audit proof of epochs {from}..={to} is {} bytes, more than one \
                         request may build: ask for fewer epochs",
                        answer.proof.len()
                    )));
                }
                Ok(answer) => {
                    let answer = Arc::new(answer);
                    following.last_audit = Some(Arc::clone(&answer));
                    answer
                }
                Err(e @ DirectoryError::BadEpochRange { .. }) => return Ok(Err(e.to_string())),
                Err(e) => return Err(failed(e)),
            },
        };
        drop(following);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start
            .saturating_add(sotto_proto::AUDIT_PROOF_PART_BYTES)
            .min(answer.proof.len());
        let Some(part) = answer.proof.get(start..end) else {
            return Ok(Err(format!(
                "offset {offset} is past the end of the {}-byte audit proof",
                answer.proof.len()
            )));
        };
        Ok(Ok(v1::DirectoryAudit {
            from_epoch: answer.from_epoch,
            roots: answer.roots.iter().map(|r| r.to_vec()).collect(),
            proof: part.to_vec(),
            proof_len: answer.proof.len() as u64,
        }))
    }
}

/// Publishes pending changes every second and keeps the signed epoch
/// fresh, until `stop`.
pub(crate) async fn run<S: LogStore>(
    directory: Arc<ServerDirectory>,
    store: Arc<S>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PUBLISH_EVERY) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let mut following = directory.state.lock().await;
        let done = match directory.catch_up_locked(&*store, &mut following).await {
            Ok(_) => directory.refresh(&mut following),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "cannot publish the key directory's pending changes");
        }
    }
}
