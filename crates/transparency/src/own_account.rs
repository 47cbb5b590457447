//! Watching one's own account: which of its log events a device of the
//! account made, and which nobody of the account did.
//!
//! Every device of an account holds the identity key, so the identity
//! signature on an event says only that someone with that key made it (a
//! device of the account, or a thief, a removed device, or a server it
//! leaked to). An event is *explained* when this device knows it — it made
//! it, was handed it when it was linked, or accepted it before — or when a
//! device of the account that is trusted and active just before the event
//! vouches for it with its own device key (`LogEntry.author_signature`);
//! otherwise it is *unexplained*. A device added by an unexplained event is
//! not trusted, so what it vouches for is unexplained too. Known events the
//! log no longer shows, or shows differently, are findings as well.
//!
//! The rule holds for any log that gives an account's events in order: when
//! the log becomes a versioned directory, each version carries the event
//! that made it and its author's signature.

use std::collections::{BTreeMap, BTreeSet};

use crate::account::{AccountState, open_entry};
use crate::{LogEntry, LogError, account_event, verify_signature, verifying_key};

/// A 16-byte device id.
pub type DeviceIdBytes = [u8; 16];

/// What a change did, for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnChange {
    /// The identity was registered (`account_seq` 0).
    IdentityRegistered,
    DeviceAdded(DeviceIdBytes),
    DeviceRemoved(DeviceIdBytes),
    /// The identity key was rotated (to this new key).
    IdentityRotated([u8; 32]),
}

/// Something in the account's log that no device of the account explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// An event no trusted device of the account made. `author` is the
    /// device it claims as author, if any (not trusted, or its signature is
    /// wrong).
    Unexplained {
        account_seq: u64,
        change: OwnChange,
        author: Option<DeviceIdBytes>,
    },
    /// The log shows another event at `account_seq` than the one this
    /// device knows its account made there.
    Replaced { account_seq: u64, change: OwnChange },
    /// The log stops before events this device knows its account made:
    /// the server is hiding them.
    Hidden { account_seq: u64 },
}

/// The result of [`review_own_account`].
#[derive(Clone, Debug)]
pub struct OwnAccountReview {
    /// The account as the log shows it.
    pub state: AccountState,
    /// Events newly explained (by a trusted device's signature), to add to
    /// what this device knows: `account_seq` → entry.
    pub newly_explained: Vec<(u64, LogEntry)>,
    /// Devices in the account that an unexplained event added.
    pub unknown_devices: BTreeSet<DeviceIdBytes>,
    pub findings: Vec<Finding>,
}

/// Reviews an account's entries (already verified: inclusion and replay)
/// against `known`, the events this device knows the account's devices
/// made (`account_seq` → entry). Events are compared by their signed bytes.
pub fn review_own_account(
    username: &str,
    entries: &[LogEntry],
    known: &BTreeMap<u64, LogEntry>,
) -> Result<OwnAccountReview, LogError> {
    let mut state: Option<AccountState> = None;
    let mut trusted: BTreeSet<DeviceIdBytes> = BTreeSet::new();
    let mut review = OwnAccountReview {
        state: AccountState {
            username: username.to_owned(),
            identity_key: [0; 32],
            former_identity_keys: Vec::new(),
            devices: BTreeMap::new(),
            next_seq: 0,
        },
        newly_explained: Vec::new(),
        unknown_devices: BTreeSet::new(),
        findings: Vec::new(),
    };
    for entry in entries {
        let event = open_entry(entry)?;
        let seq = event.account_seq;
        let change = match &event.change {
            Some(account_event::Change::IdentityRegistered(_)) => OwnChange::IdentityRegistered,
            Some(account_event::Change::DeviceAdded(a)) => {
                OwnChange::DeviceAdded(id(&a.device_id)?)
            }
            Some(account_event::Change::DeviceRemoved(r)) => {
                OwnChange::DeviceRemoved(id(&r.device_id)?)
            }
            Some(account_event::Change::IdentityRotated(r)) => OwnChange::IdentityRotated(
                <[u8; 32]>::try_from(r.new_identity_key.as_slice())
                    .map_err(|_| LogError::Malformed("identity keys are 32 bytes"))?,
            ),
            None => return Err(LogError::Malformed("a log event has no change")),
        };
        let explained = match known.get(&seq) {
            Some(mine) if mine.event == entry.event => true,
            Some(_) => {
                review.findings.push(Finding::Replaced {
                    account_seq: seq,
                    change: change.clone(),
                });
                false
            }
            None => {
                let vouched = state
                    .as_ref()
                    .is_some_and(|s| vouched_by_trusted(entry, s, &trusted));
                if vouched {
                    review.newly_explained.push((seq, entry.clone()));
                } else {
                    review.findings.push(Finding::Unexplained {
                        account_seq: seq,
                        change: change.clone(),
                        author: id(&entry.author_device_id).ok(),
                    });
                }
                vouched
            }
        };
        match &mut state {
            None => state = Some(AccountState::start(username, event)?),
            Some(s) => s.apply_event(event)?,
        }
        match change {
            OwnChange::DeviceAdded(device) if explained => {
                trusted.insert(device);
            }
            OwnChange::DeviceAdded(device) => {
                review.unknown_devices.insert(device);
            }
            OwnChange::DeviceRemoved(device) => {
                trusted.remove(&device);
                review.unknown_devices.remove(&device);
            }
            OwnChange::IdentityRegistered | OwnChange::IdentityRotated(_) => {}
        }
    }
    let state =
        state.ok_or_else(|| LogError::Replay(format!("the log has no entries for {username}")))?;
    for &account_seq in known.keys().filter(|&&seq| seq >= state.next_seq) {
        review.findings.push(Finding::Hidden { account_seq });
    }
    review.state = state;
    Ok(review)
}

/// Whether a trusted device, active in `state` (the account just before
/// the entry), signed the entry with its device key.
fn vouched_by_trusted(
    entry: &LogEntry,
    state: &AccountState,
    trusted: &BTreeSet<DeviceIdBytes>,
) -> bool {
    let Ok(author) = id(&entry.author_device_id) else {
        return false;
    };
    let Some(key) = state
        .devices
        .get(&author)
        .filter(|_| trusted.contains(&author))
    else {
        return false;
    };
    verifying_key(key.as_slice(), "device key").is_ok_and(|key| {
        verify_signature(
            &key,
            &sotto_proto::log_author_transcript(&entry.event),
            &entry.author_signature,
            "author signature",
        )
        .is_ok()
    })
}

fn id(bytes: &[u8]) -> Result<DeviceIdBytes, LogError> {
    DeviceIdBytes::try_from(bytes)
        .map_err(|_| LogError::Malformed("a device id in the log must be 16 bytes"))
}
