//! Groups and mailboxes: the commit sequencer, queued payloads (stored
//! once) and one row per recipient device, acknowledgement and expiry. The
//! rules are the SQLite backend's (`sqlite/mailbox.rs`), statement for
//! statement where they are the same; where they differ it is said why.

use super::*;
use crate::store::missed::{Missed, count_missed, notice_ids};
use sotto_proto::missed_notice;
use sotto_proto::v1::MissedMessages;

/// What the store holds under an envelope's message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredCopy {
    None,
    /// The same bytes (in this `messages` row): a resend.
    Same(i64),
    /// Other bytes: the id is taken.
    Different,
}

/// Whether an envelope's id is already queued, and if so with its bytes.
async fn stored_copy(tx: &Tx, envelope: &Envelope) -> Result<StoredCopy, StoreError> {
    let stored = query_opt(
        tx,
        "SELECT id, payload FROM messages WHERE message_id = $1",
        &[&envelope.message_id.as_bytes().as_slice()],
    )
    .await?;
    Ok(match stored {
        None => StoredCopy::None,
        Some(row) => {
            let payload: &[u8] = get(&row, 1)?;
            if payload == envelope.payload.as_slice() {
                StoredCopy::Same(get(&row, 0)?)
            } else {
                StoredCopy::Different
            }
        }
    })
}

async fn message_exists(tx: &Tx, message_id: MessageId) -> Result<bool, StoreError> {
    get(
        &query_one(
            tx,
            "SELECT EXISTS(SELECT 1 FROM messages WHERE message_id = $1)",
            &[&message_id.as_bytes().as_slice()],
        )
        .await?,
        0,
    )
}

/// What [`place_envelope`] did.
struct Placed {
    /// Devices skipped because their mailbox is full.
    skipped: Vec<DeviceId>,
    /// How many mailbox entries it added.
    queued: usize,
}

/// Stores the payload once (or, with `stored`, reuses the copy already
/// stored under the envelope's id) and adds one mailbox entry per distinct
/// recipient that holds none for it yet. Removed devices are skipped, and
/// so are devices whose mailbox is full, which get a missed-messages notice
/// instead; they are returned. Nothing is stored for an envelope without
/// (remaining) recipients.
async fn place_envelope(
    tx: &Tx,
    group_id: &GroupId,
    envelope: &Envelope,
    missed: Missed,
    now: UnixSeconds,
    mailbox_limit: u32,
    stored: Option<i64>,
) -> Result<Placed, EnqueueError> {
    let mut seen: HashSet<DeviceId> = HashSet::new();
    if let Some(message_ref) = stored {
        for row in query(
            tx,
            "SELECT devices.device_id FROM mailbox JOIN devices ON devices.num = mailbox.device_num \
             WHERE mailbox.message_ref = $1",
            &[&message_ref],
        )
        .await?
        {
            let raw: &[u8] = get(&row, 0)?;
            if let Some(device) = DeviceId::from_slice(raw) {
                seen.insert(device);
            }
        }
    }
    let wanted: Vec<DeviceId> = envelope
        .recipients
        .iter()
        .copied()
        .filter(|d| seen.insert(*d))
        .collect();
    // Every recipient's number and whether it is active, in one round trip.
    let ids: Vec<&[u8]> = wanted.iter().map(|d| d.as_bytes().as_slice()).collect();
    let mut known: std::collections::HashMap<DeviceId, (i64, bool)> =
        std::collections::HashMap::new();
    if !ids.is_empty() {
        for row in query(
            tx,
            "SELECT device_id, num, removed_day IS NULL FROM devices WHERE device_id = ANY($1)",
            &[&ids],
        )
        .await?
        {
            let raw: &[u8] = get(&row, 0)?;
            known.insert(device_id_of(raw)?, (get(&row, 1)?, get(&row, 2)?));
        }
    }
    let mut recipients = Vec::new();
    for device in wanted {
        match known.get(&device) {
            None => return Err(EnqueueError::UnknownDevice(device)),
            Some(&(num, true)) => recipients.push((device, num)),
            Some(&(_, false)) => {}
        }
    }
    let mut skipped = Vec::new();
    if mailbox_limit < u32::MAX {
        let mut kept = Vec::with_capacity(recipients.len());
        for (device, num) in recipients {
            if mailbox_is_full(tx, num, mailbox_limit).await? {
                record_missed(tx, device, num, group_id, missed, envelope.message_id, now).await?;
                skipped.push(device);
            } else {
                kept.push((device, num));
            }
        }
        recipients = kept;
    }
    if recipients.is_empty() {
        return Ok(Placed { skipped, queued: 0 });
    }
    let message_ref = match stored {
        Some(message_ref) => message_ref,
        None => get(
            &query_one(
                tx,
                "INSERT INTO messages (message_id, payload, frank, franked_at_ms) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    &envelope.message_id.as_bytes().as_slice(),
                    &envelope.payload,
                    &envelope.frank.map(|f| f.signature.to_vec()),
                    &envelope.frank.map(|f| to_i64(f.accepted_at_ms)),
                ],
            )
            .await?,
            0,
        )?,
    };
    let payload: Arc<[u8]> = Arc::from(envelope.payload.as_slice());
    queue_entries(
        tx,
        &recipients,
        message_ref,
        envelope.message_id,
        &payload,
        envelope.frank,
        now,
    )
    .await?;
    Ok(Placed {
        skipped,
        queued: recipients.len(),
    })
}

/// Adds one mailbox row per recipient, in the order given, in one
/// statement: seqs come from the `mailbox_seq` row, taken in the same
/// transaction (so they only grow, and a rollback returns them).
async fn queue_entries(
    tx: &Tx,
    recipients: &[(DeviceId, i64)],
    message_ref: i64,
    message_id: MessageId,
    payload: &Arc<[u8]>,
    frank: Option<StoredFrank>,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    let nums: Vec<i64> = recipients.iter().map(|(_, num)| *num).collect();
    let count = limit_i64(nums.len());
    let last: i64 = get(
        &query_one(
            tx,
            "WITH taken AS (UPDATE mailbox_seq SET last = last + $1 RETURNING last), \
             added AS (INSERT INTO mailbox (seq, device_num, message_ref, enqueued_day) \
               SELECT taken.last - $1 + r.n, r.num, $3, $4 \
               FROM taken, unnest($2::bigint[]) WITH ORDINALITY AS r(num, n)) \
             SELECT last FROM taken",
            &[&count, &nums, &message_ref, &to_i64(day_of(now))],
        )
        .await?,
        0,
    )?;
    let first = last - count;
    for (n, (device, _)) in recipients.iter().enumerate() {
        tx.announce(NewEntry {
            device_id: *device,
            seq: to_u64(first + limit_i64(n) + 1),
            message_id,
            payload: Arc::clone(payload),
            frank,
        });
    }
    Ok(())
}

/// Whether a device's mailbox holds `limit` entries, its notices not
/// counted.
async fn mailbox_is_full(tx: &Tx, num: i64, limit: u32) -> Result<bool, StoreError> {
    const AT_LEAST: &str =
        "SELECT EXISTS(SELECT 1 FROM mailbox WHERE device_num = $1 ORDER BY seq LIMIT 1 OFFSET $2)";
    let limit = i64::from(limit);
    if !get::<bool>(&query_one(tx, AT_LEAST, &[&num, &(limit - 1)]).await?, 0)? {
        return Ok(false);
    }
    let notices: i64 = get(
        &query_one(
            tx,
            "SELECT count(*) FROM missed WHERE device_num = $1",
            &[&num],
        )
        .await?,
        0,
    )?;
    if notices == 0 {
        return Ok(true);
    }
    get(
        &query_one(tx, AT_LEAST, &[&num, &(limit - 1 + notices)]).await?,
        0,
    )
}

/// Tells a skipped device what it missed: updates its queued notice for the
/// group, or queues a new one (the rules are on [`MailboxStore::enqueue`]).
async fn record_missed(
    tx: &Tx,
    device: DeviceId,
    num: i64,
    group_id: &GroupId,
    missed: Missed,
    lost_message: MessageId,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    let mut queued: Vec<(i64, MissedMessages)> = Vec::new();
    for row in query(
        tx,
        "SELECT missed.message_ref, messages.payload FROM missed \
         JOIN messages ON messages.id = missed.message_ref \
         WHERE missed.device_num = $1 ORDER BY missed.message_ref",
        &[&num],
    )
    .await?
    {
        let payload: &[u8] = get(&row, 1)?;
        let notice = missed_notice::parse(payload).ok_or_else(|| {
            StoreError::Backend("a stored missed-messages notice does not decode".into())
        })?;
        queued.push((get(&row, 0)?, notice));
    }
    let (existing, notice) = count_missed(&queued, group_id.as_bytes(), missed);
    let payload = missed_notice::encode(&notice);
    if let Some(message_ref) = existing {
        execute(
            tx,
            "UPDATE messages SET payload = $1 WHERE id = $2",
            &[&payload, &message_ref],
        )
        .await?;
        return Ok(());
    }
    let notice_id = notice_id(tx, device, lost_message).await?;
    let message_ref: i64 = get(
        &query_one(
            tx,
            "INSERT INTO messages (message_id, payload) VALUES ($1, $2) RETURNING id",
            &[&notice_id.as_bytes().as_slice(), &payload],
        )
        .await?,
        0,
    )?;
    execute(
        tx,
        "INSERT INTO missed (message_ref, device_num) VALUES ($1, $2)",
        &[&message_ref, &num],
    )
    .await?;
    queue_entries(
        tx,
        &[(device, num)],
        message_ref,
        notice_id,
        &Arc::from(payload.as_slice()),
        None,
        now,
    )
    .await
}

/// The first of [`notice_ids`] no stored message has.
async fn notice_id(
    tx: &Tx,
    device: DeviceId,
    lost_message: MessageId,
) -> Result<MessageId, StoreError> {
    for id in notice_ids(device, lost_message) {
        if !message_exists(tx, id).await? {
            return Ok(id);
        }
    }
    Err(StoreError::Backend(
        "no free message id for a missed-messages notice".into(),
    ))
}

/// Deletes those of `refs` that no mailbox entry refers to any more.
pub(super) async fn delete_orphans(tx: &Tx, refs: &[i64]) -> Result<(), StoreError> {
    if refs.is_empty() {
        return Ok(());
    }
    execute(
        tx,
        "DELETE FROM messages WHERE id = ANY($1) \
         AND NOT EXISTS (SELECT 1 FROM mailbox WHERE mailbox.message_ref = messages.id)",
        &[&refs],
    )
    .await?;
    Ok(())
}

/// What a send needs of its group's row.
struct GroupRow {
    epoch: i64,
    token_hash: Vec<u8>,
    prev_token_hash: Option<Vec<u8>>,
    active_day: i64,
}

/// [`MailboxStore::enqueue`], or with `more`, [`MailboxStore::enqueue_more`].
async fn queue_message(
    tx: &Tx,
    message: &GroupMessage,
    limit: u32,
    more: bool,
) -> Result<Queued, EnqueueError> {
    let duplicate = Queued {
        outcome: Enqueued::Duplicate,
        skipped: Vec::new(),
    };
    let stored = stored_copy(tx, &message.envelope).await?;
    if !more && matches!(stored, StoredCopy::Same(_)) {
        return Ok(duplicate);
    }
    let group = query_opt(
        tx,
        "SELECT epoch, token_hash, prev_token_hash, active_day FROM mls_groups WHERE group_id = $1",
        &[&message.group_id.as_bytes()],
    )
    .await?;
    let Some(row) = group else {
        return Err(EnqueueError::UnknownGroup(message.group_id.clone()));
    };
    let group = GroupRow {
        epoch: get(&row, 0)?,
        token_hash: get(&row, 1)?,
        prev_token_hash: get(&row, 2)?,
        active_day: get(&row, 3)?,
    };
    check_capability(
        message,
        to_u64(group.epoch),
        &group.token_hash,
        group.prev_token_hash.as_deref(),
    )?;
    let into = match stored {
        StoredCopy::Different => return Err(EnqueueError::IdInUse(message.envelope.message_id)),
        StoredCopy::Same(message_ref) => Some(message_ref),
        StoredCopy::None => None,
    };
    let placed = place_envelope(
        tx,
        &message.group_id,
        &message.envelope,
        Missed::Message,
        message.now,
        limit,
        into,
    )
    .await?;
    if more && placed.queued == 0 && placed.skipped.is_empty() {
        return Ok(duplicate);
    }
    if let Some(expires_at) = message.expires_at.filter(|_| placed.queued > 0) {
        // The earliest expiry any frame of the message named.
        execute(
            tx,
            "UPDATE messages SET expires_at = least(coalesce(expires_at, $1), $1) \
             WHERE message_id = $2",
            &[
                &to_i64(expires_at),
                &message.envelope.message_id.as_bytes().as_slice(),
            ],
        )
        .await?;
    }
    let today = to_i64(day_of(message.now));
    if group.active_day < today {
        execute(
            tx,
            "UPDATE mls_groups SET active_day = greatest(active_day, $1) WHERE group_id = $2",
            &[&today, &message.group_id.as_bytes()],
        )
        .await?;
    }
    Ok(Queued {
        outcome: Enqueued::Queued,
        skipped: placed.skipped,
    })
}

/// [`MailboxStore::submit_commit`]. The epoch moves by a conditional
/// `UPDATE … WHERE epoch = $current` (and a group is created by an `INSERT
/// … ON CONFLICT DO NOTHING`): of two nodes racing for one epoch, the
/// database lets exactly one change the row; the other finds it moved and
/// is refused with `StaleEpoch`.
async fn submit_commit(
    tx: &Tx,
    submission: CommitSubmission,
    limit: u32,
) -> Result<CommitAccepted, CommitError> {
    let group_id = submission.group_id.as_bytes();
    let commit_id = submission.commit.message_id;
    let group: Option<(i64, Vec<u8>, Vec<u8>)> = query_opt(
        tx,
        "SELECT epoch, last_commit_id, token_hash FROM mls_groups WHERE group_id = $1",
        &[&group_id],
    )
    .await?
    .map(|r| Ok::<_, StoreError>((get(&r, 0)?, get(&r, 1)?, get(&r, 2)?)))
    .transpose()?;
    let is_latest = group
        .as_ref()
        .is_some_and(|(_, last, _)| last.as_slice() == commit_id.as_bytes());
    let accepted_before: bool = get(
        &query_one(
            tx,
            "SELECT EXISTS(SELECT 1 FROM accepted_commits WHERE group_id = $1 AND message_id = $2)",
            &[&group_id, &commit_id.as_bytes().as_slice()],
        )
        .await?,
        0,
    )?;
    if is_latest
        || accepted_before
        || matches!(
            stored_copy(tx, &submission.commit).await?,
            StoredCopy::Same(_)
        )
    {
        let current = group.map_or(0, |(epoch, _, _)| to_u64(epoch));
        return Ok(CommitAccepted {
            new_epoch: current,
            outcome: Enqueued::Duplicate,
            skipped: Vec::new(),
        });
    }
    let next_hash = submission.next_token_hash.as_slice();
    let today = to_i64(day_of(submission.now));
    let new_epoch = match group {
        // Nobody creates a group by invite link.
        None if submission.invite_link.is_some() => {
            return Err(CommitError::UnknownGroup(submission.group_id));
        }
        None if submission.epoch == 0 => {
            let created = execute(
                tx,
                "INSERT INTO mls_groups (group_id, epoch, last_commit_id, token_hash, active_day) \
                 VALUES ($1, 1, $2, $3, $4) ON CONFLICT (group_id) DO NOTHING",
                &[
                    &group_id,
                    &commit_id.as_bytes().as_slice(),
                    &next_hash,
                    &today,
                ],
            )
            .await?;
            if created == 0 {
                // Another node created it since the read above.
                return Err(CommitError::StaleEpoch {
                    submitted: 0,
                    current: current_epoch(tx, &submission.group_id).await?,
                });
            }
            1
        }
        None => return Err(CommitError::UnknownGroup(submission.group_id)),
        Some((current, _, token_hash)) => {
            let current = to_u64(current);
            // A joiner's external commit: its group's open link authorises
            // it (checked first, so a closed link is said to be closed
            // whatever the epoch).
            if let Some(link_id) = &submission.invite_link {
                super::invite_links::link_admits(tx, link_id, &submission.group_id).await?;
            }
            if submission.epoch != current {
                return Err(CommitError::StaleEpoch {
                    submitted: submission.epoch,
                    current,
                });
            }
            // Only members of the current epoch may commit.
            if submission.invite_link.is_none()
                && submission.token_hash.as_ref().map(<[u8; 32]>::as_slice)
                    != Some(token_hash.as_slice())
            {
                return Err(CommitError::NotAuthorized);
            }
            let next = current.saturating_add(1);
            let moved = execute(
                tx,
                "UPDATE mls_groups SET epoch = $1, last_commit_id = $2, \
                 prev_token_hash = token_hash, token_hash = $3, \
                 active_day = greatest(active_day, $4) WHERE group_id = $5 AND epoch = $6",
                &[
                    &to_i64(next),
                    &commit_id.as_bytes().as_slice(),
                    &next_hash,
                    &today,
                    &group_id,
                    &to_i64(current),
                ],
            )
            .await?;
            if moved != 1 {
                // Another node's commit for this epoch won in between.
                return Err(CommitError::StaleEpoch {
                    submitted: submission.epoch,
                    current: current_epoch(tx, &submission.group_id).await?,
                });
            }
            next
        }
    };
    if stored_copy(tx, &submission.commit).await? == StoredCopy::Different {
        return Err(CommitError::IdInUse(commit_id));
    }
    let mut skipped = place_envelope(
        tx,
        &submission.group_id,
        &submission.commit,
        Missed::Commit,
        submission.now,
        limit,
        None,
    )
    .await?
    .skipped;
    execute(
        tx,
        "INSERT INTO accepted_commits (group_id, message_id, day) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        &[&group_id, &commit_id.as_bytes().as_slice(), &today],
    )
    .await?;
    let welcome = match &submission.welcome {
        Some(welcome) => match stored_copy(tx, welcome).await? {
            StoredCopy::None => Some(welcome),
            StoredCopy::Same(_) => None,
            StoredCopy::Different => return Err(CommitError::IdInUse(welcome.message_id)),
        },
        None => None,
    };
    if let Some(welcome) = welcome {
        let placed = place_envelope(
            tx,
            &submission.group_id,
            welcome,
            Missed::Welcome,
            submission.now,
            limit,
            None,
        )
        .await?;
        for device in placed.skipped {
            if !skipped.contains(&device) {
                skipped.push(device);
            }
        }
    }
    Ok(CommitAccepted {
        new_epoch,
        outcome: Enqueued::Queued,
        skipped,
    })
}

/// The group's epoch as the transaction sees it now (0: no such group).
async fn current_epoch(tx: &Tx, group_id: &GroupId) -> Result<u64, StoreError> {
    Ok(query_opt(
        tx,
        "SELECT epoch FROM mls_groups WHERE group_id = $1",
        &[&group_id.as_bytes()],
    )
    .await?
    .map(|r| get::<i64>(&r, 0))
    .transpose()?
    .map_or(0, to_u64))
}

/// [`MailboxStore::submit_commit_more`].
async fn submit_commit_more(
    tx: &Tx,
    submission: CommitSubmission,
    limit: u32,
) -> Result<CommitAccepted, CommitError> {
    let Some(row) = query_opt(
        tx,
        "SELECT epoch, last_commit_id, token_hash, prev_token_hash FROM mls_groups \
         WHERE group_id = $1",
        &[&submission.group_id.as_bytes()],
    )
    .await?
    else {
        return Err(CommitError::UnknownGroup(submission.group_id));
    };
    let current = to_u64(get(&row, 0)?);
    let last_commit_id: &[u8] = get(&row, 1)?;
    let token_hash: &[u8] = get(&row, 2)?;
    let prev_token_hash: Option<&[u8]> = get(&row, 3)?;
    if last_commit_id != submission.commit.message_id.as_bytes()
        || submission.epoch.saturating_add(1) != current
    {
        return Err(CommitError::StaleEpoch {
            submitted: submission.epoch,
            current,
        });
    }
    let presented = submission.token_hash.as_ref().map(<[u8; 32]>::as_slice);
    if presented != prev_token_hash || submission.next_token_hash.as_slice() != token_hash {
        return Err(CommitError::NotAuthorized);
    }
    let mut skipped = Vec::new();
    let mut queued = 0;
    let parts = [
        Some((&submission.commit, Missed::Commit)),
        submission.welcome.as_ref().map(|w| (w, Missed::Welcome)),
    ];
    for (envelope, missed) in parts.into_iter().flatten() {
        let into = match stored_copy(tx, envelope).await? {
            StoredCopy::Different => return Err(CommitError::IdInUse(envelope.message_id)),
            StoredCopy::Same(message_ref) => Some(message_ref),
            StoredCopy::None => None,
        };
        let placed = place_envelope(
            tx,
            &submission.group_id,
            envelope,
            missed,
            submission.now,
            limit,
            into,
        )
        .await?;
        queued += placed.queued;
        for device in placed.skipped {
            if !skipped.contains(&device) {
                skipped.push(device);
            }
        }
    }
    let outcome = if queued == 0 && skipped.is_empty() {
        Enqueued::Duplicate
    } else {
        Enqueued::Queued
    };
    Ok(CommitAccepted {
        new_epoch: current,
        outcome,
        skipped,
    })
}

impl MailboxStore for PostgresStore {
    async fn enqueue(&self, message: GroupMessage) -> Result<Queued, EnqueueError> {
        let limit = self.mailbox_limit();
        self.write(move |tx| {
            Box::pin(async move { queue_message(&tx, &message, limit, false).await })
        })
        .await
    }

    async fn enqueue_more(&self, message: GroupMessage) -> Result<Queued, EnqueueError> {
        let limit = self.mailbox_limit();
        self.write(move |tx| {
            Box::pin(async move { queue_message(&tx, &message, limit, true).await })
        })
        .await
    }

    async fn submit_commit(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        let limit = self.mailbox_limit();
        self.write(move |tx| Box::pin(async move { submit_commit(&tx, submission, limit).await }))
            .await
    }

    async fn submit_commit_more(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        let limit = self.mailbox_limit();
        self.write(move |tx| {
            Box::pin(async move { submit_commit_more(&tx, submission, limit).await })
        })
        .await
    }

    async fn group_epoch(&self, group_id: &GroupId) -> Result<Option<u64>, StoreError> {
        let c = self.reader().await?;
        query_opt(
            &c,
            "SELECT epoch FROM mls_groups WHERE group_id = $1",
            &[&group_id.as_bytes()],
        )
        .await?
        .map(|r| get::<i64>(&r, 0).map(to_u64))
        .transpose()
    }

    async fn fetch_mailbox(
        &self,
        device_id: DeviceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        let c = self.reader().await?;
        let rows = query(
            &c,
            "SELECT mailbox.seq, messages.message_id, messages.payload, messages.frank, \
             messages.franked_at_ms FROM mailbox \
             JOIN messages ON messages.id = mailbox.message_ref \
             WHERE mailbox.device_num = (SELECT num FROM devices WHERE device_id = $1) \
             AND mailbox.seq > $2 ORDER BY mailbox.seq LIMIT $3",
            &[
                &device_id.as_bytes().as_slice(),
                &to_i64(after),
                &limit_i64(limit),
            ],
        )
        .await?;
        rows.iter()
            .map(|r| {
                let message_id: &[u8] = get(r, 1)?;
                Ok(MailboxEntry {
                    seq: to_u64(get(r, 0)?),
                    message_id: MessageId::from_slice(message_id).ok_or_else(|| {
                        StoreError::Backend("stored message id has the wrong length".into())
                    })?,
                    payload: get(r, 2)?,
                    frank: StoredFrank::from_columns(get(r, 3)?, get(r, 4)?),
                })
            })
            .collect()
    }

    async fn ack(&self, device_id: DeviceId, seqs: Vec<u64>) -> Result<u64, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        self.write(move |tx| {
            Box::pin(async move {
                let seqs: Vec<i64> = seqs.into_iter().map(to_i64).collect();
                let refs: Vec<i64> = query(
                    &tx,
                    "DELETE FROM mailbox WHERE seq = ANY($1) AND device_num = \
                     (SELECT num FROM devices WHERE device_id = $2) RETURNING message_ref",
                    &[&seqs, &device_id.as_bytes().as_slice()],
                )
                .await?
                .iter()
                .map(|r| get(r, 0))
                .collect::<Result<_, _>>()?;
                delete_orphans(&tx, &refs).await?;
                Ok(u64::try_from(refs.len()).unwrap_or(u64::MAX))
            })
        })
        .await
    }

    async fn expire(&self, cutoff: UnixSeconds) -> Result<Expired, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let cutoff_day = to_i64(day_of(cutoff));
                // As in SQLite: the expired entries are the prefix by seq
                // before the first unexpired one.
                let deleted = execute(
                    &tx,
                    "DELETE FROM mailbox WHERE enqueued_day < $1 AND seq < coalesce(\
                     (SELECT seq FROM mailbox WHERE enqueued_day >= $1 ORDER BY seq LIMIT 1), \
                     9223372036854775807)",
                    &[&cutoff_day],
                )
                .await?;
                execute(
                    &tx,
                    "DELETE FROM messages WHERE NOT EXISTS \
                     (SELECT 1 FROM mailbox WHERE mailbox.message_ref = messages.id)",
                    &[],
                )
                .await?;
                execute(
                    &tx,
                    "DELETE FROM accepted_commits WHERE day < $1",
                    &[&cutoff_day],
                )
                .await?;
                let groups = execute(
                    &tx,
                    "DELETE FROM mls_groups WHERE active_day < $1",
                    &[&cutoff_day],
                )
                .await?;
                // Open invite links die with their group (a closed one
                // stays, without its GroupInfo, so the group id gets no
                // new link).
                execute(
                    &tx,
                    "DELETE FROM invite_links WHERE closed_day IS NULL \
                     AND group_id NOT IN (SELECT group_id FROM mls_groups)",
                    &[],
                )
                .await?;
                Ok(Expired {
                    mailbox_entries: deleted,
                    groups,
                })
            })
        })
        .await
    }

    async fn check_send(&self, message: GroupMessage) -> Result<(), EnqueueError> {
        let c = self.reader().await?;
        let Some(row) = query_opt(
            &c,
            "SELECT epoch, token_hash, prev_token_hash FROM mls_groups WHERE group_id = $1",
            &[&message.group_id.as_bytes()],
        )
        .await?
        else {
            return Err(EnqueueError::UnknownGroup(message.group_id));
        };
        let epoch: i64 = get(&row, 0)?;
        let token_hash: &[u8] = get(&row, 1)?;
        let prev_token_hash: Option<&[u8]> = get(&row, 2)?;
        check_capability(&message, to_u64(epoch), token_hash, prev_token_hash)
    }

    async fn expire_disappearing(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        self.write(move |tx| {
            Box::pin(async move {
                let now = to_i64(now);
                let deleted = execute(
                    &tx,
                    "DELETE FROM mailbox WHERE message_ref IN \
                     (SELECT id FROM messages WHERE expires_at <= $1)",
                    &[&now],
                )
                .await?;
                execute(&tx, "DELETE FROM messages WHERE expires_at <= $1", &[&now]).await?;
                Ok(deleted)
            })
        })
        .await
    }

    fn set_mailbox_limit(&self, entries: u32) {
        PostgresStore::set_mailbox_limit(self, entries);
    }

    fn set_entry_listener(&self, listener: EntryListener) {
        let _ = self.inner.entry_listener.set(listener);
    }
}
