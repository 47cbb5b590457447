//! Checking a whole log at once ([`audit`]): every entry, every account's
//! replay, and the root against a signed head.

use std::collections::HashMap;

use crate::{
    AccountState, Hash, LogEntry, LogError, MerkleLog, SignedTreeHead, leaf_bytes, open_entry,
    to_hash, verify_head, verify_web_release,
};

/// What an [`audit`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// Accounts in the log.
    pub accounts: u64,
    /// Devices currently active (added and not removed).
    pub devices: u64,
    /// Web releases logged (each signed by the log key).
    pub web_releases: u64,
    /// The size of the head audited against.
    pub tree_size: u64,
    /// The root recomputed at that size.
    pub root: Hash,
}

/// Why an [`audit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// One entry is malformed, badly signed, or breaks its account's rules.
    #[error("log entry {index}: {reason}")]
    BadEntry {
        /// The entry's index in the log.
        index: u64,
        /// What is wrong with it.
        reason: LogError,
    },
    /// The entries do not hash to the head's root.
    #[error(
        "the first {tree_size} log entries hash to {}, but the signed head says {}: the log was altered",
        hex::encode(computed),
        hex::encode(expected)
    )]
    RootMismatch {
        /// The head's size.
        tree_size: u64,
        /// The head's root.
        expected: Hash,
        /// The root of the entries.
        computed: Hash,
    },
    /// Fewer entries than the head counts.
    #[error("the signed head counts {tree_size} entries but only {entries} were found")]
    MissingEntries {
        /// The head's size.
        tree_size: u64,
        /// Entries found.
        entries: u64,
    },
    /// The head is malformed or not signed by the log key.
    #[error("bad tree head: {0}")]
    BadHead(LogError),
}

/// Audits a whole log, entries in index order: every entry's signature
/// (an account's identity key, or for a web release the log key),
/// every account's replay rules, and that the first `head.tree_size`
/// entries hash to `head.root_hash` (the head being signed by `log_key`).
/// Entries after the head's size are checked by the rules too. On failure
/// the error names the first bad entry.
pub fn audit(
    log_key: &[u8],
    entries: impl IntoIterator<Item = LogEntry>,
    head: &SignedTreeHead,
) -> Result<AuditReport, AuditError> {
    verify_head(log_key, head).map_err(AuditError::BadHead)?;
    let expected = to_hash(&head.root_hash, "a tree head's root hash must be 32 bytes")
        .map_err(AuditError::BadHead)?;
    let mut tree = MerkleLog::new();
    let mut accounts: HashMap<String, AccountState> = HashMap::new();
    let mut web_releases = 0u64;
    for entry in entries {
        let index = tree.len();
        let bad = |reason| AuditError::BadEntry { index, reason };
        if entry.web_release.is_some() {
            // The server's own statement, not an account's: signed by the
            // log key, replayed as no account.
            verify_web_release(log_key, &entry).map_err(bad)?;
            web_releases = web_releases.saturating_add(1);
            tree.push(&leaf_bytes(&entry));
            continue;
        }
        let event = open_entry(&entry).map_err(bad)?;
        match accounts.get_mut(&event.username) {
            Some(state) => state.apply_event(event).map_err(bad)?,
            None => {
                let username = event.username.clone();
                let state = AccountState::start(&username, event).map_err(bad)?;
                accounts.insert(username, state);
            }
        }
        tree.push(&leaf_bytes(&entry));
    }
    if tree.len() < head.tree_size {
        return Err(AuditError::MissingEntries {
            tree_size: head.tree_size,
            entries: tree.len(),
        });
    }
    let computed = tree.root_at(head.tree_size).map_err(AuditError::BadHead)?;
    if computed != expected {
        return Err(AuditError::RootMismatch {
            tree_size: head.tree_size,
            expected,
            computed,
        });
    }
    let devices = accounts.values().map(|a| a.devices.len() as u64).sum();
    Ok(AuditReport {
        entries: tree.len(),
        accounts: accounts.len() as u64,
        devices,
        web_releases,
        tree_size: head.tree_size,
        root: computed,
    })
}
