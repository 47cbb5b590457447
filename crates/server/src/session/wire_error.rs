//! Errors as the client sees them: one constructor per refusal, each saying
//! what happened and what to do, and the mapping of storage failures to
//! `INTERNAL` (logged here, never shown to the client in detail).

use super::RequestResult;
use crate::link_rendezvous::LinkError;
use crate::rate_limit::Limited;
use crate::store::{
    AddDeviceError, CommitError, DeviceId, EnqueueError, GroupId, InviteLinkError, RegisterError,
    StoreError,
};
use sotto_proto::v1::{self, ErrorCode, response};
use sotto_transparency::LogError;
use std::time::Duration;

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> v1::Error {
    v1::Error::new(code, message)
}

pub(super) fn internal(e: &StoreError) -> v1::Error {
    if matches!(e, StoreError::Full) {
        tracing::error!("storage is full: refusing writes until space is freed");
        return error(
            ErrorCode::Internal,
            "the server's storage is full, so nothing was stored; try again later",
        );
    }
    tracing::error!(error = %e, "storage failed while handling a request");
    error(
        ErrorCode::Internal,
        "the server could not complete this request; try again later",
    )
}

pub(super) fn done() -> RequestResult {
    Ok(Some(response::Result::Done(v1::Done::default())))
}

/// A send stored for every recipient but the `skipped` ones (full
/// mailboxes): not an error, the sender is only told.
pub(super) fn sent(skipped: &[DeviceId]) -> RequestResult {
    if !skipped.is_empty() {
        tracing::debug!(
            skipped = skipped.len(),
            "stored a send; recipients with a full mailbox were skipped"
        );
    }
    Ok(Some(response::Result::Done(v1::Done {
        skipped_recipients: skipped.iter().map(|d| d.as_bytes().to_vec()).collect(),
    })))
}

/// Shortens client-supplied text before echoing it in an error.
pub(super) fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A recipient no account has: the whole request is refused, so nobody can
/// make the server keep mailboxes for invented devices. (A removed device
/// is not refused but skipped, by the store: a commit that removes a
/// device from a group still names it.)
pub(super) fn unknown_device(device: DeviceId) -> v1::Error {
    error(
        ErrorCode::UnknownDevice,
        format!(
            "unknown device {device}: no account has it, so nothing was sent; \
             recipients must be devices their account's key log lists"
        ),
    )
}

/// A client-supplied log entry was refused.
pub(super) fn bad_log_entry(what: &str, e: &LogError) -> v1::Error {
    let code = match e {
        LogError::BadSignature(_) => ErrorCode::AuthenticationFailed,
        _ => ErrorCode::InvalidRequest,
    };
    error(code, format!("{what}: {e}"))
}

pub(super) fn link_error(e: LinkError) -> v1::Error {
    let code = match e {
        LinkError::Unknown => ErrorCode::UnknownLink,
        LinkError::InUse | LinkError::NotJoined | LinkError::TooMany => ErrorCode::InvalidRequest,
    };
    error(code, e.to_string())
}

pub(super) fn stale_sequence(expected: u64) -> v1::Error {
    error(
        ErrorCode::InvalidRequest,
        format!(
            "another change to this account was logged first; fetch the account log and sign \
             the entry again with account_seq {expected}"
        ),
    )
}

pub(super) fn not_authorized() -> v1::Error {
    error(
        ErrorCode::NotAuthorized,
        "the send capability is not this group's; process pending messages (a commit may have changed it) and retry",
    )
}

pub(super) fn rate_limited(what: &str, wait: Duration) -> v1::Error {
    let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    v1::Error {
        retry_after_ms,
        ..error(
            ErrorCode::RateLimited,
            format!("too many {what}; retry in {retry_after_ms} ms"),
        )
    }
}

pub(super) fn mismatched_framing(message: String) -> v1::Error {
    error(ErrorCode::MismatchedFraming, message)
}

pub(super) fn unknown_group(group: &GroupId) -> v1::Error {
    error(ErrorCode::UnknownGroup, format!("unknown group {group}"))
}

impl From<Limited> for v1::Error {
    fn from(limited: Limited) -> Self {
        rate_limited(limited.what, limited.wait)
    }
}

/// Storage failures are the server's fault: `INTERNAL`, logged, no detail.
impl From<StoreError> for v1::Error {
    fn from(e: StoreError) -> Self {
        internal(&e)
    }
}

impl From<LinkError> for v1::Error {
    fn from(e: LinkError) -> Self {
        link_error(e)
    }
}

/// An authorised sender reused a queued message's id for other bytes.
fn id_in_use() -> v1::Error {
    error(
        ErrorCode::InvalidRequest,
        "this message id is taken by another message; send with a fresh random id",
    )
}

impl From<EnqueueError> for v1::Error {
    fn from(e: EnqueueError) -> Self {
        match e {
            EnqueueError::UnknownGroup(group) => unknown_group(&group),
            EnqueueError::NotAuthorized => not_authorized(),
            EnqueueError::WrongEpoch { framed, capability } => mismatched_framing(format!(
                "the message is framed for epoch {framed} but its capability is for epoch {capability}"
            )),
            EnqueueError::UnknownDevice(device) => unknown_device(device),
            EnqueueError::IdInUse(_) => id_in_use(),
            EnqueueError::Store(e) => internal(&e),
        }
    }
}

impl From<CommitError> for v1::Error {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::StaleEpoch { submitted, current } => v1::Error {
                current_epoch: current,
                ..error(
                    ErrorCode::StaleEpoch,
                    format!(
                        "commit for epoch {submitted} rejected: group is at epoch {current}; \
                         process pending messages and retry"
                    ),
                )
            },
            CommitError::UnknownGroup(group) => unknown_group(&group),
            CommitError::NotAuthorized => not_authorized(),
            CommitError::UnknownDevice(device) => unknown_device(device),
            CommitError::IdInUse(_) => id_in_use(),
            CommitError::InviteLinkClosed => invite_link_closed(),
            CommitError::Store(e) => internal(&e),
        }
    }
}

/// The operator closed the invite link: nobody joins by it.
fn invite_link_closed() -> v1::Error {
    error(
        ErrorCode::InviteLinkClosed,
        "this invite link was closed by the server's operator; ask the group's admins for \
         another way in",
    )
}

impl From<InviteLinkError> for v1::Error {
    fn from(e: InviteLinkError) -> Self {
        match e {
            InviteLinkError::UnknownLink => error(
                ErrorCode::UnknownLink,
                "no group is known by this invite link (check the link, or ask an admin whether \
                 it was replaced)",
            ),
            InviteLinkError::Closed => invite_link_closed(),
            InviteLinkError::UnknownGroup(group) => unknown_group(&group),
            InviteLinkError::NotAuthorized => not_authorized(),
            InviteLinkError::StaleEpoch { submitted, current } => v1::Error {
                current_epoch: current,
                ..error(
                    ErrorCode::StaleEpoch,
                    format!(
                        "group info for epoch {submitted} refused: group is at epoch {current}"
                    ),
                )
            },
            InviteLinkError::Store(e) => internal(&e),
        }
    }
}

impl From<RegisterError> for v1::Error {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::BadInvite => error(
                ErrorCode::RegistrationClosed,
                "this invite code is unknown or was already used",
            ),
            RegisterError::UsernameTaken => error(
                ErrorCode::UsernameTaken,
                "the username is taken; choose another",
            ),
            RegisterError::DeviceIdTaken(id) => device_id_taken(id),
            RegisterError::Store(e) => internal(&e),
        }
    }
}

impl From<AddDeviceError> for v1::Error {
    fn from(e: AddDeviceError) -> Self {
        match e {
            AddDeviceError::DeviceIdTaken(id) => device_id_taken(id),
            AddDeviceError::StaleSequence { expected } => stale_sequence(expected),
            AddDeviceError::UnknownUser => {
                error(ErrorCode::UnknownUser, "this account no longer exists")
            }
            AddDeviceError::Store(e) => internal(&e),
        }
    }
}

fn device_id_taken(id: DeviceId) -> v1::Error {
    error(
        ErrorCode::InvalidRequest,
        format!("device id {id} is already registered; generate a new random device id"),
    )
}
