//! Sotto's transparency log: every account's identity key and devices, in a
//! public, append-only Merkle log that anyone can check.
//!
//! The log is an RFC 6962 Merkle tree (SHA-256, built with `ct-merkle`)
//! whose leaves are encoded [`LogEntry`] messages. Each entry is an
//! [`AccountEvent`] (identity registered, device added, device removed,
//! identity rotated) signed by the account's identity key, so the server cannot invent one.
//! The server signs [`SignedTreeHead`]s with its [`LogKey`] and proves
//! inclusion of entries and consistency between heads; clients check those
//! proofs ([`verify_account_log`], [`verify_consistency`]) and replay an
//! account's entries ([`AccountState`]) to learn which devices it really has.
//! [`audit`] checks a whole log.
//!
//! No I/O: the server stores the leaves and feeds them to [`MerkleLog`];
//! clients pass in what the server sent.
//!
//! - `tree`: the Merkle tree, inclusion and consistency proofs
//! - `signed_head`: the log key and signed tree heads
//! - `account`: opening entries and replaying an account's history
//! - `audit`: checking a whole log
//! - `countersign`: third-party auditors' countersignatures of heads
//! - `own_account`: which of an account's events its own devices made
//! - `web_release`: the server's web app hashes, logged and signed by the log key
//!
//! ```
//! use ed25519_dalek::{Signer, SigningKey};
//! use prost::Message;
//! use sotto_transparency::{
//!     AccountEvent, LogEntry, LogKey, MerkleLog, account_event, leaf_bytes, verify_head,
//!     verify_inclusion,
//! };
//!
//! // An account signs its first event with its identity key.
//! let identity = SigningKey::from_bytes(&[7; 32]);
//! let event = AccountEvent {
//!     username: "alice".into(),
//!     identity_key: identity.verifying_key().to_bytes().to_vec(),
//!     account_seq: 0,
//!     change: Some(account_event::Change::IdentityRegistered(Default::default())),
//! }
//! .encode_to_vec();
//! let signature = identity.sign(&sotto_proto::log_event_transcript(&event));
//! let entry = LogEntry { event, signature: signature.to_bytes().to_vec(), ..Default::default() };
//!
//! // The server appends it and signs a head.
//! let key = LogKey::generate();
//! let mut log = MerkleLog::new();
//! log.push(&leaf_bytes(&entry));
//! let head = key.sign_head(log.len(), log.root(), 1_700_000_000_000);
//! let path = log.inclusion_path(0, log.len()).unwrap();
//!
//! // A client checks the head and the entry's inclusion.
//! verify_head(&key.public(), &head).unwrap();
//! verify_inclusion(&head, 0, &leaf_bytes(&entry), &path).unwrap();
//! ```

#![forbid(unsafe_code)]

mod account;
mod audit;
mod countersign;
mod own_account;
mod signed_head;
mod tree;
mod web_release;

pub use account::{AccountState, open_entry, verify_account_log};
pub use audit::{AuditError, AuditReport, audit};
pub use countersign::{AuditorKey, verify_countersignature};
pub use own_account::{DeviceIdBytes, Finding, OwnAccountReview, OwnChange, review_own_account};
pub use signed_head::{LogKey, verify_epoch, verify_head, verify_legal_key};
pub use tree::{MerkleLog, verify_consistency, verify_inclusion};
pub use web_release::{
    MAX_WEB_FILES, MAX_WEB_PATH_BYTES, check_web_release, is_web_release, verify_web_release,
    verify_web_release_signature, web_release_digest,
};

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

pub use sotto_proto::v1::{
    AccountEvent, AccountLog, ConsistencyProof, Countersignature, IdentityRotated, LogEntry,
    ProvenEntry, SignedEpoch, SignedTreeHead, WebFile, WebRelease, account_event,
};

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// Largest tree size accepted from anyone: far beyond any real log, and
/// small enough that the tree arithmetic in `ct-merkle` cannot overflow.
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// Length of one node hash in a proof path.
pub(crate) const HASH_LEN: usize = 32;

/// Why log data was refused. All but [`LogError::OutOfRange`] mean that
/// whoever produced the data (the server, or the account that signed an
/// entry) misbehaved or the data was damaged on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// Bytes that do not decode, or a field of the wrong length.
    #[error("malformed log data: {0}")]
    Malformed(&'static str),
    /// A signature (of an identity key or of the log key) does not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(&'static str),
    /// An inclusion or consistency proof does not verify.
    #[error("the log's proof does not verify: {0}")]
    BadProof(String),
    /// The entries of an account break the replay rules (wrong order,
    /// another identity key, a device added twice, ...).
    #[error("the account's log history is inconsistent: {0}")]
    Replay(String),
    /// The caller asked for something outside the tree (a proof for an
    /// index or size the log does not have). The caller's mistake.
    #[error("out of range: {0}")]
    OutOfRange(String),
}

/// The encoded leaf of an entry: what the tree hashes. Use this rather than
/// encoding by hand so that server and clients agree byte for byte.
pub fn leaf_bytes(entry: &LogEntry) -> Vec<u8> {
    entry.encode_to_vec()
}

/// The RFC 6962 hash of the empty tree: SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

pub(crate) fn to_hash(bytes: &[u8], what: &'static str) -> Result<Hash, LogError> {
    Hash::try_from(bytes).map_err(|_| LogError::Malformed(what))
}

pub(crate) fn verifying_key(bytes: &[u8], what: &'static str) -> Result<VerifyingKey, LogError> {
    let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| LogError::Malformed(what))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| LogError::Malformed(what))
}

pub(crate) fn verify_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
    what: &'static str,
) -> Result<(), LogError> {
    let signature = Signature::from_slice(signature).map_err(|_| LogError::BadSignature(what))?;
    key.verify_strict(message, &signature)
        .map_err(|_| LogError::BadSignature(what))
}

#[cfg(test)]
mod tests;
