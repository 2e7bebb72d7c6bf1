//! Printing a config back as Envoy prints it.
//!
//! `tests/data/printing.json` lists configurations (the Kuma seed, every field, Envoy's lenient input
//! forms, fields set to their defaults, the edge durations, every header matcher form) with the
//! `typed_config` text a real Envoy 1.40 printed for each in `/config_dump`, compacted. The first test
//! checks `FaultConfig`'s `Serialize` against that text byte for byte; the last re-asks a real Envoy, when
//! one is installed, so the recordings cannot drift from Envoy's behaviour.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use meshcap_fault::{
    Denominator, FaultAbort, FaultConfig, FaultDelay, FaultRateLimit, FractionalPercent, HeaderMatcher, StringMatcher,
};

mod support;

const TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

struct Case {
    name: String,
    /// The message as JSON text, without `@type` (text keeps key order and repeated keys).
    text: String,
    /// What Envoy printed for it, compacted.
    envoy_prints: String,
}

fn cases() -> Vec<Case> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/printing.json");
    let table: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    table
        .into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            text: c["config_text"].as_str().unwrap().to_owned(),
            envoy_prints: c["envoy_prints"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// The case as a `typed_config` (with `@type`), as Envoy is given it.
fn typed_config(case: &Case) -> String {
    let rest = case.text.trim_start().strip_prefix('{').expect("an object");
    let sep = if rest.trim_start().starts_with('}') { "" } else { ", " };
    format!("{{\"@type\": \"{TYPE_URL}\"{sep}{rest}")
}

#[test]
fn configs_print_as_envoy_printed_them() {
    let cases = cases();
    assert!(cases.len() >= 10, "the table lost cases");
    for case in &cases {
        let config = FaultConfig::from_json(&typed_config(case)).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let printed = serde_json::to_string(&config).unwrap();
        assert_eq!(printed, case.envoy_prints, "{}", case.name);
        // What we print reads back as the same config, and prints the same again.
        let again = FaultConfig::from_json(&printed).unwrap();
        assert_eq!(again, config, "{}", case.name);
        assert_eq!(serde_json::to_string(&again).unwrap(), printed, "{}", case.name);
        // The Value form and the serde Deserialize entry point agree.
        let value: serde_json::Value = serde_json::from_str(&case.envoy_prints).unwrap();
        assert_eq!(config.to_typed_config(), value, "{}", case.name);
        let deserialized: FaultConfig = serde_json::from_str(&typed_config(case)).unwrap();
        assert_eq!(deserialized, config, "{}", case.name);
    }
}

#[test]
fn configs_built_from_parts_print_like_parsed_ones() {
    let kuma = FaultConfig::new().with_delay(
        FaultDelay::fixed(
            Duration::from_secs(5),
            FractionalPercent::new(50, Denominator::TenThousand),
        )
        .unwrap(),
    );
    assert_eq!(
        serde_json::to_string(&kuma).unwrap(),
        cases().iter().find(|c| c.name == "kuma_delay").unwrap().envoy_prints
    );

    let hundred = FractionalPercent::new(100, Denominator::Hundred);
    let built = FaultConfig::new()
        .with_abort(FaultAbort::http(503u16, FractionalPercent::new(0, Denominator::Hundred)).unwrap())
        .with_delay(FaultDelay::from_headers(hundred))
        .with_response_rate_limit(FaultRateLimit::fixed(NonZeroU64::new(10).unwrap(), hundred))
        .with_headers([
            HeaderMatcher::new(
                "x-kuma-tags",
                StringMatcher::safe_regex(".*&kuma.io/service=[^&]*web[,&].*").unwrap(),
            )
            .unwrap(),
            HeaderMatcher::new(
                "x-kuma-tags",
                StringMatcher::safe_regex(".*&kuma.io/zone=[^&]*east[,&].*").unwrap(),
            )
            .unwrap()
            .inverted(),
            HeaderMatcher::present("X-Debug", false)
                .unwrap()
                .treating_missing_as_empty(),
            HeaderMatcher::range("x-n", -5, 0).unwrap(),
            HeaderMatcher::new("x-p", StringMatcher::prefix("ABC").unwrap().ignoring_case().unwrap()).unwrap(),
        ])
        .with_upstream_cluster("localhost:5000")
        .with_downstream_nodes(["n2", "n1"])
        .with_max_active_faults(0)
        .with_downstream_cluster_stats_disabled(true)
        .with_filter_metadata(serde_json::json!({"injected_by": "kuma"}).as_object().unwrap().clone());
    let printed = serde_json::to_string(&built).unwrap();
    assert_eq!(
        printed,
        concat!(
            r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","#,
            r#""delay":{"percentage":{"numerator":100},"header_delay":{}},"#,
            r#""abort":{"http_status":503,"percentage":{}},"#,
            r#""upstream_cluster":"localhost:5000","#,
            r#""headers":[{"name":"x-kuma-tags","string_match":{"safe_regex":{"regex":".*&kuma.io/service=[^&]*web[,&].*"}}},"#,
            r#"{"name":"x-kuma-tags","invert_match":true,"string_match":{"safe_regex":{"regex":".*&kuma.io/zone=[^&]*east[,&].*"}}},"#,
            r#"{"name":"X-Debug","present_match":false,"treat_missing_header_as_empty":true},"#,
            r#"{"name":"x-n","range_match":{"start":"-5"}},"#,
            r#"{"name":"x-p","string_match":{"prefix":"ABC","ignore_case":true}}],"#,
            r#""downstream_nodes":["n2","n1"],"max_active_faults":0,"#,
            r#""response_rate_limit":{"fixed_limit":{"limit_kbps":"10"},"percentage":{"numerator":100}},"#,
            r#""disable_downstream_cluster_stats":true,"filter_metadata":{"injected_by":"kuma"}}"#
        )
    );
    assert_eq!(FaultConfig::from_json(&printed).unwrap(), built);
    assert!(built.is_downstream_node("n1") && !built.is_downstream_node("n3"));
    // `present_match: false` fails on a present header, and (Envoy's rule) on a missing one treated as empty.
    assert!(!built.headers()[2].matches(&[("x-debug", "1")]));
    assert!(!built.headers()[2].matches(&[("x-other", "1")]));
    assert!(built.headers()[3].matches(&[("X-N", "-3")]) && !built.headers()[3].matches(&[("x-n", "0")]));
    assert!(built.headers()[4].matches(&[("x-p", "abcdef")]));
}

#[test]
fn constructors_validate_as_parsing_does() {
    let pct = FractionalPercent::default();
    let err = |r: Result<(), meshcap_fault::ConfigError>| {
        let e = r.unwrap_err();
        (e.path().to_owned(), e.to_string())
    };
    assert_eq!(
        err(FaultAbort::http(600, pct).map(drop)),
        (
            "abort.http_status".into(),
            "fault filter config `abort.http_status`: value 600 must be inside range [200, 600)".into()
        )
    );
    assert_eq!(err(FaultAbort::http(-1, pct).map(drop)).0, "abort.http_status");
    assert_eq!(err(FaultAbort::http(65_736u32, pct).map(drop)).0, "abort.http_status");
    assert_eq!(
        err(FaultDelay::fixed(Duration::ZERO, pct).map(drop)).1,
        "fault filter config `delay.fixed_delay`: value 0s must be greater than 0s"
    );
    // Envoy's nanosecond arithmetic bounds delays (recorded: 9223372036s is rejected).
    assert!(FaultDelay::fixed(Duration::new(9_223_372_035, 999_999_999), pct).is_ok());
    assert_eq!(
        err(FaultDelay::fixed(Duration::from_secs(9_223_372_036), pct).map(drop)).1,
        "fault filter config `delay.fixed_delay`: invalid duration \"9223372036s\""
    );
    assert_eq!(err(StringMatcher::prefix("").map(drop)).0, "prefix");
    assert_eq!(err(StringMatcher::suffix("").map(drop)).0, "suffix");
    assert_eq!(err(StringMatcher::contains("").map(drop)).0, "contains");
    assert_eq!(err(StringMatcher::safe_regex("").map(drop)).0, "safe_regex.regex");
    assert_eq!(err(StringMatcher::safe_regex("(a").map(drop)).0, "safe_regex.regex");
    assert_eq!(
        err(StringMatcher::safe_regex("a").unwrap().ignoring_case().map(drop)).0,
        "ignore_case"
    );
    let exact = StringMatcher::exact("");
    assert_eq!(err(HeaderMatcher::new("", exact.clone()).map(drop)).0, "name");
    assert_eq!(
        err(HeaderMatcher::new("x-a\r\nx-b", exact).map(drop)).1,
        "fault filter config `name`: value \"x-a\\r\\nx-b\" must not contain NUL, CR or LF"
    );
}

#[test]
fn configs_embed_in_serde_documents() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Filter {
        name: String,
        typed_config: FaultConfig,
    }
    let text = r#"{"name":"envoy.filters.http.fault","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","abort":{"http_status":503,"percentage":{"numerator":100}}}}"#;
    let filter: Filter = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&filter).unwrap(), text);
    let bad = text.replace("503", "600");
    let err = serde_json::from_str::<Filter>(&bad).err().unwrap().to_string();
    assert!(
        err.starts_with("fault filter config `abort.http_status`: value 600 must be inside range [200, 600)"),
        "{err}"
    );
}

/// The fault filters' typed configs in `/config_dump` output, compacted, in document order: Envoy
/// pretty-prints; dropping the whitespace outside strings keeps its field order.
fn fault_typed_configs(dump: &str) -> Vec<String> {
    let mut compact = String::with_capacity(dump.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in dump.chars() {
        if in_string {
            compact.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            compact.push(c);
        }
    }
    let opening = format!("{{\"@type\":\"{TYPE_URL}\"");
    let mut found = Vec::new();
    let mut rest = compact.as_str();
    while let Some(start) = rest.find(&opening) {
        // The object ends where its braces balance (braces inside strings do not count).
        let object = &rest[start..];
        let (mut depth, mut in_string, mut escaped, mut end) = (0usize, false, false, object.len());
        for (i, c) in object.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                '{' if !in_string => depth += 1,
                '}' if !in_string => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push(object[..end].to_owned());
        rest = &object[end..];
    }
    found
}

#[test]
fn recorded_prints_still_hold_for_the_installed_envoy() {
    let Some(envoy) = meshcap_testns::require_envoy("recorded_prints_still_hold_for_the_installed_envoy") else {
        return;
    };
    let cases = cases();
    let listeners: Vec<String> = cases
        .iter()
        .map(|case| {
            format!(
                r#"{{"name": "{name}", "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}},
  "filter_chains": [{{"filters": [{{"name": "hcm", "typed_config": {{
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "{name}",
    "route_config": {{"name": "r", "virtual_hosts": [{{"name": "v", "domains": ["*"],
      "routes": [{{"match": {{"prefix": "/"}}, "direct_response": {{"status": 200}}}}]}}]}},
    "http_filters": [{{"name": "envoy.filters.http.fault", "typed_config": {fault}}},
      {{"name": "envoy.filters.http.router", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}}}]}}}}]}}]}}"#,
                name = case.name,
                fault = typed_config(case),
            )
        })
        .collect();
    let bootstrap = format!(
        r#"{{"admin": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}}}},
  "static_resources": {{"listeners": [{}]}}}}"#,
        listeners.join(",\n")
    );
    let envoy = support::Envoy::start(&envoy, "print", &bootstrap);
    let dump = support::http_get(envoy.admin(), "/config_dump?resource=static_listeners");
    // Listener order in the dump is Envoy's business: compare as multisets.
    let count = |items: Vec<String>| {
        items.into_iter().fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s).or_insert(0usize) += 1;
            m
        })
    };
    let theirs = count(fault_typed_configs(&dump));
    let recorded = count(cases.iter().map(|c| c.envoy_prints.clone()).collect());
    assert_eq!(theirs, recorded, "Envoy no longer prints what was recorded");
}
