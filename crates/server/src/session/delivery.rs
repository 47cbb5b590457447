//! Pushing a device's mailbox: the window of unacknowledged deliveries,
//! entries from the hub or from storage, acknowledgements, and `SyncDone`.
//!
//! [`DeliveryWindow`] is the bookkeeping alone (no I/O, unit-tested below);
//! the session methods at the bottom do the store reads and writes it asks
//! for.

use super::Session;
use crate::store::{MessageId, NewEntry, Store, StoreError, StoredFrank};
use sotto_proto::v1::{self, response, server_frame};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Which of a device's mailbox entries one connection has pushed and which
/// it still owes, in `seq` order, at most `max_in_flight` unacknowledged.
#[derive(Debug)]
pub(crate) struct DeliveryWindow {
    max_in_flight: usize,
    /// Highest seq pushed on this connection.
    cursor: u64,
    /// Pushed and not yet acknowledged.
    in_flight: BTreeSet<u64>,
    /// The mailbox may hold entries not yet pushed: read it from storage.
    need_fetch: bool,
    /// Request ids of `Sync`s waiting for the mailbox to drain.
    pending_syncs: Vec<u64>,
}

impl DeliveryWindow {
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            max_in_flight,
            cursor: 0,
            in_flight: BTreeSet::new(),
            need_fetch: false,
            pending_syncs: Vec::new(),
        }
    }

    /// The mailbox may hold entries this connection has not pushed (after
    /// login, or when the hub dropped events for it).
    pub fn must_fetch(&mut self) {
        self.need_fetch = true;
    }

    /// A `Sync`: answered once everything in the mailbox is pushed and
    /// acknowledged.
    pub fn sync_requested(&mut self, request_id: u64) {
        self.pending_syncs.push(request_id);
        self.need_fetch = true;
    }

    /// An entry the hub handed over as it was committed: `true` to push it
    /// now. Entries reach a connection in `seq` order, so one at or below
    /// the cursor was already pushed by a fetch; anything else not pushed
    /// now (something older still waits in storage, or the window is full)
    /// is left to the next fetch.
    pub fn offer(&mut self, seq: u64) -> bool {
        if seq <= self.cursor {
            return false;
        }
        if self.need_fetch || self.in_flight.len() >= self.max_in_flight {
            self.need_fetch = true;
            return false;
        }
        self.cursor = seq;
        self.in_flight.insert(seq);
        true
    }

    /// Acknowledged entries leave the window. An acknowledged seq is at or
    /// below the cursor, so no fetch can return it again while its delete
    /// commits.
    pub fn acknowledged(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.in_flight.remove(seq);
        }
    }

    /// A fetch to make now, if one is due: entries after `.0`, at most `.1`.
    pub fn fetch_due(&self) -> Option<(u64, usize)> {
        let room = self.max_in_flight.saturating_sub(self.in_flight.len());
        (self.need_fetch && room > 0).then_some((self.cursor, room))
    }

    /// Records what a fetch of at most `asked` entries returned (their
    /// seqs, in order): they are in flight now.
    pub fn fetched(&mut self, seqs: &[u64], asked: usize) {
        if seqs.len() < asked {
            self.need_fetch = false;
        }
        for &seq in seqs {
            self.cursor = self.cursor.max(seq);
            self.in_flight.insert(seq);
        }
    }

    /// The `Sync`s that can be answered now (everything pushed and
    /// acknowledged), taken out of the window.
    pub fn take_finished_syncs(&mut self) -> Vec<u64> {
        if self.need_fetch || !self.in_flight.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut self.pending_syncs)
    }
}

impl<S: Store> Session<S> {
    /// Pushes an entry straight from the hub when the window allows.
    pub(super) fn push_new(&mut self, entry: &NewEntry) -> Option<v1::ServerFrame> {
        // Dropped events must be noticed before a later entry moves the
        // cursor past them.
        self.on_missed();
        if self.ctx.store.is_shared() {
            // Other nodes commit entries for this device too, which this
            // node's hub never hands over: pushing this one could move the
            // cursor past an earlier one committed elsewhere. Read the
            // mailbox instead (seqs commit in order across nodes: they come
            // from one counter row locked until its transaction commits).
            self.window.must_fetch();
            return None;
        }
        let pushed = self.window.offer(entry.seq).then(|| {
            delivery(
                entry.seq,
                entry.message_id,
                entry.payload.to_vec(),
                entry.frank,
            )
        });
        if pushed.is_some() {
            self.ctx.metrics.deliveries.inc();
        }
        pushed
    }

    /// Pushes an ephemeral message: outside the window and the mailbox
    /// (seq 0, which no entry has; its acknowledgement deletes nothing).
    pub(super) fn push_ephemeral(
        &mut self,
        message_id: MessageId,
        payload: &[u8],
    ) -> v1::ServerFrame {
        self.ctx.metrics.deliveries.inc();
        delivery(0, message_id, payload.to_vec(), None)
    }

    /// Starts committing an acknowledgement; the connection goes on pushing
    /// meanwhile. A second one waits for the first (backpressure).
    pub(super) async fn acknowledge(&mut self, seqs: Vec<u64>) -> Result<(), StoreError> {
        self.finish_ack_write().await?;
        let Some(device) = self.device else {
            return Ok(());
        };
        self.window.acknowledged(&seqs);
        let store = Arc::clone(&self.ctx.store);
        self.ack_write = Some(tokio::spawn(async move { store.ack(device, seqs).await }));
        Ok(())
    }

    /// Waits for the acknowledgement being committed, if any.
    async fn finish_ack_write(&mut self) -> Result<(), StoreError> {
        let Some(write) = self.ack_write.take() else {
            return Ok(());
        };
        write
            .await
            .map_err(|e| StoreError::Backend(format!("acknowledgement task failed: {e}")))?
            .map(|_deleted| ())
    }

    /// Pushes more of the mailbox if the window has room, and answers
    /// `Sync`s once everything is pushed and acknowledged.
    pub async fn pump(&mut self) -> Result<Vec<v1::ServerFrame>, StoreError> {
        let mut frames = Vec::new();
        let Some(device) = self.device else {
            return Ok(frames);
        };
        if let Some((after, room)) = self.window.fetch_due() {
            let entries = self.ctx.store.fetch_mailbox(device, after, room).await?;
            let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
            self.window.fetched(&seqs, room);
            self.ctx
                .metrics
                .deliveries
                .inc_by(u64::try_from(seqs.len()).unwrap_or(u64::MAX));
            frames.extend(
                entries
                    .into_iter()
                    .map(|e| delivery(e.seq, e.message_id, e.payload, e.frank)),
            );
        }
        let finished = self.window.take_finished_syncs();
        if !finished.is_empty() {
            // `SyncDone` promises the acknowledged entries are gone.
            self.finish_ack_write().await?;
            frames.extend(finished.into_iter().map(|request_id| v1::ServerFrame {
                body: Some(server_frame::Body::Response(v1::Response {
                    request_id,
                    result: Some(response::Result::SyncDone(v1::SyncDone {})),
                })),
            }));
        }
        Ok(frames)
    }
}

fn delivery(
    seq: u64,
    message_id: MessageId,
    payload: Vec<u8>,
    frank: Option<StoredFrank>,
) -> v1::ServerFrame {
    v1::ServerFrame {
        body: Some(server_frame::Body::Delivery(v1::Delivery {
            seq,
            message_id: message_id.as_bytes().to_vec(),
            payload,
            frank: frank.map(|f| f.signature.to_vec()).unwrap_or_default(),
            accepted_at_ms: frank.map_or(0, |f| f.accepted_at_ms),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryWindow;

    #[test]
    fn pushes_from_the_hub_in_order_until_the_window_is_full() {
        let mut w = DeliveryWindow::new(2);
        assert!(w.offer(1) && w.offer(2));
        assert!(!w.offer(3), "the window is full");
        // The entry left behind must come from storage, after the cursor.
        w.acknowledged(&[1]);
        assert_eq!(w.fetch_due(), Some((2, 1)));
        assert!(!w.offer(4), "older entries wait in storage: no overtaking");
        w.fetched(&[3], 1);
        assert_eq!(w.fetch_due(), None, "the window is full again");
        w.acknowledged(&[2, 3]);
        assert_eq!(w.fetch_due(), Some((3, 2)));
        w.fetched(&[4], 2);
        assert_eq!(
            w.fetch_due(),
            None,
            "storage had less than asked: caught up"
        );
        assert!(!w.offer(4), "already pushed by the fetch");
        assert!(w.offer(5));
    }

    #[test]
    fn a_sync_finishes_only_when_everything_is_pushed_and_acknowledged() {
        let mut w = DeliveryWindow::new(8);
        w.sync_requested(7);
        assert!(w.take_finished_syncs().is_empty(), "a fetch is due first");
        assert_eq!(w.fetch_due(), Some((0, 8)));
        w.fetched(&[1, 2], 8);
        assert!(w.take_finished_syncs().is_empty(), "two in flight");
        w.acknowledged(&[1]);
        assert!(w.take_finished_syncs().is_empty(), "one in flight");
        w.acknowledged(&[2]);
        assert_eq!(w.take_finished_syncs(), [7]);
        assert!(w.take_finished_syncs().is_empty(), "answered once");
    }

    #[test]
    fn a_full_fetch_means_more_may_wait() {
        let mut w = DeliveryWindow::new(2);
        w.must_fetch();
        w.fetched(&[1, 2], 2);
        w.acknowledged(&[1, 2]);
        assert_eq!(w.fetch_due(), Some((2, 2)), "fetch again after a full page");
    }
}
