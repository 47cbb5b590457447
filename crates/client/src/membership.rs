//! Changing who is in a conversation: starting one, adding and removing
//! members, leaving, updating keys. Every change is an MLS commit, built and
//! queued in one transaction with the group's pending state, submitted, and
//! retried when another member's commit won the epoch. Every device added is
//! one the key log lists.

use crate::ClientError;
use crate::conversations::{conversation_info, send_content};
use crate::keys::KeyLog;
use crate::outbox::CommitOutcome;
use crate::outbox::Outgoing;
use crate::own_account::check_own_account;
use crate::profile::{Profile, random_id};
use crate::provider::MlsProvider;
use crate::receive::drain;
use crate::session::{Anonymous, Session, look_up};
use crate::store::{self, Conversation, ConversationKind, GroupState, HistoryEntry};
use crate::transport::Transport;
use sotto_core::group::{self, CheckedKeyPackage, GroupError, PendingCommit};
use sotto_core::identity::{DeviceId, DeviceKey, Username};
use sotto_proto::v1::{ClaimKeyPackages, ErrorCode, client_frame, response};

/// How often a commit is retried when other members commit first.
pub(crate) const MAX_COMMIT_ATTEMPTS: usize = 8;

/// Checks a new group's name (1 to 64 characters, not one this account
/// already has) and its members' usernames, before anything is sent: the
/// members other than this account, each once.
pub(crate) fn new_group_members(
    profile: &Profile,
    name: &str,
    members: &[String],
) -> Result<Vec<Username>, ClientError> {
    if name.trim().is_empty() || name.len() > 64 {
        return Err(ClientError::Usage(
            "a group name must have 1 to 64 characters".into(),
        ));
    }
    if store::conversation(&profile.db, ConversationKind::Group, name)?.is_some() {
        return Err(ClientError::Usage(format!(
            "you already have a group named {name}"
        )));
    }
    let mut usernames = Vec::new();
    for member in members {
        let user = Username::parse(member)?;
        if user != profile.account.username && !usernames.contains(&user) {
            usernames.push(user);
        }
    }
    Ok(usernames)
}

/// Creates the group `name` with the given members; `admins`: with this
/// account as its first admin (`Some(read_only)`), or flat (`None`).
pub(crate) async fn create_group(
    s: &mut Session<'_>,
    name: &str,
    members: &[Username],
    admins: Option<bool>,
) -> Result<(), ClientError> {
    drain(s).await?;
    start_conversation(s, ConversationKind::Group, name, members, admins)
        .await
        .map(|_| ())
}

/// What an admin changes in a group with admins.
#[derive(Debug, Clone)]
pub(crate) enum AdminChange {
    /// Makes `user` an admin (`true`) or no longer one (`false`).
    Admin(Username, bool),
    /// Sets the group read-only for non-admins, or not.
    ReadOnly(bool),
}

/// Commits a change to the admin policy of the group `name` (only an
/// admin may; every member checks).
pub(crate) async fn change_admins(
    s: &mut Session<'_>,
    name: &str,
    change: AdminChange,
) -> Result<(), ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    let own = s.profile.account.username.clone();
    commit_with_retry(s, &group_id, |p, g, key| {
        let current = group::admin_policy(g)?.ok_or_else(|| {
            GroupError::Misuse(format!(
                "{name} has no admins: only a group created with --admins has them"
            ))
        })?;
        let next = match &change {
            AdminChange::Admin(user, admin) => {
                if current.is_admin(user) == *admin {
                    return Ok(None);
                }
                current.clone().with_admin(user.clone(), *admin)
            }
            AdminChange::ReadOnly(read_only) => {
                if current.read_only == *read_only {
                    return Ok(None);
                }
                group::AdminPolicy {
                    read_only: *read_only,
                    ..current.clone()
                }
            }
        };
        if next.admins.is_empty() {
            return Err(GroupError::Misuse(
                "a group with admins keeps at least one: make someone else an admin first".into(),
            ));
        }
        group::set_admin_policy(p, g, key, &own, &next).map(Some)
    })
    .await
}

/// Adds `user` (all their devices) to the group `name`.
pub(crate) async fn add_member(
    s: &mut Session<'_>,
    name: &str,
    user: &Username,
) -> Result<(), ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    let key_packages = claim(
        s.profile,
        s.key_log,
        &mut s.anonymous,
        s.connection,
        user,
        &[],
    )
    .await?;
    commit_with_retry(s, &group_id, |p, g, key| {
        group::add_members(p, g, key, &key_packages).map(Some)
    })
    .await?;
    // Tell the new members what this conversation is.
    send_content(
        s,
        &group_id,
        conversation_info(ConversationKind::Group, name),
    )
    .await?;
    Ok(())
}

/// Removes `user` (all their devices) from the group `name`.
pub(crate) async fn remove_member(
    s: &mut Session<'_>,
    name: &str,
    user: &Username,
) -> Result<(), ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    let own = s.profile.account.username.clone();
    commit_with_retry(s, &group_id, |p, g, key| {
        // Every member would refuse it (and so stop the conversation).
        if group::admin_policy(g)?.is_some_and(|policy| !policy.is_admin(&own)) {
            return Err(GroupError::Misuse(format!(
                "only an admin of {name} can remove someone"
            )));
        }
        group::remove_user(p, g, key, user).map(Some)
    })
    .await
}

/// Leaves the group `name`: proposes this device's removal (a remaining
/// member commits it) and stops showing the conversation's messages.
pub(crate) async fn leave_group(s: &mut Session<'_>, name: &str) -> Result<(), ClientError> {
    drain(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    let profile = &*s.profile;
    let outgoing = profile.in_transaction(|provider, tx| {
        let mut g = group::load(provider, &group_id)?;
        let proposal = group::leave(provider, &mut g, &profile.account.device)?;
        let recipients = group::recipients(&g);
        let token = group::send_token(provider, &g)?;
        let outgoing = Outgoing::message(random_id(), &group_id, &recipients, proposal, token);
        outgoing.queue(tx)?;
        store::set_group_state(tx, &group_id, GroupState::Left)?;
        Ok(outgoing)
    })?;
    s.outbox
        .submit(s.profile, &mut s.anonymous, &outgoing)
        .await
        .map(|_| ())
}

/// Updates this device's keys in the group `name` (post-compromise
/// security), retrying if another member commits first.
pub(crate) async fn update_keys(s: &mut Session<'_>, name: &str) -> Result<(), ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    commit_with_retry(s, &group_id, |p, g, key| {
        group::update_keys(p, g, key).map(Some)
    })
    .await
}

/// Claims KeyPackages for the devices of `user` (all of them, or just
/// `only`) and checks each against the transparency log: the account's
/// log entries must verify against a signed head consistent with ours,
/// its identity key must be the one pinned on first contact, and every
/// device offered must be one the log lists with the same key. Any
/// mismatch refuses the whole claim: nothing is sent to a ghost.
pub(crate) async fn claim(
    profile: &mut Profile,
    key_log: &mut KeyLog,
    anonymous: &mut Anonymous<'_>,
    logged_in: &mut Transport,
    user: &Username,
    only: &[DeviceId],
) -> Result<Vec<CheckedKeyPackage>, ClientError> {
    let request = ClaimKeyPackages {
        username: user.to_string(),
        device_ids: only.iter().map(|d| d.as_bytes().to_vec()).collect(),
    };
    // This account's own devices are claimed on the logged-in connection.
    let bundle = match look_up(
        anonymous,
        logged_in,
        client_frame::Body::ClaimKeyPackages(request),
    )
    .await
    {
        Ok(response::Result::KeyPackages(bundle)) => bundle,
        Ok(_) => return Err(ClientError::Protocol("expected KeyPackages".into())),
        Err(e) if e.server_code() == Some(ErrorCode::UnknownUser) => {
            return Err(ClientError::Usage(format!(
                "there is no account named {user} on this server"
            )));
        }
        Err(e) => return Err(e),
    };
    let log = bundle.account_log.as_ref().ok_or_else(|| {
        ClientError::KeyLog(format!(
            "the server sent keys for {user} without their key-log entries"
        ))
    })?;
    let state = key_log
        .accept_account_log(profile, anonymous, user, log, false)
        .await?;
    if state.identity_key.as_slice() != bundle.identity_key {
        return Err(ClientError::KeyLog(format!(
            "the server offered an identity key for {user} that is not the one in the key log; refusing"
        )));
    }
    let provider = profile.provider();
    let mut checked = Vec::new();
    for claimed in &bundle.devices {
        let key_package = group::check_key_package(&provider, user, &bundle.identity_key, claimed)
            .map_err(|e| {
                ClientError::KeyLog(format!(
                    "refused a device the server offered for {user}: {e}"
                ))
            })?;
        let device = &key_package.device;
        if state.devices.get(device.device_id.as_bytes()) != Some(&device.device_key) {
            return Err(ClientError::KeyLog(format!(
                "the server offered device {} for {user}, which is not in the key log; refusing (a ghost device?)",
                device.device_id
            )));
        }
        if *user == profile.account.username && device.device_id == profile.account.device_id {
            continue;
        }
        checked.push(key_package);
    }
    if checked.is_empty() && only.is_empty() {
        return Err(ClientError::Usage(format!(
            "{user} has no device that can be added right now"
        )));
    }
    Ok(checked)
}

/// KeyPackages for this account's other devices, to add them wherever
/// this device starts or joins a conversation: only devices that a device
/// of this account added (an unknown one is warned about, never added).
pub(crate) async fn claim_own_devices(
    s: &mut Session<'_>,
) -> Result<Vec<CheckedKeyPackage>, ClientError> {
    let own = s.profile.account.username.clone();
    let (_, review) = check_own_account(s).await?;
    let Some(review) = review else {
        return Err(ClientError::KeyLog(
            "your own account's key log does not add up, so no conversation is started; \
             see `sotto warnings`"
                .into(),
        ));
    };
    let others: Vec<DeviceId> = review
        .state
        .devices
        .keys()
        .filter(|id| !review.unknown_devices.contains(*id))
        .filter_map(|id| DeviceId::from_slice(id).ok())
        .filter(|id| *id != s.profile.account.device_id)
        .collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    match claim(
        s.profile,
        s.key_log,
        &mut s.anonymous,
        s.connection,
        &own,
        &others,
    )
    .await
    {
        Ok(kps) => Ok(kps),
        // Another device with no KeyPackage left: add it later.
        Err(e) if e.server_code() == Some(ErrorCode::NoKeyPackage) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Creates an MLS group for a new conversation with `members`, commits
/// it, and tells the members what the conversation is.
pub(crate) async fn start_conversation(
    s: &mut Session<'_>,
    kind: ConversationKind,
    name: &str,
    members: &[Username],
    admins: Option<bool>,
) -> Result<(Conversation, Vec<u8>), ClientError> {
    let mut key_packages = claim_own_devices(s).await?;
    for user in members {
        key_packages.extend(
            claim(
                s.profile,
                s.key_log,
                &mut s.anonymous,
                s.connection,
                user,
                &[],
            )
            .await?,
        );
    }
    // Devices joining a group made of this account's devices alone do not
    // list it until its first content names it (see `inbound`).
    let adds_anyone = !key_packages.is_empty();
    let profile = &*s.profile;
    let (conversation, group_id, outgoing) = profile.in_transaction(|provider, tx| {
        let mut g = match admins {
            None => group::create_group(provider, &profile.account)?,
            Some(read_only) => {
                group::create_group_with_admins(provider, &profile.account, read_only)?
            }
        };
        let group_id = g.group_id().to_vec();
        let conversation = store::ensure_conversation(tx, kind, name)?;
        store::insert_group(tx, &group_id, Some(conversation.id))?;
        let outgoing = if key_packages.is_empty() {
            None
        } else {
            let pending =
                group::add_members(provider, &mut g, &profile.account.device, &key_packages)?;
            let outgoing = Outgoing::commit(&group_id, pending);
            outgoing.queue(tx)?;
            Some(outgoing)
        };
        Ok((conversation, group_id, outgoing))
    })?;
    // A group of one exists only locally until someone is added.
    if let Some(outgoing) = outgoing
        && let CommitOutcome::Rejected { current_epoch } = s
            .outbox
            .submit(s.profile, &mut s.anonymous, &outgoing)
            .await?
    {
        return Err(ClientError::Protocol(format!(
            "the server refused a new group (it claims epoch {current_epoch})"
        )));
    }
    if adds_anyone {
        send_content(s, &group_id, conversation_info(kind, name)).await?;
    }
    Ok((conversation, group_id))
}

/// Commits the proposals other members sent (someone leaving), in every
/// active group that has some.
pub(crate) async fn commit_pending_proposals(
    s: &mut Session<'_>,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let mut entries = Vec::new();
    for group_id in store::active_groups(&s.profile.db)? {
        if group::has_pending_proposals(&s.profile.provider(), &group_id) {
            commit_with_retry(s, &group_id, |p, g, key| {
                if g.pending_proposals().next().is_none() {
                    return Ok(None);
                }
                group::commit_pending_proposals(p, g, key).map(Some)
            })
            .await?;
            entries.extend(drain(s).await?);
        }
    }
    Ok(entries)
}

/// Builds a commit with `build`, submits it, and if another member's
/// commit won the epoch, processes that one and tries again. `build`
/// returns `None` when there is nothing to commit (any more).
pub(crate) async fn commit_with_retry(
    s: &mut Session<'_>,
    group_id: &[u8],
    build: impl Fn(
        &MlsProvider<'_>,
        &mut openmls::group::MlsGroup,
        &DeviceKey,
    ) -> Result<Option<PendingCommit>, GroupError>,
) -> Result<(), ClientError> {
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        // Nothing (left) to commit: another member's commit did it.
        let Some(outgoing) = stage_commit(s.profile, group_id, &build)? else {
            return Ok(());
        };
        match s
            .outbox
            .submit(s.profile, &mut s.anonymous, &outgoing)
            .await?
        {
            CommitOutcome::Accepted => {
                // A group with an open invite link: joiners need the
                // GroupInfo of the epoch this commit started.
                if let Err(e) = crate::invite_links::publish_group_info(s, group_id).await {
                    tracing::warn!("could not publish the group info for its invite link: {e}");
                }
                return Ok(());
            }
            CommitOutcome::Rejected { .. } => {
                drain(s).await?;
            }
        }
    }
    Err(ClientError::Conflict(MAX_COMMIT_ATTEMPTS))
}

/// Builds a commit and queues it in the outbox, in one transaction with
/// the group's pending-commit state.
pub(crate) fn stage_commit(
    profile: &Profile,
    group_id: &[u8],
    build: &impl Fn(
        &MlsProvider<'_>,
        &mut openmls::group::MlsGroup,
        &DeviceKey,
    ) -> Result<Option<PendingCommit>, GroupError>,
) -> Result<Option<Outgoing>, ClientError> {
    profile.in_transaction(|provider, tx| {
        let mut g = group::load(provider, group_id)?;
        let Some(pending) = build(provider, &mut g, &profile.account.device)? else {
            return Ok(None);
        };
        let outgoing = Outgoing::commit(group_id, pending);
        outgoing.queue(tx)?;
        Ok(Some(outgoing))
    })
}
