//! What this device does to a group: create it, add and remove members,
//! update its own keys, leave, encrypt; and the life of its own commit
//! (pending until the server accepts it, then merged, or cleared).

use super::admins::AdminPolicy;
use super::{
    CheckedKeyPackage, GroupError, RosterChange, SEND_CAPABILITY_LABEL, create_config, members,
    mls, pad_to_bucket, recipients, send_token, serialize, token_hash,
};
use crate::identity::{Account, DeviceId, DeviceKey, MemberId, Username};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;

/// A commit waiting for the server's verdict. The group holds it as its
/// pending commit: merge it when the server accepts, clear it otherwise.
/// `Debug` leaves out the send capability.
pub struct PendingCommit {
    /// The epoch the commit was created in.
    pub epoch: u64,
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    /// Devices that must receive the commit: every member, this device and
    /// any being removed included (see [`super::recipients`]); none for a
    /// group's first commit, when this device is its only member.
    pub recipients: Vec<DeviceId>,
    /// Devices that must receive the Welcome.
    pub welcome_recipients: Vec<DeviceId>,
    /// The current epoch's send capability (empty for a new group's first
    /// commit, which the server accepts without one).
    pub send_token: Vec<u8>,
    /// SHA-256 of the capability of the epoch the commit starts.
    pub next_token_hash: Vec<u8>,
}

impl std::fmt::Debug for PendingCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCommit")
            .field("epoch", &self.epoch)
            .field("commit_len", &self.commit.len())
            .field("welcome_len", &self.welcome.as_ref().map(Vec::len))
            .field("recipients", &self.recipients)
            .field("welcome_recipients", &self.welcome_recipients)
            .field("next_token_hash", &hex::encode(&self.next_token_hash))
            .finish_non_exhaustive()
    }
}

/// A pending commit to submit, with its capabilities: the current epoch's,
/// and the hash of the next one's (from the group's pending commit).
pub(super) fn finish_commit(
    provider: &impl OpenMlsProvider,
    group: &MlsGroup,
    epoch: u64,
    recipients: Vec<DeviceId>,
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
    welcome_recipients: Vec<DeviceId>,
) -> Result<PendingCommit, GroupError> {
    let recipients = if epoch == 0 { Vec::new() } else { recipients };
    let mut pending = PendingCommit {
        epoch,
        commit: pad_to_bucket(commit),
        welcome: welcome.map(pad_to_bucket),
        recipients,
        welcome_recipients,
        send_token: Vec::new(),
        next_token_hash: Vec::new(),
    };
    pending.send_token = if pending.epoch == 0 {
        Vec::new()
    } else {
        send_token(provider, group)?
    };
    let staged = group
        .pending_commit()
        .ok_or_else(|| GroupError::Misuse("no pending commit".into()))?;
    // The Welcome goes to exactly the devices the commit adds: the server
    // releases it only with the commit, so nobody else can join by it.
    let mut added: Vec<DeviceId> = staged
        .add_proposals()
        .filter_map(|p| {
            MemberId::from_credential(p.add_proposal().key_package().leaf_node().credential()).ok()
        })
        .map(|m| m.device_id)
        .collect();
    let mut welcomed = pending.welcome_recipients.clone();
    added.sort_unstable();
    welcomed.sort_unstable();
    if added != welcomed {
        return Err(GroupError::Misuse(
            "a commit's Welcome must go to exactly the devices it adds".into(),
        ));
    }
    let next = staged
        .export_secret(
            provider.crypto(),
            SEND_CAPABILITY_LABEL,
            group.group_id().as_slice(),
            32,
        )
        .map_err(|e| mls("export next send capability")(&e))?;
    pending.next_token_hash = token_hash(&next);
    Ok(pending)
}

/// Creates a flat group (no admins) with this device as its only member
/// (epoch 0).
pub fn create_group(
    provider: &impl OpenMlsProvider,
    account: &Account,
) -> Result<MlsGroup, GroupError> {
    MlsGroup::new(
        provider,
        &account.device,
        &create_config(None)?,
        account.credential_with_key(),
    )
    .map_err(|e| mls("create group")(&e))
}

/// Creates a group with admins, this account its first and only admin
/// (see [`super::admins`]).
pub fn create_group_with_admins(
    provider: &impl OpenMlsProvider,
    account: &Account,
    read_only: bool,
) -> Result<MlsGroup, GroupError> {
    let policy = AdminPolicy {
        read_only,
        ..AdminPolicy::new(account.username.clone())
    };
    MlsGroup::new(
        provider,
        &account.device,
        &create_config(Some(&policy))?,
        account.credential_with_key(),
    )
    .map_err(|e| mls("create group")(&e))
}

/// Commits a new admin policy (admins, read-only) to a group that has
/// admins. Only an admin may; every member checks that.
pub fn set_admin_policy(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    own: &Username,
    policy: &AdminPolicy,
) -> Result<PendingCommit, GroupError> {
    let current = super::admin_policy(group)?.ok_or_else(|| {
        GroupError::Misuse(
            "this group has no admins (only a group created with --admins has them)".into(),
        )
    })?;
    if !current.is_admin(own) {
        return Err(GroupError::Misuse(
            "only an admin of this group can change its admins or settings".into(),
        ));
    }
    let roster = members(group);
    if let Some(stranger) = policy
        .admins
        .iter()
        .find(|a| !roster.iter().any(|m| &m.username == *a))
    {
        return Err(GroupError::Misuse(format!("{stranger} is not a member")));
    }
    let extensions = policy.extensions()?;
    let recipients = recipients(group);
    let epoch = group.epoch().as_u64();
    let (commit, welcome, _) = group
        .update_group_context_extensions(provider, extensions, signer)
        .map_err(|e| mls("update group context")(&e))?;
    finish_commit(
        provider,
        group,
        epoch,
        recipients,
        serialize(&commit)?,
        welcome.as_ref().map(serialize).transpose()?,
        Vec::new(),
    )
}

/// Commits adding the checked KeyPackages' devices.
pub fn add_members(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    new: &[CheckedKeyPackage],
) -> Result<PendingCommit, GroupError> {
    let existing = members(group);
    if let Some(dup) = new
        .iter()
        .find(|n| existing.contains(&n.device.member_id()))
    {
        return Err(GroupError::Misuse(format!(
            "{} is already a member",
            dup.device.username
        )));
    }
    let recipients = recipients(group);
    let epoch = group.epoch().as_u64();
    let key_packages: Vec<KeyPackage> = new.iter().map(|n| n.key_package.clone()).collect();
    let (commit, welcome, _) = group
        .add_members(provider, signer, &key_packages)
        .map_err(|e| mls("add members")(&e))?;
    finish_commit(
        provider,
        group,
        epoch,
        recipients,
        serialize(&commit)?,
        Some(serialize(&welcome)?),
        new.iter().map(|n| n.device.device_id).collect(),
    )
}

/// Commits removing every device of `username`.
pub fn remove_user(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    username: &Username,
) -> Result<PendingCommit, GroupError> {
    if !members(group).iter().any(|m| &m.username == username) {
        return Err(GroupError::Misuse(format!("{username} is not a member")));
    }
    remove_where(provider, group, signer, |m| &m.username == username)
}

/// Commits removing the given devices (a device removed from its account).
/// `Ok(None)` if none of them is a member.
pub fn remove_devices(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    devices: &[DeviceId],
) -> Result<Option<PendingCommit>, GroupError> {
    if !members(group)
        .iter()
        .any(|m| devices.contains(&m.device_id))
    {
        return Ok(None);
    }
    remove_where(provider, group, signer, |m| devices.contains(&m.device_id)).map(Some)
}

pub(super) fn remove_where(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    doomed: impl Fn(&MemberId) -> bool,
) -> Result<PendingCommit, GroupError> {
    let leaves: Vec<LeafNodeIndex> = group
        .members()
        .filter(|m| MemberId::from_credential(&m.credential).is_ok_and(|id| doomed(&id)))
        .map(|m| m.index)
        .collect();
    if leaves.contains(&group.own_leaf_index()) {
        return Err(GroupError::Misuse(
            "to remove yourself, leave the group".into(),
        ));
    }
    let recipients = recipients(group);
    let epoch = group.epoch().as_u64();
    let (commit, welcome, _) = group
        .remove_members(provider, signer, &leaves)
        .map_err(|e| mls("remove members")(&e))?;
    finish_commit(
        provider,
        group,
        epoch,
        recipients,
        serialize(&commit)?,
        welcome.as_ref().map(serialize).transpose()?,
        Vec::new(),
    )
}

/// Commits a fresh leaf key for this device (post-compromise security).
pub fn update_keys(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
) -> Result<PendingCommit, GroupError> {
    let recipients = recipients(group);
    let epoch = group.epoch().as_u64();
    let bundle = group
        .self_update(provider, signer, LeafNodeParameters::default())
        .map_err(|e| mls("self update")(&e))?;
    finish_commit(
        provider,
        group,
        epoch,
        recipients,
        serialize(bundle.commit())?,
        None,
        Vec::new(),
    )
}

/// Commits the proposals other members sent (for example, a member leaving).
pub fn commit_pending_proposals(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
) -> Result<PendingCommit, GroupError> {
    let recipients = recipients(group);
    let epoch = group.epoch().as_u64();
    let (commit, welcome, _) = group
        .commit_to_pending_proposals(provider, signer)
        .map_err(|e| mls("commit proposals")(&e))?;
    finish_commit(
        provider,
        group,
        epoch,
        recipients,
        serialize(&commit)?,
        welcome.as_ref().map(serialize).transpose()?,
        Vec::new(),
    )
}

/// A proposal to remove this device from the group, to be committed by
/// another member.
pub fn leave(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
) -> Result<Vec<u8>, GroupError> {
    let proposal = group
        .leave_group(provider, signer)
        .map_err(|e| mls("leave group")(&e))?;
    serialize(&proposal)
}

/// Encrypts application content for the group.
pub fn encrypt(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, GroupError> {
    encrypt_with_aad(provider, group, signer, plaintext, Vec::new())
}

/// Encrypts application content for the group with clear authenticated
/// data: the franking tag (`crate::franking::Sealed::aad`). Plain MLS AAD
/// (`MlsGroup::set_aad`), which the server reads from the framing.
pub fn encrypt_with_aad(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    plaintext: &[u8],
    aad: Vec<u8>,
) -> Result<Vec<u8>, GroupError> {
    group.set_aad(aad);
    let message = group
        .create_message(provider, signer, plaintext)
        .map_err(|e| mls("encrypt")(&e))?;
    serialize(&message)
}

/// Merges this device's commit once the server accepted it.
pub fn merge_pending(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
) -> Result<RosterChange, GroupError> {
    let change = group
        .pending_commit()
        .map(|staged| RosterChange::of(group, staged))
        .unwrap_or_default();
    group
        .merge_pending_commit(provider)
        .map_err(|e| mls("merge pending commit")(&e))?;
    Ok(change)
}

/// Drops this device's commit after the server rejected it.
pub fn clear_pending(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
) -> Result<(), GroupError> {
    group
        .clear_pending_commit(provider.storage())
        .map_err(|e| mls("clear pending commit")(&e))
}
