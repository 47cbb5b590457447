//! The court-order side of the server: what an operator can hand over, and
//! a public record of every time they did.
//!
//! - [`export_accounts`] builds a signed document with exactly what the
//!   server holds about one or more accounts (the "legal export" column of
//!   `docs/SERVER_DATA.md`) and appends the request to the transparency
//!   report in the same transaction.
//! - The transparency report (table `legal_requests`) is hash-chained: each
//!   entry's hash is SHA-256 of the canonical JSON of the entry, which
//!   includes the previous entry's hash; each entry is signed by the legal
//!   key. [`report`] verifies the stored chain, [`verify_report`] an exported
//!   one.
//! - The warrant canary (table `canaries`): [`publish_canary`] signs and
//!   stores a dated statement, [`latest_canary`] reads it back for
//!   `GET /canary`.
//!
//! Everything is signed with the "legal" Ed25519 key, separate from the
//! transparency log key, created on first use and kept in `server_keys`.
//! Signatures cover [`canonical_json`] bytes: keys sorted, no whitespace.
//! All times are days since the Unix epoch.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::{StoreError, UnixDay};

/// Name of the legal signing key in `server_keys`.
pub const LEGAL_KEY_NAME: &str = "legal";
/// `format` of an export document.
pub const EXPORT_FORMAT: &str = "sotto-legal-export/1";
/// `format` of a transparency report document.
pub const REPORT_FORMAT: &str = "sotto-legal-report/1";
/// The `kind` recorded for an account export.
pub const KIND_EXPORT: &str = "export";
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

impl From<rusqlite::Error> for LegalError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::from(e))
    }
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

    fn sign(&self, document: &Value) -> [u8; 64] {
        self.0.sign(&canonical_json(document)).to_bytes()
    }
}

/// Opens the database in `data_dir` for a legal command (it must exist;
/// the schema is brought up to date).
pub fn open(data_dir: &Path) -> Result<Connection, LegalError> {
    Ok(crate::store::sqlite::open_admin(data_dir)?)
}

/// The legal key, created and stored now if there is none yet.
pub fn legal_key(conn: &Connection) -> Result<LegalKey, LegalError> {
    let fresh = Zeroizing::new(SigningKey::generate(&mut rand::rngs::OsRng).to_bytes());
    conn.execute(
        "INSERT INTO server_keys (name, secret) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
        params![LEGAL_KEY_NAME, fresh.as_slice()],
    )?;
    let stored = Zeroizing::new(conn.query_row(
        "SELECT secret FROM server_keys WHERE name = ?1",
        [LEGAL_KEY_NAME],
        |r| r.get::<_, Vec<u8>>(0),
    )?);
    let secret = Zeroizing::new(
        <[u8; 32]>::try_from(stored.as_slice())
            .map_err(|_| StoreError::Backend("the stored legal key is not 32 bytes".into()))?,
    );
    Ok(LegalKey(SigningKey::from_bytes(&secret)))
}

/// The bytes every legal signature covers: `value` as JSON with object keys
/// sorted (by their UTF-8 bytes) and no whitespace. The documents hold only
/// strings, non-negative integers, booleans, null, arrays and objects, so
/// this equals RFC 8785 (JCS) output for them.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out.into_bytes()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's compact form.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A document with the legal key's signature over its canonical bytes, as
/// `{"document": …, "signature": "hex", "key": "hex"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedDocument {
    /// What is signed.
    pub document: Value,
    /// Ed25519 signature over `canonical_json(document)`.
    pub signature: [u8; 64],
    /// The legal public key.
    pub key: [u8; 32],
}

impl SignedDocument {
    fn sign(key: &LegalKey, document: Value) -> Self {
        Self {
            signature: key.sign(&document),
            key: key.public(),
            document,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "document": self.document,
            "signature": hex::encode(self.signature),
            "key": hex::encode(self.key),
        })
    }

    /// Parses the JSON form and checks the signature (against `expected`
    /// if given, else against the key it names).
    pub fn verify(value: &Value, expected: Option<&[u8; 32]>) -> Result<Self, LegalError> {
        let bad = |what: &str| LegalError::BadDocument(format!("not a signed document: {what}"));
        let document = value
            .get("document")
            .ok_or_else(|| bad("no \"document\""))?;
        let signature = hex_field::<64>(value, "signature").map_err(|e| bad(&e))?;
        let key = hex_field::<32>(value, "key").map_err(|e| bad(&e))?;
        if let Some(expected) = expected
            && *expected != key
        {
            return Err(LegalError::BadDocument(format!(
                "signed by key {}, not the expected {}",
                hex::encode(key),
                hex::encode(expected)
            )));
        }
        verify_signature(&key, document, &signature)
            .map_err(|reason| LegalError::BadDocument(format!("the document's {reason}")))?;
        Ok(Self {
            document: document.clone(),
            signature,
            key,
        })
    }
}

fn verify_signature(key: &[u8; 32], document: &Value, signature: &[u8; 64]) -> Result<(), String> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| "key is not a valid Ed25519 key")?;
    key.verify(&canonical_json(document), &Signature::from_bytes(signature))
        .map_err(|_| "signature does not verify".to_owned())
}

fn hex_field<const N: usize>(value: &Value, name: &str) -> Result<[u8; N], String> {
    let text = value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{name}\" is missing or not a string"))?;
    let bytes = hex::decode(text).map_err(|_| format!("\"{name}\" is not hex"))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| format!("\"{name}\" is not {N} bytes"))
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

// ---------------------------------------------------------------------
// Export

/// Builds the signed export of `usernames` and records the request in the
/// transparency report, in one transaction. `deliver` hands the document
/// over (writes the file); only if it succeeds is the transaction
/// committed, so every delivered export is recorded and nothing is recorded
/// for one that was not delivered.
pub fn export_accounts(
    conn: &mut Connection,
    usernames: &[String],
    request_id: &str,
    today: UnixDay,
    deliver: impl FnOnce(&SignedDocument) -> std::io::Result<()>,
) -> Result<(SignedDocument, ReportEntry), LegalError> {
    check_text("request id", request_id, MAX_REQUEST_ID_BYTES)?;
    if usernames.is_empty() {
        return Err(LegalError::InvalidInput("name at least one account".into()));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = usernames.iter().find(|u| !seen.insert(u.as_str())) {
        return Err(LegalError::InvalidInput(format!(
            "account {twice:?} is named twice"
        )));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let key = legal_key(&tx)?;
    let mut accounts = Vec::new();
    for username in usernames {
        accounts.push(account_export(&tx, username)?);
    }
    let document = json!({
        "format": EXPORT_FORMAT,
        "kind": KIND_EXPORT,
        "request_id": request_id,
        "day": today,
        "accounts": accounts,
    });
    let signed = SignedDocument::sign(&key, document);
    let count = u64::try_from(usernames.len()).unwrap_or(u64::MAX);
    let entry = append_request(&tx, &key, request_id, today, KIND_EXPORT, count)?;
    deliver(&signed).map_err(LegalError::Output)?;
    tx.commit()?;
    Ok((signed, entry))
}

/// What the server holds about one account, shaped as documented in
/// `docs/SERVER_DATA.md` (paths `account.…`).
fn account_export(conn: &Connection, username: &str) -> Result<Value, LegalError> {
    let account: Option<(Vec<u8>, i64)> = conn
        .query_row(
            "SELECT identity_key, created_day FROM accounts WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((identity_key, created_day)) = account else {
        return Err(LegalError::UnknownUser(username.to_owned()));
    };
    let log_entries: i64 = conn.query_row(
        "SELECT count(*) FROM log_entries WHERE username = ?1",
        [username],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT d.device_id, d.device_key, d.created_day, d.last_seen_day, d.removed_day, \
           (SELECT count(*) FROM key_packages k WHERE k.device_id = d.device_id), \
           EXISTS(SELECT 1 FROM last_resort_key_packages l WHERE l.device_id = d.device_id), \
           (SELECT count(*) FROM mailbox m WHERE m.device_num = d.num), \
           (SELECT coalesce(sum(length(p.payload)), 0) FROM mailbox m \
              JOIN messages p ON p.id = m.message_ref WHERE m.device_num = d.num) \
         FROM devices d WHERE d.username = ?1 ORDER BY d.rowid",
    )?;
    let devices = stmt
        .query_map([username], |r| {
            Ok(json!({
                "device_id": hex::encode(r.get::<_, Vec<u8>>(0)?),
                "device_key": hex::encode(r.get::<_, Vec<u8>>(1)?),
                "created_day": r.get::<_, i64>(2)?,
                "last_seen_day": r.get::<_, i64>(3)?,
                "removed_day": r.get::<_, Option<i64>>(4)?,
                "key_packages": r.get::<_, i64>(5)?,
                "last_resort_key_package": r.get::<_, bool>(6)?,
                "queued_messages": r.get::<_, i64>(7)?,
                "queued_bytes": r.get::<_, i64>(8)?,
            }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "username": username,
        "identity_key": hex::encode(identity_key),
        "created_day": created_day,
        "log_entries": log_entries,
        "devices": devices,
    }))
}

// ---------------------------------------------------------------------
// Transparency report

/// One request in the transparency report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEntry {
    /// Position, from 1.
    pub seq: u64,
    /// The operator's reference for the request (published).
    pub request_id: String,
    /// Day the request was answered.
    pub day: UnixDay,
    /// What was done (`export`).
    pub kind: String,
    /// How many accounts it covered.
    pub accounts: u64,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 of [`ReportEntry::body`]'s canonical bytes.
    pub hash: [u8; 32],
    /// The legal key's signature over the same bytes.
    pub signature: [u8; 64],
}

impl ReportEntry {
    /// The signed and hashed part: `{seq, request_id, day, kind, accounts,
    /// prev_hash}`.
    pub fn body(&self) -> Value {
        entry_body(
            self.seq,
            &self.request_id,
            self.day,
            &self.kind,
            self.accounts,
            &self.prev_hash,
        )
    }

    /// The body plus `hash` and `signature` (hex).
    pub fn to_json(&self) -> Value {
        let mut value = self.body();
        if let Value::Object(map) = &mut value {
            map.insert("hash".into(), Value::String(hex::encode(self.hash)));
            map.insert(
                "signature".into(),
                Value::String(hex::encode(self.signature)),
            );
        }
        value
    }

    /// Checks this entry against the chain so far and the key.
    fn verify(&self, prev_hash: &[u8; 32], key: &[u8; 32]) -> Result<(), LegalError> {
        let bad = |reason: String| LegalError::BadEntry {
            seq: self.seq,
            request_id: self.request_id.clone(),
            reason,
        };
        if self.prev_hash != *prev_hash {
            return Err(bad(
                "its previous hash is not the hash of the entry before it (an entry was removed, \
                 inserted or changed)"
                    .into(),
            ));
        }
        let body = self.body();
        if Sha256::digest(canonical_json(&body)).as_slice() != self.hash.as_slice() {
            return Err(bad("its hash does not match its contents".into()));
        }
        verify_signature(key, &body, &self.signature).map_err(bad)
    }
}

fn entry_body(
    seq: u64,
    request_id: &str,
    day: UnixDay,
    kind: &str,
    accounts: u64,
    prev_hash: &[u8; 32],
) -> Value {
    json!({
        "seq": seq,
        "request_id": request_id,
        "day": day,
        "kind": kind,
        "accounts": accounts,
        "prev_hash": hex::encode(prev_hash),
    })
}

/// Appends one entry at the end of the chain. Call inside an IMMEDIATE
/// transaction so no one appends in between.
fn append_request(
    conn: &Connection,
    key: &LegalKey,
    request_id: &str,
    day: UnixDay,
    kind: &str,
    accounts: u64,
) -> Result<ReportEntry, LegalError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM legal_requests ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev_hash) = match last {
        None => (1, GENESIS_HASH),
        Some((seq, hash)) => (
            u64::try_from(seq).unwrap_or(0).saturating_add(1),
            <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
                StoreError::Backend(format!("stored report entry {seq} has a bad hash"))
            })?,
        ),
    };
    let body = entry_body(seq, request_id, day, kind, accounts, &prev_hash);
    let bytes = canonical_json(&body);
    let entry = ReportEntry {
        seq,
        request_id: request_id.to_owned(),
        day,
        kind: kind.to_owned(),
        accounts,
        prev_hash,
        hash: Sha256::digest(&bytes).into(),
        signature: key.0.sign(&bytes).to_bytes(),
    };
    conn.execute(
        "INSERT INTO legal_requests (seq, request_id, day, kind, accounts, prev_hash, hash, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            to_i64(entry.seq),
            entry.request_id,
            to_i64(entry.day),
            entry.kind,
            to_i64(entry.accounts),
            entry.prev_hash.as_slice(),
            entry.hash.as_slice(),
            entry.signature.as_slice(),
        ],
    )?;
    Ok(entry)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The whole transparency report, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The legal public key every entry is signed with.
    pub key: [u8; 32],
    /// The entries, oldest first.
    pub entries: Vec<ReportEntry>,
}

impl Report {
    /// The hash of the last entry ([`GENESIS_HASH`] if empty): publish it
    /// so a later report that drops entries is caught.
    pub fn head(&self) -> [u8; 32] {
        self.entries.last().map_or(GENESIS_HASH, |e| e.hash)
    }

    /// The report as a document, unsigned.
    pub fn document(&self, today: UnixDay) -> Value {
        json!({
            "format": REPORT_FORMAT,
            "day": today,
            "key": hex::encode(self.key),
            "entries": self.entries.iter().map(ReportEntry::to_json).collect::<Vec<_>>(),
            "head": hex::encode(self.head()),
        })
    }
}

/// Reads and verifies the stored transparency report (creating the legal
/// key if there is none yet), and returns it with the whole document signed.
pub fn report(conn: &Connection, today: UnixDay) -> Result<(Report, SignedDocument), LegalError> {
    let key = legal_key(conn)?;
    let mut stmt = conn.prepare(
        "SELECT seq, request_id, day, kind, accounts, prev_hash, hash, signature \
         FROM legal_requests ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                to_u64(r.get(0)?),
                r.get::<_, String>(1)?,
                to_u64(r.get(2)?),
                r.get::<_, String>(3)?,
                to_u64(r.get(4)?),
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, Vec<u8>>(7)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let public = key.public();
    let mut entries = Vec::with_capacity(rows.len());
    let mut prev = GENESIS_HASH;
    for (expected, (seq, request_id, day, kind, accounts, prev_hash, hash, signature)) in
        (1u64..).zip(rows)
    {
        let bad = |reason: &str| LegalError::BadEntry {
            seq,
            request_id: request_id.clone(),
            reason: reason.to_owned(),
        };
        if seq != expected {
            return Err(bad(&format!("expected entry number {expected} here")));
        }
        let entry = ReportEntry {
            prev_hash: <[u8; 32]>::try_from(prev_hash.as_slice())
                .map_err(|_| bad("the stored previous hash is not 32 bytes"))?,
            hash: <[u8; 32]>::try_from(hash.as_slice())
                .map_err(|_| bad("the stored hash is not 32 bytes"))?,
            signature: <[u8; 64]>::try_from(signature.as_slice())
                .map_err(|_| bad("the stored signature is not 64 bytes"))?,
            seq,
            request_id: request_id.clone(),
            day,
            kind,
            accounts,
        };
        entry.verify(&prev, &public)?;
        prev = entry.hash;
        entries.push(entry);
    }
    let report = Report {
        key: public,
        entries,
    };
    let signed = SignedDocument::sign(&key, report.document(today));
    Ok((report, signed))
}

/// Verifies an exported report (`legal report --json`) offline: every
/// entry's chain link, hash and signature in order, the head, and the
/// signature over the whole document. With `expected`, the key must be that
/// one. Names the first entry that fails.
pub fn verify_report(value: &Value, expected: Option<&[u8; 32]>) -> Result<Report, LegalError> {
    let bad = |what: String| LegalError::BadDocument(format!("not a valid report: {what}"));
    let document = value
        .get("document")
        .ok_or_else(|| bad("no \"document\"".into()))?;
    let key = hex_field::<32>(value, "key").map_err(bad)?;
    if let Some(expected) = expected
        && *expected != key
    {
        return Err(LegalError::BadDocument(format!(
            "the report is signed by key {}, not the expected {}",
            hex::encode(key),
            hex::encode(expected)
        )));
    }
    if document.get("format").and_then(Value::as_str) != Some(REPORT_FORMAT) {
        return Err(bad(format!("\"format\" is not {REPORT_FORMAT:?}")));
    }
    let items = document
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("\"entries\" is missing".into()))?;
    let mut entries = Vec::with_capacity(items.len());
    let mut prev = GENESIS_HASH;
    for (position, item) in (1u64..).zip(items) {
        let entry = parse_entry(item, position)?;
        if entry.seq != position {
            return Err(LegalError::BadEntry {
                seq: position,
                request_id: entry.request_id,
                reason: format!("it is numbered {}", entry.seq),
            });
        }
        entry.verify(&prev, &key)?;
        prev = entry.hash;
        entries.push(entry);
    }
    let report = Report { key, entries };
    if hex_field::<32>(document, "head").map_err(bad)? != report.head() {
        return Err(bad(
            "\"head\" is not the hash of the last entry (entries were removed or added)".into(),
        ));
    }
    if hex_field::<32>(document, "key").map_err(bad)? != key {
        return Err(bad(
            "the document's \"key\" differs from the signing key".into()
        ));
    }
    let signature = hex_field::<64>(value, "signature").map_err(bad)?;
    verify_signature(&key, document, &signature).map_err(|reason| {
        LegalError::BadDocument(format!(
            "every entry verifies, but the report's {reason} (its day or head was changed)"
        ))
    })?;
    Ok(report)
}

fn parse_entry(item: &Value, position: u64) -> Result<ReportEntry, LegalError> {
    let request_id = item
        .get("request_id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let bad = |reason: String| LegalError::BadEntry {
        seq: position,
        request_id: request_id.clone(),
        reason,
    };
    let number = |name: &str| {
        item.get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("\"{name}\" is missing or not a number")))
    };
    let text = |name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("\"{name}\" is missing or not a string")))
    };
    let object = item
        .as_object()
        .ok_or_else(|| bad("it is not an object".into()))?;
    let known = [
        "seq",
        "request_id",
        "day",
        "kind",
        "accounts",
        "prev_hash",
        "hash",
        "signature",
    ];
    if let Some(extra) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!("unexpected field {extra:?}")));
    }
    Ok(ReportEntry {
        seq: number("seq")?,
        request_id: text("request_id")?,
        day: number("day")?,
        kind: text("kind")?,
        accounts: number("accounts")?,
        prev_hash: hex_field::<32>(item, "prev_hash").map_err(&bad)?,
        hash: hex_field::<32>(item, "hash").map_err(&bad)?,
        signature: hex_field::<64>(item, "signature").map_err(&bad)?,
    })
}

// ---------------------------------------------------------------------
// Warrant canary

/// A signed, dated statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// The statement.
    pub statement: String,
    /// Day it was signed.
    pub day: UnixDay,
    /// The legal public key.
    pub key: [u8; 32],
    /// Signature over the canonical bytes of `{"day", "statement"}`.
    pub signature: [u8; 64],
}

impl Canary {
    /// What is signed.
    pub fn signed_part(statement: &str, day: UnixDay) -> Value {
        json!({ "statement": statement, "day": day })
    }

    /// `{"statement", "day", "key", "signature"}`, as served at `/canary`.
    pub fn to_json(&self) -> Value {
        json!({
            "statement": self.statement,
            "day": self.day,
            "key": hex::encode(self.key),
            "signature": hex::encode(self.signature),
        })
    }

    /// Parses the served form and checks its signature.
    pub fn verify(value: &Value) -> Result<Self, LegalError> {
        let bad = |what: String| LegalError::BadDocument(format!("not a valid canary: {what}"));
        let statement = value
            .get("statement")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("\"statement\" is missing".into()))?
            .to_owned();
        let day = value
            .get("day")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("\"day\" is missing".into()))?;
        let key = hex_field::<32>(value, "key").map_err(bad)?;
        let signature = hex_field::<64>(value, "signature").map_err(bad)?;
        verify_signature(&key, &Self::signed_part(&statement, day), &signature).map_err(bad)?;
        Ok(Self {
            statement,
            day,
            key,
            signature,
        })
    }
}

/// Signs and stores `statement` as of `today`; it becomes the one served.
pub fn publish_canary(
    conn: &Connection,
    statement: &str,
    today: UnixDay,
) -> Result<Canary, LegalError> {
    check_text("statement", statement, MAX_STATEMENT_BYTES)?;
    let key = legal_key(conn)?;
    let canary = Canary {
        statement: statement.to_owned(),
        day: today,
        key: key.public(),
        signature: key.sign(&Canary::signed_part(statement, today)),
    };
    conn.execute(
        "INSERT INTO canaries (day, statement, key, signature) VALUES (?1, ?2, ?3, ?4)",
        params![
            to_i64(canary.day),
            canary.statement,
            canary.key.as_slice(),
            canary.signature.as_slice()
        ],
    )?;
    Ok(canary)
}

/// The newest canary, if any.
pub fn latest_canary(conn: &Connection) -> Result<Option<Canary>, LegalError> {
    let row: Option<(i64, String, Vec<u8>, Vec<u8>)> = conn
        .query_row(
            "SELECT day, statement, key, signature FROM canaries ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    row.map(|(day, statement, key, signature)| {
        Ok(Canary {
            statement,
            day: to_u64(day),
            key: <[u8; 32]>::try_from(key.as_slice())
                .map_err(|_| StoreError::Backend("the stored canary key is not 32 bytes".into()))?,
            signature: <[u8; 64]>::try_from(signature.as_slice()).map_err(|_| {
                StoreError::Backend("the stored canary signature is not 64 bytes".into())
            })?,
        })
    })
    .transpose()
}

/// Reads the newest canary from the database at `db_path` (blocking).
pub(crate) fn read_latest_canary(db_path: &Path) -> Result<Option<Canary>, LegalError> {
    let conn = Connection::open_with_flags(
        db_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    latest_canary(&conn)
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
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let value = json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#
        );
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = LegalKey(SigningKey::from_bytes(&[7; 32]));
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode([7u8; 32])));
        assert!(shown.contains(&hex::encode(key.public())));
    }

    #[test]
    fn canary_round_trips_and_detects_edits() {
        let key = LegalKey(SigningKey::from_bytes(&[9; 32]));
        let canary = Canary {
            statement: "no orders".into(),
            day: 20_000,
            key: key.public(),
            signature: key.sign(&Canary::signed_part("no orders", 20_000)),
        };
        let value = canary.to_json();
        assert_eq!(Canary::verify(&value).unwrap(), canary);
        let mut edited = value.clone();
        edited["day"] = json!(20_001);
        assert!(Canary::verify(&edited).is_err());
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
