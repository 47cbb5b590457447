//! The store the operator chose (`--data DIR` for SQLite, `--store
//! postgres://…`): one type for the server and the operator's commands, so
//! both run unchanged on either backend. Every method hands the call to the
//! backend.

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::*;
use crate::metrics::WriterMetrics;

/// Where the server's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite database in this data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database (connection URL).
    Postgres(String),
}

impl StoreLocation {
    /// `store` if it names PostgreSQL (`postgres://…`), else the data
    /// directory.
    pub fn choose(store: Option<&str>, data_dir: &std::path::Path) -> Self {
        match store {
            Some(url) => Self::Postgres(url.to_owned()),
            None => Self::Sqlite(data_dir.to_path_buf()),
        }
    }

    /// For messages: the directory, or the database without its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(dir) => dir.display().to_string(),
            Self::Postgres(url) => postgres::parse_config(url)
                .map_or_else(|_| "PostgreSQL".into(), |c| postgres::describe(&c)),
        }
    }
}

/// A store on either backend.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// The embedded SQLite backend.
    Sqlite(SqliteStore),
    /// The PostgreSQL backend.
    Postgres(PostgresStore),
}

/// Calls the same method on whichever backend it is.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl AnyStore {
    /// Opens (or creates and migrates) the store for the server. SQLite:
    /// `max_db_bytes` is its quota (PostgreSQL leaves quotas to the
    /// database's operator).
    pub async fn open(
        location: &StoreLocation,
        max_db_bytes: Option<u64>,
    ) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Sqlite(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || {
                    SqliteStore::open_with_quota(&dir, max_db_bytes)
                })
                .await
                .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
                Ok(Self::Sqlite(store))
            }
            StoreLocation::Postgres(url) => Ok(Self::Postgres(PostgresStore::open(url).await?)),
        }
    }

    /// Opens an existing store for an operator's command, never creating
    /// one. SQLite brings its schema up to date; PostgreSQL must be at the
    /// current schema already (`sotto-server migrate`).
    pub async fn open_existing(location: &StoreLocation) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Sqlite(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open_existing(&dir))
                    .await
                    .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
                Ok(Self::Sqlite(store))
            }
            StoreLocation::Postgres(url) => {
                Ok(Self::Postgres(PostgresStore::open_existing(url).await?))
            }
        }
    }

    /// Opens an existing store for reading only (the audit, statistics):
    /// SQLite opens the file read-only; PostgreSQL reads without migrating.
    pub async fn open_read_only(location: &StoreLocation) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Sqlite(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open_read_only(&dir))
                    .await
                    .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
                Ok(Self::Sqlite(store))
            }
            StoreLocation::Postgres(url) => {
                Ok(Self::Postgres(PostgresStore::open_existing(url).await?))
            }
        }
    }

    /// The writer's batch sizes and commit times, for `/metrics`.
    pub fn writer_metrics(&self) -> WriterMetrics {
        dispatch!(self, s => s.writer_metrics())
    }

    /// Lets the writer commit what is queued, then stops it.
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await);
    }
}

impl Store for AnyStore {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        dispatch!(self, s => s.stats().await)
    }
}

impl AccountStore for AnyStore {
    async fn register(&self, account: NewAccount) -> Result<(), RegisterError> {
        dispatch!(self, s => s.register(account).await)
    }

    async fn device(
        &self,
        username: &str,
        device_id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        dispatch!(self, s => s.device(username, device_id).await)
    }

    async fn touch_device(&self, device_id: DeviceId, today: UnixDay) -> Result<(), StoreError> {
        dispatch!(self, s => s.touch_device(device_id, today).await)
    }

    async fn add_device(&self, device: NewDevice) -> Result<(), AddDeviceError> {
        dispatch!(self, s => s.add_device(device).await)
    }

    async fn remove_device(&self, removal: DeviceRemoval) -> Result<(), RemoveDeviceError> {
        dispatch!(self, s => s.remove_device(removal).await)
    }
}

impl KeyPackageStore for AnyStore {
    async fn key_package_status(
        &self,
        device_id: DeviceId,
    ) -> Result<KeyPackageStatus, StoreError> {
        dispatch!(self, s => s.key_package_status(device_id).await)
    }

    async fn upload_key_packages(
        &self,
        device_id: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageStatus, StoreError> {
        dispatch!(self, s => s.upload_key_packages(device_id, key_packages, last_resort).await)
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        dispatch!(self, s => s.claim_key_packages(username, only).await)
    }

    async fn last_resort_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        dispatch!(self, s => s.last_resort_key_packages(username, only).await)
    }
}

impl MailboxStore for AnyStore {
    async fn enqueue(&self, message: GroupMessage) -> Result<Queued, EnqueueError> {
        dispatch!(self, s => s.enqueue(message).await)
    }

    async fn enqueue_more(&self, message: GroupMessage) -> Result<Queued, EnqueueError> {
        dispatch!(self, s => s.enqueue_more(message).await)
    }

    async fn submit_commit(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        dispatch!(self, s => s.submit_commit(submission).await)
    }

    async fn submit_commit_more(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        dispatch!(self, s => s.submit_commit_more(submission).await)
    }

    async fn group_epoch(&self, group_id: &GroupId) -> Result<Option<u64>, StoreError> {
        dispatch!(self, s => s.group_epoch(group_id).await)
    }

    async fn fetch_mailbox(
        &self,
        device_id: DeviceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        dispatch!(self, s => s.fetch_mailbox(device_id, after, limit).await)
    }

    async fn ack(&self, device_id: DeviceId, seqs: Vec<u64>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.ack(device_id, seqs).await)
    }

    async fn expire(&self, cutoff: UnixSeconds) -> Result<Expired, StoreError> {
        dispatch!(self, s => s.expire(cutoff).await)
    }

    async fn check_send(&self, message: GroupMessage) -> Result<(), EnqueueError> {
        dispatch!(self, s => s.check_send(message).await)
    }

    async fn expire_disappearing(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        dispatch!(self, s => s.expire_disappearing(now).await)
    }

    fn set_mailbox_limit(&self, entries: u32) {
        dispatch!(self, s => MailboxStore::set_mailbox_limit(s, entries));
    }

    fn set_entry_listener(&self, listener: EntryListener) {
        dispatch!(self, s => s.set_entry_listener(listener));
    }
}

impl LogStore for AnyStore {
    async fn log_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        dispatch!(self, s => s.log_key_secret(fresh).await)
    }

    async fn franking_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        dispatch!(self, s => s.franking_key_secret(fresh).await)
    }

    async fn directory_vrf_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        dispatch!(self, s => s.directory_vrf_secret(fresh).await)
    }

    async fn account_log(&self, username: &str) -> Result<Vec<LogRecord>, StoreError> {
        dispatch!(self, s => s.account_log(username).await)
    }

    async fn log_entries(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, StoreError> {
        dispatch!(self, s => s.log_entries(start, limit).await)
    }

    async fn append_web_release(&self, entry: Vec<u8>) -> Result<bool, StoreError> {
        dispatch!(self, s => s.append_web_release(entry).await)
    }

    async fn add_countersignature(
        &self,
        record: CountersignatureRecord,
        keep: usize,
        expire_before_ms: u64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.add_countersignature(record, keep, expire_before_ms).await)
    }

    async fn countersignature(
        &self,
        auditor_key: &[u8],
        max_epoch: u64,
    ) -> Result<Option<CountersignatureRecord>, StoreError> {
        dispatch!(self, s => s.countersignature(auditor_key, max_epoch).await)
    }
}

impl LegalStore for AnyStore {
    async fn legal_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        dispatch!(self, s => s.legal_key_secret(fresh).await)
    }

    async fn record_export<T, E, P, D>(
        &self,
        usernames: Vec<String>,
        plan: P,
        deliver: D,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        P: FnOnce(ExportSnapshot) -> Result<(ReportRecord, T), E> + Send + 'static,
        D: FnOnce(&T) -> Result<(), E> + Send + 'static,
    {
        dispatch!(self, s => s.record_export(usernames, plan, deliver).await)
    }

    async fn set_account_disabled<E, P>(
        &self,
        username: String,
        disabled_until_day: Option<UnixDay>,
        plan: P,
    ) -> Result<ReportRecord, E>
    where
        E: From<StoreError> + Send + 'static,
        P: FnOnce(StandingSnapshot) -> Result<ReportRecord, E> + Send + 'static,
    {
        dispatch!(self, s => s.set_account_disabled(username, disabled_until_day, plan).await)
    }

    async fn report_entries(&self) -> Result<Vec<ReportRecord>, StoreError> {
        dispatch!(self, s => s.report_entries().await)
    }

    async fn publish_canary(&self, canary: CanaryRecord) -> Result<(), StoreError> {
        dispatch!(self, s => s.publish_canary(canary).await)
    }

    async fn latest_canary(&self) -> Result<Option<CanaryRecord>, StoreError> {
        dispatch!(self, s => s.latest_canary().await)
    }
}

impl AdminStore for AnyStore {
    async fn add_invites(
        &self,
        code_hashes: Vec<[u8; 32]>,
        today: UnixDay,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.add_invites(code_hashes, today).await)
    }

    async fn stored_log_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        dispatch!(self, s => s.stored_log_key().await)
    }

    async fn account_identities(&self) -> Result<Vec<AccountIdentity>, StoreError> {
        dispatch!(self, s => s.account_identities().await)
    }

    async fn active_devices(&self) -> Result<Vec<ActiveDevice>, StoreError> {
        dispatch!(self, s => s.active_devices().await)
    }

    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        dispatch!(self, s => s.invites().await)
    }

    async fn revoke_invite(&self, code_hash: [u8; 32]) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_invite(code_hash).await)
    }

    async fn queued_bytes(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.queued_bytes().await)
    }
}

impl ClusterStore for AnyStore {
    fn is_shared(&self) -> bool {
        dispatch!(self, s => s.is_shared())
    }

    fn elect_log_writer(&self) -> tokio::sync::watch::Receiver<bool> {
        dispatch!(self, s => ClusterStore::elect_log_writer(s))
    }

    async fn recorded_epochs(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEpoch>, StoreError> {
        dispatch!(self, s => s.recorded_epochs(from, limit).await)
    }

    async fn record_epoch(&self, epoch: RecordedEpoch) -> Result<bool, StoreError> {
        dispatch!(self, s => s.record_epoch(epoch).await)
    }

    async fn rate_limit_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        dispatch!(self, s => s.rate_limit_secret(fresh).await)
    }

    async fn count_hit(
        &self,
        key: [u8; 32],
        window_start: u64,
        expires_at: u64,
        prune: Option<u64>,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.count_hit(key, window_start, expires_at, prune).await)
    }
}

impl ModerationStore for AnyStore {
    async fn add_report(
        &self,
        reporter: String,
        report: Vec<u8>,
        day: UnixDay,
    ) -> Result<u64, StoreError> {
        dispatch!(self, s => s.add_report(reporter, report, day).await)
    }

    async fn moderation_reports(&self) -> Result<Vec<ModerationRecord>, StoreError> {
        dispatch!(self, s => s.moderation_reports().await)
    }

    async fn moderation_report(&self, id: u64) -> Result<Option<ModerationRecord>, StoreError> {
        dispatch!(self, s => s.moderation_report(id).await)
    }

    async fn resolve_report(
        &self,
        id: u64,
        action: String,
        day: UnixDay,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.resolve_report(id, action, day).await)
    }
}

impl InviteLinkStore for AnyStore {
    async fn publish_group_info(
        &self,
        publication: GroupInfoPublication,
    ) -> Result<(), InviteLinkError> {
        dispatch!(self, s => s.publish_group_info(publication).await)
    }

    async fn invite_group_info(
        &self,
        link_id: InviteLinkId,
    ) -> Result<InviteGroupInfo, InviteLinkError> {
        dispatch!(self, s => s.invite_group_info(link_id).await)
    }

    async fn close_invite_links<E, P>(
        &self,
        group_id: GroupId,
        day: UnixDay,
        plan: P,
    ) -> Result<(u64, ReportRecord), E>
    where
        E: From<StoreError> + Send + 'static,
        P: FnOnce(InviteClosingSnapshot) -> Result<ReportRecord, E> + Send + 'static,
    {
        dispatch!(self, s => s.close_invite_links(group_id, day, plan).await)
    }
}

impl PushStore for AnyStore {
    async fn push_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        dispatch!(self, s => s.push_key_secret(fresh).await)
    }

    async fn set_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: Option<String>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_push_endpoint(device_id, endpoint).await)
    }

    async fn push_endpoints(
        &self,
        devices: Vec<DeviceId>,
    ) -> Result<Vec<(DeviceId, String)>, StoreError> {
        dispatch!(self, s => s.push_endpoints(devices).await)
    }

    async fn clear_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: String,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.clear_push_endpoint(device_id, endpoint).await)
    }
}
