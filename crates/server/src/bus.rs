//! Wake-ups between server nodes over NATS (`--bus nats://HOST:PORT`).
//!
//! Several nodes share one PostgreSQL database; a device is connected to
//! one of them. After a mailbox entry commits on node A, A publishes a
//! wake-up for each recipient device; the node holding that device's
//! connection tells the connection to read its mailbox from the store (the
//! hub's "missed entries, fetch from store" path). A wake-up carries no
//! content and no sender, only the device id in its subject. Typing
//! indicators (ciphertext, never stored), KeyPackagesLow counts and device
//! removals travel the same way, and the device-linking rendezvous crosses
//! nodes by request/reply (see `LinkBus`).
//!
//! # Subjects: one per device
//!
//! Every subject starts with the deployment's prefix (`--bus-prefix`,
//! default `sotto`), so several deployments can share one NATS server
//! without waking each other's devices. Below, `sotto` stands for it.
//!
//! `sotto.device.<device id, hex>`: a node subscribes to the subject of
//! each device connected to it (when its first connection opens) and
//! unsubscribes when the last one closes. NATS routes each wake-up to the
//! one node (or none) that holds the device, so a message to a 1,000-device
//! group costs its node 1,000 small publishes (~60 bytes each on the wire:
//! `PUB sotto.device.<32 hex> 0`, pipelined by the client) and every other
//! node only the wake-ups for its own devices. Measured by
//! `fan_out_to_a_thousand_devices` below (debug build, 2 shared cores,
//! local NATS): the committing node queues the 1,000 wake-ups in ~1 ms,
//! and all 1,000 connections on two other nodes are woken 6–25 ms after
//! the commit. A
//! subject per node would need either a shared device → node directory
//! (a PostgreSQL write on every connect) or a broadcast of every group's
//! recipient list to every node, so each node would receive and filter
//! every wake-up of the cluster: cost that grows with the node count.
//!
//! # NATS down
//!
//! Losing a wake-up never loses a message: it is in the store, and the
//! device reads it at login, on `Sync`, or on its next wake-up. When this
//! node's NATS connection comes back, every connection here reads its
//! mailbox (wake-ups for it may have been lost meanwhile); when this node
//! had to drop wake-ups it could not queue, it asks every node to do the
//! same (`sotto.all`). The server starts and serves without NATS and keeps
//! reconnecting. The bus must be private to the nodes (or authenticated):
//! whoever can publish on it can make devices re-read their mailbox, show
//! a bogus KeyPackagesLow, or disconnect a device, but cannot read or
//! forge a message.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use sotto_proto::v1::{self, server_frame};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::epoch_grace::{EpochGrace, GraceRelay};
use crate::link_rendezvous::{
    FrameSender, JoinFuture, LINK_TTL, LinkError, LinkId, LinkRendezvous, RemoteLinks,
};
use crate::mailbox_hub::{MailboxEvent, MailboxHub, Relay};
use crate::store::{DeviceId, GroupId, MessageId};

/// Publishes waiting for NATS; past this, wake-ups are dropped and every
/// node is asked to re-read every mailbox once NATS takes publishes again.
const OUTBOX: usize = 64 * 1024;
/// Messages one subscription buffers before NATS calls this node slow.
const SUBSCRIPTION_BUFFER: usize = 4 * 1024;
/// How long a node waits for the opener's node to answer a join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a link subscription checks that its link is still open.
const LINK_CHECK: Duration = Duration::from_secs(1);
/// How long new subscriptions wait for NATS to confirm them before their
/// devices re-read their mailboxes.
const SUBSCRIBE_SETTLE: Duration = Duration::from_secs(1);
/// The subject prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "sotto";

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the NATS bus: {0}")]
pub struct BusError(String);

/// Whether `url` names a NATS server (`nats://HOST:PORT`).
pub fn is_bus_url(url: &str) -> bool {
    url.starts_with("nats://") && url.parse::<async_nats::ServerAddr>().is_ok()
}

/// Whether `prefix` can start this deployment's subjects: one or more
/// dot-separated tokens of ASCII letters, digits, `-` and `_` (no NATS
/// wildcards, no spaces), at most 64 bytes.
pub fn is_bus_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The names of one deployment's subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Every node re-reads every mailbox when it receives this.
    fn all(&self) -> String {
        format!("{}.all", self.prefix)
    }

    /// A node accepted a commit (payload: the group id): every node opens
    /// the group's previous-epoch window (see `crate::epoch_grace`).
    fn commits(&self) -> String {
        format!("{}.commit", self.prefix)
    }

    /// The subject of one device's signals.
    fn device(&self, device: &DeviceId) -> String {
        format!("{}.device.{}", self.prefix, hex::encode(device.as_bytes()))
    }

    /// The subject joins of a link are sent to (see [`link_token`]).
    fn link(&self, id: &LinkId) -> String {
        format!("{}.link.{}", self.prefix, link_token(id))
    }

    /// What the joiner's node waits for its bundle on.
    fn link_reply_prefix(&self) -> String {
        format!("{}.linkreply.", self.prefix)
    }
}

/// The last token of a link's subject: a hash of its id, so the link code
/// never appears on the bus (subjects show in NATS monitoring).
fn link_token(id: &LinkId) -> String {
    let digest = Sha256::new()
        .chain_update(b"sotto link rendezvous subject")
        .chain_update(id)
        .finalize();
    let (short, _) = digest.split_at(16);
    hex::encode(short)
}

/// What one device's subject carries (the first byte says which).
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceSignal {
    /// New mailbox entries: read them from the store. Empty payload.
    Wake,
    /// `1`, remaining count (u32, big-endian).
    KeyPackagesLow(u32),
    /// `2`, message id (16 bytes), ciphertext.
    Ephemeral(MessageId, Arc<[u8]>),
    /// `3`: the device was removed.
    Removed,
    /// `4`, sent as a request: is the device connected to a node? Its
    /// node answers (empty); no answer means no node holds it (Web Push,
    /// `crate::push`).
    Present,
}

impl DeviceSignal {
    fn encode(&self) -> Bytes {
        match self {
            DeviceSignal::Wake => Bytes::new(),
            DeviceSignal::KeyPackagesLow(remaining) => {
                let mut out = vec![1];
                out.extend_from_slice(&remaining.to_be_bytes());
                out.into()
            }
            DeviceSignal::Ephemeral(id, payload) => {
                let mut out = Vec::with_capacity(1 + 16 + payload.len());
                out.push(2);
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(payload);
                out.into()
            }
            DeviceSignal::Removed => Bytes::from_static(&[3]),
            DeviceSignal::Present => Bytes::from_static(&[4]),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let Some((&kind, rest)) = bytes.split_first() else {
            return Some(DeviceSignal::Wake);
        };
        match kind {
            1 => Some(DeviceSignal::KeyPackagesLow(u32::from_be_bytes(
                rest.try_into().ok()?,
            ))),
            2 => {
                let id = MessageId::from_slice(rest.get(..sotto_proto::ID_LEN)?)?;
                let payload = rest.get(sotto_proto::ID_LEN..)?;
                Some(DeviceSignal::Ephemeral(id, Arc::from(payload)))
            }
            3 if rest.is_empty() => Some(DeviceSignal::Removed),
            4 if rest.is_empty() => Some(DeviceSignal::Present),
            _ => None,
        }
    }

    fn of_event(event: &MailboxEvent) -> Self {
        match event {
            MailboxEvent::Entry(_) => DeviceSignal::Wake,
            MailboxEvent::Ephemeral {
                message_id,
                payload,
            } => DeviceSignal::Ephemeral(*message_id, Arc::clone(payload)),
            MailboxEvent::KeyPackagesLow { remaining } => DeviceSignal::KeyPackagesLow(*remaining),
        }
    }

    /// Hands a signal from another node to this node's connections.
    fn apply(self, hub: &MailboxHub, device: DeviceId) {
        match self {
            DeviceSignal::Wake => hub.wake_here(&device),
            DeviceSignal::KeyPackagesLow(remaining) => {
                hub.notify_here(&[device], &MailboxEvent::KeyPackagesLow { remaining });
            }
            DeviceSignal::Ephemeral(message_id, payload) => hub.notify_here(
                &[device],
                &MailboxEvent::Ephemeral {
                    message_id,
                    payload,
                },
            ),
            DeviceSignal::Removed => hub.disconnect_here(&device),
            // Answered by the subscription (it has the reply subject).
            DeviceSignal::Present => {}
        }
    }
}

/// A publish waiting for the NATS client.
#[derive(Debug)]
struct Outgoing {
    subject: String,
    payload: Bytes,
}

/// This node's side of the bus: the [`Relay`] the hub and the
/// `RemoteLinks` the rendezvous call.
#[derive(Debug)]
pub struct Bus {
    client: async_nats::Client,
    subjects: Subjects,
    outbox: mpsc::Sender<Outgoing>,
    /// Some publishes were dropped: tell every node to re-read.
    overflowed: AtomicBool,
    /// Devices whose connection count went to or from zero, to
    /// (un)subscribe.
    interest: Mutex<HashSet<DeviceId>>,
    interest_changed: Notify,
    hub: MailboxHub,
    links: Arc<LinkRendezvous>,
    grace: Arc<EpochGrace>,
    stop: watch::Receiver<bool>,
}

/// The bus's tasks; they end when the server stops.
#[derive(Debug)]
pub struct BusTasks(Vec<JoinHandle<()>>);

impl BusTasks {
    /// Waits for the tasks to end.
    pub async fn join(self) {
        for task in self.0 {
            let _ = task.await;
        }
    }
}

impl Bus {
    /// Connects to the NATS server at `url` (in the background: an
    /// unreachable server is retried for ever, and logged) and starts
    /// relaying `hub`, `links` and `grace` to the other nodes, on subjects
    /// under `prefix`, until `stop`.
    pub(crate) async fn start(
        url: &str,
        prefix: &str,
        hub: MailboxHub,
        links: Arc<LinkRendezvous>,
        grace: Arc<EpochGrace>,
        stop: watch::Receiver<bool>,
    ) -> Result<BusTasks, BusError> {
        let addr: async_nats::ServerAddr = url.parse().map_err(|e| {
            BusError(format!(
                "{e}; expected nats://HOST:PORT (user:password@ may precede the host)"
            ))
        })?;
        if !is_bus_prefix(prefix) {
            return Err(BusError(format!(
                "{prefix:?} is not a subject prefix (dot-separated tokens of letters, digits, - and _)"
            )));
        }
        let host = format!("{}:{}", addr.host(), addr.port());
        let wake_on_reconnect = hub.clone();
        let events_host = host.clone();
        let client = async_nats::ConnectOptions::new()
            .name("sotto-server")
            .no_echo()
            .retry_on_initial_connect()
            .subscription_capacity(SUBSCRIPTION_BUFFER)
            .event_callback(move |event| {
                let hub = wake_on_reconnect.clone();
                let host = events_host.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(%host, "connected to the NATS bus");
                            // Wake-ups may have been lost while away.
                            hub.wake_all_here();
                        }
                        async_nats::Event::Disconnected => tracing::warn!(
                            %host,
                            "lost the NATS bus: devices on other nodes get new messages when they sync, until it is back"
                        ),
                        other => tracing::debug!(%host, event = %other, "NATS bus event"),
                    }
                }
            })
            .connect(addr)
            .await
            .map_err(|e| BusError(e.to_string()))?;
        if client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!(
                %host,
                "the NATS bus is unreachable; serving anyway and retrying (cross-node delivery waits for sync until it is back)"
            );
        }
        let (outbox, outgoing) = mpsc::channel(OUTBOX);
        let bus = Arc::new(Bus {
            client,
            subjects: Subjects {
                prefix: prefix.to_owned(),
            },
            outbox,
            overflowed: AtomicBool::new(false),
            interest: Mutex::default(),
            interest_changed: Notify::new(),
            hub: hub.clone(),
            links: Arc::clone(&links),
            grace: Arc::clone(&grace),
            stop,
        });
        let tasks = vec![
            tokio::spawn(Arc::clone(&bus).publish(outgoing)),
            tokio::spawn(Arc::clone(&bus).follow_interest()),
            tokio::spawn(Arc::clone(&bus).follow_all()),
            tokio::spawn(Arc::clone(&bus).follow_commits()),
        ];
        grace.set_relay(Arc::clone(&bus) as Arc<dyn GraceRelay>);
        hub.set_relay(Arc::clone(&bus) as Arc<dyn Relay>);
        hub.set_presence(Arc::clone(&bus) as Arc<dyn crate::push::Presence>);
        links.set_remote(Arc::new(LinkBus(Arc::clone(&bus))));
        // Devices that connected before the relay was set.
        for device in hub.connected_devices() {
            bus.interest_changed(device);
        }
        Ok(BusTasks(tasks))
    }

    /// Queues a publish without waiting (callers hold locks or run in the
    /// store's writer).
    fn queue(&self, subject: String, payload: Bytes) {
        if self.outbox.try_send(Outgoing { subject, payload }).is_err() {
            self.overflowed.store(true, Ordering::Release);
        }
    }

    /// Hands queued publishes to the NATS client, which buffers them while
    /// it reconnects.
    async fn publish(self: Arc<Self>, mut outgoing: mpsc::Receiver<Outgoing>) {
        let mut stop = self.stop.clone();
        loop {
            let next = tokio::select! {
                next = outgoing.recv() => next,
                _ = stop.changed() => None,
            };
            let Some(Outgoing { subject, payload }) = next else {
                break;
            };
            if let Err(e) = self.client.publish(subject, payload).await {
                tracing::debug!(error = %e, "cannot publish on the NATS bus");
            }
            if self.overflowed.swap(false, Ordering::AcqRel) {
                tracing::warn!("NATS bus backlog full: asking every node to re-read its mailboxes");
                self.hub.wake_all_here();
                let _ = self.client.publish(self.subjects.all(), Bytes::new()).await;
            }
        }
    }

    /// Keeps one subscription per device connected here.
    async fn follow_interest(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        let mut subscribed: HashMap<DeviceId, AbortOnDrop> = HashMap::new();
        loop {
            tokio::select! {
                () = self.interest_changed.notified() => {}
                _ = stop.changed() => break,
            }
            let changed: Vec<DeviceId> = self
                .interest
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .collect();
            let mut new = Vec::new();
            for device in changed {
                let wanted = self.hub.is_connected(&device);
                if !wanted {
                    subscribed.remove(&device);
                    continue;
                }
                if subscribed.contains_key(&device) {
                    continue;
                }
                let mut subscription =
                    match self.client.subscribe(self.subjects.device(&device)).await {
                        Ok(subscription) => subscription,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot subscribe on the NATS bus");
                            continue;
                        }
                    };
                let hub = self.hub.clone();
                let client = self.client.clone();
                let task = tokio::spawn(async move {
                    while let Some(message) = subscription.next().await {
                        match DeviceSignal::decode(&message.payload) {
                            Some(DeviceSignal::Present) => {
                                if let Some(reply) = message.reply {
                                    let _ = client.publish(reply, Bytes::new()).await;
                                }
                            }
                            Some(signal) => signal.apply(&hub, device),
                            None => tracing::debug!("malformed signal on the NATS bus"),
                        }
                    }
                });
                subscribed.insert(device, AbortOnDrop(task));
                new.push(device);
            }
            if !new.is_empty() {
                // A wake-up published between the device's login (which
                // read its mailbox) and this subscription reaching NATS
                // went nowhere: read once more when it has. (If NATS is
                // down, its return wakes everyone anyway.)
                let _ = tokio::time::timeout(SUBSCRIBE_SETTLE, self.client.flush()).await;
                for device in new {
                    self.hub.wake_here(&device);
                }
            }
        }
    }

    /// Re-reads every mailbox here when another node lost wake-ups.
    async fn follow_all(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        let mut all = match self.client.subscribe(self.subjects.all()).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe on the NATS bus");
                return;
            }
        };
        loop {
            tokio::select! {
                message = all.next() => match message {
                    Some(_) => self.hub.wake_all_here(),
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
    }
}

impl Bus {
    /// Opens the previous-epoch window of groups whose commits other nodes
    /// accepted.
    async fn follow_commits(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        let mut commits = match self.client.subscribe(self.subjects.commits()).await {
            Ok(commits) => commits,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe on the NATS bus");
                return;
            }
        };
        loop {
            tokio::select! {
                message = commits.next() => match message {
                    Some(message) => match GroupId::from_slice(&message.payload) {
                        Some(group) => self.grace.commit_accepted_elsewhere(&group, Instant::now()),
                        None => tracing::debug!("malformed commit notice on the NATS bus"),
                    },
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
    }
}

impl GraceRelay for Bus {
    fn commit_accepted(&self, group: &GroupId) {
        self.queue(
            self.subjects.commits(),
            Bytes::copy_from_slice(group.as_bytes()),
        );
    }
}

/// How long a node waits for another to say it holds a device.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(2);

impl crate::push::Presence for Bus {
    fn connected_elsewhere(&self, device: DeviceId) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let client = self.client.clone();
        let subject = self.subjects.device(&device);
        Box::pin(async move {
            // NATS answers "no responders" at once when no node subscribes.
            let request = client.request(subject, DeviceSignal::Present.encode());
            matches!(
                tokio::time::timeout(PRESENCE_TIMEOUT, request).await,
                Ok(Ok(_))
            )
        })
    }
}

impl Relay for Bus {
    fn entries(&self, devices: &[DeviceId]) {
        for device in devices {
            self.queue(self.subjects.device(device), DeviceSignal::Wake.encode());
        }
    }

    fn event(&self, devices: &[DeviceId], event: &MailboxEvent) {
        let payload = DeviceSignal::of_event(event).encode();
        for device in devices {
            self.queue(self.subjects.device(device), payload.clone());
        }
    }

    fn disconnect(&self, device: &DeviceId) {
        self.queue(self.subjects.device(device), DeviceSignal::Removed.encode());
    }

    fn interest_changed(&self, device: DeviceId) {
        self.interest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(device);
        self.interest_changed.notify_one();
    }
}

/// Aborts a task when dropped (its subscription goes with it).
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The rendezvous across nodes: the opener's node answers joins sent to
/// the link's subject; the joiner's node waits for the bundle on a subject
/// of its own, named in the join.
///
/// A join is `reply subject length (u16, big-endian) ‖ reply subject ‖
/// sealed request`; its answer is `0 ‖ seconds left (u32)` or `1`
/// (unknown) — the sealed blobs cross the bus as the server sees them,
/// sealed to the two devices.
#[derive(Debug)]
struct LinkBus(Arc<Bus>);

impl LinkBus {
    /// Serves joins of a link opened here until it is gone.
    async fn serve(bus: Arc<Bus>, id: LinkId, mut requests: async_nats::Subscriber) {
        let mut stop = bus.stop.clone();
        let mut check = tokio::time::interval(LINK_CHECK);
        loop {
            tokio::select! {
                _ = check.tick() => {
                    if !bus.links.is_open(&id, Instant::now()) {
                        break;
                    }
                }
                _ = stop.changed() => break,
                message = requests.next() => {
                    let Some(message) = message else { break };
                    let Some(reply) = message.reply else { continue };
                    let answer = match parse_join(&bus.subjects, &message.payload) {
                        Some((joiner, sealed_request)) => {
                            let now = Instant::now();
                            match bus.links.join_from_elsewhere(&id, joiner, sealed_request, now) {
                                Ok(expires) => {
                                    let left = expires.saturating_duration_since(now).as_secs();
                                    let mut out = vec![0];
                                    out.extend_from_slice(&u32::try_from(left).unwrap_or(u32::MAX).to_be_bytes());
                                    Bytes::from(out)
                                }
                                Err(_) => Bytes::from_static(&[1]),
                            }
                        }
                        None => Bytes::from_static(&[1]),
                    };
                    if let Err(e) = bus.client.publish(reply, answer).await {
                        tracing::debug!(error = %e, "cannot answer a link join on the NATS bus");
                    }
                }
            }
        }
    }
}

/// Splits a join into the joiner's subject (which must be one of this
/// deployment's reply subjects) and the sealed request.
fn parse_join(subjects: &Subjects, payload: &[u8]) -> Option<(String, Vec<u8>)> {
    let len = usize::from(u16::from_be_bytes(payload.get(..2)?.try_into().ok()?));
    let subject = std::str::from_utf8(payload.get(2..2 + len)?).ok()?;
    if !subject.starts_with(&subjects.link_reply_prefix()) {
        return None;
    }
    Some((subject.to_owned(), payload.get(2 + len..)?.to_vec()))
}

impl RemoteLinks for LinkBus {
    fn opened(&self, id: LinkId) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let bus = Arc::clone(&self.0);
        Box::pin(async move {
            let requests = match bus.client.subscribe(bus.subjects.link(&id)).await {
                Ok(requests) => requests,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe on the NATS bus");
                    return;
                }
            };
            // The opener shows its code once the link is open: by then a
            // joiner on any node must find it.
            let _ = tokio::time::timeout(SUBSCRIBE_SETTLE, bus.client.flush()).await;
            tokio::spawn(Self::serve(Arc::clone(&bus), id, requests));
        })
    }

    fn join(&self, id: LinkId, sealed_request: Vec<u8>, joiner_tx: FrameSender) -> JoinFuture {
        let bus = Arc::clone(&self.0);
        Box::pin(async move {
            let reply_to = format!(
                "{}{}",
                bus.subjects.link_reply_prefix(),
                hex::encode(rand::random::<[u8; 16]>())
            );
            let mut bundles = bus
                .client
                .subscribe(reply_to.clone())
                .await
                .map_err(|_| LinkError::Unknown)?;
            let mut join = Vec::with_capacity(2 + reply_to.len() + sealed_request.len());
            let len = u16::try_from(reply_to.len()).map_err(|_| LinkError::Unknown)?;
            join.extend_from_slice(&len.to_be_bytes());
            join.extend_from_slice(reply_to.as_bytes());
            join.extend_from_slice(&sealed_request);
            let answer = tokio::time::timeout(
                JOIN_TIMEOUT,
                bus.client.request(bus.subjects.link(&id), join.into()),
            )
            .await
            .map_err(|_| LinkError::Unknown)?
            // No node has this link open (no responders), or NATS is down.
            .map_err(|_| LinkError::Unknown)?;
            let left = match answer.payload.split_first() {
                Some((0, secs)) => {
                    u32::from_be_bytes(secs.try_into().map_err(|_| LinkError::Unknown)?)
                }
                _ => return Err(LinkError::Unknown),
            };
            let left = Duration::from_secs(u64::from(left)).min(LINK_TTL);
            tokio::spawn(async move {
                if let Ok(Some(bundle)) = tokio::time::timeout(left, bundles.next()).await {
                    let frame = server_frame::Body::LinkCompleted(v1::LinkCompleted {
                        sealed_bundle: bundle.payload.to_vec(),
                    });
                    let _ = joiner_tx.send(frame).await;
                }
            });
            Ok(Instant::now() + left)
        })
    }

    fn complete(&self, joiner: String, sealed_bundle: Vec<u8>) {
        self.0.queue(joiner, sealed_bundle.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_signals_round_trip_and_junk_is_refused() {
        let signals = [
            DeviceSignal::Wake,
            DeviceSignal::KeyPackagesLow(3),
            DeviceSignal::Ephemeral(MessageId::new([9; 16]), Arc::from(&b"sealed"[..])),
            DeviceSignal::Removed,
            DeviceSignal::Present,
        ];
        for signal in signals {
            assert_eq!(DeviceSignal::decode(&signal.encode()), Some(signal));
        }
        assert_eq!(
            DeviceSignal::Wake.encode().len(),
            0,
            "a wake-up carries nothing"
        );
        for junk in [&[1, 0, 0][..], &[2, 1, 2], &[3, 0], &[4, 0], &[9]] {
            assert_eq!(DeviceSignal::decode(junk), None);
        }
    }

    /// A group message to 1,000 devices connected to two other nodes: the
    /// sending node's hub queues 1,000 wake-ups and each device's
    /// connection on the other nodes is told to read its mailbox. Needs
    /// `SOTTO_TEST_NATS`; prints the time it took (a measurement, not an
    /// assertion).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fan_out_to_a_thousand_devices() {
        let Some(url) = std::env::var("SOTTO_TEST_NATS")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            eprintln!("fan_out_to_a_thousand_devices: skipped (SOTTO_TEST_NATS is not set)");
            return;
        };
        let (_stop_tx, stop) = watch::channel(false);
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let hub = MailboxHub::new();
            let tasks = Bus::start(
                &url,
                DEFAULT_PREFIX,
                hub.clone(),
                Arc::default(),
                grace(),
                stop.clone(),
            )
            .await
            .unwrap();
            nodes.push((hub, tasks));
        }
        let devices: Vec<DeviceId> = (0..1000u32)
            .map(|i| {
                let mut id = [0; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id[4..].copy_from_slice(&rand::random::<[u8; 12]>());
                DeviceId::new(id)
            })
            .collect();
        // Devices on nodes 1 and 2; node 0 sends.
        let subscriptions: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| nodes[1 + i % 2].0.subscribe(*d))
            .collect();
        let entry = |device: &DeviceId| crate::store::NewEntry {
            device_id: *device,
            seq: 1,
            message_id: MessageId::new([1; 16]),
            payload: Arc::from(&b"x"[..]),
            frank: None,
        };
        // Until both nodes have subscribed (probing the last device of each).
        for probe in [998, 999] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                nodes[0].0.deliver(vec![entry(&devices[probe])]);
                let woken = &subscriptions[probe].missed;
                if tokio::time::timeout(Duration::from_millis(100), woken.wait())
                    .await
                    .is_ok()
                {
                    woken.take();
                    break;
                }
                assert!(Instant::now() < deadline, "the nodes never subscribed");
            }
        }
        let entries = devices.iter().map(entry).collect();
        let started = std::time::Instant::now();
        // A hub with no connections for these devices: only the bus wakes
        // them.
        nodes[0].0.deliver(entries);
        let queued = started.elapsed();
        for subscription in &subscriptions {
            tokio::time::timeout(Duration::from_secs(10), subscription.missed.wait())
                .await
                .expect("every device is woken");
        }
        eprintln!(
            "fan-out of one message to 1,000 devices on two other nodes: queued in {queued:?}, all woken after {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn link_subjects_do_not_show_the_link_id() {
        let subjects = Subjects {
            prefix: DEFAULT_PREFIX.into(),
        };
        let id = [0xab; sotto_proto::LINK_ID_LEN];
        let subject = subjects.link(&id);
        assert!(subject.starts_with("sotto.link."), "{subject}");
        assert!(!subject.contains(&hex::encode(id)));
        assert_ne!(subject, subjects.link(&[0xac; sotto_proto::LINK_ID_LEN]));
        assert_eq!(
            parse_join(&subjects, b"\x00\x03abc"),
            None,
            "only our reply subjects"
        );
        let mut join = vec![0, 20];
        join.extend_from_slice(b"sotto.linkreply.abcd");
        join.extend_from_slice(b"req");
        assert_eq!(
            parse_join(&subjects, &join),
            Some(("sotto.linkreply.abcd".into(), b"req".to_vec()))
        );
        // Another deployment's reply subject is not ours to publish on.
        let other = Subjects {
            prefix: "staging".into(),
        };
        assert_eq!(parse_join(&other, &join), None);
    }

    fn grace() -> Arc<EpochGrace> {
        Arc::new(EpochGrace::new(Duration::from_secs(5)))
    }

    #[test]
    fn subject_prefixes_are_plain_tokens() {
        for good in ["sotto", "prod.eu-1", "a_b", "x"] {
            assert!(is_bus_prefix(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a.*",
            "a.>",
            "sötto",
            &"x".repeat(65),
        ] {
            assert!(!is_bus_prefix(bad), "{bad:?}");
        }
    }

    /// Two deployments on one NATS server with different prefixes: a
    /// wake-up from one never reaches the other's devices, while a node of
    /// the same deployment is woken. Needs `SOTTO_TEST_NATS`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deployments_with_different_prefixes_do_not_wake_each_other() {
        let Some(url) = std::env::var("SOTTO_TEST_NATS")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            eprintln!(
                "deployments_with_different_prefixes_do_not_wake_each_other: skipped (SOTTO_TEST_NATS is not set)"
            );
            return;
        };
        let (_stop_tx, stop) = watch::channel(false);
        // A random prefix per run, so parallel runs on one NATS stay apart too.
        let run = hex::encode(rand::random::<[u8; 4]>());
        let mut nodes = Vec::new();
        for prefix in [
            format!("blue{run}"),
            format!("blue{run}"),
            format!("green{run}"),
        ] {
            let hub = MailboxHub::new();
            let tasks = Bus::start(
                &url,
                &prefix,
                hub.clone(),
                Arc::default(),
                grace(),
                stop.clone(),
            )
            .await
            .unwrap();
            nodes.push((hub, tasks));
        }
        // The same device id is connected to blue's second node and to
        // green's node (device ids are random, but nothing on the bus
        // relies on that).
        let device = DeviceId::new(rand::random());
        let blue = nodes[1].0.subscribe(device);
        let green = nodes[2].0.subscribe(device);
        let entry = crate::store::NewEntry {
            device_id: device,
            seq: 1,
            message_id: MessageId::new([1; 16]),
            payload: Arc::from(&b"x"[..]),
            frank: None,
        };
        // Subscribing wakes each once (see `follow_interest`), and so does
        // each node's `Connected` event, whose callback may run after the
        // subscription on a busy machine: let those pass until both have
        // been quiet for a while.
        for woken in [&blue.missed, &green.missed] {
            let _ = tokio::time::timeout(Duration::from_secs(3), woken.wait()).await;
            woken.take();
        }
        let settle = Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let blue_woken = blue.missed.take();
            let green_woken = green.missed.take();
            if !(blue_woken || green_woken) || Instant::now() > settle {
                break;
            }
        }
        // Blue's first node delivers until blue's second is woken.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            nodes[0].0.deliver(vec![entry.clone()]);
            if tokio::time::timeout(Duration::from_millis(100), blue.missed.wait())
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "blue's other node was never woken"
            );
        }
        // By now every wake-up published has had time to travel.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !green.missed.take(),
            "a wake-up crossed from one deployment to another on a shared NATS"
        );
    }
}
