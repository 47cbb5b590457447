//! Third-party auditors' countersignatures of key-directory epochs: an
//! auditor (`sotto audit URL --follow --sign KEYFILE`) hands one in after it
//! audited the directory up to an epoch; clients that require the auditor
//! (`sotto trust-auditor`) ask for it with each epoch they accept.
//!
//! What the server keeps is bounded, against anyone filling its disk: only
//! countersignatures by auditors its operator invited (`--auditor HEX`,
//! `[directory] auditors`) are stored, at most [`COUNTERSIGNATURES_KEPT`]
//! per auditor (the newest epochs), none older than 30 days. Anyone may
//! ask for them, logged in or not; both requests are charged to the
//! connection's key-log bucket.

use prost::Message as _;

use super::wire_error::{done, error};
use super::{RequestResult, Session};
use crate::store::{CountersignatureRecord, Store};
use crate::transparency_log::now_ms;
use sotto_proto::v1::{self, ErrorCode, response};

/// Countersignatures kept per auditor: the newest by epoch.
pub(crate) const COUNTERSIGNATURES_KEPT: usize = 8;

/// Countersignatures older than this are deleted: no client accepts a
/// lag this long.
const COUNTERSIGNATURES_EXPIRE_MS: u64 = 30 * 24 * 3600 * 1000;

/// How far in the future (by the server's clock) a countersignature may be
/// dated: clocks differ a little, not by hours.
const COUNTERSIGNATURE_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;

impl<S: Store> Session<S> {
    /// Stores an invited auditor's countersignature of an epoch this server
    /// published: the signature must verify and the root must be the
    /// directory's stored root of that epoch (a countersignature of a fork
    /// is refused).
    pub(super) async fn submit_countersignature(
        &mut self,
        request: v1::SubmitCountersignature,
    ) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let countersignature = request
            .countersignature
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "no countersignature given"))?;
        if !self
            .ctx
            .auditors
            .iter()
            .any(|invited| invited.as_slice() == countersignature.auditor_key)
        {
            return Err(error(
                ErrorCode::NotAuthorized,
                format!(
                    "this server's operator has not invited auditor {}: it stores \
                     countersignatures only from the auditors it lists (sotto-server --auditor)",
                    hex::encode(&countersignature.auditor_key)
                ),
            ));
        }
        sotto_transparency::verify_countersignature(&self.ctx.log.public_key(), &countersignature)
            .map_err(|e| {
                error(
                    ErrorCode::InvalidRequest,
                    format!("the countersignature is refused: {e}"),
                )
            })?;
        if countersignature.signed_at_ms > now_ms().saturating_add(COUNTERSIGNATURE_CLOCK_SKEW_MS) {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the countersignature is dated in the future: check the auditor's clock",
            ));
        }
        let stored = self
            .ctx
            .directory
            .epoch_root(countersignature.epoch)
            .await?;
        if stored.is_none_or(|root| root.as_slice() != countersignature.root_hash) {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "this server's key directory never had root {} at epoch {}: the \
                     countersigned epoch is not one this server published",
                    hex::encode(&countersignature.root_hash),
                    countersignature.epoch
                ),
            ));
        }
        let record = CountersignatureRecord {
            auditor_key: countersignature.auditor_key.clone(),
            epoch: countersignature.epoch,
            signed_at_ms: countersignature.signed_at_ms,
            countersignature: countersignature.encode_to_vec(),
        };
        self.ctx
            .store
            .add_countersignature(
                record,
                COUNTERSIGNATURES_KEPT,
                now_ms().saturating_sub(COUNTERSIGNATURES_EXPIRE_MS),
            )
            .await?;
        done()
    }

    /// For each auditor named, its newest countersignature of an epoch at
    /// most the one asked.
    pub(super) async fn get_countersignatures(
        &mut self,
        request: v1::GetCountersignatures,
    ) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        if request.auditor_keys.len() > sotto_proto::MAX_AUDITORS_PER_REQUEST {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "at most {} auditors per request",
                    sotto_proto::MAX_AUDITORS_PER_REQUEST
                ),
            ));
        }
        let mut countersignatures = Vec::new();
        for auditor_key in &request.auditor_keys {
            let Some(record) = self
                .ctx
                .store
                .countersignature(auditor_key, request.max_epoch)
                .await?
            else {
                continue;
            };
            let countersignature = v1::Countersignature::decode(record.countersignature.as_slice())
                .map_err(|_| {
                    crate::store::StoreError::Backend(
                        "a stored countersignature does not decode".into(),
                    )
                })?;
            countersignatures.push(countersignature);
        }
        Ok(Some(response::Result::Countersignatures(
            v1::Countersignatures { countersignatures },
        )))
    }
}
