//! Statistics primitives: counters and gauges on atomics, resolved once and held as `Arc`s, never looked up
//! per request, plus the [`StatSource`] seam through which the admin server enumerates them by their
//! Envoy names (`cluster.localhost_5000.upstream_rq_total`, `http.localhost_5000.fault.aborts_injected`, …).
//!
//! * [`Counter`] and [`Gauge`] are the hot-path primitives (one relaxed atomic add each).
//! * A [`StatSource`] is anything that owns statistics: the listener, tcp_proxy, cluster, HTTP and fault
//!   stat blocks implement it and list their values by full Envoy name.
//! * A [`StatsRegistry`] collects the sources (and standalone named counters and gauges created at
//!   configuration load) and takes a sorted [`Snapshot`] on scrape.
//! * The snapshot renders as Envoy's admin formats: [`Snapshot::to_text`] (`/stats`), [`Snapshot::to_json`]
//!   (`/stats?format=json`) and [`Snapshot::to_prometheus`] (`/stats/prometheus`, with Envoy's default tag
//!   extraction, see [`tags`]).
//!
//! Several sources may report the same name (for example the L4 and the HTTP path both counting
//! `cluster.localhost_5000.upstream_cx_total` for their own connections): the snapshot adds the values
//! up, which is what Envoy shows since both of its filters increment the one counter of that name.
//!
//! Histograms are not recorded: Envoy's `*_ms` histograms (and the `No recorded values` lines and
//! `histogram` families they produce) have no counterpart here. Everything else keeps Envoy's names.
//!
//! ```
//! use std::sync::Arc;
//! use meshcap_proxy::stats::StatsRegistry;
//!
//! let registry = StatsRegistry::new();
//! let up = registry.gauge("server.live")?;
//! up.set(1);
//! let hits = registry.counter("cluster.localhost_5000.upstream_rq_total")?;
//! hits.add(3);
//! let snap = registry.snapshot();
//! assert_eq!(snap.to_text(), "cluster.localhost_5000.upstream_rq_total: 3\nserver.live: 1\n");
//! assert!(snap.to_prometheus().contains(
//!     "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"localhost_5000\"} 3\n"
//! ));
//! # Ok::<(), meshcap_proxy::stats::StatsError>(())
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

mod render;
pub mod tags;

pub use render::StatsFilter;

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

impl StatValue {
    /// Whether this is a counter or a gauge.
    pub fn kind(&self) -> StatKind {
        match self {
            StatValue::Counter(_) => StatKind::Counter,
            StatValue::Gauge(_) => StatKind::Gauge,
        }
    }

    /// Whether the value is zero (Envoy's `usedonly` filter approximated: a statistic that was never
    /// touched is zero).
    pub fn is_zero(&self) -> bool {
        matches!(self, StatValue::Counter(0) | StatValue::Gauge(0))
    }

    /// `self + other` for two values of the same kind (saturating); `None` when the kinds differ.
    fn merged(self, other: StatValue) -> Option<StatValue> {
        match (self, other) {
            (StatValue::Counter(a), StatValue::Counter(b)) => Some(StatValue::Counter(a.saturating_add(b))),
            (StatValue::Gauge(a), StatValue::Gauge(b)) => Some(StatValue::Gauge(a.saturating_add(b))),
            _ => None,
        }
    }
}

impl fmt::Display for StatValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatValue::Counter(v) => write!(f, "{v}"),
            StatValue::Gauge(v) => write!(f, "{v}"),
        }
    }
}

/// The kind of a statistic (the Prometheus `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StatKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl StatKind {
    /// The Prometheus type name (`counter`, `gauge`).
    pub fn as_str(&self) -> &'static str {
        match self {
            StatKind::Counter => "counter",
            StatKind::Gauge => "gauge",
        }
    }
}

impl fmt::Display for StatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

impl<T: StatSource + ?Sized> StatSource for Arc<T> {
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
        (**self).visit_stats(visit)
    }
}

/// Errors from the statistics registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// The name is empty, has an empty `.`-separated segment, or contains whitespace, control bytes or
    /// `:` (which would make the `/stats` text ambiguous).
    #[error("invalid statistic name {name:?}")]
    InvalidName {
        /// The offending name.
        name: String,
    },
    /// The name is already registered as the other kind.
    #[error("statistic {name:?} already exists as a {existing}")]
    KindConflict {
        /// The offending name.
        name: String,
        /// The kind it was first registered as.
        existing: StatKind,
    },
    /// A `filter=` pattern is not a valid regular expression.
    #[error("invalid statistics filter {pattern:?}: {reason}")]
    InvalidFilter {
        /// The offending pattern.
        pattern: String,
        /// Why the pattern was refused.
        reason: String,
    },
}

/// Make a configuration-supplied name usable as one segment of a statistic name, the way Envoy does
/// for cluster and listener names: `:` becomes `_` (`localhost:5000` → `localhost_5000`), whitespace and
/// control bytes become `_`, and leading or trailing dots are removed.
///
/// ```
/// assert_eq!(meshcap_proxy::stats::sanitize_segment("localhost:5000"), "localhost_5000");
/// ```
pub fn sanitize_segment(name: &str) -> Cow<'_, str> {
    let trimmed = name.trim_matches('.');
    if trimmed.bytes().all(|b| b.is_ascii_graphic() && b != b':') && trimmed.len() == name.len() {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        trimmed
            .chars()
            .map(|c| {
                if c == ':' || c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// Whether `name` is acceptable as a full statistic name (see [`StatsError::InvalidName`]).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|segment| !segment.is_empty())
        && !name.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

#[derive(Debug, Clone)]
enum Scalar {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
}

#[derive(Default)]
struct Inner {
    sources: RwLock<Vec<Arc<dyn StatSource>>>,
    scalars: Mutex<BTreeMap<String, Scalar>>,
}

/// The set of statistics the admin server shows: registered [`StatSource`]s plus standalone named
/// counters and gauges.
///
/// Cloning is cheap (an `Arc`); all clones share the same statistics. Registration takes a lock and is
/// meant for configuration load; the hot path only touches the returned `Arc<Counter>`/`Arc<Gauge>` or the
/// stat blocks themselves.
#[derive(Clone, Default)]
pub struct StatsRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for StatsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources = self.inner.sources.read().unwrap_or_else(PoisonError::into_inner).len();
        let scalars = self.inner.scalars.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("StatsRegistry")
            .field("sources", &sources)
            .field("scalars", &scalars)
            .finish()
    }
}

impl StatsRegistry {
    /// An empty registry.
    pub fn new() -> StatsRegistry {
        StatsRegistry::default()
    }

    /// Add a source; its statistics appear in every later snapshot.
    pub fn register(&self, source: Arc<dyn StatSource>) {
        self.inner
            .sources
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(source);
    }

    /// The counter named `name`, created at zero on first use; later calls return the same counter.
    ///
    /// # Errors
    /// [`StatsError::InvalidName`] for a malformed name, [`StatsError::KindConflict`] when `name` is a
    /// gauge.
    pub fn counter(&self, name: &str) -> Result<Arc<Counter>, StatsError> {
        match self.scalar(name, || Scalar::Counter(Arc::default()))? {
            Scalar::Counter(c) => Ok(c),
            Scalar::Gauge(_) => Err(StatsError::KindConflict {
                name: name.to_string(),
                existing: StatKind::Gauge,
            }),
        }
    }

    /// The gauge named `name`, created at zero on first use; later calls return the same gauge.
    ///
    /// # Errors
    /// [`StatsError::InvalidName`] for a malformed name, [`StatsError::KindConflict`] when `name` is a
    /// counter.
    pub fn gauge(&self, name: &str) -> Result<Arc<Gauge>, StatsError> {
        match self.scalar(name, || Scalar::Gauge(Arc::default()))? {
            Scalar::Gauge(g) => Ok(g),
            Scalar::Counter(_) => Err(StatsError::KindConflict {
                name: name.to_string(),
                existing: StatKind::Counter,
            }),
        }
    }

    fn scalar(&self, name: &str, make: impl FnOnce() -> Scalar) -> Result<Scalar, StatsError> {
        if !is_valid_name(name) {
            return Err(StatsError::InvalidName { name: name.to_string() });
        }
        let mut scalars = self.inner.scalars.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(scalars.entry(name.to_string()).or_insert_with(make).clone())
    }

    /// Read every statistic once: sorted by name (bytewise, as Envoy's `/stats` sorts), duplicates
    /// added up. A name reported as both a counter and a gauge keeps the kind seen first (standalone
    /// scalars, then sources in registration order); the other values are dropped.
    pub fn snapshot(&self) -> Snapshot {
        let mut map: BTreeMap<String, StatValue> = BTreeMap::new();
        let mut add = |name: &str, value: StatValue| match map.get_mut(name) {
            Some(existing) => {
                if let Some(sum) = existing.merged(value) {
                    *existing = sum;
                } else {
                    tracing::debug!(stat = name, "statistic reported as both a counter and a gauge");
                }
            }
            None => {
                map.insert(name.to_string(), value);
            }
        };
        {
            let scalars = self.inner.scalars.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, scalar) in scalars.iter() {
                match scalar {
                    Scalar::Counter(c) => add(name, StatValue::Counter(c.get())),
                    Scalar::Gauge(g) => add(name, StatValue::Gauge(g.get())),
                }
            }
        }
        let sources: Vec<Arc<dyn StatSource>> = self
            .inner
            .sources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for source in &sources {
            source.visit_stats(&mut add);
        }
        Snapshot {
            stats: map.into_iter().map(|(name, value)| Stat { name, value }).collect(),
        }
    }
}

/// One statistic in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The full Envoy name.
    pub name: String,
    /// The value when the snapshot was taken.
    pub value: StatValue,
}

/// The statistics at one instant, sorted by name; renders as Envoy's admin formats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    stats: Vec<Stat>,
}

impl Snapshot {
    /// A snapshot of the given statistics (sorted and merged like [`StatsRegistry::snapshot`]); useful to
    /// render statistics that come from elsewhere.
    pub fn from_stats(stats: impl IntoIterator<Item = (String, StatValue)>) -> Snapshot {
        let mut map: BTreeMap<String, StatValue> = BTreeMap::new();
        for (name, value) in stats {
            match map.get_mut(&name) {
                Some(existing) => {
                    if let Some(sum) = existing.merged(value) {
                        *existing = sum;
                    }
                }
                None => {
                    map.insert(name, value);
                }
            }
        }
        Snapshot {
            stats: map.into_iter().map(|(name, value)| Stat { name, value }).collect(),
        }
    }

    /// The statistics, sorted by name.
    pub fn stats(&self) -> &[Stat] {
        &self.stats
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<StatValue> {
        self.stats
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| self.stats[i].value)
    }

    /// Keep only the statistics that pass `filter` (Envoy's `usedonly` and `filter=` query parameters).
    pub fn filtered(mut self, filter: &StatsFilter) -> Snapshot {
        self.stats.retain(|s| filter.matches(&s.name, s.value));
        self
    }

    /// Number of statistics.
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// Whether there are no statistics.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<(&'static str, StatValue)>);
    impl StatSource for Fixed {
        fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
            for (n, v) in &self.0 {
                visit(n, *v);
            }
        }
    }

    #[test]
    fn counter_and_gauge() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
        let g = Gauge::new();
        g.inc();
        g.inc();
        g.dec();
        g.add(-3);
        assert_eq!(g.get(), -2);
        g.set(7);
        assert_eq!(g.get(), 7);
    }

    #[test]
    fn registry_returns_the_same_scalar() {
        let r = StatsRegistry::new();
        let a = r.counter("a.b").unwrap();
        let b = r.counter("a.b").unwrap();
        a.inc();
        assert_eq!(b.get(), 1);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            r.gauge("a.b").unwrap_err(),
            StatsError::KindConflict {
                name: "a.b".into(),
                existing: StatKind::Counter
            }
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        let r = StatsRegistry::new();
        for bad in ["", "a..b", ".a", "a.", "a b", "a:b", "a\nb", "a\0"] {
            assert_eq!(
                r.counter(bad).unwrap_err(),
                StatsError::InvalidName { name: bad.into() },
                "{bad:?}"
            );
        }
        assert!(r.counter("listener.[__]_15001.downstream_cx_total").is_ok());
    }

    #[test]
    fn snapshot_sorts_bytewise_and_adds_duplicates() {
        let r = StatsRegistry::new();
        r.register(Arc::new(Fixed(vec![
            ("listener.[__]_15001.downstream_cx_total", StatValue::Counter(1)),
            ("cluster.x.upstream_cx_total", StatValue::Counter(2)),
            ("cluster.x.upstream_cx_active", StatValue::Gauge(1)),
        ])));
        r.register(Arc::new(Fixed(vec![
            ("cluster.x.upstream_cx_total", StatValue::Counter(3)),
            ("cluster.x.upstream_cx_active", StatValue::Gauge(2)),
            ("listener.10.244.0.6_5000.downstream_cx_total", StatValue::Counter(0)),
            ("cluster_manager.active_clusters", StatValue::Gauge(1)),
        ])));
        r.gauge("cluster.x.upstream_cx_active").unwrap().set(10);
        let snap = r.snapshot();
        let names: Vec<&str> = snap.stats().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cluster.x.upstream_cx_active",
                "cluster.x.upstream_cx_total",
                "cluster_manager.active_clusters",
                "listener.10.244.0.6_5000.downstream_cx_total",
                "listener.[__]_15001.downstream_cx_total",
            ]
        );
        assert_eq!(snap.get("cluster.x.upstream_cx_total"), Some(StatValue::Counter(5)));
        assert_eq!(snap.get("cluster.x.upstream_cx_active"), Some(StatValue::Gauge(13)));
    }

    #[test]
    fn kind_conflicts_keep_the_first_kind() {
        let r = StatsRegistry::new();
        r.counter("a.b").unwrap().add(2);
        r.register(Arc::new(Fixed(vec![("a.b", StatValue::Gauge(5))])));
        assert_eq!(r.snapshot().get("a.b"), Some(StatValue::Counter(2)));
    }

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_segment("localhost:5000"), "localhost_5000");
        assert_eq!(sanitize_segment("inbound:passthrough:ipv4"), "inbound_passthrough_ipv4");
        assert_eq!(sanitize_segment(".a b."), "a_b");
        assert!(matches!(sanitize_segment("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<StatsRegistry>();
        assert_send_sync::<Snapshot>();
        assert_send_sync::<Counter>();
        assert_send_sync::<Gauge>();
    }
}
