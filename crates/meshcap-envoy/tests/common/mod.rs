//! Strategies for generated valid Dataplanes and policies, shared by the property tests.

#![allow(dead_code)]

pub(crate) mod json;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use meshcap_envoy::{Dataplane, Inbound, IpFamilyMode, Outbound, Policy, Resources, Tags, TransparentProxying};
use proptest::prelude::*;

/// A generated Dataplane plus the endpoints its outbound services get (needed without transparent
/// proxying) and the policies to apply.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) dataplane: Dataplane,
    pub(crate) endpoints: Vec<(String, Vec<SocketAddr>)>,
    pub(crate) policies: Vec<Policy>,
}

impl Case {
    pub(crate) fn resources(&self) -> Resources {
        let mut b = Resources::builder(&self.dataplane).policies(&self.policies);
        for (service, eps) in &self.endpoints {
            b = b.service_endpoints(service.clone(), eps.clone());
        }
        b.build().expect("generated cases build")
    }
}

fn protocol() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("tcp")),
        Just(Some("http")),
        Just(Some("http2")),
        Just(Some("grpc")),
        Just(Some("kafka")),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}"
}

/// An address of the family: 10.244.x.y or fd00::x:y.
fn address(v6: bool) -> impl Strategy<Value = IpAddr> {
    (1u8..=254, 1u8..=254).prop_map(move |(a, b)| {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, u16::from(a), u16::from(b)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 244, a, b))
        }
    })
}

fn loopback(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

prop_compose! {
    fn inbounds(v6: bool)(
        ports in prop::collection::btree_set(1024u16..10_000, 1..4),
        service_ports in prop::collection::btree_set(40_000u16..50_000, 4),
        details in prop::collection::vec((name(), protocol(), any::<bool>(), 0u8..3, any::<bool>(), any::<bool>()), 4),
        extra_ip in address(v6),
    ) -> Vec<Inbound> {
        let service_ports: Vec<u16> = service_ports.into_iter().collect();
        ports
            .into_iter()
            .enumerate()
            .map(|(i, port)| {
                let (service, protocol, use_service_port, service_address, own_address, version) = details[i].clone();
                let mut tags = Tags::new().with("kuma.io/service", service);
                if let Some(p) = protocol {
                    tags.insert("kuma.io/protocol", p);
                }
                if version {
                    tags.insert("version", "v1");
                }
                let mut inbound = Inbound::new(port, tags);
                if use_service_port {
                    inbound = inbound.with_service_port(service_ports[i]);
                }
                inbound = match service_address {
                    1 => inbound.with_service_address(loopback(v6)),
                    2 => inbound.with_service_address(extra_ip),
                    _ => inbound,
                };
                if own_address {
                    inbound = inbound.with_address(extra_ip);
                }
                inbound
            })
            .collect()
    }
}

prop_compose! {
    fn outbounds(v6: bool)(
        ports in prop::collection::btree_set(20_000u16..30_000, 0..4),
        details in prop::collection::vec((protocol(), 0u8..3), 4),
        other in address(v6),
    ) -> Vec<Outbound> {
        ports
            .into_iter()
            .enumerate()
            .map(|(i, port)| {
                let (protocol, where_) = details[i];
                let mut tags = Tags::new().with("kuma.io/service", format!("svc-{i}"));
                if let Some(p) = protocol {
                    tags.insert("kuma.io/protocol", p);
                }
                let outbound = Outbound::new(port, tags);
                match where_ {
                    0 => outbound,
                    1 => outbound.with_address(loopback(v6)),
                    _ => outbound.with_address(other),
                }
            })
            .collect()
    }
}

fn ip_family_mode() -> impl Strategy<Value = Option<IpFamilyMode>> {
    prop_oneof![
        Just(None),
        Just(Some(IpFamilyMode::DualStack)),
        Just(Some(IpFamilyMode::Ipv4)),
        Just(Some(IpFamilyMode::Ipv6)),
    ]
}

prop_compose! {
    /// A valid Dataplane (either family, transparent or explicit) with a policy set.
    pub(crate) fn case()(v6 in any::<bool>())(
        mesh in prop_oneof![Just("default".to_string()), name()],
        dp_name in name(),
        address in address(v6),
        inbounds in inbounds(v6),
        outbounds in outbounds(v6),
        transparent in any::<bool>(),
        mode in ip_family_mode(),
        static_endpoints in any::<bool>(),
        endpoint in address(v6),
        policies in policies(),
    ) -> Case {
        let mut b = Dataplane::builder(mesh, dp_name, address);
        for i in inbounds {
            b = b.inbound(i);
        }
        for o in &outbounds {
            b = b.outbound(o.clone());
        }
        if transparent {
            let mut tp = TransparentProxying::new(15006, 15001);
            if let Some(m) = mode {
                tp = tp.with_ip_family_mode(m);
            }
            b = b.transparent_proxying(tp);
        }
        let dataplane = b.build().expect("generated dataplanes are valid");
        let endpoints = if !transparent || static_endpoints {
            outbounds
                .iter()
                .map(|o| (o.service().to_string(), vec![SocketAddr::new(endpoint, 8080)]))
                .collect()
        } else {
            Vec::new()
        };
        Case { dataplane, endpoints, policies }
    }
}

fn percentage() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..=100).prop_map(|p| p.to_string()),
        (0u32..100, 1u32..1000).prop_map(|(a, b)| format!("\"{a}.{b}\"")),
    ]
}

prop_compose! {
    fn fault_conf()(
        abort in prop::option::of((200u16..600, percentage())),
        delay in prop::option::of((1u32..10_000, percentage())),
        bandwidth in prop::option::of((1u32..1000, prop_oneof![Just("kbps"), Just("Mbps"), Just(" Gbps")], percentage())),
    ) -> String {
        let mut parts = Vec::new();
        if let Some((status, p)) = abort {
            parts.push(format!("abort: {{httpStatus: {status}, percentage: {p}}}"));
        }
        if let Some((ms, p)) = delay {
            parts.push(format!("delay: {{value: {ms}ms, percentage: {p}}}"));
        }
        if let Some((n, unit, p)) = bandwidth {
            parts.push(format!("responseBandwidth: {{limit: '{n}{unit}', percentage: {p}}}"));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn source() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{kind: Mesh}".to_string()),
        name().prop_map(|n| format!("{{kind: MeshService, name: '{n}'}}")),
        (name(), name())
            .prop_map(|(n, v)| format!("{{kind: MeshServiceSubset, name: '{n}', tags: {{version: '{v}'}}}}")),
        name().prop_map(|v| format!("{{kind: MeshSubset, tags: {{zone: '{v}'}}}}")),
    ]
}

prop_compose! {
    fn mesh_fault_injection()(
        mesh in prop_oneof![3 => Just("default".to_string()), 1 => name()],
        policy_name in name(),
        target in prop_oneof![Just("{kind: Mesh}".to_string()), name().prop_map(|n| format!("{{kind: MeshService, name: '{n}'}}"))],
        from in prop::collection::vec((source(), prop::collection::vec(fault_conf(), 0..3)), 1..3),
    ) -> Policy {
        let mut yaml = format!("type: MeshFaultInjection\nmesh: '{mesh}'\nname: '{policy_name}'\nspec:\n  targetRef: {target}\n  from:\n");
        for (source, confs) in from {
            yaml.push_str(&format!("    - targetRef: {source}\n      default:\n        http: [{}]\n", confs.join(", ")));
        }
        Policy::from_yaml(&yaml).unwrap_or_else(|e| panic!("generated policy is valid: {e}\n{yaml}"))
    }
}

/// Zero to three policies: Kuma ones, and now and then a raw HTTPFault.
pub(crate) fn policies() -> impl Strategy<Value = Vec<Policy>> {
    (
        prop::collection::vec(mesh_fault_injection(), 0..3),
        prop::option::weighted(0.3, (200u32..600, 0u32..=100)),
    )
        .prop_map(|(mut policies, raw)| {
            if let Some((status, pct)) = raw {
                let json = format!(
                    r#"{{"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", "abort": {{"http_status": {status}, "percentage": {{"numerator": {pct}}}}}}}"#
                );
                policies.push(json.parse().expect("raw fault"));
            }
            policies
        })
}
