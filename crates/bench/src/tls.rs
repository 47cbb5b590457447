//! TLS for the bench: a certificate authority that exists only for one run,
//! the loopback certificate it issues to sotto-server (`--tls-cert`,
//! `--tls-key`), and the client side the generator's sockets use, which
//! trusts that CA and nothing else.
//!
//! Every connection makes a full handshake: the client keeps no session
//! tickets, as 19,000 separate devices would not share them (and as the
//! Sotto client, which builds its TLS configuration per connection, does
//! not resume either). That is the worst case for a reconnect storm.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// What the bench's certificates are, for the report.
pub const CERTIFICATE: &str =
    "an ECDSA P-256 certificate for 127.0.0.1, issued by a CA made for the run";

/// The PEM files sotto-server is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA made for one run, and the loopback certificate it issued.
pub struct BenchCa {
    ca_der: rustls_pki_types::CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for BenchCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The server's private key stays out of logs.
        f.debug_struct("BenchCa").finish_non_exhaustive()
    }
}

impl BenchCa {
    /// A new CA, and a certificate for `127.0.0.1` and `localhost` signed
    /// by it.
    pub fn generate() -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sotto-bench CA");
        let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
            .context("cannot make the bench CA")?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "sotto-bench server");
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("cannot issue the server certificate")?;
        Ok(Self {
            ca_der: issuer.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `tls/cert.pem` and `tls/key.pem` (owner-only) under `dir`.
    pub fn write_server_files(&self, dir: &Path) -> anyhow::Result<ServerTlsFiles> {
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)?;
        let files = ServerTlsFiles {
            cert: tls_dir.join("cert.pem"),
            key: tls_dir.join("key.pem"),
        };
        std::fs::write(&files.cert, &self.cert_pem)
            .with_context(|| files.cert.display().to_string())?;
        write_private(&files.key, &self.key_pem)
            .with_context(|| files.key.display().to_string())?;
        Ok(files)
    }

    /// The client side, trusting this CA only.
    pub fn client(&self) -> anyhow::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        // One config serves every simulated device: without this they would
        // resume each other's sessions, which separate devices cannot.
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            negotiated: Arc::new(OnceLock::new()),
        })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The generator's TLS client: trusts the run's CA, makes a full handshake
/// per connection, and remembers what the first handshake negotiated.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    negotiated: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("negotiated", &self.negotiated.get())
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The TLS handshake over `tcp`, checking the certificate for the
    /// server's IP address.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        server: std::net::IpAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let stream = self
            .connector
            .connect(ServerName::IpAddress(server.into()), tcp)
            .await?;
        if self.negotiated.get().is_none() {
            let _ = self.negotiated.set(describe(stream.get_ref().1));
        }
        Ok(stream)
    }

    /// Protocol version, cipher suite and key exchange of the first
    /// handshake, e.g. "TLSv1_3, TLS13_AES_256_GCM_SHA384, X25519".
    pub fn negotiated(&self) -> Option<String> {
        self.negotiated.get().cloned()
    }
}

fn describe(c: &rustls::ClientConnection) -> String {
    let version = c
        .protocol_version()
        .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
    let suite = c
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
    let group = c
        .negotiated_key_exchange_group()
        .map_or_else(|| "?".to_owned(), |g| format!("{:?}", g.name()));
    format!("{version}, {suite}, {group}")
}
