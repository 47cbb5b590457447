//! The PostgreSQL backend (`--store postgres://…`).
//!
//! Like the SQLite backend, one writer task per process commits queued
//! write operations in batches: it takes an operation from its queue, drains
//! up to `MAX_BATCH` more that are already waiting, runs them in one
//! transaction (each inside its own SAVEPOINT, so one failing operation does
//! not undo the others), commits with `synchronous_commit = on`, and only
//! then answers all of them. Many concurrent sends thus share one WAL flush,
//! and every `Ok` means "committed". Reads run on pooled connections.
//!
//! Other processes may write to the same database (the multi-node mode of
//! issue #16): what must hold across them is enforced by the database, not
//! by this writer: one commit per epoch is a conditional `UPDATE` (and the
//! group's creation an `INSERT … ON CONFLICT DO NOTHING`), mailbox seqs
//! come from one counter row updated in the writing transaction. Every
//! batch's transaction first takes one advisory lock (the write order, see
//! `writer::BEGIN_BATCH`), so batches of different nodes never hold rows
//! the other waits for: no deadlock between a send and a commit.
//!
//! - `schema`: migrations (the `schema_migrations` table)
//! - `writer`: the writer task, batches, SAVEPOINTs, the connection helpers
//! - `accounts`, `key_packages`, `mailbox`, `log`: one role trait of
//!   [`Store`] each, over its family of tables (as in `sqlite/`)
//! - `legal`, `admin`: [`LegalStore`], [`AdminStore`]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use zeroize::Zeroizing;

use super::{
    AccountIdentity, AccountStore, ActiveDevice, AddDeviceError, AdminStore, CanaryRecord,
    ClaimedKeyPackage, CommitAccepted, CommitError, CommitSubmission, DeviceId, DeviceRecord,
    DeviceRemoval, EnqueueError, Enqueued, EntryListener, Envelope, Expired, ExportSnapshot,
    ExportedAccount, ExportedDevice, GroupId, GroupMessage, InviteRecord, KeyPackageBundle,
    KeyPackageStatus, KeyPackageStore, LegalStore, LogRecord, LogStore, MailboxEntry, MailboxStore,
    MessageId, NewAccount, NewDevice, NewEntry, Queued, RegisterError, RemoveDeviceError,
    ReportRecord, SignedDevice, Store, StoreError, StoreStats, StoredFrank, UnixDay, UnixSeconds,
    check_capability, day_of,
};
use crate::metrics::WriterMetrics;

mod accounts;
mod admin;
mod directory;
mod election;
mod invite_links;
mod key_packages;
mod legal;
mod log;
mod mailbox;
mod moderation;
mod push;
mod schema;
mod writer;

use log::{LOG_KEY_NAME, append_log, lock_log, next_account_seq};
pub use schema::SCHEMA_VERSION;
use writer::{Tx, WriterMsg, run_writer};

/// Connections the pool keeps (readers, plus the writer's).
const POOL_SIZE: usize = 16;

/// What opening a store does with the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Brings it up to date.
    Migrate,
    /// Refuses unless it is at [`SCHEMA_VERSION`].
    MustBeCurrent,
}

/// PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// For connections of their own (the log writer election's).
    config: tokio_postgres::Config,
    /// Where it connects, without a password (for messages).
    target: String,
    writer_tx: mpsc::UnboundedSender<WriterMsg>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// See [`MailboxStore::set_mailbox_limit`].
    mailbox_limit: std::sync::atomic::AtomicU32,
    entry_listener: Arc<OnceLock<EntryListener>>,
    writer_metrics: WriterMetrics,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Whether `store` names a PostgreSQL database (`postgres://` or
/// `postgresql://`) rather than a data directory.
pub fn is_postgres_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// Parses a connection string (a `postgres://` URL, or libpq's
/// `key=value` form).
pub fn parse_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Backend(format!("cannot parse the PostgreSQL address: {e}")))
}

/// Where a config connects, without its password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

impl PostgresStore {
    /// Connects to the database at `url`, brings its schema up to date and
    /// starts the writer task.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::connect(parse_config(url)?).await
    }

    /// Like [`PostgresStore::open`], from a parsed config.
    pub async fn connect(config: tokio_postgres::Config) -> Result<Self, StoreError> {
        Self::start(config, Schema::Migrate).await
    }

    /// Connects to a database that `sotto-server migrate` (or a server)
    /// already brought to this version's schema, changing nothing else:
    /// for the operator's commands, which must not migrate a database that
    /// running servers of another version use.
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        Self::start(parse_config(url)?, Schema::MustBeCurrent).await
    }

    /// `sotto-server migrate`: brings the schema of the database at `url`
    /// up to date. Returns the versions before and after.
    pub async fn migrate(url: &str) -> Result<(i32, i32), StoreError> {
        let config = parse_config(url)?;
        let target = describe(&config);
        let (mut client, connection) =
            config.connect(tokio_postgres::NoTls).await.map_err(|e| {
                StoreError::Backend(format!("cannot connect to PostgreSQL at {target}: {e}"))
            })?;
        let driver = tokio::spawn(connection);
        let versions = schema::migrate_client(&mut client).await;
        drop(client);
        let _ = driver.await;
        versions
    }

    async fn start(config: tokio_postgres::Config, schema: Schema) -> Result<Self, StoreError> {
        let target = describe(&config);
        let pool = connection_pool(config.clone(), POOL_SIZE, "the connection pool")?;
        {
            let mut client = pool.get().await.map_err(|e| {
                StoreError::Backend(format!("cannot connect to PostgreSQL at {target}: {e}"))
            })?;
            match schema {
                Schema::Migrate => {
                    schema::migrate_client(&mut client).await?;
                }
                Schema::MustBeCurrent => schema::check_current(&client).await?,
            }
        }
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let entry_listener = Arc::new(OnceLock::new());
        let writer_metrics = WriterMetrics::default();
        let writer = tokio::spawn(run_writer(
            pool.clone(),
            writer_rx,
            Arc::clone(&entry_listener),
            writer_metrics.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                target,
                writer_tx,
                writer: Mutex::new(Some(writer)),
                mailbox_limit: std::sync::atomic::AtomicU32::new(u32::MAX),
                entry_listener,
                writer_metrics,
            }),
        })
    }

    /// Where it is connected (no password), for messages.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// How it connects: for the blob store's pool of its own
    /// (`crate::blobs`), whose uploads must not take the writer's
    /// connections.
    pub(crate) fn connect_config(&self) -> tokio_postgres::Config {
        self.inner.config.clone()
    }

    /// The writer's batch sizes and commit times, for `/metrics`.
    pub fn writer_metrics(&self) -> WriterMetrics {
        self.inner.writer_metrics.clone()
    }

    /// Caps the entries one device's mailbox may hold (see
    /// [`MailboxStore::set_mailbox_limit`]).
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

    /// Lets the writer commit everything already queued, then stops it and
    /// waits for it. Later writes fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let _ = self.inner.writer_tx.send(WriterMsg::Close);
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        self.inner.pool.close();
    }

    /// A pooled connection for reads (autocommit).
    async fn reader(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("no PostgreSQL connection: {e}")))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) {
            return Self::Full;
        }
        // The database's own message (`{e}` alone says only "db error").
        match e.as_db_error() {
            Some(db) => Self::Backend(format!(
                "PostgreSQL: {}: {}",
                db.code().code(),
                db.message()
            )),
            None => Self::Backend(format!("PostgreSQL: {e}")),
        }
    }
}

/// Parameters of one statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs a statement (prepared once per connection) and returns its rows.
async fn query(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// Runs a statement and returns its only row, if any.
async fn query_opt(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

/// Runs a statement that returns exactly one row.
async fn query_one(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_one(&stmt, params).await?)
}

/// Runs a statement and returns how many rows it changed.
async fn execute(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// Column `idx` of a row.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| StoreError::Backend(format!("unexpected stored value: {e}")))
}

/// The secret stored in `server_keys` under `name`, or `fresh`, stored now,
/// if there is none yet (see the SQLite backend's `server_key_secret`).
async fn server_key_secret(
    c: &deadpool_postgres::ClientWrapper,
    name: &str,
    fresh: &[u8; 32],
    signed_rows: &str,
) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    if stored_server_key(c, name).await?.is_none() {
        let signed: i64 = get(&query_one(c, signed_rows, &[]).await?, 0)?;
        if signed > 0 {
            return Err(StoreError::Backend(format!(
                "the {name} signing key is missing, but {signed} records it signed are stored; \
                 a new key would make every client refuse this server: bring the old key back"
            )));
        }
    }
    execute(
        c,
        "INSERT INTO server_keys (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &fresh.as_slice()],
    )
    .await?;
    let stored = stored_server_key(c, name)
        .await?
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
async fn stored_server_key(
    c: &deadpool_postgres::ClientWrapper,
    name: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    match query_opt(
        c,
        "SELECT secret FROM server_keys WHERE name = $1",
        &[&name],
    )
    .await?
    {
        Some(row) => Ok(Some(Zeroizing::new(get::<Vec<u8>>(&row, 0)?))),
        None => Ok(None),
    }
}

fn key32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| StoreError::Backend(format!("stored {what} is not 32 bytes")))
}

fn device_id_of(bytes: &[u8]) -> Result<DeviceId, StoreError> {
    DeviceId::from_slice(bytes)
        .ok_or_else(|| StoreError::Backend("stored device id has the wrong length".into()))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Store for PostgresStore {
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let c = self.reader().await?;
        let row = query_one(
            &c,
            "SELECT (SELECT count(*) FROM accounts), \
                    (SELECT count(*) FROM devices WHERE removed_day IS NULL), \
                    (SELECT count(*) FROM mailbox), \
                    (SELECT count(*) FROM messages), \
                    (SELECT enqueued_day FROM mailbox ORDER BY seq LIMIT 1)",
            &[],
        )
        .await?;
        Ok(StoreStats {
            accounts: to_u64(get(&row, 0)?),
            devices: to_u64(get(&row, 1)?),
            mailbox_entries: to_u64(get(&row, 2)?),
            payloads: to_u64(get(&row, 3)?),
            oldest_entry_day: get::<Option<i64>>(&row, 4)?.map(to_u64),
        })
    }
}

/// A pool of up to `size` connections to `config`'s database, checked
/// with a cheap test on reuse (the store's and the blob store's pools).
pub(crate) fn connection_pool(
    config: tokio_postgres::Config,
    size: usize,
    what: &str,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot build {what}: {e}")))
}
