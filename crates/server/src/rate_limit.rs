//! Token-bucket rate limits. Sends are authorised by a capability, not by an
//! identity, so abuse is held back per connection and per capability (and,
//! in memory only, per address) instead of per account.
//!
//! With several nodes on one database, the limits that must hold for the
//! whole service (registrations per address, KeyPackage claims per claimed
//! account, devices added per account) are also counted in the database
//! ([`RateLimits::charge_shared`]): a fixed window as long as the bucket
//! takes to refill (`burst / per_second`), allowing `burst` hits in it,
//! counted by one conditional upsert. Each node's bucket still applies
//! first, so a single node behaves as before.

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::store::{ClusterStore, StoreError};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A bucket that holds up to `burst` tokens and refills at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if rate.per_second > 0.0 {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// Buckets keyed by something shared between connections (a capability, an
/// address). Held in memory only; full buckets are forgotten.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

/// Above this many keys, full buckets are dropped before adding another.
const PRUNE_ABOVE: usize = 10_000;

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn take(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; do not block traffic.
            return Ok(());
        };
        if buckets.len() > PRUNE_ABOVE {
            let rate = self.rate;
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(self.rate, now))
            .take(self.rate, now)
    }
}

/// A request refused by a rate limit: what was limited, and how long until
/// it would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub what: &'static str,
    pub wait: Duration,
}

/// The key per-address limits count a client address under: an IPv4
/// address itself, an IPv6 address's /64 prefix (one subscriber usually
/// holds a whole /64, so counting single IPv6 addresses would give each
/// client billions of buckets).
pub(crate) fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// What a KeyPackage claim may take from the claimed account, once the
/// claimer's own limits passed ([`RateLimits::charge_claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetBudget {
    /// Within the account's rate: a one-time KeyPackage per device (the
    /// last-resort one where the pool is empty).
    Pool,
    /// Beyond it: only last-resort KeyPackages, taking nothing. The
    /// [`Limited`] says when the pool opens again, for a device that has
    /// no last-resort KeyPackage to give.
    LastResortOnly(Limited),
}

/// One connection's own buckets (see [`RateLimits::connection`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionBuckets {
    sends: TokenBucket,
    claims: TokenBucket,
    log_requests: TokenBucket,
    groups_created: TokenBucket,
}

/// Every rate limit the server applies, in one place: the buckets shared by
/// all connections (per capability, per claimed account, per address; in
/// memory only) and the rates of each connection's own buckets. Sends carry
/// no identity (sealed sender), so these are the abuse brakes.
#[derive(Debug)]
pub(crate) struct RateLimits {
    limits: Limits,
    per_capability: RateLimiter<[u8; 32]>,
    per_claim_target: RateLimiter<String>,
    per_address: RateLimiter<IpAddr>,
    registrations_per_address: RateLimiter<IpAddr>,
    link_attempts_per_address: RateLimiter<IpAddr>,
    devices_added_per_account: RateLimiter<String>,
    reports_per_account: RateLimiter<String>,
    groups_created_per_address: RateLimiter<IpAddr>,
    /// Keys the hashes the global limits count under (loaded once).
    shared_secret: tokio::sync::OnceCell<zeroize::Zeroizing<[u8; 32]>>,
    /// Global counts so far, to prune ended windows now and then.
    shared_hits: std::sync::atomic::AtomicU64,
    /// Counts every hit, by limit.
    metrics: Arc<Metrics>,
}

/// A limit that holds across nodes ([`RateLimits::charge_shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedLimit {
    /// Registrations from one address (the key: the address).
    Registrations,
    /// KeyPackage claims taking from one account's pool (the key: the
    /// claimed username).
    ClaimsPerTarget,
    /// Devices added to one account (the key: the username).
    DevicesAdded,
}

/// Ended windows are deleted on one global count in this many.
const PRUNE_SHARED_EVERY: u64 = 256;

impl RateLimits {
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            per_capability: RateLimiter::new(limits.sends_per_capability),
            per_claim_target: RateLimiter::new(limits.claims_per_target),
            per_address: RateLimiter::new(limits.sends_per_address),
            registrations_per_address: RateLimiter::new(limits.registrations_per_address),
            link_attempts_per_address: RateLimiter::new(limits.link_attempts_per_address),
            devices_added_per_account: RateLimiter::new(limits.devices_added_per_account),
            reports_per_account: RateLimiter::new(limits.reports_per_account),
            groups_created_per_address: RateLimiter::new(limits.groups_created_per_address),
            shared_secret: tokio::sync::OnceCell::new(),
            shared_hits: std::sync::atomic::AtomicU64::new(0),
            limits: limits.clone(),
        }
    }

    /// Turns an empty bucket's wait into a refusal naming `what`, and
    /// counts it.
    fn limited(&self, what: &'static str) -> impl FnOnce(Duration) -> Limited + '_ {
        move |wait| {
            self.metrics.rate_limited(what);
            Limited { what, wait }
        }
    }

    /// Full buckets for a new connection.
    pub fn connection(&self, now: Instant) -> ConnectionBuckets {
        ConnectionBuckets {
            sends: TokenBucket::full(self.limits.sends_per_connection, now),
            claims: TokenBucket::full(self.limits.claims_per_connection, now),
            log_requests: TokenBucket::full(self.limits.log_requests_per_connection, now),
            groups_created: TokenBucket::full(self.limits.groups_created_per_connection, now),
        }
    }

    /// A group's creation (its epoch-0 commit, which needs no capability):
    /// the connection's bucket and the address's.
    pub fn charge_group_creation(
        &self,
        connection: &mut ConnectionBuckets,
        address: IpAddr,
    ) -> Result<(), Limited> {
        connection
            .groups_created
            .take(self.limits.groups_created_per_connection, Instant::now())
            .map_err(self.limited("new groups on this connection"))?;
        self.groups_created_per_address
            .take(address)
            .map_err(self.limited("new groups from your address"))
    }

    /// A device added to `account`.
    /// An abuse report from `account`.
    pub fn charge_report(&self, account: &str) -> Result<(), Limited> {
        self.reports_per_account
            .take(account.to_owned())
            .map_err(self.limited("abuse reports from this account"))
    }

    pub fn charge_device_added(&self, account: &str) -> Result<(), Limited> {
        self.devices_added_per_account
            .take(account.to_owned())
            .map_err(self.limited("devices added to this account"))
    }

    /// A send or commit: the connection's bucket, the address's, and the
    /// capability's (a group's creation carries none).
    pub fn charge_send(
        &self,
        connection: &mut ConnectionBuckets,
        address: IpAddr,
        capability: Option<[u8; 32]>,
    ) -> Result<(), Limited> {
        connection
            .sends
            .take(self.limits.sends_per_connection, Instant::now())
            .map_err(self.limited("sends on this connection"))?;
        self.per_address
            .take(address)
            .map_err(self.limited("sends and claims from your address"))?;
        if let Some(hash) = capability {
            self.per_capability
                .take(hash)
                .map_err(self.limited("sends to this group"))?;
        }
        Ok(())
    }

    /// A KeyPackage claim. The claimer's buckets (the connection's, the
    /// address's) refuse it when empty. The claimed account's bucket does
    /// not: it only decides whether the claim may take from the account's
    /// pool of one-time KeyPackages. Were it to refuse, anyone claiming two
    /// a second from a few addresses would stop everyone else from adding
    /// the account; beyond it, claims get the reusable last-resort
    /// KeyPackage, which no flood can use up.
    pub fn charge_claim(
        &self,
        connection: &mut ConnectionBuckets,
        address: IpAddr,
        target: &str,
    ) -> Result<TargetBudget, Limited> {
        connection
            .claims
            .take(self.limits.claims_per_connection, Instant::now())
            .map_err(self.limited("KeyPackage claims on this connection"))?;
        self.per_address
            .take(address)
            .map_err(self.limited("sends and claims from your address"))?;
        Ok(match self.per_claim_target.take(target.to_owned()) {
            Ok(()) => TargetBudget::Pool,
            Err(wait) => TargetBudget::LastResortOnly(self
                .limited("KeyPackage claims for this account")(
                wait
            )),
        })
    }

    /// A key-log request (head, account log, proof, entries).
    pub fn charge_log_request(&self, connection: &mut ConnectionBuckets) -> Result<(), Limited> {
        connection
            .log_requests
            .take(self.limits.log_requests_per_connection, Instant::now())
            .map_err(self.limited("key-log requests on this connection"))
    }

    pub fn charge_registration(&self, address: IpAddr) -> Result<(), Limited> {
        self.registrations_per_address
            .take(address)
            .map_err(self.limited("registrations from your address"))
    }

    pub fn charge_link_attempt(&self, address: IpAddr) -> Result<(), Limited> {
        self.link_attempts_per_address
            .take(address)
            .map_err(self.limited("device-link attempts from your address"))
    }
}

impl RateLimits {
    /// Counts a hit of `limit` on `key` for the whole service, when other
    /// nodes share the store (a no-op on one node, whose buckets suffice).
    /// The key is stored only as a keyed hash, in a row that goes once
    /// its window ended. `Ok(Err(_))`: over the limit.
    pub async fn charge_shared<S: ClusterStore>(
        &self,
        store: &S,
        limit: SharedLimit,
        key: &str,
    ) -> Result<Result<(), Limited>, StoreError> {
        if !store.is_shared() {
            return Ok(Ok(()));
        }
        let (rate, tag, what) = match limit {
            SharedLimit::Registrations => (
                self.limits.registrations_per_address,
                "registrations",
                "registrations from your address",
            ),
            SharedLimit::ClaimsPerTarget => (
                self.limits.claims_per_target,
                "claims",
                "KeyPackage claims for this account",
            ),
            SharedLimit::DevicesAdded => (
                self.limits.devices_added_per_account,
                "devices",
                "devices added to this account",
            ),
        };
        let Some((window, allowed)) = window_of(rate) else {
            return Ok(Ok(()));
        };
        let secret = self
            .shared_secret
            .get_or_try_init(|| {
                let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, fresh.as_mut_slice());
                store.rate_limit_secret(fresh)
            })
            .await?;
        let hashed = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(b"sotto shared rate limit v1\0");
            h.update(secret.as_slice());
            h.update(tag.as_bytes());
            h.update([0]);
            h.update(key.as_bytes());
            <[u8; 32]>::from(h.finalize())
        };
        let now = crate::transparency_log::now_ms() / 1000;
        let window_start = now - now % window;
        let window_end = window_start.saturating_add(window);
        let count = self
            .shared_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prune = count.is_multiple_of(PRUNE_SHARED_EVERY).then_some(now);
        let hits = store
            .count_hit(hashed, window_start, window_end, prune)
            .await?;
        if hits > allowed {
            return Ok(Err(self.limited(what)(Duration::from_secs(
                window_end.saturating_sub(now).max(1),
            ))));
        }
        Ok(Ok(()))
    }
}

/// A bucket's global window: as long as a refill of the whole burst, with
/// the burst as its allowance. `None`: unlimited (or no sensible window).
fn window_of(rate: Rate) -> Option<(u64, u64)> {
    if !rate.burst.is_finite() || !rate.per_second.is_finite() || rate.per_second <= 0.0 {
        return None;
    }
    let seconds = (rate.burst / rate.per_second).ceil();
    if !(1.0..=1.0e9).contains(&seconds) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
    let window = seconds as u64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, positive
    let allowed = rate.burst.clamp(1.0, 1.0e12) as u64;
    Some((window, allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        assert_eq!(address_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
    }

    #[test]
    fn global_windows_last_a_full_refill_and_allow_the_burst() {
        let hourly = Rate {
            per_second: 1.0 / 360.0,
            burst: 10.0,
        };
        assert_eq!(window_of(hourly), Some((3600, 10)));
        let unlimited = Rate {
            per_second: f64::INFINITY,
            burst: f64::INFINITY,
        };
        assert_eq!(window_of(unlimited), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let limiter = RateLimiter::new(rate);
        for _ in 0..3 {
            limiter.take("k").unwrap();
        }
        let wait = limiter.take("k").unwrap_err();
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another key has its own bucket.
        limiter.take("other").unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.take("k").unwrap();
        assert!(limiter.take("k").is_err());
    }
}
