//! Configuration validation against Envoy's own verdicts.
//!
//! `tests/data/validation.json` lists configurations (valid, invalid, and the lenient forms Envoy's JSON
//! parser accepts) with the verdict `envoy --mode validate` (1.40) gave for each, and for rejections the
//! field path this crate must name. The first test checks `FaultConfig` against that table; the second
//! re-asks a real Envoy, when one is installed, so the table cannot drift from Envoy's behaviour.

use std::path::PathBuf;
use std::process::Command;

use meshcap_fault::FaultConfig;

const TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

struct Case {
    name: String,
    /// The typed_config as JSON text (text keeps key order and duplicate keys).
    text: String,
    accept: bool,
    path: Option<String>,
}

fn cases() -> Vec<Case> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/validation.json");
    let table: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    table
        .into_iter()
        .map(|c| {
            let text = c["config_text"].as_str().unwrap().to_owned();
            Case {
                name: c["name"].as_str().unwrap().to_owned(),
                text,
                accept: c["envoy"] == "accept",
                path: c["path"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

/// The case's typed_config with `@type` added, as Envoy is given it.
fn typed_config(case: &Case) -> String {
    let trimmed = case.text.trim_start();
    match trimmed.strip_prefix('{') {
        Some(rest) if !trimmed.contains("\"@type\"") => {
            let sep = if rest.trim_start().starts_with('}') { "" } else { ", " };
            format!("{{\"@type\": \"{TYPE_URL}\"{sep}{rest}")
        }
        _ => case.text.clone(),
    }
}

#[test]
fn configs_are_accepted_and_rejected_like_envoy() {
    let cases = cases();
    assert!(cases.len() > 100, "the table lost cases");
    let mut failures = Vec::new();
    for case in &cases {
        let result = FaultConfig::from_json(&typed_config(case));
        match (&result, case.accept) {
            (Ok(_), true) => {}
            (Err(e), false) if Some(e.path()) == case.path.as_deref() => {
                // Messages are lowercase and name the value where there is one.
                let msg = e.to_string();
                assert!(msg.starts_with("fault filter config"), "{}: {msg}", case.name);
            }
            _ => failures.push(format!("{}: Envoy {}, ours {result:?}", case.name, case.accept)),
        }
        // The serde_json::Value entry point agrees (duplicate keys cannot survive a Value).
        if !case.name.contains("twice") {
            let value: serde_json::Value = serde_json::from_str(&typed_config(case)).unwrap();
            assert_eq!(
                FaultConfig::from_value(&value).is_ok(),
                result.is_ok(),
                "{}: from_value disagrees",
                case.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A minimal bootstrap with one HTTP connection manager per fault config.
fn bootstrap(typed_configs: &[String]) -> String {
    let listeners: Vec<String> = typed_configs
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            format!(
                r#"{{"name": "l{i}", "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": {port}}}}},
  "filter_chains": [{{"filters": [{{"name": "hcm", "typed_config": {{
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "p{i}",
    "route_config": {{"name": "r", "virtual_hosts": [{{"name": "v", "domains": ["*"],
      "routes": [{{"match": {{"prefix": "/"}}, "route": {{"cluster": "up"}}}}]}}]}},
    "http_filters": [{{"name": "envoy.filters.http.fault", "typed_config": {fault}}},
      {{"name": "envoy.filters.http.router", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}}}]}}}}]}}]}}"#,
                port = 20_000 + i
            )
        })
        .collect();
    format!(
        r#"{{"static_resources": {{"listeners": [{}],
  "clusters": [{{"name": "up", "type": "STATIC", "connect_timeout": "1s"}}]}}}}"#,
        listeners.join(",\n")
    )
}

fn envoy_accepts(envoy: &PathBuf, bootstrap: &str, tag: &str) -> bool {
    let path = std::env::temp_dir().join(format!("meshcap-fault-validate-{}-{tag}.json", std::process::id()));
    std::fs::write(&path, bootstrap).unwrap();
    let status = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "critical", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy --mode validate");
    let _ = std::fs::remove_file(&path);
    status.status.success()
}

#[test]
fn recorded_verdicts_still_hold_for_the_installed_envoy() {
    let Some(envoy) = meshcap_testns::require_envoy("recorded_verdicts_still_hold_for_the_installed_envoy") else {
        return;
    };
    let cases = cases();
    // Everything Envoy accepts fits in one bootstrap; each rejection needs its own run.
    let accepted: Vec<String> = cases.iter().filter(|c| c.accept).map(typed_config).collect();
    let batch_ok = envoy_accepts(&envoy, &bootstrap(&accepted), "accepted");
    let rejected: Vec<&Case> = cases.iter().filter(|c| !c.accept).collect();
    let mismatches: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = rejected
            .chunks(rejected.len().div_ceil(2).max(1))
            .map(|chunk| {
                let envoy = &envoy;
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|c| envoy_accepts(envoy, &bootstrap(&[typed_config(c)]), &c.name))
                        .map(|c| format!("{}: recorded reject, Envoy now accepts", c.name))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut mismatches = mismatches;
    if !batch_ok {
        for c in cases.iter().filter(|c| c.accept) {
            if !envoy_accepts(&envoy, &bootstrap(&[typed_config(c)]), &c.name) {
                mismatches.push(format!("{}: recorded accept, Envoy now rejects", c.name));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
