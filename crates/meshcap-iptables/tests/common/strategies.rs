//! proptest strategies shared by the integration tests: random valid configurations (every option of
//! `Config`) and host facts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshcap_iptables::{Config, HostFacts, IpFamilyMode, LogLevel, Port};
use proptest::prelude::*;

fn port() -> impl Strategy<Value = u16> {
    1u16..=65535
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ]
}

fn address() -> impl Strategy<Value = String> {
    (ip(), any::<bool>(), 0u8..=128).prop_map(|(ip, with_prefix, len)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if with_prefix {
            format!("{ip}/{}", len % (max + 1))
        } else {
            ip.to_string()
        }
    })
}

fn port_spec() -> impl Strategy<Value = String> {
    prop::collection::vec((port(), 0u16..100, any::<bool>()), 1..20).prop_map(|v| {
        v.iter()
            .map(|(p, span, range)| {
                if *range {
                    format!("{p}-{}", p.saturating_add(*span))
                } else {
                    p.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn uid_exclusion() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "tcp:", "udp:", "*:", "tcp,udp:"]),
        prop::option::of(port_spec()),
        0u32..100_000,
        prop::option::of(0u32..1000),
    )
        .prop_map(|(proto, ports, uid, span)| {
            let uids = match span {
                Some(s) => format!("{uid}-{}", uid + s),
                None => uid.to_string(),
            };
            match (proto, ports) {
                ("", None) => uids,
                ("", Some(p)) => format!("{p}:{uids}"),
                (proto, p) => format!("{proto}{}:{uids}", p.unwrap_or_else(|| "*".into())),
            }
        })
}

fn vnet() -> impl Strategy<Value = String> {
    // /0 networks are rejected (they would exclude every destination).
    ("[a-z][a-z0-9]{0,8}\\+?", ip(), 0u8..=128).prop_map(|(iface, ip, len)| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        format!("{iface}:{ip}/{}", 1 + len % max)
    })
}

fn ports_csv(v: &[u16]) -> String {
    v.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

prop_compose! {
    pub fn config()(
        uid in 0u32..100_000,
        dualstack in any::<bool>(),
        inbound in any::<bool>(),
        outbound in any::<bool>(),
        in_port in port(),
        out_port in port(),
        dns_port in port(),
        in_include in prop::collection::vec(port(), 0..3),
        out_include in prop::collection::vec(port(), 0..3),
        in_exclude in prop::collection::vec(port(), 0..4),
        out_exclude in prop::collection::vec(port(), 0..4),
        in_ips in prop::collection::vec(address(), 0..4),
        out_ips in prop::collection::vec(address(), 0..4),
        uid_x in prop::collection::vec(uid_exclusion(), 0..3),
        dns in 0u8..3,
        resolvers in prop::collection::vec(ip(), 0..4),
        skip_split in any::<bool>(),
        vnets in prop::collection::vec(vnet(), 0..3),
        drop_invalid in any::<bool>(),
        logs in prop::option::of(0u8..8),
        no_comments in any::<bool>(),
        in_insert in any::<bool>(),
        out_insert in any::<bool>(),
    ) -> Config {
        let mut b = Config::builder()
            .proxy_uid(uid)
            .ip_family_mode(if dualstack { IpFamilyMode::DualStack } else { IpFamilyMode::Ipv4 })
            .redirect_inbound(inbound)
            .redirect_outbound(outbound)
            .redirect_inbound_port(Port::new(in_port).unwrap())
            .redirect_outbound_port(Port::new(out_port).unwrap())
            .redirect_dns_port(Port::new(dns_port).unwrap())
            .skip_dns_conntrack_zone_split(skip_split)
            .drop_invalid_packets(drop_invalid)
            .iptables_logs(logs.is_some())
            .log_level(LogLevel::new(logs.unwrap_or(7)).unwrap())
            .disable_comments(no_comments)
            .inbound_insert_instead_of_append(in_insert)
            .outbound_insert_instead_of_append(out_insert);
        let in_exclude: Vec<u16> = in_exclude.into_iter().filter(|p| *p != in_port).collect();
        let out_exclude: Vec<u16> = out_exclude.into_iter().filter(|p| *p != out_port).collect();
        b = b.include_inbound_ports(&ports_csv(&in_include)).unwrap()
            .include_outbound_ports(&ports_csv(&out_include)).unwrap()
            .exclude_inbound_ports(&ports_csv(&in_exclude)).unwrap()
            .exclude_outbound_ports(&ports_csv(&out_exclude)).unwrap()
            .exclude_inbound_ips(&in_ips).unwrap()
            .exclude_outbound_ips(&out_ips).unwrap()
            .exclude_outbound_ports_for_uids(&uid_x).unwrap()
            .vnets(&vnets).unwrap();
        b = match dns {
            0 => b,
            1 => b.redirect_dns(resolvers),
            _ => b.capture_all_dns(),
        };
        b.build().unwrap()
    }
}

pub fn host() -> impl Strategy<Value = HostFacts> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(docker, comments, ct, mangle)| {
        HostFacts::default()
            .with_docker_output(docker)
            .with_comment_match(comments)
            .with_conntrack_zones(ct)
            .with_mangle(mangle)
    })
}
