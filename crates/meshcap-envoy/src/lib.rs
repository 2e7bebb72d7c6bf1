//! # meshcap-envoy
//!
//! Kuma's Envoy resource model: a Kuma [`Dataplane`] (and [`MeshFaultInjection`] policies) in, the Envoy
//! listeners and clusters Kuma 2.x would generate out — with Kuma's names (`inbound:passthrough:ipv4`,
//! `inbound:10.244.0.6:5000`, `localhost:5000`), flags, timeouts and stat prefixes — plus:
//!
//! * [`Resources::listener_for`]: which listener owns a captured connection's original destination, with
//!   Envoy's `use_original_dst` hand-off rule (what a proxy routes by);
//! * [`Resources::config_dump_json`]: Envoy's `/config_dump`, field for field (what an admin endpoint
//!   prints);
//! * [`Resources::bootstrap_json`]: a bootstrap a real Envoy 1.40 accepts and runs.
//!
//! No I/O, no sockets, no async: values in, values out.
//!
//! ```
//! use meshcap_envoy::{ConfigDumpOptions, Dataplane, Policy, Resources, Timestamp, TrafficDirection};
//!
//! let dataplane: Dataplane = "
//! type: Dataplane
//! mesh: default
//! name: backend-01
//! networking:
//!   address: 10.244.0.6
//!   inbound:
//!     - port: 5000
//!       tags: {kuma.io/service: backend, kuma.io/protocol: http}
//!   transparentProxying: {redirectPortInbound: 15006, redirectPortOutbound: 15001}
//! "
//! .parse()?;
//! let policy: Policy = "
//! type: MeshFaultInjection
//! mesh: default
//! name: backend-delay
//! spec:
//!   targetRef: {kind: MeshService, name: backend}
//!   from:
//!     - targetRef: {kind: Mesh}
//!       default:
//!         http:
//!           - delay: {value: 5s, percentage: '0.5'}
//! "
//! .parse()?;
//! let resources = Resources::builder(&dataplane).policy(&policy).build()?;
//!
//! // Route a connection redirected to 15006 whose original destination was 10.244.0.6:5000.
//! let listener = resources
//!     .listener_for(TrafficDirection::Inbound, "10.244.0.6:5000".parse()?)
//!     .ok_or("no listener")?;
//! assert_eq!(listener.name(), "inbound:10.244.0.6:5000");
//! let hcm = listener.filter_chain().as_http_connection_manager().ok_or("not http")?;
//! assert_eq!(hcm.stat_prefix(), "localhost_5000");
//! let fault = &hcm.http_filters()[0];
//! assert_eq!(fault.name(), "envoy.filters.http.fault");
//! assert_eq!(fault.typed_config()["delay"]["percentage"]["denominator"], "TEN_THOUSAND");
//!
//! // The same resources as Envoy's admin prints them, and as a bootstrap Envoy runs.
//! let at = Timestamp::from(std::time::SystemTime::now());
//! let dump = resources.config_dump_json(&ConfigDumpOptions::new(at));
//! assert!(dump.contains("\"static_listeners\""));
//! assert!(resources.bootstrap_json().contains("\"use_original_dst\": true"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What gets generated
//!
//! For a Dataplane with `transparentProxying` (ports `in` and `out`):
//!
//! | listener | address | flags | chain → cluster |
//! | --- | --- | --- | --- |
//! | `inbound:passthrough:ipv4` / `ipv6` | `0.0.0.0:in` / `[::]:in` | `use_original_dst`, `INBOUND`, `enable_reuse_port: false` | `tcp_proxy` → same-named `ORIGINAL_DST` cluster bound to 127.0.0.6 / ::6 |
//! | `outbound:passthrough:ipv4` / `ipv6` | `0.0.0.0:out` / `[::]:out` | `use_original_dst`, `OUTBOUND` | `tcp_proxy` → same-named `ORIGINAL_DST` cluster |
//! | `inbound:IP:PORT` per inbound | dataplane IP and port | `bind_to_port: false`, `INBOUND`, `enable_reuse_port: false`, `io.kuma.tags` | HTTP: connection manager `localhost_PORT`, route config `inbound:SERVICE` → `localhost:WORKLOADPORT` (timeout 0s), fault filters, router; TCP: `tcp_proxy` (idle 2h) |
//! | `outbound:IP:PORT` per outbound | outbound address and port | `bind_to_port: false`, `OUTBOUND`, `io.kuma.tags` | HTTP: connection manager `SERVICE`, route config `outbound:SERVICE` (timeout 15s, `x-kuma-tags` added); TCP: `tcp_proxy` (idle 1h) → cluster `SERVICE` |
//!
//! The IPv6 passthrough pair is left out under `ipFamilyMode: IPv4`. Without `transparentProxying`
//! (explicit mode) there are no passthroughs, inbound listeners bind their address (inbound 15000 with
//! `servicePort: 5000, serviceAddress: 127.0.0.1` forwards to 127.0.0.1:5000), and local clusters have no
//! upstream bind. Local clusters `localhost:PORT` are `STATIC` (connect 10s) to the workload address
//! (`serviceAddress`, else the dataplane IP; `servicePort`, else `port`), bound to 127.0.0.6 / ::6 under
//! transparent proxying unless the workload is on loopback. Timeouts are those of Kuma's default
//! `MeshTimeout`. Clusters whose names need sanitizing get `alt_stat_name`.
//!
//! Outbound service clusters have no control plane to get endpoints from: give them with
//! [`ResourcesBuilder::service_endpoints`] (a `STATIC` cluster), or let them forward to the connection's
//! original destination (`ORIGINAL_DST`, transparent proxying only).
//!
//! # Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`dataplane`] | the `Dataplane` resource: strict YAML/JSON reading, validation with field paths, builder |
//! | [`fault_injection`] | `MeshFaultInjection` and Kuma's conversion to fault filter configs |
//! | [`http_fault`] | the `HTTPFault` typed config (read as Envoy validates it, written as Envoy prints it) |
//! | [`policy`] | [`Policy`]: either of the two above, as found in a policy file |
//! | [`listener`], [`cluster`] | the resource model, serializing to Envoy's JSON |
//! | [`resources`] | generation from a Dataplane, the original-destination lookup |
//! | [`names`] | Kuma's names and Envoy's stat names |
//! | [`demo`] | the Dataplane and policy of the reference capture |
//!
//! # Fidelity
//!
//! The golden test (`tests/reference.rs`) compares [`Resources::config_dump_json`] for [`demo`] with the
//! `/config_dump` a real Envoy 1.40 printed: the clusters, listeners and route configurations are equal
//! field for field and in the same order; the bootstrap entry differs only by the node's `extensions` list
//! (a property of the Envoy binary, which meshcap does not print). `tests/envoy.rs` runs
//! `envoy --mode validate` on bootstraps for many Dataplanes, and runs Envoy itself on some, comparing
//! its `/config_dump` with ours.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod cluster;
pub mod dataplane;
pub mod demo;
mod dump;
mod error;
pub mod fault_injection;
pub mod http_fault;
mod json;
pub mod listener;
pub mod names;
mod parse;
pub mod policy;
pub mod resources;
mod tags;
mod time;

pub use cluster::{Cluster, ClusterKind, UpstreamProtocol};
pub use dataplane::{
    Dataplane, DataplaneBuilder, Inbound, InboundInterface, InboundState, IpFamilyMode, Networking, Outbound, Protocol,
    TransparentProxying,
};
pub use dump::{BuildVersion, ConfigDumpOptions};
pub use error::{Error, Format, ValidationError, ValidationErrorKind};
pub use fault_injection::MeshFaultInjection;
pub use http_fault::HttpFault;
pub use listener::{
    CidrRange, FilterChain, HttpConnectionManager, HttpFilter, HttpFilterConfig, Listener, Route, RouteConfiguration,
    TcpProxy, TrafficDirection, VirtualHost,
};
pub use parse::MAX_INPUT_BYTES;
pub use policy::Policy;
pub use resources::{Resources, ResourcesBuilder};
pub use tags::Tags;
pub use time::Timestamp;
