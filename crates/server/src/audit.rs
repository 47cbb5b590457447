//! `sotto-server audit`: checks a data directory's whole transparency log
//! offline, read-only.
//!
//! It reads every stored leaf in index order and runs
//! [`sotto_transparency::audit`] against a head for the root of the stored
//! bytes, signed with the stored log key: so every entry's signature (a web
//! release's by the log key itself), every
//! account's replay rules, and that the leaves re-encode to exactly the
//! bytes the server hashes. It then checks that the server's own tables
//! agree with the log: every account's identity key and active devices are
//! exactly what its log entries say (a device the server would let log in
//! without a log entry is a "ghost" and fails the audit).
//!
//! For a SQLite data directory it also audits the key directory: every
//! epoch's append-only proof against the stored roots
//! ([`sotto_directory::audit_stored`]); that sees labels only as VRF
//! outputs, so it prints no username.
//!
//! It reads through [`AdminStore`] and [`LogStore`], so any backend can be
//! audited ([`audit_store`]); [`audit_data_dir`] opens a SQLite data
//! directory read-only.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use sotto_transparency::{
    AccountEvent, AccountState, AuditError, AuditReport, LogEntry, LogError, LogKey, MerkleLog,
};

use crate::store::{AccountIdentity, AdminStore, LogRecord, LogStore, SqliteStore, StoreError};

/// Log leaves read per request.
const LOG_PAGE: usize = 4096;

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
    /// The key directory's latest epoch and root, every epoch audited
    /// ([`audit_data_dir`] only; `None` when the data directory has no key
    /// directory yet).
    pub directory: Option<sotto_directory::EpochRoot>,
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
    /// The key directory is not append-only, or cannot be read.
    #[error("the key directory fails its audit: {0}")]
    Directory(#[from] sotto_directory::StoredAuditError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Audits the log in `<data_dir>/sotto.db`, opened read-only, without
/// changing anything. With `expected_log_key`, also checks that the stored
/// key is that one (the key clients were shown).
pub async fn audit_data_dir(
    data_dir: &Path,
    expected_log_key: Option<&[u8; 32]>,
) -> Result<AuditSummary, AuditFailure> {
    let dir = data_dir.to_owned();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open_read_only(&dir))
        .await
        .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
    let mut summary = audit_store(&store, expected_log_key).await?;
    summary.directory = audit_directory_in(data_dir).await?;
    Ok(summary)
}

/// Audits the key directory in `data_dir` (`directory.db`, whatever store
/// the server uses): every epoch's append-only proof from the stored nodes
/// against the stored roots, naming no account (labels are VRF outputs).
/// `Ok(None)`: the data directory has no key directory yet.
pub async fn audit_directory_in(
    data_dir: &Path,
) -> Result<Option<sotto_directory::EpochRoot>, AuditFailure> {
    let directory = data_dir.join(crate::key_directory::DIRECTORY_FILE_NAME);
    if !directory.is_file() {
        return Ok(None);
    }
    Ok(Some(sotto_directory::audit_stored(&directory).await?))
}

/// Audits the log kept by `store`, reading only; see [`audit_data_dir`].
pub async fn audit_store<S: AdminStore + LogStore>(
    store: &S,
    expected_log_key: Option<&[u8; 32]>,
) -> Result<AuditSummary, AuditFailure> {
    let secret = store
        .stored_log_key()
        .await?
        .ok_or(AuditFailure::NoLogKey)?;
    let key = LogKey::from_secret(&secret).map_err(AuditFailure::BadLogKey)?;
    if let Some(expected) = expected_log_key
        && *expected != key.public()
    {
        return Err(AuditFailure::KeyMismatch {
            found: hex::encode(key.public()),
            expected: hex::encode(expected),
        });
    }

    let records = whole_log(store).await?;

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

    let unlogged_accounts = check_tables(store, &records, &decoded).await?;
    Ok(AuditSummary {
        log_key: key.public(),
        report,
        unlogged_accounts,
        directory: None,
    })
}

/// Every stored log leaf, in index order, read a page at a time. Fails
/// naming the first missing index.
async fn whole_log<S: LogStore>(store: &S) -> Result<Vec<LogRecord>, AuditFailure> {
    let mut records: Vec<LogRecord> = Vec::new();
    loop {
        let start = records.last().map_or(0, |r| r.index.saturating_add(1));
        let page = store.log_entries(start, LOG_PAGE).await?;
        let last_page = page.len() < LOG_PAGE;
        for record in page {
            let expected = records.len() as u64;
            if record.index != expected {
                return Err(AuditFailure::Gap { index: expected });
            }
            records.push(record);
        }
        if last_page {
            return Ok(records);
        }
    }
}

/// Checks the stored accounts and devices against the log. Returns how many
/// accounts have no log entries at all.
async fn check_tables<S: AdminStore>(
    store: &S,
    records: &[LogRecord],
    entries: &[LogEntry],
) -> Result<u64, AuditFailure> {
    let mut by_account: HashMap<&str, Vec<LogEntry>> = HashMap::new();
    for (record, entry) in records.iter().zip(entries) {
        // Web releases (checked against the log key by the log audit) are
        // the server's, filed under a name no account has.
        if entry.web_release.is_some() || record.username == sotto_proto::WEB_RELEASE_USERNAME {
            if entry.web_release.is_none() || record.username != sotto_proto::WEB_RELEASE_USERNAME {
                return Err(AuditFailure::StateMismatch(format!(
                    "log entry {} is filed as {:?} but is {}a web release",
                    record.index,
                    record.username,
                    if entry.web_release.is_some() {
                        ""
                    } else {
                        "not "
                    }
                )));
            }
            continue;
        }
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

    let accounts = store.account_identities().await?;
    let mut active: HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>> = HashMap::new();
    for device in store.active_devices().await? {
        active
            .entry(device.username)
            .or_default()
            .insert(device.device_id, device.device_key);
    }

    let mut unlogged = 0;
    for AccountIdentity {
        username,
        identity_key,
    } in &accounts
    {
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
