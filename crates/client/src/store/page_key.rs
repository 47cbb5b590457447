//! The browser's profile key: in a page the whole profile database —
//! account keys, openmls' secrets, history, indexes, free pages — is
//! encrypted at rest by SQLite3 Multiple Ciphers (ChaCha20-Poly1305 per
//! page, the `sqlite3mc` build of the SQLite that rusqlite links in wasm),
//! under a random 256-bit key.
//!
//! The page keeps that key wrapped by a non-extractable WebCrypto key in
//! IndexedDB (web/src/worker.js), unwraps it once at start and installs it
//! here; from then on every connection to the profile opens through the
//! cipher VFS with it. A process-wide setting, like the VFS it goes with:
//! the worker that holds the profile has one profile and one key.
//!
//! What it protects: the profile's files in the Origin Private File System
//! read on their own (a copy, a backup, a sync of OPFS) give neither keys
//! nor messages, and no script can export the wrapping key. What it does
//! not: code running in the page's origin can ask WebCrypto to unwrap, and
//! the browser keeps the wrapping key's bytes in its own profile on disk.

use super::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::cell::RefCell;
use zeroize::Zeroizing;

/// SQLite3 Multiple Ciphers' shim over the OPFS VFS the page installs
/// (crates/web, `openStorage`): it is created on first use of the name.
const CIPHER_VFS: &str = "multipleciphers-opfs-sahpool";
const KEY_LEN: usize = 32;

thread_local! {
    static PAGE_KEY: RefCell<Option<Zeroizing<[u8; KEY_LEN]>>> = const { RefCell::new(None) };
}

/// Installs the profile key; every later open of a profile uses it.
pub fn install(key: &[u8]) -> Result<(), StoreError> {
    let key: [u8; KEY_LEN] = key.try_into().map_err(|_| {
        misuse(format!(
            "a profile key is {KEY_LEN} bytes, not {}",
            key.len()
        ))
    })?;
    PAGE_KEY.with(|slot| *slot.borrow_mut() = Some(Zeroizing::new(key)));
    Ok(())
}

/// Opens `path` through the cipher VFS under the installed key and proves
/// the key right; without an installed key, opens it plain (the VFS the
/// page made default).
pub(crate) fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    let key = PAGE_KEY.with(|slot| slot.borrow().clone());
    let Some(key) = key else {
        return Connection::open(path);
    };
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), CIPHER_VFS)?;
    // SQLCipher's raw-key form, which SQLite3 Multiple Ciphers takes as the
    // key itself (no key derivation: it is random, not a passphrase).
    let mut literal = Zeroizing::new(String::with_capacity(3 + 2 * KEY_LEN));
    literal.push_str("x'");
    literal.push_str(&Zeroizing::new(hex::encode(key.as_ref())));
    literal.push('\'');
    conn.pragma_update(None, "key", literal.as_str())?;
    // A wrong key, or a plain profile an earlier build left, fails here.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => misuse(
            "this browser's Sotto profile does not open with its key: the key's store \
             (IndexedDB) was cleared without the profile, or the profile was made by an \
             earlier, unencrypted build. Clearing the site's data starts afresh (the \
             account is lost unless another device links this one again)."
                .into(),
        ),
        _ => e,
    })?;
    Ok(conn)
}

fn misuse(reason: String) -> StoreError {
    StoreError::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
        Some(reason),
    )
}
