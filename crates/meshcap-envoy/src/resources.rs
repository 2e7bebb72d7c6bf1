//! [`Resources`]: the listeners and clusters Kuma generates for a Dataplane, the original-destination
//! lookup a proxy needs per connection, and the two JSON renderings (`/config_dump`, bootstrap).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::cluster::{Cluster, ClusterKind, UpstreamProtocol};
use crate::dataplane::{Dataplane, Protocol};
use crate::error::{Error, ValidationError, ValidationErrorKind};
use crate::fault_injection::{MeshFaultInjection, http_faults};
use crate::listener::{
    CidrRange, FilterChain, HttpConnectionManager, HttpFilter, Listener, Route, RouteConfiguration, TcpProxy,
    TrafficDirection, VirtualHost,
};
use crate::names;
use crate::policy::Policy;

/// Kuma's default timeouts (the `mesh-timeout-all-default` MeshTimeout policy).
mod timeouts {
    use std::time::Duration;

    /// Passthrough clusters.
    pub(super) const PASSTHROUGH_CONNECT: Duration = Duration::from_secs(5);
    /// Inbound (`from`): connection timeout.
    pub(super) const INBOUND_CONNECT: Duration = Duration::from_secs(10);
    /// Inbound: idle timeout.
    pub(super) const INBOUND_IDLE: Duration = Duration::from_secs(2 * 3600);
    /// Inbound: HTTP stream idle timeout.
    pub(super) const INBOUND_STREAM_IDLE: Duration = Duration::from_secs(3600);
    /// Inbound: HTTP request timeout (disabled).
    pub(super) const INBOUND_REQUEST: Duration = Duration::ZERO;
    /// Outbound (`to`): connection timeout.
    pub(super) const OUTBOUND_CONNECT: Duration = Duration::from_secs(5);
    /// Outbound: idle timeout.
    pub(super) const OUTBOUND_IDLE: Duration = Duration::from_secs(3600);
    /// Outbound: HTTP stream idle timeout.
    pub(super) const OUTBOUND_STREAM_IDLE: Duration = Duration::from_secs(30 * 60);
    /// Outbound: HTTP request timeout.
    pub(super) const OUTBOUND_REQUEST: Duration = Duration::from_secs(15);
}

/// The admin address Envoy gets when the Dataplane names no admin port.
pub const DEFAULT_ADMIN_PORT: u16 = 9901;

/// The source address of the proxy's hops to the local application over IPv4 (the capture rules let it
/// through).
pub const INBOUND_BIND_IPV4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// The same over IPv6 (`::6`).
pub const INBOUND_BIND_IPV6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// The Envoy resources for one Dataplane: listeners (in bootstrap order), clusters, and a precomputed index
/// for [`Resources::listener_for`].
///
/// ```
/// use meshcap_envoy::{Policy, Resources, TrafficDirection, demo};
///
/// let dataplane = demo::dataplane();
/// let policy: Policy = demo::FAULT_INJECTION_YAML.parse()?;
/// let resources = Resources::builder(&dataplane).policy(&policy).build()?;
///
/// let names: Vec<&str> = resources.listeners().iter().map(|l| l.name()).collect();
/// assert_eq!(
///     names,
///     [
///         "inbound:passthrough:ipv4",
///         "inbound:passthrough:ipv6",
///         "outbound:passthrough:ipv4",
///         "outbound:passthrough:ipv6",
///         "inbound:10.244.0.6:5000",
///     ]
/// );
/// // A connection redirected to 15001 whose original destination is the pod's own 5000 is handed to the
/// // inbound listener (bind_to_port false), as Envoy does; anything else stays on the passthrough.
/// let owner = resources.listener_for(TrafficDirection::Outbound, "10.244.0.6:5000".parse()?);
/// assert_eq!(owner.map(|l| l.name()), Some("inbound:10.244.0.6:5000"));
/// let owner = resources.listener_for(TrafficDirection::Outbound, "10.244.0.5:8080".parse()?);
/// assert_eq!(owner.map(|l| l.name()), Some("outbound:passthrough:ipv4"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Resources {
    node_id: String,
    node_cluster: String,
    admin_address: SocketAddr,
    listeners: Vec<Listener>,
    clusters: Vec<Cluster>,
    by_address: HashMap<AddrKey, usize, BuildHasherDefault<AddrHasher>>,
    by_listener_name: HashMap<String, usize>,
    by_cluster_name: HashMap<String, usize>,
    /// `[direction][family]` → passthrough listener index (direction 0 inbound, 1 outbound; family 0 v4, 1 v6).
    passthrough: [[Option<usize>; 2]; 2],
}

/// Builds [`Resources`] from a Dataplane and policies.
#[derive(Debug, Clone)]
#[must_use]
pub struct ResourcesBuilder<'a> {
    dataplane: &'a Dataplane,
    policies: Vec<&'a Policy>,
    service_endpoints: Vec<(String, Vec<SocketAddr>)>,
    admin_address: Option<SocketAddr>,
}

/// A listener address as a hash key: the IP's bits, its family and the port (scope ids and flow labels
/// of IPv6 socket addresses play no part, as in Envoy's address strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddrKey {
    ip: u128,
    v6: bool,
    port: u16,
}

impl AddrKey {
    fn new(ip: IpAddr, port: u16) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey {
                ip: u128::from(u32::from(v4)),
                v6: false,
                port,
            },
            IpAddr::V6(v6) => AddrKey {
                ip: u128::from(v6),
                v6: true,
                port,
            },
        }
    }
}

/// A multiply-rotate hasher (the Fx hash) for [`AddrKey`]. The table only ever holds the listeners'
/// own addresses, so a peer choosing destinations cannot make it degrade; SipHash's flooding resistance
/// buys nothing here and costs most of the lookup.
#[derive(Debug, Default, Clone, Copy)]
struct AddrHasher(u64);

impl AddrHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn direction_index(d: TrafficDirection) -> usize {
    match d {
        TrafficDirection::Inbound => 0,
        TrafficDirection::Outbound => 1,
    }
}

fn family_index(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

impl Resources {
    /// Start building the resources of `dataplane`.
    pub fn builder(dataplane: &Dataplane) -> ResourcesBuilder<'_> {
        ResourcesBuilder {
            dataplane,
            policies: Vec::new(),
            service_endpoints: Vec::new(),
            admin_address: None,
        }
    }

    /// The resources of `dataplane` with no policies.
    ///
    /// # Errors
    /// As [`ResourcesBuilder::build`].
    pub fn from_dataplane(dataplane: &Dataplane) -> Result<Resources, Error> {
        Resources::builder(dataplane).build()
    }

    /// Resources from listeners and clusters made by hand (the node id and cluster name the bootstrap's
    /// `node`; admin on 127.0.0.1:9901).
    ///
    /// # Errors
    /// [`Error::Invalid`] when two listeners share a name or an address, two clusters share a name, or a
    /// listener sends traffic to a cluster that does not exist.
    pub fn new(
        node_id: impl Into<String>,
        node_cluster: impl Into<String>,
        listeners: Vec<Listener>,
        clusters: Vec<Cluster>,
    ) -> Result<Resources, Error> {
        Resources::assemble(
            node_id.into(),
            node_cluster.into(),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_ADMIN_PORT),
            listeners,
            clusters,
        )
    }

    fn assemble(
        node_id: String,
        node_cluster: String,
        admin_address: SocketAddr,
        listeners: Vec<Listener>,
        clusters: Vec<Cluster>,
    ) -> Result<Resources, Error> {
        let mut by_address: HashMap<AddrKey, usize, BuildHasherDefault<AddrHasher>> =
            HashMap::with_capacity_and_hasher(listeners.len(), BuildHasherDefault::default());
        let mut by_listener_name = HashMap::with_capacity(listeners.len());
        let mut passthrough = [[None; 2]; 2];
        for (i, l) in listeners.iter().enumerate() {
            let path = format!("listeners[{i}]");
            if by_listener_name.insert(l.name().to_string(), i).is_some() {
                return Err(ValidationError::new(
                    path,
                    ValidationErrorKind::DuplicateName {
                        resource: "listener",
                        name: l.name().to_string(),
                    },
                )
                .into());
            }
            let addr = l.address();
            if let Some(first) = by_address.insert(AddrKey::new(addr.ip(), addr.port()), i) {
                return Err(ValidationError::new(
                    path,
                    ValidationErrorKind::DuplicateAddress {
                        address: addr,
                        first: listeners[first].name().to_string(),
                    },
                )
                .into());
            }
            if l.is_passthrough() {
                let slot = &mut passthrough[direction_index(l.traffic_direction())][family_index(addr.ip())];
                slot.get_or_insert(i);
            }
        }
        let mut by_cluster_name = HashMap::with_capacity(clusters.len());
        for (i, c) in clusters.iter().enumerate() {
            if by_cluster_name.insert(c.name().to_string(), i).is_some() {
                return Err(ValidationError::new(
                    format!("clusters[{i}]"),
                    ValidationErrorKind::DuplicateName {
                        resource: "cluster",
                        name: c.name().to_string(),
                    },
                )
                .into());
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            for cluster in l.clusters() {
                if !by_cluster_name.contains_key(cluster) {
                    return Err(ValidationError::new(
                        format!("listeners[{i}]"),
                        ValidationErrorKind::UnknownValue {
                            value: cluster.to_string(),
                            expected: "the name of a cluster",
                        },
                    )
                    .into());
                }
            }
        }
        Ok(Resources {
            node_id,
            node_cluster,
            admin_address,
            listeners,
            clusters,
            by_address,
            by_listener_name,
            by_cluster_name,
            passthrough,
        })
    }

    /// The listeners, in bootstrap order: passthroughs (inbound v4, v6, outbound v4, v6), then inbounds, then
    /// outbounds.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The clusters, in bootstrap order: passthroughs, local clusters, outbound service clusters.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.by_listener_name.get(name).map(|i| &self.listeners[*i])
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.by_cluster_name.get(name).map(|i| &self.clusters[*i])
    }

    /// The route configurations of the HTTP listeners, in listener order.
    pub fn route_configs(&self) -> impl Iterator<Item = &RouteConfiguration> {
        self.listeners
            .iter()
            .filter_map(|l| l.filter_chain().as_http_connection_manager())
            .map(HttpConnectionManager::route_config)
    }

    /// Envoy's node id (`default.backend-01`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Envoy's node cluster (`backend`).
    pub fn node_cluster(&self) -> &str {
        &self.node_cluster
    }

    /// The admin address the bootstrap gives Envoy.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// The passthrough listener of `direction` for `family`'s addresses (the one a redirected connection of
    /// that family lands on), if transparent proxying generated it.
    pub fn passthrough(&self, direction: TrafficDirection, family: IpAddr) -> Option<&Listener> {
        self.passthrough[direction_index(direction)][family_index(family)].map(|i| &self.listeners[i])
    }

    /// The listener that handles a connection accepted on `direction`'s passthrough listener whose original
    /// destination is `original_dst`, with Envoy's `use_original_dst` hand-off rule:
    ///
    /// 1. a listener on exactly that address and port (`bind_to_port: false` ones included);
    /// 2. else a listener on the wildcard address of the destination's family (`0.0.0.0` or `::`) and that
    ///    port (Envoy hands off to any listener, so a destination port equal to the *other* redirect port
    ///    lands on the other passthrough listener, as in Envoy);
    /// 3. else the passthrough listener itself (`direction`, destination family).
    ///
    /// `None` only when no listener matches and there is no passthrough listener for that family (no
    /// transparent proxying, or IPv4-only mode with an IPv6 destination). An IPv4-mapped IPv6 destination
    /// (`::ffff:10.0.0.1`) is an IPv6 address here, as in Envoy; unwrap it first if that is not what you
    /// mean (`meshcap-origdst` returns original destinations unwrapped). Called per connection: two hash
    /// lookups, no allocation.
    pub fn listener_for(&self, direction: TrafficDirection, original_dst: SocketAddr) -> Option<&Listener> {
        let ip = original_dst.ip();
        let port = original_dst.port();
        if let Some(i) = self.by_address.get(&AddrKey::new(ip, port)) {
            return Some(&self.listeners[*i]);
        }
        let wildcard = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        if let Some(i) = self.by_address.get(&AddrKey::new(wildcard, port)) {
            return Some(&self.listeners[*i]);
        }
        self.passthrough(direction, ip)
    }
}

impl<'a> ResourcesBuilder<'a> {
    /// Apply a policy.
    pub fn policy(mut self, policy: &'a Policy) -> ResourcesBuilder<'a> {
        self.policies.push(policy);
        self
    }

    /// Apply several policies.
    pub fn policies(mut self, policies: impl IntoIterator<Item = &'a Policy>) -> ResourcesBuilder<'a> {
        self.policies.extend(policies);
        self
    }

    /// Give the endpoints of an outbound service (meshcap has no control plane to discover them): its
    /// cluster becomes `STATIC` with these endpoints. Without endpoints, an outbound service cluster forwards
    /// to the connection's original destination (`ORIGINAL_DST`), which needs transparent proxying.
    pub fn service_endpoints(mut self, service: impl Into<String>, endpoints: Vec<SocketAddr>) -> ResourcesBuilder<'a> {
        self.service_endpoints.push((service.into(), endpoints));
        self
    }

    /// Override the admin address (default 127.0.0.1 and the Dataplane's `admin.port`, else 9901).
    pub fn admin_address(mut self, address: SocketAddr) -> ResourcesBuilder<'a> {
        self.admin_address = Some(address);
        self
    }

    /// Generate the resources, following Kuma 2.x's generators (see the crate docs for every rule).
    ///
    /// # Errors
    /// [`Error::Invalid`] when two inbounds would share a local cluster name with different endpoints, when
    /// two outbounds of one service disagree on the protocol, when an outbound has neither endpoints nor
    /// transparent proxying, or when generated names collide.
    pub fn build(self) -> Result<Resources, Error> {
        let dp = self.dataplane;
        let n = dp.networking();
        let tp = n.transparent_proxying().copied();
        let ipv6 = tp.is_some_and(|t| t.ipv6_enabled());
        let mut listeners = Vec::new();
        let mut clusters: Vec<Cluster> = Vec::new();

        if let Some(tp) = tp {
            let families: &[(IpAddr, &str, &str, SocketAddr)] = &[
                (
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    names::INBOUND_PASSTHROUGH_IPV4,
                    names::OUTBOUND_PASSTHROUGH_IPV4,
                    SocketAddr::new(IpAddr::V4(INBOUND_BIND_IPV4), 0),
                ),
                (
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    names::INBOUND_PASSTHROUGH_IPV6,
                    names::OUTBOUND_PASSTHROUGH_IPV6,
                    SocketAddr::new(IpAddr::V6(INBOUND_BIND_IPV6), 0),
                ),
            ];
            let families = if ipv6 { families } else { &families[..1] };
            for (direction, port) in [
                (TrafficDirection::Inbound, tp.redirect_port_inbound()),
                (TrafficDirection::Outbound, tp.redirect_port_outbound()),
            ] {
                for (any, inbound_name, outbound_name, _) in families {
                    let name = match direction {
                        TrafficDirection::Inbound => inbound_name,
                        TrafficDirection::Outbound => outbound_name,
                    };
                    let mut listener = Listener::new(
                        *name,
                        SocketAddr::new(*any, port),
                        direction,
                        FilterChain::TcpProxy(TcpProxy::new(names::sanitize(name), *name)),
                    )
                    .with_use_original_dst(true);
                    if direction == TrafficDirection::Inbound {
                        listener = listener.with_enable_reuse_port(false);
                    }
                    listeners.push(listener);
                }
            }
            for direction in [TrafficDirection::Inbound, TrafficDirection::Outbound] {
                for (_, inbound_name, outbound_name, bind) in families {
                    let name = match direction {
                        TrafficDirection::Inbound => inbound_name,
                        TrafficDirection::Outbound => outbound_name,
                    };
                    let mut cluster = Cluster::new(*name, ClusterKind::OriginalDst, timeouts::PASSTHROUGH_CONNECT);
                    if direction == TrafficDirection::Inbound {
                        cluster = cluster.with_upstream_bind(*bind);
                    }
                    clusters.push(cluster);
                }
            }
        }

        let internal_addresses = {
            let mut v = vec![CidrRange::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 32)];
            if tp.is_none_or(|t| t.ipv6_enabled()) {
                v.push(CidrRange::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128));
            }
            v
        };
        let mesh_policies: Vec<&MeshFaultInjection> = self
            .policies
            .iter()
            .filter_map(|p| match p {
                Policy::MeshFaultInjection(m) => Some(m),
                Policy::HttpFault(_) => None,
            })
            .collect();
        let raw_faults: Vec<_> = self
            .policies
            .iter()
            .filter_map(|p| match p {
                Policy::HttpFault(f) => Some(f),
                Policy::MeshFaultInjection(_) => None,
            })
            .collect();

        // Inbounds: a local cluster and an inbound listener each.
        let mut local_clusters: Vec<(String, SocketAddr, String)> = Vec::new();
        for (i, inbound) in n.inbound().iter().enumerate() {
            if !inbound.is_served() {
                continue;
            }
            let path = format!("networking.inbound[{i}]");
            let iface = n.interface(inbound);
            let protocol = inbound.protocol();
            let cluster_name = names::local_cluster(iface.workload_address().port());
            let workload = iface.workload_address();
            match local_clusters.iter().find(|(name, _, _)| *name == cluster_name) {
                Some((_, existing, _)) if *existing != workload => {
                    return Err(ValidationError::new(
                        path,
                        ValidationErrorKind::LocalClusterConflict {
                            cluster: cluster_name,
                            existing: *existing,
                            endpoint: workload,
                        },
                    )
                    .into());
                }
                Some(_) => {}
                None => {
                    let mut cluster = Cluster::new(&cluster_name, ClusterKind::Static, timeouts::INBOUND_CONNECT)
                        .with_endpoints(vec![workload]);
                    if tp.is_some() && !workload.ip().is_loopback() {
                        let bind = match workload.ip() {
                            IpAddr::V4(_) => IpAddr::V4(INBOUND_BIND_IPV4),
                            IpAddr::V6(_) => IpAddr::V6(INBOUND_BIND_IPV6),
                        };
                        cluster = cluster.with_upstream_bind(SocketAddr::new(bind, 0));
                    }
                    cluster = match protocol {
                        Protocol::Http => cluster.with_protocol(UpstreamProtocol::Http1, Some(timeouts::INBOUND_IDLE)),
                        Protocol::Http2 | Protocol::Grpc => {
                            cluster.with_protocol(UpstreamProtocol::Http2, Some(timeouts::INBOUND_IDLE))
                        }
                        _ => cluster,
                    };
                    clusters.push(cluster);
                    local_clusters.push((cluster_name.clone(), workload, path.clone()));
                }
            }

            let service = inbound.service();
            let address = iface.dataplane_address();
            let chain = if protocol.is_http() {
                let route_config = RouteConfiguration::new(
                    names::inbound_route_config(service),
                    vec![VirtualHost::new(
                        service,
                        vec!["*".to_string()],
                        vec![Route::new("/", &cluster_name).with_timeout(timeouts::INBOUND_REQUEST)],
                    )],
                )
                .with_validate_clusters(false)
                .with_request_header_removed(names::TAGS_HEADER);
                let mut filters = Vec::new();
                if protocol == Protocol::Grpc {
                    filters.push(HttpFilter::grpc_stats());
                }
                filters.extend(
                    http_faults(dp, inbound, &mesh_policies)
                        .into_iter()
                        .map(HttpFilter::fault),
                );
                if matches!(protocol, Protocol::Http | Protocol::Http2) {
                    filters.extend(raw_faults.iter().map(|f| HttpFilter::fault((*f).clone())));
                }
                filters.push(HttpFilter::router());
                FilterChain::HttpConnectionManager(
                    HttpConnectionManager::new(names::sanitize(&cluster_name), route_config)
                        .with_http_filters(filters)
                        .with_forward_client_cert(true)
                        .with_stream_idle_timeout(timeouts::INBOUND_STREAM_IDLE)
                        .with_internal_addresses(internal_addresses.clone())
                        .with_idle_timeout(timeouts::INBOUND_IDLE),
                )
            } else {
                FilterChain::TcpProxy(
                    TcpProxy::new(names::sanitize(&cluster_name), &cluster_name)
                        .with_idle_timeout(timeouts::INBOUND_IDLE),
                )
            };
            listeners.push(
                Listener::new(
                    names::inbound_listener(address),
                    address,
                    TrafficDirection::Inbound,
                    chain,
                )
                .with_bind_to_port(tp.is_none())
                .with_enable_reuse_port(false)
                .with_tags(inbound.tags().clone()),
            );
        }

        // Outbounds: a listener each, a cluster per service.
        let caller_tags = kuma_tags_header(dp);
        let mut service_clusters: Vec<(String, Protocol)> = Vec::new();
        for (i, outbound) in n.outbound().iter().enumerate() {
            let path = format!("networking.outbound[{i}]");
            let service = outbound.service();
            let protocol = outbound.protocol();
            match service_clusters.iter().find(|(s, _)| s == service) {
                Some((_, existing)) if !same_upstream(*existing, protocol) => {
                    return Err(ValidationError::new(
                        format!("{path}.tags[\"kuma.io/protocol\"]"),
                        ValidationErrorKind::ProtocolConflict {
                            service: service.to_string(),
                            existing: existing.to_string(),
                            protocol: protocol.to_string(),
                        },
                    )
                    .into());
                }
                Some(_) => {}
                None => {
                    let endpoints = self
                        .service_endpoints
                        .iter()
                        .rev()
                        .find(|(s, _)| s == service)
                        .map(|(_, e)| e.clone());
                    let mut cluster = match endpoints {
                        Some(e) => {
                            Cluster::new(service, ClusterKind::Static, timeouts::OUTBOUND_CONNECT).with_endpoints(e)
                        }
                        None if tp.is_some() => {
                            Cluster::new(service, ClusterKind::OriginalDst, timeouts::OUTBOUND_CONNECT)
                        }
                        None => {
                            return Err(ValidationError::new(
                                path,
                                ValidationErrorKind::NoUpstream(service.to_string()),
                            )
                            .into());
                        }
                    };
                    cluster = match protocol {
                        Protocol::Http => cluster.with_protocol(UpstreamProtocol::Http1, Some(timeouts::OUTBOUND_IDLE)),
                        Protocol::Http2 | Protocol::Grpc => {
                            cluster.with_protocol(UpstreamProtocol::Http2, Some(timeouts::OUTBOUND_IDLE))
                        }
                        _ => cluster,
                    };
                    clusters.push(cluster);
                    service_clusters.push((service.to_string(), protocol));
                }
            }
            let address = outbound.socket_address();
            let chain = if protocol.is_http() {
                let mut route_config = RouteConfiguration::new(
                    names::outbound_route_config(service),
                    vec![VirtualHost::new(
                        service,
                        vec!["*".to_string()],
                        vec![Route::new("/", service).with_timeout(timeouts::OUTBOUND_REQUEST)],
                    )],
                )
                .with_validate_clusters(false);
                if let Some(value) = &caller_tags {
                    route_config = route_config.with_request_header(names::TAGS_HEADER, value);
                }
                FilterChain::HttpConnectionManager(
                    HttpConnectionManager::new(names::sanitize(service), route_config)
                        .with_stream_idle_timeout(timeouts::OUTBOUND_STREAM_IDLE)
                        .with_internal_addresses(internal_addresses.clone())
                        .with_idle_timeout(timeouts::OUTBOUND_IDLE),
                )
            } else {
                FilterChain::TcpProxy(
                    TcpProxy::new(names::sanitize(service), service).with_idle_timeout(timeouts::OUTBOUND_IDLE),
                )
            };
            listeners.push(
                Listener::new(
                    names::outbound_listener(address),
                    address,
                    TrafficDirection::Outbound,
                    chain,
                )
                .with_bind_to_port(tp.is_none())
                .with_tags(outbound.tags().clone()),
            );
        }

        let admin_address = self.admin_address.unwrap_or_else(|| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                n.admin_port().unwrap_or(DEFAULT_ADMIN_PORT),
            )
        });
        Resources::assemble(
            dp.node_id(),
            dp.node_cluster().to_string(),
            admin_address,
            listeners,
            clusters,
        )
    }
}

/// Whether two protocols give a service cluster the same upstream options.
fn same_upstream(a: Protocol, b: Protocol) -> bool {
    let class = |p: Protocol| match p {
        Protocol::Http => 1,
        Protocol::Http2 | Protocol::Grpc => 2,
        _ => 0,
    };
    class(a) == class(b)
}

/// The `x-kuma-tags` value Kuma adds to outbound HTTP requests: every inbound tag, keys sorted, values of a
/// key sorted and comma-joined, `&key=v1,v2&key2=v&`.
fn kuma_tags_header(dp: &Dataplane) -> Option<String> {
    let mut tags: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = Default::default();
    for inbound in dp.networking().inbound() {
        for (k, v) in inbound.tags().iter() {
            tags.entry(k).or_default().insert(v);
        }
    }
    if tags.is_empty() {
        return None;
    }
    let pairs: Vec<String> = tags
        .iter()
        .map(|(k, vs)| format!("{k}={}", vs.iter().copied().collect::<Vec<_>>().join(",")))
        .collect();
    Some(format!("&{}&", pairs.join("&")))
}
