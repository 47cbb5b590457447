//! `SendMessage` and `SubmitCommit`: sealed-sender sends, authorised by the
//! group's capability, and the commit sequencer (one commit per epoch).

use super::invite_links::{link_budget_key, link_id};
use super::parse::{capability_hash, envelope, group_framing, group_id};
use super::wire_error::{error, mismatched_framing, not_authorized, sent};
use super::{RequestResult, Session, now_seconds};
use crate::mailbox_hub::MailboxEvent;
use crate::store::{CommitSubmission, Enqueued, GroupId, GroupMessage, Store, StoredFrank};
use crate::transparency_log::now_ms;
use sotto_proto::mls_framing::{ContentType, Framing};
use sotto_proto::v1::{self, ErrorCode};
use std::sync::Arc;
use tokio::time::Instant;

impl<S: Store> Session<S> {
    pub(super) async fn send_message(&mut self, send: v1::SendMessage) -> RequestResult {
        let token_hash = capability_hash(&send.send_token).ok_or_else(|| {
            error(
                ErrorCode::NotAuthorized,
                "a send needs the group's 32-byte send capability",
            )
        })?;
        self.ctx
            .rate_limits
            .charge_send(&mut self.buckets, self.address, Some(token_hash))?;
        let envelope = envelope(
            &send.message_id,
            &send.recipients,
            send.payload,
            1,
            "message",
        )?;
        let group_id = group_id(&send.group_id)?;
        // A leave is a proposal; every other proposal and commit goes
        // through the sequencer.
        let epoch = group_framing(
            &envelope.payload,
            &group_id,
            &[ContentType::Application, ContentType::Proposal],
            "message",
        )?;
        let mut envelope = envelope;
        if !send.ephemeral {
            envelope.frank = self.frank(&envelope.payload, &group_id);
        }
        let message = GroupMessage {
            previous_epoch_open: self.ctx.epoch_grace.is_open(&group_id, Instant::now()),
            group_id,
            token_hash,
            epoch,
            envelope,
            now: now_seconds(),
            expires_at: (send.expires_at != 0).then_some(send.expires_at),
        };
        if send.ephemeral {
            // Checked like any send, then handed to whichever recipient
            // connections are open; the answer does not say which were.
            let recipients = message.envelope.recipients.clone();
            let event = MailboxEvent::Ephemeral {
                message_id: message.envelope.message_id,
                payload: Arc::from(message.envelope.payload.as_slice()),
            };
            self.ctx.store.check_send(message).await?;
            self.ctx.hub.notify(&recipients, &event);
            return sent(&[]);
        }
        // The store hands new entries to the hub once committed.
        let queued = if send.more_recipients {
            self.ctx.store.enqueue_more(message).await?
        } else {
            self.ctx.store.enqueue(message).await?
        };
        if queued.outcome == Enqueued::Queued {
            self.ctx.metrics.messages.inc();
        }
        sent(&queued.skipped)
    }

    /// The frank of an application message whose authenticated data holds
    /// a franking tag (`sotto_core::franking`): signed over the tag, the
    /// group and the acceptance time (to the minute, the precision stored),
    /// and nothing about the sender, whom a sealed-sender send never names.
    fn frank(&self, payload: &[u8], group_id: &GroupId) -> Option<StoredFrank> {
        let tag = sotto_proto::mls_framing::application_aad(payload)
            .and_then(sotto_core::franking::tag_from_aad)?;
        let accepted_at_ms = now_ms() / 60_000 * 60_000;
        Some(StoredFrank {
            signature: self
                .ctx
                .log
                .franking()
                .frank(&tag, group_id.as_bytes(), accepted_at_ms),
            accepted_at_ms,
        })
    }

    pub(super) async fn submit_commit(&mut self, commit: v1::SubmitCommit) -> RequestResult {
        let token_hash = if commit.send_token.is_empty() {
            None
        } else {
            Some(capability_hash(&commit.send_token).ok_or_else(not_authorized)?)
        };
        // A joiner's external commit (docs/PUBLIC_GROUPS.md): the link
        // authorises it, and only it; every other commit is a member's.
        let invite_link = if commit.invite_link_id.is_empty() {
            None
        } else {
            let link_id = link_id(&commit.invite_link_id)?;
            if token_hash.is_some() || !commit.welcome.is_empty() || commit.more_recipients {
                return Err(error(
                    ErrorCode::InvalidRequest,
                    "a commit by invite link carries no send capability, no Welcome, and fits \
                     in one frame",
                ));
            }
            if !sotto_proto::mls_framing::is_new_member_commit(&commit.commit) {
                return Err(mismatched_framing(
                    "a commit by invite link must be an external commit (a PublicMessage from a \
                     new member)"
                        .to_owned(),
                ));
            }
            self.ctx.rate_limits.charge_send(
                &mut self.buckets,
                self.address,
                Some(link_budget_key(&link_id)),
            )?;
            Some(link_id)
        };
        if invite_link.is_none() && sotto_proto::mls_framing::is_new_member_commit(&commit.commit) {
            return Err(mismatched_framing(
                "an external commit must name the invite link that admits it".to_owned(),
            ));
        }
        let next_token_hash: [u8; 32] =
            commit.next_token_hash.as_slice().try_into().map_err(|_| {
                error(
                    ErrorCode::InvalidRequest,
                    "a commit must carry the 32-byte hash of the next epoch's send capability",
                )
            })?;
        self.ctx
            .rate_limits
            .charge_send(&mut self.buckets, self.address, token_hash)?;
        if commit.epoch == 0 && !commit.more_recipients {
            self.ctx
                .rate_limits
                .charge_group_creation(&mut self.buckets, self.address)?;
        }
        let group_id = group_id(&commit.group_id)?;
        let commit_envelope = envelope(
            &commit.message_id,
            &commit.recipients,
            commit.commit,
            0,
            "commit",
        )?;
        let framed_epoch = group_framing(
            &commit_envelope.payload,
            &group_id,
            &[ContentType::Commit],
            "commit",
        )?;
        if framed_epoch != commit.epoch {
            return Err(mismatched_framing(format!(
                "the commit is framed for epoch {framed_epoch} but submitted for epoch {}",
                commit.epoch
            )));
        }
        // At epoch 0 the creator is the only member: nobody else can be
        // sent the commit (otherwise anyone could deliver anything to
        // anyone by "creating" a group).
        if commit.epoch == 0 && !commit_envelope.recipients.is_empty() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the commit that creates a group has no recipients; new members get the Welcome",
            ));
        }
        let welcome = if commit.welcome.is_empty() {
            None
        } else {
            let welcome = envelope(
                &commit.welcome_message_id,
                &commit.welcome_recipients,
                commit.welcome,
                1,
                "welcome",
            )?;
            if Framing::parse(&welcome.payload) != Ok(Framing::Welcome) {
                return Err(mismatched_framing(
                    "the welcome is not an MLS Welcome".to_owned(),
                ));
            }
            Some(welcome)
        };
        let submission = CommitSubmission {
            group_id,
            epoch: commit.epoch,
            token_hash,
            next_token_hash,
            commit: commit_envelope,
            welcome,
            now: now_seconds(),
            invite_link,
        };
        if commit.more_recipients {
            let more = self.ctx.store.submit_commit_more(submission).await?;
            return sent(&more.skipped);
        }
        let group_id = submission.group_id.clone();
        let accepted = self.ctx.store.submit_commit(submission).await?;
        if accepted.outcome == Enqueued::Queued {
            self.ctx.metrics.commits.inc();
            self.ctx
                .epoch_grace
                .commit_accepted(&group_id, Instant::now());
        }
        sent(&accepted.skipped)
    }
}
