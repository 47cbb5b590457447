//! Accounts and devices: registration, lookups, last-seen days, and device
//! changes (each with its transparency-log leaf, in one transaction).

use super::*;

pub(super) fn device_id_taken(conn: &Connection, device_id: DeviceId) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM devices WHERE device_id = ?1)",
        [device_id.as_bytes().as_slice()],
        |r| r.get(0),
    )?)
}

impl AccountStore for SqliteStore {
    async fn register(&self, account: NewAccount) -> Result<(), RegisterError> {
        self.write(move |conn| {
            let taken: bool = conn
                .query_row("SELECT EXISTS(SELECT 1 FROM accounts WHERE username = ?1)", [&account.username], |r| r.get(0))
                .map_err(StoreError::from)?;
            if taken {
                return Err(RegisterError::UsernameTaken);
            }
            if device_id_taken(conn, account.device_id)? {
                return Err(RegisterError::DeviceIdTaken(account.device_id));
            }
            let day = to_i64(account.today);
            if let Some(invite) = account.invite {
                let used = conn
                    .execute(
                        "UPDATE invites SET used_day = ?1 WHERE code_hash = ?2 AND used_day IS NULL",
                        params![day, invite.as_slice()],
                    )
                    .map_err(StoreError::from)?;
                if used != 1 {
                    return Err(RegisterError::BadInvite);
                }
            }
            conn.execute(
                "INSERT INTO accounts (username, identity_key, created_day) VALUES (?1, ?2, ?3)",
                params![account.username, account.identity_key.as_slice(), day],
            )
            .map_err(StoreError::from)?;
            conn.execute(
                "INSERT INTO devices (device_id, username, certificate, identity_signature, device_key, created_day, \
                 last_seen_day, num) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, (SELECT coalesce(max(num), 0) + 1 FROM devices))",
                params![
                    account.device_id.as_bytes().as_slice(),
                    account.username,
                    account.device.certificate,
                    account.device.identity_signature,
                    account.device_key.as_slice(),
                    day
                ],
            )
            .map_err(StoreError::from)?;
            for entry in &account.log_entries {
                append_log(conn, &account.username, entry)?;
            }
            Ok(())
        })
        .await
    }

    async fn device(
        &self,
        username: &str,
        device_id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |conn| {
            let found: Option<(Vec<u8>, bool, i64, Option<i64>)> = conn
                .query_row(
                    "SELECT d.device_key, d.removed_day IS NOT NULL, d.last_seen_day, a.disabled_until_day \
                     FROM devices d JOIN accounts a ON a.username = d.username \
                     WHERE d.device_id = ?1 AND d.username = ?2",
                    params![device_id.as_bytes().as_slice(), username],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            found
                .map(|(key, removed, last_seen_day, disabled_until_day)| {
                    Ok(DeviceRecord {
                        device_id,
                        username,
                        device_key: key32(key, "device key")?,
                        removed,
                        last_seen_day: to_u64(last_seen_day),
                        disabled_until_day: disabled_until_day.map(to_u64),
                    })
                })
                .transpose()
        })
        .await
    }

    async fn touch_device(&self, device_id: DeviceId, today: UnixDay) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE devices SET last_seen_day = ?1 WHERE device_id = ?2 AND last_seen_day < ?1",
                params![to_i64(today), device_id.as_bytes().as_slice()],
            )?;
            Ok(())
        })
        .await
    }

    async fn add_device(&self, device: NewDevice) -> Result<(), AddDeviceError> {
        self.write(move |conn| {
            let known: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM accounts WHERE username = ?1)",
                    [&device.username],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if !known {
                return Err(AddDeviceError::UnknownUser);
            }
            let expected = next_account_seq(conn, &device.username)?;
            if device.account_seq != expected {
                return Err(AddDeviceError::StaleSequence { expected });
            }
            if device_id_taken(conn, device.device_id)? {
                return Err(AddDeviceError::DeviceIdTaken(device.device_id));
            }
            conn.execute(
                "INSERT INTO devices (device_id, username, certificate, identity_signature, device_key, created_day, \
                 last_seen_day, num) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, (SELECT coalesce(max(num), 0) + 1 FROM devices))",
                params![
                    device.device_id.as_bytes().as_slice(),
                    device.username,
                    device.device.certificate,
                    device.device.identity_signature,
                    device.device_key.as_slice(),
                    to_i64(device.today)
                ],
            )
            .map_err(StoreError::from)?;
            append_log(conn, &device.username, &device.log_entry)?;
            Ok(())
        })
        .await
    }

    async fn remove_device(&self, removal: DeviceRemoval) -> Result<(), RemoveDeviceError> {
        self.write(move |conn| {
            let id = removal.device_id.as_bytes().as_slice();
            let active: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM devices WHERE device_id = ?1 AND username = ?2 AND removed_day IS NULL)",
                    params![id, removal.username],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if !active {
                return Err(RemoveDeviceError::UnknownDevice);
            }
            let expected = next_account_seq(conn, &removal.username)?;
            if removal.account_seq != expected {
                return Err(RemoveDeviceError::StaleSequence { expected });
            }
            conn.execute(
                "UPDATE devices SET removed_day = ?1, push_endpoint = NULL WHERE device_id = ?2",
                params![to_i64(removal.today), id],
            )
            .map_err(StoreError::from)?;
            conn.execute("DELETE FROM key_packages WHERE device_id = ?1", [id])
                .map_err(StoreError::from)?;
            conn.execute("DELETE FROM last_resort_key_packages WHERE device_id = ?1", [id])
                .map_err(StoreError::from)?;
            let refs = conn
                .prepare_cached(
                    "SELECT DISTINCT message_ref FROM mailbox \
                     WHERE device_num = (SELECT num FROM devices WHERE device_id = ?1)",
                )
                .map_err(StoreError::from)?
                .query_map([id], |r| r.get::<_, i64>(0))
                .map_err(StoreError::from)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)?;
            conn.execute(
                "DELETE FROM mailbox WHERE device_num = (SELECT num FROM devices WHERE device_id = ?1)",
                [id],
            )
                .map_err(StoreError::from)?;
            let mut orphan = conn
                .prepare_cached(
                    "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_ref = ?1)",
                )
                .map_err(StoreError::from)?;
            for message_ref in refs {
                orphan.execute([message_ref]).map_err(StoreError::from)?;
            }
            append_log(conn, &removal.username, &removal.log_entry)?;
            if let Some(rotation) = &removal.rotation {
                append_log(conn, &removal.username, &rotation.log_entry)?;
                conn.execute(
                    "UPDATE accounts SET identity_key = ?1 WHERE username = ?2",
                    params![rotation.identity_key.as_slice(), removal.username],
                )
                .map_err(StoreError::from)?;
                let mut recertify = conn
                    .prepare_cached(
                        "UPDATE devices SET certificate = ?1, identity_signature = ?2 \
                         WHERE device_id = ?3 AND username = ?4 AND removed_day IS NULL",
                    )
                    .map_err(StoreError::from)?;
                for (device_id, device) in &rotation.devices {
                    recertify
                        .execute(params![
                            device.certificate,
                            device.identity_signature,
                            device_id.as_bytes().as_slice(),
                            removal.username
                        ])
                        .map_err(StoreError::from)?;
                }
            }
            Ok(())
        })
        .await
    }
}
