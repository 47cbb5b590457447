//! From a processed MLS message to conversations and history lines: the
//! local, synchronous half of receiving, run inside the transaction that
//! holds the MLS state change (see `receive` for the network half).

use crate::ClientError;
use crate::chat;
use crate::keys::KeyLog;
use crate::profile::{Profile, now_ms};
use crate::provider::MlsProvider;
use crate::receipts;
use crate::store::{self, Conversation, ConversationKind, EntryKind, GroupState, HistoryEntry};
use rusqlite::Connection;
use sotto_core::content::{self, Body};
use sotto_core::disappearing;
use sotto_core::franking::{self, Frank};
use sotto_core::group::{self, GroupError, Inbound, RosterChange};
use sotto_core::history;
use sotto_core::identity::{MemberId, Username};
use sotto_core::mimi::ChatAction;
use sotto_proto::v1::{self, SignedTreeHead};
use zeroize::Zeroizing;

/// A log head a peer carried in a message, to compare with ours.
#[derive(Debug)]
pub(crate) struct PeerHead {
    pub conversation: Conversation,
    pub sender: Username,
    pub head: SignedTreeHead,
}

/// What one delivery produced.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub entries: Vec<HistoryEntry>,
    pub peer_head: Option<PeerHead>,
    /// The group whose commit this delivery merged.
    pub merged_commit: Option<Vec<u8>>,
    /// An identity key another device of this account handed over, kept as
    /// a spare: `receive` reads the log and adopts it if the log names it.
    pub handover: Option<Handover>,
}

/// An identity key handed over by another device of this account (the
/// secret itself is only in `spare_identities`).
#[derive(Debug)]
pub(crate) struct Handover {
    pub public_key: [u8; 32],
    pub sender: MemberId,
}

/// What came with a delivery for franking (`sotto_core::franking`): the
/// server's frank, and the franking key its log key vouched for.
#[derive(Debug, Default)]
pub(crate) struct Franked {
    pub frank: Option<Frank>,
    pub franking_key: Option<ed25519_dalek::VerifyingKey>,
}

/// Processes one delivery in one transaction: MLS state, history lines and
/// the de-duplication record commit together. A message already processed
/// changes nothing.
pub(crate) fn apply_delivery(
    profile: &Profile,
    key_log: &KeyLog,
    message_id: &[u8],
    payload: &[u8],
    franked: &Franked,
) -> Result<Applied, ClientError> {
    profile.in_transaction(|provider, tx| {
        if store::is_processed(tx, message_id)? {
            store::remove_held(tx, message_id)?;
            return Ok(Applied::default());
        }
        let inbound = group::process(provider, payload, key_log)?;
        let applied = record_inbound(profile, provider, tx, message_id, inbound, franked)?;
        store::mark_processed(tx, message_id)?;
        store::remove_held(tx, message_id)?;
        store::forget_attempts(tx, message_id)?;
        Ok(applied)
    })
}

/// Turns a processed MLS message into conversations and history lines.
fn record_inbound(
    profile: &Profile,
    provider: &MlsProvider<'_>,
    conn: &Connection,
    message_id: &[u8],
    inbound: Inbound,
    franked: &Franked,
) -> Result<Applied, ClientError> {
    let now = now_ms();
    match inbound {
        Inbound::Joined { group_id, members } => {
            // Listed at once under a placeholder name; the
            // ConversationInfo that follows the Welcome names it (if
            // that is lost, the conversation still shows). A group of this
            // account's devices alone may be an identity handover, which is
            // no conversation: it is listed only once content names it
            // (the ConversationInfo that follows, for a conversation).
            store::insert_group(conn, &group_id, None)?;
            let own_devices_only = members
                .iter()
                .all(|m| m.username == profile.account.username);
            if !own_devices_only {
                let row = store::GroupRow {
                    group_id,
                    conversation_id: None,
                    state: GroupState::Active,
                };
                conversation_of(conn, &row)?;
            }
            Ok(Applied::default())
        }
        Inbound::Application {
            group_id,
            sender,
            plaintext,
            aad,
            sender_key,
            sender_is_admin,
            read_only,
        } => {
            let Some(row) = store::group(conn, &group_id)? else {
                return Ok(Applied::default());
            };
            if row.state != GroupState::Active {
                return Ok(Applied::default());
            }
            // It may hold an identity secret.
            let plaintext = Zeroizing::new(plaintext);
            let app = content::decode(&plaintext)?;
            // An announcement channel: only admins' chat content is shown
            // (receipts, typing and conversation info still flow).
            if read_only
                && !sender_is_admin
                && matches!(
                    app.body,
                    Some(Body::Text(_) | Body::Mimi(_) | Body::Timer(_))
                )
            {
                return Err(GroupError::NotAnAdmin {
                    member: sender,
                    what: "post in it (it is read-only for non-admins)".into(),
                }
                .into());
            }
            let (conversation, entry) = match app.body.clone() {
                Some(Body::IdentityHandover(mut handover)) => {
                    let secret = Zeroizing::new(std::mem::take(&mut handover.identity_secret));
                    return receive_handover(profile, conn, &row, message_id, sender, &secret);
                }
                Some(Body::Info(info)) => {
                    let placeholder = match row.conversation_id {
                        None => None,
                        Some(id) => match store::conversation_by_id(conn, id)? {
                            Some(c) if c.name == placeholder_name(&group_id) => Some(c),
                            // Already named.
                            _ => return Ok(Applied::default()),
                        },
                    };
                    let conversation = if info.kind == v1::ConversationKind::Direct as i32 {
                        // Only a group of exactly two accounts is a direct
                        // conversation, and only one of them says so.
                        let peer = profile.direct_peer_of(provider, &group_id)?;
                        if sender.username != peer && sender.username != profile.account.username {
                            return Err(ClientError::Roster(format!(
                                "{} called a conversation between you and {peer} a direct one, but is not one of you",
                                sender.username
                            )));
                        }
                        store::ensure_conversation(conn, ConversationKind::Direct, peer.as_str())?
                    } else {
                        let name = store::free_group_name(conn, &info.name)?;
                        store::ensure_conversation(conn, ConversationKind::Group, &name)?
                    };
                    store::set_group_conversation(conn, &group_id, conversation.id)?;
                    if let Some(placeholder) = placeholder {
                        store::merge_conversation(conn, placeholder.id, conversation.id)?;
                    }
                    let group_name = (conversation.kind == ConversationKind::Group)
                        .then_some(conversation.name.as_str());
                    let text = history::joined_line(
                        &profile.account.username,
                        &sender.username,
                        group_name,
                    );
                    let id = [message_id, &[0xff, 0]].concat();
                    let message = store::NewMessage {
                        id: &id,
                        sender: "system",
                        kind: EntryKind::System,
                        text: &text,
                        sent_at_ms: app.sent_at_ms,
                    };
                    let entry = store::insert_message(conn, &conversation, &message, now)?;
                    (conversation, entry)
                }
                Some(Body::Text(text)) => {
                    let conversation = conversation_of(conn, &row)?;
                    let message = store::NewMessage {
                        id: message_id,
                        sender: sender.username.as_str(),
                        kind: EntryKind::Text,
                        text: &text.text,
                        sent_at_ms: app.sent_at_ms,
                    };
                    let entry = store::insert_message(conn, &conversation, &message, now)?;
                    (conversation, entry)
                }
                Some(Body::Mimi(bytes)) => {
                    let conversation = conversation_of(conn, &row)?;
                    let parsed = chat::parse(&bytes, &sender.username, &group_id)?;
                    let expires = chat::expiry_ms(conn, &conversation, parsed.expires, now)?;
                    let is_text = matches!(parsed.action, Some(ChatAction::Text { .. }));
                    let is_new = matches!(
                        parsed.action,
                        Some(ChatAction::Text { .. } | ChatAction::Attachment { .. })
                    );
                    let entry = chat::apply(
                        conn,
                        &conversation,
                        sender.username.as_str(),
                        sender_is_admin,
                        parsed.id,
                        parsed.action,
                        app.sent_at_ms,
                        now,
                        expires,
                    )?;
                    if is_new && entry.is_some() && sender.username != profile.account.username {
                        let outcome =
                            reportability(&aad, &group_id, &app, &sender, &sender_key, franked);
                        store::record_frank(conn, parsed.id.as_bytes(), &outcome)?;
                    }
                    if is_text && entry.is_some() && sender.username != profile.account.username {
                        receipts::delivered(
                            profile,
                            conn,
                            &conversation,
                            &group_id,
                            parsed.id.as_bytes(),
                            now,
                        )?;
                    }
                    (conversation, entry)
                }
                Some(Body::Receipts(batch)) => {
                    // Recorded in history (`receipts` on each line), not
                    // handed out as new lines: a receipt can arrive at any
                    // time, and re-printing old messages on every sync
                    // would read as new ones.
                    let conversation = conversation_of(conn, &row)?;
                    receipts::apply(
                        profile,
                        conn,
                        &conversation,
                        sender.username.as_str(),
                        &batch,
                    )?;
                    return Ok(Applied::default());
                }
                Some(Body::Typing(typing)) => {
                    if sender.username == profile.account.username {
                        return Ok(Applied::default());
                    }
                    let conversation = conversation_of(conn, &row)?;
                    let line = receipts::typing_line(
                        &conversation,
                        sender.username.as_str(),
                        &typing,
                        app.sent_at_ms,
                        now,
                    );
                    return Ok(Applied {
                        entries: line.into_iter().collect(),
                        ..Applied::default()
                    });
                }
                Some(Body::Timer(timer)) => {
                    let conversation = conversation_of(conn, &row)?;
                    let entry = record_timer(
                        conn,
                        &conversation,
                        message_id,
                        sender.username.as_str(),
                        timer.seconds,
                        app.sent_at_ms,
                    )?;
                    (conversation, entry)
                }
                None => return Ok(Applied::default()),
            };
            Ok(Applied {
                entries: entry.into_iter().collect(),
                peer_head: app.log_head.map(|head| PeerHead {
                    conversation,
                    sender: sender.username,
                    head,
                }),
                merged_commit: None,
                handover: None,
            })
        }
        Inbound::Proposal { .. } => Ok(Applied::default()),
        Inbound::FromFormerMember { group_id, sender } => {
            tracing::info!(
                "dropped a message {} sent before being removed",
                sender.username
            );
            store::count_from_former_member(conn, &group_id)?;
            Ok(Applied::default())
        }
        Inbound::Commit {
            group_id,
            sender,
            change,
            self_removed,
        } => {
            let Some(row) = store::group(conn, &group_id)? else {
                return Ok(Applied::default());
            };
            if self_removed {
                store::set_group_state(conn, &group_id, GroupState::Removed)?;
            }
            if row.state != GroupState::Active {
                return Ok(Applied::default());
            }
            let conversation = conversation_of(conn, &row)?;
            if conversation.kind == ConversationKind::Direct {
                profile.check_direct_roster(provider, &group_id, &conversation.name)?;
            }
            let entries = record_roster(
                conn,
                &profile.account.member_id(),
                &conversation,
                message_id,
                sender.username.as_str(),
                &change,
            )?;
            Ok(Applied {
                entries,
                peer_head: None,
                merged_commit: Some(group_id),
                handover: None,
            })
        }
    }
}

/// Checks a received chat message's franking (`sotto_core::franking`) and
/// says what this device can report about it. A message that fails is
/// shown all the same, marked unreportable with the reason (logged too,
/// without content: a sender who franks wrongly is misbehaving or buggy).
fn reportability(
    aad: &[u8],
    group_id: &[u8],
    app: &content::AppContent,
    sender: &MemberId,
    sender_key: &[u8],
    franked: &Franked,
) -> store::Reportability {
    let checked = <[u8; 32]>::try_from(sender_key)
        .map_err(|_| franking::Unreportable::BadSenderSignature)
        .and_then(|key| {
            franking::check_received(
                aad,
                group_id,
                app,
                &key,
                franked.frank.as_ref(),
                franked.franking_key.as_ref(),
            )
        });
    match checked {
        Ok(evidence) => store::Reportability::Reportable(Box::new(franking::report(
            &evidence,
            group_id,
            sender,
            franking::ReportReason::Unspecified,
            "",
        ))),
        Err(why) => {
            tracing::warn!(sender = %sender, "received a message that cannot be reported: {why}");
            store::Reportability::Unreportable(why.code().to_owned())
        }
    }
}

/// Sets the conversation's disappearing-messages timer as `actor` asked
/// (any member may; longer than [`disappearing::MAX_TIMER_SECS`] is taken
/// as that), and shows it as a system line.
pub(crate) fn record_timer(
    conn: &Connection,
    conversation: &Conversation,
    message_id: &[u8],
    actor: &str,
    secs: u64,
    sent_at_ms: u64,
) -> Result<Option<HistoryEntry>, ClientError> {
    let secs = secs.min(disappearing::MAX_TIMER_SECS);
    store::set_conversation_timer(conn, conversation.id, secs)?;
    let id = [message_id, &[0xff, 0]].concat();
    let text = disappearing::timer_line(actor, secs);
    let message = store::NewMessage {
        id: &id,
        sender: "system",
        kind: EntryKind::System,
        text: &text,
        sent_at_ms,
    };
    Ok(store::insert_message(
        conn,
        conversation,
        &message,
        now_ms(),
    )?)
}

/// An `IdentityHandover`, authenticated by MLS as coming from `sender`.
/// Only a device of this account may hand over the account's identity
/// key: from anyone else it is an attack (a key they hold, for this device
/// to sign with), ignored with a warning in the conversation. From one of
/// this account's devices it is kept as a spare, adopted only once the
/// verified key log names its public half (`receive` reads the log next).
fn receive_handover(
    profile: &Profile,
    conn: &Connection,
    row: &store::GroupRow,
    message_id: &[u8],
    sender: MemberId,
    secret: &[u8],
) -> Result<Applied, ClientError> {
    let now = now_ms();
    if sender.username != profile.account.username {
        tracing::warn!(
            "{} sent an identity key, which only this account's devices may do: ignored",
            sender.username
        );
        let text = format!(
            "WARNING: {} sent this device an identity key to use for your account, which only \
             your own devices may do. It was ignored: someone may be trying to make this device \
             sign with a key they hold.",
            sender.username
        );
        let conversation = conversation_of(conn, row)?;
        let id = [message_id, b"warning"].concat();
        let message = store::NewMessage {
            id: &id,
            sender: "system",
            kind: EntryKind::System,
            text: &text,
            sent_at_ms: now,
        };
        let entry = store::insert_message(conn, &conversation, &message, now)?;
        return Ok(Applied {
            entries: entry.into_iter().collect(),
            ..Applied::default()
        });
    }
    // The handover group has done its job.
    if row.conversation_id.is_none() {
        store::set_group_state(conn, &row.group_id, GroupState::Left)?;
    }
    let Ok(identity) = sotto_core::identity::IdentityKey::from_secret(secret) else {
        let text = format!(
            "WARNING: your device {} sent this device an identity key that is not one (malformed). \
             It was ignored.",
            sender.device_id
        );
        store::log_device_warning(conn, &text, now)?;
        return Ok(Applied::default());
    };
    let public_key = identity.public();
    store::save_spare_identity(conn, &public_key, secret)?;
    Ok(Applied {
        handover: Some(Handover { public_key, sender }),
        ..Applied::default()
    })
}

/// Records a roster change as system lines: "`actor` added …".
pub(crate) fn record_roster(
    conn: &Connection,
    own: &MemberId,
    conversation: &Conversation,
    message_id: &[u8],
    actor: &str,
    change: &RosterChange,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let lines = history::roster_lines(own, actor, change);
    let now = now_ms();
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let id = [message_id, &[0xff, u8::try_from(i).unwrap_or(u8::MAX)]].concat();
        let message = store::NewMessage {
            id: &id,
            sender: "system",
            kind: EntryKind::System,
            text: line,
            sent_at_ms: now,
        };
        entries.extend(store::insert_message(conn, conversation, &message, now)?);
    }
    Ok(entries)
}

/// The conversation a group belongs to; a group whose ConversationInfo
/// has not arrived yet gets a placeholder named after its id.
pub(crate) fn conversation_of(
    conn: &Connection,
    row: &store::GroupRow,
) -> Result<Conversation, ClientError> {
    if let Some(found) = row
        .conversation_id
        .map(|id| store::conversation_by_id(conn, id))
        .transpose()?
        .flatten()
    {
        return Ok(found);
    }
    let name = placeholder_name(&row.group_id);
    let conversation = store::ensure_conversation(conn, ConversationKind::Group, &name)?;
    store::set_group_conversation(conn, &row.group_id, conversation.id)?;
    Ok(conversation)
}

/// The name a group goes by until its ConversationInfo arrives.
fn placeholder_name(group_id: &[u8]) -> String {
    format!(
        "group-{}",
        hex::encode(group_id.get(..4).unwrap_or(group_id))
    )
}
