//! The expiry sweep: deletes mailbox entries nobody fetched within the
//! retention period.

use super::Store;
use crate::session::now_seconds;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Deletes expired mailbox entries now and then every `interval`, until
/// `stop` fires.
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
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "expired mailbox entries"),
                    Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
                }
            }
        }
    }
}
