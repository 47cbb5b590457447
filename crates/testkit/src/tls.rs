//! Test certificate authorities: a CA of the test's own, the server
//! certificates it issues for loopback, and PEM files for `--tls-cert`,
//! `--tls-key` and `--ca-file`.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority that exists only for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM: what a client is given with `--ca-file`.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.pem()).expect("write CA");
        path
    }

    /// A certificate for loopback (`localhost`, `127.0.0.1`, `::1`) named
    /// `common_name`, signed by this CA.
    pub fn issue(&self, common_name: &str) -> ServerCertificate {
        self.issue_for(common_name, &[])
    }

    /// Like [`TestCa::issue`], also valid for the DNS names `names`.
    pub fn issue_for(&self, common_name: &str, names: &[&str]) -> ServerCertificate {
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        sans.extend(names.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(sans).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        ServerCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl ServerCertificate {
    /// Writes `cert.pem` and `key.pem` into `dir` (replacing them), and
    /// returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Written beside and renamed, as a careful operator (or certbot)
        // does, so the server never reads half a file.
        for (path, pem) in [(&cert, &self.cert_pem), (&key, &self.key_pem)] {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, pem).expect("write PEM");
            std::fs::rename(&partial, path).expect("rename PEM");
        }
        (cert, key)
    }
}

impl ServerCertificate {
    /// The certificate, DER.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("certificate PEM")
            .to_vec()
    }
}

/// Opens a TLS connection to `addr` trusting only `ca`, and returns the
/// certificate the server presented (DER), or the handshake's error.
pub async fn presented_certificate(addr: SocketAddr, ca: &TestCa) -> Result<Vec<u8>, String> {
    let stream = connect(addr, ca).await?;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .ok_or_else(|| "the server presented no certificate".to_owned())
}

/// `GET path` with the given `Host` header, over TLS trusting `ca` or, with
/// `None`, plain; returns the response's status code.
pub async fn get_status(addr: SocketAddr, ca: Option<&TestCa>, host: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    async fn exchange(
        mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        request: String,
    ) -> String {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let response = match ca {
        Some(ca) => exchange(connect(addr, ca).await.expect("TLS connect"), request).await,
        None => {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            exchange(tcp, request).await
        }
    };
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

async fn connect(
    addr: SocketAddr,
    ca: &TestCa,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA PEM"))
        .expect("CA certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(addr.ip().to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}
