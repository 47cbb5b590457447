//! Hands newly committed mailbox entries to the connections of their
//! device, so an online device gets a message without the server reading it
//! back from storage.
//!
//! The mailbox itself lives in the [`crate::store::Store`], which tells the
//! hub about each entry after it is committed, in commit order; so each
//! connection sees its device's entries in `seq` order. A connection whose
//! queue is full misses entries: it is flagged and then fetches from the
//! store instead. With several server nodes, a [`Relay`] (the NATS bus,
//! `crate::bus`) carries wake-ups to the other nodes, which hand them to
//! their connections through the `*_here` methods.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{Notify, mpsc};

use crate::store::{DeviceId, NewEntry, Store};

/// Signals carried to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxEvent {
    /// A committed entry of the device's mailbox (boxed: events sit in a
    /// channel per connection, whose buffer is sized by the largest event).
    Entry(Arc<NewEntry>),
    /// An ephemeral message (a typing indicator): pushed if the connection
    /// is open, stored nowhere, never fetched again.
    Ephemeral {
        message_id: crate::store::MessageId,
        payload: Arc<[u8]>,
    },
    /// The device's one-time KeyPackage pool is low.
    KeyPackagesLow {
        /// One-time KeyPackages left.
        remaining: u32,
    },
}

/// Room for pending signals per connection (a little more than the in-flight
/// window, so a busy but healthy connection is not sent to storage). When it
/// is full, events are dropped and the connection is flagged as having
/// missed some: entries stay in the store and are fetched from there.
const EVENT_QUEUE: usize = 128;

/// Set when events for a connection were dropped.
#[derive(Debug, Default)]
pub struct Missed {
    flag: AtomicBool,
    /// Wakes a connection that drained its queue before the flag was set.
    wake: Notify,
}

impl Missed {
    fn mark(&self) {
        self.flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether events were dropped since the last call (and clears that).
    pub fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }

    /// Resolves after events were dropped (possibly already seen by
    /// [`Missed::take`]).
    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

/// Registry of connected devices: device id → one sender per connection.
#[derive(Debug, Clone, Default)]
pub struct MailboxHub {
    inner: Arc<HubInner>,
}

/// One subscribed connection of a device.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<MailboxEvent>,
    missed: Arc<Missed>,
}

impl Subscriber {
    fn send(&self, event: MailboxEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.missed.mark(),
            // The connection is going away.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The connections of one device.
type DeviceConnections = Vec<Subscriber>;

/// Carries what the hub hands to its own connections to the other server
/// nodes (whose devices may be connected there), and tells the carrier
/// which devices are connected here. Every method must return at once: it
/// is called with the hub's lock held or from the store's writer.
pub trait Relay: Send + Sync + std::fmt::Debug {
    /// These devices have new committed mailbox entries.
    fn entries(&self, devices: &[DeviceId]);
    /// An ephemeral signal for these devices.
    fn event(&self, devices: &[DeviceId], event: &MailboxEvent);
    /// The device was removed: close its connections everywhere.
    fn disconnect(&self, device: &DeviceId);
    /// The device's first connection here opened, or its last one closed.
    fn interest_changed(&self, device: DeviceId);
}

#[derive(Debug, Default)]
struct HubInner {
    next_id: AtomicU64,
    devices: Mutex<HashMap<DeviceId, DeviceConnections>>,
    /// The other nodes, when the server runs with `--bus`.
    relay: OnceLock<Arc<dyn Relay>>,
    /// Told which devices got entries while not connected here (Web Push,
    /// `crate::push`).
    offline: OnceLock<Arc<dyn crate::push::OfflineSink>>,
    /// Answers whether a device is connected to another node (the bus).
    presence: OnceLock<Arc<dyn crate::push::Presence>>,
}

/// A connection's registration; unregisters itself on drop.
#[derive(Debug)]
pub struct Subscription {
    hub: MailboxHub,
    device_id: DeviceId,
    id: u64,
    /// Signals for this connection.
    pub events: mpsc::Receiver<MailboxEvent>,
    /// Whether some signals were dropped.
    pub missed: Arc<Missed>,
}

impl MailboxHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub that `store` tells about every entry it commits.
    pub fn fed_by(store: &impl Store) -> Self {
        let hub = Self::new();
        let entries_to = hub.clone();
        store.set_entry_listener(Box::new(move |entries| entries_to.deliver(entries)));
        hub
    }

    /// Registers a connection authenticated as `device_id`.
    pub fn subscribe(&self, device_id: DeviceId) -> Subscription {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let missed = Arc::new(Missed::default());
        let mut map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connections = map.entry(device_id).or_default();
        connections.push(Subscriber {
            id,
            tx,
            missed: Arc::clone(&missed),
        });
        let first = connections.len() == 1;
        if first && let Some(relay) = self.inner.relay.get() {
            relay.interest_changed(device_id);
        }
        drop(map);
        if first && let Some(sink) = self.inner.offline.get() {
            sink.connected(device_id);
        }
        Subscription {
            hub: self.clone(),
            device_id,
            id,
            events,
            missed,
        }
    }

    /// Relays to the other nodes from now on (set once; later calls are
    /// ignored).
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.inner.relay.set(relay);
    }

    /// Tells `sink` from now on which devices got entries while not
    /// connected here (set once; later calls are ignored).
    pub fn set_offline_sink(&self, sink: Arc<dyn crate::push::OfflineSink>) {
        let _ = self.inner.offline.set(sink);
    }

    /// Asks `presence` whether a device is connected to another node from
    /// now on (set once; later calls are ignored).
    pub fn set_presence(&self, presence: Arc<dyn crate::push::Presence>) {
        let _ = self.inner.presence.set(presence);
    }

    /// Whether `device` is connected to another node (`false` with one
    /// node, or when the other nodes cannot say).
    pub async fn connected_elsewhere(&self, device: DeviceId) -> bool {
        match self.inner.presence.get() {
            Some(presence) => presence.connected_elsewhere(device).await,
            None => false,
        }
    }

    /// Every device with a connection here.
    pub fn connected_devices(&self) -> Vec<DeviceId> {
        self.inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Sends `event` to every connection of every listed device, here and
    /// on the other nodes.
    pub fn notify<'a>(
        &self,
        devices: impl IntoIterator<Item = &'a DeviceId>,
        event: &MailboxEvent,
    ) {
        let devices: Vec<DeviceId> = devices.into_iter().copied().collect();
        self.notify_here(&devices, event);
        if let Some(relay) = self.inner.relay.get() {
            relay.event(&devices, event);
        }
    }

    /// [`MailboxHub::notify`] for this node's connections only (a signal
    /// relayed from another node).
    pub fn notify_here(&self, devices: &[DeviceId], event: &MailboxEvent) {
        let map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for device in devices {
            for subscriber in map.get(device).into_iter().flatten() {
                subscriber.send(event.clone());
            }
        }
    }

    /// Tells every connection of `device` here that its mailbox has entries
    /// it was not handed (committed on another node): it reads them from
    /// the store, as after dropped events.
    pub fn wake_here(&self, device: &DeviceId) {
        let map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for subscriber in map.get(device).into_iter().flatten() {
            subscriber.missed.mark();
        }
    }

    /// [`MailboxHub::wake_here`] for every connected device (after wake-ups
    /// may have been lost, e.g. while the bus was down).
    pub fn wake_all_here(&self) {
        let map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for subscriber in map.values().flatten() {
            subscriber.missed.mark();
        }
    }

    /// Hands committed entries to the connections of their devices (the
    /// store's [`crate::store::EntryListener`]).
    pub fn deliver(&self, entries: Vec<NewEntry>) {
        if let Some(relay) = self.inner.relay.get() {
            let mut devices: Vec<DeviceId> = entries.iter().map(|e| e.device_id).collect();
            devices.sort_unstable();
            devices.dedup();
            relay.entries(&devices);
        }
        let sink = self.inner.offline.get();
        let mut offline = Vec::new();
        let map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            let entry = Arc::new(entry);
            match map.get(&entry.device_id) {
                Some(subscribers) => {
                    for subscriber in subscribers {
                        subscriber.send(MailboxEvent::Entry(Arc::clone(&entry)));
                    }
                }
                None if sink.is_some() => offline.push(entry.device_id),
                None => {}
            }
        }
        drop(map);
        if let Some(sink) = sink
            && !offline.is_empty()
        {
            offline.sort_unstable();
            offline.dedup();
            sink.offline(offline);
        }
    }

    /// Closes the event queue of every connection of `device_id` (its
    /// `events.recv()` returns `None`), here and on the other nodes: used
    /// when the device is removed.
    pub fn disconnect(&self, device_id: &DeviceId) {
        self.disconnect_here(device_id);
        if let Some(relay) = self.inner.relay.get() {
            relay.disconnect(device_id);
        }
    }

    /// [`MailboxHub::disconnect`] for this node's connections only.
    pub fn disconnect_here(&self, device_id: &DeviceId) {
        let removed = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(device_id);
        if removed.is_some()
            && let Some(relay) = self.inner.relay.get()
        {
            relay.interest_changed(*device_id);
        }
    }

    /// Whether any connection is authenticated as `device_id`.
    pub fn is_connected(&self, device_id: &DeviceId) -> bool {
        self.inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(device_id)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self
            .hub
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = map.get_mut(&self.device_id) {
            list.retain(|subscriber| subscriber.id != self.id);
            if list.is_empty() {
                map.remove(&self.device_id);
                if let Some(relay) = self.hub.inner.relay.get() {
                    relay.interest_changed(self.device_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::MessageId;

    fn entry(device_id: DeviceId, seq: u64) -> NewEntry {
        NewEntry {
            device_id,
            seq,
            message_id: MessageId::new([7; 16]),
            payload: Arc::from(&b"ciphertext"[..]),
            frank: None,
        }
    }

    #[tokio::test]
    async fn hands_entries_to_every_connection_of_their_device_and_forgets_closed_ones() {
        let hub = MailboxHub::new();
        let device = DeviceId::new([1; 16]);
        let other = DeviceId::new([2; 16]);
        let mut a = hub.subscribe(device);
        let mut b = hub.subscribe(device);
        let mut c = hub.subscribe(other);
        hub.deliver(vec![entry(device, 5), entry(other, 6)]);
        assert_eq!(
            a.events.recv().await,
            Some(MailboxEvent::Entry(Arc::new(entry(device, 5))))
        );
        assert_eq!(
            b.events.recv().await,
            Some(MailboxEvent::Entry(Arc::new(entry(device, 5))))
        );
        assert_eq!(
            c.events.recv().await,
            Some(MailboxEvent::Entry(Arc::new(entry(other, 6))))
        );
        assert!(
            a.events.try_recv().is_err(),
            "only its own device's entries"
        );
        drop(c);
        drop(a);
        assert!(hub.is_connected(&device));
        drop(b);
        assert!(!hub.is_connected(&device));

        let mut d = hub.subscribe(device);
        hub.disconnect(&device);
        assert_eq!(d.events.recv().await, None);
        drop(d);
        assert!(!hub.is_connected(&device));
    }

    /// What the hub told its relay.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Relay for Recorder {
        fn entries(&self, devices: &[DeviceId]) {
            self.0.lock().unwrap().push(format!("entries {devices:?}"));
        }
        fn event(&self, devices: &[DeviceId], _: &MailboxEvent) {
            self.0.lock().unwrap().push(format!("event {devices:?}"));
        }
        fn disconnect(&self, device: &DeviceId) {
            self.0
                .lock()
                .unwrap()
                .push(format!("disconnect {device:?}"));
        }
        fn interest_changed(&self, device: DeviceId) {
            self.0.lock().unwrap().push(format!("interest {device:?}"));
        }
    }

    #[tokio::test]
    async fn relays_to_other_nodes_and_takes_their_wake_ups() {
        let hub = MailboxHub::new();
        let recorder = Arc::new(Recorder::default());
        hub.set_relay(Arc::clone(&recorder) as Arc<dyn Relay>);
        let device = DeviceId::new([1; 16]);
        let other = DeviceId::new([2; 16]);
        let taken = || std::mem::take(&mut *recorder.0.lock().unwrap());

        let a = hub.subscribe(device);
        let b = hub.subscribe(device);
        assert_eq!(
            taken(),
            vec![format!("interest {device:?}")],
            "once per device"
        );
        hub.deliver(vec![entry(device, 1), entry(other, 2), entry(device, 3)]);
        assert_eq!(taken(), vec![format!("entries {:?}", [device, other])]);

        // A wake-up from another node: both connections read the store.
        hub.wake_here(&device);
        assert!(a.missed.take() && b.missed.take());
        hub.wake_all_here();
        assert!(a.missed.take());
        // Signals from another node are not relayed back.
        hub.notify_here(&[device], &MailboxEvent::KeyPackagesLow { remaining: 1 });
        assert_eq!(taken(), Vec::<String>::new());
        hub.notify([&other], &MailboxEvent::KeyPackagesLow { remaining: 1 });
        assert_eq!(taken(), vec![format!("event {:?}", [other])]);

        drop(a);
        assert_eq!(taken(), Vec::<String>::new(), "b is still connected");
        drop(b);
        assert_eq!(taken(), vec![format!("interest {device:?}")]);

        let mut c = hub.subscribe(device);
        hub.disconnect_here(&device);
        assert_eq!(c.events.recv().await, None);
        hub.disconnect(&other);
        assert_eq!(
            taken(),
            vec![
                format!("interest {device:?}"),
                format!("interest {device:?}"),
                format!("disconnect {other:?}"),
            ]
        );
    }

    #[tokio::test]
    async fn a_full_queue_flags_the_connection_instead_of_blocking() {
        let hub = MailboxHub::new();
        let device = DeviceId::new([1; 16]);
        let mut sub = hub.subscribe(device);
        let total = u64::try_from(EVENT_QUEUE).unwrap() + 3;
        hub.deliver((1..=total).map(|seq| entry(device, seq)).collect());
        // The flag is set and the waiter woken even if nobody was waiting.
        sub.missed.wait().await;
        assert!(sub.missed.take());
        assert!(!sub.missed.take(), "taking the flag clears it");
        let mut seqs = Vec::new();
        while let Ok(MailboxEvent::Entry(e)) = sub.events.try_recv() {
            seqs.push(e.seq);
        }
        let kept: Vec<u64> = (1..=u64::try_from(EVENT_QUEUE).unwrap()).collect();
        assert_eq!(
            seqs, kept,
            "the first entries arrive in order; the rest are dropped"
        );
    }
}
