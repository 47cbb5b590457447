//! What the server stores, behind a [`Store`] trait so that a PostgreSQL
//! backend can replace the embedded SQLite one ([`SqliteStore`]).
//!
//! Every backend must pass the conformance suite in
//! `tests/store_conformance.rs` unchanged.
//!
//! Values crossing this boundary are already parsed ([`DeviceId`],
//! [`MessageId`], [`GroupId`]): backends never see malformed ids. Time is
//! passed in as an argument, never read by a backend, so tests control it.

pub(crate) mod expiry;
pub(crate) mod sqlite;

use std::fmt;
use std::future::Future;

use zeroize::Zeroizing;

pub use sqlite::{SqliteStore, create_invites, invite_hash};

/// Seconds since the Unix epoch. Only passed in (mailbox expiry); stores
/// keep the day ([`day_of`]).
pub type UnixSeconds = u64;
/// Days since the Unix epoch: the only granularity at which the server
/// records when an account was created or last seen.
pub type UnixDay = u64;

/// Converts seconds to the day they fall in.
pub fn day_of(seconds: UnixSeconds) -> UnixDay {
    seconds / 86_400
}

/// The rule every backend applies to a send (backends call it so they
/// agree): the current epoch's capability for a message framed in the
/// current epoch, or — only while `previous_epoch_open` — the previous
/// epoch's capability for a message framed in the previous epoch.
pub fn check_capability(
    message: &GroupMessage,
    current_epoch: u64,
    current_hash: &[u8],
    previous_hash: Option<&[u8]>,
) -> Result<(), EnqueueError> {
    let presented = message.token_hash.as_slice();
    let capability_epoch = if presented == current_hash {
        current_epoch
    } else if message.previous_epoch_open && Some(presented) == previous_hash {
        current_epoch.saturating_sub(1)
    } else {
        return Err(EnqueueError::NotAuthorized);
    };
    if message.epoch != capability_epoch {
        return Err(EnqueueError::WrongEpoch {
            framed: message.epoch,
            capability: capability_epoch,
        });
    }
    Ok(())
}

/// A device id: exactly [`sotto_proto::ID_LEN`] bytes chosen by the device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; sotto_proto::ID_LEN]);

/// A sender-chosen message id: exactly [`sotto_proto::ID_LEN`] bytes;
/// enqueue is idempotent on it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; sotto_proto::ID_LEN]);

macro_rules! fixed_id {
    ($name:ident) => {
        impl $name {
            /// Parses wire bytes; `None` unless exactly `ID_LEN` bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; sotto_proto::ID_LEN]>::try_from(bytes).ok().map(Self)
            }

            /// Wraps an array.
            pub const fn new(bytes: [u8; sotto_proto::ID_LEN]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; sotto_proto::ID_LEN] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

fixed_id!(DeviceId);
fixed_id!(MessageId);

/// An MLS group id, opaque to the server: 1 to [`GroupId::MAX_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupId(Vec<u8>);

impl GroupId {
    /// Longest group id accepted. openmls uses 16 random bytes; this leaves
    /// room for other clients without letting ids become storage.
    pub const MAX_LEN: usize = 256;

    /// Parses wire bytes; `None` if empty or longer than [`Self::MAX_LEN`].
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        (!bytes.is_empty() && bytes.len() <= Self::MAX_LEN).then(|| Self(bytes.to_vec()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({self})")
    }
}

/// A device as it was registered: the certificate bytes the identity key
/// signed, and that signature. Handed out unchanged with KeyPackages so
/// clients can verify it themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDevice {
    /// Encoded `DeviceCertificate`.
    pub certificate: Vec<u8>,
    /// Identity-key signature over `device_transcript(certificate)`.
    pub identity_signature: Vec<u8>,
}

/// A new account with its first device, already verified by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// A valid username (see `sotto_proto::is_valid_username`).
    pub username: String,
    /// Ed25519 identity public key.
    pub identity_key: [u8; 32],
    /// The first device's id.
    pub device_id: DeviceId,
    /// The first device's Ed25519 public key.
    pub device_key: [u8; 32],
    /// The device's certificate as signed by the identity key.
    pub device: SignedDevice,
    /// Day of registration (also the first last-seen day).
    pub today: UnixDay,
    /// The account's first transparency-log leaves (encoded `LogEntry`s,
    /// already verified), appended in order in the same transaction.
    pub log_entries: Vec<Vec<u8>>,
    /// The hash of an invite code to consume (registration policy
    /// "invite"): it must be unused, and is marked used in the same
    /// transaction.
    pub invite: Option<[u8; 32]>,
}

/// A device added to an existing account, already verified by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// The account.
    pub username: String,
    /// The new device's id; must not be used by any device, even a removed
    /// one.
    pub device_id: DeviceId,
    /// The device's Ed25519 public key.
    pub device_key: [u8; 32],
    /// The device's certificate as signed by the identity key.
    pub device: SignedDevice,
    /// Day it was added (also its first last-seen day).
    pub today: UnixDay,
    /// The `DeviceAdded` leaf (an encoded `LogEntry`) to append.
    pub log_entry: Vec<u8>,
    /// The entry's `account_seq`: it must equal the number of log entries
    /// the account already has, or nothing is written.
    pub account_seq: u64,
}

/// A device to remove from its account, already verified by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRemoval {
    /// The account.
    pub username: String,
    /// The device; it must be an active device of `username`.
    pub device_id: DeviceId,
    /// Day of the removal.
    pub today: UnixDay,
    /// The `DeviceRemoved` leaf (an encoded `LogEntry`) to append.
    pub log_entry: Vec<u8>,
    /// The entry's `account_seq`, checked as in [`NewDevice::account_seq`].
    pub account_seq: u64,
}

/// One stored transparency-log leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Position in the log, from 0, without gaps.
    pub index: u64,
    /// The account the entry is about.
    pub username: String,
    /// The leaf: an encoded `LogEntry`, exactly as hashed into the tree.
    pub entry: Vec<u8>,
}

/// A registered device, as needed to log it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device id.
    pub device_id: DeviceId,
    /// Owner of the device.
    pub username: String,
    /// Ed25519 public key that signs login challenges.
    pub device_key: [u8; 32],
    /// The device was removed from its account: it may not log in.
    pub removed: bool,
    /// The last day it logged in (see [`Store::touch_device`]).
    pub last_seen_day: UnixDay,
}

/// How many KeyPackages a device has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPackageStatus {
    /// One-time KeyPackages in the pool.
    pub remaining: u32,
    /// Whether a last-resort KeyPackage is stored.
    pub has_last_resort: bool,
}

/// One KeyPackage claimed for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    /// The device the KeyPackage belongs to.
    pub device_id: DeviceId,
    /// The device as registered.
    pub device: SignedDevice,
    /// The KeyPackage bytes, as uploaded.
    pub key_package: Vec<u8>,
    /// One-time KeyPackages left in this device's pool after the claim.
    pub remaining: u32,
    /// Whether this is the last-resort KeyPackage (which stays stored).
    pub last_resort: bool,
}

/// The result of claiming KeyPackages for every device of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageBundle {
    /// The account's identity key.
    pub identity_key: [u8; 32],
    /// One entry per device that had a KeyPackage; devices with neither a
    /// one-time nor a last-resort KeyPackage are left out, so this may be
    /// empty.
    pub devices: Vec<ClaimedKeyPackage>,
}

/// A payload to queue for a set of devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Sender-chosen id; a second enqueue with the same id is a no-op.
    pub message_id: MessageId,
    /// Recipient devices; all must be registered.
    pub recipients: Vec<DeviceId>,
    /// The MLS message, opaque to the server.
    pub payload: Vec<u8>,
}

/// An application message (or proposal) for an existing group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessage {
    /// The group; it must have been created by a commit.
    pub group_id: GroupId,
    /// SHA-256 of the send capability presented: it must be the group's
    /// current epoch's, or the previous epoch's while `previous_epoch_open`.
    pub token_hash: [u8; 32],
    /// The epoch in the MLS message's clear-text framing: it must be the
    /// epoch of the capability presented.
    pub epoch: u64,
    /// Whether the previous epoch's capability is still accepted: only for
    /// a short grace period after the commit that ended it (the server keeps
    /// that in memory, so after a restart it is refused).
    pub previous_epoch_open: bool,
    /// What to queue.
    pub envelope: Envelope,
    /// When it was queued, for expiry.
    pub now: UnixSeconds,
}

/// A commit offered to the [`Store::submit_commit`] sequencer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSubmission {
    /// The group.
    pub group_id: GroupId,
    /// The epoch the commit was created in; 0 creates the group.
    pub epoch: u64,
    /// SHA-256 of the send capability presented; must be the current
    /// epoch's. `None` when creating a group.
    pub token_hash: Option<[u8; 32]>,
    /// SHA-256 of the capability of the epoch the commit starts.
    pub next_token_hash: [u8; 32],
    /// The commit, queued for the existing members.
    pub commit: Envelope,
    /// The Welcome for new members, queued only if the commit is accepted.
    pub welcome: Option<Envelope>,
    /// When it was queued, for expiry.
    pub now: UnixSeconds,
}

/// Whether an enqueue stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Newly stored and queued for every recipient.
    Queued,
    /// The message id was already stored: nothing was queued again.
    Duplicate,
}

/// The outcome of an accepted (or idempotently re-sent) commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitAccepted {
    /// The group's epoch after the commit.
    pub new_epoch: u64,
    /// Whether this was a resend of an already accepted commit.
    pub outcome: Enqueued,
}

/// One queued message in a device's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Position in the device's mailbox, increasing.
    pub seq: u64,
    /// The sender's message id.
    pub message_id: MessageId,
    /// The MLS message.
    pub payload: Vec<u8>,
}

/// A mailbox entry just committed, as told to the [`EntryListener`]. The
/// payload is shared by every recipient of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Whose mailbox.
    pub device_id: DeviceId,
    /// Position in that mailbox.
    pub seq: u64,
    /// The sender's message id.
    pub message_id: MessageId,
    /// The MLS message.
    pub payload: std::sync::Arc<[u8]>,
}

/// Told about every mailbox entry once it is committed, in commit order (so,
/// for one device, in `seq` order), on the backend's writer. The server
/// pushes these to connected devices without reading them back.
pub type EntryListener = Box<dyn Fn(Vec<NewEntry>) + Send + Sync>;

/// Counts of what the store holds, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Registered accounts.
    pub accounts: u64,
    /// Active (registered and not removed) devices.
    pub devices: u64,
    /// Mailbox entries waiting for acknowledgement.
    pub mailbox_entries: u64,
    /// Stored payloads (each shared by all its mailbox entries).
    pub payloads: u64,
}

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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Self::Full,
            _ => Self::Backend(e.to_string()),
        }
    }
}

/// Why [`Store::register`] refused an account.
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

/// Why [`Store::add_device`] refused a device.
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

/// Why [`Store::remove_device`] refused a removal.
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
    /// A recipient's mailbox is at the server's limit.
    #[error("the mailbox of device {0} is full")]
    MailboxFull(DeviceId),
    /// A recipient is not a registered device, or was removed.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
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
    /// A recipient's mailbox is at the server's limit.
    #[error("the mailbox of device {0} is full")]
    MailboxFull(DeviceId),
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
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<EnqueueError> for CommitError {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::UnknownGroup(g) => Self::UnknownGroup(g),
            EnqueueError::NotAuthorized | EnqueueError::WrongEpoch { .. } => Self::NotAuthorized,
            EnqueueError::MailboxFull(d) => Self::MailboxFull(d),
            EnqueueError::UnknownDevice(d) => Self::UnknownDevice(d),
            EnqueueError::Store(s) => Self::Store(s),
        }
    }
}

/// Storage for accounts, devices, KeyPackages, groups, mailboxes and the
/// transparency log: one trait per role, so each backend module implements
/// one family of tables, and this umbrella trait for what the server needs.
///
/// Every method that changes state returns only after the change is
/// durable: a `Done` sent to a client after an `Ok` here survives a crash.
/// Methods are `async` so a networked backend fits; an `Ok(None)` always
/// means "no such thing", never an error.
pub trait Store: AccountStore + KeyPackageStore + MailboxStore + LogStore {
    /// Counts what is stored.
    fn stats(&self) -> impl Future<Output = Result<StoreStats, StoreError>> + Send;
}

/// Accounts and their devices.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account with its first device and appends its log
    /// entries, all in one transaction.
    fn register(
        &self,
        account: NewAccount,
    ) -> impl Future<Output = Result<(), RegisterError>> + Send;

    /// Looks up a device of `username`, removed ones included (see
    /// [`DeviceRecord::removed`]). `Ok(None)`: the user does not exist or
    /// has no such device (callers must not tell the two apart).
    fn device(
        &self,
        username: &str,
        device_id: DeviceId,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, StoreError>> + Send;

    /// Records that a device was seen on `today`.
    fn touch_device(
        &self,
        device_id: DeviceId,
        today: UnixDay,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds a device to an existing account and appends its `DeviceAdded`
    /// leaf, in one transaction, if the entry's `account_seq` is still the
    /// account's next one.
    fn add_device(
        &self,
        device: NewDevice,
    ) -> impl Future<Output = Result<(), AddDeviceError>> + Send;

    /// Marks an active device removed (it can no longer log in or be
    /// claimed or addressed), deletes its KeyPackages and mailbox, and
    /// appends its `DeviceRemoved` leaf, in one transaction, if the entry's
    /// `account_seq` is still the account's next one. The device id stays
    /// taken.
    fn remove_device(
        &self,
        removal: DeviceRemoval,
    ) -> impl Future<Output = Result<(), RemoveDeviceError>> + Send;
}

/// Each device's pool of KeyPackages.
pub trait KeyPackageStore: Send + Sync + 'static {
    /// Counts a device's KeyPackages (zero for an unknown device).
    fn key_package_status(
        &self,
        device_id: DeviceId,
    ) -> impl Future<Output = Result<KeyPackageStatus, StoreError>> + Send;

    /// Adds one-time KeyPackages to a device's pool and, if `last_resort` is
    /// `Some`, replaces its last-resort KeyPackage.
    fn upload_key_packages(
        &self,
        device_id: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<KeyPackageStatus, StoreError>> + Send;

    /// Atomically takes one KeyPackage for every active device of `username`
    /// (only those listed in `only`, if it is not empty): a one-time one
    /// (deleted) or, if the pool is empty, the last-resort one (kept).
    /// `Ok(None)`: no account named `username`.
    fn claim_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> impl Future<Output = Result<Option<KeyPackageBundle>, StoreError>> + Send;
}

/// Groups (their epoch and capability), the commit sequencer, and
/// per-device mailboxes.
pub trait MailboxStore: Send + Sync + 'static {
    /// Queues an application message for an existing group.
    fn enqueue(
        &self,
        message: GroupMessage,
    ) -> impl Future<Output = Result<Enqueued, EnqueueError>> + Send;

    /// The commit sequencer: accepts exactly one commit per group epoch and,
    /// in the same transaction, queues the commit and its Welcome.
    fn submit_commit(
        &self,
        submission: CommitSubmission,
    ) -> impl Future<Output = Result<CommitAccepted, CommitError>> + Send;

    /// The group's current epoch. `Ok(None)`: unknown group.
    fn group_epoch(
        &self,
        group_id: &GroupId,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Up to `limit` mailbox entries of a device with `seq > after`, oldest
    /// first.
    fn fetch_mailbox(
        &self,
        device_id: DeviceId,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<MailboxEntry>, StoreError>> + Send;

    /// Deletes the given entries of this device's mailbox (others' entries
    /// and unknown seqs are ignored) and every payload no entry refers to
    /// any more. Returns how many entries were deleted.
    fn ack(
        &self,
        device_id: DeviceId,
        seqs: Vec<u64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes mailbox entries queued on a day before the day of `cutoff`
    /// (queue times are kept as whole days, so an entry lives at least the
    /// retention period and less than one day longer), and orphaned
    /// payloads. Returns how many entries were deleted.
    fn expire(&self, cutoff: UnixSeconds) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Sets the [`EntryListener`] (once; later calls are ignored).
    fn set_entry_listener(&self, listener: EntryListener);
}

/// The transparency log's leaves and signing key.
pub trait LogStore: Send + Sync + 'static {
    /// The secret of the server's transparency-log signing key: the stored
    /// one, or `fresh`, stored now, if there is none yet. Concurrent first
    /// calls all get the same key.
    fn log_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, StoreError>> + Send;

    /// Every log leaf of `username`, in log order. Empty: no such account
    /// (or one created before the log existed).
    fn account_log(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Vec<LogRecord>, StoreError>> + Send;

    /// Up to `limit` log leaves with `index >= start`, in log order. Every
    /// committed prefix of the log is contiguous: a reader never sees leaf
    /// `n + 1` without leaf `n`.
    fn log_entries(
        &self,
        start: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LogRecord>, StoreError>> + Send;
}
