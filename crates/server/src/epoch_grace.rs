//! How long the previous epoch's send capability stays valid after a
//! commit. Messages a member sent just before another member's commit are
//! framed in the old epoch and must still be queued; but a member removed by
//! that commit must not keep posting with the old capability. So the old
//! capability is accepted only for a short window after the commit, tracked
//! here in memory: after a restart every window is closed, and messages from
//! a previous epoch are refused.
//!
//! With several nodes (`--bus`), the node that accepted a commit tells the
//! others over NATS ([`GraceRelay`]), so a message framed in the old epoch
//! is accepted for the window whichever node it reaches. A node that misses
//! that (NATS down) keeps the window closed: the sender is refused with
//! the current epoch and re-sends in it, as after a restart.

use crate::store::GroupId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Tells the other nodes that this one accepted a commit.
pub(crate) trait GraceRelay: Send + Sync + std::fmt::Debug {
    /// A commit in `group` was accepted here just now.
    fn commit_accepted(&self, group: &GroupId);
}

/// Entries past this many are swept for expired windows on the next commit.
const SWEEP_ABOVE: usize = 4096;

/// The groups whose previous epoch still accepts sends, and until when.
#[derive(Debug)]
pub(crate) struct EpochGrace {
    window: Duration,
    open_until: Mutex<HashMap<GroupId, Instant>>,
    /// The other nodes, when the server runs with `--bus`.
    relay: OnceLock<Arc<dyn GraceRelay>>,
}

impl EpochGrace {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open_until: Mutex::new(HashMap::new()),
            relay: OnceLock::new(),
        }
    }

    /// Tells `relay` of every commit accepted here from now on.
    pub fn set_relay(&self, relay: Arc<dyn GraceRelay>) {
        let _ = self.relay.set(relay);
    }

    /// A commit was accepted in `group` at `now` by this node: its previous
    /// epoch stays open for the window, here and on the other nodes.
    pub fn commit_accepted(&self, group: &GroupId, now: Instant) {
        self.commit_accepted_elsewhere(group, now);
        if let Some(relay) = self.relay.get() {
            relay.commit_accepted(group);
        }
    }

    /// Another node accepted a commit in `group`, and said so at `now`.
    pub fn commit_accepted_elsewhere(&self, group: &GroupId, now: Instant) {
        let Ok(mut open) = self.open_until.lock() else {
            return;
        };
        if open.len() >= SWEEP_ABOVE {
            open.retain(|_, until| *until > now);
        }
        open.insert(group.clone(), now + self.window);
    }

    /// Whether the previous epoch of `group` still accepts sends at `now`.
    pub fn is_open(&self, group: &GroupId, now: Instant) -> bool {
        self.open_until
            .lock()
            .ok()
            .and_then(|open| open.get(group).copied())
            .is_some_and(|until| until > now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_window_opens_with_each_commit_and_closes_after_the_grace_period() {
        let grace = EpochGrace::new(Duration::from_secs(60));
        let group = GroupId::from_slice(b"g").unwrap();
        let t0 = Instant::now();
        assert!(!grace.is_open(&group, t0), "no commit seen: closed");
        grace.commit_accepted(&group, t0);
        assert!(grace.is_open(&group, t0 + Duration::from_secs(59)));
        assert!(!grace.is_open(&group, t0 + Duration::from_secs(60)));
        grace.commit_accepted(&group, t0 + Duration::from_secs(100));
        assert!(grace.is_open(&group, t0 + Duration::from_secs(120)));
        let other = GroupId::from_slice(b"h").unwrap();
        assert!(!grace.is_open(&other, t0));
    }
}
