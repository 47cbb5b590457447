//! History lines: what a conversation shows. Chat messages (MIMI content,
//! `mimi = 1`) are keyed by their MIMI message id and carry what was done
//! to them: the message they reply to, earlier versions (`message_versions`),
//! reactions (`reactions`, one per account) and whether they were deleted
//! (their text then is gone from every table).

use super::StoreError;
use rusqlite::{Connection, OptionalExtension as _, params};
use std::collections::BTreeMap;

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
    /// Replies, edits, deletes and reactions (empty for system lines).
    #[serde(flatten)]
    pub chat: ChatState,
}

/// What was done to a chat message.
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize)]
pub struct ChatState {
    /// Hex id of the message this one replies to.
    pub reply_to: Option<String>,
    /// That message as this device has it, if it does (and in the same
    /// conversation).
    pub quoted: Option<Quoted>,
    /// Emoji → usernames that reacted with it (one reaction per account).
    pub reactions: BTreeMap<String, Vec<String>>,
    /// The sender changed the text; `versions` holds every version.
    pub edited: bool,
    /// The sender deleted the message for everyone: its text is gone.
    pub deleted: bool,
    /// Every version of an edited message, oldest first (its current text
    /// last); empty unless `edited`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Version>,
    /// Disappearing messages: when this message is deleted from this
    /// device (milliseconds since the Unix epoch); `None`: never.
    pub expires_at: Option<u64>,
    /// This account's own messages: how far each other member got
    /// (`delivered` or `read`), as their receipts said.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub receipts: BTreeMap<String, ReceiptState>,
    /// The file this message carries (`sotto save ID PATH` fetches it).
    pub attachment: Option<super::AttachmentInfo>,
}

/// How far a member got with a message.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptState {
    Delivered,
    Read,
}

impl ReceiptState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }
}

/// The message a reply quotes.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
pub struct Quoted {
    pub sender: String,
    /// Its current text; empty if deleted.
    pub text: String,
    pub deleted: bool,
}

/// One version of an edited message.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
pub struct Version {
    /// Hex MIMI id of the message that set this text (the first version's
    /// is the message's own id).
    pub id: String,
    pub text: String,
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
        chat: ChatState::default(),
    }))
}

pub fn history(
    conn: &Connection,
    conversation: &Conversation,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, sender, kind, body, sent_at_ms, mimi, reply_to, edited, deleted, expires_at_ms
         FROM messages WHERE conversation_id = ?1 ORDER BY received_at_ms, rowid",
    )?;
    let rows = stmt.query_map([conversation.id], |r| row_of(r, conversation))?;
    let mut entries = Vec::new();
    for row in rows {
        let (entry, raw) = row?;
        entries.push(with_chat_state(conn, conversation, entry, &raw)?);
    }
    Ok(entries)
}

/// A chat message's columns beyond the line itself.
struct RawChat {
    id: Vec<u8>,
    mimi: bool,
    reply_to: Option<Vec<u8>>,
    edited: bool,
    deleted: bool,
}

fn row_of(
    r: &rusqlite::Row<'_>,
    conversation: &Conversation,
) -> rusqlite::Result<(HistoryEntry, RawChat)> {
    let id: Vec<u8> = r.get(0)?;
    let entry = HistoryEntry {
        id: hex::encode(&id),
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
        chat: ChatState {
            expires_at: r.get::<_, Option<i64>>(9)?.map(|at| at.max(0) as u64),
            ..ChatState::default()
        },
    };
    let raw = RawChat {
        id,
        mimi: r.get(5)?,
        reply_to: r.get(6)?,
        edited: r.get(7)?,
        deleted: r.get(8)?,
    };
    Ok((entry, raw))
}

fn with_chat_state(
    conn: &Connection,
    conversation: &Conversation,
    mut entry: HistoryEntry,
    raw: &RawChat,
) -> Result<HistoryEntry, StoreError> {
    if !raw.mimi {
        return Ok(entry);
    }
    entry.chat.edited = raw.edited;
    entry.chat.deleted = raw.deleted;
    entry.chat.attachment = super::attachment_info(conn, &raw.id)?;
    if let Some(reply_to) = &raw.reply_to {
        entry.chat.reply_to = Some(hex::encode(reply_to));
        entry.chat.quoted = conn
            .query_row(
                "SELECT sender, body, deleted FROM messages
                 WHERE id = ?1 AND conversation_id = ?2 AND mimi = 1",
                params![reply_to, conversation.id],
                |r| {
                    Ok(Quoted {
                        sender: r.get(0)?,
                        text: r.get(1)?,
                        deleted: r.get(2)?,
                    })
                },
            )
            .optional()?;
    }
    let mut stmt =
        conn.prepare_cached("SELECT member, state FROM receipts WHERE message_id = ?1")?;
    for row in stmt.query_map([&raw.id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (member, state) = row?;
        let state = if state == "read" {
            ReceiptState::Read
        } else {
            ReceiptState::Delivered
        };
        entry.chat.receipts.insert(member, state);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT emoji, sender FROM reactions WHERE message_id = ?1 ORDER BY emoji, sender",
    )?;
    for row in stmt.query_map([&raw.id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
        let (emoji, sender) = row?;
        entry.chat.reactions.entry(emoji).or_default().push(sender);
    }
    if raw.edited {
        let mut stmt = conn.prepare_cached(
            "SELECT version_id, body, sent_at_ms FROM message_versions
             WHERE message_id = ?1 ORDER BY rowid",
        )?;
        for row in stmt.query_map([&raw.id], |r| {
            Ok(Version {
                id: hex::encode(r.get::<_, Vec<u8>>(0)?),
                text: r.get(1)?,
                sent_at: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })? {
            entry.chat.versions.push(row?);
        }
    }
    Ok(entry)
}

/// One history line with its chat state, as it is now.
pub fn entry(
    conn: &Connection,
    conversation: &Conversation,
    id: &[u8],
) -> Result<Option<HistoryEntry>, StoreError> {
    let found = conn
        .query_row(
            "SELECT id, sender, kind, body, sent_at_ms, mimi, reply_to, edited, deleted, expires_at_ms
             FROM messages WHERE id = ?1 AND conversation_id = ?2",
            params![id, conversation.id],
            |r| row_of(r, conversation),
        )
        .optional()?;
    found
        .map(|(entry, raw)| with_chat_state(conn, conversation, entry, &raw))
        .transpose()
}

/// Records a chat message (MIMI content) under its MIMI id; `None` if
/// one with that id exists already.
pub fn insert_chat_message(
    conn: &Connection,
    conversation: &Conversation,
    message: &NewMessage<'_>,
    reply_to: Option<&[u8]>,
    received_at_ms: u64,
) -> Result<Option<HistoryEntry>, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO messages (id, conversation_id, sender, kind, body, sent_at_ms, received_at_ms, mimi, reply_to)
         VALUES (?1, ?2, ?3, 'text', ?4, ?5, ?6, 1, ?7) ON CONFLICT (id) DO NOTHING",
        params![
            message.id,
            conversation.id,
            message.sender,
            message.text,
            message.sent_at_ms as i64,
            received_at_ms as i64,
            reply_to,
        ],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    entry(conn, conversation, message.id)
}

/// A chat message as edits, deletes and reactions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub conversation_id: i64,
    pub sender: String,
    pub deleted: bool,
}

/// The chat message with this MIMI id, if this device has it.
pub fn chat_message(conn: &Connection, id: &[u8]) -> Result<Option<ChatMessage>, StoreError> {
    conn.query_row(
        "SELECT conversation_id, sender, deleted FROM messages WHERE id = ?1 AND mimi = 1",
        [id],
        |r| {
            Ok(ChatMessage {
                conversation_id: r.get(0)?,
                sender: r.get(1)?,
                deleted: r.get(2)?,
            })
        },
    )
    .optional()
}

/// Whether `id` is an edit (a later version) of some message.
pub fn is_later_version(conn: &Connection, id: &[u8]) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM message_versions WHERE version_id = ?1 AND message_id != ?1",
            [id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Replaces a message's text with the version `version_id` set, keeping
/// the earlier ones. `false` if that version was applied already.
pub fn edit_message(
    conn: &Connection,
    message_id: &[u8],
    version_id: &[u8],
    text: &str,
    sent_at_ms: u64,
) -> Result<bool, StoreError> {
    // The first version is kept under the message's own id.
    conn.execute(
        "INSERT INTO message_versions (version_id, message_id, body, sent_at_ms)
         SELECT id, id, body, sent_at_ms FROM messages WHERE id = ?1
         ON CONFLICT (version_id) DO NOTHING",
        [message_id],
    )?;
    let inserted = conn.execute(
        "INSERT INTO message_versions (version_id, message_id, body, sent_at_ms)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (version_id) DO NOTHING",
        params![version_id, message_id, text, sent_at_ms as i64],
    )?;
    if inserted == 1 {
        conn.execute(
            "UPDATE messages SET body = ?2, edited = 1 WHERE id = ?1",
            params![message_id, text],
        )?;
    }
    Ok(inserted == 1)
}

/// Deletes a message for everyone: its text and every earlier version are
/// erased (the profile database overwrites deleted content), its reactions
/// removed; a placeholder line stays.
pub fn delete_chat_message(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM message_versions WHERE message_id = ?1",
        [message_id],
    )?;
    conn.execute("DELETE FROM reactions WHERE message_id = ?1", [message_id])?;
    super::delete_attachment(conn, message_id)?;
    conn.execute(
        "UPDATE messages SET body = '', edited = 0, deleted = 1 WHERE id = ?1",
        [message_id],
    )?;
    Ok(())
}

/// Sets `sender`'s reaction to a message (replacing an earlier one).
pub fn set_reaction(
    conn: &Connection,
    message_id: &[u8],
    sender: &str,
    reaction_id: &[u8],
    emoji: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO reactions (message_id, sender, reaction_id, emoji) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (message_id, sender)
         DO UPDATE SET reaction_id = excluded.reaction_id, emoji = excluded.emoji",
        params![message_id, sender, reaction_id, emoji],
    )?;
    Ok(())
}

/// A reaction, by the MIMI id of the message that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub message_id: Vec<u8>,
    pub sender: String,
    pub reaction_id: Vec<u8>,
    pub emoji: String,
}

fn reaction_where(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Option<Reaction>, StoreError> {
    conn.query_row(
        &format!("SELECT message_id, sender, reaction_id, emoji FROM reactions WHERE {clause}"),
        args,
        |r| {
            Ok(Reaction {
                message_id: r.get(0)?,
                sender: r.get(1)?,
                reaction_id: r.get(2)?,
                emoji: r.get(3)?,
            })
        },
    )
    .optional()
}

/// The reaction a message `reaction_id` made, if it still stands.
pub fn reaction_by_id(
    conn: &Connection,
    reaction_id: &[u8],
) -> Result<Option<Reaction>, StoreError> {
    reaction_where(conn, "reaction_id = ?1", [reaction_id])
}

/// `sender`'s reaction to a message, if any.
pub fn reaction_of(
    conn: &Connection,
    message_id: &[u8],
    sender: &str,
) -> Result<Option<Reaction>, StoreError> {
    reaction_where(
        conn,
        "message_id = ?1 AND sender = ?2",
        params![message_id, sender],
    )
}

/// Removes the reaction `reaction_id` made.
pub fn remove_reaction(conn: &Connection, reaction_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM reactions WHERE reaction_id = ?1",
        [reaction_id],
    )?;
    Ok(())
}

/// Disappearing messages: sets when a message is deleted.
pub fn set_expiry(conn: &Connection, id: &[u8], expires_at_ms: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE messages SET expires_at_ms = ?2 WHERE id = ?1",
        params![id, i64::try_from(expires_at_ms).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// Deletes every message whose time has come, with its earlier versions
/// and reactions: gone from every table, not hidden (and, with
/// `secure_delete`, overwritten in the file). Returns how many.
pub fn purge_expired(conn: &Connection, now_ms: u64) -> Result<usize, StoreError> {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    const EXPIRED: &str = "SELECT id FROM messages WHERE expires_at_ms <= ?1";
    conn.execute(
        &format!("DELETE FROM message_versions WHERE message_id IN ({EXPIRED})"),
        [now],
    )?;
    for table in ["reactions", "receipts", "pending_receipts"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE message_id IN ({EXPIRED})"),
            [now],
        )?;
    }
    conn.execute("DELETE FROM messages WHERE expires_at_ms <= ?1", [now])
}

/// Takes a message out of history (one the server refused to queue), by
/// the id of the frame that carried it: a chat message's frame id is the
/// second half of its MIMI id.
pub fn delete_message(conn: &Connection, id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM messages WHERE id = ?1 OR (mimi = 1 AND length(?1) = 16 AND substr(id, 17) = ?1
             AND NOT EXISTS (SELECT 1 FROM message_versions WHERE message_id = messages.id)
             AND NOT EXISTS (SELECT 1 FROM reactions WHERE message_id = messages.id))",
        [id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::store::{ConversationKind, ensure_conversation};

    fn temp_db() -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "sotto-history-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sotto.db");
        (dir, path)
    }

    fn text(
        id: &[u8],
        sender: &'static str,
        text: &'static str,
    ) -> (Vec<u8>, &'static str, &'static str) {
        (id.to_vec(), sender, text)
    }

    /// A version-4 profile's texts survive the migration unchanged (no MIMI
    /// id: nothing can be done to them), and chat messages work after it.
    #[test]
    fn a_version_4_profile_keeps_its_texts_and_gains_chat() {
        let (dir, path) = temp_db();
        let conn = super::super::open(&path).unwrap();
        conn.execute_batch(&format!(
            "{} PRAGMA user_version = 4;",
            super::super::UNDO_MIGRATION_5
        ))
        .unwrap();
        let conversation = ensure_conversation(&conn, ConversationKind::Direct, "bob").unwrap();
        let (id, sender, body) = text(&[7; 16], "bob", "from before");
        conn.execute(
            "INSERT INTO messages (id, conversation_id, sender, kind, body, sent_at_ms, received_at_ms)
             VALUES (?1, ?2, ?3, 'text', ?4, 1, 1)",
            params![id, conversation.id, sender, body],
        )
        .unwrap();
        drop(conn);

        let conn = super::super::open(&path).unwrap();
        let old = history(&conn, &conversation).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].text, "from before");
        assert_eq!(old[0].chat, ChatState::default());
        assert!(chat_message(&conn, &[7; 16]).unwrap().is_none());

        let chat_id = [[1u8].as_slice(), &[9; 31]].concat();
        let message = NewMessage {
            id: &chat_id,
            sender: "bob",
            kind: EntryKind::Text,
            text: "new",
            sent_at_ms: 2,
        };
        let entry = insert_chat_message(&conn, &conversation, &message, None, 2)
            .unwrap()
            .unwrap();
        assert!(!entry.chat.edited);
        assert!(edit_message(&conn, &chat_id, &[2; 32], "newer", 3).unwrap());
        assert!(
            !edit_message(&conn, &chat_id, &[2; 32], "newer", 3).unwrap(),
            "applied once"
        );
        assert!(is_later_version(&conn, &[2; 32]).unwrap());
        assert!(!is_later_version(&conn, &chat_id).unwrap());
        set_reaction(&conn, &chat_id, "ann", &[3; 32], "👍").unwrap();
        set_reaction(&conn, &chat_id, "ann", &[4; 32], "🎉").unwrap();
        let now = entry_of(&conn, &conversation, &chat_id);
        assert_eq!(now.text, "newer");
        assert_eq!(now.chat.versions.len(), 2);
        assert_eq!(now.chat.reactions.len(), 1);
        assert!(reaction_by_id(&conn, &[3; 32]).unwrap().is_none());
        delete_chat_message(&conn, &chat_id).unwrap();
        let gone = entry_of(&conn, &conversation, &chat_id);
        assert!(gone.chat.deleted && gone.text.is_empty() && gone.chat.reactions.is_empty());
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM message_versions WHERE message_id = ?1",
                [&chat_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn entry_of(conn: &Connection, conversation: &Conversation, id: &[u8]) -> HistoryEntry {
        entry(conn, conversation, id).unwrap().unwrap()
    }
}
