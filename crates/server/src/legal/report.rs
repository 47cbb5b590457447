//! The transparency report: one hash-chained, signed entry per legal
//! request, stored by a [`LegalStore`], verified when read ([`report`]) and
//! offline ([`verify_report`]).

use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::canonical::{hex_field, verify_signature};
use super::{
    GENESIS_HASH, LegalError, LegalKey, REPORT_FORMAT, SignedDocument, canonical_json, legal_key,
};
use crate::store::{LegalStore, ReportRecord, StoreError, UnixDay};

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

    /// The entry that records a request after `last` (the report's last
    /// entry, `None` if it is empty), hashed and signed with `key`.
    pub(super) fn after(
        last: Option<&ReportRecord>,
        key: &LegalKey,
        request_id: &str,
        day: UnixDay,
        kind: &str,
        accounts: u64,
    ) -> Result<Self, LegalError> {
        let (seq, prev_hash) = match last {
            None => (1, GENESIS_HASH),
            Some(last) => (
                last.seq.saturating_add(1),
                <[u8; 32]>::try_from(last.hash.as_slice()).map_err(|_| {
                    StoreError::Backend(format!("stored report entry {} has a bad hash", last.seq))
                })?,
            ),
        };
        let body = entry_body(seq, request_id, day, kind, accounts, &prev_hash);
        let bytes = canonical_json(&body);
        Ok(Self {
            seq,
            request_id: request_id.to_owned(),
            day,
            kind: kind.to_owned(),
            accounts,
            prev_hash,
            hash: Sha256::digest(&bytes).into(),
            signature: key.0.sign(&bytes).to_bytes(),
        })
    }

    /// The entry as a store keeps it.
    pub(super) fn to_record(&self) -> ReportRecord {
        ReportRecord {
            seq: self.seq,
            request_id: self.request_id.clone(),
            day: self.day,
            kind: self.kind.clone(),
            accounts: self.accounts,
            prev_hash: self.prev_hash.to_vec(),
            hash: self.hash.to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    /// Parses a stored entry found at position `expected` of the report;
    /// names it if it is malformed (its chain is checked by
    /// [`ReportEntry::verify`]).
    pub(super) fn from_record(record: ReportRecord, expected: u64) -> Result<Self, LegalError> {
        let ReportRecord {
            seq,
            request_id,
            day,
            kind,
            accounts,
            prev_hash,
            hash,
            signature,
        } = record;
        let bad = |reason: &str| LegalError::BadEntry {
            seq,
            request_id: request_id.clone(),
            reason: reason.to_owned(),
        };
        if seq != expected {
            return Err(bad(&format!("expected entry number {expected} here")));
        }
        Ok(Self {
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
        })
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
pub async fn report<S: LegalStore>(
    store: &S,
    today: UnixDay,
) -> Result<(Report, SignedDocument), LegalError> {
    let key = legal_key(store).await?;
    let records = store.report_entries().await?;
    let public = key.public();
    let mut entries = Vec::with_capacity(records.len());
    let mut prev = GENESIS_HASH;
    for (expected, record) in (1u64..).zip(records) {
        let entry = ReportEntry::from_record(record, expected)?;
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
