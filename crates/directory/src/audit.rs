//! Auditing a stored directory offline (`sotto-server audit`): every epoch's
//! append-only proof, drawn from the stored nodes and checked against the
//! stored roots, one epoch at a time.

use crate::directory::{DirectoryError, EpochRoot};
use crate::storage::sqlite::SqliteDatabase;
use crate::vrf::{VrfKeyStore, VrfSecret};
use crate::{Config, RootHash};
use akd::AzksParallelismConfig;
use akd::storage::StorageManager;
use std::path::Path;

/// Why a stored directory fails its audit.
#[derive(Debug, thiserror::Error)]
pub enum StoredAuditError {
    #[error("the directory cannot be read: {0}")]
    Unreadable(#[from] DirectoryError),
    #[error("the directory has no stored root for epoch {0}")]
    MissingRoot(u64),
    #[error("epoch {from} to {to} of the directory is not an append-only step: {reason}")]
    NotAppendOnly { from: u64, to: u64, reason: String },
}

/// Checks that every epoch of the directory stored at `path` only appended
/// to the one before (akd's audit, as a third-party auditor runs it), and
/// returns the latest epoch and its root. Needs no VRF key: an audit sees
/// labels only as VRF outputs. Cost: each epoch's changes.
pub async fn audit_stored(path: &Path) -> Result<EpochRoot, StoredAuditError> {
    let db = SqliteDatabase::open(path).map_err(|e| DirectoryError::Storage(e.to_string()))?;
    let storage = StorageManager::new_no_cache(db.clone());
    // Audits never evaluate the VRF; the key store is a placeholder.
    let akd = akd::directory::ReadOnlyDirectory::<Config, _, _>::new(
        storage,
        VrfKeyStore(VrfSecret::from_bytes([0; 32])),
        AzksParallelismConfig::disabled(),
    )
    .await
    .map_err(DirectoryError::from)?;
    let latest = akd
        .get_epoch_hash()
        .await
        .map_err(DirectoryError::from)?
        .epoch();
    let root = |epoch: u64| -> Result<RootHash, StoredAuditError> {
        db.epoch_root(epoch)
            .map_err(DirectoryError::from)?
            .ok_or(StoredAuditError::MissingRoot(epoch))
    };
    let mut previous = root(0)?;
    for epoch in 1..=latest {
        let current = root(epoch)?;
        let failed = |reason: String| StoredAuditError::NotAppendOnly {
            from: epoch - 1,
            to: epoch,
            reason,
        };
        let proof = akd
            .audit(epoch - 1, epoch)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if proof.epochs != [epoch - 1] {
            return Err(failed(format!(
                "the proof is for epochs {:?}",
                proof.epochs
            )));
        }
        akd::auditor::audit_verify::<Config>(vec![previous, current], proof)
            .await
            .map_err(|e| failed(e.to_string()))?;
        previous = current;
    }
    Ok(EpochRoot {
        epoch: latest,
        root_hash: previous,
    })
}
