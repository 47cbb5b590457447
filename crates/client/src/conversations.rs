//! Sending: texts (and replies) to a person or a group, starting the direct
//! conversation when there is none; reactions, edits and deletes of a
//! message by its id; and the content messages that tell new members what
//! a conversation is. Chat messages are MIMI content (`crate::chat`). Each
//! message is encrypted, recorded and queued in the outbox in one
//! transaction, then submitted.

use crate::ClientError;
use crate::chat;
use crate::keys::pinned_head;
use crate::membership::{commit_pending_proposals, start_conversation};
use crate::outbox::Outgoing;
use crate::profile::{Profile, now_ms, random_id};
use crate::provider::MlsProvider;
use crate::receive::drain;
use crate::session::Session;
use crate::store::{self, ConversationKind, EntryKind, HistoryEntry};
use rusqlite::Connection;
use sotto_core::content::{self, AppContent, Body, ContentError, ConversationInfo};
use sotto_core::disappearing;
use sotto_core::franking;
use sotto_core::group;
use sotto_core::identity::Username;
use sotto_core::mimi::{self, ChatAction, Expiration, MessageId, SottoUris};
use sotto_proto::v1;

/// Sends a text to `peer`, starting a direct conversation if needed.
pub(crate) async fn send_direct(
    s: &mut Session<'_>,
    peer: &Username,
    text: &str,
    reply_to: Option<MessageId>,
) -> Result<HistoryEntry, ClientError> {
    let group_id = direct_group(s, peer).await?;
    send_text(s, &group_id, text, reply_to).await
}

/// The group of the direct conversation with `peer`, started if there is
/// none, after processing what is queued.
async fn direct_group(s: &mut Session<'_>, peer: &Username) -> Result<Vec<u8>, ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let existing = store::conversation(&s.profile.db, ConversationKind::Direct, peer.as_str())?;
    let group_id = match existing
        .map(|conv| s.profile.conversation_group(&conv))
        .transpose()?
        .flatten()
    {
        Some(group_id) => group_id,
        None => {
            start_conversation(
                s,
                ConversationKind::Direct,
                peer.as_str(),
                std::slice::from_ref(peer),
                None,
            )
            .await?
            .1
        }
    };
    Ok(group_id)
}

/// The group of `target`'s conversation after processing what is
/// queued: the direct one (started if there is none) or the named group.
pub(crate) async fn target_group(
    s: &mut Session<'_>,
    target: &Target,
) -> Result<Vec<u8>, ClientError> {
    match target {
        Target::Direct(peer) => direct_group(s, peer).await,
        Target::Group(name) => {
            drain(s).await?;
            commit_pending_proposals(s).await?;
            s.profile.active_group_named(name)
        }
    }
}

/// Whose conversation a command names.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Direct(Username),
    Group(String),
}

/// Sets the disappearing-messages timer of a conversation (0: off): every
/// member's later messages disappear `secs` after they are sent. Any
/// member may change it; everyone sees a system line. Returns that line.
pub(crate) async fn set_timer(
    s: &mut Session<'_>,
    target: &Target,
    secs: u64,
) -> Result<HistoryEntry, ClientError> {
    if secs > disappearing::MAX_TIMER_SECS {
        return Err(ClientError::Usage(format!(
            "the longest timer is {}",
            disappearing::format_timer(disappearing::MAX_TIMER_SECS)
        )));
    }
    let group_id = match target {
        Target::Direct(peer) => direct_group(s, peer).await?,
        Target::Group(name) => {
            drain(s).await?;
            commit_pending_proposals(s).await?;
            s.profile.active_group_named(name)?
        }
    };
    let body = Body::Timer(content::DisappearingTimer { seconds: secs });
    send_content(s, &group_id, body)
        .await?
        .ok_or_else(|| ClientError::Internal("the timer change was not recorded".into()))
}

/// Sends a text to the group `name`.
pub(crate) async fn send_group(
    s: &mut Session<'_>,
    name: &str,
    text: &str,
    reply_to: Option<MessageId>,
) -> Result<HistoryEntry, ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    send_text(s, &group_id, text, reply_to).await
}

async fn send_text(
    s: &mut Session<'_>,
    group_id: &[u8],
    text: &str,
    reply_to: Option<MessageId>,
) -> Result<HistoryEntry, ClientError> {
    if let Some(reply_to) = reply_to {
        target_in(s.profile, group_id, &reply_to)?;
    }
    let action = ChatAction::Text {
        text: text.to_owned(),
        reply_to,
    };
    send_chat(s, group_id, action)
        .await?
        .ok_or_else(|| ClientError::Usage("message was not recorded".into()))
}

/// What the user asks of a message they name by id.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// React with this emoji; the same one again takes it back.
    React(String),
    Edit(String),
    Delete,
}

/// Reacts to, edits or deletes the message `target`, in its conversation.
/// Returns the message as it is now.
pub(crate) async fn change_message(
    s: &mut Session<'_>,
    target: MessageId,
    change: Change,
) -> Result<HistoryEntry, ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let own = s.profile.account.username.as_str().to_owned();
    let message = store::chat_message(&s.profile.db, target.as_bytes())?.ok_or_else(|| {
        ClientError::Usage(format!(
            "no message {target} in your history (ids are in `sotto history --json`)"
        ))
    })?;
    if message.deleted {
        return Err(ClientError::Usage("that message was deleted".into()));
    }
    let conversation = store::conversation_by_id(&s.profile.db, message.conversation_id)?
        .ok_or_else(|| ClientError::Internal("a message of no conversation".into()))?;
    let group_id = s
        .profile
        .conversation_group(&conversation)?
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "you can no longer send to the conversation of message {target}"
            ))
        })?;
    if !matches!(change, Change::React(_)) && message.sender != own {
        let admin = s.profile.in_transaction(|provider, _| {
            Ok(group::admin_policy(&group::load(provider, &group_id)?)?
                .is_some_and(|p| p.is_admin(&s.profile.account.username)))
        })?;
        if !(admin && matches!(change, Change::Delete)) {
            return Err(ClientError::Usage(format!(
                "only {} can edit or delete that message (an admin of a group with admins can delete it)",
                message.sender
            )));
        }
    }
    let action = match change {
        Change::React(emoji) => {
            if emoji.is_empty() || emoji.len() > mimi::MAX_REACTION_BYTES {
                return Err(ClientError::Usage(format!(
                    "a reaction is 1 to {} bytes (an emoji or two)",
                    mimi::MAX_REACTION_BYTES
                )));
            }
            let previous = store::reaction_of(&s.profile.db, target.as_bytes(), &own)?;
            let previous_id = previous
                .as_ref()
                .and_then(|r| MessageId::from_slice(&r.reaction_id));
            match (previous, previous_id) {
                (Some(p), Some(previous_id)) if p.emoji == emoji => ChatAction::Retract {
                    target: previous_id,
                },
                (_, replaces) => ChatAction::React {
                    target,
                    emoji,
                    replaces,
                },
            }
        }
        Change::Edit(text) => {
            check_text(&text)?;
            ChatAction::Edit { target, text }
        }
        Change::Delete => ChatAction::Retract { target },
    };
    send_chat(s, &group_id, action).await?;
    store::entry(&s.profile.db, &conversation, target.as_bytes())?
        .ok_or_else(|| ClientError::Internal("the message vanished".into()))
}

/// Refuses a reply to a message that is not in `group_id`'s conversation.
fn target_in(profile: &Profile, group_id: &[u8], target: &MessageId) -> Result<(), ClientError> {
    let conversation_id = store::group(&profile.db, group_id)?.and_then(|r| r.conversation_id);
    match store::chat_message(&profile.db, target.as_bytes())? {
        Some(m) if Some(m.conversation_id) == conversation_id => Ok(()),
        Some(_) => Err(ClientError::Usage(format!(
            "message {target} is in another conversation"
        ))),
        None => Err(ClientError::Usage(format!(
            "no message {target} in your history (ids are in `sotto history --json`)"
        ))),
    }
}

/// Encrypts a chat message for the group, applies it to this device's
/// history and sends it; see [`stage_chat`].
pub(crate) async fn send_chat(
    s: &mut Session<'_>,
    group_id: &[u8],
    action: ChatAction,
) -> Result<Option<HistoryEntry>, ClientError> {
    let (outgoing, history) = stage_chat(s.profile, group_id, action)?;
    if let Some(outgoing) = outgoing {
        s.outbox
            .submit(s.profile, &mut s.anonymous, &outgoing)
            .await?;
    }
    Ok(history)
}

/// Encodes a chat message as MIMI content, applies it to this device's
/// history as a receiver would, and encrypts and queues it, in one
/// transaction. The frame's id is the second half of the MIMI id.
pub(crate) fn stage_chat(
    profile: &Profile,
    group_id: &[u8],
    action: ChatAction,
) -> Result<(Option<Outgoing>, Option<HistoryEntry>), ClientError> {
    let sent_at_ms = now_ms();
    let salt = rand::random::<[u8; mimi::SALT_LEN]>();
    profile.in_transaction(|provider, tx| {
        let mut g = group::load(provider, group_id)?;
        check_before_send(profile, provider, tx, &g)?;
        let own = profile.account.username.as_str();
        let policy = group::admin_policy(&g)?;
        let own_is_admin = policy
            .as_ref()
            .is_some_and(|p| p.is_admin(&profile.account.username));
        if policy.as_ref().is_some_and(|p| p.read_only) && !own_is_admin {
            return Err(ClientError::Usage(
                "this group is read-only: only its admins can post".into(),
            ));
        }
        let uris = SottoUris::new(&chat::authority(tx)?, own, group_id);
        let conversation = store::group(tx, group_id)?
            .and_then(|r| r.conversation_id)
            .map(|id| store::conversation_by_id(tx, id))
            .transpose()?
            .flatten()
            .ok_or_else(|| ClientError::Usage("conversation vanished".into()))?;
        // Under a timer every chat message disappears (reactions and edits
        // too: they would otherwise outlive what they change).
        let timer = store::conversation_timer(tx, conversation.id)?;
        let expires_at = (timer > 0).then(|| disappearing::expires_at(sent_at_ms, timer));
        let mut mimi_content = action.to_content(&uris, salt);
        mimi_content.expires = expires_at.map(|at| Expiration {
            relative: false,
            time: u32::try_from(at).unwrap_or(u32::MAX),
        });
        let bytes = mimi::encode(&mimi_content).map_err(ContentError::from)?;
        let id = MessageId::derive(&uris.sender, &uris.room, &bytes, &salt);
        let history = chat::apply(
            tx,
            &conversation,
            own,
            own_is_admin,
            id,
            Some(action),
            sent_at_ms,
            sent_at_ms,
            expires_at.map(|at| at.saturating_mul(1000)),
        )?;
        let message_id = id.as_bytes().get(16..).unwrap_or_default().to_vec();
        let outgoing = seal(
            profile,
            provider,
            tx,
            &mut g,
            message_id,
            sent_at_ms,
            Body::Mimi(bytes),
            SendOptions {
                expires_at: expires_at.map_or(0, |at| disappearing::server_bucket(at, timer)),
                ephemeral: false,
            },
        )?;
        Ok((outgoing, history))
    })
}

/// Encrypts `body` for the group and sends it; see [`stage_content`].
pub(crate) async fn send_content(
    s: &mut Session<'_>,
    group_id: &[u8],
    body: Body,
) -> Result<Option<HistoryEntry>, ClientError> {
    let (outgoing, history) = stage_content(s.profile, group_id, body)?;
    if let Some(outgoing) = outgoing {
        s.outbox
            .submit(s.profile, &mut s.anonymous, &outgoing)
            .await?;
    }
    Ok(history)
}

/// Encrypts `body` for the group and records it in history (for texts)
/// and in the outbox, in one transaction. Nothing is queued when this
/// device is alone in the group.
pub(crate) fn stage_content(
    profile: &Profile,
    group_id: &[u8],
    body: Body,
) -> Result<(Option<Outgoing>, Option<HistoryEntry>), ClientError> {
    let message_id = random_id();
    let sent_at_ms = now_ms();
    profile.in_transaction(|provider, tx| {
        let mut g = group::load(provider, group_id)?;
        check_before_send(profile, provider, tx, &g)?;
        let history = match (
            &body,
            store::group(tx, group_id)?.and_then(|r| r.conversation_id),
        ) {
            (Body::Timer(timer), Some(conversation_id)) => {
                let conversation = store::conversation_by_id(tx, conversation_id)?
                    .ok_or_else(|| ClientError::Usage("conversation vanished".into()))?;
                crate::inbound::record_timer(
                    tx,
                    &conversation,
                    &message_id,
                    profile.account.username.as_str(),
                    timer.seconds,
                    sent_at_ms,
                )?
            }
            (Body::Text(text), Some(conversation_id)) => {
                let conversation = store::conversation_by_id(tx, conversation_id)?
                    .ok_or_else(|| ClientError::Usage("conversation vanished".into()))?;
                let message = store::NewMessage {
                    id: &message_id,
                    sender: profile.account.username.as_str(),
                    kind: EntryKind::Text,
                    text: &text.text,
                    sent_at_ms,
                };
                store::insert_message(tx, &conversation, &message, sent_at_ms)?
            }
            _ => None,
        };
        let outgoing = seal(
            profile,
            provider,
            tx,
            &mut g,
            message_id,
            sent_at_ms,
            body,
            SendOptions::default(),
        )?;
        Ok((outgoing, history))
    })
}

/// What the server is told about a message besides its recipients.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SendOptions {
    /// The server's bucket of a disappearing message's expiry (0: none).
    pub expires_at: u64,
    /// Only for connections open now, stored nowhere (typing).
    pub ephemeral: bool,
}

/// Encrypts control content (receipts, typing) for the group `group_id`
/// and queues it, inside the caller's transaction; see [`seal`].
pub(crate) fn seal_content(
    profile: &Profile,
    provider: &MlsProvider<'_>,
    tx: &Connection,
    group_id: &[u8],
    message_id: Vec<u8>,
    body: Body,
    options: SendOptions,
) -> Result<Option<Outgoing>, ClientError> {
    let mut g = group::load(provider, group_id)?;
    check_before_send(profile, provider, tx, &g)?;
    seal(
        profile,
        provider,
        tx,
        &mut g,
        message_id,
        now_ms(),
        body,
        options,
    )
}

/// Encrypts `body` for the group and queues it in the outbox; `None` when
/// this device is alone in the group (nothing to send).
#[allow(clippy::too_many_arguments)]
fn seal(
    profile: &Profile,
    provider: &MlsProvider<'_>,
    tx: &Connection,
    g: &mut openmls::group::MlsGroup,
    message_id: Vec<u8>,
    sent_at_ms: u64,
    body: Body,
    options: SendOptions,
) -> Result<Option<Outgoing>, ClientError> {
    let group_id = g.group_id().as_slice().to_vec();
    let recipients = group::recipients(g);
    let mut app = AppContent {
        id: message_id.clone(),
        sent_at_ms,
        body: Some(body),
        log_head: pinned_head(&profile.db)?,
        padding: Vec::new(),
        franking: None,
    };
    // Every application message is franked, whatever it carries, so the
    // server cannot tell chat messages from receipts by the tag: a fresh
    // salt, the tag in the clear AAD, salt and signature inside.
    let sealed = franking::seal(&profile.account.device, &group_id, &app, rand::random());
    app.franking = Some(sealed.franking);
    // Zeroized once encrypted: it may hold an identity secret.
    let plaintext = zeroize::Zeroizing::new(content::encode(&app));
    drop(app);
    let token = group::send_token(provider, g)?;
    let ciphertext =
        group::encrypt_with_aad(provider, g, &profile.account.device, &plaintext, sealed.aad)?;
    let alone = recipients.iter().all(|d| *d == profile.account.device_id);
    let outgoing = (!alone).then(|| {
        let outgoing = Outgoing::message(message_id, &group_id, &recipients, ciphertext, token)
            .expiring(options.expires_at);
        if options.ephemeral {
            outgoing.ephemeral()
        } else {
            outgoing
        }
    });
    if let Some(outgoing) = &outgoing {
        outgoing.queue(tx)?;
    }
    Ok(outgoing)
}

/// What every send checks first: a direct conversation still holds
/// exactly its two accounts. (Messages held from a later epoch do not
/// stop a send: they prove nothing, and what this device sends in its
/// epoch is readable only by the members it knows.)
fn check_before_send(
    profile: &Profile,
    provider: &MlsProvider<'_>,
    tx: &Connection,
    g: &openmls::group::MlsGroup,
) -> Result<(), ClientError> {
    let group_id = g.group_id().as_slice();
    if let Some(conversation) = store::group(tx, group_id)?
        .and_then(|row| row.conversation_id)
        .map(|id| store::conversation_by_id(tx, id))
        .transpose()?
        .flatten()
        && conversation.kind == ConversationKind::Direct
    {
        profile.check_direct_roster(provider, group_id, &conversation.name)?;
    }
    Ok(())
}

pub(crate) fn check_text(text: &str) -> Result<(), ClientError> {
    if text.is_empty() {
        return Err(ClientError::Usage("the message is empty".into()));
    }
    if text.len() > content::MAX_TEXT_BYTES {
        return Err(ClientError::Usage(format!(
            "the message is {} bytes; the limit is {} bytes",
            text.len(),
            content::MAX_TEXT_BYTES
        )));
    }
    Ok(())
}

/// What a conversation is, told to every member it adds: a direct one
/// (its name is the peer, different on each side) or a named group.
pub(crate) fn conversation_info(kind: ConversationKind, name: &str) -> Body {
    Body::Info(match kind {
        ConversationKind::Direct => ConversationInfo {
            kind: v1::ConversationKind::Direct as i32,
            name: String::new(),
        },
        ConversationKind::Group => ConversationInfo {
            kind: v1::ConversationKind::Group as i32,
            name: name.to_owned(),
        },
    })
}
