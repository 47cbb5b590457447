//! KeyPackage pools: single-use KeyPackages handed out once each, and a
//! last-resort one per device.

use super::*;

pub(super) fn key_package_status(
    conn: &Connection,
    device_id: DeviceId,
) -> Result<KeyPackageStatus, StoreError> {
    let id = device_id.as_bytes().as_slice();
    let remaining: i64 = conn.query_row(
        "SELECT count(*) FROM key_packages WHERE device_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    let has_last_resort: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM last_resort_key_packages WHERE device_id = ?1)",
        [id],
        |r| r.get(0),
    )?;
    Ok(KeyPackageStatus {
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        has_last_resort,
    })
}

impl KeyPackageStore for SqliteStore {
    async fn key_package_status(
        &self,
        device_id: DeviceId,
    ) -> Result<KeyPackageStatus, StoreError> {
        self.read(move |conn| key_package_status(conn, device_id))
            .await
    }

    async fn upload_key_packages(
        &self,
        device_id: DeviceId,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageStatus, StoreError> {
        self.write(move |conn| {
            let id = device_id.as_bytes().as_slice();
            let mut insert = conn.prepare_cached(
                "INSERT INTO key_packages (device_id, key_package) VALUES (?1, ?2)",
            )?;
            for kp in &key_packages {
                insert.execute(params![id, kp])?;
            }
            if let Some(kp) = &last_resort {
                conn.execute(
                    "INSERT INTO last_resort_key_packages (device_id, key_package) VALUES (?1, ?2) \
                     ON CONFLICT(device_id) DO UPDATE SET key_package = excluded.key_package",
                    params![id, kp],
                )?;
            }
            key_package_status(conn, device_id)
        })
        .await
    }

    async fn claim_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        let username = username.to_owned();
        self.write(move |conn| claim(conn, &username, &only, Take::OneTimeFirst))
            .await
    }

    async fn last_resort_key_packages(
        &self,
        username: &str,
        only: Vec<DeviceId>,
    ) -> Result<Option<KeyPackageBundle>, StoreError> {
        let username = username.to_owned();
        // Takes nothing, so a flood of these never reaches the writer.
        self.read(move |conn| claim(conn, &username, &only, Take::LastResortOnly))
            .await
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
fn claim(
    conn: &Connection,
    username: &str,
    only: &[DeviceId],
    take: Take,
) -> Result<Option<KeyPackageBundle>, StoreError> {
    let identity_key: Option<Vec<u8>> = conn
        .query_row(
            "SELECT identity_key FROM accounts WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?;
    let Some(identity_key) = identity_key else {
        return Ok(None);
    };
    let mut devices_stmt = conn.prepare_cached(
        "SELECT device_id, certificate, identity_signature FROM devices \
             WHERE username = ?1 AND removed_day IS NULL ORDER BY rowid",
    )?;
    let devices = devices_stmt
        .query_map([username], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut claimed = Vec::new();
    for (raw_id, certificate, identity_signature) in devices {
        let device_id = DeviceId::from_slice(&raw_id)
            .ok_or_else(|| StoreError::Backend("stored device id has the wrong length".into()))?;
        if !only.is_empty() && !only.contains(&device_id) {
            continue;
        }
        let one_time: Option<(i64, Vec<u8>)> = match take {
                Take::OneTimeFirst => conn
                    .query_row(
                        "SELECT id, key_package FROM key_packages WHERE device_id = ?1 ORDER BY id LIMIT 1",
                        [&raw_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?,
                Take::LastResortOnly => None,
            };
        let (key_package, last_resort) = match one_time {
            Some((id, kp)) => {
                conn.execute("DELETE FROM key_packages WHERE id = ?1", [id])?;
                (kp, false)
            }
            None => {
                let kp: Option<Vec<u8>> = conn
                    .query_row(
                        "SELECT key_package FROM last_resort_key_packages WHERE device_id = ?1",
                        [&raw_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                match kp {
                    Some(kp) => (kp, true),
                    None => continue,
                }
            }
        };
        let remaining = key_package_status(conn, device_id)?.remaining;
        claimed.push(ClaimedKeyPackage {
            device_id,
            device: SignedDevice {
                certificate,
                identity_signature,
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
