//! Where a server is and how far to trust the way there: the one place that
//! opens a byte stream to a server, plain or TLS, for the WebSocket
//! ([`crate::transport`]) and for plain HTTP requests ([`crate::canary`]).
//!
//! `https://` and `wss://` use TLS (rustls) and trust the web's roots
//! (webpki-roots) plus the user's own CA (`--ca-file`), for a self-hosted
//! server with a self-signed certificate. Plain `http://` and `ws://` are
//! allowed to loopback only, unless the user says `--insecure-transport`:
//! on any other path, everyone between could read send capabilities, group
//! ids, recipient lists and the lookups a device makes, and swap the log key
//! at first contact.

use crate::ClientError;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use std::net::IpAddr;
use std::path::Path;

/// What a profile trusts beyond the web's roots, and whether it may talk
/// plain HTTP to another machine. Remembered in the profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// PEM of extra CA certificates (`--ca-file`), checked when set.
    ca_pem: Option<String>,
    /// `--insecure-transport`: plain `http://` to a non-loopback host.
    pub insecure_transport: bool,
}

impl Trust {
    /// Trust the web's roots only; plain HTTP to loopback only.
    pub fn web_roots() -> Self {
        Self::default()
    }

    /// Also trusts the CA certificates in PEM `ca_pem`; refuses text that
    /// holds none.
    pub fn with_ca_pem(mut self, ca_pem: String) -> Result<Self, ClientError> {
        let count = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Usage(format!("the CA file is not PEM: {e}")))?
            .len();
        if count == 0 {
            return Err(ClientError::Usage(
                "the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        self.ca_pem = Some(ca_pem);
        Ok(self)
    }

    /// Also trusts the CA certificates in the PEM file `path`.
    pub fn with_ca_file(self, path: &Path) -> Result<Self, ClientError> {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Usage(format!("cannot read the CA file {}: {e}", path.display()))
        })?;
        self.with_ca_pem(pem)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
    }

    /// Allows (or not) plain HTTP to hosts other than loopback.
    pub fn allow_insecure_transport(mut self, allow: bool) -> Self {
        self.insecure_transport = allow;
        self
    }

    /// The extra CA certificates, as given.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }
}

/// A server URL taken apart: `http[s]://host[:port][/prefix]` (or `ws[s]://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl {
    /// Whether to speak TLS.
    pub tls: bool,
    /// The host as written, IPv6 in brackets: the `Host` header.
    pub authority: String,
    /// The host without brackets, for DNS and the certificate name.
    host: String,
    port: u16,
    /// A path prefix, for a server behind a reverse proxy (no trailing `/`).
    prefix: String,
}

impl ServerUrl {
    /// Parses `url`; the scheme must be `http`, `https`, `ws` or `wss`.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let trimmed = url.trim().trim_end_matches('/');
        let (tls, rest) = if let Some(rest) = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("wss://"))
        {
            (true, rest)
        } else if let Some(rest) = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("ws://"))
        {
            (false, rest)
        } else {
            return Err(ClientError::Usage(format!(
                "{url}: the server URL must start with https:// (or http:// for a server on this machine)"
            )));
        };
        let rest = rest.strip_suffix("/ws").unwrap_or(rest);
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let bad = |why: &str| ClientError::Usage(format!("{url}: {why}"));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected http[s]://HOST[:PORT]"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs a closing ]"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| bad("the port must be a number up to 65535"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            tls,
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
        })
    }

    /// Whether the host is this machine.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The server's WebSocket endpoint.
    pub fn websocket(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}/ws", self.authority, self.prefix)
    }

    /// The path of `path` (which starts with `/`) on this server.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Refuses plain HTTP beyond loopback unless `trust` allows it.
    pub fn check(&self, trust: &Trust) -> Result<(), ClientError> {
        if self.tls || self.is_loopback() || trust.insecure_transport {
            return Ok(());
        }
        Err(ClientError::Usage(format!(
            "refusing plain http:// to {}: anyone on the network path could read and change \
             what this device sends and looks up. Use https:// (give a self-signed server's CA \
             with --ca-file), or pass --insecure-transport if the network is yours",
            self.authority
        )))
    }
}

/// Connections from an operating system: TCP, rustls, hyper.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::{ServerUrl, Trust};
    use crate::ClientError;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::net::TcpStream;
    use tokio_tungstenite::MaybeTlsStream;

    impl Trust {
        fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
            let mut roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(pem) = &self.ca_pem {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert
                        .map_err(|e| ClientError::Usage(format!("the CA file is not PEM: {e}")))?;
                    roots.add(cert).map_err(|e| {
                        ClientError::Usage(format!(
                            "the CA file holds an unusable certificate: {e}"
                        ))
                    })?;
                }
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Usage(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(Arc::new(config))
        }
    }

    impl ServerUrl {
        /// `GET path` on one new connection: the status and, when it is a
        /// success, the body (at most `max_bytes`; empty otherwise). For the
        /// small public documents a client checks (the canary, the web app).
        pub(crate) async fn get(
            &self,
            trust: &Trust,
            path: &str,
            max_bytes: usize,
        ) -> Result<(hyper::StatusCode, hyper::body::Bytes), ClientError> {
            use http_body_util::BodyExt as _;
            let stream = self.open(trust).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| ClientError::Network(format!("HTTP handshake failed: {e}")))?;
            tokio::spawn(connection);
            let request = hyper::Request::get(self.path(path))
                .header(hyper::header::HOST, &self.authority)
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .map_err(|e| ClientError::Usage(format!("bad request: {e}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::Network(format!("GET {path} failed: {e}")))?;
            let status = response.status();
            if !status.is_success() {
                return Ok((status, hyper::body::Bytes::new()));
            }
            let body = http_body_util::Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|e| ClientError::Network(format!("reading {path} failed: {e}")))?
                .to_bytes();
            Ok((status, body))
        }

        /// Opens a byte stream to the server: TCP, then TLS for `https`.
        pub async fn open(&self, trust: &Trust) -> Result<MaybeTlsStream<TcpStream>, ClientError> {
            self.check(trust)?;
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    ClientError::Network(format!("cannot connect to {}: {e}", self.authority))
                })?;
            // Small frames must not wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
            if !self.tls {
                return Ok(MaybeTlsStream::Plain(tcp));
            }
            let name = ServerName::try_from(self.host.clone())
                .map_err(|e| ClientError::Usage(format!("{}: {e}", self.authority)))?;
            let connector = tokio_rustls::TlsConnector::from(trust.client_config()?);
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| tls_error(&self.authority, e))?;
            Ok(MaybeTlsStream::Rustls(stream))
        }
    }

    /// A failed handshake: a certificate the client does not trust is the
    /// user's to fix (not a passing network fault), so it says how.
    fn tls_error(authority: &str, e: std::io::Error) -> ClientError {
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(why)) => ClientError::Certificate(format!(
                "the TLS certificate of {authority} is not trusted ({why:?}); if the server uses \
                 its own CA, give its certificate with --ca-file"
            )),
            Some(other) => {
                ClientError::Certificate(format!("TLS with {authority} failed: {other}"))
            }
            None => ClientError::Network(format!("TLS handshake with {authority} failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() -> Result<(), ClientError> {
        let url = ServerUrl::parse("https://chat.example.org")?;
        assert_eq!(url.websocket(), "wss://chat.example.org/ws");
        assert_eq!(
            (url.host.as_str(), url.port, url.tls),
            ("chat.example.org", 443, true)
        );
        let url = ServerUrl::parse("http://[::1]:8420/sotto/")?;
        assert_eq!(url.websocket(), "ws://[::1]:8420/sotto/ws");
        assert_eq!((url.host.as_str(), url.port), ("::1", 8420));
        assert_eq!(url.path("/canary"), "/sotto/canary");
        assert!(url.is_loopback());
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://x:99999").is_err());
        assert!(ServerUrl::parse("http://user@x").is_err());
        Ok(())
    }

    #[test]
    fn plain_http_is_for_loopback_unless_allowed() -> Result<(), ClientError> {
        let trust = Trust::web_roots();
        for ok in [
            "http://127.0.0.1:8420",
            "http://localhost",
            "ws://[::1]:1",
            "https://example.org",
        ] {
            ServerUrl::parse(ok)?.check(&trust)?;
        }
        let remote = ServerUrl::parse("http://192.0.2.7:8420")?;
        assert!(
            matches!(remote.check(&trust), Err(ClientError::Usage(m)) if m.contains("--insecure-transport"))
        );
        remote.check(&trust.allow_insecure_transport(true))?;
        Ok(())
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(
            Trust::web_roots()
                .with_ca_pem("not a certificate".into())
                .is_err()
        );
    }
}
