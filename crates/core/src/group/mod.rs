//! MLS conversations: creating groups, changing their members, encrypting,
//! and processing whatever arrives. Every function takes the caller's
//! [`OpenMlsProvider`], whose storage the caller wraps in one transaction
//! around each call and the merge that follows, so a crash never leaves a
//! half-applied epoch.
//!
//! This file: configuration, errors, KeyPackages, capabilities, and
//! [`process`] (everything that arrives). `operations`: what this device
//! does to a group. `policy`: what any member may do, checked on every
//! message (DESIGN.md §5).

use crate::identity::{Account, DeviceId, IdentityError, MemberId, Username, VerifiedDevice};
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use sotto_proto::v1::ClaimedKeyPackage;

mod admins;
mod invite;
mod operations;
mod policy;
#[cfg(test)]
mod tests;

pub use admins::{ADMIN_EXTENSION_TYPE, AdminPolicy, MAX_ADMINS, admin_policy};
pub use invite::{
    ExternalJoin, INVITE_LINK_ID_LEN, INVITE_SCHEME, INVITE_SECRET_LEN, InviteLink, SEAL_NONCE_LEN,
    SealedGroupInfo, abandon_join, external_commit, join_by_link, sealed_group_info,
};
pub use operations::{
    PendingCommit, add_members, clear_pending, commit_pending_proposals, create_group,
    create_group_with_admins, encrypt, encrypt_with_aad, leave, merge_pending, remove_devices,
    remove_user, set_admin_policy, update_keys,
};
pub use policy::{KeyCheck, KeyDirectory, direct_peer};
use policy::{check_commit_policy, check_external_commit, check_members};

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
    /// A member who is not an admin sent what only an admin of this group
    /// may (a post in a read-only group). Authenticated, but harmless once
    /// dropped: the conversation goes on.
    #[error("{member} is not an admin of this conversation and may not {what}; ignored")]
    NotAnAdmin { member: MemberId, what: String },
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

fn create_config(admins: Option<&AdminPolicy>) -> Result<MlsGroupCreateConfig, GroupError> {
    let mut builder = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .capabilities(admins::capabilities(&[]));
    if let Some(policy) = admins {
        builder = builder.with_group_context_extensions(policy.extensions()?);
    }
    Ok(builder
        .max_past_epochs(MAX_PAST_EPOCHS)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAXIMUM_FORWARD_DISTANCE,
        ))
        .use_ratchet_tree_extension(true)
        .build())
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, GroupError> {
    message
        .tls_serialize_detached()
        .map_err(|e| mls("serialize")(&e))
}

/// Smallest size a padded commit or Welcome takes on the wire.
const MIN_HANDSHAKE_BUCKET: usize = 256;

/// Pads a serialized commit or Welcome with zeros up to a power of two (at
/// least 256 bytes; the payload cap for the largest), as application
/// messages are padded inside MLS: a commit's size grows with the group's
/// tree and a Welcome's with its roster, so unpadded they would tell the
/// server and the network how big a group is. Receivers read one MLS
/// message and check that only zeros follow ([`deserialize_padded`]).
pub(super) fn pad_to_bucket(mut bytes: Vec<u8>) -> Vec<u8> {
    let bucket = bytes
        .len()
        .next_power_of_two()
        .clamp(MIN_HANDSHAKE_BUCKET, sotto_proto::MAX_PAYLOAD_BYTES);
    if bucket > bytes.len() {
        bytes.resize(bucket, 0);
    }
    bytes
}

/// Reads one MLS message followed by nothing but zero padding.
fn deserialize_padded(payload: &[u8]) -> Result<MlsMessageIn, String> {
    let (message, rest) =
        MlsMessageIn::tls_deserialize_bytes(payload).map_err(|e| e.to_string())?;
    if rest.iter().any(|&b| b != 0) {
        return Err("bytes other than padding after the message".into());
    }
    Ok(message)
}

/// A fresh KeyPackage for this device, serialized as an `MLSMessage`. Its
/// private part goes into the provider's storage.
pub fn new_key_package(
    provider: &impl OpenMlsProvider,
    account: &Account,
    last_resort: bool,
) -> Result<Vec<u8>, GroupError> {
    // Every leaf supports the admin extension, so that a group with admins
    // (which requires it) can add this device.
    let mut builder = KeyPackage::builder().leaf_node_capabilities(admins::capabilities(&[]));
    if last_resort {
        // The leaf must list every KeyPackage extension it carries, or
        // whoever claims it refuses it (openmls: `UnsupportedExtension`),
        // and the KeyPackage meant to keep adds possible when the pool is
        // empty (or flooded) would keep none possible.
        builder = builder
            .mark_as_last_resort()
            .leaf_node_capabilities(admins::capabilities(&[ExtensionType::LastResort]));
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

/// Loads a group from the provider's storage.
pub fn load(provider: &impl OpenMlsProvider, group_id: &[u8]) -> Result<MlsGroup, GroupError> {
    MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id))
        .map_err(|e| mls("load group")(&e))?
        .ok_or_else(|| GroupError::UnknownGroup(hex::encode(group_id)))
}

/// Whether the group has proposals queued for its next commit, read from
/// storage without loading the group: a load deserialises the whole tree
/// and the message secrets, and a client asks this of every group it is in
/// each time it waits for the server. A storage failure reads as "none"; the
/// commit that would follow would meet the same failure.
pub fn has_pending_proposals(provider: &impl OpenMlsProvider, group_id: &[u8]) -> bool {
    use openmls_traits::storage::StorageProvider as _;
    provider
        .storage()
        .queued_proposal_refs::<GroupId, hash_ref::ProposalRef>(&GroupId::from_slice(group_id))
        .is_ok_and(|refs| !refs.is_empty())
}

/// The members of a group, as accounts' devices.
pub fn members(group: &MlsGroup) -> Vec<MemberId> {
    group
        .members()
        .filter_map(|m| MemberId::from_credential(&m.credential).ok())
        .collect()
}

/// Who must receive what a member sends: every member device, the sending
/// device included (it drops its own echo), so that the list says nothing
/// about who sent (sealed sender): the same list for every member's
/// messages in an epoch.
pub fn recipients(group: &MlsGroup) -> Vec<DeviceId> {
    members(group).into_iter().map(|m| m.device_id).collect()
}

/// What an incoming MLS message turned out to be, after it was applied to
/// the provider's storage. `Debug` leaves out application plaintext.
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
        /// The message's clear authenticated data (its franking tag,
        /// `crate::franking`), authenticated by MLS.
        aad: Vec<u8>,
        /// The sender leaf's signature key: its device key, which the
        /// transparency log lists (checked when the leaf joined).
        sender_key: Vec<u8>,
        /// The group has admins and the sender's account is one of them
        /// (as of this device's current epoch).
        sender_is_admin: bool,
        /// The group is read-only for non-admins.
        read_only: bool,
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

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Joined { group_id, members } => f
                .debug_struct("Joined")
                .field("group_id", group_id)
                .field("members", members)
                .finish(),
            Self::Application {
                group_id,
                sender,
                plaintext,
                sender_is_admin,
                read_only,
                ..
            } => f
                .debug_struct("Application")
                .field("group_id", group_id)
                .field("sender", sender)
                .field("plaintext_len", &plaintext.len())
                .field("sender_is_admin", sender_is_admin)
                .field("read_only", read_only)
                .finish(),
            Self::Proposal {
                group_id,
                sender,
                leaving,
            } => f
                .debug_struct("Proposal")
                .field("group_id", group_id)
                .field("sender", sender)
                .field("leaving", leaving)
                .finish(),
            Self::FromFormerMember { group_id, sender } => f
                .debug_struct("FromFormerMember")
                .field("group_id", group_id)
                .field("sender", sender)
                .finish(),
            Self::Commit {
                group_id,
                sender,
                change,
                self_removed,
            } => f
                .debug_struct("Commit")
                .field("group_id", group_id)
                .field("sender", sender)
                .field("change", change)
                .field("self_removed", self_removed)
                .finish(),
        }
    }
}

/// The group a message is for, without processing it (`None` for a Welcome
/// or anything unparsable).
pub fn group_id_of(payload: &[u8]) -> Option<Vec<u8>> {
    let message = deserialize_padded(payload).ok()?;
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
    process_loaded(provider, &mut LoadedGroups::default(), payload, directory)
}

/// Groups loaded from storage once and kept for the next messages of the
/// same batch, all processed in ONE storage transaction: loading a group
/// deserialises its whole ratchet tree and message secrets, which costs
/// more than everything else a received message does in a large group
/// (bench/OPTIMISATIONS.md, W7).
///
/// A kept group is a copy of what storage holds, valid only while nothing
/// else writes that group's state: a stale copy written back would roll the
/// group back (its own sending ratchet included: nonce reuse). So:
///
/// - create it inside the transaction and drop it with it; never keep it
///   across transactions, and never encrypt, commit or load-and-store the
///   same groups while it lives;
/// - [`process_loaded`] keeps a group only when it returns `Ok`; on any
///   error the copy is dropped (storage may hold part of the change);
/// - when the caller undoes storage writes (a rollback, to a savepoint
///   too), it must [`clear`](Self::clear) it or drop it.
///
/// It is deliberately not `Clone`.
#[derive(Default)]
pub struct LoadedGroups {
    groups: std::collections::HashMap<Vec<u8>, MlsGroup>,
}

impl LoadedGroups {
    /// Forgets every kept group (after a rollback).
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    /// How many groups are kept.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The kept copy of a group, if any (read-only: for tests and checks).
    pub fn get(&self, group_id: &[u8]) -> Option<&MlsGroup> {
        self.groups.get(group_id)
    }

    fn take(
        &mut self,
        provider: &impl OpenMlsProvider,
        group_id: &[u8],
    ) -> Result<MlsGroup, GroupError> {
        match self.groups.remove(group_id) {
            Some(group) => Ok(group),
            None => load(provider, group_id),
        }
    }
}

impl std::fmt::Debug for LoadedGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedGroups")
            .field("groups", &self.groups.len())
            .finish()
    }
}

/// [`process`], reusing the groups `loaded` keeps (and keeping the group
/// of this message there when it succeeds). See [`LoadedGroups`] for when
/// this is safe.
pub fn process_loaded(
    provider: &impl OpenMlsProvider,
    loaded: &mut LoadedGroups,
    payload: &[u8],
    directory: &impl KeyDirectory,
) -> Result<Inbound, GroupError> {
    let mut kept = None;
    let result = process_inner(provider, loaded, &mut kept, payload, directory);
    if let (Ok(_), Some(group)) = (&result, kept) {
        loaded.groups.insert(group.group_id().to_vec(), group);
    }
    result
}

fn process_inner(
    provider: &impl OpenMlsProvider,
    loaded: &mut LoadedGroups,
    kept: &mut Option<MlsGroup>,
    payload: &[u8],
    directory: &impl KeyDirectory,
) -> Result<Inbound, GroupError> {
    let message = deserialize_padded(payload)
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
    let group = kept.insert(loaded.take(provider, &group_id)?);
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
    let external = matches!(processed.sender(), Sender::NewMemberCommit);
    let sender_leaf = match processed.sender() {
        Sender::Member(leaf) => *leaf,
        _ if external => {
            // A joiner by invite link: only its external commit is
            // possible, checked against the group's policy before it is
            // merged.
            let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content()
            else {
                return Err(GroupError::PeerMisbehaved(
                    "a non-member sent something other than an external commit".into(),
                ));
            };
            check_external_commit(group, &staged, &sender, directory)?;
            let change = RosterChange {
                joined: vec![sender.clone()],
                ..RosterChange::default()
            };
            let self_removed = staged.self_removed();
            group
                .merge_staged_commit(provider, *staged)
                .map_err(|e| mls("merge commit")(&e))?;
            return Ok(Inbound::Commit {
                group_id,
                sender,
                change,
                self_removed,
            });
        }
        _ => {
            return Err(GroupError::PeerMisbehaved(
                "only members may send to a group".into(),
            ));
        }
    };
    let aad = processed.aad().to_vec();
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => {
            // Sent in an earlier epoch by someone a later commit removed:
            // the removal is already in effect for this device.
            // The sender's leaf first (it still holds the sender unless a
            // commit since removed it), the whole roster only if not.
            let at_leaf = group.member_at(sender_leaf);
            let still_there = at_leaf.as_ref().is_some_and(|m| {
                MemberId::from_credential(&m.credential).is_ok_and(|id| id == sender)
            });
            if !still_there && !members(group).contains(&sender) {
                return Ok(Inbound::FromFormerMember { group_id, sender });
            }
            let sender_key = at_leaf.map(|m| m.signature_key).unwrap_or_default();
            let policy = admin_policy(group)?;
            Ok(Inbound::Application {
                group_id,
                sender_is_admin: policy
                    .as_ref()
                    .is_some_and(|p| p.is_admin(&sender.username)),
                read_only: policy.as_ref().is_some_and(|p| p.read_only),
                sender,
                plaintext: app.into_bytes(),
                aad,
                sender_key,
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
            check_commit_policy(group, &staged, sender_leaf, &sender, directory)?;
            let change = RosterChange::of(group, &staged);
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

/// Who a commit adds and removes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RosterChange {
    pub added: Vec<MemberId>,
    /// Removed by the commit's sender.
    pub removed: Vec<MemberId>,
    /// Removed at their own request.
    pub left: Vec<MemberId>,
    /// Joined by the group's invite link (an external commit).
    pub joined: Vec<MemberId>,
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
        self.added.is_empty()
            && self.removed.is_empty()
            && self.left.is_empty()
            && self.joined.is_empty()
    }
}
