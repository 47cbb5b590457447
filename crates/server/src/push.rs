//! Web Push to browsers (RFC 8030, VAPID RFC 8292), carrying nothing.
//!
//! A browser tab closes its WebSocket when it goes to the background; its
//! service worker can still be woken by the browser vendor's push service.
//! A device that turned pushes on (`SetPushEndpoint`, off by default) and
//! has no open connection gets one push when mailbox entries are committed
//! for it: an HTTPS `POST` with an **empty body** to its endpoint, so there
//! is nothing to encrypt (no RFC 8291) and nothing the push service could
//! read: no content, no sender, no group. The page connects and fetches
//! itself. The push service learns only *when* something arrived for that
//! browser (docs/SERVER_DATA.md).
//!
//! - Coalesced: at most one push per device per [`COALESCE`], or until the
//!   device next connects. With several nodes the window is each node's
//!   own (pushes come from the node that committed the entries), and before
//!   a push the node asks the others over the bus whether one of them holds
//!   a connection of the device ([`Presence`]).
//! - Off the write path: the mailbox hub hands the devices it found offline
//!   to a bounded queue ([`OfflineSink`], never blocking; a full queue drops
//!   the push and counts it), and a background task ([`run`]) looks up their
//!   endpoints and sends.
//! - SSRF: an endpoint is accepted only as `https://` on port 443 of a host
//!   the operator allows ([`DEFAULT_PUSH_SERVICES`], `--push-service`), and
//!   connected to only at a public address; the one exception is an
//!   explicitly listed loopback origin (`http://127.0.0.1:PORT`, for tests).
//! - Each push has a [`PUSH_TIMEOUT`]; a `404` or `410` answer (the browser
//!   unsubscribed) clears the endpoint.
//! - Nothing about a push (endpoint, answer) is logged above `debug`, and
//!   never the endpoint itself.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::mailbox_hub::MailboxHub;
use crate::metrics::Metrics;
use crate::store::{DeviceId, PushStore, StoreError};

/// The push services accepted by default: Chrome's (and Edge's, Opera's…),
/// Firefox's, Safari's and Windows'.
pub const DEFAULT_PUSH_SERVICES: &[&str] = &[
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
];
/// Longest push endpoint accepted, in bytes (real ones are ~150–500).
pub const MAX_ENDPOINT_BYTES: usize = 1024;
/// At most one push per device this often (or until it next connects).
pub const COALESCE: Duration = Duration::from_secs(30);
/// How long one push may take, connection and answer included.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the push service keeps a push for a browser that is offline.
const TTL_SECONDS: u64 = 24 * 60 * 60;
/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const TOKEN_LIFETIME_SECONDS: u64 = 12 * 60 * 60;
/// Batches of offline devices waiting for the push task; past this, pushes
/// are dropped (and counted).
const QUEUE: usize = 1024;
/// Pushes in flight at once; past this, pushes are dropped (and counted).
const CONCURRENT_PUSHES: usize = 64;
/// Devices the task looks up at once.
const LOOKUP_BATCH: usize = 512;

/// The `[push]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// Push services whose endpoints devices may set (`--push-service`):
    /// host names, `*.` + a domain for its subdomains, or (for tests) a
    /// loopback origin such as `http://127.0.0.1:8080`. Default
    /// [`DEFAULT_PUSH_SERVICES`]; an empty list turns Web Push off.
    pub services: Vec<String>,
    /// Who the push services may contact about this server's pushes
    /// (`--push-contact`, the VAPID `sub`): a `mailto:` or `https:` URI.
    /// Default `https://` + the first `--server-name`, else
    /// `mailto:postmaster@localhost`.
    pub contact: Option<String>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            services: DEFAULT_PUSH_SERVICES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            contact: None,
        }
    }
}

/// Why an endpoint was refused (the wire error's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefused {
    #[error("the push endpoint is longer than {MAX_ENDPOINT_BYTES} bytes")]
    TooLong,
    #[error("the push endpoint is not a plain https:// URL")]
    Malformed,
    #[error(
        "this server does not push to that host: only https:// endpoints of the push services \
         its operator allows (by default Google's, Mozilla's, Apple's and Microsoft's)"
    )]
    NotAllowed,
    #[error("Web Push is off on this server (its operator allows no push service)")]
    Off,
}

/// One allowed push service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Service {
    /// Exactly this host, `https` on port 443.
    Host(String),
    /// Any host ending in `.` + this, `https` on port 443.
    Subdomains(String),
    /// Exactly this loopback origin (tests): scheme, IP and port.
    Loopback { tls: bool, ip: IpAddr, port: u16 },
}

/// The push services an endpoint may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushServices(Vec<Service>);

/// An endpoint that passed [`PushServices::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEndpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    target: String,
    /// Allowed as an explicit loopback origin (connect there, not to a
    /// public address).
    loopback: bool,
}

/// A DNS host name: letters, digits, `-` and `.`, lowercase, at most 253.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.parse::<IpAddr>().is_err()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `scheme://authority` and the rest, split; `None` unless the scheme is
/// `http` or `https` and the URL is printable ASCII without a fragment,
/// userinfo or backslash.
fn split_url(url: &str) -> Option<(bool, &str, &str)> {
    if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'#' && b != b'\\')
    {
        return None;
    }
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((tls, authority, target))
}

/// `host` and `port` of an authority (`[v6]:port` too); the port must be
/// digits if present.
fn split_authority(authority: &str, tls: bool) -> Option<(String, u16)> {
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
        None => default,
    };
    Some((host.to_owned(), port))
}

impl PushServices {
    /// Parses the operator's list (see [`PushConfig::services`]).
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut services = Vec::with_capacity(list.len());
        for entry in list {
            let entry = entry.trim();
            if entry.starts_with("http://") || entry.starts_with("https://") {
                let loopback = split_url(entry.trim_end_matches('/'))
                    .filter(|(_, _, target)| target.is_empty())
                    .and_then(|(tls, authority, _)| {
                        let (host, port) = split_authority(authority, tls)?;
                        let ip: IpAddr = host.parse().ok()?;
                        ip.is_loopback()
                            .then_some(Service::Loopback { tls, ip, port })
                    });
                match loopback {
                    Some(service) => services.push(service),
                    None => {
                        return Err(format!(
                            "push service {entry:?}: an origin is allowed only on loopback \
                             (http://127.0.0.1:PORT, for tests); name other services by host"
                        ));
                    }
                }
            } else if let Some(domain) = entry.strip_prefix("*.") {
                if !is_host_name(domain) || !domain.contains('.') {
                    return Err(format!(
                        "push service {entry:?}: *. must precede a domain such as push.apple.com"
                    ));
                }
                services.push(Service::Subdomains(domain.to_owned()));
            } else if is_host_name(entry) {
                services.push(Service::Host(entry.to_owned()));
            } else {
                return Err(format!(
                    "push service {entry:?} is not a lowercase host name, *.domain or loopback origin"
                ));
            }
        }
        Ok(Self(services))
    }

    /// Whether any push service is allowed (an empty list turns Web Push
    /// off).
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Accepts `endpoint` if it names an allowed push service.
    pub fn check(&self, endpoint: &str) -> Result<PushEndpoint, EndpointRefused> {
        if !self.any() {
            return Err(EndpointRefused::Off);
        }
        if endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(EndpointRefused::TooLong);
        }
        let (tls, authority, target) = split_url(endpoint).ok_or(EndpointRefused::Malformed)?;
        let (host, port) = split_authority(authority, tls).ok_or(EndpointRefused::Malformed)?;
        let target = if target.starts_with('/') {
            target.to_owned()
        } else {
            format!("/{target}")
        };
        let ip = host.parse::<IpAddr>().ok();
        let allowed = self.0.iter().find(|service| match service {
            Service::Host(name) => tls && port == 443 && host == *name,
            Service::Subdomains(domain) => {
                tls && port == 443
                    && host
                        .strip_suffix(domain.as_str())
                        .and_then(|label| label.strip_suffix('.'))
                        .is_some_and(|label| !label.is_empty())
                    && is_host_name(&host)
            }
            Service::Loopback {
                tls: service_tls,
                ip: service_ip,
                port: service_port,
            } => tls == *service_tls && ip == Some(*service_ip) && port == *service_port,
        });
        match allowed {
            Some(service) => Ok(PushEndpoint {
                tls,
                host,
                port,
                target,
                loopback: matches!(service, Service::Loopback { .. }),
            }),
            None => Err(EndpointRefused::NotAllowed),
        }
    }
}

impl PushEndpoint {
    /// `scheme://host[:port]`: the VAPID token's audience.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority()
        )
    }

    /// `host[:port]`, the port only if it is not the scheme's default.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The server's VAPID key pair (P-256). `Debug` shows only the public key.
pub struct VapidKey {
    key: p256::ecdsa::SigningKey,
    /// Uncompressed SEC1 point (65 bytes).
    public: Vec<u8>,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &URL_SAFE_NO_PAD.encode(&self.public))
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A fresh secret scalar, to store if there is none yet.
    pub fn fresh_secret() -> Zeroizing<[u8; 32]> {
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        Zeroizing::new(key.to_bytes().into())
    }

    /// The key pair of a stored secret.
    pub fn from_secret(secret: &[u8; 32]) -> Result<Self, StoreError> {
        let key = p256::ecdsa::SigningKey::from_bytes(secret.into())
            .map_err(|_| StoreError::Backend("the stored VAPID key is not a P-256 key".into()))?;
        let public = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        Ok(Self { key, public })
    }

    /// Loads (or creates, on first start) the server's VAPID key.
    pub async fn open(store: &impl PushStore) -> Result<Self, StoreError> {
        let secret = store.push_key_secret(Self::fresh_secret()).await?;
        Self::from_secret(&secret)
    }

    /// The public key, an uncompressed P-256 point (65 bytes, `0x04…`):
    /// the browser's `applicationServerKey`.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The `Authorization` header of a push to `audience` (an origin):
    /// `vapid t=<ES256 JWT>, k=<public key>` (RFC 8292), valid for 12 hours
    /// from `now` (Unix seconds).
    pub fn authorization(&self, audience: &str, contact: &str, now: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": audience,
            "exp": now.saturating_add(TOKEN_LIFETIME_SECONDS),
            "sub": contact,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature: p256::ecdsa::Signature = self.key.sign(signing_input.as_bytes());
        format!(
            "vapid t={signing_input}.{}, k={}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            URL_SAFE_NO_PAD.encode(&self.public)
        )
    }
}

/// Where the mailbox hub hands the devices it found offline. Must return at
/// once (it runs in the store's writer callback, or with the hub locked).
pub trait OfflineSink: Send + Sync + std::fmt::Debug {
    /// Mailbox entries were committed for these devices, which have no
    /// connection on this node.
    fn offline(&self, devices: Vec<DeviceId>);
    /// The device's first connection on this node opened: its next push
    /// need not wait for the coalescing window.
    fn connected(&self, device: DeviceId);
}

/// Asks the other nodes whether a device is connected to one of them (the
/// NATS bus), so a device connected elsewhere gets no push.
pub trait Presence: Send + Sync + std::fmt::Debug {
    /// Whether `device` is connected to another node (`false` when unsure:
    /// a needless push says nothing).
    fn connected_elsewhere(
        &self,
        device: DeviceId,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
}

/// The server's Web Push: its key, the allowed services, and the queue to
/// the push task.
#[derive(Debug)]
pub struct WebPush {
    key: VapidKey,
    services: PushServices,
    contact: String,
    queue: mpsc::Sender<Vec<DeviceId>>,
    receiver: Mutex<Option<mpsc::Receiver<Vec<DeviceId>>>>,
    /// When each device was last pushed to, for [`COALESCE`]; a device
    /// that connects is taken out.
    pushed: Mutex<HashMap<DeviceId, Instant>>,
    metrics: OnceLock<Arc<Metrics>>,
}

impl WebPush {
    /// Loads the VAPID key and parses the configuration.
    pub async fn open(
        store: &impl PushStore,
        config: &PushConfig,
        server_names: &[String],
    ) -> Result<Self, String> {
        let services = PushServices::parse(&config.services)?;
        let key = VapidKey::open(store)
            .await
            .map_err(|e| format!("cannot load the VAPID key: {e}"))?;
        let contact = match (&config.contact, server_names.first()) {
            (Some(contact), _) => contact.clone(),
            (None, Some(name)) => format!("https://{name}"),
            (None, None) => "mailto:postmaster@localhost".to_owned(),
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        Ok(Self {
            key,
            services,
            contact,
            queue,
            receiver: Mutex::new(Some(receiver)),
            pushed: Mutex::default(),
            metrics: OnceLock::new(),
        })
    }

    /// The VAPID public key (uncompressed P-256 point).
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key()
    }

    /// Accepts `endpoint` if it names an allowed push service.
    pub fn check(&self, endpoint: &str) -> Result<PushEndpoint, EndpointRefused> {
        self.services.check(endpoint)
    }

    /// The coalescing record, locked.
    fn pushed(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Instant>> {
        self.pushed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, outcome: &'static str) {
        if let Some(metrics) = self.metrics.get() {
            metrics.push(outcome);
        }
    }
}

impl OfflineSink for WebPush {
    fn offline(&self, devices: Vec<DeviceId>) {
        if devices.is_empty() || !self.services.any() {
            return;
        }
        if self.queue.try_send(devices).is_err() {
            self.count("dropped");
        }
    }

    fn connected(&self, device: DeviceId) {
        self.pushed().remove(&device);
    }
}

/// Seconds since the Unix epoch.
fn now_unix() -> u64 {
    crate::session::now_seconds()
}

/// Sends the pushes for the devices the hub finds offline, until `stop`.
pub(crate) async fn run<S: PushStore>(
    push: Arc<WebPush>,
    store: Arc<S>,
    hub: MailboxHub,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let receiver = push
        .receiver
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(mut receiver) = receiver else {
        return;
    };
    let _ = push.metrics.set(metrics);
    let client = match tls_client() {
        Ok(client) => Arc::new(client),
        Err(e) => {
            tracing::warn!(error = %e, "Web Push is off: cannot set up TLS");
            return;
        }
    };
    hub.set_offline_sink(Arc::clone(&push) as Arc<dyn OfflineSink>);
    let in_flight = Arc::new(Semaphore::new(CONCURRENT_PUSHES));
    loop {
        let batch = tokio::select! {
            batch = receiver.recv() => batch,
            _ = stop.changed() => None,
        };
        let Some(batch) = batch else { break };
        let mut devices: HashSet<DeviceId> = batch.into_iter().collect();
        while devices.len() < LOOKUP_BATCH
            && let Ok(more) = receiver.try_recv()
        {
            devices.extend(more);
        }
        let now = Instant::now();
        {
            let mut pushed = push.pushed();
            pushed.retain(|_, at| now.duration_since(*at) < COALESCE);
            devices.retain(|device| !pushed.contains_key(device));
        }
        devices.retain(|device| !hub.is_connected(device));
        if devices.is_empty() {
            continue;
        }
        let looked_up: Vec<DeviceId> = devices.into_iter().collect();
        let endpoints = match store.push_endpoints(looked_up.clone()).await {
            Ok(endpoints) => endpoints,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read push endpoints");
                continue;
            }
        };
        // Every device looked up waits for the window (or its next
        // connection, which is also when it can turn pushes on): a device
        // without an endpoint, most of them, costs one lookup per window,
        // not one per message. Those with one are marked before the push
        // goes.
        push.pushed()
            .extend(looked_up.into_iter().map(|device| (device, now)));
        for (device, endpoint) in endpoints {
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                push.count("dropped");
                continue;
            };
            let push = Arc::clone(&push);
            let store = Arc::clone(&store);
            let client = Arc::clone(&client);
            let hub = hub.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if hub.connected_elsewhere(device).await {
                    push.pushed().remove(&device);
                    return;
                }
                let outcome = send(&push, &client, &endpoint).await;
                push.count(outcome.label());
                if outcome == Outcome::Gone
                    && let Err(e) = store.clear_push_endpoint(device, endpoint).await
                {
                    tracing::warn!(error = %e, "cannot clear a push endpoint");
                }
            });
        }
    }
}

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The push service took it (2xx).
    Sent,
    /// The subscription is gone (404, 410): clear the endpoint.
    Gone,
    /// Refused, unreachable, timed out or no longer allowed.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
        }
    }
}

/// The TLS client configuration: the web's roots (webpki-roots), ring.
fn tls_client() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Whether `ip` is an address on the public internet (not loopback,
/// private, link-local, shared or unspecified): where a push service is.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || v6.is_multicast())
            }
        },
    }
}

/// Sends one empty push to `endpoint` (re-checked against the current
/// list: the operator may have changed it since it was stored).
async fn send(push: &WebPush, client: &tokio_rustls::TlsConnector, endpoint: &str) -> Outcome {
    let Ok(endpoint) = push.check(endpoint) else {
        return Outcome::Failed;
    };
    match tokio::time::timeout(PUSH_TIMEOUT, post(push, client, &endpoint)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Outcome::Sent,
        Ok(Ok(404 | 410)) => Outcome::Gone,
        Ok(Ok(status)) => {
            tracing::debug!(status, "a push service refused a push");
            Outcome::Failed
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a push failed");
            Outcome::Failed
        }
        Err(_) => {
            tracing::debug!("a push timed out");
            Outcome::Failed
        }
    }
}

/// Connects to the endpoint's host (a public address, or the allowed
/// loopback origin) and posts the push; returns the HTTP status.
async fn post(
    push: &WebPush,
    client: &tokio_rustls::TlsConnector,
    endpoint: &PushEndpoint,
) -> Result<u16, String> {
    let addresses: Vec<SocketAddr> = if endpoint.loopback {
        let ip: IpAddr = endpoint
            .host
            .parse()
            .map_err(|_| "not an IP address".to_owned())?;
        vec![SocketAddr::new(ip, endpoint.port)]
    } else {
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("cannot resolve the push service: {e}"))?
            .filter(|a| is_public(a.ip()))
            .collect()
    };
    let Some(address) = addresses.first() else {
        return Err("the push service has no public address".into());
    };
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to the push service: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let authorization = push
        .key
        .authorization(&endpoint.origin(), &push.contact, now_unix());
    if endpoint.tls {
        let name = rustls_pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| format!("bad host name: {e}"))?;
        let tls = client
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with the push service failed: {e}"))?;
        post_on(tls, endpoint, &authorization).await
    } else {
        post_on(tcp, endpoint, &authorization).await
    }
}

/// `POST` with an empty body on an open stream.
async fn post_on<T>(stream: T, endpoint: &PushEndpoint, authorization: &str) -> Result<u16, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper::header;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::post(endpoint.target.as_str())
        .header(header::HOST, endpoint.authority())
        .header("TTL", TTL_SECONDS.to_string())
        .header("Urgency", "high")
        .header(header::CONTENT_LENGTH, "0")
        .header(header::AUTHORIZATION, authorization)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the push service did not answer: {e}"));
    connection.abort();
    Ok(response?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(list: &[&str]) -> PushServices {
        PushServices::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn only_allowed_https_hosts_pass() {
        let defaults = PushServices::parse(&PushConfig::default().services).unwrap();
        for good in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
            "https://web.push.apple.com/QGx",
            "https://wns2-db5p.notify.windows.com/w/?token=BQYAAAD",
            "https://fcm.googleapis.com:443/x",
        ] {
            assert!(defaults.check(good).is_ok(), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "http://fcm.googleapis.com/fcm/send/x",
            "https://fcm.googleapis.com:8443/x",
            "https://fcm.googleapis.com.evil.example/x",
            "https://user@fcm.googleapis.com/x",
            "https://push.apple.com/x",
            "https://evilpush.apple.com/x",
            "https://FCM.googleapis.com/x",
            "http://10.0.0.1/",
            "http://127.0.0.1:9/",
            "file:///etc/passwd",
            "https://fcm.googleapis.com/x#y",
            "https://fcm.googleapis.com/x y",
            "https://[::1]/x",
            "",
        ] {
            assert!(defaults.check(bad).is_err(), "{bad}");
        }
        let long = format!(
            "https://fcm.googleapis.com/{}",
            "a".repeat(MAX_ENDPOINT_BYTES)
        );
        assert_eq!(defaults.check(&long), Err(EndpointRefused::TooLong));
        assert_eq!(
            services(&[]).check("https://fcm.googleapis.com/x"),
            Err(EndpointRefused::Off)
        );
    }

    #[test]
    fn a_loopback_origin_is_allowed_exactly_and_only_on_loopback() {
        let list = services(&["http://127.0.0.1:4000"]);
        let endpoint = list.check("http://127.0.0.1:4000/push/1").unwrap();
        assert_eq!(endpoint.origin(), "http://127.0.0.1:4000");
        assert!(list.check("http://127.0.0.1:4001/push/1").is_err());
        assert!(list.check("https://127.0.0.1:4000/push/1").is_err());
        assert!(list.check("https://fcm.googleapis.com/x").is_err());
        for refused in [
            "http://10.0.0.1:80",
            "https://evil.example",
            "http://localhost:4000",
        ] {
            assert!(
                PushServices::parse(&[refused.to_owned()]).is_err(),
                "{refused}"
            );
        }
        assert!(PushServices::parse(&["*.com".to_owned()]).is_err());
        assert!(PushServices::parse(&["10.0.0.1".to_owned()]).is_err());
    }

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["142.250.74.106", "2a00:1450:4001:82b::200a"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_vapid_token_verifies_and_debug_hides_the_secret() {
        use p256::ecdsa::signature::Verifier as _;
        let secret = VapidKey::fresh_secret();
        let key = VapidKey::from_secret(&secret).unwrap();
        assert_eq!(key.public_key().len(), 65);
        assert_eq!(key.public_key().first(), Some(&4));
        let header = key.authorization("https://fcm.googleapis.com", "mailto:a@b.c", 1000);
        let (token, k) = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(k).unwrap(), key.public_key());
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let claims = signed.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");
        assert_eq!(claims["exp"], 1000 + TOKEN_LIFETIME_SECONDS);
        assert_eq!(claims["sub"], "mailto:a@b.c");
        let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_key()).unwrap();
        let signature =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap())
                .unwrap();
        verifying.verify(signed.as_bytes(), &signature).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(&hex::encode(*secret)));
        assert!(!debug.contains(&URL_SAFE_NO_PAD.encode(*secret)));
    }
}
