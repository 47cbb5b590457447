//! Invite links of public groups (docs/PUBLIC_GROUPS.md): members publish
//! the group's sealed GroupInfo under the link id (authorised by the
//! group's send capability); anyone with the link fetches it. A joiner's
//! external commit goes through `SubmitCommit` with the link id
//! (`messages.rs`). The server never sees the link's secret, so it cannot
//! read the GroupInfo, and refuses everything for a link its operator
//! closed (`sotto-server invite-link close`).

use super::parse::{capability_hash, group_id};
use super::wire_error::{done, error, not_authorized};
use super::{RequestResult, Session, now_seconds};
use crate::store::{GroupInfoPublication, InviteLinkId, Store};
use sotto_proto::v1::{self, ErrorCode, response};

/// Parses a link id (16 bytes).
pub(super) fn link_id(bytes: &[u8]) -> Result<InviteLinkId, v1::Error> {
    bytes.try_into().map_err(|_| {
        error(
            ErrorCode::InvalidRequest,
            format!("an invite link id is 16 bytes, got {}", bytes.len()),
        )
    })
}

/// The key a link's joins and fetches are rate-limited under (in the
/// per-capability buckets: a link is, to the server, a capability to join).
pub(super) fn link_budget_key(link_id: &InviteLinkId) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::new()
        .chain_update(b"sotto invite link budget")
        .chain_update(link_id)
        .finalize()
        .into()
}

impl<S: Store> Session<S> {
    pub(super) async fn publish_group_info(
        &mut self,
        publish: v1::PublishGroupInfo,
    ) -> RequestResult {
        let token_hash = capability_hash(&publish.send_token).ok_or_else(not_authorized)?;
        self.ctx
            .rate_limits
            .charge_send(&mut self.buckets, self.address, Some(token_hash))?;
        let link_id = link_id(&publish.link_id)?;
        let group_id = group_id(&publish.group_id)?;
        if publish.sealed_group_info.is_empty()
            || publish.sealed_group_info.len() > sotto_proto::MAX_PAYLOAD_BYTES
        {
            return Err(error(
                ErrorCode::TooLarge,
                format!(
                    "a sealed group info is 1 to {} bytes",
                    sotto_proto::MAX_PAYLOAD_BYTES
                ),
            ));
        }
        self.ctx
            .store
            .publish_group_info(GroupInfoPublication {
                link_id,
                group_id,
                epoch: publish.epoch,
                token_hash,
                sealed: publish.sealed_group_info,
                now: now_seconds(),
            })
            .await?;
        done()
    }

    pub(super) async fn fetch_group_info(&mut self, fetch: v1::FetchGroupInfo) -> RequestResult {
        let link_id = link_id(&fetch.link_id)?;
        self.ctx.rate_limits.charge_send(
            &mut self.buckets,
            self.address,
            Some(link_budget_key(&link_id)),
        )?;
        let info = self.ctx.store.invite_group_info(link_id).await?;
        Ok(Some(response::Result::InviteGroupInfo(
            v1::InviteGroupInfo {
                group_id: info.group_id.as_bytes().to_vec(),
                epoch: info.epoch,
                sealed_group_info: info.sealed,
            },
        )))
    }
}
