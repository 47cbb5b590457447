use crate::ClientError;
use crate::provider::MlsProvider;
use crate::store::{
    self, Conversation, ConversationKind, EntryKind, GroupState, HistoryEntry, OutboxEntry,
};
use crate::transport::{Next, Push, Transport};
use openmls_rust_crypto::RustCrypto;
use rusqlite::Connection;
use sotto_core::content::{self, AppContent, Body, ConversationInfo, Text};
use sotto_core::group::{self, CheckedKeyPackage, Inbound, PendingCommit, RosterChange};
use sotto_core::identity::{Account, DeviceId, DeviceKey, IdentityKey, MemberId, Username};
use sotto_proto::Message as _;
use sotto_proto::v1::{
    self, ClaimKeyPackages, ClientFrame, Delivery, ErrorCode, Login, Register, SendMessage,
    SubmitCommit, Sync, UploadKeyPackages, client_frame, response,
};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One-time KeyPackages a device keeps on the server.
const KEY_PACKAGE_POOL: u32 = 20;
/// Below this many, the device tops its pool up.
const KEY_PACKAGE_LOW: u32 = 10;
/// How often a commit is retried when other members commit first.
const MAX_COMMIT_ATTEMPTS: usize = 8;
/// Ping interval while listening, well inside the server's idle timeout.
const LISTEN_PING: Duration = Duration::from_secs(30);

/// The verdict on a commit this device submitted.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Accepted and merged.
    Accepted,
    /// Another member's commit for the same epoch won; ours was dropped.
    Rejected { current_epoch: u64 },
}

/// A member device of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    pub username: String,
    pub device_id: String,
}

/// A Sotto account on this device: its profile database and, while
/// connected, its connection to the server.
pub struct Client {
    db: Connection,
    crypto: RustCrypto,
    account: Account,
    server_url: String,
    transport: Option<Transport>,
    key_packages_low: bool,
    /// History lines this device caused itself (its own accepted commits),
    /// handed out with the next batch of received lines.
    own_lines: Vec<HistoryEntry>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("username", &self.account.username)
            .field("device_id", &self.account.device_id)
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_id() -> Vec<u8> {
    rand::random::<[u8; sotto_proto::ID_LEN]>().to_vec()
}

fn profile_db(dir: &Path) -> std::path::PathBuf {
    dir.join("sotto.db")
}

impl Client {
    /// Creates an account on the server and stores it in the profile `dir`.
    pub async fn register(
        dir: &Path,
        username: &str,
        server_url: &str,
    ) -> Result<Self, ClientError> {
        let username = Username::parse(username)?;
        std::fs::create_dir_all(dir).map_err(|e| {
            ClientError::Usage(format!(
                "cannot create profile directory {}: {e}",
                dir.display()
            ))
        })?;
        let db = store::open(&profile_db(dir))?;
        if let Some(existing) = store::load_profile(&db)? {
            return Err(ClientError::Usage(format!(
                "profile {} already holds the account {}; use another --profile",
                dir.display(),
                existing.username
            )));
        }
        let account = Account::generate(username);
        let mut transport = Transport::connect(server_url).await?;
        let register = Register {
            username: account.username.to_string(),
            identity_key: account.identity_public().to_vec(),
            device: Some(account.signed_device()),
            challenge_signature: account.device.sign_login(
                &transport.nonce,
                &account.username,
                account.device_id,
            ),
        };
        transport
            .request(client_frame::Body::Register(register))
            .await?;
        store::save_profile(
            &db,
            &store::ProfileRow {
                username: account.username.to_string(),
                server_url: server_url.to_owned(),
                identity_secret: account.identity.secret().to_vec(),
                device_id: account.device_id.as_bytes().to_vec(),
                device_secret: account.device.secret().to_vec(),
            },
        )?;
        let mut client = Self {
            db,
            crypto: RustCrypto::default(),
            account,
            server_url: server_url.to_owned(),
            transport: None,
            key_packages_low: false,
            own_lines: Vec::new(),
        };
        client
            .upload_key_packages(&mut transport, KEY_PACKAGE_POOL, true)
            .await?;
        client.transport = Some(transport);
        Ok(client)
    }

    /// Opens the account stored in the profile `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        let path = profile_db(dir);
        if !path.exists() {
            return Err(ClientError::Usage(format!(
                "no account in profile {}; create one with `sotto register USERNAME --server URL`",
                dir.display()
            )));
        }
        let db = store::open(&path)?;
        let row = store::load_profile(&db)?.ok_or_else(|| {
            ClientError::Usage(format!(
                "no account in profile {}; run `sotto register` first",
                dir.display()
            ))
        })?;
        let account = Account {
            username: Username::parse(&row.username)?,
            identity: IdentityKey::from_secret(&row.identity_secret)?,
            device_id: DeviceId::from_slice(&row.device_id)?,
            device: DeviceKey::from_secret(&row.device_secret)?,
        };
        Ok(Self {
            db,
            crypto: RustCrypto::default(),
            account,
            server_url: row.server_url,
            transport: None,
            key_packages_low: false,
            own_lines: Vec::new(),
        })
    }

    pub fn username(&self) -> &Username {
        &self.account.username
    }

    pub fn device_id(&self) -> DeviceId {
        self.account.device_id
    }

    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Hex of the account's identity key.
    pub fn identity_key(&self) -> String {
        hex::encode(self.account.identity_public())
    }

    /// Closes the connection, if any.
    pub async fn disconnect(&mut self) {
        if let Some(t) = self.transport.take() {
            t.close().await;
        }
    }

    /// Runs `op` with a logged-in connection, connecting first if needed. A
    /// connection that failed is dropped, so the next call reconnects.
    async fn connected<T>(
        &mut self,
        op: impl AsyncFnOnce(&mut Self, &mut Transport) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut t = match self.transport.take() {
            Some(t) => t,
            None => self.login().await?,
        };
        let result = op(self, &mut t).await;
        if !matches!(result, Err(ClientError::Network(_))) {
            self.transport = Some(t);
        }
        result
    }

    async fn login(&mut self) -> Result<Transport, ClientError> {
        let mut t = Transport::connect(&self.server_url).await?;
        let login = Login {
            username: self.account.username.to_string(),
            device_id: self.account.device_id.as_bytes().to_vec(),
            challenge_signature: self.account.device.sign_login(
                &t.nonce,
                &self.account.username,
                self.account.device_id,
            ),
        };
        if let response::Result::LoggedIn(status) =
            t.request(client_frame::Body::Login(login)).await?
            && (status.key_packages_remaining < KEY_PACKAGE_LOW || !status.has_last_resort)
        {
            let missing = KEY_PACKAGE_POOL.saturating_sub(status.key_packages_remaining);
            self.upload_key_packages(&mut t, missing, !status.has_last_resort)
                .await?;
        }
        self.flush_outbox(&mut t).await?;
        Ok(t)
    }

    async fn upload_key_packages(
        &mut self,
        t: &mut Transport,
        count: u32,
        last_resort: bool,
    ) -> Result<(), ClientError> {
        let tx = self.db.unchecked_transaction()?;
        let (key_packages, last_resort) = {
            let provider = MlsProvider::new(&self.crypto, &tx);
            let key_packages = (0..count)
                .map(|_| group::new_key_package(&provider, &self.account, false))
                .collect::<Result<Vec<_>, _>>()?;
            let last_resort = if last_resort {
                group::new_key_package(&provider, &self.account, true)?
            } else {
                Vec::new()
            };
            (key_packages, last_resort)
        };
        tx.commit()?;
        t.request(client_frame::Body::UploadKeyPackages(UploadKeyPackages {
            key_packages,
            last_resort,
        }))
        .await?;
        self.key_packages_low = false;
        Ok(())
    }

    // ------------------------------------------------------------ receiving

    /// Receives and processes everything queued for this device, commits
    /// proposals other members are waiting on, and returns the new history
    /// lines.
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
                    Next::Response(..) => {}
                }
            }
        })
        .await
    }

    /// Processes deliveries until the server says the mailbox is empty.
    async fn drain(&mut self, t: &mut Transport) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut entries = Vec::new();
        let sync_id = t.start_request(client_frame::Body::Sync(Sync {})).await?;
        loop {
            match t.next(None).await? {
                Next::Push(Push::Delivery(d)) => self.handle_delivery(t, d, &mut entries).await?,
                Next::Push(Push::KeyPackagesLow) => self.key_packages_low = true,
                Next::Response(id, response::Result::SyncDone(_)) if id == sync_id => break,
                Next::Response(..) => {}
            }
        }
        if self.key_packages_low {
            self.upload_key_packages(t, KEY_PACKAGE_POOL - KEY_PACKAGE_LOW, false)
                .await?;
        }
        Ok(entries)
    }

    /// Applies one delivery atomically, then acknowledges it. A message that
    /// cannot be processed (bad ciphertext, unknown group) is recorded as
    /// processed and acknowledged so it cannot block the queue; a local
    /// storage failure is not acknowledged, so the message comes again.
    async fn handle_delivery(
        &mut self,
        t: &mut Transport,
        d: Delivery,
        out: &mut Vec<HistoryEntry>,
    ) -> Result<(), ClientError> {
        match self.apply_delivery(&d) {
            Ok(entries) => out.extend(entries),
            Err(ClientError::Store(e)) => return Err(ClientError::Store(e)),
            Err(e) => {
                tracing::warn!(message_id = %hex::encode(&d.message_id), "dropped an undecryptable message: {e}");
                store::mark_processed(&self.db, &d.message_id)?;
            }
        }
        t.ack(d.seq).await
    }

    fn apply_delivery(&self, d: &Delivery) -> Result<Vec<HistoryEntry>, ClientError> {
        let tx = self.db.unchecked_transaction()?;
        if store::is_processed(&tx, &d.message_id)? {
            return Ok(Vec::new());
        }
        let entries = {
            let provider = MlsProvider::new(&self.crypto, &tx);
            let inbound = group::process(&provider, &d.payload)?;
            self.record_inbound(&tx, &d.message_id, inbound)?
        };
        store::mark_processed(&tx, &d.message_id)?;
        tx.commit()?;
        Ok(entries)
    }

    /// Turns a processed MLS message into conversations and history lines.
    fn record_inbound(
        &self,
        conn: &Connection,
        message_id: &[u8],
        inbound: Inbound,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let now = now_ms();
        let system_id = |i: u8| [message_id, &[0xff, i]].concat();
        match inbound {
            Inbound::Joined { group_id, members } => {
                // The conversation is named by the ConversationInfo that
                // follows the Welcome.
                store::insert_group(conn, &group_id, None)?;
                tracing::debug!(members = members.len(), "joined a group");
                Ok(Vec::new())
            }
            Inbound::Application {
                group_id,
                sender,
                plaintext,
            } => {
                let Some(row) = store::group(conn, &group_id)? else {
                    return Ok(Vec::new());
                };
                if row.state != GroupState::Active {
                    return Ok(Vec::new());
                }
                let app = content::decode(&plaintext)?;
                match app.body {
                    Some(Body::Info(info)) => {
                        if row.conversation_id.is_some() {
                            return Ok(Vec::new());
                        }
                        let conversation = if info.kind == v1::ConversationKind::Direct as i32 {
                            store::ensure_conversation(
                                conn,
                                ConversationKind::Direct,
                                sender.username.as_str(),
                            )?
                        } else {
                            let name = store::free_group_name(conn, &info.name)?;
                            store::ensure_conversation(conn, ConversationKind::Group, &name)?
                        };
                        store::set_group_conversation(conn, &group_id, conversation.id)?;
                        let text = match conversation.kind {
                            ConversationKind::Direct => {
                                format!("{} started a conversation", sender.username)
                            }
                            ConversationKind::Group => {
                                format!("{} added you to {}", sender.username, conversation.name)
                            }
                        };
                        Ok(store::insert_message(
                            conn,
                            &conversation,
                            &store::NewMessage {
                                id: &system_id(0),
                                sender: "system",
                                kind: EntryKind::System,
                                text: &text,
                                sent_at_ms: app.sent_at_ms,
                            },
                            now,
                        )?
                        .into_iter()
                        .collect())
                    }
                    Some(Body::Text(text)) => {
                        let conversation = self.conversation_of(conn, &row)?;
                        Ok(store::insert_message(
                            conn,
                            &conversation,
                            &store::NewMessage {
                                id: message_id,
                                sender: sender.username.as_str(),
                                kind: EntryKind::Text,
                                text: &text.text,
                                sent_at_ms: app.sent_at_ms,
                            },
                            now,
                        )?
                        .into_iter()
                        .collect())
                    }
                    None => Ok(Vec::new()),
                }
            }
            Inbound::Proposal { .. } => Ok(Vec::new()),
            Inbound::Commit {
                group_id,
                sender,
                change,
                self_removed,
            } => {
                let Some(row) = store::group(conn, &group_id)? else {
                    return Ok(Vec::new());
                };
                if self_removed {
                    store::set_group_state(conn, &group_id, GroupState::Removed)?;
                }
                if row.state != GroupState::Active {
                    return Ok(Vec::new());
                }
                let conversation = self.conversation_of(conn, &row)?;
                self.record_roster(
                    conn,
                    &conversation,
                    message_id,
                    sender.username.as_str(),
                    &change,
                )
            }
        }
    }

    /// Records a roster change as system lines: "`actor` added …".
    fn record_roster(
        &self,
        conn: &Connection,
        conversation: &Conversation,
        message_id: &[u8],
        actor: &str,
        change: &RosterChange,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let mut lines = Vec::new();
        if !change.added.is_empty() {
            lines.push(format!("{actor} added {}", usernames(&change.added)));
        }
        for m in &change.left {
            lines.push(format!("{} left", m.username));
        }
        for m in &change.removed {
            if m.username == self.account.username {
                lines.push(format!("{actor} removed you"));
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
    fn conversation_of(
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
        let name = format!(
            "group-{}",
            hex::encode(row.group_id.get(..4).unwrap_or(&row.group_id))
        );
        let conversation = store::ensure_conversation(conn, ConversationKind::Group, &name)?;
        store::set_group_conversation(conn, &row.group_id, conversation.id)?;
        Ok(conversation)
    }

    // ------------------------------------------------------------ sending

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
                .map(|conv| store::active_group(&c.db, conv.id))
                .transpose()?
                .flatten()
            {
                Some(group_id) => group_id,
                None => {
                    c.start_conversation(
                        t,
                        ConversationKind::Direct,
                        peer.as_str(),
                        std::slice::from_ref(&peer),
                    )
                    .await?
                    .1
                }
            };
            c.send_text(t, &group_id, text).await
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
            c.send_text(t, &group_id, text).await
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
            c.start_conversation(t, ConversationKind::Group, name, &usernames)
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
            let key_packages = c.claim(t, &user).await?;
            c.commit_with_retry(t, &group_id, |p, g, key, own| {
                group::add_members(p, g, key, own, &key_packages)
            })
            .await?;
            // Tell the new members what this conversation is.
            c.send_content(t, &group_id, group_info_body(name)).await?;
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
            c.commit_with_retry(t, &group_id, |p, g, key, own| {
                group::remove_user(p, g, key, own, &user)
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
            let tx = c.db.unchecked_transaction()?;
            let entry = {
                let provider = MlsProvider::new(&c.crypto, &tx);
                let mut g = group::load(&provider, &group_id)?;
                let proposal = group::leave(&provider, &mut g, &c.account.device)?;
                let recipients = group::recipients(&g, c.account.device_id);
                let entry = send_entry(random_id(), &group_id, &recipients, proposal);
                store::push_outbox(&tx, &entry)?;
                store::set_group_state(&tx, &group_id, GroupState::Left)?;
                entry
            };
            tx.commit()?;
            c.submit(t, &entry).await.map(|_| ())
        })
        .await
    }

    /// Claims and checks KeyPackages for every device of `user`, pinning the
    /// user's identity key on first contact.
    async fn claim(
        &mut self,
        t: &mut Transport,
        user: &Username,
    ) -> Result<Vec<CheckedKeyPackage>, ClientError> {
        let request = ClaimKeyPackages {
            username: user.to_string(),
        };
        let bundle = match t
            .request(client_frame::Body::ClaimKeyPackages(request))
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
        match store::contact_key(&self.db, user.as_str())? {
            Some(pinned) if pinned != bundle.identity_key => {
                return Err(ClientError::IdentityChanged(user.to_string()));
            }
            Some(_) => {}
            None => store::save_contact(&self.db, user.as_str(), &bundle.identity_key)?,
        }
        let provider = MlsProvider::new(&self.crypto, &self.db);
        let checked = bundle
            .devices
            .iter()
            .map(|claimed| group::check_key_package(&provider, user, &bundle.identity_key, claimed))
            .collect::<Result<Vec<_>, _>>()?;
        if checked.is_empty() {
            return Err(ClientError::Usage(format!(
                "{user} has no device that can be added right now"
            )));
        }
        Ok(checked)
    }

    /// Creates an MLS group for a new conversation with `members`, commits
    /// it, and tells the members what the conversation is.
    async fn start_conversation(
        &mut self,
        t: &mut Transport,
        kind: ConversationKind,
        name: &str,
        members: &[Username],
    ) -> Result<(Conversation, Vec<u8>), ClientError> {
        let mut key_packages = Vec::new();
        for user in members {
            key_packages.extend(self.claim(t, user).await?);
        }
        let tx = self.db.unchecked_transaction()?;
        let (conversation, group_id, entry) = {
            let provider = MlsProvider::new(&self.crypto, &tx);
            let mut g = group::create_group(&provider, &self.account)?;
            let group_id = g.group_id().to_vec();
            let conversation = store::ensure_conversation(&tx, kind, name)?;
            store::insert_group(&tx, &group_id, Some(conversation.id))?;
            let entry = if key_packages.is_empty() {
                None
            } else {
                let pending = group::add_members(
                    &provider,
                    &mut g,
                    &self.account.device,
                    self.account.device_id,
                    &key_packages,
                )?;
                let entry = commit_entry(&group_id, pending);
                store::push_outbox(&tx, &entry)?;
                Some(entry)
            };
            (conversation, group_id, entry)
        };
        tx.commit()?;
        // A group of one exists only locally until someone is added.
        if let Some(entry) = entry
            && let CommitOutcome::Rejected { current_epoch } = self.submit(t, &entry).await?
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
            self.send_content(t, &group_id, Body::Info(info)).await?;
        }
        Ok((conversation, group_id))
    }

    async fn send_text(
        &mut self,
        t: &mut Transport,
        group_id: &[u8],
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        self.send_content(
            t,
            group_id,
            Body::Text(Text {
                text: text.to_owned(),
            }),
        )
        .await?
        .ok_or_else(|| ClientError::Usage("message was not recorded".into()))
    }

    /// Encrypts `body` for the group and sends it; see [`Client::stage_content`].
    async fn send_content(
        &mut self,
        t: &mut Transport,
        group_id: &[u8],
        body: Body,
    ) -> Result<Option<HistoryEntry>, ClientError> {
        let (entry, history) = self.stage_content(group_id, body)?;
        if let Some(entry) = entry {
            self.submit(t, &entry).await?;
        }
        Ok(history)
    }

    /// Encrypts `body` for the group and records it in history (for texts)
    /// and in the outbox, in one transaction. No outbox entry when this
    /// device is alone in the group.
    fn stage_content(
        &self,
        group_id: &[u8],
        body: Body,
    ) -> Result<(Option<OutboxEntry>, Option<HistoryEntry>), ClientError> {
        let message_id = random_id();
        let sent_at_ms = now_ms();
        let tx = self.db.unchecked_transaction()?;
        let staged = {
            let provider = MlsProvider::new(&self.crypto, &tx);
            let mut g = group::load(&provider, group_id)?;
            let recipients = group::recipients(&g, self.account.device_id);
            let history = match (
                &body,
                store::group(&tx, group_id)?.and_then(|r| r.conversation_id),
            ) {
                (Body::Text(text), Some(conversation_id)) => {
                    let conversation = store::conversation_by_id(&tx, conversation_id)?
                        .ok_or_else(|| ClientError::Usage("conversation vanished".into()))?;
                    let message = store::NewMessage {
                        id: &message_id,
                        sender: self.account.username.as_str(),
                        kind: EntryKind::Text,
                        text: &text.text,
                        sent_at_ms,
                    };
                    store::insert_message(&tx, &conversation, &message, sent_at_ms)?
                }
                _ => None,
            };
            let plaintext = content::encode(&AppContent {
                id: message_id.clone(),
                sent_at_ms,
                body: Some(body),
            });
            let ciphertext = group::encrypt(&provider, &mut g, &self.account.device, &plaintext)?;
            let entry = (!recipients.is_empty())
                .then(|| send_entry(message_id, group_id, &recipients, ciphertext));
            if let Some(entry) = &entry {
                store::push_outbox(&tx, entry)?;
            }
            (entry, history)
        };
        tx.commit()?;
        Ok(staged)
    }

    /// Commits the proposals other members sent (someone leaving), in every
    /// active group that has some.
    async fn commit_pending_proposals(
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
                self.commit_with_retry(t, &group_id, |p, g, key, own| {
                    if g.pending_proposals().next().is_none() {
                        return Err(sotto_core::group::GroupError::Misuse(
                            "nothing to commit".into(),
                        ));
                    }
                    group::commit_pending_proposals(p, g, key, own)
                })
                .await
                .or_else(|e| match e {
                    ClientError::Group(sotto_core::group::GroupError::Misuse(_)) => Ok(()),
                    e => Err(e),
                })?;
                entries.extend(self.drain(t).await?);
            }
        }
        Ok(entries)
    }

    /// Builds a commit with `build`, submits it, and if another member's
    /// commit won the epoch, processes that one and tries again.
    async fn commit_with_retry(
        &mut self,
        t: &mut Transport,
        group_id: &[u8],
        build: impl Fn(
            &MlsProvider<'_>,
            &mut openmls::group::MlsGroup,
            &DeviceKey,
            DeviceId,
        ) -> Result<PendingCommit, sotto_core::group::GroupError>,
    ) -> Result<(), ClientError> {
        for _ in 0..MAX_COMMIT_ATTEMPTS {
            let entry = self.stage_commit(group_id, &build)?;
            match self.submit(t, &entry).await? {
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
    fn stage_commit(
        &self,
        group_id: &[u8],
        build: &impl Fn(
            &MlsProvider<'_>,
            &mut openmls::group::MlsGroup,
            &DeviceKey,
            DeviceId,
        ) -> Result<PendingCommit, sotto_core::group::GroupError>,
    ) -> Result<OutboxEntry, ClientError> {
        let tx = self.db.unchecked_transaction()?;
        let entry = {
            let provider = MlsProvider::new(&self.crypto, &tx);
            let mut g = group::load(&provider, group_id)?;
            let pending = build(
                &provider,
                &mut g,
                &self.account.device,
                self.account.device_id,
            )?;
            let entry = commit_entry(group_id, pending);
            store::push_outbox(&tx, &entry)?;
            entry
        };
        tx.commit()?;
        Ok(entry)
    }

    /// Encrypts a text for an existing conversation and puts it in the
    /// outbox without connecting; it is sent by the next command that
    /// connects (or [`Client::submit_staged`]).
    pub fn queue_text(
        &self,
        kind: ConversationKind,
        name: &str,
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        check_text(text)?;
        let conversation = self.conversation_named(kind, name)?;
        let group_id = store::active_group(&self.db, conversation.id)?.ok_or_else(|| {
            ClientError::Usage(format!("you are no longer in the conversation {name}"))
        })?;
        let (_, history) = self.stage_content(
            &group_id,
            Body::Text(Text {
                text: text.to_owned(),
            }),
        )?;
        history.ok_or_else(|| ClientError::Usage("message was not recorded".into()))
    }

    /// The MLS payloads of application messages waiting in the outbox. For
    /// tests that need the exact ciphertext the server will hold.
    pub fn outbox_payloads(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut payloads = Vec::new();
        for entry in store::outbox(&self.db)? {
            if let Some(client_frame::Body::SendMessage(m)) = decode_body(&entry.frame)? {
                payloads.push(m.payload);
            }
        }
        Ok(payloads)
    }

    /// Points this profile at another server URL (the server moved).
    pub fn set_server_url(&mut self, url: &str) -> Result<(), ClientError> {
        crate::transport::websocket_url(url)?;
        self.db
            .execute("UPDATE profile SET server_url = ?1", [url])?;
        self.server_url = url.to_owned();
        self.transport = None;
        Ok(())
    }

    /// Stages a key-update commit in the group `name` without sending it.
    /// With [`Client::submit_staged`], lets tests make two members commit at
    /// the same epoch.
    pub fn stage_key_update(&self, name: &str) -> Result<(), ClientError> {
        let group_id = self.active_group_named(name)?;
        self.stage_commit(&group_id, &|p, g, key, own| {
            group::update_keys(p, g, key, own)
        })
        .map(|_| ())
    }

    /// Submits every staged frame in the outbox; see [`Client::stage_key_update`].
    pub async fn submit_staged(&mut self) -> Result<Vec<CommitOutcome>, ClientError> {
        self.connected(async |c, t| {
            let mut outcomes = Vec::new();
            for entry in store::outbox(&c.db)? {
                outcomes.push(c.submit(t, &entry).await?);
            }
            Ok(outcomes)
        })
        .await
    }

    /// Updates this device's keys in the group `name` (post-compromise
    /// security), retrying if another member commits first.
    pub async fn update_keys(&mut self, name: &str) -> Result<(), ClientError> {
        self.connected(async |c, t| {
            c.drain(t).await?;
            c.commit_pending_proposals(t).await?;
            let group_id = c.active_group_named(name)?;
            c.commit_with_retry(t, &group_id, |p, g, key, own| {
                group::update_keys(p, g, key, own)
            })
            .await
        })
        .await
    }

    /// Sends an outbox entry and applies the server's verdict: a commit is
    /// merged when accepted and cleared when another won; a refused
    /// application message is taken out of history.
    async fn submit(
        &mut self,
        t: &mut Transport,
        entry: &OutboxEntry,
    ) -> Result<CommitOutcome, ClientError> {
        let body = decode_body(&entry.frame)?
            .ok_or_else(|| ClientError::Protocol("empty outbox frame".into()))?;
        let verdict = t.request(body).await;
        if matches!(verdict, Err(ClientError::Network(_))) {
            // Still in the outbox: resent, with the same id, on reconnect.
            return verdict.map(|_| CommitOutcome::Accepted);
        }
        let tx = self.db.unchecked_transaction()?;
        let outcome = {
            let provider = MlsProvider::new(&self.crypto, &tx);
            store::remove_outbox(&tx, &entry.message_id)?;
            let mut g = if entry.is_commit {
                Some(group::load(&provider, &entry.group_id)?)
            } else {
                None
            };
            match (&verdict, g.as_mut()) {
                (Ok(_), Some(g)) => {
                    let change = group::merge_pending(&provider, g)?;
                    if let Some(row) = store::group(&tx, &entry.group_id)?
                        && row.conversation_id.is_some()
                    {
                        let conversation = self.conversation_of(&tx, &row)?;
                        let lines = self.record_roster(
                            &tx,
                            &conversation,
                            &entry.message_id,
                            "you",
                            &change,
                        )?;
                        self.own_lines.extend(lines);
                    }
                    Ok(CommitOutcome::Accepted)
                }
                (Ok(_), None) => Ok(CommitOutcome::Accepted),
                (Err(e), Some(g)) => {
                    group::clear_pending(&provider, g)?;
                    match e {
                        ClientError::Server(err) if err.code == ErrorCode::StaleEpoch as i32 => {
                            Ok(CommitOutcome::Rejected {
                                current_epoch: err.current_epoch,
                            })
                        }
                        _ => Err(()),
                    }
                }
                (Err(_), None) => {
                    tx.execute("DELETE FROM messages WHERE id = ?1", [&entry.message_id])?;
                    Err(())
                }
            }
        };
        tx.commit()?;
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(()) => verdict.map(|_| CommitOutcome::Accepted),
        }
    }

    /// Resends whatever a crash left in the outbox.
    async fn flush_outbox(&mut self, t: &mut Transport) -> Result<(), ClientError> {
        for entry in store::outbox(&self.db)? {
            match self.submit(t, &entry).await {
                Ok(_) => {}
                Err(e @ ClientError::Network(_)) => return Err(e),
                Err(e) => tracing::warn!("a message from before a restart could not be sent: {e}"),
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ local queries

    fn active_group_named(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        let conversation = store::conversation(&self.db, ConversationKind::Group, name)?
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "you have no group named {name}; see `sotto group list`"
                ))
            })?;
        store::active_group(&self.db, conversation.id)?
            .ok_or_else(|| ClientError::Usage(format!("you are no longer a member of {name}")))
    }

    fn conversation_named(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Conversation, ClientError> {
        store::conversation(&self.db, kind, name)?.ok_or_else(|| match kind {
            ConversationKind::Direct => {
                ClientError::Usage(format!("you have no conversation with {name}"))
            }
            ConversationKind::Group => {
                ClientError::Usage(format!("you have no group named {name}"))
            }
        })
    }

    /// The history of a conversation, oldest first.
    pub fn history(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        Ok(store::history(&self.db, &conversation)?)
    }

    /// The names of this account's group conversations that it is still in.
    pub fn groups(&self) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        for conversation in store::all_conversations(&self.db, ConversationKind::Group)? {
            if store::active_group(&self.db, conversation.id)?.is_some() {
                names.push(conversation.name);
            }
        }
        Ok(names)
    }

    /// The member devices of the group `name`, as of the last sync.
    pub fn members(&self, name: &str) -> Result<Vec<MemberInfo>, ClientError> {
        let group_id = self.active_group_named(name)?;
        let provider = MlsProvider::new(&self.crypto, &self.db);
        let g = group::load(&provider, &group_id)?;
        let mut members: Vec<MemberInfo> = group::members(&g)
            .into_iter()
            .map(|m: MemberId| MemberInfo {
                username: m.username.to_string(),
                device_id: m.device_id.to_string(),
            })
            .collect();
        members.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(members)
    }

    /// The group's current epoch and epoch authenticator: equal on every
    /// member that has processed the same commits.
    pub fn epoch_state(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<(u64, Vec<u8>), ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        let group_id = store::active_group(&self.db, conversation.id)?
            .ok_or_else(|| ClientError::Usage(format!("no active group for {name}")))?;
        let provider = MlsProvider::new(&self.crypto, &self.db);
        let g = group::load(&provider, &group_id)?;
        Ok((
            g.epoch().as_u64(),
            g.epoch_authenticator().as_slice().to_vec(),
        ))
    }

    /// Tries to decrypt a raw MLS message with this device's state without
    /// storing anything. For tests proving a removed member cannot read.
    pub fn try_decrypt(&self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        let tx = self.db.unchecked_transaction()?;
        let provider = MlsProvider::new(&self.crypto, &tx);
        match group::process(&provider, payload)? {
            Inbound::Application { plaintext, .. } => Ok(plaintext),
            other => Err(ClientError::Usage(format!(
                "not an application message: {other:?}"
            ))),
        }
        // `tx` is dropped here: rolled back.
    }
}

fn usernames(members: &[MemberId]) -> String {
    let mut names: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

fn check_text(text: &str) -> Result<(), ClientError> {
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

fn group_info_body(name: &str) -> Body {
    Body::Info(ConversationInfo {
        kind: v1::ConversationKind::Group as i32,
        name: name.to_owned(),
    })
}

fn encode_body(body: client_frame::Body) -> Vec<u8> {
    ClientFrame {
        request_id: 0,
        body: Some(body),
    }
    .encode_to_vec()
}

fn decode_body(frame: &[u8]) -> Result<Option<client_frame::Body>, ClientError> {
    Ok(sotto_proto::decode_client_frame(frame)
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .body)
}

fn send_entry(
    message_id: Vec<u8>,
    group_id: &[u8],
    recipients: &[DeviceId],
    payload: Vec<u8>,
) -> OutboxEntry {
    let frame = encode_body(client_frame::Body::SendMessage(SendMessage {
        message_id: message_id.clone(),
        group_id: group_id.to_vec(),
        recipients: recipients.iter().map(|d| d.as_bytes().to_vec()).collect(),
        payload,
    }));
    OutboxEntry {
        message_id,
        group_id: group_id.to_vec(),
        is_commit: false,
        frame,
    }
}

fn commit_entry(group_id: &[u8], pending: PendingCommit) -> OutboxEntry {
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
    }));
    OutboxEntry {
        message_id,
        group_id: group_id.to_vec(),
        is_commit: true,
        frame,
    }
}
