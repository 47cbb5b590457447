//! The PostgreSQL schema: migrations in order, recorded in
//! `schema_migrations` (one row per applied version), applied under an
//! advisory lock so that nodes starting together migrate once.
//!
//! The tables and columns are the SQLite backend's as of its latest
//! migration (docs/SERVER_DATA.md lists both), with PostgreSQL types, plus
//! `mailbox_seq`: the counter mailbox seqs come from (SQLite's
//! `AUTOINCREMENT`), a row updated in the writing transaction so that seqs
//! are never reused and a rolled-back write burns none.

use super::*;

/// Migrations, in order: `MIGRATIONS[n]` takes the schema from version `n`
/// to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE accounts (
    username     text PRIMARY KEY,
    identity_key bytea NOT NULL,
    created_day  bigint NOT NULL
);
CREATE TABLE devices (
    device_id          bytea PRIMARY KEY,
    num                bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    username           text NOT NULL REFERENCES accounts(username),
    certificate        bytea NOT NULL,
    identity_signature bytea NOT NULL,
    device_key         bytea NOT NULL,
    created_day        bigint NOT NULL,
    last_seen_day      bigint NOT NULL,
    removed_day        bigint
);
CREATE INDEX devices_by_username ON devices(username, num);
CREATE TABLE key_packages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   bytea NOT NULL REFERENCES devices(device_id),
    key_package bytea NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, id);
CREATE TABLE last_resort_key_packages (
    device_id   bytea PRIMARY KEY REFERENCES devices(device_id),
    key_package bytea NOT NULL
);
CREATE TABLE mls_groups (
    group_id        bytea PRIMARY KEY,
    epoch           bigint NOT NULL,
    last_commit_id  bytea NOT NULL,
    token_hash      bytea NOT NULL,
    prev_token_hash bytea,
    active_day      bigint NOT NULL
);
CREATE INDEX mls_groups_by_active_day ON mls_groups(active_day);
CREATE TABLE messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bytea NOT NULL UNIQUE,
    payload    bytea NOT NULL,
    expires_at bigint
);
CREATE INDEX messages_by_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE mailbox_seq (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last     bigint NOT NULL
);
INSERT INTO mailbox_seq (only_row, last) VALUES (true, 0);
CREATE TABLE mailbox (
    seq          bigint PRIMARY KEY,
    device_num   bigint NOT NULL REFERENCES devices(num),
    message_ref  bigint NOT NULL REFERENCES messages(id),
    enqueued_day bigint NOT NULL
);
CREATE INDEX mailbox_by_device ON mailbox(device_num, seq);
CREATE INDEX mailbox_by_message ON mailbox(message_ref);
CREATE TABLE missed (
    message_ref bigint PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    device_num  bigint NOT NULL
);
CREATE INDEX missed_by_device ON missed(device_num);
CREATE TABLE accepted_commits (
    group_id   bytea NOT NULL,
    message_id bytea NOT NULL,
    day        bigint NOT NULL,
    PRIMARY KEY (group_id, message_id)
);
CREATE INDEX accepted_commits_by_day ON accepted_commits(day);
CREATE TABLE server_keys (
    name   text PRIMARY KEY,
    secret bytea NOT NULL
);
CREATE TABLE log_entries (
    idx      bigint PRIMARY KEY,
    username text NOT NULL,
    entry    bytea NOT NULL
);
CREATE INDEX log_entries_by_username ON log_entries(username, idx);
CREATE TABLE legal_requests (
    seq        bigint PRIMARY KEY,
    request_id text NOT NULL,
    day        bigint NOT NULL,
    kind       text NOT NULL,
    accounts   bigint NOT NULL,
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL,
    signature  bytea NOT NULL
);
CREATE TABLE canaries (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day       bigint NOT NULL,
    statement text NOT NULL,
    key       bytea NOT NULL,
    signature bytea NOT NULL
);
CREATE TABLE invites (
    code_hash   bytea PRIMARY KEY,
    created_day bigint NOT NULL,
    used_day    bigint
);
CREATE TABLE countersignatures (
    auditor_key      bytea NOT NULL,
    tree_size        bigint NOT NULL,
    signed_at_ms     bigint NOT NULL,
    countersignature bytea NOT NULL,
    PRIMARY KEY (auditor_key, tree_size)
);
CREATE INDEX countersignatures_by_signed_at ON countersignatures(signed_at_ms);
",
    r"
-- The operator disabled the account until this day (exclusive), or until
-- enabled again (the largest bigint); NULL: not disabled.
ALTER TABLE accounts ADD COLUMN disabled_until_day bigint;
",
    r"
-- Auditors countersign key-directory epochs, not key-log heads: the heads'
-- countersignatures verify no more and go; the column is the epoch.
DELETE FROM countersignatures;
ALTER TABLE countersignatures RENAME COLUMN tree_size TO epoch;
",
    r"
-- The key directory's publishes as the log writer recorded them, which
-- every node replays: the seq-th covers the log leaves below log_end, and
-- leaves the directory at this epoch and root.
CREATE TABLE directory_epochs (
    seq       bigint PRIMARY KEY,
    log_end   bigint NOT NULL,
    epoch     bigint NOT NULL,
    root_hash bytea NOT NULL
);
-- Global rate limits: hits per key (a keyed hash of what is limited: an
-- address, an account) in the current window, for every node at once.
CREATE TABLE rate_windows (
    key          bytea PRIMARY KEY,
    window_start bigint NOT NULL,
    expires_at   bigint NOT NULL,
    hits         bigint NOT NULL
);
CREATE INDEX rate_windows_by_expiry ON rate_windows(expires_at);
",
    // Message franking (`sotto_core::franking`): the server's frank of a
    // queued application message and its acceptance time (to the minute),
    // deleted with the message.
    r"
ALTER TABLE messages ADD COLUMN frank bytea;
ALTER TABLE messages ADD COLUMN franked_at_ms bigint;
",
    // Abuse reports (`sotto report`, `sotto-server moderation`): what a
    // reporter chose to send, until the operator resolves it; then only the
    // day, the outcome and the action stay.
    r"
CREATE TABLE moderation_reports (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_day  bigint NOT NULL,
    reporter      text,
    report        bytea,
    resolved_day  bigint,
    action        text
);
",
    // Attachments (`crate::blobs::postgres`), so that every node serves
    // every blob: the record the file store keeps as `<id>.meta`, and the
    // ciphertext in rows of at most a MiB, deleted with their blob. Ciphertext
    // does not compress: stored out of line without trying.
    r#"
CREATE TABLE blobs (
    id              bytea PRIMARY KEY,
    length          bigint NOT NULL,
    "offset"        bigint NOT NULL,
    expires_at      bigint NOT NULL,
    upload_key_hash bytea NOT NULL,
    fetch_key_hash  bytea NOT NULL,
    fetches_left    integer NOT NULL
);
CREATE INDEX blobs_by_expiry ON blobs(expires_at);
CREATE TABLE blob_chunks (
    blob_id      bytea NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
    chunk_offset bigint NOT NULL,
    bytes        bytea NOT NULL,
    PRIMARY KEY (blob_id, chunk_offset)
);
ALTER TABLE blob_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
"#,
    // Invite links of public groups (docs/PUBLIC_GROUPS.md): per link id,
    // its group and the latest sealed GroupInfo (opaque), until the
    // operator closes the group's links (then the GroupInfo is erased).
    r"
CREATE TABLE invite_links (
    link_id           bytea PRIMARY KEY,
    group_id          bytea NOT NULL,
    sealed_group_info bytea NOT NULL,
    epoch             bigint NOT NULL,
    created_day       bigint NOT NULL,
    closed_day        bigint
);
CREATE INDEX invite_links_by_group ON invite_links(group_id);
",
    // Web Push (`crate::push`): the device's push endpoint, if its user
    // turned pushes on; NULL (off) by default.
    r"
ALTER TABLE devices ADD COLUMN push_endpoint text;
",
];

/// The schema version this code writes: one per migration.
#[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)] // a handful of migrations
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Any number, the same in every node: the advisory lock migrations hold.
const MIGRATION_LOCK: i64 = 0x5077_0001;

/// Brings the schema up to date, in one transaction. Returns the versions
/// before and after.
pub(super) async fn migrate_client(
    client: &mut tokio_postgres::Client,
) -> Result<(i32, i32), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    integer PRIMARY KEY,\
             applied_at timestamptz NOT NULL DEFAULT now()\
         )",
    )
    .await?;
    let version: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this server understands \
             ({SCHEMA_VERSION}); upgrade sotto-server"
        )));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(usize::MAX))
    {
        tx.batch_execute(sql).await?;
        let applied = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&applied],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((version, SCHEMA_VERSION))
}

/// Refuses a database whose schema is not this version's.
pub(super) async fn check_current(c: &tokio_postgres::Client) -> Result<(), StoreError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    let version: i32 = if exists {
        c.query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?
    } else {
        0
    };
    if version != SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, this sotto-server needs {SCHEMA_VERSION}: \
             run `sotto-server migrate --store …` (or start the server on it once)"
        )));
    }
    Ok(())
}
