//! One account in the page: a task that owns its [`Client`], listens for
//! deliveries while the page is idle, and runs the page's requests in
//! between.
//!
//! The CLI's `sotto chat` works the same way (`Client::listen_until` a
//! command arrives, run it, listen again). JavaScript may call at any time,
//! also while a request is still awaiting the server, so requests queue as
//! [`Job`]s and the task runs one at a time: the client's SQLite and MLS
//! state never see two operations interleave.
//!
//! Plain Rust on every target: the page spawns [`Messenger::start`]'s
//! future with `spawn_local`, native tests with a tokio `LocalSet`.

use futures_util::future::LocalBoxFuture;
use sotto_client::{Client, ClientError, HistoryEntry, clock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Something the page should show.
#[derive(Debug)]
pub enum Event {
    /// A new history line: a message, or a system line (member added, key
    /// changed, a warning).
    Entry(Box<HistoryEntry>),
    /// The connection to the server failed; the task tries again after
    /// `retry_in`. Requests still run meanwhile (and fail if they need the
    /// server).
    Offline { reason: String, retry_in: Duration },
}

/// A request of the page, run by the task with the client to itself.
type Job = Box<dyn for<'a> FnOnce(&'a mut Client) -> LocalBoxFuture<'a, ()>>;

/// The first wait after the connection failed, doubled after each further
/// failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The page's handle on the task: cheap to clone, one per JavaScript object.
#[derive(Clone, Debug)]
pub struct Messenger {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Messenger {
    /// The handle, and the task to spawn. The task ends when every handle
    /// is dropped.
    pub fn start(
        client: Client,
        on_event: impl FnMut(Event) + 'static,
    ) -> (Self, impl Future<Output = ()>) {
        let (jobs, queue) = mpsc::unbounded_channel();
        (Self { jobs }, serve(client, queue, on_event))
    }

    /// Runs `op` on the client once the requests before it have run, and
    /// returns its result.
    pub async fn run<T: 'static>(
        &self,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, ClientError> + 'static,
    ) -> Result<T, ClientError> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                // The page may have stopped waiting: nothing to tell then.
                let _ = reply.send(op(client).await);
            })
        });
        let stopped = || ClientError::Usage("this account was closed in this page".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// The task: catch up, then listen until a request arrives, run it, listen
/// again; after a failed connection, wait (running requests meanwhile) and
/// reconnect.
async fn serve(
    mut client: Client,
    mut queue: mpsc::UnboundedReceiver<Job>,
    mut on_event: impl FnMut(Event),
) {
    let mut retry = FIRST_RETRY;
    let mut caught_up = false;
    loop {
        let listened = if caught_up {
            client
                .listen_until(
                    |entry| on_event(Event::Entry(Box::new(entry.clone()))),
                    queue.recv(),
                )
                .await
        } else {
            // What queued while the page was closed, and this account's own
            // log (a device no device of it added raises a warning line).
            match client.sync().await {
                Ok(entries) => {
                    entries
                        .into_iter()
                        .for_each(|entry| on_event(Event::Entry(Box::new(entry))));
                    caught_up = true;
                    // Connected again: the next failure waits from the start.
                    retry = FIRST_RETRY;
                    continue;
                }
                Err(e) => Err(e),
            }
        };
        match listened {
            Ok(Some(job)) => {
                retry = FIRST_RETRY;
                job(&mut client).await;
            }
            // Every handle is gone: the page closed the account.
            Ok(None) => break,
            Err(e) => {
                // Catch up again once back: the own-log check too.
                caught_up = false;
                on_event(Event::Offline {
                    reason: e.to_string(),
                    retry_in: retry,
                });
                if !run_jobs_for(&mut client, &mut queue, retry).await {
                    break;
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
    client.disconnect().await;
}

/// Runs whatever the page asks for `wait`; false once every handle is gone.
async fn run_jobs_for(
    client: &mut Client,
    queue: &mut mpsc::UnboundedReceiver<Job>,
    wait: Duration,
) -> bool {
    let until = clock::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(clock::Instant::now());
        if left.is_zero() {
            return true;
        }
        match clock::timeout(left, queue.recv()).await {
            Ok(Some(job)) => job(client).await,
            Ok(None) => return false,
            Err(clock::Elapsed) => return true,
        }
    }
}
