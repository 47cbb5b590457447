//! Why a store operation failed: one enum per operation, each separating
//! the caller's fault (an unknown group, a stale epoch) from
//! the backend's ([`StoreError`], which the server answers with `INTERNAL`).

use super::{DeviceId, GroupId, MessageId};

/// The storage backend failed; not the client's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The store is shutting down and takes no more writes.
    #[error("storage is shutting down")]
    Closed,
    /// The disk, or the operator's quota, is full: nothing was written.
    #[error("storage is full")]
    Full,
}

/// Why [`AccountStore::register`](super::AccountStore::register) refused an account.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Someone already registered this username.
    #[error("username is taken")]
    UsernameTaken,
    /// Another account already uses this device id.
    #[error("device id {0} is already registered")]
    DeviceIdTaken(DeviceId),
    /// The invite code is unknown or was used already.
    #[error("the invite code is unknown or already used")]
    BadInvite,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`AccountStore::add_device`](super::AccountStore::add_device) refused a device.
#[derive(Debug, thiserror::Error)]
pub enum AddDeviceError {
    /// No account has this username.
    #[error("unknown account")]
    UnknownUser,
    /// Some device (of any account, removed or not) already has this id.
    #[error("device id {0} is already registered")]
    DeviceIdTaken(DeviceId),
    /// The account's log moved on: the entry's `account_seq` is stale.
    #[error("the account's next log entry has account_seq {expected}")]
    StaleSequence {
        /// The `account_seq` the next entry must carry.
        expected: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`AccountStore::remove_device`](super::AccountStore::remove_device) refused a removal.
#[derive(Debug, thiserror::Error)]
pub enum RemoveDeviceError {
    /// The device is not an active device of the account.
    #[error("no such active device")]
    UnknownDevice,
    /// The account's log moved on: the entry's `account_seq` is stale.
    #[error("the account's next log entry has account_seq {expected}")]
    StaleSequence {
        /// The `account_seq` the next entry must carry.
        expected: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// No commit ever created this group.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The send capability is not the group's.
    #[error("not authorised to send to this group")]
    NotAuthorized,
    /// The capability is the group's, but the MLS message is framed for
    /// another epoch than the capability's.
    #[error("the message is for epoch {framed}, its capability for epoch {capability}")]
    WrongEpoch { framed: u64, capability: u64 },
    /// A recipient is not a registered device, or was removed.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// Another message is queued under this id (a resend of the same bytes
    /// is a duplicate, not this).
    #[error("message id {0} is taken by another message")]
    IdInUse(MessageId),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the commit sequencer refused a commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The group does not exist and the commit is not for epoch 0.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The send capability is not the current epoch's.
    #[error("not authorised to commit to this group")]
    NotAuthorized,
    /// Another commit for this epoch won; the group has moved on.
    #[error("commit for epoch {submitted} rejected: group is at epoch {current}")]
    StaleEpoch {
        /// The epoch the rejected commit was made in.
        submitted: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// A recipient is not a registered device.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// The commit's or Welcome's id is taken by another message.
    #[error("message id {0} is taken by another message")]
    IdInUse(MessageId),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EnqueueError> for CommitError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::UnknownGroup(g) => Self::UnknownGroup(g),
            EnqueueError::NotAuthorized | EnqueueError::WrongEpoch { .. } => Self::NotAuthorized,
            EnqueueError::UnknownDevice(d) => Self::UnknownDevice(d),
            EnqueueError::IdInUse(id) => Self::IdInUse(id),
            EnqueueError::Store(s) => Self::Store(s),
        }
    }
}
