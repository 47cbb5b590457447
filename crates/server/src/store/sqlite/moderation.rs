//! The moderation queue (`crate::store::ModerationStore`) in
//! `moderation_reports`.

use super::*;
use crate::store::{ModerationRecord, ModerationStore};

const COLUMNS: &str =
    "SELECT id, received_day, reporter, report, resolved_day, action FROM moderation_reports";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModerationRecord> {
    Ok(ModerationRecord {
        id: to_u64(r.get(0)?),
        received_day: to_u64(r.get(1)?),
        reporter: r.get(2)?,
        report: r.get(3)?,
        resolved_day: r.get::<_, Option<i64>>(4)?.map(to_u64),
        action: r.get(5)?,
    })
}

impl ModerationStore for SqliteStore {
    async fn add_report(
        &self,
        reporter: String,
        report: Vec<u8>,
        day: UnixDay,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO moderation_reports (received_day, reporter, report) VALUES (?1, ?2, ?3)",
                params![to_i64(day), reporter, report],
            )?;
            Ok(to_u64(conn.last_insert_rowid()))
        })
        .await
    }

    async fn moderation_reports(&self) -> Result<Vec<ModerationRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{COLUMNS} ORDER BY id"))?;
            let rows = stmt.query_map([], record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn moderation_report(&self, id: u64) -> Result<Option<ModerationRecord>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .query_row(&format!("{COLUMNS} WHERE id = ?1"), [to_i64(id)], record)
                .optional()?)
        })
        .await
    }

    async fn resolve_report(
        &self,
        id: u64,
        action: String,
        day: UnixDay,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let changed = conn.execute(
                "UPDATE moderation_reports SET resolved_day = ?2, action = ?3, \
                 reporter = NULL, report = NULL WHERE id = ?1 AND resolved_day IS NULL",
                params![to_i64(id), to_i64(day), action],
            )?;
            Ok(changed == 1)
        })
        .await
    }
}
