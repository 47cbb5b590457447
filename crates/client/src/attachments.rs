//! Attachments on the wire: the encrypted file is uploaded to the server's
//! blob store (`/blobs`, a tus 1.0 subset: see `sotto_server::blobs`) and
//! fetched back by the members the message names it to.
//!
//! The protocol is the same everywhere; only the HTTP under it differs:
//! hyper natively (`native_http.rs`), the browser's `fetch` in a page
//! (`browser_http.rs`).
//!
//! An upload survives a broken connection: it is sent in chunks, each
//! acknowledged by the server only once durable; after a failure the
//! client asks the server's offset (`HEAD`) and continues from there, and
//! reports how many bytes it sent more than once.
//!
//! Authorisation is by capability: creating a blob needs the group's send
//! capability (as a sealed send does, on no logged-in connection); the
//! upload and fetch keys are fresh per file, and the fetch key travels only
//! inside the E2EE message (in the URL's fragment, which is never sent).
//! A receiver fetches only from its own server, whatever host the URL
//! names, so a member cannot make others' clients connect elsewhere.

#[cfg(target_arch = "wasm32")]
mod browser_http;
#[cfg(not(target_arch = "wasm32"))]
mod native_http;

use crate::ClientError;
use crate::endpoint::Trust;
#[cfg(target_arch = "wasm32")]
use browser_http::{AnswerBody, Http};
use bytes::Bytes;
use http::{Method, StatusCode};
#[cfg(not(target_arch = "wasm32"))]
use native_http::{AnswerBody, Http};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bytes per PATCH: each is fsynced by the server before it is
/// acknowledged, so this is also how much a broken connection can cost.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Attempts after a network failure before an upload gives up.
const MAX_RETRIES: u32 = 8;
/// How long one HTTP exchange may take before it counts as broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Transfer progress: `(done, total)` bytes.
#[cfg(not(target_arch = "wasm32"))]
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);
/// Transfer progress: `(done, total)` bytes (a page's callbacks are not
/// `Send`, and a page has one thread).
#[cfg(target_arch = "wasm32")]
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What the server needs to let a blob be created: a group's send
/// capability of one epoch, and how many fetches to expect.
#[derive(Clone)]
pub(crate) struct UploadGrant {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    pub capability: zeroize::Zeroizing<Vec<u8>>,
    pub fetches: u32,
}

impl std::fmt::Debug for UploadGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadGrant")
            .field("epoch", &self.epoch)
            .field("fetches", &self.fetches)
            .finish_non_exhaustive()
    }
}

/// A file sent: its history line, and the bytes sent more than once
/// because a connection broke during the upload.
#[derive(Debug, Clone)]
pub struct SentFile {
    pub entry: crate::HistoryEntry,
    pub resent_bytes: u64,
}

/// A finished upload.
#[derive(Debug)]
pub(crate) struct Uploaded {
    /// `/blobs/<id>#<fetch key>`: the path on the server and the fetch key.
    pub url: String,
    /// Bytes sent more than once because a connection broke.
    pub resent_bytes: u64,
}

/// A blob's place: its path on the server and its fetch key, read from
/// the URL in a message.
pub(crate) struct BlobRef {
    path: String,
    fetch_key: zeroize::Zeroizing<String>,
}

/// Leaves out the fetch key: whoever has it can download the blob.
impl std::fmt::Debug for BlobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRef")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl BlobRef {
    /// Parses `…/blobs/<32 hex>#<64 hex>`; only the id and key are used.
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Usage("the attachment's URL is not a Sotto blob URL".into());
        let (before, key) = url.split_once('#').ok_or_else(bad)?;
        let id = before.rsplit_once("/blobs/").ok_or_else(bad)?.1;
        let hex_of = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex_of(id, 32) || !hex_of(key, 64) {
            return Err(bad());
        }
        Ok(Self {
            path: format!("/blobs/{id}"),
            fetch_key: zeroize::Zeroizing::new(key.to_owned()),
        })
    }
}

/// One answer of the blob store: its status, the headers the protocol
/// reads, and its body.
pub(crate) struct Answer {
    status: u16,
    location: Option<String>,
    upload_offset: Option<u64>,
    content_length: Option<u64>,
    body: AnswerBody,
}

impl Answer {
    fn is(&self, status: StatusCode) -> bool {
        self.status == status.as_u16()
    }
}

/// The server's refusal, with the sentence it gave.
async fn refused(what: &str, mut answer: Answer) -> ClientError {
    let body = answer.body.chunk().await.ok().flatten().unwrap_or_default();
    let why = String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or_default());
    let message = format!("{what}: the server answered {}: {why}", answer.status);
    if answer.status >= 500 || answer.is(StatusCode::LOCKED) {
        ClientError::Network(message)
    } else {
        ClientError::Usage(message)
    }
}

/// Uploads `ciphertext` as a new blob, resuming after broken connections.
pub(crate) async fn upload(
    server_url: &str,
    trust: &Trust,
    grant: &UploadGrant,
    ciphertext: Bytes,
    progress: Progress<'_>,
) -> Result<Uploaded, ClientError> {
    let mut http = Http::new(server_url, trust)?;
    let upload_key: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(rand::random());
    let upload_key_hex = zeroize::Zeroizing::new(hex::encode(upload_key.as_slice()));
    let fetch_key: [u8; 32] = rand::random();
    let hash_of = |key: &[u8]| hex::encode(Sha256::digest(key).as_slice());
    let total = ciphertext.len() as u64;
    let created = http
        .send(
            Method::POST,
            "/blobs",
            &[
                ("upload-length", total.to_string()),
                ("sotto-group", hex::encode(&grant.group_id)),
                ("sotto-epoch", grant.epoch.to_string()),
                ("sotto-capability", hex::encode(grant.capability.as_slice())),
                ("sotto-upload-key-hash", hash_of(upload_key.as_slice())),
                ("sotto-fetch-key-hash", hash_of(&fetch_key)),
                ("sotto-fetches", grant.fetches.max(1).to_string()),
            ],
            Bytes::new(),
            None,
        )
        .await?;
    if !created.is(StatusCode::CREATED) {
        return Err(refused("creating the blob", created).await);
    }
    let path = created
        .location
        .as_deref()
        .and_then(|l| l.rsplit_once("/blobs/"))
        .map(|(_, id)| format!("/blobs/{id}"))
        .ok_or_else(|| ClientError::Protocol("the blob store gave no Location".into()))?;
    let key_header = || [("sotto-upload-key", upload_key_hex.as_str().to_owned())];
    let mut offset = 0u64;
    let sent = Arc::new(AtomicU64::new(0));
    let mut failures = 0u32;
    let mut ask_offset = false;
    progress(0, total);
    while offset < total || ask_offset {
        if ask_offset {
            let head = http
                .send(Method::HEAD, &path, &key_header(), Bytes::new(), None)
                .await;
            match head {
                Ok(r) if r.is(StatusCode::OK) => {
                    offset = r.upload_offset.ok_or_else(|| {
                        ClientError::Protocol("HEAD gave no Upload-Offset".into())
                    })?;
                    if offset > total {
                        return Err(ClientError::Protocol(
                            "the blob store claims more bytes than were sent".into(),
                        ));
                    }
                    ask_offset = false;
                    tracing::info!(offset, "resuming the upload at the server's offset");
                    progress(offset, total);
                    continue;
                }
                Ok(r) if !r.is(StatusCode::LOCKED) => {
                    return Err(refused("asking the upload's offset", r).await);
                }
                Ok(_) | Err(ClientError::Network(_)) => {
                    failures += 1;
                    if failures > MAX_RETRIES {
                        return Err(ClientError::Network(
                            "the upload kept failing; try again later".into(),
                        ));
                    }
                    crate::clock::sleep(Duration::from_millis(100 << failures.min(5))).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(CHUNK_BYTES).min(ciphertext.len());
        let chunk = ciphertext.slice(start.min(end)..end);
        let mut headers = key_header().to_vec();
        headers.push(("upload-offset", offset.to_string()));
        headers.push(("content-type", "application/offset+octet-stream".into()));
        headers.push(("content-length", chunk.len().to_string()));
        match http
            .send(Method::PATCH, &path, &headers, chunk, Some(&sent))
            .await
        {
            Ok(r) if r.is(StatusCode::NO_CONTENT) => {
                offset = r
                    .upload_offset
                    .ok_or_else(|| ClientError::Protocol("PATCH gave no Upload-Offset".into()))?;
                progress(offset, total);
            }
            Ok(r) if r.is(StatusCode::CONFLICT) || r.is(StatusCode::LOCKED) => {
                ask_offset = true;
            }
            Ok(r) => return Err(refused("uploading", r).await),
            Err(ClientError::Network(e)) => {
                tracing::info!(
                    offset,
                    "upload interrupted ({e}); asking the server's offset"
                );
                failures += 1;
                if failures > MAX_RETRIES {
                    return Err(ClientError::Network(format!(
                        "the upload kept failing ({e}); try again later"
                    )));
                }
                ask_offset = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Uploaded {
        url: format!("{path}#{}", hex::encode(fetch_key)),
        resent_bytes: sent.load(Ordering::Relaxed).saturating_sub(total),
    })
}

/// Downloads the blob `blob` (at most `max_len` bytes) from this profile's
/// server.
pub(crate) async fn download(
    server_url: &str,
    trust: &Trust,
    blob: &BlobRef,
    max_len: u64,
    progress: Progress<'_>,
) -> Result<Vec<u8>, ClientError> {
    let mut http = Http::new(server_url, trust)?;
    let mut response = http
        .send(
            Method::GET,
            &blob.path,
            &[("sotto-fetch-key", blob.fetch_key.as_str().to_owned())],
            Bytes::new(),
            None,
        )
        .await?;
    if response.is(StatusCode::NOT_FOUND) {
        return Err(ClientError::Usage(
            "the server no longer has this attachment (it expired, or every recipient fetched it)"
                .into(),
        ));
    }
    if !response.is(StatusCode::OK) {
        return Err(refused("downloading", response).await);
    }
    let total = response.content_length.unwrap_or(max_len);
    if total > max_len {
        return Err(ClientError::Protocol(format!(
            "the blob store offers {total} bytes for an attachment of {max_len}"
        )));
    }
    // Reserve no more than a chunk up front: `total` is what the server
    // claims, bounded only by the size a (possibly hostile) sender declared.
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0).min(CHUNK_BYTES));
    progress(0, total);
    while let Some(bytes) = response.body.chunk().await? {
        if data.len() as u64 + bytes.len() as u64 > max_len {
            return Err(ClientError::Protocol(
                "the blob store sent more bytes than the attachment has".into(),
            ));
        }
        data.extend_from_slice(&bytes);
        progress(data.len() as u64, total);
    }
    Ok(data)
}

/// Tells the server this device has the blob: once every expected member
/// did, it is deleted. Best effort (it expires anyway).
pub(crate) async fn acknowledge(server_url: &str, trust: &Trust, blob: &BlobRef) {
    let Ok(mut http) = Http::new(server_url, trust) else {
        return;
    };
    let result = http
        .send(
            Method::DELETE,
            &blob.path,
            &[("sotto-fetch-key", blob.fetch_key.as_str().to_owned())],
            Bytes::new(),
            None,
        )
        .await;
    if let Err(e) = result {
        tracing::info!("could not tell the server the attachment was fetched: {e}");
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Writes `bytes` to `path` atomically: a temporary file beside it,
/// fsynced, then renamed over it.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write as _;
    let fail =
        |e: std::io::Error| ClientError::Usage(format!("cannot write {}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| ClientError::Usage(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{:016x}.part",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let result: std::io::Result<()> = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// A content type from a file name's extension (what a receiver shows).
pub(crate) fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" => "text/plain",
        "md" => "text/markdown",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The group of `target` and what creating a blob for it needs: the
/// group's current send capability and epoch, and its member devices
/// besides this one (the fetches to expect).
pub(crate) async fn grant(
    s: &mut crate::session::Session<'_>,
    target: &crate::conversations::Target,
) -> Result<UploadGrant, ClientError> {
    let group_id = crate::conversations::target_group(s, target).await?;
    let provider = s.profile.provider();
    let g = sotto_core::group::load(&provider, &group_id)?;
    let own = s.profile.account.device_id;
    let fetches = sotto_core::group::recipients(&g)
        .iter()
        .filter(|d| **d != own)
        .count();
    if fetches == 0 {
        return Err(ClientError::Usage(
            "nobody else is in this conversation yet".into(),
        ));
    }
    Ok(UploadGrant {
        capability: zeroize::Zeroizing::new(sotto_core::group::send_token(&provider, &g)?),
        epoch: g.epoch().as_u64(),
        fetches: u32::try_from(fetches).unwrap_or(u32::MAX),
        group_id,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blob_urls_are_parsed_strictly() {
        let id = "0123456789abcdef0123456789abcdef";
        let key = "ab".repeat(32);
        let blob =
            BlobRef::parse(&format!("https://elsewhere.example/x/blobs/{id}#{key}")).unwrap();
        assert_eq!(blob.path, format!("/blobs/{id}"));
        assert!(
            !format!("{blob:?}").contains(&key),
            "Debug shows the fetch key"
        );
        for bad in [
            format!("/blobs/{id}"),
            format!("/blobs/{id}/../x#{key}"),
            format!("/blobs/{}#{key}", id.to_uppercase()),
            format!("/blobs/{id}#{}", &key[2..]),
        ] {
            assert!(BlobRef::parse(&bad).is_err(), "{bad}");
        }
    }
}
