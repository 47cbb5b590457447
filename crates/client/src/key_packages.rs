//! This device's one-time KeyPackages on the server, which others claim to
//! add it to a conversation: filled at registration, topped up at login and
//! whenever the server says the pool runs low.

use crate::ClientError;
use crate::profile::Profile;
use crate::transport::Transport;
use sotto_core::group;
use sotto_proto::v1::{UploadKeyPackages, client_frame};

/// One-time KeyPackages a device keeps on the server.
pub(crate) const KEY_PACKAGE_POOL: u32 = 20;
/// Below this many, the device tops its pool up.
pub(crate) const KEY_PACKAGE_LOW: u32 = 10;

/// Whether the server said the pool runs low and it has not been topped up
/// since: a failed upload is tried again after the next sync.
#[derive(Debug, Default)]
pub(crate) struct KeyPackagePool {
    low: bool,
}

impl KeyPackagePool {
    pub(crate) fn mark_low(&mut self) {
        self.low = true;
    }

    /// Tops the pool up if the server said it runs low.
    pub(crate) async fn top_up_if_low(
        &mut self,
        profile: &mut Profile,
        t: &mut Transport,
    ) -> Result<(), ClientError> {
        if self.low {
            self.top_up(profile, t).await?;
        }
        Ok(())
    }

    /// Uploads what the server took since the pool was last low.
    pub(crate) async fn top_up(
        &mut self,
        profile: &mut Profile,
        t: &mut Transport,
    ) -> Result<(), ClientError> {
        self.upload(profile, t, KEY_PACKAGE_POOL - KEY_PACKAGE_LOW, false)
            .await
    }

    /// Makes `count` KeyPackages (and a last-resort one if asked), stores
    /// their secrets, and uploads them on the logged-in connection `t`.
    pub(crate) async fn upload(
        &mut self,
        profile: &mut Profile,
        t: &mut Transport,
        count: u32,
        last_resort: bool,
    ) -> Result<(), ClientError> {
        let (key_packages, last_resort) = profile.in_transaction(|provider, _tx| {
            let key_packages = (0..count)
                .map(|_| group::new_key_package(provider, &profile.account, false))
                .collect::<Result<Vec<_>, _>>()?;
            let last_resort = if last_resort {
                group::new_key_package(provider, &profile.account, true)?
            } else {
                Vec::new()
            };
            Ok((key_packages, last_resort))
        })?;
        t.request(client_frame::Body::UploadKeyPackages(UploadKeyPackages {
            key_packages,
            last_resort,
        }))
        .await?;
        self.low = false;
        Ok(())
    }
}
