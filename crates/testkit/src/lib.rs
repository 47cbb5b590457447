//! Fixtures for every Sotto test that needs a server: a real server
//! in-process on port 0 ([`TestServer`]), the real `sotto-server` binary as a
//! child process ([`ServerProcess`]), registered clients ([`register`]), the
//! raw wire protocol for protocol tests ([`wire`]), a hostile server
//! ([`hostile`]) and a hostile member ([`mallory`]).
//!
//! ```no_run
//! # async fn demo() {
//! let server = sotto_testkit::TestServer::start().await;
//! let (mut alice, _dir) = sotto_testkit::register(&server.url(), "alice").await;
//! # }
//! ```

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)] // test fixtures fail loudly

pub mod burst;
pub mod cluster;
pub mod cluster_processes;
pub mod cutting;
pub mod deployment;
pub mod directory_file;
pub mod faulty;
pub mod hostile;
pub mod mallory;
pub mod postgres;
pub mod server_log;
pub mod tls;
pub mod wire;
pub use deployment::{Backend, Deployment};
pub use hostile::{ConnView, HostileProxy, Reorder, Tamper};
pub use mallory::Mallory;

use sotto_client::Client;
use sotto_server::{Server, ServerConfig};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running inside the test process on an ephemeral port, with its
/// own data directory.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    data_dir: PathBuf,
    /// Set when the server terminates TLS: its certificate files.
    tls: Option<sotto_server::tls::TlsConfig>,
    _temp: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with a fresh temporary data directory.
    pub async fn start() -> Self {
        init_tracing();
        let temp = TempDir::new().expect("temp dir");
        let mut server = Self::start_in(temp.path()).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server with a fresh temporary data directory and adjusted
    /// configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        init_tracing();
        let temp = TempDir::new().expect("temp dir");
        let mut server = Self::start_in_with(temp.path(), adjust).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server that terminates TLS with a certificate for loopback
    /// issued by `ca`, re-reading its files every 100 ms. Its
    /// [`TestServer::url`] is `https://127.0.0.1:PORT`; the certificate
    /// files are in [`TestServer::tls_dir`].
    pub async fn start_tls(ca: &tls::TestCa) -> Self {
        Self::start_tls_with(ca.issue("sotto test server"), |_| {}).await
    }

    /// Like [`TestServer::start_tls`], with a given certificate and adjusted
    /// configuration.
    pub async fn start_tls_with(
        certificate: tls::ServerCertificate,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        Self::start_with(|config| {
            adjust(config);
            let dir = config.data_dir.join("tls");
            std::fs::create_dir_all(&dir).expect("tls dir");
            let (cert, key) = certificate.write(&dir);
            config.tls = Some(sotto_server::tls::TlsConfig {
                reload_interval: std::time::Duration::from_millis(100),
                ..sotto_server::tls::TlsConfig::new(cert, key)
            });
        })
        .await
    }

    /// Where a TLS server's `cert.pem` and `key.pem` are.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// Starts a server that keeps its data in the PostgreSQL database at
    /// `store` (a [`postgres::TestDatabase::url`]); its data directory is a
    /// fresh temporary one (for TLS files only).
    pub async fn start_postgres(store: &str) -> Self {
        let store = store.to_owned();
        Self::start_with(move |config| config.store = Some(store)).await
    }

    /// Starts a server on an existing data directory (to test restarts).
    pub async fn start_in(data_dir: &Path) -> Self {
        Self::start_in_with(data_dir, |_| {}).await
    }

    async fn start_in_with(data_dir: &Path, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data_dir.to_path_buf(),
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let tls = config.tls.clone();
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            data_dir: data_dir.to_path_buf(),
            tls,
            _temp: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://…` for [`TestServer::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(wire::WAIT, task)
                .await
                .expect("server did not stop")
                .expect("server task");
        }
    }

    /// Shuts the server down gracefully and starts a new one on the same
    /// data directory, with the default configuration (and the same TLS
    /// certificate files, if it had any).
    pub async fn restart(mut self) -> Self {
        self.stop_in_place().await;
        let temp = self._temp.take();
        let tls = self.tls.take();
        let mut server = Self::start_in_with(&self.data_dir, |c| c.tls = tls).await;
        server._temp = temp;
        server
    }

    /// A raw protocol connection (see [`wire`]).
    pub async fn connect(&self) -> wire::Client {
        wire::Client::connect(self.addr).await
    }

    /// A fresh raw account, registered on a new raw connection.
    pub async fn registered(&self, name: &str) -> (wire::Client, wire::Account) {
        let account = wire::Account::new(name);
        let mut client = self.connect().await;
        wire::assert_done(&client.register(&account).await);
        (client, account)
    }

    /// Read-only access to the server's database, to check what it stores.
    pub fn db(&self) -> rusqlite::Connection {
        wire::open_db(&self.data_dir)
    }
}

/// Runs a test step, failing the test if it takes over two minutes (a hang
/// shows up as a failure, not a stuck CI run).
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    // Boxed: client futures are large, and a test awaiting many of them
    // would otherwise hold them all in one frame of the test thread.
    tokio::time::timeout(std::time::Duration::from_secs(120), Box::pin(f))
        .await
        .expect("test step timed out")
}

/// The `WARNING` system lines among history entries.
pub fn warnings(entries: &[sotto_client::HistoryEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == sotto_client::EntryKind::System && e.text.starts_with("WARNING"))
        .map(|e| e.text.clone())
        .collect()
}

/// The texts (not system lines) among history entries.
pub fn texts(entries: &[sotto_client::HistoryEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == sotto_client::EntryKind::Text)
        .map(|e| e.text.clone())
        .collect()
}

/// Sends `tracing` output (filtered by `RUST_LOG`) to the test's output.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Registers `username` on the server at `url` in a fresh temporary profile.
pub async fn register(url: &str, username: &str) -> (Client, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let client = Client::register(dir.path(), username, url)
        .await
        .expect("register");
    (client, dir)
}

/// Links a new device to `existing`'s account (approving it), in a fresh
/// temporary profile. Checks that both devices showed the same
/// fingerprint, as the user would.
pub async fn link(existing: &mut Client) -> (Client, TempDir) {
    link_with(existing, None).await
}

/// Like [`link`], with the new device joining through the server at `url`
/// (another node of a cluster: the rendezvous then crosses nodes), which
/// it keeps as its server.
pub async fn link_through(existing: &mut Client, url: &str) -> (Client, TempDir) {
    link_with(existing, Some(url)).await
}

async fn link_with(existing: &mut Client, url: Option<&str>) -> (Client, TempDir) {
    let dir = TempDir::new().expect("temp dir");
    let code = existing.open_link().await.expect("open link");
    let path = dir.path().to_path_buf();
    let text = match url {
        // The code is `secret@server URL`.
        Some(url) => {
            let revealed = code.reveal();
            let (secret, _) = revealed
                .split_once('@')
                .expect("a link code names its server");
            format!("{secret}@{url}")
        }
        None => code.reveal(),
    };
    let (shown_tx, shown) = oneshot::channel();
    let joining = tokio::spawn(async move {
        let show = move |fingerprint| {
            let _ = shown_tx.send(fingerprint);
        };
        Client::join_link(&path, &text, &sotto_client::Trust::web_roots(), show).await
    });
    let request = existing
        .wait_for_link_request(&code)
        .await
        .expect("link request");
    assert_eq!(
        shown
            .await
            .expect("the joining device showed a fingerprint"),
        request.fingerprint,
        "the two devices show different fingerprints"
    );
    existing
        .approve_link(&code, &request)
        .await
        .expect("approve link");
    let new = joining.await.expect("join task").expect("join link");
    assert_eq!(new.device_id(), request.device_id);
    (new, dir)
}

/// Path of a binary built from this workspace (`sotto`, `sotto-server`),
/// next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: build the workspace first (`cargo test --workspace` does)",
        path.display()
    );
    path
}

/// The real `sotto-server` binary running as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    /// Starts `sotto-server --listen 127.0.0.1:0 --data DIR` and reads the
    /// address it prints.
    pub fn spawn(data_dir: &Path) -> Self {
        Self::spawn_at(data_dir, "127.0.0.1:0")
    }

    /// Starts the server on a given address, e.g. to restart it where its
    /// clients expect it.
    pub fn spawn_at(data_dir: &Path, listen: &str) -> Self {
        Self::spawn_with(data_dir, listen, Stdio::null(), "warn")
    }

    /// Starts the server on port 0 with extra flags.
    pub fn spawn_with_args(data_dir: &Path, args: &[&str]) -> Self {
        Self::spawn_full(data_dir, "127.0.0.1:0", Stdio::null(), "warn", args)
    }

    /// Starts the server with its log (at `level`, e.g. "debug") written to
    /// `log_file`, to check what it logs.
    pub fn spawn_logged(data_dir: &Path, log_file: &Path, level: &str) -> Self {
        let log = std::fs::File::create(log_file).expect("log file");
        Self::spawn_with(data_dir, "127.0.0.1:0", Stdio::from(log), level)
    }

    /// [`ServerProcess::spawn_logged`] with extra flags.
    pub fn spawn_logged_with_args(
        data_dir: &Path,
        log_file: &Path,
        level: &str,
        args: &[&str],
    ) -> Self {
        let log = std::fs::File::create(log_file).expect("log file");
        Self::spawn_full(data_dir, "127.0.0.1:0", Stdio::from(log), level, args)
    }

    fn spawn_with(data_dir: &Path, listen: &str, stderr: Stdio, level: &str) -> Self {
        Self::spawn_full(data_dir, listen, stderr, level, &[])
    }

    fn spawn_full(
        data_dir: &Path,
        listen: &str,
        stderr: Stdio,
        level: &str,
        args: &[&str],
    ) -> Self {
        let mut child = Command::new(binary("sotto-server"))
            .args(["--listen", listen, "--data"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", level)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn sotto-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first).expect("read first line");
        // Keep draining stdout so the server never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = first
            .trim()
            .strip_prefix("sotto-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from sotto-server: {first:?}"))
            .to_owned();
        Self { child, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM (through `kill -TERM`), then waits for the server to exit;
    /// the exit status says whether it shut down cleanly.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait")
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
