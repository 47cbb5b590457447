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
//!
//! - `records`: the values crossing the boundary (ids, rows in and out)
//! - `errors`: one error enum per operation, and [`StoreError`]
//! - `expiry`: the sweep that deletes what outlived the retention period

mod any;
pub mod cluster;
mod errors;
pub(crate) mod expiry;
pub(crate) mod missed;
pub mod postgres;
mod records;
pub(crate) mod sqlite;

use std::future::Future;

use zeroize::Zeroizing;

pub use any::{AnyStore, StoreLocation};
pub use cluster::{ClusterStore, RecordedEpoch};
pub use errors::*;
pub use postgres::PostgresStore;
pub use records::*;
pub use sqlite::{BackupSummary, RestoreSummary, SpaceTuning, SqliteStore};

/// Seconds since the Unix epoch. Only passed in (mailbox expiry); stores
/// keep the day ([`day_of`]).
pub type UnixSeconds = u64;
/// Days since the Unix epoch: the only granularity at which the server
/// records when an account was created or last seen.
pub type UnixDay = u64;

/// Most missed-messages notices queued for one device that each name a
/// group (see [`MailboxStore::enqueue`]); beyond them, losses are counted in
/// one notice that names none.
pub const MAX_MISSED_NOTICES: u64 = 64;

/// [`DeviceRecord::disabled_until_day`] of an account disabled until the
/// operator enables it again (the largest day every backend can store).
pub const DISABLED_UNTIL_ENABLED: UnixDay = i64::MAX.unsigned_abs();

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

/// Storage for accounts, devices, KeyPackages, groups, mailboxes and the
/// transparency log: one trait per role, so each backend module implements
/// one family of tables, and this umbrella trait for what the server needs.
///
/// Every method that changes state returns only after the change is
/// durable: a `Done` sent to a client after an `Ok` here survives a crash.
/// Methods are `async` so a networked backend fits; an `Ok(None)` always
/// means "no such thing", never an error.
pub trait Store:
    AccountStore
    + KeyPackageStore
    + MailboxStore
    + LogStore
    + ClusterStore
    + ModerationStore
    + InviteLinkStore
    + PushStore
{
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

    /// Like [`claim_key_packages`](Self::claim_key_packages), but hands out
    /// only last-resort KeyPackages and takes nothing: devices without one
    /// are left out. For claims beyond the target's rate limit, so that a
    /// flood of claims neither drains a pool nor stops others from adding
    /// the account. Changes nothing, so a backend may serve it from a read
    /// replica. `Ok(None)`: no account named `username`.
    fn last_resort_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> impl Future<Output = Result<Option<KeyPackageBundle>, StoreError>> + Send;
}

/// Groups (their epoch and capability), the commit sequencer, and
/// per-device mailboxes.
pub trait MailboxStore: Send + Sync + 'static {
    /// Queues an application message for an existing group.
    ///
    /// A recipient whose mailbox holds the cap's number of messages (see
    /// [`set_mailbox_limit`](Self::set_mailbox_limit)) is skipped, not
    /// refused: the message is queued for every other recipient and the
    /// skipped devices are returned ([`Queued::skipped`]). Otherwise one
    /// full mailbox (which anyone can fill) would stop a whole group.
    ///
    /// Each skipped device is told, in its own mailbox order, by a
    /// *missed-messages notice*: an entry whose payload is
    /// `sotto_proto::missed_notice::encode` of a `MissedMessages` (group
    /// id, and how many messages, commits and Welcomes were lost). Why a
    /// queued entry rather than a flag read at login: it reaches the
    /// device through the same push, fetch and acknowledgement as
    /// messages, after exactly the entries queued before the loss, and a
    /// crash between delivery and processing loses nothing. Notices do not
    /// count against the cap, and are bounded apart:
    ///
    /// - a device has at most one queued notice per group that a loss of
    ///   the same kind updates in place (its counts grow, so they are "at
    ///   least"); a lost commit or Welcome after a queued notice that
    ///   reported none adds a new notice, so a device that already
    ///   processed the first still learns it can no longer follow the
    ///   group;
    /// - a device with [`MAX_MISSED_NOTICES`] queued notices gets losses
    ///   of further groups counted in one more notice with an empty group
    ///   id ("other groups").
    ///
    /// A send that skipped every recipient stores no payload, so its
    /// message id is not remembered: a resend counts again in the notices
    /// (which is why they say "at least"). A notice's message id is derived
    /// from the device and the lost message's id, hashed again while taken.
    ///
    /// De-duplication: a message id queued with the same bytes is a resend,
    /// answered [`Enqueued::Duplicate`] before the capability is checked
    /// (after a crash a sender resends with the capability of an epoch
    /// that may have moved on, and only a holder of the ciphertext can
    /// produce it). A queued id with other bytes is [`EnqueueError::IdInUse`],
    /// but only once the capability passed, so an outsider cannot probe
    /// which ids are queued.
    fn enqueue(
        &self,
        message: GroupMessage,
    ) -> impl Future<Output = Result<Queued, EnqueueError>> + Send;

    /// Adds recipients to a message sent by [`enqueue`](Self::enqueue): a
    /// group with more member devices than one frame may name
    /// ([`sotto_proto::MAX_RECIPIENTS`]) gets the same message id and bytes
    /// in several frames. Checked like `enqueue` (the capability always);
    /// recipients that already hold an entry for the message are not
    /// queued again. Nothing new queued: `Duplicate`. If every earlier
    /// recipient acknowledged already (the payload is gone), the message is
    /// stored again for these recipients.
    fn enqueue_more(
        &self,
        message: GroupMessage,
    ) -> impl Future<Output = Result<Queued, EnqueueError>> + Send;

    /// The commit sequencer: accepts exactly one commit per group epoch and,
    /// in the same transaction, queues the commit and its Welcome. Full
    /// mailboxes never refuse a commit: their devices are skipped and sent a
    /// notice as in [`enqueue`](Self::enqueue), and the commit is queued
    /// for every other recipient in the same transaction or not at all.
    fn submit_commit(
        &self,
        submission: CommitSubmission,
    ) -> impl Future<Output = Result<CommitAccepted, CommitError>> + Send;

    /// Adds recipients to the group's latest accepted commit and to its
    /// Welcome, as [`enqueue_more`](Self::enqueue_more) does for messages:
    /// the same commit id and bytes, the capability of the epoch the commit
    /// ended, and the `next_token_hash` it set. A commit that is no longer
    /// the latest is refused with `StaleEpoch` (a member committed in
    /// between; the sender sends its parts back to back, so this is a
    /// narrow race, and a device it leaves out is behind as after a lost
    /// commit).
    fn submit_commit_more(
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

    /// Deletes what is older than the retention period, by whole days (an
    /// entry lives at least the retention period and less than one day
    /// longer): mailbox entries queued on a day before the day of
    /// `cutoff`, orphaned payloads, accepted-commit ids recorded before
    /// it, and groups whose last accepted commit or message was before it
    /// (a dead group's row would otherwise stay forever; its members could
    /// not have caught up anyway, since everything queued for them has
    /// expired). Afterwards such a group is unknown: sends to it are
    /// refused, and an epoch-0 commit may create it afresh.
    fn expire(
        &self,
        cutoff: UnixSeconds,
    ) -> impl Future<Output = Result<Expired, StoreError>> + Send;

    /// An ephemeral send ([`GroupMessage`] that is delivered only to
    /// connections open now): checks the group and the capability as
    /// [`enqueue`](Self::enqueue) does, and stores nothing.
    fn check_send(
        &self,
        message: GroupMessage,
    ) -> impl Future<Output = Result<(), EnqueueError>> + Send;

    /// Disappearing messages: deletes every message whose `expires_at`
    /// ([`GroupMessage::expires_at`]) is at or before `now`, with its
    /// mailbox entries, delivered or not. Returns how many entries were
    /// deleted.
    fn expire_disappearing(
        &self,
        now: UnixSeconds,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Caps the entries (messages, commits, Welcomes; not missed-messages
    /// notices) one device's mailbox may hold; beyond it the device is
    /// skipped (see [`enqueue`](Self::enqueue)). Default: no cap.
    fn set_mailbox_limit(&self, entries: u32);

    /// Sets the [`EntryListener`] (once; later calls are ignored).
    fn set_entry_listener(&self, listener: EntryListener);
}

/// Web Push (`crate::push`): the server's VAPID key and each device's push
/// endpoint (off, `NULL`, by default).
pub trait PushStore: Send + Sync + 'static {
    /// The secret of the server's VAPID key (a P-256 scalar): the stored
    /// one, or `fresh`, stored now, if there is none yet. Kept with the
    /// other server keys, so every node signs with the same key. A lost key
    /// only stops pushes to browsers that subscribed with the old one, until
    /// they subscribe again: so it is created afresh rather than refused.
    fn push_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, StoreError>> + Send;

    /// Sets (`Some`) or clears (`None`) the push endpoint of an active
    /// device. `Ok(false)`: no such active device (nothing stored).
    fn set_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: Option<String>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The push endpoints of those of `devices` that are active and have
    /// one. Changes nothing.
    fn push_endpoints(
        &self,
        devices: Vec<DeviceId>,
    ) -> impl Future<Output = Result<Vec<(DeviceId, String)>, StoreError>> + Send;

    /// Clears the device's push endpoint if it is still `endpoint` (the push
    /// service said it is gone; a newer one the device set meanwhile stays).
    fn clear_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: String,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The transparency log's leaves and signing key.
pub trait LogStore: Send + Sync + 'static {
    /// The secret of the server's transparency-log signing key: the stored
    /// one, or `fresh`, stored now, if there is none yet. Concurrent first
    /// calls all get the same key. Fails, storing nothing, if there is no
    /// key but the log has entries (a backup restored without its keys):
    /// clients pinned the old key.
    fn log_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, StoreError>> + Send;

    /// The secret of the server's franking key (it signs the frank of every
    /// franked application message it accepts; `sotto_core::franking`):
    /// the stored one, or `fresh`, stored now, if there is none yet. Kept
    /// with the other signing keys. A lost key loses nothing stored (the
    /// server keeps no franks), only the means to verify reports of messages
    /// franked before: so it is created afresh rather than refused.
    fn franking_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, StoreError>> + Send;

    /// The secret of the key directory's VRF key (it hides usernames behind
    /// the directory's labels): the stored one, or `fresh`, stored now, if
    /// there is none yet. Kept with the other signing keys, so a backup made
    /// with `--exclude-keys` leaves it out. (A directory opened with another
    /// key refuses to start, so a lost key cannot silently hide accounts.)
    fn directory_vrf_secret(
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

    /// Appends `entry` (an encoded web-release `LogEntry`) to the log,
    /// filed under [`sotto_proto::WEB_RELEASE_USERNAME`], unless the latest
    /// leaf filed there is exactly these bytes. The check and the append
    /// are one transaction, serialised with every other log append, so
    /// several nodes starting at once with one release append it once.
    /// Returns whether it appended.
    fn append_web_release(
        &self,
        entry: Vec<u8>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores an auditor's countersignature (checked by the caller),
    /// replacing one of the same auditor and epoch that was signed
    /// earlier, and keeps only the auditor's `keep` newest (by epoch).
    /// Countersignatures of any auditor signed before `expire_before_ms`
    /// are deleted (auditors that stopped, or keys used once).
    fn add_countersignature(
        &self,
        record: CountersignatureRecord,
        keep: usize,
        expire_before_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The auditor's newest countersignature (largest epoch, then latest
    /// signed) of a directory epoch at most `max_epoch`.
    /// `Ok(None)`: it countersigned no such epoch.
    fn countersignature(
        &self,
        auditor_key: &[u8],
        max_epoch: u64,
    ) -> impl Future<Output = Result<Option<CountersignatureRecord>, StoreError>> + Send;
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
    /// yet. Concurrent first calls all get the same key. Fails, storing
    /// nothing, if there is no key but report entries or canaries it signed
    /// are stored.
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

    /// Disables an account (`disabled_until_day`: `Some(day)`, see
    /// [`DeviceRecord::disabled_until_day`]) or enables it (`None`), and
    /// records the action in the transparency report, atomically: in one
    /// transaction the backend reads the [`StandingSnapshot`] of
    /// `username`, calls `plan` with it (which refuses, e.g. an unknown
    /// account, by returning an error, or returns the report entry chained
    /// onto the last one), appends the entry, sets the account's
    /// `disabled_until_day`, commits, and returns the entry. Like
    /// [`LegalStore::record_export`], `plan` runs inside the transaction.
    fn set_account_disabled<E, P>(
        &self,
        username: String,
        disabled_until_day: Option<UnixDay>,
        plan: P,
    ) -> impl Future<Output = Result<ReportRecord, E>> + Send
    where
        E: From<StoreError> + Send + 'static,
        P: FnOnce(StandingSnapshot) -> Result<ReportRecord, E> + Send + 'static;

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

    /// Every invite code's hash with its days, oldest first.
    fn invites(&self) -> impl Future<Output = Result<Vec<InviteRecord>, StoreError>> + Send;

    /// Deletes an unused invite code (by its hash), so it can no longer
    /// register anyone. `Ok(false)`: no unused code has that hash.
    fn revoke_invite(
        &self,
        code_hash: [u8; 32],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Bytes of queued payloads (each counted once, however many devices
    /// it waits for).
    fn queued_bytes(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// One abuse report in the moderation queue (`sotto report`,
/// `sotto-server moderation`). Until it is resolved it holds what the
/// reporter sent and who reported; once resolved, only its days and the
/// action taken stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationRecord {
    /// The operator's number for it, increasing.
    pub id: u64,
    pub received_day: UnixDay,
    /// The reporting account; `None` once resolved.
    pub reporter: Option<String>,
    /// The encoded `AbuseReport`; `None` once resolved.
    pub report: Option<Vec<u8>>,
    pub resolved_day: Option<UnixDay>,
    /// `none` or `disable-account`, once resolved.
    pub action: Option<String>,
}

/// The moderation queue. As in [`Store`], `Ok(None)` means "no such report".
pub trait ModerationStore: Send + Sync + 'static {
    /// Queues a report from `reporter`; returns its number.
    fn add_report(
        &self,
        reporter: String,
        report: Vec<u8>,
        day: UnixDay,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every report, oldest first.
    fn moderation_reports(
        &self,
    ) -> impl Future<Output = Result<Vec<ModerationRecord>, StoreError>> + Send;

    /// One report.
    fn moderation_report(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<ModerationRecord>, StoreError>> + Send;

    /// Resolves an open report: records the action and day, and erases what
    /// the reporter sent and who reported. `false` if there is no such open
    /// report.
    fn resolve_report(
        &self,
        id: u64,
        action: String,
        day: UnixDay,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Invite links of public groups (docs/PUBLIC_GROUPS.md, "Invite links"):
/// for each link id, its group and the latest sealed GroupInfo a member
/// published, until the operator closes the group's links. A joiner's
/// external commit names its link ([`CommitSubmission::invite_link`]);
/// [`MailboxStore::submit_commit`] accepts it only while the link is open
/// and belongs to the commit's group. As in [`Store`], time comes in as an
/// argument.
pub trait InviteLinkStore: Send + Sync + 'static {
    /// Stores a sealed GroupInfo for a link: the capability must be the
    /// group's current one and the epoch the group's current epoch. The
    /// first publication binds the link id to the group; a link id bound
    /// to another group is `NotAuthorized`. Refused with `Closed` if the
    /// link, or any link of the group, was closed by the operator (a
    /// closed group gets no new link either).
    fn publish_group_info(
        &self,
        publication: GroupInfoPublication,
    ) -> impl Future<Output = Result<(), InviteLinkError>> + Send;

    /// The latest sealed GroupInfo of an open link: `UnknownLink`, or
    /// `Closed` once the operator closed it.
    fn invite_group_info(
        &self,
        link_id: InviteLinkId,
    ) -> impl Future<Output = Result<InviteGroupInfo, InviteLinkError>> + Send;

    /// Closes every open link of a group and records the closure in the
    /// transparency report, atomically (as
    /// [`LegalStore::set_account_disabled`]): `plan` gets the
    /// [`InviteClosingSnapshot`] and returns the report entry (or refuses,
    /// e.g. when no link is open); the sealed GroupInfos are erased. Returns
    /// how many links were closed, and the entry.
    fn close_invite_links<E, P>(
        &self,
        group_id: GroupId,
        day: UnixDay,
        plan: P,
    ) -> impl Future<Output = Result<(u64, ReportRecord), E>> + Send
    where
        E: From<StoreError> + Send + 'static,
        P: FnOnce(InviteClosingSnapshot) -> Result<ReportRecord, E> + Send + 'static;
}
