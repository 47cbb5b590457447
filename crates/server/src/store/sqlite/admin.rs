//! What the operator's commands open and use besides the legal tables:
//! an existing database read-write (legal and invite commands) or
//! read-only (the audit), invites, and the auditor's reads.

use super::*;

impl SqliteStore {
    /// Opens the existing database in `data_dir` for an operator's command,
    /// bringing its schema up to date, and starts the writer thread.
    /// Unlike [`SqliteStore::open`] it never creates a database (or the
    /// directory). Blocking.
    pub fn open_existing(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::Backend(format!(
                "there is no server database at {}; check --data",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        Self::start(path, conn, None, SpaceTuning::default(), false)
    }

    /// Opens the existing database in `data_dir` read-only, for the
    /// auditor: nothing is migrated or written (writes fail with
    /// [`StoreError::Closed`]), so a running server is not disturbed. Fails
    /// if the database does not exist or predates the transparency log.
    /// Blocking.
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE_NAME);
        let conn = open_reader(&path, true, None)?;
        let version = schema_version(&conn)?;
        if version < 2 {
            return Err(StoreError::Backend(format!(
                "{} has schema version {version}, without a transparency log; start sotto-server on it once to upgrade",
                path.display()
            )));
        }
        Ok(Self::reader_only(path, conn))
    }
}

fn insert_invites(
    conn: &Connection,
    code_hashes: &[[u8; 32]],
    today: UnixDay,
) -> Result<(), StoreError> {
    let mut insert =
        conn.prepare_cached("INSERT INTO invites (code_hash, created_day) VALUES (?1, ?2)")?;
    for hash in code_hashes {
        insert.execute(params![hash.as_slice(), to_i64(today)])?;
    }
    Ok(())
}

impl AdminStore for SqliteStore {
    async fn add_invites(
        &self,
        code_hashes: Vec<[u8; 32]>,
        today: UnixDay,
    ) -> Result<(), StoreError> {
        self.write(move |conn| insert_invites(conn, &code_hashes, today))
            .await
    }

    async fn stored_log_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.read(|conn| stored_server_key(conn, LOG_KEY_NAME))
            .await
    }

    async fn account_identities(&self) -> Result<Vec<AccountIdentity>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT username, identity_key FROM accounts")?;
            let rows = stmt.query_map([], |r| {
                Ok(AccountIdentity {
                    username: r.get(0)?,
                    identity_key: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn active_devices(&self) -> Result<Vec<ActiveDevice>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT username, device_id, device_key FROM devices WHERE removed_day IS NULL",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ActiveDevice {
                    username: r.get(0)?,
                    device_id: r.get(1)?,
                    device_key: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT code_hash, created_day, used_day FROM invites ORDER BY created_day, code_hash",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            let mut invites = Vec::new();
            for row in rows {
                let (hash, created, used) = row?;
                let code_hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
                    StoreError::Backend("a stored invite hash is not 32 bytes".into())
                })?;
                invites.push(InviteRecord {
                    code_hash,
                    created_day: to_u64(created),
                    used_day: used.map(to_u64),
                });
            }
            Ok(invites)
        })
        .await
    }

    async fn revoke_invite(&self, code_hash: [u8; 32]) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM invites WHERE code_hash = ?1 AND used_day IS NULL",
                [code_hash.as_slice()],
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn queued_bytes(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let bytes: i64 = conn.query_row(
                "SELECT coalesce(sum(length(payload)), 0) FROM messages",
                [],
                |r| r.get(0),
            )?;
            Ok(to_u64(bytes))
        })
        .await
    }
}
