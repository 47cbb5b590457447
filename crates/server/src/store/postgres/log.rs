//! The transparency log's leaves and signing key.

use super::*;
use crate::store::CountersignatureRecord;

/// Name of the log signing key in `server_keys`.
pub(super) const LOG_KEY_NAME: &str = "log";
/// Counts what the log key vouches for (see the SQLite backend).
const LOG_KEY_SIGNED: &str = "SELECT count(*) FROM log_entries";
/// Name of the franking key in `server_keys` (`LogStore::franking_key_secret`).
const FRANKING_KEY_NAME: &str = "franking";
/// Name of the key directory's VRF key in `server_keys`.
const DIRECTORY_VRF_KEY_NAME: &str = "directory_vrf";
/// What the VRF key vouches for lives in the directory's own file, which
/// checks the key itself on open (see the SQLite backend).
const DIRECTORY_VRF_KEY_SIGNED: &str = "SELECT 0::bigint";

/// The advisory lock class of [`lock_log`]; the second key is the schema's
/// name hashed, so that deployments (and tests) sharing one database in
/// separate schemas do not wait for each other.
const LOG_APPEND_LOCK: i32 = 0x5077_0002;

/// Serialises every operation that appends to the log, across all nodes on
/// the database: a transaction-level advisory lock, held until the batch
/// holding it commits or rolls back (or its node dies, which ends its
/// session). Taken *before* the operation reads what it checks (the
/// username, the account's `account_seq`), so under READ COMMITTED every
/// statement after it sees every earlier append committed: two nodes can
/// neither give two leaves one index (a refused write) nor accept two
/// leaves with one `account_seq` for one account (a forked account log).
/// These operations run in transactions of their own
/// ([`PostgresStore::write_alone`]), so the lock never waits behind, or
/// holds up, another write of a batch.
pub(super) async fn lock_log(tx: &Tx) -> Result<(), StoreError> {
    execute(
        tx,
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&LOG_APPEND_LOCK],
    )
    .await?;
    Ok(())
}

/// Appends one leaf at the end of the log. The caller holds [`lock_log`],
/// so indexes are contiguous and in commit order (no gap, no fork).
pub(super) async fn append_log(tx: &Tx, username: &str, entry: &[u8]) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO log_entries (idx, username, entry) \
         VALUES ((SELECT coalesce(max(idx) + 1, 0) FROM log_entries), $1, $2)",
        &[&username, &entry],
    )
    .await?;
    Ok(())
}

/// How many log entries an account has: the `account_seq` of its next one.
pub(super) async fn next_account_seq(
    c: &deadpool_postgres::ClientWrapper,
    username: &str,
) -> Result<u64, StoreError> {
    let row = query_one(
        c,
        "SELECT count(*) FROM log_entries WHERE username = $1",
        &[&username],
    )
    .await?;
    Ok(to_u64(get(&row, 0)?))
}

fn log_records(rows: &[Row]) -> Result<Vec<LogRecord>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(LogRecord {
                index: to_u64(get(r, 0)?),
                username: get(r, 1)?,
                entry: get(r, 2)?,
            })
        })
        .collect()
}

impl LogStore for PostgresStore {
    async fn log_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |tx| {
            Box::pin(
                async move { server_key_secret(&tx, LOG_KEY_NAME, &fresh, LOG_KEY_SIGNED).await },
            )
        })
        .await
    }

    async fn franking_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                server_key_secret(&tx, FRANKING_KEY_NAME, &fresh, "SELECT 0::BIGINT").await
            })
        })
        .await
    }

    async fn directory_vrf_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                server_key_secret(
                    &tx,
                    DIRECTORY_VRF_KEY_NAME,
                    &fresh,
                    DIRECTORY_VRF_KEY_SIGNED,
                )
                .await
            })
        })
        .await
    }

    async fn account_log(&self, username: &str) -> Result<Vec<LogRecord>, StoreError> {
        let c = self.reader().await?;
        log_records(
            &query(
                &c,
                "SELECT idx, username, entry FROM log_entries WHERE username = $1 ORDER BY idx",
                &[&username],
            )
            .await?,
        )
    }

    async fn log_entries(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, StoreError> {
        let c = self.reader().await?;
        log_records(
            &query(
                &c,
                "SELECT idx, username, entry FROM log_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                &[&to_i64(start), &limit_i64(limit)],
            )
            .await?,
        )
    }

    async fn append_web_release(&self, entry: Vec<u8>) -> Result<bool, StoreError> {
        self.write_alone(move |tx| {
            Box::pin(async move {
                // Under the append lock, so two nodes starting with one
                // release cannot both find it missing and both append it.
                lock_log(&tx).await?;
                let latest = query_opt(
                    &tx,
                    "SELECT entry FROM log_entries WHERE username = $1 ORDER BY idx DESC LIMIT 1",
                    &[&sotto_proto::WEB_RELEASE_USERNAME],
                )
                .await?;
                let latest: Option<Vec<u8>> = latest.map(|row| get(&row, 0)).transpose()?;
                if latest.as_deref() == Some(entry.as_slice()) {
                    return Ok(false);
                }
                append_log(&tx, sotto_proto::WEB_RELEASE_USERNAME, &entry).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn add_countersignature(
        &self,
        record: CountersignatureRecord,
        keep: usize,
        expire_before_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    &tx,
                    "INSERT INTO countersignatures \
                     (auditor_key, epoch, signed_at_ms, countersignature) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (auditor_key, epoch) DO UPDATE SET \
                     signed_at_ms = excluded.signed_at_ms, countersignature = excluded.countersignature \
                     WHERE excluded.signed_at_ms > countersignatures.signed_at_ms",
                    &[
                        &record.auditor_key,
                        &to_i64(record.epoch),
                        &to_i64(record.signed_at_ms),
                        &record.countersignature,
                    ],
                )
                .await?;
                execute(
                    &tx,
                    "DELETE FROM countersignatures WHERE auditor_key = $1 AND epoch NOT IN \
                     (SELECT epoch FROM countersignatures WHERE auditor_key = $1 \
                      ORDER BY epoch DESC LIMIT $2)",
                    &[&record.auditor_key, &limit_i64(keep)],
                )
                .await?;
                execute(
                    &tx,
                    "DELETE FROM countersignatures WHERE signed_at_ms < $1",
                    &[&to_i64(expire_before_ms)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn countersignature(
        &self,
        auditor_key: &[u8],
        max_epoch: u64,
    ) -> Result<Option<CountersignatureRecord>, StoreError> {
        let c = self.reader().await?;
        let row = query_opt(
            &c,
            "SELECT epoch, signed_at_ms, countersignature FROM countersignatures \
             WHERE auditor_key = $1 AND epoch <= $2 ORDER BY epoch DESC LIMIT 1",
            &[&auditor_key, &to_i64(max_epoch)],
        )
        .await?;
        row.map(|r| {
            Ok(CountersignatureRecord {
                auditor_key: auditor_key.to_vec(),
                epoch: to_u64(get(&r, 0)?),
                signed_at_ms: to_u64(get(&r, 1)?),
                countersignature: get(&r, 2)?,
            })
        })
        .transpose()
    }
}
