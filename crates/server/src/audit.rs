//! `sotto-server audit`: checks a data directory's whole transparency log
//! offline, read-only.
//!
//! It reads every stored leaf in index order and runs
//! [`sotto_transparency::audit`] against a head for the root of the stored
//! bytes, signed with the stored log key: so every entry's signature, every
//! account's replay rules, and that the leaves re-encode to exactly the
//! bytes the server hashes. It then checks that the server's own tables
//! agree with the log: every account's identity key and active devices are
//! exactly what its log entries say (a device the server would let log in
//! without a log entry is a "ghost" and fails the audit).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use rusqlite::Connection;
use sotto_transparency::{
    AccountEvent, AccountState, AuditError, AuditReport, LogEntry, LogError, LogKey, MerkleLog,
};

use crate::store::sqlite::{for_each_log_record, open_read_only, read_log_key_secret};
use crate::store::{LogRecord, StoreError};

/// What a successful audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    /// The server's public log key.
    pub log_key: [u8; 32],
    /// The log's counts and root.
    pub report: AuditReport,
    /// Accounts created before the log existed: they have no entries, so
    /// clients cannot verify them.
    pub unlogged_accounts: u64,
}

/// Why an audit failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditFailure {
    /// The database could not be read.
    #[error("cannot read the database: {0}")]
    Storage(#[from] StoreError),
    /// No log key is stored.
    #[error("the database has no log key; has sotto-server ever run on this data directory?")]
    NoLogKey,
    /// The stored log key is not a key.
    #[error("the stored log key is unusable: {0}")]
    BadLogKey(LogError),
    /// The stored log key is not the one the caller expected.
    #[error("the stored log key is {found}, not the expected {expected}")]
    KeyMismatch {
        /// Hex of the stored public key.
        found: String,
        /// Hex of the expected public key.
        expected: String,
    },
    /// An index is missing from the stored log.
    #[error("log entry {index} is missing: the stored log has a gap")]
    Gap {
        /// The first missing index.
        index: u64,
    },
    /// The log itself is bad (names the first bad entry).
    #[error(transparent)]
    Log(#[from] AuditError),
    /// The server's tables disagree with its log.
    #[error("the server's database disagrees with its log: {0}")]
    StateMismatch(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Audits the log in `<data_dir>/sotto.db` without changing anything. With
/// `expected_log_key`, also checks that the stored key is that one (the key
/// clients were shown).
pub fn audit_data_dir(
    data_dir: &Path,
    expected_log_key: Option<&[u8; 32]>,
) -> Result<AuditSummary, AuditFailure> {
    let conn = open_read_only(data_dir)?;
    let secret = read_log_key_secret(&conn)?.ok_or(AuditFailure::NoLogKey)?;
    let key = LogKey::from_secret(&secret).map_err(AuditFailure::BadLogKey)?;
    if let Some(expected) = expected_log_key
        && *expected != key.public()
    {
        return Err(AuditFailure::KeyMismatch {
            found: hex::encode(key.public()),
            expected: hex::encode(expected),
        });
    }

    let mut records: Vec<LogRecord> = Vec::new();
    let mut gap = None;
    for_each_log_record(&conn, |record| {
        if gap.is_none() && record.index != records.len() as u64 {
            gap = Some(records.len() as u64);
        }
        records.push(record);
        Ok(())
    })?;
    if let Some(index) = gap {
        return Err(AuditFailure::Gap { index });
    }

    // The tree the server serves: the stored bytes, as they are.
    let mut tree = MerkleLog::new();
    for record in &records {
        tree.push(&record.entry);
    }
    // Entries up to the first one that does not even decode.
    let decoded: Vec<LogEntry> = records
        .iter()
        .map_while(|r| LogEntry::decode(r.entry.as_slice()).ok())
        .collect();
    let checked = decoded.len() as u64;
    let root = tree.root_at(checked).map_err(AuditFailure::BadLogKey)?;
    let head = key.sign_head(checked, root, now_ms());
    let report = sotto_transparency::audit(&key.public(), decoded.iter().cloned(), &head)?;
    if checked < tree.len() {
        return Err(AuditError::BadEntry {
            index: checked,
            reason: LogError::Malformed("the stored bytes are not a LogEntry"),
        }
        .into());
    }

    let unlogged_accounts = check_tables(&conn, &records, &decoded)?;
    Ok(AuditSummary {
        log_key: key.public(),
        report,
        unlogged_accounts,
    })
}

/// Checks the accounts and devices tables against the log. Returns how many
/// accounts have no log entries at all.
fn check_tables(
    conn: &Connection,
    records: &[LogRecord],
    entries: &[LogEntry],
) -> Result<u64, AuditFailure> {
    let mut by_account: HashMap<&str, Vec<LogEntry>> = HashMap::new();
    for (record, entry) in records.iter().zip(entries) {
        let event =
            AccountEvent::decode(entry.event.as_slice()).map_err(|_| AuditError::BadEntry {
                index: record.index,
                reason: LogError::Malformed("the event is not an AccountEvent"),
            })?;
        if event.username != record.username {
            return Err(AuditFailure::StateMismatch(format!(
                "log entry {} is about {:?} but filed under {:?}",
                record.index, event.username, record.username
            )));
        }
        by_account
            .entry(record.username.as_str())
            .or_default()
            .push(entry.clone());
    }

    let mut stmt = conn
        .prepare("SELECT username, identity_key FROM accounts")
        .map_err(StoreError::from)?;
    let accounts = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(StoreError::from)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::from)?;
    let mut stmt = conn
        .prepare("SELECT username, device_id, device_key FROM devices WHERE removed_day IS NULL")
        .map_err(StoreError::from)?;
    let mut active: HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>> = HashMap::new();
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(StoreError::from)?
    {
        let (username, id, key) = row.map_err(StoreError::from)?;
        active.entry(username).or_default().insert(id, key);
    }

    let mut unlogged = 0;
    for (username, identity_key) in &accounts {
        let Some(entries) = by_account.remove(username.as_str()) else {
            unlogged += 1;
            continue;
        };
        // The log audit already checked these rules; this cannot fail.
        let state = AccountState::replay(username, &entries)
            .map_err(|e| AuditFailure::StateMismatch(format!("{username}: {e}")))?;
        if state.identity_key.as_slice() != identity_key.as_slice() {
            return Err(AuditFailure::StateMismatch(format!(
                "{username}'s identity key is not the one in the log"
            )));
        }
        let logged: BTreeMap<Vec<u8>, Vec<u8>> = state
            .devices
            .iter()
            .map(|(id, key)| (id.to_vec(), key.to_vec()))
            .collect();
        if active.remove(username).unwrap_or_default() != logged {
            return Err(AuditFailure::StateMismatch(format!(
                "{username}'s active devices are not the ones in the log"
            )));
        }
    }
    if let Some(username) = by_account.keys().next() {
        return Err(AuditFailure::StateMismatch(format!(
            "the log has entries for {username:?}, which is not an account"
        )));
    }
    Ok(unlogged)
}
