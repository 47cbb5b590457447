//! Closing a group's invite links (`sotto-server invite-link close`): the
//! closure is a transparency-report entry (kind [`KIND_INVITE_LINK_CLOSE`],
//! naming no group and no account), recorded in the same transaction as
//! the closure, so the published report counts every one.

use super::{
    KIND_INVITE_LINK_CLOSE, LegalError, MAX_REQUEST_ID_BYTES, ReportEntry, check_text, legal_key,
};
use crate::store::{GroupId, InviteClosingSnapshot, InviteLinkStore, LegalStore, UnixDay};

/// Closes every open invite link of `group_id` (none may be published or
/// joined by again, and the stored sealed GroupInfos are erased), recorded
/// under `request_id`. Returns how many links were closed. Refuses,
/// recording nothing, a group with no open link.
pub async fn close_invite_links<S: LegalStore + InviteLinkStore>(
    store: &S,
    group_id: &GroupId,
    request_id: &str,
    today: UnixDay,
) -> Result<(u64, ReportEntry), LegalError> {
    check_text("request id", request_id, MAX_REQUEST_ID_BYTES)?;
    let key = legal_key(store).await?;
    let request_id = request_id.to_owned();
    let group = group_id.to_string();
    let plan = move |snapshot: InviteClosingSnapshot| {
        if snapshot.open_links == 0 {
            return Err(LegalError::InvalidInput(format!(
                "group {group} has no open invite link; nothing was changed or recorded"
            )));
        }
        let entry = ReportEntry::after(
            snapshot.last_entry.as_ref(),
            &key,
            &request_id,
            today,
            KIND_INVITE_LINK_CLOSE,
            0,
        )?;
        Ok(entry.to_record())
    };
    let (closed, record) = store
        .close_invite_links(group_id.clone(), today, plan)
        .await?;
    Ok((
        closed,
        ReportEntry::from_record(record.clone(), record.seq)?,
    ))
}
