//! Linking a new device to an account. The existing device shows a one-time
//! code; the new device uses it to join. The code carries the server URL and
//! a 128-bit secret. From the secret come the rendezvous id the server sees
//! and the key that seals what the two devices exchange through the server,
//! so the server relays bytes it can neither read nor alter.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
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

/// Which way a sealed link message goes. Bound into each seal, so the
/// server cannot hand one direction's message back as the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDirection {
    /// New device → existing device: the new device's id and key.
    JoinRequest,
    /// Existing device → new device: the account.
    AccountBundle,
}

impl LinkDirection {
    fn label(self) -> &'static [u8] {
        match self {
            Self::JoinRequest => b"sotto-link-v1 join request",
            Self::AccountBundle => b"sotto-link-v1 account bundle",
        }
    }
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

    /// Encrypts and authenticates `plaintext` under the code's key, bound
    /// to `direction`.
    pub fn seal(&self, direction: LinkDirection, plaintext: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: direction.label(),
        };
        let sealed = self
            .cipher()?
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| LinkError::BadSeal)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens what [`LinkCode::seal`] sealed for `direction`.
    pub fn open(
        &self,
        direction: LinkDirection,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, LinkError> {
        let (nonce, ciphertext) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(LinkError::BadSeal)?;
        let payload = Payload {
            msg: ciphertext,
            aad: direction.label(),
        };
        self.cipher()?
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| LinkError::BadSeal)
    }

    /// Twelve digits both devices show for the joining device (its id and
    /// key, under this code), so the user can check that the device asking
    /// to join is the one in their hand and not someone who saw the code.
    pub fn fingerprint(&self, device_id: &[u8], device_key: &[u8]) -> Result<String, LinkError> {
        use sha2::Digest as _;
        let digest = Sha256::new()
            .chain_update(b"sotto-link-v1 fingerprint")
            .chain_update(self.link_id()?)
            .chain_update(device_id)
            .chain_update(device_key)
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).ok_or(LinkError::BadCode)?);
        let digits = format!("{:012}", u64::from_be_bytes(first) % 1_000_000_000_000);
        Ok(digits
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" "))
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
        let bundle = LinkDirection::AccountBundle;
        let sealed = code.seal(bundle, b"the account").unwrap();
        assert_eq!(
            parsed.open(bundle, &sealed).unwrap().as_slice(),
            b"the account"
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(parsed.open(bundle, &tampered).is_err());
        // A message of one direction does not open as the other's.
        assert!(parsed.open(LinkDirection::JoinRequest, &sealed).is_err());
        let other = LinkCode::generate("http://127.0.0.1:8420");
        assert!(other.open(bundle, &sealed).is_err());
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

    #[test]
    fn the_fingerprint_is_twelve_digits_bound_to_code_and_device() {
        let code = LinkCode::generate("http://127.0.0.1:8420");
        let shown = code.fingerprint(b"device-1", b"key-1").unwrap();
        assert_eq!(shown.len(), 14, "{shown}");
        assert!(
            shown.chars().all(|c| c.is_ascii_digit() || c == ' '),
            "{shown}"
        );
        let parsed = LinkCode::parse(&code.reveal()).unwrap();
        assert_eq!(parsed.fingerprint(b"device-1", b"key-1").unwrap(), shown);
        assert_ne!(code.fingerprint(b"device-1", b"key-2").unwrap(), shown);
        let other = LinkCode::generate("http://127.0.0.1:8420");
        assert_ne!(other.fingerprint(b"device-1", b"key-1").unwrap(), shown);
    }
}
