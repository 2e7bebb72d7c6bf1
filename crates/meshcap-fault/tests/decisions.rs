//! Decision semantics beyond the recorded cases: sampling statistics, evaluation order and random draws,
//! eligibility, `max_active_faults` and the active-fault slot, per-cluster statistics, runtime overrides.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use meshcap_fault::{Action, Decision, FastRng, FaultConfig, FaultFilter, FaultStats, Random, RuntimeSnapshot};

fn filter(json: &str) -> FaultFilter {
    FaultFilter::new(
        Arc::new(FaultConfig::from_json(json).unwrap()),
        Arc::new(FaultStats::new("test")),
    )
}

fn with_stats(json: &str, stats: &Arc<FaultStats>) -> FaultFilter {
    FaultFilter::new(Arc::new(FaultConfig::from_json(json).unwrap()), Arc::clone(stats))
}

/// A random source that replays a script and counts draws.
struct Script(VecDeque<u64>, usize);

impl Script {
    fn new(values: &[u64]) -> Script {
        Script(values.iter().copied().collect(), 0)
    }
}

impl Random for Script {
    fn next_u64(&mut self) -> u64 {
        self.1 += 1;
        self.0.pop_front().expect("an unexpected random draw")
    }
}

const NO_HEADERS: [(&str, &str); 0] = [];

#[test]
fn half_a_percent_fires_half_a_percent_of_a_million_times() {
    // Kuma's MeshFaultInjection `percentage: 0.5` becomes 50/TEN_THOUSAND.
    let f =
        filter(r#"{"delay": {"fixed_delay": "5s", "percentage": {"numerator": 50, "denominator": "TEN_THOUSAND"}}}"#);
    let mut rng = FastRng::seed_from_u64(0x5eed_0005);
    let mut fired = 0u64;
    for _ in 0..1_000_000 {
        let d = f.decide(&NO_HEADERS, None, &mut rng);
        if let Action::Delay(delay) = d.action() {
            assert_eq!(*delay, Duration::from_secs(5));
            fired += 1;
        }
    }
    // Expected 5,000 (0.5 %), standard deviation ~70.5; ±300 is ±0.03 percentage points (4.3 sigma).
    assert!((4_700..=5_300).contains(&fired), "fired {fired} times");
    assert_eq!(f.stats().delays_injected(), fired);
    assert_eq!(f.stats().active_faults(), 0);
}

#[test]
fn percentage_is_random_mod_denominator_below_numerator() {
    // 50/TEN_THOUSAND fires for draws whose remainder modulo 10,000 is below 50.
    let f =
        filter(r#"{"abort": {"http_status": 503, "percentage": {"numerator": 50, "denominator": "TEN_THOUSAND"}}}"#);
    for (draw, fires) in [
        (49, true),
        (50, false),
        (10_049, true),
        (10_050, false),
        (u64::MAX, false),
    ] {
        let mut rng = Script::new(&[draw]);
        let d = f.decide(&NO_HEADERS, None, &mut rng);
        assert_eq!(d.abort_injected(), fires, "draw {draw}");
    }
    // u64::MAX % 1,000,000 = 551,615.
    let f = filter(r#"{"abort": {"http_status": 503, "percentage": {"numerator": 551616, "denominator": "MILLION"}}}"#);
    assert!(
        f.decide(&NO_HEADERS, None, &mut Script::new(&[u64::MAX]))
            .abort_injected()
    );
}

#[test]
fn zero_and_full_percentages_do_not_draw() {
    let f = filter(
        r#"{"delay": {"fixed_delay": "1s", "percentage": {"numerator": 0}},
            "abort": {"http_status": 503, "percentage": {"numerator": 200}}}"#,
    );
    let mut rng = Script::new(&[]);
    assert!(f.decide(&NO_HEADERS, None, &mut rng).abort_injected());
    assert_eq!(rng.1, 0);
}

#[test]
fn omitted_percentage_means_never() {
    let f = filter(r#"{"abort": {"http_status": 503}, "delay": {"fixed_delay": "1s"}}"#);
    let d = f.decide(
        &[("x-envoy-fault-abort-request", "503")],
        None,
        &mut FastRng::seed_from_u64(1),
    );
    assert!(d.is_noop());
}

#[test]
fn rate_limit_then_delay_then_abort_after_the_delay_with_independent_draws() {
    let f = filter(
        r#"{"response_rate_limit": {"fixed_limit": {"limit_kbps": 8}, "percentage": {"numerator": 50}},
            "delay": {"fixed_delay": "0.250s", "percentage": {"numerator": 50}},
            "abort": {"http_status": 429, "percentage": {"numerator": 50}}}"#,
    );
    // Draw 1: rate limit (fires), draw 2: delay (fires). No abort draw yet.
    let mut rng = Script::new(&[10, 20]);
    let d = f.decide(&NO_HEADERS, None, &mut rng);
    assert_eq!(d.action(), &Action::Delay(Duration::from_millis(250)));
    assert_eq!(d.response_rate_limit().map(|k| k.get()), Some(8));
    assert_eq!(rng.1, 2);
    // Draw 3, after the delay: the abort, sampled on its own (99 does not fire).
    let mut rng = Script::new(&[99]);
    let d = f.after_delay(d, &NO_HEADERS, &mut rng);
    assert_eq!(d.action(), &Action::Continue);
    assert_eq!(d.response_flags(), "DI");
    // The rate limit is configured, so the slot stays held after the delay.
    assert_eq!(f.stats().active_faults(), 1);
    drop(d);
    assert_eq!(f.stats().active_faults(), 0);

    // Without a delay the abort is drawn right away: rate limit (no), delay (no), abort (yes).
    let mut rng = Script::new(&[60, 70, 30]);
    let d = f.decide(&NO_HEADERS, None, &mut rng);
    assert!(matches!(d.action(), Action::Abort(a) if a.http_status() == 429));
    assert_eq!(d.response_flags(), "FI");
    assert_eq!(rng.1, 3);
}

#[test]
fn a_delay_followed_by_nothing_releases_the_slot_unless_a_rate_limit_is_configured() {
    let f = filter(r#"{"delay": {"header_delay": {}, "percentage": {"numerator": 100}}}"#);
    let h = [("x-envoy-fault-delay-request", "10")];
    let d = f.decide(&h, None, &mut FastRng::seed_from_u64(1));
    assert_eq!(f.stats().active_faults(), 1);
    let d = f.after_delay(d, &h, &mut FastRng::seed_from_u64(1));
    assert!(d.active_fault().is_none());
    assert_eq!(f.stats().active_faults(), 0);
    assert!(d.emits_filter_metadata());

    // Envoy keeps the slot when a rate limit is configured, even if it was not injected.
    let f = filter(
        r#"{"delay": {"header_delay": {}, "percentage": {"numerator": 100}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}}}"#,
    );
    let d = f.decide(&h, None, &mut FastRng::seed_from_u64(1));
    assert!(d.response_rate_limit().is_none());
    let d = f.after_delay(d, &h, &mut FastRng::seed_from_u64(1));
    assert_eq!(f.stats().active_faults(), 1);
    let guard = d.into_active_fault().expect("still active");
    assert_eq!(f.stats().active_faults(), 1);
    drop(guard);
    assert_eq!(f.stats().active_faults(), 0);
}

#[test]
fn a_request_holds_one_slot_however_many_faults_it_gets() {
    let f = filter(
        r#"{"response_rate_limit": {"fixed_limit": {"limit_kbps": 1}, "percentage": {"numerator": 100}},
            "abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#,
    );
    let d = f.decide(&NO_HEADERS, None, &mut FastRng::seed_from_u64(1));
    assert!(d.abort_injected() && d.response_rate_limit().is_some());
    assert_eq!(
        (
            f.stats().active_faults(),
            f.stats().response_rl_injected(),
            f.stats().aborts_injected()
        ),
        (1, 1, 1)
    );
}

#[test]
fn max_active_faults_overflow_is_checked_per_fault_and_counted() {
    // 0: every fault overflows; a request trying two faults counts two overflows (Envoy does the same).
    let f = filter(
        r#"{"max_active_faults": 0,
            "response_rate_limit": {"fixed_limit": {"limit_kbps": 1}, "percentage": {"numerator": 100}},
            "abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#,
    );
    let d = f.decide(&NO_HEADERS, None, &mut FastRng::seed_from_u64(1));
    assert!(d.is_noop());
    assert_eq!(f.stats().faults_overflow(), 2);
    assert_eq!((f.stats().aborts_injected(), f.stats().response_rl_injected()), (0, 0));

    // 2: two requests in flight hold both slots, the third overflows; a finished one frees its slot.
    let f = filter(r#"{"max_active_faults": 2, "abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#);
    let mut rng = FastRng::seed_from_u64(1);
    let first = f.decide(&NO_HEADERS, None, &mut rng);
    let second = f.decide(&NO_HEADERS, None, &mut rng);
    let third = f.decide(&NO_HEADERS, None, &mut rng);
    assert!(first.abort_injected() && second.abort_injected() && third.is_noop());
    assert_eq!((f.stats().active_faults(), f.stats().faults_overflow()), (2, 1));
    drop(first);
    assert!(f.decide(&NO_HEADERS, None, &mut rng).abort_injected());
    drop(second);
    assert_eq!(f.stats().active_faults(), 0);
}

#[test]
fn per_route_filters_share_the_listener_statistics_and_limit() {
    let stats = Arc::new(FaultStats::new("shared"));
    let listener = with_stats(
        r#"{"max_active_faults": 1, "abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#,
        &stats,
    );
    let route = with_stats(
        r#"{"max_active_faults": 1, "abort": {"http_status": 418, "percentage": {"numerator": 100}}}"#,
        &stats,
    );
    let mut rng = FastRng::seed_from_u64(1);
    let held = listener.decide(&NO_HEADERS, None, &mut rng);
    assert!(route.decide(&NO_HEADERS, None, &mut rng).is_noop());
    drop(held);
    let d = route.decide(&NO_HEADERS, None, &mut rng);
    assert!(matches!(d.action(), Action::Abort(a) if a.http_status() == 418));
    assert_eq!((stats.aborts_injected(), stats.faults_overflow()), (2, 1));
}

#[test]
fn eligibility_upstream_cluster_downstream_nodes_and_headers() {
    let f = filter(
        r#"{"upstream_cluster": "localhost:5000", "downstream_nodes": ["frontend-1"],
            "headers": [{"name": "x-kuma-tags", "safe_regex_match": {"regex": ".*&kuma.io/service=[^&]*frontend[,&].*"}},
                        {"name": "x-canary", "present_match": true, "invert_match": true}],
            "abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#,
    );
    let mut rng = FastRng::seed_from_u64(1);
    let ok = [
        ("x-envoy-downstream-service-node", "frontend-1"),
        ("x-kuma-tags", "&kuma.io/service=frontend&kuma.io/zone=east&"),
    ];
    assert!(f.decide(&ok, Some("localhost:5000"), &mut rng).abort_injected());
    assert!(f.decide(&ok, Some("localhost:5001"), &mut rng).is_noop());
    assert!(f.decide(&ok, None, &mut rng).is_noop());
    let other_node = [("x-envoy-downstream-service-node", "frontend-2"), ok[1]];
    assert!(f.decide(&other_node, Some("localhost:5000"), &mut rng).is_noop());
    assert!(f.decide(&ok[1..], Some("localhost:5000"), &mut rng).is_noop());
    let backend = [ok[0], ("x-kuma-tags", "&kuma.io/service=backend&")];
    assert!(f.decide(&backend, Some("localhost:5000"), &mut rng).is_noop());
    let canary = [ok[0], ok[1], ("x-canary", "1")];
    assert!(f.decide(&canary, Some("localhost:5000"), &mut rng).is_noop());
    // Ineligible requests never draw, count or take a slot.
    assert_eq!((f.stats().aborts_injected(), f.stats().active_faults()), (1, 0));
}

#[test]
fn downstream_cluster_statistics_are_per_cluster_and_can_be_disabled() {
    let json = r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
                   "delay": {"header_delay": {}, "percentage": {"numerator": 100}}}"#;
    let f = filter(json);
    let mut rng = FastRng::seed_from_u64(1);
    let abort = |cluster: &'static str| {
        [
            ("x-envoy-downstream-service-cluster", cluster),
            ("x-envoy-fault-abort-request", "503"),
        ]
    };
    drop(f.decide(&abort("frontend"), None, &mut rng));
    drop(f.decide(&abort("frontend"), None, &mut rng));
    drop(f.decide(&abort(""), None, &mut rng));
    let delay = [
        ("x-envoy-downstream-service-cluster", "web"),
        ("x-envoy-fault-delay-request", "5"),
    ];
    let d = f.decide(&delay, None, &mut rng);
    drop(f.after_delay(d, &delay, &mut rng));
    assert_eq!(f.stats().downstream_cluster("frontend"), Some((0, 2)));
    assert_eq!(f.stats().downstream_cluster("web"), Some((1, 0)));
    assert_eq!(f.stats().downstream_cluster(""), None);
    let mut names = Vec::new();
    f.stats().visit(|s| names.push(format!("{}: {}", s.name(), s.value())));
    assert_eq!(
        names,
        [
            "http.test.fault.aborts_injected: 3",
            "http.test.fault.active_faults: 0",
            "http.test.fault.delays_injected: 1",
            "http.test.fault.faults_overflow: 0",
            "http.test.fault.response_rl_injected: 0",
            "http.test.fault.frontend.aborts_injected: 2",
            "http.test.fault.web.delays_injected: 1",
        ]
    );

    let disabled = filter(&json.replace("\"abort\"", "\"disable_downstream_cluster_stats\": true, \"abort\""));
    drop(disabled.decide(&abort("frontend"), None, &mut rng));
    assert_eq!(disabled.stats().downstream_cluster("frontend"), None);

    let stats = Arc::new(FaultStats::new("test").without_downstream_cluster_stats());
    drop(with_stats(json, &stats).decide(&abort("frontend"), None, &mut rng));
    assert_eq!(
        (stats.aborts_injected(), stats.downstream_cluster("frontend")),
        (1, None)
    );
}

#[test]
fn header_controlled_values_and_caps() {
    let f = filter(
        r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 50}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 50}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 50}}}"#,
    );
    // The header numerator caps the configured 50/100; it cannot raise it.
    for (pct, draw, fires) in [
        ("10", 9, true),
        ("10", 10, false),
        ("90", 49, true),
        ("90", 60, false),
        ("x", 49, true),
    ] {
        let h = [
            ("x-envoy-fault-abort-request", "503"),
            ("x-envoy-fault-abort-request-percentage", pct),
        ];
        // Only the abort has its header, so only the abort is drawn.
        let d = f.decide(&h, None, &mut Script::new(&[draw]));
        assert_eq!(d.abort_injected(), fires, "percentage {pct}, draw {draw}");
    }
    // Header-controlled faults without their headers cannot fire, so they are not even drawn (Envoy
    // draws and then finds no value; only the number of draws differs).
    assert!(f.decide(&NO_HEADERS, None, &mut Script::new(&[])).is_noop());
    // Delay 0 is no delay; the abort is then drawn right away.
    let h = [
        ("x-envoy-fault-delay-request", "0"),
        ("x-envoy-fault-abort-request", "503"),
    ];
    assert!(f.decide(&h, None, &mut Script::new(&[0, 0])).abort_injected());
    // Throughput 0 is no limit.
    let h = [("x-envoy-fault-throughput-response", "0")];
    assert!(f.decide(&h, None, &mut Script::new(&[])).is_noop());
    assert_eq!(f.stats().response_rl_injected(), 0);
}

#[test]
fn abort_statuses_from_config_and_headers() {
    let mut rng = FastRng::seed_from_u64(1);
    let grpc = filter(r#"{"abort": {"grpc_status": 99, "percentage": {"numerator": 100}}}"#);
    let d = grpc.decide(&[("content-type", "application/grpc")], None, &mut rng);
    let Action::Abort(a) = d.action() else { panic!() };
    assert_eq!(
        (a.http_status(), a.grpc_status(), a.is_grpc_request()),
        (200, Some(99), true)
    );

    let header = filter(r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}}}"#);
    type Headers = &'static [(&'static str, &'static str)];
    type Status = Option<(u16, Option<u32>)>;
    let cases: [(Headers, Status); 6] = [
        (&[("x-envoy-fault-abort-request", "599")], Some((599, None))),
        (&[("x-envoy-fault-abort-request", "600")], None),
        (
            &[
                ("x-envoy-fault-abort-request", "600"),
                ("x-envoy-fault-abort-grpc-request", "5"),
            ],
            Some((200, Some(5))),
        ),
        (
            &[
                ("x-envoy-fault-abort-request", "503"),
                ("x-envoy-fault-abort-grpc-request", "5"),
            ],
            Some((503, None)),
        ),
        (
            &[("x-envoy-fault-abort-grpc-request", "4294967296")],
            Some((200, Some(0))),
        ),
        (&[("x-envoy-fault-abort-grpc-request", "-1")], None),
    ];
    for (headers, expected) in cases {
        let d = header.decide(headers, None, &mut rng);
        let got = match d.action() {
            Action::Abort(a) => Some((a.http_status(), a.grpc_status())),
            _ => None,
        };
        assert_eq!(got, expected, "{headers:?}");
    }
}

#[test]
fn runtime_overrides_follow_envoy() {
    let json = r#"{"abort": {"http_status": 503, "percentage": {"numerator": 100}},
                   "delay": {"fixed_delay": "1s", "percentage": {"numerator": 0}},
                   "max_active_faults": 1}"#;
    let with = |pairs: &[(&str, &str)]| {
        let runtime: RuntimeSnapshot = pairs.iter().copied().collect();
        filter(json).with_runtime(Arc::new(runtime))
    };
    let mut rng = FastRng::seed_from_u64(1);
    let status = |d: &Decision| match d.action() {
        Action::Abort(a) => Some(a.http_status()),
        _ => None,
    };
    let cluster = [("x-envoy-downstream-service-cluster", "frontend")];

    // Global percentage and status keys.
    assert_eq!(
        status(&with(&[("fault.http.abort.abort_percent", "0")]).decide(&NO_HEADERS, None, &mut rng)),
        None
    );
    assert_eq!(
        status(&with(&[("fault.http.abort.http_status", "429")]).decide(&NO_HEADERS, None, &mut rng)),
        Some(429)
    );
    // With a downstream cluster its keys replace the global ones: the global percentage no longer
    // applies, and the per-cluster status falls back to the configured one, not the global override.
    let f = with(&[
        ("fault.http.abort.abort_percent", "0"),
        ("fault.http.abort.http_status", "429"),
    ]);
    assert_eq!(status(&f.decide(&cluster, None, &mut rng)), Some(503));
    let f = with(&[("fault.http.frontend.abort.abort_percent", "0")]);
    assert_eq!(status(&f.decide(&cluster, None, &mut rng)), None);
    assert_eq!(status(&f.decide(&NO_HEADERS, None, &mut rng)), Some(503));
    let f = with(&[("fault.http.frontend.abort.http_status", "418")]);
    assert_eq!(status(&f.decide(&cluster, None, &mut rng)), Some(418));
    // Delay percentage and duration.
    let f = with(&[
        ("fault.http.delay.fixed_delay_percent", "100"),
        ("fault.http.delay.fixed_duration_ms", "25"),
    ]);
    assert_eq!(
        f.decide(&NO_HEADERS, None, &mut rng).action(),
        &Action::Delay(Duration::from_millis(25))
    );
    let f = with(&[
        ("fault.http.frontend.delay.fixed_delay_percent", "101"),
        ("fault.http.frontend.delay.fixed_duration_ms", "7"),
    ]);
    assert_eq!(
        f.decide(&cluster, None, &mut rng).action(),
        &Action::Delay(Duration::from_millis(7))
    );
    // A fractional percentage entry.
    let f = with(&[(
        "fault.http.abort.abort_percent",
        r#"{"numerator": 0, "denominator": "MILLION"}"#,
    )]);
    assert_eq!(status(&f.decide(&NO_HEADERS, None, &mut rng)), None);
    // max_active_faults.
    let f = with(&[("fault.http.max_active_faults", "0")]);
    assert!(f.decide(&NO_HEADERS, None, &mut rng).is_noop());
    assert_eq!(f.stats().faults_overflow(), 1);
    // Custom key names from the config.
    let f = FaultFilter::new(
        Arc::new(
            FaultConfig::from_json(r#"{"abort": {"http_status": 503, "percentage": {"numerator": 100}}, "abort_percent_runtime": "my.key"}"#)
                .unwrap(),
        ),
        Arc::new(FaultStats::new("test")),
    )
    .with_runtime(Arc::new([("my.key", "0")].into_iter().collect::<RuntimeSnapshot>()));
    assert_eq!(status(&f.decide(&NO_HEADERS, None, &mut rng)), None);
    // gRPC status.
    let f = filter(r#"{"abort": {"grpc_status": 14, "percentage": {"numerator": 100}}}"#).with_runtime(Arc::new(
        [("fault.http.abort.grpc_status", "4")]
            .into_iter()
            .collect::<RuntimeSnapshot>(),
    ));
    assert!(matches!(f.decide(&NO_HEADERS, None, &mut rng).action(), Action::Abort(a) if a.grpc_status() == Some(4)));
}

#[test]
fn decisions_are_send_and_filters_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FaultFilter>();
    assert_send_sync::<Decision>();
    assert_send_sync::<FaultStats>();
    assert_send_sync::<FaultConfig>();
    assert_send_sync::<meshcap_fault::RateLimiter>();
    assert_send_sync::<meshcap_fault::ConfigError>();
}
