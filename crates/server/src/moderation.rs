//! The operator's side of abuse reports (`sotto-server moderation`): the
//! queue's reports, each verified with `sotto_core::franking` against this
//! server's franking key and the sender device key its transparency log
//! lists, and their resolution. The server learns only what reporters chose
//! to send; a resolved report keeps only its days and the action.

use ed25519_dalek::VerifyingKey;
use prost::Message as _;
use sotto_core::franking::{self, AbuseReport, ReportReason, ReportRejected};
use sotto_proto::v1::{AccountEvent, LogEntry, account_event::Change};
use zeroize::Zeroizing;

use crate::legal::{self, LegalError};
use crate::store::{LegalStore, LogStore, ModerationRecord, ModerationStore, StoreError, UnixDay};

/// What an operator may do about a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: the report is closed.
    None,
    /// The sender's account is disabled until enabled (its devices may not
    /// log in), counted in the transparency report.
    DisableAccount,
}

impl Action {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::DisableAccount => "disable-account",
        }
    }
}

/// Why a moderation command failed.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Legal(#[from] LegalError),
    #[error("no report {0} in the moderation queue")]
    UnknownReport(u64),
    #[error("report {0} is already resolved")]
    AlreadyResolved(u64),
    #[error("report {id} does not verify ({reason}): no account is disabled on its word")]
    Unverified { id: u64, reason: ReportRejected },
}

/// One report as the operator sees it.
#[derive(Debug, Clone)]
pub struct ReportView {
    pub record: ModerationRecord,
    /// The report as the reporter sent it (`None` once resolved, or if the
    /// stored bytes are unreadable).
    pub report: Option<AbuseReport>,
    /// Its verification: `Ok` with what it proves, or why it failed.
    /// `None` once resolved.
    pub verified: Option<Result<Verified, ReportRejected>>,
}

/// What a verified report proves.
#[derive(Debug, Clone)]
pub struct Verified {
    pub sender_username: String,
    pub sender_device_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub accepted_at_ms: u64,
    pub reason: ReportReason,
    pub note: String,
    /// The content as people read it.
    pub text: String,
}

/// This server's franking public key (created if it has none yet).
pub async fn franking_key<S: LogStore>(store: &S) -> Result<VerifyingKey, StoreError> {
    let fresh =
        Zeroizing::new(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).to_bytes());
    let secret = store.franking_key_secret(fresh).await?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key())
}

/// The key the transparency log lists for `device_id` of `username`, if
/// any (a removed device's too: it signed what it sent before).
async fn logged_device_key<S: LogStore>(
    store: &S,
    username: &str,
    device_id: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let records = store.account_log(username).await?;
    for record in records {
        let Ok(entry) = LogEntry::decode(record.entry.as_slice()) else {
            continue;
        };
        if entry.web_release.is_some() {
            continue;
        }
        let Ok(event) = AccountEvent::decode(entry.event.as_slice()) else {
            continue;
        };
        if event.username != username {
            continue;
        }
        if let Some(Change::DeviceAdded(added)) = event.change
            && added.device_id == device_id
        {
            return Ok(Some(added.device_key));
        }
    }
    Ok(None)
}

/// Verifies one stored report.
pub async fn verify<S: LogStore>(
    store: &S,
    franking_key: &VerifyingKey,
    report: &AbuseReport,
) -> Result<Result<Verified, ReportRejected>, StoreError> {
    let device_key =
        logged_device_key(store, &report.sender_username, &report.sender_device_id).await?;
    // A device the log does not list: the signature check fails with the
    // same reason as another sender's.
    let device_key = device_key.unwrap_or_default();
    Ok(
        franking::verify_report(report, franking_key, &device_key).map(|verified| Verified {
            sender_username: report.sender_username.clone(),
            sender_device_id: report.sender_device_id.clone(),
            group_id: verified.group_id,
            accepted_at_ms: verified.accepted_at_ms,
            reason: ReportReason::try_from(report.reason).unwrap_or(ReportReason::Unspecified),
            note: report.note.clone(),
            text: franking::content_text(&verified.content),
        }),
    )
}

/// Every report in the queue, oldest first, each verified if still open.
pub async fn list<S: LogStore + ModerationStore>(
    store: &S,
) -> Result<Vec<ReportView>, ModerationError> {
    let key = franking_key(store).await?;
    let mut views = Vec::new();
    for record in store.moderation_reports().await? {
        views.push(view(store, &key, record).await?);
    }
    Ok(views)
}

/// One report, verified if still open.
pub async fn show<S: LogStore + ModerationStore>(
    store: &S,
    id: u64,
) -> Result<ReportView, ModerationError> {
    let key = franking_key(store).await?;
    let record = store
        .moderation_report(id)
        .await?
        .ok_or(ModerationError::UnknownReport(id))?;
    view(store, &key, record).await
}

async fn view<S: LogStore>(
    store: &S,
    key: &VerifyingKey,
    record: ModerationRecord,
) -> Result<ReportView, ModerationError> {
    let report = record
        .report
        .as_deref()
        .and_then(|bytes| AbuseReport::decode(bytes).ok());
    let verified = match &report {
        Some(report) => Some(verify(store, key, report).await?),
        None if record.report.is_some() => Some(Err(ReportRejected::Malformed("stored report"))),
        None => None,
    };
    Ok(ReportView {
        record,
        report,
        verified,
    })
}

/// Resolves report `id` with `action`. Disabling needs a report that
/// verifies: its sender's account is disabled until enabled, recorded in
/// the transparency report (kind `moderation-disable`, counted, without the
/// name). Then the report's content and reporter are erased.
pub async fn resolve<S: LogStore + ModerationStore + LegalStore>(
    store: &S,
    id: u64,
    action: Action,
    today: UnixDay,
) -> Result<Option<legal::ReportEntry>, ModerationError> {
    let view = show(store, id).await?;
    if view.record.resolved_day.is_some() {
        return Err(ModerationError::AlreadyResolved(id));
    }
    let entry = match action {
        Action::None => None,
        Action::DisableAccount => {
            let verified = match view.verified {
                Some(Ok(verified)) => verified,
                Some(Err(reason)) => return Err(ModerationError::Unverified { id, reason }),
                None => return Err(ModerationError::AlreadyResolved(id)),
            };
            Some(
                legal::disable_for_report(
                    store,
                    &verified.sender_username,
                    &format!("moderation-report-{id}"),
                    today,
                )
                .await?,
            )
        }
    };
    if !store
        .resolve_report(id, action.as_str().to_owned(), today)
        .await?
    {
        return Err(ModerationError::AlreadyResolved(id));
    }
    Ok(entry)
}
