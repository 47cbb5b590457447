//! Sotto's key directory: every account as a versioned, VRF-hidden label in
//! an auditable key directory (AKD, the `akd` crate WhatsApp runs), stored in
//! SQLite.
//!
//! Each account is a label whose versions are its [`AccountState`]s
//! (identity key and device set). A lookup returns the latest version with a
//! proof that it *is* the latest: akd proves membership of the version's leaf
//! and non-membership of that version's "stale" leaf, which the next
//! publish for the account inserts. So a server that serves an old version
//! after a newer one was published cannot produce a proof that verifies
//! against the newer root. Labels in the tree are VRF outputs, so the tree,
//! its root and its audit proofs list no usernames; a lookup proof reveals
//! only the looked-up account.
//!
//! One more label, which no username can produce, holds the SHA-256 of the
//! server's latest logged web release ([`KeyDirectory::publish_with_web_release`],
//! [`verify_web_release_lookup`]).
//!
//! The server side is [`KeyDirectory`]; clients and auditors use the pure
//! functions [`verify_lookup`], [`verify_history`] and [`verify_audit`], which
//! take the bytes the server sent and the roots they already trust.
//!
//! ```
//! # #![allow(clippy::unwrap_used)]
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use sotto_directory::{AccountState, KeyDirectory, Username, VrfSecret, verify_lookup};
//! let dir = tempfile::tempdir().unwrap();
//! let secret = VrfSecret::from_bytes([7; 32]); // in production: generated once, stored
//! let directory = KeyDirectory::open(&dir.path().join("directory.db"), secret).await.unwrap();
//! let alice = Username::parse("alice").unwrap();
//! let state = AccountState { identity_key: [1; 32], devices: [([2; 16], [3; 32])].into() };
//! let epoch = directory.publish(vec![(alice.clone(), state.clone())]).await.unwrap();
//!
//! let answer = directory.lookup(&alice).await.unwrap();
//! let vrf_key = directory.vrf_public_key();
//! let verified = verify_lookup(&vrf_key, &epoch.root_hash, epoch.epoch, &alice, &answer.proof).unwrap();
//! assert_eq!(verified.state, state);
//! # });
//! ```

mod account;
mod audit;
mod directory;
pub mod storage;
mod verify;
mod vrf;

pub use account::{AccountState, AccountStateError, DEVICE_ID_LEN, MAX_DEVICES, Username};
pub use audit::{StoredAuditError, audit_stored};
pub use directory::{
    AuditAnswer, DirectoryError, EpochRoot, HistoryAnswer, KeyDirectory, LookupAnswer,
};
pub use storage::codec::HASH_OFFSET as STORED_NODE_HASH_OFFSET;
pub use verify::{
    VerifiedVersion, VerifiedWebRelease, VerifyError, verify_audit, verify_history, verify_lookup,
    verify_web_release_lookup,
};
pub use vrf::VrfSecret;

/// The domain separator of every hash in Sotto's directory.
#[derive(Clone, Debug)]
pub struct SottoDomain;

impl akd::DomainLabel for SottoDomain {
    fn domain_label() -> &'static [u8] {
        b"sotto-key-directory-v1"
    }
}

/// akd's hash and commitment configuration for Sotto: the "experimental"
/// one (BLAKE3, with a domain label), which differs from `whatsapp_v1` only
/// by that domain separation, so Sotto's proofs cannot be confused with
/// another deployment's.
pub type Config = akd::ExperimentalConfiguration<SottoDomain>;

/// A 32-byte root hash of one epoch of the directory.
pub type RootHash = [u8; 32];
