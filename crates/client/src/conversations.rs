//! Sending and changing conversations: texts, groups, members, commits
//! with retry, and the outbox that makes every send survive a crash.

use crate::ClientError;
use crate::client::*;
use crate::provider::MlsProvider;
use crate::store::{
    self, Conversation, ConversationKind, EntryKind, GroupState, HistoryEntry, OutboxEntry,
};
use crate::transport::Transport;
use sotto_core::content::{self, AppContent, Body, ConversationInfo, Text};
use sotto_core::group::{self, CheckedKeyPackage, PendingCommit};
use sotto_core::identity::{DeviceId, DeviceKey, Username};
use sotto_proto::Message as _;
use sotto_proto::v1::{
    self, ClaimKeyPackages, ClientFrame, ErrorCode, SendMessage, SubmitCommit, client_frame,
    response,
};

impl Client {
    /// Sends a text to `peer`, starting a direct conversation if needed.
    pub async fn send_direct(
        &mut self,
        peer: &str,
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        let peer = Username::parse(peer)?;
        if peer == self.account.username {
            return Err(ClientError::Usage(
                "you cannot start a conversation with yourself".into(),
            ));
        }
        check_text(text)?;
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.commit_pending_proposals(t).await?;
            let existing = store::conversation(&c.db, ConversationKind::Direct, peer.as_str())?;
            let group_id = match existing
                .map(|conv| c.conversation_group(&conv))
                .transpose()?
                .flatten()
            {
                Some(group_id) => group_id,
                None => {
                    c.start_conversation(
                        ConversationKind::Direct,
                        peer.as_str(),
                        std::slice::from_ref(&peer),
                    )
                    .await?
                    .1
                }
            };
            c.send_text(&group_id, text).await
        })
        .await
    }

    /// Sends a text to the group `name`.
    pub async fn send_group(
        &mut self,
        name: &str,
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        check_text(text)?;
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.commit_pending_proposals(t).await?;
            let group_id = c.active_group_named(name)?;
            c.send_text(&group_id, text).await
        })
        .await
    }

    /// Creates the group `name` with the given members.
    pub async fn create_group(
        &mut self,
        name: &str,
        members: &[String],
    ) -> Result<(), ClientError> {
        if name.trim().is_empty() || name.len() > 64 {
            return Err(ClientError::Usage(
                "a group name must have 1 to 64 characters".into(),
            ));
        }
        if store::conversation(&self.db, ConversationKind::Group, name)?.is_some() {
            return Err(ClientError::Usage(format!(
                "you already have a group named {name}"
            )));
        }
        let mut usernames = Vec::new();
        for member in members {
            let user = Username::parse(member)?;
            if user != self.account.username && !usernames.contains(&user) {
                usernames.push(user);
            }
        }
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.start_conversation(ConversationKind::Group, name, &usernames)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Adds `username` (all their devices) to the group `name`.
    pub async fn add_member(&mut self, name: &str, username: &str) -> Result<(), ClientError> {
        let user = Username::parse(username)?;
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.commit_pending_proposals(t).await?;
            let group_id = c.active_group_named(name)?;
            let key_packages = c.claim(&user, &[]).await?;
            c.commit_with_retry(t, &group_id, |p, g, key| {
                group::add_members(p, g, key, &key_packages).map(Some)
            })
            .await?;
            // Tell the new members what this conversation is.
            c.send_content(&group_id, group_info_body(name)).await?;
            Ok(())
        })
        .await
    }

    /// Removes `username` (all their devices) from the group `name`.
    pub async fn remove_member(&mut self, name: &str, username: &str) -> Result<(), ClientError> {
        let user = Username::parse(username)?;
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.commit_pending_proposals(t).await?;
            let group_id = c.active_group_named(name)?;
            c.commit_with_retry(t, &group_id, |p, g, key| {
                group::remove_user(p, g, key, &user).map(Some)
            })
            .await
        })
        .await
    }

    /// Leaves the group `name`: proposes this device's removal (a remaining
    /// member commits it) and stops showing the conversation's messages.
    pub async fn leave_group(&mut self, name: &str) -> Result<(), ClientError> {
        self.connected(async |c, t| {
            c.drain(t).await?;
            let group_id = c.active_group_named(name)?;
            let entry = c.in_transaction(|provider, tx| {
                let mut g = group::load(provider, &group_id)?;
                let proposal = group::leave(provider, &mut g, &c.account.device)?;
                let recipients = group::recipients(&g);
                let token = group::send_token(provider, &g)?;
                let entry = send_entry(random_id(), &group_id, &recipients, proposal, token);
                store::push_outbox(tx, &entry)?;
                store::set_group_state(tx, &group_id, GroupState::Left)?;
                Ok(entry)
            })?;
            c.submit(&entry).await.map(|_| ())
        })
        .await
    }

    /// Claims KeyPackages for the devices of `user` (all of them, or just
    /// `only`) and checks each against the transparency log: the account's
    /// log entries must verify against a signed head consistent with ours,
    /// its identity key must be the one pinned on first contact, and every
    /// device offered must be one the log lists with the same key. Any
    /// mismatch refuses the whole claim: nothing is sent to a ghost.
    pub(crate) async fn claim(
        &mut self,
        user: &Username,
        only: &[DeviceId],
    ) -> Result<Vec<CheckedKeyPackage>, ClientError> {
        let request = ClaimKeyPackages {
            username: user.to_string(),
            device_ids: only.iter().map(|d| d.as_bytes().to_vec()).collect(),
        };
        let bundle = match self
            .anonymous_request(client_frame::Body::ClaimKeyPackages(request))
            .await
        {
            Ok(response::Result::KeyPackages(bundle)) => bundle,
            Ok(_) => return Err(ClientError::Protocol("expected KeyPackages".into())),
            Err(e) if e.server_code() == Some(ErrorCode::UnknownUser) => {
                return Err(ClientError::Usage(format!(
                    "there is no account named {user} on this server"
                )));
            }
            Err(e) => return Err(e),
        };
        let log = bundle.account_log.as_ref().ok_or_else(|| {
            ClientError::KeyLog(format!(
                "the server sent keys for {user} without their key-log entries"
            ))
        })?;
        let state = self.accept_account_log(user, log).await?;
        if state.identity_key.as_slice() != bundle.identity_key {
            return Err(ClientError::KeyLog(format!(
                "the server offered an identity key for {user} that is not the one in the key log; refusing"
            )));
        }
        let provider = MlsProvider::new(&self.crypto, &self.db);
        let mut checked = Vec::new();
        for claimed in &bundle.devices {
            let key_package =
                group::check_key_package(&provider, user, &bundle.identity_key, claimed).map_err(
                    |e| {
                        ClientError::KeyLog(format!(
                            "refused a device the server offered for {user}: {e}"
                        ))
                    },
                )?;
            let device = &key_package.device;
            if state.devices.get(device.device_id.as_bytes()) != Some(&device.device_key) {
                return Err(ClientError::KeyLog(format!(
                    "the server offered device {} for {user}, which is not in the key log; refusing (a ghost device?)",
                    device.device_id
                )));
            }
            if *user == self.account.username && device.device_id == self.account.device_id {
                continue;
            }
            checked.push(key_package);
        }
        if checked.is_empty() && only.is_empty() {
            return Err(ClientError::Usage(format!(
                "{user} has no device that can be added right now"
            )));
        }
        Ok(checked)
    }

    /// KeyPackages for this account's other devices, to add them wherever
    /// this device starts or joins a conversation.
    pub(crate) async fn claim_own_devices(
        &mut self,
    ) -> Result<Vec<CheckedKeyPackage>, ClientError> {
        let own = self.account.username.clone();
        let state = self.verify_account(&own).await?;
        let others: Vec<DeviceId> = state
            .devices
            .keys()
            .filter_map(|id| DeviceId::from_slice(id).ok())
            .filter(|id| *id != self.account.device_id)
            .collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        match self.claim(&own, &others).await {
            Ok(kps) => Ok(kps),
            // Another device with no KeyPackage left: add it later.
            Err(e) if e.server_code() == Some(ErrorCode::NoKeyPackage) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Creates an MLS group for a new conversation with `members`, commits
    /// it, and tells the members what the conversation is.
    pub(crate) async fn start_conversation(
        &mut self,
        kind: ConversationKind,
        name: &str,
        members: &[Username],
    ) -> Result<(Conversation, Vec<u8>), ClientError> {
        let mut key_packages = self.claim_own_devices().await?;
        for user in members {
            key_packages.extend(self.claim(user, &[]).await?);
        }
        let (conversation, group_id, entry) = self.in_transaction(|provider, tx| {
            let mut g = group::create_group(provider, &self.account)?;
            let group_id = g.group_id().to_vec();
            let conversation = store::ensure_conversation(tx, kind, name)?;
            store::insert_group(tx, &group_id, Some(conversation.id))?;
            let entry = if key_packages.is_empty() {
                None
            } else {
                let pending =
                    group::add_members(provider, &mut g, &self.account.device, &key_packages)?;
                let entry = commit_entry(&group_id, pending);
                store::push_outbox(tx, &entry)?;
                Some(entry)
            };
            Ok((conversation, group_id, entry))
        })?;
        // A group of one exists only locally until someone is added.
        if let Some(entry) = entry
            && let CommitOutcome::Rejected { current_epoch } = self.submit(&entry).await?
        {
            return Err(ClientError::Protocol(format!(
                "the server refused a new group (it claims epoch {current_epoch})"
            )));
        }
        let info = match kind {
            ConversationKind::Direct => ConversationInfo {
                kind: v1::ConversationKind::Direct as i32,
                name: String::new(),
            },
            ConversationKind::Group => ConversationInfo {
                kind: v1::ConversationKind::Group as i32,
                name: name.to_owned(),
            },
        };
        if !members.is_empty() {
            self.send_content(&group_id, Body::Info(info)).await?;
        }
        Ok((conversation, group_id))
    }

    pub(crate) async fn send_text(
        &mut self,
        group_id: &[u8],
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        self.send_content(
            group_id,
            Body::Text(Text {
                text: text.to_owned(),
            }),
        )
        .await?
        .ok_or_else(|| ClientError::Usage("message was not recorded".into()))
    }

    /// Encrypts `body` for the group and sends it; see [`Client::stage_content`].
    pub(crate) async fn send_content(
        &mut self,
        group_id: &[u8],
        body: Body,
    ) -> Result<Option<HistoryEntry>, ClientError> {
        let (entry, history) = self.stage_content(group_id, body)?;
        if let Some(entry) = entry {
            self.submit(&entry).await?;
        }
        Ok(history)
    }

    /// Encrypts `body` for the group and records it in history (for texts)
    /// and in the outbox, in one transaction. No outbox entry when this
    /// device is alone in the group.
    pub(crate) fn stage_content(
        &self,
        group_id: &[u8],
        body: Body,
    ) -> Result<(Option<OutboxEntry>, Option<HistoryEntry>), ClientError> {
        let message_id = random_id();
        let sent_at_ms = now_ms();
        let staged = self.in_transaction(|provider, tx| {
            let mut g = group::load(provider, group_id)?;
            self.check_before_send(provider, tx, &g)?;
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
                        sender: self.account.username.as_str(),
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
                log_head: self.pinned_head()?,
                padding: Vec::new(),
            });
            let token = group::send_token(provider, &g)?;
            let ciphertext = group::encrypt(provider, &mut g, &self.account.device, &plaintext)?;
            // Alone in the group (the only recipient is this device): nothing to send.
            let alone = recipients.iter().all(|d| *d == self.account.device_id);
            let entry =
                (!alone).then(|| send_entry(message_id, group_id, &recipients, ciphertext, token));
            if let Some(entry) = &entry {
                store::push_outbox(tx, entry)?;
            }
            Ok((entry, history))
        })?;
        Ok(staged)
    }

    /// What every send checks first: a direct conversation still holds
    /// exactly its two accounts. (Messages held from a later epoch do not
    /// stop a send: they prove nothing, and what this device sends in its
    /// epoch is readable only by the members it knows.)
    fn check_before_send(
        &self,
        provider: &MlsProvider<'_>,
        tx: &rusqlite::Connection,
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
            self.check_direct_roster(provider, group_id, &conversation.name)?;
        }
        Ok(())
    }

    /// Commits the proposals other members sent (someone leaving), in every
    /// active group that has some.
    pub(crate) async fn commit_pending_proposals(
        &mut self,
        t: &mut Transport,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut entries = Vec::new();
        for group_id in store::active_groups(&self.db)? {
            let has_pending = {
                let provider = MlsProvider::new(&self.crypto, &self.db);
                group::load(&provider, &group_id)
                    .map(|g| g.pending_proposals().next().is_some())
                    .unwrap_or(false)
            };
            if has_pending {
                self.commit_with_retry(t, &group_id, |p, g, key| {
                    if g.pending_proposals().next().is_none() {
                        return Ok(None);
                    }
                    group::commit_pending_proposals(p, g, key).map(Some)
                })
                .await?;
                entries.extend(self.drain(t).await?);
            }
        }
        Ok(entries)
    }

    /// Builds a commit with `build`, submits it, and if another member's
    /// commit won the epoch, processes that one and tries again. `build`
    /// returns `None` when there is nothing to commit (any more).
    pub(crate) async fn commit_with_retry(
        &mut self,
        t: &mut Transport,
        group_id: &[u8],
        build: impl Fn(
            &MlsProvider<'_>,
            &mut openmls::group::MlsGroup,
            &DeviceKey,
        ) -> Result<Option<PendingCommit>, sotto_core::group::GroupError>,
    ) -> Result<(), ClientError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            // Nothing (left) to commit: another member's commit did it.
            let Some(entry) = self.stage_commit(group_id, &build)? else {
                return Ok(());
            };
            match self.submit(&entry).await? {
                CommitOutcome::Accepted => return Ok(()),
                CommitOutcome::Rejected { .. } => {
                    self.drain(t).await?;
                }
            }
        }
        Err(ClientError::Conflict(MAX_COMMIT_ATTEMPTS))
    }

    /// Builds a commit and stores it in the outbox, in one transaction with
    /// the group's pending-commit state. Public for tests that need two
    /// members to commit at the same epoch; see [`Client::submit_staged`].
    pub(crate) fn stage_commit(
        &self,
        group_id: &[u8],
        build: &impl Fn(
            &MlsProvider<'_>,
            &mut openmls::group::MlsGroup,
            &DeviceKey,
        ) -> Result<Option<PendingCommit>, sotto_core::group::GroupError>,
    ) -> Result<Option<OutboxEntry>, ClientError> {
        self.in_transaction(|provider, tx| {
            let mut g = group::load(provider, group_id)?;
            let Some(pending) = build(provider, &mut g, &self.account.device)? else {
                return Ok(None);
            };
            let entry = commit_entry(group_id, pending);
            store::push_outbox(tx, &entry)?;
            Ok(Some(entry))
        })
    }

    /// Points this profile at another server URL (the server moved),
    /// trusting what it trusted before.
    pub fn set_server_url(&mut self, url: &str) -> Result<(), ClientError> {
        self.set_server(url, self.trust.clone())
    }

    /// Points this profile at another server URL with what to trust for it.
    pub fn set_server(&mut self, url: &str, trust: crate::Trust) -> Result<(), ClientError> {
        crate::endpoint::ServerUrl::parse(url)?.check(&trust)?;
        store::set_server_url(&self.db, url, trust.ca_pem(), trust.insecure_transport)?;
        self.server_url = url.to_owned();
        self.trust = trust;
        self.transport = None;
        self.anonymous = None;
        Ok(())
    }

    /// Updates this device's keys in the group `name` (post-compromise
    /// security), retrying if another member commits first.
    pub async fn update_keys(&mut self, name: &str) -> Result<(), ClientError> {
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.commit_pending_proposals(t).await?;
            let group_id = c.active_group_named(name)?;
            c.commit_with_retry(t, &group_id, |p, g, key| {
                group::update_keys(p, g, key).map(Some)
            })
            .await
        })
        .await
    }

    /// Sends an outbox entry and applies the server's verdict: a commit is
    /// merged when accepted and cleared when another won; a refused
    /// application message is taken out of history.
    pub(crate) async fn submit(
        &mut self,
        entry: &OutboxEntry,
    ) -> Result<CommitOutcome, ClientError> {
        let body = decode_body(&entry.frame)?
            .ok_or_else(|| ClientError::Protocol("empty outbox frame".into()))?;
        let verdict = self.anonymous_request(body).await;
        if matches!(verdict, Err(ClientError::Network(_))) {
            // Still in the outbox: resent, with the same id, on reconnect.
            return verdict.map(|_| CommitOutcome::Accepted);
        }
        // `Err(())`: refused for another reason, reported as the verdict.
        let (outcome, lines) = self.in_transaction(|provider, tx| {
            store::remove_outbox(tx, &entry.message_id)?;
            let mut g = if entry.is_commit {
                Some(group::load(provider, &entry.group_id)?)
            } else {
                None
            };
            Ok(match (&verdict, g.as_mut()) {
                (Ok(_), Some(g)) => {
                    let change = group::merge_pending(provider, g)?;
                    let mut lines = Vec::new();
                    if let Some(row) = store::group(tx, &entry.group_id)?
                        && row.conversation_id.is_some()
                    {
                        let conversation = self.conversation_of(tx, &row)?;
                        lines = self.record_roster(
                            tx,
                            &conversation,
                            &entry.message_id,
                            "you",
                            &change,
                        )?;
                    }
                    (Ok(CommitOutcome::Accepted), lines)
                }
                (Ok(_), None) => (Ok(CommitOutcome::Accepted), Vec::new()),
                (Err(e), Some(g)) => {
                    group::clear_pending(provider, g)?;
                    let outcome = match e {
                        ClientError::Server(err) if err.code == ErrorCode::StaleEpoch as i32 => {
                            Ok(CommitOutcome::Rejected {
                                current_epoch: err.current_epoch,
                            })
                        }
                        _ => Err(()),
                    };
                    (outcome, Vec::new())
                }
                (Err(_), None) => {
                    store::delete_message(tx, &entry.message_id)?;
                    (Err(()), Vec::new())
                }
            })
        })?;
        self.own_lines.extend(lines);
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(()) => verdict.map(|_| CommitOutcome::Accepted),
        }
    }

    /// Resends whatever a crash left in the outbox.
    pub(crate) async fn flush_outbox(&mut self) -> Result<(), ClientError> {
        for entry in store::outbox(&self.db)? {
            match self.submit(&entry).await {
                Ok(_) => {}
                Err(e @ ClientError::Network(_)) => return Err(e),
                Err(e) => tracing::warn!("a message from before a restart could not be sent: {e}"),
            }
        }
        Ok(())
    }
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

pub(crate) fn group_info_body(name: &str) -> Body {
    Body::Info(ConversationInfo {
        kind: v1::ConversationKind::Group as i32,
        name: name.to_owned(),
    })
}

pub(crate) fn encode_body(body: client_frame::Body) -> Vec<u8> {
    ClientFrame {
        request_id: 0,
        body: Some(body),
    }
    .encode_to_vec()
}

pub(crate) fn decode_body(frame: &[u8]) -> Result<Option<client_frame::Body>, ClientError> {
    Ok(sotto_proto::decode_client_frame(frame)
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .body)
}

/// An outbox entry for an application message or proposal, authorised by
/// the group's send capability `send_token`.
pub(crate) fn send_entry(
    message_id: Vec<u8>,
    group_id: &[u8],
    recipients: &[DeviceId],
    payload: Vec<u8>,
    send_token: Vec<u8>,
) -> OutboxEntry {
    let frame = encode_body(client_frame::Body::SendMessage(SendMessage {
        message_id: message_id.clone(),
        group_id: group_id.to_vec(),
        recipients: recipients.iter().map(|d| d.as_bytes().to_vec()).collect(),
        payload,
        send_token,
    }));
    OutboxEntry {
        message_id,
        group_id: group_id.to_vec(),
        is_commit: false,
        frame,
    }
}

pub(crate) fn commit_entry(group_id: &[u8], pending: PendingCommit) -> OutboxEntry {
    let message_id = random_id();
    let frame = encode_body(client_frame::Body::SubmitCommit(SubmitCommit {
        message_id: message_id.clone(),
        group_id: group_id.to_vec(),
        epoch: pending.epoch,
        recipients: pending
            .recipients
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect(),
        commit: pending.commit,
        welcome_message_id: random_id(),
        welcome_recipients: pending
            .welcome_recipients
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect(),
        welcome: pending.welcome.unwrap_or_default(),
        send_token: pending.send_token,
        next_token_hash: pending.next_token_hash,
    }));
    OutboxEntry {
        message_id,
        group_id: group_id.to_vec(),
        is_commit: true,
        frame,
    }
}
