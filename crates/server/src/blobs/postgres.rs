//! Blobs in PostgreSQL (`--store postgres://…`), so that every node of a
//! cluster serves every blob: a blob uploaded through one node resumes,
//! downloads and is counted down through any other.
//!
//! Two tables (migration 7, docs/SERVER_DATA.md): `blobs`, one row per
//! blob holding exactly [`BlobMeta`]'s fields, and `blob_chunks`, its
//! ciphertext in rows of at most [`ROW_BYTES`] keyed by their offset,
//! deleted with the blob (`ON DELETE CASCADE`). Chunked `bytea` rows, not
//! large objects: large objects live in `pg_largeobject` apart from the
//! rows naming them (a deleted blob leaves its object behind unless every
//! path remembers `lo_unlink`), need their own privileges and are written
//! through a descriptor API inside one transaction; rows are deleted,
//! backed up, counted and listed in the data inventory like any others,
//! and a row of a MiB stays well under `bytea`'s limit and the protocol's
//! memory budget (the client sends a MiB per PATCH).
//!
//! Durability: each row goes in with the offset it moves to, in one
//! statement (its own transaction, on a session with
//! `synchronous_commit = on`), and only if the blob's committed offset is
//! still the one the row starts at: a PATCH acknowledges an offset only
//! after every row up to it committed, a PATCH cut short commits what
//! arrived, a node dying mid-row commits nothing of it, and two writers
//! can never both append at one offset.
//!
//! Locking: besides the node's own per-blob mutex, HEAD, PATCH and DELETE
//! hold a session-level advisory lock on the blob (`pg_try_advisory_lock`
//! in the two-key space, [`LOCK_CLASS`] and 32 bits of the id) on a
//! connection of their own, polled for up to the same wait as the mutex:
//! one writer per blob across nodes, and a HEAD on another node waits for
//! a cut PATCH to commit what it received, as on one node. Two blobs whose
//! ids share those 32 bits merely wait for each other.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use bytes::BytesMut;
use deadpool_postgres::{Object, Pool};
use futures_util::StreamExt as _;

use super::{BlobBytes, BlobId, BlobMeta, PatchBody, Refusal, refuse, storage};
use crate::store::StoreError;

/// The largest row of ciphertext (`blob_chunks.bytes`).
pub(super) const ROW_BYTES: usize = 1 << 20;
/// Connections of the blob store's own pool, per node: uploads and
/// downloads never take the message writer's connections, and a node
/// holds at most this many blobs locked (each lock is a session).
const POOL_SIZE: usize = 8;
/// How long a request waits for a connection of that pool.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// The first key of every blob lock (the advisory locks' two-key space,
/// apart from the store's one-key locks).
const LOCK_CLASS: i32 = 0x5077_0b10;
/// How often a request waiting for a blob's lock asks again.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// The blob store's connections and its `/metrics` gauge.
pub(super) struct PgBlobs {
    pool: Pool,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for PgBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBlobs").finish_non_exhaustive()
    }
}

/// A blob's lock across nodes: the session holding it.
pub(super) struct ClusterLock {
    conn: Option<Object>,
    key: i32,
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLock").finish_non_exhaustive()
    }
}

impl ClusterLock {
    /// Unlocks; a session that cannot say so is closed instead (which
    /// unlocks too).
    pub(super) async fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            let unlocked = conn
                .query_one(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[&LOCK_CLASS, &self.key],
                )
                .await
                .ok()
                .and_then(|row| row.try_get::<_, bool>(0).ok());
            if unlocked != Some(true) {
                drop(Object::take(conn));
            }
        }
    }
}

impl Drop for ClusterLock {
    /// Not released (its task was cancelled): the session is closed
    /// rather than returned to the pool still holding the lock.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

/// A connection: the lock's session, or one from the pool (boxed: a
/// pooled object is large).
enum Conn<'a> {
    Held(&'a Object),
    Own(Box<Object>),
}

impl std::ops::Deref for Conn<'_> {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Held(conn) => conn,
            Self::Own(conn) => conn,
        }
    }
}

fn db(e: tokio_postgres::Error) -> Refusal {
    storage(StoreError::from(e))
}

/// A stored number that must fit `T` (a negative length is corruption).
fn stored<T: TryFrom<i64>>(value: i64) -> Result<T, Refusal> {
    T::try_from(value).map_err(|_| storage("a stored blob number is out of range"))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// 32 bits of the blob's id, for its advisory lock.
fn lock_key(id: &BlobId) -> i32 {
    let [a, b, c, d, ..] = id.0;
    i32::from_be_bytes([a, b, c, d])
}

impl PgBlobs {
    /// A pool of its own on the store's database (whose schema the store
    /// already migrated); sets the gauge.
    pub(super) async fn open(
        mut config: tokio_postgres::Config,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Result<Self, StoreError> {
        // Every statement of this pool commits durably before it returns,
        // whatever the database's default.
        let options = format!(
            "{} -c synchronous_commit=on",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim_start());
        let pool = crate::store::postgres::connection_pool(config, POOL_SIZE, "the blob pool")?;
        let blobs = Self { pool, gauge };
        blobs.measure().await?;
        Ok(blobs)
    }

    async fn pooled(&self) -> Result<Object, Refusal> {
        match tokio::time::timeout(POOL_WAIT, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(storage(format!("no PostgreSQL connection for blobs: {e}"))),
            Err(_) => Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the blob store is busy; try again shortly",
            )),
        }
    }

    async fn conn<'a>(&self, held: Option<&'a ClusterLock>) -> Result<Conn<'a>, Refusal> {
        match held.and_then(|lock| lock.conn.as_ref()) {
            Some(conn) => Ok(Conn::Held(conn)),
            None => Ok(Conn::Own(Box::new(self.pooled().await?))),
        }
    }

    /// Sets the gauge to the committed bytes of every blob in the database.
    async fn measure(&self) -> Result<(), StoreError> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("no PostgreSQL connection: {e}")))?;
        let bytes: i64 = conn
            .query_one(
                "SELECT coalesce(sum(\"offset\"), 0)::bigint FROM blobs",
                &[],
            )
            .await?
            .try_get(0)?;
        self.gauge.set(bytes);
        Ok(())
    }

    /// Takes the blob's lock across nodes, waiting up to `wait`.
    pub(super) async fn lock(&self, id: &BlobId, wait: Duration) -> Result<ClusterLock, Refusal> {
        let deadline = tokio::time::Instant::now() + wait;
        let conn = self.pooled().await?;
        let key = lock_key(id);
        loop {
            let taken = conn
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])
                .await
                .and_then(|row| row.try_get::<_, bool>(0));
            match taken {
                Ok(true) => {
                    return Ok(ClusterLock {
                        conn: Some(conn),
                        key,
                    });
                }
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await;
                }
                Ok(false) => return Err(super::busy()),
                Err(e) => {
                    // Whether the lock was taken is unknown: close the session.
                    drop(Object::take(conn));
                    return Err(db(e));
                }
            }
        }
    }

    /// The blob's record, expired or not.
    pub(super) async fn meta(
        &self,
        held: Option<&ClusterLock>,
        id: &BlobId,
    ) -> Result<Option<BlobMeta>, Refusal> {
        let conn = self.conn(held).await?;
        let row = conn
            .query_opt(
                "SELECT length, \"offset\", expires_at, upload_key_hash, fetch_key_hash, \
                        fetches_left \
                 FROM blobs WHERE id = $1",
                &[&id.0.as_slice()],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(BlobMeta {
            length: stored(row.try_get(0).map_err(db)?)?,
            offset: stored(row.try_get(1).map_err(db)?)?,
            expires_at: stored(row.try_get(2).map_err(db)?)?,
            upload_key_hash: hex::encode(row.try_get::<_, Vec<u8>>(3).map_err(db)?),
            fetch_key_hash: hex::encode(row.try_get::<_, Vec<u8>>(4).map_err(db)?),
            fetches_left: stored(i64::from(row.try_get::<_, i32>(5).map_err(db)?))?,
        }))
    }

    /// A new, empty blob.
    pub(super) async fn create(&self, id: &BlobId, meta: &BlobMeta) -> Result<(), Refusal> {
        let hash = |h: &str| hex::decode(h).map_err(|_| storage("a key hash is not hex"));
        let (upload, fetch) = (hash(&meta.upload_key_hash)?, hash(&meta.fetch_key_hash)?);
        let fetches = i32::try_from(meta.fetches_left).unwrap_or(i32::MAX);
        let conn = self.pooled().await?;
        conn.execute(
            "INSERT INTO blobs \
                 (id, length, \"offset\", expires_at, upload_key_hash, fetch_key_hash, fetches_left) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id.0.as_slice(),
                &to_i64(meta.length),
                &to_i64(meta.offset),
                &to_i64(meta.expires_at),
                &upload,
                &fetch,
                &fetches,
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Deletes the blob and its chunks.
    pub(super) async fn remove(
        &self,
        held: Option<&ClusterLock>,
        id: &BlobId,
    ) -> Result<(), Refusal> {
        let conn = self.conn(held).await?;
        conn.execute("DELETE FROM blobs WHERE id = $1", &[&id.0.as_slice()])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// One expected fetch done: counts it down, or deletes the blob with
    /// the last one (one statement each, so a fetch is counted once even
    /// by nodes that do not share the lock).
    pub(super) async fn record_fetch(
        &self,
        held: Option<&ClusterLock>,
        id: &BlobId,
    ) -> Result<(), Refusal> {
        let conn = self.conn(held).await?;
        let counted = conn
            .execute(
                "UPDATE blobs SET fetches_left = fetches_left - 1 \
                 WHERE id = $1 AND fetches_left > 1",
                &[&id.0.as_slice()],
            )
            .await
            .map_err(db)?;
        if counted == 0 {
            conn.execute("DELETE FROM blobs WHERE id = $1", &[&id.0.as_slice()])
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Stores `body` from the committed offset in rows of at most
    /// [`ROW_BYTES`], each committed with the offset it moves to. Returns
    /// the committed offset.
    pub(super) async fn append(
        &self,
        held: Option<&ClusterLock>,
        id: &BlobId,
        meta: &BlobMeta,
        body: &mut PatchBody,
    ) -> Result<u64, Refusal> {
        let conn = self.conn(held).await?;
        let mut offset = meta.offset;
        let mut row = BytesMut::new();
        loop {
            let piece = body.next().await;
            let done = piece.is_none();
            if let Some(piece) = piece {
                row.extend_from_slice(&piece);
            }
            while row.len() >= ROW_BYTES || (done && !row.is_empty()) {
                let bytes = row.split_to(row.len().min(ROW_BYTES)).freeze();
                offset = commit_row(&conn, id, offset, &bytes).await?;
            }
            if done {
                return Ok(offset);
            }
        }
    }

    /// The first `length` bytes of the blob, a row per read (each on a
    /// pooled connection taken for that read only, so a slow download
    /// holds none).
    pub(super) fn read(&self, id: &BlobId, length: u64) -> BlobBytes {
        let pool = self.pool.clone();
        let id = id.0.to_vec();
        futures_util::stream::unfold((pool, 0u64), move |(pool, sent)| {
            let id = id.clone();
            async move {
                if sent >= length {
                    return None;
                }
                let row = read_row(&pool, &id, sent).await;
                let next = match row {
                    Ok(bytes)
                        if !bytes.is_empty()
                            && sent.saturating_add(bytes.len() as u64) <= length =>
                    {
                        let sent = sent + bytes.len() as u64;
                        return Some((Ok(bytes), (pool, sent)));
                    }
                    Ok(_) => std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the blob's rows do not add up to its length",
                    ),
                    Err(e) => e,
                };
                Some((Err(next), (pool, length)))
            }
        })
        .boxed()
    }

    /// Deletes every blob whose expiry is at or before `now` (finished or
    /// not), then measures what is left for the gauge.
    pub(super) async fn sweep(&self, now: u64) -> Result<u64, StoreError> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("no PostgreSQL connection: {e}")))?;
        let deleted = conn
            .execute("DELETE FROM blobs WHERE expires_at <= $1", &[&to_i64(now)])
            .await?;
        drop(conn);
        self.measure().await?;
        Ok(deleted)
    }
}

/// Appends one row at `offset` if that is still the blob's committed
/// offset (and the row fits its length), moving the offset past it in the
/// same statement. Returns the new offset.
async fn commit_row(
    conn: &deadpool_postgres::ClientWrapper,
    id: &BlobId,
    offset: u64,
    bytes: &[u8],
) -> Result<u64, Refusal> {
    let end = offset.saturating_add(bytes.len() as u64);
    let stmt = conn
        .prepare_cached(
            "WITH advanced AS ( \
                 UPDATE blobs SET \"offset\" = $3::bigint \
                 WHERE id = $1::bytea AND \"offset\" = $2::bigint AND $3::bigint <= length \
                 RETURNING id \
             ) \
             INSERT INTO blob_chunks (blob_id, chunk_offset, bytes) \
             SELECT id, $2::bigint, $4::bytea FROM advanced",
        )
        .await
        .map_err(db)?;
    let inserted = conn
        .execute(
            &stmt,
            &[&id.0.as_slice(), &to_i64(offset), &to_i64(end), &bytes],
        )
        .await
        .map_err(db)?;
    if inserted != 1 {
        return Err(refuse(
            StatusCode::CONFLICT,
            "the blob's offset moved (another upload of it, or it was deleted); ask it with HEAD",
        ));
    }
    Ok(end)
}

/// The row starting at `offset`.
async fn read_row(pool: &Pool, id: &[u8], offset: u64) -> Result<Bytes, std::io::Error> {
    let conn = tokio::time::timeout(POOL_WAIT, pool.get())
        .await
        .map_err(|_| std::io::Error::other("no PostgreSQL connection for blobs in time"))?
        .map_err(|e| std::io::Error::other(format!("no PostgreSQL connection for blobs: {e}")))?;
    let row = conn
        .query_opt(
            "SELECT bytes FROM blob_chunks WHERE blob_id = $1 AND chunk_offset = $2",
            &[&id, &to_i64(offset)],
        )
        .await
        .map_err(|e| std::io::Error::other(StoreError::from(e).to_string()))?
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "a row of the blob is missing (deleted while it was read?)",
            )
        })?;
    let bytes: Vec<u8> = row
        .try_get(0)
        .map_err(|e| std::io::Error::other(StoreError::from(e).to_string()))?;
    Ok(Bytes::from(bytes))
}
