//! The profile's local database: account keys, conversations, history,
//! de-duplication and the outbox, beside openmls' own tables in the same
//! SQLite file. Functions take a `&Connection` so callers can run them inside
//! the transaction that also holds the MLS state change.

use rusqlite::{Connection, OptionalExtension, params};

pub use rusqlite::Error as StoreError;

const SCHEMA_VERSION: i64 = 2;

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

/// Opens (creating if needed) the profile database and runs migrations,
/// openmls' included.
pub fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        let tx = conn.transaction()?;
        if version < 1 {
            tx.execute_batch(SCHEMA)?;
        }
        tx.execute_batch(MIGRATION_2)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    openmls_sqlite_storage::SqliteStorageProvider::<crate::provider::JsonCodec, &mut Connection>::new(&mut conn)
        .run_migrations()
        .map_err(|e| StoreError::ToSqlConversionFailure(Box::new(e)))?;
    Ok(conn)
}

/// The row of the `profile` table.
pub struct ProfileRow {
    pub username: String,
    pub server_url: String,
    pub identity_secret: Vec<u8>,
    pub device_id: Vec<u8>,
    pub device_secret: Vec<u8>,
    pub log_key: Vec<u8>,
}

impl std::fmt::Debug for ProfileRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileRow")
            .field("username", &self.username)
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
}

pub fn load_profile(conn: &Connection) -> Result<Option<ProfileRow>, StoreError> {
    conn.query_row(
        "SELECT username, server_url, identity_secret, device_id, device_secret, log_key
         FROM profile",
        [],
        |r| {
            Ok(ProfileRow {
                username: r.get(0)?,
                server_url: r.get(1)?,
                identity_secret: r.get(2)?,
                device_id: r.get(3)?,
                device_secret: r.get(4)?,
                log_key: r.get(5)?,
            })
        },
    )
    .optional()
}

pub fn save_profile(conn: &Connection, row: &ProfileRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO profile (id, username, server_url, identity_secret, device_id, device_secret, log_key)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            row.username,
            row.server_url,
            row.identity_secret,
            row.device_id,
            row.device_secret,
            row.log_key
        ],
    )?;
    Ok(())
}

/// What this device knows of another account's identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub identity_key: Vec<u8>,
    pub verified: bool,
}

/// Points the profile at another server URL.
pub fn set_server_url(conn: &Connection, url: &str) -> Result<(), StoreError> {
    conn.execute("UPDATE profile SET server_url = ?1", [url])?;
    Ok(())
}

pub fn contact(conn: &Connection, username: &str) -> Result<Option<Contact>, StoreError> {
    conn.query_row(
        "SELECT identity_key, verified FROM contacts WHERE username = ?1",
        [username],
        |r| {
            Ok(Contact {
                identity_key: r.get(0)?,
                verified: r.get(1)?,
            })
        },
    )
    .optional()
}

/// Records `identity_key` for `username`; a changed key loses the
/// verified mark.
pub fn save_contact(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO contacts (username, identity_key) VALUES (?1, ?2)
         ON CONFLICT (username) DO UPDATE SET identity_key = excluded.identity_key, verified = 0
         WHERE identity_key != excluded.identity_key",
        params![username, identity_key],
    )?;
    Ok(())
}

pub fn set_verified(conn: &Connection, username: &str, verified: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE contacts SET verified = ?2 WHERE username = ?1",
        params![username, verified],
    )?;
    Ok(())
}

pub fn log_head(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row("SELECT head FROM log_head", [], |r| r.get(0))
        .optional()
}

pub fn save_log_head(conn: &Connection, head: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO log_head (id, head) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET head = excluded.head",
        [head],
    )?;
    Ok(())
}

/// Direct or group conversation.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "direct" {
            Self::Direct
        } else {
            Self::Group
        }
    }
}

/// A conversation as the user sees it.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
pub struct Conversation {
    #[serde(skip)]
    pub id: i64,
    pub kind: ConversationKind,
    pub name: String,
}

pub fn conversation(
    conn: &Connection,
    kind: ConversationKind,
    name: &str,
) -> Result<Option<Conversation>, StoreError> {
    conn.query_row(
        "SELECT id FROM conversations WHERE kind = ?1 AND name = ?2",
        params![kind.as_str(), name],
        |r| {
            Ok(Conversation {
                id: r.get(0)?,
                kind,
                name: name.to_owned(),
            })
        },
    )
    .optional()
}

pub fn conversation_by_id(conn: &Connection, id: i64) -> Result<Option<Conversation>, StoreError> {
    conn.query_row(
        "SELECT kind, name FROM conversations WHERE id = ?1",
        [id],
        |r| {
            Ok(Conversation {
                id,
                kind: ConversationKind::parse(&r.get::<_, String>(0)?),
                name: r.get(1)?,
            })
        },
    )
    .optional()
}

/// Finds or creates the conversation `(kind, name)`.
pub fn ensure_conversation(
    conn: &Connection,
    kind: ConversationKind,
    name: &str,
) -> Result<Conversation, StoreError> {
    if let Some(found) = conversation(conn, kind, name)? {
        return Ok(found);
    }
    conn.execute(
        "INSERT INTO conversations (kind, name) VALUES (?1, ?2)",
        params![kind.as_str(), name],
    )?;
    Ok(Conversation {
        id: conn.last_insert_rowid(),
        kind,
        name: name.to_owned(),
    })
}

/// A group name not yet used locally: `name`, else `name-2`, `name-3`, …
pub fn free_group_name(conn: &Connection, name: &str) -> Result<String, StoreError> {
    let mut candidate = name.to_owned();
    let mut n = 2;
    while conversation(conn, ConversationKind::Group, &candidate)?.is_some() {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    Ok(candidate)
}

/// Moves everything of conversation `from` (its groups and history) into
/// `into`, then deletes `from`.
pub fn merge_conversation(conn: &Connection, from: i64, into: i64) -> Result<(), StoreError> {
    if from == into {
        return Ok(());
    }
    conn.execute(
        "UPDATE groups SET conversation_id = ?2 WHERE conversation_id = ?1",
        params![from, into],
    )?;
    conn.execute(
        "UPDATE messages SET conversation_id = ?2 WHERE conversation_id = ?1",
        params![from, into],
    )?;
    conn.execute("DELETE FROM conversations WHERE id = ?1", [from])?;
    Ok(())
}

pub fn all_conversations(
    conn: &Connection,
    kind: ConversationKind,
) -> Result<Vec<Conversation>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, name FROM conversations WHERE kind = ?1 ORDER BY name")?;
    let rows = stmt.query_map([kind.as_str()], |r| {
        Ok(Conversation {
            id: r.get(0)?,
            kind,
            name: r.get(1)?,
        })
    })?;
    rows.collect()
}

/// Local state of an MLS group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GroupState {
    Active,
    /// This device asked to leave.
    Left,
    /// Another member removed this device.
    Removed,
    /// This device refused a change to the group (a member whose key is not
    /// in the transparency log, or a withheld commit) and stopped using it.
    Refused,
}

impl GroupState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Left => "left",
            Self::Removed => "removed",
            Self::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "left" => Self::Left,
            "refused" => Self::Refused,
            _ => Self::Removed,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GroupRow {
    pub group_id: Vec<u8>,
    pub conversation_id: Option<i64>,
    pub state: GroupState,
}

pub fn insert_group(
    conn: &Connection,
    group_id: &[u8],
    conversation_id: Option<i64>,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO groups (group_id, conversation_id, state) VALUES (?1, ?2, 'active')
         ON CONFLICT (group_id) DO UPDATE SET conversation_id = excluded.conversation_id, state = 'active'",
        params![group_id, conversation_id],
    )?;
    Ok(())
}

pub fn group(conn: &Connection, group_id: &[u8]) -> Result<Option<GroupRow>, StoreError> {
    conn.query_row(
        "SELECT conversation_id, state FROM groups WHERE group_id = ?1",
        [group_id],
        |r| {
            Ok(GroupRow {
                group_id: group_id.to_vec(),
                conversation_id: r.get(0)?,
                state: GroupState::parse(&r.get::<_, String>(1)?),
            })
        },
    )
    .optional()
}

pub fn set_group_conversation(
    conn: &Connection,
    group_id: &[u8],
    conversation_id: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE groups SET conversation_id = ?2 WHERE group_id = ?1",
        params![group_id, conversation_id],
    )?;
    Ok(())
}

pub fn set_group_state(
    conn: &Connection,
    group_id: &[u8],
    state: GroupState,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE groups SET state = ?2 WHERE group_id = ?1",
        params![group_id, state.as_str()],
    )?;
    Ok(())
}

/// The active groups of a conversation, smallest group id first.
pub fn active_groups_of(
    conn: &Connection,
    conversation_id: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT group_id FROM groups WHERE conversation_id = ?1 AND state = 'active' ORDER BY group_id",
    )?;
    let rows = stmt.query_map([conversation_id], |r| r.get(0))?;
    rows.collect()
}

/// Every group of a conversation, whatever its state.
pub fn groups_of(conn: &Connection, conversation_id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare("SELECT group_id FROM groups WHERE conversation_id = ?1")?;
    let rows = stmt.query_map([conversation_id], |r| r.get(0))?;
    rows.collect()
}

/// Counts an application message dropped because a commit this device had
/// already merged removed its sender.
pub fn count_from_former_member(conn: &Connection, group_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE groups SET dropped_from_former_members = dropped_from_former_members + 1 WHERE group_id = ?1",
        [group_id],
    )?;
    Ok(())
}

/// How many messages from removed members were dropped in a group.
pub fn dropped_from_former_members(conn: &Connection, group_id: &[u8]) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT dropped_from_former_members FROM groups WHERE group_id = ?1",
        [group_id],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|n| n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// At most this many messages are held per group; older ones make room.
pub const MAX_HELD_PER_GROUP: i64 = 64;
/// Held messages older than this are dropped: what they waited for never came.
pub const MAX_HELD_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Holds a message framed for a later epoch of its group (see `held`).
pub fn hold(
    conn: &Connection,
    message_id: &[u8],
    group_id: &[u8],
    epoch: u64,
    payload: &[u8],
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO held (message_id, group_id, epoch, payload, held_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        params![
            message_id,
            group_id,
            i64::try_from(epoch).unwrap_or(i64::MAX),
            payload,
            i64::try_from(now_ms).unwrap_or(i64::MAX)
        ],
    )?;
    conn.execute(
        "DELETE FROM held WHERE group_id = ?1 AND message_id NOT IN
           (SELECT message_id FROM held WHERE group_id = ?1 ORDER BY held_at_ms DESC, rowid DESC LIMIT ?2)",
        params![group_id, MAX_HELD_PER_GROUP],
    )?;
    let cutoff = now_ms.saturating_sub(MAX_HELD_AGE_MS);
    conn.execute(
        "DELETE FROM held WHERE held_at_ms < ?1",
        [i64::try_from(cutoff).unwrap_or(0)],
    )?;
    Ok(())
}

/// A held message: (message id, MLS payload).
pub type HeldMessage = (Vec<u8>, Vec<u8>);

/// Held messages of `group_id` framed at or before `epoch`, in arrival
/// order.
pub fn held_up_to(
    conn: &Connection,
    group_id: &[u8],
    epoch: u64,
) -> Result<Vec<HeldMessage>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT message_id, payload FROM held WHERE group_id = ?1 AND epoch <= ?2 ORDER BY rowid",
    )?;
    let rows = stmt.query_map(
        params![group_id, i64::try_from(epoch).unwrap_or(i64::MAX)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    rows.collect()
}

pub fn remove_held(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM held WHERE message_id = ?1", [message_id])?;
    Ok(())
}

/// Records one more failed attempt at a delivery; returns the count.
pub fn count_attempt(conn: &Connection, message_id: &[u8]) -> Result<u32, StoreError> {
    conn.query_row(
        "INSERT INTO delivery_attempts (message_id, attempts) VALUES (?1, 1)
         ON CONFLICT (message_id) DO UPDATE SET attempts = attempts + 1
         RETURNING attempts",
        [message_id],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub fn forget_attempts(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM delivery_attempts WHERE message_id = ?1",
        [message_id],
    )?;
    Ok(())
}

/// Adds a line to the device-level log (warnings that belong to no known
/// conversation).
pub fn log_device_warning(conn: &Connection, text: &str, now_ms: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO device_log (at_ms, text) VALUES (?1, ?2)",
        params![i64::try_from(now_ms).unwrap_or(i64::MAX), text],
    )?;
    Ok(())
}

/// The device-level log, oldest first: (milliseconds since the epoch, text).
pub fn device_log(conn: &Connection) -> Result<Vec<(u64, String)>, StoreError> {
    let mut stmt = conn.prepare("SELECT at_ms, text FROM device_log ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
    })?;
    rows.collect()
}

/// The active group of a conversation. For direct conversations with several
/// groups, both sides pick the same one: the smallest group id.
pub fn active_group(
    conn: &Connection,
    conversation_id: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT group_id FROM groups WHERE conversation_id = ?1 AND state = 'active' ORDER BY group_id LIMIT 1",
        [conversation_id],
        |r| r.get(0),
    )
    .optional()
}

pub fn active_groups(conn: &Connection) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare("SELECT group_id FROM groups WHERE state = 'active'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// One line of a conversation's history.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
pub struct HistoryEntry {
    /// Hex message id.
    pub id: String,
    /// The peer for direct conversations, the group name otherwise.
    pub conversation: String,
    pub conversation_kind: ConversationKind,
    /// Username of the author; `system` lines are about the conversation.
    pub sender: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    pub text: String,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Text,
    System,
}

/// A history line to record.
#[derive(Debug)]
pub struct NewMessage<'a> {
    pub id: &'a [u8],
    pub sender: &'a str,
    pub kind: EntryKind,
    pub text: &'a str,
    pub sent_at_ms: u64,
}

/// Records a history line; `None` if a line with that id exists already.
pub fn insert_message(
    conn: &Connection,
    conversation: &Conversation,
    message: &NewMessage<'_>,
    received_at_ms: u64,
) -> Result<Option<HistoryEntry>, StoreError> {
    let NewMessage {
        id,
        sender,
        kind,
        text,
        sent_at_ms,
    } = *message;
    let kind_str = match kind {
        EntryKind::Text => "text",
        EntryKind::System => "system",
    };
    let inserted = conn.execute(
        "INSERT INTO messages (id, conversation_id, sender, kind, body, sent_at_ms, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        params![
            id,
            conversation.id,
            sender,
            kind_str,
            text,
            sent_at_ms as i64,
            received_at_ms as i64
        ],
    )?;
    Ok((inserted == 1).then(|| HistoryEntry {
        id: hex::encode(id),
        conversation: conversation.name.clone(),
        conversation_kind: conversation.kind,
        sender: sender.to_owned(),
        kind,
        text: text.to_owned(),
        sent_at: sent_at_ms,
    }))
}

pub fn history(
    conn: &Connection,
    conversation: &Conversation,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, sender, kind, body, sent_at_ms FROM messages WHERE conversation_id = ?1
         ORDER BY received_at_ms, rowid",
    )?;
    let rows = stmt.query_map([conversation.id], |r| {
        Ok(HistoryEntry {
            id: hex::encode(r.get::<_, Vec<u8>>(0)?),
            conversation: conversation.name.clone(),
            conversation_kind: conversation.kind,
            sender: r.get(1)?,
            kind: if r.get::<_, String>(2)? == "system" {
                EntryKind::System
            } else {
                EntryKind::Text
            },
            text: r.get(3)?,
            sent_at: r.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

/// Takes a message out of history (one the server refused to queue).
pub fn delete_message(conn: &Connection, id: &[u8]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM messages WHERE id = ?1", [id])?;
    Ok(())
}

pub fn is_processed(conn: &Connection, message_id: &[u8]) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM processed WHERE message_id = ?1",
            [message_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn mark_processed(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO processed (message_id) VALUES (?1) ON CONFLICT DO NOTHING",
        [message_id],
    )?;
    Ok(())
}

/// A frame waiting for the server's acknowledgement.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub is_commit: bool,
    /// An encoded `ClientFrame` body (request id 0).
    pub frame: Vec<u8>,
}

pub fn push_outbox(conn: &Connection, entry: &OutboxEntry) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO outbox (message_id, group_id, is_commit, frame) VALUES (?1, ?2, ?3, ?4)",
        params![
            entry.message_id,
            entry.group_id,
            entry.is_commit,
            entry.frame
        ],
    )?;
    Ok(())
}

pub fn outbox(conn: &Connection) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT message_id, group_id, is_commit, frame FROM outbox ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok(OutboxEntry {
            message_id: r.get(0)?,
            group_id: r.get(1)?,
            is_commit: r.get(2)?,
            frame: r.get(3)?,
        })
    })?;
    rows.collect()
}

pub fn remove_outbox(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM outbox WHERE message_id = ?1", [message_id])?;
    Ok(())
}
