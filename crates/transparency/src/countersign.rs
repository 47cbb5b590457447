//! Third-party auditors' countersignatures of key-directory epochs: an
//! [`AuditorKey`] signs that it checked the directory's append-only proofs
//! up to an epoch ([`AuditorKey::countersign`]); [`verify_countersignature`]
//! checks one.
//!
//! What is countersigned is (epoch, root, time), Plexi-style, bound to the
//! server by its log key (which signs the epochs). The key log's heads are
//! no longer countersigned: its entries name accounts, and auditing it
//! would let any auditor list who uses the server.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::{
    Countersignature, LogError, MAX_TREE_SIZE, SignedEpoch, to_hash, verify_signature,
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

    /// Countersigns directory `epoch` of the server whose log key is
    /// `log_key`, at `now_ms`. The caller has audited the directory up to
    /// that epoch first.
    pub fn countersign(
        &self,
        log_key: &[u8],
        epoch: &SignedEpoch,
        now_ms: u64,
    ) -> Countersignature {
        let transcript =
            sotto_proto::countersign_transcript(log_key, epoch.epoch, &epoch.root_hash, now_ms);
        Countersignature {
            auditor_key: self.public().to_vec(),
            epoch: epoch.epoch,
            root_hash: epoch.root_hash.clone(),
            signed_at_ms: now_ms,
            signature: self.key.sign(&transcript).to_bytes().to_vec(),
        }
    }
}

/// Checks that `countersignature` is well formed and signed by the auditor
/// key it names, over a directory epoch of the server with `log_key`.
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
    // Epochs are stored as signed 64-bit integers; no real one comes near.
    if countersignature.epoch > MAX_TREE_SIZE {
        return Err(LogError::Malformed(
            "a countersigned epoch is impossibly large",
        ));
    }
    let transcript = sotto_proto::countersign_transcript(
        log_key,
        countersignature.epoch,
        &countersignature.root_hash,
        countersignature.signed_at_ms,
    );
    verify_signature(
        &auditor,
        &transcript,
        &countersignature.signature,
        "the countersignature is not signed by the auditor key it names",
    )
}
