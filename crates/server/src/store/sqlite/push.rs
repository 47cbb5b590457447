//! Web Push (`crate::store::PushStore`): the VAPID key in `server_keys`,
//! each device's endpoint in `devices.push_endpoint`.

use super::*;
use crate::store::PushStore;

/// Name of the VAPID key in `server_keys`.
pub(super) const PUSH_KEY_NAME: &str = "vapid";

impl PushStore for SqliteStore {
    async fn push_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |conn| server_key_secret(conn, PUSH_KEY_NAME, &fresh, "SELECT 0"))
            .await
    }

    async fn set_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: Option<String>,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE devices SET push_endpoint = ?1 \
                     WHERE device_id = ?2 AND removed_day IS NULL",
                )?
                .execute(params![endpoint, device_id.as_bytes().as_slice()])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn push_endpoints(
        &self,
        devices: Vec<DeviceId>,
    ) -> Result<Vec<(DeviceId, String)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT push_endpoint FROM devices \
                 WHERE device_id = ?1 AND removed_day IS NULL AND push_endpoint IS NOT NULL",
            )?;
            let mut found = Vec::new();
            for device in devices {
                let endpoint: Option<String> = stmt
                    .query_row([device.as_bytes().as_slice()], |r| r.get(0))
                    .optional()?;
                if let Some(endpoint) = endpoint {
                    found.push((device, endpoint));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn clear_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE devices SET push_endpoint = NULL \
                 WHERE device_id = ?1 AND push_endpoint = ?2",
            )?
            .execute(params![device_id.as_bytes().as_slice(), endpoint])?;
            Ok(())
        })
        .await
    }
}
