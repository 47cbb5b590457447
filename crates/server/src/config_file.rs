//! The configuration file (`sotto-server --config FILE`): TOML in sections,
//! one key per command-line flag. A flag (or its `SOTTO_*` environment
//! variable) overrides the file, and the file overrides the defaults of
//! [`ServerConfig`].
//!
//! [`example`] prints a commented file holding every key at its default,
//! generated from [`ServerConfig::default`] (a test checks that it parses
//! back to exactly the defaults), so the example cannot drift from the code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{RegistrationPolicy, ServerConfig};
use crate::tls::TlsConfig;

/// Seconds in a day, for `retention_days`.
const DAY: u64 = 24 * 60 * 60;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key or a value of the wrong type: the message
    /// names the line, the column and the key.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A configuration file as written: every key optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub tls: TlsSection,
    pub registration: RegistrationSection,
    pub storage: StorageSection,
    pub limits: LimitsSection,
    pub privacy: PrivacySection,
    pub metrics: MetricsSection,
    pub directory: DirectorySection,
    pub push: PushSection,
}

/// `[push]`: Web Push to browsers (`crate::push`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSection {
    /// Push services devices may name (`--push-service`); empty: off.
    pub services: Option<Vec<String>>,
    /// The VAPID contact (`--push-contact`).
    pub contact: Option<String>,
}

/// `[directory]`: the key directory's epochs.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySection {
    pub epoch_interval_secs: Option<u64>,
    /// Invited auditors' public keys (64 hex digits each).
    pub auditors: Option<Vec<String>>,
}

/// An auditor's Ed25519 public key from 64 hex digits (`--auditor`,
/// `directory.auditors`).
pub fn parse_auditor_key(text: &str) -> Result<[u8; 32], String> {
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| format!("{text:?} is not an auditor key (64 hex digits)"))
}

/// `[server]`: where it listens and keeps its data.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub store: Option<String>,
    pub bus: Option<String>,
    pub bus_prefix: Option<String>,
    pub reuse_port: Option<bool>,
    pub server_names: Option<Vec<String>>,
}

/// `[tls]`: the certificate chain and key (PEM), both or neither.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[registration]`: who may create accounts.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSection {
    pub policy: Option<Policy>,
}

/// `open`, `invite` or `closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Open,
    Invite,
    Closed,
}

impl From<Policy> for RegistrationPolicy {
    fn from(policy: Policy) -> Self {
        match policy {
            Policy::Open => Self::Open,
            Policy::Invite => Self::Invite,
            Policy::Closed => Self::Closed,
        }
    }
}

/// `[storage]`: how long undelivered messages are kept, and a quota.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub retention_days: Option<u64>,
    pub max_db_bytes: Option<u64>,
    /// Largest attachment blob (`--max-blob-bytes`).
    pub max_blob_bytes: Option<u64>,
    /// Bytes of blobs one group's members may upload per day.
    pub blob_quota_bytes: Option<u64>,
}

/// `[limits]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_devices_per_account: Option<u64>,
    pub previous_epoch_grace_secs: Option<u64>,
    /// `false` lifts every rate limit (benchmarks, trusted networks).
    pub rate_limits: Option<bool>,
}

/// `[privacy]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    pub log_connections: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
}

/// `[metrics]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub listen: Option<SocketAddr>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses a file's text; the error names the line and the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// What TOML types cannot say: ranges, and keys that go together.
    fn check(&self) -> Result<(), String> {
        let range = |key: &str, value: Option<u64>, low: u64, high: u64| match value {
            Some(v) if !(low..=high).contains(&v) => Err(format!(
                "{key} = {v} is out of range: it must be {low} to {high}"
            )),
            _ => Ok(()),
        };
        range(
            "storage.retention_days",
            self.storage.retention_days,
            1,
            3650,
        )?;
        range(
            "limits.max_devices_per_account",
            self.limits.max_devices_per_account,
            1,
            1000,
        )?;
        range(
            "limits.previous_epoch_grace_secs",
            self.limits.previous_epoch_grace_secs,
            0,
            3600,
        )?;
        range(
            "directory.epoch_interval_secs",
            self.directory.epoch_interval_secs,
            1,
            86_400,
        )?;
        for key in self.directory.auditors.iter().flatten() {
            parse_auditor_key(key).map_err(|e| format!("directory.auditors: {e}"))?;
        }
        if let Some(store) = &self.server.store
            && (!crate::store::postgres::is_postgres_url(store)
                || crate::store::postgres::parse_config(store).is_err())
        {
            return Err(
                "server.store must be a postgres:// URL (an SQLite data directory is server.data)"
                    .into(),
            );
        }
        if let Some(bus) = &self.server.bus
            && !crate::bus::is_bus_url(bus)
        {
            return Err("server.bus must be a nats://HOST:PORT URL".into());
        }
        if let Some(prefix) = &self.server.bus_prefix
            && !crate::bus::is_bus_prefix(prefix)
        {
            return Err(
                "server.bus_prefix must be dot-separated tokens of letters, digits, - and _".into(),
            );
        }
        if let Some(services) = &self.push.services {
            crate::push::PushServices::parse(services)
                .map_err(|e| format!("push.services: {e}"))?;
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => Err("tls.cert is set but tls.key is not: give both".into()),
            (None, Some(_)) => Err("tls.key is set but tls.cert is not: give both".into()),
            _ => Ok(()),
        }
    }

    /// The server configuration: these keys over the defaults.
    pub fn to_server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::default();
        let s = self;
        if let Some(listen) = s.server.listen {
            config.listen = listen;
        }
        if let Some(data) = &s.server.data {
            config.data_dir.clone_from(data);
        }
        if let Some(store) = &s.server.store {
            config.store = Some(store.clone());
        }
        if let Some(bus) = &s.server.bus {
            config.bus = Some(bus.clone());
        }
        if let Some(prefix) = &s.server.bus_prefix {
            config.bus_prefix.clone_from(prefix);
        }
        if let Some(reuse) = s.server.reuse_port {
            config.reuse_port = reuse;
        }
        if let Some(names) = &s.server.server_names {
            config.server_names.clone_from(names);
        }
        if let (Some(cert), Some(key)) = (&s.tls.cert, &s.tls.key) {
            config.tls = Some(TlsConfig::new(cert.clone(), key.clone()));
        }
        if let Some(policy) = s.registration.policy {
            config.registration = policy.into();
        }
        if let Some(days) = s.storage.retention_days {
            config.retention = Duration::from_secs(days.saturating_mul(DAY));
        }
        if s.storage.max_db_bytes.is_some() {
            config.max_db_bytes = s.storage.max_db_bytes;
        }
        if let Some(bytes) = s.storage.max_blob_bytes {
            config.blobs.max_blob_bytes = bytes;
        }
        if let Some(bytes) = s.storage.blob_quota_bytes {
            config.blobs.quota_bytes_per_group = bytes;
        }
        if let Some(n) = s.limits.max_devices_per_account {
            config.limits.max_devices_per_account = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(secs) = s.limits.previous_epoch_grace_secs {
            config.previous_epoch_grace = Duration::from_secs(secs);
        }
        if s.limits.rate_limits == Some(false) {
            config.limits.lift_rate_limits();
        }
        if let Some(log) = s.privacy.log_connections {
            config.log_connections = log;
        }
        if let Some(origins) = &s.privacy.allowed_origins {
            config.allowed_origins.clone_from(origins);
        }
        if s.metrics.listen.is_some() {
            config.metrics_listen = s.metrics.listen;
        }
        if let Some(secs) = s.directory.epoch_interval_secs {
            config.directory_epoch_interval = Duration::from_secs(secs);
        }
        if let Some(keys) = &s.directory.auditors {
            // `check` parsed every key already.
            config.auditors = keys
                .iter()
                .filter_map(|k| parse_auditor_key(k).ok())
                .collect();
        }
        if let Some(services) = &s.push.services {
            config.push.services.clone_from(services);
        }
        if let Some(contact) = &s.push.contact {
            config.push.contact = Some(contact.clone());
        }
        config
    }
}

/// A commented configuration file with every key at its default
/// (`sotto-server config example`). Keys without a default are shown
/// commented out.
pub fn example() -> String {
    let d = ServerConfig::default();
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let policy = match d.registration {
        RegistrationPolicy::Open => "open",
        RegistrationPolicy::Invite => "invite",
        RegistrationPolicy::Closed => "closed",
    };
    format!(
        r#"# sotto-server configuration (sotto-server --config FILE).
# Every key is optional; shown here at its default. A command-line flag or
# its SOTTO_* environment variable overrides the key of the same name.

[server]
# Address to listen on (--listen, SOTTO_LISTEN). 0.0.0.0:PORT serves other
# machines: give it [tls] or put a TLS proxy in front.
listen = "{listen}"
# Directory for the database and keys (--data, SOTTO_DATA).
data = "{data}"
# Keep the data in PostgreSQL instead of the data directory's SQLite file
# (--store, SOTTO_STORE), e.g. "postgres://sotto@db.example.org/sotto".
# store = "postgres://…"
# With several nodes on one PostgreSQL database: the NATS server that
# carries wake-ups between them (--bus, SOTTO_BUS).
# bus = "nats://127.0.0.1:4222"
# What every NATS subject starts with (--bus-prefix, SOTTO_BUS_PREFIX):
# give each deployment sharing one NATS server its own.
# bus_prefix = "sotto"
# SO_REUSEPORT, so several processes on one data directory share the port.
reuse_port = {reuse_port}
# Host names clients use besides IP addresses, localhost and the
# certificate's names (--server-name); other names are refused.
server_names = {server_names}

[tls]
# Certificate chain and private key, PEM (--tls-cert, --tls-key). Both or
# neither; reloaded when the files change or on SIGHUP.
# cert = "/etc/sotto/fullchain.pem"
# key = "/etc/sotto/privkey.pem"

[registration]
# Who may create accounts: "open", "invite" (codes from
# `sotto-server invite create`) or "closed" (--registration).
policy = "{policy}"

[storage]
# Days an undelivered message is kept (--retention-days), 1 to 3650.
retention_days = {retention_days}
# Quota on the database, in bytes: at it, sends are refused instead of
# acknowledged (--max-db-bytes). No quota by default.
# max_db_bytes = 10_000_000_000
# Largest encrypted attachment, in bytes (--max-blob-bytes).
max_blob_bytes = {max_blob_bytes}
# Bytes of attachments one group's members may upload per day (kept in
# memory: a restart resets it).
blob_quota_bytes = {blob_quota_bytes}

[limits]
# Active devices per account (--max-devices-per-account), 1 to 1000.
max_devices_per_account = {max_devices}
# Seconds after a commit that messages with the previous epoch's capability
# are still accepted (--previous-epoch-grace-secs), 0 to 3600.
previous_epoch_grace_secs = {grace}
# false lifts every rate limit (--no-rate-limits): not for a public server.
rate_limits = true

[privacy]
# Log every connection's address (--log-connections). Addresses are never
# stored either way.
log_connections = {log_connections}
# Web origins allowed to connect, for the browser client (--allowed-origin).
allowed_origins = {allowed_origins}

[metrics]
# Serve Prometheus metrics at /metrics on this address (--metrics-listen).
# Keep it private. Off by default.
# listen = "127.0.0.1:9420"

[directory]
# Seconds between signed key-directory epochs when nothing changes
# (--directory-epoch-interval), 1 to 86400: clients refuse a stale one.
epoch_interval_secs = {epoch_interval}
# Third-party auditors you invited (--auditor): their public keys, 64 hex
# digits each (from `sotto auditor-key` on the auditor's machine). The server
# stores countersignatures of its epochs from these only, 8 per auditor.
# auditors = ["<64 hex digits>"]

[push]
# Web Push to browsers that turned it on (an empty wake-up: no content, no
# sender). The push services whose endpoints devices may register
# (--push-service): host names or *.domain; [] turns Web Push off.
services = {push_services}
# Who the push services may contact about this server's pushes (the VAPID
# "sub", --push-contact): default https:// and the first server name.
# contact = "mailto:admin@example.org"
"#,
        listen = d.listen,
        data = d.data_dir.display(),
        reuse_port = d.reuse_port,
        server_names = list(&d.server_names),
        policy = policy,
        retention_days = d.retention.as_secs() / DAY,
        max_blob_bytes = d.blobs.max_blob_bytes,
        blob_quota_bytes = d.blobs.quota_bytes_per_group,
        max_devices = d.limits.max_devices_per_account,
        grace = d.previous_epoch_grace.as_secs(),
        log_connections = d.log_connections,
        allowed_origins = list(&d.allowed_origins),
        epoch_interval = d.directory_epoch_interval.as_secs(),
        push_services = list(&d.push.services),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_to_exactly_the_defaults() {
        let parsed = FileConfig::parse(&example()).unwrap();
        assert_eq!(parsed.to_server_config(), ServerConfig::default());
        // Uncommenting the optional keys works too.
        let uncommented = example()
            .replace("# cert = ", "cert = ")
            .replace("# key = ", "key = ")
            .replace("# max_db_bytes = ", "max_db_bytes = ")
            .replace(
                "# listen = \"127.0.0.1:9420\"",
                "listen = \"127.0.0.1:9420\"",
            );
        let config = FileConfig::parse(&uncommented).unwrap().to_server_config();
        assert!(config.tls.is_some());
        assert_eq!(config.max_db_bytes, Some(10_000_000_000));
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9420".parse().unwrap())
        );
    }

    #[test]
    fn every_key_reaches_the_server_config() {
        let config = FileConfig::parse(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            data = "/var/lib/sotto"
            store = "postgres://sotto@db.example.org/sotto"
            bus = "nats://10.0.0.5:4222"
            bus_prefix = "sotto.eu-1"
            reuse_port = true
            server_names = ["chat.example.org"]
            [registration]
            policy = "invite"
            [storage]
            retention_days = 7
            max_db_bytes = 1000000
            [limits]
            max_devices_per_account = 4
            previous_epoch_grace_secs = 5
            rate_limits = false
            [privacy]
            log_connections = true
            allowed_origins = ["https://chat.example.org"]
            [metrics]
            listen = "127.0.0.1:9420"
            [directory]
            epoch_interval_secs = 60
            auditors = ["0101010101010101010101010101010101010101010101010101010101010101"]
            [push]
            services = ["fcm.googleapis.com"]
            contact = "mailto:admin@example.org"
            "#,
        )
        .unwrap()
        .to_server_config();
        assert_eq!(config.auditors, [[1; 32]]);
        assert_eq!(config.push.services, ["fcm.googleapis.com"]);
        assert_eq!(
            config.push.contact.as_deref(),
            Some("mailto:admin@example.org")
        );
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/sotto"));
        assert_eq!(
            config.store.as_deref(),
            Some("postgres://sotto@db.example.org/sotto")
        );
        assert_eq!(config.bus.as_deref(), Some("nats://10.0.0.5:4222"));
        assert_eq!(config.bus_prefix, "sotto.eu-1");
        assert!(config.reuse_port);
        assert_eq!(config.server_names, ["chat.example.org"]);
        assert_eq!(config.registration, RegistrationPolicy::Invite);
        assert_eq!(config.retention, Duration::from_secs(7 * DAY));
        assert_eq!(config.max_db_bytes, Some(1_000_000));
        assert_eq!(config.limits.max_devices_per_account, 4);
        assert_eq!(config.previous_epoch_grace, Duration::from_secs(5));
        assert!(config.limits.sends_per_connection.per_second.is_infinite());
        assert!(config.log_connections);
        assert_eq!(config.directory_epoch_interval, Duration::from_secs(60));
        assert_eq!(config.allowed_origins, ["https://chat.example.org"]);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9420".parse().unwrap())
        );
    }

    #[test]
    fn an_auditor_key_that_is_not_64_hex_digits_is_refused() {
        let err = FileConfig::parse("[directory]\nauditors = [\"abcd\"]\n").unwrap_err();
        assert!(err.contains("directory.auditors"), "{err}");
    }

    #[test]
    fn a_bad_key_is_named_with_its_line() {
        let err =
            FileConfig::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_on = 3\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("listen_on"), "{err}");
        let err = FileConfig::parse("[storage]\n\nretention_days = \"thirty\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("retention_days") || err.contains("integer"),
            "{err}"
        );
        let err = FileConfig::parse("[sorage]\n").unwrap_err();
        assert!(err.contains("sorage"), "{err}");
        let err = FileConfig::parse("[storage]\nretention_days = 0\n").unwrap_err();
        assert!(err.contains("storage.retention_days"), "{err}");
        let err = FileConfig::parse("[server]\nstore = \"/var/lib/sotto\"\n").unwrap_err();
        assert!(err.contains("server.store"), "{err}");
        let err = FileConfig::parse("[server]\nbus = \"http://10.0.0.5\"\n").unwrap_err();
        assert!(err.contains("server.bus"), "{err}");
        let err = FileConfig::parse("[server]\nbus_prefix = \"a.*\"\n").unwrap_err();
        assert!(err.contains("server.bus_prefix"), "{err}");
        let err = FileConfig::parse("[push]\nservices = [\"http://10.0.0.1\"]\n").unwrap_err();
        assert!(err.contains("push.services"), "{err}");
        let err = FileConfig::parse("[tls]\ncert = \"a.pem\"\n").unwrap_err();
        assert!(err.contains("tls.key"), "{err}");
    }
}
