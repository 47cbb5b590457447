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
//! A web-release leaf past the cursor (see [`crate::web_release`]) marks
//! the directory's web label changed: it gets the digest of the latest web
//! release as of the same log size, so replays on every node agree.
//!
//! A directory with no epoch while the log has accounts (a server from
//! before the directory) gets every account's current state in one epoch at
//! start: the explicit, logged transition.
//!
//! akd makes no epoch without a change, so freshness comes from the
//! signature: the latest epoch is signed again, with a new time, whenever
//! its signature is older than the directory epoch interval.
//!
//! **Several nodes on one PostgreSQL database** each keep their own
//! directory file, so they must not each decide their own epochs (two
//! nodes would sign two different roots for one epoch number: a fork every
//! client would refuse). One node at a time is the log writer (it holds an
//! advisory lock, `store::postgres::election`; another node takes over
//! within a second or two when it dies). Only the writer decides what the
//! next publish covers: it publishes the log leaves below the log's
//! current size in its own file, then records the publish (`seq`,
//! `log_end`, the resulting epoch and root) with a conditional insert that
//! only one node can win. Every node, the writer included, replays the
//! recorded publishes in order: each changed account at its state as of
//! `log_end`. akd is deterministic given the shared VRF key and the same
//! publishes, and the replay checks that it reaches the recorded epoch and
//! root, so every node serves the same epochs, signed with the shared log
//! key. A node whose file holds an epoch nobody recorded (a writer that
//! died, or lost the race, between its publish and its record) rebuilds
//! the file from the recorded publishes. A node that is not the writer
//! answers a lookup once the recorded publishes cover the log it read
//! (waiting up to [`WAIT_FOR_WRITER`]), so a client that just read an
//! account's log from any node finds that state in the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sotto_directory::{
    AccountState, DirectoryError, KeyDirectory, LookupAnswer, Username, VrfSecret,
};
use sotto_proto::v1;
use sotto_transparency::LogKey;
use tokio::sync::{Mutex, watch};

use crate::store::{ClusterStore, LogStore, RecordedEpoch, StoreError};
use crate::transparency_log::{decode_records, now_ms};

/// The directory's file in the data directory (tables `akd_*`).
pub const DIRECTORY_FILE_NAME: &str = "directory.db";

/// Log leaves read per query while catching up.
const CATCH_UP_BATCH: usize = 1000;

/// How often pending changes are published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// How often, with several nodes, the writer publishes and the others
/// replay: lookups on the others wait for it.
const SHARED_PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// How long a node that is not the log writer waits for the writer to
/// publish the log it read before answering with what it has.
pub const WAIT_FOR_WRITER: Duration = Duration::from_secs(5);

/// How often a waiting node looks for the writer's publishes.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// The directory, its signing key and where it stands in the log.
pub(crate) struct ServerDirectory {
    key: LogKey,
    vrf_public_key: [u8; 32],
    interval_ms: u64,
    /// Other nodes share the log: follow the recorded publishes.
    shared: bool,
    /// Whether this node is the log writer (always, on one node).
    is_writer: watch::Receiver<bool>,
    /// The directory file, and its VRF secret, for rebuilding it.
    path: PathBuf,
    vrf_secret: zeroize::Zeroizing<[u8; 32]>,
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
    /// With several nodes: the `seq` of the next recorded publish.
    next_seq: u64,
    /// With several nodes: a publish in the file whose record failed.
    unrecorded: Option<RecordedEpoch>,
    /// The latest epoch, signed.
    head: v1::SignedEpoch,
    /// The last audit proof built, served in parts
    /// ([`sotto_proto::AUDIT_PROOF_PART_BYTES`]) without building it again
    /// for each part. Published epochs never change, so it stays valid.
    last_audit: Option<Arc<sotto_directory::AuditAnswer>>,
}

/// What the log leaves past the cursor change in the directory.
struct Changes {
    /// The log size they reach.
    end: u64,
    /// Each account they name, at its state as of `end`.
    accounts: Vec<(Username, AccountState)>,
    /// The digest of the latest web release as of `end`, if they include one.
    web_release: Option<[u8; 32]>,
}

fn failed(e: DirectoryError) -> StoreError {
    StoreError::Backend(format!("key directory: {e}"))
}

impl ServerDirectory {
    /// Opens the directory in `data_dir` (creating it and its VRF key on
    /// first start), and publishes whatever the log holds that it does not.
    pub async fn open<S: LogStore + ClusterStore>(
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
        let path = data_dir.join(DIRECTORY_FILE_NAME);
        let directory = KeyDirectory::open(&path, VrfSecret::from_bytes(*vrf_secret))
            .await
            .map_err(failed)?;
        let vrf_public_key = directory.vrf_public_key();
        let latest = directory.latest().await.map_err(failed)?;
        let head = key.sign_epoch(&vrf_public_key, latest.epoch, &latest.root_hash, now_ms());
        let this = Self {
            key,
            vrf_public_key,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            shared: store.is_shared(),
            is_writer: store.elect_log_writer(),
            path,
            vrf_secret,
            state: Mutex::new(Following {
                directory,
                cursor: 0,
                next_seq: 0,
                unrecorded: None,
                head,
                last_audit: None,
            }),
        };
        if this.shared {
            let mut following = this.state.lock().await;
            this.resume(store, &mut following).await?;
            this.follow(store, &mut following).await?;
            tracing::info!(
                epoch = following.head.epoch,
                "key directory loaded (shared log)"
            );
            drop(following);
            return Ok(this);
        }
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
    pub async fn catch_up<S: LogStore + ClusterStore>(
        &self,
        store: &S,
    ) -> Result<usize, StoreError> {
        let mut following = self.state.lock().await;
        self.catch_up_locked(store, &mut following).await
    }

    async fn catch_up_locked<S: LogStore + ClusterStore>(
        &self,
        store: &S,
        following: &mut Following,
    ) -> Result<usize, StoreError> {
        if self.shared {
            return self.catch_up_shared(store, following).await;
        }
        let Changes {
            end: cursor,
            accounts: updates,
            web_release,
        } = self.changes(store, following.cursor, None, true).await?;
        let count = updates.len();
        if count > 0 || web_release.is_some() {
            let root = following
                .directory
                .publish_with_web_release(updates, web_release)
                .await
                .map_err(failed)?;
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
    pub async fn signed_epoch<S: LogStore + ClusterStore>(
        &self,
        store: &S,
    ) -> Result<v1::SignedEpoch, StoreError> {
        let mut following = self.state.lock().await;
        self.caught_up_for_answer(store, &mut following).await?;
        self.refresh(&mut following)?;
        Ok(following.head.clone())
    }

    /// The latest version of `username`'s account with its proof, and the
    /// signed epoch it is proven at. `None`: not in the directory.
    pub async fn lookup<S: LogStore + ClusterStore>(
        &self,
        store: &S,
        username: &Username,
    ) -> Result<Option<v1::DirectoryLookup>, StoreError> {
        let mut following = self.state.lock().await;
        self.caught_up_for_answer(store, &mut following).await?;
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

    /// The latest logged web release, its log-key signature, and the proof
    /// that the directory's web label holds its digest at the signed
    /// epoch (pending changes published first). With no release published,
    /// only the signed epoch.
    pub async fn web_release<S: LogStore + ClusterStore>(
        &self,
        store: &S,
    ) -> Result<v1::WebReleaseProof, StoreError> {
        let mut following = self.state.lock().await;
        self.caught_up_for_answer(store, &mut following).await?;
        self.refresh(&mut following)?;
        let Some(answer) = following
            .directory
            .lookup_web_release()
            .await
            .map_err(failed)?
        else {
            return Ok(v1::WebReleaseProof {
                epoch: Some(following.head.clone()),
                ..Default::default()
            });
        };
        if answer.epoch != following.head.epoch
            || answer.root_hash.as_slice() != following.head.root_hash
        {
            return Err(StoreError::Backend(format!(
                "key directory: a lookup answered at epoch {}, the signed epoch is {}",
                answer.epoch, following.head.epoch
            )));
        }
        // The release the directory published: the latest below its cursor.
        let (release, signature) = crate::web_release::latest_below(store, following.cursor)
            .await?
            .ok_or_else(|| {
                StoreError::Backend(
                    "key directory: a web release is published but the log has none".into(),
                )
            })?;
        Ok(v1::WebReleaseProof {
            release: Some(release),
            signature,
            epoch: Some(following.head.clone()),
            proof: answer.proof,
        })
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

/// With several nodes on one database: following the log writer's
/// recorded publishes, and being the writer.
impl ServerDirectory {
    /// Catches up before answering a request: on a node that is not the
    /// log writer, waits (up to [`WAIT_FOR_WRITER`]) until the recorded
    /// publishes cover the log as it is now, which includes any account
    /// log the client read before asking.
    async fn caught_up_for_answer<S: LogStore + ClusterStore>(
        &self,
        store: &S,
        following: &mut Following,
    ) -> Result<(), StoreError> {
        self.catch_up_locked(store, following).await?;
        if !self.shared {
            return Ok(());
        }
        let target = self
            .changes(store, following.cursor, None, false)
            .await?
            .end;
        let deadline = tokio::time::Instant::now() + WAIT_FOR_WRITER;
        while following.cursor < target {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    published = following.cursor,
                    log = target,
                    "no log writer published the key directory in time; answering from an older epoch"
                );
                break;
            }
            tokio::time::sleep(WAIT_POLL).await;
            self.catch_up_shared(store, following).await?;
        }
        Ok(())
    }

    /// Replays the recorded publishes this node has not, then, on the log
    /// writer, publishes and records the log leaves no publish covers yet.
    async fn catch_up_shared<S: LogStore + ClusterStore>(
        &self,
        store: &S,
        following: &mut Following,
    ) -> Result<usize, StoreError> {
        // A publish whose record failed first: nothing is answered (or
        // replayed on top of it) until it is settled.
        if let Some(unrecorded) = following.unrecorded.take() {
            self.settle(store, following, unrecorded).await?;
        }
        self.follow(store, following).await?;
        if !*self.is_writer.borrow() {
            return Ok(0);
        }
        let changes = self.changes(store, following.cursor, None, true).await?;
        let end = changes.end;
        if end == following.cursor {
            return Ok(0);
        }
        let count = changes.accounts.len();
        let root = self.publish(following, changes).await?;
        let record = RecordedEpoch {
            seq: following.next_seq,
            log_end: end,
            epoch: root.epoch,
            root_hash: root.root_hash.to_vec(),
        };
        self.settle(store, following, record).await?;
        tracing::debug!(
            epoch = root.epoch,
            accounts = count,
            "key directory publish recorded"
        );
        Ok(count)
    }

    /// Records the publish this node's file just made (or made before a
    /// failure): if that `seq` holds another node's publish, the file is
    /// rebuilt from the recorded ones. A database failure leaves it
    /// unsettled (and every answer refused) until the next try: its commit
    /// may have happened.
    async fn settle<S: LogStore + ClusterStore>(
        &self,
        store: &S,
        following: &mut Following,
        record: RecordedEpoch,
    ) -> Result<(), StoreError> {
        let ours = match store.record_epoch(record.clone()).await {
            Ok(true) => true,
            Ok(false) => match store.recorded_epochs(record.seq, 1).await {
                Ok(found) => found.first() == Some(&record),
                Err(e) => {
                    following.unrecorded = Some(record);
                    return Err(e);
                }
            },
            Err(e) => {
                following.unrecorded = Some(record);
                return Err(e);
            }
        };
        if ours {
            following.cursor = record.log_end;
            following.next_seq = record.seq.saturating_add(1);
            return Ok(());
        }
        // This file holds an epoch another node's record contradicts;
        // nothing was answered from it (see above).
        tracing::warn!(
            "another node recorded the key-directory publish this node made: rebuilding its \
             directory file from the recorded publishes"
        );
        self.rebuild(following).await?;
        self.follow(store, following).await
    }

    /// Where this node's file stands among the recorded publishes: after
    /// the last one that left the directory at its latest epoch and root.
    /// A file that matches none (its node died between publishing and
    /// recording, or it is from before the nodes shared a database) is
    /// rebuilt.
    async fn resume<S: ClusterStore>(
        &self,
        store: &S,
        following: &mut Following,
    ) -> Result<(), StoreError> {
        let latest = following.directory.latest().await.map_err(failed)?;
        following.cursor = 0;
        following.next_seq = 0;
        if latest.epoch == 0 {
            return Ok(());
        }
        let mut found = None;
        let mut from = 0;
        loop {
            let batch = store.recorded_epochs(from, CATCH_UP_BATCH).await?;
            for recorded in &batch {
                if recorded.epoch == latest.epoch {
                    found = Some(recorded.clone());
                }
                from = recorded.seq.saturating_add(1);
            }
            if batch.len() < CATCH_UP_BATCH {
                break;
            }
        }
        match found {
            Some(recorded) if recorded.root_hash.as_slice() == latest.root_hash.as_slice() => {
                following.cursor = recorded.log_end;
                following.next_seq = recorded.seq.saturating_add(1);
                Ok(())
            }
            _ => {
                tracing::warn!(
                    epoch = latest.epoch,
                    "this node's key directory file holds an epoch no node recorded: rebuilding \
                     it from the recorded publishes"
                );
                self.rebuild(following).await
            }
        }
    }

    /// Starts this node's directory file afresh (replayed by `follow`).
    async fn rebuild(&self, following: &mut Following) -> Result<(), StoreError> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "cannot remove the key directory file to rebuild it: {e}"
                    )));
                }
            }
        }
        following.directory =
            KeyDirectory::open(&self.path, VrfSecret::from_bytes(*self.vrf_secret))
                .await
                .map_err(failed)?;
        let latest = following.directory.latest().await.map_err(failed)?;
        following.cursor = 0;
        following.next_seq = 0;
        following.unrecorded = None;
        following.head = self.key.sign_epoch(
            &self.vrf_public_key,
            latest.epoch,
            &latest.root_hash,
            now_ms(),
        );
        Ok(())
    }

    /// Replays every recorded publish this node has not.
    async fn follow<S: LogStore + ClusterStore>(
        &self,
        store: &S,
        following: &mut Following,
    ) -> Result<(), StoreError> {
        loop {
            let batch = store
                .recorded_epochs(following.next_seq, CATCH_UP_BATCH)
                .await?;
            for recorded in &batch {
                self.replay(store, following, recorded).await?;
            }
            if batch.len() < CATCH_UP_BATCH {
                return Ok(());
            }
        }
    }

    async fn replay<S: LogStore>(
        &self,
        store: &S,
        following: &mut Following,
        recorded: &RecordedEpoch,
    ) -> Result<(), StoreError> {
        if recorded.seq != following.next_seq || recorded.log_end < following.cursor {
            return Err(StoreError::Backend(format!(
                "recorded key-directory publish {} does not follow publish {} (log size {})",
                recorded.seq,
                following.next_seq.wrapping_sub(1),
                following.cursor
            )));
        }
        let changes = self
            .changes(store, following.cursor, Some(recorded.log_end), true)
            .await?;
        let end = changes.end;
        if end != recorded.log_end {
            return Err(StoreError::Backend(format!(
                "recorded key-directory publish {} covers the log up to {}, the log has {end} leaves",
                recorded.seq, recorded.log_end
            )));
        }
        let root = self.publish(following, changes).await?;
        if root.epoch != recorded.epoch
            || root.root_hash.as_slice() != recorded.root_hash.as_slice()
        {
            // Determinism broke, or the file was changed behind our back:
            // never serve an epoch other nodes do not.
            return Err(StoreError::Backend(format!(
                "replaying recorded key-directory publish {} gave epoch {} with another root \
                 than the recorded epoch {}: this node's directory file diverged (delete it to \
                 rebuild it)",
                recorded.seq, root.epoch, recorded.epoch
            )));
        }
        following.cursor = recorded.log_end;
        following.next_seq = recorded.seq.saturating_add(1);
        Ok(())
    }

    /// The log size after the leaves from `start` (below `end` when given),
    /// and, with `states`, each account they name at its state as of that
    /// size, and the digest of the latest web release as of that size if
    /// they include a web release (derived from the log alone, so every
    /// node replaying a recorded publish derives the same).
    async fn changes<S: LogStore>(
        &self,
        store: &S,
        start: u64,
        end: Option<u64>,
        states: bool,
    ) -> Result<Changes, StoreError> {
        let mut names = std::collections::BTreeSet::new();
        let mut web_changed = false;
        let mut cursor = start;
        loop {
            let batch = store.log_entries(cursor, CATCH_UP_BATCH).await?;
            let mut done = batch.len() < CATCH_UP_BATCH;
            for record in &batch {
                if end.is_some_and(|end| record.index >= end) {
                    done = true;
                    break;
                }
                cursor = record.index.saturating_add(1);
                if record.username == sotto_proto::WEB_RELEASE_USERNAME {
                    web_changed = true;
                } else {
                    names.insert(record.username.clone());
                }
            }
            if done {
                break;
            }
        }
        if !states {
            return Ok(Changes {
                end: cursor,
                accounts: Vec::new(),
                web_release: None,
            });
        }
        let web_release = if web_changed {
            match crate::web_release::latest_below(store, cursor).await {
                Ok(Some((release, _))) => Some(sotto_transparency::web_release_digest(&release)),
                Ok(None) => None,
                Err(StoreError::Backend(e)) => {
                    tracing::error!(error = %e, "a web release in the log does not decode; left out of the key directory");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let mut updates = Vec::with_capacity(names.len());
        for name in names {
            let mut records = store.account_log(&name).await?;
            records.retain(|r| r.index < cursor);
            let entries = decode_records(&records)?;
            let (Some(username), Ok(replayed)) = (
                Username::parse(&name),
                sotto_transparency::AccountState::replay(&name, &entries),
            ) else {
                tracing::error!("an account's log does not replay; left out of the key directory");
                continue;
            };
            updates.push((username, AccountState::of_log(&replayed)));
        }
        Ok(Changes {
            end: cursor,
            accounts: updates,
            web_release,
        })
    }

    /// Publishes `updates` (nothing changes if there are none, or akd
    /// finds every state already the latest) and signs a new epoch.
    async fn publish(
        &self,
        following: &mut Following,
        changes: Changes,
    ) -> Result<sotto_directory::EpochRoot, StoreError> {
        let root = if changes.accounts.is_empty() && changes.web_release.is_none() {
            following.directory.latest().await.map_err(failed)?
        } else {
            following
                .directory
                .publish_with_web_release(changes.accounts, changes.web_release)
                .await
                .map_err(failed)?
        };
        if root.epoch != following.head.epoch {
            following.head =
                self.key
                    .sign_epoch(&self.vrf_public_key, root.epoch, &root.root_hash, now_ms());
        }
        Ok(root)
    }
}

/// Publishes pending changes every second and keeps the signed epoch
/// fresh, until `stop`.
pub(crate) async fn run<S: LogStore + ClusterStore>(
    directory: Arc<ServerDirectory>,
    store: Arc<S>,
    mut stop: watch::Receiver<bool>,
) {
    let every = if directory.shared {
        SHARED_PUBLISH_EVERY
    } else {
        PUBLISH_EVERY
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
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
