//! What the operator's other commands use: invites and the auditor's reads.

use super::*;

impl AdminStore for PostgresStore {
    async fn add_invites(
        &self,
        code_hashes: Vec<[u8; 32]>,
        today: UnixDay,
    ) -> Result<(), StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let hashes: Vec<&[u8]> = code_hashes.iter().map(<[u8; 32]>::as_slice).collect();
                // One statement: a hash already stored fails it whole.
                execute(
                    &tx,
                    "INSERT INTO invites (code_hash, created_day) SELECT h, $2 FROM unnest($1::bytea[]) AS h",
                    &[&hashes, &to_i64(today)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn stored_log_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let c = self.reader().await?;
        stored_server_key(&c, LOG_KEY_NAME).await
    }

    async fn account_identities(&self) -> Result<Vec<AccountIdentity>, StoreError> {
        let c = self.reader().await?;
        query(&c, "SELECT username, identity_key FROM accounts", &[])
            .await?
            .iter()
            .map(|r| {
                Ok(AccountIdentity {
                    username: get(r, 0)?,
                    identity_key: get(r, 1)?,
                })
            })
            .collect()
    }

    async fn active_devices(&self) -> Result<Vec<ActiveDevice>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            "SELECT username, device_id, device_key FROM devices WHERE removed_day IS NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(ActiveDevice {
                username: get(r, 0)?,
                device_id: get(r, 1)?,
                device_key: get(r, 2)?,
            })
        })
        .collect()
    }

    async fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        let c = self.reader().await?;
        query(
            &c,
            "SELECT code_hash, created_day, used_day FROM invites ORDER BY created_day, code_hash",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let hash: &[u8] = get(r, 0)?;
            Ok(InviteRecord {
                code_hash: <[u8; 32]>::try_from(hash).map_err(|_| {
                    StoreError::Backend("a stored invite hash is not 32 bytes".into())
                })?,
                created_day: to_u64(get(r, 1)?),
                used_day: get::<Option<i64>>(r, 2)?.map(to_u64),
            })
        })
        .collect()
    }

    async fn revoke_invite(&self, code_hash: [u8; 32]) -> Result<bool, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let deleted = execute(
                    &tx,
                    "DELETE FROM invites WHERE code_hash = $1 AND used_day IS NULL",
                    &[&code_hash.as_slice()],
                )
                .await?;
                Ok(deleted > 0)
            })
        })
        .await
    }

    async fn queued_bytes(&self) -> Result<u64, StoreError> {
        let c = self.reader().await?;
        let row = query_one(
            &c,
            "SELECT coalesce(sum(length(payload)), 0)::bigint FROM messages",
            &[],
        )
        .await?;
        Ok(to_u64(get(&row, 0)?))
    }
}
