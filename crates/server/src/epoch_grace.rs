//! How long the previous epoch's send capability stays valid after a
//! commit. Messages a member sent just before another member's commit are
//! framed in the old epoch and must still be queued; but a member removed by
//! that commit must not keep posting with the old capability. So the old
//! capability is accepted only for a short window after the commit, tracked
//! here in memory: after a restart every window is closed, and messages from
//! a previous epoch are refused.

use crate::store::GroupId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Entries past this many are swept for expired windows on the next commit.
const SWEEP_ABOVE: usize = 4096;

/// The groups whose previous epoch still accepts sends, and until when.
#[derive(Debug)]
pub(crate) struct EpochGrace {
    window: Duration,
    open_until: Mutex<HashMap<GroupId, Instant>>,
}

impl EpochGrace {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open_until: Mutex::new(HashMap::new()),
        }
    }

    /// A commit was accepted in `group` at `now`: its previous epoch stays
    /// open for the window.
    pub fn commit_accepted(&self, group: &GroupId, now: Instant) {
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
