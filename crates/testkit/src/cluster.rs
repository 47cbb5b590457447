//! Several server nodes in the test process, each on its own port, sharing
//! one PostgreSQL schema (a [`TestDatabase`]) and one NATS server (the
//! `--bus`): what an operator runs behind a load balancer.
//!
//! The NATS server is the one `SOTTO_TEST_NATS` names (e.g.
//! `nats://127.0.0.1:4222`), or a [`NatsServer`] the test starts itself.
//! Without `SOTTO_TEST_POSTGRES` and `SOTTO_TEST_NATS`, [`Cluster::start`]
//! says the test is skipped and returns `None`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sotto_server::ServerConfig;

use crate::TestServer;
use crate::postgres::TestDatabase;

/// The variable naming the test NATS server.
pub const NATS_ENV: &str = "SOTTO_TEST_NATS";

/// The NATS server `SOTTO_TEST_NATS` names, if it is set.
pub fn nats_configured() -> Option<String> {
    std::env::var(NATS_ENV)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Nodes sharing one database and one bus.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<TestServer>,
    bus: String,
    db: TestDatabase,
}

impl Cluster {
    /// `nodes` nodes on a fresh schema and the `SOTTO_TEST_NATS` server,
    /// or `None` (printing that `test` is skipped) without the variables.
    pub async fn start(test: &str, nodes: usize) -> Option<Self> {
        let bus = Self::bus_for(test)?;
        Self::start_on(test, nodes, &bus).await
    }

    /// Whether `test` can run (both variables set), printing that it is
    /// skipped otherwise; returns the `SOTTO_TEST_NATS` server.
    pub fn bus_for(test: &str) -> Option<String> {
        let bus = nats_configured();
        if bus.is_none() || crate::postgres::configured().is_none() {
            eprintln!(
                "{test}: skipped against PostgreSQL and NATS ({} and {NATS_ENV} are needed)",
                crate::postgres::ENV
            );
        }
        bus
    }

    /// `nodes` nodes on a fresh schema and the NATS server at `bus`, or
    /// `None` without `SOTTO_TEST_POSTGRES`.
    /// Rate limits are lifted (these tests load the nodes hard).
    pub async fn start_on(test: &str, nodes: usize, bus: &str) -> Option<Self> {
        Self::start_configured(test, nodes, bus, |config| {
            config.limits.lift_rate_limits();
        })
        .await
    }

    /// Like [`Cluster::start_on`] with the default limits, and `adjust`
    /// applied to every node's configuration after its store and bus.
    pub async fn start_configured(
        test: &str,
        nodes: usize,
        bus: &str,
        adjust: impl Fn(&mut ServerConfig) + Clone + Send + 'static,
    ) -> Option<Self> {
        let db = TestDatabase::create(test).await?;
        let mut started = Vec::with_capacity(nodes);
        // One after the other: the first creates the schema's tables.
        for _ in 0..nodes {
            let store = db.url().to_owned();
            let bus = bus.to_owned();
            let adjust = adjust.clone();
            started.push(
                TestServer::start_with(move |config| {
                    config.store = Some(store);
                    config.bus = Some(bus);
                    adjust(config);
                })
                .await,
            );
        }
        Some(Self {
            nodes: started,
            bus: bus.to_owned(),
            db,
        })
    }

    /// The URL clients of node `i` connect to.
    pub fn url(&self, i: usize) -> String {
        self.nodes.get(i).expect("no such node").url()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &TestServer {
        self.nodes.get(i).expect("no such node")
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The bus the nodes share.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// The shared schema.
    pub fn db(&self) -> &TestDatabase {
        &self.db
    }

    /// Stops every node gracefully.
    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// A `nats-server` process of the test's own on a free loopback port, to
/// kill and restart.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    child: Option<Child>,
}

/// Where `nats-server` is: on `PATH`, or `/usr/sbin/nats-server`.
fn nats_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

impl NatsServer {
    /// Starts one on a free port and waits until it takes connections.
    pub fn start() -> Self {
        let addr = crate::free_loopback_addr();
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("a port");
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`NatsServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(nats_binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (install the nats-server package)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
