//! Conversations and the MLS groups behind them: which group a
//! conversation sends on, and each group's state.

use super::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

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

/// The conversation's disappearing-messages timer in seconds (0: off).
pub fn conversation_timer(conn: &Connection, conversation_id: i64) -> Result<u64, StoreError> {
    let secs: i64 = conn.query_row(
        "SELECT timer_secs FROM conversations WHERE id = ?1",
        [conversation_id],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(secs).unwrap_or(0))
}

/// Sets the conversation's disappearing-messages timer (0: off).
pub fn set_conversation_timer(
    conn: &Connection,
    conversation_id: i64,
    secs: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE conversations SET timer_secs = ?2 WHERE id = ?1",
        rusqlite::params![conversation_id, i64::try_from(secs).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// A conversation as a list shows it (`sotto chat`).
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
pub struct ConversationSummary {
    pub kind: ConversationKind,
    /// The peer's username, or the group's name.
    pub name: String,
    /// Chat messages of others not shown to the user yet.
    pub unread: u64,
    /// When its newest line arrived (milliseconds since the Unix epoch; 0:
    /// none yet).
    pub last_at: u64,
    /// Its disappearing-messages timer in seconds (0: off).
    pub timer_secs: u64,
}

/// Every conversation with its unread count, the most recently active
/// first. "Unread" is what [`mark_seen`] has not marked: chat messages of
/// others, not deleted.
pub fn conversation_summaries(
    conn: &Connection,
    own: &str,
) -> Result<Vec<ConversationSummary>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT c.kind, c.name,
             (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id
                 AND m.sender != ?1 AND m.kind = 'text' AND m.mimi = 1
                 AND m.seen = 0 AND m.deleted = 0),
             (SELECT coalesce(max(received_at_ms), 0) FROM messages m
                 WHERE m.conversation_id = c.id) AS last,
             c.timer_secs
         FROM conversations c ORDER BY last DESC, c.kind, c.name",
    )?;
    let rows = stmt.query_map([own], |r| {
        Ok(ConversationSummary {
            kind: ConversationKind::parse(&r.get::<_, String>(0)?),
            name: r.get(1)?,
            unread: r.get::<_, i64>(2)?.max(0) as u64,
            last_at: r.get::<_, i64>(3)?.max(0) as u64,
            timer_secs: r.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    rows.collect()
}
