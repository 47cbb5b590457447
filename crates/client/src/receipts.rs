//! Delivery and read receipts, and typing indicators: ordinary MLS
//! application messages on the anonymous connection, padded like texts.
//!
//! Against "silent ping" receipt timing (a stranger pings a device and
//! watches when its receipts come back, so learns when it is online):
//! - receipts go only to members of a conversation this account has
//!   written in: a stranger who starts a conversation gets none until the
//!   user replies;
//! - they wait a random 2–10 s, are batched per group (everything queued
//!   for a group goes with the first one due), and a group gets at most one
//!   batch every [`MIN_INTERVAL_MS`]; so a burst of pings yields one late
//!   receipt whose timing says little;
//! - read receipts can be turned off per profile (`sotto config
//!   read-receipts off`); delivered ones are always sent (to conversations
//!   the user wrote in).
//!
//! Typing indicators are ephemeral sends (`SendMessage.ephemeral`): the
//! server checks the capability, hands them to the recipients' connections
//! open at that moment and stores them nowhere, answering the same whoever
//! was online; a reader ignores one older than [`TYPING_FRESH_MS`].

use crate::ClientError;
use crate::conversations::{SendOptions, Target, seal_content};
use crate::profile::{Profile, now_ms, random_id};
use crate::receive::drain;
use crate::session::Session;
use crate::store::{self, Conversation, ConversationKind, EntryKind, HistoryEntry, ReceiptState};
use rusqlite::Connection;
use sotto_core::content::{Body, Receipts, Typing};
use sotto_core::disappearing;

/// At most one batch of receipts per group this often.
pub(crate) const MIN_INTERVAL_MS: u64 = 10_000;
/// Receipts wait this long at least, and at most [`MAX_DELAY_MS`].
const MIN_DELAY_MS: u64 = 2_000;
const MAX_DELAY_MS: u64 = 10_000;
/// Message ids per receipt message: keeps it in the smallest size bucket,
/// like a short text.
pub(crate) const MAX_IDS_PER_MESSAGE: usize = 3;
/// A typing indicator older than this is stale and ignored (one resent
/// from the outbox after a crash, say).
pub(crate) const TYPING_FRESH_MS: u64 = 10_000;

/// When a receipt queued now for `group_id` is due: after a random delay,
/// and not before the group's rate limit allows.
fn due_at(conn: &Connection, group_id: &[u8], now: u64) -> Result<u64, ClientError> {
    let delay = MIN_DELAY_MS + rand::random::<u64>() % (MAX_DELAY_MS - MIN_DELAY_MS + 1);
    let earliest = store::last_receipts_sent(conn, group_id)?
        .map_or(0, |last| last.saturating_add(MIN_INTERVAL_MS));
    Ok(now.saturating_add(delay).max(earliest))
}

/// A chat message from `sender` arrived: owe a delivered receipt, if this
/// account wrote in the conversation.
pub(crate) fn delivered(
    profile: &Profile,
    conn: &Connection,
    conversation: &Conversation,
    group_id: &[u8],
    message_id: &[u8],
    now: u64,
) -> Result<(), ClientError> {
    let own = profile.account.username.as_str();
    if !store::has_written(conn, conversation.id, own)? {
        return Ok(());
    }
    let due = due_at(conn, group_id, now)?;
    Ok(store::queue_receipt(
        conn,
        group_id,
        message_id,
        ReceiptState::Delivered,
        due,
    )?)
}

/// The user was shown a conversation: its messages are seen, and read
/// receipts are owed for them (if on, and if this account wrote there).
pub(crate) fn seen(profile: &Profile, conversation: &Conversation) -> Result<(), ClientError> {
    let Some(group_id) = profile.conversation_group(conversation)? else {
        return Ok(());
    };
    let own = profile.account.username.as_str();
    let now = now_ms();
    profile.in_transaction(|_, tx| {
        let ids = store::mark_seen(tx, conversation.id, own)?;
        if ids.is_empty()
            || !store::read_receipts_enabled(tx)?
            || !store::has_written(tx, conversation.id, own)?
        {
            return Ok(());
        }
        let due = due_at(tx, &group_id, now)?;
        for id in ids {
            store::queue_receipt(tx, &group_id, &id, ReceiptState::Read, due)?;
        }
        Ok(())
    })
}

/// Sends every batch of receipts due at `now` (one message per
/// [`MAX_IDS_PER_MESSAGE`] ids, each group's in one go).
pub(crate) async fn send_due(s: &mut Session<'_>, now: u64) -> Result<(), ClientError> {
    for group_id in store::groups_with_due_receipts(&s.profile.db, now)? {
        let active = store::group(&s.profile.db, &group_id)?
            .is_some_and(|g| g.state == store::GroupState::Active);
        loop {
            let staged = s.profile.in_transaction(|provider, tx| {
                let store::ReceiptBatch { delivered, read } =
                    store::take_receipts(tx, &group_id, MAX_IDS_PER_MESSAGE, now)?;
                if delivered.is_empty() && read.is_empty() {
                    return Ok(None);
                }
                if !active {
                    // Nobody left to tell.
                    return Ok(Some(None));
                }
                let body = Body::Receipts(Receipts { delivered, read });
                // Under a timer a receipt carries the same coarse expiry as
                // a text would, so the server cannot tell them apart.
                let timer = match store::group(tx, &group_id)?.and_then(|g| g.conversation_id) {
                    Some(id) => store::conversation_timer(tx, id)?,
                    None => 0,
                };
                let options = SendOptions {
                    expires_at: if timer == 0 {
                        0
                    } else {
                        disappearing::server_bucket(
                            disappearing::expires_at(now_ms(), timer),
                            timer,
                        )
                    },
                    ephemeral: false,
                };
                let outgoing = seal_content(
                    s.profile,
                    provider,
                    tx,
                    &group_id,
                    random_id(),
                    body,
                    options,
                )?;
                Ok(Some(outgoing))
            })?;
            match staged {
                None => break,
                Some(None) => {}
                Some(Some(outgoing)) => {
                    s.outbox
                        .submit(s.profile, &mut s.anonymous, &outgoing)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Receipts `sender` sent: recorded for this account's messages of the
/// conversation; returns those messages as they now are.
pub(crate) fn apply(
    profile: &Profile,
    conn: &Connection,
    conversation: &Conversation,
    sender: &str,
    receipts: &Receipts,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let own = profile.account.username.as_str();
    let mut changed = Vec::new();
    let all = receipts
        .delivered
        .iter()
        .map(|id| (id, ReceiptState::Delivered))
        .chain(receipts.read.iter().map(|id| (id, ReceiptState::Read)));
    for (id, state) in all.take(64) {
        if store::record_receipt(conn, conversation.id, own, id, sender, state)? {
            changed.extend(store::entry(conn, conversation, id)?);
        } else {
            tracing::info!("ignored a receipt from {sender} for a message that is not ours here");
        }
    }
    Ok(changed)
}

/// Sends a typing indicator (`typing`: started or stopped) to a
/// conversation. Nothing is recorded.
pub(crate) async fn send_typing(
    s: &mut Session<'_>,
    target: &Target,
    typing: bool,
) -> Result<(), ClientError> {
    let group_id = match target {
        Target::Direct(peer) => {
            let conversation =
                store::conversation(&s.profile.db, ConversationKind::Direct, peer.as_str())?
                    .ok_or_else(|| ClientError::Usage(format!("no conversation with {peer}")))?;
            s.profile
                .conversation_group(&conversation)?
                .ok_or_else(|| ClientError::Usage(format!("you can no longer write to {peer}")))?
        }
        Target::Group(name) => s.profile.active_group_named(name)?,
    };
    drain(s).await?;
    let outgoing = s.profile.in_transaction(|provider, tx| {
        let body = Body::Typing(Typing { typing });
        let options = SendOptions {
            expires_at: 0,
            ephemeral: true,
        };
        seal_content(
            s.profile,
            provider,
            tx,
            &group_id,
            random_id(),
            body,
            options,
        )
    })?;
    if let Some(outgoing) = outgoing {
        s.outbox
            .submit(s.profile, &mut s.anonymous, &outgoing)
            .await?;
    }
    Ok(())
}

/// A typing indicator `sender` sent at `sent_at_ms`: a line that is shown
/// (by `sync` and `listen`) but never stored; `None` if stale.
pub(crate) fn typing_line(
    conversation: &Conversation,
    sender: &str,
    typing: &Typing,
    sent_at_ms: u64,
    now: u64,
) -> Option<HistoryEntry> {
    if !typing.typing || sent_at_ms.saturating_add(TYPING_FRESH_MS) < now {
        return None;
    }
    Some(HistoryEntry {
        id: String::new(),
        conversation: conversation.name.clone(),
        conversation_kind: conversation.kind,
        sender: "system".into(),
        kind: EntryKind::System,
        text: format!("{sender} is typing…"),
        sent_at: sent_at_ms,
        chat: store::ChatState::default(),
    })
}
