//! Accounts and devices: registration, lookups, last-seen days, and device
//! changes (each with its transparency-log leaf, in one transaction).

use super::mailbox::delete_orphans;
use super::*;

async fn device_id_taken(tx: &Tx, device_id: DeviceId) -> Result<bool, StoreError> {
    let row = query_one(
        tx,
        "SELECT EXISTS(SELECT 1 FROM devices WHERE device_id = $1)",
        &[&device_id.as_bytes().as_slice()],
    )
    .await?;
    get(&row, 0)
}

async fn account_exists(tx: &Tx, username: &str) -> Result<bool, StoreError> {
    let row = query_one(
        tx,
        "SELECT EXISTS(SELECT 1 FROM accounts WHERE username = $1)",
        &[&username],
    )
    .await?;
    get(&row, 0)
}

const INSERT_DEVICE: &str = "INSERT INTO devices (device_id, username, certificate, \
     identity_signature, device_key, created_day, last_seen_day) VALUES ($1, $2, $3, $4, $5, $6, $6)";

impl AccountStore for PostgresStore {
    async fn register(&self, account: NewAccount) -> Result<(), RegisterError> {
        self.write_alone(move |tx| {
            Box::pin(async move {
                lock_log(&tx).await?;
                if account_exists(&tx, &account.username).await? {
                    return Err(RegisterError::UsernameTaken);
                }
                if device_id_taken(&tx, account.device_id).await? {
                    return Err(RegisterError::DeviceIdTaken(account.device_id));
                }
                let day = to_i64(account.today);
                if let Some(invite) = account.invite {
                    let used = execute(
                        &tx,
                        "UPDATE invites SET used_day = $1 WHERE code_hash = $2 AND used_day IS NULL",
                        &[&day, &invite.as_slice()],
                    )
                    .await?;
                    if used != 1 {
                        return Err(RegisterError::BadInvite);
                    }
                }
                execute(
                    &tx,
                    "INSERT INTO accounts (username, identity_key, created_day) VALUES ($1, $2, $3)",
                    &[&account.username, &account.identity_key.as_slice(), &day],
                )
                .await?;
                execute(
                    &tx,
                    INSERT_DEVICE,
                    &[
                        &account.device_id.as_bytes().as_slice(),
                        &account.username,
                        &account.device.certificate,
                        &account.device.identity_signature,
                        &account.device_key.as_slice(),
                        &day,
                    ],
                )
                .await?;
                for entry in &account.log_entries {
                    append_log(&tx, &account.username, entry).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn device(
        &self,
        username: &str,
        device_id: DeviceId,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let c = self.reader().await?;
        let Some(row) = query_opt(
            &c,
            "SELECT d.device_key, d.removed_day IS NOT NULL, d.last_seen_day, \
             a.disabled_until_day FROM devices d JOIN accounts a ON a.username = d.username \
             WHERE d.device_id = $1 AND d.username = $2",
            &[&device_id.as_bytes().as_slice(), &username],
        )
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(DeviceRecord {
            device_id,
            username: username.to_owned(),
            device_key: key32(get(&row, 0)?, "device key")?,
            removed: get(&row, 1)?,
            last_seen_day: to_u64(get(&row, 2)?),
            disabled_until_day: get::<Option<i64>>(&row, 3)?.map(to_u64),
        }))
    }

    async fn touch_device(&self, device_id: DeviceId, today: UnixDay) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                execute(
                    &tx,
                    "UPDATE devices SET last_seen_day = $1 WHERE device_id = $2 AND last_seen_day < $1",
                    &[&to_i64(today), &device_id.as_bytes().as_slice()],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn add_device(&self, device: NewDevice) -> Result<(), AddDeviceError> {
        self.write_alone(move |tx| {
            Box::pin(async move {
                lock_log(&tx).await?;
                if !account_exists(&tx, &device.username).await? {
                    return Err(AddDeviceError::UnknownUser);
                }
                let expected = next_account_seq(&tx, &device.username).await?;
                if device.account_seq != expected {
                    return Err(AddDeviceError::StaleSequence { expected });
                }
                if device_id_taken(&tx, device.device_id).await? {
                    return Err(AddDeviceError::DeviceIdTaken(device.device_id));
                }
                execute(
                    &tx,
                    INSERT_DEVICE,
                    &[
                        &device.device_id.as_bytes().as_slice(),
                        &device.username,
                        &device.device.certificate,
                        &device.device.identity_signature,
                        &device.device_key.as_slice(),
                        &to_i64(device.today),
                    ],
                )
                .await?;
                append_log(&tx, &device.username, &device.log_entry).await?;
                Ok(())
            })
        })
        .await
    }

    async fn remove_device(&self, removal: DeviceRemoval) -> Result<(), RemoveDeviceError> {
        self.write_alone(move |tx| {
            Box::pin(async move {
                lock_log(&tx).await?;
                let id = removal.device_id.as_bytes().as_slice();
                let active: bool = get(
                    &query_one(
                        &tx,
                        "SELECT EXISTS(SELECT 1 FROM devices WHERE device_id = $1 AND username = $2 \
                         AND removed_day IS NULL)",
                        &[&id, &removal.username],
                    )
                    .await?,
                    0,
                )?;
                if !active {
                    return Err(RemoveDeviceError::UnknownDevice);
                }
                let expected = next_account_seq(&tx, &removal.username).await?;
                if removal.account_seq != expected {
                    return Err(RemoveDeviceError::StaleSequence { expected });
                }
                execute(
                    &tx,
                    "UPDATE devices SET removed_day = $1, push_endpoint = NULL WHERE device_id = $2",
                    &[&to_i64(removal.today), &id],
                )
                .await?;
                execute(&tx, "DELETE FROM key_packages WHERE device_id = $1", &[&id]).await?;
                execute(
                    &tx,
                    "DELETE FROM last_resort_key_packages WHERE device_id = $1",
                    &[&id],
                )
                .await?;
                // Its mailbox, then every payload no other entry refers to.
                let refs: Vec<i64> = query(
                    &tx,
                    "DELETE FROM mailbox WHERE device_num = \
                     (SELECT num FROM devices WHERE device_id = $1) RETURNING message_ref",
                    &[&id],
                )
                .await?
                .iter()
                .map(|row| get(row, 0))
                .collect::<Result<_, _>>()?;
                delete_orphans(&tx, &refs).await?;
                append_log(&tx, &removal.username, &removal.log_entry).await?;
                if let Some(rotation) = &removal.rotation {
                    append_log(&tx, &removal.username, &rotation.log_entry).await?;
                    execute(
                        &tx,
                        "UPDATE accounts SET identity_key = $1 WHERE username = $2",
                        &[&rotation.identity_key.as_slice(), &removal.username],
                    )
                    .await?;
                    for (device_id, device) in &rotation.devices {
                        execute(
                            &tx,
                            "UPDATE devices SET certificate = $1, identity_signature = $2 \
                             WHERE device_id = $3 AND username = $4 AND removed_day IS NULL",
                            &[
                                &device.certificate,
                                &device.identity_signature,
                                &device_id.as_bytes().as_slice(),
                                &removal.username,
                            ],
                        )
                        .await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }
}
