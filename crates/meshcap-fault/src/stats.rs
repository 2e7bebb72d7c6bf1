//! The filter's statistics under Envoy's names, as plain atomics a proxy can register and print.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Whether a statistic is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatKind {
    /// Monotonically increasing.
    Counter,
    /// Goes up and down (Envoy's `active_faults` is an "accumulate" gauge).
    Gauge,
}

/// One statistic as [`FaultStats::visit`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat<'a> {
    name: &'a str,
    kind: StatKind,
    value: u64,
}

impl<'a> Stat<'a> {
    /// The full Envoy name, e.g. `http.localhost_5000.fault.aborts_injected` or
    /// `http.localhost_5000.fault.frontend.aborts_injected`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Counter or gauge.
    pub fn kind(&self) -> StatKind {
        self.kind
    }

    /// The current value.
    pub fn value(&self) -> u64 {
        self.value
    }
}

/// The two per-downstream-cluster counters.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    delays_injected: AtomicU64,
    aborts_injected: AtomicU64,
}

impl ClusterCounters {
    pub(crate) fn inc_delays(&self) {
        self.delays_injected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_aborts(&self) {
        self.aborts_injected.fetch_add(1, Ordering::Relaxed);
    }
}

/// The statistics of one fault filter (one per HTTP connection manager filter, shared by its per-route
/// overrides), named as Envoy names them:
///
/// | name | kind |
/// | --- | --- |
/// | `http.<stat_prefix>.fault.aborts_injected` | counter |
/// | `http.<stat_prefix>.fault.active_faults` | gauge |
/// | `http.<stat_prefix>.fault.delays_injected` | counter |
/// | `http.<stat_prefix>.fault.faults_overflow` | counter |
/// | `http.<stat_prefix>.fault.response_rl_injected` | counter |
/// | `http.<stat_prefix>.fault.<downstream_cluster>.aborts_injected` | counter, created on first use |
/// | `http.<stat_prefix>.fault.<downstream_cluster>.delays_injected` | counter, created on first use |
///
/// The five base statistics exist from construction with value 0, as in Envoy. Per-cluster counters
/// appear when a request carrying a non-empty `x-envoy-downstream-service-cluster` gets a delay or an
/// abort, unless [`FaultStats::without_downstream_cluster_stats`] (or the filter's
/// `disable_downstream_cluster_stats`) turned them off. Their number is bounded only by what clients
/// send, exactly as in Envoy; disable them when that header is not trusted.
///
/// Envoy's default tag extraction (`http.*.fault.$.**`, then `http.$.**`) renders them in Prometheus as
/// `envoy_http_fault_aborts_injected{envoy_fault_downstream_cluster="frontend",envoy_http_conn_manager_prefix="localhost_5000"}`
/// (observed on Envoy 1.40). The tag takes one dot-separated token only: a cluster `we.ird:na_me` becomes
/// `envoy_http_fault_ird_na_me_aborts_injected{envoy_fault_downstream_cluster="we",…}`.
///
/// ```
/// use meshcap_fault::FaultStats;
///
/// let stats = FaultStats::new("localhost_5000");
/// let mut lines = Vec::new();
/// stats.visit(|stat| lines.push(format!("{}: {}", stat.name(), stat.value())));
/// assert_eq!(lines[0], "http.localhost_5000.fault.aborts_injected: 0");
/// assert_eq!(lines.len(), 5);
/// ```
pub struct FaultStats {
    prefix: Box<str>,
    aborts_injected: AtomicU64,
    delays_injected: AtomicU64,
    faults_overflow: AtomicU64,
    response_rl_injected: AtomicU64,
    active_faults: AtomicU64,
    downstream_cluster_stats: bool,
    clusters: RwLock<BTreeMap<Box<str>, Arc<ClusterCounters>>>,
}

impl FaultStats {
    /// Statistics for the filter of the HTTP connection manager whose `stat_prefix` is `stat_prefix`
    /// (names start with `http.<stat_prefix>.fault.`).
    pub fn new(stat_prefix: &str) -> FaultStats {
        FaultStats {
            prefix: format!("http.{stat_prefix}.fault.").into_boxed_str(),
            aborts_injected: AtomicU64::new(0),
            delays_injected: AtomicU64::new(0),
            faults_overflow: AtomicU64::new(0),
            response_rl_injected: AtomicU64::new(0),
            active_faults: AtomicU64::new(0),
            downstream_cluster_stats: true,
            clusters: RwLock::new(BTreeMap::new()),
        }
    }

    /// Never create per-downstream-cluster counters (Envoy checks the listener-level filter's
    /// `disable_downstream_cluster_stats` here, and each route's own setting in the filter).
    #[must_use]
    pub fn without_downstream_cluster_stats(mut self) -> FaultStats {
        self.downstream_cluster_stats = false;
        self
    }

    /// The name prefix, `http.<stat_prefix>.fault.`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `aborts_injected`.
    pub fn aborts_injected(&self) -> u64 {
        self.aborts_injected.load(Ordering::Relaxed)
    }

    /// `delays_injected`.
    pub fn delays_injected(&self) -> u64 {
        self.delays_injected.load(Ordering::Relaxed)
    }

    /// `faults_overflow`.
    pub fn faults_overflow(&self) -> u64 {
        self.faults_overflow.load(Ordering::Relaxed)
    }

    /// `response_rl_injected`.
    pub fn response_rl_injected(&self) -> u64 {
        self.response_rl_injected.load(Ordering::Relaxed)
    }

    /// `active_faults` (the gauge).
    pub fn active_faults(&self) -> u64 {
        self.active_faults.load(Ordering::Relaxed)
    }

    /// `<cluster>.delays_injected` and `<cluster>.aborts_injected`, if that cluster's counters exist.
    pub fn downstream_cluster(&self, cluster: &str) -> Option<(u64, u64)> {
        let clusters = self.clusters.read().unwrap_or_else(PoisonError::into_inner);
        clusters.get(cluster).map(|c| {
            (
                c.delays_injected.load(Ordering::Relaxed),
                c.aborts_injected.load(Ordering::Relaxed),
            )
        })
    }

    /// Call `f` for every statistic: the five base ones in name order, then the per-cluster counters
    /// ordered by cluster. (Envoy's `/stats` sorts all names together; sort if you merge.)
    pub fn visit(&self, mut f: impl FnMut(Stat<'_>)) {
        let mut name = String::with_capacity(self.prefix.len() + 32);
        let mut emit = |suffix: &str, kind, value| {
            name.clear();
            name.push_str(&self.prefix);
            name.push_str(suffix);
            f(Stat {
                name: &name,
                kind,
                value,
            });
        };
        emit("aborts_injected", StatKind::Counter, self.aborts_injected());
        emit("active_faults", StatKind::Gauge, self.active_faults());
        emit("delays_injected", StatKind::Counter, self.delays_injected());
        emit("faults_overflow", StatKind::Counter, self.faults_overflow());
        emit("response_rl_injected", StatKind::Counter, self.response_rl_injected());
        let clusters: Vec<(Box<str>, Arc<ClusterCounters>)> = {
            let guard = self.clusters.read().unwrap_or_else(PoisonError::into_inner);
            guard.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
        };
        for (cluster, counters) in clusters {
            let aborts = counters.aborts_injected.load(Ordering::Relaxed);
            let delays = counters.delays_injected.load(Ordering::Relaxed);
            // Envoy creates each counter on its first increment.
            if aborts > 0 {
                emit(&format!("{cluster}.aborts_injected"), StatKind::Counter, aborts);
            }
            if delays > 0 {
                emit(&format!("{cluster}.delays_injected"), StatKind::Counter, delays);
            }
        }
    }

    pub(crate) fn inc_aborts(&self) {
        self.aborts_injected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_delays(&self) {
        self.delays_injected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_overflow(&self) {
        self.faults_overflow.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_response_rl(&self) {
        self.response_rl_injected.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn active_inc(&self) {
        self.active_faults.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn active_dec(&self) {
        self.active_faults.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counters of `cluster`, created on first use; `None` when per-cluster stats are disabled or
    /// the cluster name is empty.
    pub(crate) fn cluster(&self, cluster: &[u8]) -> Option<Arc<ClusterCounters>> {
        if !self.downstream_cluster_stats || cluster.is_empty() {
            return None;
        }
        let cluster = String::from_utf8_lossy(cluster);
        if let Some(c) = self
            .clusters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&*cluster)
        {
            return Some(Arc::clone(c));
        }
        let mut clusters = self.clusters.write().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(
            clusters.entry(cluster.into_owned().into_boxed_str()).or_default(),
        ))
    }
}

impl fmt::Debug for FaultStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        self.visit(|s| {
            map.entry(&s.name(), &s.value());
        });
        map.finish()
    }
}

/// An active fault: holds one slot of the filter's `active_faults` gauge until dropped.
///
/// Envoy charges one slot per request however many faults it gets, takes it at the first injected
/// fault, and releases it when the stream is destroyed (or right after a delay that is followed by
/// neither an abort nor a configured response rate limit). Keep the [`crate::Decision`] (or this guard
/// taken out of it) alive for as long as the request and its response are in flight.
#[must_use = "dropping the guard releases the active-fault slot at once"]
pub struct ActiveFault {
    stats: Arc<FaultStats>,
}

impl ActiveFault {
    pub(crate) fn acquire(stats: &Arc<FaultStats>) -> ActiveFault {
        stats.active_inc();
        ActiveFault {
            stats: Arc::clone(stats),
        }
    }
}

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.stats.active_dec();
    }
}

impl fmt::Debug for ActiveFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveFault")
            .field("stats", &self.stats.prefix())
            .finish()
    }
}
