//! The legal tables (`crate::legal`): the legal key in `server_keys`, the
//! transparency report in `legal_requests`, the warrant canary in
//! `canaries`, and the reads behind an account export.

use super::*;

/// Name of the legal signing key in `server_keys`.
pub(super) const LEGAL_KEY_NAME: &str = "legal";
/// Counts what the legal key signed: transparency-report entries and canaries.
pub(super) const LEGAL_KEY_SIGNED: &str =
    "SELECT (SELECT count(*) FROM legal_requests) + (SELECT count(*) FROM canaries)";

const REPORT_COLUMNS: &str =
    "SELECT seq, request_id, day, kind, accounts, prev_hash, hash, signature FROM legal_requests";

fn report_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRecord> {
    Ok(ReportRecord {
        seq: to_u64(r.get(0)?),
        request_id: r.get(1)?,
        day: to_u64(r.get(2)?),
        kind: r.get(3)?,
        accounts: to_u64(r.get(4)?),
        prev_hash: r.get(5)?,
        hash: r.get(6)?,
        signature: r.get(7)?,
    })
}

/// What the server holds about `username`; `None` if there is no such
/// account.
fn exported_account(
    conn: &Connection,
    username: &str,
) -> Result<Option<ExportedAccount>, StoreError> {
    let account: Option<(Vec<u8>, i64)> = conn
        .query_row(
            "SELECT identity_key, created_day FROM accounts WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((identity_key, created_day)) = account else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT d.device_id, d.device_key, d.created_day, d.last_seen_day, d.removed_day, \
           (SELECT count(*) FROM key_packages k WHERE k.device_id = d.device_id), \
           EXISTS(SELECT 1 FROM last_resort_key_packages l WHERE l.device_id = d.device_id), \
           (SELECT count(*) FROM mailbox m WHERE m.device_num = d.num), \
           (SELECT coalesce(sum(length(p.payload)), 0) FROM mailbox m \
              JOIN messages p ON p.id = m.message_ref WHERE m.device_num = d.num), \
           d.push_endpoint \
         FROM devices d WHERE d.username = ?1 ORDER BY d.rowid",
    )?;
    let mut rows = stmt.query([username])?;
    let mut devices = Vec::new();
    while let Some(r) = rows.next()? {
        devices.push(ExportedDevice {
            device_id: DeviceId::from_slice(&r.get::<_, Vec<u8>>(0)?).ok_or_else(|| {
                StoreError::Backend("stored device id has the wrong length".into())
            })?,
            device_key: key32(r.get(1)?, "device key")?,
            created_day: to_u64(r.get(2)?),
            last_seen_day: to_u64(r.get(3)?),
            removed_day: r.get::<_, Option<i64>>(4)?.map(to_u64),
            key_packages: to_u64(r.get(5)?),
            last_resort_key_package: r.get(6)?,
            queued_messages: to_u64(r.get(7)?),
            queued_bytes: to_u64(r.get(8)?),
            push_endpoint: r.get(9)?,
        });
    }
    Ok(Some(ExportedAccount {
        username: username.to_owned(),
        identity_key: key32(identity_key, "identity key")?,
        created_day: to_u64(created_day),
        log_entries: next_account_seq(conn, username)?,
        devices,
    }))
}

pub(super) fn insert_report_entry(
    conn: &Connection,
    entry: &ReportRecord,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO legal_requests (seq, request_id, day, kind, accounts, prev_hash, hash, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            to_i64(entry.seq),
            entry.request_id,
            to_i64(entry.day),
            entry.kind,
            to_i64(entry.accounts),
            entry.prev_hash,
            entry.hash,
            entry.signature,
        ],
    )?;
    Ok(())
}

/// The transparency report's newest entry (the next one chains to it).
pub(super) fn last_report_entry(conn: &Connection) -> Result<Option<ReportRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{REPORT_COLUMNS} ORDER BY seq DESC LIMIT 1"),
            [],
            report_record,
        )
        .optional()?)
}

impl LegalStore for SqliteStore {
    async fn legal_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| server_key_secret(conn, LEGAL_KEY_NAME, &fresh, LEGAL_KEY_SIGNED))
            .await
    }

    /// One write job: the writer's batch transaction is `BEGIN IMMEDIATE`
    /// and this job runs in its own SAVEPOINT, so no other writer (not even
    /// another process) appends between the read of the last entry and the
    /// append, and a failing `plan` or `deliver` rolls back the entry.
    async fn record_export<T, E, P, D>(
        &self,
        usernames: Vec<String>,
        plan: P,
        deliver: D,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        P: FnOnce(ExportSnapshot) -> Result<(ReportRecord, T), E> + Send + 'static,
        D: FnOnce(&T) -> Result<(), E> + Send + 'static,
    {
        self.write(move |conn| {
            let accounts = usernames
                .iter()
                .map(|username| exported_account(conn, username))
                .collect::<Result<Vec<_>, StoreError>>()?;
            let last_entry = last_report_entry(conn)?;
            let (entry, value) = plan(ExportSnapshot {
                accounts,
                last_entry,
            })?;
            insert_report_entry(conn, &entry)?;
            deliver(&value)?;
            Ok(value)
        })
        .await
    }

    /// One write job, like [`LegalStore::record_export`].
    async fn set_account_disabled<E, P>(
        &self,
        username: String,
        disabled_until_day: Option<UnixDay>,
        plan: P,
    ) -> Result<ReportRecord, E>
    where
        E: From<StoreError> + Send + 'static,
        P: FnOnce(StandingSnapshot) -> Result<ReportRecord, E> + Send + 'static,
    {
        self.write(move |conn| {
            let standing: Option<Option<i64>> = conn
                .query_row(
                    "SELECT disabled_until_day FROM accounts WHERE username = ?1",
                    [&username],
                    |r| r.get(0),
                )
                .optional()
                .map_err(StoreError::from)?;
            let last_entry = last_report_entry(conn)?;
            let entry = plan(StandingSnapshot {
                exists: standing.is_some(),
                disabled_until_day: standing.flatten().map(to_u64),
                last_entry,
            })?;
            insert_report_entry(conn, &entry)?;
            conn.execute(
                "UPDATE accounts SET disabled_until_day = ?1 WHERE username = ?2",
                params![disabled_until_day.map(to_i64), username],
            )
            .map_err(StoreError::from)?;
            Ok(entry)
        })
        .await
    }

    async fn report_entries(&self) -> Result<Vec<ReportRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{REPORT_COLUMNS} ORDER BY seq"))?;
            let rows = stmt.query_map([], report_record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn publish_canary(&self, canary: CanaryRecord) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO canaries (day, statement, key, signature) VALUES (?1, ?2, ?3, ?4)",
                params![
                    to_i64(canary.day),
                    canary.statement,
                    canary.key.as_slice(),
                    canary.signature.as_slice()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn latest_canary(&self) -> Result<Option<CanaryRecord>, StoreError> {
        self.read(|conn| {
            let row: Option<(i64, String, Vec<u8>, Vec<u8>)> = conn
                .query_row(
                    "SELECT day, statement, key, signature FROM canaries ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            row.map(|(day, statement, key, signature)| {
                Ok(CanaryRecord {
                    day: to_u64(day),
                    statement,
                    key: <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
                        StoreError::Backend("the stored canary key is not 32 bytes".into())
                    })?,
                    signature: <[u8; 64]>::try_from(signature.as_slice()).map_err(|_| {
                        StoreError::Backend("the stored canary signature is not 64 bytes".into())
                    })?,
                })
            })
            .transpose()
        })
        .await
    }
}
