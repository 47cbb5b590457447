//! The server's log key and the tree heads it signs: [`LogKey`] signs,
//! [`verify_head`] checks.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use prost::Message as _;
use zeroize::Zeroizing;

use crate::{
    Hash, LogEntry, LogError, MAX_TREE_SIZE, SignedEpoch, SignedTreeHead, WebRelease, to_hash,
    verify_signature, verifying_key,
};

/// The server's log signing key (Ed25519). It signs tree heads; clients
/// learn its public half from the server's `Challenge`. `Debug` redacts the
/// secret, and the secret is zeroized on drop.
pub struct LogKey {
    key: SigningKey,
}

impl fmt::Debug for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogKey")
            .field("public", &hex::encode(self.public()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl LogKey {
    /// A new random key, from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Loads a key from its 32-byte secret (as returned by [`Self::secret`]).
    pub fn from_secret(secret: &[u8]) -> Result<Self, LogError> {
        let bytes = Zeroizing::new(
            <[u8; 32]>::try_from(secret)
                .map_err(|_| LogError::Malformed("a log key secret is 32 bytes"))?,
        );
        Ok(Self {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The 32-byte secret, for storing the key.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public key that verifies heads.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a statement that the tree of `tree_size` leaves has root `root`.
    pub fn sign_head(&self, tree_size: u64, root: Hash, timestamp_ms: u64) -> SignedTreeHead {
        let transcript = sotto_proto::tree_head_transcript(tree_size, &root, timestamp_ms);
        SignedTreeHead {
            tree_size,
            root_hash: root.to_vec(),
            timestamp_ms,
            signature: self.key.sign(&transcript).to_bytes().to_vec(),
        }
    }
}

impl LogKey {
    /// Signs a statement that the key directory under `vrf_public_key` had
    /// root `root` at `epoch`, as of `timestamp_ms`.
    pub fn sign_epoch(
        &self,
        vrf_public_key: &[u8; 32],
        epoch: u64,
        root: &Hash,
        timestamp_ms: u64,
    ) -> SignedEpoch {
        let transcript =
            sotto_proto::directory_epoch_transcript(vrf_public_key, epoch, root, timestamp_ms);
        SignedEpoch {
            epoch,
            root_hash: root.to_vec(),
            vrf_public_key: vrf_public_key.to_vec(),
            timestamp_ms,
            signature: self.key.sign(&transcript).to_bytes().to_vec(),
        }
    }
}

/// Checks that a directory epoch is signed by `log_key` (the server's public
/// log key) and well formed.
pub fn verify_epoch(log_key: &[u8], epoch: &SignedEpoch) -> Result<(), LogError> {
    let key = verifying_key(log_key, "the log key must be a 32-byte Ed25519 public key")?;
    to_hash(
        &epoch.root_hash,
        "a directory epoch's root hash must be 32 bytes",
    )?;
    to_hash(
        &epoch.vrf_public_key,
        "a directory's VRF public key must be 32 bytes",
    )?;
    let transcript = sotto_proto::directory_epoch_transcript(
        &epoch.vrf_public_key,
        epoch.epoch,
        &epoch.root_hash,
        epoch.timestamp_ms,
    );
    verify_signature(
        &key,
        &transcript,
        &epoch.signature,
        "the directory epoch is not signed by the server's log key",
    )
}

/// Domain separation for [`LogKey::certify_legal_key`].
const LEGAL_KEY_LABEL: &[u8] = b"sotto-legal-key-v1";

impl LogKey {
    /// Vouches, with the log key every client pinned, for the operator's
    /// legal key (which signs the warrant canary and court-order exports):
    /// a canary is then trusted as far as the log key is, instead of on
    /// the word of whatever key it carries.
    pub fn certify_legal_key(&self, legal_key: &[u8; 32]) -> [u8; 64] {
        self.key
            .sign(&[LEGAL_KEY_LABEL, legal_key.as_slice()].concat())
            .to_bytes()
    }
}

impl LogKey {
    /// Vouches, with the log key every client pinned, for the server's
    /// franking key (`sotto_core::franking`): clients trust a frank as far
    /// as they trust the log key.
    pub fn certify_franking_key(&self, franking_key: &[u8; 32]) -> [u8; 64] {
        self.key
            .sign(&[sotto_proto::FRANKING_KEY_CONTEXT, franking_key.as_slice()].concat())
            .to_bytes()
    }
}

impl LogKey {
    /// The log entry that publishes `release` (files sorted by path, each
    /// path once): signed by this log key, with no account event.
    pub fn sign_web_release(&self, release: &WebRelease) -> LogEntry {
        let encoded = release.encode_to_vec();
        let signature = self
            .key
            .sign(&sotto_proto::web_release_transcript(&encoded));
        LogEntry {
            signature: signature.to_bytes().to_vec(),
            web_release: Some(release.clone()),
            ..Default::default()
        }
    }
}

/// Checks a [`LogKey::certify_legal_key`] certificate.
pub fn verify_legal_key(
    log_key: &[u8],
    legal_key: &[u8],
    certificate: &[u8],
) -> Result<(), LogError> {
    let key = verifying_key(log_key, "the log key must be a 32-byte Ed25519 public key")?;
    verify_signature(
        &key,
        &[LEGAL_KEY_LABEL, legal_key].concat(),
        certificate,
        "the legal key is not certified by the log key",
    )
}

/// Checks that `head` is signed by `log_key` (the server's public log key)
/// and well formed.
pub fn verify_head(log_key: &[u8], head: &SignedTreeHead) -> Result<(), LogError> {
    let key = verifying_key(log_key, "the log key must be a 32-byte Ed25519 public key")?;
    to_hash(&head.root_hash, "a tree head's root hash must be 32 bytes")?;
    if head.tree_size > MAX_TREE_SIZE {
        return Err(LogError::Malformed(
            "a tree head's size is impossibly large",
        ));
    }
    let transcript =
        sotto_proto::tree_head_transcript(head.tree_size, &head.root_hash, head.timestamp_ms);
    verify_signature(
        &key,
        &transcript,
        &head.signature,
        "the tree head is not signed by the server's log key",
    )
}
