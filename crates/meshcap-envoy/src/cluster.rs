//! Clusters: where listeners send traffic.

use std::net::SocketAddr;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::json::{Fields, ProtoFields};
use crate::listener::{IdleTimeout, SocketAddress};
use crate::names;
use crate::time::format_proto_duration;

pub(crate) const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const HTTP_PROTOCOL_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HTTP_PROTOCOL_OPTIONS_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// How a cluster finds its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClusterKind {
    /// `ORIGINAL_DST` with `CLUSTER_PROVIDED` load balancing: the connection's original destination.
    OriginalDst,
    /// `STATIC`: the listed endpoints, round robin.
    Static,
}

impl ClusterKind {
    /// Envoy's discovery type name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClusterKind::OriginalDst => "ORIGINAL_DST",
            ClusterKind::Static => "STATIC",
        }
    }
}

/// The protocol Envoy speaks to the cluster's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UpstreamProtocol {
    /// Bytes (no HTTP protocol options).
    #[default]
    Tcp,
    /// HTTP/1.1 (`explicit_http_config.http_protocol_options`).
    Http1,
    /// HTTP/2 (`explicit_http_config.http2_protocol_options`).
    Http2,
}

/// An Envoy cluster.
///
/// ```
/// use meshcap_envoy::{Cluster, ClusterKind};
/// use std::time::Duration;
///
/// let cluster = Cluster::new("localhost:5000", ClusterKind::Static, Duration::from_secs(10))
///     .with_endpoints(vec!["10.244.0.6:5000".parse()?]);
/// assert_eq!(cluster.alt_stat_name(), Some("localhost_5000"));
/// assert_eq!(cluster.stat_name(), "localhost_5000");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    name: String,
    alt_stat_name: Option<String>,
    kind: ClusterKind,
    connect_timeout: Duration,
    upstream_bind: Option<SocketAddr>,
    endpoints: Vec<SocketAddr>,
    protocol: UpstreamProtocol,
    http_idle_timeout: Option<Duration>,
}

impl Cluster {
    /// A cluster; `alt_stat_name` is set to the sanitized name when sanitizing changes it (Kuma's rule).
    pub fn new(name: impl Into<String>, kind: ClusterKind, connect_timeout: Duration) -> Cluster {
        let name = name.into();
        Cluster {
            alt_stat_name: names::needs_sanitizing(&name).then(|| names::sanitize(&name)),
            name,
            kind,
            connect_timeout,
            upstream_bind: None,
            endpoints: Vec::new(),
            protocol: UpstreamProtocol::Tcp,
            http_idle_timeout: None,
        }
    }

    /// With these endpoints (for [`ClusterKind::Static`]).
    #[must_use]
    pub fn with_endpoints(mut self, endpoints: Vec<SocketAddr>) -> Cluster {
        self.endpoints = endpoints;
        self
    }

    /// With an upstream source address (`upstream_bind_config`; port 0 lets the kernel choose).
    #[must_use]
    pub fn with_upstream_bind(mut self, source: SocketAddr) -> Cluster {
        self.upstream_bind = Some(source);
        self
    }

    /// With an HTTP upstream protocol and its connection idle timeout.
    #[must_use]
    pub fn with_protocol(mut self, protocol: UpstreamProtocol, idle_timeout: Option<Duration>) -> Cluster {
        self.protocol = protocol;
        self.http_idle_timeout = idle_timeout;
        self
    }

    /// The name (`localhost:5000`, `inbound:passthrough:ipv4`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `alt_stat_name`, when the name needed sanitizing.
    pub fn alt_stat_name(&self) -> Option<&str> {
        self.alt_stat_name.as_deref()
    }

    /// The name Envoy's cluster stats use (`cluster.<stat_name>.upstream_cx_total`): `alt_stat_name` when
    /// set, else the name.
    pub fn stat_name(&self) -> &str {
        self.alt_stat_name.as_deref().unwrap_or(&self.name)
    }

    /// The discovery type.
    pub fn kind(&self) -> ClusterKind {
        self.kind
    }

    /// `connect_timeout`.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The upstream source address, when set (`127.0.0.6:0` / `[::6]:0` for hops to the local application).
    pub fn upstream_bind(&self) -> Option<SocketAddr> {
        self.upstream_bind
    }

    /// The endpoints (empty for [`ClusterKind::OriginalDst`]).
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// The upstream protocol.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The upstream HTTP connection idle timeout, when set.
    pub fn http_idle_timeout(&self) -> Option<Duration> {
        self.http_idle_timeout
    }
}

impl Serialize for Cluster {
    /// Envoy's `Cluster` JSON (as in a bootstrap; the config dump adds `@type`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Fields(self).serialize(serializer)
    }
}

impl ProtoFields for Cluster {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        // `type` is a oneof member: printed even for STATIC (0).
        map.serialize_entry("type", self.kind.as_str())?;
        map.serialize_entry("connect_timeout", &format_proto_duration(self.connect_timeout))?;
        if self.kind == ClusterKind::OriginalDst {
            map.serialize_entry("lb_policy", "CLUSTER_PROVIDED")?;
        }
        if let Some(source) = self.upstream_bind {
            map.serialize_entry("upstream_bind_config", &Fields(&BindConfig(source)))?;
        }
        if let Some(alt) = &self.alt_stat_name {
            map.serialize_entry("alt_stat_name", alt)?;
        }
        if self.kind == ClusterKind::Static {
            map.serialize_entry("load_assignment", &Fields(&LoadAssignment(self)))?;
        }
        if self.protocol != UpstreamProtocol::Tcp {
            map.serialize_entry("typed_extension_protocol_options", &Fields(&ProtocolOptions(self)))?;
        }
        Ok(())
    }
}

struct BindConfig(SocketAddr);

impl ProtoFields for BindConfig {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("source_address", &Fields(&SourceAddress(self.0)))
    }
}

/// `BindConfig.source_address` is a bare `SocketAddress`.
struct SourceAddress(SocketAddr);

impl ProtoFields for SourceAddress {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("address", &self.0.ip().to_string())?;
        map.serialize_entry("port_value", &self.0.port())
    }
}

struct LoadAssignment<'a>(&'a Cluster);

impl ProtoFields for LoadAssignment<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("cluster_name", &self.0.name)?;
        if !self.0.endpoints.is_empty() {
            map.serialize_entry("endpoints", &[Fields(&LocalityEndpoints(&self.0.endpoints))])?;
        }
        Ok(())
    }
}

struct LocalityEndpoints<'a>(&'a [SocketAddr]);

impl ProtoFields for LocalityEndpoints<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let endpoints: Vec<LbEndpoint> = self.0.iter().copied().map(LbEndpoint).collect();
        let endpoints: Vec<_> = endpoints.iter().map(Fields).collect();
        map.serialize_entry("lb_endpoints", &endpoints)
    }
}

struct LbEndpoint(SocketAddr);

impl ProtoFields for LbEndpoint {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("endpoint", &Fields(&Endpoint(self.0)))
    }
}

struct Endpoint(SocketAddr);

impl ProtoFields for Endpoint {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("address", &Fields(&SocketAddress(self.0)))
    }
}

struct ProtocolOptions<'a>(&'a Cluster);

impl ProtoFields for ProtocolOptions<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry(
            HTTP_PROTOCOL_OPTIONS_KEY,
            &crate::json::Any(HTTP_PROTOCOL_OPTIONS_TYPE_URL, &HttpProtocolOptions(self.0)),
        )
    }
}

struct HttpProtocolOptions<'a>(&'a Cluster);

impl ProtoFields for HttpProtocolOptions<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let Some(t) = self.0.http_idle_timeout {
            map.serialize_entry("common_http_protocol_options", &Fields(&IdleTimeout(t)))?;
        }
        map.serialize_entry("explicit_http_config", &Fields(&ExplicitHttpConfig(self.0.protocol)))
    }
}

struct ExplicitHttpConfig(UpstreamProtocol);

impl ProtoFields for ExplicitHttpConfig {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let key = match self.0 {
            UpstreamProtocol::Http2 => "http2_protocol_options",
            _ => "http_protocol_options",
        };
        map.serialize_entry(key, &serde_json::Map::new())
    }
}
