//! Sotto's delivery server.
//!
//! It authenticates devices, keeps each device's mailbox of MLS ciphertext
//! until the device acknowledges it, hands out KeyPackages once each, and
//! orders commits so that exactly one commit wins each group epoch. It never
//! sees message content.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sotto_server::ServerError> {
//! use sotto_server::{Server, ServerConfig};
//!
//! let server = Server::bind(ServerConfig::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Layout: [`config`] (settings), [`store`] (the `Store` trait and the SQLite
//! backend), `session` (per-connection protocol state, one module per
//! request family), `socket` (the WebSocket loop), [`mailbox_hub`]
//! (wakes connected devices), `transparency_log` (the log key and Merkle
//! tree behind the log requests), `web` (the web app) and [`web_release`]
//! (its logged hashes), [`link_rendezvous`] (relays device-linking
//! blobs), [`audit`] (checks a data directory's whole log offline), [`bus`]
//! (wake-ups between nodes over NATS).

#![forbid(unsafe_code)]

pub mod audit;
pub mod blobs;
pub mod bus;
pub mod config;
pub mod config_file;
mod epoch_grace;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod host_check;
pub mod key_directory;
pub mod legal;
pub mod link_rendezvous;
pub mod mailbox_hub;
pub mod metrics;
pub mod moderation;
pub mod push;
mod rate_limit;
mod session;
mod socket;
pub mod store;
pub mod tls;
mod transparency_log;
mod web;
pub mod web_release;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use config::{Limits, RegistrationPolicy, ServerConfig};
use session::Context;
pub use session::{KEY_PACKAGES_LOW_WATERMARK, MAX_KEY_PACKAGE_BYTES};
use store::{AnyStore, Store as _, StoreError};
use transparency_log::TransparencyLog;

/// How often expired mailbox entries are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// How long shutdown waits for open connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bytes of outgoing frames a connection collects before writing them to
/// the socket, when it sends several at once (a drained page). The buffer
/// keeps its capacity after a flush, so it stays small:
/// 16 KiB wrote less often (bench/OPTIMISATIONS.md #8) but would leave
/// every connection that once drained a page holding ~16–32 KiB (T1).
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database (in the data directory, or PostgreSQL) could not be
    /// opened.
    #[error("cannot open the database in {location}: {source}")]
    Storage {
        /// The data directory, or the PostgreSQL database (no password).
        location: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another server running there?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The `--bus` address is unusable (an unreachable one is retried).
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// The Web Push settings are unusable, or its key could not be loaded.
    #[error("Web Push: {0}")]
    Push(String),
    /// Serving connections failed.
    #[error("server I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds a listening socket as `TcpListener::bind` does (`SO_REUSEADDR`,
/// backlog 1024), adding `SO_REUSEPORT` if asked.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    {
        socket.set_reuseaddr(true)?;
        if reuse_port {
            socket.set_reuseport(true)?;
        }
    }
    #[cfg(not(unix))]
    if reuse_port {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "--reuse-port needs a Unix system",
        ));
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: AnyStore,
    log: TransparencyLog,
    directory: Arc<key_directory::ServerDirectory>,
    push: Arc<push::WebPush>,
    tls: Option<tls::Tls>,
    config: ServerConfig,
}

#[derive(Debug)]
struct AppState {
    ctx: Arc<Context<AnyStore>>,
    connections: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    /// [`ServerConfig::log_connections`].
    log_connections: bool,
    /// [`ServerConfig::allowed_origins`].
    allowed_origins: Vec<String>,
    /// Open connections per address (in memory only), capped by
    /// [`Limits::max_connections_per_address`].
    per_address: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    max_per_address: usize,
}

/// Counts one connection of an address while it lives.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    address: std::net::IpAddr,
}

impl AddressSlot {
    fn take(state: &AppState, address: std::net::IpAddr) -> Option<Self> {
        let mut counts = state.per_address.lock().ok()?;
        let count = counts.entry(address).or_insert(0);
        if *count >= state.max_per_address {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: Arc::clone(&state.per_address),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.get_mut(&self.address)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Whether a WebSocket upgrade's `Origin` may connect: native clients send
/// none; browsers must come from the server's own origin or a listed one.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let own = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
    own || allowed.iter().any(|a| a.trim_end_matches('/') == origin)
}

impl Server {
    /// Opens (or creates) the data directory and its SQLite database, and
    /// binds the listen address.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        // The certificate first: a typo in its path should not leave a
        // freshly created data directory behind.
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        let location = config.store_location();
        let store = AnyStore::open(&location, config.max_db_bytes)
            .await
            .map_err(|source| ServerError::Storage {
                location: location.describe(),
                source,
            })?;
        let log = TransparencyLog::open(&store)
            .await
            .map_err(|source| ServerError::Storage {
                location: location.describe(),
                source,
            })?;
        // Before the directory opens: its first catch-up publishes it.
        web_release::publish(&store, &web_release::served_release())
            .await
            .map_err(|source| ServerError::Storage {
                location: location.describe(),
                source,
            })?;
        let directory = key_directory::ServerDirectory::open(
            &store,
            &config.data_dir,
            config.directory_epoch_interval,
        )
        .await
        .map_err(|source| ServerError::Storage {
            location: config.data_dir.display().to_string(),
            source,
        })?;
        let push = push::WebPush::open(&store, &config.push, &config.server_names)
            .await
            .map_err(ServerError::Push)?;
        let listener =
            listen(config.listen, config.reuse_port).map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr()?;
        if tls.is_none() && !local_addr.ip().is_loopback() {
            tracing::warn!(
                %local_addr,
                "serving plain HTTP beyond loopback: clients will refuse it unless a proxy terminates TLS in front (or use --tls-cert and --tls-key)"
            );
        }
        Ok(Server {
            listener,
            local_addr,
            store,
            log,
            directory: Arc::new(directory),
            push: Arc::new(push),
            tls,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to: `https://` when the server terminates
    /// TLS, `http://` otherwise.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves until `shutdown` resolves, then stops accepting, closes every
    /// connection and lets the database writer commit what it has queued.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            store,
            log,
            directory,
            push,
            tls,
            config,
            ..
        } = self;
        store::MailboxStore::set_mailbox_limit(&store, config.limits.max_mailbox_entries);
        let store = Arc::new(store);
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics = Arc::new(metrics::Metrics::new(&store.writer_metrics()));
        let ctx = Arc::new(Context::new(
            Arc::clone(&store),
            log,
            Arc::clone(&directory),
            Arc::clone(&push),
            &config,
            Arc::clone(&metrics),
        ));
        let max_connections = config
            .limits
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS);
        let connections = Arc::new(Semaphore::new(max_connections));
        let sweeper = tokio::spawn(store::expiry::sweep_expired(
            Arc::clone(&store),
            config.retention,
            SWEEP_INTERVAL,
            stop_rx.clone(),
        ));
        // Blobs live where the store does: PostgreSQL (every node serves
        // every blob), or files beside the SQLite database.
        let blob_store = Arc::new(match &*store {
            AnyStore::Postgres(pg) => blobs::BlobStore::open_postgres(
                pg,
                config.blobs.clone(),
                config.retention,
                metrics.blob_store_bytes.clone(),
            )
            .await
            .map_err(|source| ServerError::Storage {
                location: pg.target().to_owned(),
                source,
            })?,
            AnyStore::Sqlite(_) => blobs::BlobStore::open_files(
                &config.data_dir,
                config.blobs.clone(),
                config.retention,
                metrics.blob_store_bytes.clone(),
            )?,
        });
        let blob_sweeper = tokio::spawn(blobs::sweep_expired(
            Arc::clone(&blob_store),
            stop_rx.clone(),
        ));
        let blob_routes = blobs::router(blobs::BlobState {
            blobs: blob_store,
            ctx: Arc::clone(&ctx),
        });
        let bus = match &config.bus {
            Some(url) => Some(
                bus::Bus::start(
                    url,
                    &config.bus_prefix,
                    ctx.hub.clone(),
                    Arc::clone(&ctx.links),
                    Arc::clone(&ctx.epoch_grace),
                    stop_rx.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let pusher = tokio::spawn(push::run(
            push,
            Arc::clone(&store),
            ctx.hub.clone(),
            Arc::clone(&metrics),
            stop_rx.clone(),
        ));
        let publisher = tokio::spawn(key_directory::run(
            directory,
            Arc::clone(&store),
            stop_rx.clone(),
        ));
        let tls_stop = stop_rx.clone();
        let host_check = Arc::new(host_check::HostCheck::new(
            &config.server_names,
            tls.clone(),
        ));
        let state = Arc::new(AppState {
            ctx,
            connections: Arc::clone(&connections),
            shutdown: stop_rx,
            log_connections: config.log_connections,
            allowed_origins: config.allowed_origins.clone(),
            per_address: Arc::default(),
            max_per_address: config.limits.max_connections_per_address,
        });
        let metrics_server = match config.metrics_listen {
            Some(addr) => Some(
                serve_metrics(addr, Arc::clone(&state), metrics, state.shutdown.clone()).await?,
            ),
            None => None,
        };
        let app = Router::new()
            .route("/ws", get(websocket))
            .route("/health", get(health))
            .route("/healthz", get(health))
            .route("/readyz", get(ready))
            .route("/canary", get(canary))
            .merge(blob_routes)
            .merge(web::router())
            .layer(axum::middleware::from_fn_with_state(
                host_check,
                host_check::refuse_other_hosts,
            ))
            .with_state(state);
        tracing::info!("serving");
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        };
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = match tls {
            None => {
                // Small frames (a Done, a Delivery) must not wait for Nagle's
                // algorithm: without this, answers stalled ~40 ms behind
                // delayed ACKs.
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(tls) => {
                tokio::spawn(tls.clone().watch_files(tls_stop));
                // `tap_io` with nothing to do: it gives the TLS listener
                // axum's connect-info (the peer address) for free.
                let listener = tls::TlsListener::new(listener, &tls)?.tap_io(|_| {});
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        // Upgraded WebSocket connections are not tracked by `axum::serve`;
        // each holds a permit until it has closed.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        let _ = sweeper.await;
        let _ = blob_sweeper.await;
        let _ = publisher.await;
        let _ = pusher.await;
        if let Some(bus) = bus {
            bus.join().await;
        }
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        store.close().await;
        tracing::info!("stopped");
        served.map_err(ServerError::Io)
    }
}

/// `GET /health` and `/healthz`: the process is up.
async fn health() -> &'static str {
    "ok"
}

/// `GET /readyz`: the server takes connections and its database answers.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match state.ctx.store.stats().await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// Serves `GET /metrics` on `addr` (a listener of its own, see
/// [`ServerConfig::metrics_listen`]) until the server stops.
async fn serve_metrics(
    addr: SocketAddr,
    state: Arc<AppState>,
    metrics: Arc<metrics::Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics");
    let app = Router::new().route(
        "/metrics",
        get(move || async move {
            let rendered = async {
                let stats = state.ctx.store.stats().await?;
                let log_entries = state.ctx.log.size(&*state.ctx.store).await?;
                let directory_epoch = state.ctx.directory.latest_epoch().await;
                metrics.render(&stats, log_entries, directory_epoch, session::now_seconds())
            }
            .await;
            match rendered {
                Ok(text) => (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot gather metrics");
                    (StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable").into_response()
                }
            }
        }),
    );
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    }))
}

/// `GET /canary`: the newest warrant canary (`legal::Canary::to_json`),
/// with the log key and its certificate for the canary's key, or 404 if
/// none was published. Read through the server's own store (its read pool,
/// off the async threads).
async fn canary(State(state): State<Arc<AppState>>) -> Response {
    match legal::latest_canary(&*state.ctx.store).await {
        Ok(Some(canary)) => {
            let mut json = canary.to_json();
            if let Some(fields) = json.as_object_mut() {
                fields.insert(
                    "log_key".into(),
                    hex::encode(state.ctx.log.public_key()).into(),
                );
                fields.insert(
                    "key_certificate".into(),
                    hex::encode(state.ctx.log.certify_legal_key(&canary.key)).into(),
                );
            }
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                json.to_string(),
            )
                .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no warrant canary published").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the warrant canary");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the warrant canary",
            )
                .into_response()
        }
    }
}

async fn websocket(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&headers, &state.allowed_origins) {
        return (
            StatusCode::FORBIDDEN,
            "this web origin may not connect; the operator can allow it with --allowed-origin",
        )
            .into_response();
    }
    // Per-address caps and rate limits count an IPv6 client by its /64.
    let address = rate_limit::address_key(peer.ip());
    let Some(slot) = AddressSlot::take(&state, address) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address; close some and retry",
        )
            .into_response();
    };
    // The peer address is logged only when the operator asked for it, and
    // never stored; the connection keeps it in memory for per-address rate
    // limits while it is open.
    let peer = state.log_connections.then_some(peer);
    if let Some(peer) = peer {
        tracing::info!(%peer, "connection opened");
    }
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server is shutting down").into_response();
    }
    let Ok(permit) = Arc::clone(&state.connections).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "server is at its connection limit; try again later",
        )
            .into_response();
    };
    let ctx = Arc::clone(&state.ctx);
    let shutdown = state.shutdown.clone();
    upgrade
        .max_message_size(sotto_proto::MAX_FRAME_BYTES)
        .max_frame_size(sotto_proto::MAX_FRAME_BYTES)
        // Idle connections dominate memory: tungstenite's default 128 KiB
        // read buffer per connection was most of the measured 141 KiB, and
        // 1 KiB instead of 4 KiB saved ~2.4 KiB more (bench/OPTIMISATIONS.md
        // #11). A frame is read up to this much per `read` past its header:
        // a message's ~600 bytes in one, a large commit in many.
        .read_buffer_size(1024)
        // Frames are written once this much is buffered, or at a flush
        // (every single send flushes; a drained page is flushed once, see
        // `socket::send_all_encoded`).
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            socket::serve(socket, ctx, shutdown, address).await;
            drop(permit);
            drop(slot);
            if let Some(peer) = peer {
                tracing::info!(%peer, "connection closed");
            }
        })
}
