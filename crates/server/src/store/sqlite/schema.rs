//! The schema: migrations in order, the pragmas every connection gets, and
//! the version check.

use super::*;

/// The schema version this code writes (`PRAGMA user_version`): one per
/// migration.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "sotto.db";

/// Migrations, in order: `MIGRATIONS[n]` takes the schema from version `n`
/// to `n + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE accounts (
    username     TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    created_day  INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id          BLOB PRIMARY KEY,
    username           TEXT NOT NULL REFERENCES accounts(username),
    certificate        BLOB NOT NULL,
    identity_signature BLOB NOT NULL,
    device_key         BLOB NOT NULL,
    created_day        INTEGER NOT NULL,
    last_seen_day      INTEGER NOT NULL
);
CREATE INDEX devices_by_username ON devices(username);
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   BLOB NOT NULL REFERENCES devices(device_id),
    key_package BLOB NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, id);
CREATE TABLE last_resort_key_packages (
    device_id   BLOB PRIMARY KEY REFERENCES devices(device_id),
    key_package BLOB NOT NULL
);
CREATE TABLE mls_groups (
    group_id        BLOB PRIMARY KEY,
    epoch           INTEGER NOT NULL,
    last_commit_id  BLOB NOT NULL,
    token_hash      BLOB NOT NULL,
    prev_token_hash BLOB
);
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    message_id BLOB NOT NULL UNIQUE,
    payload    BLOB NOT NULL
);
CREATE TABLE mailbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   BLOB NOT NULL REFERENCES devices(device_id),
    message_ref INTEGER NOT NULL REFERENCES messages(id),
    enqueued_at INTEGER NOT NULL
);
CREATE INDEX mailbox_by_device ON mailbox(device_id, seq);
CREATE INDEX mailbox_by_message ON mailbox(message_ref);
CREATE INDEX mailbox_by_age ON mailbox(enqueued_at);
",
    r"
CREATE TABLE server_keys (
    name   TEXT PRIMARY KEY,
    secret BLOB NOT NULL
);
CREATE TABLE log_entries (
    idx      INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    entry    BLOB NOT NULL
);
CREATE INDEX log_entries_by_username ON log_entries(username, idx);
ALTER TABLE devices ADD COLUMN removed_day INTEGER;
",
    // Day granularity for the mailbox, and the legal tables (`crate::legal`,
    // docs/SERVER_DATA.md).
    r"
ALTER TABLE mailbox RENAME COLUMN enqueued_at TO enqueued_day;
UPDATE mailbox SET enqueued_day = enqueued_day / 86400;
CREATE TABLE legal_requests (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    day        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    accounts   INTEGER NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL,
    signature  BLOB NOT NULL
);
CREATE TABLE canaries (
    seq       INTEGER PRIMARY KEY,
    day       INTEGER NOT NULL,
    statement TEXT NOT NULL,
    key       BLOB NOT NULL,
    signature BLOB NOT NULL
);
",
    // Invite codes for the "invite" registration policy: only a hash of
    // each code is kept, and the day it was created and used.
    r"
CREATE TABLE invites (
    code_hash   BLOB PRIMARY KEY,
    created_day INTEGER NOT NULL,
    used_day    INTEGER
);
",
    // Accepted commit ids, so that a resend after a lost answer is
    // recognised even once the group has moved on and every recipient has
    // acknowledged the commit. Kept for the retention period.
    r"
CREATE TABLE accepted_commits (
    group_id   BLOB NOT NULL,
    message_id BLOB NOT NULL,
    day        INTEGER NOT NULL,
    PRIMARY KEY (group_id, message_id)
);
CREATE INDEX accepted_commits_by_day ON accepted_commits(day);
",
    // Every message insert and acknowledgement paid for an index used only
    // by the hourly expiry sweep; mailbox entries are appended in time
    // order, so the sweep finds the expired ones as a prefix by seq instead.
    r"
DROP INDEX mailbox_by_age;
",
    // Mailbox rows name their device by a small integer instead of its
    // 16-byte id: the id was stored twice per recipient (row and index),
    // most of the per-recipient storage of a group message.
    r"
ALTER TABLE devices ADD COLUMN num INTEGER;
UPDATE devices SET num = rowid;
CREATE UNIQUE INDEX devices_by_num ON devices(num);
CREATE TABLE mailbox_by_num (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_num   INTEGER NOT NULL REFERENCES devices(num),
    message_ref  INTEGER NOT NULL REFERENCES messages(id),
    enqueued_day INTEGER NOT NULL
);
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'mailbox_by_num', seq FROM sqlite_sequence WHERE name = 'mailbox';
INSERT INTO mailbox_by_num (seq, device_num, message_ref, enqueued_day)
    SELECT m.seq, d.num, m.message_ref, m.enqueued_day
    FROM mailbox m JOIN devices d ON d.device_id = m.device_id;
DROP TABLE mailbox;
ALTER TABLE mailbox_by_num RENAME TO mailbox;
CREATE INDEX mailbox_by_device ON mailbox(device_num, seq);
CREATE INDEX mailbox_by_message ON mailbox(message_ref);
",
    // The last day each group had an accepted commit or message, so that
    // the expiry sweep can delete groups nobody used for the retention
    // period. Groups from before this migration count as active on the
    // day of the upgrade (the one place a backend reads the clock: their
    // real last day was never recorded), so none expires before a full
    // retention period has passed.
    r"
ALTER TABLE mls_groups ADD COLUMN active_day INTEGER NOT NULL DEFAULT 0;
UPDATE mls_groups SET active_day = CAST(strftime('%s', 'now') AS INTEGER) / 86400;
CREATE INDEX mls_groups_by_active_day ON mls_groups(active_day);
",
    // Missed-messages notices (`MailboxStore::enqueue`): a notice is a
    // queued payload like any other (so it is delivered, acknowledged and
    // expired with the mailbox); this row marks the payload as a notice for
    // one device, so that later losses update it and the cap does not count
    // it. Its group and counts are in the payload: no column pairs a device
    // with a group. It goes with its payload (ON DELETE CASCADE).
    r"
CREATE TABLE missed (
    message_ref INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    device_num  INTEGER NOT NULL
);
CREATE INDEX missed_by_device ON missed(device_num);
",
    // Disappearing messages: the sender's coarse bucket of when the message
    // may be deleted though undelivered (`SendMessage.expires_at`); NULL
    // for everything else. The sweep finds them by this index.
    r"
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
CREATE INDEX messages_by_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;
",
    // Third-party auditors' countersignatures of tree heads (`LogStore::
    // add_countersignature`): the newest few per auditor, served to
    // clients that require an auditor.
    r"
CREATE TABLE countersignatures (
    auditor_key      BLOB NOT NULL,
    tree_size        INTEGER NOT NULL,
    signed_at_ms     INTEGER NOT NULL,
    countersignature BLOB NOT NULL,
    PRIMARY KEY (auditor_key, tree_size)
);
CREATE INDEX countersignatures_by_signed_at ON countersignatures(signed_at_ms);
",
    // Accounts the operator disabled (`sotto-server account disable`):
    // their devices may not log in before this day; NULL if enabled.
    r"
ALTER TABLE accounts ADD COLUMN disabled_until_day INTEGER;
",
    // Auditors countersign key-directory epochs, not key-log heads: the
    // heads' countersignatures verify no more and go; the column is the
    // epoch.
    r"
DELETE FROM countersignatures;
ALTER TABLE countersignatures RENAME COLUMN tree_size TO epoch;
",
    // Message franking (`sotto_core::franking`): the server's frank of a
    // queued application message and its acceptance time (to the minute),
    // deleted with the message.
    r"
ALTER TABLE messages ADD COLUMN frank BLOB;
ALTER TABLE messages ADD COLUMN franked_at_ms INTEGER;
",
    // Abuse reports (`sotto report`, `sotto-server moderation`): what a
    // reporter chose to send, until the operator resolves it; then only the
    // day, the outcome and the action stay (counted in the transparency
    // report).
    r"
CREATE TABLE moderation_reports (
    id            INTEGER PRIMARY KEY,
    received_day  INTEGER NOT NULL,
    reporter      TEXT,
    report        BLOB,
    resolved_day  INTEGER,
    action        TEXT
);
",
    // Invite links of public groups (docs/PUBLIC_GROUPS.md): per link id,
    // its group and the latest sealed GroupInfo (opaque), until the
    // operator closes the group's links (then the GroupInfo is erased).
    r"
CREATE TABLE invite_links (
    link_id           BLOB PRIMARY KEY,
    group_id          BLOB NOT NULL,
    sealed_group_info BLOB NOT NULL,
    epoch             INTEGER NOT NULL,
    created_day       INTEGER NOT NULL,
    closed_day        INTEGER
);
CREATE INDEX invite_links_by_group ON invite_links(group_id);
",
    // Web Push (`crate::push`): the device's push endpoint, if its user
    // turned pushes on; NULL (off) by default.
    r"
ALTER TABLE devices ADD COLUMN push_endpoint TEXT;
",
];

pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    stable_plans(conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "could not enable WAL mode (got {mode})"
        )));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

/// Turns on the query planner stability guarantee. The bundled SQLite is
/// built with STAT4, which otherwise re-prepares a cached statement whenever
/// a bound value that could change its plan changes (a `LIMIT ?`, a range
/// bound): the mailbox fetch was re-parsed on every call, a sixth of the
/// server's CPU under load. Our queries have one sensible plan each.
pub(super) fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Applies the operator's database quota to one connection. SQLite never
/// sets it below the current size.
pub(super) fn set_max_pages(conn: &Connection, pages: i64) -> Result<(), StoreError> {
    let _applied: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
        row.get(0)
    })?;
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this server understands ({SCHEMA_VERSION}); \
             upgrade sotto-server"
        )));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(usize::MAX))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(index + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Reads the schema version of an existing database without changing it.
pub(crate) fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}
