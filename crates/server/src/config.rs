//! Server configuration, one small struct per concern, each with documented
//! defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::rate_limit::Rate;

/// Default listen address: loopback only, so a fresh install is not exposed
/// to the network by accident.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8420);

/// How long an unacknowledged message waits in a mailbox by default before
/// the expiry sweep deletes it: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How long after a commit the previous epoch's send capability is still
/// accepted, by default: 60 s, for messages sent just before the commit.
pub const DEFAULT_PREVIOUS_EPOCH_GRACE: Duration = Duration::from_secs(60);
/// Default [`ServerConfig::directory_epoch_interval`].
pub const DEFAULT_DIRECTORY_EPOCH_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Everything [`crate::Server::bind`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8420`; port 0 picks a free
    /// port (see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Directory holding `sotto.db`; created if missing. Default
    /// `./sotto-data`.
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://…`) to keep the data in instead
    /// of `data_dir`'s SQLite file. Default `None`.
    pub store: Option<String>,
    /// A NATS server (`nats://HOST:PORT`) that carries wake-ups between
    /// the nodes sharing [`Self::store`] (`--bus`; see `crate::bus`).
    /// Default `None`: one node.
    pub bus: Option<String>,
    /// What every subject on [`Self::bus`] starts with (`--bus-prefix`),
    /// so deployments sharing one NATS server stay apart. Default `sotto`.
    pub bus_prefix: String,
    /// Per-connection limits.
    pub limits: Limits,
    /// How long a queued message is kept for a device that never fetches it.
    /// Default 30 days.
    pub retention: Duration,
    /// Sets `SO_REUSEPORT` on the listening socket so several server
    /// processes can share one port (the kernel spreads connections across
    /// them). Default off. Only meaningful on Unix.
    pub reuse_port: bool,
    /// Logs the address of every connection as it opens and closes
    /// (tracing, INFO), for operators legally required to keep such logs.
    /// Default off: no IP address is logged or stored. Addresses never go
    /// into the database either way.
    pub log_connections: bool,
    /// Who may create accounts. Default [`RegistrationPolicy::Open`].
    pub registration: RegistrationPolicy,
    /// Web origins allowed to open a WebSocket (for the browser client), e.g.
    /// `https://chat.example.org`. A request without an `Origin` header (a
    /// native client) is always allowed; one with an `Origin` is allowed if
    /// it is listed or is the server's own origin. Default empty.
    pub allowed_origins: Vec<String>,
    /// Operator quota on the database file, in bytes (SQLite
    /// `max_page_count`, rounded down to whole pages). Writes that would grow
    /// the database past it fail, and the send is refused instead of
    /// acknowledged. Default `None`: no quota.
    pub max_db_bytes: Option<u64>,
    /// How long after a commit a message framed in the previous epoch (sent
    /// with that epoch's capability) is still accepted. Kept in memory: after
    /// a restart, previous-epoch messages are refused. A member removed by
    /// the commit can post for at most this long. Default 60 s.
    pub previous_epoch_grace: Duration,
    /// Terminate TLS with this certificate and key (`--tls-cert`,
    /// `--tls-key`). Default `None`: plain HTTP, for loopback or behind a
    /// proxy that terminates TLS.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Host names this server answers to (`--server-name`), besides IP
    /// addresses, `localhost` and, with TLS, the names on its certificate.
    /// A request naming any other host is refused (421), against DNS
    /// rebinding. Default empty.
    pub server_names: Vec<String>,
    /// Serve `GET /metrics` (Prometheus text format) on this address, a
    /// listener of its own (`--metrics-listen`). Default `None`: no
    /// metrics. Keep it private (loopback or an internal network): even
    /// aggregate counters show an observer when traffic happens.
    pub metrics_listen: Option<SocketAddr>,
    /// The blob store's size cap and quota (attachments; `crate::blobs`).
    pub blobs: crate::blobs::BlobConfig,
    /// The key directory signs its latest epoch again at least this often
    /// when nothing changes (`--directory-epoch-interval`), so an idle
    /// directory's head stays fresh; changes are published within a
    /// second. Default 5 minutes.
    pub directory_epoch_interval: Duration,
    /// Third-party auditors the operator invited (`--auditor`, Ed25519
    /// public keys): the server stores countersignatures of its directory
    /// epochs from these only (at most 8 each), so nobody else can make it
    /// store anything. Default: none.
    pub auditors: Vec<[u8; 32]>,
    /// Web Push to browsers (`crate::push`): the push services devices may
    /// name, and the operator's contact. Default: the four big browsers'
    /// services; each device's pushes are off until it turns them on.
    pub push: crate::push::PushConfig,
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RegistrationPolicy {
    /// Anyone who can reach the server (rate-limited per address).
    #[default]
    Open,
    /// Only with a one-time code from `sotto-server invite create`.
    Invite,
    /// Nobody; existing accounts keep working.
    Closed,
}

impl ServerConfig {
    /// Where the data lives: [`Self::store`] if set, else the SQLite
    /// database in [`Self::data_dir`].
    pub fn store_location(&self) -> crate::store::StoreLocation {
        crate::store::StoreLocation::choose(self.store.as_deref(), &self.data_dir)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from("./sotto-data"),
            store: None,
            bus: None,
            bus_prefix: crate::bus::DEFAULT_PREFIX.to_owned(),
            limits: Limits::default(),
            retention: DEFAULT_RETENTION,
            reuse_port: false,
            log_connections: false,
            registration: RegistrationPolicy::Open,
            allowed_origins: Vec::new(),
            max_db_bytes: None,
            previous_epoch_grace: DEFAULT_PREVIOUS_EPOCH_GRACE,
            tls: None,
            server_names: Vec::new(),
            metrics_listen: None,
            blobs: crate::blobs::BlobConfig::default(),
            directory_epoch_interval: DEFAULT_DIRECTORY_EPOCH_INTERVAL,
            auditors: Vec::new(),
            push: crate::push::PushConfig::default(),
        }
    }
}

/// Limits that keep one client from holding more than its share of the
/// server.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Deliveries pushed to one connection and not yet acknowledged.
    /// Default 64: enough to keep a link busy, small enough that a stalled
    /// client does not pin much memory.
    pub max_in_flight: usize,
    /// Time a new connection has to register or log in. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection with no frame at all (pings included) for this long is
    /// closed. Default 90 s; clients ping more often than that.
    pub idle_timeout: Duration,
    /// Concurrent WebSocket connections; more are refused with HTTP 503.
    /// Default 19 000, below a typical 20 000 file-descriptor limit.
    pub max_connections: usize,
    /// Sends (messages and commits) on one connection. Sends carry no
    /// identity, so this and the next are the abuse brakes. Default 2 000/s,
    /// bursts of 4 000.
    pub sends_per_connection: Rate,
    /// Sends with one group's capability, over all connections. Default
    /// 2 000/s, bursts of 4 000.
    pub sends_per_capability: Rate,
    /// Sends and claims from one client address, over all its connections
    /// (kept in memory only). Default 4 000/s, bursts of 8 000.
    pub sends_per_address: Rate,
    /// Account registrations from one address. Default one per 6 minutes,
    /// bursts of 10.
    pub registrations_per_address: Rate,
    /// Device-link joins from one address (guessing link codes is hopeless
    /// at 128 bits, but spam is not). Default one per 10 s, bursts of 10.
    pub link_attempts_per_address: Rate,
    /// Key-log requests (heads, proofs, account logs, entries) on one
    /// connection. Default 100/s, bursts of 2 000 (an audit pages through
    /// the log).
    pub log_requests_per_connection: Rate,
    /// Open connections from one address. Default 1 000.
    pub max_connections_per_address: usize,
    /// Messages waiting in one device's mailbox. A send or commit is not
    /// refused because a recipient is at it: that device is skipped (the
    /// sender is told in `Done.skipped_recipients`) and gets a
    /// missed-messages notice, which does not count. Default 10 000.
    pub max_mailbox_entries: u32,
    /// KeyPackage claims on one connection. Default 20/s, bursts of 50.
    pub claims_per_connection: Rate,
    /// KeyPackage claims for one account, over all connections, so nobody
    /// drains someone's pool. Default 2/s, bursts of 30.
    pub claims_per_target: Rate,
    /// Devices added to one account (each is a transparency-log entry every
    /// contact must download). Default one per 10 s, bursts of 5.
    pub devices_added_per_account: Rate,
    /// Abuse reports from one account (`ReportMessage`), so one reporter
    /// cannot flood the moderation queue. Default one per 10 s, bursts of 10.
    pub reports_per_account: Rate,
    /// Active devices one account may have. Default 16.
    pub max_devices_per_account: usize,
    /// Groups created on one connection (creating one needs no capability
    /// and no account). Default one per second, bursts of 20.
    pub groups_created_per_connection: Rate,
    /// Groups created from one address, over all its connections. Default
    /// 5/s, bursts of 100.
    pub groups_created_per_address: Rate,
}

impl Limits {
    /// Lifts every rate limit and per-address or per-mailbox cap, keeping
    /// the protocol's own limits (frame and message sizes, timeouts, the
    /// in-flight window, the connection total).
    pub fn lift_rate_limits(&mut self) {
        let unlimited = Rate {
            per_second: f64::INFINITY,
            burst: f64::INFINITY,
        };
        self.sends_per_connection = unlimited;
        self.sends_per_capability = unlimited;
        self.sends_per_address = unlimited;
        self.registrations_per_address = unlimited;
        self.link_attempts_per_address = unlimited;
        self.log_requests_per_connection = unlimited;
        self.claims_per_connection = unlimited;
        self.claims_per_target = unlimited;
        self.devices_added_per_account = unlimited;
        self.reports_per_account = unlimited;
        self.groups_created_per_connection = unlimited;
        self.groups_created_per_address = unlimited;
        self.max_connections_per_address = usize::MAX;
        self.max_mailbox_entries = u32::MAX;
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 19_000,
            sends_per_connection: Rate {
                per_second: 2_000.0,
                burst: 4_000.0,
            },
            sends_per_capability: Rate {
                per_second: 2_000.0,
                burst: 4_000.0,
            },
            sends_per_address: Rate {
                per_second: 4_000.0,
                burst: 8_000.0,
            },
            registrations_per_address: Rate {
                per_second: 1.0 / 360.0,
                burst: 10.0,
            },
            link_attempts_per_address: Rate {
                per_second: 0.1,
                burst: 10.0,
            },
            log_requests_per_connection: Rate {
                per_second: 100.0,
                burst: 2_000.0,
            },
            max_connections_per_address: 1_000,
            max_mailbox_entries: 10_000,
            claims_per_connection: Rate {
                per_second: 20.0,
                burst: 50.0,
            },
            claims_per_target: Rate {
                per_second: 2.0,
                burst: 30.0,
            },
            devices_added_per_account: Rate {
                per_second: 0.1,
                burst: 5.0,
            },
            reports_per_account: Rate {
                per_second: 0.1,
                burst: 10.0,
            },
            max_devices_per_account: 16,
            groups_created_per_connection: Rate {
                per_second: 1.0,
                burst: 20.0,
            },
            groups_created_per_address: Rate {
                per_second: 5.0,
                burst: 100.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let config = ServerConfig::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8420");
        assert_eq!(config.data_dir, PathBuf::from("./sotto-data"));
        assert_eq!(config.retention, Duration::from_secs(2_592_000));
        assert!(!config.log_connections);
        assert_eq!(config.limits.max_in_flight, 64);
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.limits.max_connections, 19_000);
    }
}
