//! `sotto-bench`: Sotto's load generator and benchmark report.
//!
//! `cargo run --release -p sotto-bench -- --all` runs every workload and the
//! baselines and writes `bench/REPORT.md` (plus SVG plots); `--quick` is a
//! shorter version; `--smoke` runs tiny loads for CI and only checks that
//! the tool works (it asserts nothing about speed).

// Protocol messages are built with `..Default::default()` on purpose: the
// sealed-sender work adds fields (send_token, next_token_hash), and the bench
// must keep compiling while it lands.
#![allow(clippy::needless_update)]

mod baselines;
mod fixed_drain;
mod fixed_fanout;
mod load;
mod net;
mod procs;
mod report;
mod sotto;
mod stats;
mod tls;
mod workloads;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::baselines::Kind;
use crate::net::SourceAddrs;
use crate::procs::SottoBin;
use crate::report::Results;
use crate::workloads::{
    CrashRecoveryConfig, DurableDeliveryConfig, GroupFanoutConfig, IdleConnectionsConfig,
    OfflineDrainConfig, ScaleOutConfig, SoakConfig, Testbed,
};

/// Sotto's load generator: drives real sotto-server processes (and baseline
/// brokers) over loopback and writes bench/REPORT.md.
#[derive(Debug, Parser)]
#[command(name = "sotto-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Every workload at full size, with baselines (about 35 minutes).
    #[arg(long, conflicts_with_all = ["quick", "smoke"])]
    all: bool,
    /// Every workload at reduced size, with baselines (a few minutes).
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// Tiny loads, no baselines, no criterion: checks the tool runs (CI).
    #[arg(long)]
    smoke: bool,
    /// The sotto-server binary (default: next to this one, built first with
    /// this binary's cargo profile so it matches the checked-out code).
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Where REPORT.md and the plots go (default: bench/ in the workspace;
    /// for --smoke a temporary directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Skip W7 (the criterion MLS benches, run through `cargo bench`).
    #[arg(long)]
    no_criterion: bool,
    /// Run only these workloads (comma-separated: t8,w1,w2,w3,w4,w5,w6,w7,w8,baselines).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the bare WebSocket echo server (the transport-floor baseline).
    EchoServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// A fixed group fan-out against a running server, for counting its
    /// instructions (see `src/fixed_fanout.rs`).
    FixedFanout {
        /// The server's address (plain WebSocket, started with
        /// `--no-rate-limits`).
        #[arg(long)]
        server: SocketAddr,
        /// Recipient devices in the group.
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Messages sent to the group.
        #[arg(long, default_value_t = 10)]
        messages: u64,
        /// A shell command run once the group exists and the registrations
        /// settled, before the sends (e.g. `callgrind_control -z PID`).
        #[arg(long, value_name = "COMMAND")]
        before_sends: Option<String>,
        /// A shell command run once every recipient is done.
        #[arg(long, value_name = "COMMAND")]
        after_sends: Option<String>,
    },
    /// W3's offline drain at a fixed size against a running server, for
    /// counting its instructions (see `src/fixed_drain.rs`).
    FixedDrain {
        /// The server's address (plain WebSocket, started with
        /// `--no-rate-limits`).
        #[arg(long)]
        server: SocketAddr,
        /// Offline devices, each with its own backlog.
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Messages queued for each device.
        #[arg(long, default_value_t = 100)]
        messages: u64,
        /// A shell command run once the backlog is queued, before the
        /// drain (e.g. `callgrind_control -z PID`).
        #[arg(long, value_name = "COMMAND")]
        before_drain: Option<String>,
        /// A shell command run once the drain is done.
        #[arg(long, value_name = "COMMAND")]
        after_drain: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Smoke,
    Quick,
    All,
}

/// Runs a fixed workload made for counting the server's instructions
/// (`fixed-fanout`, `fixed-drain`) on two worker threads, with as many
/// file descriptors as the system allows.
fn run_counted(workload: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(workload));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::FixedFanout {
        server,
        devices,
        messages,
        before_sends,
        after_sends,
    }) = &args.command
    {
        return run_counted(fixed_fanout::run(
            *server,
            *devices,
            *messages,
            before_sends.as_deref(),
            after_sends.as_deref(),
        ));
    }
    if let Some(Cmd::FixedDrain {
        server,
        devices,
        messages,
        before_drain,
        after_drain,
    }) = &args.command
    {
        return run_counted(fixed_drain::run(
            *server,
            *devices,
            *messages,
            before_drain.as_deref(),
            after_drain.as_deref(),
        ));
    }
    if let Some(Cmd::EchoServer { listen }) = args.command {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(baselines::echo_server(listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cores online (not the affinity mask: the bench pins itself).
fn nproc() -> usize {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let mut n = 0usize;
    for range in online.trim().split(',').filter(|r| !r.is_empty()) {
        n += match range.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) => b.saturating_sub(a) + 1,
                _ => 0,
            },
            None => 1,
        };
    }
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn run_main(args: Args) -> anyhow::Result<()> {
    let mode = if args.smoke {
        Mode::Smoke
    } else if args.quick {
        Mode::Quick
    } else if args.all {
        Mode::All
    } else {
        bail!("choose --all, --quick or --smoke (see --help)");
    };
    // Connections are files: lift the soft limit to the hard one.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    // Server on core 0, generator on core 1 (when there are two cores and
    // taskset exists). Pin before the runtime starts so every thread
    // inherits it.
    let pin = nproc() >= 2 && procs::have_taskset();
    if pin {
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-cp", "1", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args, mode, pin, nofile))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn server_bin(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.server_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("sotto-server");
    // Always (re)build it with this binary's profile: `cargo run -p
    // sotto-bench` builds only the bench, and a stale server binary once
    // made a whole report measure old code. A no-op when it is up to date.
    let profile = match exe
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
    {
        Some("debug") | None => "dev".to_owned(),
        Some(dir) => dir.to_owned(),
    };
    eprintln!("building sotto-server (profile {profile})...");
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--locked",
            "--profile",
            &profile,
            "-p",
            "sotto-server",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("cargo build --profile {profile} -p sotto-server failed");
    }
    Ok(beside)
}

fn machine(pin: bool, nofile: u64) -> Vec<(String, String)> {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let root = workspace_root();
    let root_s = root.to_string_lossy().into_owned();
    let commit = sh("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"]);
    let dirty = sh(
        "git",
        &[
            "-C",
            &root_s,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    );
    vec![
        ("cores (nproc)".into(), nproc().to_string()),
        ("CPU".into(), cpu),
        (
            "memory".into(),
            mem.replace("MemTotal:", "").trim().to_owned(),
        ),
        (
            "disk (/tmp, where data dirs live)".into(),
            sh("df", &["-hT", "/tmp"])
                .lines()
                .last()
                .unwrap_or("")
                .to_owned(),
        ),
        ("kernel".into(), sh("uname", &["-sr"])),
        ("rustc".into(), sh("rustc", &["--version"])),
        (
            "git commit".into(),
            format!(
                "{commit}{}",
                if dirty.is_empty() {
                    String::new()
                } else {
                    format!(
                        " with local changes to: {}",
                        dirty
                            .lines()
                            .filter_map(|l| l.split_whitespace().last())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        ),
        (
            "open files limit (bench process)".into(),
            nofile.to_string(),
        ),
        ("pinned with taskset".into(), pin.to_string()),
    ]
}

/// Runs the criterion benches through cargo and parses bencher-format lines.
async fn run_criterion(sizes: &str, budget: Duration) -> anyhow::Result<Vec<(String, f64)>> {
    let mut cmd = tokio::process::Command::new("cargo");
    cmd.args([
        "bench",
        "-p",
        "sotto-bench",
        "--bench",
        "mls",
        "--",
        "--output-format",
        "bencher",
    ])
    .current_dir(workspace_root())
    .env("SOTTO_BENCH_MLS_SIZES", sizes)
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(budget, cmd.output())
        .await
        .context("criterion run exceeded its time budget")??;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        // test mls/encrypt/2 ... bench:       12345 ns/iter (+/- 67)
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, tail)) = rest.split_once(" ... bench:") else {
            continue;
        };
        let ns: String = tail
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        if let Ok(ns) = ns.parse::<f64>() {
            rows.push((name.trim().to_owned(), ns));
        }
    }
    if rows.is_empty() {
        bail!("criterion printed no results (exit {})", out.status);
    }
    Ok(rows)
}

async fn run(args: Args, mode: Mode, pin: bool, nofile: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let want =
        |w: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(w));
    let bin = SottoBin {
        path: server_bin(&args)?,
        core: pin.then_some(0),
    };
    let self_exe = std::env::current_exe()?;
    let scratch = std::env::temp_dir().join(format!("sotto-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let out_dir = match (&args.out, mode) {
        (Some(d), _) => d.clone(),
        (None, Mode::Smoke) => scratch.join("report"),
        (None, _) => workspace_root().join("bench"),
    };
    // Rotate source addresses between runs (TIME_WAIT holds ports 60 s).
    let first_host = 2 + (std::process::id() % 200) * 256;
    let src = SourceAddrs::new(first_host, 64);
    let bed = Testbed {
        bin: &bin,
        scratch: &scratch,
        src: &src,
    };
    let mut r = Results {
        mode: match mode {
            Mode::Smoke => "--smoke",
            Mode::Quick => "--quick",
            Mode::All => "--all",
        }
        .into(),
        machine: machine(pin, nofile),
        core_split: if pin {
            "server (and each baseline broker) pinned to core 0, load generator pinned to core 1 (taskset); they never share a core".into()
        } else {
            "not pinned (taskset missing or one core): client and server share the cores".into()
        },
        ..Results::default()
    };
    let (smoke, quick) = (mode == Mode::Smoke, mode == Mode::Quick);
    let pick = |s: usize, q: usize, a: usize| {
        if smoke {
            s
        } else if quick {
            q
        } else {
            a
        }
    };

    if want("t8") {
        eprintln!("T8: cold start, idle RSS, binary size");
        match workloads::measure_startup(&bed, pick(1, 3, 5)).await {
            Ok(t) => r.startup = Some(t),
            Err(e) => r.errors.push(format!("T8: {e:#}")),
        }
    }
    if want("w1") {
        eprintln!("W1: idle connections");
        let config = IdleConnectionsConfig {
            // 19,000 is the server's default connection cap and fits in the
            // generator's own 20,000 open files.
            connections: pick(50, 2_000, 19_000),
            idle_window: Duration::from_secs(pick(1, 3, 10) as u64),
            reuse_port_processes: pick(2, 2, 3),
        };
        match workloads::measure_idle_connections(&bed, &config).await {
            Ok(w) => r.idle_connections = Some(w),
            Err(e) => r.errors.push(format!("W1: {e:#}")),
        }
    }
    let rates: Vec<f64> = match mode {
        Mode::Smoke => vec![200.0, 500.0],
        Mode::Quick => vec![1_000.0, 3_000.0, 5_000.0, 10_000.0, 20_000.0],
        Mode::All => vec![
            1_000.0, 2_000.0, 3_000.0, 5_000.0, 7_000.0, 10_000.0, 14_000.0, 20_000.0, 30_000.0,
            50_000.0,
        ],
    };
    let ladder = DurableDeliveryConfig {
        pairs: pick(10, 100, 200),
        rates,
        step: Duration::from_secs(pick(1, 2, 5) as u64),
    };
    if want("w2") {
        eprintln!("W2: 1:1 durable delivery, {} pairs", ladder.pairs);
        match workloads::measure_durable_delivery(&bed, &ladder).await {
            Ok(w) => r.durable_delivery = Some(w),
            Err(e) => r.errors.push(format!("W2: {e:#}")),
        }
    }
    if !smoke && want("baselines") {
        let mut baseline_ladder = ladder.clone();
        baseline_ladder.rates.push(100_000.0);
        for kind in [Kind::Echo, Kind::Mosquitto, Kind::Nats] {
            eprintln!("baseline {kind:?}");
            let b = baselines::run(kind, &bed, &self_exe, &baseline_ladder).await;
            r.baselines.push(b);
        }
    }
    if want("w3") {
        let (devices, msgs) = (pick(20, 200, 2_000), pick(1_000, 20_000, 200_000) as u64);
        // Filling the mailboxes is not what W3 measures: enqueue at the
        // highest rate W2 saw the server absorb (bounded to 30 s of filling).
        let rate = r
            .durable_delivery
            .as_ref()
            .and_then(|w| w.steps.iter().map(|s| s.achieved).reduce(f64::max))
            .filter(|m| *m > 0.0)
            .unwrap_or(2_000.0)
            .clamp(1_000.0, 20_000.0);
        let msgs = msgs.min((rate * 30.0) as u64);
        eprintln!("W3: offline drain, {msgs} messages for {devices} devices");
        let config = OfflineDrainConfig {
            devices,
            messages: msgs,
            enqueue_rate: rate,
        };
        match workloads::measure_offline_drain(&bed, &config).await {
            Ok(w) => r.offline_drain = Some(w),
            Err(e) => r.errors.push(format!("W3: {e:#}")),
        }
    }
    if want("w4") {
        let config = GroupFanoutConfig {
            group_sizes: if smoke { vec![10] } else { vec![10, 100, 1000] },
            latency_rate: 20.0,
            latency_window: Duration::from_secs(pick(1, 2, 5) as u64),
            burst_deliveries: pick(2_000, 100_000, 300_000) as u64,
        };
        eprintln!("W4: group fan-out {:?}", config.group_sizes);
        match workloads::measure_group_fanout(&bed, &config).await {
            Ok(w) => r.group_fanout = w,
            Err(e) => r.errors.push(format!("W4: {e:#}")),
        }
    }
    if want("w5") {
        let config = CrashRecoveryConfig {
            cycles: pick(2, 5, 20),
            pairs: pick(5, 20, 20),
            rate: pick(500, 2_000, 2_000) as f64,
        };
        eprintln!("W5: {} crash cycles", config.cycles);
        match workloads::measure_crash_recovery(&bed, &config).await {
            Ok(w) => r.crash_recovery = Some(w),
            Err(e) => r.errors.push(format!("W5: {e:#}")),
        }
    }
    if want("w6") {
        let config = ScaleOutConfig {
            nodes: if smoke { vec![2] } else { vec![1, 2, 3] },
            pairs: pick(4, 50, 100),
            rates: match mode {
                Mode::Smoke => vec![100.0],
                Mode::Quick => vec![500.0, 1_000.0, 2_000.0, 4_000.0],
                Mode::All => vec![
                    500.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0, 6_000.0, 8_000.0, 12_000.0,
                ],
            },
            step: Duration::from_secs(pick(1, 2, 5) as u64),
            reference_rate: pick(100, 1_000, 1_000) as f64,
            reference_for: Duration::from_secs(pick(1, 3, 10) as u64),
        };
        eprintln!("W6: scale-out on {:?} node(s)", config.nodes);
        match workloads::measure_scale_out(&bed, &config).await {
            Ok(w) => r.scale_out = Some(w),
            Err(e) => r.errors.push(format!("W6: {e:#}")),
        }
    }
    if want("w7") {
        let sizes: Vec<usize> = pick(0, 1, 2)
            .checked_sub(0)
            .map(|m| match m {
                0 => vec![2, 10],
                1 => vec![2, 10, 100],
                _ => vec![2, 10, 100, 1000],
            })
            .unwrap_or_default();
        eprintln!("W7: MLS wire sizes {sizes:?}");
        for &s in &sizes {
            match tokio::task::spawn_blocking(move || sotto_bench::mls::wire_sizes(s)).await {
                Ok(Ok(w)) => r.mls_wire_sizes.push(w),
                Ok(Err(e)) => r.errors.push(format!("W7 sizes {s}: {e:#}")),
                Err(e) => r.errors.push(format!("W7 sizes {s}: {e}")),
            }
        }
        let list = sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if smoke || args.no_criterion {
            r.mls_note = "Criterion not run in this mode; run `cargo bench -p sotto-bench --bench mls` (sizes via SOTTO_BENCH_MLS_SIZES).".into();
        } else {
            eprintln!("W7: criterion (cargo bench, sizes {list})");
            r.mls_note = format!(
                "`cargo bench -p sotto-bench --bench mls` with SOTTO_BENCH_MLS_SIZES={list}: openmls 0.9.2, ciphersuite 0x0001 \
                 (X25519, AES-128-GCM, SHA-256, Ed25519), OpenMlsRustCrypto with in-memory storage (the real client adds a SQLite \
                 transaction per operation on top). 10 samples per benchmark, 1 s each: a short run. commit_* include clearing the \
                 pending commit; join includes verifying the whole ratchet tree from the Welcome; decrypt is one member processing \
                 one application message. Ran on the generator's core."
            );
            match run_criterion(&list, Duration::from_secs(pick(60, 420, 600) as u64)).await {
                Ok(rows) => r.mls_timings = rows,
                Err(e) => r.errors.push(format!("W7 criterion: {e:#}")),
            }
        }
    }
    // W8 last: it measures memory and file size at a fixed rate, not CPU
    // time, so it is the workload least disturbed by a busy machine.
    if want("w8") {
        let config = SoakConfig {
            pairs: pick(10, 500, 5_000),
            rate: pick(200, 1_000, 2_000) as f64,
            duration: Duration::from_secs(pick(4, 120, 1_200) as u64),
            window: Duration::from_secs(pick(1, 5, 15) as u64),
        };
        eprintln!(
            "W8: soak, {} devices at {} msg/s for {} s",
            config.pairs * 2,
            config.rate,
            config.duration.as_secs()
        );
        match workloads::measure_soak(&bed, &config).await {
            Ok(w) => r.soak = Some(w),
            Err(e) => r.errors.push(format!("W8: {e:#}")),
        }
    }
    r.wall_s = started.elapsed().as_secs_f64();
    report::write(&out_dir, &r)?;
    eprintln!("wrote {}", out_dir.join("REPORT.md").display());
    // Data directories are scratch: keep only a report written there.
    if let Ok(entries) = std::fs::read_dir(&scratch) {
        for e in entries.flatten() {
            if e.file_name() != "report" {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if mode == Mode::Smoke {
        smoke_check(&r)?;
        eprintln!("smoke: ok");
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    if !r.errors.is_empty() {
        bail!("{} workload(s) failed; see the report", r.errors.len());
    }
    Ok(())
}

/// The smoke run asserts that the tool produced numbers, not how fast.
fn smoke_check(r: &Results) -> anyhow::Result<()> {
    let t8 = r.startup.as_ref().context("T8 produced nothing")?;
    if t8.cold_start_ms <= 0.0 || t8.binary_bytes == 0 {
        bail!("T8 numbers missing");
    }
    let w1 = r.idle_connections.as_ref().context("W1 produced nothing")?;
    if w1.ramp.last().is_none_or(|l| l.0 == 0) {
        bail!("W1 opened no connection");
    }
    match &w1.tls {
        Some(tls) if tls.reconnect_n > 0 => {}
        Some(_) => bail!("W1 reconnected nobody over TLS"),
        None => bail!(
            "W1's TLS phase failed: {}",
            w1.tls_failure.as_deref().unwrap_or("no figures")
        ),
    }
    let w2 = r.durable_delivery.as_ref().context("W2 produced nothing")?;
    if w2.steps.iter().all(|s| s.figures.delivered == 0) {
        bail!("W2 delivered nothing");
    }
    if r.group_fanout.iter().all(|g| g.deliveries == 0) {
        bail!("W4 delivered nothing");
    }
    let w5 = r.crash_recovery.as_ref().context("W5 produced nothing")?;
    if w5.acked == 0 {
        bail!("W5 acknowledged nothing");
    }
    if w5.lost > 0 {
        bail!("W5 lost {} acknowledged messages", w5.lost);
    }
    if r.offline_drain.as_ref().is_none_or(|w| w.drained == 0) {
        bail!("W3 drained nothing");
    }
    let w6 = r.scale_out.as_ref().context("W6 produced nothing")?;
    if w6.skipped.is_none()
        && w6
            .runs
            .iter()
            .all(|run| run.steps.iter().all(|s| s.figures.delivered == 0))
    {
        bail!("W6 delivered nothing");
    }
    let w8 = r.soak.as_ref().context("W8 produced nothing")?;
    if w8
        .samples
        .iter()
        .all(|s| s.delivered == 0 || s.rss_kib == 0)
    {
        bail!("W8 delivered nothing or read no RSS");
    }
    Ok(())
}
