//! Keeping the database file small: deleted ciphertext is overwritten
//! (`secure_delete`), and the pages freed by delivery go back to the file
//! system (incremental auto-vacuum, stepped by the writer), so the file
//! shrinks back after a burst instead of keeping its largest size. Chosen
//! over a periodic `VACUUM` by measurement (bench/OPTIMISATIONS.md, "Disk
//! space after a burst"): a `VACUUM` rewrites the whole database, stalling
//! every write for as long, while a step moves at most
//! [`RECLAIM_STEP_PAGES`].

use std::time::{Duration, Instant};

use super::*;

/// How the database treats deleted bytes. The server uses the default
/// (both on); benchmarks turn them off to measure what they cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceTuning {
    /// `PRAGMA secure_delete=ON`: deleted rows (delivered ciphertext) are
    /// overwritten with zeros instead of lingering in free pages.
    pub secure_delete: bool,
    /// Incremental auto-vacuum: a database in another mode is converted
    /// once at startup (one `VACUUM`), and the writer gives free pages
    /// back in steps. Off: the file keeps its largest size.
    pub reclaim: bool,
}

impl Default for SpaceTuning {
    fn default() -> Self {
        Self {
            secure_delete: true,
            reclaim: true,
        }
    }
}

/// `PRAGMA auto_vacuum` value of incremental mode.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;
/// How often, at most, the writer looks at the free-page count.
pub(super) const RECLAIM_INTERVAL: Duration = Duration::from_millis(500);
/// Most pages one step gives back (16 MiB of 4 KiB pages), bounding how
/// long it holds up writes (bench/OPTIMISATIONS.md).
const RECLAIM_STEP_PAGES: i64 = 4096;

/// Applies `tuning` to the writer connection before the schema is
/// migrated. With `convert`, a database not yet in incremental
/// auto-vacuum mode is switched to it, which for an existing database
/// takes one `VACUUM` (a rewrite of the file, needing its size again in
/// free disk space, logged).
pub(super) fn tune(
    conn: &Connection,
    tuning: SpaceTuning,
    convert: bool,
) -> Result<(), StoreError> {
    let secure = if tuning.secure_delete { "ON" } else { "OFF" };
    conn.execute_batch(&format!("PRAGMA secure_delete={secure};"))?;
    // The write-ahead log is truncated back to this after a burst, instead
    // of keeping its largest size.
    conn.execute_batch("PRAGMA journal_size_limit=16777216;")?;
    if !(tuning.reclaim && convert) {
        return Ok(());
    }
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == AUTO_VACUUM_INCREMENTAL {
        return Ok(());
    }
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == AUTO_VACUUM_INCREMENTAL {
        // A new database: the mode took without a rewrite.
        return Ok(());
    }
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        // A new database whose header WAL mode already wrote: nothing to
        // rewrite.
        conn.execute_batch("VACUUM;")?;
        return Ok(());
    }
    tracing::info!("switching the database to incremental auto-vacuum: rewriting it once (VACUUM)");
    let started = Instant::now();
    conn.execute_batch("VACUUM;")?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "database rewritten"
    );
    Ok(())
}

/// The writer's side of reclaiming: every [`RECLAIM_INTERVAL`] at most,
/// if more than a sixteenth of the file is free pages, one step of
/// `incremental_vacuum` and a passive checkpoint (which is what truncates
/// the file in WAL mode).
pub(super) struct Reclaimer {
    enabled: bool,
    last: Instant,
    /// Step again when due even if no write comes: writes since the last
    /// step may have freed pages, or free pages were left.
    pending: bool,
    /// The last step's checkpoint did not finish (busy readers).
    unfinished_checkpoint: bool,
}

impl Reclaimer {
    pub(super) fn new(conn: &Connection) -> Self {
        let mode: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap_or(0);
        Self {
            enabled: mode == AUTO_VACUUM_INCREMENTAL,
            last: Instant::now(),
            pending: false,
            unfinished_checkpoint: false,
        }
    }

    /// How long the writer may wait for work before [`Reclaimer::step`] is
    /// due again; `None`: nothing to reclaim, wait for work.
    pub(super) fn wait(&self) -> Option<Duration> {
        self.pending
            .then(|| RECLAIM_INTERVAL.saturating_sub(self.last.elapsed()))
    }

    /// Runs one step if one is due. Outside any transaction.
    pub(super) fn step(&mut self, conn: &Connection) {
        if !self.enabled {
            return;
        }
        if self.last.elapsed() < RECLAIM_INTERVAL {
            // Not due yet: look again when it is, even if no write comes
            // (the writes just made may have freed pages).
            self.pending = true;
            return;
        }
        self.last = Instant::now();
        match reclaim_step(conn, self.unfinished_checkpoint) {
            Ok((free_left, unfinished)) => {
                self.pending = free_left || unfinished;
                self.unfinished_checkpoint = unfinished;
            }
            Err(e) => {
                self.pending = false;
                self.unfinished_checkpoint = false;
                tracing::warn!(error = %e, "could not give free database pages back");
            }
        }
    }
}

/// One step: gives free pages back if more than the threshold are free,
/// and then (or if the last step left work) checkpoints, which is what
/// truncates the file in WAL mode. Returns whether work remains: free
/// pages past the threshold, and whether busy readers kept the checkpoint
/// from finishing.
fn reclaim_step(conn: &Connection, unfinished: bool) -> Result<(bool, bool), StoreError> {
    let free = |conn: &Connection| -> Result<(i64, i64), StoreError> {
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        Ok((free, pages))
    };
    let (free_pages, pages) = free(conn)?;
    let vacuum = free_pages > threshold(pages);
    if vacuum {
        // Each step of the statement frees one page: run it to the end.
        let mut statement =
            conn.prepare(&format!("PRAGMA incremental_vacuum({RECLAIM_STEP_PAGES})"))?;
        let mut rows = statement.query([])?;
        while rows.next()?.is_some() {}
    }
    if !(vacuum || unfinished) {
        return Ok((false, false));
    }
    let (log_frames, checkpointed): (i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })?;
    let (free_pages, pages) = free(conn)?;
    Ok((free_pages > threshold(pages), checkpointed < log_frames))
}

/// Free pages tolerated: a sixteenth of the file (reused by the next
/// writes without growing it), at least 16.
fn threshold(pages: i64) -> i64 {
    (pages / 16).max(16)
}
