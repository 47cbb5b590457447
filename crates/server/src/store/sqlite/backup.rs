//! Online backups of the SQLite database and their restore
//! (`sotto-server backup` and `restore`).
//!
//! A backup is `VACUUM INTO` on a connection of its own: one read
//! transaction, so the copy is the database as of one commit of the
//! writer, whatever it commits meanwhile (WAL lets the copy and the writer
//! proceed together). The copy is staged inside the data directory (which
//! already holds the keys), scrubbed of the keys there if asked
//! (`secure_delete`, then `VACUUM`, with the journal in memory, so no key
//! byte reaches the backup's file system), checked like a restore checks
//! it, synced, and only then copied to its destination under a temporary
//! name and renamed into place. A backup is one self-contained SQLite file
//! (rollback-journal mode, no `-wal`).
//!
//! The key directory's own file (`directory.db`) travels inside it: copied
//! (`VACUUM INTO`) *before* the main database, so it is never ahead of the
//! log it follows (the server catches it up on start), and stored as one
//! blob in the table `backup_key_directory`, which restore writes back out
//! as `directory.db` and drops. Without it a restored server would rebuild
//! the directory from epoch 1, and every client that had verified a later
//! epoch would refuse it.
//!
//! A restore checks a copy of the backup before anything is named
//! `sotto.db`: the file's length against its page count (SQLite's own
//! check does not notice a truncated last page), `PRAGMA integrity_check`,
//! `PRAGMA foreign_key_check`, that it is a Sotto database of a schema
//! this server understands (then brings it up to date), and that it holds
//! the signing keys its log and legal records need, from the backup or
//! from `--keys-from`. It never overwrites a database.

use std::fs::File;
use std::io::{Read as _, Write as _};

use super::legal::{LEGAL_KEY_NAME, LEGAL_KEY_SIGNED};
use super::log::{DIRECTORY_VRF_KEY_NAME, FRANKING_KEY_NAME, LOG_KEY_SIGNED};
use super::push::PUSH_KEY_NAME;
use super::schema::SCHEMA_VERSION;
use super::*;
use crate::store::{BackupError, RestoreError};

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Size of the backup file in bytes.
    pub bytes: u64,
    /// Its schema version.
    pub schema_version: i64,
    /// Accounts.
    pub accounts: u64,
    /// Transparency-log entries.
    pub log_entries: u64,
    /// Queued mailbox entries (one per recipient device).
    pub mailbox_entries: u64,
    /// The server keys it holds, by name (`log`, `legal`); empty with
    /// `--exclude-keys`.
    pub keys: Vec<String>,
    /// Size of the key directory's file it carries (`None`: none).
    pub key_directory_bytes: Option<u64>,
}

/// What a restore put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The restored database.
    pub path: PathBuf,
    /// What it holds (sizes as restored, keys included).
    pub contents: BackupSummary,
    /// Whether the keys came from `--keys-from`.
    pub keys_from_elsewhere: bool,
}

impl std::fmt::Display for BackupSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bytes:           {}", self.bytes)?;
        writeln!(f, "schema version:  {}", self.schema_version)?;
        writeln!(f, "accounts:        {}", self.accounts)?;
        writeln!(f, "log entries:     {}", self.log_entries)?;
        writeln!(f, "mailbox entries: {}", self.mailbox_entries)?;
        match self.key_directory_bytes {
            Some(bytes) => writeln!(f, "key directory:   {bytes} bytes")?,
            None => writeln!(f, "key directory:   none")?,
        }
        if self.keys.is_empty() {
            write!(f, "signing keys:    none")
        } else {
            write!(f, "signing keys:    {}", self.keys.join(", "))
        }
    }
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<rusqlite::Error> for RestoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// A file this operation created and has not finished with: removed on
/// drop unless kept.
struct Staged {
    path: PathBuf,
    keep: bool,
}

impl Staged {
    /// Creates `path`, empty, owner-only; fails if it exists.
    fn create(path: PathBuf) -> std::io::Result<(Self, File)> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        Ok((Self { path, keep: false }, file))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(journal_of(&self.path));
        }
    }
}

fn journal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-journal", db.display()))
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `path` as SQL text (`VACUUM INTO` takes a string).
fn utf8<'a>(path: &'a Path, data_dir: &Path) -> Result<&'a str, BackupError> {
    path.to_str().ok_or_else(|| {
        BackupError::Store(StoreError::Backend(format!(
            "the data directory's path is not UTF-8: {}",
            data_dir.display()
        )))
    })
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Counts in one statement's first column.
fn count(conn: &Connection, sql: &str) -> Result<u64, rusqlite::Error> {
    Ok(to_u64(conn.query_row(sql, [], |r| r.get(0))?))
}

/// The table a backup carries the key directory's file in.
const DIRECTORY_TABLE: &str = "backup_key_directory";

/// The key directory's file carried by the backup on `conn`, if any.
fn carried_directory(conn: &Connection) -> Result<Option<Vec<u8>>, rusqlite::Error> {
    let carried: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [DIRECTORY_TABLE],
        |r| r.get(0),
    )?;
    if !carried {
        return Ok(None);
    }
    conn.query_row(&format!("SELECT file FROM {DIRECTORY_TABLE}"), [], |r| {
        r.get(0)
    })
    .optional()
}

/// What the database on `conn` holds.
fn summarize(conn: &Connection, bytes: u64) -> Result<BackupSummary, rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT name FROM server_keys ORDER BY name")?;
    let keys = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BackupSummary {
        bytes,
        schema_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
        accounts: count(conn, "SELECT count(*) FROM accounts")?,
        log_entries: count(conn, "SELECT count(*) FROM log_entries")?,
        mailbox_entries: count(conn, "SELECT count(*) FROM mailbox")?,
        keys,
        key_directory_bytes: carried_directory(conn)?.map(|file| file.len() as u64),
    })
}

/// The problems `PRAGMA integrity_check` and `foreign_key_check` find
/// (at most a few), and whether the file's length matches its pages.
/// Empty: the database is sound.
fn problems(conn: &Connection, file_len: u64) -> Result<Vec<String>, rusqlite::Error> {
    let mut found = Vec::new();
    let page_size = to_u64(conn.query_row("PRAGMA page_size", [], |r| r.get(0))?);
    let pages = to_u64(conn.query_row("PRAGMA page_count", [], |r| r.get(0))?);
    if page_size.saturating_mul(pages) != file_len {
        found.push(format!(
            "the file is {file_len} bytes but its header says {pages} pages of {page_size} bytes \
             (truncated or damaged)"
        ));
    }
    let mut stmt = conn.prepare("PRAGMA integrity_check(10)")?;
    for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let row = row?;
        if row != "ok" {
            found.push(row);
        }
    }
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let broken = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .take(10)
        .collect::<Result<Vec<_>, _>>()?;
    found.extend(
        broken
            .into_iter()
            .map(|table| format!("a row of {table} refers to a missing row")),
    );
    Ok(found)
}

impl SqliteStore {
    /// Writes an online, consistent copy of the database in `data_dir` to
    /// `out`, which must not exist; without the server's signing keys if
    /// `exclude_keys`. The server may be running (and writing): the copy
    /// is the database as of one commit. Blocking.
    pub fn backup(
        data_dir: &Path,
        out: &Path,
        exclude_keys: bool,
    ) -> Result<BackupSummary, BackupError> {
        let db = data_dir.join(DB_FILE_NAME);
        if !db.is_file() {
            return Err(BackupError::NoDatabase(db));
        }
        if out.exists() {
            return Err(BackupError::OutExists(out.to_path_buf()));
        }
        let io = |what: String| move |source| BackupError::Io { what, source };
        // Staged beside the live database: the keys never leave the
        // directory that holds them, even with --exclude-keys.
        let staging = data_dir.join(format!("backup-{}.partial", std::process::id()));
        let (staged, file) = Staged::create(staging.clone())
            .map_err(io(format!("cannot create {}", staging.display())))?;
        drop(file);
        // The directory first: never ahead of the log copied after it.
        let directory = data_dir.join(crate::key_directory::DIRECTORY_FILE_NAME);
        let directory_file = if directory.is_file() {
            let copy = data_dir.join(format!("backup-{}.directory.partial", std::process::id()));
            let (_copied, file) = Staged::create(copy.clone())
                .map_err(io(format!("cannot create {}", copy.display())))?;
            drop(file);
            std::fs::remove_file(&copy)
                .map_err(io(format!("cannot replace {}", copy.display())))?;
            let source = Connection::open_with_flags(
                &directory,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            source.busy_timeout(std::time::Duration::from_secs(30))?;
            source.execute("VACUUM INTO ?1", [utf8(&copy, data_dir)?])?;
            drop(source);
            // A self-contained file, like the backup itself.
            let conn = Connection::open(&copy)?;
            let _: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
            drop(conn);
            Some(std::fs::read(&copy).map_err(io(format!("cannot read {}", copy.display())))?)
        } else {
            None
        };
        {
            let source = Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            source.busy_timeout(std::time::Duration::from_secs(30))?;
            source.execute("VACUUM INTO ?1", [utf8(&staging, data_dir)?])?;
        }
        let conn = Connection::open_with_flags(
            &staging,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A self-contained file; changes to it journal in memory, so no
        // page holding a key is ever written to a journal file.
        let _: String = conn.query_row("PRAGMA journal_mode=MEMORY", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA temp_store=MEMORY;")?;
        if exclude_keys {
            conn.execute_batch("PRAGMA secure_delete=ON; DELETE FROM server_keys; VACUUM;")?;
        }
        if let Some(file) = directory_file {
            conn.execute_batch(&format!(
                "CREATE TABLE {DIRECTORY_TABLE} (file BLOB NOT NULL)"
            ))?;
            conn.execute(
                &format!("INSERT INTO {DIRECTORY_TABLE} (file) VALUES (?1)"),
                [file],
            )?;
        }
        let _: String = conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
        let len = std::fs::metadata(&staging)
            .map_err(io(format!("cannot read {}", staging.display())))?
            .len();
        let found = problems(&conn, len)?;
        if !found.is_empty() {
            return Err(BackupError::Unsound(found.join("; ")));
        }
        let summary = summarize(&conn, len)?;
        drop(conn);
        File::open(&staging)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("cannot sync {}", staging.display())))?;

        // To the destination: a temporary name, synced, then renamed.
        let partial = with_suffix(out, ".partial");
        let (mut copied, mut file) = Staged::create(partial.clone())
            .map_err(io(format!("cannot create {}", partial.display())))?;
        let mut from =
            File::open(&staging).map_err(io(format!("cannot read {}", staging.display())))?;
        std::io::copy(&mut from, &mut file)
            .and_then(|_| file.flush())
            .and_then(|()| file.sync_all())
            .map_err(io(format!("cannot write {}", partial.display())))?;
        drop(file);
        if out.exists() {
            return Err(BackupError::OutExists(out.to_path_buf()));
        }
        std::fs::rename(&partial, out).map_err(io(format!(
            "cannot rename {} to {}",
            partial.display(),
            out.display()
        )))?;
        copied.keep = true;
        sync_dir(&parent_of(out))
            .map_err(io(format!("cannot sync {}", parent_of(out).display())))?;
        drop(staged);
        Ok(summary)
    }

    /// Restores the backup `from` into `data_dir` (created if missing,
    /// owner-only), which must not hold a database. The keys come from the
    /// backup or, for one made with `--exclude-keys`, from `keys_from` (a
    /// full backup or the old data directory of the same server). Checks
    /// everything before the database gets its name. Blocking.
    pub fn restore(
        from: &Path,
        data_dir: &Path,
        keys_from: Option<&Path>,
    ) -> Result<RestoreSummary, RestoreError> {
        let db = data_dir.join(DB_FILE_NAME);
        let directory = data_dir.join(crate::key_directory::DIRECTORY_FILE_NAME);
        let io = |what: String| move |source| RestoreError::Io { what, source };
        for existing in [db.clone(), with_suffix(&db, "-wal"), directory.clone()] {
            if existing.exists() {
                return Err(RestoreError::TargetHasDatabase(existing));
            }
        }
        if !from.is_file() {
            return Err(RestoreError::NotABackup {
                path: from.to_path_buf(),
                reason: "there is no such file".into(),
            });
        }
        let mut header = [0u8; 16];
        File::open(from)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_err(|e| RestoreError::NotABackup {
                path: from.to_path_buf(),
                reason: format!("cannot read its header: {e}"),
            })?;
        if &header != b"SQLite format 3\0" {
            return Err(RestoreError::NotABackup {
                path: from.to_path_buf(),
                reason: "it is not an SQLite database".into(),
            });
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(data_dir)
            .map_err(io(format!("cannot create {}", data_dir.display())))?;

        let staging = with_suffix(&db, ".restoring");
        let (mut staged, mut file) = Staged::create(staging.clone())
            .map_err(io(format!("cannot create {}", staging.display())))?;
        let mut source = File::open(from).map_err(io(format!("cannot read {}", from.display())))?;
        let len = std::io::copy(&mut source, &mut file)
            .and_then(|n| file.sync_all().map(|()| n))
            .map_err(io(format!("cannot write {}", staging.display())))?;
        drop(file);

        let unsound = |reason: String| RestoreError::Unsound {
            path: from.to_path_buf(),
            reason,
        };
        let mut conn = Connection::open_with_flags(
            &staging,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| unsound(e.to_string()))?;
        let found = problems(&conn, len).map_err(|e| unsound(e.to_string()))?;
        if !found.is_empty() {
            return Err(unsound(found.join("; ")));
        }
        let version = schema_version(&conn).map_err(|e| unsound(e.to_string()))?;
        if version > SCHEMA_VERSION {
            return Err(RestoreError::TooNew {
                version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 2 {
            return Err(RestoreError::NotABackup {
                path: from.to_path_buf(),
                reason: format!(
                    "it has schema version {version}: not a Sotto server database, or one from before the transparency log"
                ),
            });
        }
        migrate(&mut conn)?;

        let keys_from_elsewhere = match keys_from {
            Some(other) => import_keys(&conn, other)?,
            None => false,
        };
        for (name, signed_rows) in [
            (LOG_KEY_NAME, LOG_KEY_SIGNED),
            (LEGAL_KEY_NAME, LEGAL_KEY_SIGNED),
        ] {
            let signed = count(&conn, signed_rows)?;
            if signed > 0 && stored_server_key(&conn, name)?.is_none() {
                return Err(RestoreError::KeysMissing {
                    key: name.to_owned(),
                    signed,
                });
            }
        }
        let contents = summarize(&conn, len)?;
        // The key directory it carries becomes `directory.db` (checked the
        // same way) before the database gets its name.
        let mut directory_staged = None;
        if let Some(file) = carried_directory(&conn)? {
            let staging = with_suffix(&directory, ".restoring");
            let (staged, mut out) = Staged::create(staging.clone())
                .map_err(io(format!("cannot create {}", staging.display())))?;
            out.write_all(&file)
                .and_then(|()| out.sync_all())
                .map_err(io(format!("cannot write {}", staging.display())))?;
            drop(out);
            let check = Connection::open_with_flags(
                &staging,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| unsound(format!("its key directory: {e}")))?;
            let found = problems(&check, file.len() as u64)
                .map_err(|e| unsound(format!("its key directory: {e}")))?;
            if !found.is_empty() {
                return Err(unsound(format!("its key directory: {}", found.join("; "))));
            }
            drop(check);
            conn.execute_batch(&format!("DROP TABLE {DIRECTORY_TABLE}"))?;
            directory_staged = Some((staged, staging));
        }
        configure(&conn)?;
        drop(conn);
        File::open(&staging)
            .and_then(|f| f.sync_all())
            .map_err(io(format!("cannot sync {}", staging.display())))?;
        if db.exists() {
            return Err(RestoreError::TargetHasDatabase(db));
        }
        if let Some((mut staged, from)) = directory_staged {
            if directory.exists() {
                return Err(RestoreError::TargetHasDatabase(directory));
            }
            std::fs::rename(&from, &directory).map_err(io(format!(
                "cannot rename {} to {}",
                from.display(),
                directory.display()
            )))?;
            staged.keep = true;
        }
        std::fs::rename(&staging, &db).map_err(io(format!(
            "cannot rename {} to {}",
            staging.display(),
            db.display()
        )))?;
        staged.keep = true;
        sync_dir(data_dir).map_err(io(format!("cannot sync {}", data_dir.display())))?;
        // The directory may have existed, with looser permissions.
        keep_private(data_dir, &db)?;
        Ok(RestoreSummary {
            path: db,
            contents,
            keys_from_elsewhere,
        })
    }
}

/// Copies the signing keys the restored database `conn` lacks from the
/// database at `other` (a backup file, or a data directory). Refuses a
/// database of another server (the first log entries differ) or keys
/// that differ from the backup's own. Whether any key was copied.
fn import_keys(conn: &Connection, other: &Path) -> Result<bool, RestoreError> {
    let path = if other.is_dir() {
        other.join(DB_FILE_NAME)
    } else {
        other.to_path_buf()
    };
    if !path.is_file() {
        return Err(RestoreError::KeysFrom {
            path,
            reason: "there is no such database".into(),
        });
    }
    let keys = Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| RestoreError::KeysFrom {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    keys.busy_timeout(std::time::Duration::from_secs(30))?;
    let first_entry = |c: &Connection| -> Result<Option<Vec<u8>>, rusqlite::Error> {
        c.query_row("SELECT entry FROM log_entries WHERE idx = 0", [], |r| {
            r.get(0)
        })
        .optional()
    };
    let ours = first_entry(conn)?;
    let theirs = first_entry(&keys).map_err(|e| RestoreError::KeysFrom {
        path: path.clone(),
        reason: format!("it is not a Sotto server database: {e}"),
    })?;
    if let (Some(ours), Some(theirs)) = (&ours, &theirs)
        && ours != theirs
    {
        return Err(RestoreError::KeysFrom {
            path,
            reason: "its log is another server's (the first entries differ)".into(),
        });
    }
    let mut copied = false;
    for name in [
        LOG_KEY_NAME,
        LEGAL_KEY_NAME,
        DIRECTORY_VRF_KEY_NAME,
        FRANKING_KEY_NAME,
        PUSH_KEY_NAME,
    ] {
        let Some(secret) = stored_server_key(&keys, name)? else {
            continue;
        };
        match stored_server_key(conn, name)? {
            Some(own) if *own == *secret => {}
            Some(_) => {
                return Err(RestoreError::KeysFrom {
                    path,
                    reason: format!("its {name} key differs from the one in the backup"),
                });
            }
            None => {
                conn.execute(
                    "INSERT INTO server_keys (name, secret) VALUES (?1, ?2)",
                    params![name, secret.as_slice()],
                )?;
                copied = true;
            }
        }
    }
    Ok(copied)
}
