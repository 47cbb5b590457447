//! Checking keys against the transparency log: every account this device
//! talks to is looked up in the log (with inclusion proofs against a signed
//! head), every head is checked for consistency with the last one this
//! device pinned, and heads peers carry in their messages are compared with
//! ours. Anything that does not add up is refused with a warning.

use crate::ClientError;
use crate::client::Client;
use crate::store;
use crate::transport::Transport;
use sotto_core::group::{KeyCheck, KeyDirectory};
use sotto_core::identity::{MemberId, Username};
use sotto_core::safety::SafetyNumber;
use sotto_proto::Message as _;
use sotto_proto::v1::{
    AccountLog, ErrorCode, GetAccountLog, GetConsistency, GetLogHead, SignedTreeHead, client_frame,
    response,
};
use sotto_transparency::AccountState;
use std::collections::{HashMap, HashSet};

/// Accounts verified against the log during this session.
#[derive(Debug, Default)]
pub(crate) struct Accounts {
    pub verified: HashMap<Username, AccountState>,
    /// Looked up in this processing round: a device missing from these is
    /// not in the log, as opposed to not looked up yet.
    pub fresh: HashSet<Username>,
}

impl KeyDirectory for Accounts {
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

impl Client {
    /// Looks `username` up in the log, verifies it, checks the head and the
    /// pinned identity key, and remembers the result for this session.
    pub(crate) async fn verify_account(
        &mut self,
        username: &Username,
    ) -> Result<AccountState, ClientError> {
        let request = GetAccountLog {
            username: username.to_string(),
        };
        let log = match self
            .anonymous_request(client_frame::Body::GetAccountLog(request))
            .await?
        {
            response::Result::AccountLog(log) => log,
            _ => return Err(ClientError::Protocol("expected an account log".into())),
        };
        self.accept_account_log(username, &log).await
    }

    /// Verifies an account log the server sent (on its own or with
    /// KeyPackages).
    pub(crate) async fn accept_account_log(
        &mut self,
        username: &Username,
        log: &AccountLog,
    ) -> Result<AccountState, ClientError> {
        self.accept_account_log_with(username, log, false).await
    }

    async fn accept_account_log_with(
        &mut self,
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
        if *username != self.account.username {
            if accept_new_identity {
                store::save_contact(&self.db, username.as_str(), &state.identity_key)?;
            }
            self.check_identity(username, &state.identity_key)?;
        } else if state.identity_key != self.account.identity_public() {
            return Err(ClientError::KeyLog(
                "the key log shows another identity key for your own account".into(),
            ));
        }
        if let Some(head) = &log.head {
            self.check_head(head).await?;
        }
        self.accounts
            .verified
            .insert(username.clone(), state.clone());
        self.accounts.fresh.insert(username.clone());
        Ok(state)
    }

    /// Compares the log's identity key for `username` with the one pinned
    /// on first contact.
    pub(crate) fn check_identity(
        &self,
        username: &Username,
        identity_key: &[u8],
    ) -> Result<(), ClientError> {
        match store::contact(&self.db, username.as_str())? {
            Some(pinned) if pinned.identity_key != identity_key => {
                // Whatever the user verified, it was not this key.
                store::set_verified(&self.db, username.as_str(), false)?;
                Err(ClientError::IdentityChanged(username.to_string()))
            }
            Some(_) => Ok(()),
            None => Ok(store::save_contact(
                &self.db,
                username.as_str(),
                identity_key,
            )?),
        }
    }

    /// The safety number of this account and `username`, and whether the
    /// user marked it verified. With `accept_new_identity`, a changed
    /// identity key (after the warning) is accepted, unverified.
    pub async fn safety_number(
        &mut self,
        username: &str,
        accept_new_identity: bool,
    ) -> Result<(SafetyNumber, bool), ClientError> {
        let user = Username::parse(username)?;
        if user == self.account.username {
            return Err(ClientError::Usage(
                "compare safety numbers with someone else".into(),
            ));
        }
        self.connected(async |c, _logged_in| {
            let request = GetAccountLog {
                username: user.to_string(),
            };
            let log = match c
                .anonymous_request(client_frame::Body::GetAccountLog(request))
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
            let state = c
                .accept_account_log_with(&user, &log, accept_new_identity)
                .await?;
            let number = SafetyNumber::new(
                (&c.account.username, &c.account.identity_public()),
                (&user, &state.identity_key),
            );
            let verified = store::contact(&c.db, user.as_str())?.is_some_and(|k| k.verified);
            Ok((number, verified))
        })
        .await
    }

    /// Whether the user marked `username`'s current identity key verified.
    pub fn is_verified(&self, username: &str) -> Result<bool, ClientError> {
        Ok(store::contact(&self.db, username)?.is_some_and(|c| c.verified))
    }

    /// Marks `username`'s current identity key as verified (the user
    /// compared safety numbers). Cleared if the key ever changes.
    pub async fn mark_verified(&mut self, username: &str) -> Result<SafetyNumber, ClientError> {
        let (number, _) = self.safety_number(username, false).await?;
        store::set_verified(&self.db, username, true)?;
        Ok(number)
    }

    /// Fetches the server's current head and checks it against the pinned one.
    pub(crate) async fn refresh_head(&mut self) -> Result<(), ClientError> {
        match self
            .anonymous_request(client_frame::Body::GetLogHead(GetLogHead {}))
            .await?
        {
            response::Result::LogHead(head) => self.check_head(&head).await,
            _ => Err(ClientError::Protocol("expected a log head".into())),
        }
    }

    /// Verifies `head`'s signature and its consistency with the pinned head,
    /// asking the server for a consistency proof when sizes differ; pins it
    /// if it is newer.
    pub(crate) async fn check_head(&mut self, head: &SignedTreeHead) -> Result<(), ClientError> {
        sotto_transparency::verify_head(&self.log_key, head)
            .map_err(|e| ClientError::KeyLog(format!("a key-log head does not verify: {e}")))?;
        let Some(pinned) = self.pinned_head()? else {
            store::save_log_head(&self.db, &head.encode_to_vec())?;
            return Ok(());
        };
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
            match self
                .anonymous_request(client_frame::Body::GetConsistency(request))
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
        if head.tree_size > pinned.tree_size {
            store::save_log_head(&self.db, &head.encode_to_vec())?;
        }
        Ok(())
    }

    pub(crate) fn pinned_head(&self) -> Result<Option<SignedTreeHead>, ClientError> {
        store::log_head(&self.db)?
            .map(|bytes| {
                SignedTreeHead::decode(bytes.as_slice())
                    .map_err(|e| ClientError::Protocol(format!("stored log head: {e}")))
            })
            .transpose()
    }
}

/// Downloads the whole key log of the server at `server_url` and audits it:
/// every entry's signature, every account's history, and that the entries
/// hash to the root of the server's signed head. With `log_key`, the
/// server must announce exactly that key (a pin from a second source, such
/// as the operator's website); otherwise the key it announces is audited.
pub async fn audit(
    server_url: &str,
    trust: &crate::Trust,
    log_key: Option<&[u8]>,
) -> Result<sotto_transparency::AuditReport, ClientError> {
    let mut t = Transport::connect(server_url, trust).await?;
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
    let head = match t
        .request(client_frame::Body::GetLogHead(GetLogHead {}))
        .await?
    {
        response::Result::LogHead(head) => head,
        _ => return Err(ClientError::Protocol("expected a log head".into())),
    };
    let mut entries = Vec::new();
    while (entries.len() as u64) < head.tree_size {
        let request = sotto_proto::v1::GetLogEntries {
            start: entries.len() as u64,
            count: sotto_proto::MAX_LOG_ENTRIES_PER_REQUEST,
        };
        match t
            .request(client_frame::Body::GetLogEntries(request))
            .await?
        {
            response::Result::LogEntries(page) if !page.entries.is_empty() => {
                entries.extend(page.entries);
            }
            _ => {
                return Err(ClientError::Protocol(
                    "the server stopped sending log entries".into(),
                ));
            }
        }
    }
    entries.truncate(usize::try_from(head.tree_size).unwrap_or(usize::MAX));
    let log_key = t.log_key.clone();
    t.close().await;
    sotto_transparency::audit(&log_key, entries, &head).map_err(|e| {
        ClientError::KeyLog(format!("the key log of {server_url} fails the audit: {e}"))
    })
}
