//! Blobs as files (the embedded SQLite store, one node): each blob is two
//! files under `<data dir>/blobs/`: `<id>.data`, the ciphertext, and
//! `<id>.meta`, its [`BlobMeta`] as JSON. A PATCH's bytes are written and
//! fsynced, and only then is the new offset recorded (atomically, in the
//! meta file); bytes past the recorded offset (a PATCH cut off before its
//! fsync) are truncated away by the next one.

use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::{BlobBytes, BlobId, BlobMeta, PatchBody, Refusal, storage};

/// The blob directory and the bytes of data in it.
#[derive(Debug)]
pub(super) struct FileBlobs {
    pub(super) dir: PathBuf,
    /// Bytes of blob data on disk, and its `/metrics` gauge.
    pub(super) bytes: AtomicU64,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl FileBlobs {
    /// The store under `data_dir/blobs` (created with the first blob, so
    /// a server nobody sent a file through has no such directory);
    /// removes leftover temporary files.
    pub(super) fn open(
        data_dir: &FsPath,
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

    pub(super) fn data_path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(format!("{}.data", id.hex()))
    }

    pub(super) fn meta_path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(format!("{}.meta", id.hex()))
    }

    /// The blob's record, expired or not.
    pub(super) async fn meta(&self, id: &BlobId) -> Result<Option<BlobMeta>, Refusal> {
        let bytes = match tokio::fs::read(self.meta_path(id)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let meta: BlobMeta = serde_json::from_slice(&bytes)
            .map_err(|e| storage(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Ok(Some(meta))
    }

    /// Writes the record atomically and durably: a temporary file, fsync,
    /// rename, fsync of the directory.
    pub(super) async fn write_meta(&self, id: &BlobId, meta: &BlobMeta) -> Result<(), Refusal> {
        let json = serde_json::to_vec(meta).map_err(storage)?;
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
        .map_err(storage)?
        .map_err(storage)
    }

    /// A new, empty blob: its (fsynced) data file, then its record.
    pub(super) async fn create(&self, id: &BlobId, meta: &BlobMeta) -> Result<(), Refusal> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(storage)?;
        tokio::fs::File::create(self.data_path(id))
            .await
            .map_err(storage)?
            .sync_all()
            .await
            .map_err(storage)?;
        self.write_meta(id, meta).await
    }

    /// Deletes a blob's files (meta first: without it the data is unreachable).
    pub(super) async fn remove(&self, id: &BlobId) {
        let _ = tokio::fs::remove_file(self.meta_path(id)).await;
        if let Ok(len) = tokio::fs::metadata(self.data_path(id))
            .await
            .map(|m| m.len())
        {
            self.resized(len, 0);
        }
        let _ = tokio::fs::remove_file(self.data_path(id)).await;
    }

    /// Writes `body` at the committed offset, fsyncs it, then records the
    /// new offset. Returns it.
    pub(super) async fn append(
        &self,
        id: &BlobId,
        meta: &BlobMeta,
        body: &mut PatchBody,
    ) -> Result<u64, Refusal> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.data_path(id))
            .await
            .map_err(storage)?;
        let before = file.metadata().await.map_err(storage)?.len();
        // Bytes past the committed offset were never acknowledged.
        file.set_len(meta.offset).await.map_err(storage)?;
        file.seek(std::io::SeekFrom::Start(meta.offset))
            .await
            .map_err(storage)?;
        let mut written = meta.offset;
        while let Some(piece) = body.next().await {
            file.write_all(&piece).await.map_err(storage)?;
            written += piece.len() as u64;
        }
        file.flush().await.map_err(storage)?;
        file.sync_all().await.map_err(storage)?;
        drop(file);
        self.resized(before, written);
        if written != meta.offset {
            let meta = BlobMeta {
                offset: written,
                ..meta.clone()
            };
            self.write_meta(id, &meta).await?;
        }
        Ok(written)
    }

    /// The first `length` bytes of the blob's data.
    pub(super) async fn read(&self, id: &BlobId, length: u64) -> Result<BlobBytes, Refusal> {
        let file = tokio::fs::File::open(self.data_path(id))
            .await
            .map_err(storage)?;
        let stream =
            futures_util::stream::unfold((file, 0u64), move |(mut file, sent)| async move {
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
        Ok(stream.boxed())
    }

    /// Deletes every blob whose expiry is at or before `now` (finished or
    /// not), and data whose record is gone.
    pub(super) async fn sweep(&self, now: u64) -> std::io::Result<u64> {
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
