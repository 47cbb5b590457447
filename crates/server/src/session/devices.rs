//! `AddDevice` and `RemoveDevice`: changes to the caller's own account,
//! each carried by a log entry the account's identity key signed.

use super::parse::certified_device;
use super::wire_error::{bad_log_entry, done, error, stale_sequence};
use super::{RequestResult, Session, now_seconds};
use crate::rate_limit::SharedLimit;
use crate::store::{
    DeviceId, DeviceRemoval, IdentityRotation, NewDevice, RemoveDeviceError, SignedDevice, Store,
    day_of,
};
use crate::transparency_log::decode_records;
use ed25519_dalek::VerifyingKey;
use sotto_proto::v1::{self, ErrorCode};
use sotto_transparency::{AccountState, leaf_bytes, open_entry};

impl<S: Store> Session<S> {
    /// What the log says about the caller's account.
    pub(super) async fn own_account(&self) -> Result<(String, AccountState), v1::Error> {
        let username = self
            .username
            .clone()
            .ok_or_else(|| error(ErrorCode::NotAuthenticated, "register or log in first"))?;
        let records = self.ctx.store.account_log(&username).await?;
        if records.is_empty() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "this account has no transparency-log history (it was created before the log \
                 existed), so its devices cannot change; register a new account",
            ));
        }
        let entries = decode_records(&records)?;
        let state = AccountState::replay(&username, &entries).map_err(|e| {
            tracing::error!(error = %e, "an account's stored log entries do not replay");
            error(
                ErrorCode::Internal,
                "the server's log for this account is inconsistent; tell the server's operator",
            )
        })?;
        Ok((username, state))
    }

    pub(super) async fn add_device(&mut self, add: v1::AddDevice) -> RequestResult {
        let entry = add
            .entry
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the log entry is missing"))?;
        let device = add
            .device
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the device is missing"))?;
        let (username, mut state) = self.own_account().await?;
        // Every device is a log entry each contact downloads: a cap keeps an
        // account's log (and the lookups of it) small.
        if state.devices.len() >= self.ctx.limits.max_devices_per_account {
            return Err(error(
                ErrorCode::TooLarge,
                format!(
                    "this account has {} devices, the most this server allows; remove one before adding another",
                    state.devices.len()
                ),
            ));
        }
        self.ctx.rate_limits.charge_device_added(&username)?;
        self.ctx
            .rate_limits
            .charge_shared(&*self.ctx.store, SharedLimit::DevicesAdded, &username)
            .await??;
        let identity_key = VerifyingKey::from_bytes(&state.identity_key).map_err(|_| {
            error(
                ErrorCode::Internal,
                "the account's identity key is unusable",
            )
        })?;
        let (device_id, device_key) = certified_device(&device, &username, &identity_key)?;
        let event = open_entry(&entry).map_err(|e| bad_log_entry("the log entry", &e))?;
        let Some(sotto_transparency::account_event::Change::DeviceAdded(added)) = &event.change
        else {
            return Err(error(
                ErrorCode::InvalidRequest,
                "AddDevice needs a DeviceAdded log entry",
            ));
        };
        if added.device_id != device_id.as_bytes() || added.device_key != device_key.as_bytes() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the DeviceAdded entry must name the certified device (its id and key)",
            ));
        }
        state
            .apply(&entry)
            .map_err(|e| bad_log_entry("the DeviceAdded entry", &e))?;
        let new = NewDevice {
            username,
            device_id,
            device_key: device_key.to_bytes(),
            device: SignedDevice {
                certificate: device.certificate,
                identity_signature: device.identity_signature,
            },
            today: day_of(now_seconds()),
            log_entry: leaf_bytes(&entry),
            account_seq: event.account_seq,
        };
        self.ctx.store.add_device(new).await?;
        tracing::info!("device added");
        done()
    }

    pub(super) async fn remove_device(&mut self, remove: v1::RemoveDevice) -> RequestResult {
        let entry = remove
            .entry
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the log entry is missing"))?;
        let (username, mut state) = self.own_account().await?;
        let event = open_entry(&entry).map_err(|e| bad_log_entry("the log entry", &e))?;
        let Some(sotto_transparency::account_event::Change::DeviceRemoved(removed)) = &event.change
        else {
            return Err(error(
                ErrorCode::InvalidRequest,
                "RemoveDevice needs a DeviceRemoved log entry",
            ));
        };
        let device_id = DeviceId::from_slice(&removed.device_id).ok_or_else(|| {
            error(
                ErrorCode::InvalidRequest,
                format!("device_id must be {} bytes", sotto_proto::ID_LEN),
            )
        })?;
        if !state.devices.contains_key(device_id.as_bytes()) {
            return Err(error(
                ErrorCode::UnknownDevice,
                format!("{device_id} is not an active device of this account"),
            ));
        }
        state
            .apply(&entry)
            .map_err(|e| bad_log_entry("the DeviceRemoved entry", &e))?;
        let rotation = match remove.rotation {
            Some(rotation) => Some(identity_rotation(
                &username,
                &mut state,
                &rotation,
                &remove.devices,
            )?),
            None if remove.devices.is_empty() => None,
            None => {
                return Err(error(
                    ErrorCode::InvalidRequest,
                    "new device certificates come only with an identity rotation",
                ));
            }
        };
        let removal = DeviceRemoval {
            username,
            device_id,
            today: day_of(now_seconds()),
            log_entry: leaf_bytes(&entry),
            account_seq: event.account_seq,
            rotation,
        };
        let had_rotation = removal.rotation.is_some();
        match self.ctx.store.remove_device(removal).await {
            Ok(()) => {
                tracing::info!(rotated = had_rotation, "device removed");
                // Its connections (this one too, if it removed itself) close
                // once this answer is sent.
                self.ctx.hub.disconnect(&device_id);
                done()
            }
            Err(RemoveDeviceError::UnknownDevice) => Err(error(
                ErrorCode::UnknownDevice,
                format!("{device_id} is not an active device of this account"),
            )),
            Err(RemoveDeviceError::StaleSequence { expected }) => Err(stale_sequence(expected)),
            Err(RemoveDeviceError::Store(e)) => Err(e.into()),
        }
    }
}

/// Checks an identity rotation that follows a removal (`state` is the
/// account after the removal): the `IdentityRotated` entry must replay
/// (signed by the current key, with the new key's proof, the next
/// `account_seq`), and `devices` must certify, with the new key, exactly
/// the devices that remain, each once.
fn identity_rotation(
    username: &str,
    state: &mut AccountState,
    entry: &v1::LogEntry,
    devices: &[v1::SignedDevice],
) -> Result<IdentityRotation, v1::Error> {
    let event = open_entry(entry).map_err(|e| bad_log_entry("the rotation entry", &e))?;
    if !matches!(
        event.change,
        Some(sotto_transparency::account_event::Change::IdentityRotated(
            _
        ))
    ) {
        return Err(error(
            ErrorCode::InvalidRequest,
            "the rotation must be an IdentityRotated log entry",
        ));
    }
    state
        .apply(entry)
        .map_err(|e| bad_log_entry("the IdentityRotated entry", &e))?;
    let new_key = VerifyingKey::from_bytes(&state.identity_key).map_err(|_| {
        error(
            ErrorCode::InvalidRequest,
            "the new identity key is unusable",
        )
    })?;
    let mut recertified = Vec::with_capacity(devices.len());
    for device in devices {
        let (device_id, device_key) = certified_device(device, username, &new_key)?;
        if state.devices.get(device_id.as_bytes()) != Some(&device_key.to_bytes())
            || recertified.iter().any(|(id, _)| *id == device_id)
        {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "{device_id} is not a remaining device of this account, or is certified twice"
                ),
            ));
        }
        recertified.push((
            device_id,
            SignedDevice {
                certificate: device.certificate.clone(),
                identity_signature: device.identity_signature.clone(),
            },
        ));
    }
    if recertified.len() != state.devices.len() {
        return Err(error(
            ErrorCode::InvalidRequest,
            "a rotation must certify every remaining device with the new identity key",
        ));
    }
    Ok(IdentityRotation {
        log_entry: leaf_bytes(entry),
        identity_key: state.identity_key,
        devices: recertified,
    })
}
