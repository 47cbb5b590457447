//! `Register` and `Login`: the only requests that say who a connection is.

use super::parse::{certified_device, verifies, verifying_key};
use super::wire_error::{bad_log_entry, done, error};
use super::{RequestResult, Session, now_seconds};
use crate::config::RegistrationPolicy;
use crate::rate_limit::SharedLimit;
use crate::store::{
    DISABLED_UNTIL_ENABLED, DeviceId, NewAccount, RegisterError, SignedDevice, Store, day_of,
    invite_hash,
};
use ed25519_dalek::VerifyingKey;
use sotto_proto::v1::{self, ErrorCode, response};
use sotto_transparency::{AccountState, leaf_bytes};

impl<S: Store> Session<S> {
    pub(super) async fn register(&mut self, register: v1::Register) -> RequestResult {
        let invite = match self.ctx.registration {
            RegistrationPolicy::Open => None,
            RegistrationPolicy::Closed => {
                return Err(error(
                    ErrorCode::RegistrationClosed,
                    "this server does not accept new accounts",
                ));
            }
            RegistrationPolicy::Invite if register.invite_code.trim().is_empty() => {
                return Err(error(
                    ErrorCode::RegistrationClosed,
                    "this server needs an invite code to register; ask its operator for one",
                ));
            }
            RegistrationPolicy::Invite => Some(invite_hash(&register.invite_code)),
        };
        self.ctx.rate_limits.charge_registration(self.address)?;
        self.ctx
            .rate_limits
            .charge_shared(
                &*self.ctx.store,
                SharedLimit::Registrations,
                &self.address.to_string(),
            )
            .await??;
        if !sotto_proto::is_valid_username(&register.username) {
            return Err(error(
                ErrorCode::InvalidUsername,
                "a username is 3 to 32 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit",
            ));
        }
        let identity_key = verifying_key(&register.identity_key).ok_or_else(|| {
            error(
                ErrorCode::InvalidRequest,
                "identity_key must be a 32-byte Ed25519 public key",
            )
        })?;
        let device = register
            .device
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the device is missing"))?;
        let (device_id, device_key) = certified_device(&device, &register.username, &identity_key)?;
        if register.log_entries.len() != 2 {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "Register carries {} log entries; it must carry the account's first two: \
                     IdentityRegistered (account_seq 0), then DeviceAdded for the device (account_seq 1)",
                    register.log_entries.len()
                ),
            ));
        }
        let state = AccountState::replay(&register.username, &register.log_entries)
            .map_err(|e| bad_log_entry("the registration's log entries are invalid", &e))?;
        if state.identity_key != identity_key.to_bytes() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the log entries name another identity key than identity_key",
            ));
        }
        let logged_device = state.devices.iter().next();
        if state.devices.len() != 1
            || logged_device != Some((device_id.as_bytes(), &device_key.to_bytes()))
        {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the DeviceAdded entry must name the registered device (its id and key)",
            ));
        }
        let transcript =
            sotto_proto::auth_transcript(&self.nonce, &register.username, device_id.as_bytes());
        if !verifies(&device_key, &transcript, &register.challenge_signature) {
            return Err(error(
                ErrorCode::AuthenticationFailed,
                "the challenge signature does not verify; sign this connection's challenge nonce with the device key",
            ));
        }
        let account = NewAccount {
            username: register.username.clone(),
            identity_key: identity_key.to_bytes(),
            device_id,
            device_key: device_key.to_bytes(),
            device: SignedDevice {
                certificate: device.certificate,
                identity_signature: device.identity_signature,
            },
            today: day_of(now_seconds()),
            log_entries: register.log_entries.iter().map(leaf_bytes).collect(),
            invite,
        };
        match self.ctx.store.register(account).await {
            Ok(()) => {}
            Err(RegisterError::UsernameTaken) => {
                return Err(error(
                    ErrorCode::UsernameTaken,
                    format!(
                        "the username {} is taken; choose another",
                        register.username
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!("account registered");
        self.authenticate(device_id, register.username);
        done()
    }

    pub(super) async fn login(&mut self, login: v1::Login) -> RequestResult {
        let failed = || {
            error(
                ErrorCode::AuthenticationFailed,
                "login failed: unknown device or bad signature",
            )
        };
        let device_id = DeviceId::from_slice(&login.device_id).ok_or_else(failed)?;
        let record = self
            .ctx
            .store
            .device(&login.username, device_id)
            .await?
            .ok_or_else(failed)?;
        let key = VerifyingKey::from_bytes(&record.device_key).map_err(|_| failed())?;
        let transcript =
            sotto_proto::auth_transcript(&self.nonce, &login.username, device_id.as_bytes());
        if !verifies(&key, &transcript, &login.challenge_signature) {
            return Err(failed());
        }
        if record.removed {
            return Err(error(
                ErrorCode::DeviceRemoved,
                "this device was removed from its account",
            ));
        }
        // Only the day is kept, so a second login the same day writes
        // nothing (and waits for no fsync).
        let today = day_of(now_seconds());
        if let Some(until) = record.disabled_until_day.filter(|&until| today < until) {
            let when = if until == DISABLED_UNTIL_ENABLED {
                String::new()
            } else {
                format!(" for {} more day(s)", until - today)
            };
            return Err(error(
                ErrorCode::AccountDisabled,
                format!("this account is disabled by the server operator{when}"),
            ));
        }
        if record.last_seen_day < today {
            self.ctx.store.touch_device(device_id, today).await?;
        }
        let status = self.ctx.store.key_package_status(device_id).await?;
        self.authenticate(device_id, record.username);
        Ok(Some(response::Result::LoggedIn(v1::LoggedIn {
            key_packages_remaining: status.remaining,
            has_last_resort: status.has_last_resort,
        })))
    }
}
