//! The device-linking rendezvous: relays two sealed blobs between an
//! existing device and a new one, in memory only.
//!
//! The existing device opens a link under a random id; the new device joins
//! it with a sealed request, which is pushed to the opener; the opener
//! answers with a sealed bundle, which is pushed to the joiner, and the link
//! is gone. A link lives at most [`LINK_TTL`], and only while its opener
//! (and, once joined, its joiner) stays connected. The server cannot read
//! either blob.
//!
//! With several server nodes, the joiner may be connected to another node
//! than the opener: a `RemoteLinks` (the NATS bus, `crate::bus`) carries
//! the join to the opener's node and the bundle back.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use sotto_proto::v1::{self, server_frame};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a link stays open.
pub const LINK_TTL: Duration = Duration::from_secs(10 * 60);
/// Largest sealed request or bundle relayed.
pub const MAX_SEALED_BYTES: usize = 16 * 1024;
/// Links one connection may have open, or have joined, at once.
pub const MAX_LINKS_PER_CONNECTION: usize = 4;
/// Room for link frames queued to one connection: every link can push at
/// most one frame to each side, so this never fills up.
pub(crate) const LINK_QUEUE: usize = 2 * MAX_LINKS_PER_CONNECTION;

/// Identifies one connection for the rendezvous.
pub(crate) type ConnectionId = u64;
/// Where frames for a connection go.
pub(crate) type FrameSender = mpsc::Sender<server_frame::Body>;
/// A link id.
pub(crate) type LinkId = [u8; sotto_proto::LINK_ID_LEN];

/// Why a link operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    /// No open link has this id (never opened, expired, completed, or its
    /// opener left), or it was already joined.
    #[error("this link code is unknown or expired; ask for a new one")]
    Unknown,
    /// The id is already in use by another open link.
    #[error("this link id is already in use; generate a new random one")]
    InUse,
    /// `CompleteLink` before anyone joined.
    #[error("no device has joined this link yet")]
    NotJoined,
    /// Too many links on this connection.
    #[error("this connection has too many links in progress; finish or drop one first")]
    TooMany,
}

/// Who joined a link.
#[derive(Debug)]
enum Joiner {
    /// A connection of this node.
    Here(ConnectionId, FrameSender),
    /// A connection of another node, reached on this bus subject.
    Elsewhere(String),
}

impl Joiner {
    fn is_connection(&self, connection: ConnectionId) -> bool {
        matches!(self, Joiner::Here(c, _) if *c == connection)
    }
}

#[derive(Debug)]
struct Link {
    opener: ConnectionId,
    opener_tx: FrameSender,
    expires: Instant,
    joiner: Option<Joiner>,
}

/// A join's outcome, as a future (it crosses the bus).
pub(crate) type JoinFuture = Pin<Box<dyn Future<Output = Result<Instant, LinkError>> + Send>>;

/// Links whose two devices are on different nodes.
pub(crate) trait RemoteLinks: Send + Sync + std::fmt::Debug {
    /// A link was opened here: serve joins from other nodes until it is
    /// gone. Resolves once other nodes can reach it.
    fn opened(&self, id: LinkId) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// Joins a link opened on another node; its bundle will come to
    /// `joiner_tx`.
    fn join(&self, id: LinkId, sealed_request: Vec<u8>, joiner_tx: FrameSender) -> JoinFuture;
    /// Carries a bundle to a joiner on another node.
    fn complete(&self, joiner: String, sealed_bundle: Vec<u8>);
}

/// Every open link, shared by all connections.
#[derive(Debug, Default)]
pub(crate) struct LinkRendezvous {
    next_connection: AtomicU64,
    links: Mutex<HashMap<LinkId, Link>>,
    /// The other nodes, when the server runs with `--bus`.
    remote: OnceLock<Arc<dyn RemoteLinks>>,
}

impl LinkRendezvous {
    /// A fresh id for a new connection.
    pub fn connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Carries links across nodes from now on (set once).
    pub fn set_remote(&self, remote: Arc<dyn RemoteLinks>) {
        let _ = self.remote.set(remote);
    }

    /// The other nodes, if any.
    pub fn remote(&self) -> Option<&Arc<dyn RemoteLinks>> {
        self.remote.get()
    }

    /// Whether `id` is open here and not yet joined.
    pub fn is_open(&self, id: &LinkId, now: Instant) -> bool {
        self.links(now).contains_key(id)
    }

    fn links(&self, now: Instant) -> std::sync::MutexGuard<'_, HashMap<LinkId, Link>> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|_, link| link.expires > now);
        links
    }

    /// Opens a link for `opener`. Returns when it expires.
    pub fn open(
        &self,
        id: LinkId,
        opener: ConnectionId,
        opener_tx: FrameSender,
        now: Instant,
    ) -> Result<Instant, LinkError> {
        let mut links = self.links(now);
        if links.contains_key(&id) {
            return Err(LinkError::InUse);
        }
        if links.values().filter(|l| l.opener == opener).count() >= MAX_LINKS_PER_CONNECTION {
            return Err(LinkError::TooMany);
        }
        let expires = now + LINK_TTL;
        links.insert(
            id,
            Link {
                opener,
                opener_tx,
                expires,
                joiner: None,
            },
        );
        Ok(expires)
    }

    /// Joins an open link and pushes `sealed_request` to its opener.
    /// Returns when the link expires.
    pub fn join(
        &self,
        id: &LinkId,
        joiner: ConnectionId,
        joiner_tx: FrameSender,
        sealed_request: Vec<u8>,
        now: Instant,
    ) -> Result<Instant, LinkError> {
        let joined = self
            .links(now)
            .values()
            .filter(|l| l.joiner.as_ref().is_some_and(|j| j.is_connection(joiner)))
            .count();
        if joined >= MAX_LINKS_PER_CONNECTION {
            return Err(LinkError::TooMany);
        }
        self.join_as(id, Joiner::Here(joiner, joiner_tx), sealed_request, now)
    }

    /// Joins a link opened here for a connection of another node, whose
    /// bundle goes to the bus subject `joiner`.
    pub fn join_from_elsewhere(
        &self,
        id: &LinkId,
        joiner: String,
        sealed_request: Vec<u8>,
        now: Instant,
    ) -> Result<Instant, LinkError> {
        self.join_as(id, Joiner::Elsewhere(joiner), sealed_request, now)
    }

    fn join_as(
        &self,
        id: &LinkId,
        joiner: Joiner,
        sealed_request: Vec<u8>,
        now: Instant,
    ) -> Result<Instant, LinkError> {
        let mut links = self.links(now);
        let link = links.get_mut(id).ok_or(LinkError::Unknown)?;
        if link.joiner.is_some() {
            return Err(LinkError::Unknown);
        }
        let frame = server_frame::Body::LinkRequest(v1::LinkRequest {
            link_id: id.to_vec(),
            sealed_request,
        });
        if link.opener_tx.try_send(frame).is_err() {
            // The opener is going away.
            links.remove(id);
            return Err(LinkError::Unknown);
        }
        link.joiner = Some(joiner);
        Ok(link.expires)
    }

    /// Pushes `sealed_bundle` to the link's joiner and closes the link.
    /// Only the opener may complete it.
    pub fn complete(
        &self,
        id: &LinkId,
        opener: ConnectionId,
        sealed_bundle: Vec<u8>,
        now: Instant,
    ) -> Result<(), LinkError> {
        let mut links = self.links(now);
        let link = links
            .get(id)
            .filter(|l| l.opener == opener)
            .ok_or(LinkError::Unknown)?;
        let sent = match &link.joiner {
            None => return Err(LinkError::NotJoined),
            Some(Joiner::Here(_, joiner_tx)) => {
                let frame = server_frame::Body::LinkCompleted(v1::LinkCompleted { sealed_bundle });
                joiner_tx.try_send(frame).is_ok()
            }
            Some(Joiner::Elsewhere(subject)) => match self.remote.get() {
                Some(remote) => {
                    remote.complete(subject.clone(), sealed_bundle);
                    true
                }
                None => false,
            },
        };
        links.remove(id);
        if sent {
            Ok(())
        } else {
            Err(LinkError::Unknown)
        }
    }

    /// Drops every link the connection opened or joined.
    pub fn forget_connection(&self, connection: ConnectionId) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|_, link| {
            link.opener != connection
                && link
                    .joiner
                    .as_ref()
                    .is_none_or(|joiner| !joiner.is_connection(connection))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_once_and_expires() {
        let rendezvous = LinkRendezvous::default();
        let now = Instant::now();
        let (a_tx, mut a_rx) = mpsc::channel(LINK_QUEUE);
        let (b_tx, mut b_rx) = mpsc::channel(LINK_QUEUE);
        let id = [1; 16];
        rendezvous.open(id, 1, a_tx.clone(), now).unwrap();
        assert_eq!(
            rendezvous.open(id, 1, a_tx.clone(), now),
            Err(LinkError::InUse)
        );
        assert_eq!(
            rendezvous.complete(&id, 1, vec![], now),
            Err(LinkError::NotJoined)
        );
        rendezvous
            .join(&id, 2, b_tx.clone(), b"req".to_vec(), now)
            .unwrap();
        assert_eq!(
            rendezvous.join(&id, 3, b_tx.clone(), vec![], now),
            Err(LinkError::Unknown),
            "only one join"
        );
        assert!(matches!(
            a_rx.recv().await,
            Some(server_frame::Body::LinkRequest(r)) if r.sealed_request == b"req"
        ));
        assert_eq!(
            rendezvous.complete(&id, 2, vec![], now),
            Err(LinkError::Unknown),
            "only the opener completes"
        );
        rendezvous
            .complete(&id, 1, b"bundle".to_vec(), now)
            .unwrap();
        assert!(matches!(
            b_rx.recv().await,
            Some(server_frame::Body::LinkCompleted(c)) if c.sealed_bundle == b"bundle"
        ));
        assert_eq!(
            rendezvous.complete(&id, 1, vec![], now),
            Err(LinkError::Unknown)
        );

        rendezvous.open(id, 1, a_tx.clone(), now).unwrap();
        let later = now + LINK_TTL;
        assert_eq!(
            rendezvous.join(&id, 2, b_tx.clone(), vec![], later),
            Err(LinkError::Unknown),
            "expired"
        );
        rendezvous.open(id, 1, a_tx, later).unwrap();
        rendezvous.forget_connection(1);
        assert_eq!(
            rendezvous.join(&id, 2, b_tx, vec![], later),
            Err(LinkError::Unknown),
            "opener left"
        );
    }
}
