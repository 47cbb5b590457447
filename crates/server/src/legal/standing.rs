//! Disabling and enabling accounts (`sotto-server account disable|enable`):
//! each action is a transparency-report entry (kind [`KIND_DISABLE`] or
//! [`KIND_ENABLE`], one account), recorded in the same transaction as the
//! change, so the published report counts every one without naming the
//! account.

use super::{
    KIND_DISABLE, KIND_ENABLE, KIND_MODERATION_DISABLE, LegalError, MAX_REQUEST_ID_BYTES,
    ReportEntry, check_text, legal_key,
};
use crate::store::{LegalStore, StandingSnapshot, UnixDay};

/// Disables `username` until `until_day` (exclusive; see
/// [`crate::store::DISABLED_UNTIL_ENABLED`]) or, with `None`, enables it,
/// recording the action in the transparency report under `request_id`.
/// Refuses, recording nothing, an unknown account and enabling an account
/// that is not disabled on `today`.
pub async fn set_account_disabled<S: LegalStore>(
    store: &S,
    username: &str,
    until_day: Option<UnixDay>,
    request_id: &str,
    today: UnixDay,
) -> Result<ReportEntry, LegalError> {
    let kind = if until_day.is_some() {
        KIND_DISABLE
    } else {
        KIND_ENABLE
    };
    record_standing(store, username, until_day, request_id, today, kind).await
}

/// Disables `username` until enabled because of a verified abuse report,
/// recorded as a [`KIND_MODERATION_DISABLE`] entry under `request_id`.
pub async fn disable_for_report<S: LegalStore>(
    store: &S,
    username: &str,
    request_id: &str,
    today: UnixDay,
) -> Result<ReportEntry, LegalError> {
    record_standing(
        store,
        username,
        Some(crate::store::DISABLED_UNTIL_ENABLED),
        request_id,
        today,
        KIND_MODERATION_DISABLE,
    )
    .await
}

async fn record_standing<S: LegalStore>(
    store: &S,
    username: &str,
    until_day: Option<UnixDay>,
    request_id: &str,
    today: UnixDay,
    kind: &'static str,
) -> Result<ReportEntry, LegalError> {
    check_text("request id", request_id, MAX_REQUEST_ID_BYTES)?;
    if until_day.is_some_and(|day| day <= today) {
        return Err(LegalError::InvalidInput(
            "a suspension must last at least one day".into(),
        ));
    }
    let key = legal_key(store).await?;
    let name = username.to_owned();
    let request_id = request_id.to_owned();
    let plan = move |snapshot: StandingSnapshot| {
        if !snapshot.exists {
            return Err(LegalError::UnknownUser(name));
        }
        let disabled_now = snapshot.disabled_until_day.is_some_and(|day| today < day);
        if until_day.is_none() && !disabled_now {
            return Err(LegalError::InvalidInput(format!(
                "account {name:?} is not disabled; nothing was changed or recorded"
            )));
        }
        let entry = ReportEntry::after(
            snapshot.last_entry.as_ref(),
            &key,
            &request_id,
            today,
            kind,
            1,
        )?;
        Ok(entry.to_record())
    };
    let record = store
        .set_account_disabled(username.to_owned(), until_day, plan)
        .await?;
    ReportEntry::from_record(record.clone(), record.seq)
}
