//! The court-order side of the server: what an operator can hand over, and
//! a public record of every time they did. It reads and writes only
//! through a [`LegalStore`], so it works on any backend.
//!
//! - [`export_accounts`] (`export`) builds a signed document with exactly
//!   what the server holds about one or more accounts (the "legal export"
//!   column of `docs/SERVER_DATA.md`) and appends the request to the
//!   transparency report in the same transaction.
//! - The transparency report (`report`) is hash-chained: each entry's hash
//!   is SHA-256 of the canonical JSON of the entry, which includes the
//!   previous entry's hash; each entry is signed by the legal key.
//!   [`report()`] verifies the stored chain, [`verify_report`] an exported
//!   one.
//! - [`set_account_disabled`] (`standing`) disables or enables an account
//!   and appends the action to the report, counted, in the same
//!   transaction.
//! - The warrant canary (`canary`): [`publish_canary`] signs and stores a
//!   dated statement, [`latest_canary`] reads it back for `GET /canary`.
//!
//! Everything is signed with the "legal" Ed25519 key, separate from the
//! transparency log key, created on first use and kept by the store.
//! Signatures cover [`canonical_json`] bytes (`canonical`): keys sorted, no
//! whitespace. All times are days since the Unix epoch.

mod canary;
mod canonical;
mod export;
mod invite_links;
mod report;
mod standing;

use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::Value;
use zeroize::Zeroizing;

pub use canary::{Canary, latest_canary, publish_canary};
pub use canonical::{SignedDocument, canonical_json};
pub use export::export_accounts;
pub use invite_links::close_invite_links;
pub use report::{Report, ReportEntry, report, verify_report};
pub use standing::{disable_for_report, set_account_disabled};

use crate::store::{LegalStore, StoreError};

/// `format` of an export document.
pub const EXPORT_FORMAT: &str = "sotto-legal-export/1";
/// `format` of a transparency report document.
pub const REPORT_FORMAT: &str = "sotto-legal-report/1";
/// The `kind` recorded for an account export.
pub const KIND_EXPORT: &str = "export";
/// The `kind` recorded when the operator disables an account.
pub const KIND_DISABLE: &str = "disable";
/// The `kind` recorded when the operator enables a disabled account.
pub const KIND_ENABLE: &str = "enable";
/// The `kind` recorded when the operator disables an account because of a
/// verified abuse report (`sotto-server moderation resolve --action
/// disable-account`): counted apart from other disables, without the name
/// or anything of the report.
pub const KIND_MODERATION_DISABLE: &str = "moderation-disable";
/// The `kind` recorded when the operator closes a group's invite links
/// (`sotto-server invite-link close`): counted, naming no group or account
/// (`accounts` is 0).
pub const KIND_INVITE_LINK_CLOSE: &str = "invite-link-close";
/// The previous hash of the first report entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
/// Longest accepted request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 200;
/// Longest accepted canary statement, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 4096;

/// Why a legal command failed.
#[derive(Debug, thiserror::Error)]
pub enum LegalError {
    /// The database could not be read or written.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// An export named an account the server does not have.
    #[error("no account named {0:?} on this server; nothing was exported or recorded")]
    UnknownUser(String),
    /// A request id or statement was unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// The transparency report does not verify at this entry.
    #[error(
        "transparency report entry {seq} (request id {request_id:?}) does not verify: {reason}"
    )]
    BadEntry {
        /// The entry's sequence number (1 is the first).
        seq: u64,
        /// The entry's request id, as found.
        request_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The report or signed document is malformed or its signature is bad
    /// outside any single entry.
    #[error("{0}")]
    BadDocument(String),
    /// Handing the export over (writing the file) failed; nothing was
    /// recorded.
    #[error("cannot write the export: {0}")]
    Output(#[source] std::io::Error),
}

/// The legal signing key. Its `Debug` shows only the public key.
pub struct LegalKey(SigningKey);

impl std::fmt::Debug for LegalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegalKey")
            .field("public", &hex::encode(self.public()))
            .finish_non_exhaustive()
    }
}

impl LegalKey {
    /// The public key.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `document`'s [`canonical_json`] bytes.
    fn sign(&self, document: &Value) -> [u8; 64] {
        self.0.sign(&canonical_json(document)).to_bytes()
    }
}

/// The legal key, created and stored now if there is none yet.
pub async fn legal_key<S: LegalStore>(store: &S) -> Result<LegalKey, LegalError> {
    let fresh = Zeroizing::new(SigningKey::generate(&mut rand::rngs::OsRng).to_bytes());
    let secret = store.legal_key_secret(fresh).await?;
    Ok(LegalKey(SigningKey::from_bytes(&secret)))
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), LegalError> {
    if text.trim().is_empty() {
        return Err(LegalError::InvalidInput(format!("the {what} is empty")));
    }
    if text.len() > max {
        return Err(LegalError::InvalidInput(format!(
            "the {what} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// Flattens `value` into the set of its leaf paths (`a.b`, `a.list[].c`),
/// for comparing an export's fields with the inventory.
pub fn leaf_paths(prefix: &str, value: &Value, out: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(&path, child, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for item in items {
                leaf_paths(&format!("{prefix}[]"), item, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = LegalKey(SigningKey::from_bytes(&[7; 32]));
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode([7u8; 32])));
        assert!(shown.contains(&hex::encode(key.public())));
    }

    #[test]
    fn leaf_paths_flatten_arrays_of_objects() {
        let mut out = std::collections::BTreeSet::new();
        leaf_paths(
            "account",
            &json!({"a": 1, "d": [{"x": 1}, {"x": 2, "y": null}]}),
            &mut out,
        );
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            ["account.a", "account.d[].x", "account.d[].y"]
        );
    }
}
