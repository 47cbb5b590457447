//! Web Push (`crate::store::PushStore`): the VAPID key in `server_keys`,
//! each device's endpoint in `devices.push_endpoint`.

use super::*;
use crate::store::PushStore;

/// Name of the VAPID key in `server_keys`.
const PUSH_KEY_NAME: &str = "vapid";

impl PushStore for PostgresStore {
    async fn push_key_secret(
        &self,
        fresh: Zeroizing<[u8; 32]>,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                server_key_secret(&tx, PUSH_KEY_NAME, &fresh, "SELECT 0::BIGINT").await
            })
        })
        .await
    }

    async fn set_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: Option<String>,
    ) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let changed = execute(
                    &tx,
                    "UPDATE devices SET push_endpoint = $1 \
                     WHERE device_id = $2 AND removed_day IS NULL",
                    &[&endpoint, &device_id.as_bytes().as_slice()],
                )
                .await?;
                Ok(changed == 1)
            })
        })
        .await
    }

    async fn push_endpoints(
        &self,
        devices: Vec<DeviceId>,
    ) -> Result<Vec<(DeviceId, String)>, StoreError> {
        let ids: Vec<&[u8]> = devices.iter().map(|d| d.as_bytes().as_slice()).collect();
        let c = self.reader().await?;
        query(
            &c,
            "SELECT device_id, push_endpoint FROM devices \
             WHERE device_id = ANY($1) AND removed_day IS NULL AND push_endpoint IS NOT NULL",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| {
            let id: Vec<u8> = get(r, 0)?;
            let device = DeviceId::from_slice(&id).ok_or_else(|| {
                StoreError::Backend("stored device id has the wrong length".into())
            })?;
            Ok((device, get(r, 1)?))
        })
        .collect()
    }

    async fn clear_push_endpoint(
        &self,
        device_id: DeviceId,
        endpoint: String,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    &tx,
                    "UPDATE devices SET push_endpoint = NULL \
                     WHERE device_id = $1 AND push_endpoint = $2",
                    &[&device_id.as_bytes().as_slice(), &endpoint],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }
}
