//! The moderation queue (`crate::store::ModerationStore`) in
//! `moderation_reports`.

use super::*;
use crate::store::{ModerationRecord, ModerationStore};

const COLUMNS: &str =
    "SELECT id, received_day, reporter, report, resolved_day, action FROM moderation_reports";

fn record(r: &Row) -> Result<ModerationRecord, StoreError> {
    Ok(ModerationRecord {
        id: to_u64(get(r, 0)?),
        received_day: to_u64(get(r, 1)?),
        reporter: get(r, 2)?,
        report: get(r, 3)?,
        resolved_day: get::<Option<i64>>(r, 4)?.map(to_u64),
        action: get(r, 5)?,
    })
}

impl ModerationStore for PostgresStore {
    async fn add_report(
        &self,
        reporter: String,
        report: Vec<u8>,
        day: UnixDay,
    ) -> Result<u64, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let row = query_one(
                    &tx,
                    "INSERT INTO moderation_reports (received_day, reporter, report) \
                     VALUES ($1, $2, $3) RETURNING id",
                    &[&to_i64(day), &reporter, &report],
                )
                .await?;
                Ok(to_u64(get(&row, 0)?))
            })
        })
        .await
    }

    async fn moderation_reports(&self) -> Result<Vec<ModerationRecord>, StoreError> {
        let c = self.reader().await?;
        query(&c, &format!("{COLUMNS} ORDER BY id"), &[])
            .await?
            .iter()
            .map(record)
            .collect()
    }

    async fn moderation_report(&self, id: u64) -> Result<Option<ModerationRecord>, StoreError> {
        let c = self.reader().await?;
        query_opt(&c, &format!("{COLUMNS} WHERE id = $1"), &[&to_i64(id)])
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn resolve_report(
        &self,
        id: u64,
        action: String,
        day: UnixDay,
    ) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let changed = execute(
                    &tx,
                    "UPDATE moderation_reports SET resolved_day = $2, action = $3, \
                     reporter = NULL, report = NULL WHERE id = $1 AND resolved_day IS NULL",
                    &[&to_i64(id), &to_i64(day), &action],
                )
                .await?;
                Ok(changed == 1)
            })
        })
        .await
    }
}
