//! This device's profile: the account's keys and the profile database, with
//! an MLS provider over it. Everything here is local and synchronous, so the
//! network code elsewhere can rely on one rule: a change to MLS state and the
//! rows it implies commit in one transaction, or not at all.

use crate::ClientError;
use crate::endpoint::Trust;
use crate::provider::MlsProvider;
use crate::store::lock::Passphrase;
use crate::store::{self, Conversation, ConversationKind, HistoryEntry};
use openmls_rust_crypto::RustCrypto;
use rusqlite::Connection;
use sotto_core::group;
use sotto_core::identity::{Account, DeviceId, DeviceKey, IdentityKey, MemberId, Username};
use std::path::{Path, PathBuf};

pub(crate) use crate::clock::now_ms;

pub(crate) fn random_id() -> Vec<u8> {
    rand::random::<[u8; sotto_proto::ID_LEN]>().to_vec()
}

pub(crate) fn profile_db(dir: &Path) -> PathBuf {
    dir.join("sotto.db")
}

/// Creates (or opens) the profile database in `dir`, which must not hold an
/// account yet.
pub(crate) fn open_new_profile(dir: &Path) -> Result<Connection, ClientError> {
    store::create_profile_dir(dir).map_err(|e| {
        ClientError::Usage(format!(
            "cannot create profile directory {}: {e}",
            dir.display()
        ))
    })?;
    if store::lock::is_locked(dir)? {
        return Err(ClientError::Usage(format!(
            "profile {} is locked and already holds an account; use another --profile",
            dir.display()
        )));
    }
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

/// A member device of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    pub username: String,
    pub device_id: String,
    /// An admin of a group with admins.
    pub admin: bool,
}

/// What a profile directory holds: the database, the account, and the
/// server it talks to with what to trust on the way.
pub(crate) struct Stored {
    pub db: Connection,
    pub account: Account,
    pub server_url: String,
    pub trust: Trust,
    pub log_key: Vec<u8>,
}

impl Stored {
    /// Opens the account stored in the profile `dir`; a locked profile
    /// needs its `passphrase`.
    pub(crate) fn open(dir: &Path, passphrase: Option<&Passphrase>) -> Result<Self, ClientError> {
        let path = profile_db(dir);
        if !store::exists(&path) {
            return Err(ClientError::Usage(format!(
                "no account in profile {}; create one with `sotto register USERNAME --server URL`",
                dir.display()
            )));
        }
        let db = store::lock::open(&path, passphrase)?;
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
        Ok(Self {
            db,
            account,
            server_url: row.server_url,
            trust,
            log_key: row.log_key,
        })
    }

    /// Saves a new profile: the account's keys, the server and the log key
    /// pinned for it.
    pub(crate) fn save(&self) -> Result<(), ClientError> {
        let account = &self.account;
        Ok(store::save_profile(
            &self.db,
            &store::ProfileRow {
                username: account.username.to_string(),
                server_url: self.server_url.clone(),
                identity_secret: account.identity.secret().to_vec(),
                device_id: account.device_id.as_bytes().to_vec(),
                device_secret: account.device.secret().to_vec(),
                log_key: self.log_key.clone(),
                ca_pem: self.trust.ca_pem().map(str::to_owned),
                insecure_transport: self.trust.insecure_transport,
            },
        )?)
    }
}

/// The account on this device and its profile database. Async code takes
/// it as `&mut Profile` even to read: a SQLite connection is not `Sync`, so
/// a future holding `&Profile` could not move between threads.
pub(crate) struct Profile {
    pub(crate) db: Connection,
    pub(crate) crypto: RustCrypto,
    pub(crate) account: Account,
}

impl Profile {
    pub(crate) fn new(db: Connection, account: Account) -> Self {
        Self {
            db,
            crypto: RustCrypto::default(),
            account,
        }
    }

    /// An MLS provider over the database outside any transaction, for reads.
    pub(crate) fn provider(&self) -> MlsProvider<'_> {
        MlsProvider::new(&self.crypto, &self.db)
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
        let provider = self.provider();
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

    /// The group a conversation named by the user sends on, or why there is
    /// none.
    pub(crate) fn group_of_named(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        self.conversation_group(&conversation)?.ok_or_else(|| {
            ClientError::Usage(format!("you are no longer in the conversation {name}"))
        })
    }

    // ------------------------------------------------------------ queries

    /// Deletes the disappearing messages whose time has come (every
    /// command and every wake of `listen` runs this, so an expired message
    /// outlives its timer only while no command runs).
    pub(crate) fn purge_expired(&self) -> Result<(), ClientError> {
        let purged = store::purge_expired(&self.db, now_ms())?;
        if purged > 0 {
            tracing::debug!(purged, "deleted expired disappearing messages");
        }
        Ok(())
    }

    pub(crate) fn history(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        self.purge_expired()?;
        let conversation = self.conversation_named(kind, name)?;
        Ok(store::history(&self.db, &conversation)?)
    }

    pub(crate) fn groups(&self) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        for conversation in store::all_conversations(&self.db, ConversationKind::Group)? {
            if self.conversation_group(&conversation)?.is_some() {
                names.push(conversation.name);
            }
        }
        Ok(names)
    }

    pub(crate) fn conversation_members(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Vec<MemberInfo>, ClientError> {
        let group_id = self.group_of_named(kind, name)?;
        let g = group::load(&self.provider(), &group_id)?;
        let policy = group::admin_policy(&g)?;
        let mut members: Vec<MemberInfo> = group::members(&g)
            .into_iter()
            .map(|m: MemberId| MemberInfo {
                admin: policy.as_ref().is_some_and(|p| p.is_admin(&m.username)),
                username: m.username.to_string(),
                device_id: m.device_id.to_string(),
            })
            .collect();
        members.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(members)
    }

    /// The admin policy of a conversation's group (`None`: a flat group).
    pub(crate) fn admin_policy(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<Option<group::AdminPolicy>, ClientError> {
        let group_id = self.group_of_named(kind, name)?;
        Ok(group::admin_policy(&group::load(
            &self.provider(),
            &group_id,
        )?)?)
    }

    pub(crate) fn dropped_from_former_members(
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

    pub(crate) fn epoch_state(
        &self,
        kind: ConversationKind,
        name: &str,
    ) -> Result<(u64, Vec<u8>), ClientError> {
        let conversation = self.conversation_named(kind, name)?;
        let group_id = self
            .conversation_group(&conversation)?
            .ok_or_else(|| ClientError::Usage(format!("no active group for {name}")))?;
        let g = group::load(&self.provider(), &group_id)?;
        Ok((
            g.epoch().as_u64(),
            g.epoch_authenticator().as_slice().to_vec(),
        ))
    }
}
