//! `GetPushKey` and `SetPushEndpoint`: Web Push for this device
//! (`crate::push`). A request only ever changes the endpoint of the device
//! the connection is logged in as.

use super::wire_error::error;
use super::{RequestResult, Session};
use crate::store::{DeviceId, Store};
use sotto_proto::v1::{self, ErrorCode, response};

impl<S: Store> Session<S> {
    pub(super) fn get_push_key(&self) -> RequestResult {
        Ok(Some(response::Result::PushKey(v1::PushKey {
            public_key: self.ctx.push.public_key().to_vec(),
        })))
    }

    pub(super) async fn set_push_endpoint(
        &mut self,
        device: DeviceId,
        request: v1::SetPushEndpoint,
    ) -> RequestResult {
        let endpoint = if request.endpoint.is_empty() {
            None
        } else {
            self.ctx
                .push
                .check(&request.endpoint)
                .map_err(|e| error(ErrorCode::PushEndpointRefused, e.to_string()))?;
            Some(request.endpoint)
        };
        if self.ctx.store.set_push_endpoint(device, endpoint).await? {
            Ok(Some(response::Result::Done(v1::Done::default())))
        } else {
            Err(error(
                ErrorCode::DeviceRemoved,
                "this device was removed from its account",
            ))
        }
    }
}
