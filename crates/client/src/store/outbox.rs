//! The outbox: frames sent but not yet acknowledged by the server, resent
//! (with the same id) after a crash.

use super::StoreError;
use rusqlite::{Connection, params};

/// A frame waiting for the server's acknowledgement.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub is_commit: bool,
    /// An encoded `ClientFrame` body (request id 0).
    pub frame: Vec<u8>,
}

/// Queues a frame to send. Its message id is also marked processed: every
/// message goes to every member device, the sender included (sealed
/// sender), and this device's own copy must be acknowledged unread.
pub fn push_outbox(conn: &Connection, entry: &OutboxEntry) -> Result<(), StoreError> {
    super::mark_processed(conn, &entry.message_id)?;
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
