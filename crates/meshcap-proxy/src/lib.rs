//! meshcap-proxy: the meshcap data plane, as pieces a transparent sidecar is assembled from.
//!
//! A sidecar binds its listeners ([`listen`]), hands every accepted connection to a handler that finds
//! the original destination (meshcap-origdst) and the Envoy listener owning it (meshcap-envoy), and runs
//! that listener's filter: [`tcp_proxy`] for L4, [`hcm`] for HTTP/1.1. Every statistic registers with one
//! [`stats::StatsRegistry`], which the [`admin`] server renders in Envoy's formats.
//!
//! # Layout
//! * [`listen`]: listener binding, the accept loop (connection cap, `EMFILE` backoff, graceful drain),
//!   `listener.<address>.*` statistics, `RLIMIT_NOFILE`; [`drain`]: the drain signal.
//! * [`upstream`]: upstream connects (source address, mark, timeout) and `cluster.<name>.*` statistics.
//! * [`tcp_proxy`]: L4 forwarding with half-close and idle timeout, `tcp.<prefix>.*` statistics.
//! * [`http1`]: the sans-IO HTTP/1.1 codec; [`hcm`]: the per-connection HTTP/1.1 driver.
//! * [`stats`]: counters, gauges, the registry and Envoy's `/stats`, JSON and Prometheus renderings.
//! * [`admin`]: Envoy's admin endpoints; [`access_log`]: Envoy's access log format and a non-blocking
//!   writer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod drain;
pub mod hcm;
pub mod http1;
pub mod listen;
pub mod stats;
pub mod tcp_proxy;
pub mod upstream;
