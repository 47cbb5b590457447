//! Receiving: draining the mailbox, processing each delivery atomically with
//! its MLS state change, checking every new member against the key log, and
//! turning it all into history, with loud warnings when something is off.

use crate::ClientError;
use crate::client::*;
use crate::provider::MlsProvider;
use crate::store::{self, Conversation, ConversationKind, EntryKind, GroupState, HistoryEntry};
use crate::transport::{Next, Push, Transport};
use rusqlite::Connection;
use sotto_core::content::{self, Body};
use sotto_core::group::{self, GroupError, Inbound, RosterChange};
use sotto_core::history;
use sotto_core::identity::Username;
use sotto_proto::v1::{self, Delivery, SignedTreeHead, Sync, client_frame, response};
use std::collections::VecDeque;

/// A log head a peer carried in a message, to compare with ours.
#[derive(Debug)]
pub(crate) struct PeerHead {
    conversation: Conversation,
    sender: Username,
    head: SignedTreeHead,
}

/// What one delivery produced.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    entries: Vec<HistoryEntry>,
    peer_head: Option<PeerHead>,
    /// The group whose commit this delivery merged.
    merged_commit: Option<Vec<u8>>,
}

/// Transient failures of one delivery (across syncs) before it is skipped
/// as poison, acknowledged with a warning.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 3;
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
    }
}

impl Client {
    /// Receives and processes everything queued for this device, commits
    /// proposals other members are waiting on, and returns the new history
    /// lines (warnings included).
    pub async fn sync(&mut self) -> Result<Vec<HistoryEntry>, ClientError> {
        self.connected(async |c, t| {
            let mut entries = c.drain(t).await?;
            entries.extend(c.commit_pending_proposals(t).await?);
            entries.append(&mut c.own_lines);
            Ok(entries)
        })
        .await
    }

    /// Stays connected and calls `on_entry` for every new history line until
    /// the connection fails.
    pub async fn listen(
        &mut self,
        mut on_entry: impl FnMut(&HistoryEntry),
    ) -> Result<(), ClientError> {
        self.connected(async |c, t| {
            for entry in c.drain(t).await? {
                on_entry(&entry);
            }
            loop {
                let mut entries = c.commit_pending_proposals(t).await?;
                entries.append(&mut c.own_lines);
                for entry in &entries {
                    on_entry(entry);
                }
                match t.next(Some(LISTEN_PING)).await? {
                    Next::Push(Push::Delivery(d)) => {
                        let mut entries = Vec::new();
                        c.handle_delivery(t, d, &mut entries).await?;
                        for entry in &entries {
                            on_entry(entry);
                        }
                    }
                    Next::Push(Push::KeyPackagesLow) => {
                        c.upload_key_packages(t, KEY_PACKAGE_POOL - KEY_PACKAGE_LOW, false)
                            .await?;
                    }
                    Next::Push(Push::LinkRequest(_) | Push::LinkCompleted(_))
                    | Next::Response(..) => {}
                }
            }
        })
        .await
    }

    /// Processes deliveries until the server says the mailbox is empty.
    pub(crate) async fn drain(
        &mut self,
        t: &mut Transport,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut entries = Vec::new();
        let sync_id = t.start_request(client_frame::Body::Sync(Sync {})).await?;
        loop {
            match t.next(None).await? {
                Next::Push(Push::Delivery(d)) => self.handle_delivery(t, d, &mut entries).await?,
                Next::Push(Push::KeyPackagesLow) => self.key_packages_low = true,
                Next::Response(id, response::Result::SyncDone(_)) if id == sync_id => break,
                Next::Push(Push::LinkRequest(_) | Push::LinkCompleted(_)) | Next::Response(..) => {}
            }
        }
        if self.key_packages_low {
            self.upload_key_packages(t, KEY_PACKAGE_POOL - KEY_PACKAGE_LOW, false)
                .await?;
        }
        Ok(entries)
    }

    /// Applies one delivery atomically (with any held messages it unblocks),
    /// then acknowledges it.
    pub(crate) async fn handle_delivery(
        &mut self,
        t: &mut Transport,
        d: Delivery,
        out: &mut Vec<HistoryEntry>,
    ) -> Result<(), ClientError> {
        self.receive(&d.message_id, &d.payload, out).await?;
        t.ack(d.seq).await
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
    pub(crate) async fn receive(
        &mut self,
        message_id: &[u8],
        payload: &[u8],
        out: &mut Vec<HistoryEntry>,
    ) -> Result<(), ClientError> {
        let mut queue = VecDeque::from([(message_id.to_vec(), payload.to_vec())]);
        while let Some((id, payload)) = queue.pop_front() {
            let Some(group_id) = self.receive_one(&id, &payload, out).await? else {
                continue;
            };
            // A commit was merged: held messages up to the new epoch can be
            // processed now.
            let epoch = {
                let provider = MlsProvider::new(&self.crypto, &self.db);
                group::load(&provider, &group_id).map(|g| g.epoch().as_u64())
            };
            if let Ok(epoch) = epoch {
                for held in store::held_up_to(&self.db, &group_id, epoch)? {
                    if !queue.iter().any(|(q, _)| *q == held.0) {
                        queue.push_back(held);
                    }
                }
            }
        }
        Ok(())
    }

    /// One message of [`Client::receive`]; `Some(group id)` if it merged a
    /// commit.
    async fn receive_one(
        &mut self,
        message_id: &[u8],
        payload: &[u8],
        out: &mut Vec<HistoryEntry>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        self.accounts.fresh.clear();
        let mut result = self.apply_delivery(message_id, payload);
        if let Err(ClientError::Group(GroupError::Unverified(users))) = &result {
            for user in users.clone() {
                if let Err(e) = self.look_up_with_backoff(&user).await {
                    if !e.is_transient() {
                        tracing::warn!("looking up {user} failed: {e}");
                    } else if !self.give_up_after_attempts(message_id)? {
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
                self.accounts.fresh.insert(user);
            }
            if !matches!(result, Err(ClientError::KeyLog(_))) {
                result = self.apply_delivery(message_id, payload);
            }
        }
        match result {
            Ok(applied) => {
                out.extend(applied.entries);
                if let Some(peer) = applied.peer_head
                    && let Err(e) = self.check_head(&peer.head).await
                {
                    let text = format!(
                        "WARNING: the key log {} sees disagrees with yours. The server may be showing you different keys. ({e})",
                        peer.sender
                    );
                    out.extend(self.warn(Some(&peer.conversation), message_id, &text)?);
                }
                Ok(applied.merged_commit)
            }
            Err(ClientError::Group(GroupError::FromLaterEpoch {
                own_epoch,
                message_epoch,
            })) => {
                out.extend(self.hold(message_id, payload, own_epoch, message_epoch)?);
                Ok(None)
            }
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                self.in_transaction(|_, tx| {
                    store::mark_processed(tx, message_id)?;
                    store::remove_held(tx, message_id)?;
                    Ok(store::forget_attempts(tx, message_id)?)
                })?;
                out.extend(self.refuse(message_id, payload, &e)?);
                Ok(None)
            }
        }
    }

    /// Looks an account up, trying again with backoff when the network (or
    /// a busy server) fails.
    async fn look_up_with_backoff(&mut self, user: &Username) -> Result<(), ClientError> {
        let mut wait = LOOKUP_BACKOFF;
        loop {
            match self.verify_account(user).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() && wait <= LOOKUP_BACKOFF * 4 => {
                    tracing::debug!("looking up {user} failed, retrying: {e}");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Counts a transient failure of a delivery; `true` once it has failed
    /// [`MAX_DELIVERY_ATTEMPTS`] times, when it is skipped as poison.
    fn give_up_after_attempts(&self, message_id: &[u8]) -> Result<bool, ClientError> {
        Ok(store::count_attempt(&self.db, message_id)? >= MAX_DELIVERY_ATTEMPTS)
    }

    /// Holds a message framed for a later epoch than this device's group.
    /// Its epoch is not authenticated, so nothing else changes: it waits
    /// (bounded) for the commits that lead there, and the user is told now,
    /// in a line that is not stored.
    fn hold(
        &self,
        message_id: &[u8],
        payload: &[u8],
        own_epoch: u64,
        message_epoch: u64,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let Some(group_id) = group::group_id_of(payload) else {
            return Ok(Vec::new());
        };
        let row = store::group(&self.db, &group_id)?;
        let Some(row) = row.filter(|r| r.state == GroupState::Active) else {
            // Not a conversation this device is in any more: nothing to wait for.
            store::mark_processed(&self.db, message_id)?;
            return Ok(Vec::new());
        };
        store::hold(
            &self.db,
            message_id,
            &group_id,
            message_epoch,
            payload,
            now_ms(),
        )?;
        let conversation = self.conversation_of(&self.db, &row)?;
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
        &self,
        message_id: &[u8],
        payload: &[u8],
        error: &ClientError,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let group_row = group::group_id_of(payload)
            .map(|id| store::group(&self.db, &id))
            .transpose()?
            .flatten();
        let conversation = group_row
            .as_ref()
            .and_then(|row| row.conversation_id)
            .map(|id| store::conversation_by_id(&self.db, id))
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
            let text =
                format!("WARNING: a message could not be processed and was skipped: {error}");
            return self.warn(conversation.as_ref(), message_id, &text);
        }
        if group_row
            .as_ref()
            .is_some_and(|row| row.state == GroupState::Refused)
        {
            // Already stopped and warned about.
            return Ok(Vec::new());
        }
        if let Some(row) = &group_row {
            store::set_group_state(&self.db, &row.group_id, GroupState::Refused)?;
        }
        let error = error.to_string();
        let error = error.strip_prefix("WARNING: ").unwrap_or(&error);
        let text = format!(
            "WARNING: {error}. This conversation is no longer used: nothing more is sent to it."
        );
        self.warn(conversation.as_ref(), message_id, &text)
    }

    /// A warning line: stored in the conversation's history when there is
    /// one (in the device log otherwise), always returned so the user sees
    /// it now.
    pub(crate) fn warn(
        &self,
        conversation: Option<&Conversation>,
        message_id: &[u8],
        text: &str,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let now = now_ms();
        let id = [message_id, b"warning"].concat();
        if conversation.is_none() {
            store::log_device_warning(&self.db, text, now)?;
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
                store::insert_message(&self.db, conversation, &message, now)?
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
            }],
        })
    }

    pub(crate) fn apply_delivery(
        &self,
        message_id: &[u8],
        payload: &[u8],
    ) -> Result<Applied, ClientError> {
        self.in_transaction(|provider, tx| {
            if store::is_processed(tx, message_id)? {
                store::remove_held(tx, message_id)?;
                return Ok(Applied::default());
            }
            let inbound = group::process(provider, payload, &self.accounts)?;
            let applied = self.record_inbound(provider, tx, message_id, inbound)?;
            store::mark_processed(tx, message_id)?;
            store::remove_held(tx, message_id)?;
            store::forget_attempts(tx, message_id)?;
            Ok(applied)
        })
    }

    /// Turns a processed MLS message into conversations and history lines.
    fn record_inbound(
        &self,
        provider: &MlsProvider<'_>,
        conn: &Connection,
        message_id: &[u8],
        inbound: Inbound,
    ) -> Result<Applied, ClientError> {
        let now = now_ms();
        match inbound {
            Inbound::Joined { group_id, .. } => {
                // Listed at once under a placeholder name; the
                // ConversationInfo that follows the Welcome names it (if
                // that is lost, the conversation still shows).
                store::insert_group(conn, &group_id, None)?;
                let row = store::GroupRow {
                    group_id,
                    conversation_id: None,
                    state: GroupState::Active,
                };
                self.conversation_of(conn, &row)?;
                Ok(Applied::default())
            }
            Inbound::Application {
                group_id,
                sender,
                plaintext,
            } => {
                let Some(row) = store::group(conn, &group_id)? else {
                    return Ok(Applied::default());
                };
                if row.state != GroupState::Active {
                    return Ok(Applied::default());
                }
                let app = content::decode(&plaintext)?;
                let (conversation, entry) = match app.body {
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
                            let peer = self.direct_peer_of(provider, &group_id)?;
                            if sender.username != peer && sender.username != self.account.username {
                                return Err(ClientError::Roster(format!(
                                    "{} called a conversation between you and {peer} a direct one, but is not one of you",
                                    sender.username
                                )));
                            }
                            store::ensure_conversation(
                                conn,
                                ConversationKind::Direct,
                                peer.as_str(),
                            )?
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
                            &self.account.username,
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
                        let conversation = self.conversation_of(conn, &row)?;
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
                let conversation = self.conversation_of(conn, &row)?;
                if conversation.kind == ConversationKind::Direct {
                    self.check_direct_roster(provider, &group_id, &conversation.name)?;
                }
                let entries = self.record_roster(
                    conn,
                    &conversation,
                    message_id,
                    sender.username.as_str(),
                    &change,
                )?;
                Ok(Applied {
                    entries,
                    peer_head: None,
                    merged_commit: Some(group_id),
                })
            }
        }
    }

    /// Records a roster change as system lines: "`actor` added …".
    pub(crate) fn record_roster(
        &self,
        conn: &Connection,
        conversation: &Conversation,
        message_id: &[u8],
        actor: &str,
        change: &RosterChange,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let lines = history::roster_lines(&self.account.member_id(), actor, change);
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
        &self,
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
}

/// The name a group goes by until its ConversationInfo arrives.
fn placeholder_name(group_id: &[u8]) -> String {
    format!(
        "group-{}",
        hex::encode(group_id.get(..4).unwrap_or(group_id))
    )
}
