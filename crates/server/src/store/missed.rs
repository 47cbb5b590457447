//! Missed-messages notices, decided the same way on every backend. When a
//! recipient's mailbox is full, what it loses is counted in a notice queued
//! for it instead: one per group, up to [`MAX_MISSED_NOTICES`], then one
//! naming no group that absorbs every later loss (the rules are on
//! [`super::MailboxStore::enqueue`]). The backends only read and write rows.

use sotto_proto::v1::MissedMessages;

use super::{DeviceId, MAX_MISSED_NOTICES, MessageId};

/// What a skipped device missed, for its notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missed {
    /// An application message or proposal.
    Message,
    /// A commit: the device can no longer follow the group.
    Commit,
    /// A Welcome: the device cannot join the group.
    Welcome,
}

/// Counts a loss in `group_id` into a device's queued notices (`(row,
/// notice)`, oldest first): which notice row to update (`None`: queue a
/// new one) and that notice with the loss counted. A commit or Welcome
/// lost needs its own notice unless the group's newest already says one
/// was lost (the device must rejoin either way).
pub(crate) fn count_missed(
    queued: &[(i64, MissedMessages)],
    group_id: &[u8],
    missed: Missed,
) -> (Option<i64>, MissedMessages) {
    let newest = |group: &[u8]| queued.iter().rev().find(|(_, n)| n.group_id == group);
    let absorbs = |n: &MissedMessages| missed == Missed::Message || n.commits > 0 || n.welcomes > 0;
    let (existing, mut notice) = match newest(group_id) {
        Some((row, n)) if absorbs(n) => (Some(*row), n.clone()),
        _ if u64::try_from(queued.len()).unwrap_or(u64::MAX) < MAX_MISSED_NOTICES => (
            None,
            MissedMessages {
                group_id: group_id.to_vec(),
                ..MissedMessages::default()
            },
        ),
        // "Other groups": one notice, naming none, that absorbs everything.
        _ => match newest(&[]) {
            Some((row, n)) => (Some(*row), n.clone()),
            None => (None, MissedMessages::default()),
        },
    };
    match missed {
        Missed::Message => notice.messages = notice.messages.saturating_add(1),
        Missed::Commit => notice.commits = notice.commits.saturating_add(1),
        Missed::Welcome => notice.welcomes = notice.welcomes.saturating_add(1),
    }
    (existing, notice)
}

/// The ids a new notice may take, first choice first: derived from the
/// device and the message it lost (each message is stored once, and skips
/// a device once), so no randomness is needed and both backends hand out
/// the same ids; one already taken (only by a deliberate clash) is hashed
/// again, a few times.
pub(crate) fn notice_ids(device: DeviceId, lost: MessageId) -> impl Iterator<Item = MessageId> {
    use sha2::Digest as _;
    let seed: Vec<u8> = [
        b"sotto missed notice".as_slice(),
        device.as_bytes(),
        lost.as_bytes(),
    ]
    .concat();
    std::iter::successors(Some(sha2::Sha256::digest(&seed)), |d| {
        Some(sha2::Sha256::digest(d))
    })
    .take(8)
    .filter_map(|d| MessageId::from_slice(d.get(..sotto_proto::ID_LEN).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn notice(group: &[u8], messages: u64, commits: u64) -> MissedMessages {
        MissedMessages {
            group_id: group.to_vec(),
            messages,
            commits,
            ..MissedMessages::default()
        }
    }

    #[test]
    fn losses_are_counted_per_group_then_in_one_notice_naming_none() {
        // A message lost in a group with a queued notice: counted there.
        let queued = vec![(1, notice(b"a", 2, 0))];
        let (row, n) = count_missed(&queued, b"a", Missed::Message);
        assert_eq!((row, n.messages), (Some(1), 3));
        // A commit lost where only messages were: a new notice says so.
        let (row, n) = count_missed(&queued, b"a", Missed::Commit);
        assert_eq!(
            (row, n.commits, n.group_id.as_slice()),
            (None, 1, &b"a"[..])
        );
        // A message after a lost commit is absorbed by it.
        let queued = vec![(1, notice(b"a", 0, 1))];
        assert_eq!(count_missed(&queued, b"a", Missed::Message).0, Some(1));
        // At the cap, a new group goes to the notice naming none.
        let mut full: Vec<(i64, MissedMessages)> = (0..MAX_MISSED_NOTICES as i64)
            .map(|i| (i, notice(&i.to_be_bytes(), 1, 0)))
            .collect();
        let (row, n) = count_missed(&full, b"new", Missed::Message);
        assert_eq!((row, n.group_id.is_empty()), (None, true));
        full.push((99, notice(b"", 5, 0)));
        let (row, n) = count_missed(&full, b"other", Missed::Welcome);
        assert_eq!((row, n.messages, n.welcomes), (Some(99), 5, 1));
    }

    #[test]
    fn notice_ids_are_derived_and_distinct() {
        let device = DeviceId::new([1; sotto_proto::ID_LEN]);
        let lost = MessageId::new([2; sotto_proto::ID_LEN]);
        let ids: Vec<MessageId> = notice_ids(device, lost).collect();
        assert_eq!(ids.len(), 8);
        assert_eq!(ids, notice_ids(device, lost).collect::<Vec<_>>());
        let mut unique = ids.clone();
        unique.sort_by_key(|id| *id.as_bytes());
        unique.dedup();
        assert_eq!(unique.len(), 8);
    }
}
