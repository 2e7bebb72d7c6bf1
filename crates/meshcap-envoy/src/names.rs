//! Kuma's resource names and Envoy's stat names (classic Kuma 2.x naming).
//!
//! | resource | name |
//! | --- | --- |
//! | inbound listener | `inbound:10.244.0.6:5000`, `inbound:[fd00::6]:5000` |
//! | outbound listener | `outbound:127.0.0.1:10001` |
//! | passthrough listeners and clusters | `inbound:passthrough:ipv4` … `outbound:passthrough:ipv6` |
//! | local cluster | `localhost:5000` (the workload port) |
//! | route configurations | `inbound:backend`, `outbound:redis` |
//!
//! Stat prefixes are names passed through [`sanitize`]: `localhost:5000` becomes `localhost_5000`.
//!
//! ```
//! use meshcap_envoy::names;
//! use std::net::SocketAddr;
//!
//! let addr: SocketAddr = "[fd00::6]:5000".parse()?;
//! assert_eq!(names::inbound_listener(addr), "inbound:[fd00::6]:5000");
//! assert_eq!(names::sanitize(&names::local_cluster(5000)), "localhost_5000");
//! assert_eq!(names::listener_stat_prefix("[::]:15001".parse()?), "[__]_15001");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;

/// `inbound:passthrough:ipv4`: the IPv4 inbound passthrough listener and its ORIGINAL_DST cluster.
pub const INBOUND_PASSTHROUGH_IPV4: &str = "inbound:passthrough:ipv4";
/// `inbound:passthrough:ipv6`: the IPv6 inbound passthrough listener and cluster.
pub const INBOUND_PASSTHROUGH_IPV6: &str = "inbound:passthrough:ipv6";
/// `outbound:passthrough:ipv4`: the IPv4 outbound passthrough listener and cluster.
pub const OUTBOUND_PASSTHROUGH_IPV4: &str = "outbound:passthrough:ipv4";
/// `outbound:passthrough:ipv6`: the IPv6 outbound passthrough listener and cluster.
pub const OUTBOUND_PASSTHROUGH_IPV6: &str = "outbound:passthrough:ipv6";

/// The tag every inbound and outbound must carry.
pub const SERVICE_TAG: &str = "kuma.io/service";
/// The tag naming an inbound's or outbound's protocol.
pub const PROTOCOL_TAG: &str = "kuma.io/protocol";
/// The header Kuma uses to carry the caller's tags (`&kuma.io/service=web&`).
pub const TAGS_HEADER: &str = "x-kuma-tags";
/// The metadata namespace holding a listener's tags.
pub const TAGS_METADATA_KEY: &str = "io.kuma.tags";
/// The inbound port Kuma reserves for service-less dataplanes; it gets no listener or cluster.
pub const SERVICELESS_PORT: u16 = 49151;

/// Envoy's HTTP fault filter name.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Envoy's router filter name.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// Envoy's gRPC statistics filter name.
pub const GRPC_STATS_FILTER: &str = "envoy.filters.http.grpc_stats";
/// Envoy's TCP proxy network filter name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
/// Envoy's HTTP connection manager network filter name.
pub const HTTP_CONNECTION_MANAGER_FILTER: &str = "envoy.filters.network.http_connection_manager";

/// The inbound listener name for the listener address (`inbound:10.244.0.6:5000`, `inbound:[fd00::6]:5000`).
pub fn inbound_listener(address: SocketAddr) -> String {
    format!("inbound:{address}")
}

/// The outbound listener name for the listener address (`outbound:127.0.0.1:10001`).
pub fn outbound_listener(address: SocketAddr) -> String {
    format!("outbound:{address}")
}

/// The local (application) cluster name for a workload port (`localhost:5000`). Kuma keeps this name,
/// whatever the workload address, for metrics compatibility.
pub fn local_cluster(workload_port: u16) -> String {
    format!("localhost:{workload_port}")
}

/// The inbound route configuration name for a service (`inbound:backend`).
pub fn inbound_route_config(service: &str) -> String {
    format!("inbound:{service}")
}

/// The outbound route configuration name for a service (`outbound:redis`).
pub fn outbound_route_config(service: &str) -> String {
    format!("outbound:{service}")
}

/// Kuma's metric-name sanitizer: every character other than an ASCII letter, digit, `_` or `-` becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether [`sanitize`] would change `name` (Kuma sets `alt_stat_name` only then).
pub fn needs_sanitizing(name: &str) -> bool {
    !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The prefix Envoy gives a listener's stats when the listener has no `stat_prefix`: its address with `:`
/// replaced by `_` (`listener.0.0.0.0_15001.*`, `listener.[__]_15001.*`, `listener.10.244.0.6_5000.*`).
pub fn listener_stat_prefix(address: SocketAddr) -> String {
    address.to_string().replace(':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kuma() {
        let v4: SocketAddr = "10.244.0.6:5000".parse().expect("v4");
        let v6: SocketAddr = "[fd00::6]:5000".parse().expect("v6");
        assert_eq!(inbound_listener(v4), "inbound:10.244.0.6:5000");
        assert_eq!(inbound_listener(v6), "inbound:[fd00::6]:5000");
        assert_eq!(outbound_listener(v4), "outbound:10.244.0.6:5000");
        assert_eq!(local_cluster(5000), "localhost:5000");
        assert_eq!(inbound_route_config("backend"), "inbound:backend");
        assert_eq!(outbound_route_config("redis"), "outbound:redis");
    }

    #[test]
    fn sanitizer_keeps_letters_digits_underscore_and_hyphen() {
        assert_eq!(sanitize("localhost:5000"), "localhost_5000");
        assert_eq!(sanitize("inbound:passthrough:ipv6"), "inbound_passthrough_ipv6");
        assert_eq!(sanitize("inbound:[fd00::6]:5000"), "inbound__fd00__6__5000");
        assert_eq!(sanitize("my-svc_v1.ns/x"), "my-svc_v1_ns_x");
        assert_eq!(sanitize("é"), "_");
        assert!(needs_sanitizing("localhost:5000"));
        assert!(!needs_sanitizing("backend-v1_2"));
    }

    #[test]
    fn listener_stat_prefixes_match_envoy() {
        for (addr, prefix) in [
            ("0.0.0.0:15001", "0.0.0.0_15001"),
            ("[::]:15006", "[__]_15006"),
            ("10.244.0.6:5000", "10.244.0.6_5000"),
        ] {
            assert_eq!(listener_stat_prefix(addr.parse().expect("addr")), prefix);
        }
    }
}
