//! Latency histograms (HdrHistogram, microseconds) and counters shared by
//! the generator's tasks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pcts {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// 1 µs .. 10 min, 3 significant digits.
#[allow(clippy::expect_used)] // constant, valid bounds: cannot fail
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn pcts(h: &Histogram<u64>) -> Pcts {
    let ms = |v: u64| v as f64 / 1000.0;
    Pcts {
        p50: ms(h.value_at_quantile(0.5)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
    }
}

/// Counters and histograms for one measured step.
#[derive(Debug)]
pub struct Recorder {
    pub base: Instant,
    pub e2e: Mutex<Histogram<u64>>,
    pub ack: Mutex<Histogram<u64>>,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Recorder {
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            e2e: Mutex::new(new_hist()),
            ack: Mutex::new(new_hist()),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Nanoseconds since the time base, now.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn since_us(&self, scheduled_ns: u64) -> u64 {
        self.now_ns().saturating_sub(scheduled_ns) / 1000
    }

    pub fn record_e2e(&self, scheduled_ns: u64) {
        let us = self.since_us(scheduled_ns).max(1);
        if let Ok(mut h) = self.e2e.lock() {
            h.saturating_record(us);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_ack(&self, scheduled_ns: u64) {
        let us = self.since_us(scheduled_ns).max(1);
        if let Ok(mut h) = self.ack.lock() {
            h.saturating_record(us);
        }
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.first_error.lock()
            && e.is_none()
        {
            *e = Some(what);
        }
    }

    /// Takes the step's figures and resets for the next step.
    pub fn take(&self) -> StepFigures {
        let take_hist = |m: &Mutex<Histogram<u64>>| {
            m.lock()
                .map(|mut h| {
                    let p = pcts(&h);
                    h.reset();
                    p
                })
                .unwrap_or_default()
        };
        StepFigures {
            sent: self.sent.swap(0, Ordering::Relaxed),
            acked: self.acked.swap(0, Ordering::Relaxed),
            delivered: self.delivered.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            first_error: self.first_error.lock().ok().and_then(|mut e| e.take()),
            e2e: take_hist(&self.e2e),
            ack: take_hist(&self.ack),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct StepFigures {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub e2e: Pcts,
    pub ack: Pcts,
}

/// Exponentially distributed gap (seconds) for a Poisson process of `rate`/s.
pub fn exp_gap(rate: f64) -> f64 {
    let u: f64 = rand::random::<f64>();
    -(1.0 - u).max(f64::MIN_POSITIVE).ln() / rate.max(1e-9)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let mid = n / 2;
    if n % 2 == 1 {
        v.get(mid).copied().unwrap_or(0.0)
    } else {
        (v.get(mid - 1).copied().unwrap_or(0.0) + v.get(mid).copied().unwrap_or(0.0)) / 2.0
    }
}
