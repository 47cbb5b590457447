//! The single writer: one thread owns the only write connection and
//! commits queued operations in batches (each in its own SAVEPOINT, one
//! fsync per batch); reads run on pooled read-only connections.

use super::*;

/// Most write operations committed together in one transaction.
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;
pub(super) const MAX_BATCH: usize = 512;

/// The transaction a batch of write operations shares, and where a
/// failure to begin or commit it is reported.
pub(super) type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Finish + Send>;
/// Sends an operation's reply once its batch committed (or failed to).
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

thread_local! {
    /// Mailbox entries added by the writer's open transaction; told to the
    /// [`EntryListener`] once it commits, dropped if it does not.
    pub(super) static UNCOMMITTED: RefCell<Vec<NewEntry>> = const { RefCell::new(Vec::new()) };
}

pub(super) enum WriterMsg {
    Job(Job),
    /// Finish what is queued, then stop.
    Close,
}

impl SqliteStore {
    /// Runs a read on a pooled read-only connection.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&inner.path, inner.read_only, inner.max_pages)?,
            };
            let result = f(&conn);
            let mut readers = inner
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if readers.len() < MAX_IDLE_READERS {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// Queues a write for the writer thread; resolves once it is committed.
    pub(super) fn write<T, E, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => in_savepoint(conn, f),
                Err(e) => Err(E::from(e)),
            };
            Box::new(move |committed| {
                let reply = match (result, committed) {
                    (Ok(value), Ok(())) => Ok(value),
                    (Ok(_), Err(e)) => Err(E::from(e)),
                    (Err(e), _) => Err(e),
                };
                // The requester may have gone away; nothing to do then.
                let _ = reply_tx.send(reply);
            })
        });
        let queued = self.inner.writer_tx.send(WriterMsg::Job(job)).is_ok();
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

/// Opens a connection for the read pool: query-only, or, for a read-only
/// store, on the file opened read-only (which must exist).
pub(super) fn open_reader(
    path: &Path,
    read_only: bool,
    max_pages: Option<i64>,
) -> Result<Connection, StoreError> {
    let conn = if read_only {
        Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?
    } else {
        Connection::open(path)?
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    stable_plans(&conn)?;
    conn.execute_batch("PRAGMA query_only=ON;")?;
    if let Some(pages) = max_pages {
        set_max_pages(&conn, pages)?;
    }
    Ok(conn)
}

/// Runs `f` inside a SAVEPOINT, rolling back its changes if it fails.
pub(super) fn in_savepoint<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    E: From<StoreError>,
    F: FnOnce(&Connection) -> Result<T, E>,
{
    // Cached: one savepoint per request, so parsing them showed in profiles.
    let step = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    let mark = UNCOMMITTED.with_borrow(Vec::len);
    let result = step("SAVEPOINT op").map_err(E::from).and_then(|()| {
        let result = f(conn);
        if result.is_err() {
            step("ROLLBACK TO op")?;
        }
        step("RELEASE op")?;
        result
    });
    if result.is_err() {
        UNCOMMITTED.with_borrow_mut(|entries| entries.truncate(mark));
    }
    result
}

pub(super) fn run_writer(
    conn: &Connection,
    rx: &mpsc::Receiver<WriterMsg>,
    listener: &OnceLock<EntryListener>,
    metrics: &WriterMetrics,
) {
    let mut reclaimer = space::Reclaimer::new(conn);
    loop {
        let received = match reclaimer.wait() {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(wait) => rx.recv_timeout(wait),
        };
        let first = match received {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                reclaimer.step(conn);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = Vec::new();
        let mut closing = false;
        match first {
            WriterMsg::Job(job) => batch.push(job),
            WriterMsg::Close => closing = true,
        }
        while !closing && batch.len() <= MAX_BATCH {
            match rx.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(conn, batch, listener, metrics);
            reclaimer.step(conn);
        }
        if closing {
            break;
        }
    }
    tracing::debug!("database writer stopped");
}

pub(super) fn run_batch(
    conn: &Connection,
    batch: Vec<Job>,
    listener: &OnceLock<EntryListener>,
    metrics: &WriterMetrics,
) {
    UNCOMMITTED.with_borrow_mut(Vec::clear);
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        tracing::error!(error = %e, "cannot begin write transaction");
        for job in batch {
            job(Err(e.clone()))(Err(e.clone()));
        }
        return;
    }
    let mut finishers: Vec<Finish> = Vec::with_capacity(batch.len());
    for job in batch {
        if conn.is_autocommit() {
            // An error (a full disk, say) made SQLite roll the whole
            // transaction back: the remaining jobs must not run outside it,
            // where they would be committed yet answered with an error.
            finishers.push(job(Err(StoreError::Backend(
                "the write transaction was rolled back by an earlier failure in its batch".into(),
            ))));
        } else {
            finishers.push(job(Ok(conn)));
        }
    }
    #[allow(clippy::cast_precision_loss)] // a batch is at most MAX_BATCH + 1 jobs
    metrics.batch_size.observe(finishers.len() as f64);
    let commit_started = std::time::Instant::now();
    let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
    metrics
        .commit_seconds
        .observe(commit_started.elapsed().as_secs_f64());
    let entries = UNCOMMITTED.with_borrow_mut(std::mem::take);
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
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    for finish in finishers {
        finish(committed.clone());
    }
}
