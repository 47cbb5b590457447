//! Time on every target the client runs on: tokio's timers and the system
//! clock on an operating system, the browser's timers and `Date.now()` in
//! WebAssembly (where `std::time::SystemTime::now()` panics and tokio has no
//! timer driver).

use std::future::Future;
use std::time::Duration;

/// A wait ran out before the awaited thing finished.
#[derive(Debug)]
pub(crate) struct Elapsed;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use std::time::{Instant, SystemTime, UNIX_EPOCH};
#[cfg(target_arch = "wasm32")]
pub(crate) use web_time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits for `what`, or gives up after `limit`.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn timeout<F: Future>(limit: Duration, what: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(limit, what).await.map_err(|_| Elapsed)
}

/// Waits for `what`, or gives up after `limit`.
#[cfg(target_arch = "wasm32")]
pub(crate) async fn timeout<F: Future>(limit: Duration, what: F) -> Result<F::Output, Elapsed> {
    use futures_util::future::{Either, select};
    let what = std::pin::pin!(what);
    let timer = gloo_timers::future::sleep(limit);
    match select(what, timer).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(_) => Err(Elapsed),
    }
}

/// Sleeps for `duration`.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await
}

/// Sleeps for `duration`.
#[cfg(target_arch = "wasm32")]
pub(crate) async fn sleep(duration: Duration) {
    gloo_timers::future::sleep(duration).await
}
