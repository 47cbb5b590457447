//! Auditing a server's key directory over the network: its signed latest
//! epoch, and akd's append-only proof of every epoch from the last one
//! audited to that one, a few epochs per request. Used by `sotto audit URL`
//! ([`audit_directory`]), by auditors following a server
//! ([`crate::auditor::Follower`]) and by clients that require an auditor,
//! from the epoch it countersigned to the one they are shown
//! ([`check_countersigned`]).
//!
//! Nothing here asks for or receives a username: the directory's labels are
//! VRF outputs, so an audit learns how many labels changed, not whose.

use sotto_proto::v1::{
    Countersignature, GetCountersignatures, GetDirectoryAudit, GetDirectoryEpoch, SignedEpoch,
    client_frame, response,
};

use crate::ClientError;
use crate::session::Anonymous;
use crate::transport::Transport;

/// Something requests can be sent on: a connection of its own (auditors,
/// `sotto audit`) or a client's anonymous connection.
pub(crate) trait Requests {
    async fn ask(&mut self, body: client_frame::Body) -> Result<response::Result, ClientError>;
}

impl Requests for Transport {
    async fn ask(&mut self, body: client_frame::Body) -> Result<response::Result, ClientError> {
        self.request(body).await
    }
}

impl Requests for Anonymous<'_> {
    async fn ask(&mut self, body: client_frame::Body) -> Result<response::Result, ClientError> {
        self.request(body).await
    }
}

/// An epoch of the directory and its root, as an audit reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditedEpoch {
    /// The epoch number.
    pub epoch: u64,
    /// Its root hash.
    pub root: [u8; 32],
}

impl AuditedEpoch {
    /// The epoch and root a signed epoch states (`None`: the root is not 32
    /// bytes).
    pub fn of(epoch: &SignedEpoch) -> Option<Self> {
        Some(Self {
            epoch: epoch.epoch,
            root: <[u8; 32]>::try_from(epoch.root_hash.as_slice()).ok()?,
        })
    }
}

/// Why epochs do not follow from the ones audited before.
#[derive(Debug)]
pub enum AppendOnlyFailure {
    /// The server now gives another root for an epoch already audited (or
    /// an epoch older than one audited): two views of one directory.
    Fork {
        /// The epoch.
        epoch: u64,
        /// The root audited before.
        audited: [u8; 32],
        /// The root the server gives now.
        presented: [u8; 32],
    },
    /// The step from epoch `from` to `to` is not an append-only change
    /// (the proof does not verify, or its roots are not the signed ones).
    NotAppendOnly {
        /// The epoch before the step.
        from: u64,
        /// The epoch after it.
        to: u64,
        /// What failed.
        reason: String,
    },
    /// The server is unreachable, or answered out of protocol.
    Client(ClientError),
}

impl std::fmt::Display for AppendOnlyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fork {
                epoch,
                audited,
                presented,
            } => write!(
                f,
                "the key directory forked: epoch {epoch} had root {} when audited and has root \
                 {} now",
                hex::encode(audited),
                hex::encode(presented)
            ),
            Self::NotAppendOnly { from, to, reason } => write!(
                f,
                "epoch {from} to {to} of the key directory is not an append-only step: {reason}"
            ),
            Self::Client(e) => write!(f, "{e}"),
        }
    }
}

impl From<ClientError> for AppendOnlyFailure {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

/// The server's latest directory epoch, checked to be signed by `log_key`.
pub(crate) async fn signed_epoch(
    t: &mut impl Requests,
    log_key: &[u8],
) -> Result<SignedEpoch, ClientError> {
    let epoch = match t
        .ask(client_frame::Body::GetDirectoryEpoch(GetDirectoryEpoch {}))
        .await?
    {
        response::Result::DirectoryEpoch(epoch) => epoch,
        _ => return Err(ClientError::Protocol("expected a directory epoch".into())),
    };
    sotto_transparency::verify_epoch(log_key, &epoch).map_err(|e| {
        ClientError::KeyLog(format!("the key directory's epoch does not verify: {e}"))
    })?;
    Ok(epoch)
}

/// One request's worth of append-only proof (fetched in parts), checked:
/// the roots of epochs `from ..= to` as the server states them.
async fn audited_roots(
    t: &mut impl Requests,
    from: u64,
    to: u64,
) -> Result<Vec<[u8; 32]>, AppendOnlyFailure> {
    let not_append_only = |reason: String| AppendOnlyFailure::NotAppendOnly { from, to, reason };
    let mut proof: Vec<u8> = Vec::new();
    let mut stated: Option<(Vec<Vec<u8>>, u64)> = None;
    loop {
        let request = GetDirectoryAudit {
            from_epoch: from,
            to_epoch: to,
            offset: proof.len() as u64,
        };
        let answer = match t
            .ask(client_frame::Body::GetDirectoryAudit(request))
            .await?
        {
            response::Result::DirectoryAudit(answer) => answer,
            _ => return Err(ClientError::Protocol("expected a directory audit".into()).into()),
        };
        if answer.from_epoch != from {
            return Err(not_append_only(
                "the server answered for other epochs".into(),
            ));
        }
        match &stated {
            None => {
                if answer.proof_len > sotto_proto::MAX_AUDIT_PROOF_BYTES as u64 {
                    return Err(not_append_only(format!(
                        "the server states a proof of {} bytes, more than a server may build",
                        answer.proof_len
                    )));
                }
                stated = Some((answer.roots.clone(), answer.proof_len));
            }
            Some((roots, len)) if *roots != answer.roots || *len != answer.proof_len => {
                return Err(not_append_only(
                    "the parts of the proof state different roots or lengths".into(),
                ));
            }
            Some(_) => {}
        }
        if answer.proof.is_empty() && (proof.len() as u64) < answer.proof_len {
            return Err(ClientError::Protocol("an empty part of an audit proof".into()).into());
        }
        proof.extend_from_slice(&answer.proof);
        if proof.len() as u64 >= answer.proof_len {
            break;
        }
    }
    let (roots, len) = stated.unwrap_or_default();
    if proof.len() as u64 != len {
        return Err(not_append_only(
            "the proof's parts are longer than stated".into(),
        ));
    }
    let roots = roots
        .iter()
        .map(|r| <[u8; 32]>::try_from(r.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_append_only("a root is not 32 bytes".into()))?;
    if roots.len() as u64 != to.saturating_sub(from) + 1 {
        return Err(not_append_only(
            "the server answered for other epochs".into(),
        ));
    }
    sotto_directory::verify_audit(&roots, from, &proof)
        .await
        .map_err(|e| not_append_only(e.to_string()))?;
    Ok(roots)
}

/// Checks that the directory went from `audited` (`None`: the empty
/// directory of epoch 0) to `latest` by appending only: the server's root of
/// `audited.epoch` is still `audited.root`, and every step between
/// verifies. Cost: the changes of those epochs. A failing request of
/// several epochs is asked again epoch by epoch, so the failure names the
/// one step that is wrong.
pub(crate) async fn check_append_only(
    t: &mut impl Requests,
    audited: Option<AuditedEpoch>,
    latest: AuditedEpoch,
) -> Result<(), AppendOnlyFailure> {
    if let Some(audited) = audited {
        if latest.epoch < audited.epoch {
            return Err(AppendOnlyFailure::NotAppendOnly {
                from: audited.epoch,
                to: latest.epoch,
                reason: format!(
                    "the server's latest epoch is {}, older than epoch {} already audited",
                    latest.epoch, audited.epoch
                ),
            });
        }
        if latest.epoch == audited.epoch && latest.root != audited.root {
            return Err(AppendOnlyFailure::Fork {
                epoch: audited.epoch,
                audited: audited.root,
                presented: latest.root,
            });
        }
    }
    let mut last = audited;
    let mut from = audited.map_or(0, |a| a.epoch);
    while from < latest.epoch {
        let to = latest
            .epoch
            .min(from.saturating_add(sotto_proto::MAX_AUDIT_EPOCHS_PER_REQUEST));
        let roots = match audited_roots(t, from, to).await {
            Err(AppendOnlyFailure::NotAppendOnly { .. }) if to > from + 1 => {
                // Name the step: one epoch at a time.
                let mut roots = Vec::new();
                for step in from..to {
                    let pair = Box::pin(audited_roots(t, step, step + 1)).await?;
                    if roots.is_empty() {
                        roots.extend(pair);
                    } else if let Some(second) = pair.get(1) {
                        roots.push(*second);
                    }
                }
                roots
            }
            other => other?,
        };
        let (Some(first), Some(end)) = (roots.first(), roots.last()) else {
            return Err(ClientError::Protocol("an audit answer without roots".into()).into());
        };
        if let Some(last) = last
            && *first != last.root
        {
            return Err(AppendOnlyFailure::Fork {
                epoch: from,
                audited: last.root,
                presented: *first,
            });
        }
        last = Some(AuditedEpoch {
            epoch: to,
            root: *end,
        });
        from = to;
    }
    if last.is_some_and(|last| last.root != latest.root) {
        return Err(AppendOnlyFailure::NotAppendOnly {
            from: latest.epoch.saturating_sub(1),
            to: latest.epoch,
            reason: "the audited root is not the root the server signed".into(),
        });
    }
    Ok(())
}

/// What [`audit_directory`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAuditReport {
    /// The latest epoch, signed by the log key: every epoch from
    /// `audited_from` up to it was audited.
    pub epochs: u64,
    /// Its root hash.
    pub root: [u8; 32],
    /// Where this audit started (0, or the epoch a previous audit reached).
    pub audited_from: u64,
    /// The latest epoch as the server signed it.
    pub head: SignedEpoch,
    /// The log key the server announced (and signed the epoch with).
    pub log_key: Vec<u8>,
}

impl DirectoryAuditReport {
    /// Where a later audit may resume.
    pub fn reached(&self) -> AuditedEpoch {
        AuditedEpoch {
            epoch: self.epochs,
            root: self.root,
        }
    }
}

/// Audits the key directory of the server at `server_url`: its signed
/// latest epoch, and that every epoch since `since` (a previous audit's
/// [`DirectoryAuditReport::reached`]; `None`: since the empty directory)
/// only appended. With `log_key`, the server must announce exactly that
/// key. Learns no username: the proofs carry labels only as VRF outputs.
pub async fn audit_directory(
    server_url: &str,
    trust: &crate::Trust,
    log_key: Option<&[u8]>,
    since: Option<AuditedEpoch>,
) -> Result<DirectoryAuditReport, ClientError> {
    let mut t = crate::keys::connect_pinned(server_url, trust, log_key).await?;
    let failed = |e: AppendOnlyFailure| match e {
        AppendOnlyFailure::Client(e) => e,
        other => ClientError::KeyLog(format!(
            "the key directory of {server_url} fails the audit: {other}"
        )),
    };
    let log_key = t.log_key.clone();
    let head = signed_epoch(&mut t, &log_key).await?;
    let latest = AuditedEpoch::of(&head)
        .ok_or_else(|| ClientError::Protocol("the signed root is not 32 bytes".into()))?;
    check_append_only(&mut t, since, latest)
        .await
        .map_err(failed)?;
    t.close().await;
    Ok(DirectoryAuditReport {
        epochs: latest.epoch,
        root: latest.root,
        audited_from: since.map_or(0, |s| s.epoch),
        head,
        log_key,
    })
}

/// With auditors required (`sotto trust-auditor`), checks that each one
/// countersigned, at most its allowed lag before `now_ms`, either `epoch`
/// itself or an older epoch that `epoch` extends (append-only proofs from
/// the countersigned root to this one). A server showing a directory the
/// auditor has not seen (a fork) can then do so for at most the lag.
/// Countersignatures that do not verify are ignored.
pub(crate) async fn check_countersigned(
    t: &mut impl Requests,
    log_key: &[u8],
    auditors: &[(Vec<u8>, u64)],
    epoch: &SignedEpoch,
    now_ms: u64,
) -> Result<(), ClientError> {
    if auditors.is_empty() {
        return Ok(());
    }
    let latest = AuditedEpoch::of(epoch)
        .ok_or_else(|| ClientError::KeyLog("the key directory's epoch is malformed".into()))?;
    let request = GetCountersignatures {
        max_epoch: epoch.epoch,
        auditor_keys: auditors.iter().map(|(key, _)| key.clone()).collect(),
    };
    let offered: Vec<Countersignature> = match t
        .ask(client_frame::Body::GetCountersignatures(request))
        .await?
    {
        response::Result::Countersignatures(c) => c.countersignatures,
        _ => return Err(ClientError::Protocol("expected countersignatures".into())),
    };
    for (auditor, max_lag_ms) in auditors {
        let refused = |why: String| {
            ClientError::KeyLog(format!(
                "the server's key-directory epoch {} is refused: {why}. You required auditor {} \
                 (sotto trust-auditor) to vouch for it within {} minutes; the server may be \
                 showing you a directory the auditor has not checked, or the auditor has stopped",
                epoch.epoch,
                hex::encode(auditor),
                max_lag_ms / 60_000
            ))
        };
        let fresh = offered.iter().find(|c| {
            &c.auditor_key == auditor
                && c.epoch <= epoch.epoch
                && now_ms.saturating_sub(c.signed_at_ms) <= *max_lag_ms
                && sotto_transparency::verify_countersignature(log_key, c).is_ok()
        });
        let Some(countersignature) = fresh else {
            return Err(refused("no fresh countersignature by that auditor".into()));
        };
        let audited = AuditedEpoch {
            epoch: countersignature.epoch,
            root: <[u8; 32]>::try_from(countersignature.root_hash.as_slice())
                .map_err(|_| refused("a malformed countersignature".into()))?,
        };
        match check_append_only(t, Some(audited), latest).await {
            Ok(()) => {}
            Err(AppendOnlyFailure::Client(e)) => return Err(e),
            Err(e) => {
                return Err(refused(format!(
                    "it does not extend epoch {} the auditor countersigned ({e})",
                    audited.epoch
                )));
            }
        }
    }
    Ok(())
}
