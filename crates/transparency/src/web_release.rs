//! Web releases in the log: the hashes of the web app a server serves at
//! `/`, signed by the server's log key and appended as a log entry of their
//! own ([`crate::LogKey::sign_web_release`], [`verify_web_release`]), so that
//! anyone can check the server serves what it logged (`sotto audit URL`).
//!
//! A web-release entry has an empty `event` and is filed under
//! [`sotto_proto::WEB_RELEASE_USERNAME`], which no account can have;
//! [`crate::open_entry`] refuses it, so no account replay ever takes one in.

use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::{Hash, LogEntry, LogError, WebRelease, verify_signature, verifying_key};

/// Most files one release may list (keeps an entry small).
pub const MAX_WEB_FILES: usize = 256;

/// Longest file path a release may list, in bytes.
pub const MAX_WEB_PATH_BYTES: usize = 200;

/// Whether `entry` is a web release (and not an account event).
pub fn is_web_release(entry: &LogEntry) -> bool {
    entry.web_release.is_some()
}

/// The SHA-256 of the encoded release: the value the key directory
/// publishes under its web label.
pub fn web_release_digest(release: &WebRelease) -> Hash {
    Sha256::digest(release.encode_to_vec()).into()
}

/// Checks that `release` is well formed: at most [`MAX_WEB_FILES`] files,
/// sorted by path with none twice, each path non-empty, at most
/// [`MAX_WEB_PATH_BYTES`], relative, and each hash 32 bytes.
pub fn check_web_release(release: &WebRelease) -> Result<(), LogError> {
    if release.files.is_empty() {
        return Err(LogError::Malformed("a web release lists no file"));
    }
    if release.files.len() > MAX_WEB_FILES {
        return Err(LogError::Malformed("a web release lists too many files"));
    }
    let mut previous: Option<&str> = None;
    for file in &release.files {
        if file.path.is_empty()
            || file.path.len() > MAX_WEB_PATH_BYTES
            || file.path.starts_with('/')
            || file
                .path
                .split('/')
                .any(|part| part.is_empty() || part == "..")
        {
            return Err(LogError::Malformed("a web release lists a bad path"));
        }
        if previous.is_some_and(|p| p >= file.path.as_str()) {
            return Err(LogError::Malformed(
                "a web release's files are not sorted by path, or list one twice",
            ));
        }
        previous = Some(&file.path);
        if file.sha256.len() != 32 {
            return Err(LogError::Malformed(
                "a web release's file hash must be 32 bytes",
            ));
        }
    }
    Ok(())
}

/// Checks a web release and the log key's `signature` over it.
pub fn verify_web_release_signature(
    log_key: &[u8],
    release: &WebRelease,
    signature: &[u8],
) -> Result<(), LogError> {
    let key = verifying_key(log_key, "the log key must be a 32-byte Ed25519 public key")?;
    check_web_release(release)?;
    verify_signature(
        &key,
        &sotto_proto::web_release_transcript(&release.encode_to_vec()),
        signature,
        "the web release is not signed by the server's log key",
    )
}

/// Opens a web-release entry: it must carry a release and nothing of an
/// account (no event, no author), and be signed by `log_key`. Returns the
/// release.
pub fn verify_web_release(log_key: &[u8], entry: &LogEntry) -> Result<WebRelease, LogError> {
    let release = entry
        .web_release
        .as_ref()
        .ok_or(LogError::Malformed("the log entry is not a web release"))?;
    if !entry.event.is_empty()
        || !entry.author_device_id.is_empty()
        || !entry.author_signature.is_empty()
    {
        return Err(LogError::Malformed(
            "a web-release entry also carries an account event",
        ));
    }
    verify_web_release_signature(log_key, release, &entry.signature)?;
    Ok(release.clone())
}
