//! `UploadKeyPackages` (a device tops up its pool) and `ClaimKeyPackages`
//! (anyone, anonymously, takes one KeyPackage per device of an account;
//! beyond the account's claim rate, only its reusable last-resort ones).

use super::wire_error::{done, error, shown};
use super::{KEY_PACKAGES_LOW_WATERMARK, MAX_KEY_PACKAGE_BYTES, RequestResult, Session};
use crate::mailbox_hub::MailboxEvent;
use crate::rate_limit::{SharedLimit, TargetBudget};
use crate::store::{DeviceId, Store};
use sotto_proto::v1::{self, ErrorCode, response};

impl<S: Store> Session<S> {
    pub(super) async fn upload_key_packages(
        &mut self,
        device: DeviceId,
        upload: v1::UploadKeyPackages,
    ) -> RequestResult {
        if upload.key_packages.len() > sotto_proto::MAX_KEY_PACKAGES_PER_UPLOAD {
            return Err(error(
                ErrorCode::TooLarge,
                format!(
                    "{} KeyPackages in one upload; the limit is {}",
                    upload.key_packages.len(),
                    sotto_proto::MAX_KEY_PACKAGES_PER_UPLOAD
                ),
            ));
        }
        for kp in upload
            .key_packages
            .iter()
            .chain(std::iter::once(&upload.last_resort))
        {
            if kp.len() > MAX_KEY_PACKAGE_BYTES {
                return Err(error(
                    ErrorCode::TooLarge,
                    format!(
                        "a KeyPackage is {} bytes; the limit is {MAX_KEY_PACKAGE_BYTES} bytes",
                        kp.len()
                    ),
                ));
            }
        }
        if upload.key_packages.iter().any(Vec::is_empty) {
            return Err(error(
                ErrorCode::InvalidRequest,
                "an uploaded KeyPackage is empty",
            ));
        }
        let last_resort = (!upload.last_resort.is_empty()).then_some(upload.last_resort);
        self.ctx
            .store
            .upload_key_packages(device, upload.key_packages, last_resort)
            .await?;
        done()
    }

    pub(super) async fn claim_key_packages(
        &mut self,
        claim: v1::ClaimKeyPackages,
    ) -> RequestResult {
        let unknown = || {
            error(
                ErrorCode::UnknownUser,
                format!("no account named {}", shown(&claim.username)),
            )
        };
        if !sotto_proto::is_valid_username(&claim.username) {
            return Err(unknown());
        }
        let mut budget =
            self.ctx
                .rate_limits
                .charge_claim(&mut self.buckets, self.address, &claim.username)?;
        if budget == TargetBudget::Pool
            && let Err(limited) = self
                .ctx
                .rate_limits
                .charge_shared(
                    &*self.ctx.store,
                    SharedLimit::ClaimsPerTarget,
                    &claim.username,
                )
                .await?
        {
            budget = TargetBudget::LastResortOnly(limited);
        }
        if claim.device_ids.len() > sotto_proto::MAX_RECIPIENTS {
            return Err(error(
                ErrorCode::TooLarge,
                format!(
                    "{} device ids in one claim; the limit is {}",
                    claim.device_ids.len(),
                    sotto_proto::MAX_RECIPIENTS
                ),
            ));
        }
        let only = claim
            .device_ids
            .iter()
            .map(|id| {
                DeviceId::from_slice(id).ok_or_else(|| {
                    error(
                        ErrorCode::InvalidRequest,
                        format!(
                            "device ids are {} bytes, got {}",
                            sotto_proto::ID_LEN,
                            id.len()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let store = &self.ctx.store;
        let bundle = match budget {
            TargetBudget::Pool => store.claim_key_packages(&claim.username, only).await?,
            TargetBudget::LastResortOnly(_) => {
                store
                    .last_resort_key_packages(&claim.username, only)
                    .await?
            }
        }
        .ok_or_else(unknown)?;
        if bundle.devices.is_empty() {
            return Err(match budget {
                // No device has a reusable one to give: what stops this
                // claim is the account's rate, so say when to retry.
                TargetBudget::LastResortOnly(limited) => limited.into(),
                TargetBudget::Pool => error(
                    ErrorCode::NoKeyPackage,
                    format!(
                        "{} has no KeyPackages left; they must come online to upload more",
                        claim.username
                    ),
                ),
            });
        }
        // Only claims within the account's rate notify its devices: one per
        // claim beyond it would let a flood flood them too.
        for claimed in &bundle.devices {
            if budget == TargetBudget::Pool && claimed.remaining < KEY_PACKAGES_LOW_WATERMARK {
                self.ctx.hub.notify(
                    [&claimed.device_id],
                    &MailboxEvent::KeyPackagesLow {
                        remaining: claimed.remaining,
                    },
                );
            }
        }
        let account_log = self
            .ctx
            .log
            .account_log(&*self.ctx.store, &claim.username)
            .await?;
        Ok(Some(response::Result::KeyPackages(v1::KeyPackageBundle {
            account_log,
            identity_key: bundle.identity_key.to_vec(),
            devices: bundle
                .devices
                .into_iter()
                .map(|c| v1::ClaimedKeyPackage {
                    device: Some(v1::SignedDevice {
                        certificate: c.device.certificate,
                        identity_signature: c.device.identity_signature,
                    }),
                    key_package: c.key_package,
                })
                .collect(),
        })))
    }
}
