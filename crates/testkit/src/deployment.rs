//! One end-to-end test body, run against each way Sotto is deployed: the
//! embedded SQLite server ([`Backend::Sqlite`]) and three nodes on one
//! PostgreSQL schema and one NATS server ([`Backend::Cluster`]).
//!
//! A test asks its [`Deployment`] for a server URL per client
//! ([`Deployment::url`]); on a cluster each call names the next node, so
//! the clients of one test are spread across the nodes and every message,
//! commit, Welcome and link crosses from one node to another.
//! [`crate::on_each_backend!`] writes the two `#[tokio::test]`s:
//!
//! ```ignore
//! sotto_testkit::on_each_backend! {
//!     /// Bob gets what Alice sent while he was offline.
//!     async fn offline_delivery(deployment) {
//!         let (mut alice, _a) = register(&deployment.url(), "alice").await;
//!         // …
//!     }
//! }
//! ```
//!
//! gives `offline_delivery::sqlite` and `offline_delivery::cluster`; the
//! cluster one says it is skipped without `SOTTO_TEST_POSTGRES` and
//! `SOTTO_TEST_NATS`.

use std::sync::atomic::{AtomicUsize, Ordering};

use sotto_server::ServerConfig;

use crate::TestServer;
use crate::cluster::Cluster;

/// How many nodes a [`Backend::Cluster`] deployment runs.
pub const CLUSTER_NODES: usize = 3;

/// Which deployment a test body runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One server, its embedded SQLite store.
    Sqlite,
    /// [`CLUSTER_NODES`] nodes on PostgreSQL and NATS.
    Cluster,
}

#[derive(Debug)]
enum Servers {
    Single(TestServer),
    Cluster(Cluster),
}

/// The servers of one test, handing out a URL per client.
#[derive(Debug)]
pub struct Deployment {
    servers: Servers,
    /// The node the next [`Deployment::url`] names.
    next: AtomicUsize,
}

impl Deployment {
    /// Starts `backend` with the default configuration, or returns `None`
    /// (having said that `test` is skipped) for a cluster without the
    /// environment variables.
    pub async fn start(backend: Backend, test: &str) -> Option<Self> {
        Self::start_with(backend, test, |_| {}).await
    }

    /// Like [`Deployment::start`], with `adjust` applied to every node's
    /// configuration (after the store and bus are set).
    pub async fn start_with(
        backend: Backend,
        test: &str,
        adjust: impl Fn(&mut ServerConfig) + Clone + Send + 'static,
    ) -> Option<Self> {
        let servers = match backend {
            Backend::Sqlite => Servers::Single(TestServer::start_with(adjust).await),
            Backend::Cluster => {
                let bus = Cluster::bus_for(test)?;
                Servers::Cluster(
                    Cluster::start_configured(test, CLUSTER_NODES, &bus, adjust).await?,
                )
            }
        };
        Some(Self {
            servers,
            next: AtomicUsize::new(0),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.servers {
            Servers::Single(_) => Backend::Sqlite,
            Servers::Cluster(_) => Backend::Cluster,
        }
    }

    /// The URL for the next client: on a cluster, the next node in turn.
    pub fn url(&self) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.node(i % self.node_count()).url()
    }

    /// How many nodes serve this deployment.
    pub fn node_count(&self) -> usize {
        match &self.servers {
            Servers::Single(_) => 1,
            Servers::Cluster(cluster) => cluster.len(),
        }
    }

    /// Node `i` (the one server, for SQLite).
    pub fn node(&self, i: usize) -> &TestServer {
        match &self.servers {
            Servers::Single(server) => server,
            Servers::Cluster(cluster) => cluster.node(i),
        }
    }

    /// The cluster, if this is one.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.servers {
            Servers::Single(_) => None,
            Servers::Cluster(cluster) => Some(cluster),
        }
    }

    /// The SQLite server, if this is one (for tests that look at its file).
    pub fn single(&self) -> Option<&TestServer> {
        match &self.servers {
            Servers::Single(server) => Some(server),
            Servers::Cluster(_) => None,
        }
    }

    /// Stops every server gracefully.
    pub async fn stop(self) {
        match self.servers {
            Servers::Single(server) => server.stop().await,
            Servers::Cluster(cluster) => cluster.stop().await,
        }
    }
}

/// Writes a test module with one `#[tokio::test]` per backend running the
/// same body: `NAME::sqlite` and `NAME::cluster` (see [`Deployment`]).
///
/// `async fn NAME(deployment) { … }` starts each backend with the default
/// configuration; `async fn NAME(deployment, |config| …) { … }` adjusts
/// every node's. `#[cluster_ignore = "why"]` before `async` marks the
/// cluster variant ignored, with the reason.
#[macro_export]
macro_rules! on_each_backend {
    () => {};
    (
        $(#[doc = $doc:expr])*
        #[cluster_ignore = $why:literal]
        async fn $name:ident($deployment:ident $(, $adjust:expr)?) $body:block
        $($rest:tt)*
    ) => {
        $crate::on_each_backend!(@one [$(#[doc = $doc])*] [#[ignore = $why]] $name $deployment [$($adjust)?] $body);
        $crate::on_each_backend!($($rest)*);
    };
    (
        $(#[doc = $doc:expr])*
        async fn $name:ident($deployment:ident $(, $adjust:expr)?) $body:block
        $($rest:tt)*
    ) => {
        $crate::on_each_backend!(@one [$(#[doc = $doc])*] [] $name $deployment [$($adjust)?] $body);
        $crate::on_each_backend!($($rest)*);
    };
    (@one [$($doc:tt)*] [$($ignore:tt)*] $name:ident $deployment:ident [$($adjust:expr)?] $body:block) => {
        $($doc)*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run_on_backend($deployment: $crate::deployment::Deployment) $body

            async fn start_backend(
                backend: $crate::deployment::Backend,
            ) -> Option<$crate::deployment::Deployment> {
                let test = module_path!();
                $crate::on_each_backend!(@start backend test [$($adjust)?])
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let deployment = start_backend($crate::deployment::Backend::Sqlite)
                    .await
                    .expect("SQLite always starts");
                run_on_backend(deployment).await;
            }

            $($ignore)*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                if let Some(deployment) = start_backend($crate::deployment::Backend::Cluster).await {
                    run_on_backend(deployment).await;
                }
            }
        }
    };
    (@start $backend:ident $test:ident []) => {
        $crate::deployment::Deployment::start($backend, $test).await
    };
    (@start $backend:ident $test:ident [$adjust:expr]) => {
        $crate::deployment::Deployment::start_with($backend, $test, $adjust).await
    };
}
