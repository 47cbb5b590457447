//! The web release: the hashes of the web app this server serves at `/`
//! ([`crate::web::FILES`]), logged so that anyone can check that the
//! server serves everyone the same app (`sotto audit URL`).
//!
//! At start the server computes the release (each file's SHA-256, sorted
//! by path), signs it with the log key ([`LogKey::sign_web_release`]) and
//! appends it as a log leaf unless the latest web-release leaf is the same
//! ([`crate::store::LogStore::append_web_release`], one transaction under
//! the log's append lock, so several nodes starting with one bundle append
//! it once). A web-release leaf is filed under
//! [`sotto_proto::WEB_RELEASE_USERNAME`], which no account can have, so no
//! account's log includes it. The key directory publishes the SHA-256 of
//! the latest release under a label of its own
//! ([`crate::key_directory`]); `GetWebRelease` serves the release with that
//! lookup proof.

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sotto_proto::v1;
use sotto_transparency::LogKey;

use crate::store::{LogStore, StoreError};

/// The release of `files` (path and bytes): each file's SHA-256, sorted
/// by path.
pub fn release_of<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> v1::WebRelease {
    let mut files: Vec<v1::WebFile> = files
        .into_iter()
        .map(|(path, bytes)| v1::WebFile {
            path: path.to_owned(),
            sha256: Sha256::digest(bytes).to_vec(),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    v1::WebRelease { files }
}

/// The release of the web app built into this binary. Paths are logged
/// relative (`app.js`), as the release format requires; the server serves
/// each at `/` + path.
pub(crate) fn served_release() -> v1::WebRelease {
    release_of(
        crate::web::FILES
            .iter()
            .map(|f| (f.path.trim_start_matches('/'), f.bytes)),
    )
}

/// Logs `release`, signed by the store's log key, unless it is the latest
/// web release the log holds already. Returns whether a leaf was appended.
pub async fn publish<S: LogStore>(store: &S, release: &v1::WebRelease) -> Result<bool, StoreError> {
    sotto_transparency::check_web_release(release).map_err(|e| {
        StoreError::Backend(format!(
            "the web app built into this server is unfit to log: {e}"
        ))
    })?;
    let secret = store.log_key_secret(LogKey::generate().secret()).await?;
    let key = LogKey::from_secret(secret.as_slice())
        .map_err(|e| StoreError::Backend(format!("the stored log key is unusable: {e}")))?;
    let entry = key.sign_web_release(release).encode_to_vec();
    let appended = store.append_web_release(entry).await?;
    if appended {
        tracing::info!(
            files = release.files.len(),
            "web release logged (the web app's file hashes)"
        );
    }
    Ok(appended)
}

/// The latest web-release entry among the log leaves below `end`: its
/// release and the log key's signature. `Ok(None)`: there is none.
pub(crate) async fn latest_below<S: LogStore>(
    store: &S,
    end: u64,
) -> Result<Option<(v1::WebRelease, Vec<u8>)>, StoreError> {
    let records = store.account_log(sotto_proto::WEB_RELEASE_USERNAME).await?;
    let Some(record) = records.iter().rev().find(|r| r.index < end) else {
        return Ok(None);
    };
    let entry = v1::LogEntry::decode(record.entry.as_slice()).map_err(|_| {
        StoreError::Backend(format!(
            "stored log entry {} is not a LogEntry",
            record.index
        ))
    })?;
    let release = entry.web_release.ok_or_else(|| {
        StoreError::Backend(format!(
            "stored log entry {} is filed as a web release but is none",
            record.index
        ))
    })?;
    Ok(Some((release, entry.signature)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::time::Duration;

    use super::*;
    use crate::key_directory::ServerDirectory;
    use crate::store::SqliteStore;

    /// Checks the directory's answer as a client would, returning the
    /// proven release and its version.
    fn verified(log_key: &[u8], proof: &v1::WebReleaseProof) -> (v1::WebRelease, u64) {
        let release = proof.release.clone().expect("a release");
        sotto_transparency::verify_web_release_signature(log_key, &release, &proof.signature)
            .unwrap();
        let epoch = proof.epoch.as_ref().unwrap();
        sotto_transparency::verify_epoch(log_key, epoch).unwrap();
        let found = sotto_directory::verify_web_release_lookup(
            &epoch.vrf_public_key.clone().try_into().unwrap(),
            &epoch.root_hash.clone().try_into().unwrap(),
            epoch.epoch,
            &proof.proof,
        )
        .unwrap();
        assert_eq!(
            found.digest,
            sotto_transparency::web_release_digest(&release)
        );
        (release, found.version)
    }

    #[tokio::test]
    async fn one_leaf_per_bundle_and_a_changed_bundle_is_a_new_directory_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let first = release_of([("index.html", &b"<p>one"[..]), ("app.js", b"1")]);
        assert_eq!(first.files[0].path, "app.js", "sorted by path");
        let directory = ServerDirectory::open(&store, dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        let none = directory.web_release(&store).await.unwrap();
        assert!(none.release.is_none() && none.proof.is_empty());

        assert!(publish(&store, &first).await.unwrap());
        // A restart with the same bundle appends nothing.
        assert!(!publish(&store, &first).await.unwrap());
        let log_key = LogKey::from_secret(
            store
                .log_key_secret(LogKey::generate().secret())
                .await
                .unwrap()
                .as_slice(),
        )
        .unwrap()
        .public();
        let answer = directory.web_release(&store).await.unwrap();
        assert_eq!(verified(&log_key, &answer), (first.clone(), 1));
        let epoch = answer.epoch.unwrap().epoch;

        let second = release_of([("index.html", &b"<p>two"[..]), ("app.js", b"1")]);
        assert!(publish(&store, &second).await.unwrap());
        assert!(!publish(&store, &second).await.unwrap());
        let answer = directory.web_release(&store).await.unwrap();
        assert_eq!(verified(&log_key, &answer), (second, 2));
        assert!(answer.epoch.unwrap().epoch > epoch);

        // Two web-release leaves, filed under no account, and the whole
        // log still audits.
        let leaves = store
            .account_log(sotto_proto::WEB_RELEASE_USERNAME)
            .await
            .unwrap();
        assert_eq!(leaves.len(), 2);
        let summary = crate::audit::audit_store(&store, None).await.unwrap();
        assert_eq!(summary.report.web_releases, 2);
        assert_eq!(summary.report.accounts, 0);
        // A web release's leaves are no account's log.
        assert!(
            crate::transparency_log::TransparencyLog::open(&store)
                .await
                .unwrap()
                .account_log(&store, sotto_proto::WEB_RELEASE_USERNAME)
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }
}
