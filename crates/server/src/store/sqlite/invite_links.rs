//! Invite links (`crate::store::InviteLinkStore`) in `invite_links`.

use super::legal::{insert_report_entry, last_report_entry};
use super::*;
use crate::store::{
    GroupInfoPublication, InviteClosingSnapshot, InviteGroupInfo, InviteLinkError, InviteLinkId,
    InviteLinkStore,
};

/// Whether the link admits a joiner's external commit to `group_id`: it
/// exists, belongs to that group, and is open.
pub(super) fn link_admits(
    conn: &Connection,
    link_id: &InviteLinkId,
    group_id: &GroupId,
) -> Result<(), CommitError> {
    let link: Option<(Vec<u8>, Option<i64>)> = conn
        .query_row(
            "SELECT group_id, closed_day FROM invite_links WHERE link_id = ?1",
            [link_id.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(StoreError::from)?;
    match link {
        Some((group, _)) if group.as_slice() != group_id.as_bytes() => {
            Err(CommitError::NotAuthorized)
        }
        Some((_, Some(_))) => Err(CommitError::InviteLinkClosed),
        Some(_) => Ok(()),
        None => Err(CommitError::NotAuthorized),
    }
}

impl InviteLinkStore for SqliteStore {
    async fn publish_group_info(
        &self,
        publication: GroupInfoPublication,
    ) -> Result<(), InviteLinkError> {
        self.write(move |conn| {
            let p = publication;
            let group: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT epoch, token_hash FROM mls_groups WHERE group_id = ?1",
                    [p.group_id.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
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
            let link: Option<(Vec<u8>, Option<i64>)> = conn
                .query_row(
                    "SELECT group_id, closed_day FROM invite_links WHERE link_id = ?1",
                    [p.link_id.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
            match link {
                Some((group, _)) if group.as_slice() != p.group_id.as_bytes() => {
                    Err(InviteLinkError::NotAuthorized)
                }
                Some((_, Some(_))) => Err(InviteLinkError::Closed),
                Some(_) => {
                    conn.execute(
                        "UPDATE invite_links SET sealed_group_info = ?1, epoch = ?2 \
                         WHERE link_id = ?3",
                        params![p.sealed, to_i64(p.epoch), p.link_id.as_slice()],
                    )
                    .map_err(StoreError::from)?;
                    Ok(())
                }
                None => {
                    let closed_before: bool = conn
                        .query_row(
                            "SELECT EXISTS(SELECT 1 FROM invite_links \
                             WHERE group_id = ?1 AND closed_day IS NOT NULL)",
                            [p.group_id.as_bytes()],
                            |r| r.get(0),
                        )
                        .map_err(StoreError::from)?;
                    if closed_before {
                        return Err(InviteLinkError::Closed);
                    }
                    conn.execute(
                        "INSERT INTO invite_links \
                         (link_id, group_id, sealed_group_info, epoch, created_day) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            p.link_id.as_slice(),
                            p.group_id.as_bytes(),
                            p.sealed,
                            to_i64(p.epoch),
                            to_i64(day_of(p.now))
                        ],
                    )
                    .map_err(StoreError::from)?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn invite_group_info(
        &self,
        link_id: InviteLinkId,
    ) -> Result<InviteGroupInfo, InviteLinkError> {
        type Row = (Vec<u8>, i64, Vec<u8>, Option<i64>);
        let row: Option<Row> = self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT group_id, epoch, sealed_group_info, closed_day FROM invite_links \
                         WHERE link_id = ?1",
                        [link_id.as_slice()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?)
            })
            .await?;
        match row {
            None => Err(InviteLinkError::UnknownLink),
            Some((_, _, _, Some(_))) => Err(InviteLinkError::Closed),
            Some((group_id, epoch, sealed, None)) => Ok(InviteGroupInfo {
                group_id: GroupId::from_slice(&group_id).ok_or_else(|| {
                    StoreError::Backend("a stored invite link has a bad group id".into())
                })?,
                epoch: to_u64(epoch),
                sealed,
            }),
        }
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
        self.write(move |conn| {
            let open: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM invite_links WHERE group_id = ?1 AND closed_day IS NULL",
                    [group_id.as_bytes()],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            let last_entry = last_report_entry(conn)?;
            let entry = plan(InviteClosingSnapshot {
                open_links: to_u64(open),
                last_entry,
            })?;
            insert_report_entry(conn, &entry)?;
            conn.execute(
                "UPDATE invite_links SET closed_day = ?1, sealed_group_info = x'' \
                 WHERE group_id = ?2 AND closed_day IS NULL",
                params![to_i64(day), group_id.as_bytes()],
            )
            .map_err(StoreError::from)?;
            Ok((to_u64(open), entry))
        })
        .await
    }
}
