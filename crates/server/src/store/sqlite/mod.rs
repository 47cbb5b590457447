//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection. It takes a write
//! operation from its queue, drains up to `MAX_BATCH` more that are already
//! waiting, runs them in one transaction (each inside its own SAVEPOINT, so
//! one failing operation does not undo the others), commits with
//! `synchronous=FULL`, and only then answers all of them. Many concurrent
//! sends thus share one fsync, and every `Ok` means "on disk".
//!
//! Reads run on separate connections (WAL lets them proceed while the
//! writer works), on tokio's blocking pool.
//!
//! - `schema`: migrations and connection pragmas
//! - `writer`: the writer thread, batches, SAVEPOINTs, the read pool
//! - `accounts`, `key_packages`, `mailbox`, `log`: one role trait of
//!   [`Store`] each, over its family of tables
//! - `legal`: [`LegalStore`] (the legal key, `legal_requests`, `canaries`)
//! - `admin`: [`AdminStore`] (invites, the auditor's reads), and opening an
//!   existing database for the operator's commands, read-write or read-only
//!
//! Shared by the modules: the row conversions below, and the helpers the
//! `use` lines bring in (sub-modules see them through `use super::*`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use zeroize::Zeroizing;

use super::{
    AccountIdentity, AccountStore, ActiveDevice, AddDeviceError, AdminStore, CanaryRecord,
    ClaimedKeyPackage, CommitAccepted, CommitError, CommitSubmission, DeviceId, DeviceRecord,
    DeviceRemoval, EnqueueError, Enqueued, EntryListener, Envelope, Expired, ExportSnapshot,
    ExportedAccount, ExportedDevice, GroupId, GroupMessage, InviteRecord, KeyPackageBundle,
    KeyPackageStatus, KeyPackageStore, LegalStore, LogRecord, LogStore, MailboxEntry, MailboxStore,
    MessageId, NewAccount, NewDevice, NewEntry, Queued, RegisterError, RemoveDeviceError,
    ReportRecord, SignedDevice, StandingSnapshot, Store, StoreError, StoreStats, StoredFrank,
    UnixDay, UnixSeconds, check_capability, day_of,
};

mod accounts;
mod admin;
mod backup;
mod invite_links;
mod key_packages;
mod legal;
mod log;
mod mailbox;
mod moderation;
mod push;
mod schema;
mod space;
mod writer;

use crate::metrics::WriterMetrics;
pub use backup::{BackupSummary, RestoreSummary};
use log::{LOG_KEY_NAME, append_log, next_account_seq};
pub use schema::DB_FILE_NAME;
use schema::{configure, migrate, schema_version, set_max_pages, stable_plans};
pub use space::SpaceTuning;
use writer::{UNCOMMITTED, WriterMsg, open_reader, run_writer};

/// SQLite-backed [`Store`], in `<data_dir>/sotto.db`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer_tx: mpsc::Sender<WriterMsg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    /// Most entries one device's mailbox may hold (see
    /// [`SqliteStore::set_mailbox_limit`]).
    mailbox_limit: std::sync::atomic::AtomicU32,
    /// The operator's quota in pages (`PRAGMA max_page_count`), if any.
    max_pages: Option<i64>,
    /// Opened with [`SqliteStore::open_read_only`]: readers open the file
    /// read-only, and there is no writer.
    read_only: bool,
    /// Shared with the writer thread.
    entry_listener: Arc<OnceLock<EntryListener>>,
    /// The writer's batch sizes and commit times.
    writer_metrics: WriterMetrics,
    /// Acknowledgements waiting for the writer, from every connection.
    acks: Arc<Mutex<mailbox::AckQueue>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Caps the entries one device's mailbox may hold; a device whose
    /// mailbox is full is skipped and sent a missed-messages notice
    /// ([`MailboxStore::enqueue`]). Default: no cap.
    pub fn set_mailbox_limit(&self, entries: u32) {
        self.inner
            .mailbox_limit
            .store(entries, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn mailbox_limit(&self) -> u32 {
        self.inner
            .mailbox_limit
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens (or creates and migrates) the database in `data_dir`, creating
    /// the directory if needed, and starts the writer thread. Blocking.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_quota(data_dir, None)
    }

    /// Like [`SqliteStore::open`], with an operator quota on the database
    /// size: `PRAGMA max_page_count` on every connection, so a write that
    /// would grow the file past `max_db_bytes` fails with `SQLITE_FULL` (and
    /// the request is refused, never acknowledged). A quota below the
    /// current size stops growth where it is.
    pub fn open_with_quota(data_dir: &Path, max_db_bytes: Option<u64>) -> Result<Self, StoreError> {
        Self::open_tuned(data_dir, max_db_bytes, SpaceTuning::default())
    }

    /// Like [`SqliteStore::open_with_quota`], with how deleted bytes are
    /// treated ([`SpaceTuning`]; benchmarks compare the settings).
    pub fn open_tuned(
        data_dir: &Path,
        max_db_bytes: Option<u64>,
        tuning: SpaceTuning,
    ) -> Result<Self, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(data_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE_NAME);
        keep_private(data_dir, &path)?;
        let conn = Connection::open(&path)?;
        Self::start(path, conn, max_db_bytes, tuning, true)
    }

    /// Brings the schema of the database `conn` opened at `path` up to date,
    /// applies the quota, and starts the writer thread on `conn`. With
    /// `convert`, switches the file to incremental auto-vacuum if `tuning`
    /// asks for it (the server does; operator commands, which may run
    /// beside it, do not rewrite the file).
    fn start(
        path: PathBuf,
        mut conn: Connection,
        max_db_bytes: Option<u64>,
        tuning: SpaceTuning,
        convert: bool,
    ) -> Result<Self, StoreError> {
        configure(&conn)?;
        // `rarray(?)` for the writer's set statements (`delete_acknowledged`).
        rusqlite::vtab::array::load_module(&conn)?;
        space::tune(&conn, tuning, convert)?;
        migrate(&mut conn)?;
        let max_pages = max_db_bytes
            .map(|bytes| {
                let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
                let pages = bytes / u64::try_from(page_size.max(1)).unwrap_or(4096);
                Ok::<_, StoreError>(to_i64(pages.max(1)))
            })
            .transpose()?;
        if let Some(pages) = max_pages {
            set_max_pages(&conn, pages)?;
        }
        let (writer_tx, writer_rx) = mpsc::channel();
        let entry_listener = Arc::new(OnceLock::new());
        let listener = Arc::clone(&entry_listener);
        let writer_metrics = WriterMetrics::default();
        let recorded = writer_metrics.clone();
        let writer = std::thread::Builder::new()
            .name("sotto-db-writer".into())
            .spawn(move || run_writer(&conn, &writer_rx, &listener, &recorded))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer_tx,
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                mailbox_limit: std::sync::atomic::AtomicU32::new(u32::MAX),
                max_pages,
                read_only: false,
                entry_listener,
                writer_metrics,
                acks: Arc::default(),
            }),
        })
    }

    /// A store on the database at `path` without a writer: reads open the
    /// file read-only and writes fail with [`StoreError::Closed`]. `first`
    /// is a reader already opened (and checked) by the caller.
    fn reader_only(path: PathBuf, first: Connection) -> Self {
        // No receiver: every write is refused as if the store had closed.
        let (writer_tx, _) = mpsc::channel();
        Self {
            inner: Arc::new(Inner {
                path,
                writer_tx,
                writer: Mutex::new(None),
                readers: Mutex::new(vec![first]),
                mailbox_limit: std::sync::atomic::AtomicU32::new(u32::MAX),
                max_pages: None,
                read_only: true,
                entry_listener: Arc::new(OnceLock::new()),
                writer_metrics: WriterMetrics::default(),
                acks: Arc::default(),
            }),
        }
    }

    /// The writer's batch sizes and commit times, for `/metrics`.
    pub fn writer_metrics(&self) -> WriterMetrics {
        self.inner.writer_metrics.clone()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Lets the writer commit everything already queued, then stops it and
    /// waits for it. Later writes fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        // An error means the writer is already gone.
        let _ = self.inner.writer_tx.send(WriterMsg::Close);
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Self::Full,
            _ => Self::Backend(e.to_string()),
        }
    }
}

/// The secret stored in `server_keys` under `name`, or `fresh`, stored now,
/// if there is none yet (one statement, so concurrent first calls agree).
///
/// Refused when there is no key but `signed_rows` (a `SELECT count(*)`)
/// finds rows the key signed: the database was restored from a backup
/// made with `--exclude-keys` (or the key row was lost). A fresh key would
/// not match what clients pinned (the log key) or what was published (the
/// legal key), so the operator must bring the old one back instead.
pub(super) fn server_key_secret(
    conn: &Connection,
    name: &str,
    fresh: &[u8; 32],
    signed_rows: &str,
) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    if stored_server_key(conn, name)?.is_none() {
        let signed: i64 = conn.query_row(signed_rows, [], |r| r.get(0))?;
        if signed > 0 {
            return Err(StoreError::Backend(format!(
                "the {name} signing key is missing, but {signed} records it signed are stored \
                 (was this database restored from a backup made with --exclude-keys?); a new key \
                 would make every client refuse this server. Restore again with \
                 `sotto-server restore --keys-from` naming a full backup or the old data directory"
            )));
        }
    }
    conn.execute(
        "INSERT INTO server_keys (name, secret) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
        params![name, fresh.as_slice()],
    )?;
    let stored = stored_server_key(conn, name)?
        .ok_or_else(|| StoreError::Backend(format!("the {name} key was not stored")))?;
    let mut secret = Zeroizing::new([0; 32]);
    if stored.len() != secret.len() {
        return Err(StoreError::Backend(format!(
            "the stored {name} key is not 32 bytes"
        )));
    }
    secret.copy_from_slice(&stored);
    Ok(secret)
}

/// The secret stored in `server_keys` under `name`, as stored, if any.
pub(super) fn stored_server_key(
    conn: &Connection,
    name: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT secret FROM server_keys WHERE name = ?1",
            [name],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
        .map(Zeroizing::new))
}

pub(super) fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| StoreError::Backend(format!("stored {what} is not 32 bytes")))
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The data directory holds the log and legal signing keys and every queued
/// message: owner-only (0700, files 0600). A looser one is fixed, with a
/// warning. The database file is created 0600 before SQLite opens it, so
/// its `-wal` and `-shm` files (which SQLite creates with the database's
/// mode) are private too.
#[cfg(unix)]
fn keep_private(data_dir: &Path, db: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail = |what: &Path, e: std::io::Error| {
        StoreError::Backend(format!("cannot make {} private: {e}", what.display()))
    };
    let fix = |path: &Path, mode: u32| -> Result<(), StoreError> {
        let current = std::fs::metadata(path)
            .map_err(|e| fail(path, e))?
            .permissions();
        if current.mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", current.mode() & 0o777),
                "readable by other users; making it owner-only"
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| fail(path, e))?;
        }
        Ok(())
    };
    fix(data_dir, 0o700)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)
        .map_err(|e| fail(db, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        if file.exists() {
            fix(&file, 0o600)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn keep_private(_data_dir: &Path, _db: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl Store for SqliteStore {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|conn| {
            let count = |table: &str| -> Result<u64, StoreError> {
                let n: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
                Ok(to_u64(n))
            };
            Ok(StoreStats {
                accounts: count("accounts")?,
                devices: count("devices WHERE removed_day IS NULL")?,
                mailbox_entries: count("mailbox")?,
                payloads: count("messages")?,
                // The first entry by seq (the rowid: no scan) is the
                // oldest, as days only grow.
                oldest_entry_day: conn
                    .query_row(
                        "SELECT enqueued_day FROM mailbox ORDER BY seq LIMIT 1",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .map(to_u64),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::schema::{MIGRATIONS, SCHEMA_VERSION};
    use super::*;

    /// A database with queued messages from before mailbox rows named
    /// devices by number migrates without losing an entry or reusing a seq.
    #[tokio::test]
    async fn mailbox_rows_survive_the_move_to_device_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        let device = DeviceId::new([9; 16]);
        {
            let mut conn = Connection::open(&path).unwrap();
            configure(&conn).unwrap();
            let tx = conn.transaction().unwrap();
            // Schema version 6: before `DROP INDEX mailbox_by_age`.
            for sql in &MIGRATIONS[..6] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 6).unwrap();
            tx.execute_batch(
                "INSERT INTO accounts VALUES ('alice', x'00', 1);
                 INSERT INTO devices (device_id, username, certificate, identity_signature, device_key, created_day, last_seen_day)
                     VALUES (x'09090909090909090909090909090909', 'alice', x'', x'', x'', 1, 1);
                 INSERT INTO messages (id, message_id, payload) VALUES
                     (1, x'01010101010101010101010101010101', x'aa'),
                     (2, x'02020202020202020202020202020202', x'bb');
                 INSERT INTO mailbox (seq, device_id, message_ref, enqueued_day) VALUES
                     (40, x'09090909090909090909090909090909', 1, 1),
                     (41, x'09090909090909090909090909090909', 2, 1),
                     (42, x'09090909090909090909090909090909', 2, 1);
                 DELETE FROM mailbox WHERE seq = 42;",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let entries = store.fetch_mailbox(device, 0, 10).await.unwrap();
        let found: Vec<(u64, Vec<u8>)> = entries.into_iter().map(|e| (e.seq, e.payload)).collect();
        assert_eq!(found, [(40, vec![0xaa]), (41, vec![0xbb])]);
        store.close().await;

        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute(
            "INSERT INTO mailbox (device_num, message_ref, enqueued_day) VALUES (1, 1, 1)",
            [],
        )
        .unwrap();
        assert!(
            conn.last_insert_rowid() > 42,
            "seqs continue after every seq ever handed out"
        );
    }

    /// Groups from before `active_day` count as active on the day of the
    /// upgrade: none is deleted by the first sweep after it, and they
    /// expire a retention period later like any other.
    #[tokio::test]
    async fn groups_from_before_activity_days_get_a_full_retention_period() {
        const DAY: u64 = 86_400;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE_NAME);
        // The schema just before the migration that added `active_day`.
        let before = MIGRATIONS
            .iter()
            .position(|sql| sql.contains("ADD COLUMN active_day"))
            .unwrap();
        {
            let mut conn = Connection::open(&path).unwrap();
            configure(&conn).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..before] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", to_i64(before as u64))
                .unwrap();
            tx.execute_batch(
                "INSERT INTO mls_groups (group_id, epoch, last_commit_id, token_hash) \
                 VALUES (x'0102', 3, x'00', x'00');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let group = GroupId::from_slice(&[1, 2]).unwrap();
        let now = crate::session::now_seconds();
        let swept = store.expire(now).await.unwrap();
        assert_eq!(swept.groups, 0);
        assert_eq!(store.group_epoch(&group).await.unwrap(), Some(3));
        let swept = store.expire(now + DAY).await.unwrap();
        assert_eq!(swept.groups, 1);
        assert_eq!(store.group_epoch(&group).await.unwrap(), None);
        store.close().await;
    }
}
