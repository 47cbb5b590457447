//! The legal tables (`crate::legal`): the legal key in `server_keys`, the
//! transparency report in `legal_requests`, the warrant canary in
//! `canaries`, and the reads behind an account export.

use super::*;
use crate::store::StandingSnapshot;

/// Name of the legal signing key in `server_keys`.
const LEGAL_KEY_NAME: &str = "legal";
/// Counts what the legal key signed: transparency-report entries and canaries.
const LEGAL_KEY_SIGNED: &str =
    "SELECT (SELECT count(*) FROM legal_requests) + (SELECT count(*) FROM canaries)";

const REPORT_COLUMNS: &str =
    "SELECT seq, request_id, day, kind, accounts, prev_hash, hash, signature FROM legal_requests";

/// Any number, the same in every node: held while an export reads the
/// report's last entry and appends the next, so two exports never chain
/// onto the same entry.
pub(super) const REPORT_LOCK: i64 = 0x5077_0002;

fn report_record(r: &Row) -> Result<ReportRecord, StoreError> {
    Ok(ReportRecord {
        seq: to_u64(get(r, 0)?),
        request_id: get(r, 1)?,
        day: to_u64(get(r, 2)?),
        kind: get(r, 3)?,
        accounts: to_u64(get(r, 4)?),
        prev_hash: get(r, 5)?,
        hash: get(r, 6)?,
        signature: get(r, 7)?,
    })
}

/// What the server holds about `username`; `None` if there is no such
/// account.
async fn exported_account(tx: &Tx, username: &str) -> Result<Option<ExportedAccount>, StoreError> {
    let Some(account) = query_opt(
        tx,
        "SELECT identity_key, created_day FROM accounts WHERE username = $1",
        &[&username],
    )
    .await?
    else {
        return Ok(None);
    };
    let rows = query(
        tx,
        "SELECT d.device_id, d.device_key, d.created_day, d.last_seen_day, d.removed_day, \
           (SELECT count(*) FROM key_packages k WHERE k.device_id = d.device_id), \
           EXISTS(SELECT 1 FROM last_resort_key_packages l WHERE l.device_id = d.device_id), \
           (SELECT count(*) FROM mailbox m WHERE m.device_num = d.num), \
           (SELECT coalesce(sum(length(p.payload)), 0)::bigint FROM mailbox m \
              JOIN messages p ON p.id = m.message_ref WHERE m.device_num = d.num), \
           d.push_endpoint \
         FROM devices d WHERE d.username = $1 ORDER BY d.num",
        &[&username],
    )
    .await?;
    let mut devices = Vec::new();
    for r in &rows {
        let raw: &[u8] = get(r, 0)?;
        devices.push(ExportedDevice {
            device_id: device_id_of(raw)?,
            device_key: key32(get(r, 1)?, "device key")?,
            created_day: to_u64(get(r, 2)?),
            last_seen_day: to_u64(get(r, 3)?),
            removed_day: get::<Option<i64>>(r, 4)?.map(to_u64),
            key_packages: to_u64(get(r, 5)?),
            last_resort_key_package: get(r, 6)?,
            queued_messages: to_u64(get(r, 7)?),
            queued_bytes: to_u64(get(r, 8)?),
            push_endpoint: get(r, 9)?,
        });
    }
    Ok(Some(ExportedAccount {
        username: username.to_owned(),
        identity_key: key32(get(&account, 0)?, "identity key")?,
        created_day: to_u64(get(&account, 1)?),
        log_entries: next_account_seq(tx, username).await?,
        devices,
    }))
}

pub(super) async fn insert_report_entry(tx: &Tx, entry: &ReportRecord) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO legal_requests (seq, request_id, day, kind, accounts, prev_hash, hash, \
         signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &to_i64(entry.seq),
            &entry.request_id,
            &to_i64(entry.day),
            &entry.kind,
            &to_i64(entry.accounts),
            &entry.prev_hash,
            &entry.hash,
            &entry.signature,
        ],
    )
    .await?;
    Ok(())
}

/// The transparency report's newest entry (the next one chains to it).
pub(super) async fn last_report_entry(tx: &Tx) -> Result<Option<ReportRecord>, StoreError> {
    query_opt(
        tx,
        &format!("{REPORT_COLUMNS} ORDER BY seq DESC LIMIT 1"),
        &[],
    )
    .await?
    .map(|r| report_record(&r))
    .transpose()
}

impl LegalStore for PostgresStore {
    async fn legal_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                server_key_secret(&tx, LEGAL_KEY_NAME, &fresh, LEGAL_KEY_SIGNED).await
            })
        })
        .await
    }

    /// One write job: it runs in its own SAVEPOINT of the writer's
    /// transaction, holding an advisory lock (until the commit) so that no
    /// other node appends between the read of the last entry and the
    /// append; a failing `plan` or `deliver` rolls back the entry.
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
        self.write(move |tx| {
            Box::pin(async move {
                execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&REPORT_LOCK]).await?;
                let mut accounts = Vec::with_capacity(usernames.len());
                for username in &usernames {
                    accounts.push(exported_account(&tx, username).await?);
                }
                let last_entry = last_report_entry(&tx).await?;
                let (entry, value) = plan(ExportSnapshot {
                    accounts,
                    last_entry,
                })?;
                insert_report_entry(&tx, &entry).await?;
                deliver(&value)?;
                Ok(value)
            })
        })
        .await
    }

    /// One write job, like [`LegalStore::record_export`] (under the same
    /// advisory lock: report entries chain).
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
        self.write(move |tx| {
            Box::pin(async move {
                execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&REPORT_LOCK]).await?;
                let standing: Option<Option<i64>> = query_opt(
                    &tx,
                    "SELECT disabled_until_day FROM accounts WHERE username = $1 FOR UPDATE",
                    &[&username],
                )
                .await?
                .map(|r| get(&r, 0))
                .transpose()?;
                let last_entry = last_report_entry(&tx).await?;
                let entry = plan(StandingSnapshot {
                    exists: standing.is_some(),
                    disabled_until_day: standing.flatten().map(to_u64),
                    last_entry,
                })?;
                insert_report_entry(&tx, &entry).await?;
                execute(
                    &tx,
                    "UPDATE accounts SET disabled_until_day = $1 WHERE username = $2",
                    &[&disabled_until_day.map(to_i64), &username],
                )
                .await?;
                Ok(entry)
            })
        })
        .await
    }

    async fn report_entries(&self) -> Result<Vec<ReportRecord>, StoreError> {
        let c = self.reader().await?;
        query(&c, &format!("{REPORT_COLUMNS} ORDER BY seq"), &[])
            .await?
            .iter()
            .map(report_record)
            .collect()
    }

    async fn publish_canary(&self, canary: CanaryRecord) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    &tx,
                    "INSERT INTO canaries (day, statement, key, signature) VALUES ($1, $2, $3, $4)",
                    &[
                        &to_i64(canary.day),
                        &canary.statement,
                        &canary.key.as_slice(),
                        &canary.signature.as_slice(),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn latest_canary(&self) -> Result<Option<CanaryRecord>, StoreError> {
        let c = self.reader().await?;
        let Some(r) = query_opt(
            &c,
            "SELECT day, statement, key, signature FROM canaries ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await?
        else {
            return Ok(None);
        };
        let key: &[u8] = get(&r, 2)?;
        let signature: &[u8] = get(&r, 3)?;
        Ok(Some(CanaryRecord {
            day: to_u64(get(&r, 0)?),
            statement: get(&r, 1)?,
            key: <[u8; 32]>::try_from(key)
                .map_err(|_| StoreError::Backend("the stored canary key is not 32 bytes".into()))?,
            signature: <[u8; 64]>::try_from(signature).map_err(|_| {
                StoreError::Backend("the stored canary signature is not 64 bytes".into())
            })?,
        }))
    }
}
