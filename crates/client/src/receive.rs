//! Receiving: draining the mailbox on the logged-in connection, processing
//! each delivery atomically with its MLS state change (`inbound`), checking
//! every new member against the key log, and acknowledging only what is
//! committed, with loud warnings when something is off.

use crate::ClientError;
use crate::inbound::{
    Applied, Franked, Handover, Incoming, apply_batch, apply_delivery, conversation_of,
};
use crate::keys::HeadSource;
use crate::membership;
use crate::profile::{Profile, now_ms};
use crate::session::{LISTEN_PING, Session};
use crate::store::{self, Conversation, ConversationKind, EntryKind, GroupState, HistoryEntry};
use crate::transport::{Next, Push};
use sotto_core::franking::Frank;
use sotto_core::group::{self, GroupError};
use sotto_core::identity::Username;
use sotto_proto::missed_notice;
use sotto_proto::v1::{Delivery, MissedMessages, Sync, client_frame, response};
use std::collections::VecDeque;

/// Transient failures of one delivery (across syncs) before it is skipped
/// as poison, acknowledged with a warning.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 6;
/// First wait before looking an account up again after a network failure;
/// doubled each time, three tries in all.
const LOOKUP_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A line shown now and not stored: about unauthenticated input, which must
/// change nothing durable.
fn notice(conversation: &Conversation, message_id: &[u8], text: &str) -> HistoryEntry {
    HistoryEntry {
        id: hex::encode([message_id, b"notice"].concat()),
        conversation: conversation.name.clone(),
        conversation_kind: conversation.kind,
        sender: "system".into(),
        kind: EntryKind::System,
        text: text.to_owned(),
        sent_at: now_ms(),
        chat: Default::default(),
    }
}

/// Receives and processes everything queued for this device, commits
/// proposals other members are waiting on, and returns the new history
/// lines (warnings included).
pub(crate) async fn sync(s: &mut Session<'_>) -> Result<Vec<HistoryEntry>, ClientError> {
    let mut entries = drain(s).await?;
    entries.extend(membership::commit_pending_proposals(s).await?);
    entries.extend(s.outbox.take_lines());
    Ok(entries)
}

/// Stays connected and calls `on_entry` for every new history line until
/// the connection fails.
pub(crate) async fn listen(
    s: &mut Session<'_>,
    on_entry: impl FnMut(&HistoryEntry),
) -> Result<(), ClientError> {
    listen_until(s, on_entry, std::future::pending()).await
}

/// [`listen`] until `until` is ready, which is polled only while waiting
/// for the server: never in the middle of a delivery, so nothing is left
/// half applied or unacknowledged, and the connection stays usable.
pub(crate) async fn listen_until<T>(
    s: &mut Session<'_>,
    mut on_entry: impl FnMut(&HistoryEntry),
    until: impl Future<Output = T>,
) -> Result<T, ClientError> {
    let mut until = std::pin::pin!(until);
    for entry in drain(s).await? {
        on_entry(&entry);
    }
    loop {
        s.profile.purge_expired()?;
        crate::receipts::send_due(s, crate::profile::now_ms()).await?;
        let mut entries = membership::commit_pending_proposals(s).await?;
        entries.extend(s.outbox.take_lines());
        for entry in &entries {
            on_entry(entry);
        }
        // Waiting for the next frame is cancel-safe: frames already read
        // stay buffered in the transport, a partial one in the WebSocket.
        let next = tokio::select! {
            biased;
            done = &mut until => return Ok(done),
            next = s.connection.next(Some(LISTEN_PING)) => next?,
        };
        match next {
            Next::Push(Push::Delivery(d)) => {
                let mut entries = Vec::new();
                let mut batch = vec![d];
                s.connection
                    .take_ready_deliveries(&mut batch, MAX_DELIVERY_BATCH);
                handle_deliveries(s, batch, &mut entries).await?;
                for entry in &entries {
                    on_entry(entry);
                }
            }
            Next::Push(Push::KeyPackagesLow) => {
                s.key_packages.top_up(s.profile, s.connection).await?;
            }
            Next::Push(Push::LinkRequest(_) | Push::LinkCompleted(_)) | Next::Response(..) => {}
        }
    }
}

/// Processes deliveries until the server says the mailbox is empty.
pub(crate) async fn drain(s: &mut Session<'_>) -> Result<Vec<HistoryEntry>, ClientError> {
    let mut entries = Vec::new();
    let sync_id = s
        .connection
        .start_request(client_frame::Body::Sync(Sync {}))
        .await?;
    loop {
        match s.connection.next(None).await? {
            Next::Push(Push::Delivery(d)) => {
                let mut batch = vec![d];
                s.connection
                    .take_ready_deliveries(&mut batch, MAX_DELIVERY_BATCH);
                handle_deliveries(s, batch, &mut entries).await?;
            }
            Next::Push(Push::KeyPackagesLow) => s.key_packages.mark_low(),
            Next::Response(id, response::Result::SyncDone(_)) if id == sync_id => break,
            Next::Push(Push::LinkRequest(_) | Push::LinkCompleted(_)) | Next::Response(..) => {}
        }
    }
    s.key_packages
        .top_up_if_low(s.profile, s.connection)
        .await?;
    Ok(entries)
}

/// Deliveries processed in one transaction at most (the server keeps at
/// most 64 unacknowledged ones in flight anyway).
pub(crate) const MAX_DELIVERY_BATCH: usize = 64;

/// Applies deliveries that arrived together, in order: runs of MLS
/// messages in one transaction each (`inbound::apply_batch`, every group
/// loaded once per run), anything else, and any delivery that fails in a
/// run, alone ([`handle_delivery`]). Each is acknowledged once committed
/// and its follow-ups (log-head check, held messages) are done.
pub(crate) async fn handle_deliveries(
    s: &mut Session<'_>,
    batch: Vec<Delivery>,
    out: &mut Vec<HistoryEntry>,
) -> Result<(), ClientError> {
    let mut rest = VecDeque::from(batch);
    while !rest.is_empty() {
        let run = rest
            .iter()
            .take_while(|d| missed_notice::parse(&d.payload).is_none())
            .count();
        if run < 2 {
            if let Some(d) = rest.pop_front() {
                handle_delivery(s, d, out).await?;
            }
            continue;
        }
        let incoming: Vec<Incoming<'_>> = rest
            .iter()
            .take(run)
            .map(|d| Incoming {
                message_id: &d.message_id,
                payload: &d.payload,
                franked: Franked {
                    frank: Frank::from_delivery(&d.frank, d.accepted_at_ms),
                    franking_key: s.connection.franking_key,
                },
            })
            .collect();
        s.key_log.start_round();
        let batch = apply_batch(s.profile, s.key_log, &incoming)?;
        drop(incoming);
        for applied in batch.applied {
            let Some(d) = rest.pop_front() else { break };
            if let Some(group_id) = settle_applied(s, &d.message_id, applied, out).await? {
                receive_queue(s, held_after(s, &group_id, VecDeque::new())?, None, out).await?;
            }
            s.connection.ack(d.seq).await?;
        }
        // The one that failed in the run goes alone, with the error
        // handling of a single delivery.
        if batch.failed
            && let Some(d) = rest.pop_front()
        {
            handle_delivery(s, d, out).await?;
        }
    }
    Ok(())
}

/// Applies one delivery atomically (with any held messages it unblocks),
/// then acknowledges it. A missed-messages notice from the server (this
/// device's mailbox was full) becomes a warning line instead.
pub(crate) async fn handle_delivery(
    s: &mut Session<'_>,
    d: Delivery,
    out: &mut Vec<HistoryEntry>,
) -> Result<(), ClientError> {
    match missed_notice::parse(&d.payload) {
        Some(notice) => out.extend(missed(s.profile, &d.message_id, &notice)?),
        None => {
            let frank = Frank::from_delivery(&d.frank, d.accepted_at_ms);
            receive(s, &d.message_id, &d.payload, frank, out).await?;
        }
    }
    s.connection.ack(d.seq).await
}

/// Warns that messages were lost because this device's mailbox on the
/// server was full (`MissedMessages`): in the conversation of the group it
/// names, or in the device log when this device knows no such
/// conversation (a lost Welcome, a group it is not in, or too many groups
/// for the server to name).
///
/// Only a warning: the notice is the server's word, not authenticated by
/// MLS, so it changes nothing else. And it can promise no repair: MLS
/// cannot skip a commit, so after a lost commit every later message of the
/// group is held as coming from a future epoch, for good. A member adding
/// the device back to the same group does not help yet: its Welcome names
/// a group id this device already holds state for, and is refused
/// (`GroupAlreadyExists`); so the warning asks for the device to be removed
/// (so nothing more is queued for a leaf that cannot read) and for a new
/// conversation. A lost Welcome needs only the device added again.
fn missed(
    profile: &Profile,
    message_id: &[u8],
    notice: &MissedMessages,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let group_row = if notice.group_id.is_empty() {
        None
    } else {
        store::group(&profile.db, &notice.group_id)?
    };
    if group_row
        .as_ref()
        .is_some_and(|row| row.state != GroupState::Active)
    {
        // A conversation this device left or refused: nothing to repair.
        tracing::info!("messages of a group this device no longer uses were lost (mailbox full)");
        return Ok(Vec::new());
    }
    let conversation = group_row
        .as_ref()
        .and_then(|row| row.conversation_id)
        .map(|id| store::conversation_by_id(&profile.db, id))
        .transpose()?
        .flatten();
    let lost = notice.messages.saturating_add(notice.commits);
    let mut text = if notice.group_id.is_empty() {
        format!(
            "WARNING: {lost} or more messages of several conversations were lost because this \
             device's mailbox on the server was full (it was offline too long, or someone \
             flooded it)."
        )
    } else if conversation.is_some() {
        format!(
            "WARNING: {lost} or more messages of this conversation were lost because this \
             device's mailbox on the server was full (it was offline too long, or someone \
             flooded it)."
        )
    } else {
        format!(
            "WARNING: {lost} or more messages of a conversation this device is not in were lost \
             because its mailbox on the server was full."
        )
    };
    if notice.group_id.is_empty() {
        text.push_str(
            " Any conversation may be affected: one whose new messages stay waiting for an \
             earlier change can only be repaired by a member removing this device and adding \
             it again.",
        );
    } else if notice.commits > 0 {
        text.push_str(
            " A change to the group's membership or keys was among them, and MLS cannot skip \
             one: this device can no longer read this conversation. Ask a member to remove \
             this device from it and start a new conversation with you (adding this device \
             back to this one does not work yet).",
        );
    }
    if notice.welcomes > 0 {
        text.push_str(
            " This device was added to a conversation, but the invitation was lost too: ask \
             whoever added it to remove this device and add it again.",
        );
    }
    tracing::warn!(
        messages = notice.messages,
        commits = notice.commits,
        welcomes = notice.welcomes,
        "messages were lost because this device's mailbox was full"
    );
    warn(profile, conversation.as_ref(), message_id, &text)
}

/// Processes one incoming MLS message, then every held message that a
/// commit it merged makes processable (in order).
///
/// `Err` only for what must be tried again, unacknowledged: local
/// storage failures, and network failures while looking up a new
/// member's account, below [`MAX_DELIVERY_ATTEMPTS`]. Everything else is
/// recorded and then acknowledged, so it can never block the mailbox:
/// refusals that protect the user (a member not in the key log, a commit
/// that breaks the group policy) stop the conversation with a warning;
/// poison (malformed, undecryptable, a lookup the server refused) leaves
/// a warning line; a message from a later epoch is held.
///
/// `frank` is the server's frank of this delivery, if it carried one. Held
/// messages, processed later, come without theirs (the held table keeps
/// only the payload): they cannot be reported.
async fn receive(
    s: &mut Session<'_>,
    message_id: &[u8],
    payload: &[u8],
    frank: Option<Frank>,
    out: &mut Vec<HistoryEntry>,
) -> Result<(), ClientError> {
    let queue = VecDeque::from([(message_id.to_vec(), payload.to_vec())]);
    receive_queue(s, queue, frank, out).await
}

/// [`receive`] of every message in `queue`, in order; `frank` goes with
/// the first.
async fn receive_queue(
    s: &mut Session<'_>,
    mut queue: Queue,
    frank: Option<Frank>,
    out: &mut Vec<HistoryEntry>,
) -> Result<(), ClientError> {
    let mut frank = frank;
    while let Some((id, payload)) = queue.pop_front() {
        let franked = Franked {
            frank: frank.take(),
            franking_key: s.connection.franking_key,
        };
        let Some(group_id) = receive_one(s, &id, &payload, &franked, out).await? else {
            continue;
        };
        queue = held_after(s, &group_id, queue)?;
    }
    Ok(())
}

/// Messages waiting to be processed: (message id, payload).
type Queue = VecDeque<(Vec<u8>, Vec<u8>)>;

/// A commit of `group_id` was merged: held messages up to the new epoch
/// can be processed now, queued after `queue`.
fn held_after(s: &Session<'_>, group_id: &[u8], mut queue: Queue) -> Result<Queue, ClientError> {
    let epoch = group::load(&s.profile.provider(), group_id).map(|g| g.epoch().as_u64());
    if let Ok(epoch) = epoch {
        for held in store::held_up_to(&s.profile.db, group_id, epoch)? {
            if !queue.iter().any(|(q, _)| *q == held.0) {
                queue.push_back(held);
            }
        }
    }
    Ok(queue)
}

/// One message of [`receive`]; `Some(group id)` if it merged a
/// commit.
async fn receive_one(
    s: &mut Session<'_>,
    message_id: &[u8],
    payload: &[u8],
    franked: &Franked,
    out: &mut Vec<HistoryEntry>,
) -> Result<Option<Vec<u8>>, ClientError> {
    s.key_log.start_round();
    let mut result = apply_delivery(s.profile, s.key_log, message_id, payload, franked);
    if let Err(ClientError::Group(GroupError::Unverified(users))) = &result {
        for user in users.clone() {
            if let Err(e) = look_up_with_backoff(s, &user).await {
                if !e.is_transient() {
                    tracing::warn!("looking up {user} failed: {e}");
                } else if !give_up_after_attempts(s.profile, message_id)? {
                    // Could not look it up now: leave the delivery
                    // unacknowledged, so it comes again, rather than
                    // judge the member a ghost.
                    return Err(e);
                } else {
                    result = Err(ClientError::KeyLog(format!(
                        "gave up looking up {user} after {MAX_DELIVERY_ATTEMPTS} attempts ({e})"
                    )));
                    break;
                }
            }
            s.key_log.mark_fresh(user);
        }
        if !matches!(result, Err(ClientError::KeyLog(_))) {
            result = apply_delivery(s.profile, s.key_log, message_id, payload, franked);
        }
    }
    match result {
        Ok(applied) => settle_applied(s, message_id, applied, out).await,
        Err(ClientError::Group(GroupError::FromLaterEpoch {
            own_epoch,
            message_epoch,
        })) => {
            out.extend(hold(
                s.profile,
                message_id,
                payload,
                own_epoch,
                message_epoch,
            )?);
            Ok(None)
        }
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            s.profile.in_transaction(|_, tx| {
                store::mark_processed(tx, message_id)?;
                store::remove_held(tx, message_id)?;
                Ok(store::forget_attempts(tx, message_id)?)
            })?;
            out.extend(refuse(s.profile, message_id, payload, &e)?);
            Ok(None)
        }
    }
}

/// What follows an applied delivery once committed: its lines, the check
/// of the log head it carried, a handed-over key. `Some(group id)` if it
/// merged a commit.
async fn settle_applied(
    s: &mut Session<'_>,
    message_id: &[u8],
    applied: Applied,
    out: &mut Vec<HistoryEntry>,
) -> Result<Option<Vec<u8>>, ClientError> {
    out.extend(applied.entries);
    if let Some(peer) = applied.peer_head
        && let Err(e) = s
            .key_log
            .check_head(s.profile, &mut s.anonymous, &peer.head, HeadSource::Peer)
            .await
    {
        let text = format!(
            "WARNING: the key log {} sees disagrees with yours. The server may be showing you different keys. ({e})",
            peer.sender
        );
        out.extend(warn(
            s.profile,
            Some(&peer.conversation),
            message_id,
            &text,
        )?);
    }
    if let Some(handover) = &applied.handover {
        out.extend(settle_handover(s, message_id, handover).await?);
    }
    Ok(applied.merged_commit)
}

/// Reads this account's key log after another of its devices handed over
/// an identity key (kept as a spare by `inbound`): reading it adopts the
/// spare if the log names it (`keys::own_identity_moved`). A key the log
/// does not name is forgotten: one the account rotated away from since is
/// merely late; any other is a warning. When the log cannot be read now,
/// the spare waits for the next read.
async fn settle_handover(
    s: &mut Session<'_>,
    message_id: &[u8],
    handover: &Handover,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let own = s.profile.account.username.clone();
    let state = match s
        .key_log
        .verify_account(s.profile, &mut s.anonymous, s.connection, &own)
        .await
    {
        Ok(state) => state,
        Err(e) => {
            tracing::info!("a handed-over identity key waits for the key log to be read ({e})");
            return Ok(Vec::new());
        }
    };
    if s.profile.account.identity_public() == handover.public_key {
        store::forget_spare_identity(&s.profile.db, &handover.public_key)?;
        tracing::info!(
            "holds the account's identity key, from device {}",
            handover.sender.device_id
        );
        return Ok(Vec::new());
    }
    store::forget_spare_identity(&s.profile.db, &handover.public_key)?;
    if state.rotated_from(&handover.public_key) {
        tracing::info!("ignored a handed-over identity key the account has rotated away from");
        return Ok(Vec::new());
    }
    let text = format!(
        "WARNING: your device {} sent this device the identity key {}, which your account's key \
         log does not name. It was not adopted. If you did not just remove a device, someone \
         may hold that device's keys: check `sotto device list`.",
        handover.sender.device_id,
        hex::encode(handover.public_key)
    );
    warn(s.profile, None, message_id, &text)
}

/// Looks an account up, trying again with backoff when the network (or
/// a busy server) fails.
async fn look_up_with_backoff(s: &mut Session<'_>, user: &Username) -> Result<(), ClientError> {
    let mut wait = LOOKUP_BACKOFF;
    loop {
        match s
            .key_log
            .verify_account(s.profile, &mut s.anonymous, s.connection, user)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && wait <= LOOKUP_BACKOFF * 4 => {
                tracing::debug!("looking up {user} failed, retrying: {e}");
                crate::clock::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Counts a transient failure of a delivery; `true` once it has failed
/// [`MAX_DELIVERY_ATTEMPTS`] times, when it is skipped as poison.
fn give_up_after_attempts(profile: &Profile, message_id: &[u8]) -> Result<bool, ClientError> {
    Ok(store::count_attempt(&profile.db, message_id)? >= MAX_DELIVERY_ATTEMPTS)
}

/// Holds a message framed for a later epoch than this device's group.
/// Its epoch is not authenticated, so nothing else changes: it waits
/// (bounded) for the commits that lead there, and the user is told now,
/// in a line that is not stored.
fn hold(
    profile: &Profile,
    message_id: &[u8],
    payload: &[u8],
    own_epoch: u64,
    message_epoch: u64,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let Some(group_id) = group::group_id_of(payload) else {
        return Ok(Vec::new());
    };
    let row = store::group(&profile.db, &group_id)?;
    let Some(row) = row.filter(|r| r.state == GroupState::Active) else {
        // Not a conversation this device is in any more: nothing to wait for.
        store::mark_processed(&profile.db, message_id)?;
        return Ok(Vec::new());
    };
    store::hold(
        &profile.db,
        message_id,
        &group_id,
        message_epoch,
        payload,
        now_ms(),
    )?;
    let conversation = conversation_of(&profile.db, &row)?;
    let text = format!(
        "WARNING: a message from epoch {message_epoch} arrived while this device is at epoch {own_epoch}. \
         It is held until the change to the conversation that leads there arrives; \
         if it never does, that change (perhaps a new member) is being withheld from this device."
    );
    Ok(vec![notice(&conversation, message_id, &text)])
}

/// Records why a message was dropped. Refusals that protect the user (a
/// member not in the key log, a commit that breaks the group policy, a
/// direct conversation with a third account) stop the conversation and
/// warn loudly; other failures (poison) leave a warning line in the
/// conversation, or in the device log when it belongs to none.
fn refuse(
    profile: &Profile,
    message_id: &[u8],
    payload: &[u8],
    error: &ClientError,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let group_row = group::group_id_of(payload)
        .map(|id| store::group(&profile.db, &id))
        .transpose()?
        .flatten();
    let conversation = group_row
        .as_ref()
        .and_then(|row| row.conversation_id)
        .map(|id| store::conversation_by_id(&profile.db, id))
        .transpose()?
        .flatten();
    let protective = matches!(
        error,
        ClientError::Group(GroupError::Ghost(_) | GroupError::PolicyViolation { .. })
            | ClientError::KeyLog(_)
            | ClientError::IdentityChanged(_)
            | ClientError::Roster(_)
    );
    if !protective {
        // Messages for groups this device is not in (any more) are
        // expected after leaving or removal: not worth a warning.
        let expected = matches!(error, ClientError::Group(GroupError::UnknownGroup(_)))
            || group_row
                .as_ref()
                .is_some_and(|row| row.state != GroupState::Active);
        tracing::warn!(message_id = %hex::encode(message_id), "dropped a message that could not be processed: {error}");
        if expected {
            return Ok(Vec::new());
        }
        let error = error.to_string();
        let error = error.strip_prefix("WARNING: ").unwrap_or(&error);
        let text = format!("WARNING: a message could not be processed and was skipped: {error}");
        return warn(profile, conversation.as_ref(), message_id, &text);
    }
    if group_row
        .as_ref()
        .is_some_and(|row| row.state == GroupState::Refused)
    {
        // Already stopped and warned about.
        return Ok(Vec::new());
    }
    if let Some(row) = &group_row {
        store::set_group_state(&profile.db, &row.group_id, GroupState::Refused)?;
    }
    let error = error.to_string();
    let error = error.strip_prefix("WARNING: ").unwrap_or(&error);
    let text = format!(
        "WARNING: {error}. This conversation is no longer used: nothing more is sent to it."
    );
    warn(profile, conversation.as_ref(), message_id, &text)
}

/// A warning line: stored in the conversation's history when there is
/// one (in the device log otherwise), always returned so the user sees
/// it now.
fn warn(
    profile: &Profile,
    conversation: Option<&Conversation>,
    message_id: &[u8],
    text: &str,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let now = now_ms();
    let id = [message_id, b"warning"].concat();
    if conversation.is_none() {
        store::log_device_warning(&profile.db, text, now)?;
    }
    Ok(match conversation {
        Some(conversation) => {
            let message = store::NewMessage {
                id: &id,
                sender: "system",
                kind: EntryKind::System,
                text,
                sent_at_ms: now,
            };
            store::insert_message(&profile.db, conversation, &message, now)?
                .into_iter()
                .collect()
        }
        None => vec![HistoryEntry {
            id: hex::encode(&id),
            conversation: String::new(),
            conversation_kind: ConversationKind::Direct,
            sender: "system".into(),
            kind: EntryKind::System,
            text: text.to_owned(),
            sent_at: now,
            chat: Default::default(),
        }],
    })
}
