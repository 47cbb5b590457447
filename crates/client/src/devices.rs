//! The devices of an account: linking a new one with a one-time code,
//! listing them from the key log, and removing one everywhere.
//!
//! Linking: the existing device opens a rendezvous and shows a code (secret
//! and server URL). The new device joins with its device key, sealed under
//! the code. Once the user approves, the existing device logs the new device
//! in the transparency log, hands it the account (sealed), waits for its
//! KeyPackages and adds it to every conversation.

use crate::ClientError;
use crate::conversations::{conversation_info, send_content};
use crate::endpoint::Trust;
use crate::keys::pinned_head;
use crate::membership::{claim, claim_own_devices, commit_with_retry};
use crate::outbox::{CommitOutcome, Outgoing};
use crate::own_account::{check_own_account, known_entries};
use crate::profile::Profile;
use crate::receive::{drain, handle_delivery};
use crate::session::{LISTEN_PING, Session, login_request};
use crate::store::{self, GroupState, HistoryEntry};
use crate::transport::{Next, Push, Transport};
use rusqlite::Connection;
use sotto_core::content::Body;
use sotto_core::group;
use sotto_core::identity::{Account, DeviceId, DeviceKey, IdentityKey, Username};
use sotto_core::link::{LinkCode, LinkDirection};
use sotto_proto::Message as _;
use sotto_proto::v1::{
    AddDevice, CompleteLink, ErrorCode, IdentityHandover, JoinLink, LinkBundle, LinkJoinRequest,
    LogEntry, OpenLink, RemoveDevice, SignedTreeHead, client_frame,
};
use std::path::Path;
use std::time::Duration;

/// How long a link code stays usable.
const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long to wait for a newly linked device's KeyPackages.
const NEW_DEVICE_KEY_PACKAGES_WAIT: Duration = Duration::from_secs(60);

/// A device of this account, as the key log lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub device_id: String,
    /// Hex of the device's public key.
    pub device_key: String,
    pub this_device: bool,
    /// No device of this account added it (see `sotto warnings`).
    pub unknown: bool,
}

/// A new device asking to join through a link this device opened.
#[derive(Debug)]
pub struct LinkRequestInfo {
    pub device_id: DeviceId,
    pub device_key: [u8; 32],
    /// Twelve digits the joining device shows too: if they differ, someone
    /// else used the code.
    pub fingerprint: String,
}

/// Opens a link rendezvous for `code` on the server.
pub(crate) async fn open_link(s: &mut Session<'_>, code: &LinkCode) -> Result<(), ClientError> {
    let link_id = link_id(code)?;
    s.connection
        .request(client_frame::Body::OpenLink(OpenLink { link_id }))
        .await
        .map(|_| ())
}

/// Waits for the new device to join with the code. Messages arriving
/// meanwhile are processed as usual.
pub(crate) async fn wait_for_link_request(
    s: &mut Session<'_>,
    code: &LinkCode,
) -> Result<LinkRequestInfo, ClientError> {
    let link_id = link_id(code)?;
    crate::clock::timeout(LINK_LIFETIME, async {
        loop {
            match s.connection.next(Some(LISTEN_PING)).await? {
                Next::Push(Push::LinkRequest(r)) if r.link_id == link_id => {
                    let opened = code
                        .open(LinkDirection::JoinRequest, &r.sealed_request)
                        .map_err(link_error)?;
                    let request = LinkJoinRequest::decode(opened.as_slice())
                        .map_err(|e| ClientError::Protocol(format!("link request: {e}")))?;
                    let device_key: [u8; 32] =
                        request.device_key.as_slice().try_into().map_err(|_| {
                            ClientError::Protocol("link request: bad device key".into())
                        })?;
                    let fingerprint = code
                        .fingerprint(&request.device_id, &device_key)
                        .map_err(link_error)?;
                    return Ok(LinkRequestInfo {
                        device_id: DeviceId::from_slice(&request.device_id)?,
                        device_key,
                        fingerprint,
                    });
                }
                Next::Push(Push::Delivery(d)) => {
                    let mut ignored = Vec::new();
                    handle_delivery(s, d, &mut ignored).await?;
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| ClientError::Usage("the link code expired before a device joined".into()))?
}

/// Approves the device: logs it in the key log, hands it the account,
/// then adds it to every conversation of this account.
pub(crate) async fn approve_link(
    s: &mut Session<'_>,
    code: &LinkCode,
    request: &LinkRequestInfo,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let link_id = link_id(code)?;
    let own = s.profile.account.username.clone();
    let state = s
        .key_log
        .verify_account(s.profile, &mut s.anonymous, s.connection, &own)
        .await?;
    require_current_identity(s.profile, &state)?;
    let account = &s.profile.account;
    let entry = account.attest(account.identity.device_added(
        &own,
        state.next_seq,
        request.device_id,
        request.device_key,
    ));
    let device = account
        .identity
        .certify(&own, request.device_id, request.device_key);
    s.connection
        .request(client_frame::Body::AddDevice(AddDevice {
            entry: Some(entry.clone()),
            device: Some(device),
        }))
        .await?;
    // This device made it: no warning about it, here or on the new device.
    store::record_own_event(&s.profile.db, state.next_seq, &entry.encode_to_vec())?;
    let bundle = LinkBundle {
        username: own.to_string(),
        identity_secret: s.profile.account.identity.secret().to_vec(),
        log_key: s.key_log.log_key().to_vec(),
        head: pinned_head(&s.profile.db)?,
        own_history: known_entries(&s.profile.db)?,
    };
    let sealed_bundle = code
        .seal(LinkDirection::AccountBundle, &bundle.encode_to_vec())
        .map_err(link_error)?;
    s.connection
        .request(client_frame::Body::CompleteLink(CompleteLink {
            link_id,
            sealed_bundle,
        }))
        .await?;
    add_own_device_everywhere(s, request.device_id).await
}

/// Adds a newly linked device of this account to every active
/// conversation, and tells it what each conversation is.
async fn add_own_device_everywhere(
    s: &mut Session<'_>,
    device: DeviceId,
) -> Result<Vec<HistoryEntry>, ClientError> {
    drain(s).await?;
    let own = s.profile.account.username.clone();
    let started = crate::clock::Instant::now();
    for group_id in store::active_groups(&s.profile.db)? {
        let Some(conversation) = store::group(&s.profile.db, &group_id)?
            .and_then(|row| row.conversation_id)
            .map(|id| store::conversation_by_id(&s.profile.db, id))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        let key_packages = loop {
            match claim(
                s.profile,
                s.key_log,
                &mut s.anonymous,
                s.connection,
                &own,
                &[device],
            )
            .await
            {
                Ok(kps) if !kps.is_empty() => break kps,
                Ok(_) => {}
                Err(e) if e.server_code() == Some(ErrorCode::NoKeyPackage) => {}
                Err(ClientError::Server(e)) if e.code == ErrorCode::RateLimited as i32 => {
                    let wait = Duration::from_millis(e.retry_after_ms.min(5_000));
                    crate::clock::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
            if started.elapsed() > NEW_DEVICE_KEY_PACKAGES_WAIT {
                return Err(ClientError::Usage(
                    "the new device did not publish its keys in time; run `sotto sync` on it, then link again".into(),
                ));
            }
            crate::clock::sleep(Duration::from_millis(200)).await;
        };
        commit_with_retry(s, &group_id, |p, g, key| {
            group::add_members(p, g, key, &key_packages).map(Some)
        })
        .await?;
        let info = conversation_info(conversation.kind, &conversation.name);
        send_content(s, &group_id, info).await?;
    }
    Ok(s.outbox.take_lines())
}

/// What a new device has once the existing one approved: its profile
/// database, the account, the server, and a logged-in connection.
pub(crate) struct Joined {
    pub db: Connection,
    pub account: Account,
    pub server_url: String,
    pub log_key: Vec<u8>,
    /// The newest head the linking device verified, to pin before anything
    /// else is checked.
    pub head: Option<SignedTreeHead>,
    /// The account's log entries the linking device knows its devices made.
    pub own_history: Vec<LogEntry>,
    pub transport: Transport,
}

/// Joins an account as a new device with a code from one of its devices,
/// creating the profile database in `dir`. Returns once the existing device
/// approved and this one logged in.
pub(crate) async fn join_link(
    dir: &Path,
    code: &str,
    trust: &Trust,
    show_fingerprint: impl FnOnce(String),
) -> Result<Joined, ClientError> {
    let code = LinkCode::parse(code).map_err(link_error)?;
    let db = crate::profile::open_new_profile(dir)?;
    let device = DeviceKey::generate();
    let device_id = DeviceId::random();
    let mut t = Transport::connect(&code.server_url, trust).await?;
    let request = LinkJoinRequest {
        device_id: device_id.as_bytes().to_vec(),
        device_key: device.public().to_vec(),
    };
    let sealed_request = code
        .seal(LinkDirection::JoinRequest, &request.encode_to_vec())
        .map_err(link_error)?;
    show_fingerprint(
        code.fingerprint(&request.device_id, &request.device_key)
            .map_err(link_error)?,
    );
    t.request(client_frame::Body::JoinLink(JoinLink {
        link_id: link_id(&code)?,
        sealed_request,
    }))
    .await?;
    let bundle = crate::clock::timeout(LINK_LIFETIME, async {
        loop {
            if let Next::Push(Push::LinkCompleted(done)) = t.next(Some(LISTEN_PING)).await? {
                return Ok::<_, ClientError>(done.sealed_bundle);
            }
        }
    })
    .await
    .map_err(|_| ClientError::Usage("the other device did not approve in time".into()))??;
    let opened = code
        .open(LinkDirection::AccountBundle, &bundle)
        .map_err(link_error)?;
    let mut bundle = LinkBundle::decode(opened.as_slice())
        .map_err(|e| ClientError::Protocol(format!("link bundle: {e}")))?;
    let account = Account {
        username: Username::parse(&bundle.username)?,
        identity: IdentityKey::from_secret(&bundle.identity_secret)?,
        device_id,
        device,
    };
    // The linking device's pins, a second source: a server (or someone in
    // the way) presenting another log key is not the one the account is on.
    let log_key = if bundle.log_key.is_empty() {
        t.log_key.clone()
    } else if bundle.log_key != t.log_key {
        return Err(ClientError::KeyLog(format!(
            "the server presents the log key {}, but your other device pinned {}: this is not \
             the server your account is on, or someone is in the way. Nothing was saved",
            hex::encode(&t.log_key),
            hex::encode(&bundle.log_key)
        )));
    } else {
        std::mem::take(&mut bundle.log_key)
    };
    if let Some(head) = &bundle.head {
        sotto_transparency::verify_head(&log_key, head).map_err(|e| {
            ClientError::KeyLog(format!(
                "the head your other device sent does not verify: {e}"
            ))
        })?;
    }
    t.request(login_request(&account, &t.nonce)).await?;
    Ok(Joined {
        db,
        account,
        server_url: code.server_url,
        log_key,
        head: bundle.head.take(),
        own_history: std::mem::take(&mut bundle.own_history),
        transport: t,
    })
}

/// The account's devices, from the key log, each marked if no device of
/// this account added it; and the warnings this check raised.
pub(crate) async fn devices(
    s: &mut Session<'_>,
) -> Result<(Vec<DeviceInfo>, Vec<HistoryEntry>), ClientError> {
    let (raised, review) = check_own_account(s).await?;
    let Some(review) = review else {
        // The log does not verify: say why.
        let own = s.profile.account.username.clone();
        s.key_log
            .verify_account(s.profile, &mut s.anonymous, s.connection, &own)
            .await?;
        return Err(ClientError::KeyLog(
            "your account's key log does not add up; see `sotto warnings`".into(),
        ));
    };
    let devices = review
        .state
        .devices
        .iter()
        .map(|(id, key)| DeviceInfo {
            device_id: hex::encode(id),
            device_key: hex::encode(key),
            this_device: id.as_slice() == s.profile.account.device_id.as_bytes(),
            unknown: review.unknown_devices.contains(id),
        })
        .collect();
    Ok((devices, raised))
}

/// The device a user named for removal: another device of this account.
pub(crate) fn device_to_remove(
    profile: &Profile,
    device_id: &str,
) -> Result<DeviceId, ClientError> {
    let device = hex::decode(device_id)
        .ok()
        .and_then(|bytes| DeviceId::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "{device_id} is not a device id; see `sotto device list`"
            ))
        })?;
    if device == profile.account.device_id {
        return Err(ClientError::Usage(
            "this is the device you are using; remove it from another device".into(),
        ));
    }
    Ok(device)
}

/// What removing a device did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Removal {
    /// Hex of the removed device's id.
    pub device_id: String,
    /// Hex of the account's identity key before and after the rotation.
    pub old_identity_key: String,
    pub new_identity_key: String,
    /// Hex ids of the account's other remaining devices that were handed
    /// the new identity key (sealed by MLS for them alone; a device that is
    /// offline gets it from its mailbox).
    pub devices_given_new_key: Vec<String>,
    /// Hex ids of the account's other remaining devices that could not be
    /// handed it (no KeyPackage left, or the handover failed): they keep
    /// working (their certificates were renewed) but cannot link or remove
    /// devices.
    pub devices_without_new_key: Vec<String>,
}

/// Removes a device from the account (it can no longer log in) and from
/// every conversation (it can no longer decrypt), and rotates the
/// account's identity key so that the removed device's copy of the old one
/// can log nothing more.
///
/// The removal and the rotation go to the server in one request and are
/// logged in one transaction: `DeviceRemoved`, then `IdentityRotated`
/// (signed by the old key, proven by the new one), with every remaining
/// device certified again by the new key. The new key is kept in the
/// profile before the request, so a crash after the server's commit cannot
/// lose it (the device adopts it when it next reads its log).
///
/// Once the removed device is out of every group, the new key is handed to
/// the remaining devices ([`hand_over_identity`]).
pub(crate) async fn remove_device(
    s: &mut Session<'_>,
    device: DeviceId,
) -> Result<Removal, ClientError> {
    drain(s).await?;
    let own = s.profile.account.username.clone();
    let state = s
        .key_log
        .verify_account(s.profile, &mut s.anonymous, s.connection, &own)
        .await?;
    if !state.devices.contains_key(device.as_bytes()) {
        return Err(ClientError::Usage(format!(
            "{device} is not a device of your account; see `sotto device list`"
        )));
    }
    require_current_identity(s.profile, &state)?;
    let rotation_seq = state
        .next_seq
        .checked_add(1)
        .ok_or_else(|| ClientError::Internal("account_seq overflows".into()))?;
    let new_identity = IdentityKey::generate();
    store::save_spare_identity(
        &s.profile.db,
        &new_identity.public(),
        new_identity.secret().as_slice(),
    )?;
    let account = &s.profile.account;
    let old_identity_key = account.identity_public();
    let entry = account.attest(
        account
            .identity
            .device_removed(&own, state.next_seq, device),
    );
    let rotation = account.attest(account.identity.identity_rotated(
        &own,
        rotation_seq,
        &new_identity,
    ));
    let remaining: Vec<(DeviceId, [u8; 32])> = state
        .devices
        .iter()
        .filter(|(id, _)| id.as_slice() != device.as_bytes())
        .map(|(id, key)| Ok((DeviceId::from_slice(id)?, *key)))
        .collect::<Result<_, ClientError>>()?;
    let devices = remaining
        .iter()
        .map(|(id, key)| new_identity.certify(&own, *id, *key))
        .collect();
    s.connection
        .request(client_frame::Body::RemoveDevice(RemoveDevice {
            entry: Some(entry.clone()),
            rotation: Some(rotation.clone()),
            devices,
        }))
        .await?;
    store::record_own_event(&s.profile.db, state.next_seq, &entry.encode_to_vec())?;
    store::record_own_event(&s.profile.db, rotation_seq, &rotation.encode_to_vec())?;
    store::set_identity_secret(&s.profile.db, new_identity.secret().as_slice())?;
    store::clear_spare_identities(&s.profile.db)?;
    s.profile.account.identity = new_identity;
    // Removing a device nobody of the account added settles its warnings.
    store::acknowledge_account_alerts(&s.profile.db, Some(device.as_bytes()))?;
    for group_id in store::active_groups(&s.profile.db)? {
        let is_member = group::load(&s.profile.provider(), &group_id)
            .map(|g| group::members(&g).iter().any(|m| m.device_id == device))
            .unwrap_or(false);
        if is_member
            && store::group(&s.profile.db, &group_id)?
                .is_some_and(|r| r.state == GroupState::Active)
        {
            commit_with_retry(s, &group_id, |p, g, key| {
                // `None`: another member's commit removed it first.
                group::remove_devices(p, g, key, &[device])
            })
            .await?;
        }
    }
    // Only now, with the removed device out of every group: the handover
    // goes to a new group of the devices the log lists after the removal.
    let secret = s.profile.account.identity.secret();
    let given = match hand_over_identity(s, secret.as_slice()).await {
        Ok(given) => given,
        Err(e) => {
            // The rotation stands; the other devices only miss the key.
            tracing::warn!("could not hand the new identity key to your other devices: {e}");
            Vec::new()
        }
    };
    let others = remaining
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != s.profile.account.device_id);
    let (given, without): (Vec<DeviceId>, Vec<DeviceId>) =
        others.partition(|id| given.contains(id));
    Ok(Removal {
        device_id: device.to_string(),
        old_identity_key: hex::encode(old_identity_key),
        new_identity_key: hex::encode(s.profile.account.identity_public()),
        devices_given_new_key: given.iter().map(ToString::to_string).collect(),
        devices_without_new_key: without.iter().map(ToString::to_string).collect(),
    })
}

/// Hands the account's current identity key to its other devices: a new
/// MLS group of exactly the devices the key log lists for the account (each
/// KeyPackage checked against the log, as for any member; devices nobody of
/// the account added are left out), whose first application message is an
/// `IdentityHandover` of `identity_secret` (the account's current one; tests
/// hand over others). Returns the devices it went to.
///
/// One group per rotation, left at once: its roster is right by
/// construction (the log after the removal), and no later link or removal
/// has to keep it up to date. Receivers do not list it as a conversation
/// (see `inbound`).
pub(crate) async fn hand_over_identity(
    s: &mut Session<'_>,
    identity_secret: &[u8],
) -> Result<Vec<DeviceId>, ClientError> {
    let key_packages = claim_own_devices(s).await?;
    if key_packages.is_empty() {
        return Ok(Vec::new());
    }
    let devices: Vec<DeviceId> = key_packages.iter().map(|k| k.device.device_id).collect();
    let profile = &*s.profile;
    let (group_id, outgoing) = profile.in_transaction(|provider, tx| {
        let mut g = group::create_group(provider, &profile.account)?;
        let group_id = g.group_id().to_vec();
        store::insert_group(tx, &group_id, None)?;
        let pending = group::add_members(provider, &mut g, &profile.account.device, &key_packages)?;
        let outgoing = Outgoing::commit(&group_id, pending);
        outgoing.queue(tx)?;
        Ok((group_id, outgoing))
    })?;
    let sent = async {
        if let CommitOutcome::Rejected { current_epoch } = s
            .outbox
            .submit(s.profile, &mut s.anonymous, &outgoing)
            .await?
        {
            return Err(ClientError::Protocol(format!(
                "the server refused a new group (it claims epoch {current_epoch})"
            )));
        }
        let handover = Body::IdentityHandover(IdentityHandover {
            identity_secret: identity_secret.to_vec(),
        });
        send_content(s, &group_id, handover).await.map(|_| ())
    }
    .await;
    // Done with, sent or not (the outbox still sends what it queued): no
    // later removal or link touches it.
    store::set_group_state(&s.profile.db, &group_id, GroupState::Left)?;
    sent.map(|()| devices)
}

/// Only a device holding the account's current identity key can change
/// the account: one that missed a rotation would sign with a key the log
/// no longer accepts.
fn require_current_identity(
    profile: &Profile,
    state: &sotto_transparency::AccountState,
) -> Result<(), ClientError> {
    if state.identity_key == profile.account.identity_public() {
        return Ok(());
    }
    Err(ClientError::Usage(
        "your account's identity key was rotated by another of your devices and this device \
         does not hold the new one yet: run `sotto sync` to receive it from that device, or \
         link or remove devices from the device that removed one"
            .into(),
    ))
}

pub(crate) fn link_id(code: &LinkCode) -> Result<Vec<u8>, ClientError> {
    code.link_id().map_err(link_error)
}

fn link_error(e: sotto_core::link::LinkError) -> ClientError {
    ClientError::Usage(e.to_string())
}
