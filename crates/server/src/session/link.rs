//! Device linking: the rendezvous where a new device and an existing one
//! exchange sealed blobs (the server cannot read them).

use super::parse::{link_id, sealed};
use super::wire_error::done;
use super::{RequestResult, Session};
use crate::link_rendezvous::{LINK_QUEUE, LinkError};
use crate::store::Store;
use sotto_proto::v1::{self, server_frame};
use tokio::sync::mpsc;
use tokio::time::Instant;

impl<S: Store> Session<S> {
    /// Where the rendezvous sends this connection's link frames.
    pub(super) fn link_sender(&mut self) -> mpsc::Sender<server_frame::Body> {
        let (tx, _) = self.link.get_or_insert_with(|| mpsc::channel(LINK_QUEUE));
        tx.clone()
    }

    /// A new device joins the link an existing device opened (on this node,
    /// or on another one over the bus).
    pub(super) async fn join_link(&mut self, join: v1::JoinLink) -> RequestResult {
        self.ctx.rate_limits.charge_link_attempt(self.address)?;
        let id = link_id(&join.link_id)?;
        sealed(&join.sealed_request, "sealed request")?;
        let sender = self.link_sender();
        let here = self.ctx.links.join(
            &id,
            self.connection_id,
            sender.clone(),
            join.sealed_request.clone(),
            Instant::now(),
        );
        let expires = match (here, self.ctx.links.remote()) {
            (Err(LinkError::Unknown), Some(remote)) => {
                remote.join(id, join.sealed_request, sender).await?
            }
            (here, _) => here?,
        };
        // Wait for the answer as long as the link lives.
        self.handshake_deadline = self.handshake_deadline.max(expires);
        done()
    }

    /// An existing device opens a link and waits for a new one to join.
    pub(super) async fn open_link(&mut self, open: v1::OpenLink) -> RequestResult {
        let id = link_id(&open.link_id)?;
        let sender = self.link_sender();
        self.ctx
            .links
            .open(id, self.connection_id, sender, Instant::now())?;
        if let Some(remote) = self.ctx.links.remote() {
            remote.opened(id).await;
        }
        done()
    }

    /// The existing device answers the joined device (sealed).
    pub(super) fn complete_link(&mut self, complete: v1::CompleteLink) -> RequestResult {
        let id = link_id(&complete.link_id)?;
        sealed(&complete.sealed_bundle, "sealed bundle")?;
        self.ctx.links.complete(
            &id,
            self.connection_id,
            complete.sealed_bundle,
            Instant::now(),
        )?;
        done()
    }
}
