//! Watching this account: at each sync (and `device list`) the device reads
//! its own account's log and compares it with what it knows its account's
//! devices did (see `sotto_transparency::review_own_account`). A device,
//! removal or identity rotation that none of them made raises an alert that
//! is stored and shown by every command until the user acknowledges it.
//!
//! What a device knows: the entries it made itself, the history the
//! linking device handed it, and entries vouched for (with a device key)
//! by a device it trusts. A profile made before this existed starts by
//! trusting the log as it finds it, once.

use crate::ClientError;
use crate::keys::look_up_directory;
use crate::profile::{Profile, now_ms};
use crate::session::{Session, look_up};
use crate::store::{self, ConversationKind, EntryKind, HistoryEntry};
use sotto_proto::Message as _;
use sotto_proto::v1::{GetAccountLog, LogEntry, client_frame, response};
use sotto_transparency::{Finding, OwnAccountReview, OwnChange};
use std::collections::BTreeMap;

/// Reads this account's log on the logged-in connection and reviews it.
/// Returns the alerts raised now (as warning lines) and the review, or no
/// review when the log does not verify (which is itself an alert). Errors
/// only for what may pass (the network) or local storage.
pub(crate) async fn check_own_account(
    s: &mut Session<'_>,
) -> Result<(Vec<HistoryEntry>, Option<OwnAccountReview>), ClientError> {
    let own = s.profile.account.username.clone();
    // The directory is published from the log, and a lookup is never
    // older than a log read before it; but the account may change between
    // the two reads. So a disagreement is asked again once, with a fresh
    // log, before it is called an alert.
    let mut retried = false;
    let (log, directory_check) = loop {
        let log = read_own_log(s, &own).await?;
        let verified = s
            .key_log
            .accept_account_log(s.profile, &mut s.anonymous, &own, &log, false)
            .await;
        if let Err(ClientError::KeyLog(e)) = verified {
            let text = format!(
                "WARNING: your own account's key log does not add up: {e}. The server may be \
                 changing or hiding your account's devices."
            );
            let raised = raise(s.profile, &format!("unverifiable:{e}"), None, &text)?;
            return Ok((raised, None));
        }
        let state = verified?;
        // The log may leave out the account's newest entries; the directory
        // proves its latest version. Asked on the logged-in connection.
        let check = match look_up_directory(&mut s.anonymous, Some(&mut *s.connection), &own).await
        {
            Ok(lookup) => {
                let auditors = crate::store::trusted_auditors(&s.profile.db)?;
                s.key_log
                    .check_auditors(&auditors, &mut s.anonymous, &lookup)
                    .await
                    .map(|()| lookup)
            }
            Err(e) => Err(e),
        }
        .and_then(|lookup| {
            s.key_log
                .check_lookup(&s.profile.db, &own, &lookup, &state, now_ms())
        });
        match check {
            Err(ClientError::KeyLog(e)) if !retried => {
                tracing::debug!(error = %e, "own account: the directory and the log disagree; reading both again");
                retried = true;
            }
            check => break (log, check),
        }
    };
    let directory_alert = match directory_check {
        Err(ClientError::KeyLog(e)) => raise(
            s.profile,
            &format!("directory:{e}"),
            None,
            &format!(
                "WARNING: your own account's key directory entry does not add up: {e}. Your \
                 contacts may be shown other devices than your key log lists."
            ),
        )?,
        other => {
            other?;
            Vec::new()
        }
    };
    let entries: Vec<LogEntry> = log.entries.iter().filter_map(|p| p.entry.clone()).collect();
    let mut known = BTreeMap::new();
    for (seq, bytes) in store::own_events(&s.profile.db)? {
        let entry = LogEntry::decode(bytes.as_slice())
            .map_err(|e| ClientError::Protocol(format!("stored own log entry: {e}")))?;
        known.insert(seq, entry);
    }
    if known.is_empty() {
        // A profile from before this watch: trust the log as it is now.
        tracing::info!("starting to watch this account from its current log");
        record_entries(&s.profile.db, &entries)?;
        known = known_from(&entries);
    }
    let (mut raised, review) = review(s.profile, &entries, &known)?;
    raised.splice(0..0, directory_alert);
    Ok((raised, review))
}

/// This account's log, read on the logged-in connection.
async fn read_own_log(
    s: &mut Session<'_>,
    own: &sotto_core::identity::Username,
) -> Result<sotto_proto::v1::AccountLog, ClientError> {
    let request = GetAccountLog {
        username: own.to_string(),
    };
    match look_up(
        &mut s.anonymous,
        s.connection,
        client_frame::Body::GetAccountLog(request),
    )
    .await?
    {
        response::Result::AccountLog(log) => Ok(log),
        _ => Err(ClientError::Protocol("expected an account log".into())),
    }
}

fn review(
    profile: &Profile,
    entries: &[LogEntry],
    known: &BTreeMap<u64, LogEntry>,
) -> Result<(Vec<HistoryEntry>, Option<OwnAccountReview>), ClientError> {
    let own = profile.account.username.as_str();
    let review = sotto_transparency::review_own_account(own, entries, known)
        .map_err(|e| ClientError::KeyLog(format!("your account's key log: {e}")))?;
    for (seq, entry) in &review.newly_explained {
        store::record_own_event(&profile.db, *seq, &entry.encode_to_vec())?;
    }
    let mut raised = Vec::new();
    for finding in &review.findings {
        let (key, device, text) = describe(finding);
        raised.extend(raise(
            profile,
            &key,
            device.as_ref().map(|d| d.as_slice()),
            &text,
        )?);
    }
    Ok((raised, Some(review)))
}

fn known_from(entries: &[LogEntry]) -> BTreeMap<u64, LogEntry> {
    entries
        .iter()
        .filter_map(|e| {
            let seq = sotto_transparency::open_entry(e).ok()?.account_seq;
            Some((seq, e.clone()))
        })
        .collect()
}

/// Records entries of this account (already checked) as made by its
/// devices.
pub(crate) fn record_entries(
    db: &rusqlite::Connection,
    entries: &[LogEntry],
) -> Result<(), ClientError> {
    for (seq, entry) in known_from(entries) {
        store::record_own_event(db, seq, &entry.encode_to_vec())?;
    }
    Ok(())
}

/// The entries this device knows its account's devices made, oldest first:
/// what a linked device is handed.
pub(crate) fn known_entries(db: &rusqlite::Connection) -> Result<Vec<LogEntry>, ClientError> {
    store::own_events(db)?
        .into_iter()
        .map(|(_, bytes)| {
            LogEntry::decode(bytes.as_slice())
                .map_err(|e| ClientError::Protocol(format!("stored own log entry: {e}")))
        })
        .collect()
}

/// The alert's key (one alert per key), the device it is about, and its text.
fn describe(finding: &Finding) -> (String, Option<[u8; 16]>, String) {
    let what = |change: &OwnChange| match change {
        OwnChange::IdentityRegistered => ("your identity was registered".to_owned(), None),
        OwnChange::DeviceAdded(id) => (format!("device {} was added", hex::encode(id)), Some(*id)),
        OwnChange::DeviceRemoved(id) => {
            (format!("device {} was removed", hex::encode(id)), Some(*id))
        }
        OwnChange::IdentityRotated(key) => (
            format!("your identity key was rotated to {}", hex::encode(key)),
            None,
        ),
    };
    match finding {
        Finding::Unexplained {
            account_seq,
            change,
            author,
        } => {
            let (what, device) = what(change);
            let claimed = author
                .map(|a| {
                    format!(
                        " (it names device {} as its author, which is not one of your devices)",
                        hex::encode(a)
                    )
                })
                .unwrap_or_default();
            let advice = match change {
                OwnChange::DeviceAdded(id) => format!(
                    " If it is not yours, remove it: `sotto device remove {}`.",
                    hex::encode(id)
                ),
                _ => String::new(),
            };
            (
                format!(
                    "unexplained:{account_seq}:{}",
                    device.map(hex::encode).unwrap_or_default()
                ),
                device,
                format!(
                    "WARNING: {what} (entry {account_seq} of your account's key log), but none of \
                     your devices did it{claimed}. Someone holding your identity key, or the \
                     server, changed your account.{advice} `sotto warnings --ack` hides this warning."
                ),
            )
        }
        Finding::Replaced {
            account_seq,
            change,
        } => {
            let (what, device) = what(change);
            (
                format!("replaced:{account_seq}"),
                device,
                format!(
                    "WARNING: the key log shows that {what} as entry {account_seq} of your account, \
                     but one of your devices made another change there: the server rewrote your \
                     account's history."
                ),
            )
        }
        Finding::Hidden { account_seq } => (
            format!("hidden:{account_seq}"),
            None,
            format!(
                "WARNING: the key log no longer shows entry {account_seq} of your account, which one \
                 of your devices made: the server is hiding changes to your account (a removed \
                 device may still be listed to your contacts)."
            ),
        ),
    }
}

/// Stores an alert once; returns it as a warning line if it is new.
fn raise(
    profile: &Profile,
    key: &str,
    device_id: Option<&[u8]>,
    text: &str,
) -> Result<Vec<HistoryEntry>, ClientError> {
    let now = now_ms();
    if !store::raise_account_alert(&profile.db, key, device_id, text, now)? {
        return Ok(Vec::new());
    }
    Ok(vec![HistoryEntry {
        id: hex::encode(format!("account:{key}")),
        conversation: String::new(),
        conversation_kind: ConversationKind::Direct,
        sender: "system".into(),
        kind: EntryKind::System,
        text: text.to_owned(),
        sent_at: now,
        chat: Default::default(),
    }])
}
