//! Time on every target the client runs on: tokio's timers and the system
//! clock on an operating system, the browser's timers and `Date.now()` in
//! WebAssembly (where `std::time::SystemTime::now()` panics and tokio has no
//! timer driver).

use std::future::Future;
use std::time::Duration;

/// A wait ran out before the awaited thing finished.
#[derive(Debug)]
pub struct Elapsed;

#[cfg(not(target_arch = "wasm32"))]
pub use std::time::{Instant, SystemTime, UNIX_EPOCH};
#[cfg(target_arch = "wasm32")]
pub use web_time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits for `what`, or gives up after `limit`. `what` is boxed at once:
/// the client's futures are large (a whole link or request exchange), and
/// moved by value through a few calls in a debug build they overflow a
/// test thread's 2 MiB stack.
#[cfg(not(target_arch = "wasm32"))]
pub fn timeout<F: Future>(
    limit: Duration,
    what: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    use futures_util::FutureExt as _;
    tokio::time::timeout(limit, Box::pin(what)).map(|done| done.map_err(|_| Elapsed))
}

/// Waits for `what`, or gives up after `limit`; `what` is boxed at once, as
/// in the native one.
#[cfg(target_arch = "wasm32")]
pub fn timeout<F: Future>(
    limit: Duration,
    what: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    use futures_util::future::{Either, select};
    let what = Box::pin(what);
    async move {
        match select(what, gloo_timers::future::sleep(limit)).await {
            Either::Left((output, _)) => Ok(output),
            Either::Right(_) => Err(Elapsed),
        }
    }
}

/// Sleeps for `duration`.
#[cfg(not(target_arch = "wasm32"))]
pub fn sleep(duration: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(duration)
}

/// Sleeps for `duration`.
#[cfg(target_arch = "wasm32")]
pub async fn sleep(duration: Duration) {
    gloo_timers::future::sleep(duration).await
}
