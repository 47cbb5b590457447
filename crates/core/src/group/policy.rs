//! The group policy every client enforces (DESIGN.md §5): which keys may
//! appear in a group (the transparency directory's), which proposals and
//! commits a member may make, and what a direct conversation's roster is.

use super::GroupError;
use super::admins::{self, AdminPolicy};
use crate::identity::{MemberId, Username};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;

/// Where a client checks that a member's signature key is one the
/// transparency log lists for the member's account.
pub trait KeyDirectory {
    fn check(&self, member: &MemberId, signature_key: &[u8]) -> KeyCheck;
}

/// The verdict of a [`KeyDirectory`].
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// The log lists this key for this device.
    Listed,
    /// The account (or this device of it) has not been looked up yet, or
    /// was looked up before the device was added.
    Unknown,
    /// The log says otherwise; the reason says how.
    Refused(String),
}

/// Checks every (member, key) against the directory: all listed, or the
/// accounts to look up, or a ghost.
pub(super) fn check_members<'a>(
    directory: &impl KeyDirectory,
    members: impl IntoIterator<Item = (&'a Credential, &'a [u8])>,
) -> Result<(), GroupError> {
    let mut unknown = Vec::new();
    for (credential, key) in members {
        let member = MemberId::from_credential(credential)?;
        match directory.check(&member, key) {
            KeyCheck::Listed => {}
            KeyCheck::Unknown => {
                if !unknown.contains(&member.username) {
                    unknown.push(member.username);
                }
            }
            KeyCheck::Refused(reason) => {
                return Err(GroupError::Ghost(format!(
                    "refused device {} of {}: {reason}",
                    member.device_id, member.username
                )));
            }
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(GroupError::Unverified(unknown))
    }
}

/// The group policy every commit must follow, checked before it is merged
/// (DESIGN.md §5): nobody commits on someone else's behalf, and every leaf a
/// commit introduces or changes carries a key the transparency log lists for
/// that leaf's account.
///
/// - Add: only inline, by the committer; every new member's key is logged.
/// - Remove: the committer removes someone (any member may, in the
///   conversation's history the committer is named), or commits a member's
///   own leave proposal.
/// - Update: only of the proposer's own leaf, keeping its credential, to a
///   logged key (Sotto clients never send one; they commit their updates).
/// - The committer's own new leaf keeps its credential and has a logged key.
/// - In a group with admins (`super::admins`): only an admin removes
///   another account's devices, and only an admin changes the group
///   context, to nothing but a valid admin policy naming members.
/// - PSK, ReInit, external init, group-context extensions of a flat group
///   and anything else: refused; Sotto does not use them.
pub(super) fn check_commit_policy(
    group: &MlsGroup,
    staged: &StagedCommit,
    committer_leaf: LeafNodeIndex,
    committer: &MemberId,
    directory: &impl KeyDirectory,
) -> Result<(), GroupError> {
    let violation = |what: String| GroupError::PolicyViolation {
        committer: committer.clone(),
        what,
    };
    let policy = super::admin_policy(group)?;
    let committer_is_admin = policy
        .as_ref()
        .is_some_and(|p| p.is_admin(&committer.username));
    let mut introduced: Vec<(Credential, Vec<u8>)> = Vec::new();
    for queued in staged.queued_proposals() {
        let proposer = match queued.sender() {
            Sender::Member(leaf) => *leaf,
            _ => return Err(violation("a proposal from a non-member".into())),
        };
        match queued.proposal() {
            Proposal::Add(add) => {
                if proposer != committer_leaf {
                    return Err(violation("it commits another member's add".into()));
                }
                let leaf = add.key_package().leaf_node();
                introduced.push((
                    leaf.credential().clone(),
                    leaf.signature_key().as_slice().to_vec(),
                ));
            }
            Proposal::Remove(remove) => {
                if proposer != committer_leaf && proposer != remove.removed() {
                    return Err(violation(format!(
                        "it commits {}'s proposal to remove {}",
                        member_name(group, proposer),
                        member_name(group, remove.removed())
                    )));
                }
                let removed_account = group
                    .member(remove.removed())
                    .and_then(|c| MemberId::from_credential(c).ok())
                    .map(|m| m.username);
                let own_account = removed_account.as_ref() == Some(&committer.username);
                if policy.is_some()
                    && !committer_is_admin
                    && proposer != remove.removed()
                    && !own_account
                {
                    return Err(violation(format!(
                        "it removes {}, but only an admin of this group may remove someone",
                        member_name(group, remove.removed())
                    )));
                }
            }
            Proposal::GroupContextExtensions(extensions) => {
                check_admin_change(
                    group,
                    policy.as_ref(),
                    committer,
                    committer_is_admin,
                    extensions.extensions(),
                )
                .map_err(violation)?;
            }
            Proposal::SelfRemove => {}
            Proposal::Update(update) => {
                let leaf = update.leaf_node();
                let before = group
                    .member(proposer)
                    .and_then(|c| MemberId::from_credential(c).ok());
                if before != MemberId::from_credential(leaf.credential()).ok() {
                    return Err(violation(format!(
                        "it relabels {} as someone else",
                        member_name(group, proposer)
                    )));
                }
                introduced.push((
                    leaf.credential().clone(),
                    leaf.signature_key().as_slice().to_vec(),
                ));
            }
            other => {
                return Err(violation(format!(
                    "a {:?} proposal, which Sotto does not use",
                    other.proposal_type()
                )));
            }
        }
    }
    if let Some(leaf) = staged.update_path_leaf_node() {
        if MemberId::from_credential(leaf.credential()).ok().as_ref() != Some(committer) {
            return Err(violation("its new leaf claims to be another device".into()));
        }
        introduced.push((
            leaf.credential().clone(),
            leaf.signature_key().as_slice().to_vec(),
        ));
    }
    check_members(directory, introduced.iter().map(|(c, k)| (c, k.as_slice())))
}

/// A joiner's external commit (`super::invite`), checked before it is
/// merged: the group's policy names an open invite link, the commit holds
/// nothing but the ExternalInit, the joiner's own path, and at most the
/// removal of the joiner's own old leaf (a device rejoining), and the
/// joiner's key is one the transparency log lists. Anything else is a
/// policy violation, as for a member's commit.
pub(super) fn check_external_commit(
    group: &MlsGroup,
    staged: &StagedCommit,
    joiner: &MemberId,
    directory: &impl KeyDirectory,
) -> Result<(), GroupError> {
    let violation = |what: String| GroupError::PolicyViolation {
        committer: joiner.clone(),
        what,
    };
    let open = super::admin_policy(group)?.is_some_and(|p| p.invite.is_some());
    if !open {
        return Err(violation(
            "it joins by invite link, but this group has no open invite link".into(),
        ));
    }
    let mut external_init = false;
    for queued in staged.queued_proposals() {
        match queued.proposal() {
            Proposal::ExternalInit(_) if !external_init => external_init = true,
            Proposal::Remove(remove) => {
                let removed = group
                    .member(remove.removed())
                    .and_then(|c| MemberId::from_credential(c).ok());
                if removed.as_ref() != Some(joiner) {
                    return Err(violation(format!(
                        "joining by invite link, it removes {}",
                        member_name(group, remove.removed())
                    )));
                }
            }
            other => {
                return Err(violation(format!(
                    "joining by invite link, it brings a {:?} proposal",
                    other.proposal_type()
                )));
            }
        }
    }
    if !external_init {
        return Err(violation("an external commit without ExternalInit".into()));
    }
    let leaf = staged
        .update_path_leaf_node()
        .ok_or_else(|| violation("an external commit without the joiner's leaf".into()))?;
    if MemberId::from_credential(leaf.credential()).ok().as_ref() != Some(joiner) {
        return Err(violation("its new leaf claims to be another device".into()));
    }
    check_members(
        directory,
        [(leaf.credential(), leaf.signature_key().as_slice())],
    )
}

/// A group-context change: only in a group with admins, only by an admin,
/// and only to a valid admin policy (nothing else in the context) whose
/// admins are members (or were already admins).
fn check_admin_change(
    group: &MlsGroup,
    before: Option<&AdminPolicy>,
    committer: &MemberId,
    committer_is_admin: bool,
    extensions: &Extensions<GroupContext>,
) -> Result<(), String> {
    let Some(before) = before else {
        return Err("a GroupContextExtensions proposal, which Sotto does not use".into());
    };
    if !committer_is_admin {
        return Err(format!(
            "{} changed the group's admins or settings, but only an admin may",
            committer.username
        ));
    }
    let after = admins::policy_in(extensions)
        .map_err(|e| format!("it sets an invalid admin list: {e}"))?
        .ok_or("it removes the group's admins")?;
    let canonical = after
        .extensions()
        .map_err(|e| e.to_string())?
        .tls_serialize_detached()
        .map_err(|e| e.to_string())?;
    if extensions
        .tls_serialize_detached()
        .map_err(|e| e.to_string())?
        != canonical
    {
        return Err("it changes the group context beyond its admin list".into());
    }
    let roster = super::members(group);
    if let Some(stranger) = after
        .admins
        .iter()
        .find(|a| !before.is_admin(a) && !roster.iter().any(|m| &m.username == *a))
    {
        return Err(format!(
            "it makes {stranger}, who is not a member, an admin"
        ));
    }
    Ok(())
}

/// `username (device …)` of the member at `leaf`, for messages.
fn member_name(group: &MlsGroup, leaf: LeafNodeIndex) -> String {
    group
        .member(leaf)
        .and_then(|c| MemberId::from_credential(c).ok())
        .map_or_else(|| format!("leaf {}", leaf.u32()), |m| m.to_string())
}

/// The other account of a direct conversation: the roster must hold this
/// account's devices and one other account's, nobody else (DESIGN.md §5).
/// Otherwise the accounts that do not belong (all others when there are
/// several, or none when this account is alone).
pub fn direct_peer(roster: &[MemberId], own: &Username) -> Result<Username, Vec<Username>> {
    let mut others: Vec<Username> = Vec::new();
    for member in roster {
        if &member.username != own && !others.contains(&member.username) {
            others.push(member.username.clone());
        }
    }
    match others.as_slice() {
        [peer] => Ok(peer.clone()),
        _ => Err(others),
    }
}
