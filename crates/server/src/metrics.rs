//! Operational metrics in the Prometheus text format, served on their own
//! listener (`--metrics-listen`, off by default) so they never face the
//! internet: even aggregate counters tell an observer when traffic happens.
//!
//! Aggregates only. No label names an account, device, group, capability or
//! address: every label value is a fixed string from this crate (a request
//! refusal's error code, a rate limit's name, a connection's kind, a Web
//! Push's outcome), which `crates/server/tests/observability.rs` checks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sotto_proto::v1::ErrorCode;

use crate::store::{StoreError, StoreStats, UnixSeconds, day_of};

/// Why a request was refused: its error code's protobuf name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    reason: &'static str,
}

/// Which rate limit was hit: its fixed description.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitName {
    limit: &'static str,
}

/// What became of a Web Push: `sent`, `gone`, `failed` or `dropped`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PushOutcome {
    outcome: &'static str,
}

/// What kind of connection: one that logged in, or one that did not
/// (sealed sends, key-log reads, a device being linked).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The database writer's batches: how many requests one fsync commits, and
/// how long the commit took.
#[derive(Clone, Debug)]
pub struct WriterMetrics {
    pub(crate) batch_size: Histogram,
    pub(crate) commit_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self {
            // 1, 2, 4, … 1024 requests per batch.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 50 µs … ~3.3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }
}

/// Every metric the server keeps, and the registry that prints them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Open WebSocket connections, by kind (set from the counters below
    /// when scraped).
    connections: Family<Kind, Gauge>,
    /// Connections open now, and those of them logged in.
    pub open: Gauge,
    pub logged_in: Gauge,
    /// Requests refused, by error code.
    pub refused: Family<Reason, Counter>,
    /// Rate-limit hits, by limit.
    pub rate_limited: Family<LimitName, Counter>,
    /// Application messages and proposals accepted (a group too large for
    /// one frame counts once per frame).
    pub messages: Counter,
    /// Commits accepted by the sequencer.
    pub commits: Counter,
    /// Deliveries pushed to connections.
    pub deliveries: Counter,
    queued_entries: Gauge,
    queued_payloads: Gauge,
    oldest_entry_age_days: Gauge,
    accounts: Gauge,
    devices: Gauge,
    log_entries: Gauge,
    /// Bytes of attachment blobs stored (set by the blob store): on this
    /// node's disk, or, on PostgreSQL, in the database every node shares
    /// (then the same on every node, refreshed each sweep).
    pub blob_store_bytes: Gauge,
    directory_epoch: Gauge,
    /// Web Pushes, by outcome.
    pushes: Family<PushOutcome, Counter>,
}

impl Metrics {
    pub(crate) fn new(writer: &WriterMetrics) -> Self {
        let mut registry = Registry::with_prefix("sotto");
        let metrics = Self {
            registry: Registry::default(),
            connections: Family::default(),
            open: Gauge::default(),
            logged_in: Gauge::default(),
            refused: Family::default(),
            rate_limited: Family::default(),
            messages: Counter::default(),
            commits: Counter::default(),
            deliveries: Counter::default(),
            queued_entries: Gauge::default(),
            queued_payloads: Gauge::default(),
            oldest_entry_age_days: Gauge::default(),
            accounts: Gauge::default(),
            devices: Gauge::default(),
            log_entries: Gauge::default(),
            blob_store_bytes: Gauge::default(),
            directory_epoch: Gauge::default(),
            pushes: Family::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections, by kind",
            metrics.connections.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused, by error code",
            metrics.refused.clone(),
        );
        registry.register(
            "rate_limit_hits",
            "Requests that met a rate limit, by limit",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "messages_accepted",
            "Application messages and proposals accepted (per frame)",
            metrics.messages.clone(),
        );
        registry.register(
            "commits_accepted",
            "Commits accepted by the sequencer",
            metrics.commits.clone(),
        );
        registry.register(
            "deliveries",
            "Deliveries pushed to connections",
            metrics.deliveries.clone(),
        );
        registry.register(
            "queued_entries",
            "Mailbox entries waiting for acknowledgement",
            metrics.queued_entries.clone(),
        );
        registry.register(
            "queued_payloads",
            "Stored payloads (each shared by its mailbox entries)",
            metrics.queued_payloads.clone(),
        );
        registry.register(
            "oldest_entry_age_days",
            "Age of the oldest queued mailbox entry, in whole days (entries keep only their day)",
            metrics.oldest_entry_age_days.clone(),
        );
        registry.register("accounts", "Registered accounts", metrics.accounts.clone());
        registry.register("devices", "Active devices", metrics.devices.clone());
        registry.register(
            "log_entries",
            "Entries in the key transparency log",
            metrics.log_entries.clone(),
        );
        registry.register(
            "directory_epoch",
            "The key directory's latest published epoch",
            metrics.directory_epoch.clone(),
        );
        registry.register(
            "blob_store_bytes",
            "Bytes of encrypted attachments in the blob store",
            metrics.blob_store_bytes.clone(),
        );
        registry.register(
            "web_pushes",
            "Web Pushes (empty wake-ups to browsers), by outcome: sent, gone (subscription ended), failed, dropped (queue full)",
            metrics.pushes.clone(),
        );
        registry.register(
            "write_batch_size",
            "Requests committed by one database transaction (one fsync)",
            writer.batch_size.clone(),
        );
        registry.register(
            "write_commit_seconds",
            "Time to commit one database transaction",
            writer.commit_seconds.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a refused request.
    pub(crate) fn refused(&self, code: i32) {
        let reason = ErrorCode::try_from(code).map_or("UNKNOWN", |code| code.as_str_name());
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a Web Push by its outcome.
    pub(crate) fn push(&self, outcome: &'static str) {
        self.pushes.get_or_create(&PushOutcome { outcome }).inc();
    }

    /// Counts a rate-limit hit.
    pub(crate) fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitName { limit }).inc();
    }

    /// The text exposition, with the store's counts read now.
    pub(crate) fn render(
        &self,
        stats: &StoreStats,
        log_entries: u64,
        directory_epoch: u64,
        now: UnixSeconds,
    ) -> Result<String, StoreError> {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let open = self.open.get();
        let logged_in = self.logged_in.get();
        self.connections
            .get_or_create(&Kind { kind: "logged_in" })
            .set(logged_in);
        self.connections
            .get_or_create(&Kind {
                kind: "not_logged_in",
            })
            .set(open.saturating_sub(logged_in).max(0));
        self.queued_entries.set(gauge(stats.mailbox_entries));
        self.queued_payloads.set(gauge(stats.payloads));
        self.oldest_entry_age_days.set(
            stats
                .oldest_entry_day
                .map_or(0, |day| gauge(day_of(now).saturating_sub(day))),
        );
        self.accounts.set(gauge(stats.accounts));
        self.devices.set(gauge(stats.devices));
        self.log_entries.set(gauge(log_entries));
        self.directory_epoch.set(gauge(directory_epoch));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| StoreError::Backend(format!("cannot encode metrics: {e}")))?;
        Ok(text)
    }
}
