//! Server configuration, one small struct per concern, each with documented
//! defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address: loopback only, so a fresh install is not exposed
/// to the network by accident.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8420);

/// How long an unacknowledged message waits in a mailbox by default before
/// the expiry sweep deletes it: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Everything [`crate::Server::bind`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8420`; port 0 picks a free
    /// port (see [`crate::Server::local_addr`]).
    pub listen: SocketAddr,
    /// Directory holding `sotto.db`; created if missing. Default
    /// `./sotto-data`.
    pub data_dir: PathBuf,
    /// Per-connection limits.
    pub limits: Limits,
    /// How long a queued message is kept for a device that never fetches it.
    /// Default 30 days.
    pub retention: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from("./sotto-data"),
            limits: Limits::default(),
            retention: DEFAULT_RETENTION,
        }
    }
}

/// Limits that keep one client from holding more than its share of the
/// server.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 19_000,
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
        assert_eq!(config.limits.max_in_flight, 64);
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.limits.max_connections, 19_000);
    }
}
