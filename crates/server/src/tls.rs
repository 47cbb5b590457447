//! TLS termination in the server itself (rustls, ring provider), so Sotto
//! can face the internet without a proxy in front.
//!
//! The certificate and key are PEM files. They are read again when either
//! file changes on disk (checked every [`TlsConfig::reload_interval`]) or on
//! SIGHUP; new connections get the new certificate, connections already open
//! keep theirs. A reload that fails (a half-written file, a key that does
//! not match) keeps the old certificate and logs why.
//!
//! Handshakes run in tasks of their own, bounded in number and in time, so
//! a client that opens a TCP connection and stalls cannot hold up anyone
//! else's accept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; more wait in the kernel's backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 1024;
/// By default, how often the certificate files are checked for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Where the server's certificate and key are (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the two files are checked for changes. Default 10 s.
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// The files at `cert` and `key`, checked for changes every 10 s.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the certificate, the key or the pair.
    #[error("the certificate in {cert} and the key in {key} cannot be used: {reason}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key, and checks that they belong
/// together.
fn load(config: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, e: &dyn std::fmt::Display| TlsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| file_error(&config.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&config.cert, &e))?;
    if chain.is_empty() {
        return Err(file_error(&config.cert, &"no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| file_error(&config.key, &e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Unusable {
        cert: config.cert.clone(),
        key: config.key.clone(),
        reason: e.to_string(),
    })
}

/// The certificate handed to every new handshake; replaced on reload.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|current| Arc::clone(&current))
    }
}

/// The server side of TLS: the acceptor and the certificate it presents.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<CurrentCertificate>,
    provider: Arc<CryptoProvider>,
    config: TlsConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate; fails (so the server does not start) if it
    /// cannot be used.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = provider();
        let certified = load(config, &provider)?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified))));
        let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Unusable {
                cert: config.cert.clone(),
                key: config.key.clone(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server_config)),
            current,
            provider,
            config: config.clone(),
        })
    }

    /// Whether the current certificate is valid for the DNS name `name`
    /// (the `Host` check, [`crate::host_check`]).
    pub(crate) fn serves(&self, name: &str) -> bool {
        let Ok(name) = ServerName::try_from(name.to_owned()) else {
            return false;
        };
        let Ok(current) = self.current.0.read() else {
            return false;
        };
        current.end_entity_cert().is_ok_and(|der| {
            webpki::EndEntityCert::try_from(der)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
    }

    /// Reads the files again and, if they are usable, presents the new
    /// certificate to every later handshake.
    fn reload(&self) -> Result<(), TlsError> {
        let certified = load(&self.config, &self.provider)?;
        if let Ok(mut current) = self.current.0.write() {
            *current = Arc::new(certified);
        }
        Ok(())
    }

    /// Reloads when either file's modification time changes, or on SIGHUP,
    /// until `stop` turns true.
    pub(crate) async fn watch_files(self, mut stop: watch::Receiver<bool>) {
        let modified = |config: &TlsConfig| {
            let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            (time(&config.cert), time(&config.key))
        };
        let mut seen: (Option<SystemTime>, Option<SystemTime>) = modified(&self.config);
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate files are still watched");
                None
            }
        };
        let mut ticks = tokio::time::interval(self.config.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hung_up = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hung_up = std::future::pending::<()>();
            let why = tokio::select! {
                _ = stop.changed() => return,
                () = hung_up => "SIGHUP",
                _ = ticks.tick() => {
                    let now = modified(&self.config);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the files changed"
                }
            };
            match self.reload() {
                Ok(()) => tracing::info!(reason = why, "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; still using the previous one")
                }
            }
        }
    }
}

/// A listener that hands out connections whose TLS handshake is done.
#[derive(Debug)]
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, tls: &Tls) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(MAX_CONCURRENT_HANDSHAKES);
        let acceptor = tls.acceptor.clone();
        let accepting = tokio::spawn(accept_loop(listener, acceptor, ready_tx));
        Ok(Self {
            ready,
            local_addr,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stop accepting when the server stops serving.
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off as axum's
                // own accept loop does.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Small frames must not wait for Nagle's algorithm (see `run`).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
            drop(permit);
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (it only does when aborted): nothing
            // more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
