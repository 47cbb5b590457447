//! Pushing a device's mailbox: the window of unacknowledged deliveries,
//! entries from the hub or from storage, acknowledgements, and `SyncDone`.
//!
//! [`DeliveryWindow`] is the bookkeeping alone (no I/O, unit-tested below);
//! the session methods at the bottom do the store reads and writes it asks
//! for.

use super::Session;
use crate::store::{DeviceId, MessageId, NewEntry, Store, StoreError, StoredFrank};
use prost::Message as _;
use sotto_proto::v1::{self, response, server_frame};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::task::{JoinError, JoinHandle};

/// Most acknowledged seqs a connection keeps waiting while its previous
/// acknowledgement commits; past this it waits for that commit. (A client
/// has at most `max_in_flight` entries to acknowledge at a time; more seqs
/// than that are duplicates or junk.)
const MAX_WAITING_ACKS: usize = 4096;

/// How an acknowledgement write ended: deleted entries, a store error, or
/// the task failed.
pub(crate) type AckWriteResult = Result<Result<u64, StoreError>, JoinError>;

/// A connection's acknowledgements on their way to storage: at most one
/// write in flight; what is acknowledged meanwhile waits and goes, all
/// together, in the next one.
#[derive(Debug, Default)]
pub(crate) struct AckWriter {
    /// The acknowledgement being committed.
    in_flight: Option<JoinHandle<Result<u64, StoreError>>>,
    /// Acknowledged seqs for the next write.
    waiting: Vec<u64>,
}

impl AckWriter {
    /// A write is in flight and not finished.
    fn is_writing(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// Resolves when the write in flight finishes while seqs wait for it
    /// (hand the result to `Session::ack_written`, which starts the next);
    /// never otherwise.
    pub async fn written(&mut self) -> AckWriteResult {
        match self.in_flight.as_mut() {
            Some(write) if !self.waiting.is_empty() => write.await,
            _ => std::future::pending().await,
        }
    }
}

fn ack_write_result(result: AckWriteResult) -> Result<(), StoreError> {
    result
        .map_err(|e| StoreError::Backend(format!("acknowledgement task failed: {e}")))?
        .map(|_deleted| ())
}

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
    /// Pushes an entry straight from the hub when the window allows
    /// (encoded: see [`encode_delivery`]).
    pub(super) fn push_new(&mut self, entry: &NewEntry) -> Option<Vec<u8>> {
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
            encode_delivery(
                entry.seq,
                &entry.message_id,
                &entry.payload,
                entry.frank.as_ref(),
            )
        });
        if pushed.is_some() {
            self.ctx.metrics.deliveries.inc();
        }
        pushed
    }

    /// Pushes an ephemeral message: outside the window and the mailbox
    /// (seq 0, which no entry has; its acknowledgement deletes nothing).
    pub(super) fn push_ephemeral(&mut self, message_id: MessageId, payload: &[u8]) -> Vec<u8> {
        self.ctx.metrics.deliveries.inc();
        encode_delivery(0, &message_id, payload, None)
    }

    /// Takes an acknowledgement. It is committed by a task of its own
    /// while the connection goes on; acknowledgements that arrive while one
    /// commits wait and go together in the next store call (coalesced: one
    /// write job and one transaction for all of them, however many `Ack`
    /// frames they came in). Past [`MAX_WAITING_ACKS`] waiting seqs the
    /// connection waits for the commit (backpressure).
    pub(super) async fn acknowledge(&mut self, seqs: Vec<u64>) -> Result<(), StoreError> {
        let Some(device) = self.device else {
            return Ok(());
        };
        self.window.acknowledged(&seqs);
        self.acks.waiting.extend(seqs);
        if self.acks.is_writing() && self.acks.waiting.len() < MAX_WAITING_ACKS {
            return Ok(());
        }
        self.finish_ack_write().await?;
        self.start_ack_write(device);
        Ok(())
    }

    /// Commits what waits, if anything and nothing is being committed.
    fn start_ack_write(&mut self, device: DeviceId) {
        if self.acks.waiting.is_empty() || self.acks.in_flight.is_some() {
            return;
        }
        let mut seqs = std::mem::take(&mut self.acks.waiting);
        seqs.sort_unstable();
        seqs.dedup();
        let store = Arc::clone(&self.ctx.store);
        self.acks.in_flight = Some(tokio::spawn(async move { store.ack(device, seqs).await }));
    }

    /// Waits for the acknowledgement being committed, if any.
    async fn finish_ack_write(&mut self) -> Result<(), StoreError> {
        let Some(write) = self.acks.in_flight.take() else {
            return Ok(());
        };
        ack_write_result(write.await)
    }

    /// The write [`AckWriter::written`] waited for has finished: commits
    /// what waited for it, or returns its error (the connection then
    /// closes; its unacknowledged entries are delivered again on the next).
    pub fn ack_written(&mut self, result: AckWriteResult) -> Result<(), StoreError> {
        self.acks.in_flight = None;
        ack_write_result(result)?;
        if let Some(device) = self.device {
            self.start_ack_write(device);
        }
        Ok(())
    }

    /// Commits every acknowledgement taken so far and waits for it.
    async fn commit_acks(&mut self) -> Result<(), StoreError> {
        self.finish_ack_write().await?;
        if let Some(device) = self.device {
            self.start_ack_write(device);
        }
        self.finish_ack_write().await
    }

    /// The connection is closing: acknowledgements still waiting are
    /// committed by a task that outlives it (as is the one in flight). If
    /// that fails (the server is stopping, say), their entries are
    /// delivered again on the next connection, and the client drops the
    /// duplicates by message id.
    pub fn close(&mut self) {
        if let Some(device) = self.device {
            // Detached: dropping a tokio `JoinHandle` does not cancel its
            // task.
            self.acks.in_flight = None;
            self.start_ack_write(device);
        }
    }

    /// Pushes more of the mailbox if the window has room, and answers
    /// `Sync`s once everything is pushed and acknowledged. Returns encoded
    /// server frames.
    pub async fn pump(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
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
                    .iter()
                    .map(|e| encode_delivery(e.seq, &e.message_id, &e.payload, e.frank.as_ref())),
            );
        }
        let finished = self.window.take_finished_syncs();
        if !finished.is_empty() {
            // `SyncDone` promises the acknowledged entries are gone.
            self.commit_acks().await?;
            frames.extend(finished.into_iter().map(|request_id| {
                v1::ServerFrame {
                    body: Some(server_frame::Body::Response(v1::Response {
                        request_id,
                        result: Some(response::Result::SyncDone(v1::SyncDone {})),
                    })),
                }
                .encode_to_vec()
            }));
        }
        Ok(frames)
    }
}

/// `ServerFrame { body: Delivery { .. } }`, encoded byte for byte as prost
/// encodes it, but written straight from the (shared) payload: one
/// allocation and one copy per recipient. Building the prost message first
/// copied the payload (and message id and frank) into it, then encoded it
/// into a second buffer. The frame cannot be shared between recipients
/// whole: its `seq` is each device's own.
pub(crate) fn encode_delivery(
    seq: u64,
    message_id: &MessageId,
    payload: &[u8],
    frank: Option<&StoredFrank>,
) -> Vec<u8> {
    use prost::encoding::{encode_varint, encoded_len_varint};
    // Field keys: (field number << 3) | wire type (0 varint, 2 bytes).
    const FRAME_DELIVERY: u8 = 3 << 3 | 2;
    const SEQ: u8 = 1 << 3;
    const MESSAGE_ID: u8 = 2 << 3 | 2;
    const PAYLOAD: u8 = 3 << 3 | 2;
    const FRANK: u8 = 4 << 3 | 2;
    const ACCEPTED_AT_MS: u8 = 5 << 3;
    fn len_u64(n: usize) -> u64 {
        u64::try_from(n).unwrap_or(u64::MAX)
    }
    // proto3: fields at their default value are not written.
    let varint_len = |v: u64| if v == 0 { 0 } else { 1 + encoded_len_varint(v) };
    let bytes_len = |b: &[u8]| {
        if b.is_empty() {
            0
        } else {
            1 + encoded_len_varint(len_u64(b.len())) + b.len()
        }
    };
    let put_bytes = |out: &mut Vec<u8>, key: u8, b: &[u8]| {
        if !b.is_empty() {
            out.push(key);
            encode_varint(len_u64(b.len()), out);
            out.extend_from_slice(b);
        }
    };
    let id = message_id.as_bytes().as_slice();
    let signature = frank.map_or(&[][..], |f| &f.signature[..]);
    let accepted_at_ms = frank.map_or(0, |f| f.accepted_at_ms);
    let body = varint_len(seq)
        + bytes_len(id)
        + bytes_len(payload)
        + bytes_len(signature)
        + varint_len(accepted_at_ms);
    let mut out = Vec::with_capacity(1 + encoded_len_varint(len_u64(body)) + body);
    out.push(FRAME_DELIVERY);
    encode_varint(len_u64(body), &mut out);
    if seq != 0 {
        out.push(SEQ);
        encode_varint(seq, &mut out);
    }
    put_bytes(&mut out, MESSAGE_ID, id);
    put_bytes(&mut out, PAYLOAD, payload);
    put_bytes(&mut out, FRANK, signature);
    if accepted_at_ms != 0 {
        out.push(ACCEPTED_AT_MS);
        encode_varint(accepted_at_ms, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{DeliveryWindow, encode_delivery};
    use crate::store::{MessageId, StoredFrank};
    use prost::Message as _;
    use sotto_proto::v1::{self, server_frame};

    #[test]
    fn a_delivery_is_encoded_exactly_as_prost_encodes_it() {
        let id = MessageId::new([7; 16]);
        let frank = StoredFrank {
            signature: [9; 64],
            accepted_at_ms: 1_700_000_040_000,
        };
        let big = vec![0xa5; 70_000];
        for seq in [0, 1, 127, 128, u64::MAX] {
            for payload in [&b""[..], b"x", &big] {
                for frank in [None, Some(&frank)] {
                    let expected = v1::ServerFrame {
                        body: Some(server_frame::Body::Delivery(v1::Delivery {
                            seq,
                            message_id: id.as_bytes().to_vec(),
                            payload: payload.to_vec(),
                            frank: frank.map(|f| f.signature.to_vec()).unwrap_or_default(),
                            accepted_at_ms: frank.map_or(0, |f| f.accepted_at_ms),
                        })),
                    }
                    .encode_to_vec();
                    let ours = encode_delivery(seq, &id, payload, frank);
                    assert_eq!(ours, expected, "seq {seq}, {} bytes", payload.len());
                    assert_eq!(ours.capacity(), ours.len(), "sized exactly");
                }
            }
        }
    }

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
