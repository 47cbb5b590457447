//! The values that cross the store boundary: ids parsed once at the edge
//! ([`DeviceId`], [`MessageId`], [`GroupId`]), what callers hand a backend to
//! write, and what a backend hands back. Plain data: no backend logic here.

use std::fmt;

use super::{UnixDay, UnixSeconds};

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
    /// The identity rotation that goes with the removal, if any: appended
    /// right after the `DeviceRemoved` leaf, in the same transaction.
    pub rotation: Option<IdentityRotation>,
}

/// An account's new identity key (checked by the caller against the log's
/// replay rules): its `IdentityRotated` leaf, the key, and each remaining
/// device's certificate signed by it, which replaces the stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRotation {
    /// The `IdentityRotated` leaf (an encoded `LogEntry`); its
    /// `account_seq` is the removal's + 1.
    pub log_entry: Vec<u8>,
    /// The new identity key (Ed25519 public key).
    pub identity_key: [u8; 32],
    /// A new certificate for every device that remains.
    pub devices: Vec<(DeviceId, SignedDevice)>,
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

/// A third-party auditor's countersignature of a key-directory epoch, as
/// stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersignatureRecord {
    /// The auditor's public key (32 bytes).
    pub auditor_key: Vec<u8>,
    /// The directory epoch it countersigned.
    pub epoch: u64,
    /// When the auditor signed (milliseconds since the Unix epoch).
    pub signed_at_ms: u64,
    /// The encoded `Countersignature`, exactly as submitted.
    pub countersignature: Vec<u8>,
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
    /// The last day it logged in (see [`AccountStore::touch_device`](super::AccountStore::touch_device)).
    pub last_seen_day: UnixDay,
    /// The operator disabled its account until this day (exclusive;
    /// [`DISABLED_UNTIL_ENABLED`](super::DISABLED_UNTIL_ENABLED): until
    /// enabled again), see [`LegalStore::set_account_disabled`](super::LegalStore::set_account_disabled).
    /// `None`: the account is not disabled.
    pub disabled_until_day: Option<UnixDay>,
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
    /// The server's frank, for an application message that carried a
    /// franking tag; delivered with every copy.
    pub frank: Option<StoredFrank>,
}

/// The server's frank of a franked application message
/// (`sotto_core::franking`): an Ed25519 signature by its franking key over
/// (tag, group id, acceptance time). It names no sender. Stored with the
/// queued message and deleted with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFrank {
    pub signature: [u8; 64],
    /// When the server accepted the message, in milliseconds since the Unix
    /// epoch, truncated to the minute.
    pub accepted_at_ms: u64,
}

impl StoredFrank {
    /// From the two stored columns; `None` unless both are set and whole.
    pub fn from_columns(signature: Option<Vec<u8>>, accepted_at_ms: Option<i64>) -> Option<Self> {
        Some(Self {
            signature: signature?.try_into().ok()?,
            accepted_at_ms: u64::try_from(accepted_at_ms?).ok()?,
        })
    }
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
    /// Disappearing messages: when it may be deleted though undelivered
    /// (the sender's coarse bucket of the expiry in the ciphertext).
    /// `None`: kept for the retention period.
    pub expires_at: Option<UnixSeconds>,
}

/// A commit offered to the [`MailboxStore::submit_commit`](super::MailboxStore::submit_commit) sequencer.
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
    /// A joiner's external commit (docs/PUBLIC_GROUPS.md): the group's
    /// open invite link authorises it instead of a capability
    /// (`token_hash` is `None`).
    pub invite_link: Option<InviteLinkId>,
}

/// The id of an invite link (random, 16 bytes; its secret never reaches
/// the server).
pub type InviteLinkId = [u8; 16];

/// A sealed GroupInfo a member publishes for its group's invite link.
#[derive(Debug, Clone)]
pub struct GroupInfoPublication {
    pub link_id: InviteLinkId,
    pub group_id: GroupId,
    /// The epoch the GroupInfo is for: the group's current one.
    pub epoch: u64,
    /// SHA-256 of the send capability presented: the current epoch's.
    pub token_hash: [u8; 32],
    /// Opaque to the server.
    pub sealed: Vec<u8>,
    pub now: UnixSeconds,
}

/// The latest sealed GroupInfo of an open invite link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteGroupInfo {
    pub group_id: GroupId,
    pub epoch: u64,
    pub sealed: Vec<u8>,
}

/// What closing a group's invite links reads, in the transaction that
/// closes them and records the closure in the transparency report.
#[derive(Debug, Clone)]
pub struct InviteClosingSnapshot {
    /// How many of the group's links are open.
    pub open_links: u64,
    /// The transparency report's last entry, which the new one chains to.
    pub last_entry: Option<ReportRecord>,
}

/// Whether an enqueue stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Newly stored and queued for every recipient whose mailbox had room.
    Queued,
    /// The message id was already stored: nothing was queued again.
    Duplicate,
}

/// The outcome of an accepted (or idempotently re-sent) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Whether this was a resend of an already stored message.
    pub outcome: Enqueued,
    /// Recipients whose mailbox was full: nothing was queued for them but
    /// a missed-messages notice (see [`MailboxStore::enqueue`](super::MailboxStore::enqueue)).
    /// In the order the request named them, each once; empty for a
    /// resend.
    pub skipped: Vec<DeviceId>,
}

/// The outcome of an accepted (or idempotently re-sent) commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAccepted {
    /// The group's epoch after the commit.
    pub new_epoch: u64,
    /// Whether this was a resend of an already accepted commit.
    pub outcome: Enqueued,
    /// Recipients of the commit or of its Welcome whose mailbox was full,
    /// as in [`Queued::skipped`].
    pub skipped: Vec<DeviceId>,
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
    /// The server's frank, if the message has one.
    pub frank: Option<StoredFrank>,
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
    /// The server's frank, if the message has one.
    pub frank: Option<StoredFrank>,
}

/// Told about every mailbox entry once it is committed, in commit order (so,
/// for one device, in `seq` order), on the backend's writer. The server
/// pushes these to connected devices without reading them back.
pub type EntryListener = Box<dyn Fn(Vec<NewEntry>) + Send + Sync>;

/// What one [`MailboxStore::expire`](super::MailboxStore::expire) deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    /// Mailbox entries nobody fetched within the retention period.
    pub mailbox_entries: u64,
    /// Groups with no accepted commit or message within it.
    pub groups: u64,
}

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
    /// The day the oldest queued mailbox entry was queued, if any.
    pub oldest_entry_day: Option<UnixDay>,
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
    /// Its Web Push endpoint, if it turned pushes on.
    pub push_endpoint: Option<String>,
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

/// What [`LegalStore::record_export`](super::LegalStore::record_export) read inside its transaction, for the
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

/// What [`LegalStore::set_account_disabled`](super::LegalStore::set_account_disabled) read inside its transaction,
/// for the caller's `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingSnapshot {
    /// The account exists.
    pub exists: bool,
    /// Its `disabled_until_day` before the change (see
    /// [`DeviceRecord::disabled_until_day`]).
    pub disabled_until_day: Option<UnixDay>,
    /// The report's last entry, which the new one must chain onto.
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

/// An invite code as stored: only its hash, never the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    /// SHA-256 of the code ([`invite_hash`](super::invite_hash)).
    pub code_hash: [u8; 32],
    /// The day the operator created it.
    pub created_day: UnixDay,
    /// The day it registered an account, if it did.
    pub used_day: Option<UnixDay>,
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
