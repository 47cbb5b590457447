//! MLS conversations: creating groups, changing their members, encrypting,
//! and processing whatever arrives. Every function takes the caller's
//! [`OpenMlsProvider`], whose storage the caller wraps in one transaction
//! around each call and the merge that follows, so a crash never leaves a
//! half-applied epoch.

use crate::identity::{
    Account, DeviceId, DeviceKey, IdentityError, MemberId, Username, VerifiedDevice,
};
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use sotto_proto::v1::ClaimedKeyPackage;

/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (0x0001), the default suite.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Epochs whose secrets are kept so that application messages sent just
/// before a commit (and queued behind it) still decrypt.
pub const MAX_PAST_EPOCHS: usize = 5;
/// How far out of order messages from one sender may arrive within an epoch.
pub const OUT_OF_ORDER_TOLERANCE: u32 = 32;
/// How many messages from one sender may be skipped within an epoch.
pub const MAXIMUM_FORWARD_DISTANCE: u32 = 1000;

/// Why an MLS operation failed, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A peer (or the server) sent something invalid; drop it and carry on.
    #[error("invalid message from a peer: {0}")]
    PeerMisbehaved(String),
    /// The message adds members whose accounts this device has not looked up
    /// yet: fetch their transparency-log entries and process it again.
    #[error("unverified members of {0:?}; look up their accounts and retry")]
    Unverified(Vec<Username>),
    /// A member's key is not the one the transparency log holds for its
    /// account: a ghost device or a swapped key. Refuse, and warn loudly.
    #[error("{0}")]
    Ghost(String),
    /// The message is framed for a later epoch than this device's. Its
    /// clear-text epoch is not authenticated, so it proves nothing yet: hold
    /// it until the commits that lead to that epoch arrive (if they never
    /// do, a change to the members may have been withheld from this device).
    #[error(
        "a message from epoch {message_epoch} arrived while this device is at epoch {own_epoch}: the change to the conversation that leads there has not arrived (it may have been withheld from this device)"
    )]
    FromLaterEpoch { own_epoch: u64, message_epoch: u64 },
    /// A member sent a proposal that Sotto does not let anyone commit on
    /// the proposer's behalf (only a member's own leave is). Authenticated,
    /// but harmless once dropped.
    #[error("{member} proposed a change that Sotto does not allow ({what}); ignored")]
    ProposalRefused { member: MemberId, what: String },
    /// A commit breaks the group policy: it changes someone else's leaf,
    /// relabels the committer, commits another member's add or removal, or
    /// changes the group in a way Sotto does not use. Authenticated evidence
    /// of a misbehaving member: the conversation cannot be trusted.
    #[error("{committer} made a change to the conversation that Sotto does not allow: {what}")]
    PolicyViolation { committer: MemberId, what: String },
    /// The message is for a group this device is not in (any more).
    #[error("message for unknown group {0}")]
    UnknownGroup(String),
    /// The caller asked for something impossible in the group's state.
    #[error("{0}")]
    Misuse(String),
    /// openmls or its storage failed.
    #[error("MLS {op} failed: {detail}")]
    Mls { op: &'static str, detail: String },
}

impl From<IdentityError> for GroupError {
    fn from(e: IdentityError) -> Self {
        Self::PeerMisbehaved(e.to_string())
    }
}

fn mls(op: &'static str) -> impl FnOnce(&dyn std::fmt::Debug) -> GroupError {
    move |e| GroupError::Mls {
        op,
        detail: format!("{e:?}"),
    }
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAXIMUM_FORWARD_DISTANCE,
        ))
        .use_ratchet_tree_extension(true)
        .build()
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAXIMUM_FORWARD_DISTANCE,
        ))
        .use_ratchet_tree_extension(true)
        .build()
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, GroupError> {
    message
        .tls_serialize_detached()
        .map_err(|e| mls("serialize")(&e))
}

/// A fresh KeyPackage for this device, serialized as an `MLSMessage`. Its
/// private part goes into the provider's storage.
pub fn new_key_package(
    provider: &impl OpenMlsProvider,
    account: &Account,
    last_resort: bool,
) -> Result<Vec<u8>, GroupError> {
    let mut builder = KeyPackage::builder();
    if last_resort {
        builder = builder.mark_as_last_resort();
    }
    let bundle = builder
        .build(
            CIPHERSUITE,
            provider,
            &account.device,
            account.credential_with_key(),
        )
        .map_err(|e| mls("key package")(&e))?;
    serialize(&MlsMessageOut::from(bundle.key_package().clone()))
}

/// A KeyPackage handed out by the server, checked: its leaf's credential and
/// signature key must be those of a device certified by the account's
/// identity key. (`BasicCredential` alone proves nothing.)
#[derive(Debug)]
pub struct CheckedKeyPackage {
    pub device: VerifiedDevice,
    pub key_package: KeyPackage,
}

pub fn check_key_package(
    provider: &impl OpenMlsProvider,
    expected: &Username,
    identity_key: &[u8],
    claimed: &ClaimedKeyPackage,
) -> Result<CheckedKeyPackage, GroupError> {
    let signed = claimed.device.as_ref().ok_or_else(|| {
        GroupError::PeerMisbehaved("KeyPackage without device certificate".into())
    })?;
    let device = VerifiedDevice::verify(identity_key, signed)?;
    if &device.username != expected {
        return Err(GroupError::PeerMisbehaved(format!(
            "server returned a device of {} when asked for {expected}",
            device.username
        )));
    }
    let message = MlsMessageIn::tls_deserialize_exact_bytes(&claimed.key_package)
        .map_err(|e| GroupError::PeerMisbehaved(format!("malformed KeyPackage: {e}")))?;
    let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
        return Err(GroupError::PeerMisbehaved("expected a KeyPackage".into()));
    };
    let key_package = key_package
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| GroupError::PeerMisbehaved(format!("invalid KeyPackage: {e:?}")))?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(GroupError::PeerMisbehaved(
            "KeyPackage uses an unsupported ciphersuite".into(),
        ));
    }
    let leaf = key_package.leaf_node();
    if MemberId::from_credential(leaf.credential())? != device.member_id()
        || leaf.signature_key().as_slice() != device.device_key
    {
        return Err(GroupError::PeerMisbehaved(format!(
            "KeyPackage of {} does not match its certified device key",
            device.username
        )));
    }
    Ok(CheckedKeyPackage {
        device,
        key_package,
    })
}

/// The MLS exporter label of a group's send capability.
pub const SEND_CAPABILITY_LABEL: &str = "sotto send capability";

/// The group's send capability for its current epoch: what authorises a
/// send to the server without saying who sends.
pub fn send_token(
    provider: &impl OpenMlsProvider,
    group: &MlsGroup,
) -> Result<Vec<u8>, GroupError> {
    group
        .export_secret(
            provider.crypto(),
            SEND_CAPABILITY_LABEL,
            group.group_id().as_slice(),
            32,
        )
        .map_err(|e| mls("export send capability")(&e))
}

/// SHA-256 of a send capability: all the server keeps of it.
pub fn token_hash(token: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(token).to_vec()
}

/// A commit waiting for the server's verdict. The group holds it as its
/// pending commit: merge it when the server accepts, clear it otherwise.
#[derive(Debug)]
pub struct PendingCommit {
    /// The epoch the commit was created in.
    pub epoch: u64,
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    /// Devices that must receive the commit: every member but us, including
    /// any being removed, so they learn it.
    pub recipients: Vec<DeviceId>,
    /// Devices that must receive the Welcome.
    pub welcome_recipients: Vec<DeviceId>,
    /// The current epoch's send capability (empty for a new group's first
    /// commit, which the server accepts without one).
    pub send_token: Vec<u8>,
    /// SHA-256 of the capability of the epoch the commit starts.
    pub next_token_hash: Vec<u8>,
}

/// A pending commit to submit, with its capabilities: the current epoch's,
/// and the hash of the next one's (from the group's pending commit).
fn finish_commit(
    provider: &impl OpenMlsProvider,
    group: &MlsGroup,
    epoch: u64,
    recipients: Vec<DeviceId>,
    commit: Vec<u8>,
    welcome: Option<Vec<u8>>,
    welcome_recipients: Vec<DeviceId>,
) -> Result<PendingCommit, GroupError> {
    let mut pending = PendingCommit {
        epoch,
        commit,
        welcome,
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

/// Creates a group with this device as its only member (epoch 0).
pub fn create_group(
    provider: &impl OpenMlsProvider,
    account: &Account,
) -> Result<MlsGroup, GroupError> {
    MlsGroup::new(
        provider,
        &account.device,
        &create_config(),
        account.credential_with_key(),
    )
    .map_err(|e| mls("create group")(&e))
}

/// Loads a group from the provider's storage.
pub fn load(provider: &impl OpenMlsProvider, group_id: &[u8]) -> Result<MlsGroup, GroupError> {
    MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id))
        .map_err(|e| mls("load group")(&e))?
        .ok_or_else(|| GroupError::UnknownGroup(hex::encode(group_id)))
}

/// The members of a group, as accounts' devices.
pub fn members(group: &MlsGroup) -> Vec<MemberId> {
    group
        .members()
        .filter_map(|m| MemberId::from_credential(&m.credential).ok())
        .collect()
}

/// Every member device but `own`: who must receive what this device sends.
pub fn recipients(group: &MlsGroup, own: DeviceId) -> Vec<DeviceId> {
    members(group)
        .into_iter()
        .map(|m| m.device_id)
        .filter(|d| *d != own)
        .collect()
}

/// Commits adding the checked KeyPackages' devices.
pub fn add_members(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    own: DeviceId,
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
    let recipients = recipients(group, own);
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
    own: DeviceId,
    username: &Username,
) -> Result<PendingCommit, GroupError> {
    if !members(group).iter().any(|m| &m.username == username) {
        return Err(GroupError::Misuse(format!("{username} is not a member")));
    }
    remove_where(provider, group, signer, own, |m| &m.username == username)
}

/// Commits removing the given devices (a device removed from its account).
/// `Ok(None)` if none of them is a member.
pub fn remove_devices(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    own: DeviceId,
    devices: &[DeviceId],
) -> Result<Option<PendingCommit>, GroupError> {
    if !members(group)
        .iter()
        .any(|m| devices.contains(&m.device_id))
    {
        return Ok(None);
    }
    remove_where(provider, group, signer, own, |m| {
        devices.contains(&m.device_id)
    })
    .map(Some)
}

fn remove_where(
    provider: &impl OpenMlsProvider,
    group: &mut MlsGroup,
    signer: &DeviceKey,
    own: DeviceId,
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
    let recipients = recipients(group, own);
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
    own: DeviceId,
) -> Result<PendingCommit, GroupError> {
    let recipients = recipients(group, own);
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
    own: DeviceId,
) -> Result<PendingCommit, GroupError> {
    let recipients = recipients(group, own);
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
    let message = group
        .create_message(provider, signer, plaintext)
        .map_err(|e| mls("encrypt")(&e))?;
    serialize(&message)
}

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
fn check_members<'a>(
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

/// What an incoming MLS message turned out to be, after it was applied to
/// the provider's storage.
#[derive(Debug)]
pub enum Inbound {
    /// A Welcome: this device joined a group.
    Joined {
        group_id: Vec<u8>,
        members: Vec<MemberId>,
    },
    /// Application content from a member.
    Application {
        group_id: Vec<u8>,
        sender: MemberId,
        plaintext: Vec<u8>,
    },
    /// A member's proposal to leave was queued; the next member who syncs
    /// commits it.
    Proposal {
        group_id: Vec<u8>,
        sender: MemberId,
        leaving: Option<MemberId>,
    },
    /// Application content sent (in an earlier epoch) by a member whom a
    /// commit this device already merged has removed: not shown.
    FromFormerMember { group_id: Vec<u8>, sender: MemberId },
    /// A commit was merged.
    Commit {
        group_id: Vec<u8>,
        sender: MemberId,
        change: RosterChange,
        self_removed: bool,
    },
}

/// The group a message is for, without processing it (`None` for a Welcome
/// or anything unparsable).
pub fn group_id_of(payload: &[u8]) -> Option<Vec<u8>> {
    let message = MlsMessageIn::tls_deserialize_exact_bytes(payload).ok()?;
    match message.extract() {
        MlsMessageBodyIn::PrivateMessage(m) => Some(ProtocolMessage::from(m).group_id().to_vec()),
        MlsMessageBodyIn::PublicMessage(m) => Some(ProtocolMessage::from(m).group_id().to_vec()),
        _ => None,
    }
}

/// Processes one MLS message from the delivery service and applies it: joins
/// on a Welcome, merges commits, queues proposals, decrypts application
/// messages. Every member a Welcome or commit brings in is checked against
/// `directory` first: no device joins a conversation unless the
/// transparency log lists its key for its account.
pub fn process(
    provider: &impl OpenMlsProvider,
    payload: &[u8],
    directory: &impl KeyDirectory,
) -> Result<Inbound, GroupError> {
    let message = MlsMessageIn::tls_deserialize_exact_bytes(payload)
        .map_err(|e| GroupError::PeerMisbehaved(format!("malformed MLS message: {e}")))?;
    let protocol = match message.extract() {
        MlsMessageBodyIn::Welcome(welcome) => {
            let staged = StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
                .map_err(|e| {
                GroupError::PeerMisbehaved(format!("cannot join from Welcome: {e:?}"))
            })?;
            let roster: Vec<Member> = staged.members().collect();
            check_members(
                directory,
                roster
                    .iter()
                    .map(|m| (&m.credential, m.signature_key.as_slice())),
            )?;
            let group = staged
                .into_group(provider)
                .map_err(|e| mls("join group")(&e))?;
            return Ok(Inbound::Joined {
                group_id: group.group_id().to_vec(),
                members: members(&group),
            });
        }
        MlsMessageBodyIn::PrivateMessage(m) => ProtocolMessage::from(m),
        MlsMessageBodyIn::PublicMessage(m) => ProtocolMessage::from(m),
        _ => {
            return Err(GroupError::PeerMisbehaved(
                "unexpected MLS message type".into(),
            ));
        }
    };
    let group_id = protocol.group_id().to_vec();
    let mut group = load(provider, &group_id)?;
    if protocol.epoch() > group.epoch() {
        return Err(GroupError::FromLaterEpoch {
            own_epoch: group.epoch().as_u64(),
            message_epoch: protocol.epoch().as_u64(),
        });
    }
    let processed = group
        .process_message(provider, protocol)
        .map_err(|e| GroupError::PeerMisbehaved(format!("cannot process message: {e:?}")))?;
    let sender = MemberId::from_credential(processed.credential())?;
    let sender_leaf = match processed.sender() {
        Sender::Member(leaf) => *leaf,
        _ => {
            return Err(GroupError::PeerMisbehaved(
                "only members may send to a group".into(),
            ));
        }
    };
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => {
            // Sent in an earlier epoch by someone a later commit removed:
            // the removal is already in effect for this device.
            if !members(&group).contains(&sender) {
                return Ok(Inbound::FromFormerMember { group_id, sender });
            }
            Ok(Inbound::Application {
                group_id,
                sender,
                plaintext: app.into_bytes(),
            })
        }
        ProcessedMessageContent::ProposalMessage(proposal) => {
            // A member may propose only its own departure, the one change
            // another member commits on its behalf.
            let leaving = match proposal.proposal() {
                Proposal::Remove(remove) if remove.removed() == sender_leaf => sender.clone(),
                Proposal::SelfRemove => sender.clone(),
                other => {
                    return Err(GroupError::ProposalRefused {
                        member: sender,
                        what: format!("{:?} proposal", other.proposal_type()),
                    });
                }
            };
            group
                .store_pending_proposal(provider.storage(), *proposal)
                .map_err(|e| mls("queue proposal")(&e))?;
            Ok(Inbound::Proposal {
                group_id,
                sender,
                leaving: Some(leaving),
            })
        }
        ProcessedMessageContent::OwnPendingCommit | ProcessedMessageContent::OwnPrivateMessage => {
            Err(GroupError::PeerMisbehaved(
                "the server echoed this device's own message".into(),
            ))
        }
        ProcessedMessageContent::ExternalJoinProposalMessage(_) => Err(GroupError::PeerMisbehaved(
            "external joins are not allowed".into(),
        )),
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            check_commit_policy(&group, &staged, sender_leaf, &sender, directory)?;
            let change = RosterChange::of(&group, &staged);
            let self_removed = staged.self_removed();
            group
                .merge_staged_commit(provider, *staged)
                .map_err(|e| mls("merge commit")(&e))?;
            Ok(Inbound::Commit {
                group_id,
                sender,
                change,
                self_removed,
            })
        }
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
/// - PSK, ReInit, external init, group-context extensions and anything else:
///   refused; Sotto does not use them.
fn check_commit_policy(
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

/// Who a commit adds and removes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RosterChange {
    pub added: Vec<MemberId>,
    /// Removed by the commit's sender.
    pub removed: Vec<MemberId>,
    /// Removed at their own request.
    pub left: Vec<MemberId>,
}

impl RosterChange {
    fn of(group: &MlsGroup, staged: &StagedCommit) -> Self {
        let mut change = Self::default();
        for p in staged.add_proposals() {
            let credential = p.add_proposal().key_package().leaf_node().credential();
            change
                .added
                .extend(MemberId::from_credential(credential).ok());
        }
        for p in staged.remove_proposals() {
            let leaf = p.remove_proposal().removed();
            let Some(id) = group
                .member(leaf)
                .and_then(|c| MemberId::from_credential(c).ok())
            else {
                continue;
            };
            // A member that proposed its own removal left.
            if matches!(p.sender(), Sender::Member(by) if *by == leaf) {
                change.left.push(id);
            } else {
                change.removed.push(id);
            }
        }
        change
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.left.is_empty()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKey;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use sotto_proto::v1::ClaimedKeyPackage;

    struct Device {
        account: Account,
        provider: OpenMlsRustCrypto,
    }

    fn device(name: &str) -> Device {
        Device {
            account: Account::generate(Username::parse(name).unwrap()),
            provider: OpenMlsRustCrypto::default(),
        }
    }

    fn claim(d: &Device) -> CheckedKeyPackage {
        let claimed = ClaimedKeyPackage {
            device: Some(d.account.signed_device()),
            key_package: new_key_package(&d.provider, &d.account, false).unwrap(),
        };
        check_key_package(
            &d.provider,
            &d.account.username,
            &d.account.identity_public(),
            &claimed,
        )
        .unwrap()
    }

    /// Lists exactly the given devices' keys.
    struct Directory(Vec<(MemberId, [u8; 32])>);

    impl Directory {
        fn of(devices: &[&Device]) -> Self {
            Self(
                devices
                    .iter()
                    .map(|d| (d.account.member_id(), d.account.device.public()))
                    .collect(),
            )
        }
    }

    impl KeyDirectory for Directory {
        fn check(&self, member: &MemberId, key: &[u8]) -> KeyCheck {
            match self.0.iter().find(|(m, _)| m.username == member.username) {
                None => KeyCheck::Unknown,
                Some(_) => match self.0.iter().find(|(m, _)| m == member) {
                    Some((_, k)) if k.as_slice() == key => KeyCheck::Listed,
                    _ => KeyCheck::Refused("not in the log".into()),
                },
            }
        }
    }

    fn accept(d: &Device, group: &mut MlsGroup) {
        merge_pending(&d.provider, group).unwrap();
    }

    #[test]
    fn create_add_talk_remove() {
        let (a, b, c) = (device("anna"), device("ben"), device("cleo"));
        let dir = Directory::of(&[&a, &b, &c]);
        let mut group = create_group(&a.provider, &a.account).unwrap();
        let pending = add_members(
            &a.provider,
            &mut group,
            &a.account.device,
            a.account.device_id,
            &[claim(&b), claim(&c)],
        )
        .unwrap();
        assert_eq!(pending.epoch, 0);
        assert!(pending.recipients.is_empty());
        assert_eq!(
            pending.welcome_recipients,
            vec![b.account.device_id, c.account.device_id]
        );
        accept(&a, &mut group);
        let welcome = pending.welcome.unwrap();
        for d in [&b, &c] {
            assert!(
                matches!(process(&d.provider, &welcome, &dir).unwrap(), Inbound::Joined { members, .. } if members.len() == 3)
            );
        }

        let hello = encrypt(&a.provider, &mut group, &a.account.device, b"hello").unwrap();
        for d in [&b, &c] {
            match process(&d.provider, &hello, &dir).unwrap() {
                Inbound::Application {
                    plaintext, sender, ..
                } => {
                    assert_eq!(plaintext, b"hello");
                    assert_eq!(sender, a.account.member_id());
                }
                other => panic!("{other:?}"),
            }
        }

        let pending = remove_user(
            &a.provider,
            &mut group,
            &a.account.device,
            a.account.device_id,
            &c.account.username,
        )
        .unwrap();
        assert_eq!(
            pending.recipients.len(),
            2,
            "the removed member must learn of its removal"
        );
        accept(&a, &mut group);
        match process(&c.provider, &pending.commit, &dir).unwrap() {
            Inbound::Commit { self_removed, .. } => assert!(self_removed),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(process(&b.provider, &pending.commit, &dir).unwrap(), Inbound::Commit { change, .. } if change.removed == vec![c.account.member_id()])
        );

        let secret = encrypt(&a.provider, &mut group, &a.account.device, b"after removal").unwrap();
        assert!(process(&c.provider, &secret, &dir).is_err());
        assert!(
            matches!(process(&b.provider, &secret, &dir).unwrap(), Inbound::Application { plaintext, .. } if plaintext == b"after removal")
        );
    }

    #[test]
    fn key_package_must_match_certified_device() {
        let (b, mallory) = (device("ben"), device("mallory"));
        // Mallory's KeyPackage presented under Ben's certificate.
        let claimed = ClaimedKeyPackage {
            device: Some(b.account.signed_device()),
            key_package: new_key_package(&mallory.provider, &mallory.account, false).unwrap(),
        };
        let err = check_key_package(
            &b.provider,
            &b.account.username,
            &b.account.identity_public(),
            &claimed,
        );
        assert!(matches!(err, Err(GroupError::PeerMisbehaved(_))), "{err:?}");
        // Ben's real KeyPackage but a certificate signed by someone else.
        let other = IdentityKey::generate();
        let claimed = ClaimedKeyPackage {
            device: Some(b.account.signed_device()),
            key_package: new_key_package(&b.provider, &b.account, false).unwrap(),
        };
        assert!(
            check_key_package(&b.provider, &b.account.username, &other.public(), &claimed).is_err()
        );
        // And asking for "ben" but getting mallory's genuine device is refused.
        let claimed = ClaimedKeyPackage {
            device: Some(mallory.account.signed_device()),
            key_package: new_key_package(&mallory.provider, &mallory.account, false).unwrap(),
        };
        assert!(
            check_key_package(
                &b.provider,
                &b.account.username,
                &mallory.account.identity_public(),
                &claimed
            )
            .is_err()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let d = device("dora");
        let dir = Directory::of(&[&d]);
        for junk in [&b""[..], b"\x00\x01", &[0xff; 64]] {
            assert!(process(&d.provider, junk, &dir).is_err());
        }
    }

    #[test]
    fn members_missing_from_the_log_are_refused() {
        let (a, b, c, ghost) = (
            device("anna"),
            device("ben"),
            device("cleo"),
            device("ghost"),
        );
        let mut group = create_group(&a.provider, &a.account).unwrap();
        let (b_kp, c_kp) = (claim(&b), claim(&c));
        let pending = add_members(
            &a.provider,
            &mut group,
            &a.account.device,
            a.account.device_id,
            &[b_kp, c_kp],
        )
        .unwrap();
        accept(&a, &mut group);
        let welcome = pending.welcome.unwrap();
        // Ben has not looked up anna and cleo yet: he is told to. (The real
        // client rolls back its transaction and retries after the lookup.)
        let err = process(&b.provider, &welcome, &Directory::of(&[&b])).unwrap_err();
        assert!(
            matches!(&err, GroupError::Unverified(users) if users.len() == 2),
            "{err:?}"
        );
        process(&c.provider, &welcome, &Directory::of(&[&a, &b, &c])).unwrap();

        // Anna adds a device whose key the log does not list.
        let pending = add_members(
            &a.provider,
            &mut group,
            &a.account.device,
            a.account.device_id,
            &[claim(&ghost)],
        )
        .unwrap();
        accept(&a, &mut group);
        let mut lying = Directory::of(&[&a, &b, &c]);
        lying.0.push((ghost.account.member_id(), [9; 32]));
        let err = process(&c.provider, &pending.commit, &lying).unwrap_err();
        assert!(
            matches!(&err, GroupError::Ghost(reason) if reason.contains("ghost")),
            "{err:?}"
        );
    }

    /// Anna, Ben and Cleo in one group, everyone at epoch 1.
    fn trio() -> (Device, Device, Device, Directory, MlsGroup) {
        let (a, b, c) = (device("anna"), device("ben"), device("cleo"));
        let dir = Directory::of(&[&a, &b, &c]);
        let mut group = create_group(&a.provider, &a.account).unwrap();
        let pending = add_members(
            &a.provider,
            &mut group,
            &a.account.device,
            a.account.device_id,
            &[claim(&b), claim(&c)],
        )
        .unwrap();
        accept(&a, &mut group);
        let welcome = pending.welcome.unwrap();
        for d in [&b, &c] {
            process(&d.provider, &welcome, &dir).unwrap();
        }
        (a, b, c, dir, group)
    }

    #[test]
    fn a_commit_whose_author_relabels_itself_is_refused() {
        let (_a, b, c, dir, group) = trio();
        let mut ben = load(&b.provider, group.group_id().as_slice()).unwrap();
        // Ben's new leaf claims to be Cleo's device (with his own key).
        let as_cleo = LeafNodeParameters::builder()
            .with_credential_with_key(CredentialWithKey {
                credential: c.account.member_id().to_credential(),
                signature_key: b.account.device.public().to_vec().into(),
            })
            .build();
        let bundle = ben
            .self_update(&b.provider, &b.account.device, as_cleo)
            .unwrap();
        let commit = serialize(bundle.commit()).unwrap();
        let err = process(&c.provider, &commit, &dir).unwrap_err();
        assert!(
            matches!(&err, GroupError::PolicyViolation { committer, what }
                if committer.username.as_str() == "ben" && what.contains("another device")),
            "{err:?}"
        );
    }

    #[test]
    fn only_a_members_own_leave_is_kept_as_a_proposal() {
        let (_a, b, c, dir, group) = trio();
        let group_id = group.group_id().to_vec();
        let mut ben = load(&b.provider, &group_id).unwrap();
        let cleo_leaf = ben
            .members()
            .find(|m| m.credential == c.account.member_id().to_credential())
            .unwrap()
            .index;
        let (remove_cleo, _) = ben
            .propose_remove_member(&b.provider, &b.account.device, cleo_leaf)
            .unwrap();
        let err = process(&c.provider, &serialize(&remove_cleo).unwrap(), &dir).unwrap_err();
        assert!(
            matches!(&err, GroupError::ProposalRefused { member, .. } if member.username.as_str() == "ben"),
            "{err:?}"
        );
        let cleo = load(&c.provider, &group_id).unwrap();
        assert_eq!(cleo.pending_proposals().count(), 0);

        let leaving = leave(&b.provider, &mut ben, &b.account.device).unwrap();
        match process(&c.provider, &leaving, &dir).unwrap() {
            Inbound::Proposal { leaving, .. } => {
                assert_eq!(leaving, Some(b.account.member_id()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_servers_framing_reader_agrees_with_openmls() {
        use sotto_proto::mls_framing::{ContentType, Framing};
        let (a, b, _c, _dir, mut group) = trio();
        let hello = encrypt(&a.provider, &mut group, &a.account.device, b"hi").unwrap();
        let framed = |bytes: &[u8]| Framing::parse(bytes).unwrap();
        let group_id = group.group_id().to_vec();
        assert_eq!(
            framed(&hello),
            Framing::Group {
                group_id: group_id.clone(),
                epoch: 1,
                content_type: ContentType::Application,
                encrypted: true
            }
        );
        let pending = update_keys(
            &a.provider,
            &mut group,
            &a.account.device,
            a.account.device_id,
        )
        .unwrap();
        assert!(matches!(
            framed(&pending.commit),
            Framing::Group { epoch: 1, content_type: ContentType::Commit, ref group_id, .. } if *group_id == group.group_id().to_vec()
        ));
        let mut ben = load(&b.provider, &group_id).unwrap();
        let leaving = leave(&b.provider, &mut ben, &b.account.device).unwrap();
        assert!(matches!(
            framed(&leaving),
            Framing::Group {
                content_type: ContentType::Proposal,
                ..
            }
        ));
        let d = device("dora");
        let mut fresh = create_group(&a.provider, &a.account).unwrap();
        let added = add_members(
            &a.provider,
            &mut fresh,
            &a.account.device,
            a.account.device_id,
            &[claim(&d)],
        )
        .unwrap();
        assert_eq!(framed(&added.welcome.unwrap()), Framing::Welcome);
        assert!(matches!(
            framed(&new_key_package(&d.provider, &d.account, false).unwrap()),
            Framing::KeyPackage
        ));
    }
}
