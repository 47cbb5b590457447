//! Receiving: draining the mailbox, processing each delivery atomically with
//! its MLS state change, checking every new member against the key log, and
//! turning it all into history, with loud warnings when something is off.

use crate::ClientError;
use crate::client::*;
use crate::conversations::usernames;
use crate::provider::MlsProvider;
use crate::store::{self, Conversation, ConversationKind, EntryKind, GroupState, HistoryEntry};
use crate::transport::{Next, Push, Transport};
use rusqlite::Connection;
use sotto_core::content::{self, Body};
use sotto_core::group::{self, GroupError, Inbound, RosterChange};
use sotto_core::identity::{MemberId, Username};
use sotto_proto::v1::{self, Delivery, SignedTreeHead, Sync, client_frame, response};

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

    /// Applies one delivery atomically, then acknowledges it.
    ///
    /// New members are checked against the key log: if their accounts were
    /// not looked up yet, the transaction is rolled back, they are looked up,
    /// and the delivery is applied again. A message that is refused (a ghost
    /// member, a withheld commit) or cannot be processed is recorded as
    /// processed and acknowledged, so it cannot block the queue, with a
    /// warning where it matters. A local storage failure is not
    /// acknowledged, so the message comes again.
    pub(crate) async fn handle_delivery(
        &mut self,
        t: &mut Transport,
        d: Delivery,
        out: &mut Vec<HistoryEntry>,
    ) -> Result<(), ClientError> {
        self.accounts.fresh.clear();
        let mut result = self.apply_delivery(&d);
        if let Err(ClientError::Group(GroupError::Unverified(users))) = &result {
            for user in users.clone() {
                match self.verify_account(&user).await {
                    Ok(_) => {}
                    // Could not look it up now: leave the delivery unacknowledged,
                    // so it comes again, rather than judge the member a ghost.
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => tracing::warn!("looking up {user} failed: {e}"),
                }
                self.accounts.fresh.insert(user);
            }
            result = self.apply_delivery(&d);
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
                    out.extend(self.warn(Some(&peer.conversation), &d.message_id, &text)?);
                }
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                store::mark_processed(&self.db, &d.message_id)?;
                out.extend(self.refuse(&d, &e)?);
            }
        }
        t.ack(d.seq).await
    }

    /// Records why a delivery was dropped. Refusals that protect the user (a
    /// member not in the key log, a withheld roster change) stop the
    /// conversation and warn loudly; other failures are logged.
    fn refuse(&self, d: &Delivery, error: &ClientError) -> Result<Vec<HistoryEntry>, ClientError> {
        let protective = matches!(
            error,
            ClientError::Group(GroupError::Ghost(_) | GroupError::Withheld { .. })
                | ClientError::KeyLog(_)
                | ClientError::IdentityChanged(_)
        );
        if !protective {
            tracing::warn!(message_id = %hex::encode(&d.message_id), "dropped a message that could not be processed: {error}");
            return Ok(Vec::new());
        }
        let group_row = group::group_id_of(&d.payload)
            .map(|id| store::group(&self.db, &id))
            .transpose()?
            .flatten();
        if group_row
            .as_ref()
            .is_some_and(|row| row.state == GroupState::Refused)
        {
            // Already stopped and warned about.
            return Ok(Vec::new());
        }
        let conversation = match &group_row {
            Some(row) => {
                store::set_group_state(&self.db, &row.group_id, GroupState::Refused)?;
                row.conversation_id
                    .map(|id| store::conversation_by_id(&self.db, id))
                    .transpose()?
                    .flatten()
            }
            None => None,
        };
        let text = format!(
            "WARNING: {error}. This conversation is no longer used: nothing more is sent to it."
        );
        self.warn(conversation.as_ref(), &d.message_id, &text)
    }

    /// A warning line: stored in the conversation's history when there is
    /// one, always returned so the user sees it now.
    pub(crate) fn warn(
        &self,
        conversation: Option<&Conversation>,
        message_id: &[u8],
        text: &str,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let now = now_ms();
        let id = [message_id, b"warning"].concat();
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

    pub(crate) fn apply_delivery(&self, d: &Delivery) -> Result<Applied, ClientError> {
        self.in_transaction(|provider, tx| {
            if store::is_processed(tx, &d.message_id)? {
                return Ok(Applied::default());
            }
            let inbound = group::process(provider, &d.payload, &self.accounts)?;
            let applied = self.record_inbound(provider, tx, &d.message_id, inbound)?;
            store::mark_processed(tx, &d.message_id)?;
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
                            let members = group::members(&group::load(provider, &group_id)?);
                            let peer = members
                                .iter()
                                .map(|m| &m.username)
                                .find(|u| **u != self.account.username)
                                .unwrap_or(&sender.username);
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
                        let text =
                            match (conversation.kind, sender.username == self.account.username) {
                                (_, true) => "this device was added to the conversation".to_owned(),
                                (ConversationKind::Direct, false) => {
                                    format!("{} started a conversation", sender.username)
                                }
                                (ConversationKind::Group, false) => {
                                    format!(
                                        "{} added you to {}",
                                        sender.username, conversation.name
                                    )
                                }
                            };
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
                })
            }
            Inbound::Proposal { .. } => Ok(Applied::default()),
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
        let mut lines = Vec::new();
        let (own_devices, others): (Vec<MemberId>, Vec<MemberId>) = change
            .added
            .iter()
            .cloned()
            .partition(|m| m.username == self.account.username);
        if !others.is_empty() {
            lines.push(format!("{actor} added {}", usernames(&others)));
        }
        for device in &own_devices {
            lines.push(format!("{actor} added your device {}", device.device_id));
        }
        for m in &change.left {
            lines.push(format!("{} left", m.username));
        }
        for m in &change.removed {
            if m.device_id == self.account.device_id {
                lines.push(format!("{actor} removed you"));
            } else if m.username == self.account.username {
                lines.push(format!("{actor} removed your device {}", m.device_id));
            } else {
                lines.push(format!("{actor} removed {}", m.username));
            }
        }
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
