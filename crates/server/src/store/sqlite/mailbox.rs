//! Groups and mailboxes: the commit sequencer, queued payloads (stored
//! once) and one row per recipient device, acknowledgement and expiry.

use super::*;
use crate::store::missed::{Missed, count_missed, notice_ids};
use rusqlite::types::Value;
use rusqlite::vtab::array::Array;
use sotto_proto::missed_notice;
use sotto_proto::v1::MissedMessages;
use std::collections::HashMap;
use std::rc::Rc;

pub(super) fn message_exists(conn: &Connection, message_id: MessageId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM messages WHERE message_id = ?1)")?
        .query_row([message_id.as_bytes().as_slice()], |r| r.get(0))?)
}

/// Whether an envelope's id is already queued, and if so with its bytes.
fn stored_copy(conn: &Connection, envelope: &Envelope) -> Result<StoredCopy, StoreError> {
    let stored: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT id, payload FROM messages WHERE message_id = ?1")?
        .query_row([envelope.message_id.as_bytes().as_slice()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match stored {
        None => StoredCopy::None,
        Some((message_ref, payload)) if payload == envelope.payload => {
            StoredCopy::Same(message_ref)
        }
        Some(_) => StoredCopy::Different,
    })
}

/// What the store holds under an envelope's message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredCopy {
    None,
    /// The same bytes (in this `messages` row): a resend.
    Same(i64),
    /// Other bytes: the id is taken.
    Different,
}

/// The devices among `ids` that exist: their number in mailbox rows and
/// whether they are still active (not removed). One statement however many.
fn device_rows(
    conn: &Connection,
    ids: &[DeviceId],
) -> Result<HashMap<DeviceId, (i64, bool)>, StoreError> {
    let ids: Array = Rc::new(
        ids.iter()
            .map(|d| Value::Blob(d.as_bytes().to_vec()))
            .collect(),
    );
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, num, removed_day IS NULL FROM devices WHERE device_id IN rarray(?1)",
    )?;
    let rows = stmt.query_map([ids], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    let mut found = HashMap::new();
    for row in rows {
        let (id, num, active) = row?;
        if let Some(id) = DeviceId::from_slice(&id) {
            found.insert(id, (num, active));
        }
    }
    Ok(found)
}

/// Stores the payload once and adds one mailbox entry per distinct
/// recipient. Removed devices are skipped: a sender whose view of a roster
/// is a moment old must not fail because of them. So are devices whose
/// mailbox is full, which get a missed-messages notice instead
/// ([`record_missed`]); they are returned. Nothing is stored for an
/// envelope without (remaining) recipients.
pub(super) fn insert_envelope(
    conn: &Connection,
    group_id: &GroupId,
    envelope: &Envelope,
    missed: Missed,
    now: UnixSeconds,
    mailbox_limit: u32,
) -> Result<Vec<DeviceId>, EnqueueError> {
    place_envelope(conn, group_id, envelope, missed, now, mailbox_limit, None).map(|p| p.skipped)
}

/// What [`place_envelope`] did.
struct Placed {
    /// Devices skipped because their mailbox is full.
    skipped: Vec<DeviceId>,
    /// How many mailbox entries it added.
    queued: usize,
}

/// [`insert_envelope`], or, with `stored` (the row of the copy already
/// stored under the envelope's id, same bytes), adds entries for the
/// recipients that hold none for it yet.
fn place_envelope(
    conn: &Connection,
    group_id: &GroupId,
    envelope: &Envelope,
    missed: Missed,
    now: UnixSeconds,
    mailbox_limit: u32,
    stored: Option<i64>,
) -> Result<Placed, EnqueueError> {
    // Devices that hold an entry for the stored copy already.
    let mut seen: HashSet<DeviceId> = HashSet::new();
    if let Some(message_ref) = stored {
        let mut holders = conn
            .prepare_cached(
                "SELECT devices.device_id FROM mailbox JOIN devices ON devices.num = mailbox.device_num \
                 WHERE mailbox.message_ref = ?1",
            )
            .map_err(StoreError::from)?;
        let rows = holders
            .query_map([message_ref], |r| r.get::<_, Vec<u8>>(0))
            .map_err(StoreError::from)?;
        for row in rows {
            if let Some(device) = DeviceId::from_slice(&row.map_err(StoreError::from)?) {
                seen.insert(device);
            }
        }
    }
    // One statement for every recipient (a group message can name a
    // thousand).
    let status = device_rows(conn, &envelope.recipients)?;
    // (device, its number in mailbox rows)
    let mut recipients = Vec::new();
    for device in envelope
        .recipients
        .iter()
        .copied()
        .filter(|d| seen.insert(*d))
    {
        match status.get(&device) {
            None => return Err(EnqueueError::UnknownDevice(device)),
            Some(&(num, true)) => recipients.push((device, num)),
            Some(&(_, false)) => {}
        }
    }
    let mut skipped = Vec::new();
    if mailbox_limit < u32::MAX {
        let mut kept = Vec::with_capacity(recipients.len());
        for (device, num) in recipients {
            if mailbox_is_full(conn, num, mailbox_limit)? {
                record_missed(
                    conn,
                    device,
                    num,
                    group_id,
                    missed,
                    envelope.message_id,
                    now,
                )?;
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
        None => {
            conn.prepare_cached(
                "INSERT INTO messages (message_id, payload, frank, franked_at_ms) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    envelope.message_id.as_bytes().as_slice(),
                    envelope.payload,
                    envelope.frank.map(|f| f.signature.to_vec()),
                    envelope.frank.map(|f| to_i64(f.accepted_at_ms)),
                ])
            })
            .map_err(StoreError::from)?;
            conn.last_insert_rowid()
        }
    };
    let payload: Arc<[u8]> = Arc::from(envelope.payload.as_slice());
    let message = StoredMessage {
        row: message_ref,
        id: envelope.message_id,
        payload: &payload,
        frank: envelope.frank,
    };
    queue_entries(conn, &recipients, &message, now)?;
    Ok(Placed {
        skipped,
        queued: recipients.len(),
    })
}

/// A stored message row, about to be queued for its recipients.
struct StoredMessage<'a> {
    /// Its `messages.id`.
    row: i64,
    id: MessageId,
    payload: &'a Arc<[u8]>,
    frank: Option<StoredFrank>,
}

/// Adds one mailbox row and tells the listener once it commits.
fn queue_entry(
    conn: &Connection,
    device: DeviceId,
    num: i64,
    message: &StoredMessage<'_>,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO mailbox (device_num, message_ref, enqueued_day) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![num, message.row, to_i64(day_of(now))])?;
    let entry = NewEntry {
        device_id: device,
        seq: to_u64(conn.last_insert_rowid()),
        message_id: message.id,
        payload: Arc::clone(message.payload),
        frank: message.frank,
    };
    UNCOMMITTED.with_borrow_mut(|entries| entries.push(entry));
    Ok(())
}

/// [`queue_entry`] for many devices in one statement (a group message's
/// recipients; bench/OPTIMISATIONS.md #12).
fn queue_entries(
    conn: &Connection,
    recipients: &[(DeviceId, i64)],
    message: &StoredMessage<'_>,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    if let [(device, num)] = recipients {
        return queue_entry(conn, *device, *num, message, now);
    }
    let nums: Array = Rc::new(recipients.iter().map(|&(_, n)| Value::Integer(n)).collect());
    let device_of: HashMap<i64, DeviceId> = recipients.iter().map(|&(d, n)| (n, d)).collect();
    let mut insert = conn.prepare_cached(
        "INSERT INTO mailbox (device_num, message_ref, enqueued_day) \
         SELECT value, ?2, ?3 FROM rarray(?1) RETURNING device_num, seq",
    )?;
    let rows = insert.query_map(params![nums, message.row, to_i64(day_of(now))], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut entries = Vec::with_capacity(recipients.len());
    for row in rows {
        let (num, seq) = row?;
        let device_id = *device_of.get(&num).ok_or_else(|| {
            StoreError::Backend("an inserted mailbox row names no recipient".into())
        })?;
        entries.push(NewEntry {
            device_id,
            seq: to_u64(seq),
            message_id: message.id,
            payload: Arc::clone(message.payload),
            frank: message.frank,
        });
    }
    UNCOMMITTED.with_borrow_mut(|pending| pending.extend(entries));
    Ok(())
}

/// Whether a device's mailbox holds `limit` entries, its notices not
/// counted.
fn mailbox_is_full(conn: &Connection, num: i64, limit: u32) -> Result<bool, StoreError> {
    let mut at_least = conn.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM mailbox WHERE device_num = ?1 LIMIT 1 OFFSET ?2)",
    )?;
    let limit = i64::from(limit);
    if !at_least.query_row(params![num, limit - 1], |r| r.get::<_, bool>(0))? {
        return Ok(false);
    }
    // Rarely reached: only for a mailbox at the cap counting its notices.
    let notices: i64 = conn
        .prepare_cached("SELECT count(*) FROM missed WHERE device_num = ?1")?
        .query_row([num], |r| r.get(0))?;
    if notices == 0 {
        return Ok(true);
    }
    Ok(at_least.query_row(params![num, limit - 1 + notices], |r| r.get::<_, bool>(0))?)
}

/// Tells a skipped device what it missed: updates its queued notice for the
/// group, or queues a new one (see [`MailboxStore::enqueue`] for the rules
/// and why).
///
/// The `missed` table only marks which payloads are notices and for which
/// device; the group and the counts are in the notice itself, read back
/// here. So no column pairs a device with a group: a notice's payload tells
/// the server no more than the clear-text MLS framing of the payloads
/// already queued for the device.
fn record_missed(
    conn: &Connection,
    device: DeviceId,
    num: i64,
    group_id: &GroupId,
    missed: Missed,
    lost_message: MessageId,
    now: UnixSeconds,
) -> Result<(), StoreError> {
    // The device's queued notices, oldest first: at most
    // MAX_MISSED_NOTICES + 1 (see below).
    let mut queued: Vec<(i64, MissedMessages)> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT missed.message_ref, messages.payload FROM missed \
             JOIN messages ON messages.id = missed.message_ref \
             WHERE missed.device_num = ?1 ORDER BY missed.message_ref",
        )?;
        let rows = stmt.query_map([num], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (message_ref, payload) = row?;
            let notice = missed_notice::parse(&payload).ok_or_else(|| {
                StoreError::Backend("a stored missed-messages notice does not decode".into())
            })?;
            queued.push((message_ref, notice));
        }
    }
    let (existing, notice) = count_missed(&queued, group_id.as_bytes(), missed);
    let payload = missed_notice::encode(&notice);
    if let Some(message_ref) = existing {
        // Still queued (its row goes with its payload): the device reads
        // the new counts when it fetches it.
        conn.prepare_cached("UPDATE messages SET payload = ?1 WHERE id = ?2")?
            .execute(params![payload, message_ref])?;
        return Ok(());
    }
    let notice_id = notice_id(conn, device, lost_message)?;
    conn.prepare_cached("INSERT INTO messages (message_id, payload) VALUES (?1, ?2)")?
        .execute(params![notice_id.as_bytes().as_slice(), payload])?;
    let message_ref = conn.last_insert_rowid();
    conn.prepare_cached("INSERT INTO missed (message_ref, device_num) VALUES (?1, ?2)")?
        .execute(params![message_ref, num])?;
    let message = StoredMessage {
        row: message_ref,
        id: notice_id,
        payload: &Arc::from(payload.as_slice()),
        frank: None,
    };
    queue_entry(conn, device, num, &message, now)
}

/// The first of [`notice_ids`] no stored message has.
fn notice_id(
    conn: &Connection,
    device: DeviceId,
    lost_message: MessageId,
) -> Result<MessageId, StoreError> {
    for id in notice_ids(device, lost_message) {
        if !message_exists(conn, id)? {
            return Ok(id);
        }
    }
    Err(StoreError::Backend(
        "no free message id for a missed-messages notice".into(),
    ))
}

/// Acknowledgements from every connection, waiting for the writer: they
/// are committed together by one write job (no savepoint, and one orphan
/// check per message however many of its recipients acknowledged it), which
/// takes whatever has queued up by the time the writer runs it.
#[derive(Default)]
pub(super) struct AckQueue {
    acks: Vec<QueuedAck>,
    /// A job that will take `acks` is queued for the writer.
    scheduled: bool,
}

struct QueuedAck {
    device_id: DeviceId,
    seqs: Vec<u64>,
    /// How many entries were deleted, once committed.
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

impl SqliteStore {
    /// Queues the job that commits the queued acknowledgements.
    fn schedule_acks(&self) {
        let queue = Arc::clone(&self.inner.acks);
        let job: super::writer::Job = Box::new(move |conn| {
            let acks = {
                let mut queue = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                queue.scheduled = false;
                std::mem::take(&mut queue.acks)
            };
            // No savepoint of its own (unlike other jobs): see
            // `delete_acknowledged`.
            let deleted = conn.and_then(|conn| delete_acknowledged(conn, &acks));
            Box::new(move |committed| {
                let deleted = committed.and(deleted);
                for (i, ack) in acks.into_iter().enumerate() {
                    // The connection may have gone away; nothing to do then.
                    let _ = ack.reply.send(match &deleted {
                        Ok(counts) => Ok(counts.get(i).copied().unwrap_or(0)),
                        Err(e) => Err(e.clone()),
                    });
                }
            })
        });
        if self
            .inner
            .writer_tx
            .send(super::writer::WriterMsg::Job(job))
            .is_err()
        {
            // The writer is gone: dropping the replies answers `Closed`.
            let mut queue = self
                .inner
                .acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.scheduled = false;
            queue.acks.clear();
        }
    }
}

/// Deletes the acknowledged entries and the payloads no entry refers to any
/// more; returns how many entries each acknowledgement deleted.
///
/// A handful of set statements over `rarray(?)` however many entries the
/// job holds: the devices' numbers, which of the acknowledged seqs are
/// queued for the device that acknowledged them, their delete, and the
/// orphaned payloads'. Two statements per entry cost more in SQLite's
/// per-statement work (transaction and statement-journal set-up, cursors)
/// than in the deletes themselves (bench/OPTIMISATIONS.md #10).
///
/// Runs straight in the batch's transaction, not in a SAVEPOINT: one
/// savepoint around the acknowledgements of every connection (thousands of
/// deletes in an offline drain) kept the writer busy for minutes (quick W3
/// never got `SyncDone`; bench/OPTIMISATIONS.md, #7). As far as we read
/// SQLite's pager, each statement's changed pages go into the sub-journal,
/// which is only emptied once no savepoint is open; without one, that is
/// when each statement ends. Nothing needs
/// undoing on an error: every delete here was acknowledged by its device,
/// so whatever part of the job ran may commit with the batch; the callers
/// are answered with the error all the same, and their connections close
/// and deliver again what is left.
fn delete_acknowledged(conn: &Connection, acks: &[QueuedAck]) -> Result<Vec<u64>, StoreError> {
    let ids: Vec<DeviceId> = acks.iter().map(|a| a.device_id).collect();
    // device id -> its number in mailbox rows (unknown devices are absent).
    let nums: HashMap<DeviceId, i64> = device_rows(conn, &ids)?
        .into_iter()
        .map(|(id, (num, _))| (id, num))
        .collect();
    // Every acknowledged seq that is queued, and for which device.
    let mut queued_for: HashMap<i64, i64> = HashMap::new();
    {
        let seqs: Array = Rc::new(
            acks.iter()
                .filter(|a| nums.contains_key(&a.device_id))
                .flat_map(|a| a.seqs.iter().map(|&s| Value::Integer(to_i64(s))))
                .collect(),
        );
        let mut stmt =
            conn.prepare_cached("SELECT seq, device_num FROM mailbox WHERE seq IN rarray(?1)")?;
        let rows = stmt.query_map([seqs], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (seq, num) = row?;
            queued_for.insert(seq, num);
        }
    }
    // A device deletes only its own entries, and each entry counts once
    // (for the first acknowledgement that named it).
    let mut counts = Vec::with_capacity(acks.len());
    let mut doomed = Vec::new();
    for ack in acks {
        let mut deleted = 0;
        if let Some(&num) = nums.get(&ack.device_id) {
            for &seq in &ack.seqs {
                let seq = to_i64(seq);
                if queued_for.get(&seq) == Some(&num) {
                    queued_for.remove(&seq);
                    doomed.push(Value::Integer(seq));
                    deleted += 1;
                }
            }
        }
        counts.push(deleted);
    }
    if doomed.is_empty() {
        return Ok(counts);
    }
    let mut message_refs = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached("DELETE FROM mailbox WHERE seq IN rarray(?1) RETURNING message_ref")?;
        let rows = stmt.query_map([Rc::new(doomed)], |r| r.get::<_, i64>(0))?;
        for row in rows {
            message_refs.push(row?);
        }
    }
    // A group message's recipients acknowledge it together: check it once.
    message_refs.sort_unstable();
    message_refs.dedup();
    let message_refs: Array = Rc::new(message_refs.into_iter().map(Value::Integer).collect());
    conn.prepare_cached(
        "DELETE FROM messages WHERE id IN rarray(?1) \
         AND NOT EXISTS (SELECT 1 FROM mailbox WHERE message_ref = messages.id)",
    )?
    .execute([message_refs])?;
    Ok(counts)
}

pub(super) fn delete_orphaned_messages(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM mailbox WHERE mailbox.message_ref = messages.id)",
        [],
    )?;
    Ok(())
}

/// What a send needs of its group's row.
struct GroupRow {
    epoch: i64,
    token_hash: Vec<u8>,
    prev_token_hash: Option<Vec<u8>>,
    /// The last day a commit or message was accepted.
    active_day: i64,
}

/// [`MailboxStore::enqueue`], or with `more`, [`MailboxStore::enqueue_more`].
fn queue_message(
    conn: &Connection,
    message: &GroupMessage,
    limit: u32,
    more: bool,
) -> Result<Queued, EnqueueError> {
    let duplicate = Queued {
        outcome: Enqueued::Duplicate,
        skipped: Vec::new(),
    };
    // A resend of the very bytes that are queued is answered before the
    // capability check: after a crash the sender resends with the
    // capability of an epoch that may have moved on. Only a holder of the
    // ciphertext (its sender or a recipient) can produce it, and nothing
    // new is stored.
    let stored = stored_copy(conn, &message.envelope)?;
    if !more && matches!(stored, StoredCopy::Same(_)) {
        return Ok(duplicate);
    }
    let group: Option<GroupRow> = conn
        .prepare_cached(
            "SELECT epoch, token_hash, prev_token_hash, active_day FROM mls_groups \
             WHERE group_id = ?1",
        )
        .and_then(|mut find| {
            find.query_row([message.group_id.as_bytes()], |r| {
                Ok(GroupRow {
                    epoch: r.get(0)?,
                    token_hash: r.get(1)?,
                    prev_token_hash: r.get(2)?,
                    active_day: r.get(3)?,
                })
            })
            .optional()
        })
        .map_err(StoreError::from)?;
    let Some(group) = group else {
        return Err(EnqueueError::UnknownGroup(message.group_id.clone()));
    };
    check_capability(
        message,
        to_u64(group.epoch),
        &group.token_hash,
        group.prev_token_hash.as_deref(),
    )?;
    let into = match stored {
        // Only now, to an authorised sender, is a taken id a refusal.
        StoredCopy::Different => return Err(EnqueueError::IdInUse(message.envelope.message_id)),
        StoredCopy::Same(message_ref) => Some(message_ref),
        StoredCopy::None => None,
    };
    let placed = place_envelope(
        conn,
        &message.group_id,
        &message.envelope,
        Missed::Message,
        message.now,
        limit,
        into,
    )?;
    if more && placed.queued == 0 && placed.skipped.is_empty() {
        return Ok(duplicate);
    }
    if let Some(expires_at) = message.expires_at.filter(|_| placed.queued > 0) {
        // The earliest expiry any frame of the message named.
        conn.prepare_cached(
            "UPDATE messages SET expires_at = min(coalesce(expires_at, ?1), ?1) WHERE message_id = ?2",
        )
        .and_then(|mut set| {
            set.execute(params![
                to_i64(expires_at),
                message.envelope.message_id.as_bytes().as_slice()
            ])
        })
        .map_err(StoreError::from)?;
    }
    // At most one write per group and day: the row was just read.
    let today = to_i64(day_of(message.now));
    if group.active_day < today {
        conn.prepare_cached("UPDATE mls_groups SET active_day = ?1 WHERE group_id = ?2")
            .and_then(|mut touch| touch.execute(params![today, message.group_id.as_bytes()]))
            .map_err(StoreError::from)?;
    }
    Ok(Queued {
        outcome: Enqueued::Queued,
        skipped: placed.skipped,
    })
}

impl MailboxStore for SqliteStore {
    async fn enqueue(&self, message: GroupMessage) -> Result<Queued, EnqueueError> {
        let limit = self.mailbox_limit();
        self.write(move |conn| queue_message(conn, &message, limit, false))
            .await
    }

    async fn enqueue_more(&self, message: GroupMessage) -> Result<Queued, EnqueueError> {
        let limit = self.mailbox_limit();
        self.write(move |conn| queue_message(conn, &message, limit, true))
            .await
    }

    async fn submit_commit(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        let limit = self.mailbox_limit();
        self.write(move |conn| {
            let group: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT epoch, last_commit_id FROM mls_groups WHERE group_id = ?1",
                    [submission.group_id.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
            let commit_id = submission.commit.message_id;
            // A resend of the accepted commit: its id is still queued, or it
            // is the group's latest commit (whose recipients may all have
            // acknowledged it already, or which had none).
            let is_latest = group.as_ref().is_some_and(|(_, last)| last.as_slice() == commit_id.as_bytes());
            let accepted_before: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM accepted_commits WHERE group_id = ?1 AND message_id = ?2)",
                    params![submission.group_id.as_bytes(), commit_id.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .map_err(StoreError::from)?;
            if is_latest || accepted_before || matches!(stored_copy(conn, &submission.commit)?, StoredCopy::Same(_)) {
                let current = group.map_or(0, |(epoch, _)| to_u64(epoch));
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
                    conn.execute(
                        "INSERT INTO mls_groups (group_id, epoch, last_commit_id, token_hash, active_day) \
                         VALUES (?1, 1, ?2, ?3, ?4)",
                        params![submission.group_id.as_bytes(), commit_id.as_bytes().as_slice(), next_hash, today],
                    )
                    .map_err(StoreError::from)?;
                    1
                }
                None => return Err(CommitError::UnknownGroup(submission.group_id)),
                Some((current, _)) => {
                    let current = to_u64(current);
                    // A joiner's external commit: its group's open link
                    // authorises it (checked first, so a closed link is
                    // said to be closed whatever the epoch).
                    if let Some(link_id) = &submission.invite_link {
                        super::invite_links::link_admits(conn, link_id, &submission.group_id)?;
                    }
                    if submission.epoch != current {
                        return Err(CommitError::StaleEpoch { submitted: submission.epoch, current });
                    }
                    // Only members of the current epoch may commit.
                    let token_hash: Vec<u8> = conn
                        .query_row(
                            "SELECT token_hash FROM mls_groups WHERE group_id = ?1",
                            [submission.group_id.as_bytes()],
                            |r| r.get(0),
                        )
                        .map_err(StoreError::from)?;
                    if submission.invite_link.is_none()
                        && submission.token_hash.as_ref().map(|h| h.as_slice()) != Some(token_hash.as_slice())
                    {
                        return Err(CommitError::NotAuthorized);
                    }
                    let next = current.saturating_add(1);
                    conn.execute(
                        "UPDATE mls_groups SET epoch = ?1, last_commit_id = ?2, \
                         prev_token_hash = token_hash, token_hash = ?3, \
                         active_day = max(active_day, ?4) WHERE group_id = ?5",
                        params![
                            to_i64(next),
                            commit_id.as_bytes().as_slice(),
                            next_hash,
                            today,
                            submission.group_id.as_bytes()
                        ],
                    )
                    .map_err(StoreError::from)?;
                    next
                }
            };
            // Checked only after the capability, so an outsider cannot probe
            // which ids are queued.
            if stored_copy(conn, &submission.commit)? == StoredCopy::Different {
                return Err(CommitError::IdInUse(commit_id));
            }
            // Full mailboxes are skipped, never a reason to refuse: the
            // commit is queued for everyone else or (on error) for nobody.
            let mut skipped = insert_envelope(
                conn,
                &submission.group_id,
                &submission.commit,
                Missed::Commit,
                submission.now,
                limit,
            )?;
            conn.execute(
                "INSERT OR IGNORE INTO accepted_commits (group_id, message_id, day) VALUES (?1, ?2, ?3)",
                params![
                    submission.group_id.as_bytes(),
                    commit_id.as_bytes().as_slice(),
                    to_i64(day_of(submission.now))
                ],
            )
            .map_err(StoreError::from)?;
            let welcome = match &submission.welcome {
                Some(welcome) => match stored_copy(conn, welcome)? {
                    StoredCopy::None => Some(welcome),
                    StoredCopy::Same(_) => None,
                    StoredCopy::Different => {
                        return Err(CommitError::IdInUse(welcome.message_id));
                    }
                },
                None => None,
            };
            if let Some(welcome) = welcome {
                for device in insert_envelope(
                    conn,
                    &submission.group_id,
                    welcome,
                    Missed::Welcome,
                    submission.now,
                    limit,
                )? {
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
        })
        .await
    }

    async fn submit_commit_more(
        &self,
        submission: CommitSubmission,
    ) -> Result<CommitAccepted, CommitError> {
        let limit = self.mailbox_limit();
        self.write(move |conn| {
            type Row = (i64, Vec<u8>, Vec<u8>, Option<Vec<u8>>);
            let group: Option<Row> = conn
                .query_row(
                    "SELECT epoch, last_commit_id, token_hash, prev_token_hash FROM mls_groups \
                     WHERE group_id = ?1",
                    [submission.group_id.as_bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
            let Some((epoch, last_commit_id, token_hash, prev_token_hash)) = group else {
                return Err(CommitError::UnknownGroup(submission.group_id));
            };
            let current = to_u64(epoch);
            if last_commit_id.as_slice() != submission.commit.message_id.as_bytes()
                || submission.epoch.saturating_add(1) != current
            {
                return Err(CommitError::StaleEpoch {
                    submitted: submission.epoch,
                    current,
                });
            }
            // The capability of the epoch the commit ended (none at epoch
            // 0), and the next one it set.
            let presented = submission.token_hash.as_ref().map(|h| h.as_slice());
            if presented != prev_token_hash.as_deref()
                || submission.next_token_hash.as_slice() != token_hash.as_slice()
            {
                return Err(CommitError::NotAuthorized);
            }
            let mut skipped = Vec::new();
            let mut queued = 0;
            let parts = [
                Some((&submission.commit, Missed::Commit)),
                submission.welcome.as_ref().map(|w| (w, Missed::Welcome)),
            ];
            for (envelope, missed) in parts.into_iter().flatten() {
                let into = match stored_copy(conn, envelope)? {
                    StoredCopy::Different => return Err(CommitError::IdInUse(envelope.message_id)),
                    StoredCopy::Same(message_ref) => Some(message_ref),
                    StoredCopy::None => None,
                };
                let placed = place_envelope(
                    conn,
                    &submission.group_id,
                    envelope,
                    missed,
                    submission.now,
                    limit,
                    into,
                )?;
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
        })
        .await
    }

    async fn group_epoch(&self, group_id: &GroupId) -> Result<Option<u64>, StoreError> {
        let group_id = group_id.clone();
        self.read(move |conn| {
            let epoch: Option<i64> = conn
                .query_row(
                    "SELECT epoch FROM mls_groups WHERE group_id = ?1",
                    [group_id.as_bytes()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(epoch.map(to_u64))
        })
        .await
    }

    async fn fetch_mailbox(
        &self,
        device_id: DeviceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT mailbox.seq, messages.message_id, messages.payload, messages.frank, \
                 messages.franked_at_ms FROM mailbox \
                 JOIN messages ON messages.id = mailbox.message_ref \
                 WHERE mailbox.device_num = (SELECT num FROM devices WHERE device_id = ?1) \
                 AND mailbox.seq > ?2 ORDER BY mailbox.seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    device_id.as_bytes().as_slice(),
                    to_i64(after),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        StoredFrank::from_columns(r.get(3)?, r.get(4)?),
                    ))
                },
            )?;
            let mut entries = Vec::new();
            for row in rows {
                let (seq, message_id, payload, frank) = row?;
                let message_id = MessageId::from_slice(&message_id).ok_or_else(|| {
                    StoreError::Backend("stored message id has the wrong length".into())
                })?;
                entries.push(MailboxEntry {
                    seq: to_u64(seq),
                    message_id,
                    payload,
                    frank,
                });
            }
            Ok(entries)
        })
        .await
    }

    async fn ack(&self, device_id: DeviceId, seqs: Vec<u64>) -> Result<u64, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let (reply, replied) = oneshot::channel();
        let schedule = {
            let mut queue = self
                .inner
                .acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.acks.push(QueuedAck {
                device_id,
                seqs,
                reply,
            });
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if schedule {
            self.schedule_acks();
        }
        replied.await.unwrap_or(Err(StoreError::Closed))
    }

    async fn expire(&self, cutoff: UnixSeconds) -> Result<Expired, StoreError> {
        self.write(move |conn| {
            let cutoff_day = to_i64(day_of(cutoff));
            // Entries are appended in time order: the expired ones are the
            // entries before the first unexpired one (found by walking the
            // table in seq order, no index needed). Should the clock have
            // gone back, an older entry after that point waits for a later
            // sweep.
            let deleted = conn.execute(
                "DELETE FROM mailbox WHERE enqueued_day < ?1 AND seq < coalesce(\
                 (SELECT seq FROM mailbox WHERE enqueued_day >= ?1 ORDER BY seq LIMIT 1), \
                 9223372036854775807)",
                [cutoff_day],
            )?;
            delete_orphaned_messages(conn)?;
            // A group's accepted commits are no newer than its last
            // activity, so a dead group's go with this too.
            conn.execute("DELETE FROM accepted_commits WHERE day < ?1", [cutoff_day])?;
            let groups =
                conn.execute("DELETE FROM mls_groups WHERE active_day < ?1", [cutoff_day])?;
            // Open invite links die with their group (a closed one stays,
            // without its GroupInfo, so the group id gets no new link).
            conn.execute(
                "DELETE FROM invite_links WHERE closed_day IS NULL \
                 AND group_id NOT IN (SELECT group_id FROM mls_groups)",
                [],
            )?;
            Ok(Expired {
                mailbox_entries: u64::try_from(deleted).unwrap_or(u64::MAX),
                groups: u64::try_from(groups).unwrap_or(u64::MAX),
            })
        })
        .await
    }

    async fn check_send(&self, message: GroupMessage) -> Result<(), EnqueueError> {
        let group: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = {
            let group_id = message.group_id.clone();
            self.read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT epoch, token_hash, prev_token_hash FROM mls_groups WHERE group_id = ?1",
                    )?
                    .query_row([group_id.as_bytes()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?)
            })
            .await?
        };
        let Some((epoch, token_hash, prev_token_hash)) = group else {
            return Err(EnqueueError::UnknownGroup(message.group_id));
        };
        check_capability(
            &message,
            to_u64(epoch),
            &token_hash,
            prev_token_hash.as_deref(),
        )
    }

    async fn expire_disappearing(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM mailbox WHERE message_ref IN \
                 (SELECT id FROM messages WHERE expires_at <= ?1)",
                [to_i64(now)],
            )?;
            conn.execute("DELETE FROM messages WHERE expires_at <= ?1", [to_i64(now)])?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        })
        .await
    }

    fn set_mailbox_limit(&self, entries: u32) {
        SqliteStore::set_mailbox_limit(self, entries);
    }

    fn set_entry_listener(&self, listener: EntryListener) {
        // A second listener is ignored, as documented on the trait.
        let _ = self.inner.entry_listener.set(listener);
    }
}
