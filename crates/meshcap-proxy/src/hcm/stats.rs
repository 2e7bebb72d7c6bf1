//! HTTP connection manager and cluster statistics with Envoy's names, resolved once.

use crate::stats::{Counter, Gauge, StatSource, StatValue};

/// Class counters `…_1xx` to `…_5xx` plus one counter per status code, as Envoy keeps them.
#[derive(Debug)]
pub struct StatusCounters {
    class: [Counter; 5],
    code: Box<[Counter]>,
}

impl Default for StatusCounters {
    fn default() -> StatusCounters {
        StatusCounters {
            class: Default::default(),
            code: (100..600).map(|_| Counter::new()).collect(),
        }
    }
}

impl StatusCounters {
    /// Count one response with `status` (codes outside 100..600 count nowhere).
    pub fn record(&self, status: u16) {
        if (100..600).contains(&status) {
            self.class[usize::from(status / 100 - 1)].inc();
            self.code[usize::from(status - 100)].inc();
        }
    }
    /// The `Nxx` class counter (`class` 1 to 5).
    pub fn class(&self, class: u16) -> u64 {
        self.class
            .get(usize::from(class).wrapping_sub(1))
            .map_or(0, Counter::get)
    }
    /// The counter of one status code.
    pub fn code(&self, status: u16) -> u64 {
        self.code
            .get(usize::from(status).wrapping_sub(100))
            .map_or(0, Counter::get)
    }
    fn visit_classes(&self, prefix: &str, stem: &str, visit: &mut dyn FnMut(&str, StatValue)) {
        for (i, c) in self.class.iter().enumerate() {
            visit(&format!("{prefix}{stem}_{}xx", i + 1), StatValue::Counter(c.get()));
        }
    }
    fn visit_used_classes(&self, prefix: &str, stem: &str, visit: &mut dyn FnMut(&str, StatValue)) {
        for (i, c) in self.class.iter().enumerate() {
            let v = c.get();
            if v > 0 {
                visit(&format!("{prefix}{stem}_{}xx", i + 1), StatValue::Counter(v));
            }
        }
    }
    /// Per-code counters exist in Envoy only once used: visit the non-zero ones.
    fn visit_codes(&self, prefix: &str, stem: &str, visit: &mut dyn FnMut(&str, StatValue)) {
        for (i, c) in self.code.iter().enumerate() {
            let v = c.get();
            if v > 0 {
                visit(&format!("{prefix}{stem}_{}", i + 100), StatValue::Counter(v));
            }
        }
    }
}

macro_rules! stat_struct {
    ($(#[$m:meta])* $name:ident { $( $(#[$fm:meta])* $field:ident : $ty:ident ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        #[non_exhaustive]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }
        impl $name {
            fn visit_fields(&self, prefix: &str, visit: &mut dyn FnMut(&str, StatValue)) {
                $( visit(&format!("{prefix}{}", stringify!($field)), stat_struct!(@value self.$field, $ty)); )*
            }
        }
    };
    (@value $e:expr, Counter) => { StatValue::Counter($e.get()) };
    (@value $e:expr, Gauge) => { StatValue::Gauge($e.get()) };
}

stat_struct! {
    /// `http.<stat_prefix>.*`: the HTTP connection manager's statistics (names from Envoy 1.40's
    /// `/stats`).
    HcmStats {
        /// Connections accepted.
        downstream_cx_total: Counter,
        /// Connections open.
        downstream_cx_active: Gauge,
        /// HTTP/1.1 connections accepted.
        downstream_cx_http1_total: Counter,
        /// HTTP/1.1 connections open.
        downstream_cx_http1_active: Gauge,
        /// Connections closed.
        downstream_cx_destroy: Counter,
        /// Connections closed by the proxy.
        downstream_cx_destroy_local: Counter,
        /// Connections closed by the client.
        downstream_cx_destroy_remote: Counter,
        /// Connections closed with a request in flight.
        downstream_cx_destroy_active_rq: Counter,
        /// Connections closed for a protocol error.
        downstream_cx_protocol_error: Counter,
        /// Connections closed by the idle timeout.
        downstream_cx_idle_timeout: Counter,
        /// Bytes received from clients.
        downstream_cx_rx_bytes_total: Counter,
        /// Bytes sent to clients.
        downstream_cx_tx_bytes_total: Counter,
        /// Upgraded connections.
        downstream_cx_upgrades_total: Counter,
        /// Upgraded connections open.
        downstream_cx_upgrades_active: Gauge,
        /// Requests.
        downstream_rq_total: Counter,
        /// HTTP/1.1 requests.
        downstream_rq_http1_total: Counter,
        /// Requests in flight.
        downstream_rq_active: Gauge,
        /// Requests that got a response.
        downstream_rq_completed: Counter,
        /// Requests that hit the request headers timeout.
        downstream_rq_header_timeout: Counter,
        /// Requests that hit the stream idle timeout.
        downstream_rq_idle_timeout: Counter,
        /// Requests reset by the client.
        downstream_rq_rx_reset: Counter,
        /// Requests reset by the proxy.
        downstream_rq_tx_reset: Counter,
        /// Responses that completed before the request body.
        downstream_rq_response_before_rq_complete: Counter,
        /// Requests with an absolute-form target.
        downstream_rq_non_relative_path: Counter,
        /// Upgrade requests on a route without that upgrade.
        downstream_rq_ws_on_non_ws_route: Counter,
        /// Requests with no matching route.
        no_route: Counter,
        /// Requests the router handled.
        rq_total: Counter,
    }
}

stat_struct! {
    /// `cluster.<name>.*`: the upstream statistics of one cluster used by HTTP routes (names from
    /// Envoy 1.40's `/stats`; the request-scoped counters also exist under `external.`, as Envoy
    /// counts requests from a non-internal client there).
    ClusterStatsFields {
        /// Connections opened.
        upstream_cx_total: Counter,
        /// Connections open.
        upstream_cx_active: Gauge,
        /// HTTP/1.1 connections opened.
        upstream_cx_http1_total: Counter,
        /// Connect failures.
        upstream_cx_connect_fail: Counter,
        /// Connect timeouts.
        upstream_cx_connect_timeout: Counter,
        /// Connections closed.
        upstream_cx_destroy: Counter,
        /// Connections closed by the proxy.
        upstream_cx_destroy_local: Counter,
        /// Connections closed by the upstream.
        upstream_cx_destroy_remote: Counter,
        /// Connections closed for a protocol error.
        upstream_cx_protocol_error: Counter,
        /// Idle connections closed by the pool's idle timeout.
        upstream_cx_idle_timeout: Counter,
        /// Bytes received from the upstream.
        upstream_cx_rx_bytes_total: Counter,
        /// Bytes sent to the upstream.
        upstream_cx_tx_bytes_total: Counter,
        /// Requests sent.
        upstream_rq_total: Counter,
        /// Requests in flight.
        upstream_rq_active: Gauge,
        /// Requests that got a response.
        upstream_rq_completed: Counter,
        /// Requests that waited for a connection.
        upstream_rq_pending_total: Counter,
        /// Requests waiting for a connection.
        upstream_rq_pending_active: Gauge,
        /// Requests failed because the connection could not be made.
        upstream_rq_pending_failure_eject: Counter,
        /// Requests reset by the upstream.
        upstream_rq_rx_reset: Counter,
        /// Requests reset by the proxy.
        upstream_rq_tx_reset: Counter,
        /// Requests that timed out.
        upstream_rq_timeout: Counter,
    }
}

/// `cluster.<name>.*` statistics of a cluster used by HTTP routes.
#[derive(Debug)]
pub struct ClusterStats {
    prefix: String,
    /// The counters and gauges with fixed names.
    pub fields: ClusterStatsFields,
    /// `upstream_rq_<code>` and `upstream_rq_<N>xx`.
    pub upstream_rq: StatusCounters,
    /// `external.upstream_rq_<code>` and `external.upstream_rq_<N>xx`.
    pub external_upstream_rq: StatusCounters,
    /// `external.upstream_rq_completed`.
    pub external_upstream_rq_completed: Counter,
}

impl ClusterStats {
    /// Statistics for the cluster whose stat name is `stat_name` (Envoy's `alt_stat_name`, e.g.
    /// `localhost_5000`).
    pub fn new(stat_name: &str) -> ClusterStats {
        ClusterStats {
            prefix: format!("cluster.{stat_name}."),
            fields: ClusterStatsFields::default(),
            upstream_rq: StatusCounters::default(),
            external_upstream_rq: StatusCounters::default(),
            external_upstream_rq_completed: Counter::new(),
        }
    }
}

impl StatSource for ClusterStats {
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
        self.fields.visit_fields(&self.prefix, visit);
        // Envoy creates the per-class and per-code request counters of a cluster on first use.
        self.upstream_rq.visit_used_classes(&self.prefix, "upstream_rq", visit);
        self.upstream_rq.visit_codes(&self.prefix, "upstream_rq", visit);
        let ext = format!("{}external.", self.prefix);
        self.external_upstream_rq.visit_codes(&ext, "upstream_rq", visit);
        self.external_upstream_rq.visit_used_classes(&ext, "upstream_rq", visit);
        let v = self.external_upstream_rq_completed.get();
        if v > 0 {
            visit(&format!("{ext}upstream_rq_completed"), StatValue::Counter(v));
        }
    }
}

/// All statistics of one HTTP connection manager: `http.<prefix>.*` and the listener-scoped
/// `listener.<address>.http.<prefix>.downstream_rq_*`.
#[derive(Debug)]
pub struct HttpStats {
    http_prefix: String,
    listener_prefix: Option<String>,
    /// `http.<prefix>.*`.
    pub hcm: HcmStats,
    /// `http.<prefix>.downstream_rq_<N>xx`.
    pub downstream_rq: StatusCounters,
    /// `listener.<address>.http.<prefix>.downstream_rq_<N>xx`.
    pub listener_downstream_rq: StatusCounters,
    /// `listener.<address>.http.<prefix>.downstream_rq_completed`.
    pub listener_downstream_rq_completed: Counter,
}

impl HttpStats {
    /// Statistics for the HCM with `stat_prefix` (e.g. `localhost_5000`) on the listener whose stat
    /// address is `listener` (e.g. `10.244.0.6_5000`; `None` when the HCM is not tied to a listener).
    pub fn new(stat_prefix: &str, listener: Option<&str>) -> HttpStats {
        HttpStats {
            http_prefix: format!("http.{stat_prefix}."),
            listener_prefix: listener.map(|l| format!("listener.{l}.http.{stat_prefix}.")),
            hcm: HcmStats::default(),
            downstream_rq: StatusCounters::default(),
            listener_downstream_rq: StatusCounters::default(),
            listener_downstream_rq_completed: Counter::new(),
        }
    }

    /// Count a completed request with `status` everywhere Envoy counts it.
    pub(crate) fn record_response(&self, status: u16) {
        self.hcm.downstream_rq_completed.inc();
        self.downstream_rq.record(status);
        self.listener_downstream_rq.record(status);
        self.listener_downstream_rq_completed.inc();
    }
}

impl StatSource for HttpStats {
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
        self.hcm.visit_fields(&self.http_prefix, visit);
        self.downstream_rq
            .visit_classes(&self.http_prefix, "downstream_rq", visit);
        if let Some(p) = &self.listener_prefix {
            self.listener_downstream_rq.visit_classes(p, "downstream_rq", visit);
            visit(
                &format!("{p}downstream_rq_completed"),
                StatValue::Counter(self.listener_downstream_rq_completed.get()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &dyn StatSource) -> Vec<String> {
        let mut v = Vec::new();
        s.visit_stats(&mut |n, _| v.push(n.to_string()));
        v
    }

    #[test]
    fn names_exist_in_envoy_reference_stats() {
        let Some(dir) = meshcap_testns::reference_dir("hcm_stat_names") else {
            return;
        };
        let text = std::fs::read_to_string(dir.join("envoy/stats.txt")).expect("stats.txt");
        let known: std::collections::HashSet<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
        let http = HttpStats::new("localhost_5000", Some("10.244.0.6_5000"));
        for n in names(&http) {
            assert!(known.contains(n.as_str()), "{n} is not an Envoy stat name");
        }
        let cluster = ClusterStats::new("localhost_5000");
        for n in names(&cluster) {
            assert!(known.contains(n.as_str()), "{n} is not an Envoy stat name");
        }
    }

    #[test]
    fn per_code_counters_appear_once_used() {
        let cluster = ClusterStats::new("localhost_5000");
        assert!(!names(&cluster).iter().any(|n| n.ends_with("upstream_rq_200")));
        cluster.upstream_rq.record(200);
        cluster.external_upstream_rq.record(200);
        let n = names(&cluster);
        assert!(n.contains(&"cluster.localhost_5000.upstream_rq_200".to_string()));
        assert!(n.contains(&"cluster.localhost_5000.external.upstream_rq_2xx".to_string()));
        assert_eq!(cluster.upstream_rq.class(2), 1);
        assert_eq!(cluster.upstream_rq.code(200), 1);
    }
}
