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
    /// A joiner's external commit names an invite link the operator closed.
    #[error("the operator closed this invite link")]
    InviteLinkClosed,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why publishing or fetching an invite link's GroupInfo failed.
#[derive(Debug, thiserror::Error)]
pub enum InviteLinkError {
    /// No GroupInfo was ever published for this link id.
    #[error("unknown invite link")]
    UnknownLink,
    /// The operator closed the link (or every link of its group).
    #[error("the operator closed this invite link")]
    Closed,
    /// The group does not exist.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The capability is not the group's current one, or the link id is
    /// bound to another group.
    #[error("not authorised to publish for this group or link")]
    NotAuthorized,
    /// The GroupInfo is not for the group's current epoch.
    #[error("group info for epoch {submitted}: group is at epoch {current}")]
    StaleEpoch { submitted: u64, current: u64 },
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

/// Why `SqliteStore::backup` wrote no backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The operator named a data directory without a database.
    #[error("there is no server database at {}; check --data", .0.display())]
    NoDatabase(std::path::PathBuf),
    /// The operator named an output file that exists: it is never
    /// overwritten.
    #[error("{} exists; a backup never overwrites a file: choose a new name", .0.display())]
    OutExists(std::path::PathBuf),
    /// The copy failed its own check (the live database may be damaged:
    /// run `PRAGMA integrity_check` on it with the server stopped).
    #[error("the copy failed its integrity check, so no backup was written: {0}")]
    Unsound(String),
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `SqliteStore::restore` restored nothing (nothing is left behind
/// under the database's name).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target directory holds a database: a restore never overwrites
    /// one.
    #[error("{} exists; restore into a new directory (a restore never overwrites a database)", .0.display())]
    TargetHasDatabase(std::path::PathBuf),
    /// The file is not a backup at all.
    #[error("{} is not a sotto-server backup: {reason}", path.display())]
    NotABackup {
        /// The file.
        path: std::path::PathBuf,
        /// Why not.
        reason: String,
    },
    /// The backup is damaged (truncated, corrupted).
    #[error("{} is damaged and was not restored: {reason}; use another backup", path.display())]
    Unsound {
        /// The file.
        path: std::path::PathBuf,
        /// What the checks found.
        reason: String,
    },
    /// The backup was made by a newer server.
    #[error(
        "the backup has schema version {version}, newer than this server understands ({supported}); restore it with a newer sotto-server"
    )]
    TooNew {
        /// The backup's version.
        version: i64,
        /// The newest this server understands.
        supported: i64,
    },
    /// The backup holds no signing key (made with `--exclude-keys`), but
    /// records that key signed: a new key would make clients refuse the
    /// server.
    #[error(
        "the backup holds no {key} signing key (made with --exclude-keys?) but {signed} records it signed; clients pinned that key, so a new one would make them refuse the server: add --keys-from naming a full backup or the old data directory"
    )]
    KeysMissing {
        /// The key's name (`log`, `legal`).
        key: String,
        /// How many stored records it signed.
        signed: u64,
    },
    /// `--keys-from` cannot supply the keys.
    #[error("--keys-from {}: {reason}", path.display())]
    KeysFrom {
        /// The database named.
        path: std::path::PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
