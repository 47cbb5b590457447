//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection. It takes a write
//! operation from its queue, drains up to [`MAX_BATCH`] more that are already
//! waiting, runs them in one transaction (each inside its own SAVEPOINT, so
//! one failing operation does not undo the others), commits with
//! `synchronous=FULL`, and only then answers all of them. Many concurrent
//! sends thus share one fsync, and every `Ok` means "on disk".
//!
//! Reads run on separate connections (WAL lets them proceed while the
//! writer works), on tokio's blocking pool.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use zeroize::Zeroizing;

use super::{
    AddDeviceError, ClaimedKeyPackage, CommitAccepted, CommitError, CommitSubmission, DeviceId,
    DeviceRecord, DeviceRemoval, EnqueueError, Enqueued, EntryListener, Envelope, GroupId,
    GroupMessage, KeyPackageBundle, KeyPackageStatus, LogRecord, MailboxEntry, MessageId,
    NewAccount, NewDevice, NewEntry, RegisterError, RemoveDeviceError, SignedDevice, Store,
    StoreError, StoreStats, UnixDay, UnixSeconds,
};

/// Most write operations committed together in one transaction.
const MAX_BATCH: usize = 512;
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;
/// The schema version this code writes (`PRAGMA user_version`): one per
/// migration.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "sotto.db";

/// Migrations, in order: `MIGRATIONS[n]` takes the schema from version `n`
/// to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE accounts (
    username     TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    created_day  INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id          BLOB PRIMARY KEY,
    username           TEXT NOT NULL REFERENCES accounts(username),
    certificate        BLOB NOT NULL,
    identity_signature BLOB NOT NULL,
    device_key         BLOB NOT NULL,
    created_day        INTEGER NOT NULL,
    last_seen_day      INTEGER NOT NULL
);
CREATE INDEX devices_by_username ON devices(username);
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   BLOB NOT NULL REFERENCES devices(device_id),
    key_package BLOB NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, id);
CREATE TABLE last_resort_key_packages (
    device_id   BLOB PRIMARY KEY REFERENCES devices(device_id),
    key_package BLOB NOT NULL
);
CREATE TABLE mls_groups (
    group_id        BLOB PRIMARY KEY,
    epoch           INTEGER NOT NULL,
    last_commit_id  BLOB NOT NULL,
    token_hash      BLOB NOT NULL,
    prev_token_hash BLOB
);
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    message_id BLOB NOT NULL UNIQUE,
    payload    BLOB NOT NULL
);
CREATE TABLE mailbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   BLOB NOT NULL REFERENCES devices(device_id),
    message_ref INTEGER NOT NULL REFERENCES messages(id),
    enqueued_at INTEGER NOT NULL
);
CREATE INDEX mailbox_by_device ON mailbox(device_id, seq);
CREATE INDEX mailbox_by_message ON mailbox(message_ref);
CREATE INDEX mailbox_by_age ON mailbox(enqueued_at);
",
    r"
CREATE TABLE server_keys (
    name   TEXT PRIMARY KEY,
    secret BLOB NOT NULL
);
CREATE TABLE log_entries (
    idx      INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    entry    BLOB NOT NULL
);
CREATE INDEX log_entries_by_username ON log_entries(username, idx);
ALTER TABLE devices ADD COLUMN removed_day INTEGER;
",
    // Day granularity for the mailbox, and the legal tables (`crate::legal`,
    // docs/SERVER_DATA.md).
    r"
ALTER TABLE mailbox RENAME COLUMN enqueued_at TO enqueued_day;
UPDATE mailbox SET enqueued_day = enqueued_day / 86400;
CREATE TABLE legal_requests (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    day        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    accounts   INTEGER NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL,
    signature  BLOB NOT NULL
);
CREATE TABLE canaries (
    seq       INTEGER PRIMARY KEY,
    day       INTEGER NOT NULL,
    statement TEXT NOT NULL,
    key       BLOB NOT NULL,
    signature BLOB NOT NULL
);
",
    // Invite codes for the "invite" registration policy: only a hash of
    // each code is kept, and the day it was created and used.
    r"
CREATE TABLE invites (
    code_hash   BLOB PRIMARY KEY,
    created_day INTEGER NOT NULL,
    used_day    INTEGER
);
",
    // Accepted commit ids, so that a resend after a lost answer is
    // recognised even once the group has moved on and every recipient has
    // acknowledged the commit. Kept for the retention period.
    r"
CREATE TABLE accepted_commits (
    group_id   BLOB NOT NULL,
    message_id BLOB NOT NULL,
    day        INTEGER NOT NULL,
    PRIMARY KEY (group_id, message_id)
);
CREATE INDEX accepted_commits_by_day ON accepted_commits(day);
",
    // Every message insert and acknowledgement paid for an index used only
    // by the hourly expiry sweep; mailbox entries are appended in time
    // order, so the sweep finds the expired ones as a prefix by seq instead.
    r"
DROP INDEX mailbox_by_age;
",
    // Mailbox rows name their device by a small integer instead of its
    // 16-byte id: the id was stored twice per recipient (row and index),
    // most of the per-recipient storage of a group message.
    r"
ALTER TABLE devices ADD COLUMN num INTEGER;
UPDATE devices SET num = rowid;
CREATE UNIQUE INDEX devices_by_num ON devices(num);
CREATE TABLE mailbox_by_num (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_num   INTEGER NOT NULL REFERENCES devices(num),
    message_ref  INTEGER NOT NULL REFERENCES messages(id),
    enqueued_day INTEGER NOT NULL
);
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'mailbox_by_num', seq FROM sqlite_sequence WHERE name = 'mailbox';
INSERT INTO mailbox_by_num (seq, device_num, message_ref, enqueued_day)
    SELECT m.seq, d.num, m.message_ref, m.enqueued_day
    FROM mailbox m JOIN devices d ON d.device_id = m.device_id;
DROP TABLE mailbox;
ALTER TABLE mailbox_by_num RENAME TO mailbox;
CREATE INDEX mailbox_by_device ON mailbox(device_num, seq);
CREATE INDEX mailbox_by_message ON mailbox(message_ref);
",
];

/// Creates `count` one-time invite codes, storing only their hashes; returns
/// the codes (hex) to hand out.
pub fn create_invites(
    conn: &Connection,
    count: usize,
    today: UnixDay,
) -> Result<Vec<String>, StoreError> {
    let mut codes = Vec::with_capacity(count);
    let tx = conn.unchecked_transaction()?;
    for _ in 0..count {
        let code: [u8; 16] = rand::random();
        tx.execute(
            "INSERT INTO invites (code_hash, created_day) VALUES (?1, ?2)",
            params![invite_hash(&hex::encode(code)).as_slice(), to_i64(today)],
        )?;
        codes.push(hex::encode(code));
    }
    tx.commit()?;
    Ok(codes)
}

/// What the store keeps of an invite code.
pub fn invite_hash(code: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(code.trim().to_ascii_lowercase().as_bytes()).into()
}

/// Name of the log signing key in `server_keys`.
const LOG_KEY_NAME: &str = "log";

/// The transaction a batch of write operations shares, and where a
/// failure to begin or commit it is reported.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Finish + Send>;
/// Sends an operation's reply once its batch committed (or failed to).
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

thread_local! {
    /// Mailbox entries added by the writer's open transaction; told to the
    /// [`EntryListener`] once it commits, dropped if it does not.
    static UNCOMMITTED: RefCell<Vec<NewEntry>> = const { RefCell::new(Vec::new()) };
}

enum WriterMsg {
    Job(Job),
    /// Finish what is queued, then stop.
    Close,
}

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
    /// Shared with the writer thread.
    entry_listener: Arc<OnceLock<EntryListener>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    stable_plans(conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "could not enable WAL mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

/// Turns on the query planner stability guarantee. The bundled SQLite is
/// built with STAT4, which otherwise re-prepares a cached statement whenever
/// a bound value that could change its plan changes (a `LIMIT ?`, a range
/// bound): the mailbox fetch was re-parsed on every call, a sixth of the
/// server's CPU under load. Our queries have one sensible plan each.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Applies the operator's database quota to one connection. SQLite never
/// sets it below the current size.
fn set_max_pages(conn: &Connection, pages: i64) -> Result<(), StoreError> {
    let _applied: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
        row.get(0)
    })?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this server understands ({SCHEMA_VERSION}); \
             upgrade sotto-server"
        )));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(usize::MAX))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(index + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Caps the entries one device's mailbox may hold; a message for a
    /// device whose mailbox is full is refused (`EnqueueError::MailboxFull`)
    /// rather than stored. Default: no cap.
    pub fn set_mailbox_limit(&self, entries: u32) {
        self.inner
            .mailbox_limit
            .store(entries, std::sync::atomic::Ordering::Relaxed);
    }

    fn mailbox_limit(&self) -> u32 {
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
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Backend(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE_NAME);
        let mut conn = Connection::open(&path)?;
        configure(&conn)?;
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
        let writer = std::thread::Builder::new()
            .name("sotto-db-writer".into())
            .spawn(move || run_writer(&conn, &writer_rx, &listener))
            .map_err(|e| StoreError::Backend(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer_tx,
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                mailbox_limit: std::sync::atomic::AtomicU32::new(u32::MAX),
                max_pages,
                entry_listener,
            }),
        })
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

    /// Runs a read on a pooled read-only connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open(&inner.path)?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    stable_plans(&conn)?;
                    conn.execute_batch("PRAGMA query_only=ON;")?;
                    if let Some(pages) = inner.max_pages {
                        set_max_pages(&conn, pages)?;
                    }
                    conn
                }
            };
            let result = f(&conn);
            let mut readers = inner
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if readers.len() < MAX_IDLE_READERS {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Queues a write for the writer thread; resolves once it is committed.
    fn write<T, E, F>(&self, f: F) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => in_savepoint(conn, f),
                Err(e) => Err(E::from(e)),
            };
            Box::new(move |committed| {
                let reply = match (result, committed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Ok(_), Err(e)) => Err(E::from(e)),
                    (Err(e), _) => Err(e),
                };
                // The requester may have gone away; nothing to do then.
                let _ = reply_tx.send(reply);
            })
        });
        let queued = self.inner.writer_tx.send(WriterMsg::Job(job)).is_ok();
        async move {
            if !queued {
                return Err(E::from(StoreError::Closed));
            }
            reply_rx
                .await
                .unwrap_or_else(|_| Err(E::from(StoreError::Closed)))
        }
    }
}

/// Runs `f` inside a SAVEPOINT, rolling back its changes if it fails.
fn in_savepoint<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    E: From<StoreError>,
    F: FnOnce(&Connection) -> Result<T, E>,
{
    // Cached: one savepoint per request, so parsing them showed in profiles.
    let step = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    let mark = UNCOMMITTED.with_borrow(Vec::len);
    let result = step("SAVEPOINT op").map_err(E::from).and_then(|()| {
        let result = f(conn);
        if result.is_err() {
            step("ROLLBACK TO op")?;
        }
        step("RELEASE op")?;
        result
    });
    if result.is_err() {
        UNCOMMITTED.with_borrow_mut(|entries| entries.truncate(mark));
    }
    result
}

fn run_writer(
    conn: &Connection,
    rx: &mpsc::Receiver<WriterMsg>,
    listener: &OnceLock<EntryListener>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut closing = false;
        match first {
            WriterMsg::Job(job) => batch.push(job),
            WriterMsg::Close => closing = true,
        }
        while !closing && batch.len() <= MAX_BATCH {
            match rx.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(conn, batch, listener);
        }
        if closing {
            break;
        }
    }
    tracing::debug!("database writer stopped");
}

fn run_batch(conn: &Connection, batch: Vec<Job>, listener: &OnceLock<EntryListener>) {
    UNCOMMITTED.with_borrow_mut(Vec::clear);
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        tracing::error!(error = %e, "cannot begin write transaction");
        for job in batch {
            job(Err(e.clone()))(Err(e.clone()));
        }
        return;
    }
    let mut finishers: Vec<Finish> = Vec::with_capacity(batch.len());
    for job in batch {
        if conn.is_autocommit() {
            // An error (a full disk, say) made SQLite roll the whole
            // transaction back: the remaining jobs must not run outside it,
            // where they would be committed yet answered with an error.
            finishers.push(job(Err(StoreError::Backend(
                "the write transaction was rolled back by an earlier failure in its batch".into(),
            ))));
        } else {
            finishers.push(job(Ok(conn)));
        }
    }
    let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
    let entries = UNCOMMITTED.with_borrow_mut(std::mem::take);
    match &committed {
        Ok(()) => {
            if let Some(listener) = listener.get()
                && !entries.is_empty()
            {
                listener(entries);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "write transaction failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    for finish in finishers {
        finish(committed.clone());
    }
}

fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| StoreError::Backend(format!("stored {what} is not 32 bytes")))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn key_package_status(
    conn: &Connection,
    device_id: DeviceId,
) -> Result<KeyPackageStatus, StoreError> {
    let id = device_id.as_bytes().as_slice();
    let remaining: i64 = conn.query_row(
        "SELECT count(*) FROM key_packages WHERE device_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    let has_last_resort: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM last_resort_key_packages WHERE device_id = ?1)",
        [id],
        |r| r.get(0),
    )?;
    Ok(KeyPackageStatus {
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        has_last_resort,
    })
}

fn message_exists(conn: &Connection, message_id: MessageId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM messages WHERE message_id = ?1)")?
        .query_row([message_id.as_bytes().as_slice()], |r| r.get(0))?)
}

/// Stores the payload once and adds one mailbox entry per distinct
/// recipient. Removed devices are skipped: a sender whose view of a roster
/// is a moment old must not fail because of them. Nothing is stored for an
/// envelope without (remaining) recipients.
fn insert_envelope(
    conn: &Connection,
    envelope: &Envelope,
    now: UnixSeconds,
    mailbox_limit: u32,
) -> Result<(), EnqueueError> {
    let mut seen = HashSet::new();
    let mut active = conn
        .prepare_cached("SELECT num, removed_day IS NULL FROM devices WHERE device_id = ?1")
        .map_err(StoreError::from)?;
    // (device, its number in mailbox rows)
    let mut recipients = Vec::new();
    for device in envelope
        .recipients
        .iter()
        .copied()
        .filter(|d| seen.insert(*d))
    {
        let status: Option<(i64, bool)> = active
            .query_row([device.as_bytes().as_slice()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(StoreError::from)?;
        match status {
            None => return Err(EnqueueError::UnknownDevice(device)),
            Some((num, true)) => recipients.push((device, num)),
            Some((_, false)) => {}
        }
    }
    if mailbox_limit < u32::MAX {
        let mut full = conn
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM mailbox WHERE device_num = ?1 LIMIT 1 OFFSET ?2)",
            )
            .map_err(StoreError::from)?;
        for (device, num) in &recipients {
            let at_limit: bool = full
                .query_row(params![num, i64::from(mailbox_limit) - 1], |r| r.get(0))
                .map_err(StoreError::from)?;
            if at_limit {
                return Err(EnqueueError::MailboxFull(*device));
            }
        }
    }
    if recipients.is_empty() {
        return Ok(());
    }
    conn.prepare_cached("INSERT INTO messages (message_id, payload) VALUES (?1, ?2)")
        .and_then(|mut insert| {
            insert.execute(params![
                envelope.message_id.as_bytes().as_slice(),
                envelope.payload
            ])
        })
        .map_err(StoreError::from)?;
    let message_ref = conn.last_insert_rowid();
    let payload: Arc<[u8]> = Arc::from(envelope.payload.as_slice());
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO mailbox (device_num, message_ref, enqueued_day) VALUES (?1, ?2, ?3)",
        )
        .map_err(StoreError::from)?;
    for (device, num) in &recipients {
        insert
            .execute(params![num, message_ref, to_i64(super::day_of(now))])
            .map_err(StoreError::from)?;
        let entry = NewEntry {
            device_id: *device,
            seq: to_u64(conn.last_insert_rowid()),
            message_id: envelope.message_id,
            payload: Arc::clone(&payload),
        };
        UNCOMMITTED.with_borrow_mut(|entries| entries.push(entry));
    }
    Ok(())
}

/// The number that names `device_id` in mailbox rows.
fn device_num(conn: &Connection, device_id: DeviceId) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT num FROM devices WHERE device_id = ?1")?
        .query_row([device_id.as_bytes().as_slice()], |r| r.get(0))
        .optional()?)
}

fn delete_orphaned_messages(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM mailbox WHERE mailbox.message_ref = messages.id)",
        [],
    )?;
    Ok(())
}

/// Appends one leaf at the end of the log. The writer is the only one
/// appending, so indexes are contiguous.
fn append_log(conn: &Connection, username: &str, entry: &[u8]) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO log_entries (idx, username, entry) \
         VALUES ((SELECT coalesce(max(idx) + 1, 0) FROM log_entries), ?1, ?2)",
    )?
    .execute(params![username, entry])?;
    Ok(())
}

/// How many log entries an account has: the `account_seq` of its next one.
fn next_account_seq(conn: &Connection, username: &str) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM log_entries WHERE username = ?1")?
        .query_row([username], |r| r.get(0))?;
    Ok(to_u64(n))
}

fn log_records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<LogRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(LogRecord {
            index: to_u64(r.get(0)?),
            username: r.get(1)?,
            entry: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn device_id_taken(conn: &Connection, device_id: DeviceId) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM devices WHERE device_id = ?1)",
        [device_id.as_bytes().as_slice()],
        |r| r.get(0),
    )?)
}

/// Reads the schema version of an existing database without changing it.
pub(crate) fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

/// Opens `<data_dir>/sotto.db` read-only, for the auditor. Fails if the
/// database does not exist or predates the transparency log.
pub(crate) fn open_read_only(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE_NAME);
    let conn = Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version = schema_version(&conn)?;
    if version < 2 {
        return Err(StoreError::Backend(format!(
            "{} has schema version {version}, without a transparency log; start sotto-server on it once to upgrade",
            path.display()
        )));
    }
    Ok(conn)
}

/// Opens an existing `<data_dir>/sotto.db` read-write for an admin command
/// (`crate::legal`), bringing its schema up to date. Unlike
/// [`SqliteStore::open`] it never creates a database.
pub(crate) fn open_admin(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE_NAME);
    if !path.is_file() {
        return Err(StoreError::Backend(format!(
            "there is no server database at {}; check --data",
            path.display()
        )));
    }
    let mut conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// The stored log signing key's secret, if any.
pub(crate) fn read_log_key_secret(
    conn: &Connection,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT secret FROM server_keys WHERE name = ?1",
            [LOG_KEY_NAME],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
        .map(Zeroizing::new))
}

/// Calls `f` with every log leaf in index order, without loading the whole
/// log into memory.
pub(crate) fn for_each_log_record(
    conn: &Connection,
    mut f: impl FnMut(LogRecord) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT idx, username, entry FROM log_entries ORDER BY idx")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        f(LogRecord {
            index: to_u64(row.get(0)?),
            username: row.get(1)?,
            entry: row.get(2)?,
        })?;
    }
    Ok(())
}

impl Store for SqliteStore {
    async fn register(&self, account: NewAccount) -> Result<(), RegisterError> {
        self.write(move |conn| {
            let taken: bool = conn
                .query_row("SELECT EXISTS(SELECT 1 FROM accounts WHERE username = ?1)", [&account.username], |r| r.get(0))
                .map_err(StoreError::from)?;
            if taken {
                return Err(RegisterError::UsernameTaken);
            }
            if device_id_taken(conn, account.device_id)? {
                return Err(RegisterError::DeviceIdTaken(account.device_id));
            }
            let day = to_i64(account.today);
            if let Some(invite) = account.invite {
                let used = conn
                    .execute(
                        "UPDATE invites SET used_day = ?1 WHERE code_hash = ?2 AND used_day IS NULL",
                        params![day, invite.as_slice()],
                    )
                    .map_err(StoreError::from)?;
                if used != 1 {
                    return Err(RegisterError::BadInvite);
                }
            }
            conn.execute(
                "INSERT INTO accounts (username, identity_key, created_day) VALUES (?1, ?2, ?3)",
                params![account.username, account.identity_key.as_slice(), day],
            )
            .map_err(StoreError::from)?;
            conn.execute(
                "INSERT INTO devices (device_id, username, certificate, identity_signature, device_key, created_day, \
                 last_seen_day, num) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, (SELECT coalesce(max(num), 0) + 1 FROM devices))",
                params![
                    account.device_id.as_bytes().as_slice(),
                    account.username,
                    account.device.certificate,
                    account.device.identity_signature,
                    account.device_key.as_slice(),
                    day
                ],
            )
            .map_err(StoreError::from)?;
            for entry in &account.log_entries {
                append_log(conn, &account.username, entry)?;
            }
            Ok(())
        })
        .await
    }

    async fn device(
        &self,
        username: &str,
        device_id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |conn| {
            let found: Option<(Vec<u8>, bool, i64)> = conn
                .query_row(
                    "SELECT device_key, removed_day IS NOT NULL, last_seen_day FROM devices \
                     WHERE device_id = ?1 AND username = ?2",
                    params![device_id.as_bytes().as_slice(), username],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            found
                .map(|(key, removed, last_seen_day)| {
                    Ok(DeviceRecord {
                        device_id,
                        username,
                        device_key: key32(key, "device key")?,
                        removed,
                        last_seen_day: to_u64(last_seen_day),
                    })
                })
                .transpose()
        })
        .await
    }

    async fn touch_device(&self, device_id: DeviceId, today: UnixDay) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE devices SET last_seen_day = ?1 WHERE device_id = ?2 AND last_seen_day < ?1",
                params![to_i64(today), device_id.as_bytes().as_slice()],
            )?;
            Ok(())
        })
        .await
    }

    async fn key_package_status(
        &self,
        device_id: DeviceId,
    ) -> Result<KeyPackageStatus, StoreError> {
        self.read(move |conn| key_package_status(conn, device_id))
            .await
    }

    async fn upload_key_packages(
        &self,
        device_id: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageStatus, StoreError> {
        self.write(move |conn| {
            let id = device_id.as_bytes().as_slice();
            let mut insert = conn.prepare_cached(
                "INSERT INTO key_packages (device_id, key_package) VALUES (?1, ?2)",
            )?;
            for kp in &key_packages {
                insert.execute(params![id, kp])?;
            }
            if let Some(kp) = &last_resort {
                conn.execute(
                    "INSERT INTO last_resort_key_packages (device_id, key_package) VALUES (?1, ?2) \
                     ON CONFLICT(device_id) DO UPDATE SET key_package = excluded.key_package",
                    params![id, kp],
                )?;
            }
            key_package_status(conn, device_id)
        })
        .await
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        let username = username.to_owned();
        self.write(move |conn| {
            let identity_key: Option<Vec<u8>> = conn
                .query_row("SELECT identity_key FROM accounts WHERE username = ?1", [&username], |r| r.get(0))
                .optional()?;
            let Some(identity_key) = identity_key else {
                return Ok(None);
            };
            let mut devices_stmt = conn.prepare_cached(
                "SELECT device_id, certificate, identity_signature FROM devices \
                 WHERE username = ?1 AND removed_day IS NULL ORDER BY rowid",
            )?;
            let devices = devices_stmt
                .query_map([&username], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, Vec<u8>>(2)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut claimed = Vec::new();
            for (raw_id, certificate, identity_signature) in devices {
                let device_id = DeviceId::from_slice(&raw_id)
                    .ok_or_else(|| StoreError::Backend("stored device id has the wrong length".into()))?;
                if !only.is_empty() && !only.contains(&device_id) {
                    continue;
                }
                let one_time: Option<(i64, Vec<u8>)> = conn
                    .query_row(
                        "SELECT id, key_package FROM key_packages WHERE device_id = ?1 ORDER BY id LIMIT 1",
                        [&raw_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let (key_package, last_resort) = match one_time {
                    Some((id, kp)) => {
                        conn.execute("DELETE FROM key_packages WHERE id = ?1", [id])?;
                        (kp, false)
                    }
                    None => {
                        let kp: Option<Vec<u8>> = conn
                            .query_row(
                                "SELECT key_package FROM last_resort_key_packages WHERE device_id = ?1",
                                [&raw_id],
                                |r| r.get(0),
                            )
                            .optional()?;
                        match kp {
                            Some(kp) => (kp, true),
                            None => continue,
                        }
                    }
                };
                let remaining = key_package_status(conn, device_id)?.remaining;
                claimed.push(ClaimedKeyPackage {
                    device_id,
                    device: SignedDevice { certificate, identity_signature },
                    key_package,
                    remaining,
                    last_resort,
                });
            }
            Ok(Some(KeyPackageBundle { identity_key: key32(identity_key, "identity key")?, devices: claimed }))
        })
        .await
    }

    async fn enqueue(&self, message: GroupMessage) -> Result<Enqueued, EnqueueError> {
        let limit = self.mailbox_limit();
        self.write(move |conn| {
            if message_exists(conn, message.envelope.message_id)? {
                return Ok(Enqueued::Duplicate);
            }
            let group: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = conn
                .prepare_cached(
                    "SELECT epoch, token_hash, prev_token_hash FROM mls_groups WHERE group_id = ?1",
                )
                .and_then(|mut find| {
                    find.query_row([message.group_id.as_bytes()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()
                })
                .map_err(StoreError::from)?;
            let Some((epoch, current, previous)) = group else {
                return Err(EnqueueError::UnknownGroup(message.group_id));
            };
            super::check_capability(&message, to_u64(epoch), &current, previous.as_deref())?;
            insert_envelope(conn, &message.envelope, message.now, limit)?;
            Ok(Enqueued::Queued)
        })
        .await
    }

    async fn submit_commit(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        let limit = self.mailbox_limit();
        self.write(move |conn| {
            let group: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT epoch, last_commit_id FROM mls_groups WHERE group_id = ?1",
                    [submission.group_id.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
            let commit_id = submission.commit.message_id;
            // A resend of the accepted commit: its id is still queued, or it
            // is the group's latest commit (whose recipients may all have
            // acknowledged it already, or which had none).
            let is_latest = group.as_ref().is_some_and(|(_, last)| last.as_slice() == commit_id.as_bytes());
            let accepted_before: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM accepted_commits WHERE group_id = ?1 AND message_id = ?2)",
                    params![submission.group_id.as_bytes(), commit_id.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if is_latest || accepted_before || message_exists(conn, commit_id)? {
                let current = group.map_or(0, |(epoch, _)| to_u64(epoch));
                return Ok(CommitAccepted { new_epoch: current, outcome: Enqueued::Duplicate });
            }
            let next_hash = submission.next_token_hash.as_slice();
            let new_epoch = match group {
                None if submission.epoch == 0 => {
                    conn.execute(
                        "INSERT INTO mls_groups (group_id, epoch, last_commit_id, token_hash) VALUES (?1, 1, ?2, ?3)",
                        params![submission.group_id.as_bytes(), commit_id.as_bytes().as_slice(), next_hash],
                    )
                    .map_err(StoreError::from)?;
                    1
                }
                None => return Err(CommitError::UnknownGroup(submission.group_id)),
                Some((current, _)) => {
                    let current = to_u64(current);
                    if submission.epoch != current {
                        return Err(CommitError::StaleEpoch { submitted: submission.epoch, current });
                    }
                    // Only members of the current epoch may commit.
                    let token_hash: Vec<u8> = conn
                        .query_row(
                            "SELECT token_hash FROM mls_groups WHERE group_id = ?1",
                            [submission.group_id.as_bytes()],
                            |r| r.get(0),
                        )
                        .map_err(StoreError::from)?;
                    if submission.token_hash.as_ref().map(|h| h.as_slice()) != Some(token_hash.as_slice()) {
                        return Err(CommitError::NotAuthorized);
                    }
                    let next = current.saturating_add(1);
                    conn.execute(
                        "UPDATE mls_groups SET epoch = ?1, last_commit_id = ?2, \
                         prev_token_hash = token_hash, token_hash = ?3 WHERE group_id = ?4",
                        params![
                            to_i64(next),
                            commit_id.as_bytes().as_slice(),
                            next_hash,
                            submission.group_id.as_bytes()
                        ],
                    )
                    .map_err(StoreError::from)?;
                    next
                }
            };
            insert_envelope(conn, &submission.commit, submission.now, limit)?;
            conn.execute(
                "INSERT OR IGNORE INTO accepted_commits (group_id, message_id, day) VALUES (?1, ?2, ?3)",
                params![
                    submission.group_id.as_bytes(),
                    commit_id.as_bytes().as_slice(),
                    to_i64(super::day_of(submission.now))
                ],
            )
            .map_err(StoreError::from)?;
            if let Some(welcome) = &submission.welcome
                && !message_exists(conn, welcome.message_id)?
            {
                insert_envelope(conn, welcome, submission.now, limit)?;
            }
            Ok(CommitAccepted { new_epoch, outcome: Enqueued::Queued })
        })
        .await
    }

    async fn group_epoch(&self, group_id: &GroupId) -> Result<Option<u64>, StoreError> {
        let group_id = group_id.clone();
        self.read(move |conn| {
            let epoch: Option<i64> = conn
                .query_row(
                    "SELECT epoch FROM mls_groups WHERE group_id = ?1",
                    [group_id.as_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(epoch.map(to_u64))
        })
        .await
    }

    async fn fetch_mailbox(
        &self,
        device_id: DeviceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT mailbox.seq, messages.message_id, messages.payload FROM mailbox \
                 JOIN messages ON messages.id = mailbox.message_ref \
                 WHERE mailbox.device_num = (SELECT num FROM devices WHERE device_id = ?1) \
                 AND mailbox.seq > ?2 ORDER BY mailbox.seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    device_id.as_bytes().as_slice(),
                    to_i64(after),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )?;
            let mut entries = Vec::new();
            for row in rows {
                let (seq, message_id, payload) = row?;
                let message_id = MessageId::from_slice(&message_id).ok_or_else(|| {
                    StoreError::Backend("stored message id has the wrong length".into())
                })?;
                entries.push(MailboxEntry {
                    seq: to_u64(seq),
                    message_id,
                    payload,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn ack(&self, device_id: DeviceId, seqs: Vec<u64>) -> Result<u64, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        self.write(move |conn| {
            let Some(num) = device_num(conn, device_id)? else {
                return Ok(0);
            };
            let mut delete = conn.prepare_cached(
                "DELETE FROM mailbox WHERE seq = ?1 AND device_num = ?2 RETURNING message_ref",
            )?;
            let mut orphan = conn.prepare_cached(
                "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_ref = ?1)",
            )?;
            let mut deleted = 0;
            for seq in seqs {
                let seq = to_i64(seq);
                let message_ref: Option<i64> = delete.query_row(params![seq, num], |r| r.get(0)).optional()?;
                if let Some(message_ref) = message_ref {
                    orphan.execute([message_ref])?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn expire(&self, cutoff: UnixSeconds) -> Result<u64, StoreError> {
        self.write(move |conn| {
            // Entries are appended in time order: the expired ones are the
            // entries before the first unexpired one (found by walking the
            // table in seq order, no index needed). Should the clock have
            // gone back, an older entry after that point waits for a later
            // sweep.
            let deleted = conn.execute(
                "DELETE FROM mailbox WHERE enqueued_day < ?1 AND seq < coalesce(\
                 (SELECT seq FROM mailbox WHERE enqueued_day >= ?1 ORDER BY seq LIMIT 1), \
                 9223372036854775807)",
                [to_i64(super::day_of(cutoff))],
            )?;
            delete_orphaned_messages(conn)?;
            conn.execute(
                "DELETE FROM accepted_commits WHERE day < ?1",
                [to_i64(super::day_of(cutoff))],
            )?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        })
        .await
    }

    fn set_entry_listener(&self, listener: EntryListener) {
        // A second listener is ignored, as documented on the trait.
        let _ = self.inner.entry_listener.set(listener);
    }

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
            })
        })
        .await
    }

    async fn log_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO server_keys (name, secret) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                params![LOG_KEY_NAME, fresh.as_slice()],
            )?;
            let stored = read_log_key_secret(conn)?
                .ok_or_else(|| StoreError::Backend("the log key was not stored".into()))?;
            let mut secret = Zeroizing::new([0; 32]);
            if stored.len() != secret.len() {
                return Err(StoreError::Backend("the stored log key is not 32 bytes".into()));
            }
            secret.copy_from_slice(&stored);
            Ok(secret)
        })
        .await
    }

    async fn add_device(&self, device: NewDevice) -> Result<(), AddDeviceError> {
        self.write(move |conn| {
            let known: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM accounts WHERE username = ?1)",
                    [&device.username],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if !known {
                return Err(AddDeviceError::UnknownUser);
            }
            let expected = next_account_seq(conn, &device.username)?;
            if device.account_seq != expected {
                return Err(AddDeviceError::StaleSequence { expected });
            }
            if device_id_taken(conn, device.device_id)? {
                return Err(AddDeviceError::DeviceIdTaken(device.device_id));
            }
            conn.execute(
                "INSERT INTO devices (device_id, username, certificate, identity_signature, device_key, created_day, \
                 last_seen_day, num) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, (SELECT coalesce(max(num), 0) + 1 FROM devices))",
                params![
                    device.device_id.as_bytes().as_slice(),
                    device.username,
                    device.device.certificate,
                    device.device.identity_signature,
                    device.device_key.as_slice(),
                    to_i64(device.today)
                ],
            )
            .map_err(StoreError::from)?;
            append_log(conn, &device.username, &device.log_entry)?;
            Ok(())
        })
        .await
    }

    async fn remove_device(&self, removal: DeviceRemoval) -> Result<(), RemoveDeviceError> {
        self.write(move |conn| {
            let id = removal.device_id.as_bytes().as_slice();
            let active: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM devices WHERE device_id = ?1 AND username = ?2 AND removed_day IS NULL)",
                    params![id, removal.username],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if !active {
                return Err(RemoveDeviceError::UnknownDevice);
            }
            let expected = next_account_seq(conn, &removal.username)?;
            if removal.account_seq != expected {
                return Err(RemoveDeviceError::StaleSequence { expected });
            }
            conn.execute(
                "UPDATE devices SET removed_day = ?1 WHERE device_id = ?2",
                params![to_i64(removal.today), id],
            )
            .map_err(StoreError::from)?;
            conn.execute("DELETE FROM key_packages WHERE device_id = ?1", [id])
                .map_err(StoreError::from)?;
            conn.execute("DELETE FROM last_resort_key_packages WHERE device_id = ?1", [id])
                .map_err(StoreError::from)?;
            let refs = conn
                .prepare_cached(
                    "SELECT DISTINCT message_ref FROM mailbox \
                     WHERE device_num = (SELECT num FROM devices WHERE device_id = ?1)",
                )
                .map_err(StoreError::from)?
                .query_map([id], |r| r.get::<_, i64>(0))
                .map_err(StoreError::from)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)?;
            conn.execute(
                "DELETE FROM mailbox WHERE device_num = (SELECT num FROM devices WHERE device_id = ?1)",
                [id],
            )
                .map_err(StoreError::from)?;
            let mut orphan = conn
                .prepare_cached(
                    "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_ref = ?1)",
                )
                .map_err(StoreError::from)?;
            for message_ref in refs {
                orphan.execute([message_ref]).map_err(StoreError::from)?;
            }
            append_log(conn, &removal.username, &removal.log_entry)?;
            Ok(())
        })
        .await
    }

    async fn account_log(&self, username: &str) -> Result<Vec<LogRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |conn| {
            log_records(
                conn,
                "SELECT idx, username, entry FROM log_entries WHERE username = ?1 ORDER BY idx",
                [&username],
            )
        })
        .await
    }

    async fn log_entries(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, StoreError> {
        self.read(move |conn| {
            log_records(
                conn,
                "SELECT idx, username, entry FROM log_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
                params![to_i64(start), i64::try_from(limit).unwrap_or(i64::MAX)],
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
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
}
