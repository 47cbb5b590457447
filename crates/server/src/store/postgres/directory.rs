//! What nodes sharing the database coordinate through (see
//! `store::cluster`): the key directory's recorded epochs (table
//! `directory_epochs`), which every node's directory replays, and the
//! windowed counters of the global rate limits (table `rate_windows`).

use super::*;
use crate::store::cluster::RecordedEpoch;

impl PostgresStore {
    pub(crate) async fn directory_epochs(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEpoch>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            "SELECT seq, log_end, epoch, root_hash FROM directory_epochs \
             WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&to_i64(from), &limit_i64(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(RecordedEpoch {
                seq: to_u64(get(r, 0)?),
                log_end: to_u64(get(r, 1)?),
                epoch: to_u64(get(r, 2)?),
                root_hash: get(r, 3)?,
            })
        })
        .collect()
    }

    /// Inserts unless the `seq` is taken, or the one before is missing
    /// (recorded epochs stay gapless even if two nodes think they are the
    /// writer).
    pub(crate) async fn record_directory_epoch(
        &self,
        epoch: RecordedEpoch,
    ) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let inserted = execute(
                    &tx,
                    "INSERT INTO directory_epochs (seq, log_end, epoch, root_hash) \
                     SELECT $1::bigint, $2::bigint, $3::bigint, $4::bytea \
                     WHERE $1::bigint = 0 \
                        OR EXISTS (SELECT 1 FROM directory_epochs WHERE seq = $1::bigint - 1) \
                     ON CONFLICT (seq) DO NOTHING",
                    &[
                        &to_i64(epoch.seq),
                        &to_i64(epoch.log_end),
                        &to_i64(epoch.epoch),
                        &epoch.root_hash,
                    ],
                )
                .await?;
                Ok(inserted == 1)
            })
        })
        .await
    }
}

/// Name of the rate-limit hashing secret in `server_keys`.
const RATE_LIMIT_KEY_NAME: &str = "rate_limit";

impl PostgresStore {
    pub(crate) async fn shared_rate_limit_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                // It signs nothing: a lost one only restarts the counts.
                server_key_secret(&tx, RATE_LIMIT_KEY_NAME, &fresh, "SELECT 0::bigint").await
            })
        })
        .await
    }

    /// One conditional upsert, in autocommit (a count need not survive a
    /// crash; it must only be shared): the same window adds one, a later
    /// one starts again at 1.
    pub(crate) async fn count_rate_hit(
        &self,
        key: [u8; 32],
        window_start: u64,
        expires_at: u64,
        prune: Option<u64>,
    ) -> Result<u64, StoreError> {
        let c = self.reader().await?;
        if let Some(now) = prune {
            execute(
                &c,
                "DELETE FROM rate_windows WHERE expires_at < $1",
                &[&to_i64(now)],
            )
            .await?;
        }
        let row = query_one(
            &c,
            "INSERT INTO rate_windows (key, window_start, expires_at, hits) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (key) DO UPDATE SET \
             hits = CASE WHEN rate_windows.window_start = excluded.window_start \
                         THEN rate_windows.hits + 1 ELSE 1 END, \
             window_start = excluded.window_start, expires_at = excluded.expires_at \
             RETURNING hits",
            &[&key.as_slice(), &to_i64(window_start), &to_i64(expires_at)],
        )
        .await?;
        Ok(to_u64(get(&row, 0)?))
    }
}
