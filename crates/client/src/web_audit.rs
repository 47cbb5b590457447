//! Checking that a server serves the web app it logged (`sotto audit URL`):
//! the latest web release (each file's SHA-256) comes with the key
//! directory's proof that its web label holds the release's digest at an
//! epoch signed by the log key, and the log key's own signature over it;
//! then every listed file, and `/`, is fetched over HTTP(S) and hashed.
//!
//! A server that serves one user a different page than the one it logged
//! must either log it (and everyone auditing sees it) or fail this check.

use sha2::{Digest as _, Sha256};
use sotto_proto::v1::{GetWebRelease, WebRelease, client_frame, response};

use crate::ClientError;
use crate::directory_audit::{AppendOnlyFailure, AuditedEpoch, check_append_only};
use crate::endpoint::ServerUrl;

/// Largest file an audit downloads (the web app's wasm is a few MiB).
const MAX_WEB_FILE_BYTES: usize = 64 * 1024 * 1024;

/// The file the server serves at `/`.
pub const INDEX_PATH: &str = "index.html";

/// What the server served for one file of the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// These bytes, whose SHA-256 is given.
    Bytes([u8; 32]),
    /// No file: the HTTP status it answered with.
    Missing(u16),
}

/// One file of the verified release, and what the server served for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebFileCheck {
    /// The path below `/` (`/` itself is checked as the path `/`, against
    /// the release's `index.html`).
    pub path: String,
    /// The SHA-256 the release logs.
    pub logged: [u8; 32],
    /// What the server served.
    pub served: Served,
}

impl WebFileCheck {
    /// Whether the server served exactly the logged bytes.
    pub fn ok(&self) -> bool {
        self.served == Served::Bytes(self.logged)
    }
}

/// What [`audit_web_release`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebAudit {
    /// The server's directory publishes no web release (it serves no web
    /// app, or is older than web releases). Not proven: akd proves a
    /// label's value, not its absence.
    NotPublished,
    /// The release verified against the directory epoch; each file as served.
    Checked {
        /// The directory epoch the release was proven at.
        epoch: u64,
        /// The release's version in the directory (1 for the first).
        version: u64,
        /// Every file of the release, then `/`.
        files: Vec<WebFileCheck>,
    },
}

impl WebAudit {
    /// Whether every file was served as logged (true when none is published).
    pub fn passed(&self) -> bool {
        match self {
            Self::NotPublished => true,
            Self::Checked { files, .. } => files.iter().all(WebFileCheck::ok),
        }
    }
}

fn refused(what: String) -> ClientError {
    ClientError::KeyLog(format!("the web release does not verify: {what}"))
}

/// Fetches the web release of the server at `server_url` and checks it: its
/// log-key signature (`log_key`, the key the directory audit trusted), the
/// directory's lookup proof of its digest at an epoch signed by that key
/// and extending `audited` (the epoch the directory audit reached), then
/// fetches `/` and every listed file and hashes them. `Err`: the release
/// does not verify (or the server is unreachable); a file served otherwise
/// than logged is not an error but a failed [`WebFileCheck`].
pub async fn audit_web_release(
    server_url: &str,
    trust: &crate::Trust,
    log_key: &[u8],
    audited: AuditedEpoch,
) -> Result<WebAudit, ClientError> {
    let mut t = crate::keys::connect_pinned(server_url, trust, Some(log_key)).await?;
    let proof = match t
        .request(client_frame::Body::GetWebRelease(GetWebRelease {}))
        .await?
    {
        response::Result::WebRelease(proof) => proof,
        _ => return Err(ClientError::Protocol("expected a web release".into())),
    };
    let epoch = proof
        .epoch
        .ok_or_else(|| refused("the answer has no signed epoch".into()))?;
    sotto_transparency::verify_epoch(log_key, &epoch)
        .map_err(|e| refused(format!("its directory epoch: {e}")))?;
    let latest = AuditedEpoch::of(&epoch)
        .ok_or_else(|| ClientError::Protocol("the signed root is not 32 bytes".into()))?;
    // The epoch must be the audited one or extend it.
    check_append_only(&mut t, Some(audited), latest)
        .await
        .map_err(|e| match e {
            AppendOnlyFailure::Client(e) => e,
            other => refused(format!("its directory epoch: {other}")),
        })?;
    t.close().await;
    let Some(release) = proof.release else {
        return Ok(WebAudit::NotPublished);
    };
    let verified = verify_release(log_key, &release, &proof.signature, &epoch, &proof.proof)?;
    let server = ServerUrl::parse(server_url)?;
    let mut files = Vec::with_capacity(release.files.len().saturating_add(1));
    for file in &release.files {
        let logged = logged_hash(&file.sha256)?;
        let served = fetch(&server, trust, &format!("/{}", encode_path(&file.path))).await?;
        files.push(WebFileCheck {
            path: file.path.clone(),
            logged,
            served,
        });
    }
    let index = release
        .files
        .iter()
        .find(|f| f.path == INDEX_PATH)
        .ok_or_else(|| {
            refused(format!(
                "it lists no {INDEX_PATH}, which the server serves at /"
            ))
        })?;
    files.push(WebFileCheck {
        path: "/".into(),
        logged: logged_hash(&index.sha256)?,
        served: fetch(&server, trust, "/").await?,
    });
    Ok(WebAudit::Checked {
        epoch: verified.epoch_proven_at,
        version: verified.version,
        files,
    })
}

/// A release proven at a directory epoch.
struct VerifiedRelease {
    epoch_proven_at: u64,
    version: u64,
}

/// Checks a web release: the log key's signature over it, and the
/// directory lookup proof that the web label holds its digest at `epoch`
/// (already checked to be signed by the log key).
fn verify_release(
    log_key: &[u8],
    release: &WebRelease,
    signature: &[u8],
    epoch: &sotto_proto::v1::SignedEpoch,
    lookup_proof: &[u8],
) -> Result<VerifiedRelease, ClientError> {
    sotto_transparency::verify_web_release_signature(log_key, release, signature)
        .map_err(|e| refused(e.to_string()))?;
    let vrf_key = <[u8; 32]>::try_from(epoch.vrf_public_key.as_slice())
        .map_err(|_| refused("the directory's VRF key is not 32 bytes".into()))?;
    let root = <[u8; 32]>::try_from(epoch.root_hash.as_slice())
        .map_err(|_| refused("the directory's root is not 32 bytes".into()))?;
    let proven =
        sotto_directory::verify_web_release_lookup(&vrf_key, &root, epoch.epoch, lookup_proof)
            .map_err(|e| refused(format!("the key directory's proof: {e}")))?;
    let digest = sotto_transparency::web_release_digest(release);
    if proven.digest != digest {
        return Err(refused(format!(
            "the key directory publishes the release {}, but the server presents {}",
            hex::encode(proven.digest),
            hex::encode(digest)
        )));
    }
    Ok(VerifiedRelease {
        epoch_proven_at: epoch.epoch,
        version: proven.version,
    })
}

fn logged_hash(bytes: &[u8]) -> Result<[u8; 32], ClientError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| refused("a file hash is not 32 bytes".into()))
}

/// Percent-encodes a logged path for a request line (keeping `/`).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `GET path`: the SHA-256 of the body, or the status of a failure.
async fn fetch(
    server: &ServerUrl,
    trust: &crate::Trust,
    path: &str,
) -> Result<Served, ClientError> {
    let (status, body) = server.get(trust, path, MAX_WEB_FILE_BYTES).await?;
    if !status.is_success() {
        return Ok(Served::Missing(status.as_u16()));
    }
    Ok(Served::Bytes(Sha256::digest(&body).into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_encoded_for_the_request_line() {
        assert_eq!(encode_path("app.js"), "app.js");
        assert_eq!(encode_path("a b/c?.js"), "a%20b/c%3F.js");
    }
}
