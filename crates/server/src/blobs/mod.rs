//! The blob store: encrypted attachments, uploaded over a resumable
//! protocol and fetched by the members a message names them to.
//!
//! The protocol is a hand-written subset of tus 1.0 (core, `creation`,
//! `termination`, `expiration`) on the server's own listener, under
//! `/blobs`. The `tus-protocol` crate (0.0.x/0.1.0, framework-neutral, no
//! axum adapter) was not used: what Sotto needs on top of tus — creation
//! authorised by a group's send capability, per-blob upload and fetch keys,
//! a committed offset that is durable before it is acknowledged, deletion
//! once every expected member fetched it — would live in its hooks anyway,
//! and the subset is small.
//!
//! Authorisation is by capability, never by account (no request here logs
//! in):
//! - `POST /blobs` needs the send capability of a group's current epoch (or
//!   the previous one during its grace period), checked as a sealed send's;
//!   the capability and group are not stored. It names the SHA-256 of two
//!   client-made keys: the *upload key* (the uploader's, to resume or
//!   terminate) and the *fetch key* (carried only inside the E2EE message,
//!   with the blob's id and the AES key);
//! - `HEAD` and `PATCH` (resume) and `DELETE` (terminate) need the upload
//!   key; `GET` needs the fetch key, and `DELETE` with the fetch key says
//!   "fetched": once as many fetches as the uploader expected were
//!   acknowledged, the blob is deleted. A wrong key and an unknown id get
//!   the same 404.
//!
//! What the server keeps of a blob is its ciphertext and a `BlobMeta`
//! (docs/SERVER_DATA.md lists it): no sender, no recipient, no group. Where
//! it keeps them follows the store (the protocol above is the same):
//! - the embedded SQLite store: files under `<data dir>/blobs/` on this
//!   node (`files.rs`);
//! - PostgreSQL (`--store`, one node or a cluster): the tables `blobs` and
//!   `blob_chunks` (`postgres.rs`), so any node serves any blob.
//!
//! Either way a PATCH's bytes are durable (fsynced, or committed) before
//! the new offset is, and the offset before it is acknowledged, so a
//! resume never loses acknowledged bytes; a PATCH cut short keeps what
//! arrived. One request at a time writes a blob: a mutex per blob in the
//! node and, on PostgreSQL, an advisory lock across nodes.
//!
//! The per-group daily quota is counted in each node's memory (a restart
//! resets it; in a cluster each node counts its own uploads, so a group
//! may create up to the quota once per node): keeping it in PostgreSQL
//! would store which group uploaded how much, which the blob rows
//! deliberately do not say.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::store::{Envelope, GroupId, GroupMessage, MailboxStore, MessageId};

mod files;
mod postgres;

/// The tus version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The tus extensions supported.
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration";
/// The largest blob accepted by default: 100 MiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 100 * 1024 * 1024;
/// Bytes of blobs one group may create per day by default: 1 GiB.
pub const DEFAULT_BLOB_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;
/// At most this many fetches may be expected of one blob (a group's
/// member devices, as one frame may name).
pub const MAX_FETCHES: u32 = 1000;
/// How often expired blobs are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long a PATCH, HEAD or DELETE waits for another request on the
/// same blob (a PATCH whose connection broke is still committing).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long a PATCH waits for more of its body before it commits what
/// arrived and ends.
const BODY_IDLE: Duration = Duration::from_secs(30);

/// The blob store's limits (`--max-blob-bytes`, `storage.max_blob_bytes`,
/// `storage.blob_quota_bytes`). Blobs live as long as undelivered messages
/// (`retention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobConfig {
    /// Largest `Upload-Length` accepted. Default 100 MiB.
    pub max_blob_bytes: u64,
    /// Bytes of blobs the capability holders of one group may create per
    /// UTC day (kept in each node's memory: a restart resets it). Default
    /// 1 GiB.
    pub quota_bytes_per_group: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            quota_bytes_per_group: DEFAULT_BLOB_QUOTA_BYTES,
        }
    }
}

/// A blob's id: 16 random bytes, 32 lowercase hex digits in its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BlobId([u8; 16]);

impl BlobId {
    fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        hex::decode(text).ok()?.try_into().ok().map(Self)
    }

    fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What the server keeps about one blob (`<id>.meta`, or its row in
/// `blobs`), besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct BlobMeta {
    /// The ciphertext's length, declared at creation.
    length: u64,
    /// Bytes received, made durable (fsynced, or committed) and
    /// acknowledged.
    offset: u64,
    /// Unix seconds, rounded up to the hour, after which it is deleted.
    expires_at: u64,
    /// SHA-256 of the upload key (hex).
    upload_key_hash: String,
    /// SHA-256 of the fetch key (hex).
    fetch_key_hash: String,
    /// Fetches still expected before the blob is deleted.
    fetches_left: u32,
}

/// The blob store: where blobs live, a lock per blob being written, and
/// each group's bytes created today (in memory).
#[derive(Debug)]
pub(crate) struct BlobStore {
    backend: Backend,
    config: BlobConfig,
    retention: Duration,
    locks: std::sync::Mutex<HashMap<BlobId, Arc<Mutex<()>>>>,
    quota: std::sync::Mutex<HashMap<GroupId, (u64, u64)>>,
}

/// Where blobs' bytes and records live.
#[derive(Debug)]
enum Backend {
    /// Files in this node's data directory (the SQLite store).
    Files(files::FileBlobs),
    /// Rows in the PostgreSQL store, shared by every node.
    Postgres(postgres::PgBlobs),
}

/// One blob held for writing: the node's mutex and, on PostgreSQL, the
/// advisory lock that holds across nodes.
#[derive(Debug)]
struct BlobLock {
    local: OwnedMutexGuard<()>,
    cluster: Option<postgres::ClusterLock>,
}

/// Ciphertext on its way to a downloader.
type BlobBytes = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// A PATCH body, cut at the blob's declared length: it yields what fits,
/// and says whether more was sent ([`PatchBody::overflow`]) or the
/// connection broke ([`PatchBody::broken`]).
struct PatchBody {
    stream: axum::body::BodyDataStream,
    room: u64,
    overflow: bool,
    broken: bool,
}

impl PatchBody {
    fn new(body: Body, room: u64) -> Self {
        Self {
            stream: body.into_data_stream(),
            room,
            overflow: false,
            broken: false,
        }
    }

    /// The next bytes that fit, or `None` at the end, at a break or past
    /// the length.
    async fn next(&mut self) -> Option<Bytes> {
        if self.overflow || self.broken {
            return None;
        }
        // A body that stalls ends like a broken one: what arrived is kept,
        // and the blob's lock (on PostgreSQL, a pooled session) is not held
        // by a client that stopped sending.
        let chunk = match tokio::time::timeout(BODY_IDLE, self.stream.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(_))) | Err(_) => {
                self.broken = true;
                return None;
            }
        };
        let take = usize::try_from(self.room)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        if take < chunk.len() {
            self.overflow = true;
        }
        self.room -= take as u64;
        Some(chunk.slice(..take))
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A refusal: a status and a sentence saying what to do.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        tus_headers(response.headers_mut());
        response
    }
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal(status, why.into())
}

fn not_found() -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        "no such blob (or not with that key); it may have expired or been fetched by everyone",
    )
}

fn storage(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "blob store failed");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the blob store failed; try again later",
    )
}

/// Another request holds the blob for longer than a request waits.
fn busy() -> Refusal {
    refuse(
        StatusCode::LOCKED,
        "another request is writing this blob; ask its offset again shortly",
    )
}

fn tus_headers(headers: &mut HeaderMap) {
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<u64, Refusal> {
    header_str(headers, name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("{name}: a number is needed"),
            )
        })
}

fn header_hash(headers: &HeaderMap, name: &str) -> Result<[u8; 32], Refusal> {
    header_str(headers, name)
        .and_then(|v| hex::decode(v).ok())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("{name}: 64 hex digits are needed"),
            )
        })
}

fn key_hash(headers: &HeaderMap, name: &str) -> Option<String> {
    let key = hex::decode(header_str(headers, name)?).ok()?;
    (key.len() == 32).then(|| hex::encode(Sha256::digest(&key).as_slice()))
}

/// Constant-time comparison of two hex hashes.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// An HTTP date (`Upload-Expires`).
fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

impl BlobStore {
    /// The file store under `data_dir/blobs` (see `files.rs`).
    pub(crate) fn open_files(
        data_dir: &FsPath,
        config: BlobConfig,
        retention: Duration,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> std::io::Result<Self> {
        let files = files::FileBlobs::open(data_dir, gauge)?;
        Ok(Self::with(Backend::Files(files), config, retention))
    }

    /// The store in the PostgreSQL database `store` uses (see
    /// `postgres.rs`); the gauge counts every node's blobs.
    pub(crate) async fn open_postgres(
        store: &crate::store::PostgresStore,
        config: BlobConfig,
        retention: Duration,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Result<Self, crate::store::StoreError> {
        let pg = postgres::PgBlobs::open(store.connect_config(), gauge).await?;
        Ok(Self::with(Backend::Postgres(pg), config, retention))
    }

    fn with(backend: Backend, config: BlobConfig, retention: Duration) -> Self {
        Self {
            backend,
            config,
            retention,
            locks: std::sync::Mutex::default(),
            quota: std::sync::Mutex::default(),
        }
    }

    /// Waits for the blob's lock: one writer at a time, and a HEAD sees
    /// the offset a broken PATCH committed. On PostgreSQL, across nodes.
    async fn lock(&self, id: BlobId) -> Result<BlobLock, Refusal> {
        let started = tokio::time::Instant::now();
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned"))?;
            Arc::clone(locks.entry(id).or_default())
        };
        let local = tokio::time::timeout(LOCK_WAIT, lock.lock_owned())
            .await
            .map_err(|_| busy())?;
        let cluster = match &self.backend {
            Backend::Files(_) => None,
            Backend::Postgres(pg) => {
                match pg
                    .lock(&id, LOCK_WAIT.saturating_sub(started.elapsed()))
                    .await
                {
                    Ok(cluster) => Some(cluster),
                    Err(refusal) => {
                        self.release_local(&id, local);
                        return Err(refusal);
                    }
                }
            }
        };
        Ok(BlobLock { local, cluster })
    }

    async fn unlock(&self, id: &BlobId, lock: BlobLock) {
        if let Some(cluster) = lock.cluster {
            cluster.release().await;
        }
        self.release_local(id, lock.local);
    }

    fn release_local(&self, id: &BlobId, guard: OwnedMutexGuard<()>) {
        drop(guard);
        if let Ok(mut locks) = self.locks.lock()
            && locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(id);
        }
    }

    /// The blob's record, if it exists and has not expired (read on the
    /// lock's session when `held`).
    async fn meta(
        &self,
        held: Option<&BlobLock>,
        id: &BlobId,
    ) -> Result<Option<BlobMeta>, Refusal> {
        let meta = match &self.backend {
            Backend::Files(files) => files.meta(id).await?,
            Backend::Postgres(pg) => pg.meta(cluster(held), id).await?,
        };
        Ok(meta.filter(|meta| meta.expires_at > now_secs()))
    }

    /// Stores a new, empty blob.
    async fn create(&self, id: &BlobId, meta: &BlobMeta) -> Result<(), Refusal> {
        match &self.backend {
            Backend::Files(files) => files.create(id, meta).await,
            Backend::Postgres(pg) => pg.create(id, meta).await,
        }
    }

    /// Deletes a blob.
    async fn remove(&self, held: Option<&BlobLock>, id: &BlobId) -> Result<(), Refusal> {
        match &self.backend {
            Backend::Files(files) => {
                files.remove(id).await;
                Ok(())
            }
            Backend::Postgres(pg) => pg.remove(cluster(held), id).await,
        }
    }

    /// One expected fetch of the blob (whose record is `meta`) done; the
    /// last deletes it.
    async fn record_fetch(
        &self,
        held: &BlobLock,
        id: &BlobId,
        meta: &BlobMeta,
    ) -> Result<(), Refusal> {
        match &self.backend {
            Backend::Files(files) => match meta.fetches_left {
                0 | 1 => {
                    files.remove(id).await;
                    Ok(())
                }
                left => {
                    let meta = BlobMeta {
                        fetches_left: left - 1,
                        ..meta.clone()
                    };
                    files.write_meta(id, &meta).await
                }
            },
            Backend::Postgres(pg) => pg.record_fetch(cluster(Some(held)), id).await,
        }
    }

    /// Stores `body` at the committed offset `meta.offset`; returns the
    /// new committed offset, durable.
    async fn append(
        &self,
        held: &BlobLock,
        id: &BlobId,
        meta: &BlobMeta,
        body: &mut PatchBody,
    ) -> Result<u64, Refusal> {
        match &self.backend {
            Backend::Files(files) => files.append(id, meta, body).await,
            Backend::Postgres(pg) => pg.append(cluster(Some(held)), id, meta, body).await,
        }
    }

    /// The ciphertext of a finished blob of `length` bytes.
    async fn read(&self, id: &BlobId, length: u64) -> Result<BlobBytes, Refusal> {
        match &self.backend {
            Backend::Files(files) => files.read(id, length).await,
            Backend::Postgres(pg) => Ok(pg.read(id, length)),
        }
    }

    /// Charges `length` bytes to `group`'s quota for today.
    fn charge(&self, group: &GroupId, length: u64) -> Result<(), Refusal> {
        let today = now_secs() / 86_400;
        let mut quota = self
            .quota
            .lock()
            .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned"))?;
        quota.retain(|_, (day, _)| *day == today);
        let used = quota.entry(group.clone()).or_insert((today, 0));
        let total = used.1.saturating_add(length);
        if total > self.config.quota_bytes_per_group {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this group's members may upload {} bytes of attachments per day; try again tomorrow",
                    self.config.quota_bytes_per_group
                ),
            ));
        }
        used.1 = total;
        Ok(())
    }

    /// Deletes every blob whose expiry has passed (finished or not). On
    /// PostgreSQL every node sweeps, and each also refreshes its gauge.
    pub(crate) async fn sweep(&self) -> std::io::Result<u64> {
        let now = now_secs();
        match &self.backend {
            Backend::Files(files) => files.sweep(now).await,
            Backend::Postgres(pg) => pg
                .sweep(now)
                .await
                .map_err(|e| std::io::Error::other(e.to_string())),
        }
    }
}

/// The lock's PostgreSQL session, if it has one.
fn cluster(held: Option<&BlobLock>) -> Option<&postgres::ClusterLock> {
    held.and_then(|lock| lock.cluster.as_ref())
}

/// Deletes expired blobs every [`SWEEP_INTERVAL`] until `stop` is set.
pub(crate) async fn sweep_expired(
    blobs: Arc<BlobStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match blobs.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired blobs deleted"),
            Err(e) => tracing::error!(error = %e, "blob sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What the blob routes need: the store and the capability check.
pub(crate) struct BlobState<S> {
    pub blobs: Arc<BlobStore>,
    pub ctx: Arc<crate::session::Context<S>>,
}

impl<S> Clone for BlobState<S> {
    fn clone(&self) -> Self {
        Self {
            blobs: Arc::clone(&self.blobs),
            ctx: Arc::clone(&self.ctx),
        }
    }
}

/// The `/blobs` routes, for merging into the server's router.
pub(crate) fn router<S, T>(state: BlobState<S>) -> Router<T>
where
    S: MailboxStore + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/blobs", post(create::<S>).options(options::<S>))
        .route("/blobs/{id}", any(by_id::<S>))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `OPTIONS /blobs`: what this server speaks.
async fn options<S: Send + Sync + 'static>(State(state): State<BlobState<S>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    tus_headers(headers);
    set(headers, "tus-version", TUS_VERSION);
    set(headers, "tus-extension", TUS_EXTENSIONS);
    set(headers, "tus-max-size", state.blobs.config.max_blob_bytes);
    response
}

fn check_version(headers: &HeaderMap) -> Result<(), Refusal> {
    match header_str(headers, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(refuse(
            StatusCode::PRECONDITION_FAILED,
            format!("Tus-Resumable: {TUS_VERSION} is needed"),
        )),
    }
}

/// `POST /blobs` (tus creation): a new, empty blob of `Upload-Length`
/// bytes. Needs `Sotto-Group` (hex), `Sotto-Epoch` and `Sotto-Capability`
/// (hex, the group's send capability of that epoch), and the SHA-256 of
/// the upload and fetch keys (`Sotto-Upload-Key-Hash`,
/// `Sotto-Fetch-Key-Hash`) and `Sotto-Fetches`, the number of fetches to
/// expect.
async fn create<S: MailboxStore + Send + Sync + 'static>(
    State(state): State<BlobState<S>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    check_version(&headers)?;
    let blobs = &state.blobs;
    if headers.contains_key("upload-defer-length") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Upload-Defer-Length is not supported: give Upload-Length",
        ));
    }
    let length = header_u64(&headers, "upload-length")?;
    if length > blobs.config.max_blob_bytes {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the largest attachment this server takes is {} bytes",
                blobs.config.max_blob_bytes
            ),
        ));
    }
    let group_id = header_str(&headers, "sotto-group")
        .and_then(|g| hex::decode(g).ok())
        .and_then(|g| GroupId::from_slice(&g))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "Sotto-Group: a hex group id is needed",
            )
        })?;
    let epoch = header_u64(&headers, "sotto-epoch")?;
    let capability = header_hash(&headers, "sotto-capability")?;
    let upload_key_hash = header_hash(&headers, "sotto-upload-key-hash")?;
    let fetch_key_hash = header_hash(&headers, "sotto-fetch-key-hash")?;
    let fetches = header_u64(&headers, "sotto-fetches")?;
    let fetches = u32::try_from(fetches)
        .ok()
        .filter(|n| (1..=MAX_FETCHES).contains(n))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("Sotto-Fetches: 1 to {MAX_FETCHES}"),
            )
        })?;
    // Checked as a sealed send is (an ephemeral one: nothing is queued).
    let message = GroupMessage {
        previous_epoch_open: state
            .ctx
            .epoch_grace
            .is_open(&group_id, tokio::time::Instant::now()),
        group_id: group_id.clone(),
        token_hash: Sha256::digest(capability).into(),
        epoch,
        envelope: Envelope {
            message_id: MessageId::new([0; sotto_proto::ID_LEN]),
            recipients: Vec::new(),
            payload: Vec::new(),
            frank: None,
        },
        now: now_secs(),
        expires_at: None,
    };
    if state.ctx.store.check_send(message).await.is_err() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "a blob is created with a group's current send capability",
        ));
    }
    blobs.charge(&group_id, length)?;
    let id = BlobId(rand::random());
    let expires_at = (now_secs() + blobs.retention.as_secs()).div_ceil(3600) * 3600;
    let meta = BlobMeta {
        length,
        offset: 0,
        expires_at,
        upload_key_hash: hex::encode(upload_key_hash),
        fetch_key_hash: hex::encode(fetch_key_hash),
        fetches_left: fetches,
    };
    blobs.create(&id, &meta).await?;
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    tus_headers(h);
    set(h, "location", format!("/blobs/{}", id.hex()));
    set(h, "upload-offset", 0);
    set(h, "upload-expires", http_date(expires_at));
    Ok(response)
}

/// `HEAD`, `PATCH`, `GET` and `DELETE` on one blob.
async fn by_id<S: Send + Sync + 'static>(
    State(state): State<BlobState<S>>,
    Path(id): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let id = BlobId::parse(&id).ok_or_else(not_found)?;
    let blobs = &state.blobs;
    match method {
        axum::http::Method::HEAD => {
            check_version(&headers)?;
            let lock = blobs.lock(id).await?;
            let meta = upload_meta(blobs, Some(&lock), &id, &headers).await;
            blobs.unlock(&id, lock).await;
            let meta = meta?;
            let mut response = StatusCode::OK.into_response();
            let h = response.headers_mut();
            tus_headers(h);
            set(h, "upload-offset", meta.offset);
            set(h, "upload-length", meta.length);
            set(h, "upload-expires", http_date(meta.expires_at));
            Ok(response)
        }
        axum::http::Method::PATCH => {
            check_version(&headers)?;
            // Its own task: when the client's connection drops, hyper drops
            // this handler, but the bytes that did arrive must still be
            // made durable and recorded (the body ends in an error, `patch`
            // commits what it has) before the lock lets a HEAD read the
            // offset.
            let blobs = Arc::clone(blobs);
            tokio::spawn(async move {
                let lock = blobs.lock(id).await?;
                let result = patch(&blobs, &lock, &id, &headers, body).await;
                blobs.unlock(&id, lock).await;
                result
            })
            .await
            .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "the upload task failed"))?
        }
        axum::http::Method::DELETE => {
            check_version(&headers)?;
            let lock = blobs.lock(id).await?;
            let result = delete(blobs, &lock, &id, &headers).await;
            blobs.unlock(&id, lock).await;
            result
        }
        axum::http::Method::GET => fetch(blobs, &id, &headers).await,
        _ => Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "HEAD, PATCH, GET or DELETE",
        )),
    }
}

/// The blob's record if `Sotto-Upload-Key` is its upload key.
async fn upload_meta(
    blobs: &BlobStore,
    held: Option<&BlobLock>,
    id: &BlobId,
    headers: &HeaderMap,
) -> Result<BlobMeta, Refusal> {
    let presented = key_hash(headers, "sotto-upload-key").ok_or_else(not_found)?;
    match blobs.meta(held, id).await? {
        Some(meta) if same(&meta.upload_key_hash, &presented) => Ok(meta),
        _ => Err(not_found()),
    }
}

/// `PATCH` (with the blob locked): appends the body at `Upload-Offset`,
/// which must be the committed offset. Bytes up to the declared length are
/// stored (even from a body cut short) and made durable, then the offset
/// is recorded and acknowledged.
async fn patch(
    blobs: &BlobStore,
    lock: &BlobLock,
    id: &BlobId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let meta = upload_meta(blobs, Some(lock), id, headers).await?;
    if header_str(headers, "content-type") != Some("application/offset+octet-stream") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/offset+octet-stream is needed",
        ));
    }
    let offset = header_u64(headers, "upload-offset")?;
    if offset != meta.offset {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "Upload-Offset {offset} is not the blob's offset {}; ask it with HEAD and send from there",
                meta.offset
            ),
        ));
    }
    if let Some(len) = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok())
        && offset.saturating_add(len) > meta.length
    {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body runs past Upload-Length {}", meta.length),
        ));
    }
    let mut body = PatchBody::new(body, meta.length.saturating_sub(meta.offset));
    let written = blobs.append(lock, id, &meta, &mut body).await?;
    if body.broken {
        tracing::debug!(
            offset = written,
            "a PATCH was cut short; its bytes so far are committed"
        );
    }
    if body.overflow {
        let mut refusal = refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body runs past Upload-Length {}; bytes up to it were kept",
                meta.length
            ),
        )
        .into_response();
        set(refusal.headers_mut(), "upload-offset", written);
        return Ok(refusal);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    tus_headers(h);
    set(h, "upload-offset", written);
    set(h, "upload-expires", http_date(meta.expires_at));
    Ok(response)
}

/// `DELETE` (with the blob locked) with the upload key: termination. With
/// the fetch key: one expected fetch done; the last one deletes the blob.
async fn delete(
    blobs: &BlobStore,
    lock: &BlobLock,
    id: &BlobId,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let meta = blobs.meta(Some(lock), id).await?.ok_or_else(not_found)?;
    let upload = key_hash(headers, "sotto-upload-key");
    let fetch = key_hash(headers, "sotto-fetch-key");
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_headers(response.headers_mut());
    if upload.is_some_and(|k| same(&k, &meta.upload_key_hash)) {
        blobs.remove(Some(lock), id).await?;
        return Ok(response);
    }
    if !fetch.is_some_and(|k| same(&k, &meta.fetch_key_hash)) || meta.offset < meta.length {
        return Err(not_found());
    }
    blobs.record_fetch(lock, id, &meta).await?;
    Ok(response)
}

/// `GET` with the fetch key: the whole ciphertext of a finished upload.
async fn fetch(blobs: &BlobStore, id: &BlobId, headers: &HeaderMap) -> Result<Response, Refusal> {
    let presented = key_hash(headers, "sotto-fetch-key").ok_or_else(not_found)?;
    let meta = match blobs.meta(None, id).await? {
        Some(meta) if same(&meta.fetch_key_hash, &presented) => meta,
        _ => return Err(not_found()),
    };
    if meta.offset < meta.length {
        return Err(refuse(
            StatusCode::CONFLICT,
            "the upload of this blob has not finished",
        ));
    }
    let stream = blobs.read(id, meta.length).await?;
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    tus_headers(h);
    set(h, "content-length", meta.length);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn blob_ids_are_32_lowercase_hex_digits() {
        let id = BlobId([0xab; 16]);
        assert_eq!(BlobId::parse(&id.hex()), Some(id));
        assert_eq!(BlobId::parse(&id.hex().to_uppercase()), None);
        assert_eq!(BlobId::parse("ab"), None);
        assert_eq!(BlobId::parse("../../../../etc/passwd"), None);
    }

    const UPLOAD_KEY: [u8; 32] = [5; 32];

    fn files(store: &BlobStore) -> &files::FileBlobs {
        match &store.backend {
            Backend::Files(files) => files,
            Backend::Postgres(_) => panic!("a file store was expected"),
        }
    }

    /// A store in a temporary directory holding one empty blob of `length`
    /// bytes (created as `POST` would, without the capability check).
    async fn store_with_blob(length: u64) -> (tempfile::TempDir, BlobStore, BlobId) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_files(
            dir.path(),
            BlobConfig::default(),
            Duration::from_secs(3600),
            prometheus_client::metrics::gauge::Gauge::default(),
        )
        .unwrap();
        let id = BlobId([1; 16]);
        let meta = BlobMeta {
            length,
            offset: 0,
            expires_at: now_secs() + 3600,
            upload_key_hash: hex::encode(Sha256::digest(UPLOAD_KEY).as_slice()),
            fetch_key_hash: hex::encode([0; 32]),
            fetches_left: 1,
        };
        store.create(&id, &meta).await.unwrap();
        (dir, store, id)
    }

    fn patch_headers(offset: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        set(&mut h, "sotto-upload-key", hex::encode(UPLOAD_KEY));
        set(&mut h, "upload-offset", offset);
        set(&mut h, "content-type", "application/offset+octet-stream");
        h
    }

    /// A PATCH as `by_id` runs it: locked.
    async fn locked_patch(
        store: &BlobStore,
        id: &BlobId,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Refusal> {
        let lock = store.lock(*id).await.unwrap();
        let result = patch(store, &lock, id, headers, body).await;
        store.unlock(id, lock).await;
        result
    }

    async fn offset(store: &BlobStore, id: &BlobId) -> u64 {
        store.meta(None, id).await.unwrap().unwrap().offset
    }

    #[tokio::test]
    async fn patches_append_at_the_committed_offset_only() {
        let (_dir, store, id) = store_with_blob(10).await;
        let r = locked_patch(&store, &id, &patch_headers(0), Body::from("abcd"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["upload-offset"], "4");
        // Out of order: refused, nothing lost.
        let e = locked_patch(&store, &id, &patch_headers(2), Body::from("xx"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::CONFLICT);
        let e = locked_patch(&store, &id, &patch_headers(9), Body::from("x"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::CONFLICT);
        // Wrong media type, wrong key: refused.
        let mut h = patch_headers(4);
        set(&mut h, "content-type", "text/plain");
        let e = locked_patch(&store, &id, &h, Body::from("ef"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut h = patch_headers(4);
        set(&mut h, "sotto-upload-key", hex::encode([6u8; 32]));
        let e = locked_patch(&store, &id, &h, Body::from("ef"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::NOT_FOUND);
        let mut h = patch_headers(4);
        h.remove("upload-offset");
        let e = locked_patch(&store, &id, &h, Body::from("ef"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert_eq!(offset(&store, &id).await, 4);
        // Past the declared length: bytes up to it are kept, the rest refused.
        let r = locked_patch(&store, &id, &patch_headers(4), Body::from("efghijklmn"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(offset(&store, &id).await, 10);
        let data = tokio::fs::read(files(&store).data_path(&id)).await.unwrap();
        assert_eq!(data, b"abcdefghij");
        assert_eq!(files(&store).bytes.load(Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn a_body_cut_short_keeps_what_arrived() {
        let (_dir, store, id) = store_with_blob(100).await;
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"0123456789")),
            Ok(Bytes::from_static(b"abcdef")),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut",
            )),
        ];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let _ = locked_patch(&store, &id, &patch_headers(0), body).await;
        assert_eq!(offset(&store, &id).await, 16);
        // Garbage past the recorded offset (a crash before the record was
        // written) is cut away by the next PATCH.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(files(&store).data_path(&id))
            .unwrap();
        std::io::Write::write_all(&mut file, b"GARBAGE").unwrap();
        locked_patch(&store, &id, &patch_headers(16), Body::from("xyz"))
            .await
            .unwrap();
        let data = tokio::fs::read(files(&store).data_path(&id)).await.unwrap();
        assert_eq!(data, b"0123456789abcdefxyz");
    }

    #[tokio::test]
    async fn a_patch_body_stops_at_the_declared_length() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
            Ok(Bytes::from_static(b"never read")),
        ];
        let mut body = PatchBody::new(Body::from_stream(futures_util::stream::iter(chunks)), 5);
        assert_eq!(body.next().await.unwrap(), "abc");
        assert_eq!(body.next().await.unwrap(), "de");
        assert!(body.overflow && !body.broken);
        assert!(body.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_as_a_broken_one() {
        let first: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"abc"))];
        let stalled = futures_util::stream::iter(first).chain(futures_util::stream::pending());
        let mut body = PatchBody::new(Body::from_stream(stalled), 10);
        assert_eq!(body.next().await.unwrap(), "abc");
        assert!(body.next().await.is_none(), "no more after {BODY_IDLE:?}");
        assert!(body.broken && !body.overflow);
    }

    #[tokio::test]
    async fn expired_blobs_are_swept_and_unknown() {
        let (_dir, store, id) = store_with_blob(4).await;
        let mut meta = store.meta(None, &id).await.unwrap().unwrap();
        meta.expires_at = now_secs().saturating_sub(1);
        files(&store).write_meta(&id, &meta).await.unwrap();
        assert!(store.meta(None, &id).await.unwrap().is_none());
        assert_eq!(store.sweep().await.unwrap(), 1);
        assert!(!files(&store).data_path(&id).exists());
        assert!(!files(&store).meta_path(&id).exists());
    }

    #[test]
    fn hashes_compare_in_full() {
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abcd", "abc"));
    }
}
