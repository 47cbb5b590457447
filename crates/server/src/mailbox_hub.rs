//! Wakes the connections of a device when something is queued for it.
//!
//! The mailbox itself lives in the [`crate::store::Store`]; the hub only
//! carries "look again" signals between connections in this process. With
//! several server nodes this is where a message bus (NATS) would plug in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::store::DeviceId;

/// Signals carried to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxEvent {
    /// Something new may be in the mailbox.
    Wake,
    /// The device's one-time KeyPackage pool is low.
    KeyPackagesLow {
        /// One-time KeyPackages left.
        remaining: u32,
    },
}

/// Room for pending signals per connection. Wakes are idempotent, so when
/// the queue is full dropping another one loses nothing.
const EVENT_QUEUE: usize = 16;

/// Registry of connected devices: device id → one sender per connection.
#[derive(Debug, Clone, Default)]
pub struct MailboxHub {
    inner: Arc<HubInner>,
}

/// The connections of one device, each with its subscription id.
type DeviceConnections = Vec<(u64, mpsc::Sender<MailboxEvent>)>;

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
}

impl MailboxHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection authenticated as `device_id`.
    pub fn subscribe(&self, device_id: DeviceId) -> Subscription {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(device_id)
            .or_default()
            .push((id, tx));
        Subscription {
            hub: self.clone(),
            device_id,
            id,
            events,
        }
    }

    /// Sends `event` to every connection of every listed device.
    pub fn notify<'a>(&self, devices: impl IntoIterator<Item = &'a DeviceId>, event: MailboxEvent) {
        let map = self
            .inner
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for device in devices {
            for (_, tx) in map.get(device).into_iter().flatten() {
                // Full: a wake is already pending. Closed: the connection is
                // going away. Either way there is nothing to do.
                let _ = tx.try_send(event);
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
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                map.remove(&self.device_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_every_connection_of_a_device_and_forgets_closed_ones() {
        let hub = MailboxHub::new();
        let device = DeviceId::new([1; 16]);
        let mut a = hub.subscribe(device);
        let mut b = hub.subscribe(device);
        hub.notify([&device], MailboxEvent::Wake);
        assert_eq!(a.events.recv().await, Some(MailboxEvent::Wake));
        assert_eq!(b.events.recv().await, Some(MailboxEvent::Wake));
        drop(a);
        assert!(hub.is_connected(&device));
        drop(b);
        assert!(!hub.is_connected(&device));

        let mut c = hub.subscribe(device);
        hub.disconnect(&device);
        assert_eq!(c.events.recv().await, None);
        drop(c);
        assert!(!hub.is_connected(&device));
    }
}
