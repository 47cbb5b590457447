//! What server nodes sharing one database coordinate through (the
//! multi-node mode of issue #16, on PostgreSQL). The embedded SQLite store
//! belongs to one node: it shares nothing, and its node is always the log
//! writer.

use std::future::Future;

use tokio::sync::watch;

use zeroize::Zeroizing;

use super::{PostgresStore, SqliteStore, StoreError};

/// One key-directory epoch as the log writer recorded it for every node:
/// the `seq`-th publish covers the log leaves below `log_end` not covered
/// by the one before, each changed account at its state as of `log_end`.
/// Publishing is deterministic (the VRF key is shared), so every node that
/// replays the recorded publishes in order gets the same `epoch` and
/// `root_hash`, which are recorded to check exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEpoch {
    /// 0, 1, 2, … without gaps.
    pub seq: u64,
    /// The log size this publish brings the directory to.
    pub log_end: u64,
    /// The directory epoch after this publish (unchanged from the one
    /// before when the publish changed no account's latest state).
    pub epoch: u64,
    /// That epoch's root hash.
    pub root_hash: Vec<u8>,
}

/// Coordination between the nodes on one database.
pub trait ClusterStore: Send + Sync {
    /// Whether other nodes may share this store (then the key directory
    /// follows [`ClusterStore::recorded_epochs`]).
    fn is_shared(&self) -> bool;

    /// Starts trying to make this node the log writer (the only node that
    /// records directory epochs); the receiver says whether it is now.
    fn elect_log_writer(&self) -> watch::Receiver<bool>;

    /// The recorded epochs with `seq >= from`, in order (at most `limit`).
    fn recorded_epochs(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEpoch>, StoreError>> + Send;

    /// Records `epoch` unless its `seq` is taken. `Ok(false)`: another
    /// node recorded that `seq` first; what it recorded wins.
    fn record_epoch(
        &self,
        epoch: RecordedEpoch,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The secret that keys the hashes global rate limits count under (so
    /// no address or username is stored): the stored one, or `fresh`,
    /// stored now.
    fn rate_limit_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> impl Future<Output = Result<Zeroizing<[u8; 32]>, StoreError>> + Send;

    /// Counts one more hit on `key` in the window starting at
    /// `window_start` (a new window starts the count again at 1) and
    /// returns the window's count, all nodes' hits included. The row may
    /// go once `expires_at` passed; with `prune`, rows whose windows
    /// ended before `now` are deleted. On one node: counts nothing, never
    /// called (its limits are in memory).
    fn count_hit(
        &self,
        key: [u8; 32],
        window_start: u64,
        expires_at: u64,
        prune: Option<u64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl ClusterStore for SqliteStore {
    fn is_shared(&self) -> bool {
        false
    }

    fn elect_log_writer(&self) -> watch::Receiver<bool> {
        watch::channel(true).1
    }

    async fn recorded_epochs(
        &self,
        _from: u64,
        _limit: usize,
    ) -> Result<Vec<RecordedEpoch>, StoreError> {
        // One node: its directory file is the only record.
        Ok(Vec::new())
    }

    async fn record_epoch(&self, _epoch: RecordedEpoch) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn rate_limit_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        Ok(fresh)
    }

    async fn count_hit(
        &self,
        _key: [u8; 32],
        _window_start: u64,
        _expires_at: u64,
        _prune: Option<u64>,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }
}

impl ClusterStore for PostgresStore {
    fn is_shared(&self) -> bool {
        true
    }

    fn elect_log_writer(&self) -> watch::Receiver<bool> {
        PostgresStore::elect_log_writer(self)
    }

    async fn recorded_epochs(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEpoch>, StoreError> {
        self.directory_epochs(from, limit).await
    }

    async fn record_epoch(&self, epoch: RecordedEpoch) -> Result<bool, StoreError> {
        self.record_directory_epoch(epoch).await
    }

    async fn rate_limit_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.shared_rate_limit_secret(fresh).await
    }

    async fn count_hit(
        &self,
        key: [u8; 32],
        window_start: u64,
        expires_at: u64,
        prune: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.count_rate_hit(key, window_start, expires_at, prune)
            .await
    }
}
