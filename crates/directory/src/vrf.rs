//! The server's VRF key: hides usernames behind the labels in the tree.
//!
//! The secret is 32 bytes (an Ed25519 secret key, as akd's ECVRF uses). The
//! caller generates it once, stores it with its other secrets, and passes it
//! in on every start; this crate never writes it anywhere. Changing it would
//! change every label, so it must persist for the directory's life.

use akd::ecvrf::{VRFKeyStorage, VRFPublicKey, VrfError};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The VRF secret key. `Debug` never prints it; it is zeroized on drop.
#[derive(Clone)]
pub struct VrfSecret(Arc<Zeroizing<[u8; 32]>>);

impl VrfSecret {
    /// Wraps a stored 32-byte secret.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Arc::new(Zeroizing::new(bytes)))
    }

    /// A fresh secret from `rng` (pass `OsRng` in production).
    pub fn generate(rng: &mut (impl rand::RngCore + rand::CryptoRng)) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(Arc::new(bytes))
    }

    /// The secret's bytes, for the caller to store. Handle with care.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key clients and auditors verify lookups with.
    pub fn public_key(&self) -> Result<[u8; 32], VrfError> {
        let private = akd::ecvrf::VRFPrivateKey::try_from(&self.0[..])?;
        Ok(VRFPublicKey::from(&private).to_bytes())
    }
}

impl fmt::Debug for VrfSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VrfSecret(<redacted>)")
    }
}

/// akd's key storage over a [`VrfSecret`].
///
/// akd asks for the key as a `Vec<u8>` and turns it into its own key type,
/// which zeroizes; the short-lived `Vec` it asks for is not zeroized by akd
/// (a limit of akd 0.13's trait).
#[derive(Clone)]
pub(crate) struct VrfKeyStore(pub(crate) VrfSecret);

impl fmt::Debug for VrfKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VrfKeyStore").field(&self.0).finish()
    }
}

#[async_trait]
impl VRFKeyStorage for VrfKeyStore {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.expose_secret().to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let secret = VrfSecret::from_bytes([0xab; 32]);
        for shown in [
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", VrfKeyStore(secret.clone())),
        ] {
            assert!(!shown.contains("ab"), "{shown}");
            assert!(!shown.contains("171"), "{shown}");
            assert!(shown.contains("redacted"));
        }
    }

    #[test]
    fn public_key_is_stable() {
        let a = VrfSecret::from_bytes([1; 32]).public_key().unwrap();
        let b = VrfSecret::from_bytes([1; 32]).public_key().unwrap();
        let c = VrfSecret::from_bytes([2; 32]).public_key().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
