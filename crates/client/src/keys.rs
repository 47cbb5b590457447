//! Checking keys against the transparency log: every account this device
//! talks to is looked up in the log (with inclusion proofs against a signed
//! head), every head is checked for consistency with the last one this
//! device pinned, and heads peers carry in their messages are compared with
//! ours. Anything that does not add up is refused with a warning.

use crate::ClientError;
use crate::profile::{Profile, now_ms};
use crate::session::{Anonymous, look_up};
use crate::store;
use crate::transport::Transport;
use rusqlite::Connection;
use sotto_core::group::{KeyCheck, KeyDirectory};
use sotto_core::identity::{MemberId, Username};
use sotto_core::safety::SafetyNumber;
use sotto_proto::Message as _;
use sotto_proto::v1::{
    AccountLog, DirectoryLookup, ErrorCode, GetAccountLog, GetConsistency, GetLogHead,
    LookupAccount, SignedEpoch, SignedTreeHead, client_frame, response,
};
use sotto_transparency::AccountState;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// By default, how old a head the server presents may be once this device
/// has seen a newer one: a day. The server signs a fresh head for every
/// request, so an honest one never comes near it.
pub const DEFAULT_MAX_HEAD_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A head of the same tree size is pinned again when it is this much
/// newer than the pinned one (one write an hour at most).
const REPIN_AFTER_MS: u64 = 60 * 60 * 1000;

/// Where a head comes from, for the freshness rule in
/// [`KeyLog::check_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadSource {
    /// The server, answering now: it must be fresh.
    Server,
    /// Inside another member's message, which may have waited in a mailbox.
    Peer,
}

/// The server's transparency log as this device sees it: the log's key,
/// pinned when the profile was made, and the accounts verified against it
/// during this session. The newest head verified is pinned in the profile.
#[derive(Debug)]
pub(crate) struct KeyLog {
    log_key: Vec<u8>,
    /// How old a head the server presents may be once a newer one was
    /// seen ([`DEFAULT_MAX_HEAD_AGE`]).
    pub(crate) max_head_age: Duration,
    verified: HashMap<Username, AccountState>,
    /// Looked up in this processing round: a device missing from these is
    /// not in the log, as opposed to not looked up yet.
    fresh: HashSet<Username>,
    /// The directory epoch (number, root) the required auditors last vouched
    /// for in this session.
    countersigned: Option<(u64, Vec<u8>)>,
}

impl KeyDirectory for KeyLog {
    fn check(&self, member: &MemberId, signature_key: &[u8]) -> KeyCheck {
        let fresh = self.fresh.contains(&member.username);
        let Some(state) = self.verified.get(&member.username) else {
            return if fresh {
                KeyCheck::Refused("the account is not in the transparency log".into())
            } else {
                KeyCheck::Unknown
            };
        };
        let device_id: &[u8; 16] = match member.device_id.as_bytes().try_into() {
            Ok(id) => id,
            Err(_) => return KeyCheck::Refused("malformed device id".into()),
        };
        match state.devices.get(device_id) {
            Some(key) if key.as_slice() == signature_key => KeyCheck::Listed,
            Some(_) => KeyCheck::Refused(
                "its key is not the one the transparency log lists for this device".into(),
            ),
            None if fresh => KeyCheck::Refused(
                "the device is not in the transparency log for this account".into(),
            ),
            None => KeyCheck::Unknown,
        }
    }
}

impl KeyLog {
    pub(crate) fn new(log_key: Vec<u8>) -> Self {
        Self {
            log_key,
            max_head_age: DEFAULT_MAX_HEAD_AGE,
            verified: HashMap::new(),
            fresh: HashSet::new(),
            countersigned: None,
        }
    }

    /// The log key this profile pinned; a server that presents another is
    /// not the one the profile registered with.
    pub(crate) fn log_key(&self) -> &[u8] {
        &self.log_key
    }

    /// Starts a processing round: accounts must be looked up again before
    /// a device missing from them counts as not in the log.
    pub(crate) fn start_round(&mut self) {
        self.fresh.clear();
    }

    /// Counts `username` as looked up in this round (even when the look-up
    /// failed for good: its devices are then not in the log).
    pub(crate) fn mark_fresh(&mut self, username: Username) {
        self.fresh.insert(username);
    }

    /// Looks `username` up in the log, verifies it, checks the head and the
    /// pinned identity key, and remembers the result for this session.
    /// Looks of this account go on `logged_in` ([`look_up`]).
    pub(crate) async fn verify_account(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
        logged_in: &mut Transport,
        username: &Username,
    ) -> Result<AccountState, ClientError> {
        let request = GetAccountLog {
            username: username.to_string(),
        };
        let log = match look_up(
            anonymous,
            logged_in,
            client_frame::Body::GetAccountLog(request),
        )
        .await?
        {
            response::Result::AccountLog(log) => log,
            _ => return Err(ClientError::Protocol("expected an account log".into())),
        };
        self.accept_account_log(profile, anonymous, username, &log, false)
            .await
    }

    /// Checks that the key log lists this device, with its key, for this
    /// account: the first thing a new profile does (pinning the log head).
    pub(crate) async fn verify_this_device(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
        logged_in: &mut Transport,
    ) -> Result<(), ClientError> {
        let own = profile.account.username.clone();
        let state = self
            .verify_account(profile, anonymous, logged_in, &own)
            .await?;
        if state.devices.get(profile.account.device_id.as_bytes())
            != Some(&profile.account.device.public())
        {
            return Err(ClientError::KeyLog(
                "the key log does not list this device for your account".into(),
            ));
        }
        Ok(())
    }

    /// Verifies an account log the server sent (on its own or with
    /// KeyPackages). With `accept_new_identity`, a changed identity key is
    /// pinned instead of refused (the user saw the warning and accepted it).
    pub(crate) async fn accept_account_log(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
        username: &Username,
        log: &AccountLog,
        accept_new_identity: bool,
    ) -> Result<AccountState, ClientError> {
        let state = sotto_transparency::verify_account_log(&self.log_key, username.as_str(), log)
            .map_err(|e| {
            ClientError::KeyLog(format!(
                "the server's key log for {username} does not verify: {e}"
            ))
        })?;
        // The identity first: a changed key is the clearest warning to give.
        if *username != profile.account.username {
            if accept_new_identity {
                store::save_contact(&profile.db, username.as_str(), &state.identity_key)?;
            }
            check_identity(&profile.db, username, &state)?;
        } else if state.identity_key != profile.account.identity_public() {
            own_identity_moved(profile, &state)?;
        }
        if let Some(head) = &log.head {
            self.check_head(profile, anonymous, head, HeadSource::Server)
                .await?;
        }
        // The log proves what it shows, not that it shows everything: the
        // directory proves the account's latest version. (This account's
        // own is checked by the own-account watch, on the logged-in
        // connection: `own_account::check_own_account`.)
        if *username != profile.account.username {
            let lookup = look_up_directory(anonymous, None, username).await?;
            let auditors = store::trusted_auditors(&profile.db)?;
            self.check_auditors(&auditors, anonymous, &lookup).await?;
            self.check_lookup(&profile.db, username, &lookup, &state, now_ms())?;
        }
        self.verified.insert(username.clone(), state.clone());
        self.fresh.insert(username.clone());
        Ok(state)
    }

    /// The safety number of this account and `user`, and whether the user
    /// marked it verified. With `accept_new_identity`, a changed identity
    /// key (after the warning) is accepted, unverified.
    pub(crate) async fn safety_number(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
        logged_in: &mut Transport,
        user: &Username,
        accept_new_identity: bool,
    ) -> Result<(SafetyNumber, bool), ClientError> {
        let request = GetAccountLog {
            username: user.to_string(),
        };
        let log = match look_up(
            anonymous,
            logged_in,
            client_frame::Body::GetAccountLog(request),
        )
        .await
        {
            Ok(response::Result::AccountLog(log)) => log,
            Ok(_) => return Err(ClientError::Protocol("expected an account log".into())),
            Err(e) if e.server_code() == Some(ErrorCode::UnknownUser) => {
                return Err(ClientError::Usage(format!(
                    "there is no account named {user} on this server"
                )));
            }
            Err(e) => return Err(e),
        };
        let state = self
            .accept_account_log(profile, anonymous, user, &log, accept_new_identity)
            .await?;
        let number = SafetyNumber::new(
            (
                &profile.account.username,
                &profile.account.identity_public(),
            ),
            (user, &state.identity_key),
        );
        let verified = store::contact(&profile.db, user.as_str())?.is_some_and(|k| k.verified);
        Ok((number, verified))
    }

    /// Fetches the server's current head and checks it against the pinned one.
    pub(crate) async fn refresh_head(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
    ) -> Result<(), ClientError> {
        match anonymous
            .request(client_frame::Body::GetLogHead(GetLogHead {}))
            .await?
        {
            response::Result::LogHead(head) => {
                self.check_head(profile, anonymous, &head, HeadSource::Server)
                    .await
            }
            _ => Err(ClientError::Protocol("expected a log head".into())),
        }
    }

    /// Verifies `head`'s signature and its consistency with the pinned head,
    /// asking the server for a consistency proof when sizes differ; pins it
    /// if it is newer. A head the server presents now must also be fresh:
    /// older than [`KeyLog::max_head_age`] while this device has pinned a
    /// newer one, it is a stale view (a server hiding newer key changes by
    /// replaying an old head), and refused.
    pub(crate) async fn check_head(
        &self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
        head: &SignedTreeHead,
        source: HeadSource,
    ) -> Result<(), ClientError> {
        sotto_transparency::verify_head(&self.log_key, head)
            .map_err(|e| ClientError::KeyLog(format!("a key-log head does not verify: {e}")))?;
        let Some(pinned) = pinned_head(&profile.db)? else {
            store::save_log_head(&profile.db, &head.encode_to_vec())?;
            return Ok(());
        };
        let age_ms = now_ms().saturating_sub(head.timestamp_ms);
        if source == HeadSource::Server
            && pinned.timestamp_ms > head.timestamp_ms
            && u128::from(age_ms) > self.max_head_age.as_millis()
        {
            return Err(ClientError::KeyLog(format!(
                "the server presented a key-log head signed {} minutes ago, though this device \
                 has seen a newer one: it may be hiding newer key changes",
                age_ms / 60_000
            )));
        }
        let (old, new) = if head.tree_size >= pinned.tree_size {
            (&pinned, head)
        } else {
            (head, &pinned)
        };
        let path = if old.tree_size == new.tree_size || old.tree_size == 0 {
            Vec::new()
        } else {
            let request = GetConsistency {
                old_size: old.tree_size,
                new_size: new.tree_size,
            };
            match anonymous
                .request(client_frame::Body::GetConsistency(request))
                .await?
            {
                response::Result::Consistency(proof) => proof.path,
                _ => return Err(ClientError::Protocol("expected a consistency proof".into())),
            }
        };
        sotto_transparency::verify_consistency(old, new, &path).map_err(|e| {
            ClientError::KeyLog(format!(
                "the key log forked: the head of size {} is not an extension of the head of size {} ({e}). \
                 The server may be showing different people different keys",
                new.tree_size, old.tree_size
            ))
        })?;
        // The newest head is pinned: a bigger tree, or the same tree signed
        // much later (so "a newer one was seen" stays true).
        if head.tree_size > pinned.tree_size
            || (head.tree_size == pinned.tree_size
                && head.timestamp_ms > pinned.timestamp_ms.saturating_add(REPIN_AFTER_MS))
        {
            store::save_log_head(&profile.db, &head.encode_to_vec())?;
        }
        Ok(())
    }
}

/// Asks the key directory for `username`'s latest version: on the
/// logged-in connection when given (this account's own), else on the
/// anonymous one. An account the log lists but the directory does not is
/// the server hiding it.
pub(crate) async fn look_up_directory(
    anonymous: &mut Anonymous<'_>,
    logged_in: Option<&mut Transport>,
    username: &Username,
) -> Result<DirectoryLookup, ClientError> {
    let body = client_frame::Body::LookupAccount(LookupAccount {
        username: username.to_string(),
    });
    let answer = match logged_in {
        Some(logged_in) => look_up(anonymous, logged_in, body).await,
        None => anonymous.request(body).await,
    };
    match answer {
        Ok(response::Result::DirectoryLookup(lookup)) => Ok(lookup),
        Ok(_) => Err(ClientError::Protocol(
            "expected a key-directory lookup".into(),
        )),
        Err(e) if e.server_code() == Some(ErrorCode::UnknownUser) => {
            Err(ClientError::KeyLog(format!(
                "the key directory has no version of {username}'s account, though the key log \
                 lists it: the server is hiding the account's latest state"
            )))
        }
        Err(e) => Err(e),
    }
}

impl KeyLog {
    /// With auditors required (`sotto trust-auditor`), refuses a lookup's
    /// epoch unless each auditor countersigned it, or an epoch it extends,
    /// within its lag ([`crate::directory_audit::check_countersigned`]).
    /// An epoch that passed is not checked again in this session.
    /// `auditors`: the profile's ([`store::trusted_auditors`]).
    pub(crate) async fn check_auditors(
        &mut self,
        auditors: &[(Vec<u8>, u64)],
        anonymous: &mut Anonymous<'_>,
        lookup: &DirectoryLookup,
    ) -> Result<(), ClientError> {
        let Some(epoch) = &lookup.epoch else {
            return Ok(()); // check_lookup refuses it
        };
        if auditors.is_empty()
            || self
                .countersigned
                .as_ref()
                .is_some_and(|(n, root)| *n == epoch.epoch && *root == epoch.root_hash)
        {
            return Ok(());
        }
        // Boxed: the append-only checks are a deep future of their own.
        Box::pin(crate::directory_audit::check_countersigned(
            anonymous,
            &self.log_key,
            auditors,
            epoch,
            now_ms(),
        ))
        .await?;
        self.countersigned = Some((epoch.epoch, epoch.root_hash.clone()));
        Ok(())
    }

    /// Checks a directory lookup for `username` against the state its
    /// verified key log replays to (`state`), as of `now_ms`:
    ///
    /// - the epoch is signed by the pinned log key;
    /// - it is not older than the newest epoch this device verified (a lower
    ///   number, or the same number with another root or VRF key, is a
    ///   rollback or a fork), nor, once a newer one was seen, older than
    ///   [`KeyLog::max_head_age`];
    /// - the proof shows the version it carries is the latest at that epoch;
    /// - that version is exactly the log's state: a server that leaves the
    ///   newest entries out of the log it shows (the removal of a stolen
    ///   phone) while the directory holds them, or the other way round, is
    ///   caught here.
    ///
    /// Pins the epoch if it is newer.
    pub(crate) fn check_lookup(
        &self,
        db: &Connection,
        username: &Username,
        lookup: &DirectoryLookup,
        state: &AccountState,
        now_ms: u64,
    ) -> Result<(), ClientError> {
        let refused =
            |why: String| ClientError::KeyLog(format!("{username}'s keys are refused: {why}"));
        let epoch = lookup
            .epoch
            .as_ref()
            .ok_or_else(|| refused("the key-directory answer has no signed epoch".into()))?;
        sotto_transparency::verify_epoch(&self.log_key, epoch)
            .map_err(|e| refused(format!("the key directory's epoch does not verify: {e}")))?;
        let pinned = pinned_epoch(db)?;
        if let Some(pinned) = &pinned {
            if pinned.vrf_public_key != epoch.vrf_public_key {
                return Err(refused(
                    "the key directory changed its VRF key: the server may be showing another \
                     directory"
                        .into(),
                ));
            }
            if epoch.epoch < pinned.epoch {
                return Err(refused(format!(
                    "the server answered from key-directory epoch {}, though this device has \
                     seen epoch {}: it may be hiding newer key changes",
                    epoch.epoch, pinned.epoch
                )));
            }
            if epoch.epoch == pinned.epoch && epoch.root_hash != pinned.root_hash {
                return Err(refused(format!(
                    "the key directory forked: epoch {} has two different roots. The server \
                     may be showing different people different keys",
                    epoch.epoch
                )));
            }
            let age_ms = now_ms.saturating_sub(epoch.timestamp_ms);
            if pinned.timestamp_ms > epoch.timestamp_ms
                && u128::from(age_ms) > self.max_head_age.as_millis()
            {
                return Err(refused(format!(
                    "the server presented a key-directory epoch signed {} minutes ago, though \
                     this device has seen a newer one: it may be hiding newer key changes",
                    age_ms / 60_000
                )));
            }
        }
        let (Ok(vrf_public_key), Ok(root)) = (
            <[u8; 32]>::try_from(epoch.vrf_public_key.as_slice()),
            <[u8; 32]>::try_from(epoch.root_hash.as_slice()),
        ) else {
            return Err(refused("the key directory's epoch is malformed".into()));
        };
        let label = sotto_directory::Username::parse(username.as_str())
            .ok_or_else(|| refused("not a username the key directory can hold".into()))?;
        let verified = sotto_directory::verify_lookup(
            &vrf_public_key,
            &root,
            epoch.epoch,
            &label,
            &lookup.proof,
        )
        .map_err(|e| {
            refused(format!(
                "the key directory's lookup proof does not verify: {e}"
            ))
        })?;
        if verified.state != sotto_directory::AccountState::of_log(state) {
            return Err(refused(format!(
                "the key directory's latest version of the account (version {}, epoch {}) is \
                 not what its key log shows. The server is hiding or forging a change to \
                 {username}'s keys or devices (for example the removal of a stolen device)",
                verified.version, verified.epoch
            )));
        }
        let newer = pinned.as_ref().is_none_or(|p| {
            epoch.epoch > p.epoch
                || epoch.timestamp_ms > p.timestamp_ms.saturating_add(REPIN_AFTER_MS)
        });
        if newer {
            store::save_directory_epoch(db, &epoch.encode_to_vec())?;
        }
        Ok(())
    }
}

/// Compares the log's identity key for `username` with the one pinned on
/// first contact (pinning it if there is none).
///
/// A pinned key the log shows the account rotating away from (a chain of
/// `IdentityRotated` entries, each signed by the key before it and proven
/// by the key after it) is an explained change: the new key is pinned, the
/// "verified" mark is cleared (the safety number is made of the identity
/// keys, so it changed), and a notice says "rotated by <user>". Any other
/// change is refused with the identity-change warning.
fn check_identity(
    db: &Connection,
    username: &Username,
    state: &AccountState,
) -> Result<(), ClientError> {
    match store::contact(db, username.as_str())? {
        Some(pinned) if pinned.identity_key == state.identity_key => Ok(()),
        Some(pinned) if state.rotated_from(&pinned.identity_key) => {
            // `save_contact` clears the verified mark of a changed key.
            store::save_contact(db, username.as_str(), &state.identity_key)?;
            note_rotation(db, username, pinned.verified, &state.identity_key)?;
            Ok(())
        }
        Some(_) => {
            // Whatever the user verified, it was not this key.
            store::set_verified(db, username.as_str(), false)?;
            Err(ClientError::IdentityChanged(username.to_string()))
        }
        None => Ok(store::save_contact(
            db,
            username.as_str(),
            &state.identity_key,
        )?),
    }
}

/// The text a contact's explained rotation leaves.
pub fn rotation_notice(username: &str, was_verified: bool) -> String {
    let verified = if was_verified {
        " It is no longer marked verified."
    } else {
        ""
    };
    format!(
        "{username}'s key was rotated by {username} (the key log shows the old key handing over \
         to the new one, as when a device is removed). Your safety number with {username} \
         changed: compare it again with `sotto verify {username}`.{verified}"
    )
}

/// Leaves the rotation notice in the direct conversation with `username`,
/// or in the device log when there is none.
fn note_rotation(
    db: &Connection,
    username: &Username,
    was_verified: bool,
    new_key: &[u8],
) -> Result<(), ClientError> {
    let text = rotation_notice(username.as_str(), was_verified);
    let now = now_ms();
    match store::conversation(db, store::ConversationKind::Direct, username.as_str())? {
        Some(conversation) => {
            let id = [b"rotated:".as_slice(), new_key].concat();
            let line = store::NewMessage {
                id: &id,
                sender: "system",
                kind: store::EntryKind::System,
                text: &text,
                sent_at_ms: now,
            };
            store::insert_message(db, &conversation, &line, now)?;
        }
        None => store::log_device_warning(db, &text, now)?,
    }
    Ok(())
}

/// What the device-log notice of a device that missed a rotation says;
/// the notice goes once the device adopts the new key.
const LACKS_NEW_KEY: &str = "device does not hold the new key";

/// The log shows another identity key for this device's own account:
///
/// - this device holds it (it rotated to it, and crashed before adopting
///   it): it adopts it;
/// - the log shows the account rotating away from this device's key (another
///   device removed one): the device goes on without the new key. It still
///   reads and sends (its device key is unchanged and its certificate was
///   renewed) but cannot link or remove devices; a line in the device log
///   says so, once;
/// - this device rotated the account to its key, and the log shows the key
///   it rotated from: the server hides the rotation. Not refused here, so
///   that the own-account review reports the hidden entry;
/// - anything else is refused.
fn own_identity_moved(profile: &mut Profile, state: &AccountState) -> Result<(), ClientError> {
    if let Some(secret) = store::spare_identity(&profile.db, &state.identity_key)? {
        let identity = sotto_core::identity::IdentityKey::from_secret(&secret)?;
        if identity.public() == state.identity_key {
            store::set_identity_secret(&profile.db, &secret)?;
            store::clear_spare_identities(&profile.db)?;
            profile.account.identity = identity;
            // The notice that this device lacks the key no longer holds.
            store::forget_device_lines(&profile.db, LACKS_NEW_KEY)?;
            tracing::info!("adopted the account's rotated identity key");
            return Ok(());
        }
    }
    if state.rotated_from(&profile.account.identity_public()) {
        let text = format!(
            "your account's identity key was rotated to {} by another of your devices, and this \
             {LACKS_NEW_KEY}: it still sends and reads messages, but cannot link or remove \
             devices until it is handed the new key (the device that removed one sends it; it \
             arrives when this device syncs). If it does not arrive, link or remove devices \
             from that device.",
            hex::encode(state.identity_key)
        );
        if !store::device_log(&profile.db)?
            .iter()
            .any(|(_, t)| *t == text)
        {
            store::log_device_warning(&profile.db, &text, now_ms())?;
        }
        return Ok(());
    }
    if rotated_here(profile, &state.identity_key)? {
        return Ok(());
    }
    Err(ClientError::KeyLog(
        "the key log shows another identity key for your own account".into(),
    ))
}

/// Whether this device knows its account rotated from `old` to the key it
/// holds now (an entry among those it knows its devices made).
fn rotated_here(profile: &Profile, old: &[u8]) -> Result<bool, ClientError> {
    let current = profile.account.identity_public();
    for (_, bytes) in store::own_events(&profile.db)? {
        let Ok(entry) = sotto_proto::v1::LogEntry::decode(bytes.as_slice()) else {
            continue;
        };
        let Ok(event) = sotto_transparency::open_entry(&entry) else {
            continue;
        };
        if let Some(sotto_transparency::account_event::Change::IdentityRotated(r)) = event.change
            && event.identity_key == old
            && r.new_identity_key == current
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The newest key-directory epoch this device verified a lookup against.
pub(crate) fn pinned_epoch(db: &Connection) -> Result<Option<SignedEpoch>, ClientError> {
    store::directory_epoch(db)?
        .map(|bytes| {
            SignedEpoch::decode(bytes.as_slice())
                .map_err(|e| ClientError::Protocol(format!("stored directory epoch: {e}")))
        })
        .transpose()
}

/// The newest log head this device verified, which every message it sends
/// carries so peers can compare.
pub(crate) fn pinned_head(db: &Connection) -> Result<Option<SignedTreeHead>, ClientError> {
    store::log_head(db)?
        .map(|bytes| {
            SignedTreeHead::decode(bytes.as_slice())
                .map_err(|e| ClientError::Protocol(format!("stored log head: {e}")))
        })
        .transpose()
}

/// Connects to `server_url`; with `log_key`, the server must announce
/// exactly that key (a pin from a second source, such as the operator's
/// website).
pub(crate) async fn connect_pinned(
    server_url: &str,
    trust: &crate::Trust,
    log_key: Option<&[u8]>,
) -> Result<Transport, ClientError> {
    let t = Transport::connect(server_url, trust).await?;
    if let Some(expected) = log_key
        && expected != t.log_key.as_slice()
    {
        return Err(ClientError::KeyLog(format!(
            "{server_url} announces the log key {}, not the one you gave ({}): \
             this is not the server you meant, or it changed its key",
            hex::encode(&t.log_key),
            hex::encode(expected)
        )));
    }
    Ok(t)
}
