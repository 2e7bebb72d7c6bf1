//! Properties over generated valid Dataplanes and policies.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use meshcap_envoy::{ConfigDumpOptions, Dataplane, HttpFault, Listener, Resources, Timestamp, TrafficDirection};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Destinations worth asking about: every listener address, its wildcard and other-family twins, the
/// redirect ports, and random addresses.
fn destinations(resources: &Resources, random: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = random.to_vec();
    for l in resources.listeners() {
        let a = l.address();
        out.push(a);
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), a.port()));
        out.push(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x99, 1)),
            a.port(),
        ));
        out.push(SocketAddr::new(a.ip(), a.port().wrapping_add(1)));
    }
    out
}

/// The rule, spelled out over all listeners (the oracle for the indexed lookup).
fn expected(resources: &Resources, direction: TrafficDirection, dst: SocketAddr) -> Option<&Listener> {
    let listeners = resources.listeners();
    if let Some(l) = listeners
        .iter()
        .find(|l| l.address().ip() == dst.ip() && l.address().port() == dst.port())
    {
        return Some(l);
    }
    if let Some(l) = listeners.iter().find(|l| {
        l.address().ip().is_unspecified() && l.address().is_ipv4() == dst.is_ipv4() && l.address().port() == dst.port()
    }) {
        return Some(l);
    }
    listeners
        .iter()
        .find(|l| l.is_passthrough() && l.traffic_direction() == direction && l.address().is_ipv4() == dst.is_ipv4())
}

fn random_destination() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(ip.into()), port)),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(ip.into()), port)),
        (
            1u8..=254,
            prop_oneof![Just(5000u16), Just(15001), Just(15006), 1024u16..30_000]
        )
            .prop_map(|(last, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, 0, last)), port)),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lookup_never_picks_a_listener_whose_address_does_not_match(
        case in common::case(),
        random in prop::collection::vec(random_destination(), 0..16),
    ) {
        let resources = case.resources();
        for dst in destinations(&resources, &random) {
            for direction in [TrafficDirection::Inbound, TrafficDirection::Outbound] {
                let got = resources.listener_for(direction, dst);
                prop_assert_eq!(
                    got.map(Listener::name),
                    expected(&resources, direction, dst).map(Listener::name),
                    "{:?} {}", direction, dst
                );
                if let Some(l) = got {
                    let a = l.address();
                    let exact = a.ip() == dst.ip() && a.port() == dst.port();
                    let wildcard = a.ip().is_unspecified() && a.is_ipv4() == dst.is_ipv4() && a.port() == dst.port();
                    let own_passthrough = l.is_passthrough()
                        && l.traffic_direction() == direction
                        && a.is_ipv4() == dst.is_ipv4();
                    prop_assert!(exact || wildcard || own_passthrough, "{} picked for {}", l.name(), dst);
                }
            }
        }
    }

    #[test]
    fn dataplanes_round_trip_through_json_and_yaml(case in common::case()) {
        let dp = &case.dataplane;
        let json = dp.to_json();
        prop_assert_eq!(&Dataplane::from_json(&json).expect("json"), dp);
        prop_assert_eq!(&json.parse::<Dataplane>().expect("sniffed json"), dp);
        let yaml = dp.to_yaml().expect("yaml");
        prop_assert_eq!(&Dataplane::from_yaml(&yaml).expect("yaml"), dp, "{}", yaml);
        prop_assert_eq!(&yaml.parse::<Dataplane>().expect("sniffed yaml"), dp);
    }

    #[test]
    fn generated_faults_round_trip_through_envoy_json(case in common::case()) {
        let resources = case.resources();
        for hcm in resources.listeners().iter().filter_map(|l| l.filter_chain().as_http_connection_manager()) {
            for fault in hcm.faults() {
                let json = serde_json::to_string(fault).expect("json");
                prop_assert_eq!(&HttpFault::from_json(&json).expect("reads back"), fault);
            }
            // The router is always last, fault filters always before it.
            prop_assert_eq!(hcm.http_filters().last().map(|f| f.name()), Some("envoy.filters.http.router"));
        }
    }

    #[test]
    fn config_dumps_have_envoys_shape(case in common::case(), secs in 0i64..4_000_000_000, millis in 0u32..1000) {
        let resources = case.resources();
        let at = Timestamp::from_unix(secs, millis * 1_000_000).expect("in range");
        let dump: serde_json::Value =
            serde_json::from_str(&resources.config_dump_json(&ConfigDumpOptions::new(at))).expect("json");
        let configs = dump["configs"].as_array().expect("configs");
        prop_assert_eq!(configs.len(), 6);
        let clusters: Vec<&str> = configs[1]["static_clusters"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["cluster"]["name"].as_str()).collect())
            .unwrap_or_default();
        let mut sorted = clusters.clone();
        sorted.sort_unstable();
        prop_assert_eq!(&clusters, &sorted);
        prop_assert_eq!(clusters.len(), resources.clusters().len());
        let listeners: Vec<&str> = configs[2]["static_listeners"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l["listener"]["name"].as_str()).collect())
            .unwrap_or_default();
        let ours: Vec<&str> = resources.listeners().iter().map(Listener::name).collect();
        prop_assert_eq!(listeners, ours);
        let bootstrap: serde_json::Value = serde_json::from_str(&resources.bootstrap_json()).expect("json");
        prop_assert_eq!(&configs[0]["bootstrap"]["static_resources"], &bootstrap["static_resources"]);
    }
}
