//! The transparency log's leaves and signing key.

use super::*;
use crate::store::CountersignatureRecord;

/// Name of the log signing key in `server_keys`.
pub(super) const LOG_KEY_NAME: &str = "log";
/// Counts what the log key vouches for: clients pinned the heads of a log
/// with entries. (Accounts from before the log have none, and a database
/// of only those may still get its first key.)
pub(super) const LOG_KEY_SIGNED: &str = "SELECT count(*) FROM log_entries";
/// Name of the franking key in `server_keys` (`LogStore::franking_key_secret`).
pub(super) const FRANKING_KEY_NAME: &str = "franking";
/// Name of the key directory's VRF key in `server_keys`.
pub(super) const DIRECTORY_VRF_KEY_NAME: &str = "directory_vrf";
/// What the VRF key vouches for lives in the directory's own file, which
/// checks the key itself on open (`sotto_directory::DirectoryError::WrongVrfKey`).
const DIRECTORY_VRF_KEY_SIGNED: &str = "SELECT 0";

/// Appends one leaf at the end of the log. The writer is the only one
/// appending, so indexes are contiguous.
pub(super) fn append_log(
    conn: &Connection,
    username: &str,
    entry: &[u8],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO log_entries (idx, username, entry) \
         VALUES ((SELECT coalesce(max(idx) + 1, 0) FROM log_entries), ?1, ?2)",
    )?
    .execute(params![username, entry])?;
    Ok(())
}

/// How many log entries an account has: the `account_seq` of its next one.
pub(super) fn next_account_seq(conn: &Connection, username: &str) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM log_entries WHERE username = ?1")?
        .query_row([username], |r| r.get(0))?;
    Ok(to_u64(n))
}

pub(super) fn log_records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<LogRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(LogRecord {
            index: to_u64(r.get(0)?),
            username: r.get(1)?,
            entry: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl LogStore for SqliteStore {
    async fn log_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| server_key_secret(conn, LOG_KEY_NAME, &fresh, LOG_KEY_SIGNED))
            .await
    }

    async fn franking_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| server_key_secret(conn, FRANKING_KEY_NAME, &fresh, "SELECT 0"))
            .await
    }

    async fn directory_vrf_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| {
            server_key_secret(
                conn,
                DIRECTORY_VRF_KEY_NAME,
                &fresh,
                DIRECTORY_VRF_KEY_SIGNED,
            )
        })
        .await
    }

    async fn account_log(&self, username: &str) -> Result<Vec<LogRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |conn| {
            log_records(
                conn,
                "SELECT idx, username, entry FROM log_entries WHERE username = ?1 ORDER BY idx",
                [&username],
            )
        })
        .await
    }

    async fn log_entries(&self, start: u64, limit: usize) -> Result<Vec<LogRecord>, StoreError> {
        self.read(move |conn| {
            log_records(
                conn,
                "SELECT idx, username, entry FROM log_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
                params![to_i64(start), i64::try_from(limit).unwrap_or(i64::MAX)],
            )
        })
        .await
    }

    async fn append_web_release(&self, entry: Vec<u8>) -> Result<bool, StoreError> {
        // The writer thread is the only one appending: the check and the
        // append run in one of its transactions.
        self.write(move |conn| {
            let latest: Option<Vec<u8>> = conn
                .prepare_cached(
                    "SELECT entry FROM log_entries WHERE username = ?1 ORDER BY idx DESC LIMIT 1",
                )?
                .query_row([sotto_proto::WEB_RELEASE_USERNAME], |r| r.get(0))
                .optional()?;
            if latest.as_deref() == Some(entry.as_slice()) {
                return Ok(false);
            }
            append_log(conn, sotto_proto::WEB_RELEASE_USERNAME, &entry)?;
            Ok(true)
        })
        .await
    }

    async fn add_countersignature(
        &self,
        record: CountersignatureRecord,
        keep: usize,
        expire_before_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO countersignatures \
                 (auditor_key, epoch, signed_at_ms, countersignature) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (auditor_key, epoch) DO UPDATE SET \
                 signed_at_ms = excluded.signed_at_ms, countersignature = excluded.countersignature \
                 WHERE excluded.signed_at_ms > countersignatures.signed_at_ms",
            )?
            .execute(params![
                record.auditor_key,
                to_i64(record.epoch),
                to_i64(record.signed_at_ms),
                record.countersignature
            ])?;
            conn.prepare_cached(
                "DELETE FROM countersignatures WHERE auditor_key = ?1 AND epoch NOT IN \
                 (SELECT epoch FROM countersignatures WHERE auditor_key = ?1 \
                  ORDER BY epoch DESC LIMIT ?2)",
            )?
            .execute(params![
                record.auditor_key,
                i64::try_from(keep).unwrap_or(i64::MAX)
            ])?;
            conn.prepare_cached("DELETE FROM countersignatures WHERE signed_at_ms < ?1")?
                .execute([to_i64(expire_before_ms)])?;
            Ok(())
        })
        .await
    }

    async fn countersignature(
        &self,
        auditor_key: &[u8],
        max_epoch: u64,
    ) -> Result<Option<CountersignatureRecord>, StoreError> {
        let auditor_key = auditor_key.to_vec();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT epoch, signed_at_ms, countersignature FROM countersignatures \
                     WHERE auditor_key = ?1 AND epoch <= ?2 ORDER BY epoch DESC LIMIT 1",
                )?
                .query_row(params![auditor_key, to_i64(max_epoch)], |r| {
                    Ok(CountersignatureRecord {
                        auditor_key: auditor_key.clone(),
                        epoch: to_u64(r.get(0)?),
                        signed_at_ms: to_u64(r.get(1)?),
                        countersignature: r.get(2)?,
                    })
                })
                .optional()?)
        })
        .await
    }
}
