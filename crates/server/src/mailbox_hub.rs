//! Hands newly committed mailbox entries to the connections of their
//! device, so an online device gets a message without the server reading it
//! back from storage.
//!
//! The mailbox itself lives in the [`crate::store::Store`], which tells the
//! hub about each entry after it is committed, in commit order; so each
//! connection sees its device's entries in `seq` order. A connection whose
//! queue is full misses entries: it is flagged and then fetches from the
//! store instead. With several server nodes this is where a message bus
//! (NATS) would plug in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

#[derive(Debug, Default)]
struct HubInner {
    next_id: AtomicU64,
    devices: Mutex<HashMap<DeviceId, DeviceConnections>>,
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
        self.inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(device_id)
            .or_default()
            .push(Subscriber {
                id,
                tx,
                missed: Arc::clone(&missed),
            });
        Subscription {
            hub: self.clone(),
            device_id,
            id,
            events,
            missed,
        }
    }

    /// Sends `event` to every connection of every listed device.
    pub fn notify<'a>(
        &self,
        devices: impl IntoIterator<Item = &'a DeviceId>,
        event: &MailboxEvent,
    ) {
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

    /// Hands committed entries to the connections of their devices (the
    /// store's [`crate::store::EntryListener`]).
    pub fn deliver(&self, entries: Vec<NewEntry>) {
        let map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            let entry = Arc::new(entry);
            for subscriber in map.get(&entry.device_id).into_iter().flatten() {
                subscriber.send(MailboxEvent::Entry(Arc::clone(&entry)));
            }
        }
    }

    /// Closes the event queue of every connection of `device_id` (its
    /// `events.recv()` returns `None`): used when the device is removed.
    pub fn disconnect(&self, device_id: &DeviceId) {
        self.inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(device_id);
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
