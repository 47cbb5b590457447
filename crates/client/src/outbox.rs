//! The outbox: every outgoing frame is queued in the same transaction as the
//! MLS state change that produced it, then submitted on the anonymous
//! connection; a frame a crash left behind is resent with the same message
//! id, which the server de-duplicates.
//!
//! A frame is built once as a typed request, encoded once for the disk, and
//! handed to the connection as that value: the disk copy is decoded only to
//! resend after a restart.

use crate::ClientError;
use crate::inbound::{conversation_of, record_roster};
use crate::profile::{Profile, random_id};
use crate::session::Anonymous;
use crate::store::{self, HistoryEntry, OutboxEntry};
use rusqlite::Connection;
use sotto_core::group::{self, PendingCommit};
use sotto_core::identity::DeviceId;
use sotto_proto::Message as _;
use sotto_proto::v1::{ClientFrame, ErrorCode, SendMessage, SubmitCommit, client_frame, response};

/// What an outgoing frame asks of the server.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    /// An application message or proposal, authorised by the group's send
    /// capability.
    Send(SendMessage),
    /// A commit for the group's current epoch, with the Welcome for the
    /// devices it adds.
    Commit(SubmitCommit),
}

/// A frame waiting for the server's verdict.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub message_id: Vec<u8>,
    pub group_id: Vec<u8>,
    pub request: Request,
}

impl Outgoing {
    /// An application message or proposal for the group's `recipients`,
    /// authorised by the group's send capability `send_token`.
    pub(crate) fn message(
        message_id: Vec<u8>,
        group_id: &[u8],
        recipients: &[DeviceId],
        payload: Vec<u8>,
        send_token: Vec<u8>,
    ) -> Self {
        Self {
            message_id: message_id.clone(),
            group_id: group_id.to_vec(),
            request: Request::Send(SendMessage {
                message_id,
                group_id: group_id.to_vec(),
                recipients: recipients.iter().map(|d| d.as_bytes().to_vec()).collect(),
                payload,
                send_token,
                more_recipients: false,
                expires_at: 0,
                ephemeral: false,
            }),
        }
    }

    /// Disappearing messages: tells the server it may delete the message
    /// at `expires_at` (Unix seconds, the coarse bucket of
    /// `sotto_core::disappearing::server_bucket`) though undelivered.
    pub(crate) fn expiring(mut self, expires_at: u64) -> Self {
        if let Request::Send(send) = &mut self.request {
            send.expires_at = expires_at;
        }
        self
    }

    /// Marks the message ephemeral (a typing indicator): the server hands
    /// it to the recipients' open connections and stores it nowhere.
    pub(crate) fn ephemeral(mut self) -> Self {
        if let Request::Send(send) = &mut self.request {
            send.ephemeral = true;
        }
        self
    }

    /// A commit this device built, with its Welcome if it adds devices.
    pub(crate) fn commit(group_id: &[u8], pending: PendingCommit) -> Self {
        let message_id = random_id();
        let ids = |devices: &[DeviceId]| -> Vec<Vec<u8>> {
            devices.iter().map(|d| d.as_bytes().to_vec()).collect()
        };
        Self {
            message_id: message_id.clone(),
            group_id: group_id.to_vec(),
            request: Request::Commit(SubmitCommit {
                message_id,
                group_id: group_id.to_vec(),
                epoch: pending.epoch,
                recipients: ids(&pending.recipients),
                commit: pending.commit,
                welcome_message_id: random_id(),
                welcome_recipients: ids(&pending.welcome_recipients),
                welcome: pending.welcome.unwrap_or_default(),
                send_token: pending.send_token,
                next_token_hash: pending.next_token_hash,
                more_recipients: false,
                invite_link_id: Vec::new(),
            }),
        }
    }

    fn is_commit(&self) -> bool {
        matches!(self.request, Request::Commit(_))
    }

    fn body(&self) -> client_frame::Body {
        match &self.request {
            Request::Send(m) => client_frame::Body::SendMessage(m.clone()),
            Request::Commit(c) => client_frame::Body::SubmitCommit(c.clone()),
        }
    }

    /// The frames that carry this request: one, unless it names more than
    /// `per_frame` recipients (a group above the server's cap). Then every
    /// frame holds the same ids and bytes, and those after the first are
    /// marked `more_recipients` and name the rest, `per_frame` at a time
    /// (for a commit, its recipients first, then the Welcome's).
    fn frames(&self, per_frame: usize) -> Vec<client_frame::Body> {
        let per_frame = per_frame.max(1);
        match &self.request {
            Request::Send(m) if m.recipients.len() > per_frame => m
                .recipients
                .chunks(per_frame)
                .enumerate()
                .map(|(i, recipients)| {
                    client_frame::Body::SendMessage(SendMessage {
                        recipients: recipients.to_vec(),
                        more_recipients: i > 0,
                        ..m.clone()
                    })
                })
                .collect(),
            Request::Commit(c)
                if c.recipients.len() > per_frame || c.welcome_recipients.len() > per_frame =>
            {
                let commit_parts = c
                    .recipients
                    .chunks(per_frame)
                    .map(|recipients| SubmitCommit {
                        recipients: recipients.to_vec(),
                        welcome_recipients: Vec::new(),
                        welcome: Vec::new(),
                        ..c.clone()
                    });
                let welcome_parts =
                    c.welcome_recipients
                        .chunks(per_frame)
                        .map(|welcome_recipients| SubmitCommit {
                            recipients: Vec::new(),
                            welcome_recipients: welcome_recipients.to_vec(),
                            ..c.clone()
                        });
                // The first frame is the one the sequencer accepts; the
                // Welcome goes out only in frames after the commit's own.
                commit_parts
                    .chain(welcome_parts)
                    .enumerate()
                    .map(|(i, part)| {
                        client_frame::Body::SubmitCommit(SubmitCommit {
                            more_recipients: i > 0,
                            ..part
                        })
                    })
                    .collect()
            }
            _ => vec![self.body()],
        }
    }

    /// Queues the frame in `tx`, the transaction holding the state change
    /// that produced it.
    pub(crate) fn queue(&self, tx: &Connection) -> Result<(), ClientError> {
        Ok(store::push_outbox(tx, &self.row())?)
    }

    /// The frame as the outbox table holds it: an encoded `ClientFrame`
    /// (request id 0), as profiles have always stored it.
    fn row(&self) -> OutboxEntry {
        let frame = ClientFrame {
            request_id: 0,
            body: Some(self.body()),
        }
        .encode_to_vec();
        OutboxEntry {
            message_id: self.message_id.clone(),
            group_id: self.group_id.clone(),
            is_commit: self.is_commit(),
            frame,
        }
    }

    /// A frame read back from the outbox table.
    pub(crate) fn from_row(row: OutboxEntry) -> Result<Self, ClientError> {
        let body = sotto_proto::decode_client_frame(&row.frame)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .body;
        let request = match body {
            Some(client_frame::Body::SendMessage(m)) => Request::Send(m),
            Some(client_frame::Body::SubmitCommit(c)) => Request::Commit(c),
            Some(_) => return Err(ClientError::Protocol("unexpected outbox frame".into())),
            None => return Err(ClientError::Protocol("empty outbox frame".into())),
        };
        Ok(Self {
            message_id: row.message_id,
            group_id: row.group_id,
            request,
        })
    }
}

/// The verdict on a commit this device submitted.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Accepted and merged.
    Accepted,
    /// Another member's commit for the same epoch won; ours was dropped.
    Rejected { current_epoch: u64 },
}

/// Submits queued frames and applies the server's verdicts. Holds the
/// history lines this device caused itself (its own accepted commits),
/// handed out with the next batch of received lines.
#[derive(Debug)]
pub(crate) struct Outbox {
    own_lines: Vec<HistoryEntry>,
    /// Recipients the server skipped since this `Outbox` was made.
    skipped_recipients: u64,
    /// How many recipients one frame names: the server's cap (lowered by
    /// tests, so a small group exercises the split).
    pub(crate) recipients_per_frame: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            own_lines: Vec::new(),
            skipped_recipients: 0,
            recipients_per_frame: sotto_proto::MAX_RECIPIENTS,
        }
    }
}

impl Outbox {
    /// The lines this device's own accepted commits produced since the last
    /// call.
    pub(crate) fn take_lines(&mut self) -> Vec<HistoryEntry> {
        std::mem::take(&mut self.own_lines)
    }

    /// How many recipients the server skipped (full mailboxes) in the
    /// sends and commits this `Outbox` submitted.
    pub(crate) fn skipped_recipients(&self) -> u64 {
        self.skipped_recipients
    }

    /// A send the server stored for everyone but devices with a full
    /// mailbox. Not a failure, and nothing to resend: the server queued a
    /// missed-messages notice for each, which tells that device what it
    /// lost (and, for a commit, that it must be added again). Logged and
    /// counted only.
    fn note_skipped(&mut self, verdict: &Result<response::Result, ClientError>, what: &str) {
        let Ok(response::Result::Done(done)) = verdict else {
            return;
        };
        if done.skipped_recipients.is_empty() {
            return;
        }
        let count = u64::try_from(done.skipped_recipients.len()).unwrap_or(u64::MAX);
        self.skipped_recipients = self.skipped_recipients.saturating_add(count);
        let devices: Vec<String> = done.skipped_recipients.iter().map(hex::encode).collect();
        tracing::warn!(
            skipped = count,
            devices = %devices.join(","),
            "the server stored this {what} for every recipient but those whose mailbox is full; \
             they will be told what they missed"
        );
    }

    /// Sends a queued frame and applies the server's verdict: a commit is
    /// merged when accepted and cleared when another won; a refused
    /// application message is taken out of history.
    pub(crate) async fn submit(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
        outgoing: &Outgoing,
    ) -> Result<CommitOutcome, ClientError> {
        let what = if outgoing.is_commit() {
            "commit"
        } else {
            "message"
        };
        let mut frames = outgoing.frames(self.recipients_per_frame).into_iter();
        let first = frames.next().unwrap_or_else(|| outgoing.body());
        let verdict = anonymous.send(&outgoing.group_id, first).await;
        if matches!(verdict, Err(ClientError::Network(_))) {
            // Still in the outbox: resent, with the same id, on reconnect.
            return verdict.map(|_| CommitOutcome::Accepted);
        }
        self.note_skipped(&verdict, what);
        if verdict.is_ok() {
            for more in frames {
                let more = anonymous.send(&outgoing.group_id, more).await;
                match more {
                    // Still in the outbox: every frame is resent on
                    // reconnect, the first answered as a duplicate.
                    Err(e @ ClientError::Network(_)) => return Err(e),
                    Err(e) => tracing::warn!(
                        "some recipients of this {what} were not sent it (the rest were): {e}"
                    ),
                    Ok(_) => self.note_skipped(&more, what),
                }
            }
        }
        // `Err(())`: refused for another reason, reported as the verdict.
        let (outcome, lines) = profile.in_transaction(|provider, tx| {
            store::remove_outbox(tx, &outgoing.message_id)?;
            let mut g = if outgoing.is_commit() {
                Some(group::load(provider, &outgoing.group_id)?)
            } else {
                None
            };
            Ok(match (&verdict, g.as_mut()) {
                (Ok(_), Some(g)) => {
                    let change = group::merge_pending(provider, g)?;
                    let mut lines = Vec::new();
                    if let Some(row) = store::group(tx, &outgoing.group_id)?
                        && row.conversation_id.is_some()
                    {
                        let conversation = conversation_of(tx, &row)?;
                        lines = record_roster(
                            tx,
                            &profile.account.member_id(),
                            &conversation,
                            &outgoing.message_id,
                            "you",
                            &change,
                        )?;
                    }
                    (Ok(CommitOutcome::Accepted), lines)
                }
                (Ok(_), None) => (Ok(CommitOutcome::Accepted), Vec::new()),
                (Err(e), Some(g)) => {
                    group::clear_pending(provider, g)?;
                    let outcome = match e {
                        ClientError::Server(err) if err.code == ErrorCode::StaleEpoch as i32 => {
                            Ok(CommitOutcome::Rejected {
                                current_epoch: err.current_epoch,
                            })
                        }
                        _ => Err(()),
                    };
                    (outcome, Vec::new())
                }
                (Err(_), None) => {
                    store::delete_message(tx, &outgoing.message_id)?;
                    (Err(()), Vec::new())
                }
            })
        })?;
        self.own_lines.extend(lines);
        match outcome {
            Ok(outcome) => Ok(outcome),
            Err(()) => verdict.map(|_| CommitOutcome::Accepted),
        }
    }

    /// Resends whatever a crash left in the outbox.
    pub(crate) async fn flush(
        &mut self,
        profile: &mut Profile,
        anonymous: &mut Anonymous<'_>,
    ) -> Result<(), ClientError> {
        for row in store::outbox(&profile.db)? {
            let sent = match Outgoing::from_row(row) {
                Ok(outgoing) => self.submit(profile, anonymous, &outgoing).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(_) => {}
                Err(e @ ClientError::Network(_)) => return Err(e),
                Err(e) => tracing::warn!("a message from before a restart could not be sent: {e}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_proto::v1::Sync;

    fn device(n: u8) -> DeviceId {
        DeviceId::from_slice(&[n; 16]).unwrap()
    }

    /// What the outbox wrote before frames were typed: profiles written
    /// then must still be read, and new rows must look the same.
    fn old_encoding(body: client_frame::Body) -> Vec<u8> {
        ClientFrame {
            request_id: 0,
            body: Some(body),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_message_is_stored_as_before_and_reads_back() {
        let outgoing = Outgoing::message(
            vec![1; 16],
            &[2; 16],
            &[device(3), device(4)],
            b"ciphertext".to_vec(),
            b"token".to_vec(),
        );
        let row = outgoing.row();
        let Request::Send(message) = &outgoing.request else {
            panic!("a message is a send");
        };
        assert_eq!(
            row.frame,
            old_encoding(client_frame::Body::SendMessage(message.clone()))
        );
        assert!(!row.is_commit);
        assert_eq!(message.recipients, vec![vec![3; 16], vec![4; 16]]);
        let read = Outgoing::from_row(row).unwrap();
        assert_eq!(read.message_id, vec![1; 16]);
        assert_eq!(read.group_id, vec![2; 16]);
        assert!(matches!(read.request, Request::Send(m) if m == *message));
    }

    #[test]
    fn a_commit_is_stored_as_before_and_reads_back() {
        let outgoing = Outgoing::commit(
            &[2; 16],
            PendingCommit {
                epoch: 7,
                commit: b"commit".to_vec(),
                welcome: Some(b"welcome".to_vec()),
                recipients: vec![device(3)],
                welcome_recipients: vec![device(5)],
                send_token: b"token".to_vec(),
                next_token_hash: b"next".to_vec(),
            },
        );
        let row = outgoing.row();
        let Request::Commit(commit) = &outgoing.request else {
            panic!("a commit is a commit");
        };
        assert_eq!(commit.message_id, outgoing.message_id);
        assert_eq!(commit.epoch, 7);
        assert_eq!(commit.welcome_recipients, vec![vec![5; 16]]);
        assert_eq!(
            row.frame,
            old_encoding(client_frame::Body::SubmitCommit(commit.clone()))
        );
        assert!(row.is_commit);
        let read = Outgoing::from_row(row).unwrap();
        assert!(matches!(read.request, Request::Commit(c) if c == *commit));
    }

    #[test]
    fn a_row_that_is_no_send_or_commit_is_refused() {
        for frame in [old_encoding(client_frame::Body::Sync(Sync {})), Vec::new()] {
            let row = OutboxEntry {
                message_id: vec![1; 16],
                group_id: vec![2; 16],
                is_commit: false,
                frame,
            };
            assert!(matches!(
                Outgoing::from_row(row),
                Err(ClientError::Protocol(_))
            ));
        }
    }
}
