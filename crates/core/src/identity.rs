//! Accounts, devices and the certificates that bind them.
//!
//! An account is a username and an Ed25519 identity key. Each device has its
//! own Ed25519 key, vouched for by the identity key in a `DeviceCertificate`.
//! The device key is also the device's MLS signature key, so an MLS member's
//! signature key can be checked against the account's certified devices.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use openmls::prelude::{BasicCredential, Credential, CredentialWithKey, SignatureScheme};
use openmls_traits::signatures::{Signer, SignerError};
use prost::Message as _;
use rand::rngs::OsRng;
use sotto_proto::v1::{
    AccountEvent, DeviceAdded, DeviceCertificate, DeviceRemoved, IdentityRegistered,
    IdentityRotated, LogEntry, SignedDevice, account_event::Change,
};
use std::fmt;
use zeroize::Zeroizing;

/// A username that passed [`sotto_proto::is_valid_username`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Username(String);

impl Username {
    /// Parses a username; the error says what a valid one looks like.
    pub fn parse(name: &str) -> Result<Self, IdentityError> {
        if sotto_proto::is_valid_username(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(IdentityError::InvalidUsername(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A device's id: 16 random bytes chosen by the device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; sotto_proto::ID_LEN]);

impl DeviceId {
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdentityError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| IdentityError::Malformed("device id"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", hex::encode(self.0))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why an identity, certificate or credential was rejected.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "invalid username {0:?}: use 3 to 32 characters of a-z, 0-9, '_', '.' or '-', starting with a letter or digit"
    )]
    InvalidUsername(String),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    #[error("{0}")]
    Mismatch(String),
}

/// A device this client has checked: its certificate is signed by the
/// account's identity key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedDevice {
    pub username: Username,
    pub device_id: DeviceId,
    /// Ed25519 public key; also the device's MLS signature key.
    pub device_key: [u8; 32],
}

impl VerifiedDevice {
    /// Checks that `signed` is a certificate signed by `identity_key`.
    pub fn verify(identity_key: &[u8], signed: &SignedDevice) -> Result<Self, IdentityError> {
        let identity = verifying_key(identity_key, "identity key")?;
        let signature = Signature::from_slice(&signed.identity_signature)
            .map_err(|_| IdentityError::Malformed("device signature"))?;
        identity
            .verify(
                &sotto_proto::device_transcript(&signed.certificate),
                &signature,
            )
            .map_err(|_| IdentityError::BadSignature("device certificate"))?;
        let cert = DeviceCertificate::decode(signed.certificate.as_slice())
            .map_err(|_| IdentityError::Malformed("device certificate"))?;
        let device_key = verifying_key(&cert.device_key, "device key")?;
        Ok(Self {
            username: Username::parse(&cert.username)?,
            device_id: DeviceId::from_slice(&cert.device_id)?,
            device_key: device_key.to_bytes(),
        })
    }

    pub fn member_id(&self) -> MemberId {
        MemberId {
            username: self.username.clone(),
            device_id: self.device_id,
        }
    }
}

fn verifying_key(bytes: &[u8], what: &'static str) -> Result<VerifyingKey, IdentityError> {
    let bytes: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| IdentityError::Malformed(what))?;
    VerifyingKey::from_bytes(bytes).map_err(|_| IdentityError::Malformed(what))
}

/// Who an MLS leaf is: a device of an account. Encoded in the leaf's
/// `BasicCredential` as `username/devicehex`. A credential proves nothing by
/// itself; it is trusted only with a matching [`VerifiedDevice`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct MemberId {
    pub username: Username,
    pub device_id: DeviceId,
}

impl std::fmt::Display for MemberId {
    /// `username (device 0123abcd…)`, as users see members.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (device {})", self.username, self.device_id)
    }
}

impl MemberId {
    pub fn to_credential(&self) -> Credential {
        BasicCredential::new(format!("{}/{}", self.username, self.device_id).into_bytes()).into()
    }

    pub fn from_credential(credential: &Credential) -> Result<Self, IdentityError> {
        let basic = BasicCredential::try_from(credential.clone())
            .map_err(|_| IdentityError::Malformed("credential"))?;
        let text = std::str::from_utf8(basic.identity())
            .map_err(|_| IdentityError::Malformed("credential"))?;
        let (name, device) = text
            .split_once('/')
            .ok_or(IdentityError::Malformed("credential"))?;
        let device = hex::decode(device).map_err(|_| IdentityError::Malformed("credential"))?;
        Ok(Self {
            username: Username::parse(name)?,
            device_id: DeviceId::from_slice(&device)?,
        })
    }
}

/// A device's signing key. Signs logins and, as the MLS signer, everything the
/// device says in a group. Never printed; zeroized on drop.
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    pub fn from_secret(secret: &[u8]) -> Result<Self, IdentityError> {
        let bytes: &[u8; 32] = secret
            .try_into()
            .map_err(|_| IdentityError::Malformed("device secret"))?;
        Ok(Self(SigningKey::from_bytes(bytes)))
    }

    /// The secret seed, for the local profile database only.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `transcript` (which must start with its own domain label, as
    /// every Sotto transcript does) with the device key.
    pub fn sign_bytes(&self, transcript: &[u8]) -> [u8; 64] {
        self.0.sign(transcript).to_bytes()
    }

    /// Signs the login transcript for a server challenge.
    pub fn sign_login(&self, nonce: &[u8], username: &Username, device_id: DeviceId) -> Vec<u8> {
        let transcript =
            sotto_proto::auth_transcript(nonce, username.as_str(), device_id.as_bytes());
        self.0.sign(&transcript).to_bytes().to_vec()
    }
}

impl Signer for DeviceKey {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceKey(public: {}, secret: <redacted>)",
            hex::encode(self.public())
        )
    }
}

/// The account's identity key. It only signs device certificates.
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut OsRng))
    }

    pub fn from_secret(secret: &[u8]) -> Result<Self, IdentityError> {
        let bytes: &[u8; 32] = secret
            .try_into()
            .map_err(|_| IdentityError::Malformed("identity secret"))?;
        Ok(Self(SigningKey::from_bytes(bytes)))
    }

    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Certifies a device of `username`.
    pub fn certify(
        &self,
        username: &Username,
        device_id: DeviceId,
        device_key: [u8; 32],
    ) -> SignedDevice {
        let certificate = DeviceCertificate {
            username: username.to_string(),
            device_id: device_id.as_bytes().to_vec(),
            device_key: device_key.to_vec(),
        }
        .encode_to_vec();
        let identity_signature = self
            .0
            .sign(&sotto_proto::device_transcript(&certificate))
            .to_bytes()
            .to_vec();
        SignedDevice {
            certificate,
            identity_signature,
        }
    }
}

impl IdentityKey {
    /// Signs an event of `username`'s account for the transparency log.
    pub fn sign_event(&self, username: &Username, account_seq: u64, change: Change) -> LogEntry {
        let event = AccountEvent {
            username: username.to_string(),
            identity_key: self.public().to_vec(),
            account_seq,
            change: Some(change),
        }
        .encode_to_vec();
        let signature = self
            .0
            .sign(&sotto_proto::log_event_transcript(&event))
            .to_bytes()
            .to_vec();
        LogEntry {
            event,
            signature,
            ..LogEntry::default()
        }
    }

    /// The log event adding a device.
    pub fn device_added(
        &self,
        username: &Username,
        account_seq: u64,
        device_id: DeviceId,
        device_key: [u8; 32],
    ) -> LogEntry {
        let change = Change::DeviceAdded(DeviceAdded {
            device_id: device_id.as_bytes().to_vec(),
            device_key: device_key.to_vec(),
        });
        self.sign_event(username, account_seq, change)
    }

    /// The log event removing a device.
    pub fn device_removed(
        &self,
        username: &Username,
        account_seq: u64,
        device_id: DeviceId,
    ) -> LogEntry {
        let change = Change::DeviceRemoved(DeviceRemoved {
            device_id: device_id.as_bytes().to_vec(),
        });
        self.sign_event(username, account_seq, change)
    }

    /// The log event rotating the account's identity from this key to
    /// `new`: signed by this (old) key, with `new`'s proof of possession.
    pub fn identity_rotated(
        &self,
        username: &Username,
        account_seq: u64,
        new: &IdentityKey,
    ) -> LogEntry {
        let new_key_signature = new
            .0
            .sign(&sotto_proto::identity_rotation_transcript(
                username.as_str(),
                &self.public(),
                &new.public(),
                account_seq,
            ))
            .to_bytes()
            .to_vec();
        let change = Change::IdentityRotated(IdentityRotated {
            new_identity_key: new.public().to_vec(),
            new_key_signature,
        });
        self.sign_event(username, account_seq, change)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IdentityKey(public: {}, secret: <redacted>)",
            hex::encode(self.public())
        )
    }
}

/// Everything one device knows about its own account.
#[derive(Debug)]
pub struct Account {
    pub username: Username,
    pub identity: IdentityKey,
    pub device_id: DeviceId,
    pub device: DeviceKey,
}

impl Account {
    /// A new account with its first device.
    pub fn generate(username: Username) -> Self {
        Self {
            username,
            identity: IdentityKey::generate(),
            device_id: DeviceId::random(),
            device: DeviceKey::generate(),
        }
    }

    pub fn identity_public(&self) -> [u8; 32] {
        self.identity.public()
    }

    /// This device's certificate, signed by the identity key.
    pub fn signed_device(&self) -> SignedDevice {
        self.identity
            .certify(&self.username, self.device_id, self.device.public())
    }

    pub fn member_id(&self) -> MemberId {
        MemberId {
            username: self.username.clone(),
            device_id: self.device_id,
        }
    }

    /// The account's first two log entries: the identity, then this device,
    /// both vouched for by this device ([`Account::attest`]).
    pub fn registration_log_entries(&self) -> Vec<LogEntry> {
        vec![
            self.attest(self.identity.sign_event(
                &self.username,
                0,
                Change::IdentityRegistered(IdentityRegistered {}),
            )),
            self.attest(self.identity.device_added(
                &self.username,
                1,
                self.device_id,
                self.device.public(),
            )),
        ]
    }

    /// Marks a log event of this account as made by this device: its id and
    /// its device key's signature over the event. The identity key is on
    /// every device (and a thief may have it); a device key is not, so the
    /// account's other devices can tell this device's changes from anyone
    /// else's.
    pub fn attest(&self, mut entry: LogEntry) -> LogEntry {
        entry.author_device_id = self.device_id.as_bytes().to_vec();
        entry.author_signature = self
            .device
            .0
            .sign(&sotto_proto::log_author_transcript(&entry.event))
            .to_bytes()
            .to_vec();
        entry
    }

    /// The MLS credential of this device, bound to its device key.
    pub fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: self.member_id().to_credential(),
            signature_key: self.device.public().to_vec().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_round_trip_and_tamper() {
        let account = Account::generate(Username::parse("alice").unwrap());
        let mut signed = account.signed_device();
        let device = VerifiedDevice::verify(&account.identity_public(), &signed).unwrap();
        assert_eq!(device.device_id, account.device_id);
        assert_eq!(device.device_key, account.device.public());

        let other = IdentityKey::generate();
        assert!(VerifiedDevice::verify(&other.public(), &signed).is_err());
        signed.certificate[3] ^= 1;
        assert!(VerifiedDevice::verify(&account.identity_public(), &signed).is_err());
    }

    #[test]
    fn credential_round_trip() {
        let account = Account::generate(Username::parse("bob").unwrap());
        let credential = account.member_id().to_credential();
        assert_eq!(
            MemberId::from_credential(&credential).unwrap(),
            account.member_id()
        );
        let bogus: Credential = BasicCredential::new(b"no-slash".to_vec()).into();
        assert!(MemberId::from_credential(&bogus).is_err());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let account = Account::generate(Username::parse("carol").unwrap());
        let printed = format!("{account:?}");
        for secret in [
            hex::encode(*account.identity.secret()),
            hex::encode(*account.device.secret()),
        ] {
            assert!(!printed.contains(&secret), "secret leaked in {printed}");
        }
        assert!(printed.contains("<redacted>"));
    }
}
