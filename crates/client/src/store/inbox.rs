//! Bookkeeping for what arrives: processed message ids (de-duplication),
//! messages held for a later epoch, failed attempts (the poison bound), and
//! the device-level warning log.

use super::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

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

/// Removes the device-log lines that contain `needle` (a notice that no
/// longer holds).
pub fn forget_device_lines(conn: &Connection, needle: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM device_log WHERE instr(text, ?1) > 0", [needle])?;
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
