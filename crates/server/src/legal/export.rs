//! The court-order export: a signed document with exactly what the server
//! holds about some accounts, recorded in the transparency report in the
//! same transaction ([`LegalStore::record_export`]).

use serde_json::{Value, json};

use super::{
    EXPORT_FORMAT, KIND_EXPORT, LegalError, MAX_REQUEST_ID_BYTES, ReportEntry, SignedDocument,
    check_text, legal_key,
};
use crate::store::{
    ExportSnapshot, ExportedAccount, ExportedDevice, LegalStore, StoreError, UnixDay,
};

/// Builds the signed export of `usernames` and records the request in the
/// transparency report, in one transaction. `deliver` hands the document
/// over (writes the file); only if it succeeds is the transaction
/// committed, so every delivered export is recorded and nothing is recorded
/// for one that was not delivered. `deliver` runs inside the store's
/// transaction, so it must only hand the document over.
pub async fn export_accounts<S: LegalStore>(
    store: &S,
    usernames: &[String],
    request_id: &str,
    today: UnixDay,
    deliver: impl FnOnce(&SignedDocument) -> std::io::Result<()> + Send + 'static,
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
    let key = legal_key(store).await?;
    let names = usernames.to_vec();
    let request_id = request_id.to_owned();
    let plan = move |snapshot: ExportSnapshot| {
        if snapshot.accounts.len() != names.len() {
            return Err(LegalError::Store(StoreError::Backend(format!(
                "asked for {} accounts, the store read {}",
                names.len(),
                snapshot.accounts.len()
            ))));
        }
        let mut accounts = Vec::with_capacity(names.len());
        for (username, account) in names.iter().zip(snapshot.accounts) {
            let account = account.ok_or_else(|| LegalError::UnknownUser(username.clone()))?;
            accounts.push(account_json(&account));
        }
        let document = json!({
            "format": EXPORT_FORMAT,
            "kind": KIND_EXPORT,
            "request_id": request_id,
            "day": today,
            "accounts": accounts,
        });
        let signed = SignedDocument::sign(&key, document);
        let count = u64::try_from(names.len()).unwrap_or(u64::MAX);
        let entry = ReportEntry::after(
            snapshot.last_entry.as_ref(),
            &key,
            &request_id,
            today,
            KIND_EXPORT,
            count,
        )?;
        Ok((entry.to_record(), (signed, entry)))
    };
    store
        .record_export(
            usernames.to_vec(),
            plan,
            |(signed, _): &(SignedDocument, ReportEntry)| {
                deliver(signed).map_err(LegalError::Output)
            },
        )
        .await
}

/// What the server holds about one account, shaped as documented in
/// `docs/SERVER_DATA.md` (paths `account.…`).
fn account_json(account: &ExportedAccount) -> Value {
    json!({
        "username": account.username,
        "identity_key": hex::encode(account.identity_key),
        "created_day": account.created_day,
        "log_entries": account.log_entries,
        "devices": account.devices.iter().map(device_json).collect::<Vec<_>>(),
    })
}

fn device_json(device: &ExportedDevice) -> Value {
    json!({
        "device_id": hex::encode(device.device_id.as_bytes()),
        "device_key": hex::encode(device.device_key),
        "created_day": device.created_day,
        "last_seen_day": device.last_seen_day,
        "removed_day": device.removed_day,
        "key_packages": device.key_packages,
        "last_resort_key_package": device.last_resort_key_package,
        "queued_messages": device.queued_messages,
        "queued_bytes": device.queued_bytes,
        "push_endpoint": device.push_endpoint,
    })
}
