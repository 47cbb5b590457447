//! Which node is the log writer: the one holding a session-level advisory
//! lock on a connection of its own.
//!
//! The log's leaves are appended by whichever node serves the request (in
//! the change's own transaction, under [`super::log::lock_log`]); what only
//! one node may do is publish the key directory's epochs (see
//! `key_directory`), and that node is the holder of this lock. The lock
//! lives as long as the holder's session: when the node dies, PostgreSQL
//! ends the session (at once for a closed socket, after TCP keepalive for a
//! vanished host) and another node's next try, every [`RETRY`], takes it.
//! Correctness does not rest on the lock alone: a node that still believes
//! it holds the lock after losing it can only fail to record an epoch, since
//! each epoch is recorded with a conditional insert.

use std::time::Duration;

use tokio::sync::watch;

use super::*;

/// How often a node that is not the writer tries to become it, and how
/// often the writer checks that its session still lives.
pub const RETRY: Duration = Duration::from_secs(1);

/// The advisory lock class; the second key is the schema's name hashed (as
/// for the log append lock), so schemas in one database elect apart.
const WRITER_LOCK: i32 = 0x5077_0003;

impl PostgresStore {
    /// Starts trying to become the log writer; the receiver says whether
    /// this node is it now. The attempt stops when every receiver is gone.
    pub fn elect_log_writer(&self) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let mut config = self.inner.config.clone();
        // Operators (and tests) find the writer's process in
        // `pg_stat_activity` by this name.
        config.application_name(format!(
            "sotto-server log writer election, pid {}",
            std::process::id()
        ));
        tokio::spawn(campaign(config, tx));
        rx
    }
}

/// Connects, takes the lock when free, holds it while the session lives;
/// starts over when the connection fails.
async fn campaign(config: tokio_postgres::Config, is_writer: watch::Sender<bool>) {
    let target = describe(&config);
    loop {
        if is_writer.is_closed() {
            return;
        }
        let (client, connection) = match config.connect(tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(%target, error = %e, "log writer election: cannot connect");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut driver = tokio::spawn(connection);
        loop {
            let held = *is_writer.borrow();
            let answer = if held {
                // The lock is the session's: a live session still holds it.
                client.query_one("SELECT true", &[]).await
            } else {
                client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                        &[&WRITER_LOCK],
                    )
                    .await
            };
            match answer.and_then(|row| row.try_get::<_, bool>(0)) {
                Ok(now) => {
                    if now && !held {
                        tracing::info!(%target, "this node is now the log writer");
                    }
                    is_writer.send_replace(now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "log writer election: the session failed");
                    break;
                }
            }
            tokio::select! {
                _ = &mut driver => break,
                () = is_writer.closed() => {
                    // Ends the session, releasing the lock.
                    driver.abort();
                    return;
                }
                () = tokio::time::sleep(RETRY) => {}
            }
        }
        if is_writer.send_replace(false) {
            tracing::warn!("log writer lock lost with its session");
        }
        driver.abort();
        tokio::time::sleep(RETRY).await;
    }
}
