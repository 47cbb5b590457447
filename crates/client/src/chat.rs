//! Chat messages in the MIMI content format (`sotto_core::mimi`): a text,
//! a reply, an edit, a delete, a reaction, applied to history the same way
//! whether this device sent it or received it, inside the transaction that
//! holds the MLS state change.
//!
//! The rules a member cannot get around (DESIGN.md §5):
//! - a message's id is derived from its bytes, the sender and the room;
//!   content whose sender URI is not the account MLS authenticated, or
//!   whose room URI is not the group it came in, is refused (an error: the
//!   delivery is skipped with a warning);
//! - only the account that sent a message may edit it, and only it or an
//!   admin of a group with admins may delete it (for everyone); an edit or
//!   delete must name its first version;
//! - a reaction counts once per account and message (a new one replaces
//!   the old); only its author may take it back;
//! - an edit, delete or reaction naming a message this device does not have
//!   or one of another conversation is ignored, with the reason logged.
//!   It is not held for later: a device's mailbox is ordered, so a target
//!   sent before it arrives before it, and a target sent before this device
//!   joined never arrives.

use crate::ClientError;
use crate::store::{self, Conversation, EntryKind, HistoryEntry};
use rusqlite::Connection;
use sotto_core::content::ContentError;
use sotto_core::identity::Username;
use sotto_core::mimi::{self, ChatAction, MessageId, SottoUris};

/// Received MIMI content, checked.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub id: MessageId,
    /// What it asks for (`None`: content this client cannot show yet).
    pub action: Option<ChatAction>,
    /// When it disappears, if it says.
    pub expires: Option<mimi::Expiration>,
}

/// Received MIMI content, checked: its derived id, what it asks for and
/// when it disappears.
pub(crate) fn parse(
    bytes: &[u8],
    sender: &Username,
    group_id: &[u8],
) -> Result<Parsed, ClientError> {
    let content = mimi::decode(bytes).map_err(ContentError::from)?;
    let uris = SottoUris::check(&content.extensions, sender.as_str(), group_id)
        .map_err(ContentError::from)?;
    let id = MessageId::derive(&uris.sender, &uris.room, bytes, &content.salt);
    let action = ChatAction::of(&content).map_err(ContentError::from)?;
    Ok(Parsed {
        id,
        action,
        expires: content.expires,
    })
}

/// When a message received (or sent) at `now_ms` disappears from this
/// device: at the absolute time it names, or the relative time after now;
/// a message that names none follows the conversation's timer (from an
/// older client in a conversation with one). `None`: never.
pub(crate) fn expiry_ms(
    conn: &Connection,
    conversation: &Conversation,
    expires: Option<mimi::Expiration>,
    now_ms: u64,
) -> Result<Option<u64>, ClientError> {
    Ok(match expires {
        Some(e) if e.relative => Some(now_ms.saturating_add(u64::from(e.time) * 1000)),
        Some(e) => Some(u64::from(e.time) * 1000),
        None => match store::conversation_timer(conn, conversation.id)? {
            0 => None,
            secs => Some(now_ms.saturating_add(secs.saturating_mul(1000))),
        },
    })
}

/// The authority (host and port) this profile's server URL names: what
/// its sender and room URIs start with.
pub(crate) fn authority(conn: &Connection) -> Result<String, ClientError> {
    let row = store::load_profile(conn)?
        .ok_or_else(|| ClientError::Internal("the profile has no account".into()))?;
    Ok(crate::endpoint::ServerUrl::parse(&row.server_url)?
        .authority
        .to_ascii_lowercase())
}

/// Applies a chat message from `sender` (a username) to history; returns
/// the line it added or changed (`None` if it changed nothing). A new
/// text with `expires_at_ms` disappears then (one already past it is not
/// recorded). `sender_is_admin`: the sender is an admin of the group (and
/// so may delete others' messages).
#[allow(clippy::too_many_arguments)] // one call each from sending and receiving
pub(crate) fn apply(
    conn: &Connection,
    conversation: &Conversation,
    sender: &str,
    sender_is_admin: bool,
    id: MessageId,
    action: Option<ChatAction>,
    sent_at_ms: u64,
    now_ms: u64,
    expires_at_ms: Option<u64>,
) -> Result<Option<HistoryEntry>, ClientError> {
    let Some(action) = action else {
        tracing::info!(%id, "skipped chat content of a kind this client cannot show yet");
        return Ok(None);
    };
    let (text, reply_to, file) = match action {
        ChatAction::Text { text, reply_to } => (text, reply_to, None),
        ChatAction::Attachment {
            file,
            text,
            reply_to,
        } => (text.unwrap_or_default(), reply_to, Some(file)),
        other => {
            return apply_change(
                conn,
                conversation,
                sender,
                sender_is_admin,
                id,
                other,
                sent_at_ms,
            );
        }
    };
    let message = store::NewMessage {
        id: id.as_bytes(),
        sender,
        kind: EntryKind::Text,
        text: &text,
        sent_at_ms,
    };
    let reply_to = reply_to.as_ref().map(|r| r.as_bytes().as_slice());
    if expires_at_ms.is_some_and(|at| at <= now_ms) {
        tracing::info!(%id, "dropped a disappearing message that expired before it arrived");
        return Ok(None);
    }
    let inserted = store::insert_chat_message(conn, conversation, &message, reply_to, now_ms)?;
    if inserted.is_none() {
        return Ok(None);
    }
    if let Some(file) = file {
        store::insert_attachment(conn, id.as_bytes(), &file)?;
    }
    if let Some(at) = expires_at_ms {
        store::set_expiry(conn, id.as_bytes(), at)?;
    }
    changed(conn, conversation, &id)
}

/// Applies an edit, a delete or a reaction (see [`apply`]).
fn apply_change(
    conn: &Connection,
    conversation: &Conversation,
    sender: &str,
    sender_is_admin: bool,
    id: MessageId,
    action: ChatAction,
    sent_at_ms: u64,
) -> Result<Option<HistoryEntry>, ClientError> {
    match action {
        ChatAction::Text { .. } | ChatAction::Attachment { .. } => Ok(None),
        ChatAction::Edit { target, text } => {
            if own_target(conn, conversation, sender, false, &target, "edit")?.is_none() {
                return Ok(None);
            }
            if !store::edit_message(conn, target.as_bytes(), id.as_bytes(), &text, sent_at_ms)? {
                return Ok(None);
            }
            changed(conn, conversation, &target)
        }
        ChatAction::Retract { target } => {
            if let Some(reaction) = store::reaction_by_id(conn, target.as_bytes())? {
                let in_conversation = store::chat_message(conn, &reaction.message_id)?
                    .is_some_and(|m| m.conversation_id == conversation.id);
                if reaction.sender != sender || !in_conversation {
                    tracing::warn!(%id, "ignored: {sender} tried to take back a reaction of {}", reaction.sender);
                    return Ok(None);
                }
                store::remove_reaction(conn, target.as_bytes())?;
                return Ok(store::entry(conn, conversation, &reaction.message_id)?);
            }
            if own_target(
                conn,
                conversation,
                sender,
                sender_is_admin,
                &target,
                "delete",
            )?
            .is_none()
            {
                return Ok(None);
            }
            store::delete_chat_message(conn, target.as_bytes())?;
            store::forget_frank(conn, target.as_bytes())?;
            changed(conn, conversation, &target)
        }
        ChatAction::React { target, emoji, .. } => {
            match store::chat_message(conn, target.as_bytes())? {
                Some(m) if m.conversation_id == conversation.id && !m.deleted => {}
                Some(_) => {
                    tracing::info!(%id, "ignored: a reaction to a message of another conversation, or a deleted one");
                    return Ok(None);
                }
                None => {
                    tracing::info!(%id, %target, "ignored: a reaction to a message this device does not have");
                    return Ok(None);
                }
            }
            store::set_reaction(conn, target.as_bytes(), sender, id.as_bytes(), &emoji)?;
            changed(conn, conversation, &target)
        }
    }
}

/// The message `target` if `sender` may edit or delete it: a chat message
/// of this conversation, not deleted, sent by `sender`'s account (or by
/// anyone, when `moderator`: an admin deleting), named by its first
/// version. Otherwise logs why not.
fn own_target(
    conn: &Connection,
    conversation: &Conversation,
    sender: &str,
    moderator: bool,
    target: &MessageId,
    what: &str,
) -> Result<Option<store::ChatMessage>, ClientError> {
    let Some(message) = store::chat_message(conn, target.as_bytes())? else {
        if store::is_later_version(conn, target.as_bytes())? {
            tracing::warn!(%target, "ignored: an {what} by {sender} names a later version, not the first");
        } else {
            tracing::info!(%target, "ignored: an {what} by {sender} of a message this device does not have");
        }
        return Ok(None);
    };
    if message.conversation_id != conversation.id {
        tracing::warn!(%target, "ignored: an {what} by {sender} of a message of another conversation");
        return Ok(None);
    }
    if message.sender != sender && !moderator {
        tracing::warn!(%target, "ignored: {sender} tried to {what} a message by {}", message.sender);
        return Ok(None);
    }
    if message.deleted {
        tracing::info!(%target, "ignored: an {what} of a deleted message");
        return Ok(None);
    }
    Ok(Some(message))
}

fn changed(
    conn: &Connection,
    conversation: &Conversation,
    target: &MessageId,
) -> Result<Option<HistoryEntry>, ClientError> {
    Ok(store::entry(conn, conversation, target.as_bytes())?)
}

/// A message id the user typed (hex, as the CLI shows it).
pub(crate) fn parse_id(text: &str) -> Result<MessageId, ClientError> {
    MessageId::from_hex(text).ok_or_else(|| {
        ClientError::Usage(format!(
            "{text:?} is not a message id: give the 64 hex digits `history --json` shows \
             (messages from before this version have none)"
        ))
    })
}
