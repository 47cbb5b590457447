//! Invite links of public groups (docs/PUBLIC_GROUPS.md, "Invite links"):
//! an admin opens one (`sotto group invite NAME`), members publish the
//! group's GroupInfo sealed for it after each commit of theirs, and anyone
//! with the link joins by an external commit (`sotto group join LINK`),
//! after checking every member against the key log as for a Welcome.

use crate::ClientError;
use crate::membership::{commit_pending_proposals, commit_with_retry};
use crate::profile::{now_ms, random_id};
use crate::receive::drain;
use crate::session::Session;
use crate::store::{self, ConversationKind, EntryKind, GroupState, HistoryEntry};
use rand::RngCore as _;
use sotto_core::group::{
    self, AdminPolicy, ExternalJoin, GroupError, INVITE_LINK_ID_LEN, INVITE_SECRET_LEN, InviteLink,
    SEAL_NONCE_LEN,
};
use sotto_proto::v1::{
    ErrorCode, FetchGroupInfo, PublishGroupInfo, SubmitCommit, client_frame, response,
};

/// Attempts at building a join, each after looking up the accounts the
/// previous one found unverified.
const JOIN_ATTEMPTS: usize = 3;

/// The server part of an invite link: the host (and port) of the server's
/// URL.
pub(crate) fn server_host(server_url: &str) -> &str {
    let rest = server_url
        .split_once("://")
        .map_or(server_url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// A host without its `:port`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Opens an invite link for the group `name` (only an admin may; every
/// member checks) or, if it has one, returns it. The link goes into the
/// group's admin policy; the GroupInfo is published for it at once.
pub(crate) async fn create_invite_link(
    s: &mut Session<'_>,
    name: &str,
    server_url: &str,
) -> Result<String, ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    let own = s.profile.account.username.clone();
    let mut id = [0u8; INVITE_LINK_ID_LEN];
    let mut secret = zeroize::Zeroizing::new([0u8; INVITE_SECRET_LEN]);
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let fresh = InviteLink::from_random(id, *secret);
    commit_with_retry(s, &group_id, |p, g, key| {
        let current = group::admin_policy(g)?.ok_or_else(|| {
            GroupError::Misuse(format!(
                "{name} has no admins: only a group created with --admins can have an invite link"
            ))
        })?;
        if current.invite.is_some() {
            return Ok(None);
        }
        let next = AdminPolicy {
            invite: Some(fresh.clone()),
            ..current
        };
        group::set_admin_policy(p, g, key, &own, &next).map(Some)
    })
    .await?;
    publish_group_info(s, &group_id).await?;
    let policy = group::admin_policy(&group::load(&s.profile.provider(), &group_id)?)?;
    let link = policy.and_then(|p| p.invite).ok_or_else(|| {
        ClientError::Internal("the group has no invite link after opening one".into())
    })?;
    Ok(link.url(server_host(server_url)))
}

/// Closes the group's invite link (only an admin may): it goes from the
/// admin policy, so every member refuses a joiner by it from then on.
/// `false` if the group had no link.
pub(crate) async fn close_invite_link(
    s: &mut Session<'_>,
    name: &str,
) -> Result<bool, ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    let open = group::admin_policy(&group::load(&s.profile.provider(), &group_id)?)?
        .is_some_and(|p| p.invite.is_some());
    if !open {
        return Ok(false);
    }
    let own = s.profile.account.username.clone();
    commit_with_retry(s, &group_id, |p, g, key| {
        let Some(current) = group::admin_policy(g)?.filter(|p| p.invite.is_some()) else {
            return Ok(None);
        };
        let next = AdminPolicy {
            invite: None,
            ..current
        };
        group::set_admin_policy(p, g, key, &own, &next).map(Some)
    })
    .await?;
    Ok(true)
}

/// Publishes the group's GroupInfo of its current epoch, sealed for its
/// invite link, if it has one (called after each commit of this device).
pub(crate) async fn publish_group_info(
    s: &mut Session<'_>,
    group_id: &[u8],
) -> Result<(), ClientError> {
    let request = {
        let provider = s.profile.provider();
        let g = group::load(&provider, group_id)?;
        let name = store::group(&s.profile.db, group_id)?
            .and_then(|row| row.conversation_id)
            .map(|id| store::conversation_by_id(&s.profile.db, id))
            .transpose()?
            .flatten()
            .map(|c| c.name)
            .unwrap_or_default();
        let mut nonce = [0u8; SEAL_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let Some(sealed) =
            group::sealed_group_info(&provider, &g, &s.profile.account.device, &name, nonce)?
        else {
            return Ok(());
        };
        PublishGroupInfo {
            group_id: group_id.to_vec(),
            link_id: sealed.link_id.to_vec(),
            epoch: sealed.epoch,
            sealed_group_info: sealed.sealed,
            send_token: group::send_token(&provider, &g)?,
        }
    };
    s.anonymous
        .send(group_id, client_frame::Body::PublishGroupInfo(request))
        .await?;
    Ok(())
}

/// Joins a group by its invite link: fetches and opens the sealed
/// GroupInfo, checks every member against the key log (looking accounts up
/// as for a Welcome), and submits this device's external commit. Returns
/// the conversation's name and its first history line.
pub(crate) async fn join_by_invite_link(
    s: &mut Session<'_>,
    url: &str,
    server_url: &str,
) -> Result<(String, Vec<HistoryEntry>), ClientError> {
    let (server, link) = InviteLink::parse_url(url)?;
    let own_server = server_host(server_url);
    // Hosts only: the nodes of one deployment may answer on several ports.
    if without_port(&server) != without_port(own_server) {
        return Err(ClientError::Usage(format!(
            "this invite link is for the server {server}, but this account is on {own_server}"
        )));
    }
    drain(s).await?;
    let fetched = s
        .anonymous
        .request(client_frame::Body::FetchGroupInfo(FetchGroupInfo {
            link_id: link.id().to_vec(),
        }))
        .await?;
    let response::Result::InviteGroupInfo(info) = fetched else {
        return Err(ClientError::Protocol(
            "the server answered an invite link's fetch with something else".into(),
        ));
    };
    if store::group(&s.profile.db, &info.group_id)?.is_some_and(|g| g.state == GroupState::Active) {
        return Err(ClientError::Usage(
            "you are already a member of this group".into(),
        ));
    }
    let join = build_join(s, &link, info.epoch, &info.sealed_group_info).await?;
    if join.group_id != info.group_id {
        abandon(s, &join.group_id);
        return Err(ClientError::Protocol(
            "the invite link's group info is for another group than the server says".into(),
        ));
    }
    if join.recipients.len() > sotto_proto::MAX_RECIPIENTS {
        abandon(s, &join.group_id);
        return Err(ClientError::Usage(format!(
            "this group has more than {} devices; joining it by invite link is not supported yet",
            sotto_proto::MAX_RECIPIENTS
        )));
    }
    let commit = SubmitCommit {
        message_id: random_id(),
        group_id: join.group_id.clone(),
        epoch: join.epoch,
        recipients: join
            .recipients
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect(),
        commit: join.commit.clone(),
        next_token_hash: join.next_token_hash.clone(),
        invite_link_id: link.id().to_vec(),
        ..SubmitCommit::default()
    };
    let message_id = commit.message_id.clone();
    if let Err(e) = s
        .anonymous
        .send(&join.group_id, client_frame::Body::SubmitCommit(commit))
        .await
    {
        abandon(s, &join.group_id);
        return Err(match e {
            ClientError::Server(err) if err.code == ErrorCode::StaleEpoch as i32 => {
                ClientError::Usage(
                    "the group info published for this invite link is out of date: the group \
                     changed since (an admin may have closed the link); try again later, or ask \
                     an admin for a new link"
                        .into(),
                )
            }
            other => other,
        });
    }
    let (name, entries) = s.profile.in_transaction(|_, tx| {
        let wanted = if join.name.trim().is_empty() {
            format!(
                "group-{}",
                hex::encode(join.group_id.get(..4).unwrap_or(&join.group_id))
            )
        } else {
            join.name.clone()
        };
        let name = store::free_group_name(tx, &wanted)?;
        let conversation = store::ensure_conversation(tx, ConversationKind::Group, &name)?;
        store::insert_group(tx, &join.group_id, Some(conversation.id))?;
        let text = format!("you joined {name} by invite link");
        let id = [message_id.as_slice(), &[0xff, 0]].concat();
        let now = now_ms();
        let line = store::NewMessage {
            id: &id,
            sender: "system",
            kind: EntryKind::System,
            text: &text,
            sent_at_ms: now,
        };
        let entry = store::insert_message(tx, &conversation, &line, now)?;
        Ok((name, entry.into_iter().collect::<Vec<_>>()))
    })?;
    if let Err(e) = publish_group_info(s, &join.group_id).await {
        tracing::warn!("joined, but could not publish the group info for the invite link: {e}");
    }
    Ok((name, entries))
}

/// Builds the join, looking up the accounts of members the key log has
/// not checked yet and trying again (as a Welcome is processed).
async fn build_join(
    s: &mut Session<'_>,
    link: &InviteLink,
    epoch: u64,
    sealed: &[u8],
) -> Result<ExternalJoin, ClientError> {
    for _ in 0..JOIN_ATTEMPTS {
        s.key_log.start_round();
        let key_log = &*s.key_log;
        let account = &s.profile.account;
        let built = s.profile.in_transaction(|provider, _| {
            Ok(group::join_by_link(
                provider, account, link, epoch, sealed, key_log,
            )?)
        });
        match built {
            Err(ClientError::Group(GroupError::Unverified(users))) => {
                for user in users {
                    s.key_log
                        .verify_account(s.profile, &mut s.anonymous, s.connection, &user)
                        .await?;
                    s.key_log.mark_fresh(user);
                }
            }
            other => return other,
        }
    }
    Err(ClientError::KeyLog(
        "the group's members could not be checked against the key log; try again".into(),
    ))
}

/// Deletes the group a refused join stored (logged if that fails: the
/// group is unused either way).
fn abandon(s: &Session<'_>, group_id: &[u8]) {
    if let Err(e) = s
        .profile
        .in_transaction(|provider, _| Ok(group::abandon_join(provider, group_id)?))
    {
        tracing::warn!("could not delete the state of a refused join: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_names_the_server_by_host_and_port() {
        assert_eq!(server_host("wss://chat.example:8443/"), "chat.example:8443");
        assert_eq!(server_host("ws://127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(without_port("chat.example:8443"), "chat.example");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("chat.example"), "chat.example");
    }
}
