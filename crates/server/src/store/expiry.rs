//! The expiry sweep: deletes mailbox entries nobody fetched within the
//! retention period, and the rows of groups nobody used within it
//! ([`MailboxStore::expire`](super::MailboxStore::expire)), and, far more
//! often, disappearing messages past the expiry their sender gave
//! ([`MailboxStore::expire_disappearing`](super::MailboxStore::expire_disappearing)).

use super::{Expired, Store};
use crate::session::now_seconds;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often disappearing messages past their expiry are deleted. Senders
/// round expiries up to at least 10 s (`sotto_core::disappearing`), so an
/// undelivered message outlives its timer by at most that plus this. The
/// query reads an index of the few rows with an expiry: cheap.
pub(crate) const DISAPPEARING_SWEEP: Duration = Duration::from_secs(5);

/// Deletes expired mailbox entries and dead groups now and then every
/// `interval`, until `stop` fires.
pub(crate) async fn sweep_expired<S: Store>(
    store: Arc<S>,
    retention: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut disappearing = tokio::time::interval(DISAPPEARING_SWEEP);
    disappearing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = disappearing.tick() => {
                match store.expire_disappearing(now_seconds()).await {
                    Ok(0) => {}
                    Ok(mailbox_entries) => {
                        tracing::debug!(mailbox_entries, "deleted expired disappearing messages");
                    }
                    Err(e) => tracing::error!(error = %e, "disappearing-messages sweep failed"),
                }
            }
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
