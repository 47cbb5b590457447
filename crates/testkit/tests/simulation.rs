//! Seeded simulation: four real clients (in-process, real SQLite, real MLS)
//! and the real in-process server, each client behind its own
//! [`FaultyProxy`], play a random schedule of group and direct messages, key
//! updates and one member addition while connections are cut, stalled,
//! refused and deliveries repeated. Then the network heals, everyone syncs,
//! and the test checks:
//!
//! - every message whose send returned `Ok` (and every other message still
//!   in its sender's history, which the outbox must eventually deliver) is
//!   in each recipient's history exactly once, and each sender's messages
//!   appear in the order they were sent;
//! - all members of each conversation end in the same MLS epoch with the same
//!   epoch authenticator, and agree on the member list.
//!
//! The schedule (who does what, in which round) and every fault decision are
//! pure functions of the seed. Real sockets, threads and timers still decide
//! the interleaving, so a replay repeats the same plan, not necessarily the
//! same run. By default the test runs seeds from 0 for about a minute;
//! `SOTTO_SIM_SEED=n` replays one seed, `SOTTO_SIM_SEEDS=n` runs seeds
//! `0..n` (`SOTTO_SIM_FIRST_SEED` shifts the start) whatever the time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_client::{Client, ClientError, ConversationKind, EntryKind, HistoryEntry};
use sotto_testkit::TestServer;
use sotto_testkit::faulty::{FaultConfig, FaultStats, FaultyProxy, SimRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
const GROUP: &str = "crew";
/// The direct conversations set up before the faults start.
const PAIRS: [(usize, usize); 2] = [(0, 1), (2, 3)];
/// Dan is added to the group during the run.
const DAN: usize = 3;
/// Time budget for the default run.
const DEFAULT_BUDGET: Duration = Duration::from_secs(60);
/// Never more seeds than this in the default run.
const DEFAULT_MAX_SEEDS: u64 = 400;
/// One client operation, faults included, must finish within this.
const OP_TIMEOUT: Duration = Duration::from_secs(45);
/// One whole seed must finish within this.
const SEED_TIMEOUT: Duration = Duration::from_secs(240);
/// Sync rounds after healing before giving up on quiet.
const MAX_HEAL_ROUNDS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SendGroup,
    SendDirect(usize),
    UpdateKeys,
    AddDan,
    Sync,
}

/// The schedule: rounds of operations, each round's operations concurrent
/// (at most one per client), and partitions started at some rounds.
#[derive(Debug)]
struct Plan {
    rounds: Vec<Round>,
}

#[derive(Debug, Default)]
struct Round {
    ops: Vec<(usize, Op)>,
    /// (client, connections to refuse)
    partitions: Vec<(usize, u64)>,
}

fn peer_of(client: usize) -> Option<usize> {
    PAIRS.iter().find_map(|&(a, b)| {
        if a == client {
            Some(b)
        } else if b == client {
            Some(a)
        } else {
            None
        }
    })
}

fn plan(seed: u64) -> Plan {
    let mut rng = SimRng::derive(seed, u64::MAX);
    let rounds = usize::try_from(rng.range(6, 10)).unwrap();
    let add_round = usize::try_from(rng.range(1, 4)).unwrap();
    let add_by = rng.index(3);
    let mut updates_left = rng.range(1, 2);
    let mut plan = Plan { rounds: Vec::new() };
    for r in 0..rounds {
        let mut round = Round::default();
        for client in 0..USERS.len() {
            if r == add_round && client == add_by {
                round.ops.push((client, Op::AddDan));
                continue;
            }
            if !rng.chance(750) {
                continue;
            }
            let dan_in = client != DAN || r > add_round;
            let roll = rng.below(100);
            let op = if roll < 50 && dan_in {
                Op::SendGroup
            } else if roll < 85 {
                Op::SendDirect(peer_of(client).unwrap())
            } else if roll < 93 && dan_in && updates_left > 0 {
                updates_left -= 1;
                Op::UpdateKeys
            } else {
                Op::Sync
            };
            round.ops.push((client, op));
        }
        if rng.chance(200) {
            round
                .partitions
                .push((rng.index(USERS.len()), rng.range(1, 3)));
        }
        plan.rounds.push(round);
    }
    plan
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    Network,
    Refused(String),
}

fn outcome<T>(result: &Result<T, ClientError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(ClientError::Network(_)) => Outcome::Network,
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

#[derive(Debug)]
struct Sent {
    tag: String,
    sender: usize,
    outcome: Outcome,
    /// Who the message is for, as the sender saw the group right after the
    /// attempt (the epoch it encrypted for).
    recipients: BTreeSet<usize>,
}

/// What one seed did and found.
#[derive(Debug, Default)]
struct SeedReport {
    failures: Vec<String>,
    notes: Vec<String>,
    sends_ok: usize,
    sends_network: usize,
    sends_refused: usize,
    other_ops: usize,
    faults: FaultStats,
}

/// The state after setup (accounts, the group, the two direct chats), saved
/// once and copied for every seed.
struct Template {
    dir: tempfile::TempDir,
}

impl Template {
    async fn build() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let server = TestServer::start_in(&dir.path().join("server")).await;
        let url = server.url();
        let mut clients = Vec::new();
        for (i, user) in USERS.iter().enumerate() {
            let profile = dir.path().join(format!("u{i}"));
            clients.push(Client::register(&profile, user, &url).await.unwrap());
        }
        clients[0]
            .create_group(GROUP, &[USERS[1].to_owned(), USERS[2].to_owned()])
            .await
            .unwrap();
        for &(a, b) in &PAIRS {
            clients[a].send_direct(USERS[b], "setup").await.unwrap();
        }
        for _ in 0..2 {
            for c in &mut clients {
                c.sync().await.unwrap();
            }
        }
        for mut c in clients {
            c.disconnect().await;
        }
        server.stop().await;
        Self { dir }
    }

    fn copy_to(&self, target: &Path) {
        copy_dir(self.dir.path(), target);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

async fn run_op(c: &mut Client, me: usize, op: Op, tag: &str) -> (Outcome, Option<Sent>) {
    match op {
        Op::SendGroup => {
            let result = c.send_group(GROUP, tag).await;
            let recipients = c
                .members(GROUP)
                .map(|members| {
                    members
                        .iter()
                        .filter_map(|m| USERS.iter().position(|u| *u == m.username))
                        .filter(|&i| i != me)
                        .collect()
                })
                .unwrap_or_default();
            let o = outcome(&result);
            (
                o.clone(),
                Some(Sent {
                    tag: tag.to_owned(),
                    sender: me,
                    outcome: o,
                    recipients,
                }),
            )
        }
        Op::SendDirect(peer) => {
            let result = c.send_direct(USERS[peer], tag).await;
            let o = outcome(&result);
            (
                o.clone(),
                Some(Sent {
                    tag: tag.to_owned(),
                    sender: me,
                    outcome: o,
                    recipients: BTreeSet::from([peer]),
                }),
            )
        }
        Op::UpdateKeys => (outcome(&c.update_keys(GROUP).await), None),
        Op::AddDan => (outcome(&c.add_member(GROUP, USERS[DAN]).await), None),
        Op::Sync => (outcome(&c.sync().await), None),
    }
}

/// Every text line of a client's conversations, with the conversation it is
/// in: the group (under its name, or a placeholder if its name never
/// arrived) and the direct chat.
fn texts_of(c: &Client, me: usize) -> Vec<(String, HistoryEntry)> {
    let mut names: Vec<(ConversationKind, String)> = vec![(ConversationKind::Group, GROUP.into())];
    for g in c.groups().unwrap() {
        if g != GROUP {
            names.push((ConversationKind::Group, g));
        }
    }
    if let Some(peer) = peer_of(me) {
        names.push((ConversationKind::Direct, USERS[peer].into()));
    }
    let mut out = Vec::new();
    for (kind, name) in names {
        let Ok(entries) = c.history(kind, &name) else {
            continue;
        };
        for e in entries {
            out.push((format!("{kind:?}:{name}"), e));
        }
    }
    out
}

async fn run_seed(template: &Template, seed: u64) -> SeedReport {
    let mut report = SeedReport::default();
    let plan = plan(seed);
    let dir = tempfile::TempDir::new().unwrap();
    template.copy_to(dir.path());
    let server = TestServer::start_in(&dir.path().join("server")).await;
    let mut proxies = Vec::new();
    let mut clients = Vec::new();
    for i in 0..USERS.len() {
        let proxy = FaultyProxy::start(
            &server.url(),
            SimRng::derive(seed, 1_000 + i as u64).next_u64(),
            FaultConfig::default(),
        )
        .await;
        let mut c = Client::open(&dir.path().join(format!("u{i}"))).unwrap();
        c.set_server_url(&proxy.url()).unwrap();
        clients.push(c);
        proxies.push(proxy);
    }

    let mut sent: Vec<Sent> = Vec::new();
    let mut counter = 0usize;
    for round in &plan.rounds {
        for &(client, connections) in &round.partitions {
            proxies[client].partition(connections);
        }
        let mut tags = BTreeMap::new();
        for &(client, _) in &round.ops {
            counter += 1;
            tags.insert(client, format!("{}#{counter}", USERS[client]));
        }
        let futures = clients.iter_mut().enumerate().filter_map(|(i, c)| {
            let op = round.ops.iter().find(|(who, _)| *who == i)?.1;
            let tag = tags[&i].clone();
            Some(async move {
                match tokio::time::timeout(OP_TIMEOUT, run_op(c, i, op, &tag)).await {
                    Ok(r) => (i, op, Some(r)),
                    Err(_) => (i, op, None),
                }
            })
        });
        for (i, op, result) in futures_util::future::join_all(futures).await {
            match result {
                None => report
                    .failures
                    .push(format!("{} {op:?} hung for {OP_TIMEOUT:?}", USERS[i])),
                Some((o, Some(s))) => {
                    match &o {
                        Outcome::Ok => report.sends_ok += 1,
                        Outcome::Network => report.sends_network += 1,
                        Outcome::Refused(why) => {
                            report.sends_refused += 1;
                            report
                                .notes
                                .push(format!("{} {op:?} refused: {why}", USERS[i]));
                        }
                    }
                    sent.push(s);
                }
                Some((o, None)) => {
                    report.other_ops += 1;
                    if let Outcome::Refused(why) = o {
                        report
                            .notes
                            .push(format!("{} {op:?} refused: {why}", USERS[i]));
                    }
                }
            }
        }
    }

    // Heal, make sure Dan is in, and let everyone sync until quiet.
    for p in &proxies {
        report.faults = add_stats(report.faults, p.stats());
        p.heal();
    }
    let dan_in = clients[0]
        .members(GROUP)
        .map(|m| m.iter().any(|m| m.username == USERS[DAN]))
        .unwrap_or(false);
    if !dan_in {
        // The first use of a connection cut during a partition can fail (a
        // broken pipe): sync again, as a user would, before judging.
        for _ in 0..3 {
            if let Ok(Ok(_)) = tokio::time::timeout(OP_TIMEOUT, clients[0].sync()).await {
                break;
            }
        }
        let still_out = !clients[0]
            .members(GROUP)
            .map(|m| m.iter().any(|m| m.username == USERS[DAN]))
            .unwrap_or(false);
        if still_out
            && let Ok(Err(e)) =
                tokio::time::timeout(OP_TIMEOUT, clients[0].add_member(GROUP, USERS[DAN])).await
        {
            report
                .failures
                .push(format!("adding dan after healing failed: {e}"));
        }
    }
    let mut quiet_rounds = 0;
    for _ in 0..MAX_HEAL_ROUNDS {
        let mut anything = false;
        for (i, c) in clients.iter_mut().enumerate() {
            match tokio::time::timeout(OP_TIMEOUT, c.sync()).await {
                Ok(Ok(entries)) => anything |= !entries.is_empty(),
                Ok(Err(e)) => {
                    anything = true;
                    report
                        .notes
                        .push(format!("{} sync after healing failed: {e}", USERS[i]));
                }
                Err(_) => {
                    anything = true;
                    report
                        .failures
                        .push(format!("{} sync after healing hung", USERS[i]));
                }
            }
            anything |= !c.outbox_payloads().unwrap().is_empty();
        }
        quiet_rounds = if anything { 0 } else { quiet_rounds + 1 };
        if quiet_rounds == 2 {
            break;
        }
    }
    if quiet_rounds < 2 {
        report
            .failures
            .push(format!("not quiet after {MAX_HEAL_ROUNDS} sync rounds"));
    }

    check(&clients, &sent, &mut report);

    for mut c in clients {
        c.disconnect().await;
    }
    drop(proxies);
    let _ = tokio::time::timeout(Duration::from_secs(30), server.stop()).await;
    report
}

fn add_stats(a: FaultStats, b: FaultStats) -> FaultStats {
    FaultStats {
        connections: a.connections + b.connections,
        refused: a.refused + b.refused,
        cuts_before: a.cuts_before + b.cuts_before,
        cuts_after: a.cuts_after + b.cuts_after,
        delays: a.delays + b.delays,
        redeliveries: a.redeliveries + b.redeliveries,
    }
}

fn check(clients: &[Client], sent: &[Sent], report: &mut SeedReport) {
    // Each client's text lines, and warnings.
    let texts: Vec<Vec<(String, HistoryEntry)>> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| texts_of(c, i))
        .collect();
    for (i, lines) in texts.iter().enumerate() {
        for (conv, e) in lines {
            if e.kind == EntryKind::System && e.text.starts_with("WARNING") {
                report
                    .failures
                    .push(format!("{} got a warning in {conv}: {}", USERS[i], e.text));
            }
            if e.kind == EntryKind::Text && conv.starts_with("Group:group-") {
                report.notes.push(format!(
                    "{} shows {} in a placeholder conversation {conv} (its name never arrived)",
                    USERS[i], e.text
                ));
            }
        }
    }
    let by_tag: BTreeMap<&str, &Sent> = sent.iter().map(|s| (s.tag.as_str(), s)).collect();
    // The reference order: each sender's own history.
    for (s_idx, lines) in texts.iter().enumerate() {
        let own: Vec<&str> = lines
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::Text && e.sender == USERS[s_idx])
            .map(|(_, e)| e.text.as_str())
            .filter(|t| t.contains('#'))
            .collect();
        for s in sent.iter().filter(|s| s.sender == s_idx) {
            if s.outcome == Outcome::Ok && !own.contains(&s.tag.as_str()) {
                report.failures.push(format!(
                    "{} was acknowledged but is gone from its sender's history",
                    s.tag
                ));
            }
        }
        for tag in &own {
            let Some(s) = by_tag.get(tag) else { continue };
            for &r in &s.recipients {
                let count = texts[r].iter().filter(|(_, e)| e.text == *tag).count();
                if count == 1 {
                    continue;
                }
                let what = match (count, &s.outcome) {
                    (0, Outcome::Ok) => "LOST (acknowledged)",
                    (0, _) => "never delivered although still in the sender's history",
                    _ => "DUPLICATED",
                };
                report.failures.push(format!(
                    "{tag} ({:?}) for {}: {what}, seen {count} times",
                    s.outcome, USERS[r]
                ));
            }
        }
        // Per-sender order at every recipient.
        for (r, lines) in texts.iter().enumerate() {
            if r == s_idx {
                continue;
            }
            let positions: Vec<usize> = lines
                .iter()
                .filter(|(_, e)| e.kind == EntryKind::Text && e.sender == USERS[s_idx])
                .filter_map(|(_, e)| own.iter().position(|t| *t == e.text))
                .collect();
            if positions.windows(2).any(|w| w[0] >= w[1]) {
                report.failures.push(format!(
                    "{} sees {}'s messages out of order: {:?}",
                    USERS[r],
                    USERS[s_idx],
                    positions.iter().map(|&p| own[p]).collect::<Vec<_>>()
                ));
            }
        }
    }
    // Lines from senders whose own history does not hold them.
    for (r, lines) in texts.iter().enumerate() {
        for (_, e) in lines {
            let Some(s_idx) = USERS.iter().position(|u| *u == e.sender) else {
                continue;
            };
            if s_idx == r || !e.text.contains('#') {
                continue;
            }
            if !texts[s_idx].iter().any(|(_, o)| o.text == e.text) {
                report.notes.push(format!(
                    "{} received {} which its sender's history does not hold (the send failed)",
                    USERS[r], e.text
                ));
            }
        }
    }

    // Epochs and rosters.
    let reference = clients[0].epoch_state(ConversationKind::Group, GROUP);
    let roster: BTreeSet<String> = clients[0]
        .members(GROUP)
        .map(|m| m.into_iter().map(|m| m.username).collect())
        .unwrap_or_default();
    if roster.len() != USERS.len() {
        report
            .failures
            .push(format!("group roster at the end is {roster:?}"));
    }
    for (i, c) in clients.iter().enumerate().skip(1) {
        let name = if c.groups().unwrap().iter().any(|g| g == GROUP) {
            GROUP.to_owned()
        } else {
            match c.groups().unwrap().first() {
                Some(g) => g.clone(),
                None => {
                    report
                        .failures
                        .push(format!("{} is in no group at the end", USERS[i]));
                    continue;
                }
            }
        };
        let state = c.epoch_state(ConversationKind::Group, &name);
        match (&reference, &state) {
            (Ok(a), Ok(b)) if a == b => {}
            (a, b) => report.failures.push(format!(
                "group epoch differs: ann {:?}, {} {:?}",
                a.as_ref().map(|s| s.0),
                USERS[i],
                b.as_ref().map(|s| s.0)
            )),
        }
        let theirs: BTreeSet<String> = c
            .members(&name)
            .map(|m| m.into_iter().map(|m| m.username).collect())
            .unwrap_or_default();
        if theirs != roster {
            report.failures.push(format!(
                "{} sees roster {theirs:?}, ann {roster:?}",
                USERS[i]
            ));
        }
    }
    for &(a, b) in &PAIRS {
        let sa = clients[a].epoch_state(ConversationKind::Direct, USERS[b]);
        let sb = clients[b].epoch_state(ConversationKind::Direct, USERS[a]);
        match (&sa, &sb) {
            (Ok(x), Ok(y)) if x == y => {}
            _ => report.failures.push(format!(
                "direct {}-{} epochs differ: {:?} vs {:?}",
                USERS[a],
                USERS[b],
                sa.as_ref().map(|s| s.0),
                sb.as_ref().map(|s| s.0)
            )),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_simulation_over_a_faulty_network() {
    sotto_testkit::init_tracing();
    let template = Template::build().await;
    let (first, count, budget) = match (env_u64("SOTTO_SIM_SEED"), env_u64("SOTTO_SIM_SEEDS")) {
        (Some(seed), _) => (seed, 1, None),
        (None, Some(n)) => (env_u64("SOTTO_SIM_FIRST_SEED").unwrap_or(0), n, None),
        (None, None) => (
            env_u64("SOTTO_SIM_FIRST_SEED").unwrap_or(0),
            DEFAULT_MAX_SEEDS,
            Some(DEFAULT_BUDGET),
        ),
    };
    let verbose = std::env::var("SOTTO_SIM_VERBOSE").is_ok();
    let start = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0u64;
    let mut totals = SeedReport::default();
    for seed in first..first.saturating_add(count) {
        if budget.is_some_and(|b| start.elapsed() >= b) {
            break;
        }
        let seed_start = Instant::now();
        let report = match tokio::time::timeout(SEED_TIMEOUT, run_seed(&template, seed)).await {
            Ok(report) => report,
            Err(_) => SeedReport {
                failures: vec![format!("the seed did not finish in {SEED_TIMEOUT:?}")],
                ..SeedReport::default()
            },
        };
        ran += 1;
        totals.sends_ok += report.sends_ok;
        totals.sends_network += report.sends_network;
        totals.sends_refused += report.sends_refused;
        totals.other_ops += report.other_ops;
        totals.faults = add_stats(totals.faults, report.faults);
        if verbose || !report.failures.is_empty() {
            eprintln!(
                "seed {seed}: {:.1}s, sends ok {} / network error {} / refused {}, faults {:?}",
                seed_start.elapsed().as_secs_f64(),
                report.sends_ok,
                report.sends_network,
                report.sends_refused,
                report.faults
            );
            for note in &report.notes {
                eprintln!("  note: {note}");
            }
        }
        if !report.failures.is_empty() {
            eprintln!("SEED {seed} FAILED (replay with SOTTO_SIM_SEED={seed}):");
            for f in &report.failures {
                eprintln!("  {f}");
            }
            failed.push(seed);
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "simulation: {ran} seeds from {first} in {:.1}s ({:.2}s per seed); sends ok {}, network error {}, refused {}; other ops {}; faults {:?}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / ran.max(1) as f64,
        totals.sends_ok,
        totals.sends_network,
        totals.sends_refused,
        totals.other_ops,
        totals.faults
    );
    assert!(ran > 0, "no seed ran");
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
