//! The devices of an account: linking a new one with a one-time code,
//! listing them from the key log, and removing one everywhere.
//!
//! Linking: the existing device opens a rendezvous and shows a code (secret
//! and server URL). The new device joins with its device key, sealed under
//! the code. Once the user approves, the existing device logs the new device
//! in the transparency log, hands it the account (sealed), waits for its
//! KeyPackages and adds it to every conversation.

use crate::ClientError;
use crate::client::*;
use crate::endpoint::Trust;
use crate::provider::MlsProvider;
use crate::store::{self, ConversationKind, GroupState, HistoryEntry};
use crate::transport::{Next, Push, Transport};
use sotto_core::content::{Body, ConversationInfo};
use sotto_core::group;
use sotto_core::identity::{Account, DeviceId, DeviceKey, IdentityKey, Username};
use sotto_core::link::{LinkCode, LinkDirection};
use sotto_proto::Message as _;
use sotto_proto::v1::{
    self, AddDevice, CompleteLink, ErrorCode, JoinLink, LinkBundle, LinkJoinRequest, Login,
    OpenLink, RemoveDevice, client_frame,
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
}

/// A new device asking to join through a link this device opened.
#[derive(Debug)]
pub struct LinkRequestInfo {
    pub device_id: DeviceId,
    pub device_key: [u8; 32],
}

impl Client {
    /// Opens a link rendezvous on the server; show the returned code (and
    /// its QR) to the user, then call [`Client::wait_for_link_request`].
    pub async fn open_link(&mut self) -> Result<LinkCode, ClientError> {
        let code = LinkCode::generate(&self.server_url);
        let link_id = link_id(&code)?;
        self.connected(async |_, t| {
            t.request(client_frame::Body::OpenLink(OpenLink { link_id }))
                .await
                .map(|_| code)
        })
        .await
    }

    /// Waits for the new device to join with the code. Messages arriving
    /// meanwhile are processed as usual.
    pub async fn wait_for_link_request(
        &mut self,
        code: &LinkCode,
    ) -> Result<LinkRequestInfo, ClientError> {
        let link_id = link_id(code)?;
        self.connected(async |c, t| {
            tokio::time::timeout(LINK_LIFETIME, async {
                loop {
                    match t.next(Some(LISTEN_PING)).await? {
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
                            return Ok(LinkRequestInfo {
                                device_id: DeviceId::from_slice(&request.device_id)?,
                                device_key,
                            });
                        }
                        Next::Push(Push::Delivery(d)) => {
                            let mut ignored = Vec::new();
                            c.handle_delivery(t, d, &mut ignored).await?;
                        }
                        _ => {}
                    }
                }
            })
            .await
            .map_err(|_| {
                ClientError::Usage("the link code expired before a device joined".into())
            })?
        })
        .await
    }

    /// Approves the device: logs it in the key log, hands it the account,
    /// then adds it to every conversation of this account.
    pub async fn approve_link(
        &mut self,
        code: &LinkCode,
        request: &LinkRequestInfo,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let link_id = link_id(code)?;
        self.connected(async |c, t| {
            let own = c.account.username.clone();
            let state = c.verify_account(&own).await?;
            let entry = c.account.identity.device_added(
                &own,
                state.next_seq,
                request.device_id,
                request.device_key,
            );
            let device = c
                .account
                .identity
                .certify(&own, request.device_id, request.device_key);
            t.request(client_frame::Body::AddDevice(AddDevice {
                entry: Some(entry),
                device: Some(device),
            }))
            .await?;
            let bundle = LinkBundle {
                username: own.to_string(),
                identity_secret: c.account.identity.secret().to_vec(),
            };
            let sealed_bundle = code
                .seal(LinkDirection::AccountBundle, &bundle.encode_to_vec())
                .map_err(link_error)?;
            t.request(client_frame::Body::CompleteLink(CompleteLink {
                link_id,
                sealed_bundle,
            }))
            .await?;
            c.add_own_device_everywhere(t, request.device_id).await
        })
        .await
    }

    /// Adds a newly linked device of this account to every active
    /// conversation, and tells it what each conversation is.
    async fn add_own_device_everywhere(
        &mut self,
        t: &mut Transport,
        device: DeviceId,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        self.drain(t).await?;
        let own = self.account.username.clone();
        let started = tokio::time::Instant::now();
        for group_id in store::active_groups(&self.db)? {
            let Some(conversation) = store::group(&self.db, &group_id)?
                .and_then(|row| row.conversation_id)
                .map(|id| store::conversation_by_id(&self.db, id))
                .transpose()?
                .flatten()
            else {
                continue;
            };
            let key_packages = loop {
                match self.claim(&own, &[device]).await {
                    Ok(kps) if !kps.is_empty() => break kps,
                    Ok(_) => {}
                    Err(e) if e.server_code() == Some(ErrorCode::NoKeyPackage) => {}
                    Err(ClientError::Server(e)) if e.code == ErrorCode::RateLimited as i32 => {
                        let wait = Duration::from_millis(e.retry_after_ms.min(5_000));
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e),
                }
                if started.elapsed() > NEW_DEVICE_KEY_PACKAGES_WAIT {
                    return Err(ClientError::Usage(
                        "the new device did not publish its keys in time; run `sotto sync` on it, then link again".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            self.commit_with_retry(t, &group_id, |p, g, key| {
                group::add_members(p, g, key, &key_packages).map(Some)
            })
            .await?;
            let info = match conversation.kind {
                ConversationKind::Direct => ConversationInfo {
                    kind: v1::ConversationKind::Direct as i32,
                    name: String::new(),
                },
                ConversationKind::Group => ConversationInfo {
                    kind: v1::ConversationKind::Group as i32,
                    name: conversation.name.clone(),
                },
            };
            self.send_content(&group_id, Body::Info(info)).await?;
        }
        Ok(std::mem::take(&mut self.own_lines))
    }

    /// Joins an account as a new device with a code from one of its devices,
    /// creating the profile in `dir`. Returns once the existing device
    /// approved. `trust` is what to trust on the way to the server in the
    /// code (`--ca-file`, `--insecure-transport`); the profile keeps it.
    pub async fn join_link(dir: &Path, code: &str, trust: &Trust) -> Result<Self, ClientError> {
        let code = LinkCode::parse(code).map_err(link_error)?;
        let db = crate::client::open_new_profile(dir)?;
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
        t.request(client_frame::Body::JoinLink(JoinLink {
            link_id: link_id(&code)?,
            sealed_request,
        }))
        .await?;
        let bundle = tokio::time::timeout(LINK_LIFETIME, async {
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
        let bundle = LinkBundle::decode(opened.as_slice())
            .map_err(|e| ClientError::Protocol(format!("link bundle: {e}")))?;
        let account = Account {
            username: Username::parse(&bundle.username)?,
            identity: IdentityKey::from_secret(&bundle.identity_secret)?,
            device_id,
            device,
        };
        let login = Login {
            username: account.username.to_string(),
            device_id: device_id.as_bytes().to_vec(),
            challenge_signature: account
                .device
                .sign_login(&t.nonce, &account.username, device_id),
        };
        t.request(client_frame::Body::Login(login)).await?;
        let log_key = t.log_key.clone();
        Self::create(db, account, &code.server_url, trust, log_key, t).await
    }

    /// The account's devices, from the key log.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.connected(async |c, _logged_in| {
            let own = c.account.username.clone();
            let state = c.verify_account(&own).await?;
            Ok(state
                .devices
                .iter()
                .map(|(id, key)| DeviceInfo {
                    device_id: hex::encode(id),
                    device_key: hex::encode(key),
                    this_device: id.as_slice() == c.account.device_id.as_bytes(),
                })
                .collect())
        })
        .await
    }

    /// Removes a device from the account (it can no longer log in) and from
    /// every conversation (it can no longer decrypt).
    pub async fn remove_device(&mut self, device_id: &str) -> Result<(), ClientError> {
        let device = hex::decode(device_id)
            .ok()
            .and_then(|bytes| DeviceId::from_slice(&bytes).ok())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "{device_id} is not a device id; see `sotto device list`"
                ))
            })?;
        if device == self.account.device_id {
            return Err(ClientError::Usage(
                "this is the device you are using; remove it from another device".into(),
            ));
        }
        self.connected(async |c, t| {
            c.drain(t).await?;
            let own = c.account.username.clone();
            let state = c.verify_account(&own).await?;
            if !state.devices.contains_key(device.as_bytes()) {
                return Err(ClientError::Usage(format!(
                    "{device} is not a device of your account; see `sotto device list`"
                )));
            }
            let entry = c
                .account
                .identity
                .device_removed(&own, state.next_seq, device);
            t.request(client_frame::Body::RemoveDevice(RemoveDevice {
                entry: Some(entry),
            }))
            .await?;
            for group_id in store::active_groups(&c.db)? {
                let is_member = {
                    let provider = MlsProvider::new(&c.crypto, &c.db);
                    group::load(&provider, &group_id)
                        .map(|g| group::members(&g).iter().any(|m| m.device_id == device))
                        .unwrap_or(false)
                };
                if is_member
                    && store::group(&c.db, &group_id)?
                        .is_some_and(|r| r.state == GroupState::Active)
                {
                    c.commit_with_retry(t, &group_id, |p, g, key| {
                        // `None`: another member's commit removed it first.
                        group::remove_devices(p, g, key, &[device])
                    })
                    .await?;
                }
            }
            Ok(())
        })
        .await
    }
}

fn link_id(code: &LinkCode) -> Result<Vec<u8>, ClientError> {
    code.link_id().map_err(link_error)
}

fn link_error(e: sotto_core::link::LinkError) -> ClientError {
    ClientError::Usage(e.to_string())
}
