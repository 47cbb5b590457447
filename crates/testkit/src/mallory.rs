//! A hostile member, or an outsider: a registered account that drives MLS
//! (openmls, in memory) and the raw protocol itself, so a test can do what
//! an honest client never would — choose group ids, propose anything, send
//! any `ConversationInfo`, forge framing, replay an old capability. Tests
//! built on it assert that honest clients are not moved by any of it.
//!
//! ```no_run
//! # async fn demo(url: &str) {
//! let mut mallory = sotto_testkit::Mallory::register(url, "mallory").await;
//! let bob = mallory.claim("bob").await;
//! let mut group = mallory.create_group(&[0; 16]);
//! mallory.add(&mut group, &bob).await.unwrap();
//! # }
//! ```

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_client::ClientError;
use sotto_client::transport::{Next, Push, Transport};
use sotto_core::content::{self, AppContent, Body};
use sotto_core::group::{
    self, CheckedKeyPackage, ExternalJoin, Inbound, InviteLink, KeyCheck, KeyDirectory,
    PendingCommit,
};
use sotto_core::identity::{Account, DeviceId, MemberId, Username};
use sotto_proto::v1::{
    self, ClaimKeyPackages, Register, SendMessage, SubmitCommit, UploadKeyPackages,
    client_frame::Body as Request, response,
};

/// Believes every key: Mallory checks nothing.
struct TrustAll;

impl KeyDirectory for TrustAll {
    fn check(&self, _: &MemberId, _: &[u8]) -> KeyCheck {
        KeyCheck::Listed
    }
}

/// A hostile account. Its MLS state lives in memory.
pub struct Mallory {
    pub account: Account,
    pub provider: OpenMlsRustCrypto,
    url: String,
    /// Logged in: her own mailbox.
    conn: Transport,
    /// Never logged in: sends, commits and claims.
    anonymous: Transport,
}

impl std::fmt::Debug for Mallory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mallory")
            .field("username", &self.account.username)
            .finish_non_exhaustive()
    }
}

fn random_id() -> Vec<u8> {
    rand::random::<[u8; sotto_proto::ID_LEN]>().to_vec()
}

impl Mallory {
    /// Registers `name` on the server at `url` and uploads KeyPackages, as
    /// an honest client would: honest clients can add her to groups.
    pub async fn register(url: &str, name: &str) -> Self {
        let account = Account::generate(Username::parse(name).expect("username"));
        let mut conn = Transport::connect(url, &sotto_client::Trust::web_roots())
            .await
            .expect("connect");
        let register = Register {
            username: account.username.to_string(),
            identity_key: account.identity_public().to_vec(),
            device: Some(account.signed_device()),
            challenge_signature: account.device.sign_login(
                &conn.nonce,
                &account.username,
                account.device_id,
            ),
            log_entries: account.registration_log_entries(),
            invite_code: String::new(),
        };
        conn.request(Request::Register(register))
            .await
            .expect("register");
        Self::with_key_packages(url, account, conn).await
    }

    /// Logs in as a device the log already lists for its account (one a
    /// server added behind the account's back, say) and uploads
    /// KeyPackages: honest clients that trust the log can now add it.
    pub async fn log_in(url: &str, account: Account) -> Self {
        let mut conn = Transport::connect(url, &sotto_client::Trust::web_roots())
            .await
            .expect("connect");
        let login = v1::Login {
            username: account.username.to_string(),
            device_id: account.device_id.as_bytes().to_vec(),
            challenge_signature: account.device.sign_login(
                &conn.nonce,
                &account.username,
                account.device_id,
            ),
        };
        conn.request(Request::Login(login)).await.expect("log in");
        Self::with_key_packages(url, account, conn).await
    }

    async fn with_key_packages(url: &str, account: Account, mut conn: Transport) -> Self {
        let provider = OpenMlsRustCrypto::default();
        let key_packages = (0..5)
            .map(|_| group::new_key_package(&provider, &account, false).expect("key package"))
            .collect();
        let last_resort = group::new_key_package(&provider, &account, true).expect("key package");
        conn.request(Request::UploadKeyPackages(UploadKeyPackages {
            key_packages,
            last_resort,
        }))
        .await
        .expect("upload key packages");
        let anonymous = Transport::connect(url, &sotto_client::Trust::web_roots())
            .await
            .expect("connect");
        Self {
            account,
            provider,
            url: url.to_owned(),
            conn,
            anonymous,
        }
    }

    pub fn device_id(&self) -> DeviceId {
        self.account.device_id
    }

    /// Sends one request on a connection that never logged in.
    pub async fn request(&mut self, body: Request) -> Result<response::Result, ClientError> {
        self.anonymous.request(body).await
    }

    /// A fresh connection that never registered: an outsider's.
    pub async fn outsider(&self) -> Transport {
        Transport::connect(&self.url, &sotto_client::Trust::web_roots())
            .await
            .expect("connect")
    }

    /// KeyPackages for every device of `user`, certified by the account's
    /// identity key (Mallory does not check the log; she has no reason to).
    pub async fn claim(&mut self, user: &str) -> Vec<CheckedKeyPackage> {
        let username = Username::parse(user).expect("username");
        let request = Request::ClaimKeyPackages(ClaimKeyPackages {
            username: user.to_owned(),
            device_ids: Vec::new(),
        });
        let Ok(response::Result::KeyPackages(bundle)) = self.request(request).await else {
            panic!("claiming {user}'s KeyPackages failed");
        };
        bundle
            .devices
            .iter()
            .map(|claimed| {
                group::check_key_package(&self.provider, &username, &bundle.identity_key, claimed)
                    .expect("a genuine KeyPackage")
            })
            .collect()
    }

    /// A new group, with Mallory its only member, under an id she chose.
    pub fn create_group(&self, group_id: &[u8]) -> MlsGroup {
        MlsGroup::builder()
            .with_group_id(GroupId::from_slice(group_id))
            .ciphersuite(group::CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .build(
                &self.provider,
                &self.account.device,
                self.account.credential_with_key(),
            )
            .expect("create group")
    }

    /// Adds the KeyPackages' devices with an honest commit and Welcome.
    pub async fn add(
        &mut self,
        group: &mut MlsGroup,
        key_packages: &[CheckedKeyPackage],
    ) -> Result<response::Result, ClientError> {
        let pending = group::add_members(&self.provider, group, &self.account.device, key_packages)
            .expect("add members");
        self.submit(group, pending).await
    }

    /// Submits a commit the group holds as pending; merges it if accepted.
    pub async fn submit(
        &mut self,
        group: &mut MlsGroup,
        pending: PendingCommit,
    ) -> Result<response::Result, ClientError> {
        let request = Request::SubmitCommit(SubmitCommit {
            message_id: random_id(),
            group_id: group.group_id().to_vec(),
            epoch: pending.epoch,
            recipients: ids(&pending.recipients),
            commit: pending.commit,
            welcome_message_id: random_id(),
            welcome_recipients: ids(&pending.welcome_recipients),
            welcome: pending.welcome.unwrap_or_default(),
            send_token: pending.send_token,
            next_token_hash: pending.next_token_hash,
            more_recipients: false,
            invite_link_id: Vec::new(),
        });
        let result = self.request(request).await;
        if result.is_ok() {
            group::merge_pending(&self.provider, group).expect("merge");
        } else {
            group::clear_pending(&self.provider, group).expect("clear");
        }
        result
    }

    /// Commits whatever the group holds as pending commit (built with
    /// openmls directly), with the capabilities it needs.
    pub async fn submit_built(
        &mut self,
        group: &mut MlsGroup,
        commit: MlsMessageOut,
    ) -> Result<response::Result, ClientError> {
        let epoch = group.epoch().as_u64();
        let next = group
            .pending_commit()
            .expect("a pending commit")
            .export_secret(
                self.provider.crypto(),
                group::SEND_CAPABILITY_LABEL,
                group.group_id().as_slice(),
                32,
            )
            .expect("next capability");
        let pending = PendingCommit {
            epoch,
            commit: commit.tls_serialize_detached().expect("serialize"),
            welcome: None,
            recipients: others(group, self.device_id()),
            welcome_recipients: Vec::new(),
            send_token: group::send_token(&self.provider, group).expect("capability"),
            next_token_hash: group::token_hash(&next),
        };
        self.submit(group, pending).await
    }

    /// Fetches the sealed GroupInfo published for an invite link (anyone
    /// who knows the link id can).
    pub async fn fetch_group_info(
        &mut self,
        link_id: &[u8],
    ) -> Result<v1::InviteGroupInfo, ClientError> {
        let request = Request::FetchGroupInfo(v1::FetchGroupInfo {
            link_id: link_id.to_vec(),
        });
        match self.request(request).await? {
            response::Result::InviteGroupInfo(info) => Ok(info),
            other => panic!("a fetch answered with {other:?}"),
        }
    }

    /// Builds her external commit by invite link from a fetched GroupInfo,
    /// trusting every key (a modified client), as her current `account`.
    pub fn build_join(&self, link: &InviteLink, info: &v1::InviteGroupInfo) -> ExternalJoin {
        group::join_by_link(
            &self.provider,
            &self.account,
            link,
            info.epoch,
            &info.sealed_group_info,
            &TrustAll,
        )
        .expect("join")
    }

    /// Her external commit into the group of a GroupInfo she got some
    /// other way (from a member), checking nothing.
    pub fn external_commit(&self, info: &MlsMessageOut) -> ExternalJoin {
        use openmls::prelude::tls_codec::DeserializeBytes as _;
        let bytes = info.tls_serialize_detached().expect("serialize");
        let MlsMessageBodyIn::GroupInfo(info) = MlsMessageIn::tls_deserialize_exact_bytes(&bytes)
            .expect("group info")
            .extract()
        else {
            panic!("not a GroupInfo");
        };
        group::external_commit(&self.provider, &self.account, info, String::new())
            .expect("external commit")
            .1
    }

    /// Submits an external commit naming the invite link `link_id`.
    pub async fn submit_join(
        &mut self,
        link_id: &[u8],
        join: &ExternalJoin,
    ) -> Result<response::Result, ClientError> {
        self.request(Request::SubmitCommit(SubmitCommit {
            message_id: random_id(),
            group_id: join.group_id.clone(),
            epoch: join.epoch,
            recipients: ids(&join.recipients),
            commit: join.commit.clone(),
            next_token_hash: join.next_token_hash.clone(),
            invite_link_id: link_id.to_vec(),
            ..SubmitCommit::default()
        }))
        .await
    }

    /// Joins by invite link with a modified client: fetches, opens and
    /// builds trusting every key, and submits.
    pub async fn join_by_link(
        &mut self,
        link: &InviteLink,
    ) -> Result<response::Result, ClientError> {
        let info = self.fetch_group_info(&link.id()).await?;
        let join = self.build_join(link, &info);
        self.submit_join(&link.id(), &join).await
    }

    /// The group's current send capability.
    pub fn capability(&self, group: &MlsGroup) -> Vec<u8> {
        group::send_token(&self.provider, group).expect("capability")
    }

    /// Sends an MLS message (encrypted content, a proposal, anything) to
    /// every other member, with the group's current capability.
    pub async fn send_payload(
        &mut self,
        group: &MlsGroup,
        payload: Vec<u8>,
    ) -> Result<response::Result, ClientError> {
        let send = SendMessage {
            message_id: random_id(),
            group_id: group.group_id().to_vec(),
            recipients: ids(&others(group, self.device_id())),
            payload,
            send_token: self.capability(group),
            more_recipients: false,
            expires_at: 0,
            ephemeral: false,
        };
        self.request(Request::SendMessage(send)).await
    }

    /// Encrypts Sotto content for the group (in its current epoch).
    pub fn encrypt(&self, group: &mut MlsGroup, body: Body) -> Vec<u8> {
        let plaintext = content::encode(&AppContent {
            id: random_id(),
            sent_at_ms: 0,
            body: Some(body),
            log_head: None,
            padding: Vec::new(),
            franking: None,
        });
        group::encrypt(&self.provider, group, &self.account.device, &plaintext).expect("encrypt")
    }

    /// Encrypts and sends Sotto content to every other member.
    pub async fn say(
        &mut self,
        group: &mut MlsGroup,
        body: Body,
    ) -> Result<response::Result, ClientError> {
        let payload = self.encrypt(group, body);
        self.send_payload(group, payload).await
    }

    /// Encrypts `content` as it is (padded), with `aad` as the MLS
    /// authenticated data: franked however a test likes.
    pub fn encrypt_content(
        &self,
        group: &mut MlsGroup,
        content: &AppContent,
        aad: Vec<u8>,
    ) -> Vec<u8> {
        let plaintext = content::encode(content);
        group::encrypt_with_aad(&self.provider, group, &self.account.device, &plaintext, aad)
            .expect("encrypt")
    }

    /// A chat text in the MIMI format, as Sotto clients send texts, for
    /// `group`; and its MIMI message id in hex (as `history --json` shows).
    pub fn mimi_text(&self, group: &MlsGroup, text: &str) -> (Body, String) {
        use sotto_core::mimi::{self, ChatAction, MessageId, SottoUris};
        let salt = rand::random::<[u8; mimi::SALT_LEN]>();
        let uris = SottoUris::new(
            "mallory.invalid",
            self.account.username.as_str(),
            group.group_id().as_slice(),
        );
        let content = ChatAction::Text {
            text: text.to_owned(),
            reply_to: None,
        }
        .to_content(&uris, salt);
        let bytes = mimi::encode(&content).expect("encode");
        let id = MessageId::derive(&uris.sender, &uris.room, &bytes, &salt);
        (Body::Mimi(bytes), id.to_hex())
    }

    /// A text message.
    pub fn text(text: &str) -> Body {
        Body::Text(content::Text {
            text: text.to_owned(),
        })
    }

    /// An `IdentityHandover` of `identity_secret`: what only a device of
    /// the receiver's own account may send.
    pub fn identity_handover(identity_secret: &[u8]) -> Body {
        Body::IdentityHandover(v1::IdentityHandover {
            identity_secret: identity_secret.to_vec(),
        })
    }

    /// A `ConversationInfo` saying the group is a direct conversation.
    pub fn direct_info() -> Body {
        Body::Info(content::ConversationInfo {
            kind: v1::ConversationKind::Direct as i32,
            name: String::new(),
        })
    }

    /// Processes everything in Mallory's mailbox (Welcomes, commits,
    /// messages), trusting every key; returns what it was.
    pub async fn sync(&mut self) -> Vec<Inbound> {
        let login = v1::Login {
            username: self.account.username.to_string(),
            device_id: self.device_id().as_bytes().to_vec(),
            challenge_signature: self.account.device.sign_login(
                &self.conn.nonce,
                &self.account.username,
                self.device_id(),
            ),
        };
        // The registering connection is logged in already; a login on it is
        // refused, which is fine.
        let _ = self.conn.request(Request::Login(login)).await;
        let sync_id = self
            .conn
            .start_request(Request::Sync(v1::Sync {}))
            .await
            .expect("sync");
        let mut inbound = Vec::new();
        loop {
            match self.conn.next(None).await.expect("mailbox") {
                Next::Push(Push::Delivery(d)) => {
                    if let Ok(i) = group::process(&self.provider, &d.payload, &TrustAll) {
                        inbound.push(i);
                    }
                    self.conn.ack(d.seq).await.expect("ack");
                }
                Next::Response(id, response::Result::SyncDone(_)) if id == sync_id => break,
                _ => {}
            }
        }
        inbound
    }

    /// The leaf of `username`'s (first) device in `group`.
    pub fn leaf_of(group: &MlsGroup, username: &str) -> LeafNodeIndex {
        group
            .members()
            .find(|m| {
                MemberId::from_credential(&m.credential)
                    .is_ok_and(|id| id.username.as_str() == username)
            })
            .expect("a member")
            .index
    }

    /// A group Mallory is in, from her storage.
    pub fn load(&self, group_id: &[u8]) -> MlsGroup {
        group::load(&self.provider, group_id).expect("group")
    }
}

/// Every member device but Mallory's own (she does not care for sealed
/// sender, and keeps her mailbox free of her own echoes).
fn others(group: &MlsGroup, own: DeviceId) -> Vec<DeviceId> {
    group::recipients(group)
        .into_iter()
        .filter(|d| *d != own)
        .collect()
}

fn ids(devices: &[DeviceId]) -> Vec<Vec<u8>> {
    devices.iter().map(|d| d.as_bytes().to_vec()).collect()
}
