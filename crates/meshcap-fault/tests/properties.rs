//! Properties: no header value, configuration or percentage makes the filter panic; percentages sample
//! exactly `random % denominator < numerator`; configurations round-trip through Envoy's JSON (read, and
//! printed then read again); header
//! integers parse like `absl::SimpleAtoi`; the rate limiter never runs ahead of its rate.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshcap_fault::{
    AbortKind, Action, DelayKind, Denominator, FastRng, FaultConfig, FaultFilter, FaultStats, FractionalPercent,
    Random, RateLimitKind, RateLimiter, ReplyContext, RuntimeSnapshot, headers,
};
use proptest::prelude::*;

const FAULT_HEADERS: [&str; 10] = [
    headers::ABORT_REQUEST,
    headers::ABORT_GRPC_REQUEST,
    headers::ABORT_REQUEST_PERCENTAGE,
    headers::DELAY_REQUEST,
    headers::DELAY_REQUEST_PERCENTAGE,
    headers::THROUGHPUT_RESPONSE,
    headers::THROUGHPUT_RESPONSE_PERCENTAGE,
    headers::DOWNSTREAM_SERVICE_CLUSTER,
    headers::DOWNSTREAM_SERVICE_NODE,
    headers::CONTENT_TYPE,
];

fn header_config() -> FaultConfig {
    FaultConfig::from_json(
        r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}},
            "downstream_nodes": ["n1"], "max_active_faults": 3,
            "headers": [{"name": "x-a", "safe_regex_match": {"regex": "[a-z]*"}, "invert_match": true}]}"#,
    )
    .unwrap()
}

/// Header values: numbers near the interesting boundaries, their text variants, and arbitrary bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        (0u64..1000).prop_map(|n| n.to_string().into_bytes()),
        "[ +-]?[0-9]{0,25}[ ]?".prop_map(String::into_bytes),
        "application/grpc[+;a-z-]{0,6}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn request() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                proptest::sample::select(FAULT_HEADERS.to_vec()).prop_map(str::to_owned),
                "x-[a-c]"
            ],
            header_value(),
        ),
        0..12,
    )
}

/// Drive one request through decide / after_delay / reply, checking the invariants of the outcome.
fn exercise(filter: &FaultFilter, headers: &[(String, Vec<u8>)], rng: &mut FastRng) {
    let mut decision = filter.decide(headers, Some("c"), rng);
    if let Action::Delay(d) = *decision.action() {
        assert!(d >= Duration::from_millis(1));
        decision = filter.after_delay(decision, headers, rng);
    }
    if let Action::Abort(abort) = decision.action() {
        let s = abort.http_status();
        assert!((200..600).contains(&s), "status {s}");
        assert!(abort.grpc_status().is_none() || s == 200);
        for head in [false, true] {
            let reply = abort.reply(ReplyContext::new().head_request(head));
            let mut out = Vec::new();
            reply.write_http1(&mut out, "Thu, 26 Nov 2026 11:47:33 GMT");
            assert!(out.starts_with(b"HTTP/1.1 "));
            let mut parsed = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut parsed);
            assert!(response.parse(&out).unwrap().is_complete());
        }
    }
    // An injected fault holds a slot; a request without faults holds none.
    if decision.abort_injected() || decision.response_rate_limit().is_some() {
        assert!(decision.active_fault().is_some());
    }
    if decision.is_noop() {
        assert!(decision.active_fault().is_none());
    }
    assert!(filter.stats().active_faults() <= 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_header_values_make_the_filter_panic(request in request(), seed in any::<u64>()) {
        let filter = FaultFilter::new(Arc::new(header_config()), Arc::new(FaultStats::new("p")));
        let mut rng = FastRng::seed_from_u64(seed);
        exercise(&filter, &request, &mut rng);
        prop_assert_eq!(filter.stats().active_faults(), 0);
    }

    #[test]
    fn no_runtime_values_make_the_filter_panic(
        request in request(),
        entries in proptest::collection::vec(
            (prop_oneof![
                Just("fault.http.abort.http_status".to_owned()),
                Just("fault.http.abort.abort_percent".to_owned()),
                Just("fault.http.max_active_faults".to_owned()),
                Just("fault.http.delay.fixed_duration_ms".to_owned()),
                Just("fault.http.abort.grpc_status".to_owned()),
                "fault\\.http\\.[a-z]{0,3}\\.(abort|delay)\\.[a-z_]{1,20}",
            ], prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[-0-9.e{}\":a-zA-Z_ ]{0,30}"]),
            0..6,
        ),
        seed in any::<u64>(),
    ) {
        let runtime: RuntimeSnapshot = entries.iter().map(|(k, v)| (k.clone(), v.as_str())).collect();
        let filter = FaultFilter::new(Arc::new(header_config()), Arc::new(FaultStats::new("p")))
            .with_runtime(Arc::new(runtime));
        exercise(&filter, &request, &mut FastRng::seed_from_u64(seed));
    }

    #[test]
    fn percentages_sample_random_mod_denominator_below_numerator(
        numerator in prop_oneof![any::<u32>(), 0u32..=1_000_000],
        denominator in proptest::sample::select(vec![Denominator::Hundred, Denominator::TenThousand, Denominator::Million]),
        random in any::<u64>(),
        cap in any::<u32>(),
    ) {
        let p = FractionalPercent::new(numerator, denominator);
        prop_assert_eq!(p.contains(random), random % denominator.value() < u64::from(numerator));
        prop_assert_eq!(p.capped(cap).numerator(), numerator.min(cap));
        struct Fixed(u64);
        impl Random for Fixed {
            fn next_u64(&mut self) -> u64 { self.0 }
        }
        prop_assert_eq!(p.sample(&mut Fixed(random)), p.contains(random));
    }

    #[test]
    fn arbitrary_json_configs_never_panic(value in json_value(4), request in request(), seed in any::<u64>()) {
        for candidate in [value.clone(), serde_json::json!({"abort": value.clone()}), serde_json::json!({"headers": [value.clone()]}),
                          serde_json::json!({"delay": {"fixed_delay": value.clone()}}), serde_json::json!({"abort": {"percentage": value.clone()}})] {
            if let Ok(config) = FaultConfig::from_value(&candidate) {
                // Whatever is accepted prints as a config that reads back equal.
                let printed = serde_json::to_string(&config).unwrap();
                prop_assert_eq!(&FaultConfig::from_json(&printed).unwrap(), &config);
                let filter = FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("p")));
                let mut decision = filter.decide(&request, None, &mut FastRng::seed_from_u64(seed));
                decision = filter.after_delay(decision, &request, &mut FastRng::seed_from_u64(seed));
                drop(decision);
            }
            let _ = FaultConfig::from_json(&candidate.to_string());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = FaultConfig::from_json(&text);
    }

    #[test]
    fn configs_round_trip_through_envoy_json(
        abort in prop_oneof![
            (200u16..600).prop_map(AbortKind::Http),
            any::<u32>().prop_map(AbortKind::Grpc),
            Just(AbortKind::Header),
        ],
        delay_ms in prop_oneof![Just(None), (1u64..10_000_000).prop_map(Some)],
        kbps in prop_oneof![Just(None), any::<u64>().prop_filter("non-zero", |k| *k > 0).prop_map(Some)],
        numerators in any::<[u32; 3]>(),
        denominator in 0u8..3,
        max in proptest::option::of(any::<u32>()),
        camel in any::<bool>(),
    ) {
        let denominator_name = ["HUNDRED", "TEN_THOUSAND", "MILLION"][usize::from(denominator)];
        let key = |snake: &str| if camel { to_camel(snake) } else { snake.to_owned() };
        let pct = |n: u32| serde_json::json!({"numerator": n, "denominator": denominator_name});
        let mut json = serde_json::Map::new();
        let abort_json = match abort {
            AbortKind::Http(s) => serde_json::json!({key("http_status"): s, "percentage": pct(numerators[0])}),
            AbortKind::Grpc(s) => serde_json::json!({key("grpc_status"): s, "percentage": pct(numerators[0])}),
            _ => serde_json::json!({key("header_abort"): {}, "percentage": pct(numerators[0])}),
        };
        json.insert("abort".into(), abort_json);
        let delay_json = match delay_ms {
            Some(ms) => serde_json::json!({key("fixed_delay"): format!("{}.{:03}s", ms / 1000, ms % 1000), "percentage": pct(numerators[1])}),
            None => serde_json::json!({key("header_delay"): {}, "percentage": pct(numerators[1])}),
        };
        json.insert("delay".into(), delay_json);
        let limit_json = match kbps {
            Some(k) => serde_json::json!({key("fixed_limit"): {key("limit_kbps"): k.to_string()}, "percentage": pct(numerators[2])}),
            None => serde_json::json!({key("header_limit"): {}, "percentage": pct(numerators[2])}),
        };
        json.insert(key("response_rate_limit"), limit_json);
        if let Some(m) = max {
            json.insert(key("max_active_faults"), m.into());
        }
        let config = FaultConfig::from_value(&serde_json::Value::Object(json)).unwrap();
        let d = [Denominator::Hundred, Denominator::TenThousand, Denominator::Million][usize::from(denominator)];
        prop_assert_eq!(config.abort().unwrap().kind(), abort);
        prop_assert_eq!(config.abort().unwrap().percentage(), FractionalPercent::new(numerators[0], d));
        let expected_delay = match delay_ms {
            Some(ms) => DelayKind::Fixed(Duration::from_millis(ms)),
            None => DelayKind::Header,
        };
        prop_assert_eq!(config.delay().unwrap().kind(), expected_delay);
        prop_assert_eq!(config.delay().unwrap().percentage(), FractionalPercent::new(numerators[1], d));
        let expected_limit = match kbps {
            Some(k) => RateLimitKind::Fixed(NonZeroU64::new(k).unwrap()),
            None => RateLimitKind::Header,
        };
        prop_assert_eq!(config.response_rate_limit().unwrap().kind(), expected_limit);
        prop_assert_eq!(config.max_active_faults(), max);
        // Printed as Envoy prints it, the config reads back equal and prints the same again.
        let printed = serde_json::to_string(&config).unwrap();
        let again = FaultConfig::from_json(&printed).unwrap();
        prop_assert_eq!(&again, &config);
        prop_assert_eq!(serde_json::to_string(&again).unwrap(), printed);
    }

    #[test]
    fn header_integers_parse_like_simple_atoi(n in any::<u64>(), plus in any::<bool>(), pad in "[ \t]{0,2}") {
        let text = format!("{pad}{}{n}{pad}", if plus { "+" } else { "" });
        let filter = FaultFilter::new(
            Arc::new(FaultConfig::from_json(r#"{"delay": {"header_delay": {}, "percentage": {"numerator": 100}}}"#).unwrap()),
            Arc::new(FaultStats::new("p")),
        );
        let d = filter.decide(&[(headers::DELAY_REQUEST, text.as_str())], None, &mut FastRng::seed_from_u64(1));
        let expected = if n == 0 { Action::Continue } else { Action::Delay(Duration::from_millis(n)) };
        prop_assert_eq!(d.action(), &expected);
        let negative = format!("-{n}");
        let d = filter.decide(&[(headers::DELAY_REQUEST, negative.as_str())], None, &mut FastRng::seed_from_u64(1));
        prop_assert!(d.is_noop());
    }

    #[test]
    fn rate_limiter_never_runs_ahead_of_its_rate(
        kbps in prop_oneof![1u64..4096, any::<u64>().prop_filter("non-zero", |k| *k > 0)],
        steps in proptest::collection::vec((0u64..200, 0u64..1_000_000), 1..40),
    ) {
        let kbps = NonZeroU64::new(kbps).unwrap();
        let start = Instant::now();
        let mut limiter = RateLimiter::new(kbps, start);
        let bytes_per_sec = kbps.get().saturating_mul(1024) as f64;
        let mut now = start;
        let mut granted = 0u64;
        for (advance_ms, buffered) in steps {
            now += Duration::from_millis(advance_ms);
            let grant = limiter.poll(buffered, now);
            prop_assert!(grant.bytes() <= buffered);
            prop_assert_eq!(grant.next_poll().is_some(), grant.bytes() < buffered);
            granted += grant.bytes();
            let allowance = (bytes_per_sec * 0.05).floor() + bytes_per_sec * (now - start).as_secs_f64();
            prop_assert!(granted as f64 <= allowance * (1.0 + 1e-9) + 1.0, "{granted} > {allowance}");
        }
    }
}

fn to_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Arbitrary JSON, biased towards the filter's own field names so that parsing gets deep.
fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        proptest::sample::select(vec![
            "abort",
            "delay",
            "http_status",
            "grpc_status",
            "header_abort",
            "percentage",
            "numerator",
            "denominator",
            "fixed_delay",
            "header_delay",
            "response_rate_limit",
            "fixed_limit",
            "limit_kbps",
            "header_limit",
            "headers",
            "name",
            "exact_match",
            "safe_regex_match",
            "regex",
            "string_match",
            "range_match",
            "start",
            "end",
            "present_match",
            "invert_match",
            "max_active_faults",
            "value",
            "filter_metadata",
            "downstream_nodes",
            "upstream_cluster",
            "@type",
            "type_url",
            "seconds",
            "nanos",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z_@]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        prop_oneof![
            Just("HUNDRED".to_owned()),
            Just("5s".to_owned()),
            Just("0.300s".to_owned()),
            Just(meshcap_fault::FaultConfig::TYPE_URL.to_owned()),
            "[ -~]{0,16}",
        ]
        .prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(depth, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}
