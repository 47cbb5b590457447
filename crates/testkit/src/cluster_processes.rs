//! Several real `sotto-server` processes on one PostgreSQL database (each
//! `--store postgres://…` on its own port and data directory), behind a
//! tiny round-robin TCP proxy that skips dead backends, as a load balancer
//! in front of a cluster would. Clients given [`ClusterProcesses::url`]
//! reconnect to a live node after one is killed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::ServerProcess;

/// How long the proxy tries one backend before the next.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The nodes (a `None` was killed) and the proxy in front of them.
#[derive(Debug)]
pub struct ClusterProcesses {
    nodes: Vec<Option<ServerProcess>>,
    addrs: Vec<SocketAddr>,
    _data: Vec<TempDir>,
    proxy: RoundRobinProxy,
}

impl ClusterProcesses {
    /// Starts `count` nodes on the database at `store` (a
    /// [`crate::postgres::TestDatabase::url`]) with extra flags, one after
    /// another (the first migrates the schema), and the proxy.
    pub async fn start(store: &str, count: usize, args: &[&str]) -> Self {
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        let mut data = Vec::new();
        for _ in 0..count {
            let dir = TempDir::new().expect("data dir");
            let mut all = vec!["--store", store];
            all.extend_from_slice(args);
            let path = dir.path().to_path_buf();
            let owned: Vec<String> = all.iter().map(|a| (*a).to_owned()).collect();
            let node = tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = owned.iter().map(String::as_str).collect();
                ServerProcess::spawn_with_args(&path, &args)
            })
            .await
            .expect("spawn a node");
            addrs.push(addr_of(node.url()));
            nodes.push(Some(node));
            data.push(dir);
        }
        let proxy = RoundRobinProxy::start(addrs.clone()).await;
        Self {
            nodes,
            addrs,
            _data: data,
            proxy,
        }
    }

    /// The proxy's URL: what clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.proxy.addr())
    }

    /// Node `index`'s own address.
    pub fn node_addr(&self, index: usize) -> SocketAddr {
        *self.addrs.get(index).expect("no such node")
    }

    /// The index of the running node with process id `pid`.
    pub fn index_of_pid(&self, pid: u32) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.pid() == pid))
    }

    /// SIGKILLs node `index` (it stays dead).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut node) = self.nodes.get_mut(index).and_then(Option::take) {
            node.kill();
        }
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("a node's URL {url} is not http://ADDR: {e}"))
}

/// Hands each connection to the next backend in turn, skipping backends
/// that refuse it; bytes are copied both ways until either side closes.
#[derive(Debug)]
pub struct RoundRobinProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RoundRobinProxy {
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let backends = Arc::clone(&backends);
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for offset in 0..backends.len() {
                        let Some(backend) = backends.get((first + offset) % backends.len()) else {
                            return;
                        };
                        let connected = tokio::time::timeout(
                            BACKEND_CONNECT_TIMEOUT,
                            TcpStream::connect(backend),
                        )
                        .await;
                        if let Ok(Ok(mut outbound)) = connected {
                            let mut inbound = inbound;
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                    // Every backend is down: the client sees the close.
                });
            }
        });
        Self { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RoundRobinProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
