//! The server's side: publish epochs and answer lookups, histories and audits.

use crate::account::{AccountState, AccountStateError, Username, web_release_label};
use crate::storage::sqlite::SqliteDatabase;
use crate::vrf::{VrfKeyStore, VrfSecret};
use crate::{Config, RootHash};
use akd::errors::{AkdError, StorageError};
use akd::storage::StorageManager;
use akd::{AkdValue, AzksParallelismConfig, HistoryParams};
use protobuf::Message as _;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

type Akd = akd::Directory<Config, SqliteDatabase, VrfKeyStore>;

/// How long akd's read cache keeps a record, and how much it may hold.
const CACHE_ITEM_LIFETIME: Duration = Duration::from_secs(30 * 60);
const CACHE_LIMIT_BYTES: usize = 512 * 1024 * 1024;

/// One published epoch: its number and root hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochRoot {
    pub epoch: u64,
    pub root_hash: RootHash,
}

/// A lookup's answer: the latest version of one account, proven at `epoch`.
#[derive(Clone, Debug)]
pub struct LookupAnswer {
    pub epoch: u64,
    pub root_hash: RootHash,
    /// akd's `LookupProof`, protobuf-encoded (akd's `types.proto`).
    pub proof: Vec<u8>,
}

/// Every version of one account, proven at `epoch`.
#[derive(Clone, Debug)]
pub struct HistoryAnswer {
    pub epoch: u64,
    pub root_hash: RootHash,
    /// akd's `HistoryProof`, protobuf-encoded.
    pub proof: Vec<u8>,
}

/// Proof that epochs `from_epoch ..= to_epoch` only appended to the tree.
#[derive(Clone, Debug)]
pub struct AuditAnswer {
    pub from_epoch: u64,
    pub to_epoch: u64,
    /// The stored root of each epoch `from_epoch ..= to_epoch`, for the
    /// auditor to compare with the roots it got elsewhere (signed heads, gossip).
    pub roots: Vec<RootHash>,
    /// akd's `AppendOnlyProof`, protobuf-encoded.
    pub proof: Vec<u8>,
}

/// Why a directory operation failed, grouped by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    // -- the caller's mistake --
    #[error("no account {0} in the directory; check the username")]
    UnknownAccount(Username),
    #[error("a publish lists {0} more than once; merge its changes into one state")]
    DuplicateAccount(Username),
    #[error("nothing to publish: an epoch needs at least one account change")]
    NothingToPublish,
    #[error("account state for {0} cannot be encoded: {1}")]
    BadState(Username, AccountStateError),
    #[error(
        "epochs {from}..={to} cannot be audited: need 0 <= from < to <= the latest epoch ({latest})"
    )]
    BadEpochRange { from: u64, to: u64, latest: u64 },
    #[error(
        "this directory was created with another VRF key; open it with the key it was created with"
    )]
    WrongVrfKey,
    // -- storage failed --
    #[error("the directory's database failed: {0}")]
    Storage(String),
    // -- our bug, or akd refused --
    #[error("the key directory failed: {0}")]
    Akd(String),
}

impl From<AkdError> for DirectoryError {
    fn from(e: AkdError) -> Self {
        match e {
            AkdError::Storage(s) => Self::Storage(s.to_string()),
            other => Self::Akd(other.to_string()),
        }
    }
}

impl From<StorageError> for DirectoryError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// The key directory on one SQLite file.
///
/// One `KeyDirectory` per file: akd keeps a read cache that another writer
/// to the same file would make stale. Its calls block on SQLite while they
/// run (see [`crate::storage::sqlite`]). Lookups are answered at the latest
/// epoch (akd proves freshness only there); histories and audits of any
/// past epochs come from the stored rows.
pub struct KeyDirectory {
    akd: Akd,
    db: SqliteDatabase,
    vrf_public_key: [u8; 32],
}

impl fmt::Debug for KeyDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDirectory")
            .field("vrf_public_key", &hex::encode(self.vrf_public_key))
            .finish_non_exhaustive()
    }
}

impl KeyDirectory {
    /// Opens the directory stored at `path`, creating an empty one (epoch 0) if
    /// the file has none. `vrf_secret` must be the same on every open.
    pub async fn open(path: &Path, vrf_secret: VrfSecret) -> Result<Self, DirectoryError> {
        let db = SqliteDatabase::open(path).map_err(|e| DirectoryError::Storage(e.to_string()))?;
        Self::on_database(db, vrf_secret).await
    }

    /// Opens the directory on an already opened database.
    pub async fn on_database(
        db: SqliteDatabase,
        vrf_secret: VrfSecret,
    ) -> Result<Self, DirectoryError> {
        let vrf_public_key = vrf_secret
            .public_key()
            .map_err(|e| DirectoryError::Akd(format!("VRF key: {e}")))?;
        if !db.bind_vrf_public_key(&vrf_public_key)? {
            return Err(DirectoryError::WrongVrfKey);
        }
        let storage = StorageManager::new(
            db.clone(),
            Some(CACHE_ITEM_LIFETIME),
            Some(CACHE_LIMIT_BYTES),
            None,
        );
        let akd = Akd::new(
            storage,
            VrfKeyStore(vrf_secret),
            AzksParallelismConfig::disabled(),
        )
        .await?;
        Ok(Self {
            akd,
            db,
            vrf_public_key,
        })
    }

    /// The VRF public key clients and auditors verify with.
    pub fn vrf_public_key(&self) -> [u8; 32] {
        self.vrf_public_key
    }

    /// The storage underneath (for inspection and tests).
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    /// The latest epoch and its root.
    pub async fn latest(&self) -> Result<EpochRoot, DirectoryError> {
        let head = self.akd.get_epoch_hash().await?;
        Ok(EpochRoot {
            epoch: head.epoch(),
            root_hash: head.hash(),
        })
    }

    /// The stored root of `epoch`, if it was published.
    pub fn epoch_root(&self, epoch: u64) -> Result<Option<RootHash>, DirectoryError> {
        Ok(self.db.epoch_root(epoch)?)
    }

    /// Publishes one epoch: each listed account gets a new version with the
    /// given state. Atomic: the epoch's records and root are stored in one
    /// SQLite transaction.
    pub async fn publish(
        &self,
        updates: Vec<(Username, AccountState)>,
    ) -> Result<EpochRoot, DirectoryError> {
        self.publish_with_web_release(updates, None).await
    }

    /// Publishes one epoch as [`Self::publish`] does, and with
    /// `web_release`, a new version of the web-release label holding that
    /// digest (the SHA-256 of the encoded `WebRelease` the log holds last).
    /// akd skips a value equal to the label's latest one.
    pub async fn publish_with_web_release(
        &self,
        updates: Vec<(Username, AccountState)>,
        web_release: Option<[u8; 32]>,
    ) -> Result<EpochRoot, DirectoryError> {
        if updates.is_empty() && web_release.is_none() {
            return Err(DirectoryError::NothingToPublish);
        }
        let mut seen = HashSet::with_capacity(updates.len());
        let mut entries = Vec::with_capacity(updates.len());
        for (username, state) in updates {
            if !seen.insert(username.clone()) {
                return Err(DirectoryError::DuplicateAccount(username));
            }
            let value = state
                .encode()
                .map_err(|e| DirectoryError::BadState(username.clone(), e))?;
            entries.push((username.akd_label(), AkdValue(value)));
        }
        if let Some(digest) = web_release {
            entries.push((web_release_label(), AkdValue(digest.to_vec())));
        }
        let head = self.akd.publish(entries).await?;
        Ok(EpochRoot {
            epoch: head.epoch(),
            root_hash: head.hash(),
        })
    }

    /// The latest version of `username`'s account, with the proof that it is the latest.
    pub async fn lookup(&self, username: &Username) -> Result<LookupAnswer, DirectoryError> {
        let (proof, head) = self
            .akd
            .lookup(username.akd_label())
            .await
            .map_err(|e| not_found_is_unknown(e, username))?;
        let proof = akd::proto::specs::types::LookupProof::from(&proof)
            .write_to_bytes()
            .map_err(|e| DirectoryError::Akd(format!("encoding lookup proof: {e}")))?;
        Ok(LookupAnswer {
            epoch: head.epoch(),
            root_hash: head.hash(),
            proof,
        })
    }

    /// The latest web-release digest, with the proof that it is the latest.
    /// `Ok(None)`: no web release was ever published.
    pub async fn lookup_web_release(&self) -> Result<Option<LookupAnswer>, DirectoryError> {
        let (proof, head) = match self.akd.lookup(web_release_label()).await {
            Ok(found) => found,
            Err(AkdError::Storage(StorageError::NotFound(_))) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let proof = akd::proto::specs::types::LookupProof::from(&proof)
            .write_to_bytes()
            .map_err(|e| DirectoryError::Akd(format!("encoding lookup proof: {e}")))?;
        Ok(Some(LookupAnswer {
            epoch: head.epoch(),
            root_hash: head.hash(),
            proof,
        }))
    }

    /// Every version of `username`'s account, newest first, with proofs.
    pub async fn history(&self, username: &Username) -> Result<HistoryAnswer, DirectoryError> {
        let (proof, head) = self
            .akd
            .key_history(&username.akd_label(), HistoryParams::Complete)
            .await
            .map_err(|e| not_found_is_unknown(e, username))?;
        let proof = akd::proto::specs::types::HistoryProof::from(&proof)
            .write_to_bytes()
            .map_err(|e| DirectoryError::Akd(format!("encoding history proof: {e}")))?;
        Ok(HistoryAnswer {
            epoch: head.epoch(),
            root_hash: head.hash(),
            proof,
        })
    }

    /// Proof that each epoch in `from_epoch + 1 ..= to_epoch` only appended
    /// leaves. Built from the stored tree (each node knows the epoch it last
    /// changed), so its cost follows the audited epochs' changes.
    pub async fn audit_proof(
        &self,
        from_epoch: u64,
        to_epoch: u64,
    ) -> Result<AuditAnswer, DirectoryError> {
        let latest = self.latest().await?.epoch;
        if from_epoch >= to_epoch || to_epoch > latest {
            return Err(DirectoryError::BadEpochRange {
                from: from_epoch,
                to: to_epoch,
                latest,
            });
        }
        let proof = self.akd.audit(from_epoch, to_epoch).await?;
        let proof = akd::proto::specs::types::AppendOnlyProof::from(&proof)
            .write_to_bytes()
            .map_err(|e| DirectoryError::Akd(format!("encoding audit proof: {e}")))?;
        let mut roots = Vec::new();
        for epoch in from_epoch..=to_epoch {
            let root = self.db.epoch_root(epoch)?.ok_or_else(|| {
                DirectoryError::Storage(format!("no stored root for epoch {epoch}"))
            })?;
            roots.push(root);
        }
        Ok(AuditAnswer {
            from_epoch,
            to_epoch,
            roots,
            proof,
        })
    }
}

fn not_found_is_unknown(e: AkdError, username: &Username) -> DirectoryError {
    match e {
        AkdError::Storage(StorageError::NotFound(_)) => {
            DirectoryError::UnknownAccount(username.clone())
        }
        other => other.into(),
    }
}
