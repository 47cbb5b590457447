//! Message franking evidence (`sotto_core::franking`), kept with each
//! received chat message: what `sotto report` sends the operator, or why
//! the message cannot be reported. Deleted with the message (expiry,
//! delete-for-everyone, the sender's own delete).

use rusqlite::{Connection, OptionalExtension as _, params};
use sotto_core::franking::AbuseReport;
use sotto_proto::Message as _;

use super::StoreError;

/// Version 11: franking evidence.
pub(super) const MIGRATION_11: &str = "
-- One row per received chat message: the report to send (an encoded
-- AbuseReport without reason and note) or why there is none.
CREATE TABLE IF NOT EXISTS message_franks (
    message_id BLOB PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    report BLOB,
    unreportable TEXT,
    CHECK ((report IS NULL) <> (unreportable IS NULL))
);
";

/// What this device knows about reporting one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Reportability {
    /// The report, everything checked when the message arrived.
    Reportable(Box<AbuseReport>),
    /// Why not (a `sotto_core::franking::Unreportable` code).
    Unreportable(String),
}

/// Records the evidence (or its absence) for a received chat message.
pub fn record_frank(
    conn: &Connection,
    message_id: &[u8],
    outcome: &Reportability,
) -> Result<(), StoreError> {
    let (report, unreportable) = match outcome {
        Reportability::Reportable(report) => (Some(report.encode_to_vec()), None),
        Reportability::Unreportable(why) => (None, Some(why.as_str())),
    };
    conn.execute(
        "INSERT OR IGNORE INTO message_franks (message_id, report, unreportable) VALUES (?1, ?2, ?3)",
        params![message_id, report, unreportable],
    )?;
    Ok(())
}

/// The evidence for `message_id`; `None` when this device has none (its
/// own messages, messages from before franking, system lines).
pub fn frank_of(conn: &Connection, message_id: &[u8]) -> Result<Option<Reportability>, StoreError> {
    let row: Option<(Option<Vec<u8>>, Option<String>)> = conn
        .query_row(
            "SELECT report, unreportable FROM message_franks WHERE message_id = ?1",
            [message_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(report, why)| match report {
        Some(bytes) => match AbuseReport::decode(bytes.as_slice()) {
            Ok(report) => Reportability::Reportable(Box::new(report)),
            Err(_) => Reportability::Unreportable("stored evidence is unreadable".into()),
        },
        None => Reportability::Unreportable(why.unwrap_or_default()),
    }))
}

/// Forgets the evidence of a message deleted for everyone: its text is
/// gone, so is what could report it.
pub fn forget_frank(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM message_franks WHERE message_id = ?1",
        [message_id],
    )?;
    Ok(())
}
