//! Invite links (`crate::store::InviteLinkStore`) in `invite_links`.

use super::legal::{REPORT_LOCK, insert_report_entry, last_report_entry};
use super::*;
use crate::store::{
    GroupInfoPublication, InviteClosingSnapshot, InviteGroupInfo, InviteLinkError, InviteLinkId,
    InviteLinkStore,
};

/// The link's group and whether it is closed, locked for the transaction.
async fn link_row(
    tx: &Tx,
    link_id: &InviteLinkId,
) -> Result<Option<(Vec<u8>, Option<i64>)>, StoreError> {
    query_opt(
        tx,
        "SELECT group_id, closed_day FROM invite_links WHERE link_id = $1 FOR UPDATE",
        &[&link_id.as_slice()],
    )
    .await?
    .map(|r| Ok::<_, StoreError>((get(&r, 0)?, get(&r, 1)?)))
    .transpose()
}

/// Whether the link admits a joiner's external commit to `group_id`: it
/// exists, belongs to that group, and is open.
pub(super) async fn link_admits(
    tx: &Tx,
    link_id: &InviteLinkId,
    group_id: &GroupId,
) -> Result<(), CommitError> {
    match link_row(tx, link_id).await? {
        Some((group, _)) if group.as_slice() != group_id.as_bytes() => {
            Err(CommitError::NotAuthorized)
        }
        Some((_, Some(_))) => Err(CommitError::InviteLinkClosed),
        Some(_) => Ok(()),
        None => Err(CommitError::NotAuthorized),
    }
}

impl InviteLinkStore for PostgresStore {
    async fn publish_group_info(
        &self,
        publication: GroupInfoPublication,
    ) -> Result<(), InviteLinkError> {
        self.write(move |tx| {
            Box::pin(async move {
                let p = publication;
                let group: Option<(i64, Vec<u8>)> = query_opt(
                    &tx,
                    "SELECT epoch, token_hash FROM mls_groups WHERE group_id = $1 FOR SHARE",
                    &[&p.group_id.as_bytes()],
                )
                .await?
                .map(|r| Ok::<_, StoreError>((get(&r, 0)?, get(&r, 1)?)))
                .transpose()?;
                let Some((epoch, token_hash)) = group else {
                    return Err(InviteLinkError::UnknownGroup(p.group_id));
                };
                if token_hash.as_slice() != p.token_hash.as_slice() {
                    return Err(InviteLinkError::NotAuthorized);
                }
                let current = to_u64(epoch);
                if p.epoch != current {
                    return Err(InviteLinkError::StaleEpoch {
                        submitted: p.epoch,
                        current,
                    });
                }
                match link_row(&tx, &p.link_id).await? {
                    Some((group, _)) if group.as_slice() != p.group_id.as_bytes() => {
                        Err(InviteLinkError::NotAuthorized)
                    }
                    Some((_, Some(_))) => Err(InviteLinkError::Closed),
                    Some(_) => {
                        execute(
                            &tx,
                            "UPDATE invite_links SET sealed_group_info = $1, epoch = $2 \
                             WHERE link_id = $3",
                            &[&p.sealed, &to_i64(p.epoch), &p.link_id.as_slice()],
                        )
                        .await?;
                        Ok(())
                    }
                    None => {
                        let closed_before: bool = get(
                            &query_one(
                                &tx,
                                "SELECT EXISTS(SELECT 1 FROM invite_links \
                                 WHERE group_id = $1 AND closed_day IS NOT NULL)",
                                &[&p.group_id.as_bytes()],
                            )
                            .await?,
                            0,
                        )?;
                        if closed_before {
                            return Err(InviteLinkError::Closed);
                        }
                        // Another node may insert the same new link at
                        // once: the later publication wins, as an update.
                        execute(
                            &tx,
                            "INSERT INTO invite_links \
                             (link_id, group_id, sealed_group_info, epoch, created_day) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (link_id) DO UPDATE SET \
                             sealed_group_info = EXCLUDED.sealed_group_info, \
                             epoch = EXCLUDED.epoch \
                             WHERE invite_links.group_id = EXCLUDED.group_id \
                             AND invite_links.closed_day IS NULL",
                            &[
                                &p.link_id.as_slice(),
                                &p.group_id.as_bytes(),
                                &p.sealed,
                                &to_i64(p.epoch),
                                &to_i64(day_of(p.now)),
                            ],
                        )
                        .await?;
                        Ok(())
                    }
                }
            })
        })
        .await
    }

    async fn invite_group_info(
        &self,
        link_id: InviteLinkId,
    ) -> Result<InviteGroupInfo, InviteLinkError> {
        let c = self.reader().await?;
        let row = query_opt(
            &c,
            "SELECT group_id, epoch, sealed_group_info, closed_day FROM invite_links \
             WHERE link_id = $1",
            &[&link_id.as_slice()],
        )
        .await?;
        let Some(row) = row else {
            return Err(InviteLinkError::UnknownLink);
        };
        if get::<Option<i64>>(&row, 3)?.is_some() {
            return Err(InviteLinkError::Closed);
        }
        let group_id: Vec<u8> = get(&row, 0)?;
        Ok(InviteGroupInfo {
            group_id: GroupId::from_slice(&group_id).ok_or_else(|| {
                StoreError::Backend("a stored invite link has a bad group id".into())
            })?,
            epoch: to_u64(get(&row, 1)?),
            sealed: get(&row, 2)?,
        })
    }

    async fn close_invite_links<E, P>(
        &self,
        group_id: GroupId,
        day: UnixDay,
        plan: P,
    ) -> Result<(u64, ReportRecord), E>
    where
        E: From<StoreError> + Send + 'static,
        P: FnOnce(InviteClosingSnapshot) -> Result<ReportRecord, E> + Send + 'static,
    {
        self.write(move |tx| {
            Box::pin(async move {
                execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&REPORT_LOCK]).await?;
                let open = query(
                    &tx,
                    "SELECT link_id FROM invite_links \
                     WHERE group_id = $1 AND closed_day IS NULL FOR UPDATE",
                    &[&group_id.as_bytes()],
                )
                .await?
                .len();
                let open = u64::try_from(open).unwrap_or(u64::MAX);
                let last_entry = last_report_entry(&tx).await?;
                let entry = plan(InviteClosingSnapshot {
                    open_links: open,
                    last_entry,
                })?;
                insert_report_entry(&tx, &entry).await?;
                execute(
                    &tx,
                    "UPDATE invite_links SET closed_day = $1, sealed_group_info = ''::bytea \
                     WHERE group_id = $2 AND closed_day IS NULL",
                    &[&to_i64(day), &group_id.as_bytes()],
                )
                .await?;
                Ok((open, entry))
            })
        })
        .await
    }
}
