//! Key-log requests: heads, account logs, consistency proofs and entries.
//! Anyone may ask, logged in or not; each is charged to the connection's
//! key-log bucket. (Auditors' countersignatures are over key-directory
//! epochs: `super::countersign`.)

use super::wire_error::{error, shown};
use super::{RequestResult, Session};
use crate::store::Store;
use sotto_proto::v1::{self, ErrorCode, response};

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
}
