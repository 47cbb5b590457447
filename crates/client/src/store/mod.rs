//! The profile's local database: account keys, conversations, history,
//! de-duplication and the outbox, beside openmls' own tables in the same
//! SQLite file. Functions take a `&Connection` so callers can run them inside
//! the transaction that also holds the MLS state change.

//!
//! - `profile`: the account's keys, contacts, the pinned log head
//! - `conversations`: conversations and their MLS groups
//! - `history`: history lines
//! - `inbox`: de-duplication, held messages, the poison bound, warnings
//! - `outbox`: frames to resend after a crash
//! - `account_watch`: this account's known log events and its alerts

use rusqlite::Connection;

mod account_watch;
mod attachments;
mod conversations;
mod franks;
mod history;
mod inbox;
pub mod lock;
mod outbox;
#[cfg(target_arch = "wasm32")]
pub mod page_key;
mod profile;
mod receipts;

pub use account_watch::*;
pub use attachments::*;
pub use conversations::*;
pub use franks::*;
pub use history::*;
pub use inbox::*;
pub use outbox::*;
pub use profile::*;
pub use receipts::*;

pub use rusqlite::Error as StoreError;

const SCHEMA_VERSION: i64 = 11;

const SCHEMA: &str = "
CREATE TABLE profile (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    username TEXT NOT NULL,
    server_url TEXT NOT NULL,
    identity_secret BLOB NOT NULL,
    device_id BLOB NOT NULL,
    device_secret BLOB NOT NULL,
    -- The server's transparency-log key, pinned at registration or linking.
    log_key BLOB NOT NULL
);
-- The newest transparency-log head this device verified. Every later head
-- must be consistent with it.
CREATE TABLE log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head BLOB NOT NULL
);
-- Identity keys of other accounts as the log showed them when first used.
-- `verified` is set when the user compared safety numbers.
CREATE TABLE contacts (
    username TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    -- The peer's username for direct conversations, the group's name otherwise.
    name TEXT NOT NULL,
    UNIQUE (kind, name)
);
-- MLS groups and the conversation each belongs to. A direct conversation may
-- have several groups (both sides started one at once); all show as one.
CREATE TABLE groups (
    group_id BLOB PRIMARY KEY,
    conversation_id INTEGER REFERENCES conversations(id),
    state TEXT NOT NULL CHECK (state IN ('active', 'left', 'removed', 'refused'))
);
CREATE TABLE messages (
    id BLOB PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    sender TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'system')),
    body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, received_at_ms);
-- Message ids already processed, so a redelivery is acknowledged, not replayed.
CREATE TABLE processed (
    message_id BLOB PRIMARY KEY
);
-- Frames sent but not yet acknowledged by the server, resent after a crash.
CREATE TABLE outbox (
    message_id BLOB PRIMARY KEY,
    group_id BLOB NOT NULL,
    is_commit INTEGER NOT NULL,
    frame BLOB NOT NULL
);
";

/// Version 2: held messages, bounded retries, a device-level log, and a
/// count of messages dropped because their sender had been removed.
const MIGRATION_2: &str = "
-- Messages framed for a later epoch than this device's copy of their group.
-- The clear-text epoch is not authenticated, so they change nothing; they
-- wait here (bounded per group and in age) until the commits leading to that
-- epoch arrive, and are then processed.
CREATE TABLE held (
    message_id BLOB PRIMARY KEY,
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    payload BLOB NOT NULL,
    held_at_ms INTEGER NOT NULL
);
CREATE INDEX held_by_group ON held (group_id, epoch);
-- Deliveries whose processing failed for a reason that may pass (the
-- network), and how often; past a bound they are skipped as poison.
CREATE TABLE delivery_attempts (
    message_id BLOB PRIMARY KEY,
    attempts INTEGER NOT NULL
);
-- Warnings about deliveries that belong to no known conversation.
CREATE TABLE device_log (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    text TEXT NOT NULL
);
ALTER TABLE groups ADD COLUMN dropped_from_former_members INTEGER NOT NULL DEFAULT 0;
";

/// Version 3: what the profile trusts to reach its server (TLS).
const MIGRATION_3: &str = "
-- PEM of a CA the user gave with --ca-file (a self-signed server).
ALTER TABLE profile ADD COLUMN ca_pem TEXT;
-- --insecure-transport: plain http:// to a host other than loopback.
ALTER TABLE profile ADD COLUMN insecure_transport INTEGER NOT NULL DEFAULT 0;
";

/// Opens (creating if needed) the profile database and runs migrations,
/// openmls' included.
pub fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    open_keyed(path, None)
}

/// Opens the profile database, a locked one with its key (see [`lock`]).
pub(crate) fn open_keyed(
    path: &std::path::Path,
    key: Option<&lock::ProfileKey>,
) -> Result<Connection, StoreError> {
    keep_private(path)?;
    // In the browser the page's key encrypts every profile (page_key.rs).
    #[cfg(target_arch = "wasm32")]
    let mut conn = page_key::open(path)?;
    #[cfg(not(target_arch = "wasm32"))]
    let mut conn = Connection::open(path)?;
    if let Some(key) = key {
        lock::apply_key(&conn, key)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // What is deleted (a message deleted for everyone) is overwritten with
    // zeros, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        let tx = conn.transaction()?;
        if version < 1 {
            tx.execute_batch(SCHEMA)?;
        }
        if version < 2 {
            tx.execute_batch(MIGRATION_2)?;
        }
        if version < 3 {
            tx.execute_batch(MIGRATION_3)?;
        }
        if version < 4 {
            tx.execute_batch(MIGRATION_4)?;
        }
        if version < 5 {
            tx.execute_batch(MIGRATION_5)?;
        }
        if version < 6 {
            tx.execute_batch(MIGRATION_6)?;
        }
        if version < 7 {
            tx.execute_batch(MIGRATION_7)?;
        }
        if version < 8 {
            tx.execute_batch(MIGRATION_8)?;
        }
        if version < 9 {
            tx.execute_batch(MIGRATION_9)?;
        }
        if version < 10 {
            tx.execute_batch(MIGRATION_10)?;
        }
        if version < 11 {
            tx.execute_batch(franks::MIGRATION_11)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    openmls_sqlite_storage::SqliteStorageProvider::<crate::provider::JsonCodec, &mut Connection>::new(&mut conn)
        .run_migrations()
        .map_err(|e| StoreError::ToSqlConversionFailure(Box::new(e)))?;
    Ok(conn)
}

/// The profile holds the identity key, device keys, MLS secrets and the
/// history: its directory is owner-only (0700) and its files 0600. A looser
/// one is fixed, with a warning. The database file is created 0600 before
/// SQLite opens it, so its `-wal` and `-shm` files are private too.
#[cfg(unix)]
fn keep_private(db: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let fail = |e: std::io::Error| StoreError::ToSqlConversionFailure(Box::new(e));
    let fix = |path: &std::path::Path, mode: u32| -> Result<(), StoreError> {
        let current = std::fs::metadata(path).map_err(fail)?.permissions();
        if current.mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "readable by other users; making it owner-only"
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
        }
        Ok(())
    };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        fix(dir, 0o700)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)
        .map_err(fail)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if file.exists() {
            fix(&file, 0o600)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn keep_private(_db: &std::path::Path) -> Result<(), StoreError> {
    Ok(())
}

/// Creates the profile directory `dir`, owner-only.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn create_profile_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// In the browser a profile is a database name in SQLite's own file
/// system (memory, or OPFS once installed): there is no directory to make.
#[cfg(target_arch = "wasm32")]
pub(crate) fn create_profile_dir(_dir: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Whether the database file `db` exists.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn exists(db: &std::path::Path) -> bool {
    db.exists()
}

/// Whether the database `db` exists in SQLite's file system: it opens
/// without being created.
#[cfg(target_arch = "wasm32")]
pub(crate) fn exists(db: &std::path::Path) -> bool {
    Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).is_ok()
}

/// Version 4: watching this account's own log (`account_watch`).
const MIGRATION_4: &str = "
-- The account's log entries this device knows a device of the account
-- made: its own, the history it was handed when linked, and entries a
-- trusted device of the account vouched for. Anything else is an alert.
CREATE TABLE own_events (
    account_seq INTEGER PRIMARY KEY,
    entry BLOB NOT NULL
);
-- Changes to this account that no device of it made, shown by every
-- command until the user acknowledges them.
CREATE TABLE account_alerts (
    key TEXT PRIMARY KEY,
    device_id BLOB,
    text TEXT NOT NULL,
    raised_at_ms INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0
);
";

/// Version 5: chat content in the MIMI format (`sotto_core::mimi`):
/// replies, edits, deletes and reactions. Rows from before keep `mimi = 0`
/// (their ids are frame ids, not MIMI ids) and show as before.
const MIGRATION_5: &str = "
-- A chat message whose id is its MIMI message id: it can be replied to,
-- edited, deleted and reacted to.
ALTER TABLE messages ADD COLUMN mimi INTEGER NOT NULL DEFAULT 0;
-- The MIMI id of the message this one replies to.
ALTER TABLE messages ADD COLUMN reply_to BLOB;
ALTER TABLE messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
-- Deleted for everyone by its sender: body is empty.
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
-- Every version of an edited message, the first under the message's own id,
-- each later one under the MIMI id of the edit that set it.
CREATE TABLE message_versions (
    version_id BLOB PRIMARY KEY,
    message_id BLOB NOT NULL REFERENCES messages(id),
    body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL
);
CREATE INDEX message_versions_by_message ON message_versions (message_id);
-- One reaction per account and message, by the MIMI id of the message
-- that made it (an unlike names that id).
CREATE TABLE reactions (
    message_id BLOB NOT NULL REFERENCES messages(id),
    sender TEXT NOT NULL,
    reaction_id BLOB NOT NULL UNIQUE,
    emoji TEXT NOT NULL,
    PRIMARY KEY (message_id, sender)
);
";

/// Takes a profile back from version 5 to 4, for tests of older profiles
/// (undoing version 7 first; version 6 only adds a table those tests drop
/// themselves if they care).
#[cfg(test)]
pub(crate) const UNDO_MIGRATION_5: &str = "
DROP INDEX messages_by_expiry;
ALTER TABLE messages DROP COLUMN expires_at_ms;
ALTER TABLE messages DROP COLUMN seen;
ALTER TABLE conversations DROP COLUMN timer_secs;
DROP TABLE receipts;
DROP TABLE pending_receipts;
DROP TABLE receipt_clock;
DROP TABLE settings;
DROP TABLE message_versions;
DROP TABLE reactions;
ALTER TABLE messages DROP COLUMN mimi;
ALTER TABLE messages DROP COLUMN reply_to;
ALTER TABLE messages DROP COLUMN edited;
ALTER TABLE messages DROP COLUMN deleted;
";

/// Version 6: identity rotation.
const MIGRATION_6: &str = "
-- Identity keys this device holds besides the profile's: the one it is
-- rotating the account to, until the log shows the rotation (so a crash
-- between the server's commit and this device's cannot lose it). Adopted
-- as the profile's identity once the account's log names it.
CREATE TABLE IF NOT EXISTS spare_identities (
    public_key BLOB PRIMARY KEY,
    secret BLOB NOT NULL
);
";

/// Version 7: disappearing messages.
const MIGRATION_7: &str = "
-- The conversation's disappearing-messages timer in seconds; 0: off.
ALTER TABLE conversations ADD COLUMN timer_secs INTEGER NOT NULL DEFAULT 0;
-- When the message disappears (milliseconds since the Unix epoch): it is
-- deleted from every table then, not hidden.
ALTER TABLE messages ADD COLUMN expires_at_ms INTEGER;
CREATE INDEX messages_by_expiry ON messages (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
-- Receipts other members sent for this account's messages: the furthest
-- each member got ('read' replaces 'delivered').
CREATE TABLE receipts (
    message_id BLOB NOT NULL,
    member TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('delivered', 'read')),
    PRIMARY KEY (message_id, member)
);
-- Receipts this device owes, sent in one batch per group once due.
CREATE TABLE pending_receipts (
    message_id BLOB NOT NULL,
    group_id BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('delivered', 'read')),
    due_at_ms INTEGER NOT NULL,
    PRIMARY KEY (message_id, state)
);
CREATE INDEX pending_receipts_by_due ON pending_receipts (due_at_ms);
-- When each group was last sent a batch of receipts (the rate limit).
CREATE TABLE receipt_clock (
    group_id BLOB PRIMARY KEY,
    last_sent_ms INTEGER NOT NULL
);
-- This device showed the message to its user (a read receipt was queued
-- if read receipts are on).
ALTER TABLE messages ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
-- Profile settings: `read_receipts` ('on' or 'off'; default on).
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 8: auditors this profile requires.
const MIGRATION_8: &str = "
-- Third-party auditors this profile requires (`sotto trust-auditor`): a
-- key-log head the server presents is accepted only with a countersignature
-- by each, made at most `max_lag_ms` ago.
CREATE TABLE IF NOT EXISTS trusted_auditors (
    auditor_key BLOB PRIMARY KEY,
    max_lag_ms INTEGER NOT NULL
);
";

/// Version 9: attachments.
const MIGRATION_9: &str = "
-- The file a chat message carries (a MIMI external part): its name, type
-- and encrypted size as shown, and how to fetch and open it (the blob URL
-- with its fetch key, the AES-128-GCM key and nonce, the SHA-256 of the
-- ciphertext). Gone with its message.
CREATE TABLE IF NOT EXISTS attachments (
    message_id BLOB PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    url TEXT NOT NULL,
    key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    content_hash BLOB NOT NULL
);
";

/// Version 10: the key directory's newest signed epoch this device verified
/// a lookup against (`keys::KeyLog::check_lookup`).
const MIGRATION_10: &str = "
-- Every later epoch must be at least as new, with the same VRF key.
CREATE TABLE IF NOT EXISTS directory_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BLOB NOT NULL
);
";
