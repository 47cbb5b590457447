//! Child processes (sotto-server, brokers, the echo server) and what /proc
//! says about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::tls::ServerTlsFiles;

/// A running child process we started.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    /// Spawn until the ready line (or until the port accepted).
    pub start_time: Duration,
}

/// Whether `taskset` is there to pin processes to cores.
pub fn have_taskset() -> bool {
    std::process::Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command, pinned to `core` with taskset if available.
pub fn command(program: &Path, core: Option<usize>) -> Command {
    match core {
        Some(core) if have_taskset() => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

/// Spawns and waits (at most `wait`) for a stdout line containing `ready`;
/// the rest of stdout is drained in the background, stderr goes to `log`.
pub async fn spawn_ready(
    name: &str,
    mut cmd: Command,
    ready: &str,
    log: &Path,
    wait: Duration,
) -> anyhow::Result<Proc> {
    let log_file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let pid = child.id().context("child has no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(wait, async {
        for _ in 0..10_000 {
            match lines.next_line().await {
                Ok(Some(line)) if line.contains(ready) => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let start_time = started.elapsed();
    if !found {
        let _ = child.start_kill();
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        bail!(
            "{name} did not print {ready:?} within {wait:?}; its log: {}",
            tail.chars()
                .rev()
                .take(2000)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        );
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Proc {
        child,
        pid,
        start_time,
    })
}

/// Spawns and waits until `addr` accepts a TCP connection.
pub async fn spawn_port(
    name: &str,
    mut cmd: Command,
    addr: SocketAddr,
    log: &Path,
    wait: Duration,
) -> anyhow::Result<Proc> {
    let log_file = std::fs::File::create(log)?;
    let log_err = log_file.try_clone()?;
    cmd.stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let pid = child.id().context("child has no pid")?;
    let deadline = started + wait;
    for _ in 0..10_000 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(Proc {
                child,
                pid,
                start_time: started.elapsed(),
            });
        }
        if Instant::now() > deadline {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "{name} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.start_kill();
    bail!("{name} did not accept on {addr} within {wait:?}")
}

impl Proc {
    /// SIGKILL, then reap.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }

    /// SIGTERM (graceful), then SIGKILL if it has not exited in `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.child.start_kill()?;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        }
        Ok(())
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).unwrap_or(0)
    }

    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid).unwrap_or(0)
    }
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is
    // field 3; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// Clock ticks per second (getconf CLK_TCK; 100 on Linux if unknown).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// How to start sotto-server.
#[derive(Debug, Clone)]
pub struct SottoBin {
    pub path: PathBuf,
    pub core: Option<usize>,
}

impl SottoBin {
    /// Starts one server on `data` at `port`, plain WebSocket.
    pub async fn start(&self, data: &Path, port: u16, reuse_port: bool) -> anyhow::Result<Proc> {
        self.start_with(data, port, reuse_port, None).await
    }

    /// Starts one server on `data` at `port`, terminating TLS itself with
    /// `tls` (`--tls-cert`, `--tls-key`) when given.
    pub async fn start_with(
        &self,
        data: &Path,
        port: u16,
        reuse_port: bool,
        tls: Option<&ServerTlsFiles>,
    ) -> anyhow::Result<Proc> {
        let mut cmd = self.command(data, port);
        if reuse_port {
            cmd.arg("--reuse-port");
        }
        if let Some(tls) = tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        Self::spawn(cmd, data, port).await
    }

    /// Starts one node of a cluster: state in the PostgreSQL database at
    /// `store`, wake-ups over the NATS server at `bus`.
    pub async fn start_node(
        &self,
        data: &Path,
        port: u16,
        store: &str,
        bus: &str,
    ) -> anyhow::Result<Proc> {
        let mut cmd = self.command(data, port);
        cmd.arg("--store").arg(store).arg("--bus").arg(bus);
        Self::spawn(cmd, data, port).await
    }

    /// The flags every benchmarked server gets.
    fn command(&self, data: &Path, port: u16) -> Command {
        let mut cmd = command(&self.path, self.core);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(data)
            // Measure the server, not its abuse brakes.
            .arg("--no-rate-limits")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Spawns `cmd`, logging to a file in `data`, and waits until it listens.
    async fn spawn(cmd: Command, data: &Path, port: u16) -> anyhow::Result<Proc> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let log = data.join(format!("server-{port}-{stamp}.log"));
        spawn_ready(
            "sotto-server",
            cmd,
            "listening on",
            &log,
            Duration::from_secs(20),
        )
        .await
    }
}

/// utime + stime summed over every running process whose command name is
/// `comm` (all PostgreSQL backends, say), in clock ticks. A process that
/// exits between two readings takes its ticks with it.
pub fn cpu_ticks_of_command(comm: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .filter_map(cpu_ticks)
        .sum()
}
