//! Key-directory requests: the signed epoch, lookups, the web release and
//! audit proofs.
//! Anyone may ask, logged in or not, like the key log; each is charged to
//! the connection's key-log bucket. No request lists accounts: a lookup
//! names one username and learns only about it.

use super::wire_error::{error, shown};
use super::{RequestResult, Session};
use crate::store::Store;
use sotto_proto::v1::{self, ErrorCode, response};

impl<S: Store> Session<S> {
    pub(super) async fn get_directory_epoch(&mut self) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let epoch = self.ctx.directory.signed_epoch(&*self.ctx.store).await?;
        Ok(Some(response::Result::DirectoryEpoch(epoch)))
    }

    pub(super) async fn lookup_account(&mut self, username: &str) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let found = match sotto_directory::Username::parse(username) {
            Some(name) => self.ctx.directory.lookup(&*self.ctx.store, &name).await?,
            None => None,
        };
        let found = found.ok_or_else(|| {
            error(
                ErrorCode::UnknownUser,
                format!("the key directory has no account named {}", shown(username)),
            )
        })?;
        Ok(Some(response::Result::DirectoryLookup(found)))
    }

    pub(super) async fn get_web_release(&mut self) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        let release = self.ctx.directory.web_release(&*self.ctx.store).await?;
        Ok(Some(response::Result::WebRelease(release)))
    }

    pub(super) async fn get_directory_audit(
        &mut self,
        request: v1::GetDirectoryAudit,
    ) -> RequestResult {
        self.ctx.rate_limits.charge_log_request(&mut self.buckets)?;
        match self
            .ctx
            .directory
            .audit(request.from_epoch, request.to_epoch, request.offset)
            .await?
        {
            Ok(audit) => Ok(Some(response::Result::DirectoryAudit(audit))),
            Err(message) => Err(error(ErrorCode::InvalidRequest, message)),
        }
    }
}
