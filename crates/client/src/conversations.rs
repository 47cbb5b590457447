//! Sending: texts to a person or a group, starting the direct conversation
//! when there is none, and the content messages that tell new members what
//! a conversation is. Each message is encrypted, recorded and queued in the
//! outbox in one transaction, then submitted.

use crate::ClientError;
use crate::keys::pinned_head;
use crate::membership::{commit_pending_proposals, start_conversation};
use crate::outbox::Outgoing;
use crate::profile::{Profile, now_ms, random_id};
use crate::provider::MlsProvider;
use crate::receive::drain;
use crate::session::Session;
use crate::store::{self, ConversationKind, EntryKind, HistoryEntry};
use rusqlite::Connection;
use sotto_core::content::{self, AppContent, Body, ConversationInfo, Text};
use sotto_core::group;
use sotto_core::identity::Username;
use sotto_proto::v1;

/// Sends a text to `peer`, starting a direct conversation if needed.
pub(crate) async fn send_direct(
    s: &mut Session<'_>,
    peer: &Username,
    text: &str,
) -> Result<HistoryEntry, ClientError> {
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
            )
            .await?
            .1
        }
    };
    send_text(s, &group_id, text).await
}

/// Sends a text to the group `name`.
pub(crate) async fn send_group(
    s: &mut Session<'_>,
    name: &str,
    text: &str,
) -> Result<HistoryEntry, ClientError> {
    drain(s).await?;
    commit_pending_proposals(s).await?;
    let group_id = s.profile.active_group_named(name)?;
    send_text(s, &group_id, text).await
}

async fn send_text(
    s: &mut Session<'_>,
    group_id: &[u8],
    text: &str,
) -> Result<HistoryEntry, ClientError> {
    send_content(
        s,
        group_id,
        Body::Text(Text {
            text: text.to_owned(),
        }),
    )
    .await?
    .ok_or_else(|| ClientError::Usage("message was not recorded".into()))
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
        let recipients = group::recipients(&g);
        let history = match (
            &body,
            store::group(tx, group_id)?.and_then(|r| r.conversation_id),
        ) {
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
        let plaintext = content::encode(&AppContent {
            id: message_id.clone(),
            sent_at_ms,
            body: Some(body),
            log_head: pinned_head(&profile.db)?,
            padding: Vec::new(),
        });
        let token = group::send_token(provider, &g)?;
        let ciphertext = group::encrypt(provider, &mut g, &profile.account.device, &plaintext)?;
        // Alone in the group (the only recipient is this device): nothing to send.
        let alone = recipients.iter().all(|d| *d == profile.account.device_id);
        let outgoing = (!alone)
            .then(|| Outgoing::message(message_id, group_id, &recipients, ciphertext, token));
        if let Some(outgoing) = &outgoing {
            outgoing.queue(tx)?;
        }
        Ok((outgoing, history))
    })
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
