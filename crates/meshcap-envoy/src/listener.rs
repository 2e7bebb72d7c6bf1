//! Listeners and what runs on them: `tcp_proxy`, or `http_connection_manager` with its route
//! configuration and HTTP filters.
//!
//! Every type serializes (serde) to Envoy's v3 JSON exactly as Envoy prints it: fields in protobuf order,
//! defaults omitted. Typed configs (`TcpProxy`, `HttpConnectionManager`, filters) carry their `@type`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::http_fault::HttpFault;
use crate::json::{Any, Fields, ProtoFields};
use crate::names;
use crate::tags::Tags;
use crate::time::format_proto_duration;

const TCP_PROXY_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const GRPC_STATS_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";
pub(crate) const LISTENER_TYPE_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub(crate) const ROUTE_CONFIGURATION_TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// Which way traffic on a listener flows (`traffic_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficDirection {
    /// Into the workload (`INBOUND`).
    Inbound,
    /// Out of the workload (`OUTBOUND`).
    Outbound,
}

impl TrafficDirection {
    /// Envoy's enum name.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrafficDirection::Inbound => "INBOUND",
            TrafficDirection::Outbound => "OUTBOUND",
        }
    }
}

impl fmt::Display for TrafficDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Envoy listener with one filter chain.
///
/// ```
/// use meshcap_envoy::{FilterChain, Listener, TcpProxy, TrafficDirection};
///
/// let listener = Listener::new(
///     "outbound:passthrough:ipv4",
///     "0.0.0.0:15001".parse()?,
///     TrafficDirection::Outbound,
///     FilterChain::TcpProxy(TcpProxy::new("outbound_passthrough_ipv4", "outbound:passthrough:ipv4")),
/// )
/// .with_use_original_dst(true);
/// assert_eq!(listener.stat_prefix(), "0.0.0.0_15001");
/// assert_eq!(
///     serde_json::to_value(&listener)?["traffic_direction"],
///     "OUTBOUND"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    name: String,
    address: SocketAddr,
    bind_to_port: bool,
    use_original_dst: bool,
    traffic_direction: TrafficDirection,
    enable_reuse_port: Option<bool>,
    tags: Tags,
    filter_chain: FilterChain,
}

/// A listener's (single) filter chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterChain {
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(TcpProxy),
    /// `envoy.filters.network.http_connection_manager`.
    HttpConnectionManager(HttpConnectionManager),
}

/// `envoy.filters.network.tcp_proxy`: bytes to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProxy {
    stat_prefix: String,
    cluster: String,
    idle_timeout: Option<Duration>,
}

/// `envoy.filters.network.http_connection_manager`: HTTP, filters, routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConnectionManager {
    stat_prefix: String,
    route_config: RouteConfiguration,
    http_filters: Vec<HttpFilter>,
    forward_client_cert: bool,
    stream_idle_timeout: Option<Duration>,
    internal_addresses: Vec<CidrRange>,
    idle_timeout: Option<Duration>,
}

/// A CIDR range (`internal_address_config.cidr_ranges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrRange {
    address: IpAddr,
    prefix_len: u8,
}

/// A route configuration: virtual hosts, each with routes to clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfiguration {
    name: String,
    virtual_hosts: Vec<VirtualHost>,
    request_headers_to_add: Vec<(String, String)>,
    validate_clusters: Option<bool>,
    request_headers_to_remove: Vec<String>,
}

/// A virtual host: domains and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHost {
    name: String,
    domains: Vec<String>,
    routes: Vec<Route>,
}

/// A route: a path prefix to a cluster, with a timeout (`0s` disables it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    prefix: String,
    cluster: String,
    timeout: Option<Duration>,
}

/// An HTTP filter in the connection manager's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFilter {
    name: String,
    config: HttpFilterConfig,
}

/// The typed config of an [`HttpFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpFilterConfig {
    /// `envoy.extensions.filters.http.fault.v3.HTTPFault`.
    Fault(Box<HttpFault>),
    /// `envoy.extensions.filters.http.grpc_stats.v3.FilterConfig` with `emit_filter_state` and
    /// `stats_for_all_methods` (Kuma's settings).
    GrpcStats,
    /// `envoy.extensions.filters.http.router.v3.Router`.
    Router,
}

impl Listener {
    /// A listener that binds its address, without original-destination hand-off, reuse-port setting or tags.
    pub fn new(
        name: impl Into<String>,
        address: SocketAddr,
        traffic_direction: TrafficDirection,
        filter_chain: FilterChain,
    ) -> Listener {
        Listener {
            name: name.into(),
            address,
            bind_to_port: true,
            use_original_dst: false,
            traffic_direction,
            enable_reuse_port: None,
            tags: Tags::new(),
            filter_chain,
        }
    }

    /// With `bind_to_port` (false: the listener only receives connections handed off by a
    /// `use_original_dst` listener).
    #[must_use]
    pub fn with_bind_to_port(mut self, bind: bool) -> Listener {
        self.bind_to_port = bind;
        self
    }

    /// With `use_original_dst` (hand connections to the listener owning their original destination).
    #[must_use]
    pub fn with_use_original_dst(mut self, use_original_dst: bool) -> Listener {
        self.use_original_dst = use_original_dst;
        self
    }

    /// With an explicit `enable_reuse_port`.
    #[must_use]
    pub fn with_enable_reuse_port(mut self, enable: bool) -> Listener {
        self.enable_reuse_port = Some(enable);
        self
    }

    /// With `io.kuma.tags` metadata.
    #[must_use]
    pub fn with_tags(mut self, tags: Tags) -> Listener {
        self.tags = tags;
        self
    }

    /// The name (`inbound:10.244.0.6:5000`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether the listener binds a socket (false: hand-off target only).
    pub fn bind_to_port(&self) -> bool {
        self.bind_to_port
    }

    /// Whether connections are handed to the listener owning their original destination.
    pub fn use_original_dst(&self) -> bool {
        self.use_original_dst
    }

    /// The traffic direction.
    pub fn traffic_direction(&self) -> TrafficDirection {
        self.traffic_direction
    }

    /// `enable_reuse_port`, when set explicitly.
    pub fn enable_reuse_port(&self) -> Option<bool> {
        self.enable_reuse_port
    }

    /// The `io.kuma.tags` metadata.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The filter chain.
    pub fn filter_chain(&self) -> &FilterChain {
        &self.filter_chain
    }

    /// The prefix of this listener's stats (`listener.<prefix>.downstream_cx_total`): its address with `:`
    /// replaced by `_`, as Envoy names listeners without a `stat_prefix`.
    pub fn stat_prefix(&self) -> String {
        names::listener_stat_prefix(self.address)
    }

    /// Whether this is a passthrough listener (original-destination hand-off on a wildcard address).
    pub fn is_passthrough(&self) -> bool {
        self.use_original_dst && self.address.ip().is_unspecified()
    }

    /// The clusters the listener sends traffic to.
    pub fn clusters(&self) -> Vec<&str> {
        match &self.filter_chain {
            FilterChain::TcpProxy(t) => vec![t.cluster.as_str()],
            FilterChain::HttpConnectionManager(h) => h
                .route_config
                .virtual_hosts
                .iter()
                .flat_map(|v| v.routes.iter().map(|r| r.cluster.as_str()))
                .collect(),
        }
    }
}

impl FilterChain {
    /// The network filter's name.
    pub fn filter_name(&self) -> &'static str {
        match self {
            FilterChain::TcpProxy(_) => names::TCP_PROXY_FILTER,
            FilterChain::HttpConnectionManager(_) => names::HTTP_CONNECTION_MANAGER_FILTER,
        }
    }

    /// The `tcp_proxy`, if that is what runs here.
    pub fn as_tcp_proxy(&self) -> Option<&TcpProxy> {
        match self {
            FilterChain::TcpProxy(t) => Some(t),
            FilterChain::HttpConnectionManager(_) => None,
        }
    }

    /// The `http_connection_manager`, if that is what runs here.
    pub fn as_http_connection_manager(&self) -> Option<&HttpConnectionManager> {
        match self {
            FilterChain::HttpConnectionManager(h) => Some(h),
            FilterChain::TcpProxy(_) => None,
        }
    }
}

impl TcpProxy {
    /// A TCP proxy to `cluster`, with stats under `tcp.<stat_prefix>.`.
    pub fn new(stat_prefix: impl Into<String>, cluster: impl Into<String>) -> TcpProxy {
        TcpProxy {
            stat_prefix: stat_prefix.into(),
            cluster: cluster.into(),
            idle_timeout: None,
        }
    }

    /// With `idle_timeout`.
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> TcpProxy {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The stat prefix.
    pub fn stat_prefix(&self) -> &str {
        &self.stat_prefix
    }

    /// The upstream cluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `idle_timeout`, when set (Envoy's default is 1 hour).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
}

impl HttpConnectionManager {
    /// A connection manager with stats under `http.<stat_prefix>.`, serving `route_config`, with only the
    /// router filter.
    pub fn new(stat_prefix: impl Into<String>, route_config: RouteConfiguration) -> HttpConnectionManager {
        HttpConnectionManager {
            stat_prefix: stat_prefix.into(),
            route_config,
            http_filters: vec![HttpFilter::router()],
            forward_client_cert: false,
            stream_idle_timeout: None,
            internal_addresses: Vec::new(),
            idle_timeout: None,
        }
    }

    /// With these HTTP filters (the router must be last).
    #[must_use]
    pub fn with_http_filters(mut self, filters: Vec<HttpFilter>) -> HttpConnectionManager {
        self.http_filters = filters;
        self
    }

    /// With `forward_client_cert_details: SANITIZE_SET` and `set_current_client_cert_details.uri` (Kuma's
    /// inbound setting).
    #[must_use]
    pub fn with_forward_client_cert(mut self, forward: bool) -> HttpConnectionManager {
        self.forward_client_cert = forward;
        self
    }

    /// With `stream_idle_timeout`.
    #[must_use]
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> HttpConnectionManager {
        self.stream_idle_timeout = Some(timeout);
        self
    }

    /// With `common_http_protocol_options.idle_timeout` (downstream connection idle timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> HttpConnectionManager {
        self.idle_timeout = Some(timeout);
        self
    }

    /// With `internal_address_config.cidr_ranges`.
    #[must_use]
    pub fn with_internal_addresses(mut self, ranges: Vec<CidrRange>) -> HttpConnectionManager {
        self.internal_addresses = ranges;
        self
    }

    /// The stat prefix (`localhost_5000`): HCM stats are `http.<prefix>.*`, fault stats
    /// `http.<prefix>.fault.*`.
    pub fn stat_prefix(&self) -> &str {
        &self.stat_prefix
    }

    /// The inline route configuration.
    pub fn route_config(&self) -> &RouteConfiguration {
        &self.route_config
    }

    /// The HTTP filters in order (router last).
    pub fn http_filters(&self) -> &[HttpFilter] {
        &self.http_filters
    }

    /// Whether client certificate details are sanitized and set (`SANITIZE_SET`, uri).
    pub fn forward_client_cert(&self) -> bool {
        self.forward_client_cert
    }

    /// `stream_idle_timeout`, when set (Envoy's default is 5 minutes).
    pub fn stream_idle_timeout(&self) -> Option<Duration> {
        self.stream_idle_timeout
    }

    /// `common_http_protocol_options.idle_timeout`, when set (Envoy's default is 1 hour).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// `internal_address_config.cidr_ranges`.
    pub fn internal_addresses(&self) -> &[CidrRange] {
        &self.internal_addresses
    }

    /// The fault filter configs, in chain order.
    pub fn faults(&self) -> impl Iterator<Item = &HttpFault> {
        self.http_filters.iter().filter_map(|f| match &f.config {
            HttpFilterConfig::Fault(fault) => Some(&**fault),
            _ => None,
        })
    }
}

impl CidrRange {
    /// `address/prefix_len`.
    pub fn new(address: IpAddr, prefix_len: u8) -> CidrRange {
        CidrRange { address, prefix_len }
    }

    /// The address prefix.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl RouteConfiguration {
    /// A route configuration named `name` with these virtual hosts.
    pub fn new(name: impl Into<String>, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
        RouteConfiguration {
            name: name.into(),
            virtual_hosts,
            request_headers_to_add: Vec::new(),
            validate_clusters: None,
            request_headers_to_remove: Vec::new(),
        }
    }

    /// With a header added to every request.
    #[must_use]
    pub fn with_request_header(mut self, name: impl Into<String>, value: impl Into<String>) -> RouteConfiguration {
        self.request_headers_to_add.push((name.into(), value.into()));
        self
    }

    /// With a header removed from every request.
    #[must_use]
    pub fn with_request_header_removed(mut self, name: impl Into<String>) -> RouteConfiguration {
        self.request_headers_to_remove.push(name.into());
        self
    }

    /// With an explicit `validate_clusters`.
    #[must_use]
    pub fn with_validate_clusters(mut self, validate: bool) -> RouteConfiguration {
        self.validate_clusters = Some(validate);
        self
    }

    /// The name (`inbound:backend`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtual hosts.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.virtual_hosts
    }

    /// Headers added to requests (name, value).
    pub fn request_headers_to_add(&self) -> &[(String, String)] {
        &self.request_headers_to_add
    }

    /// `validate_clusters`, when set.
    pub fn validate_clusters(&self) -> Option<bool> {
        self.validate_clusters
    }

    /// Headers removed from requests.
    pub fn request_headers_to_remove(&self) -> &[String] {
        &self.request_headers_to_remove
    }
}

impl VirtualHost {
    /// A virtual host.
    pub fn new(name: impl Into<String>, domains: Vec<String>, routes: Vec<Route>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains,
            routes,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The domains (`*` matches any).
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// The routes, first match wins.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

impl Route {
    /// A route for paths starting with `prefix` to `cluster`.
    pub fn new(prefix: impl Into<String>, cluster: impl Into<String>) -> Route {
        Route {
            prefix: prefix.into(),
            cluster: cluster.into(),
            timeout: None,
        }
    }

    /// With a request timeout (`0s` disables Envoy's 15 s default).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Route {
        self.timeout = Some(timeout);
        self
    }

    /// The path prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The timeout, when set (`Some(0s)`: none).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl HttpFilter {
    /// `envoy.filters.http.fault` with this config.
    pub fn fault(fault: HttpFault) -> HttpFilter {
        HttpFilter {
            name: names::FAULT_FILTER.to_string(),
            config: HttpFilterConfig::Fault(Box::new(fault)),
        }
    }

    /// `envoy.filters.http.router`.
    pub fn router() -> HttpFilter {
        HttpFilter {
            name: names::ROUTER_FILTER.to_string(),
            config: HttpFilterConfig::Router,
        }
    }

    /// `envoy.filters.http.grpc_stats` with Kuma's settings.
    pub fn grpc_stats() -> HttpFilter {
        HttpFilter {
            name: names::GRPC_STATS_FILTER.to_string(),
            config: HttpFilterConfig::GrpcStats,
        }
    }

    /// The same filter under another name (Envoy picks the implementation by type URL; the name is where
    /// dynamic metadata goes).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> HttpFilter {
        self.name = name.into();
        self
    }

    /// The filter name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The typed config.
    pub fn config(&self) -> &HttpFilterConfig {
        &self.config
    }

    /// The type URL of the typed config.
    pub fn type_url(&self) -> &'static str {
        match self.config {
            HttpFilterConfig::Fault(_) => crate::http_fault::HTTP_FAULT_TYPE_URL,
            HttpFilterConfig::GrpcStats => GRPC_STATS_TYPE_URL,
            HttpFilterConfig::Router => ROUTER_TYPE_URL,
        }
    }

    /// The typed config as Envoy JSON, `@type` included (what `meshcap-fault` takes for a fault filter).
    pub fn typed_config(&self) -> serde_json::Value {
        serde_json::to_value(TypedConfig(&self.config)).unwrap_or(serde_json::Value::Null)
    }
}

// --- Envoy JSON --------------------------------------------------------------------------------------------

/// `Address { socket_address { address, port_value } }`.
pub(crate) struct SocketAddress(pub(crate) SocketAddr);

impl ProtoFields for SocketAddress {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("socket_address", &Fields(&SocketAddressInner(self.0)))
    }
}

struct SocketAddressInner(SocketAddr);

impl ProtoFields for SocketAddressInner {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("address", &self.0.ip().to_string())?;
        // `port_value` is a oneof member, so Envoy prints it even when it is 0.
        map.serialize_entry("port_value", &self.0.port())
    }
}

impl Serialize for Listener {
    /// Envoy's `Listener` JSON (as in a bootstrap; the config dump adds `@type`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Fields(self).serialize(serializer)
    }
}

impl ProtoFields for Listener {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("address", &Fields(&SocketAddress(self.address)))?;
        map.serialize_entry("filter_chains", &[Fields(&FilterChainJson(&self.filter_chain))])?;
        if self.use_original_dst {
            map.serialize_entry("use_original_dst", &true)?;
        }
        if !self.tags.is_empty() {
            map.serialize_entry("metadata", &Fields(&Metadata(&self.tags)))?;
        }
        map.serialize_entry("traffic_direction", self.traffic_direction.as_str())?;
        // `bind_to_port` and `enable_reuse_port` are wrapper types: printed when set, even to false.
        if !self.bind_to_port {
            map.serialize_entry("bind_to_port", &false)?;
        }
        if let Some(reuse) = self.enable_reuse_port {
            map.serialize_entry("enable_reuse_port", &reuse)?;
        }
        Ok(())
    }
}

struct Metadata<'a>(&'a Tags);

impl ProtoFields for Metadata<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("filter_metadata", &Fields(&FilterMetadata(self.0)))
    }
}

struct FilterMetadata<'a>(&'a Tags);

impl ProtoFields for FilterMetadata<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry(names::TAGS_METADATA_KEY, self.0)
    }
}

struct FilterChainJson<'a>(&'a FilterChain);

impl ProtoFields for FilterChainJson<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("filters", &[Fields(&NetworkFilter(self.0))])
    }
}

struct NetworkFilter<'a>(&'a FilterChain);

impl ProtoFields for NetworkFilter<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", self.0.filter_name())?;
        match self.0 {
            FilterChain::TcpProxy(t) => map.serialize_entry("typed_config", t),
            FilterChain::HttpConnectionManager(h) => map.serialize_entry("typed_config", h),
        }
    }
}

impl Serialize for TcpProxy {
    /// The typed config JSON, `@type` first.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Any(TCP_PROXY_TYPE_URL, self).serialize(serializer)
    }
}

impl ProtoFields for TcpProxy {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("stat_prefix", &self.stat_prefix)?;
        map.serialize_entry("cluster", &self.cluster)?;
        if let Some(t) = self.idle_timeout {
            map.serialize_entry("idle_timeout", &format_proto_duration(t))?;
        }
        Ok(())
    }
}

impl Serialize for HttpConnectionManager {
    /// The typed config JSON, `@type` first.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Any(HCM_TYPE_URL, self).serialize(serializer)
    }
}

impl ProtoFields for HttpConnectionManager {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        // codec_type AUTO is the default and is not printed.
        map.serialize_entry("stat_prefix", &self.stat_prefix)?;
        map.serialize_entry("route_config", &self.route_config)?;
        let filters: Vec<_> = self.http_filters.iter().map(Fields).collect();
        map.serialize_entry("http_filters", &filters)?;
        if self.forward_client_cert {
            map.serialize_entry("forward_client_cert_details", "SANITIZE_SET")?;
            map.serialize_entry("set_current_client_cert_details", &Fields(&CertDetailsUri))?;
        }
        if let Some(t) = self.stream_idle_timeout {
            map.serialize_entry("stream_idle_timeout", &format_proto_duration(t))?;
        }
        if !self.internal_addresses.is_empty() {
            map.serialize_entry(
                "internal_address_config",
                &Fields(&InternalAddressConfig(&self.internal_addresses)),
            )?;
        }
        if let Some(t) = self.idle_timeout {
            map.serialize_entry("common_http_protocol_options", &Fields(&IdleTimeout(t)))?;
        }
        Ok(())
    }
}

struct CertDetailsUri;

impl ProtoFields for CertDetailsUri {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("uri", &true)
    }
}

struct InternalAddressConfig<'a>(&'a [CidrRange]);

impl ProtoFields for InternalAddressConfig<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let ranges: Vec<_> = self.0.iter().map(Fields).collect();
        map.serialize_entry("cidr_ranges", &ranges)
    }
}

impl ProtoFields for CidrRange {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("address_prefix", &self.address.to_string())?;
        // A UInt32Value wrapper: printed when set, even to 0.
        map.serialize_entry("prefix_len", &self.prefix_len)
    }
}

/// `common_http_protocol_options { idle_timeout }`.
pub(crate) struct IdleTimeout(pub(crate) Duration);

impl ProtoFields for IdleTimeout {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("idle_timeout", &format_proto_duration(self.0))
    }
}

impl Serialize for RouteConfiguration {
    /// Envoy's `RouteConfiguration` JSON (as inlined in a connection manager; the config dump adds `@type`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Fields(self).serialize(serializer)
    }
}

impl ProtoFields for RouteConfiguration {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        let hosts: Vec<_> = self.virtual_hosts.iter().map(Fields).collect();
        map.serialize_entry("virtual_hosts", &hosts)?;
        if !self.request_headers_to_add.is_empty() {
            let headers: Vec<_> = self
                .request_headers_to_add
                .iter()
                .map(|(k, v)| HeaderValueOption(k, v))
                .collect();
            let headers: Vec<_> = headers.iter().map(Fields).collect();
            map.serialize_entry("request_headers_to_add", &headers)?;
        }
        if let Some(v) = self.validate_clusters {
            map.serialize_entry("validate_clusters", &v)?;
        }
        if !self.request_headers_to_remove.is_empty() {
            map.serialize_entry("request_headers_to_remove", &self.request_headers_to_remove)?;
        }
        Ok(())
    }
}

struct HeaderValueOption<'a>(&'a str, &'a str);

impl ProtoFields for HeaderValueOption<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("header", &Fields(&HeaderValue(self.0, self.1)))
    }
}

struct HeaderValue<'a>(&'a str, &'a str);

impl ProtoFields for HeaderValue<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("key", self.0)?;
        if !self.1.is_empty() {
            map.serialize_entry("value", self.1)?;
        }
        Ok(())
    }
}

impl ProtoFields for VirtualHost {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("domains", &self.domains)?;
        let routes: Vec<_> = self.routes.iter().map(Fields).collect();
        map.serialize_entry("routes", &routes)
    }
}

impl ProtoFields for Route {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("match", &Fields(&PrefixMatch(&self.prefix)))?;
        map.serialize_entry("route", &Fields(&RouteAction(self)))
    }
}

struct PrefixMatch<'a>(&'a str);

impl ProtoFields for PrefixMatch<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("prefix", self.0)
    }
}

struct RouteAction<'a>(&'a Route);

impl ProtoFields for RouteAction<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("cluster", &self.0.cluster)?;
        if let Some(t) = self.0.timeout {
            map.serialize_entry("timeout", &format_proto_duration(t))?;
        }
        Ok(())
    }
}

impl ProtoFields for HttpFilter {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("typed_config", &TypedConfig(&self.config))
    }
}

impl Serialize for HttpFilter {
    /// `{ "name": ..., "typed_config": { "@type": ..., ... } }`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Fields(self).serialize(serializer)
    }
}

struct TypedConfig<'a>(&'a HttpFilterConfig);

impl Serialize for TypedConfig<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            HttpFilterConfig::Fault(f) => f.serialize(serializer),
            HttpFilterConfig::GrpcStats => Any(GRPC_STATS_TYPE_URL, &GrpcStatsFields).serialize(serializer),
            HttpFilterConfig::Router => Any(ROUTER_TYPE_URL, &NoFields).serialize(serializer),
        }
    }
}

struct GrpcStatsFields;

impl ProtoFields for GrpcStatsFields {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("emit_filter_state", &true)?;
        map.serialize_entry("stats_for_all_methods", &true)
    }
}

struct NoFields;

impl ProtoFields for NoFields {
    fn write_fields<M: SerializeMap>(&self, _map: &mut M) -> Result<(), M::Error> {
        Ok(())
    }
}
