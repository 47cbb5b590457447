//! The writer task: commits queued operations in batches, one transaction
//! (and one WAL flush) per batch, each operation in its own SAVEPOINT.

use super::*;

/// Most write operations committed together in one transaction.
const MAX_BATCH: usize = 512;

/// Begins a batch's transaction: acknowledged means committed and flushed
/// (whatever the server's or the role's default), and the transaction
/// first takes the write-order lock, a transaction-level advisory lock
/// (class `0x5077_0004`, second key the schema's name hashed, as for the
/// log's lock) held until it commits or rolls back.
///
/// Why one lock before any row: a batch holds the row locks of all its
/// operations until it commits, and the rows are taken in whatever order
/// the operations came. Two nodes' batches could then wait for each other
/// — one holding the `mailbox_seq` row (a send) and wanting a group's row
/// (a commit), the other holding that group's row (its own commit for
/// the same epoch) and wanting `mailbox_seq` — a deadlock PostgreSQL
/// breaks only after `deadlock_timeout` (1 s) by failing one operation
/// (SQLSTATE 40P01), which its client sees as a server error. Retrying
/// that operation in the same transaction would not help (its batch still
/// holds the rows the other waits for). With every batch taking this lock
/// first, no batch waits for a row while holding one another batch needs:
/// write transactions across nodes run one at a time, as the SQLite
/// writer's do in one process. Each node still commits many operations
/// per transaction; nearly every batch takes `mailbox_seq` anyway, so the
/// lock costs little beyond what that row already serialises.
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL synchronous_commit = on; \
     SELECT pg_advisory_xact_lock(1349976068, hashtext(current_schema()))";

/// The open transaction a batch shares. An operation runs its statements on
/// it; mailbox entries it adds are told to the [`EntryListener`] once the
/// batch commits.
pub(super) struct Tx {
    client: deadpool_postgres::Client,
    /// Mailbox entries added by the open transaction.
    entries: Mutex<Vec<NewEntry>>,
    /// A rollback to a savepoint failed: the transaction is aborted and
    /// must not be reported as committed.
    broken: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for Tx {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl Tx {
    /// Records a mailbox entry to announce once the batch commits.
    pub(super) fn announce(&self, entry: NewEntry) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
    }

    fn entry_count(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn forget_entries_from(&self, mark: usize) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .truncate(mark);
    }
}

/// Sends an operation's reply once its batch committed (or failed to).
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// One queued operation: runs on the batch's transaction (or learns why
/// there is none) and returns how to answer once the batch is done.
type Job = Box<dyn FnOnce(Result<Arc<Tx>, StoreError>) -> BoxFuture<'static, Finish> + Send>;

pub(super) enum WriterMsg {
    Job(Job),
    /// A job that runs in a transaction of its own (see
    /// [`PostgresStore::write_alone`]).
    Alone(Job),
    /// Finish what is queued, then stop.
    Close,
}

impl PostgresStore {
    /// Queues a write for the writer task; resolves once it is committed.
    /// `f` runs inside a SAVEPOINT of the batch's transaction.
    pub(super) fn write<T, E, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(Arc<Tx>) -> BoxFuture<'static, Result<T, E>> + Send + 'static,
    {
        self.queue(f, false)
    }

    /// Like [`PostgresStore::write`], in a transaction of its own: for the
    /// operations that take the log append lock ([`super::log::lock_log`])
    /// first. Batched with other writes, one could hold that lock while a
    /// later write of its batch waits for a row another node's batch holds
    /// (the mailbox seq counter, a group's row), while that batch waits
    /// for the lock: a deadlock PostgreSQL breaks only after a second by
    /// failing one of them. Alone, it waits for nothing but the lock.
    pub(super) fn write_alone<T, E, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(Arc<Tx>) -> BoxFuture<'static, Result<T, E>> + Send + 'static,
    {
        self.queue(f, true)
    }

    fn queue<T, E, F>(
        &self,
        f: F,
        alone: bool,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(Arc<Tx>) -> BoxFuture<'static, Result<T, E>> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |tx| {
            Box::pin(async move {
                let result = match tx {
                    Ok(tx) => in_savepoint(tx, f).await,
                    Err(e) => Err(E::from(e)),
                };
                let finish: Finish = Box::new(move |committed| {
                    let reply = match (result, committed) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Ok(_), Err(e)) => Err(E::from(e)),
                        (Err(e), _) => Err(e),
                    };
                    // The requester may have gone away; nothing to do then.
                    let _ = reply_tx.send(reply);
                });
                finish
            })
        });
        let message = if alone {
            WriterMsg::Alone(job)
        } else {
            WriterMsg::Job(job)
        };
        let queued = self.inner.writer_tx.send(message).is_ok();
        async move {
            if !queued {
                return Err(E::from(StoreError::Closed));
            }
            reply_rx
                .await
                .unwrap_or_else(|_| Err(E::from(StoreError::Closed)))
        }
    }
}

/// Runs `f` inside a SAVEPOINT, rolling back its changes if it fails (in
/// PostgreSQL a failed statement aborts the transaction up to the last
/// savepoint, so every operation needs one).
async fn in_savepoint<T, E, F>(tx: Arc<Tx>, f: F) -> Result<T, E>
where
    E: From<StoreError>,
    F: FnOnce(Arc<Tx>) -> BoxFuture<'static, Result<T, E>>,
{
    let mark = tx.entry_count();
    if let Err(e) = tx.batch_execute("SAVEPOINT op").await {
        tx.broken.store(true, std::sync::atomic::Ordering::Relaxed);
        return Err(E::from(StoreError::from(e)));
    }
    let result = match f(Arc::clone(&tx)).await {
        Ok(value) => match tx.batch_execute("RELEASE op").await {
            Ok(()) => return Ok(value),
            // A statement failed though the operation went on (it must
            // not count as done).
            Err(e) => Err(E::from(StoreError::from(e))),
        },
        Err(e) => Err(e),
    };
    if tx
        .batch_execute("ROLLBACK TO op; RELEASE op")
        .await
        .is_err()
    {
        tx.broken.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    tx.forget_entries_from(mark);
    result
}

pub(super) async fn run_writer(
    pool: Pool,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    listener: Arc<OnceLock<EntryListener>>,
    metrics: WriterMetrics,
) {
    // A job taken from the queue that must run after the batch before it.
    let mut held: Option<WriterMsg> = None;
    loop {
        let first = match held.take() {
            Some(message) => message,
            None => match rx.recv().await {
                Some(message) => message,
                None => break,
            },
        };
        let mut batch = Vec::new();
        let mut closing = false;
        match first {
            WriterMsg::Job(job) => batch.push(job),
            WriterMsg::Alone(job) => {
                run_batch(&pool, vec![job], &listener, &metrics).await;
                continue;
            }
            WriterMsg::Close => closing = true,
        }
        while !closing && batch.len() <= MAX_BATCH {
            match rx.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(alone @ WriterMsg::Alone(_)) => {
                    held = Some(alone);
                    break;
                }
                Ok(WriterMsg::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(&pool, batch, &listener, &metrics).await;
        }
        if closing {
            break;
        }
    }
    tracing::debug!("database writer stopped");
}

/// Answers every job of a batch that could not run with `e`.
async fn fail_all(batch: Vec<Job>, e: &StoreError) {
    for job in batch {
        job(Err(e.clone())).await(Err(e.clone()));
    }
}

async fn run_batch(
    pool: &Pool,
    batch: Vec<Job>,
    listener: &OnceLock<EntryListener>,
    metrics: &WriterMetrics,
) {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            let e = StoreError::Backend(format!("no PostgreSQL connection for the writer: {e}"));
            tracing::error!(error = %e, "cannot begin write transaction");
            fail_all(batch, &e).await;
            return;
        }
    };
    if let Err(e) = client.batch_execute(BEGIN_BATCH).await {
        let e = StoreError::from(e);
        tracing::error!(error = %e, "cannot begin write transaction");
        let _ = client.batch_execute("ROLLBACK").await;
        fail_all(batch, &e).await;
        return;
    }
    let tx = Arc::new(Tx {
        client,
        entries: Mutex::new(Vec::new()),
        broken: std::sync::atomic::AtomicBool::new(false),
    });
    let mut finishers: Vec<Finish> = Vec::with_capacity(batch.len());
    for job in batch {
        if tx.broken.load(std::sync::atomic::Ordering::Relaxed) {
            finishers.push(
                job(Err(StoreError::Backend(
                    "the write transaction was aborted by an earlier failure in its batch".into(),
                )))
                .await,
            );
        } else {
            finishers.push(job(Ok(Arc::clone(&tx))).await);
        }
    }
    #[allow(clippy::cast_precision_loss)] // a batch is at most MAX_BATCH + 1 jobs
    metrics.batch_size.observe(finishers.len() as f64);
    let commit_started = std::time::Instant::now();
    // An aborted transaction's COMMIT reports success but rolls back: never
    // send it then.
    let committed = if tx.broken.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = tx.batch_execute("ROLLBACK").await;
        Err(StoreError::Backend(
            "the write transaction was aborted and rolled back".into(),
        ))
    } else {
        tx.batch_execute("COMMIT").await.map_err(StoreError::from)
    };
    metrics
        .commit_seconds
        .observe(commit_started.elapsed().as_secs_f64());
    let entries = std::mem::take(
        &mut *tx
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    match &committed {
        Ok(()) => {
            if let Some(listener) = listener.get()
                && !entries.is_empty()
            {
                listener(entries);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "write transaction failed to commit");
            let _ = tx.batch_execute("ROLLBACK").await;
        }
    }
    for finish in finishers {
        finish(committed.clone());
    }
}
