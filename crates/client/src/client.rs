use crate::ClientError;
use crate::endpoint::Trust;
use crate::provider::MlsProvider;
use crate::store::{self, Conversation, ConversationKind, HistoryEntry};
use crate::transport::Transport;
use openmls_rust_crypto::RustCrypto;
use rusqlite::Connection;
use sotto_core::group;
use sotto_core::identity::{Account, DeviceId, DeviceKey, IdentityKey, MemberId, Username};
use sotto_proto::v1::{Login, Register, UploadKeyPackages, client_frame, response};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One-time KeyPackages a device keeps on the server.
pub(crate) const KEY_PACKAGE_POOL: u32 = 20;
/// Below this many, the device tops its pool up.
pub(crate) const KEY_PACKAGE_LOW: u32 = 10;
/// How often a commit is retried when other members commit first.
pub(crate) const MAX_COMMIT_ATTEMPTS: usize = 8;
/// Ping interval while listening, well inside the server's idle timeout.
pub(crate) const LISTEN_PING: Duration = Duration::from_secs(30);

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
    pub(crate) db: Connection,
    pub(crate) crypto: RustCrypto,
    pub(crate) account: Account,
    pub(crate) server_url: String,
    /// What to trust on the way to the server (TLS roots, plain HTTP).
    pub(crate) trust: Trust,
    pub(crate) transport: Option<Transport>,
    pub(crate) key_packages_low: bool,
    /// History lines this device caused itself (its own accepted commits),
    /// handed out with the next batch of received lines.
    pub(crate) own_lines: Vec<HistoryEntry>,
    /// A connection that never logs in, for everything that need not say who
    /// asks: sends (authorised by the group's capability), KeyPackage claims
    /// and key-log lookups. Sealed sender.
    pub(crate) anonymous: Option<Transport>,
    /// The server's transparency-log key, pinned when the profile was made.
    pub(crate) log_key: Vec<u8>,
    pub(crate) accounts: crate::keys::Accounts,
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn random_id() -> Vec<u8> {
    rand::random::<[u8; sotto_proto::ID_LEN]>().to_vec()
}

pub(crate) fn profile_db(dir: &Path) -> std::path::PathBuf {
    dir.join("sotto.db")
}

/// Creates (or opens) the profile database in `dir`, which must not hold an
/// account yet.
pub(crate) fn open_new_profile(dir: &Path) -> Result<Connection, ClientError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
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
    Ok(db)
}

impl Client {
    /// Creates an account on the server and stores it in the profile `dir`.
    pub async fn register(
        dir: &Path,
        username: &str,
        server_url: &str,
    ) -> Result<Self, ClientError> {
        Self::register_with_invite(dir, username, server_url, None, &Trust::web_roots()).await
    }

    /// Like [`Client::register`], with the invite code a server with
    /// invite-only registration asks for, and what to trust on the way to
    /// the server (`--ca-file`, `--insecure-transport`; the profile keeps it).
    pub async fn register_with_invite(
        dir: &Path,
        username: &str,
        server_url: &str,
        invite_code: Option<&str>,
        trust: &Trust,
    ) -> Result<Self, ClientError> {
        let username = Username::parse(username)?;
        let db = open_new_profile(dir)?;
        let account = Account::generate(username);
        let mut transport = Transport::connect(server_url, trust).await?;
        let register = Register {
            username: account.username.to_string(),
            identity_key: account.identity_public().to_vec(),
            device: Some(account.signed_device()),
            challenge_signature: account.device.sign_login(
                &transport.nonce,
                &account.username,
                account.device_id,
            ),
            log_entries: account.registration_log_entries(),
            invite_code: invite_code.unwrap_or_default().to_owned(),
        };
        transport
            .request(client_frame::Body::Register(register))
            .await?;
        let log_key = transport.log_key.clone();
        Self::create(db, account, server_url, trust, log_key, transport).await
    }

    /// Saves a new profile and finishes setting up its device: checks the
    /// account's own log entries (pinning the log head) and uploads
    /// KeyPackages.
    pub(crate) async fn create(
        db: Connection,
        account: Account,
        server_url: &str,
        trust: &Trust,
        log_key: Vec<u8>,
        mut transport: Transport,
    ) -> Result<Self, ClientError> {
        store::save_profile(
            &db,
            &store::ProfileRow {
                username: account.username.to_string(),
                server_url: server_url.to_owned(),
                identity_secret: account.identity.secret().to_vec(),
                device_id: account.device_id.as_bytes().to_vec(),
                device_secret: account.device.secret().to_vec(),
                log_key: log_key.clone(),
                ca_pem: trust.ca_pem().map(str::to_owned),
                insecure_transport: trust.insecure_transport,
            },
        )?;
        let mut client =
            Self::from_parts(db, account, server_url.to_owned(), trust.clone(), log_key);
        let own = client.account.username.clone();
        let state = client.verify_account(&own).await?;
        if state.devices.get(client.account.device_id.as_bytes())
            != Some(&client.account.device.public())
        {
            return Err(ClientError::KeyLog(
                "the key log does not list this device for your account".into(),
            ));
        }
        client
            .upload_key_packages(&mut transport, KEY_PACKAGE_POOL, true)
            .await?;
        client.transport = Some(transport);
        Ok(client)
    }

    pub(crate) fn from_parts(
        db: Connection,
        account: Account,
        server_url: String,
        trust: Trust,
        log_key: Vec<u8>,
    ) -> Self {
        Self {
            db,
            crypto: RustCrypto::default(),
            account,
            server_url,
            trust,
            transport: None,
            key_packages_low: false,
            own_lines: Vec::new(),
            anonymous: None,
            log_key,
            accounts: Default::default(),
        }
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
        let mut trust = Trust::web_roots().allow_insecure_transport(row.insecure_transport);
        if let Some(pem) = row.ca_pem {
            trust = trust.with_ca_pem(pem)?;
        }
        Ok(Self::from_parts(
            db,
            account,
            row.server_url,
            trust,
            row.log_key,
        ))
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

    /// Closes the connections, if any.
    pub async fn disconnect(&mut self) {
        for t in [self.transport.take(), self.anonymous.take()]
            .into_iter()
            .flatten()
        {
            t.close().await;
        }
    }

    /// Sends a request on the anonymous connection, connecting it if needed;
    /// a request whose connection failed is tried once more on a new one
    /// (everything sent here is safe to repeat).
    pub(crate) async fn anonymous_request(
        &mut self,
        body: client_frame::Body,
    ) -> Result<response::Result, ClientError> {
        for attempt in 0..2 {
            let t = match self.anonymous.as_mut() {
                Some(t) => t,
                None => self
                    .anonymous
                    .insert(Transport::connect(&self.server_url, &self.trust).await?),
            };
            match t.request(body.clone()).await {
                Err(ClientError::Network(e)) if attempt == 0 => {
                    tracing::debug!("anonymous connection failed, reconnecting: {e}");
                    self.anonymous = None;
                }
                Err(e @ ClientError::Network(_)) => {
                    self.anonymous = None;
                    return Err(e);
                }
                other => return other,
            }
        }
        Err(ClientError::Network(
            "the server keeps closing the connection".into(),
        ))
    }

    /// Runs `f` in one transaction of the profile database, with an MLS
    /// provider over the same transaction: MLS state and Sotto's own tables
    /// commit together, or (on any error) not at all.
    pub(crate) fn in_transaction<T>(
        &self,
        f: impl FnOnce(&MlsProvider<'_>, &Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let tx = self.db.unchecked_transaction()?;
        let out = f(&MlsProvider::new(&self.crypto, &tx), &tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `op` with a logged-in connection, connecting first if needed. A
    /// connection that failed is dropped, so the next call reconnects.
    pub(crate) async fn connected<T>(
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

    pub(crate) async fn login(&mut self) -> Result<Transport, ClientError> {
        let mut t = Transport::connect(&self.server_url, &self.trust).await?;
        if t.log_key != self.log_key {
            return Err(ClientError::KeyLog(
                "the server's key-log key changed since this profile was made; \
                 this is not the server you registered with, or it was reset"
                    .into(),
            ));
        }
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
        self.accounts.fresh.clear();
        self.refresh_head().await?;
        self.flush_outbox().await?;
        Ok(t)
    }

    pub(crate) async fn upload_key_packages(
        &mut self,
        t: &mut Transport,
        count: u32,
        last_resort: bool,
    ) -> Result<(), ClientError> {
        let (key_packages, last_resort) = self.in_transaction(|provider, _tx| {
            let key_packages = (0..count)
                .map(|_| group::new_key_package(provider, &self.account, false))
                .collect::<Result<Vec<_>, _>>()?;
            let last_resort = if last_resort {
                group::new_key_package(provider, &self.account, true)?
            } else {
                Vec::new()
            };
            Ok((key_packages, last_resort))
        })?;
        t.request(client_frame::Body::UploadKeyPackages(UploadKeyPackages {
            key_packages,
            last_resort,
        }))
        .await?;
        self.key_packages_low = false;
        Ok(())
    }

    // ------------------------------------------------------------ local queries

    /// The other account of the direct conversation held by `group_id`: its
    /// roster must be this account's devices and one other account's
    /// (DESIGN.md §5), or it is no direct conversation.
    pub(crate) fn direct_peer_of(
        &self,
        provider: &MlsProvider<'_>,
        group_id: &[u8],
    ) -> Result<Username, ClientError> {
        let roster = group::members(&group::load(provider, group_id)?);
        group::direct_peer(&roster, &self.account.username).map_err(|extra| {
            ClientError::Roster(if extra.is_empty() {
                "a conversation called direct holds nobody but you".to_owned()
            } else {
                format!(
                    "a conversation called direct holds more than two people: {}",
                    extra
                        .iter()
                        .map(Username::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
    }

    /// Checks that the group still is the direct conversation with `peer`:
    /// nobody but this account's devices and `peer`'s.
    pub(crate) fn check_direct_roster(
        &self,
        provider: &MlsProvider<'_>,
        group_id: &[u8],
        peer: &str,
    ) -> Result<(), ClientError> {
        let roster = group::members(&group::load(provider, group_id)?);
        let mut extra: Vec<&str> = roster
            .iter()
            .map(|m| m.username.as_str())
            .filter(|u| *u != peer && *u != self.account.username.as_str())
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            return Err(ClientError::Roster(format!(
                "your direct conversation with {peer} now also holds {}",
                extra.join(", ")
            )));
        }
        if !roster.iter().any(|m| m.username.as_str() == peer) {
            return Err(ClientError::Roster(format!(
                "your direct conversation with {peer} no longer holds {peer}"
            )));
        }
        Ok(())
    }

    /// The group a conversation sends on. For a direct conversation with
    /// several groups (both people started one at once), the smallest id
    /// among those whose roster is exactly the two accounts: a group that
    /// anyone else is in is never a candidate, so a third party cannot
    /// steer the choice.
    pub(crate) fn conversation_group(
        &self,
        conversation: &Conversation,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        if conversation.kind == ConversationKind::Group {
            return Ok(store::active_group(&self.db, conversation.id)?);
        }
        let provider = MlsProvider::new(&self.crypto, &self.db);
        for group_id in store::active_groups_of(&self.db, conversation.id)? {
            match self.check_direct_roster(&provider, &group_id, &conversation.name) {
                Ok(()) => return Ok(Some(group_id)),
                Err(e) => tracing::warn!("not sending on a group of {}: {e}", conversation.name),
            }
        }
        Ok(None)
    }

    pub(crate) fn active_group_named(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        let conversation = store::conversation(&self.db, ConversationKind::Group, name)?
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "you have no group named {name}; see `sotto group list`"
                ))
            })?;
        self.conversation_group(&conversation)?.ok_or_else(|| {
            ClientError::Usage(format!(
                "you are no longer a member of {name} (see `sotto history --group {name}`)"
            ))
        })
    }

    pub(crate) fn conversation_named(
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
            if self.conversation_group(&conversation)?.is_some() {
                names.push(conversation.name);
            }
        }
        Ok(names)
    }

    /// The member devices of the group `name`, as of the last sync.
    pub fn members(&self, name: &str) -> Result<Vec<MemberInfo>, ClientError> {
        self.conversation_members(ConversationKind::Group, name)
    }

    /// The member devices of a conversation (a group, or the direct
    /// conversation with a user), as of the last sync: everyone who can
    /// read it.
    pub fn conversation_members(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Vec<MemberInfo>, ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        let group_id = self.conversation_group(&conversation)?.ok_or_else(|| {
            ClientError::Usage(format!("you are no longer in the conversation {name}"))
        })?;
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

    /// Warnings about deliveries that belonged to no known conversation,
    /// oldest first: (milliseconds since the Unix epoch, text).
    pub fn device_warnings(&self) -> Result<Vec<(u64, String)>, ClientError> {
        Ok(store::device_log(&self.db)?)
    }

    /// How many messages of a conversation were dropped because their
    /// sender had been removed by a commit this device already merged.
    pub fn dropped_from_former_members(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<u64, ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        let mut total = 0;
        for group_id in store::groups_of(&self.db, conversation.id)? {
            total += store::dropped_from_former_members(&self.db, &group_id)?;
        }
        Ok(total)
    }

    /// The group's current epoch and epoch authenticator: equal on every
    /// member that has processed the same commits.
    pub fn epoch_state(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<(u64, Vec<u8>), ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        let group_id = self
            .conversation_group(&conversation)?
            .ok_or_else(|| ClientError::Usage(format!("no active group for {name}")))?;
        let provider = MlsProvider::new(&self.crypto, &self.db);
        let g = group::load(&provider, &group_id)?;
        Ok((
            g.epoch().as_u64(),
            g.epoch_authenticator().as_slice().to_vec(),
        ))
    }
}

/// Hooks for tests that must reach inside (enabled by the `test-hooks`
/// feature, which `sotto-testkit` turns on; never in the CLI's build).
#[cfg(feature = "test-hooks")]
mod hooks {
    use super::*;
    use crate::conversations::{check_text, decode_body};
    use sotto_core::content::{Body, Text};
    use sotto_core::group::Inbound;
    use sotto_proto::v1::client_frame;
    impl Client {
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
            let group_id = self.conversation_group(&conversation)?.ok_or_else(|| {
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

        /// Stages a key-update commit in the group `name` without sending it.
        /// With [`Client::submit_staged`], lets tests make two members commit at
        /// the same epoch.
        pub fn stage_key_update(&self, name: &str) -> Result<(), ClientError> {
            let group_id = self.active_group_named(name)?;
            self.stage_commit(&group_id, &|p, g, key| {
                group::update_keys(p, g, key).map(Some)
            })
            .map(|_| ())
        }

        /// Submits every staged frame in the outbox (sends need no login); see
        /// [`Client::stage_key_update`].
        pub async fn submit_staged(&mut self) -> Result<Vec<CommitOutcome>, ClientError> {
            let mut outcomes = Vec::new();
            for entry in store::outbox(&self.db)? {
                outcomes.push(self.submit(&entry).await?);
            }
            Ok(outcomes)
        }

        /// Tries to decrypt a raw MLS message with this device's state without
        /// storing anything. For tests proving a removed member cannot read.
        pub fn try_decrypt(&self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
            let tx = self.db.unchecked_transaction()?;
            let provider = MlsProvider::new(&self.crypto, &tx);
            match group::process(&provider, payload, &self.accounts)? {
                Inbound::Application { plaintext, .. } => Ok(plaintext),
                other => Err(ClientError::Usage(format!(
                    "not an application message: {other:?}"
                ))),
            }
            // `tx` is dropped here: rolled back.
        }
    }
}
