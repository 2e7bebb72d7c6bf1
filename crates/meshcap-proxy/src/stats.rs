//! Statistics primitives: counters and gauges on atomics, resolved once and held as `Arc`s, never looked up
//! per request, plus the [`StatSource`] seam through which the admin server enumerates them by their
//! Envoy names (`cluster.localhost_5000.upstream_rq_total`, `http.localhost_5000.fault.aborts_injected`, …).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing counter (Envoy "counter").
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (Envoy "gauge").
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }
    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtract one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Add `n` (may be negative).
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Set the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The value of one statistic as the admin server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(i64),
}

/// Something that owns statistics and can enumerate them by their full Envoy name.
///
/// Implementors call `visit` once per statistic with the flat Envoy name (e.g.
/// `listener.0.0.0.0_15001.downstream_cx_total`); the admin renderers derive Envoy's `/stats`,
/// `/stats?format=json` and `/stats/prometheus` (with Envoy's tag extraction) from those names.
pub trait StatSource: Send + Sync {
    /// Call `visit(name, value)` for every statistic.
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue));
}
