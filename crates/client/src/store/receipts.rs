//! Receipts: those this device owes (`pending_receipts`, sent in batches),
//! those others sent for this account's messages (`receipts`), and the
//! profile's read-receipt switch (`settings`).

use super::{ReceiptState, StoreError};
use rusqlite::{Connection, OptionalExtension as _, params};

fn ms(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// Whether this profile sends read receipts (default: yes).
pub fn read_receipts_enabled(conn: &Connection) -> Result<bool, StoreError> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'read_receipts'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(value.as_deref() != Some("off"))
}

pub fn set_read_receipts(conn: &Connection, on: bool) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('read_receipts', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [if on { "on" } else { "off" }],
    )?;
    Ok(())
}

/// Whether `username` has written a chat message in the conversation: only
/// then does it send receipts there (a stranger who starts a conversation
/// cannot ping a device and watch for receipts).
pub fn has_written(
    conn: &Connection,
    conversation_id: i64,
    username: &str,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?1 AND sender = ?2
             AND kind = 'text' AND mimi = 1)",
        params![conversation_id, username],
        |r| r.get(0),
    )
}

/// Queues a receipt for a message of `group_id`, due at `due_at_ms` or
/// with the batch already waiting for that group, whichever is first.
pub fn queue_receipt(
    conn: &Connection,
    group_id: &[u8],
    message_id: &[u8],
    state: ReceiptState,
    due_at_ms: u64,
) -> Result<(), StoreError> {
    let waiting: Option<i64> = conn.query_row(
        "SELECT min(due_at_ms) FROM pending_receipts WHERE group_id = ?1",
        [group_id],
        |r| r.get(0),
    )?;
    let due = waiting.map_or(ms(due_at_ms), |w| w.min(ms(due_at_ms)));
    conn.execute(
        "INSERT INTO pending_receipts (message_id, group_id, state, due_at_ms)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        params![message_id, group_id, state.as_str(), due],
    )?;
    Ok(())
}

/// When `group_id` was last sent a batch of receipts.
pub fn last_receipts_sent(conn: &Connection, group_id: &[u8]) -> Result<Option<u64>, StoreError> {
    let at: Option<i64> = conn
        .query_row(
            "SELECT last_sent_ms FROM receipt_clock WHERE group_id = ?1",
            [group_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(at.map(|at| u64::try_from(at).unwrap_or(0)))
}

/// Groups with receipts due at `now_ms`.
pub fn groups_with_due_receipts(
    conn: &Connection,
    now_ms: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT DISTINCT group_id FROM pending_receipts WHERE due_at_ms <= ?1")?;
    let rows = stmt.query_map([ms(now_ms)], |r| r.get(0))?;
    rows.collect()
}

/// A batch of receipts to send, by message id.
#[derive(Debug, Default)]
pub struct ReceiptBatch {
    pub delivered: Vec<Vec<u8>>,
    pub read: Vec<Vec<u8>>,
}

/// Takes up to `limit` of a group's pending receipts: deleted here, so
/// the caller sends them in the same transaction.
pub fn take_receipts(
    conn: &Connection,
    group_id: &[u8],
    limit: usize,
    now_ms: u64,
) -> Result<ReceiptBatch, StoreError> {
    let mut stmt = conn.prepare(
        "DELETE FROM pending_receipts WHERE rowid IN
             (SELECT rowid FROM pending_receipts WHERE group_id = ?1 ORDER BY rowid LIMIT ?2)
         RETURNING message_id, state",
    )?;
    let rows = stmt.query_map(
        params![group_id, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)),
    )?;
    let mut batch = ReceiptBatch::default();
    for row in rows {
        let (id, state) = row?;
        if state == "read" {
            batch.read.push(id);
        } else {
            batch.delivered.push(id);
        }
    }
    conn.execute(
        "INSERT INTO receipt_clock (group_id, last_sent_ms) VALUES (?1, ?2)
         ON CONFLICT (group_id) DO UPDATE SET last_sent_ms = excluded.last_sent_ms",
        params![group_id, ms(now_ms)],
    )?;
    Ok(batch)
}

/// Records `member`'s receipt for this account's message `message_id` in
/// conversation `conversation_id` (`own` sent it); a read receipt is never
/// taken back by a later delivered one. `false`: not such a message.
pub fn record_receipt(
    conn: &Connection,
    conversation_id: i64,
    own: &str,
    message_id: &[u8],
    member: &str,
    state: ReceiptState,
) -> Result<bool, StoreError> {
    let ours: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND conversation_id = ?2
             AND sender = ?3 AND mimi = 1)",
        params![message_id, conversation_id, own],
        |r| r.get(0),
    )?;
    if !ours || member == own {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO receipts (message_id, member, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (message_id, member) DO UPDATE SET state = 'read' WHERE excluded.state = 'read'",
        params![message_id, member, state.as_str()],
    )?;
    Ok(true)
}

/// Marks the chat messages of others in a conversation as seen; returns
/// the ids newly seen.
pub fn mark_seen(
    conn: &Connection,
    conversation_id: i64,
    own: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare(
        "UPDATE messages SET seen = 1 WHERE conversation_id = ?1 AND sender != ?2
             AND kind = 'text' AND mimi = 1 AND seen = 0 AND deleted = 0
         RETURNING id",
    )?;
    let rows = stmt.query_map(params![conversation_id, own], |r| r.get(0))?;
    rows.collect()
}
