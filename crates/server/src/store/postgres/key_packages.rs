//! KeyPackage pools: single-use KeyPackages handed out once each, and a
//! last-resort one per device.

use super::*;

async fn key_package_status(
    c: &deadpool_postgres::ClientWrapper,
    device_id: DeviceId,
) -> Result<KeyPackageStatus, StoreError> {
    let row = query_one(
        c,
        "SELECT (SELECT count(*) FROM key_packages WHERE device_id = $1), \
                EXISTS(SELECT 1 FROM last_resort_key_packages WHERE device_id = $1)",
        &[&device_id.as_bytes().as_slice()],
    )
    .await?;
    let remaining: i64 = get(&row, 0)?;
    Ok(KeyPackageStatus {
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        has_last_resort: get(&row, 1)?,
    })
}

impl KeyPackageStore for PostgresStore {
    async fn key_package_status(
        &self,
        device_id: DeviceId,
    ) -> Result<KeyPackageStatus, StoreError> {
        let c = self.reader().await?;
        key_package_status(&c, device_id).await
    }

    async fn upload_key_packages(
        &self,
        device_id: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageStatus, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let id = device_id.as_bytes().as_slice();
                if !key_packages.is_empty() {
                    // In the order given: ids (the order of claims) follow it.
                    execute(
                        &tx,
                        "INSERT INTO key_packages (device_id, key_package) \
                         SELECT $1, kp FROM unnest($2::bytea[]) WITH ORDINALITY AS t(kp, n) ORDER BY n",
                        &[&id, &key_packages],
                    )
                    .await?;
                }
                if let Some(kp) = &last_resort {
                    execute(
                        &tx,
                        "INSERT INTO last_resort_key_packages (device_id, key_package) VALUES ($1, $2) \
                         ON CONFLICT (device_id) DO UPDATE SET key_package = excluded.key_package",
                        &[&id, kp],
                    )
                    .await?;
                }
                key_package_status(&tx, device_id).await
            })
        })
        .await
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        let username = username.to_owned();
        self.write(move |tx| {
            Box::pin(async move { claim(&tx, &username, &only, Take::OneTimeFirst).await })
        })
        .await
    }

    async fn last_resort_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        // Takes nothing, so a flood of these never reaches the writer.
        let c = self.reader().await?;
        claim(&c, username, &only, Take::LastResortOnly).await
    }
}

/// What [`claim`] may hand out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// A one-time KeyPackage (deleted), or the last-resort one if the pool
    /// is empty: on the writer.
    OneTimeFirst,
    /// Only the last-resort KeyPackage, taking nothing: on a reader.
    LastResortOnly,
}

/// One KeyPackage for each active device of `username` (those in `only`,
/// if any), as [`Take`] allows. `Ok(None)`: no such account.
async fn claim(
    c: &deadpool_postgres::ClientWrapper,
    username: &str,
    only: &[DeviceId],
    take: Take,
) -> Result<Option<KeyPackageBundle>, StoreError> {
    let Some(account) = query_opt(
        c,
        "SELECT identity_key FROM accounts WHERE username = $1",
        &[&username],
    )
    .await?
    else {
        return Ok(None);
    };
    let identity_key: Vec<u8> = get(&account, 0)?;
    let devices = query(
        c,
        "SELECT device_id, certificate, identity_signature FROM devices \
         WHERE username = $1 AND removed_day IS NULL ORDER BY num",
        &[&username],
    )
    .await?;
    let mut claimed = Vec::new();
    for row in devices {
        let raw_id: Vec<u8> = get(&row, 0)?;
        let device_id = device_id_of(&raw_id)?;
        if !only.is_empty() && !only.contains(&device_id) {
            continue;
        }
        // The oldest one-time KeyPackage, deleted in the same statement (so
        // two nodes never hand out the same one).
        let one_time: Option<Vec<u8>> = match take {
            Take::OneTimeFirst => query_opt(
                c,
                "DELETE FROM key_packages WHERE id = \
                   (SELECT id FROM key_packages WHERE device_id = $1 ORDER BY id LIMIT 1 \
                    FOR UPDATE SKIP LOCKED) \
                 RETURNING key_package",
                &[&raw_id],
            )
            .await?
            .map(|r| get(&r, 0))
            .transpose()?,
            Take::LastResortOnly => None,
        };
        let (key_package, last_resort) = match one_time {
            Some(kp) => (kp, false),
            None => match query_opt(
                c,
                "SELECT key_package FROM last_resort_key_packages WHERE device_id = $1",
                &[&raw_id],
            )
            .await?
            {
                Some(r) => (get(&r, 0)?, true),
                None => continue,
            },
        };
        let remaining = key_package_status(c, device_id).await?.remaining;
        claimed.push(ClaimedKeyPackage {
            device_id,
            device: SignedDevice {
                certificate: get(&row, 1)?,
                identity_signature: get(&row, 2)?,
            },
            key_package,
            remaining,
            last_resort,
        });
    }
    Ok(Some(KeyPackageBundle {
        identity_key: key32(identity_key, "identity key")?,
        devices: claimed,
    }))
}
