//! What the server stores, behind a [`Store`] trait so that a PostgreSQL
//! backend can replace the embedded SQLite one ([`SqliteStore`]).
//!
//! Every backend must pass the conformance suite in
//! `tests/store_conformance.rs` unchanged.
//!
//! Values crossing this boundary are already parsed ([`DeviceId`],
//! [`MessageId`], [`GroupId`]): backends never see malformed ids. Time is
//! passed in as an argument, never read by a backend, so tests control it.
//!
//! Besides the server's roles ([`Store`]), two traits serve the operator's
//! commands, so that they too work on any backend: [`LegalStore`] (the
//! legal key, the export and its transparency report, the warrant canary)
//! and [`AdminStore`] (invite codes, and what the auditor compares with the
//! log). Only `sqlite` knows SQL.

pub(crate) mod expiry;
pub(crate) mod sqlite;

use std::fmt;
use std::future::Future;

use zeroize::Zeroizing;

pub use sqlite::{SqliteStore, create_invites};

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

/// A fresh one-time invite code to hand out (`--registration invite`): 16
/// random bytes, in hex. Store only its [`invite_hash`]
/// ([`AdminStore::add_invites`]).
pub fn new_invite_code() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// What a store keeps of an invite code, and what registration presents
/// ([`NewAccount::invite`]): SHA-256 of the code, trimmed and lowercased.
pub fn invite_hash(code: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(code.trim().to_ascii_lowercase().as_bytes()).into()
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

/// What the server holds about one account, as a legal export hands it
/// over (`crate::legal`; `docs/SERVER_DATA.md`, column "legal export").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedAccount {
    /// The username.
    pub username: String,
    /// Ed25519 identity public key.
    pub identity_key: [u8; 32],
    /// Day of registration.
    pub created_day: UnixDay,
    /// How many transparency-log leaves the account has.
    pub log_entries: u64,
    /// Every device the account ever had, removed ones included, in the
    /// order they were added.
    pub devices: Vec<ExportedDevice>,
}

/// What the server holds about one device of an [`ExportedAccount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDevice {
    /// The device id.
    pub device_id: DeviceId,
    /// The device's Ed25519 public key.
    pub device_key: [u8; 32],
    /// Day it was added.
    pub created_day: UnixDay,
    /// Last day it logged in.
    pub last_seen_day: UnixDay,
    /// Day it was removed; `None` while it is active.
    pub removed_day: Option<UnixDay>,
    /// One-time KeyPackages in its pool.
    pub key_packages: u64,
    /// Whether a last-resort KeyPackage is stored.
    pub last_resort_key_package: bool,
    /// Mailbox entries waiting for it.
    pub queued_messages: u64,
    /// Total size of those entries' payloads, in bytes.
    pub queued_bytes: u64,
}

/// One entry of the transparency report of legal requests (`crate::legal`),
/// as stored. The hashes and the signature are the stored bytes, unchecked:
/// the legal module verifies the chain and names the entry that fails, which
/// it could not do if a backend refused to read a tampered row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    /// Position in the report, from 1.
    pub seq: u64,
    /// The operator's reference for the request.
    pub request_id: String,
    /// Day the request was answered.
    pub day: UnixDay,
    /// What was done (`export`).
    pub kind: String,
    /// How many accounts it covered.
    pub accounts: u64,
    /// The previous entry's hash (32 bytes when intact).
    pub prev_hash: Vec<u8>,
    /// This entry's hash (32 bytes when intact).
    pub hash: Vec<u8>,
    /// The legal key's signature (64 bytes when intact).
    pub signature: Vec<u8>,
}

/// What [`LegalStore::record_export`] read inside its transaction, for the
/// caller's `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSnapshot {
    /// One per requested username, in the order requested: `None` if no
    /// account has that name.
    pub accounts: Vec<Option<ExportedAccount>>,
    /// The report's last entry, which the new one must chain onto; `None`
    /// if the report is empty.
    pub last_entry: Option<ReportRecord>,
}

/// A signed, dated warrant-canary statement, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRecord {
    /// Day it was signed.
    pub day: UnixDay,
    /// The operator's statement.
    pub statement: String,
    /// The legal public key that signed it.
    pub key: [u8; 32],
    /// The signature (see `crate::legal::Canary`).
    pub signature: [u8; 64],
}

/// An account's identity key as stored, for the auditor to compare with the
/// log (so not parsed: a malformed key is a finding, not a storage failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountIdentity {
    /// The username.
    pub username: String,
    /// The stored identity key bytes.
    pub identity_key: Vec<u8>,
}

/// An active (not removed) device as stored, for the auditor to compare
/// with the log (so not parsed, like [`AccountIdentity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveDevice {
    /// Its account.
    pub username: String,
    /// The stored device id bytes.
    pub device_id: Vec<u8>,
    /// The stored device key bytes.
    pub device_key: Vec<u8>,
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

/// What `crate::legal` keeps: the legal signing key, the hash-chained
/// transparency report of legal requests (appended to only by the export
/// that it records), and the warrant canary. The operator's `legal`
/// commands use all of it; the running server reads the canary for
/// `GET /canary`.
///
/// Backends store and return what they are given; signing, chaining and
/// verifying stay in `crate::legal`. As in [`Store`], an `Ok(None)` means
/// "no such thing", never an error.
pub trait LegalStore: Send + Sync + 'static {
    /// The secret of the server's legal signing key (separate from the
    /// log key): the stored one, or `fresh`, stored now, if there is none
    /// yet. Concurrent first calls all get the same key.
    fn legal_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, StoreError>> + Send;

    /// Exports accounts and records the export in the transparency report,
    /// atomically. In one transaction that no other writer can interleave
    /// with, the backend:
    ///
    /// 1. reads the [`ExportSnapshot`] of `usernames` (each account's
    ///    [`ExportedAccount`], and the report's last entry);
    /// 2. calls `plan` with it, which builds what to hand over (`T`, the
    ///    signed document) and the report entry recording it, chained onto
    ///    the last one; `plan` refuses (an unknown account, say) by
    ///    returning an error;
    /// 3. appends that entry (the seq must be new);
    /// 4. calls `deliver` with the `T` (writes the file);
    /// 5. commits, only if every step succeeded, and returns the `T`.
    ///
    /// So every delivered export is in the report, and nothing is recorded
    /// for one that was refused or could not be delivered. The caller's
    /// error type `E` carries its own failures through unchanged.
    ///
    /// Why closures rather than `record_export(entry)` after separate
    /// reads: the entry must chain onto the last one as of the same
    /// snapshot the document was built from, and be kept only if that
    /// document was delivered; only the backend's transaction can hold all
    /// of that together, while signing stays with the caller. Both closures
    /// run while the transaction is open (SQLite: on the writer thread),
    /// so they must be quick and must not call the store.
    fn record_export<T, E, P, D>(
        &self,
        usernames: Vec<String>,
        plan: P,
        deliver: D,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        P: FnOnce(ExportSnapshot) -> Result<(ReportRecord, T), E> + Send + 'static,
        D: FnOnce(&T) -> Result<(), E> + Send + 'static;

    /// Every entry of the transparency report, by seq, oldest first.
    fn report_entries(&self) -> impl Future<Output = Result<Vec<ReportRecord>, StoreError>> + Send;

    /// Stores a signed canary; it becomes the latest.
    fn publish_canary(
        &self,
        canary: CanaryRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The most recently published canary. `Ok(None)`: none was ever
    /// published.
    fn latest_canary(
        &self,
    ) -> impl Future<Output = Result<Option<CanaryRecord>, StoreError>> + Send;
}

/// What the operator's other commands use: invite codes
/// (`sotto-server invite create`), and the stored state that
/// `sotto-server audit` compares with the transparency log (whose leaves it
/// reads through [`LogStore::log_entries`]). The audit's reads change
/// nothing, so a read-only backend can serve them.
pub trait AdminStore: Send + Sync + 'static {
    /// Stores one-time invite codes (their [`invite_hash`]es), unused,
    /// created on `today`, in one transaction. Fails, storing none, if a
    /// hash is already stored.
    fn add_invites(
        &self,
        code_hashes: Vec<[u8; 32]>,
        today: UnixDay,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The transparency-log signing key's secret as stored (unchecked, for
    /// the auditor to judge), without creating one. `Ok(None)`: no log key
    /// is stored (the server never ran on this store).
    fn stored_log_key(
        &self,
    ) -> impl Future<Output = Result<Option<Zeroizing<Vec<u8>>>, StoreError>> + Send;

    /// Every account with its identity key, in no particular order.
    fn account_identities(
        &self,
    ) -> impl Future<Output = Result<Vec<AccountIdentity>, StoreError>> + Send;

    /// Every active (not removed) device of every account, in no
    /// particular order.
    fn active_devices(&self) -> impl Future<Output = Result<Vec<ActiveDevice>, StoreError>> + Send;
}
