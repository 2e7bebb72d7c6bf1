//! Property tests for the runtime's text formats: response flags print and parse back, `/stats` text
//! parses back to the statistics it came from, and the Prometheus rendering of Envoy-shaped names always
//! declares each family once, before its samples, with no repeated series.

use std::collections::{BTreeMap, HashSet};

use meshcap_proxy::access_log::ResponseFlags;
use meshcap_proxy::stats::{Snapshot, StatValue};
use proptest::prelude::*;

const FLAG_BITS: u32 = (1 << 29) - 1;

fn flags_from_bits(bits: u32) -> ResponseFlags {
    let mut flags = ResponseFlags::empty();
    for name in [
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI",
        "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    ]
    .iter()
    .enumerate()
    .filter(|(i, _)| bits & (1 << i) != 0)
    .map(|(_, n)| n)
    {
        flags |= name.parse::<ResponseFlags>().unwrap();
    }
    flags
}

/// Envoy-shaped statistic names: a scope, an instance segment and a leaf, as the proxy emits them.
fn stat_name() -> impl Strategy<Value = String> {
    let instance = "[a-z][a-z0-9_]{0,12}";
    let leaf = prop_oneof![
        "[a-z][a-z_]{0,20}".prop_map(|s| s),
        (1u8..=5).prop_map(|c| format!("downstream_rq_{c}xx")),
        (100u16..600).prop_map(|c| format!("upstream_rq_{c}")),
    ];
    let address = prop_oneof![
        (any::<[u8; 4]>(), 1u16..65535)
            .prop_map(|(ip, port)| format!("{}.{}.{}.{}_{port}", ip[0], ip[1], ip[2], ip[3])),
        (1u16..65535).prop_map(|port| format!("[__]_{port}")),
    ];
    prop_oneof![
        (instance, leaf.clone()).prop_map(|(i, l)| format!("cluster.{i}.{l}")),
        (instance, leaf.clone()).prop_map(|(i, l)| format!("tcp.{i}.{l}")),
        (instance, leaf.clone()).prop_map(|(i, l)| format!("http.{i}.{l}")),
        (address.clone(), leaf.clone()).prop_map(|(a, l)| format!("listener.{a}.{l}")),
        (address.clone(), 0u8..4, leaf.clone()).prop_map(|(a, w, l)| format!("listener.{a}.worker_{w}.{l}")),
        (address, instance, leaf).prop_map(|(a, i, l)| format!("listener.{a}.http.{i}.{l}")),
    ]
}

fn stats() -> impl Strategy<Value = BTreeMap<String, StatValue>> {
    prop::collection::btree_map(
        stat_name(),
        prop_oneof![
            any::<u64>().prop_map(StatValue::Counter),
            any::<i64>().prop_map(StatValue::Gauge)
        ],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn response_flags_round_trip(bits in 0..=FLAG_BITS) {
        let flags = flags_from_bits(bits);
        let printed = flags.to_string();
        prop_assert_eq!(printed.parse::<ResponseFlags>().unwrap(), flags);
        prop_assert_eq!(printed == "-", bits == 0);
    }

    #[test]
    fn stats_text_parses_back(stats in stats()) {
        let snap = Snapshot::from_stats(stats.clone());
        let parsed: BTreeMap<String, String> = snap
            .to_text()
            .lines()
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        let expected: BTreeMap<String, String> = stats.iter().map(|(n, v)| (n.clone(), v.to_string())).collect();
        prop_assert_eq!(parsed, expected);
        let json: serde_json::Value = serde_json::from_str(&snap.to_json()).unwrap();
        prop_assert_eq!(json["stats"].as_array().unwrap().len(), stats.len());
    }

    #[test]
    fn prometheus_families_are_well_formed(stats in stats()) {
        let text = Snapshot::from_stats(stats.clone()).to_prometheus();
        let mut declared = HashSet::new();
        let mut current = String::new();
        let mut series = HashSet::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (metric, kind) = rest.split_once(' ').unwrap();
                prop_assert!(kind == "counter" || kind == "gauge");
                current = metric.to_string();
                // A family may only repeat when the same name is both a counter and a gauge family.
                prop_assert!(declared.insert((metric.to_string(), kind.to_string())), "{} twice", metric);
            } else {
                let (head, value) = line.rsplit_once(' ').unwrap();
                prop_assert!(head.starts_with(&format!("{current}{{")), "{} outside {}", line, current);
                prop_assert!(value.parse::<f64>().is_ok());
                prop_assert!(series.insert(head.to_string()), "duplicate series {}", head);
                samples += 1;
            }
        }
        prop_assert_eq!(samples, stats.len());
    }
}
