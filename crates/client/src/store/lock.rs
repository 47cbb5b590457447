//! Locked profiles: the whole profile database — account keys, openmls'
//! secrets, history, every index and free page — encrypted at rest by
//! SQLCipher under a key derived from a passphrase with Argon2id.
//!
//! Why the whole file and not the secret columns: SQLCipher is SQLite with
//! page encryption, built into the one `libsqlite3-sys` the workspace links
//! (`bundled-sqlcipher` includes `bundled`, which is all
//! `openmls_sqlite_storage` asks for), so openmls' tables, their keys and
//! values, the WAL and the free pages are covered with no change to the code
//! that reads and writes them. Without a key SQLCipher reads and writes plain
//! SQLite files, so unlocked profiles and the server are unchanged.
//!
//! The Argon2id salt is SQLCipher's own file salt, the first 16 bytes of a
//! locked file, and the raw derived key is handed to SQLCipher with that
//! salt (so SQLCipher runs no key derivation of its own). Key and salt live
//! in the one file: locking, unlocking and changing the passphrase write a
//! complete new file beside the profile and rename it over the old one, so a
//! crash leaves either the old profile or the new one, never half of each.
//!
//! A plain file starts with `SQLite format 3\0`; anything else is locked.
//!
//! Limits: locking replaces the plain file but does not scrub the disk
//! blocks it occupied (nor backups or snapshots of it); the key literal
//! passes through SQL text that SQLite copies and does not zeroize; a
//! passphrase given through `SOTTO_PASSPHRASE` is readable by the same
//! user's processes.

use super::StoreError;
use rusqlite::{Connection, ErrorCode, OptionalExtension as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Argon2id cost: 64 MiB, 3 passes, 1 lane (RFC 9106 §4, the second
/// recommended option). Changing these makes existing locked profiles
/// unreadable: a new cost needs a new file format marker.
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_PASSES: u32 = 3;
const ARGON2_LANES: u32 = 1;
const KEY_LEN: usize = 32;
const SALT_LEN: usize = 16;
#[cfg(not(target_arch = "wasm32"))]
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What went wrong opening, locking or unlocking a profile.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The profile is locked and no passphrase was given.
    #[error("the profile {0} is locked: give its passphrase")]
    NeedsPassphrase(PathBuf),
    /// The passphrase does not open the profile. Nothing was changed.
    #[error("wrong passphrase for the locked profile {0}; nothing was changed")]
    WrongPassphrase(PathBuf),
    #[error("the profile {0} is already locked; use `change-passphrase` to change its passphrase")]
    AlreadyLocked(PathBuf),
    #[error("the profile {0} is not locked")]
    NotLocked(PathBuf),
    #[error("no account in profile {0}")]
    NoProfile(PathBuf),
    /// Another process has the profile open; nothing was changed.
    #[error(
        "the profile {0} is in use by another sotto command (a `sotto listen`?); stop it and try again; nothing was changed"
    )]
    InUse(PathBuf),
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("cannot derive the profile key: {0}")]
    Kdf(String),
    #[error("cannot rewrite the profile {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("local database error: {0}")]
    Store(#[from] StoreError),
}

/// A passphrase as typed. Never printed; zeroized on drop.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(text: String) -> Result<Self, LockError> {
        let text = Zeroizing::new(text);
        if text.is_empty() {
            return Err(LockError::EmptyPassphrase);
        }
        Ok(Self(text))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(redacted)")
    }
}

/// The key of a locked profile and the salt it was derived with. Never
/// printed; zeroized on drop.
pub(crate) struct ProfileKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for ProfileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileKey(redacted)")
    }
}

impl ProfileKey {
    fn derive(passphrase: &Passphrase, salt: [u8; SALT_LEN]) -> Result<Self, LockError> {
        let params = argon2::Params::new(
            ARGON2_MEMORY_KIB,
            ARGON2_PASSES,
            ARGON2_LANES,
            Some(KEY_LEN),
        )
        .map_err(|e| LockError::Kdf(e.to_string()))?;
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        argon2
            .hash_password_into(passphrase.0.as_bytes(), &salt, key.as_mut())
            .map_err(|e| LockError::Kdf(e.to_string()))?;
        Ok(Self { key, salt })
    }

    fn fresh(passphrase: &Passphrase) -> Result<Self, LockError> {
        Self::derive(passphrase, rand::random())
    }

    /// SQLCipher's raw-key form, `x'<key><salt>'`: it uses the key as is
    /// and writes the salt as the file's first 16 bytes.
    fn sqlcipher_literal(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(3 + 2 * (KEY_LEN + SALT_LEN)));
        text.push_str("x'");
        text.push_str(&Zeroizing::new(hex::encode(self.key.as_ref())));
        text.push_str(&hex::encode(self.salt));
        text.push('\'');
        text
    }
}

/// Whether the database file is plain, locked (with its salt), or absent.
enum FileState {
    Absent,
    Plain,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Locked([u8; SALT_LEN]),
}

/// In the browser a profile is never passphrase-locked: the page's own key
/// encrypts it whole (`page_key`), and SQLite's files are not the
/// process's to read.
#[cfg(target_arch = "wasm32")]
fn file_state(db: &Path) -> Result<FileState, LockError> {
    Ok(if super::exists(db) {
        FileState::Plain
    } else {
        FileState::Absent
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn file_state(db: &Path) -> Result<FileState, LockError> {
    use std::io::Read as _;
    let mut file = match std::fs::File::open(db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::Absent),
        Err(e) => return Err(LockError::Io(db.to_owned(), e)),
    };
    let mut head = Vec::with_capacity(SALT_LEN);
    (&mut file)
        .take(SALT_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| LockError::Io(db.to_owned(), e))?;
    // An empty or short file is one SQLite has not written yet.
    match <[u8; SALT_LEN]>::try_from(head.as_slice()) {
        Ok(salt) if &salt != PLAIN_HEADER => Ok(FileState::Locked(salt)),
        _ => Ok(FileState::Plain),
    }
}

/// Whether the profile in `dir` is locked.
pub fn is_locked(dir: &Path) -> Result<bool, LockError> {
    Ok(matches!(
        file_state(&crate::profile::profile_db(dir))?,
        FileState::Locked(_)
    ))
}

/// Sets the key on a freshly opened connection and proves it right: with a
/// wrong key the first read fails with `NotADatabase`.
pub(crate) fn apply_key(conn: &Connection, key: &ProfileKey) -> Result<(), StoreError> {
    // SQLCipher writes a wrong key's decryption failure to stderr; the
    // caller reports it instead.
    // A SQLite without SQLCipher ignores `PRAGMA key`: the profile would
    // silently stay plain. Refused instead.
    let cipher: Option<String> = conn
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .optional()?;
    if cipher.is_none() {
        return Err(StoreError::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
            Some("this build's SQLite cannot encrypt a profile (no SQLCipher)".into()),
        ));
    }
    conn.pragma_update(None, "cipher_log_level", "NONE")?;
    let literal = key.sqlcipher_literal();
    conn.pragma_update(None, "key", literal.as_str())?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(())
}

fn is_wrong_key(e: &StoreError) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::NotADatabase)
}

/// Opens the profile database `db`, plain or locked. A locked one needs
/// `passphrase`; a plain one ignores it.
pub(crate) fn open(db: &Path, passphrase: Option<&Passphrase>) -> Result<Connection, LockError> {
    let key = match file_state(db)? {
        FileState::Locked(salt) => {
            let passphrase = passphrase.ok_or_else(|| LockError::NeedsPassphrase(dir_of(db)))?;
            Some(ProfileKey::derive(passphrase, salt)?)
        }
        FileState::Plain | FileState::Absent => None,
    };
    super::open_keyed(db, key.as_ref()).map_err(|e| match e {
        e if key.is_some() && is_wrong_key(&e) => LockError::WrongPassphrase(dir_of(db)),
        e => LockError::Store(e),
    })
}

/// Encrypts the plain profile in `dir` under `passphrase`.
pub fn lock(dir: &Path, passphrase: &Passphrase) -> Result<(), LockError> {
    let db = &crate::profile::profile_db(dir);
    match file_state(db)? {
        FileState::Absent => Err(LockError::NoProfile(dir_of(db))),
        FileState::Locked(_) => Err(LockError::AlreadyLocked(dir_of(db))),
        FileState::Plain => rewrite(db, None, Some(&ProfileKey::fresh(passphrase)?)),
    }
}

/// Decrypts the locked profile in `dir`.
pub fn unlock(dir: &Path, passphrase: &Passphrase) -> Result<(), LockError> {
    let db = &crate::profile::profile_db(dir);
    let salt = locked_salt(db)?;
    rewrite(db, Some(&ProfileKey::derive(passphrase, salt)?), None)
}

/// Re-encrypts the locked profile in `dir` under a new passphrase (and a
/// new salt).
pub fn change_passphrase(dir: &Path, old: &Passphrase, new: &Passphrase) -> Result<(), LockError> {
    let db = &crate::profile::profile_db(dir);
    let salt = locked_salt(db)?;
    let old = ProfileKey::derive(old, salt)?;
    rewrite(db, Some(&old), Some(&ProfileKey::fresh(new)?))
}

fn locked_salt(db: &Path) -> Result<[u8; SALT_LEN], LockError> {
    match file_state(db)? {
        FileState::Absent => Err(LockError::NoProfile(dir_of(db))),
        FileState::Plain => Err(LockError::NotLocked(dir_of(db))),
        FileState::Locked(salt) => Ok(salt),
    }
}

fn dir_of(db: &Path) -> PathBuf {
    db.parent().map(Path::to_owned).unwrap_or_default()
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes the whole database, read under `from`, into a new file beside it
/// under `to` (no key: plain), then renames the new file over the old.
///
/// Until the rename the old file is the profile, whole; the rename is
/// atomic. The old file's WAL is checkpointed into it and gone (its last
/// connection closed) before the rename, so no stale WAL meets the new file.
fn rewrite(db: &Path, from: Option<&ProfileKey>, to: Option<&ProfileKey>) -> Result<(), LockError> {
    let io = |e: std::io::Error| LockError::Io(dir_of(db), e);
    let next = with_suffix(db, "-rewrite");
    // A crash during an earlier rewrite may have left one behind.
    for leftover in [
        next.clone(),
        with_suffix(&next, "-journal"),
        with_suffix(&next, "-wal"),
        with_suffix(&next, "-shm"),
    ] {
        remove_if_present(&leftover).map_err(io)?;
    }
    create_private(&next).map_err(io)?;
    {
        let conn = super::open_keyed(db, from).map_err(|e| match e {
            e if from.is_some() && is_wrong_key(&e) => LockError::WrongPassphrase(dir_of(db)),
            e => LockError::Store(e),
        })?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let next_key = to.map(ProfileKey::sqlcipher_literal);
        let next_key: &str = next_key.as_ref().map_or("", |k| k.as_str());
        conn.execute(
            "ATTACH DATABASE ?1 AS rewritten KEY ?2",
            (next.to_string_lossy().as_ref(), next_key),
        )?;
        conn.query_row("SELECT sqlcipher_export('rewritten')", [], |_| Ok(()))?;
        conn.pragma_update(Some("rewritten"), "user_version", version)?;
        conn.execute("DETACH DATABASE rewritten", [])?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        conn.close().map_err(|(_, e)| LockError::Store(e))?;
    }
    // SQLite removes the WAL when its last connection closes: if it is still
    // there, another process (a `sotto listen`) has the profile open and
    // would keep writing to the file the rename is about to replace.
    if with_suffix(db, "-wal").exists() {
        remove_if_present(&next).map_err(io)?;
        return Err(LockError::InUse(dir_of(db)));
    }
    std::fs::File::open(&next)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    remove_if_present(&with_suffix(db, "-shm")).map_err(io)?;
    std::fs::rename(&next, db).map_err(io)?;
    sync_dir(&dir_of(db)).map_err(io)?;
    Ok(())
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates an empty owner-only file (SQLite fills it).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create_new(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pass(text: &str) -> Passphrase {
        Passphrase::new(text.to_owned()).unwrap()
    }

    #[test]
    fn debug_never_prints_a_passphrase_or_key() {
        let p = pass("correct horse");
        assert_eq!(format!("{p:?}"), "Passphrase(redacted)");
        let key = ProfileKey::derive(&p, [7; SALT_LEN]).unwrap();
        let printed = format!("{key:?}");
        assert!(!printed.contains(&hex::encode(key.key.as_ref())));
        assert_eq!(printed, "ProfileKey(redacted)");
        assert!(!format!("{:?}", LockError::WrongPassphrase("p".into())).contains("horse"));
    }

    #[test]
    fn lock_unlock_and_change_keep_the_data_and_refuse_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sotto.db");
        {
            let conn = super::super::open(&db).unwrap();
            conn.execute(
                "INSERT INTO device_log (at_ms, text) VALUES (1, 'a known line')",
                [],
            )
            .unwrap();
        }
        let read = |conn: &Connection| -> String {
            conn.query_row("SELECT text FROM device_log", [], |r| r.get(0))
                .unwrap()
        };
        assert!(!is_locked(dir.path()).unwrap());
        lock(dir.path(), &pass("one")).unwrap();
        assert!(is_locked(dir.path()).unwrap());
        let bytes = std::fs::read(&db).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"a known line"));
        assert!(matches!(
            open(&db, None),
            Err(LockError::NeedsPassphrase(_))
        ));
        assert!(matches!(
            open(&db, Some(&pass("two"))),
            Err(LockError::WrongPassphrase(_))
        ));
        assert!(matches!(
            lock(dir.path(), &pass("one")),
            Err(LockError::AlreadyLocked(_))
        ));
        assert_eq!(
            read(&open(&db, Some(&pass("one"))).unwrap()),
            "a known line"
        );
        assert!(matches!(
            change_passphrase(dir.path(), &pass("wrong"), &pass("two")),
            Err(LockError::WrongPassphrase(_))
        ));
        change_passphrase(dir.path(), &pass("one"), &pass("two")).unwrap();
        assert!(matches!(
            open(&db, Some(&pass("one"))),
            Err(LockError::WrongPassphrase(_))
        ));
        assert_eq!(
            read(&open(&db, Some(&pass("two"))).unwrap()),
            "a known line"
        );
        unlock(dir.path(), &pass("two")).unwrap();
        assert!(!is_locked(dir.path()).unwrap());
        assert_eq!(read(&open(&db, None).unwrap()), "a known line");
        assert!(matches!(
            unlock(dir.path(), &pass("two")),
            Err(LockError::NotLocked(_))
        ));
    }

    #[test]
    fn a_profile_open_elsewhere_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sotto.db");
        let other = super::super::open(&db).unwrap();
        other
            .execute("INSERT INTO device_log (at_ms, text) VALUES (1, 'x')", [])
            .unwrap();
        assert!(matches!(
            lock(dir.path(), &pass("one")),
            Err(LockError::InUse(_))
        ));
        assert!(!is_locked(dir.path()).unwrap());
        drop(other);
        lock(dir.path(), &pass("one")).unwrap();
    }

    #[test]
    fn a_rewrite_left_half_done_by_a_crash_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sotto.db");
        drop(super::super::open(&db).unwrap());
        // A crash before the rename leaves a partial file beside the profile.
        std::fs::write(with_suffix(&db, "-rewrite"), b"partial").unwrap();
        assert!(!is_locked(dir.path()).unwrap());
        drop(open(&db, None).unwrap());
        lock(dir.path(), &pass("one")).unwrap();
        drop(open(&db, Some(&pass("one"))).unwrap());
        assert!(!with_suffix(&db, "-rewrite").exists());
    }
}
