//! What the operator's commands open: invites, and the database read-only
//! (audit) or read-write (legal commands).

use super::*;

/// Creates `count` one-time invite codes, storing only their hashes; returns
/// the codes (hex) to hand out.
pub fn create_invites(
    conn: &Connection,
    count: usize,
    today: UnixDay,
) -> Result<Vec<String>, StoreError> {
    let mut codes = Vec::with_capacity(count);
    let tx = conn.unchecked_transaction()?;
    for _ in 0..count {
        let code: [u8; 16] = rand::random();
        tx.execute(
            "INSERT INTO invites (code_hash, created_day) VALUES (?1, ?2)",
            params![invite_hash(&hex::encode(code)).as_slice(), to_i64(today)],
        )?;
        codes.push(hex::encode(code));
    }
    tx.commit()?;
    Ok(codes)
}

/// What the store keeps of an invite code.
pub fn invite_hash(code: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(code.trim().to_ascii_lowercase().as_bytes()).into()
}

/// Opens `<data_dir>/sotto.db` read-only, for the auditor. Fails if the
/// database does not exist or predates the transparency log.
pub(crate) fn open_read_only(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE_NAME);
    let conn = Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version = schema_version(&conn)?;
    if version < 2 {
        return Err(StoreError::Backend(format!(
            "{} has schema version {version}, without a transparency log; start sotto-server on it once to upgrade",
            path.display()
        )));
    }
    Ok(conn)
}

/// Opens an existing `<data_dir>/sotto.db` read-write for an admin command
/// (`crate::legal`), bringing its schema up to date. Unlike
/// [`SqliteStore::open`] it never creates a database.
pub(crate) fn open_admin(data_dir: &Path) -> Result<Connection, StoreError> {
    let path = data_dir.join(DB_FILE_NAME);
    if !path.is_file() {
        return Err(StoreError::Backend(format!(
            "there is no server database at {}; check --data",
            path.display()
        )));
    }
    let mut conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}
