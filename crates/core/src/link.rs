//! Linking a new device to an account. The existing device shows a one-time
//! code; the new device uses it to join. The code carries the server URL and
//! a 128-bit secret. From the secret come the rendezvous id the server sees
//! and the key that seals what the two devices exchange through the server,
//! so the server relays bytes it can neither read nor alter.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

const SECRET_LEN: usize = 16;
const NONCE_LEN: usize = 12;

/// Why a link code or envelope was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("this is not a link code; it looks like 0123…cdef@http://host:port")]
    BadCode,
    #[error("the link envelope was altered or sealed with another code")]
    BadSeal,
}

/// A one-time device-link code: `SECRETHEX@SERVERURL`.
#[derive(Clone)]
pub struct LinkCode {
    secret: Zeroizing<[u8; SECRET_LEN]>,
    pub server_url: String,
}

impl LinkCode {
    pub fn generate(server_url: &str) -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        Self {
            secret,
            server_url: server_url.to_owned(),
        }
    }

    pub fn parse(code: &str) -> Result<Self, LinkError> {
        let (secret_hex, server_url) = code.trim().split_once('@').ok_or(LinkError::BadCode)?;
        let bytes = hex::decode(secret_hex.replace('-', "")).map_err(|_| LinkError::BadCode)?;
        let secret: [u8; SECRET_LEN] = bytes.try_into().map_err(|_| LinkError::BadCode)?;
        if server_url.is_empty() {
            return Err(LinkError::BadCode);
        }
        Ok(Self {
            secret: Zeroizing::new(secret),
            server_url: server_url.to_owned(),
        })
    }

    /// The text the user carries over: secret and server.
    pub fn reveal(&self) -> String {
        format!("{}@{}", hex::encode(*self.secret), self.server_url)
    }

    fn derive(&self, label: &[u8], out: &mut [u8]) -> Result<(), LinkError> {
        Hkdf::<Sha256>::new(Some(b"sotto-link-v1"), self.secret.as_ref())
            .expand(label, out)
            .map_err(|_| LinkError::BadCode)
    }

    /// The rendezvous id the server sees.
    pub fn link_id(&self) -> Result<Vec<u8>, LinkError> {
        let mut id = vec![0u8; sotto_proto::LINK_ID_LEN];
        self.derive(b"link id", &mut id)?;
        Ok(id)
    }

    fn cipher(&self) -> Result<ChaCha20Poly1305, LinkError> {
        let mut key = Zeroizing::new([0u8; 32]);
        self.derive(b"seal key", key.as_mut())?;
        Ok(ChaCha20Poly1305::new(Key::from_slice(key.as_ref())))
    }

    /// Encrypts and authenticates `plaintext` under the code's key.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()?
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| LinkError::BadSeal)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, LinkError> {
        let (nonce, ciphertext) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(LinkError::BadSeal)?;
        self.cipher()?
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| LinkError::BadSeal)
    }
}

impl fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LinkCode(secret: <redacted>, server: {})",
            self.server_url
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_round_trip_seal_open_and_tamper() {
        let code = LinkCode::generate("http://127.0.0.1:8420");
        let parsed = LinkCode::parse(&code.reveal()).unwrap();
        assert_eq!(parsed.link_id().unwrap(), code.link_id().unwrap());
        let sealed = code.seal(b"the account").unwrap();
        assert_eq!(parsed.open(&sealed).unwrap().as_slice(), b"the account");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(parsed.open(&tampered).is_err());
        let other = LinkCode::generate("http://127.0.0.1:8420");
        assert!(other.open(&sealed).is_err());
        assert_ne!(other.link_id().unwrap(), code.link_id().unwrap());
        assert!(!format!("{code:?}").contains(&code.reveal()[..32]));
        for bad in [
            "",
            "abc",
            "zz@http://x",
            "00@http://x",
            &format!("{}@", hex::encode([0u8; 16])),
        ] {
            assert!(LinkCode::parse(bad).is_err(), "{bad}");
        }
    }
}
