//! [`Client`]: one account on this device. It owns the pieces (the profile,
//! the key log, the outbox, the KeyPackage pool, the two connections) and
//! the public API; each method connects if it must and hands the pieces, as
//! a [`Session`], to the module that does the work.
//!
//! Longer than the ~600 lines other files keep to, on purpose: it is the
//! whole public API in one place (one short method per operation, most of
//! them a line or two of delegation) plus the test hooks, and it holds no
//! protocol logic of its own. Splitting it would scatter `impl Client`.

use crate::ClientError;
use crate::attachments::{self, Progress, SentFile};
use crate::devices::{self, DeviceInfo, LinkRequestInfo};
use crate::endpoint::Trust;
use crate::key_packages::{KEY_PACKAGE_LOW, KEY_PACKAGE_POOL, KeyPackagePool};
use crate::keys::KeyLog;
use crate::outbox::Outbox;
use crate::profile::{MemberInfo, Profile, Stored, now_ms, open_new_profile};
use crate::session::{Anonymous, AnonymousConnection, Session, login_request};
use crate::store::{self, ConversationKind, HistoryEntry};
use crate::transport::Transport;
use crate::{chat, conversations, invite_links, membership, own_account, receipts, receive};
use rusqlite::Connection;
use sotto_core::attachment;
use sotto_core::group::AdminPolicy;
use sotto_core::identity::{Account, DeviceId, Username};
use sotto_core::link::LinkCode;
use sotto_core::safety::SafetyNumber;
use sotto_proto::v1::{self, Register, client_frame, response};
use std::path::Path;

/// A Sotto account on this device: its profile database and, while
/// connected, its connection to the server.
pub struct Client {
    profile: Profile,
    server_url: String,
    /// What to trust on the way to the server (TLS roots, plain HTTP).
    trust: Trust,
    /// The logged-in connection: the mailbox, and requests that must say
    /// who asks (KeyPackage uploads, device and link changes).
    transport: Option<Transport>,
    /// A connection that never logs in, for everything that need not say who
    /// asks: sends (authorised by the group's capability), KeyPackage claims
    /// and key-log lookups. Sealed sender.
    anonymous: Option<AnonymousConnection>,
    key_log: KeyLog,
    outbox: Outbox,
    key_packages: KeyPackagePool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("username", &self.profile.account.username)
            .field("device_id", &self.profile.account.device_id)
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
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
        let log_entries = account.registration_log_entries();
        let register = Register {
            username: account.username.to_string(),
            identity_key: account.identity_public().to_vec(),
            device: Some(account.signed_device()),
            challenge_signature: account.device.sign_login(
                &transport.nonce,
                &account.username,
                account.device_id,
            ),
            log_entries: log_entries.clone(),
            invite_code: invite_code.unwrap_or_default().to_owned(),
        };
        transport
            .request(client_frame::Body::Register(register))
            .await?;
        // This device made the account's first entries.
        own_account::record_entries(&db, &log_entries)?;
        let log_key = transport.log_key.clone();
        Self::create(db, account, server_url, trust, log_key, transport).await
    }

    /// Saves a new profile and finishes setting up its device: checks the
    /// account's own log entries (pinning the log head) and uploads
    /// KeyPackages.
    async fn create(
        db: Connection,
        account: Account,
        server_url: &str,
        trust: &Trust,
        log_key: Vec<u8>,
        mut transport: Transport,
    ) -> Result<Self, ClientError> {
        let stored = Stored {
            db,
            account,
            server_url: server_url.to_owned(),
            trust: trust.clone(),
            log_key,
        };
        stored.save()?;
        let mut client = Self::from_stored(stored);
        let mut anonymous = Anonymous::new(
            &client.server_url,
            &client.trust,
            &mut client.anonymous,
            client.profile.account.username.clone(),
        );
        client
            .key_log
            .verify_this_device(&mut client.profile, &mut anonymous, &mut transport)
            .await?;
        client
            .key_packages
            .upload(&mut client.profile, &mut transport, KEY_PACKAGE_POOL, true)
            .await?;
        client.transport = Some(transport);
        Ok(client)
    }

    fn from_stored(stored: Stored) -> Self {
        let Stored {
            db,
            account,
            server_url,
            trust,
            log_key,
        } = stored;
        Self {
            profile: Profile::new(db, account),
            server_url,
            trust,
            transport: None,
            anonymous: None,
            key_log: KeyLog::new(log_key),
            outbox: Outbox::default(),
            key_packages: KeyPackagePool::default(),
        }
    }

    /// Whether the profile `dir` holds an account. A page deciding between
    /// its sign-up forms and the messenger asks this: a device whose link
    /// was refused leaves a database without one, which the next join
    /// reuses.
    pub fn has_account(dir: &Path) -> Result<bool, ClientError> {
        let path = crate::profile::profile_db(dir);
        if !store::exists(&path) {
            return Ok(false);
        }
        // Unreadable without its passphrase; `sotto lock` locks accounts.
        if store::lock::is_locked(dir)? {
            return Ok(true);
        }
        let db = store::lock::open(&path, None)?;
        Ok(store::load_profile(&db)?.is_some())
    }

    /// Opens the account stored in the profile `dir`.
    pub fn open(dir: &Path) -> Result<Self, ClientError> {
        Self::open_with_passphrase(dir, None)
    }

    /// Opens the account stored in the profile `dir`; a locked profile
    /// needs its passphrase (a plain one ignores it).
    pub fn open_with_passphrase(
        dir: &Path,
        passphrase: Option<&crate::Passphrase>,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_stored(Stored::open(dir, passphrase)?))
    }

    pub fn username(&self) -> &Username {
        &self.profile.account.username
    }

    pub fn device_id(&self) -> DeviceId {
        self.profile.account.device_id
    }

    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// How old a key-log head the server presents may be once this device
    /// has seen a newer one (default [`crate::DEFAULT_MAX_HEAD_AGE`],
    /// a day); an older one is refused as a stale view.
    pub fn set_max_head_age(&mut self, age: std::time::Duration) {
        self.key_log.max_head_age = age;
    }

    /// Requires the third-party auditor `auditor_key` (32 bytes): from now
    /// on a key-log head the server presents is accepted only with that
    /// auditor's countersignature, made at most `max_lag` ago, of it or of
    /// an older head it extends. Again with another lag changes the lag.
    pub fn trust_auditor(
        &mut self,
        auditor_key: &[u8],
        max_lag: std::time::Duration,
    ) -> Result<(), ClientError> {
        if auditor_key.len() != 32 {
            return Err(ClientError::Usage(
                "an auditor key is 32 bytes (64 hex digits), as `sotto auditor-key` prints it"
                    .into(),
            ));
        }
        let lag = u64::try_from(max_lag.as_millis()).unwrap_or(u64::MAX);
        store::trust_auditor(&self.profile.db, auditor_key, lag)?;
        Ok(())
    }

    /// Stops requiring the auditor; `false` if it was not required.
    pub fn distrust_auditor(&mut self, auditor_key: &[u8]) -> Result<bool, ClientError> {
        Ok(store::distrust_auditor(&self.profile.db, auditor_key)?)
    }

    /// The auditors this profile requires, each with its allowed lag.
    pub fn trusted_auditors(&self) -> Result<Vec<(Vec<u8>, std::time::Duration)>, ClientError> {
        Ok(store::trusted_auditors(&self.profile.db)?
            .into_iter()
            .map(|(key, lag)| (key, std::time::Duration::from_millis(lag)))
            .collect())
    }

    /// The server's log key this profile pinned: what to give others as
    /// a second source (`sotto audit --log-key`, `sotto canary --log-key`).
    pub fn log_key(&self) -> &[u8] {
        self.key_log.log_key()
    }

    /// Hex of the account's identity key.
    pub fn identity_key(&self) -> String {
        hex::encode(self.profile.account.identity_public())
    }

    /// Points this profile at another server URL (the server moved),
    /// trusting what it trusted before.
    pub fn set_server_url(&mut self, url: &str) -> Result<(), ClientError> {
        self.set_server(url, self.trust.clone())
    }

    /// Points this profile at another server URL with what to trust for it.
    pub fn set_server(&mut self, url: &str, trust: Trust) -> Result<(), ClientError> {
        crate::endpoint::ServerUrl::parse(url)?.check(&trust)?;
        store::set_server_url(
            &self.profile.db,
            url,
            trust.ca_pem(),
            trust.insecure_transport,
        )?;
        self.server_url = url.to_owned();
        self.trust = trust;
        self.transport = None;
        self.anonymous = None;
        Ok(())
    }

    /// Closes the connections, if any.
    pub async fn disconnect(&mut self) {
        for t in [
            self.transport.take(),
            self.anonymous
                .take()
                .map(AnonymousConnection::into_transport),
        ]
        .into_iter()
        .flatten()
        {
            t.close().await;
        }
    }

    // ------------------------------------------------------------ connections

    /// Runs `op` with a logged-in connection, connecting first if needed. A
    /// connection that failed is dropped, so the next call reconnects; one
    /// the server has closed since (a restart: "going away") is replaced
    /// before `op` runs, so the call does not fail for it.
    async fn connected<T>(
        &mut self,
        op: impl AsyncFnOnce(&mut Session<'_>) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let open = self
            .transport
            .take()
            .and_then(|mut t| (!t.closed_by_server()).then_some(t));
        let mut t = match open {
            Some(t) => t,
            None => self.login().await?,
        };
        self.profile.purge_expired()?;
        let owner = self.profile.account.username.clone();
        let mut session = Session {
            profile: &mut self.profile,
            key_log: &mut self.key_log,
            outbox: &mut self.outbox,
            key_packages: &mut self.key_packages,
            anonymous: Anonymous::new(&self.server_url, &self.trust, &mut self.anonymous, owner),
            connection: &mut t,
        };
        let mut result = op(&mut session).await;
        if result.is_ok()
            && let Err(e) = Box::pin(receipts::send_due(&mut session, now_ms())).await
        {
            result = Err(e);
        }
        self.profile.purge_expired()?;
        if !matches!(result, Err(ClientError::Network(_))) {
            self.transport = Some(t);
        }
        result
    }

    async fn login(&mut self) -> Result<Transport, ClientError> {
        let mut t = Transport::connect(&self.server_url, &self.trust).await?;
        if t.log_key != self.key_log.log_key() {
            return Err(ClientError::KeyLog(
                "the server's key-log key changed since this profile was made; \
                 this is not the server you registered with, or it was reset"
                    .into(),
            ));
        }
        let login = login_request(&self.profile.account, &t.nonce);
        if let response::Result::LoggedIn(status) = t.request(login).await?
            && (status.key_packages_remaining < KEY_PACKAGE_LOW || !status.has_last_resort)
        {
            let missing = KEY_PACKAGE_POOL.saturating_sub(status.key_packages_remaining);
            self.key_packages
                .upload(&mut self.profile, &mut t, missing, !status.has_last_resort)
                .await?;
        }
        self.key_log.start_round();
        let mut anonymous = Anonymous::new(
            &self.server_url,
            &self.trust,
            &mut self.anonymous,
            self.profile.account.username.clone(),
        );
        self.key_log
            .refresh_head(&mut self.profile, &mut anonymous)
            .await?;
        self.outbox.flush(&mut self.profile, &mut anonymous).await?;
        Ok(t)
    }

    // ------------------------------------------------------------ sending

    /// Sends a text to `peer`, starting a direct conversation if needed.
    pub async fn send_direct(
        &mut self,
        peer: &str,
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        let peer = Username::parse(peer)?;
        if peer == self.profile.account.username {
            return Err(ClientError::Usage(
                "you cannot start a conversation with yourself".into(),
            ));
        }
        conversations::check_text(text)?;
        self.connected(async |s| conversations::send_direct(s, &peer, text, None).await)
            .await
    }

    /// Sets the disappearing-messages timer of the direct conversation
    /// with `peer` (starting it if needed), or with `group`, the group
    /// `name`: later messages disappear `secs` seconds after they are sent
    /// (0: off), from every member's history and database. Returns the
    /// system line it shows.
    pub async fn set_timer(
        &mut self,
        kind: ConversationKind,
        name: &str,
        secs: u64,
    ) -> Result<HistoryEntry, ClientError> {
        let target = self.target(kind, name)?;
        self.connected(async |s| conversations::set_timer(s, &target, secs).await)
            .await
    }

    /// The direct conversation with `name`, or the group `name`.
    fn target(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<conversations::Target, ClientError> {
        Ok(match kind {
            ConversationKind::Direct => {
                let peer = Username::parse(name)?;
                if peer == self.profile.account.username {
                    return Err(ClientError::Usage(
                        "you cannot start a conversation with yourself".into(),
                    ));
                }
                conversations::Target::Direct(peer)
            }
            ConversationKind::Group => conversations::Target::Group(name.to_owned()),
        })
    }

    // ------------------------------------------------------------ attachments

    #[cfg(not(target_arch = "wasm32"))]
    /// Sends the file at `path`, with an optional `text`, to the direct
    /// conversation with `name` (started if needed) or to the group
    /// `name`: [`Client::send_file_bytes`] with the file's name and bytes.
    pub async fn send_file(
        &mut self,
        kind: ConversationKind,
        name: &str,
        path: &Path,
        text: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<SentFile, ClientError> {
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                ClientError::Usage(format!("{} is not a file name to send", path.display()))
            })?;
        let buffer = std::fs::read(path)
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
        self.send_file_bytes(kind, name, &filename, buffer, text, progress)
            .await
    }

    /// Sends the file `filename` (its bytes: `buffer`), with an optional
    /// `text`, to the direct conversation with `name` (started if needed)
    /// or to the group `name`. The file is padded and encrypted here under
    /// a fresh key, uploaded (resuming after a broken connection;
    /// `progress` sees the bytes the server has), and the message carrying
    /// its key and hash is sent.
    pub async fn send_file_bytes(
        &mut self,
        kind: ConversationKind,
        name: &str,
        filename: &str,
        mut buffer: Vec<u8>,
        text: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<SentFile, ClientError> {
        let target = self.target(kind, name)?;
        if let Some(text) = text {
            conversations::check_text(text)?;
        }
        if filename.is_empty() || filename.len() > 255 || filename.contains(['/', '\\']) {
            return Err(ClientError::Usage(format!(
                "{filename:?} is not a file name to send"
            )));
        }
        let filename = filename.to_owned();
        let key = zeroize::Zeroizing::new(rand::random::<[u8; attachment::KEY_LEN]>());
        let nonce: [u8; attachment::NONCE_LEN] = rand::random();
        let content_hash = attachment::seal(&mut buffer, &key, &nonce)
            .map_err(|e| ClientError::Usage(format!("{filename}: {e}")))?;
        let size = buffer.len() as u64;
        let grant = self
            .connected(async |s| attachments::grant(s, &target).await)
            .await?;
        let uploaded = attachments::upload(
            &self.server_url,
            &self.trust,
            &grant,
            buffer.into(),
            progress,
        )
        .await?;
        let server = crate::endpoint::ServerUrl::parse(&self.server_url)?;
        let scheme = if server.tls { "https" } else { "http" };
        let file = Box::new(sotto_core::mimi::ExternalPart {
            content_type: attachments::content_type(&filename).to_owned(),
            url: format!(
                "{scheme}://{}{}",
                server.authority,
                server.path(&uploaded.url)
            ),
            expires: 0,
            size,
            enc_alg: sotto_core::mimi::ExternalPart::AES_128_GCM,
            key: key.to_vec(),
            nonce: nonce.to_vec(),
            aad: Vec::new(),
            hash_alg: sotto_core::mimi::ExternalPart::SHA256,
            content_hash: content_hash.to_vec(),
            description: String::new(),
            filename,
        });
        let action = sotto_core::mimi::ChatAction::Attachment {
            file,
            text: text.map(str::to_owned),
            reply_to: None,
        };
        let group_id = grant.group_id.clone();
        let entry = self
            .connected(async |s| conversations::send_chat(s, &group_id, action).await)
            .await?
            .ok_or_else(|| ClientError::Internal("the attachment was not recorded".into()))?;
        Ok(SentFile {
            entry,
            resent_bytes: uploaded.resent_bytes,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Downloads the attachment of message `id` (hex) to `path`
    /// ([`Client::attachment_bytes`], then a temporary file renamed to
    /// `path`). Nothing is written if any check fails. Returns the file's
    /// size.
    pub async fn save_attachment(
        &mut self,
        id: &str,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<u64, ClientError> {
        let (buffer, blob) = self.fetch_attachment(id, progress).await?;
        attachments::write_atomically(path, &buffer)?;
        attachments::acknowledge(&self.server_url, &self.trust, &blob).await;
        Ok(buffer.len() as u64)
    }

    /// The file of message `id` (hex), downloaded and opened: the
    /// ciphertext's hash is checked against the one in the message before
    /// it is decrypted. The server is told this device has it (once every
    /// recipient has, the server deletes it).
    pub async fn attachment_bytes(
        &mut self,
        id: &str,
        progress: Progress<'_>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
        let (buffer, blob) = self.fetch_attachment(id, progress).await?;
        attachments::acknowledge(&self.server_url, &self.trust, &blob).await;
        Ok(buffer)
    }

    async fn fetch_attachment(
        &mut self,
        id: &str,
        progress: Progress<'_>,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, attachments::BlobRef), ClientError> {
        let id = chat::parse_id(id)?;
        let file = store::attachment(&self.profile.db, id.as_bytes())?.ok_or_else(|| {
            ClientError::Usage(format!(
                "message {id} has no attachment on this device (ids are in `sotto history --json`)"
            ))
        })?;
        let blob = attachments::BlobRef::parse(&file.url)?;
        let mut buffer =
            attachments::download(&self.server_url, &self.trust, &blob, file.size, progress)
                .await?;
        attachment::open(&mut buffer, &file.key, &file.nonce, &file.content_hash).map_err(|e| {
            match e {
                attachment::AttachmentError::HashMismatch => {
                    ClientError::Protocol(format!("{e}; nothing was written"))
                }
                other => ClientError::Usage(format!("{other}; nothing was written")),
            }
        })?;
        Ok((zeroize::Zeroizing::new(buffer), blob))
    }

    /// Sends a text to the group `name`.
    pub async fn send_group(
        &mut self,
        name: &str,
        text: &str,
    ) -> Result<HistoryEntry, ClientError> {
        self.reply_group(name, text, None).await
    }

    /// Sends a text to `peer` replying to the message `reply_to` (its hex
    /// id, from [`HistoryEntry::id`]), or a plain text with `None`.
    pub async fn reply_direct(
        &mut self,
        peer: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<HistoryEntry, ClientError> {
        let peer = Username::parse(peer)?;
        if peer == self.profile.account.username {
            return Err(ClientError::Usage(
                "you cannot start a conversation with yourself".into(),
            ));
        }
        conversations::check_text(text)?;
        let reply_to = reply_to.map(chat::parse_id).transpose()?;
        self.connected(async |s| conversations::send_direct(s, &peer, text, reply_to).await)
            .await
    }

    /// Sends a text to the group `name` replying to the message `reply_to`
    /// (its hex id), or a plain text with `None`.
    pub async fn reply_group(
        &mut self,
        name: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<HistoryEntry, ClientError> {
        conversations::check_text(text)?;
        let reply_to = reply_to.map(chat::parse_id).transpose()?;
        self.connected(async |s| conversations::send_group(s, name, text, reply_to).await)
            .await
    }

    /// Reacts to the message `id` (hex) with `emoji`, replacing this
    /// account's earlier reaction to it; the same emoji again takes the
    /// reaction back. Returns the message as it is now.
    pub async fn react(&mut self, id: &str, emoji: &str) -> Result<HistoryEntry, ClientError> {
        let target = chat::parse_id(id)?;
        let change = conversations::Change::React(emoji.trim().to_owned());
        self.connected(async |s| conversations::change_message(s, target, change).await)
            .await
    }

    /// Replaces the text of this account's message `id` (hex) for everyone.
    pub async fn edit(&mut self, id: &str, text: &str) -> Result<HistoryEntry, ClientError> {
        let target = chat::parse_id(id)?;
        let change = conversations::Change::Edit(text.to_owned());
        self.connected(async |s| conversations::change_message(s, target, change).await)
            .await
    }

    /// Deletes this account's message `id` (hex) for everyone: every member
    /// device erases its text.
    pub async fn delete(&mut self, id: &str) -> Result<HistoryEntry, ClientError> {
        let target = chat::parse_id(id)?;
        self.connected(async |s| {
            conversations::change_message(s, target, conversations::Change::Delete).await
        })
        .await
    }

    /// Reports a received message to the server's operator
    /// (`sotto_core::franking`): sends its content and salt, the server's
    /// frank and the sender device's signature, as kept when it arrived,
    /// with `reason` and `note`. Nothing else of the conversation leaves
    /// this device. Refused, sending nothing, for a message this device
    /// cannot report (its own, one whose franking did not check, one
    /// deleted or unknown), saying why.
    pub async fn report(
        &mut self,
        id: &str,
        reason: sotto_core::franking::ReportReason,
        note: &str,
    ) -> Result<(), ClientError> {
        let target = chat::parse_id(id)?;
        let mut report = match store::frank_of(&self.profile.db, target.as_bytes())? {
            Some(store::Reportability::Reportable(report)) => report,
            Some(store::Reportability::Unreportable(why)) => {
                return Err(ClientError::Usage(format!(
                    "message {id} cannot be reported: its franking did not check when it arrived ({why})"
                )));
            }
            None => {
                return Err(ClientError::Usage(format!(
                    "message {id} cannot be reported: this device holds no franking evidence for it \
                     (your own message, a deleted one, one from before franking, or no such message)"
                )));
            }
        };
        report.reason = reason as i32;
        report.note = note.to_owned();
        sotto_core::franking::check_report_size(&report)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.connected(async |s| {
            s.connection
                .request(client_frame::Body::ReportMessage(v1::ReportMessage {
                    report: Some(*report),
                }))
                .await
                .map(|_| ())
        })
        .await
    }

    // ------------------------------------------------------------ Web Push

    /// The server's VAPID public key (an uncompressed P-256 point, 65
    /// bytes): the `applicationServerKey` a browser subscribes to push with.
    pub async fn push_key(&mut self) -> Result<Vec<u8>, ClientError> {
        self.connected(async |s| {
            match s
                .connection
                .request(client_frame::Body::GetPushKey(v1::GetPushKey {}))
                .await?
            {
                response::Result::PushKey(key) => Ok(key.public_key),
                _ => Err(ClientError::Protocol(
                    "expected the server's push key".into(),
                )),
            }
        })
        .await
    }

    /// Turns Web Push on for this device with the browser's push endpoint
    /// (`PushSubscription.endpoint`), or off with `None`. The server then
    /// sends an empty push there (no content, no sender) when something
    /// arrives while this device is not connected. Only this device's
    /// endpoint changes; the server refuses endpoints of push services its
    /// operator does not allow.
    pub async fn set_push_endpoint(&mut self, endpoint: Option<&str>) -> Result<(), ClientError> {
        let endpoint = endpoint.unwrap_or_default().to_owned();
        self.connected(async |s| {
            s.connection
                .request(client_frame::Body::SetPushEndpoint(v1::SetPushEndpoint {
                    endpoint,
                }))
                .await
                .map(|_| ())
        })
        .await
    }

    // ------------------------------------------------------------ membership

    /// Creates the group `name` with the given members.
    pub async fn create_group(
        &mut self,
        name: &str,
        members: &[String],
    ) -> Result<(), ClientError> {
        let usernames = membership::new_group_members(&self.profile, name, members)?;
        self.connected(async |s| membership::create_group(s, name, &usernames, None).await)
            .await
    }

    /// Creates the group `name` with admins: this account is its first
    /// admin; only admins remove members, change admins and settings, and
    /// delete others' messages; with `read_only`, only admins post.
    pub async fn create_group_with_admins(
        &mut self,
        name: &str,
        members: &[String],
        read_only: bool,
    ) -> Result<(), ClientError> {
        let usernames = membership::new_group_members(&self.profile, name, members)?;
        self.connected(async |s| {
            membership::create_group(s, name, &usernames, Some(read_only)).await
        })
        .await
    }

    /// Makes `username` an admin of the group `name` (`admin`), or no
    /// longer one. Only an admin may.
    pub async fn set_admin(
        &mut self,
        name: &str,
        username: &str,
        admin: bool,
    ) -> Result<(), ClientError> {
        let user = Username::parse(username)?;
        self.connected(async |s| {
            membership::change_admins(s, name, membership::AdminChange::Admin(user, admin)).await
        })
        .await
    }

    /// Sets the group `name` read-only for non-admins (an announcement
    /// channel), or not. Only an admin may.
    pub async fn set_read_only(&mut self, name: &str, read_only: bool) -> Result<(), ClientError> {
        self.connected(async |s| {
            membership::change_admins(s, name, membership::AdminChange::ReadOnly(read_only)).await
        })
        .await
    }

    /// The admins of the group `name` and whether it is read-only, as of
    /// the last sync (`None`: a group without admins, where every member
    /// may remove others).
    pub fn group_admins(&self, name: &str) -> Result<Option<AdminPolicy>, ClientError> {
        self.profile.admin_policy(ConversationKind::Group, name)
    }

    /// Opens an invite link for the group `name` and returns it
    /// (`sotto+invite://SERVER/LINK_ID#SECRET`), or returns the one it has.
    /// Only an admin may; anyone holding the link can join until an admin
    /// or the server's operator closes it (docs/PUBLIC_GROUPS.md).
    pub async fn create_invite_link(&mut self, name: &str) -> Result<String, ClientError> {
        let server_url = self.server_url.clone();
        self.connected(async |s| invite_links::create_invite_link(s, name, &server_url).await)
            .await
    }

    /// Closes the invite link of the group `name`: every member refuses
    /// joiners by it from then on. Only an admin may. `false` if it had
    /// none. A later [`Client::create_invite_link`] opens a new one.
    pub async fn close_invite_link(&mut self, name: &str) -> Result<bool, ClientError> {
        self.connected(async |s| invite_links::close_invite_link(s, name).await)
            .await
    }

    /// Joins a group by its invite link, after checking every member
    /// against the key log. Returns the conversation's name and its first
    /// history line; every member sees "… joined by invite link".
    pub async fn join_invite_link(
        &mut self,
        link: &str,
    ) -> Result<(String, Vec<HistoryEntry>), ClientError> {
        let server_url = self.server_url.clone();
        self.connected(async |s| invite_links::join_by_invite_link(s, link, &server_url).await)
            .await
    }

    /// Adds `username` (all their devices) to the group `name`.
    pub async fn add_member(&mut self, name: &str, username: &str) -> Result<(), ClientError> {
        let user = Username::parse(username)?;
        self.connected(async |s| membership::add_member(s, name, &user).await)
            .await
    }

    /// Removes `username` (all their devices) from the group `name`.
    pub async fn remove_member(&mut self, name: &str, username: &str) -> Result<(), ClientError> {
        let user = Username::parse(username)?;
        self.connected(async |s| membership::remove_member(s, name, &user).await)
            .await
    }

    /// Leaves the group `name`: proposes this device's removal (a remaining
    /// member commits it) and stops showing the conversation's messages.
    pub async fn leave_group(&mut self, name: &str) -> Result<(), ClientError> {
        self.connected(async |s| membership::leave_group(s, name).await)
            .await
    }

    /// Updates this device's keys in the group `name` (post-compromise
    /// security), retrying if another member commits first.
    pub async fn update_keys(&mut self, name: &str) -> Result<(), ClientError> {
        self.connected(async |s| membership::update_keys(s, name).await)
            .await
    }

    // ------------------------------------------------------------ receiving

    /// Receives and processes everything queued for this device, commits
    /// proposals other members are waiting on, and returns the new history
    /// lines (warnings included).
    /// Then checks this account's own log: a change no device of the
    /// account made raises a warning (see [`Client::account_warnings`]).
    pub async fn sync(&mut self) -> Result<Vec<HistoryEntry>, ClientError> {
        self.connected(async |s| {
            let mut entries = receive::sync(s).await?;
            entries.extend(own_account::check_own_account(s).await?.0);
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
        self.connected(async |s| {
            for entry in &own_account::check_own_account(s).await?.0 {
                on_entry(entry);
            }
            receive::listen(s, on_entry).await
        })
        .await
    }

    /// [`Client::listen`] until `until` is ready, then returns its output
    /// with the connection still open, so an interactive client (`sotto
    /// chat`) can send in between and listen again. `until` is polled
    /// only while waiting for the server, never in the middle of a
    /// delivery; it must be cancel-safe (a channel's `recv`, a timer).
    /// Unlike `listen`, it does not check this account's own log first
    /// ([`Client::sync`] does: call it once before).
    pub async fn listen_until<T>(
        &mut self,
        on_entry: impl FnMut(&HistoryEntry),
        until: impl Future<Output = T>,
    ) -> Result<T, ClientError> {
        self.connected(async |s| receive::listen_until(s, on_entry, until).await)
            .await
    }

    // ------------------------------------------------------------ keys

    /// The safety number of this account and `username`, and whether the
    /// user marked it verified. With `accept_new_identity`, a changed
    /// identity key (after the warning) is accepted, unverified.
    pub async fn safety_number(
        &mut self,
        username: &str,
        accept_new_identity: bool,
    ) -> Result<(SafetyNumber, bool), ClientError> {
        let user = Username::parse(username)?;
        if user == self.profile.account.username {
            return Err(ClientError::Usage(
                "compare safety numbers with someone else".into(),
            ));
        }
        self.connected(async |s| {
            s.key_log
                .safety_number(
                    s.profile,
                    &mut s.anonymous,
                    s.connection,
                    &user,
                    accept_new_identity,
                )
                .await
        })
        .await
    }

    /// Whether the user marked `username`'s current identity key verified.
    pub fn is_verified(&self, username: &str) -> Result<bool, ClientError> {
        Ok(store::contact(&self.profile.db, username)?.is_some_and(|c| c.verified))
    }

    /// Marks `username`'s current identity key as verified (the user
    /// compared safety numbers). Cleared if the key ever changes.
    pub async fn mark_verified(&mut self, username: &str) -> Result<SafetyNumber, ClientError> {
        let (number, _) = self.safety_number(username, false).await?;
        store::set_verified(&self.profile.db, username, true)?;
        Ok(number)
    }

    // ------------------------------------------------------------ devices

    /// Opens a link rendezvous on the server; show the returned code (and
    /// its QR) to the user, then call [`Client::wait_for_link_request`].
    pub async fn open_link(&mut self) -> Result<LinkCode, ClientError> {
        let code = LinkCode::generate(&self.server_url);
        self.connected(async |s| devices::open_link(s, &code).await)
            .await?;
        Ok(code)
    }

    /// Waits for the new device to join with the code. Messages arriving
    /// meanwhile are processed as usual.
    pub async fn wait_for_link_request(
        &mut self,
        code: &LinkCode,
    ) -> Result<LinkRequestInfo, ClientError> {
        self.connected(async |s| devices::wait_for_link_request(s, code).await)
            .await
    }

    /// Approves the device: logs it in the key log, hands it the account,
    /// then adds it to every conversation of this account.
    pub async fn approve_link(
        &mut self,
        code: &LinkCode,
        request: &LinkRequestInfo,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        self.connected(async |s| devices::approve_link(s, code, request).await)
            .await
    }

    /// Joins an account as a new device with a code from one of its devices,
    /// creating the profile in `dir`. Returns once the existing device
    /// approved. `trust` is what to trust on the way to the server in the
    /// code (`--ca-file`, `--insecure-transport`); the profile keeps it.
    /// `show_fingerprint` gets the twelve digits the approving device shows
    /// too (see [`LinkRequestInfo::fingerprint`]), before waiting for it.
    ///
    /// The linking device's pinned log key and newest head come inside the
    /// sealed bundle: a server presenting another key is refused, and the
    /// server's heads must extend the linking device's.
    pub async fn join_link(
        dir: &Path,
        code: &str,
        trust: &Trust,
        show_fingerprint: impl FnOnce(String),
    ) -> Result<Self, ClientError> {
        let joined = devices::join_link(dir, code, trust, show_fingerprint).await?;
        if let Some(head) = &joined.head {
            store::save_log_head(&joined.db, &sotto_proto::Message::encode_to_vec(head))?;
        }
        // What the account's devices made so far, from the linking device
        // (checked against the log at the first sync).
        own_account::record_entries(&joined.db, &joined.own_history)?;
        Self::create(
            joined.db,
            joined.account,
            &joined.server_url,
            trust,
            joined.log_key,
            joined.transport,
        )
        .await
    }

    /// The account's devices, from the key log; a device no device of this
    /// account added is marked [`DeviceInfo::unknown`] (and warned about,
    /// see [`Client::account_warnings`]).
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>, ClientError> {
        self.connected(async |s| devices::devices(s).await.map(|(d, _)| d))
            .await
    }

    /// Warnings about changes to this account that none of its devices
    /// made (a device added or removed, the identity), oldest first: the
    /// ones not acknowledged, or all with `all`. Local; raised by
    /// [`Client::sync`] and [`Client::devices`].
    pub fn account_warnings(&self, all: bool) -> Result<Vec<store::AccountAlert>, ClientError> {
        Ok(store::account_alerts(&self.profile.db, all)?)
    }

    /// Acknowledges every account warning (the user has seen them): they
    /// are no longer shown by every command. A device they are about stays
    /// marked in [`Client::devices`] until it is removed. Returns how many.
    pub fn acknowledge_account_warnings(&self) -> Result<usize, ClientError> {
        Ok(store::acknowledge_account_alerts(&self.profile.db, None)?)
    }

    /// Removes a device from the account (it can no longer log in) and from
    /// every conversation (it can no longer decrypt), and rotates the
    /// account's identity key (see [`crate::Removal`]).
    pub async fn remove_device(
        &mut self,
        device_id: &str,
    ) -> Result<devices::Removal, ClientError> {
        let device = devices::device_to_remove(&self.profile, device_id)?;
        self.connected(async |s| devices::remove_device(s, device).await)
            .await
    }

    // ------------------------------------------------------------ local queries

    /// The history of a conversation, oldest first. Showing it counts as
    /// reading it: read receipts are queued for its messages (if on), and
    /// sent with the next command after a short random delay.
    pub fn history(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        let entries = self.profile.history(kind, name)?;
        self.mark_read(kind, name)?;
        Ok(entries)
    }

    /// Marks what the conversation holds now as read, as showing its
    /// history does, without reading it (a client that already shows the
    /// new line, such as the web page).
    pub fn mark_read(&self, kind: ConversationKind, name: &str) -> Result<(), ClientError> {
        let conversation = self.profile.conversation_named(kind, name)?;
        receipts::seen(&self.profile, &conversation)
    }

    /// Whether this profile sends read receipts (default: on). Delivery
    /// receipts are always sent, to conversations the user wrote in.
    pub fn set_read_receipts(&self, on: bool) -> Result<(), ClientError> {
        Ok(store::set_read_receipts(&self.profile.db, on)?)
    }

    /// Whether this profile sends read receipts.
    pub fn read_receipts(&self) -> Result<bool, ClientError> {
        Ok(store::read_receipts_enabled(&self.profile.db)?)
    }

    /// Sends the receipts due at `now_ms` (milliseconds since the Unix
    /// epoch). Every command does this with the current time; tests pass
    /// a later one instead of waiting out the random delay.
    pub async fn send_due_receipts(&mut self, now_ms: u64) -> Result<(), ClientError> {
        self.connected(async |s| receipts::send_due(s, now_ms).await)
            .await
    }

    /// Tells a conversation this user is typing (or stopped): not stored by
    /// anyone; an undelivered one is deleted by the server within seconds.
    pub async fn send_typing(
        &mut self,
        kind: ConversationKind,
        name: &str,
        typing: bool,
    ) -> Result<(), ClientError> {
        let target = match kind {
            ConversationKind::Direct => conversations::Target::Direct(Username::parse(name)?),
            ConversationKind::Group => conversations::Target::Group(name.to_owned()),
        };
        self.connected(async |s| receipts::send_typing(s, &target, typing).await)
            .await
    }

    /// Every conversation (direct and group, including those this device
    /// left) with how many messages of others it has not shown yet, the
    /// most recently active first. Unlike [`Client::history`], this marks
    /// nothing read.
    pub fn conversations(&self) -> Result<Vec<store::ConversationSummary>, ClientError> {
        self.profile.purge_expired()?;
        Ok(store::conversation_summaries(
            &self.profile.db,
            self.profile.account.username.as_str(),
        )?)
    }

    /// The names of this account's group conversations that it is still in.
    pub fn groups(&self) -> Result<Vec<String>, ClientError> {
        self.profile.groups()
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
        self.profile.conversation_members(kind, name)
    }

    /// Warnings about deliveries that belonged to no known conversation,
    /// oldest first: (milliseconds since the Unix epoch, text).
    pub fn device_warnings(&self) -> Result<Vec<(u64, String)>, ClientError> {
        Ok(store::device_log(&self.profile.db)?)
    }

    /// How many recipient devices the server skipped, because their
    /// mailbox was full, in what this `Client` sent (not stored: logged
    /// too). A skip is not a failure; the skipped device is told.
    pub fn skipped_recipients(&self) -> u64 {
        self.outbox.skipped_recipients()
    }

    /// How many messages of a conversation were dropped because their
    /// sender had been removed by a commit this device already merged.
    pub fn dropped_from_former_members(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<u64, ClientError> {
        self.profile.dropped_from_former_members(kind, name)
    }

    /// The group's current epoch and epoch authenticator: equal on every
    /// member that has processed the same commits.
    pub fn epoch_state(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<(u64, Vec<u8>), ClientError> {
        self.profile.epoch_state(kind, name)
    }
}

/// Hooks for tests that must reach inside (enabled by the `test-hooks`
/// feature, which `sotto-testkit` turns on; never in the CLI's build).
#[cfg(feature = "test-hooks")]
mod hooks {
    use super::*;
    use crate::conversations::{check_text, stage_content};
    use crate::membership::stage_commit;
    use crate::outbox::{Outgoing, Request};
    use sotto_core::content::{Body, Text};
    use sotto_core::group::{self, Inbound};

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
            let group_id = self.profile.group_of_named(kind, name)?;
            let (_, history) = stage_content(
                &self.profile,
                &group_id,
                Body::Text(Text {
                    text: text.to_owned(),
                }),
            )?;
            history.ok_or_else(|| ClientError::Usage("message was not recorded".into()))
        }

        /// The group of conversation `name`, its epoch and its send
        /// capability as this device holds them now: what a member (or,
        /// later, a removed one) could present to the server.
        pub fn send_capability(
            &self,
            kind: ConversationKind,
            name: &str,
        ) -> Result<(Vec<u8>, u64, Vec<u8>), ClientError> {
            let group_id = self.profile.group_of_named(kind, name)?;
            let provider = self.profile.provider();
            let g = group::load(&provider, &group_id)?;
            let token = group::send_token(&provider, &g)?;
            Ok((group_id, g.epoch().as_u64(), token))
        }

        /// The MLS payloads of application messages waiting in the outbox. For
        /// tests that need the exact ciphertext the server will hold.
        pub fn outbox_payloads(&self) -> Result<Vec<Vec<u8>>, ClientError> {
            let mut payloads = Vec::new();
            for row in store::outbox(&self.profile.db)? {
                if let Request::Send(m) = Outgoing::from_row(row)?.request {
                    payloads.push(m.payload);
                }
            }
            Ok(payloads)
        }

        /// Stages a key-update commit in the group `name` without sending it.
        /// With [`Client::submit_staged`], lets tests make two members commit at
        /// the same epoch.
        pub fn stage_key_update(&self, name: &str) -> Result<(), ClientError> {
            let group_id = self.profile.active_group_named(name)?;
            stage_commit(&self.profile, &group_id, &|p, g, key| {
                group::update_keys(p, g, key).map(Some)
            })
            .map(|_| ())
        }

        /// Submits every staged frame in the outbox (sends need no login); see
        /// [`Client::stage_key_update`].
        pub async fn submit_staged(
            &mut self,
        ) -> Result<Vec<crate::outbox::CommitOutcome>, ClientError> {
            let mut anonymous = Anonymous::new(
                &self.server_url,
                &self.trust,
                &mut self.anonymous,
                self.profile.account.username.clone(),
            );
            let mut outcomes = Vec::new();
            for row in store::outbox(&self.profile.db)? {
                let outgoing = Outgoing::from_row(row)?;
                outcomes.push(
                    self.outbox
                        .submit(&mut self.profile, &mut anonymous, &outgoing)
                        .await?,
                );
            }
            Ok(outcomes)
        }

        /// Names at most `n` recipients per frame, as if the server's cap
        /// were `n`: a small group then goes out in several frames.
        pub fn set_recipients_per_frame(&mut self, n: usize) {
            self.outbox.recipients_per_frame = n;
        }

        /// This account's identity key secret: for tests that play a thief
        /// (or a server) holding it.
        pub fn identity_secret(&self) -> Vec<u8> {
            self.profile.account.identity.secret().to_vec()
        }

        /// Hands `identity_secret` to the account's other devices exactly as
        /// `device remove` hands over the new key: for tests playing a device
        /// of the account that hands over a key the log does not name.
        pub async fn hand_over_identity(
            &mut self,
            identity_secret: &[u8],
        ) -> Result<Vec<String>, ClientError> {
            let given = self
                .connected(async |s| devices::hand_over_identity(s, identity_secret).await)
                .await?;
            Ok(given.iter().map(ToString::to_string).collect())
        }

        /// `entry` marked as made by this device (its device key's
        /// signature), as an honest device of the account marks its own:
        /// for tests that play a device that still has its key.
        pub fn attest(&self, entry: sotto_proto::v1::LogEntry) -> sotto_proto::v1::LogEntry {
            self.profile.account.attest(entry)
        }

        /// Tries to decrypt a raw MLS message with this device's state without
        /// storing anything. For tests proving a removed member cannot read.
        pub fn try_decrypt(&self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
            let tx = self.profile.db.unchecked_transaction()?;
            let provider = crate::provider::MlsProvider::new(&self.profile.crypto, &tx);
            match group::process(&provider, payload, &self.key_log)? {
                Inbound::Application { plaintext, .. } => Ok(plaintext),
                other => Err(ClientError::Usage(format!(
                    "not an application message: {other:?}"
                ))),
            }
            // `tx` is dropped here: rolled back.
        }
    }
}
