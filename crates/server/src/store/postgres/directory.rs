//! The key directory's recorded epochs (table `directory_epochs`), which
//! every node's directory replays (see `store::cluster`).

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
