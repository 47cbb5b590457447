//! Entry points for fuzz targets (`fuzz/` at the workspace root), compiled
//! only with the `fuzzing` feature.
//!
//! [`FuzzServer`] is the server's shared state ([`Context`]) over a real
//! [`SqliteStore`] in a directory the caller chooses, with its own
//! single-threaded Tokio runtime; [`FuzzSession`] is one connection's
//! protocol state ([`Session`]) fed raw WebSocket message bytes, exactly as
//! `socket::serve` feeds them, without a socket.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use sotto_proto::v1::server_frame;

use crate::config::{Limits, ServerConfig};
use crate::key_directory::ServerDirectory;
use crate::metrics::Metrics;
use crate::session::{Context, Session};
use crate::store::{SqliteStore, StoreError};
use crate::transparency_log::TransparencyLog;

/// A server without a listener: its store, log, hub and limits.
#[derive(Debug)]
pub struct FuzzServer {
    runtime: tokio::runtime::Runtime,
    ctx: Arc<Context<SqliteStore>>,
    /// Gives each session its own client address, so per-address limits
    /// apply per session as they would to distinct clients.
    next_address: AtomicU64,
}

impl FuzzServer {
    /// Opens (or creates) a database in `data_dir` with default limits.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, Limits::default())
    }

    /// Opens (or creates) a database in `data_dir` with `limits`.
    pub fn open_with(data_dir: &Path, limits: Limits) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start a runtime: {e}")))?;
        let store = SqliteStore::open(data_dir)?;
        store.set_mailbox_limit(limits.max_mailbox_entries);
        let log = runtime.block_on(TransparencyLog::open(&store))?;
        let config = ServerConfig {
            limits,
            ..ServerConfig::default()
        };
        let directory = Arc::new(runtime.block_on(ServerDirectory::open(
            &store,
            data_dir,
            config.directory_epoch_interval,
        ))?);
        let metrics = Arc::new(Metrics::new(&store.writer_metrics()));
        let push = Arc::new(
            runtime
                .block_on(crate::push::WebPush::open(
                    &store,
                    &config.push,
                    &config.server_names,
                ))
                .map_err(StoreError::Backend)?,
        );
        let ctx = Arc::new(Context::new(
            Arc::new(store),
            log,
            directory,
            push,
            &config,
            metrics,
        ));
        Ok(Self {
            runtime,
            ctx,
            next_address: AtomicU64::new(1),
        })
    }

    /// A new connection, as if a client had just connected.
    pub fn session(&self) -> FuzzSession<'_> {
        let n = self.next_address.fetch_add(1, Ordering::Relaxed);
        let address = IpAddr::V6(Ipv6Addr::from(u128::from(n)));
        let session = self
            .runtime
            .block_on(async { Session::new(Arc::clone(&self.ctx), address) });
        FuzzSession {
            server: self,
            session,
        }
    }

    /// The log's public key, as announced in every `Challenge`.
    pub fn log_key(&self) -> [u8; 32] {
        self.ctx.log.public_key()
    }

    /// Lets the store's writer commit what it has queued.
    pub fn close(&self) {
        self.runtime.block_on(self.ctx.store.close());
    }
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct FuzzSession<'a> {
    server: &'a FuzzServer,
    session: Session<SqliteStore>,
}

impl FuzzSession<'_> {
    /// The challenge nonce this connection must sign to log in.
    pub fn nonce(&self) -> Vec<u8> {
        match self.session.challenge().body {
            Some(server_frame::Body::Challenge(challenge)) => challenge.nonce,
            _ => Vec::new(),
        }
    }

    /// Whether the connection has registered or logged in.
    pub fn is_authenticated(&self) -> bool {
        self.session.is_authenticated()
    }

    /// Handles one binary WebSocket message, then pushes what the mailbox
    /// has (as `serve` does after every frame). Returns the encoded
    /// response, if any.
    pub fn handle(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let session = &mut self.session;
        self.server.runtime.block_on(async {
            let response = session.handle_bytes(bytes).await;
            // Storage errors end a real connection; here they are only
            // ignored, since the fuzzer looks for panics.
            let _ = session.pump().await;
            response.map(|r| r.encode_to_vec())
        })
    }
}
