//! A third-party auditor (`sotto audit URL --follow --sign KEYFILE`): it
//! audits a server's whole key log once, then follows it, one
//! [`Follower::step`] at a time. Each step fetches the newest head, checks
//! that it extends the last head audited (a consistency proof, so a log
//! rewritten or shown differently is a [`Fork`]), replays the new entries
//! with the rest, countersigns the head and hands the countersignature to
//! the server, which serves it to clients that require this auditor.
//!
//! The auditor never logs in and learns nothing the public log does not
//! show. Time comes in as an argument; the CLI loops over `step`.

use sotto_proto::v1::{
    Countersignature, GetConsistency, GetLogHead, LogEntry, SignedTreeHead, SubmitCountersignature,
    client_frame, response,
};
use sotto_transparency::AuditReport;
pub use sotto_transparency::AuditorKey;

use crate::ClientError;
use crate::endpoint::Trust;
use crate::transport::Transport;

/// Two heads of the same server that cannot both be true: the second does
/// not extend the first. The auditor stops; its report names both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The last head the auditor checked and countersigned.
    pub audited: SignedTreeHead,
    /// The head the server presents now.
    pub presented: SignedTreeHead,
    /// Why they are inconsistent.
    pub reason: String,
}

impl std::fmt::Display for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FORK: the server's key log is not append-only. Audited head: {} entries, root {}, \
             signed at {} ms; presented head: {} entries, root {}, signed at {} ms ({}). Both \
             heads are signed by the server's log key: keep them as evidence and tell the \
             server's users",
            self.audited.tree_size,
            hex::encode(&self.audited.root_hash),
            self.audited.timestamp_ms,
            self.presented.tree_size,
            hex::encode(&self.presented.root_hash),
            self.presented.timestamp_ms,
            self.reason
        )
    }
}

/// Why a follow step failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The server showed a head that does not extend the one audited
    /// before: stop and report.
    #[error("{0}")]
    Fork(Box<Fork>),
    /// The log fails the audit, the server is unreachable or refused the
    /// countersignature. A network error may pass; the rest is reported.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What one step checked and countersigned.
#[derive(Clone, Debug)]
pub struct FollowStep {
    /// The head audited in this step.
    pub head: SignedTreeHead,
    /// Entries new since the last step.
    pub new_entries: u64,
    /// The whole log's audit at this head.
    pub report: AuditReport,
    /// What was handed to the server.
    pub countersignature: Countersignature,
}

/// An auditor following one server.
#[derive(Debug)]
pub struct Follower {
    server_url: String,
    trust: Trust,
    key: AuditorKey,
    log_key: Vec<u8>,
    /// Every entry up to `head`, checked.
    entries: Vec<LogEntry>,
    /// The last head audited (and countersigned); `None` before the first
    /// step.
    head: Option<SignedTreeHead>,
}

impl Follower {
    /// An auditor of `server_url` signing with `key`. With `log_key`, the
    /// server must announce exactly that key; otherwise the key it
    /// announces at the first step is pinned.
    pub fn new(server_url: &str, trust: &Trust, key: AuditorKey, log_key: Option<&[u8]>) -> Self {
        Self {
            server_url: server_url.to_owned(),
            trust: trust.clone(),
            key,
            log_key: log_key.map(<[u8]>::to_vec).unwrap_or_default(),
            entries: Vec::new(),
            head: None,
        }
    }

    /// The last head audited, if any.
    pub fn head(&self) -> Option<&SignedTreeHead> {
        self.head.as_ref()
    }

    /// The auditor's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// One round: fetch the newest head, check it extends the last one
    /// audited, fetch and replay the new entries, countersign the head at
    /// `now_ms` and submit the countersignature. The first step audits the
    /// whole log.
    pub async fn step(&mut self, now_ms: u64) -> Result<FollowStep, FollowError> {
        let mut t = Transport::connect(&self.server_url, &self.trust).await?;
        if self.log_key.is_empty() {
            self.log_key = t.log_key.clone();
        } else if self.log_key != t.log_key {
            return Err(ClientError::KeyLog(format!(
                "{} announces the log key {}, not {}: it changed its key, or this is not the \
                 server being audited",
                self.server_url,
                hex::encode(&t.log_key),
                hex::encode(&self.log_key)
            ))
            .into());
        }
        let head = match t
            .request(client_frame::Body::GetLogHead(GetLogHead {}))
            .await?
        {
            response::Result::LogHead(head) => head,
            _ => return Err(ClientError::Protocol("expected a log head".into()).into()),
        };
        sotto_transparency::verify_head(&self.log_key, &head)
            .map_err(|e| ClientError::KeyLog(format!("a key-log head does not verify: {e}")))?;
        let old_size = match &self.head {
            Some(audited) => {
                self.check_extends(&mut t, audited, &head).await?;
                audited.tree_size
            }
            None => 0,
        };
        let mut entries = self.entries.clone();
        crate::keys::fetch_entries(&mut t, &mut entries, head.tree_size).await?;
        let report = sotto_transparency::audit(&self.log_key, entries.iter().cloned(), &head)
            .map_err(|e| {
                ClientError::KeyLog(format!(
                    "the key log of {} fails the audit: {e}",
                    self.server_url
                ))
            })?;
        let countersignature = self.key.countersign(&self.log_key, &head, now_ms);
        let request = SubmitCountersignature {
            countersignature: Some(countersignature.clone()),
        };
        match t
            .request(client_frame::Body::SubmitCountersignature(request))
            .await?
        {
            response::Result::Done(_) => {}
            _ => return Err(ClientError::Protocol("expected Done".into()).into()),
        }
        t.close().await;
        self.entries = entries;
        self.head = Some(head.clone());
        Ok(FollowStep {
            new_entries: head.tree_size.saturating_sub(old_size),
            head,
            report,
            countersignature,
        })
    }

    /// Checks that `new` extends `audited`; a [`Fork`] if not.
    async fn check_extends(
        &self,
        t: &mut Transport,
        audited: &SignedTreeHead,
        new: &SignedTreeHead,
    ) -> Result<(), FollowError> {
        let fork = |reason: String| {
            FollowError::Fork(Box::new(Fork {
                audited: audited.clone(),
                presented: new.clone(),
                reason,
            }))
        };
        if new.tree_size < audited.tree_size {
            return Err(fork(format!(
                "the log shrank from {} to {} entries",
                audited.tree_size, new.tree_size
            )));
        }
        let path = if audited.tree_size == 0 || audited.tree_size == new.tree_size {
            Vec::new()
        } else {
            let request = GetConsistency {
                old_size: audited.tree_size,
                new_size: new.tree_size,
            };
            match t
                .request(client_frame::Body::GetConsistency(request))
                .await?
            {
                response::Result::Consistency(proof) => proof.path,
                _ => {
                    return Err(ClientError::Protocol("expected a consistency proof".into()).into());
                }
            }
        };
        sotto_transparency::verify_consistency(audited, new, &path).map_err(|e| fork(e.to_string()))
    }
}
