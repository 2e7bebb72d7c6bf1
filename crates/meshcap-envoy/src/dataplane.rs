//! Kuma's `Dataplane` resource (universal form), read strictly from YAML or JSON and validated with field
//! paths in every error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Format, ValidationError, ValidationErrorKind, invalid};
use crate::names::SERVICELESS_PORT;
use crate::parse;
use crate::tags::Tags;

const WHAT: &str = "dataplane";

/// A Kuma `Dataplane`: the proxy's identity, the services it exposes (inbounds), the services it consumes
/// (outbounds) and how traffic reaches it (transparent proxying).
///
/// Read it with [`Dataplane::from_yaml`], [`Dataplane::from_json`] or [`str::parse`] (JSON when the text
/// starts with `{`), or build one with [`Dataplane::builder`]. Both paths run the same validation, so a
/// `Dataplane` value is always valid.
///
/// ```
/// use meshcap_envoy::Dataplane;
///
/// let dp = Dataplane::from_yaml(
///     "
/// type: Dataplane
/// mesh: default
/// name: backend-01
/// networking:
///   address: 10.244.0.6
///   inbound:
///     - port: 5000
///       tags:
///         kuma.io/service: backend
///         kuma.io/protocol: http
///   transparentProxying:
///     redirectPortInbound: 15006
///     redirectPortOutbound: 15001
/// ",
/// )?;
/// assert_eq!(dp.node_id(), "default.backend-01");
/// assert_eq!(dp.networking().inbound()[0].tags().service(), Some("backend"));
///
/// let err = Dataplane::from_yaml("mesh: default\nname: x\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 0\n      tags: {kuma.io/service: a}\n")
///     .unwrap_err();
/// assert_eq!(err.to_string(), "networking.inbound[0].port: 0 is not a valid port");
/// # Ok::<(), meshcap_envoy::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataplane {
    mesh: String,
    name: String,
    labels: Tags,
    networking: Networking,
}

/// `networking`: addresses, inbounds, outbounds, transparent proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Networking {
    address: IpAddr,
    advertised_address: Option<String>,
    inbound: Vec<Inbound>,
    outbound: Vec<Outbound>,
    transparent_proxying: Option<TransparentProxying>,
    admin_port: Option<u16>,
}

/// One `networking.inbound[]` entry: a port the workload serves, reached through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    port: u16,
    service_port: Option<u16>,
    service_address: Option<IpAddr>,
    address: Option<IpAddr>,
    tags: Tags,
    name: Option<String>,
    state: Option<InboundState>,
    health_ready: Option<bool>,
}

/// One `networking.outbound[]` entry: a service the workload consumes through a local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    address: Option<IpAddr>,
    port: u16,
    tags: Tags,
}

/// `networking.transparentProxying`: the ports the capture rules redirect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransparentProxying {
    redirect_port_inbound: u16,
    redirect_port_outbound: u16,
    ip_family_mode: Option<IpFamilyMode>,
}

/// `transparentProxying.ipFamilyMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum IpFamilyMode {
    /// IPv4 and IPv6 (the default): both passthrough pairs are generated.
    #[default]
    DualStack,
    /// IPv4 only: no IPv6 passthrough listeners or clusters.
    Ipv4,
    /// IPv6: both passthrough pairs, as for dual stack (Kuma leaves out the IPv6 pair only under IPv4).
    Ipv6,
}

/// `inbound[].state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InboundState {
    /// Serving.
    Ready,
    /// Not ready: still gets its listener and cluster (readiness only matters to other proxies' endpoints).
    NotReady,
    /// Ignored: serves no traffic, gets no listener or cluster.
    Ignored,
}

/// The application protocol of an inbound or outbound (`kuma.io/protocol`, default `tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Opaque TCP: `tcp_proxy`.
    #[default]
    Tcp,
    /// HTTP/1.1: `http_connection_manager`, HTTP/1 upstream.
    Http,
    /// HTTP/2: `http_connection_manager`, HTTP/2 upstream.
    Http2,
    /// gRPC: `http_connection_manager` with the gRPC stats filter, HTTP/2 upstream.
    Grpc,
    /// Kafka: proxied as TCP (the Kafka broker filter is not part of standard Envoy builds).
    Kafka,
}

impl Protocol {
    /// The tag value (`tcp`, `http`, `http2`, `grpc`, `kafka`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Kafka => "kafka",
        }
    }

    /// Whether Envoy terminates HTTP for this protocol (`http`, `http2`, `grpc`).
    pub fn is_http(&self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    fn from_tag(value: &str) -> Option<Protocol> {
        Some(match value {
            "tcp" => Protocol::Tcp,
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "kafka" => Protocol::Kafka,
            _ => return None,
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl IpFamilyMode {
    /// Kuma's spelling (`DualStack`, `IPv4`, `IPv6`).
    pub fn as_str(&self) -> &'static str {
        match self {
            IpFamilyMode::DualStack => "DualStack",
            IpFamilyMode::Ipv4 => "IPv4",
            IpFamilyMode::Ipv6 => "IPv6",
        }
    }
}

impl InboundState {
    /// Kuma's spelling (`Ready`, `NotReady`, `Ignored`).
    pub fn as_str(&self) -> &'static str {
        match self {
            InboundState::Ready => "Ready",
            InboundState::NotReady => "NotReady",
            InboundState::Ignored => "Ignored",
        }
    }
}

/// The addresses Kuma derives for an inbound ("InboundInterface"): where the listener is, and where the
/// workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundInterface {
    dataplane: SocketAddr,
    workload: SocketAddr,
}

impl InboundInterface {
    /// The listener address: `inbound.address` (else `networking.address`) and `inbound.port`.
    pub fn dataplane_address(&self) -> SocketAddr {
        self.dataplane
    }

    /// The application address: `serviceAddress` (else the dataplane IP) and `servicePort` (else `port`).
    pub fn workload_address(&self) -> SocketAddr {
        self.workload
    }
}

impl Dataplane {
    /// Read a Dataplane from YAML (one document, strict: unknown fields are errors).
    ///
    /// # Errors
    /// [`Error::Parse`] for malformed text or a wrong shape (with line and column), [`Error::TooLarge`] over
    /// 1 MiB, [`Error::Invalid`] with the field path for a value that fails validation.
    pub fn from_yaml(text: &str) -> Result<Dataplane, Error> {
        Dataplane::from_raw(parse::from_yaml(WHAT, text)?)
    }

    /// Read a Dataplane from JSON (strict: unknown fields are errors).
    ///
    /// # Errors
    /// As [`Dataplane::from_yaml`].
    pub fn from_json(text: &str) -> Result<Dataplane, Error> {
        Dataplane::from_raw(parse::from_json(WHAT, text)?)
    }

    /// Start building a Dataplane in `mesh`, named `name`, at `address`.
    pub fn builder(mesh: impl Into<String>, name: impl Into<String>, address: IpAddr) -> DataplaneBuilder {
        DataplaneBuilder {
            dataplane: Dataplane {
                mesh: mesh.into(),
                name: name.into(),
                labels: Tags::new(),
                networking: Networking {
                    address,
                    advertised_address: None,
                    inbound: Vec::new(),
                    outbound: Vec::new(),
                    transparent_proxying: None,
                    admin_port: None,
                },
            },
        }
    }

    /// The mesh.
    pub fn mesh(&self) -> &str {
        &self.mesh
    }

    /// The name, unique in the mesh.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource labels.
    pub fn labels(&self) -> &Tags {
        &self.labels
    }

    /// `networking`.
    pub fn networking(&self) -> &Networking {
        &self.networking
    }

    /// Envoy's node id for this Dataplane: `<mesh>.<name>`.
    pub fn node_id(&self) -> String {
        format!("{}.{}", self.mesh, self.name)
    }

    /// Envoy's node cluster: the service of the first inbound.
    pub fn node_cluster(&self) -> &str {
        self.networking
            .inbound
            .first()
            .and_then(|i| i.tags.service())
            .unwrap_or_default()
    }

    /// The Dataplane as Kuma's universal JSON (pretty-printed).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(&self.to_raw()).unwrap_or_default()
    }

    /// The Dataplane as Kuma's universal YAML.
    ///
    /// # Errors
    /// Only if the YAML serializer fails, which plain data does not make it do.
    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_saphyr::to_string(&self.to_raw()).map_err(|e| Error::Parse {
            what: WHAT,
            format: Format::Yaml,
            message: e.to_string(),
        })
    }

    fn from_raw(raw: RawDataplane) -> Result<Dataplane, Error> {
        if let Some(t) = &raw.type_
            && t != "Dataplane"
        {
            return Err(invalid(
                "type",
                ValidationErrorKind::WrongType {
                    expected: "Dataplane",
                    found: t.clone(),
                },
            ));
        }
        if raw.metrics.is_some() {
            return Err(invalid(
                "metrics",
                ValidationErrorKind::Unsupported("per-dataplane metrics backends are not supported by meshcap"),
            ));
        }
        if raw.probes.is_some() {
            return Err(invalid(
                "probes",
                ValidationErrorKind::Unsupported("virtual probes are not supported by meshcap"),
            ));
        }
        let mesh = raw.mesh.ok_or_else(|| invalid("mesh", ValidationErrorKind::Missing))?;
        let name = raw.name.ok_or_else(|| invalid("name", ValidationErrorKind::Missing))?;
        let n = raw
            .networking
            .ok_or_else(|| invalid("networking", ValidationErrorKind::Missing))?;
        if n.gateway.is_some() {
            return Err(invalid(
                "networking.gateway",
                ValidationErrorKind::Unsupported("gateway dataplanes are not supported by meshcap"),
            ));
        }
        let address = ip_field("networking.address", n.address.as_deref())?
            .ok_or_else(|| invalid("networking.address", ValidationErrorKind::Missing))?;
        let mut inbound = Vec::new();
        for (i, r) in n.inbound.unwrap_or_default().into_iter().enumerate() {
            let path = format!("networking.inbound[{i}]");
            if r.service_probe.is_some() {
                return Err(invalid(
                    format!("{path}.serviceProbe"),
                    ValidationErrorKind::Unsupported(
                        "service probes are run by a control plane, which meshcap does not have",
                    ),
                ));
            }
            inbound.push(Inbound {
                port: port_field(&format!("{path}.port"), r.port)?
                    .ok_or_else(|| invalid(format!("{path}.port"), ValidationErrorKind::Missing))?,
                // Protobuf semantics: 0 means unset.
                service_port: port_field(&format!("{path}.servicePort"), r.service_port.filter(|p| *p != 0))?,
                service_address: ip_field(&format!("{path}.serviceAddress"), r.service_address.as_deref())?,
                address: ip_field(&format!("{path}.address"), r.address.as_deref())?,
                tags: r.tags.unwrap_or_default(),
                name: r.name,
                state: r
                    .state
                    .map(|s| match s.as_str() {
                        "Ready" => Ok(InboundState::Ready),
                        "NotReady" => Ok(InboundState::NotReady),
                        "Ignored" => Ok(InboundState::Ignored),
                        _ => Err(invalid(
                            format!("{path}.state"),
                            ValidationErrorKind::UnknownValue {
                                value: s.clone(),
                                expected: "Ready, NotReady, Ignored",
                            },
                        )),
                    })
                    .transpose()?,
                health_ready: r.health.map(|h| h.ready.unwrap_or(false)),
            });
        }
        let mut outbound = Vec::new();
        for (i, r) in n.outbound.unwrap_or_default().into_iter().enumerate() {
            let path = format!("networking.outbound[{i}]");
            if r.backend_ref.is_some() {
                return Err(invalid(
                    format!("{path}.backendRef"),
                    ValidationErrorKind::Unsupported(
                        "backendRef needs MeshService resolution by a control plane; use tags with kuma.io/service",
                    ),
                ));
            }
            outbound.push(Outbound {
                address: ip_field(&format!("{path}.address"), r.address.as_deref())?,
                port: port_field(&format!("{path}.port"), r.port)?
                    .ok_or_else(|| invalid(format!("{path}.port"), ValidationErrorKind::Missing))?,
                tags: r.tags.unwrap_or_default(),
            });
        }
        let transparent_proxying = match n.transparent_proxying {
            None => None,
            Some(tp) => {
                let p = "networking.transparentProxying";
                for (field, present) in [
                    ("directAccessServices", tp.direct_access_services.is_some()),
                    ("reachableServices", tp.reachable_services.is_some()),
                    ("reachableBackends", tp.reachable_backends.is_some()),
                    ("redirectPortInboundV6", tp.redirect_port_inbound_v6.is_some()),
                ] {
                    if present {
                        return Err(invalid(
                            format!("{p}.{field}"),
                            ValidationErrorKind::Unsupported(
                                "only a control plane can act on this field, and meshcap has none",
                            ),
                        ));
                    }
                }
                let inbound_path = format!("{p}.redirectPortInbound");
                let outbound_path = format!("{p}.redirectPortOutbound");
                Some(TransparentProxying {
                    redirect_port_inbound: port_field(&inbound_path, tp.redirect_port_inbound)?
                        .ok_or_else(|| invalid(inbound_path, ValidationErrorKind::Missing))?,
                    redirect_port_outbound: port_field(&outbound_path, tp.redirect_port_outbound)?
                        .ok_or_else(|| invalid(outbound_path, ValidationErrorKind::Missing))?,
                    ip_family_mode: tp
                        .ip_family_mode
                        .map(|m| match m.as_str() {
                            "DualStack" => Ok(IpFamilyMode::DualStack),
                            "IPv4" => Ok(IpFamilyMode::Ipv4),
                            "IPv6" => Ok(IpFamilyMode::Ipv6),
                            _ => Err(invalid(
                                format!("{p}.ipFamilyMode"),
                                ValidationErrorKind::UnknownValue {
                                    value: m.clone(),
                                    expected: "DualStack, IPv4, IPv6",
                                },
                            )),
                        })
                        .transpose()?,
                })
            }
        };
        let admin_port = match n.admin {
            None => None,
            Some(a) => port_field("networking.admin.port", a.port)?,
        };
        let dataplane = Dataplane {
            mesh,
            name,
            labels: raw.labels.unwrap_or_default(),
            networking: Networking {
                address,
                advertised_address: n.advertised_address,
                inbound,
                outbound,
                transparent_proxying,
                admin_port,
            },
        };
        dataplane.validate()?;
        Ok(dataplane)
    }

    /// Every rule that is not a matter of types: names, tags, duplicates, port collisions.
    fn validate(&self) -> Result<(), ValidationError> {
        use ValidationErrorKind as K;
        validate_name("mesh", &self.mesh)?;
        validate_name("name", &self.name)?;
        for (key, _) in self.labels.iter() {
            if key.is_empty() {
                return Err(ValidationError::new("labels", K::Empty));
            }
        }
        let n = &self.networking;
        concrete_ip("networking.address", n.address)?;
        if let Some(a) = &n.advertised_address
            && a.is_empty()
        {
            return Err(ValidationError::new("networking.advertisedAddress", K::Empty));
        }
        if let Some(0) = n.admin_port {
            return Err(ValidationError::new("networking.admin.port", K::InvalidPort(0)));
        }
        let tp = n.transparent_proxying;
        if let Some(tp) = tp {
            let p = "networking.transparentProxying";
            if tp.redirect_port_inbound == 0 {
                return Err(ValidationError::new(
                    format!("{p}.redirectPortInbound"),
                    K::InvalidPort(0),
                ));
            }
            if tp.redirect_port_outbound == 0 {
                return Err(ValidationError::new(
                    format!("{p}.redirectPortOutbound"),
                    K::InvalidPort(0),
                ));
            }
            if tp.redirect_port_inbound == tp.redirect_port_outbound {
                return Err(ValidationError::new(
                    format!("{p}.redirectPortOutbound"),
                    K::SameRedirectPorts(tp.redirect_port_outbound),
                ));
            }
        }
        if n.inbound.is_empty() {
            return Err(ValidationError::new("networking.inbound", K::NoInbounds));
        }
        // Listener addresses in use, with the path of their first user.
        let mut used: Vec<(SocketAddr, String)> = Vec::new();
        for (i, inbound) in n.inbound.iter().enumerate() {
            let path = format!("networking.inbound[{i}]");
            if inbound.port == 0 {
                return Err(ValidationError::new(format!("{path}.port"), K::InvalidPort(0)));
            }
            if let Some(0) = inbound.service_port {
                return Err(ValidationError::new(format!("{path}.servicePort"), K::InvalidPort(0)));
            }
            if let Some(a) = inbound.address {
                concrete_ip(&format!("{path}.address"), a)?;
            }
            if let Some(a) = inbound.service_address {
                concrete_ip(&format!("{path}.serviceAddress"), a)?;
            }
            validate_service_tags(&format!("{path}.tags"), &inbound.tags)?;
            if let Some(name) = &inbound.name
                && name.is_empty()
            {
                return Err(ValidationError::new(format!("{path}.name"), K::Empty));
            }
            if let Some(tp) = tp {
                redirect_collision(&format!("{path}.port"), inbound.port, tp)?;
            }
            let addr = n.interface(inbound).dataplane_address();
            claim(&mut used, addr, format!("{path}.port"), path)?;
        }
        for (i, outbound) in n.outbound.iter().enumerate() {
            let path = format!("networking.outbound[{i}]");
            if outbound.port == 0 {
                return Err(ValidationError::new(format!("{path}.port"), K::InvalidPort(0)));
            }
            if let Some(a) = outbound.address {
                concrete_ip(&format!("{path}.address"), a)?;
            }
            validate_service_tags(&format!("{path}.tags"), &outbound.tags)?;
            if let Some(tp) = tp {
                redirect_collision(&format!("{path}.port"), outbound.port, tp)?;
            }
            claim(&mut used, outbound.socket_address(), path.clone(), path)?;
        }
        Ok(())
    }
}

fn redirect_collision(path: &str, port: u16, tp: TransparentProxying) -> Result<(), ValidationError> {
    for (redirect, redirect_port) in [
        ("redirectPortInbound", tp.redirect_port_inbound),
        ("redirectPortOutbound", tp.redirect_port_outbound),
    ] {
        if port == redirect_port {
            return Err(ValidationError::new(
                path,
                ValidationErrorKind::RedirectPortCollision { port, redirect },
            ));
        }
    }
    Ok(())
}

fn claim(
    used: &mut Vec<(SocketAddr, String)>,
    address: SocketAddr,
    error_path: String,
    owner: String,
) -> Result<(), ValidationError> {
    if let Some((_, first)) = used.iter().find(|(a, _)| *a == address) {
        return Err(ValidationError::new(
            error_path,
            ValidationErrorKind::DuplicateAddress {
                address,
                first: first.clone(),
            },
        ));
    }
    used.push((address, owner));
    Ok(())
}

fn validate_name(path: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(path, ValidationErrorKind::Empty));
    }
    if let Some(character) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(ValidationError::new(
            path,
            ValidationErrorKind::InvalidCharacter {
                value: value.to_string(),
                character,
            },
        ));
    }
    Ok(())
}

fn validate_service_tags(path: &str, tags: &Tags) -> Result<(), ValidationError> {
    if tags.service().is_none() {
        return Err(ValidationError::new(path, ValidationErrorKind::MissingServiceTag));
    }
    tags.validate(path, &[])?;
    if let Some(p) = tags.protocol()
        && Protocol::from_tag(p).is_none()
    {
        return Err(ValidationError::new(
            format!("{path}[\"kuma.io/protocol\"]"),
            ValidationErrorKind::InvalidProtocol(p.to_string()),
        ));
    }
    Ok(())
}

fn concrete_ip(path: &str, ip: IpAddr) -> Result<(), ValidationError> {
    if ip.is_unspecified() {
        return Err(ValidationError::new(path, ValidationErrorKind::UnspecifiedAddress(ip)));
    }
    Ok(())
}

fn port_field(path: &str, value: Option<i64>) -> Result<Option<u16>, Error> {
    match value {
        None => Ok(None),
        Some(p) => match u16::try_from(p) {
            Ok(port) if port != 0 => Ok(Some(port)),
            _ => Err(invalid(path, ValidationErrorKind::InvalidPort(p))),
        },
    }
}

fn ip_field(path: &str, value: Option<&str>) -> Result<Option<IpAddr>, Error> {
    value
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| invalid(path, ValidationErrorKind::NotAnIpAddress(s.to_string())))
        })
        .transpose()
}

impl FromStr for Dataplane {
    type Err = Error;

    /// JSON when the text starts with `{`, YAML otherwise.
    fn from_str(text: &str) -> Result<Dataplane, Error> {
        Dataplane::from_raw(parse::from_format(WHAT, parse::sniff(text), text)?)
    }
}

impl Serialize for Dataplane {
    /// Kuma's universal form (`type`, `mesh`, `name`, `networking` with camelCase fields).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(serializer)
    }
}

impl Networking {
    /// `networking.address`: the dataplane's IP.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// `networking.advertisedAddress`, when set (kept, not used: it only matters to other proxies).
    pub fn advertised_address(&self) -> Option<&str> {
        self.advertised_address.as_deref()
    }

    /// The inbounds, in order.
    pub fn inbound(&self) -> &[Inbound] {
        &self.inbound
    }

    /// The outbounds, in order.
    pub fn outbound(&self) -> &[Outbound] {
        &self.outbound
    }

    /// `transparentProxying`, when set.
    pub fn transparent_proxying(&self) -> Option<&TransparentProxying> {
        self.transparent_proxying.as_ref()
    }

    /// `admin.port`, when set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// The derived addresses of an inbound of this Dataplane.
    pub fn interface(&self, inbound: &Inbound) -> InboundInterface {
        let dataplane_ip = inbound.address.unwrap_or(self.address);
        InboundInterface {
            dataplane: SocketAddr::new(dataplane_ip, inbound.port),
            workload: SocketAddr::new(
                inbound.service_address.unwrap_or(dataplane_ip),
                inbound.service_port.unwrap_or(inbound.port),
            ),
        }
    }
}

impl Inbound {
    /// An inbound on `port` with `tags` (which must hold `kuma.io/service`).
    pub fn new(port: u16, tags: Tags) -> Inbound {
        Inbound {
            port,
            service_port: None,
            service_address: None,
            address: None,
            tags,
            name: None,
            state: None,
            health_ready: None,
        }
    }

    /// With `servicePort`: the application port, when it differs from `port`.
    #[must_use]
    pub fn with_service_port(mut self, port: u16) -> Inbound {
        self.service_port = Some(port);
        self
    }

    /// With `serviceAddress`: the application IP, when it is not the dataplane IP.
    #[must_use]
    pub fn with_service_address(mut self, address: IpAddr) -> Inbound {
        self.service_address = Some(address);
        self
    }

    /// With `address`: the listener IP, when it is not `networking.address`.
    #[must_use]
    pub fn with_address(mut self, address: IpAddr) -> Inbound {
        self.address = Some(address);
        self
    }

    /// With `name` (the port name).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Inbound {
        self.name = Some(name.into());
        self
    }

    /// With `state`.
    #[must_use]
    pub fn with_state(mut self, state: InboundState) -> Inbound {
        self.state = Some(state);
        self
    }

    /// `port`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `servicePort`, when set.
    pub fn service_port(&self) -> Option<u16> {
        self.service_port
    }

    /// `serviceAddress`, when set.
    pub fn service_address(&self) -> Option<IpAddr> {
        self.service_address
    }

    /// `address`, when set.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// The tags.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The `kuma.io/service` tag (always present in a valid Dataplane).
    pub fn service(&self) -> &str {
        self.tags.service().unwrap_or_default()
    }

    /// `name`, when set.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `state`, when set.
    pub fn state(&self) -> Option<InboundState> {
        self.state
    }

    /// `health.ready`, when a `health` block is present.
    pub fn health_ready(&self) -> Option<bool> {
        self.health_ready
    }

    /// The protocol from `kuma.io/protocol` (default `tcp`).
    pub fn protocol(&self) -> Protocol {
        self.tags.protocol().and_then(Protocol::from_tag).unwrap_or_default()
    }

    /// Whether Kuma generates a listener and cluster for it: not `Ignored`, not the service-less port 49151.
    pub fn is_served(&self) -> bool {
        self.state != Some(InboundState::Ignored) && self.port != SERVICELESS_PORT
    }
}

impl Outbound {
    /// An outbound on `port` with `tags` (which must hold `kuma.io/service`); the address defaults to
    /// 127.0.0.1.
    pub fn new(port: u16, tags: Tags) -> Outbound {
        Outbound {
            address: None,
            port,
            tags,
        }
    }

    /// With `address`.
    #[must_use]
    pub fn with_address(mut self, address: IpAddr) -> Outbound {
        self.address = Some(address);
        self
    }

    /// `address`, when set.
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// `port`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listener address: `address` (default 127.0.0.1) and `port`.
    pub fn socket_address(&self) -> SocketAddr {
        SocketAddr::new(self.address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), self.port)
    }

    /// The tags.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The `kuma.io/service` tag (always present in a valid Dataplane).
    pub fn service(&self) -> &str {
        self.tags.service().unwrap_or_default()
    }

    /// The protocol from `kuma.io/protocol` (default `tcp`).
    pub fn protocol(&self) -> Protocol {
        self.tags.protocol().and_then(Protocol::from_tag).unwrap_or_default()
    }
}

impl TransparentProxying {
    /// Transparent proxying with the two redirect ports (Kuma's defaults are 15006 and 15001).
    pub fn new(redirect_port_inbound: u16, redirect_port_outbound: u16) -> TransparentProxying {
        TransparentProxying {
            redirect_port_inbound,
            redirect_port_outbound,
            ip_family_mode: None,
        }
    }

    /// With `ipFamilyMode`.
    #[must_use]
    pub fn with_ip_family_mode(mut self, mode: IpFamilyMode) -> TransparentProxying {
        self.ip_family_mode = Some(mode);
        self
    }

    /// `redirectPortInbound`: where PREROUTING-captured traffic lands.
    pub fn redirect_port_inbound(&self) -> u16 {
        self.redirect_port_inbound
    }

    /// `redirectPortOutbound`: where OUTPUT-captured traffic lands.
    pub fn redirect_port_outbound(&self) -> u16 {
        self.redirect_port_outbound
    }

    /// `ipFamilyMode` as written (`None` when absent).
    pub fn ip_family_mode(&self) -> Option<IpFamilyMode> {
        self.ip_family_mode
    }

    /// Whether the IPv6 passthrough listeners and clusters exist (every mode but IPv4).
    pub fn ipv6_enabled(&self) -> bool {
        self.ip_family_mode != Some(IpFamilyMode::Ipv4)
    }
}

/// Builds a [`Dataplane`]; [`DataplaneBuilder::build`] validates exactly as parsing does.
///
/// ```
/// use meshcap_envoy::{Dataplane, Inbound, Tags, TransparentProxying};
///
/// let dp = Dataplane::builder("default", "backend-01", "10.244.0.6".parse()?)
///     .inbound(Inbound::new(5000, Tags::new().with("kuma.io/service", "backend")))
///     .transparent_proxying(TransparentProxying::new(15006, 15001))
///     .build()?;
/// assert_eq!(dp.networking().inbound().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DataplaneBuilder {
    dataplane: Dataplane,
}

impl DataplaneBuilder {
    /// Add a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> DataplaneBuilder {
        self.dataplane.labels.insert(key, value);
        self
    }

    /// Set `advertisedAddress`.
    pub fn advertised_address(mut self, address: impl Into<String>) -> DataplaneBuilder {
        self.dataplane.networking.advertised_address = Some(address.into());
        self
    }

    /// Add an inbound.
    pub fn inbound(mut self, inbound: Inbound) -> DataplaneBuilder {
        self.dataplane.networking.inbound.push(inbound);
        self
    }

    /// Add an outbound.
    pub fn outbound(mut self, outbound: Outbound) -> DataplaneBuilder {
        self.dataplane.networking.outbound.push(outbound);
        self
    }

    /// Set transparent proxying.
    pub fn transparent_proxying(mut self, tp: TransparentProxying) -> DataplaneBuilder {
        self.dataplane.networking.transparent_proxying = Some(tp);
        self
    }

    /// Set the admin port.
    pub fn admin_port(mut self, port: u16) -> DataplaneBuilder {
        self.dataplane.networking.admin_port = Some(port);
        self
    }

    /// Validate and return the Dataplane.
    ///
    /// # Errors
    /// [`Error::Invalid`] with the field path, as when parsing.
    pub fn build(self) -> Result<Dataplane, Error> {
        self.dataplane.validate()?;
        Ok(self.dataplane)
    }
}

// --- the wire form ---------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDataplane {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    type_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creation_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modification_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    networking: Option<RawNetworking>,
    #[serde(skip_serializing)]
    metrics: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    probes: Option<IgnoredAny>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNetworking {
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertised_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inbound: Option<Vec<RawInbound>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbound: Option<Vec<RawOutbound>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transparent_proxying: Option<RawTransparentProxying>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<RawAdmin>,
    #[serde(skip_serializing)]
    gateway: Option<IgnoredAny>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawInbound {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<RawHealth>,
    #[serde(skip_serializing)]
    service_probe: Option<IgnoredAny>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(skip_serializing_if = "Option::is_none")]
    ready: Option<bool>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOutbound {
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
    #[serde(skip_serializing)]
    backend_ref: Option<IgnoredAny>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTransparentProxying {
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_port_inbound: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_port_outbound: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_family_mode: Option<String>,
    #[serde(skip_serializing)]
    direct_access_services: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    reachable_services: Option<IgnoredAny>,
    #[serde(skip_serializing)]
    reachable_backends: Option<IgnoredAny>,
    #[serde(rename = "redirectPortInboundV6", skip_serializing)]
    redirect_port_inbound_v6: Option<IgnoredAny>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<i64>,
}

impl Dataplane {
    fn to_raw(&self) -> RawDataplane {
        let n = &self.networking;
        RawDataplane {
            type_: Some("Dataplane".to_string()),
            mesh: Some(self.mesh.clone()),
            name: Some(self.name.clone()),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            creation_time: None,
            modification_time: None,
            networking: Some(RawNetworking {
                address: Some(n.address.to_string()),
                advertised_address: n.advertised_address.clone(),
                inbound: Some(
                    n.inbound
                        .iter()
                        .map(|i| RawInbound {
                            port: Some(i64::from(i.port)),
                            service_port: i.service_port.map(i64::from),
                            service_address: i.service_address.map(|a| a.to_string()),
                            address: i.address.map(|a| a.to_string()),
                            tags: Some(i.tags.clone()),
                            name: i.name.clone(),
                            state: i.state.map(|s| s.as_str().to_string()),
                            health: i.health_ready.map(|ready| RawHealth { ready: Some(ready) }),
                            service_probe: None,
                        })
                        .collect(),
                ),
                outbound: (!n.outbound.is_empty()).then(|| {
                    n.outbound
                        .iter()
                        .map(|o| RawOutbound {
                            address: o.address.map(|a| a.to_string()),
                            port: Some(i64::from(o.port)),
                            tags: Some(o.tags.clone()),
                            backend_ref: None,
                        })
                        .collect()
                }),
                transparent_proxying: n.transparent_proxying.map(|tp| RawTransparentProxying {
                    redirect_port_inbound: Some(i64::from(tp.redirect_port_inbound)),
                    redirect_port_outbound: Some(i64::from(tp.redirect_port_outbound)),
                    ip_family_mode: tp.ip_family_mode.map(|m| m.as_str().to_string()),
                    direct_access_services: None,
                    reachable_services: None,
                    reachable_backends: None,
                    redirect_port_inbound_v6: None,
                }),
                admin: n.admin_port.map(|p| RawAdmin {
                    port: Some(i64::from(p)),
                }),
                gateway: None,
            }),
            metrics: None,
            probes: None,
        }
    }
}
