//! History lines: what a conversation shows.

use super::StoreError;
use rusqlite::{Connection, params};

use super::{Conversation, ConversationKind};

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
