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
        let mut loaded = group::LoadedGroups::default();
        apply_in(
            profile,
            provider,
            tx,
            &mut loaded,
            key_log,
            message_id,
            payload,
            franked,
        )
    })
}

/// One delivery of a batch, as [`apply_batch`] takes it.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub message_id: &'a [u8],
    pub payload: &'a [u8],
    pub franked: Franked,
}

/// What [`apply_batch`] did.
#[derive(Debug, Default)]
pub(crate) struct AppliedBatch {
    /// What the first deliveries produced, in order, all committed.
    pub applied: Vec<Applied>,
    /// The delivery after those failed (and was rolled back): the caller
    /// processes it alone with [`apply_delivery`], whose error handling
    /// is the one that counts.
    pub failed: bool,
}

/// Processes deliveries in order in ONE transaction, each group loaded once
/// for all of them (`group::LoadedGroups`: loading a group is most of what
/// a message costs in a large one). Stops early when one fails (its
/// changes, and every kept group, are dropped) and right after one that
/// merged a commit or handed over a key (the caller must deal with those
/// before what follows).
///
/// Each delivery runs inside a savepoint: a failing one is rolled back
/// alone, and the kept groups with it, since they may hold what the
/// rollback undid. Nothing in here sends or commits (`record_inbound` only
/// reads groups and queues receipts), so the kept groups cannot fall
/// behind storage; and they die with the transaction.
pub(crate) fn apply_batch(
    profile: &Profile,
    key_log: &KeyLog,
    batch: &[Incoming<'_>],
) -> Result<AppliedBatch, ClientError> {
    profile.in_transaction(|provider, tx| {
        let mut loaded = group::LoadedGroups::default();
        let mut done = AppliedBatch::default();
        for incoming in batch {
            tx.execute_batch("SAVEPOINT delivery")?;
            let result = apply_in(
                profile,
                provider,
                tx,
                &mut loaded,
                key_log,
                incoming.message_id,
                incoming.payload,
                &incoming.franked,
            );
            match result {
                Ok(applied) => {
                    tx.execute_batch("RELEASE delivery")?;
                    let stop = applied.merged_commit.is_some() || applied.handover.is_some();
                    done.applied.push(applied);
                    if stop {
                        break;
                    }
                }
                Err(_) => {
                    loaded.clear();
                    tx.execute_batch("ROLLBACK TO delivery; RELEASE delivery")?;
                    done.failed = true;
                    break;
                }
            }
        }
        Ok(done)
    })
}

/// One delivery inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
fn apply_in(
    profile: &Profile,
    provider: &MlsProvider<'_>,
    tx: &Connection,
    loaded: &mut group::LoadedGroups,
    key_log: &KeyLog,
    message_id: &[u8],
    payload: &[u8],
    franked: &Franked,
) -> Result<Applied, ClientError> {
    if store::is_processed(tx, message_id)? {
        store::remove_held(tx, message_id)?;
        return Ok(Applied::default());
    }
    let inbound = group::process_loaded(provider, loaded, payload, key_log)?;
    let applied = record_inbound(profile, provider, tx, message_id, inbound, franked)?;
    store::mark_processed(tx, message_id)?;
    store::remove_held(tx, message_id)?;
    store::forget_attempts(tx, message_id)?;
    Ok(applied)
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

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_core::content::{AppContent, Text};
    use sotto_core::group::{KeyCheck, KeyDirectory};
    use sotto_core::identity::Account;
    use sotto_core::openmls::prelude::MlsGroup;
    use sotto_core::openmls_rust_crypto::OpenMlsRustCrypto;
    use sotto_proto::v1::ClaimedKeyPackage;

    struct AllowAll;

    impl KeyDirectory for AllowAll {
        fn check(&self, _: &MemberId, _: &[u8]) -> KeyCheck {
            KeyCheck::Listed
        }
    }

    /// Alice, a plain openmls member who sends.
    struct Alice {
        account: Account,
        provider: OpenMlsRustCrypto,
        group: MlsGroup,
    }

    impl Alice {
        fn send(&mut self, plaintext: &[u8]) -> Vec<u8> {
            group::encrypt(
                &self.provider,
                &mut self.group,
                &self.account.device,
                plaintext,
            )
            .unwrap()
        }

        fn receive(&mut self, payload: &[u8]) -> Vec<u8> {
            match group::process(&self.provider, payload, &AllowAll).unwrap() {
                Inbound::Application { plaintext, .. } => plaintext,
                other => panic!("expected an application message, got {other:?}"),
            }
        }
    }

    fn text(s: &str) -> Vec<u8> {
        content::encode(&AppContent {
            id: s.as_bytes().to_vec(),
            sent_at_ms: 1,
            body: Some(Body::Text(Text { text: s.into() })),
            ..AppContent::default()
        })
    }

    /// Alice and Bob (a client profile) in one group.
    fn pair(dir: &std::path::Path) -> (Alice, Profile, Vec<u8>) {
        let db = store::open(&dir.join("bob.db")).unwrap();
        let bob = Profile::new(db, Account::generate(Username::parse("bob").unwrap()));
        let account = Account::generate(Username::parse("alice").unwrap());
        let provider = OpenMlsRustCrypto::default();
        let mut g = group::create_group(&provider, &account).unwrap();
        let claimed = ClaimedKeyPackage {
            device: Some(bob.account.signed_device()),
            key_package: group::new_key_package(&bob.provider(), &bob.account, false).unwrap(),
        };
        let kp = group::check_key_package(
            &provider,
            &bob.account.username,
            &bob.account.identity_public(),
            &claimed,
        )
        .unwrap();
        let pending = group::add_members(&provider, &mut g, &account.device, &[kp]).unwrap();
        group::merge_pending(&provider, &mut g).unwrap();
        let welcome = pending.welcome.unwrap();
        let Inbound::Joined { group_id, .. } =
            group::process(&bob.provider(), &welcome, &AllowAll).unwrap()
        else {
            panic!("expected a join");
        };
        store::insert_group(&bob.db, &group_id, None).unwrap();
        let alice = Alice {
            account,
            provider,
            group: g,
        };
        (alice, bob, group_id)
    }

    fn incoming<'a>(items: &'a [(Vec<u8>, Vec<u8>)]) -> Vec<Incoming<'a>> {
        items
            .iter()
            .map(|(id, payload)| Incoming {
                message_id: id,
                payload,
                franked: Franked::default(),
            })
            .collect()
    }

    fn texts(applied: &[Applied]) -> Vec<String> {
        applied
            .iter()
            .flat_map(|a| a.entries.iter().map(|e| e.text.clone()))
            .collect()
    }

    /// A delivery that decrypts but then fails (malformed content) stops
    /// the batch: it is rolled back, and so is the group the batch kept,
    /// which had already consumed its ratchet generation. Were the kept
    /// group used after that rollback (as by processing the next delivery
    /// with it), storage would end up with that generation consumed and
    /// the failed message would no longer decrypt on its own.
    #[test]
    fn a_failed_delivery_rolls_back_with_the_groups_the_batch_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, bob, _) = pair(dir.path());
        let key_log = KeyLog::new(Vec::new());
        let items = vec![
            (b"m0".to_vec(), alice.send(&text("one"))),
            (b"m1".to_vec(), alice.send(&[0xff; 40])),
            (b"m2".to_vec(), alice.send(&text("three"))),
        ];
        let batch = apply_batch(&bob, &key_log, &incoming(&items)).unwrap();
        assert!(batch.failed);
        assert_eq!(texts(&batch.applied), ["one"]);
        assert!(store::is_processed(&bob.db, b"m0").unwrap());
        assert!(!store::is_processed(&bob.db, b"m1").unwrap());
        // Alone, the failed one still decrypts and fails on its content,
        // not on a consumed generation.
        let alone = apply_delivery(&bob, &key_log, b"m1", &items[1].1, &Franked::default());
        assert!(matches!(alone, Err(ClientError::Content(_))), "{alone:?}");
        let rest = apply_batch(&bob, &key_log, &incoming(&items[2..])).unwrap();
        assert!(!rest.failed);
        assert_eq!(texts(&rest.applied), ["three"]);
    }

    /// Processing batches with kept groups never rolls back this device's
    /// own sending ratchet: what it sends before, between and after
    /// batches uses fresh generations, which the other member decrypts (a
    /// repeated generation, key and nonce reused, is refused there). A
    /// group kept from one batch to the next, across the send between
    /// them, would write the send's ratchet back to where it was.
    #[test]
    fn sending_after_a_batch_never_repeats_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, bob, group_id) = pair(dir.path());
        let key_log = KeyLog::new(Vec::new());
        let send = |plaintext: &[u8]| {
            bob.in_transaction(|provider, _| {
                let mut g = group::load(provider, &group_id)?;
                Ok(group::encrypt(
                    provider,
                    &mut g,
                    &bob.account.device,
                    plaintext,
                )?)
            })
            .unwrap()
        };
        let mut sent = vec![send(b"before")];
        for round in 0..3u8 {
            let items: Vec<(Vec<u8>, Vec<u8>)> = (0..4)
                .map(|i| (vec![round, i], alice.send(&text(&format!("{round}.{i}")))))
                .collect();
            let batch = apply_batch(&bob, &key_log, &incoming(&items)).unwrap();
            assert!(!batch.failed);
            assert_eq!(batch.applied.len(), 4);
            sent.push(send(&[round]));
        }
        assert_eq!(alice.receive(&sent[0]), b"before");
        for (round, payload) in (0u8..).zip(&sent[1..]) {
            assert_eq!(alice.receive(payload), [round]);
        }
    }
}
