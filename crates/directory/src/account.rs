//! What the directory maps a username to: the account's state.

use std::collections::BTreeMap;
use std::fmt;

/// Length of a device id (as in `sotto_proto::ID_LEN`).
pub const DEVICE_ID_LEN: usize = sotto_proto::ID_LEN;

/// Most devices one account state may list (keeps a value, and so a proof, small).
pub const MAX_DEVICES: usize = 64;

const FORMAT_V1: u8 = 1;

/// A username that passed [`sotto_proto::is_valid_username`]: the directory's label.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Username(String);

impl Username {
    /// Parses a username; `None` if it is not a valid Sotto username.
    pub fn parse(name: &str) -> Option<Self> {
        sotto_proto::is_valid_username(name).then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn akd_label(&self) -> akd::AkdLabel {
        akd::AkdLabel(self.0.as_bytes().to_vec())
    }
}

/// The label of the server's web release: not a username's bytes (a
/// username starts with a lowercase letter or a digit), so no account can
/// hold it. Its values are SHA-256 digests of encoded `WebRelease`s.
const WEB_RELEASE_LABEL: &[u8] = b"\x00sotto-web-release-v1";

pub(crate) fn web_release_label() -> akd::AkdLabel {
    akd::AkdLabel(WEB_RELEASE_LABEL.to_vec())
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One version of an account: its identity key and the devices it has now.
///
/// A removed device is simply absent from the next version; an account with
/// no devices left has an empty set. The encoding ([`AccountState::encode`])
/// is deterministic: one byte format version, the 32-byte identity key, a
/// big-endian `u16` device count, then each device as 16-byte id and 32-byte
/// key, in ascending id order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccountState {
    pub identity_key: [u8; 32],
    pub devices: BTreeMap<[u8; DEVICE_ID_LEN], [u8; 32]>,
}

/// Why bytes are not an [`AccountState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountStateError {
    #[error("account state has unknown format version {0}")]
    UnknownFormat(u8),
    #[error("account state is truncated or has trailing bytes")]
    BadLength,
    #[error("account state lists devices out of order or twice")]
    DevicesNotSorted,
    #[error("account state lists more than {MAX_DEVICES} devices")]
    TooManyDevices,
}

impl AccountState {
    /// The state an account's verified log replays to: what the directory
    /// must hold as the account's latest version.
    pub fn of_log(replayed: &sotto_transparency::AccountState) -> Self {
        Self {
            identity_key: replayed.identity_key,
            devices: replayed.devices.clone(),
        }
    }

    /// The deterministic encoding stored as the directory's value.
    pub fn encode(&self) -> Result<Vec<u8>, AccountStateError> {
        if self.devices.len() > MAX_DEVICES {
            return Err(AccountStateError::TooManyDevices);
        }
        let count =
            u16::try_from(self.devices.len()).map_err(|_| AccountStateError::TooManyDevices)?;
        let mut out = Vec::with_capacity(1 + 32 + 2 + self.devices.len() * (DEVICE_ID_LEN + 32));
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.identity_key);
        out.extend_from_slice(&count.to_be_bytes());
        for (id, key) in &self.devices {
            out.extend_from_slice(id);
            out.extend_from_slice(key);
        }
        Ok(out)
    }

    /// Parses [`AccountState::encode`]'s output, refusing any other bytes
    /// (so one state has exactly one encoding).
    pub fn decode(bytes: &[u8]) -> Result<Self, AccountStateError> {
        let (&format, rest) = bytes.split_first().ok_or(AccountStateError::BadLength)?;
        if format != FORMAT_V1 {
            return Err(AccountStateError::UnknownFormat(format));
        }
        let (identity_key, rest) = rest
            .split_first_chunk::<32>()
            .ok_or(AccountStateError::BadLength)?;
        let (count, mut rest) = rest
            .split_first_chunk::<2>()
            .ok_or(AccountStateError::BadLength)?;
        let count = usize::from(u16::from_be_bytes(*count));
        if count > MAX_DEVICES {
            return Err(AccountStateError::TooManyDevices);
        }
        let mut devices = BTreeMap::new();
        let mut last: Option<[u8; DEVICE_ID_LEN]> = None;
        for _ in 0..count {
            let (id, tail) = rest
                .split_first_chunk::<DEVICE_ID_LEN>()
                .ok_or(AccountStateError::BadLength)?;
            let (key, tail) = tail
                .split_first_chunk::<32>()
                .ok_or(AccountStateError::BadLength)?;
            if last.is_some_and(|prev| prev >= *id) {
                return Err(AccountStateError::DevicesNotSorted);
            }
            last = Some(*id);
            devices.insert(*id, *key);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(AccountStateError::BadLength);
        }
        Ok(Self {
            identity_key: *identity_key,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn sample() -> AccountState {
        AccountState {
            identity_key: [7; 32],
            devices: [([2; 16], [9; 32]), ([1; 16], [8; 32])]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        let bytes = sample().encode().unwrap();
        assert_eq!(bytes.len(), 1 + 32 + 2 + 2 * 48);
        assert_eq!(AccountState::decode(&bytes).unwrap(), sample());
        // Devices in ascending id order: the first listed is [1; 16].
        assert_eq!(&bytes[35..51], &[1u8; 16]);
    }

    #[test]
    fn refuses_other_encodings() {
        let bytes = sample().encode().unwrap();
        let mut swapped = bytes[..35].to_vec();
        swapped.extend_from_slice(&bytes[83..131]);
        swapped.extend_from_slice(&bytes[35..83]);
        assert_eq!(
            AccountState::decode(&swapped),
            Err(AccountStateError::DevicesNotSorted)
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            AccountState::decode(&trailing),
            Err(AccountStateError::BadLength)
        );
        assert_eq!(
            AccountState::decode(&bytes[..bytes.len() - 1]),
            Err(AccountStateError::BadLength)
        );
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(
            AccountState::decode(&v2),
            Err(AccountStateError::UnknownFormat(2))
        );
    }
}
