//! An account's entries: opening one (its signature by the identity key it
//! names) and replaying them in order ([`AccountState`]) to learn which
//! devices the account really has; [`verify_account_log`] does both for
//! what the server sent, with each entry's inclusion proof.

use std::collections::BTreeMap;

use prost::Message;

use crate::{
    AccountEvent, AccountLog, LogEntry, LogError, account_event, leaf_bytes, verify_head,
    verify_inclusion, verify_signature, verifying_key,
};

/// Decodes one entry and checks its signature by the identity key it names
/// (no replay rules): returns the event.
pub fn open_entry(entry: &LogEntry) -> Result<AccountEvent, LogError> {
    if entry.web_release.is_some() {
        return Err(LogError::Malformed(
            "a web-release entry is not an account's event",
        ));
    }
    let event = AccountEvent::decode(entry.event.as_slice())
        .map_err(|_| LogError::Malformed("a log entry's event is not an AccountEvent"))?;
    if !sotto_proto::is_valid_username(&event.username) {
        return Err(LogError::Malformed("a log event names an invalid username"));
    }
    let key = verifying_key(
        &event.identity_key,
        "a log event's identity key must be a 32-byte Ed25519 public key",
    )?;
    verify_signature(
        &key,
        &sotto_proto::log_event_transcript(&entry.event),
        &entry.signature,
        "a log entry is not signed by the identity key it names",
    )?;
    if event.change.is_none() {
        return Err(LogError::Malformed("a log event has no change"));
    }
    Ok(event)
}

/// Device id length in log events.
const DEVICE_ID_LEN: usize = sotto_proto::ID_LEN;

fn device_id(bytes: &[u8]) -> Result<[u8; DEVICE_ID_LEN], LogError> {
    <[u8; DEVICE_ID_LEN]>::try_from(bytes)
        .map_err(|_| LogError::Malformed("a device id in the log must be 16 bytes"))
}

/// What the log says about one account, after replaying its entries in
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    /// The account's username.
    pub username: String,
    /// The account's current identity key: the one that must sign its next
    /// entry (the registered key, or the newest `IdentityRotated` one).
    pub identity_key: [u8; 32],
    /// Identity keys the account rotated away from, oldest first. An entry
    /// signed by one of them is refused: whoever still holds it (a removed
    /// device) can log nothing more.
    pub former_identity_keys: Vec<[u8; 32]>,
    /// Device id → device key, for devices added and not removed.
    pub devices: BTreeMap<[u8; 16], [u8; 32]>,
    /// The `account_seq` the next entry must carry.
    pub next_seq: u64,
}

impl AccountState {
    /// Replays the entries of one account: each signature must verify with
    /// the event's identity key over `log_event_transcript(event)`; the
    /// first must be `IdentityRegistered` with `account_seq` 0; later ones
    /// must carry the current identity key and `account_seq` = previous + 1.
    /// `IdentityRotated` (signed by the current key, with the new key's
    /// proof of possession) makes its new key the current one; from then
    /// on an entry signed by a former key is refused. Adding an existing
    /// device id, removing an unknown one, a second `IdentityRegistered`,
    /// rotating to a key the account already used, or another username are
    /// errors.
    pub fn replay(username: &str, entries: &[LogEntry]) -> Result<Self, LogError> {
        let Some((first, rest)) = entries.split_first() else {
            return Err(LogError::Replay(format!(
                "the log has no entries for {username}"
            )));
        };
        let mut state = Self::start(username, open_entry(first)?)?;
        for entry in rest {
            state.apply(entry)?;
        }
        Ok(state)
    }

    /// The state after an account's first event (already opened).
    pub(crate) fn start(username: &str, event: AccountEvent) -> Result<Self, LogError> {
        if event.username != username {
            return Err(LogError::Replay(format!(
                "an entry for {:?} was given as {username:?}'s",
                event.username
            )));
        }
        if event.account_seq != 0 {
            return Err(LogError::Replay(format!(
                "{username}'s first entry has account_seq {}, not 0: earlier entries are missing",
                event.account_seq
            )));
        }
        if !matches!(
            event.change,
            Some(account_event::Change::IdentityRegistered(_))
        ) {
            return Err(LogError::Replay(format!(
                "{username}'s first entry does not register the identity key"
            )));
        }
        Ok(Self {
            username: username.to_owned(),
            identity_key: <[u8; 32]>::try_from(event.identity_key.as_slice())
                .map_err(|_| LogError::Malformed("identity keys are 32 bytes"))?,
            former_identity_keys: Vec::new(),
            devices: BTreeMap::new(),
            next_seq: 1,
        })
    }

    /// Applies the account's next entry. On error the state is unchanged.
    pub fn apply(&mut self, entry: &LogEntry) -> Result<(), LogError> {
        self.apply_event(open_entry(entry)?)
    }

    /// Applies an already opened (signature-checked) event.
    pub(crate) fn apply_event(&mut self, event: AccountEvent) -> Result<(), LogError> {
        let name = self.username.clone();
        if event.username != name {
            return Err(LogError::Replay(format!(
                "an entry for {:?} was given as {name:?}'s",
                event.username
            )));
        }
        if event.identity_key != self.identity_key {
            let former = self
                .former_identity_keys
                .iter()
                .any(|k| k.as_slice() == event.identity_key);
            return Err(LogError::Replay(if former {
                format!(
                    "an entry of {name} is signed by an identity key {name} rotated away from \
                     (whoever still holds it, such as a removed device, may log nothing more)"
                )
            } else {
                format!("an entry of {name} is signed by another identity key than the current one")
            }));
        }
        if event.account_seq != self.next_seq {
            return Err(LogError::Replay(format!(
                "{name}'s entry has account_seq {}, expected {}: entries are missing, repeated or out of order",
                event.account_seq, self.next_seq
            )));
        }
        let next_seq = self
            .next_seq
            .checked_add(1)
            .ok_or(LogError::Malformed("account_seq overflows"))?;
        match event.change {
            Some(account_event::Change::IdentityRegistered(_)) => {
                return Err(LogError::Replay(format!(
                    "{name}'s identity key is registered a second time"
                )));
            }
            Some(account_event::Change::DeviceAdded(added)) => {
                let id = device_id(&added.device_id)?;
                let key = verifying_key(
                    &added.device_key,
                    "a device key must be a 32-byte Ed25519 public key",
                )?
                .to_bytes();
                if self.devices.contains_key(&id) {
                    return Err(LogError::Replay(format!(
                        "device {} of {name} is added twice",
                        hex::encode(id)
                    )));
                }
                self.devices.insert(id, key);
            }
            Some(account_event::Change::DeviceRemoved(removed)) => {
                let id = device_id(&removed.device_id)?;
                if self.devices.remove(&id).is_none() {
                    return Err(LogError::Replay(format!(
                        "device {} of {name} is removed but was never added (or already removed)",
                        hex::encode(id)
                    )));
                }
            }
            Some(account_event::Change::IdentityRotated(rotated)) => {
                let new_key = self.check_rotation(&rotated, event.account_seq)?;
                self.former_identity_keys.push(self.identity_key);
                self.identity_key = new_key;
            }
            None => return Err(LogError::Malformed("a log event has no change")),
        }
        self.next_seq = next_seq;
        Ok(())
    }
}

impl AccountState {
    /// The new key of a rotation from the current key, if the rotation is
    /// sound: a valid key the account never used, and its signature over
    /// the rotation statement (so nobody rotates to a key they do not hold,
    /// or replays another account's rotation).
    fn check_rotation(
        &self,
        rotated: &crate::IdentityRotated,
        account_seq: u64,
    ) -> Result<[u8; 32], LogError> {
        let name = &self.username;
        let new_key = verifying_key(
            &rotated.new_identity_key,
            "a rotated identity key must be a 32-byte Ed25519 public key",
        )?;
        let new_bytes = new_key.to_bytes();
        if new_bytes == self.identity_key || self.former_identity_keys.contains(&new_bytes) {
            return Err(LogError::Replay(format!(
                "{name}'s identity is rotated to a key the account already used"
            )));
        }
        verify_signature(
            &new_key,
            &sotto_proto::identity_rotation_transcript(
                name,
                &self.identity_key,
                &new_bytes,
                account_seq,
            ),
            &rotated.new_key_signature,
            "a rotation is not signed by the new identity key",
        )?;
        Ok(new_bytes)
    }

    /// Whether `key` is one this account's identity was rotated away from
    /// (an identity change the log explains).
    pub fn rotated_from(&self, key: &[u8]) -> bool {
        self.former_identity_keys
            .iter()
            .any(|k| k.as_slice() == key)
    }
}

/// Verifies an [`AccountLog`] from the server: the head's signature by
/// `log_key`, every entry's inclusion proof against that head (in
/// increasing index order), then the replay rules. Returns the account's
/// state.
///
/// This proves the entries are in the log the server signed; it cannot
/// prove the server sent all of them. Compare heads with peers and check
/// consistency to catch a server that shows different logs to different
/// people.
pub fn verify_account_log(
    log_key: &[u8],
    username: &str,
    log: &AccountLog,
) -> Result<AccountState, LogError> {
    let head = log
        .head
        .as_ref()
        .ok_or(LogError::Malformed("the account log has no tree head"))?;
    verify_head(log_key, head)?;
    let mut previous: Option<u64> = None;
    let mut entries = Vec::with_capacity(log.entries.len());
    for proven in &log.entries {
        if previous.is_some_and(|p| p >= proven.index) {
            return Err(LogError::BadProof(format!(
                "the account's entries are not in log order (entry {} after entry {})",
                proven.index,
                previous.unwrap_or_default()
            )));
        }
        previous = Some(proven.index);
        let entry = proven
            .entry
            .as_ref()
            .ok_or(LogError::Malformed("a proven entry has no entry"))?;
        verify_inclusion(
            head,
            proven.index,
            &leaf_bytes(entry),
            &proven.inclusion_path,
        )?;
        entries.push(entry.clone());
    }
    AccountState::replay(username, &entries)
}
