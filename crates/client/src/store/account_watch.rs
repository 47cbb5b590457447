//! Watching this account's own log: the entries this device knows a device
//! of the account made (`own_events`), and alerts about changes none made
//! (`account_alerts`), shown until the user acknowledges them.

use super::StoreError;
use rusqlite::{Connection, params};

/// Records an entry (encoded `LogEntry`) of this account as made by one of
/// its devices. A known entry is kept as it was first recorded.
pub fn record_own_event(
    conn: &Connection,
    account_seq: u64,
    entry: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO own_events (account_seq, entry) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![i64::try_from(account_seq).unwrap_or(i64::MAX), entry],
    )?;
    Ok(())
}

/// The entries this device knows its account's devices made, by
/// `account_seq`, oldest first.
pub fn own_events(conn: &Connection) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT account_seq, entry FROM own_events ORDER BY account_seq")?;
    let rows = stmt.query_map([], |r| {
        Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
    })?;
    rows.collect()
}

/// An alert about this account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountAlert {
    pub text: String,
    /// The device it is about, if any.
    pub device_id: Option<Vec<u8>>,
    pub raised_at_ms: u64,
    pub acknowledged: bool,
}

/// Raises an alert once per `key`; returns whether it is new.
pub fn raise_account_alert(
    conn: &Connection,
    key: &str,
    device_id: Option<&[u8]>,
    text: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO account_alerts (key, device_id, text, raised_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![
            key,
            device_id,
            text,
            i64::try_from(now_ms).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(inserted > 0)
}

/// Alerts, oldest first; only those not acknowledged unless `all`.
pub fn account_alerts(conn: &Connection, all: bool) -> Result<Vec<AccountAlert>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT text, device_id, raised_at_ms, acknowledged FROM account_alerts
         WHERE ?1 OR acknowledged = 0 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([all], |r| {
        Ok(AccountAlert {
            text: r.get(0)?,
            device_id: r.get(1)?,
            raised_at_ms: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            acknowledged: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Acknowledges every alert, or only those about `device_id`; returns how
/// many were acknowledged.
pub fn acknowledge_account_alerts(
    conn: &Connection,
    device_id: Option<&[u8]>,
) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE account_alerts SET acknowledged = 1
         WHERE acknowledged = 0 AND (?1 IS NULL OR device_id = ?1)",
        [device_id],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile made before the watch (schema version 3) gains its tables
    /// when opened, and nothing of version 3 runs twice.
    #[test]
    fn a_version_3_profile_gains_the_watch_tables() {
        let dir = std::env::temp_dir().join(format!(
            "sotto-account-watch-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sotto.db");
        super::super::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "{} DROP TABLE own_events; DROP TABLE account_alerts; PRAGMA user_version = 3;",
                super::super::UNDO_MIGRATION_5
            ))
            .unwrap();
        let conn = super::super::open(&path).unwrap();
        record_own_event(&conn, 0, b"first").unwrap();
        record_own_event(&conn, 0, b"again").unwrap();
        assert_eq!(own_events(&conn).unwrap(), [(0, b"first".to_vec())]);
        assert!(raise_account_alert(&conn, "k", Some(b"d"), "WARNING: x", 1).unwrap());
        assert!(!raise_account_alert(&conn, "k", Some(b"d"), "WARNING: x", 2).unwrap());
        assert_eq!(account_alerts(&conn, false).unwrap().len(), 1);
        assert_eq!(
            acknowledge_account_alerts(&conn, Some(b"other")).unwrap(),
            0
        );
        assert_eq!(acknowledge_account_alerts(&conn, Some(b"d")).unwrap(), 1);
        assert!(account_alerts(&conn, false).unwrap().is_empty());
        assert!(account_alerts(&conn, true).unwrap()[0].acknowledged);
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
