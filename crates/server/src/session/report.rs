//! `ReportMessage`: a logged-in device hands the operator an abuse report
//! (`sotto_core::franking`). The server checks only its size here and
//! queues it with the reporting account; `sotto-server moderation show`
//! verifies it, so a forged report is kept and shown as forged.

use super::wire_error::error;
use super::{RequestResult, Session, now_seconds};
use crate::store::{Store, day_of};
use prost::Message as _;
use sotto_core::franking::{self, ReportReason};
use sotto_proto::v1::{self, ErrorCode, response};

impl<S: Store> Session<S> {
    pub(super) async fn report_message(&mut self, request: v1::ReportMessage) -> RequestResult {
        let username = self
            .username
            .clone()
            .ok_or_else(|| error(ErrorCode::NotAuthenticated, "register or log in first"))?;
        self.ctx.rate_limits.charge_report(&username)?;
        let report = request
            .report
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the report is missing"))?;
        franking::check_report_size(&report)
            .map_err(|e| error(ErrorCode::TooLarge, e.to_string()))?;
        if !matches!(
            ReportReason::try_from(report.reason),
            Ok(ReportReason::Spam
                | ReportReason::Harassment
                | ReportReason::Illegal
                | ReportReason::Other)
        ) {
            return Err(error(
                ErrorCode::InvalidRequest,
                "a report needs a reason: spam, harassment, illegal or other",
            ));
        }
        let id = self
            .ctx
            .store
            .add_report(username, report.encode_to_vec(), day_of(now_seconds()))
            .await?;
        tracing::info!(report = id, "abuse report queued");
        Ok(Some(response::Result::Done(v1::Done::default())))
    }
}
