//! A third-party auditor (`sotto audit URL --follow --sign KEYFILE`): it
//! audits a server's key directory from the empty directory to the latest
//! epoch once, then follows it, one [`Follower::step`] at a time. Each step
//! fetches the newest signed epoch, checks akd's append-only proofs from
//! the last epoch audited to it (so a directory rewritten or shown
//! differently is a [`Fork`]), countersigns (epoch, root, time) and hands
//! the countersignature to the server, which serves it to clients that
//! require this auditor.
//!
//! The auditor never logs in and learns no username: the directory's
//! labels are VRF outputs, and it never downloads the key log. Time comes
//! in as an argument; the CLI loops over `step`.

pub use sotto_proto::v1::SignedEpoch;
use sotto_proto::v1::{Countersignature, SubmitCountersignature, client_frame, response};
pub use sotto_transparency::AuditorKey;

use crate::ClientError;
use crate::directory_audit::{AppendOnlyFailure, AuditedEpoch, check_append_only, signed_epoch};
use crate::endpoint::Trust;
use crate::transport::Transport;

/// Two statements of the same server's directory that cannot both be true:
/// the presented epoch does not extend the audited one (another root for an
/// epoch already audited, or an older epoch). The auditor stops; its report
/// names both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The last epoch the auditor checked and countersigned.
    pub audited: SignedEpoch,
    /// The epoch the server presents now.
    pub presented: SignedEpoch,
    /// Why they are inconsistent.
    pub reason: String,
}

impl std::fmt::Display for Fork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FORK: the server's key directory is not append-only. Audited epoch {}, root {}, \
             signed at {} ms; presented epoch {}, root {}, signed at {} ms ({}). Both epochs \
             are signed by the server's log key: keep them as evidence and tell the server's \
             users",
            self.audited.epoch,
            hex::encode(&self.audited.root_hash),
            self.audited.timestamp_ms,
            self.presented.epoch,
            hex::encode(&self.presented.root_hash),
            self.presented.timestamp_ms,
            self.reason
        )
    }
}

/// Why a follow step failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The server showed an epoch that does not extend the one audited
    /// before: stop and report.
    #[error("{0}")]
    Fork(Box<Fork>),
    /// The directory fails the audit (naming the epoch), the server is
    /// unreachable or refused the countersignature. A network error may
    /// pass; the rest is reported.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What one step checked and countersigned.
#[derive(Clone, Debug)]
pub struct FollowStep {
    /// The epoch audited in this step.
    pub epoch: SignedEpoch,
    /// Epochs new since the last step.
    pub new_epochs: u64,
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
    /// The last epoch audited (and countersigned); `None` before the first
    /// step.
    audited: Option<SignedEpoch>,
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
            audited: None,
        }
    }

    /// The last epoch audited, if any.
    pub fn audited(&self) -> Option<&SignedEpoch> {
        self.audited.as_ref()
    }

    /// The auditor's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// One round: fetch the newest signed epoch, check the append-only
    /// proofs from the last epoch audited to it, countersign it at `now_ms`
    /// and submit the countersignature. The first step audits every epoch.
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
        let presented = signed_epoch(&mut t, &self.log_key).await?;
        let latest = AuditedEpoch::of(&presented)
            .ok_or_else(|| ClientError::Protocol("the signed root is not 32 bytes".into()))?;
        let audited = self.audited.as_ref().and_then(AuditedEpoch::of);
        match check_append_only(&mut t, audited, latest).await {
            Ok(()) => {}
            Err(AppendOnlyFailure::Client(e)) => return Err(e.into()),
            Err(failure) => {
                let fork = matches!(failure, AppendOnlyFailure::Fork { .. })
                    || audited.is_some_and(|a| latest.epoch < a.epoch);
                match (&self.audited, fork) {
                    (Some(audited), true) => {
                        return Err(FollowError::Fork(Box::new(Fork {
                            audited: audited.clone(),
                            presented,
                            reason: failure.to_string(),
                        })));
                    }
                    _ => {
                        return Err(ClientError::KeyLog(format!(
                            "the key directory of {} fails the audit: {failure}",
                            self.server_url
                        ))
                        .into());
                    }
                }
            }
        }
        let countersignature = self.key.countersign(&self.log_key, &presented, now_ms);
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
        let new_epochs = presented
            .epoch
            .saturating_sub(self.audited.as_ref().map_or(0, |a| a.epoch));
        self.audited = Some(presented.clone());
        Ok(FollowStep {
            epoch: presented,
            new_epochs,
            countersignature,
        })
    }
}
