//! The workloads of `bench/TARGETS.md`, each against real `sotto-server`
//! processes, one module per workload:
//!
//! | id | module | what it measures |
//! |---|---|---|
//! | T8 | [`startup`] | cold start, idle RSS and binary size of a fresh server |
//! | W1 | [`idle_connections`] | memory and CPU of idle authenticated connections; login and reconnect rates, plain and over TLS |
//! | W2 | [`durable_delivery`] | 1:1 latency and the max sustainable rate with fsync before ack |
//! | W3 | [`offline_drain`] | how fast queued messages drain when every device comes back |
//! | W4 | [`group_fanout`] | bytes stored, last-recipient latency and deliveries/s per group size |
//! | W5 | [`crash_recovery`] | acknowledged messages lost (and duplicates) across `kill -9` |
//! | W6 | [`scale_out`] | W2's ladder on 1–3 nodes sharing PostgreSQL and NATS, and where the time goes |
//! | W8 | [`soak`] | RSS and database size under long steady traffic (flat after warm-up) |
//!
//! W7 is the criterion benches (`benches/mls.rs`) plus `sotto_bench::mls::wire_sizes`.
//! This module holds what the workloads share: the [`Testbed`] they run on
//! and the [`Server`] each one starts.

mod crash_recovery;
mod durable_delivery;
mod group_fanout;
mod idle_connections;
mod offline_drain;
mod scale_out;
mod soak;
mod startup;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use crash_recovery::{CrashRecovery, CrashRecoveryConfig, measure_crash_recovery};
pub use durable_delivery::{DurableDelivery, DurableDeliveryConfig, measure_durable_delivery};
pub use group_fanout::{GroupFanout, GroupFanoutConfig, measure_group_fanout};
pub use idle_connections::{
    IdleConnections, IdleConnectionsConfig, ProcessShare, TlsReconnect, measure_idle_connections,
};
pub use offline_drain::{OfflineDrain, OfflineDrainConfig, measure_offline_drain};
#[cfg(test)]
pub use scale_out::{CostBreakdown, ScaleOutRun};
pub use scale_out::{ScaleOut, ScaleOutConfig, measure_scale_out};
pub use soak::{Soak, SoakConfig, SoakSample, measure_soak};
pub use startup::{Startup, measure_startup};

use crate::load::{Shared, Tracker};
use crate::net::SourceAddrs;
use crate::procs::{self, Proc, SottoBin};
use crate::stats::Recorder;

/// What every workload (and baseline) runs on.
#[derive(Debug, Clone, Copy)]
pub struct Testbed<'a> {
    /// How to start sotto-server: the binary, and the core it is pinned to
    /// (baseline brokers are pinned to the same core).
    pub bin: &'a SottoBin,
    /// Scratch root: each server or broker gets a fresh data directory here.
    pub scratch: &'a Path,
    /// The loopback source addresses client sockets bind.
    pub src: &'a SourceAddrs,
}

impl Testbed<'_> {
    /// Starts a server on a fresh data directory `<scratch>/<name>` and a
    /// free port.
    async fn start_server(&self, name: &str) -> anyhow::Result<Server> {
        let data_dir = procs::scratch_dir(self.scratch, name)?;
        let port = procs::free_port()?;
        let process = self.bin.start(&data_dir, port, false).await?;
        Ok(Server {
            process,
            data_dir,
            port,
        })
    }
}

/// A sotto-server started for one workload.
#[derive(Debug)]
struct Server {
    process: Proc,
    /// Its own data directory (restarts and `--reuse-port` siblings reuse it).
    data_dir: PathBuf,
    port: u16,
}

impl Server {
    fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// Stops it gracefully (SIGTERM, then SIGKILL after 10 s).
    async fn stop(self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(10)).await
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Handles for pair tasks that report to `rec`, and the sender that stops
/// them.
fn pair_handles(rec: &Arc<Recorder>, tracker: Tracker) -> (Shared, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    (
        Shared {
            seq_base: 0,
            rec: Arc::clone(rec),
            tracker: Arc::new(tracker),
            stop: rx,
        },
        tx,
    )
}

/// Starts the tasks of freshly registered pairs, reporting to a new
/// recorder; lets their group-creation commits drain, then forgets them.
async fn start_registered_pairs(
    regs: Vec<(crate::sotto::PairKeys, crate::net::Ws, crate::net::Ws)>,
) -> (crate::load::Pairs, Arc<Recorder>) {
    let rec = Arc::new(Recorder::new(std::time::Instant::now()));
    let (sh, stop) = pair_handles(&rec, Tracker::default());
    let pairs = crate::sotto::start_pairs(
        regs.into_iter()
            .map(|(k, s, r)| (Arc::new(k), s, Some(r)))
            .collect(),
        &sh,
        stop,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = rec.take();
    (pairs, rec)
}
