//! The legal tables (`crate::legal`): the legal key in `server_keys`, the
//! transparency report in `legal_requests`, the warrant canary in
//! `canaries`, and the reads behind an account export.

use super::*;

/// Name of the legal signing key in `server_keys`.
const LEGAL_KEY_NAME: &str = "legal";

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
              JOIN messages p ON p.id = m.message_ref WHERE m.device_num = d.num) \
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

impl LegalStore for SqliteStore {
    async fn legal_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| server_key_secret(conn, LEGAL_KEY_NAME, &fresh))
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
            let last_entry = conn
                .query_row(&format!("{REPORT_COLUMNS} ORDER BY seq DESC LIMIT 1"), [], report_record)
                .optional()
                .map_err(StoreError::from)?;
            let (entry, value) = plan(ExportSnapshot { accounts, last_entry })?;
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
            )
            .map_err(StoreError::from)?;
            deliver(&value)?;
            Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum TestError {
        Store(StoreError),
        Refused(&'static str),
    }

    impl From<StoreError> for TestError {
        fn from(e: StoreError) -> Self {
            Self::Store(e)
        }
    }

    fn entry(seq: u64) -> ReportRecord {
        ReportRecord {
            seq,
            request_id: format!("R-{seq}"),
            day: 20_000,
            kind: "export".into(),
            accounts: 1,
            prev_hash: vec![0; 32],
            hash: vec![u8::try_from(seq).unwrap(); 32],
            signature: vec![1; 64],
        }
    }

    async fn store_with_alice() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .register(NewAccount {
                username: "alice".into(),
                identity_key: [1; 32],
                device_id: DeviceId::new([2; 16]),
                device_key: [3; 32],
                device: SignedDevice {
                    certificate: vec![4],
                    identity_signature: vec![5],
                },
                today: 19_000,
                log_entries: vec![vec![6], vec![7]],
                invite: None,
            })
            .await
            .unwrap();
        (dir, store)
    }

    /// The plan sees the accounts in order (`None` for an unknown one) and
    /// the last entry; the entry is kept only if plan and delivery succeed.
    #[tokio::test]
    async fn export_is_recorded_only_when_delivered() {
        let (_dir, store) = store_with_alice().await;
        let names = vec!["alice".to_owned(), "nobody".to_owned()];
        let seen = store
            .record_export(
                names,
                |snapshot| Ok::<_, TestError>((entry(1), snapshot)),
                |_| Ok(()),
            )
            .await
            .unwrap();
        let [Some(alice), None] = seen.accounts.as_slice() else {
            panic!("{:?}", seen.accounts);
        };
        assert_eq!(seen.last_entry, None);
        assert_eq!(alice.identity_key, [1; 32]);
        assert_eq!(alice.created_day, 19_000);
        assert_eq!(alice.log_entries, 2);
        assert_eq!(alice.devices.len(), 1);
        assert_eq!(alice.devices[0].device_id, DeviceId::new([2; 16]));
        assert_eq!(alice.devices[0].removed_day, None);
        assert_eq!(store.report_entries().await.unwrap(), [entry(1)]);

        let refused = store
            .record_export(
                vec!["alice".into()],
                |_| Err::<(ReportRecord, ()), _>(TestError::Refused("plan")),
                |()| Ok(()),
            )
            .await;
        assert!(matches!(refused, Err(TestError::Refused("plan"))));
        let undelivered = store
            .record_export(
                vec!["alice".into()],
                |snapshot| Ok((entry(2), snapshot.last_entry)),
                |_| Err(TestError::Refused("deliver")),
            )
            .await;
        assert!(matches!(undelivered, Err(TestError::Refused("deliver"))));
        assert_eq!(store.report_entries().await.unwrap(), [entry(1)]);

        let last = store
            .record_export(
                vec![],
                |snapshot| Ok::<_, TestError>((entry(2), snapshot.last_entry)),
                |_| Ok(()),
            )
            .await
            .unwrap();
        assert_eq!(last, Some(entry(1)));
        // A seq already used is refused.
        let again = store
            .record_export(vec![], |_| Ok((entry(2), ())), |()| Ok(()))
            .await;
        let Err(TestError::Store(refused)) = again else {
            panic!("{again:?}");
        };
        assert!(refused.to_string().contains("UNIQUE"), "{refused}");
        assert_eq!(store.report_entries().await.unwrap(), [entry(1), entry(2)]);
        store.close().await;
    }

    #[tokio::test]
    async fn legal_key_and_canary() {
        let (_dir, store) = store_with_alice().await;
        let key = store
            .legal_key_secret(Zeroizing::new([8; 32]))
            .await
            .unwrap();
        assert_eq!(*key, [8; 32]);
        let again = store
            .legal_key_secret(Zeroizing::new([9; 32]))
            .await
            .unwrap();
        assert_eq!(*again, [8; 32], "the first key stays");
        let log_key = store
            .log_key_secret(Zeroizing::new([10; 32]))
            .await
            .unwrap();
        assert_eq!(*log_key, [10; 32], "the log key is a different key");

        assert_eq!(store.latest_canary().await.unwrap(), None);
        let canary = |day, statement: &str| CanaryRecord {
            day,
            statement: statement.into(),
            key: [8; 32],
            signature: [11; 64],
        };
        store.publish_canary(canary(5, "first")).await.unwrap();
        store.publish_canary(canary(4, "second")).await.unwrap();
        assert_eq!(
            store.latest_canary().await.unwrap(),
            Some(canary(4, "second")),
            "the latest published, whatever its day"
        );
        store.close().await;
    }
}
