//! The per-request decisions, in Envoy's order.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AbortKind, DelayKind, FaultConfig, RateLimitKind};
use crate::headers::{
    ABORT_GRPC_REQUEST, ABORT_REQUEST, ABORT_REQUEST_PERCENTAGE, CONTENT_TYPE, DELAY_REQUEST, DELAY_REQUEST_PERCENTAGE,
    DOWNSTREAM_SERVICE_CLUSTER, DOWNSTREAM_SERVICE_NODE, RequestHeaders, THROUGHPUT_RESPONSE,
    THROUGHPUT_RESPONSE_PERCENTAGE, inline_value, parse_u32, parse_u64,
};
use crate::random::Random;
use crate::reply::{LocalReply, ReplyContext, is_grpc_content_type};
use crate::runtime::{Runtime, feature_enabled, integer};
use crate::stats::{ActiveFault, ClusterCounters, FaultStats};

/// The fault filter: one configuration, its statistics and (optionally) a runtime, deciding per request.
///
/// Cheap to clone (three `Arc`s). For per-route overrides build one filter per route configuration with
/// the listener filter's [`FaultStats`]; Envoy likewise replaces the whole configuration per route and
/// keeps one set of statistics (and so one `max_active_faults` gauge).
///
/// ```
/// use std::sync::Arc;
/// use meshcap_fault::{Action, FastRng, FaultConfig, FaultFilter, FaultStats};
///
/// let config = Arc::new(FaultConfig::from_json(r#"{"abort": {"http_status": 503,
///     "percentage": {"numerator": 100}}}"#)?);
/// let filter = FaultFilter::new(config, Arc::new(FaultStats::new("localhost_5000")));
/// let mut rng = FastRng::seed_from_u64(1);
/// let decision = filter.decide(&[("host", "backend")], Some("localhost:5000"), &mut rng);
/// assert!(matches!(decision.action(), Action::Abort(a) if a.http_status() == 503));
/// assert_eq!(filter.stats().aborts_injected(), 1);
/// # Ok::<(), meshcap_fault::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct FaultFilter {
    config: Arc<FaultConfig>,
    stats: Arc<FaultStats>,
    runtime: Option<Arc<dyn Runtime>>,
    /// No fault can ever fire: every configured percentage is 0 and no runtime can raise it. (Header
    /// percentages only lower the configured one.) Decisions are then a constant no-op.
    inert: bool,
}

/// What to do with the request now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Forward the request (possibly throttling the response, see [`Decision::response_rate_limit`]).
    Continue,
    /// Hold the request (buffering its body) for this long, then call [`FaultFilter::after_delay`].
    Delay(Duration),
    /// Do not forward; answer with [`Abort::reply`].
    Abort(Abort),
}

/// An injected abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    http_status: u16,
    grpc_status: Option<u32>,
    grpc_request: bool,
}

impl Abort {
    /// The HTTP status chosen (200 when only a gRPC status was chosen).
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The gRPC status chosen, if the abort was configured or requested as gRPC.
    pub fn grpc_status(&self) -> Option<u32> {
        self.grpc_status
    }

    /// Whether the request's `content-type` is gRPC (the reply then is a trailers-only gRPC response).
    pub fn is_grpc_request(&self) -> bool {
        self.grpc_request
    }

    /// The local reply to send.
    pub fn reply(&self, context: ReplyContext) -> LocalReply {
        LocalReply::new(self.http_status, self.grpc_status, self.grpc_request, context)
    }
}

/// The outcome of [`FaultFilter::decide`] for one request.
///
/// It owns the request's active-fault slot (if a fault was injected): keep it until the response is done,
/// because dropping it releases the slot. [`Decision::is_noop`] is the fast check for "nothing happened".
#[must_use = "a decision holds the request's active-fault slot and says what to do"]
#[derive(Debug)]
pub struct Decision {
    action: Action,
    rate_limit: Option<NonZeroU64>,
    delay_injected: bool,
    active: Option<ActiveFault>,
}

impl Decision {
    const fn noop() -> Decision {
        Decision {
            action: Action::Continue,
            rate_limit: None,
            delay_injected: false,
            active: None,
        }
    }

    /// What to do now.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Whether no fault at all applies (continue untouched, no throttling).
    pub fn is_noop(&self) -> bool {
        matches!(self.action, Action::Continue) && self.rate_limit.is_none() && !self.delay_injected
    }

    /// The response body rate limit in KiB/s, if one was injected (drive a [`crate::RateLimiter`] with
    /// it; Envoy applies it to every response body of the stream, a local reply's included).
    pub fn response_rate_limit(&self) -> Option<NonZeroU64> {
        self.rate_limit
    }

    /// Whether a delay was injected (access-log response flag `DI`).
    pub fn delay_injected(&self) -> bool {
        self.delay_injected
    }

    /// Whether an abort was injected (response flag `FI`).
    pub fn abort_injected(&self) -> bool {
        matches!(self.action, Action::Abort(_))
    }

    /// Envoy's response flags for the access log: `DI`, `FI`, `DI,FI`, or `-`.
    pub fn response_flags(&self) -> &'static str {
        match (self.delay_injected, self.abort_injected()) {
            (true, true) => "DI,FI",
            (true, false) => "DI",
            (false, true) => "FI",
            (false, false) => "-",
        }
    }

    /// Whether the filter's `filter_metadata` is published as dynamic metadata for this request (Envoy
    /// does when a delay or an abort is injected, not for a rate limit alone).
    pub fn emits_filter_metadata(&self) -> bool {
        self.delay_injected || self.abort_injected()
    }

    /// The active-fault slot this request holds, if any.
    pub fn active_fault(&self) -> Option<&ActiveFault> {
        self.active.as_ref()
    }

    /// Take the active-fault slot out (to keep it while dropping the rest).
    pub fn into_active_fault(self) -> Option<ActiveFault> {
        self.active
    }
}

/// Per-request view of the `x-envoy-downstream-service-cluster` header, read only when needed: for
/// per-cluster runtime keys (when a runtime is consulted) and for per-cluster statistics (when a fault is
/// injected). A request that gets no fault never looks at it.
struct Downstream<'h, H: ?Sized> {
    headers: &'h H,
    cluster: OnceCell<Option<Cow<'h, [u8]>>>,
}

impl<'h, H: RequestHeaders + ?Sized> Downstream<'h, H> {
    fn new(headers: &'h H) -> Downstream<'h, H> {
        Downstream {
            headers,
            cluster: OnceCell::new(),
        }
    }

    /// The header's value when present (possibly empty).
    fn cluster(&self) -> Option<&[u8]> {
        self.cluster
            .get_or_init(|| inline_value(self.headers, DOWNSTREAM_SERVICE_CLUSTER))
            .as_deref()
    }

    /// The per-cluster runtime key `fault.http.<cluster>.<suffix>` when a runtime is consulted and the
    /// header is present (even empty). Envoy then reads that key instead of the global one; without a
    /// runtime every key falls back to the configured value, so none is built.
    #[inline]
    fn key(&self, runtime: Option<&dyn Runtime>, suffix: &str) -> Option<String> {
        runtime?;
        let cluster = self.cluster()?;
        Some(format!("fault.http.{}.{suffix}", String::from_utf8_lossy(cluster)))
    }
}

impl FaultFilter {
    /// A filter for `config`, counting into `stats`, with no runtime (every runtime key falls back to the
    /// configured value, as in Envoy with an empty runtime).
    pub fn new(config: Arc<FaultConfig>, stats: Arc<FaultStats>) -> FaultFilter {
        let never = |p: Option<crate::config::FractionalPercent>| p.is_none_or(|p| p.is_never());
        let inert = never(config.abort().map(|a| a.percentage()))
            && never(config.delay().map(|d| d.percentage()))
            && never(config.response_rate_limit().map(|r| r.percentage()));
        FaultFilter {
            config,
            stats,
            runtime: None,
            inert,
        }
    }

    /// Consult `runtime` for the configuration's runtime keys and the per-downstream-cluster keys.
    #[must_use]
    pub fn with_runtime(mut self, runtime: Arc<dyn Runtime>) -> FaultFilter {
        self.runtime = Some(runtime);
        self.inert = false;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<FaultConfig> {
        &self.config
    }

    /// The statistics.
    pub fn stats(&self) -> &Arc<FaultStats> {
        &self.stats
    }

    fn runtime(&self) -> Option<&dyn Runtime> {
        self.runtime.as_deref()
    }

    /// Decide what happens to a request, as Envoy's `decodeHeaders` does:
    ///
    /// 1. eligibility: `upstream_cluster` (against `route_cluster`, the cluster the matched route targets;
    ///    `None` when no route matched), `downstream_nodes`, the `headers` matchers;
    /// 2. `x-envoy-downstream-service-cluster` selects per-cluster runtime keys and statistics;
    /// 3. response rate limit: sample, pick the rate, take an active-fault slot;
    /// 4. delay: sample, pick the duration, take a slot; if delayed, stop here ([`Action::Delay`]);
    /// 5. otherwise abort: sample, pick the status, take a slot ([`Action::Abort`]).
    ///
    /// A fault that finds `active_faults >= max_active_faults` is skipped and counted in
    /// `faults_overflow`. Each percentage takes one draw from `rng`, except where the outcome is fixed
    /// (0 %, ≥ 100 %) and for a header-controlled fault whose value header is absent (Envoy draws and then
    /// finds nothing to inject); only the number of draws differs from Envoy, never an outcome.
    ///
    /// The decision does not allocate (the first fault of a new downstream cluster creates its
    /// counters), and a request that gets no fault does not even look at
    /// `x-envoy-downstream-service-cluster` unless a runtime is set.
    #[inline]
    pub fn decide<H, R>(&self, headers: &H, route_cluster: Option<&str>, rng: &mut R) -> Decision
    where
        H: RequestHeaders + ?Sized,
        R: Random + ?Sized,
    {
        if self.inert {
            // Nothing can fire (all percentages 0, no runtime): Envoy would only sample and find nothing.
            return Decision::noop();
        }
        self.decide_eligible(headers, route_cluster, rng)
    }

    fn decide_eligible<H, R>(&self, headers: &H, route_cluster: Option<&str>, rng: &mut R) -> Decision
    where
        H: RequestHeaders + ?Sized,
        R: Random + ?Sized,
    {
        let config = &*self.config;
        if !config.upstream_cluster().is_empty() && route_cluster != Some(config.upstream_cluster()) {
            return Decision::noop();
        }
        if !config.downstream_nodes().is_empty() {
            let node = inline_value(headers, DOWNSTREAM_SERVICE_NODE);
            let known = node.is_some_and(|n| std::str::from_utf8(&n).is_ok_and(|n| config.is_downstream_node(n)));
            if !known {
                return Decision::noop();
            }
        }
        if !config.headers().iter().all(|m| m.matches(headers)) {
            return Decision::noop();
        }

        let downstream = Downstream::new(headers);
        let mut decision = Decision::noop();

        self.maybe_rate_limit(headers, &mut decision, rng);

        if let Some(delay) = self.delay_duration(headers, &downstream, rng)
            && self.try_acquire(&mut decision)
        {
            self.stats.inc_delays();
            if let Some(c) = self.cluster_stats(&downstream) {
                c.inc_delays();
            }
            decision.delay_injected = true;
            decision.action = Action::Delay(delay);
            return decision;
        }

        if let Some(abort) = self.abort_status(headers, &downstream, rng)
            && self.try_acquire(&mut decision)
        {
            self.record_abort(&downstream);
            decision.action = Action::Abort(abort);
        }
        decision
    }

    /// Finish a delayed request: call when the delay of an [`Action::Delay`] decision has elapsed, with
    /// the same request headers. The abort is sampled again, independently (Envoy evaluates it only now);
    /// without an abort the request continues, and its active-fault slot is released unless a response
    /// rate limit is configured. Decisions that are not delays are returned unchanged.
    pub fn after_delay<H, R>(&self, mut decision: Decision, headers: &H, rng: &mut R) -> Decision
    where
        H: RequestHeaders + ?Sized,
        R: Random + ?Sized,
    {
        if !matches!(decision.action, Action::Delay(_)) {
            return decision;
        }
        let downstream = Downstream::new(headers);
        if let Some(abort) = self.abort_status(headers, &downstream, rng) {
            // The slot is already held; Envoy does not check for overflow again here.
            if decision.active.is_none() {
                decision.active = Some(ActiveFault::acquire(&self.stats));
            }
            self.record_abort(&downstream);
            decision.action = Action::Abort(abort);
        } else {
            decision.action = Action::Continue;
            if self.config.response_rate_limit().is_none() {
                decision.active = None;
            }
        }
        decision
    }

    fn record_abort<H: RequestHeaders + ?Sized>(&self, downstream: &Downstream<'_, H>) {
        self.stats.inc_aborts();
        if let Some(c) = self.cluster_stats(downstream) {
            c.inc_aborts();
        }
    }

    fn cluster_stats<H: RequestHeaders + ?Sized>(
        &self,
        downstream: &Downstream<'_, H>,
    ) -> Option<Arc<ClusterCounters>> {
        if self.config.downstream_cluster_stats_disabled() {
            return None;
        }
        self.stats.cluster(downstream.cluster()?)
    }

    /// Envoy's `tryIncActiveFaults`: one slot per request, overflow checked only when taking it.
    fn try_acquire(&self, decision: &mut Decision) -> bool {
        if decision.active.is_some() {
            return true;
        }
        let configured = self.config.max_active_faults().map_or(u64::MAX, u64::from);
        let max = integer(
            self.runtime(),
            self.config.runtime_keys().max_active_faults(),
            configured,
        );
        if self.stats.active_faults() >= max {
            self.stats.inc_overflow();
            return false;
        }
        decision.active = Some(ActiveFault::acquire(&self.stats));
        true
    }

    fn maybe_rate_limit<H, R>(&self, headers: &H, decision: &mut Decision, rng: &mut R)
    where
        H: RequestHeaders + ?Sized,
        R: Random + ?Sized,
    {
        let Some(limit) = self.config.response_rate_limit() else {
            return;
        };
        // A header-controlled limit without a (non-zero) rate header cannot fire: skip its draw.
        let (kbps, percentage) = match limit.kind() {
            RateLimitKind::Fixed(kbps) => (kbps, limit.percentage()),
            _ => {
                let Some(kbps) = headers
                    .first(THROUGHPUT_RESPONSE)
                    .and_then(parse_u64)
                    .and_then(NonZeroU64::new)
                else {
                    return;
                };
                (
                    kbps,
                    header_percentage(headers, THROUGHPUT_RESPONSE_PERCENTAGE, limit.percentage()),
                )
            }
        };
        // No per-cluster key for the rate limit (an Envoy TODO).
        let key = self.config.runtime_keys().response_rate_limit_percent();
        if !feature_enabled(self.runtime(), key, percentage, rng) || !self.try_acquire(decision) {
            return;
        }
        self.stats.inc_response_rl();
        decision.rate_limit = Some(kbps);
    }

    fn delay_duration<H, R>(&self, headers: &H, downstream: &Downstream<'_, H>, rng: &mut R) -> Option<Duration>
    where
        H: RequestHeaders + ?Sized,
        R: Random + ?Sized,
    {
        let delay = self.config.delay()?;
        let runtime = self.runtime();
        let keys = self.config.runtime_keys();
        // A header-controlled delay without a delay header cannot fire: skip its draw.
        let (configured_ms, percentage) = match delay.kind() {
            DelayKind::Fixed(d) => (u64::try_from(d.as_millis()).unwrap_or(u64::MAX), delay.percentage()),
            _ => (
                headers.first(DELAY_REQUEST).and_then(parse_u64)?,
                header_percentage(headers, DELAY_REQUEST_PERCENTAGE, delay.percentage()),
            ),
        };
        // With a downstream cluster, its key is consulted instead of the global one.
        let cluster_key = downstream.key(runtime, "delay.fixed_delay_percent");
        let key = cluster_key.as_deref().unwrap_or(keys.delay_percent());
        if !feature_enabled(runtime, key, percentage, rng) {
            return None;
        }
        let mut ms = integer(runtime, keys.delay_duration(), configured_ms);
        if let Some(key) = downstream.key(runtime, "delay.fixed_duration_ms") {
            ms = integer(runtime, &key, ms);
        }
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    fn abort_status<H, R>(&self, headers: &H, downstream: &Downstream<'_, H>, rng: &mut R) -> Option<Abort>
    where
        H: RequestHeaders + ?Sized,
        R: Random + ?Sized,
    {
        let abort = self.config.abort()?;
        let runtime = self.runtime();
        let keys = self.config.runtime_keys();
        // The configured (or requested) status; a header-controlled abort without a usable status header
        // cannot fire: skip its draw. The gRPC header counts only without a valid HTTP one.
        let (http_default, grpc_default, percentage) = match abort.kind() {
            AbortKind::Http(status) => (Some(status), None, abort.percentage()),
            AbortKind::Grpc(status) => (None, Some(status), abort.percentage()),
            _ => {
                let http = headers
                    .first(ABORT_REQUEST)
                    .and_then(parse_u64)
                    .filter(|s| (200..600).contains(s))
                    .map(|s| s as u16);
                let grpc = match http {
                    Some(_) => None,
                    // Parsed as a uint64 and narrowed, as Envoy's cast to the 32-bit status does.
                    None => Some(headers.first(ABORT_GRPC_REQUEST).and_then(parse_u64)? as u32),
                };
                (
                    http,
                    grpc,
                    header_percentage(headers, ABORT_REQUEST_PERCENTAGE, abort.percentage()),
                )
            }
        };
        // With a downstream cluster, its key is consulted instead of the global one.
        let cluster_key = downstream.key(runtime, "abort.abort_percent");
        let key = cluster_key.as_deref().unwrap_or(keys.abort_percent());
        if !feature_enabled(runtime, key, percentage, rng) {
            return None;
        }
        let (http_status, grpc_status) = match (http_default, grpc_default) {
            (Some(default), _) => {
                let mut status = runtime_status(runtime, keys.abort_http_status(), default);
                // Envoy's per-cluster lookup falls back to the configured status, not the global override.
                if let Some(key) = downstream.key(runtime, "abort.http_status") {
                    status = runtime_status(runtime, &key, default);
                }
                (status, None)
            }
            (None, Some(default)) => {
                let mut status = integer(runtime, keys.abort_grpc_status(), u64::from(default)) as u32;
                if let Some(key) = downstream.key(runtime, "abort.grpc_status") {
                    status = integer(runtime, &key, u64::from(default)) as u32;
                }
                (200, Some(status))
            }
            (None, None) => return None,
        };
        let grpc_request = inline_value(headers, CONTENT_TYPE).is_some_and(|ct| is_grpc_content_type(&ct));
        Some(Abort {
            http_status,
            grpc_status,
            grpc_request,
        })
    }
}

/// The HTTP status from a runtime key: Envoy casts whatever integer it finds; values that cannot be a
/// three-digit status line are ignored here in favour of `default`.
fn runtime_status(runtime: Option<&dyn Runtime>, key: &str, default: u16) -> u16 {
    match integer(runtime, key, u64::from(default)) {
        s @ 100..=999 => s as u16,
        _ => default,
    }
}

/// Envoy's `HeaderPercentageProvider`: the configured percentage, its numerator capped by a valid
/// `uint32` in `header`.
fn header_percentage<H: RequestHeaders + ?Sized>(
    headers: &H,
    header: &str,
    configured: crate::config::FractionalPercent,
) -> crate::config::FractionalPercent {
    match headers.first(header).and_then(parse_u32) {
        Some(cap) => configured.capped(cap),
        None => configured,
    }
}

impl fmt::Debug for FaultFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultFilter")
            .field("config", &self.config)
            .field("stats", &self.stats.prefix())
            .field("runtime", &self.runtime.is_some())
            .finish()
    }
}
