//! Key-log requests: heads, account logs, consistency proofs, entries and
//! auditors' countersignatures. Anyone may ask, logged in or not (auditors
//! never log in); each is charged to the connection's key-log bucket.

use prost::Message as _;

use super::wire_error::{done, error, shown};
use super::{RequestResult, Session};
use crate::store::{CountersignatureRecord, Store};
use crate::transparency_log::now_ms;
use sotto_proto::v1::{self, ErrorCode, response};

/// Countersignatures kept per auditor: the newest by tree size.
pub(crate) const COUNTERSIGNATURES_KEPT: usize = 8;

/// Countersignatures older than this are deleted: no client accepts a
/// lag this long, and keys that countersign once do not pile up.
const COUNTERSIGNATURES_EXPIRE_MS: u64 = 30 * 24 * 3600 * 1000;

/// How far in the future (by the server's clock) a countersignature may be
/// dated: clocks differ a little, not by hours.
const COUNTERSIGNATURE_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;

impl<S: Store> Session<S> {
    pub(super) async fn get_log_head(&mut self) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let head = self.ctx.log.head(&*self.ctx.store).await?;
        Ok(Some(response::Result::LogHead(head)))
    }

    pub(super) async fn get_account_log(&mut self, username: &str) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let log = if sotto_proto::is_valid_username(username) {
            self.ctx.log.account_log(&*self.ctx.store, username).await?
        } else {
            None
        };
        let log = log.ok_or_else(|| {
            error(
                ErrorCode::UnknownUser,
                format!("the log has no account named {}", shown(username)),
            )
        })?;
        Ok(Some(response::Result::AccountLog(log)))
    }

    pub(super) async fn get_consistency(&mut self, request: v1::GetConsistency) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        match self
            .ctx
            .log
            .consistency(&*self.ctx.store, request.old_size, request.new_size)
            .await?
        {
            Ok(proof) => Ok(Some(response::Result::Consistency(proof))),
            Err(message) => Err(error(ErrorCode::InvalidRequest, message)),
        }
    }

    pub(super) async fn get_log_entries(&mut self, request: v1::GetLogEntries) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let entries = self
            .ctx
            .log
            .entries(&*self.ctx.store, request.start, request.count)
            .await?;
        Ok(Some(response::Result::LogEntries(entries)))
    }

    /// Stores an auditor's countersignature of a head this server signed:
    /// the signature must verify and the root must be the log's root at
    /// that size (a countersignature of a fork is refused).
    pub(super) async fn submit_countersignature(
        &mut self,
        request: v1::SubmitCountersignature,
    ) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let countersignature = request
            .countersignature
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "no countersignature given"))?;
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
                "the countersignature is dated in the future or over 30 days ago: check the \
                 auditor's clock",
            ));
        }
        if !self
            .ctx
            .log
            .has_root(
                &*self.ctx.store,
                countersignature.tree_size,
                &countersignature.root_hash,
            )
            .await?
        {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "this server's log never had {} entries with root {}: the countersigned head \
                     is not one this server signed",
                    countersignature.tree_size,
                    hex::encode(&countersignature.root_hash)
                ),
            ));
        }
        let record = CountersignatureRecord {
            auditor_key: countersignature.auditor_key.clone(),
            tree_size: countersignature.tree_size,
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

    /// For each auditor named, its newest countersignature of a head of at
    /// most the size asked.
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
                .countersignature(auditor_key, request.max_tree_size)
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
