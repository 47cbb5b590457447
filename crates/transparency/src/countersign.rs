//! Third-party auditors' countersignatures of tree heads: an
//! [`AuditorKey`] signs that it checked the log up to a head
//! ([`AuditorKey::countersign`]); [`verify_countersignature`] checks one.
//!
//! What is countersigned is an *epoch* of the log: today a signed tree
//! head (size, root, the server's timestamp). A move to directory epochs
//! changes only the transcript, not who signs or how clients require it.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::{
    Countersignature, LogError, MAX_TREE_SIZE, SignedTreeHead, to_hash, verify_signature,
    verifying_key,
};

/// An auditor's signing key (Ed25519). `Debug` redacts the secret, and the
/// secret is zeroized on drop.
pub struct AuditorKey {
    key: SigningKey,
}

impl fmt::Debug for AuditorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditorKey")
            .field("public", &hex::encode(self.public()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl AuditorKey {
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
                .map_err(|_| LogError::Malformed("an auditor key secret is 32 bytes"))?,
        );
        Ok(Self {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The 32-byte secret, for storing the key.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public key clients trust (`sotto trust-auditor`).
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Countersigns `head` of the log under `log_key`, at `now_ms`. The
    /// caller has checked the log up to the head first.
    pub fn countersign(
        &self,
        log_key: &[u8],
        head: &SignedTreeHead,
        now_ms: u64,
    ) -> Countersignature {
        let transcript = sotto_proto::countersign_transcript(
            log_key,
            head.tree_size,
            &head.root_hash,
            head.timestamp_ms,
            now_ms,
        );
        Countersignature {
            auditor_key: self.public().to_vec(),
            tree_size: head.tree_size,
            root_hash: head.root_hash.clone(),
            head_timestamp_ms: head.timestamp_ms,
            signed_at_ms: now_ms,
            signature: self.key.sign(&transcript).to_bytes().to_vec(),
        }
    }
}

/// Checks that `countersignature` is well formed and signed by the auditor
/// key it names, over a head of the log under `log_key`.
pub fn verify_countersignature(
    log_key: &[u8],
    countersignature: &Countersignature,
) -> Result<(), LogError> {
    verifying_key(log_key, "the log key must be a 32-byte Ed25519 public key")?;
    let auditor = verifying_key(
        &countersignature.auditor_key,
        "an auditor key must be a 32-byte Ed25519 public key",
    )?;
    to_hash(
        &countersignature.root_hash,
        "a countersigned root hash must be 32 bytes",
    )?;
    if countersignature.tree_size > MAX_TREE_SIZE {
        return Err(LogError::Malformed(
            "a countersigned tree size is impossibly large",
        ));
    }
    let transcript = sotto_proto::countersign_transcript(
        log_key,
        countersignature.tree_size,
        &countersignature.root_hash,
        countersignature.head_timestamp_ms,
        countersignature.signed_at_ms,
    );
    verify_signature(
        &auditor,
        &transcript,
        &countersignature.signature,
        "the countersignature is not signed by the auditor key it names",
    )
}
