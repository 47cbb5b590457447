//! The expiry sweep: deletes mailbox entries nobody fetched within the
//! retention period, and the rows of groups nobody used within it
//! ([`MailboxStore::expire`](super::MailboxStore::expire)).

use super::{Expired, Store};
use crate::session::now_seconds;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Deletes expired mailbox entries and dead groups now and then every
/// `interval`, until `stop` fires.
pub(crate) async fn sweep_expired<S: Store>(
    store: Arc<S>,
    retention: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                let cutoff = now_seconds().saturating_sub(retention.as_secs());
                match store.expire(cutoff).await {
                    Ok(Expired { mailbox_entries: 0, groups: 0 }) => {}
                    Ok(Expired { mailbox_entries, groups }) => {
                        tracing::info!(mailbox_entries, groups, "expired mailbox entries and dead groups");
                    }
                    Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
                }
            }
        }
    }
}
