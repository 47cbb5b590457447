//! Verification for clients and auditors: pure functions over the bytes a
//! server sent and the roots the verifier already trusts. No I/O.

use crate::account::{AccountState, AccountStateError, Username, web_release_label};
use crate::{Config, RootHash};
use akd::proto::specs::types as pb;
use akd::{HistoryParams, HistoryVerificationParams, VerifyResult};
use protobuf::Message as _;

/// One verified version of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedVersion {
    /// 1 for the account's first state, counting up.
    pub version: u64,
    /// The epoch this version was published in.
    pub epoch: u64,
    pub state: AccountState,
}

/// Why a proof was refused. All but [`VerifyError::NeedTwoRoots`] mean the
/// server (or someone between) sent something false: stop trusting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    // -- the server misbehaved --
    #[error("the {0} proof is not well formed: {1}")]
    Malformed(&'static str, String),
    #[error("the lookup proof does not prove the latest version at this root: {0}")]
    LookupRejected(String),
    #[error("the history proof does not verify at this root: {0}")]
    HistoryRejected(String),
    #[error("the audit proof does not show epochs {from}..={to} only appending: {reason}")]
    AuditRejected { from: u64, to: u64, reason: String },
    #[error("the audit proof covers epochs {got:?}, not the {expected:?} asked for")]
    AuditEpochsMismatch { expected: Vec<u64>, got: Vec<u64> },
    #[error("the proven value is not an account state: {0}")]
    BadValue(AccountStateError),
    #[error("the proven web-release value is not a 32-byte digest")]
    BadWebReleaseValue,
    // -- the caller's mistake --
    #[error("an audit needs the roots of at least two consecutive epochs")]
    NeedTwoRoots,
}

fn verified(result: VerifyResult) -> Result<VerifiedVersion, VerifyError> {
    Ok(VerifiedVersion {
        version: result.version,
        epoch: result.epoch,
        state: AccountState::decode(&result.value.0).map_err(VerifyError::BadValue)?,
    })
}

/// Verifies a lookup answer for `username` against the root of `epoch`
/// (which the client trusts: the newest root it has seen). Returns the
/// account's latest state; fails if it is not the latest at that root.
pub fn verify_lookup(
    vrf_public_key: &[u8; 32],
    root_hash: &RootHash,
    epoch: u64,
    username: &Username,
    proof: &[u8],
) -> Result<VerifiedVersion, VerifyError> {
    verified(verify_label_lookup(
        vrf_public_key,
        root_hash,
        epoch,
        username.akd_label(),
        proof,
    )?)
}

/// akd's check of an encoded lookup proof for `label` at `epoch`'s root.
fn verify_label_lookup(
    vrf_public_key: &[u8; 32],
    root_hash: &RootHash,
    epoch: u64,
    label: akd::AkdLabel,
    proof: &[u8],
) -> Result<VerifyResult, VerifyError> {
    let proof = pb::LookupProof::parse_from_bytes(proof)
        .map_err(|e| VerifyError::Malformed("lookup", e.to_string()))?;
    let proof = akd::LookupProof::try_from(&proof)
        .map_err(|e| VerifyError::Malformed("lookup", e.to_string()))?;
    akd::client::lookup_verify::<Config>(vrf_public_key, *root_hash, epoch, label, proof)
        .map_err(|e| VerifyError::LookupRejected(e.to_string()))
}

/// One verified version of the web-release label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedWebRelease {
    /// 1 for the first release published, counting up.
    pub version: u64,
    /// The epoch this version was published in.
    pub epoch: u64,
    /// SHA-256 of the encoded `WebRelease`.
    pub digest: [u8; 32],
}

/// Verifies a lookup answer for the web-release label against the root of
/// `epoch`: returns the latest release digest at that root.
pub fn verify_web_release_lookup(
    vrf_public_key: &[u8; 32],
    root_hash: &RootHash,
    epoch: u64,
    proof: &[u8],
) -> Result<VerifiedWebRelease, VerifyError> {
    let result = verify_label_lookup(vrf_public_key, root_hash, epoch, web_release_label(), proof)?;
    Ok(VerifiedWebRelease {
        version: result.version,
        epoch: result.epoch,
        digest: <[u8; 32]>::try_from(result.value.0.as_slice())
            .map_err(|_| VerifyError::BadWebReleaseValue)?,
    })
}

/// Verifies a history answer for `username` against the root of `epoch`.
/// Returns every version, newest first.
pub fn verify_history(
    vrf_public_key: &[u8; 32],
    root_hash: &RootHash,
    epoch: u64,
    username: &Username,
    proof: &[u8],
) -> Result<Vec<VerifiedVersion>, VerifyError> {
    let proof = pb::HistoryProof::parse_from_bytes(proof)
        .map_err(|e| VerifyError::Malformed("history", e.to_string()))?;
    let proof = akd::HistoryProof::try_from(&proof)
        .map_err(|e| VerifyError::Malformed("history", e.to_string()))?;
    let results = akd::client::key_history_verify::<Config>(
        vrf_public_key,
        *root_hash,
        epoch,
        username.akd_label(),
        proof,
        HistoryVerificationParams::Default {
            history_params: HistoryParams::Complete,
        },
    )
    .map_err(|e| VerifyError::HistoryRejected(e.to_string()))?;
    results.into_iter().map(verified).collect()
}

/// Verifies that the epochs from `from_epoch` to `from_epoch + roots.len() - 1`,
/// whose roots are `roots` (in order, as the auditor got them), only appended
/// to the directory. The work is proportional to those epochs' changes.
pub async fn verify_audit(
    roots: &[RootHash],
    from_epoch: u64,
    proof: &[u8],
) -> Result<(), VerifyError> {
    let steps =
        u64::try_from(roots.len().saturating_sub(1)).map_err(|_| VerifyError::NeedTwoRoots)?;
    if steps == 0 {
        return Err(VerifyError::NeedTwoRoots);
    }
    let to_epoch = from_epoch.saturating_add(steps);
    let proof = pb::AppendOnlyProof::parse_from_bytes(proof)
        .map_err(|e| VerifyError::Malformed("audit", e.to_string()))?;
    let proof = akd::AppendOnlyProof::try_from(&proof)
        .map_err(|e| VerifyError::Malformed("audit", e.to_string()))?;
    // akd checks each step against consecutive roots but not which epochs the
    // steps claim to be: a step's epoch feeds the leaf hashes, so check it here.
    let expected: Vec<u64> = (from_epoch..to_epoch).collect();
    if proof.epochs != expected {
        return Err(VerifyError::AuditEpochsMismatch {
            expected,
            got: proof.epochs,
        });
    }
    akd::auditor::audit_verify::<Config>(roots.to_vec(), proof)
        .await
        .map_err(|e| VerifyError::AuditRejected {
            from: from_epoch,
            to: to_epoch,
            reason: e.to_string(),
        })
}
