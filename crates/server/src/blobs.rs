//! The blob store: encrypted attachments, uploaded over a resumable
//! protocol and fetched by the members a message names them to.
//!
//! The protocol is a hand-written subset of tus 1.0 (core, `creation`,
//! `termination`, `expiration`) on the server's own listener, under
//! `/blobs`. The `tus-protocol` crate (0.0.x/0.1.0, framework-neutral, no
//! axum adapter) was not used: what Sotto needs on top of tus — creation
//! authorised by a group's send capability, per-blob upload and fetch keys,
//! a committed offset that is fsynced before it is acknowledged, deletion
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
//! Each blob is two files under `<data dir>/blobs/`: `<id>.data`, the
//! ciphertext, and `<id>.meta`, a small JSON record of what the server
//! needs to run the protocol (docs/SERVER_DATA.md lists it): no sender, no
//! recipient, no group. A PATCH's bytes are written and fsynced, and only
//! then is the new offset recorded (atomically, in the meta file) and
//! acknowledged, so a resume never loses acknowledged bytes; bytes past the
//! recorded offset (a PATCH cut off before its fsync) are truncated away.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::store::{Envelope, GroupId, GroupMessage, MailboxStore, MessageId};

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

/// The blob store's limits (`--max-blob-bytes`, `storage.max_blob_bytes`,
/// `storage.blob_quota_bytes`). Blobs live as long as undelivered messages
/// (`retention`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobConfig {
    /// Largest `Upload-Length` accepted. Default 100 MiB.
    pub max_blob_bytes: u64,
    /// Bytes of blobs the capability holders of one group may create per
    /// UTC day (kept in memory: a restart resets it). Default 1 GiB.
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

/// What the server keeps about one blob (`<id>.meta`), besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct BlobMeta {
    /// The ciphertext's length, declared at creation.
    length: u64,
    /// Bytes received, fsynced and acknowledged.
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

/// The blob store: files under one directory, a lock per blob being
/// written, and each group's bytes created today (in memory).
#[derive(Debug)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    config: BlobConfig,
    retention: Duration,
    locks: std::sync::Mutex<HashMap<BlobId, Arc<Mutex<()>>>>,
    quota: std::sync::Mutex<HashMap<GroupId, (u64, u64)>>,
    /// Bytes of blob data on disk, and its `/metrics` gauge.
    bytes: AtomicU64,
    gauge: prometheus_client::metrics::gauge::Gauge,
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

fn storage(e: std::io::Error) -> Refusal {
    tracing::error!(error = %e, "blob store I/O failed");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the blob store failed; try again later",
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
    /// The store under `data_dir/blobs` (created with the first blob, so
    /// a server nobody sent a file through has no such directory);
    /// removes leftover temporary files.
    pub(crate) fn open(
        data_dir: &FsPath,
        config: BlobConfig,
        retention: Duration,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> std::io::Result<Self> {
        let dir = data_dir.join("blobs");
        let mut bytes = 0;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if name.ends_with(".data") {
                bytes += entry.metadata()?.len();
            }
        }
        gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        Ok(Self {
            dir,
            config,
            retention,
            locks: std::sync::Mutex::default(),
            quota: std::sync::Mutex::default(),
            bytes: AtomicU64::new(bytes),
            gauge,
        })
    }

    /// Accounts for a data file that grew from `before` to `after` bytes.
    fn resized(&self, before: u64, after: u64) {
        let now = if after >= before {
            self.bytes.fetch_add(after - before, Ordering::Relaxed) + (after - before)
        } else {
            let shrink = before - after;
            let old = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(shrink))
                })
                .unwrap_or(0);
            old.saturating_sub(shrink)
        };
        self.gauge.set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    fn data_path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(format!("{}.data", id.hex()))
    }

    fn meta_path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(format!("{}.meta", id.hex()))
    }

    /// Waits for the blob's lock: one writer at a time, and a HEAD sees
    /// the offset a broken PATCH committed.
    async fn lock(&self, id: BlobId) -> Result<OwnedMutexGuard<()>, Refusal> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned"))?;
            Arc::clone(locks.entry(id).or_default())
        };
        tokio::time::timeout(LOCK_WAIT, lock.lock_owned())
            .await
            .map_err(|_| {
                refuse(
                    StatusCode::LOCKED,
                    "another request is writing this blob; ask its offset again shortly",
                )
            })
    }

    fn unlock(&self, id: &BlobId, guard: OwnedMutexGuard<()>) {
        drop(guard);
        if let Ok(mut locks) = self.locks.lock()
            && locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(id);
        }
    }

    /// The blob's record, if it exists and has not expired.
    async fn meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, Refusal> {
        let bytes = match tokio::fs::read(self.meta_path(id)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let meta: BlobMeta = serde_json::from_slice(&bytes)
            .map_err(|e| storage(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Ok((meta.expires_at > now_secs()).then_some(meta))
    }

    /// Writes the record atomically and durably: a temporary file, fsync,
    /// rename, fsync of the directory.
    async fn write_meta(&self, id: &BlobId, meta: &BlobMeta) -> Result<(), Refusal> {
        let json =
            serde_json::to_vec(meta).map_err(|e| storage(std::io::Error::other(e.to_string())))?;
        let tmp = self.dir.join(format!("{}.meta.tmp", id.hex()));
        let path = self.meta_path(id);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, &json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| storage(std::io::Error::other(e.to_string())))?
        .map_err(storage)
    }

    /// Deletes a blob's files (meta first: without it the data is unreachable).
    async fn remove(&self, id: &BlobId) {
        let _ = tokio::fs::remove_file(self.meta_path(id)).await;
        if let Ok(len) = tokio::fs::metadata(self.data_path(id))
            .await
            .map(|m| m.len())
        {
            self.resized(len, 0);
        }
        let _ = tokio::fs::remove_file(self.data_path(id)).await;
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

    /// Deletes every blob whose expiry has passed (finished or not).
    pub(crate) async fn sweep(&self) -> std::io::Result<u64> {
        let now = now_secs();
        let mut deleted = 0;
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".meta"))
                .and_then(BlobId::parse)
            else {
                continue;
            };
            let expired = match tokio::fs::read(entry.path()).await {
                Ok(bytes) => serde_json::from_slice::<BlobMeta>(&bytes)
                    .map_or(true, |meta| meta.expires_at <= now),
                Err(_) => false,
            };
            if expired {
                self.remove(&id).await;
                deleted += 1;
            }
        }
        // Data whose record is gone (a crash between the two deletes).
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".data"))
                .and_then(BlobId::parse)
                && !tokio::fs::try_exists(self.meta_path(&id))
                    .await
                    .unwrap_or(true)
            {
                self.remove(&id).await;
            }
        }
        Ok(deleted)
    }
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
    tokio::fs::create_dir_all(&blobs.dir)
        .await
        .map_err(storage)?;
    tokio::fs::File::create(blobs.data_path(&id))
        .await
        .map_err(storage)?
        .sync_all()
        .await
        .map_err(storage)?;
    blobs.write_meta(&id, &meta).await?;
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
            let guard = blobs.lock(id).await?;
            let meta = upload_meta(blobs, &id, &headers).await;
            blobs.unlock(&id, guard);
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
            // fsynced and recorded (the body ends in an error, `patch`
            // commits what it has) before the lock lets a HEAD read the
            // offset.
            let blobs = Arc::clone(blobs);
            tokio::spawn(async move {
                let guard = blobs.lock(id).await?;
                let result = patch(&blobs, &id, &headers, body).await;
                blobs.unlock(&id, guard);
                result
            })
            .await
            .map_err(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "the upload task failed"))?
        }
        axum::http::Method::DELETE => {
            check_version(&headers)?;
            let guard = blobs.lock(id).await?;
            let result = delete(blobs, &id, &headers).await;
            blobs.unlock(&id, guard);
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
    id: &BlobId,
    headers: &HeaderMap,
) -> Result<BlobMeta, Refusal> {
    let presented = key_hash(headers, "sotto-upload-key").ok_or_else(not_found)?;
    match blobs.meta(id).await? {
        Some(meta) if same(&meta.upload_key_hash, &presented) => Ok(meta),
        _ => Err(not_found()),
    }
}

/// `PATCH`: appends the body at `Upload-Offset`, which must be the
/// committed offset. Bytes up to the declared length are written (even
/// from a body cut short), fsynced, then recorded and acknowledged.
async fn patch(
    blobs: &BlobStore,
    id: &BlobId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let mut meta = upload_meta(blobs, id, headers).await?;
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
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(blobs.data_path(id))
        .await
        .map_err(storage)?;
    let before = file.metadata().await.map_err(storage)?.len();
    // Bytes past the committed offset were never acknowledged.
    file.set_len(meta.offset).await.map_err(storage)?;
    file.seek(std::io::SeekFrom::Start(meta.offset))
        .await
        .map_err(storage)?;
    let mut written = meta.offset;
    let mut stream = body.into_data_stream();
    let mut overflow = false;
    let mut broken = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            broken = true;
            break;
        };
        let room = meta.length.saturating_sub(written);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
        let (fits, rest) = chunk.split_at(take);
        file.write_all(fits).await.map_err(storage)?;
        written += fits.len() as u64;
        if !rest.is_empty() {
            overflow = true;
            break;
        }
    }
    file.flush().await.map_err(storage)?;
    file.sync_all().await.map_err(storage)?;
    drop(file);
    blobs.resized(before, written);
    if written != meta.offset {
        meta.offset = written;
        blobs.write_meta(id, &meta).await?;
    }
    if broken {
        tracing::debug!(
            offset = written,
            "a PATCH was cut short; its bytes so far are committed"
        );
    }
    if overflow {
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

/// `DELETE` with the upload key: termination. With the fetch key: one
/// expected fetch done; the last one deletes the blob.
async fn delete(blobs: &BlobStore, id: &BlobId, headers: &HeaderMap) -> Result<Response, Refusal> {
    let meta = blobs.meta(id).await?.ok_or_else(not_found)?;
    let upload = key_hash(headers, "sotto-upload-key");
    let fetch = key_hash(headers, "sotto-fetch-key");
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_headers(response.headers_mut());
    if upload.is_some_and(|k| same(&k, &meta.upload_key_hash)) {
        blobs.remove(id).await;
        return Ok(response);
    }
    if !fetch.is_some_and(|k| same(&k, &meta.fetch_key_hash)) || meta.offset < meta.length {
        return Err(not_found());
    }
    match meta.fetches_left {
        0 | 1 => blobs.remove(id).await,
        left => {
            let meta = BlobMeta {
                fetches_left: left - 1,
                ..meta
            };
            blobs.write_meta(id, &meta).await?;
        }
    }
    Ok(response)
}

/// `GET` with the fetch key: the whole ciphertext of a finished upload.
async fn fetch(blobs: &BlobStore, id: &BlobId, headers: &HeaderMap) -> Result<Response, Refusal> {
    let presented = key_hash(headers, "sotto-fetch-key").ok_or_else(not_found)?;
    let meta = match blobs.meta(id).await? {
        Some(meta) if same(&meta.fetch_key_hash, &presented) => meta,
        _ => return Err(not_found()),
    };
    if meta.offset < meta.length {
        return Err(refuse(
            StatusCode::CONFLICT,
            "the upload of this blob has not finished",
        ));
    }
    let file = tokio::fs::File::open(blobs.data_path(id))
        .await
        .map_err(storage)?;
    let length = meta.length;
    let stream = futures_util::stream::unfold((file, 0u64), move |(mut file, sent)| async move {
        use tokio::io::AsyncReadExt as _;
        if sent >= length {
            return None;
        }
        let want = usize::try_from(length - sent)
            .unwrap_or(usize::MAX)
            .min(256 * 1024);
        let mut buf = vec![0; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob file shorter than recorded",
                )),
                (file, length),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), (file, sent + n as u64)))
            }
            Err(e) => Some((Err(e), (file, length))),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    tus_headers(h);
    set(h, "content-length", length);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use axum::body::Bytes;

    #[test]
    fn blob_ids_are_32_lowercase_hex_digits() {
        let id = BlobId([0xab; 16]);
        assert_eq!(BlobId::parse(&id.hex()), Some(id));
        assert_eq!(BlobId::parse(&id.hex().to_uppercase()), None);
        assert_eq!(BlobId::parse("ab"), None);
        assert_eq!(BlobId::parse("../../../../etc/passwd"), None);
    }

    const UPLOAD_KEY: [u8; 32] = [5; 32];

    /// A store in a temporary directory holding one empty blob of `length`
    /// bytes (created as `POST` would, without the capability check).
    async fn store_with_blob(length: u64) -> (tempfile::TempDir, BlobStore, BlobId) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(
            dir.path(),
            BlobConfig::default(),
            Duration::from_secs(3600),
            prometheus_client::metrics::gauge::Gauge::default(),
        )
        .unwrap();
        let id = BlobId([1; 16]);
        tokio::fs::create_dir_all(&store.dir).await.unwrap();
        tokio::fs::File::create(store.data_path(&id)).await.unwrap();
        let meta = BlobMeta {
            length,
            offset: 0,
            expires_at: now_secs() + 3600,
            upload_key_hash: hex::encode(Sha256::digest(UPLOAD_KEY).as_slice()),
            fetch_key_hash: hex::encode([0; 32]),
            fetches_left: 1,
        };
        store.write_meta(&id, &meta).await.unwrap();
        (dir, store, id)
    }

    fn patch_headers(offset: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        set(&mut h, "sotto-upload-key", hex::encode(UPLOAD_KEY));
        set(&mut h, "upload-offset", offset);
        set(&mut h, "content-type", "application/offset+octet-stream");
        h
    }

    async fn offset(store: &BlobStore, id: &BlobId) -> u64 {
        store.meta(id).await.unwrap().unwrap().offset
    }

    #[tokio::test]
    async fn patches_append_at_the_committed_offset_only() {
        let (_dir, store, id) = store_with_blob(10).await;
        let r = patch(&store, &id, &patch_headers(0), Body::from("abcd"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()["upload-offset"], "4");
        // Out of order: refused, nothing lost.
        let e = patch(&store, &id, &patch_headers(2), Body::from("xx"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::CONFLICT);
        let e = patch(&store, &id, &patch_headers(9), Body::from("x"))
            .await
            .unwrap_err();
        assert_eq!(e.0, StatusCode::CONFLICT);
        // Wrong media type, wrong key: refused.
        let mut h = patch_headers(4);
        set(&mut h, "content-type", "text/plain");
        let e = patch(&store, &id, &h, Body::from("ef")).await.unwrap_err();
        assert_eq!(e.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut h = patch_headers(4);
        set(&mut h, "sotto-upload-key", hex::encode([6u8; 32]));
        let e = patch(&store, &id, &h, Body::from("ef")).await.unwrap_err();
        assert_eq!(e.0, StatusCode::NOT_FOUND);
        let mut h = patch_headers(4);
        h.remove("upload-offset");
        let e = patch(&store, &id, &h, Body::from("ef")).await.unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert_eq!(offset(&store, &id).await, 4);
        // Past the declared length: bytes up to it are kept, the rest refused.
        let r = patch(&store, &id, &patch_headers(4), Body::from("efghijklmn"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(offset(&store, &id).await, 10);
        let data = tokio::fs::read(store.data_path(&id)).await.unwrap();
        assert_eq!(data, b"abcdefghij");
        assert_eq!(store.bytes.load(Ordering::Relaxed), 10);
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
        let _ = patch(&store, &id, &patch_headers(0), body).await;
        assert_eq!(offset(&store, &id).await, 16);
        // Garbage past the recorded offset (a crash before the record was
        // written) is cut away by the next PATCH.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(store.data_path(&id))
            .unwrap();
        std::io::Write::write_all(&mut file, b"GARBAGE").unwrap();
        patch(&store, &id, &patch_headers(16), Body::from("xyz"))
            .await
            .unwrap();
        let data = tokio::fs::read(store.data_path(&id)).await.unwrap();
        assert_eq!(data, b"0123456789abcdefxyz");
    }

    #[tokio::test]
    async fn expired_blobs_are_swept_and_unknown() {
        let (_dir, store, id) = store_with_blob(4).await;
        let mut meta = store.meta(&id).await.unwrap().unwrap();
        meta.expires_at = now_secs().saturating_sub(1);
        store.write_meta(&id, &meta).await.unwrap();
        assert!(store.meta(&id).await.unwrap().is_none());
        assert_eq!(store.sweep().await.unwrap(), 1);
        assert!(!store.data_path(&id).exists());
        assert!(!store.meta_path(&id).exists());
    }

    #[test]
    fn hashes_compare_in_full() {
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abcd", "abc"));
    }
}
