//! Model-based property test of the `Store`: random sequences of
//! operations run against a real `SqliteStore` (in a temporary directory)
//! and against a plain in-memory model of what the trait documents. After
//! every step the answers must agree, and so must everything observable:
//! counts, every mailbox, every KeyPackage pool, every group's epoch and
//! the key log.
//!
//! What it pins down: a one-time KeyPackage is claimed at most once (the
//! last-resort one is kept); exactly one commit per epoch, with the current
//! capability, and a failed commit changes nothing; enqueue is idempotent
//! on the message id while the payload is stored; acknowledging deletes
//! only the device's own entries; a payload lives exactly as long as some
//! mailbox entry refers to it (acks, expiry and device removal), and a
//! disappearing message no longer than its expiry;
//! mailbox sequence numbers only grow; a device whose mailbox is at the
//! cap ([`MAILBOX_CAP`]) is skipped, never refused, and gets a
//! missed-messages notice that does not count against the cap and that
//! later losses of the same kind update in place.
//!
//! `PROPTEST_CASES` changes the number of sequences (default 256).

// Test code: failing loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::sample::Index;
use sotto_proto::v1::MissedMessages;
use sotto_server::store::PostgresStore;
use sotto_server::store::{
    AddDeviceError, ClaimedKeyPackage, CommitAccepted, CommitError, CommitSubmission, DeviceId,
    DeviceRemoval, EnqueueError, Enqueued, Envelope, Expired, GroupId, GroupMessage,
    KeyPackageBundle, KeyPackageStatus, MailboxEntry, MessageId, NewAccount, NewDevice, Queued,
    RegisterError, RemoveDeviceError, SignedDevice, SqliteStore, Store, StoreStats, day_of,
};
use sotto_testkit::postgres::TestDatabase;

const USERS: u8 = 3;
const DEVICES: u8 = 6;
const GROUPS: u8 = 3;
const MESSAGE_IDS: u8 = 14;
const TOKENS: u8 = 4;
const DAY: u64 = 86_400;
/// Larger than any mailbox a sequence can build.
const ALL: usize = 10_000;
/// The mailbox cap the store runs with: small, so sequences fill it.
const MAILBOX_CAP: usize = 1;

fn username(u: u8) -> String {
    format!("user{u}")
}

fn device_id(d: u8) -> sotto_server::store::DeviceId {
    sotto_server::store::DeviceId::new([d; 16])
}

fn message_id(m: u8) -> MessageId {
    MessageId::new([m; 16])
}

fn group_id(g: u8) -> GroupId {
    GroupId::from_slice(&[b'g', g]).unwrap()
}

fn token(t: u8) -> [u8; 32] {
    [t; 32]
}

fn signed_device(d: u8) -> SignedDevice {
    SignedDevice {
        certificate: vec![d, 1, 2],
        identity_signature: vec![d; 64],
    }
}

/// Which capability hash an operation presents.
#[derive(Debug, Clone, Copy)]
enum Cap {
    /// The group's current one (or, for a group the model does not know,
    /// token 0).
    Current,
    /// The previous epoch's (if any, else token 0).
    Previous,
    /// A fixed token, right or wrong by chance.
    Fixed(u8),
    /// None at all (only meaningful for commits).
    Absent,
}

fn cap() -> impl Strategy<Value = Cap> {
    prop_oneof![
        4 => Just(Cap::Current),
        1 => Just(Cap::Previous),
        1 => (0..TOKENS).prop_map(Cap::Fixed),
        1 => Just(Cap::Absent),
    ]
}

/// Which epoch a commit claims.
#[derive(Debug, Clone, Copy)]
enum EpochChoice {
    Current,
    Fixed(u64),
}

#[derive(Debug, Clone)]
struct EnvelopeSpec {
    id: u8,
    recipients: Vec<u8>,
    payload: u8,
}

fn envelope_spec(min_recipients: usize) -> impl Strategy<Value = EnvelopeSpec> {
    (
        1..=MESSAGE_IDS,
        // Mostly devices 1 and 2, so that their mailboxes reach the cap.
        proptest::collection::vec(
            prop_oneof![2 => 1..=2u8, 1 => 1..=DEVICES + 1],
            min_recipients..4,
        ),
        any::<u8>(),
    )
        .prop_map(|(id, recipients, payload)| EnvelopeSpec {
            id,
            recipients,
            payload,
        })
}

impl EnvelopeSpec {
    fn payload(&self) -> Vec<u8> {
        vec![self.payload, self.id, 0xee]
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            message_id: message_id(self.id),
            recipients: self.recipients.iter().map(|&d| device_id(d)).collect(),
            payload: self.payload(),
            frank: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        user: u8,
        device: u8,
    },
    AddDevice {
        user: u8,
        device: u8,
        seq_skew: u8,
    },
    RemoveDevice {
        user: u8,
        device: u8,
        seq_skew: u8,
    },
    Upload {
        device: u8,
        count: u8,
        last_resort: Option<u8>,
    },
    Claim {
        user: u8,
        only: Vec<u8>,
    },
    /// A claim beyond the account's rate: last-resort KeyPackages only.
    ClaimLastResort {
        user: u8,
        only: Vec<u8>,
    },
    Commit {
        group: u8,
        epoch: EpochChoice,
        cap: Cap,
        next: u8,
        commit: EnvelopeSpec,
        welcome: Option<EnvelopeSpec>,
    },
    Enqueue {
        group: u8,
        cap: Cap,
        /// Whether the previous epoch's grace period is open.
        grace: bool,
        /// Added to the epoch of the capability to give the framed epoch
        /// (0: honest; otherwise a forged framing).
        epoch_skew: u64,
        envelope: EnvelopeSpec,
        /// Disappearing messages: seconds from now until it may be deleted.
        expires_in: Option<u64>,
    },
    Fetch {
        device: u8,
        after: Index,
        limit: usize,
    },
    Ack {
        device: u8,
        picks: Vec<Index>,
        junk: Option<u64>,
    },
    Expire {
        days_back: u64,
    },
    /// The disappearing-messages sweep, now.
    ExpireDisappearing,
    Advance {
        seconds: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let device = 1..=DEVICES;
    let skew = prop_oneof![6 => Just(0u8), 1 => 1u8..3];
    prop_oneof![
        3 => (user.clone(), device.clone()).prop_map(|(user, device)| Op::Register { user, device }),
        2 => (user.clone(), device.clone(), skew.clone())
            .prop_map(|(user, device, seq_skew)| Op::AddDevice { user, device, seq_skew }),
        1 => (user.clone(), device.clone(), skew)
            .prop_map(|(user, device, seq_skew)| Op::RemoveDevice { user, device, seq_skew }),
        2 => (device.clone(), 0u8..3, proptest::option::of(any::<u8>()))
            .prop_map(|(device, count, last_resort)| Op::Upload { device, count, last_resort }),
        2 => (user.clone(), proptest::collection::vec(device.clone(), 0..3))
            .prop_map(|(user, only)| Op::Claim { user, only }),
        1 => (user, proptest::collection::vec(device.clone(), 0..3))
            .prop_map(|(user, only)| Op::ClaimLastResort { user, only }),
        4 => (
            0..GROUPS,
            prop_oneof![4 => Just(EpochChoice::Current), 1 => (0u64..4).prop_map(EpochChoice::Fixed)],
            cap(),
            0..TOKENS,
            envelope_spec(0),
            proptest::option::of(envelope_spec(1)),
        )
            .prop_map(|(group, epoch, cap, next, commit, welcome)| Op::Commit {
                group, epoch, cap, next, commit, welcome,
            }),
        5 => (0..GROUPS, cap(), any::<bool>(), prop_oneof![4 => Just(0u64), 1 => 1u64..3], envelope_spec(1),
              prop_oneof![3 => Just(None), 1 => (0u64..3).prop_map(Some)])
            .prop_map(|(group, cap, grace, epoch_skew, envelope, expires_in)| Op::Enqueue { group, cap, grace, epoch_skew, envelope, expires_in }),
        1 => (device.clone(), any::<Index>(), 1usize..4)
            .prop_map(|(device, after, limit)| Op::Fetch { device, after, limit }),
        3 => (
            device,
            proptest::collection::vec(any::<Index>(), 0..4),
            proptest::option::of(0u64..40),
        )
            .prop_map(|(device, picks, junk)| Op::Ack { device, picks, junk }),
        1 => (0u64..3).prop_map(|days_back| Op::Expire { days_back }),
        1 => Just(Op::ExpireDisappearing),
        1 => prop_oneof![Just(1u64), Just(DAY / 2), Just(DAY)]
            .prop_map(|seconds| Op::Advance { seconds }),
    ]
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone)]
struct Device {
    user: String,
    /// Registration order, which is the order claims walk devices in.
    order: usize,
    removed: bool,
    one_time: VecDeque<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Group {
    epoch: u64,
    last_commit: u8,
    /// Commit ids accepted in this group, with the day: a resend of one is
    /// a duplicate until the retention expiry forgets it.
    accepted: BTreeMap<u8, u64>,
    token: [u8; 32],
    previous: Option<[u8; 32]>,
    /// The last day a commit or message was accepted: the group expires
    /// with the retention period after it.
    active_day: u64,
}

#[derive(Debug, Clone)]
struct Row {
    device: u8,
    /// The message, unless `notice` is set.
    message: u8,
    /// A missed-messages notice (its key in `Model::notices`).
    notice: Option<u64>,
    day: u64,
}

/// What a skipped device missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    Message,
    Commit,
    Welcome,
}

/// A queued missed-messages notice.
#[derive(Debug, Clone)]
struct Notice {
    device: u8,
    /// `None`: "other groups" (never reached with `GROUPS` groups).
    group: Option<u8>,
    id: MessageId,
    messages: u64,
    commits: u64,
    welcomes: u64,
}

impl Notice {
    fn payload(&self) -> Vec<u8> {
        sotto_proto::missed_notice::encode(&MissedMessages {
            group_id: self
                .group
                .map_or(Vec::new(), |g| group_id(g).as_bytes().to_vec()),
            messages: self.messages,
            commits: self.commits,
            welcomes: self.welcomes,
        })
    }
}

/// The id the store gives a notice: derived from the device and the
/// message it lost, hashed again while taken (a message id lost twice, in
/// two sends that stored nothing, by the same device).
fn notice_id(device: u8, lost: u8, taken: impl Fn(MessageId) -> bool) -> MessageId {
    use sha2::Digest as _;
    let mut seed = [
        b"sotto missed notice".as_slice(),
        device_id(device).as_bytes(),
        message_id(lost).as_bytes(),
    ]
    .concat();
    loop {
        let digest = sha2::Sha256::digest(&seed);
        let id = MessageId::from_slice(&digest[..16]).unwrap();
        if !taken(id) {
            return id;
        }
        seed = digest.to_vec();
    }
}

/// What the `Store` trait promises, as plain collections.
#[derive(Debug, Clone, Default)]
struct Model {
    /// Username → identity key and number of log entries.
    accounts: BTreeMap<String, ([u8; 32], u64)>,
    devices: BTreeMap<u8, Device>,
    groups: BTreeMap<u8, Group>,
    /// Stored payloads by message id.
    messages: BTreeMap<u8, Vec<u8>>,
    /// Disappearing messages: when a stored message may be deleted.
    expiries: BTreeMap<u8, u64>,
    /// Mailbox rows by seq.
    mailbox: BTreeMap<u64, Row>,
    /// Queued missed-messages notices, by creation order.
    notices: BTreeMap<u64, Notice>,
    /// The last notice key handed out.
    last_notice: u64,
    /// The last seq ever handed out.
    last_seq: u64,
    /// Log leaves: (username, entry).
    log: Vec<(String, Vec<u8>)>,
    now: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum EnqueueOutcome {
    Ok(Queued),
    UnknownGroup,
    NotAuthorized,
    WrongEpoch,
    UnknownDevice(u8),
    IdInUse,
}

#[derive(Debug, PartialEq, Eq)]
enum CommitOutcome {
    Ok(CommitAccepted),
    UnknownGroup,
    NotAuthorized,
    StaleEpoch { submitted: u64, current: u64 },
    UnknownDevice(u8),
    IdInUse,
}

impl Model {
    /// The epoch an honest sender frames a message in with `cap`.
    fn cap_epoch(&self, group: u8, cap: Cap) -> u64 {
        let epoch = self.groups.get(&group).map_or(1, |g| g.epoch);
        match cap {
            Cap::Previous => epoch.saturating_sub(1),
            _ => epoch,
        }
    }

    fn cap_hash(&self, group: u8, cap: Cap) -> Option<[u8; 32]> {
        let g = self.groups.get(&group);
        match cap {
            Cap::Current => Some(g.map_or(token(0), |g| g.token)),
            Cap::Previous => Some(g.and_then(|g| g.previous).unwrap_or(token(0))),
            Cap::Fixed(t) => Some(token(t)),
            Cap::Absent => None,
        }
    }

    fn register(&mut self, user: u8, device: u8) -> Result<(), String> {
        let name = username(user);
        if self.accounts.contains_key(&name) {
            return Err("UsernameTaken".into());
        }
        if self.devices.contains_key(&device) {
            return Err(format!("DeviceIdTaken({device})"));
        }
        self.accounts.insert(name.clone(), ([user; 32], 2));
        self.log.push((name.clone(), vec![user, 0]));
        self.log.push((name.clone(), vec![user, 1]));
        self.add(name, device);
        Ok(())
    }

    fn add(&mut self, user: String, device: u8) {
        let order = self.devices.len();
        self.devices.insert(
            device,
            Device {
                user,
                order,
                removed: false,
                one_time: VecDeque::new(),
                last_resort: None,
            },
        );
    }

    fn add_device(&mut self, user: u8, device: u8, seq: u64) -> Result<(), String> {
        let name = username(user);
        let Some(&(_, expected)) = self.accounts.get(&name) else {
            return Err("UnknownUser".into());
        };
        if seq != expected {
            return Err(format!("StaleSequence({expected})"));
        }
        if self.devices.contains_key(&device) {
            return Err(format!("DeviceIdTaken({device})"));
        }
        self.add(name.clone(), device);
        self.append_log(&name, seq);
        Ok(())
    }

    fn append_log(&mut self, name: &str, seq: u64) {
        if let Some(account) = self.accounts.get_mut(name) {
            account.1 += 1;
        }
        self.log
            .push((name.to_owned(), vec![name.len() as u8, seq as u8]));
    }

    fn remove_device(&mut self, user: u8, device: u8, seq: u64) -> Result<(), String> {
        let name = username(user);
        let active = self
            .devices
            .get(&device)
            .is_some_and(|d| d.user == name && !d.removed);
        if !active {
            return Err("UnknownDevice".into());
        }
        let expected = self.accounts.get(&name).map_or(0, |a| a.1);
        if seq != expected {
            return Err(format!("StaleSequence({expected})"));
        }
        if let Some(d) = self.devices.get_mut(&device) {
            d.removed = true;
            d.one_time.clear();
            d.last_resort = None;
        }
        self.mailbox.retain(|_, row| row.device != device);
        self.drop_orphans();
        self.append_log(&name, seq);
        Ok(())
    }

    fn drop_orphans(&mut self) {
        let referenced: BTreeSet<u8> = self
            .mailbox
            .values()
            .filter(|r| r.notice.is_none())
            .map(|r| r.message)
            .collect();
        self.messages.retain(|m, _| referenced.contains(m));
        let messages = &self.messages;
        self.expiries.retain(|m, _| messages.contains_key(m));
        let notices: BTreeSet<u64> = self.mailbox.values().filter_map(|r| r.notice).collect();
        self.notices.retain(|n, _| notices.contains(n));
    }

    /// A device's mailbox holds the cap's number of messages (notices
    /// not counted).
    fn is_full(&self, device: u8) -> bool {
        self.mailbox
            .values()
            .filter(|r| r.device == device && r.notice.is_none())
            .count()
            >= MAILBOX_CAP
    }

    /// The store's rule: update the device's newest notice for the group
    /// if the loss is a message or that notice already reports a commit or
    /// Welcome; otherwise queue a new one.
    fn record_missed(&mut self, device: u8, group: u8, missed: Missed, lost: u8) {
        let own = self
            .notices
            .iter_mut()
            .rev()
            .find(|(_, n)| n.device == device && n.group == Some(group));
        let notice = match own {
            Some((_, n)) if missed == Missed::Message || n.commits > 0 || n.welcomes > 0 => n,
            _ => {
                let id = notice_id(device, lost, |id| self.notices.values().any(|n| n.id == id));
                self.last_notice += 1;
                self.last_seq += 1;
                self.mailbox.insert(
                    self.last_seq,
                    Row {
                        device,
                        message: 0,
                        notice: Some(self.last_notice),
                        day: day_of(self.now),
                    },
                );
                self.notices.entry(self.last_notice).or_insert(Notice {
                    device,
                    group: Some(group),
                    id,
                    messages: 0,
                    commits: 0,
                    welcomes: 0,
                })
            }
        };
        match missed {
            Missed::Message => notice.messages += 1,
            Missed::Commit => notice.commits += 1,
            Missed::Welcome => notice.welcomes += 1,
        }
    }

    fn status(&self, device: u8) -> KeyPackageStatus {
        self.devices
            .get(&device)
            .map_or(KeyPackageStatus::default(), |d| KeyPackageStatus {
                remaining: d.one_time.len() as u32,
                has_last_resort: d.last_resort.is_some(),
            })
    }

    /// What a claim beyond the rate hands out: every listed active device's
    /// last-resort KeyPackage, taking nothing.
    fn last_resort(&self, user: u8, only: &[u8]) -> Option<KeyPackageBundle> {
        let name = username(user);
        let &(identity_key, _) = self.accounts.get(&name)?;
        let mut devices: Vec<(&u8, &Device)> = self
            .devices
            .iter()
            .filter(|(id, d)| {
                d.user == name && !d.removed && (only.is_empty() || only.contains(id))
            })
            .collect();
        devices.sort_by_key(|(_, d)| d.order);
        let devices = devices
            .into_iter()
            .filter_map(|(&id, d)| {
                Some(ClaimedKeyPackage {
                    device_id: device_id(id),
                    device: signed_device(id),
                    key_package: d.last_resort.clone()?,
                    remaining: d.one_time.len() as u32,
                    last_resort: true,
                })
            })
            .collect();
        Some(KeyPackageBundle {
            identity_key,
            devices,
        })
    }

    fn claim(&mut self, user: u8, only: &[u8]) -> Option<KeyPackageBundle> {
        let name = username(user);
        let &(identity_key, _) = self.accounts.get(&name)?;
        let mut devices: Vec<(u8, usize)> = self
            .devices
            .iter()
            .filter(|(_, d)| d.user == name && !d.removed)
            .map(|(&id, d)| (id, d.order))
            .collect();
        devices.sort_by_key(|&(_, order)| order);
        let mut claimed = Vec::new();
        for (id, _) in devices {
            if !only.is_empty() && !only.contains(&id) {
                continue;
            }
            let d = self.devices.get_mut(&id).unwrap();
            let (key_package, last_resort) = match d.one_time.pop_front() {
                Some(kp) => (kp, false),
                None => match &d.last_resort {
                    Some(kp) => (kp.clone(), true),
                    None => continue,
                },
            };
            claimed.push(ClaimedKeyPackage {
                device_id: device_id(id),
                device: signed_device(id),
                key_package,
                remaining: d.one_time.len() as u32,
                last_resort,
            });
        }
        Some(KeyPackageBundle {
            identity_key,
            devices: claimed,
        })
    }

    /// `insert_envelope`: the payload once, one row per distinct active
    /// recipient; unknown recipients fail; removed ones are skipped, and
    /// so are full ones (returned), which get a notice.
    fn insert(
        &mut self,
        group: u8,
        spec: &EnvelopeSpec,
        missed: Missed,
    ) -> Result<Vec<DeviceId>, u8> {
        let mut seen = BTreeSet::new();
        let mut recipients = Vec::new();
        for &d in &spec.recipients {
            if !seen.insert(d) {
                continue;
            }
            match self.devices.get(&d) {
                None => return Err(d),
                Some(dev) if !dev.removed => recipients.push(d),
                Some(_) => {}
            }
        }
        let mut skipped = Vec::new();
        let mut kept = Vec::new();
        for device in recipients {
            if self.is_full(device) {
                self.record_missed(device, group, missed, spec.id);
                skipped.push(device_id(device));
            } else {
                kept.push(device);
            }
        }
        if kept.is_empty() {
            return Ok(skipped);
        }
        self.messages.insert(spec.id, spec.payload());
        for device in kept {
            self.last_seq += 1;
            self.mailbox.insert(
                self.last_seq,
                Row {
                    device,
                    message: spec.id,
                    notice: None,
                    day: day_of(self.now),
                },
            );
        }
        Ok(skipped)
    }

    fn enqueue(
        &mut self,
        group: u8,
        hash: [u8; 32],
        epoch: u64,
        grace: bool,
        spec: &EnvelopeSpec,
        expires_at: Option<u64>,
    ) -> EnqueueOutcome {
        // The same bytes again are a resend, whatever the capability; other
        // bytes under a queued id are refused, but only once authorised.
        let stored = self.messages.get(&spec.id).map(|p| *p == spec.payload());
        if stored == Some(true) {
            return EnqueueOutcome::Ok(Queued {
                outcome: Enqueued::Duplicate,
                skipped: Vec::new(),
            });
        }
        let Some(g) = self.groups.get(&group) else {
            return EnqueueOutcome::UnknownGroup;
        };
        let capability_epoch = if hash == g.token {
            g.epoch
        } else if grace && Some(hash) == g.previous {
            g.epoch - 1
        } else {
            return EnqueueOutcome::NotAuthorized;
        };
        if epoch != capability_epoch {
            return EnqueueOutcome::WrongEpoch;
        }
        if stored == Some(false) {
            return EnqueueOutcome::IdInUse;
        }
        let mut next = self.clone();
        match next.insert(group, spec, Missed::Message) {
            Ok(skipped) => {
                if let Some(g) = next.groups.get_mut(&group) {
                    g.active_day = g.active_day.max(day_of(self.now));
                }
                if let Some(at) = expires_at
                    && next.messages.contains_key(&spec.id)
                {
                    let earliest = next.expiries.get(&spec.id).map_or(at, |e| at.min(*e));
                    next.expiries.insert(spec.id, earliest);
                }
                *self = next;
                EnqueueOutcome::Ok(Queued {
                    outcome: Enqueued::Queued,
                    skipped,
                })
            }
            Err(d) => EnqueueOutcome::UnknownDevice(d),
        }
    }

    fn commit(
        &mut self,
        group: u8,
        epoch: u64,
        hash: Option<[u8; 32]>,
        next_token: [u8; 32],
        commit: &EnvelopeSpec,
        welcome: Option<&EnvelopeSpec>,
    ) -> CommitOutcome {
        let current = self.groups.get(&group).cloned();
        let is_latest = current
            .as_ref()
            .is_some_and(|g| g.last_commit == commit.id || g.accepted.contains_key(&commit.id));
        let stored =
            |m: &Self, spec: &EnvelopeSpec| m.messages.get(&spec.id).map(|p| *p == spec.payload());
        if is_latest || stored(self, commit) == Some(true) {
            return CommitOutcome::Ok(CommitAccepted {
                new_epoch: current.map_or(0, |g| g.epoch),
                outcome: Enqueued::Duplicate,
                skipped: Vec::new(),
            });
        }
        let mut next = self.clone();
        let new_epoch = match current {
            None if epoch == 0 => {
                next.groups.insert(
                    group,
                    Group {
                        epoch: 1,
                        last_commit: commit.id,
                        accepted: BTreeMap::from([(commit.id, day_of(self.now))]),
                        token: next_token,
                        previous: None,
                        active_day: day_of(self.now),
                    },
                );
                1
            }
            None => return CommitOutcome::UnknownGroup,
            Some(g) => {
                if epoch != g.epoch {
                    return CommitOutcome::StaleEpoch {
                        submitted: epoch,
                        current: g.epoch,
                    };
                }
                if hash != Some(g.token) {
                    return CommitOutcome::NotAuthorized;
                }
                next.groups.insert(
                    group,
                    Group {
                        epoch: g.epoch + 1,
                        last_commit: commit.id,
                        accepted: {
                            let mut accepted = g.accepted.clone();
                            accepted.insert(commit.id, day_of(self.now));
                            accepted
                        },
                        token: next_token,
                        previous: Some(g.token),
                        active_day: g.active_day.max(day_of(self.now)),
                    },
                );
                g.epoch + 1
            }
        };
        if stored(self, commit) == Some(false) {
            return CommitOutcome::IdInUse;
        }
        let mut skipped = match next.insert(group, commit, Missed::Commit) {
            Ok(skipped) => skipped,
            Err(d) => return CommitOutcome::UnknownDevice(d),
        };
        let welcome = match welcome.map(|w| (w, stored(&next, w))) {
            Some((_, Some(false))) => return CommitOutcome::IdInUse,
            Some((w, None)) => Some(w),
            _ => None,
        };
        if let Some(welcome) = welcome {
            match next.insert(group, welcome, Missed::Welcome) {
                Ok(more) => {
                    for d in more {
                        if !skipped.contains(&d) {
                            skipped.push(d);
                        }
                    }
                }
                Err(d) => return CommitOutcome::UnknownDevice(d),
            }
        }
        *self = next;
        CommitOutcome::Ok(CommitAccepted {
            new_epoch,
            outcome: Enqueued::Queued,
            skipped,
        })
    }

    fn mailbox_of(&self, device: u8) -> Vec<MailboxEntry> {
        self.mailbox
            .iter()
            .filter(|(_, r)| r.device == device)
            .map(|(&seq, r)| match r.notice {
                None => MailboxEntry {
                    seq,
                    message_id: message_id(r.message),
                    payload: self.messages[&r.message].clone(),
                    frank: None,
                },
                Some(n) => MailboxEntry {
                    seq,
                    message_id: self.notices[&n].id,
                    payload: self.notices[&n].payload(),
                    frank: None,
                },
            })
            .collect()
    }

    fn ack(&mut self, device: u8, seqs: &[u64]) -> u64 {
        let mut deleted = 0;
        for seq in seqs {
            if self.mailbox.get(seq).is_some_and(|r| r.device == device) {
                self.mailbox.remove(seq);
                deleted += 1;
            }
        }
        self.drop_orphans();
        deleted
    }

    /// Deletes the messages whose expiry has come, with their entries.
    fn expire_disappearing(&mut self, now: u64) -> u64 {
        let due: BTreeSet<u8> = self
            .expiries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(m, _)| *m)
            .collect();
        let entries = self.mailbox.len();
        self.mailbox
            .retain(|_, r| r.notice.is_some() || !due.contains(&r.message));
        self.drop_orphans();
        (entries - self.mailbox.len()) as u64
    }

    fn expire(&mut self, cutoff: u64) -> Expired {
        let (entries, groups) = (self.mailbox.len(), self.groups.len());
        self.mailbox.retain(|_, r| r.day >= day_of(cutoff));
        self.groups.retain(|_, g| g.active_day >= day_of(cutoff));
        for group in self.groups.values_mut() {
            group.accepted.retain(|_, day| *day >= day_of(cutoff));
        }
        self.drop_orphans();
        Expired {
            mailbox_entries: (entries - self.mailbox.len()) as u64,
            groups: (groups - self.groups.len()) as u64,
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            accounts: self.accounts.len() as u64,
            devices: self.devices.values().filter(|d| !d.removed).count() as u64,
            mailbox_entries: self.mailbox.len() as u64,
            payloads: (self.messages.len() + self.notices.len()) as u64,
            // The first entry by seq.
            oldest_entry_day: self.mailbox.values().next().map(|row| row.day),
        }
    }
}

// ---------------------------------------------------------------- running

fn enqueue_outcome(result: Result<Queued, EnqueueError>) -> EnqueueOutcome {
    match result {
        Ok(e) => EnqueueOutcome::Ok(e),
        Err(EnqueueError::UnknownGroup(_)) => EnqueueOutcome::UnknownGroup,
        Err(EnqueueError::NotAuthorized) => EnqueueOutcome::NotAuthorized,
        Err(EnqueueError::WrongEpoch { .. }) => EnqueueOutcome::WrongEpoch,
        Err(EnqueueError::UnknownDevice(d)) => EnqueueOutcome::UnknownDevice(d.as_bytes()[0]),
        Err(EnqueueError::IdInUse(_)) => EnqueueOutcome::IdInUse,
        Err(e) => panic!("unexpected enqueue error: {e}"),
    }
}

fn commit_outcome(result: Result<CommitAccepted, CommitError>) -> CommitOutcome {
    match result {
        Ok(a) => CommitOutcome::Ok(a),
        Err(CommitError::UnknownGroup(_)) => CommitOutcome::UnknownGroup,
        Err(CommitError::NotAuthorized) => CommitOutcome::NotAuthorized,
        Err(CommitError::StaleEpoch { submitted, current }) => {
            CommitOutcome::StaleEpoch { submitted, current }
        }
        Err(CommitError::UnknownDevice(d)) => CommitOutcome::UnknownDevice(d.as_bytes()[0]),
        Err(CommitError::IdInUse(_)) => CommitOutcome::IdInUse,
        Err(e) => panic!("unexpected commit error: {e}"),
    }
}

fn store_dir() -> tempfile::TempDir {
    // tmpfs when there is one: the store fsyncs every commit.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// Runs one operation on both sides and checks the answers agree.
async fn step<S: Store>(store: &S, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        &Op::Register { user, device } => {
            let result = store
                .register(NewAccount {
                    username: username(user),
                    identity_key: [user; 32],
                    device_id: device_id(device),
                    device_key: [device; 32],
                    device: signed_device(device),
                    today: day_of(model.now),
                    log_entries: vec![vec![user, 0], vec![user, 1]],
                    invite: None,
                })
                .await
                .map_err(|e| match e {
                    RegisterError::UsernameTaken => "UsernameTaken".to_owned(),
                    RegisterError::DeviceIdTaken(d) => {
                        format!("DeviceIdTaken({})", d.as_bytes()[0])
                    }
                    e => panic!("unexpected register error: {e}"),
                });
            prop_assert_eq!(result, model.register(user, device));
        }
        &Op::AddDevice {
            user,
            device,
            seq_skew,
        } => {
            let name = username(user);
            let seq = model.accounts.get(&name).map_or(0, |a| a.1) + u64::from(seq_skew);
            let result = store
                .add_device(NewDevice {
                    username: name.clone(),
                    device_id: device_id(device),
                    device_key: [device; 32],
                    device: signed_device(device),
                    today: day_of(model.now),
                    log_entry: vec![name.len() as u8, seq as u8],
                    account_seq: seq,
                })
                .await
                .map_err(|e| match e {
                    AddDeviceError::UnknownUser => "UnknownUser".to_owned(),
                    AddDeviceError::DeviceIdTaken(d) => {
                        format!("DeviceIdTaken({})", d.as_bytes()[0])
                    }
                    AddDeviceError::StaleSequence { expected } => {
                        format!("StaleSequence({expected})")
                    }
                    AddDeviceError::Store(e) => panic!("storage failed: {e}"),
                });
            prop_assert_eq!(result, model.add_device(user, device, seq));
        }
        &Op::RemoveDevice {
            user,
            device,
            seq_skew,
        } => {
            let name = username(user);
            let seq = model.accounts.get(&name).map_or(0, |a| a.1) + u64::from(seq_skew);
            let result = store
                .remove_device(DeviceRemoval {
                    username: name.clone(),
                    device_id: device_id(device),
                    today: day_of(model.now),
                    log_entry: vec![name.len() as u8, seq as u8],
                    account_seq: seq,
                    rotation: None,
                })
                .await
                .map_err(|e| match e {
                    RemoveDeviceError::UnknownDevice => "UnknownDevice".to_owned(),
                    RemoveDeviceError::StaleSequence { expected } => {
                        format!("StaleSequence({expected})")
                    }
                    RemoveDeviceError::Store(e) => panic!("storage failed: {e}"),
                });
            prop_assert_eq!(result, model.remove_device(user, device, seq));
        }
        &Op::Upload {
            device,
            count,
            last_resort,
        } => {
            // Only a logged-in (so active) device uploads.
            if model.devices.get(&device).is_none_or(|d| d.removed) {
                return Ok(());
            }
            let serial = model.last_seq * 1000 + model.log.len() as u64;
            let one_time: Vec<Vec<u8>> = (0..count)
                .map(|i| format!("kp-{device}-{serial}-{i}-{}", model.now).into_bytes())
                .collect();
            let last_resort = last_resort.map(|b| vec![b'L', device, b]);
            let status = store
                .upload_key_packages(device_id(device), one_time.clone(), last_resort.clone())
                .await
                .unwrap();
            let d = model.devices.get_mut(&device).unwrap();
            d.one_time.extend(one_time);
            if last_resort.is_some() {
                d.last_resort = last_resort;
            }
            prop_assert_eq!(status, model.status(device));
        }
        Op::ClaimLastResort { user, only } => {
            let bundle = store
                .last_resort_key_packages(
                    &username(*user),
                    only.iter().map(|&d| device_id(d)).collect(),
                )
                .await
                .unwrap();
            prop_assert_eq!(bundle, model.last_resort(*user, only));
        }
        Op::Claim { user, only } => {
            let bundle = store
                .claim_key_packages(
                    &username(*user),
                    only.iter().map(|&d| device_id(d)).collect(),
                )
                .await
                .unwrap();
            prop_assert_eq!(bundle, model.claim(*user, only));
        }
        Op::Commit {
            group,
            epoch,
            cap,
            next,
            commit,
            welcome,
        } => {
            let epoch = match *epoch {
                EpochChoice::Current => model.groups.get(group).map_or(0, |g| g.epoch),
                EpochChoice::Fixed(e) => e,
            };
            // A group's first commit presents no capability.
            let hash = if epoch == 0 && !model.groups.contains_key(group) {
                None
            } else {
                model.cap_hash(*group, *cap)
            };
            let result = store
                .submit_commit(CommitSubmission {
                    group_id: group_id(*group),
                    epoch,
                    token_hash: hash,
                    next_token_hash: token(*next),
                    commit: commit.envelope(),
                    welcome: welcome.as_ref().map(EnvelopeSpec::envelope),
                    now: model.now,
                    invite_link: None,
                })
                .await;
            let expected =
                model.commit(*group, epoch, hash, token(*next), commit, welcome.as_ref());
            prop_assert_eq!(commit_outcome(result), expected);
        }
        Op::Enqueue {
            group,
            cap,
            grace,
            epoch_skew,
            envelope,
            expires_in,
        } => {
            let expires_at = expires_in.map(|s| model.now + s);
            let hash = model.cap_hash(*group, *cap).unwrap_or(token(0));
            let epoch = model.cap_epoch(*group, *cap).saturating_add(*epoch_skew);
            let result = store
                .enqueue(GroupMessage {
                    expires_at,
                    group_id: group_id(*group),
                    token_hash: hash,
                    epoch,
                    previous_epoch_open: *grace,
                    envelope: envelope.envelope(),
                    now: model.now,
                })
                .await;
            prop_assert_eq!(
                enqueue_outcome(result),
                model.enqueue(*group, hash, epoch, *grace, envelope, expires_at)
            );
        }
        &Op::Fetch {
            device,
            after,
            limit,
        } => {
            let all = model.mailbox_of(device);
            let after = if all.is_empty() {
                0
            } else {
                all[after.index(all.len())].seq
            };
            let expected: Vec<MailboxEntry> = all
                .into_iter()
                .filter(|e| e.seq > after)
                .take(limit)
                .collect();
            let got = store
                .fetch_mailbox(device_id(device), after, limit)
                .await
                .unwrap();
            prop_assert_eq!(got, expected);
        }
        Op::Ack {
            device,
            picks,
            junk,
        } => {
            // Mostly this device's own seqs, sometimes anyone's, sometimes
            // made up.
            let everyone: Vec<u64> = model.mailbox.keys().copied().collect();
            let own: Vec<u64> = model.mailbox_of(*device).iter().map(|e| e.seq).collect();
            let mut seqs = Vec::new();
            for (i, pick) in picks.iter().enumerate() {
                let from = if i % 3 == 2 { &everyone } else { &own };
                if !from.is_empty() {
                    seqs.push(from[pick.index(from.len())]);
                }
            }
            seqs.extend(*junk);
            let deleted = store.ack(device_id(*device), seqs.clone()).await.unwrap();
            prop_assert_eq!(deleted, model.ack(*device, &seqs));
        }
        &Op::Expire { days_back } => {
            let cutoff = model.now.saturating_sub(days_back * DAY);
            let deleted = store.expire(cutoff).await.unwrap();
            prop_assert_eq!(deleted, model.expire(cutoff));
        }
        Op::ExpireDisappearing => {
            let deleted = store.expire_disappearing(model.now).await.unwrap();
            prop_assert_eq!(deleted, model.expire_disappearing(model.now));
        }
        &Op::Advance { seconds } => model.now += seconds,
    }
    Ok(())
}

/// Everything observable must match the model.
async fn check_state<S: Store>(store: &S, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.stats().await.unwrap(), model.stats());
    for d in 1..=DEVICES + 1 {
        let mailbox = store.fetch_mailbox(device_id(d), 0, ALL).await.unwrap();
        prop_assert_eq!(mailbox, model.mailbox_of(d), "mailbox of device {}", d);
        prop_assert_eq!(
            store.key_package_status(device_id(d)).await.unwrap(),
            model.status(d),
            "KeyPackages of device {}",
            d
        );
        for u in 0..USERS {
            let found = store.device(&username(u), device_id(d)).await.unwrap();
            let expected = model
                .devices
                .get(&d)
                .filter(|dev| dev.user == username(u))
                .map(|dev| dev.removed);
            prop_assert_eq!(
                found.map(|r| r.removed),
                expected,
                "device {} of user{}",
                d,
                u
            );
        }
    }
    for g in 0..GROUPS {
        prop_assert_eq!(
            store.group_epoch(&group_id(g)).await.unwrap(),
            model.groups.get(&g).map(|g| g.epoch),
            "epoch of group {}",
            g
        );
    }
    let log = store.log_entries(0, ALL).await.unwrap();
    let log: Vec<(String, Vec<u8>)> = log.into_iter().map(|r| (r.username, r.entry)).collect();
    prop_assert_eq!(&log, &model.log);
    Ok(())
}

/// Runs `ops` on `store` and on a fresh model, checking both after every
/// step.
async fn agree<S: Store>(store: &S, ops: &[Op]) -> Result<(), TestCaseError> {
    store.set_mailbox_limit(MAILBOX_CAP as u32);
    let mut model = Model {
        now: 20_000 * DAY,
        ..Model::default()
    };
    for op in ops {
        step(store, &mut model, op).await?;
        check_state(store, &model).await?;
    }
    Ok(())
}

proptest! {
    #[test]
    fn sqlite_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..32)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = store_dir();
        let store = SqliteStore::open(dir.path()).unwrap();
        let result = runtime.block_on(agree(&store, &ops));
        runtime.block_on(store.close());
        result?;
    }

    /// The same against PostgreSQL (`SOTTO_TEST_POSTGRES`; skipped
    /// without it), each sequence in a fresh schema.
    #[test]
    fn postgres_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..32)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = runtime.block_on(async {
            let Some(db) = TestDatabase::create("store_model").await else {
                return Ok(());
            };
            let store = PostgresStore::open(db.url()).await.unwrap();
            let result = agree(&store, &ops).await;
            store.close().await;
            drop(db);
            result
        });
        result?;
    }
}
