//! W1: authenticated, idle WebSocket clients with heartbeats, ramped to the
//! per-process limit: server RSS per connection, logins/s, idle CPU, a
//! reconnect storm (plain, then over TLS on a restarted server), and several
//! processes sharing a port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use sotto_core::identity::Account;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::{Testbed, loopback};
use crate::net::{self, SourceAddrs, Transport, Ws};
use crate::procs::{self, Proc};
use crate::sotto;
use crate::tls::{self, BenchCa};

/// How often each idle client pings the server.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The ramp opens the connections in this many equal steps.
const RAMP_STEPS: usize = 5;

/// Logins in flight while the ramp (and the TLS phase's first open) runs.
const RAMP_IN_FLIGHT: usize = 128;

/// Logins in flight during a reconnect storm.
const STORM_IN_FLIGHT: usize = 512;

/// What W1 runs.
#[derive(Debug, Clone)]
pub struct IdleConnectionsConfig {
    /// Accounts registered, then held idle at once on one server process.
    pub connections: usize,
    /// How long server CPU is measured with every connection open and idle.
    pub idle_window: Duration,
    /// Server processes sharing one port (`--reuse-port`) in the last phase,
    /// each given up to 4,000 connections; 1 or fewer skips the phase.
    pub reuse_port_processes: usize,
}

/// W1's figures.
#[derive(Debug, Clone, Default)]
pub struct IdleConnections {
    /// Connections asked for.
    pub target: usize,
    /// Accounts registered before the ramp.
    pub registered: usize,
    pub register_per_s: f64,
    /// (connections, server RSS KiB) before the ramp and after each step.
    pub ramp: Vec<(usize, u64)>,
    /// Server RSS with every account registered and no connection open, KiB.
    pub rss_before_kib: u64,
    /// (RSS at the top of the ramp − `rss_before_kib`) / connections.
    pub rss_per_conn_kib: f64,
    /// Logins completed per second of ramp time (128 in flight).
    pub login_per_s: f64,
    /// Server CPU over `idle_window_s` with every connection open, % of a core.
    pub idle_cpu_pct: f64,
    pub idle_window_s: f64,
    /// Ping interval of each idle client.
    pub heartbeat_s: u64,
    /// Clients that logged in again when all dropped and reconnected at
    /// once over plain WebSocket.
    pub plain_reconnect_n: usize,
    /// How long that plain reconnect storm took (512 in flight).
    pub plain_reconnect_s: f64,
    /// CPU time of the server and of the generator during that storm, s.
    pub plain_server_cpu_s: f64,
    pub plain_generator_cpu_s: f64,
    /// The same data directory served over TLS: RSS per TLS connection and
    /// the TLS reconnect storm (T5).
    pub tls: Option<TlsReconnect>,
    /// Why the TLS phase produced no figures, if it failed.
    pub tls_failure: Option<String>,
    /// Registrations and logins that failed, over every phase.
    pub failures: usize,
    /// Several processes behind SO_REUSEPORT: how the connections spread.
    pub reuse_port: Vec<ProcessShare>,
    /// Connections open across the `--reuse-port` processes.
    pub reuse_port_conns: usize,
}

/// W1's TLS phase: the server restarted on the same data directory with
/// `--tls-cert/--tls-key`, every account logged in over TLS (128 in
/// flight), then all dropped and reconnected at once (512 in flight).
#[derive(Debug, Clone, Default)]
pub struct TlsReconnect {
    /// What the first handshake negotiated (version, cipher suite, key
    /// exchange), and the certificate the server presented.
    pub negotiated: String,
    pub certificate: String,
    /// Server RSS after the restart, before any connection, KiB.
    pub rss_before_kib: u64,
    /// Connections open over TLS, and server RSS with all of them open.
    pub connections: usize,
    pub rss_open_kib: u64,
    /// (`rss_open_kib` − `rss_before_kib`) / `connections`.
    pub rss_per_conn_kib: f64,
    /// TLS logins completed per second while they were opened (128 in flight).
    pub login_per_s: f64,
    /// Clients that logged in again over TLS when all dropped and
    /// reconnected at once.
    pub reconnect_n: usize,
    /// How long that TLS reconnect storm took (512 in flight).
    pub reconnect_s: f64,
    /// CPU time during the storm, seconds: the server's (pinned to its own
    /// core) and the generator's (which also runs the 19k client
    /// handshakes on its one core).
    pub server_cpu_s: f64,
    pub generator_cpu_s: f64,
}

/// One `--reuse-port` process's share of the connections.
#[derive(Debug, Clone, Default)]
pub struct ProcessShare {
    pub pid: u32,
    /// Open file descriptors: connections plus the server's own files.
    pub open_fds: usize,
    pub rss_kib: u64,
}

/// W1: registers `connections` accounts, ramps them up idle, measures idle
/// CPU, drops and reconnects them all at once; restarts the server with TLS
/// and does the same over TLS (the storm T5 is judged on); then
/// (optionally) spreads them over several processes on one port.
pub async fn measure_idle_connections(
    bed: &Testbed<'_>,
    config: &IdleConnectionsConfig,
) -> anyhow::Result<IdleConnections> {
    let n = config.connections;
    let server = bed.start_server("w1").await?;
    let a = server.addr();
    let mut out = IdleConnections {
        target: n,
        heartbeat_s: HEARTBEAT.as_secs(),
        idle_window_s: config.idle_window.as_secs_f64(),
        ..IdleConnections::default()
    };

    // Register every account first (connections closed), so the ramp below
    // measures connection memory, not database cache.
    let tag = sotto::run_tag();
    let accounts: Vec<Arc<_>> = (0..n)
        .map(|i| net::account(&format!("w{tag}{i}")).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    let (registered, failures) = register_all(a, bed.src, &accounts).await;
    out.registered = registered;
    out.failures += failures;
    out.register_per_s = out.registered as f64 / t0.elapsed().as_secs_f64().max(1e-3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.rss_before_kib = server.process.rss_kib();
    out.ramp.push((0, out.rss_before_kib));

    // Ramp in equal steps.
    let mut clients = IdleClients::new();
    let mut open_time = Duration::ZERO;
    let mut done = 0;
    for s in 1..=RAMP_STEPS {
        let upto = n * s / RAMP_STEPS;
        let Some(slice) = accounts.get(done..upto) else {
            break;
        };
        let t = Instant::now();
        out.failures += clients
            .open(&Transport::Plain, a, bed.src, slice, RAMP_IN_FLIGHT)
            .await;
        open_time += t.elapsed();
        done = upto;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.process.rss_kib();
        eprintln!("  W1 {} connections: server RSS {} KiB", clients.len(), rss);
        out.ramp.push((clients.len(), rss));
    }
    out.login_per_s = clients.len() as f64 / open_time.as_secs_f64().max(1e-3);
    if let Some(&(c, rss)) = out.ramp.last()
        && c > 0
    {
        out.rss_per_conn_kib = rss.saturating_sub(out.rss_before_kib) as f64 / c as f64;
    }
    out.idle_cpu_pct = cpu_pct_over(&server.process, config.idle_window).await;

    // Everyone drops and reconnects at once, plain WebSocket (for
    // comparison with the TLS storm below, and with earlier runs).
    clients.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut clients = IdleClients::new();
    let cpu = CpuClock::start(&server.process);
    let t = Instant::now();
    out.failures += clients
        .open(&Transport::Plain, a, bed.src, &accounts, STORM_IN_FLIGHT)
        .await;
    out.plain_reconnect_s = t.elapsed().as_secs_f64();
    (out.plain_server_cpu_s, out.plain_generator_cpu_s) = cpu.seconds(&server.process);
    out.plain_reconnect_n = clients.len();
    clients.close().await;
    let data_dir = server.data_dir.clone();
    server.stop().await?;

    match tls_phase(bed, &data_dir, &accounts, &mut out.failures).await {
        Ok(t) => out.tls = Some(t),
        Err(e) => {
            eprintln!("  W1 TLS phase failed: {e:#}");
            out.tls_failure = Some(format!("{e:#}"));
        }
    }

    if config.reuse_port_processes > 1 {
        spread_over_reuse_port(bed, &data_dir, &accounts, config, &mut out).await?;
    }
    Ok(out)
}

/// The same data directory served over TLS: every account logs in over TLS
/// (RSS per TLS connection), then all drop and reconnect at once (T5).
async fn tls_phase(
    bed: &Testbed<'_>,
    data_dir: &Path,
    accounts: &[Arc<Account>],
    failures: &mut usize,
) -> anyhow::Result<TlsReconnect> {
    let port = procs::free_port()?;
    let ca = BenchCa::generate()?;
    let files = ca.write_server_files(data_dir)?;
    let client = ca.client()?;
    let transport = Transport::Tls(client.clone());
    let server = bed
        .bin
        .start_with(data_dir, port, false, Some(&files))
        .await?;
    let a = loopback(port);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = TlsReconnect {
        certificate: tls::CERTIFICATE.to_owned(),
        rss_before_kib: server.rss_kib(),
        ..TlsReconnect::default()
    };

    let mut clients = IdleClients::new();
    let t = Instant::now();
    *failures += clients
        .open(&transport, a, bed.src, accounts, RAMP_IN_FLIGHT)
        .await;
    out.login_per_s = clients.len() as f64 / t.elapsed().as_secs_f64().max(1e-3);
    out.connections = clients.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    out.rss_open_kib = server.rss_kib();
    if out.connections > 0 {
        out.rss_per_conn_kib =
            out.rss_open_kib.saturating_sub(out.rss_before_kib) as f64 / out.connections as f64;
    }
    eprintln!(
        "  W1 {} TLS connections: server RSS {} KiB",
        out.connections, out.rss_open_kib
    );

    clients.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut clients = IdleClients::new();
    let cpu = CpuClock::start(&server);
    let t = Instant::now();
    *failures += clients
        .open(&transport, a, bed.src, accounts, STORM_IN_FLIGHT)
        .await;
    out.reconnect_s = t.elapsed().as_secs_f64();
    (out.server_cpu_s, out.generator_cpu_s) = cpu.seconds(&server);
    out.reconnect_n = clients.len();
    eprintln!(
        "  W1 TLS reconnect storm: {} clients in {:.2} s (server CPU {:.2} s, generator CPU {:.2} s)",
        out.reconnect_n, out.reconnect_s, out.server_cpu_s, out.generator_cpu_s
    );
    out.negotiated = client
        .negotiated()
        .unwrap_or_else(|| "no handshake completed".to_owned());
    clients.close().await;
    server.stop(Duration::from_secs(10)).await?;
    Ok(out)
}

/// Registers every account (at most 64 at once) and closes its connection;
/// returns (registered, failed).
async fn register_all(
    server: SocketAddr,
    src: &SourceAddrs,
    accounts: &[Arc<Account>],
) -> (usize, usize) {
    let (mut registered, mut failures) = (0, 0);
    let mut futs = futures_util::stream::iter(accounts.iter().map(|acc| {
        let acc = Arc::clone(acc);
        let s = src.pick_for_registration();
        async move {
            let (mut ws, _) = net::connect_authenticated(server, s, &acc, true).await?;
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(64);
    for _ in 0..accounts.len() {
        match futs.next().await {
            Some(Ok(())) => registered += 1,
            Some(Err(e)) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("  W1 register failed: {e:#}");
                }
            }
            None => break,
        }
    }
    (registered, failures)
}

/// CPU time of the server and of this generator since `start`.
#[derive(Debug, Clone, Copy)]
struct CpuClock {
    server: u64,
    generator: u64,
}

impl CpuClock {
    fn start(server: &Proc) -> Self {
        Self {
            server: server.cpu_ticks(),
            generator: procs::cpu_ticks(std::process::id()).unwrap_or(0),
        }
    }

    /// (server, generator) CPU seconds since `start`.
    fn seconds(self, server: &Proc) -> (f64, f64) {
        let tck = procs::clk_tck().max(1) as f64;
        let generator = procs::cpu_ticks(std::process::id()).unwrap_or(0);
        (
            server.cpu_ticks().saturating_sub(self.server) as f64 / tck,
            generator.saturating_sub(self.generator) as f64 / tck,
        )
    }
}

/// Server CPU over `window`, in % of one core.
async fn cpu_pct_over(server: &Proc, window: Duration) -> f64 {
    let tck = procs::clk_tck().max(1) as f64;
    let c0 = server.cpu_ticks();
    tokio::time::sleep(window).await;
    let c1 = server.cpu_ticks();
    100.0 * (c1.saturating_sub(c0) as f64 / tck) / window.as_secs_f64()
}

/// Several processes sharing one port (SO_REUSEPORT) and the data
/// directory of the first: how the kernel spreads the connections. Fills
/// `out.reuse_port` and `out.reuse_port_conns`, and adds to `out.failures`.
async fn spread_over_reuse_port(
    bed: &Testbed<'_>,
    data_dir: &Path,
    accounts: &[Arc<Account>],
    config: &IdleConnectionsConfig,
    out: &mut IdleConnections,
) -> anyhow::Result<()> {
    let processes = config.reuse_port_processes;
    let port = procs::free_port()?;
    let mut servers: Vec<Proc> = Vec::new();
    for _ in 0..processes {
        servers.push(bed.bin.start(data_dir, port, true).await?);
    }
    let m = config.connections.min(4000 * processes);
    let slice = accounts.get(..m).unwrap_or(&[]);
    let mut clients = IdleClients::new();
    out.failures += clients
        .open(
            &Transport::Plain,
            loopback(port),
            bed.src,
            slice,
            RAMP_IN_FLIGHT,
        )
        .await;
    out.reuse_port_conns = clients.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &servers {
        let open_fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid))
            .map(|d| d.count())
            .unwrap_or(0);
        out.reuse_port.push(ProcessShare {
            pid: s.pid,
            open_fds,
            rss_kib: s.rss_kib(),
        });
    }
    clients.close().await;
    for s in servers {
        s.stop(Duration::from_secs(10)).await?;
    }
    Ok(())
}

/// Logged-in clients held idle, each pinging every [`HEARTBEAT`], until
/// closed together.
#[derive(Debug)]
struct IdleClients {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl IdleClients {
    fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Logs in `accounts` (at most `in_flight` at once) and keeps each
    /// connection idle; returns how many logins failed.
    async fn open(
        &mut self,
        transport: &Transport,
        server: SocketAddr,
        src: &SourceAddrs,
        accounts: &[Arc<Account>],
        in_flight: usize,
    ) -> usize {
        let mut failures = 0;
        let mut futs = futures_util::stream::iter(accounts.iter().map(|a| {
            let a = Arc::clone(a);
            let s = src.pick();
            async move { net::connect_authenticated_over(transport, server, s, &a, false).await }
        }))
        .buffer_unordered(in_flight.max(1));
        for _ in 0..accounts.len() {
            match futs.next().await {
                Some(Ok((ws, _))) => self
                    .tasks
                    .push(tokio::spawn(hold_idle(ws, self.stop.subscribe()))),
                Some(Err(_)) => failures += 1,
                None => break,
            }
        }
        failures
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Closes every connection (waiting at most 2 s for each).
    async fn close(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

/// Keeps one connection open, pinging every [`HEARTBEAT`] (first after a
/// random offset, so pings spread out) until stopped or disconnected.
async fn hold_idle(mut ws: Ws, mut stop: watch::Receiver<bool>) {
    let offset =
        Duration::from_millis(rand::thread_rng().gen_range(0..HEARTBEAT.as_millis().max(1) as u64));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, HEARTBEAT);
    for _ in 0..1_000_000u64 {
        tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                break;
            }
            _ = tick.tick() => {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            m = ws.next() => {
                if !matches!(m, Some(Ok(_))) {
                    break;
                }
            }
        }
    }
}
