//! # meshcap
//!
//! Kuma-style transparent proxying for service meshes, as a set of small crates re-exported here behind
//! features (all on by default):
//!
//! | feature | module | crate | job |
//! | --- | --- | --- | --- |
//! | `iptables` | [`iptables`] | `meshcap-iptables` | the capture rule set as a typed model; renderers, parser, installer |
//! | `origdst` | [`origdst`] | `meshcap-origdst` | the original destination of a captured connection |
//! | `envoy` | [`envoy`] | `meshcap-envoy` | Kuma-named Envoy listeners and clusters from a Dataplane |
//! | `fault` | [`fault`] | `meshcap-fault` | `envoy.filters.http.fault` decisions, responses and stats |
//! | `proxy` | [`proxy`] | `meshcap-proxy` | the data plane and its admin interface |
//!
//! The example binary `examples/sidecar.rs` wires them into a working sidecar.

#![forbid(unsafe_code)]

#[cfg(feature = "envoy")]
pub use meshcap_envoy as envoy;
#[cfg(feature = "fault")]
pub use meshcap_fault as fault;
#[cfg(feature = "iptables")]
pub use meshcap_iptables as iptables;
#[cfg(feature = "origdst")]
pub use meshcap_origdst as origdst;
#[cfg(feature = "proxy")]
pub use meshcap_proxy as proxy;
