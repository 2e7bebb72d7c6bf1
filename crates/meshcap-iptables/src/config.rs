//! [`Config`]: every option of `kumactl install transparent-proxy`, as values, with Kuma's defaults; its
//! [`ConfigBuilder`] validates and names the bad value. [`HostFacts`] carries what Kuma probes at run
//! time (loopback name, `DOCKER_OUTPUT`, available tables and matches).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{ConfigError, ValueError};
use crate::model::{LogLevel, Protocol};
use crate::types::{Address, ChainName, Family, Interface, Port, PortList, PortRange, UidRange};

/// Kuma's default chain prefix.
pub const KUMA_CHAIN_PREFIX: &str = "KUMA_MESH";
/// Kuma's default comment prefix (rules are found by it on cleanup).
pub const KUMA_COMMENT_PREFIX: &str = "kuma/mesh/transparent/proxy";
/// Kuma's default kuma-dp UID.
pub const KUMA_DP_UID: u32 = 5678;
/// Kuma's default inbound redirect port (Envoy's inbound passthrough listener).
pub const KUMA_INBOUND_PORT: u16 = 15006;
/// Kuma's default outbound redirect port (Envoy's outbound passthrough listener).
pub const KUMA_OUTBOUND_PORT: u16 = 15001;
/// Kuma's default DNS proxy port.
pub const KUMA_DNS_PORT: u16 = 15053;
/// Kuma cuts every comment (prefix included) to this many bytes.
pub const KUMA_COMMENT_MAX: usize = 254;

/// Which families get rules (`--ip-family-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IpFamilyMode {
    /// IPv4 and IPv6 (Kuma's default).
    #[default]
    DualStack,
    /// IPv4 only: ip6tables is never touched.
    Ipv4,
}

impl IpFamilyMode {
    /// The families of this mode, IPv4 first.
    pub fn families(self) -> &'static [Family] {
        match self {
            IpFamilyMode::DualStack => &Family::ALL,
            IpFamilyMode::Ipv4 => &[Family::V4],
        }
    }
}

impl FromStr for IpFamilyMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<IpFamilyMode, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "" | "dualstack" => Ok(IpFamilyMode::DualStack),
            "ipv4" => Ok(IpFamilyMode::Ipv4),
            _ => Err(ConfigError::IpFamilyMode { value: s.to_string() }),
        }
    }
}

/// How DNS is captured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DnsMode {
    /// No DNS capture (Kuma's default).
    #[default]
    Off,
    /// `--redirect-dns`: UDP/53 to these resolvers (from resolv.conf) goes to the DNS proxy. A family
    /// without resolvers gets no DNS rules.
    Resolvers(Vec<IpAddr>),
    /// `--redirect-all-dns-traffic`: all UDP/53 goes to the DNS proxy.
    CaptureAll,
}

/// The protocols of a UID exclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExclusionProtocol {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
}

impl ExclusionProtocol {
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            ExclusionProtocol::Tcp => Protocol::Tcp,
            ExclusionProtocol::Udp => Protocol::Udp,
        }
    }
}

/// One `--exclude-outbound-ports-for-uids` entry, `[protocol:][ports:]uids`: outbound traffic of
/// these UIDs to these ports is not captured.
///
/// ```
/// use meshcap_iptables::UidExclusion;
///
/// let x: UidExclusion = "tcp:1900,1000-2000:106-108".parse()?;
/// assert_eq!(x.ports().to_string(), "1900,1000:2000");
/// assert_eq!(x.uids().to_string(), "106:108");
/// let all: UidExclusion = "123".parse()?; // tcp and udp, every port
/// assert_eq!(all.protocols().len(), 2);
/// # Ok::<(), meshcap_iptables::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UidExclusion {
    protocols: Vec<ExclusionProtocol>,
    ports: PortList,
    uids: UidRange,
    text: String,
}

impl UidExclusion {
    /// The protocols, one rule each, in the given order.
    pub fn protocols(&self) -> &[ExclusionProtocol] {
        &self.protocols
    }

    /// The destination ports (`1:65535` for `*`).
    pub fn ports(&self) -> &PortList {
        &self.ports
    }

    /// The UIDs.
    pub fn uids(&self) -> UidRange {
        self.uids
    }

    /// The entry as it was given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for UidExclusion {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<UidExclusion, ConfigError> {
        let bad = |reason: String| ConfigError::UidExclusion {
            value: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let (proto, ports, uids) = match parts.as_slice() {
            [u] => ("*", "*", *u),
            [p, u] => ("*", *p, *u),
            [pr, p, u] => (*pr, *p, *u),
            _ => return Err(bad("expected [protocol:][ports:]uids".into())),
        };
        let mut protocols = Vec::new();
        if proto.is_empty() || proto == "*" {
            protocols = vec![ExclusionProtocol::Tcp, ExclusionProtocol::Udp];
        } else {
            for p in proto.split(',') {
                let p = match p.trim().to_ascii_lowercase().as_str() {
                    "tcp" => vec![ExclusionProtocol::Tcp],
                    "udp" => vec![ExclusionProtocol::Udp],
                    "*" | "" => vec![ExclusionProtocol::Tcp, ExclusionProtocol::Udp],
                    other => return Err(bad(format!("unknown protocol `{other}` (tcp, udp or *)"))),
                };
                for p in p {
                    if !protocols.contains(&p) {
                        protocols.push(p);
                    }
                }
            }
        }
        let ports = if ports.is_empty() || ports == "*" {
            PortList::single(PortRange::all())
        } else {
            ports.parse::<PortList>().map_err(|e| bad(e.to_string()))?
        };
        if uids.is_empty() || uids == "*" || uids.contains(',') {
            return Err(bad("uids must be one uid or one range like 106-108".into()));
        }
        let uids = uids.parse::<UidRange>().map_err(|e| bad(e.to_string()))?;
        Ok(UidExclusion {
            protocols,
            ports,
            uids,
            text: s.to_string(),
        })
    }
}

/// One `--vnet IFACE:CIDR` entry: TCP from that interface not bound for the CIDR goes straight to the
/// outbound listener, its UDP DNS to the DNS proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vnet {
    interface: Interface,
    network: Address,
}

impl Vnet {
    /// A virtual network.
    pub fn new(interface: Interface, network: Address) -> Vnet {
        Vnet { interface, network }
    }

    /// The interface (may end with `+`).
    pub fn interface(&self) -> &Interface {
        &self.interface
    }

    /// The network as typed.
    pub fn network(&self) -> Address {
        self.network
    }
}

/// Parses `IFACE:CIDR`, splitting at the first colon (`iface:::1/64` works).
impl FromStr for Vnet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Vnet, ConfigError> {
        let bad = |reason: String| ConfigError::Vnet {
            value: s.to_string(),
            reason,
        };
        let (iface, cidr) = s.split_once(':').ok_or_else(|| bad("expected IFACE:CIDR".into()))?;
        let interface = Interface::new(iface).map_err(|e| bad(e.to_string()))?;
        if !cidr.contains('/') {
            return Err(bad(format!("`{cidr}` is not a CIDR (ADDR/LEN)")));
        }
        let network = cidr.parse::<Address>().map_err(|e| bad(e.to_string()))?;
        if network.prefix_len() == 0 {
            return Err(bad(format!(
                "`{cidr}` excludes every destination, so nothing would be redirected (and iptables-nft rejects the rule)"
            )));
        }
        Ok(Vnet { interface, network })
    }
}

/// What Kuma finds out on the host before it renders rules. [`Default`] is a host with everything
/// available, no `DOCKER_OUTPUT` chain and loopback `lo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    loopback: Interface,
    docker_output: bool,
    comment_match: bool,
    conntrack_zones: bool,
    mangle: bool,
}

impl Default for HostFacts {
    fn default() -> HostFacts {
        HostFacts {
            loopback: Interface::loopback(),
            docker_output: false,
            comment_match: true,
            conntrack_zones: true,
            mangle: true,
        }
    }
}

impl HostFacts {
    /// The loopback interface name (`-o lo`).
    pub fn loopback(&self) -> &Interface {
        &self.loopback
    }

    /// Whether the nat table has Docker's `DOCKER_OUTPUT` chain (kuma-dp's own DNS then jumps to it).
    pub fn docker_output(&self) -> bool {
        self.docker_output
    }

    /// Whether the `comment` match is available.
    pub fn comment_match(&self) -> bool {
        self.comment_match
    }

    /// Whether the raw table, `conntrack` match and `CT` target are available for DNS zone splitting.
    pub fn conntrack_zones(&self) -> bool {
        self.conntrack_zones
    }

    /// Whether the mangle table is available (for `--drop-invalid-packets`).
    pub fn mangle(&self) -> bool {
        self.mangle
    }

    /// Set the loopback interface name.
    pub fn with_loopback(mut self, lo: Interface) -> HostFacts {
        self.loopback = lo;
        self
    }

    /// Set whether `DOCKER_OUTPUT` exists.
    pub fn with_docker_output(mut self, present: bool) -> HostFacts {
        self.docker_output = present;
        self
    }

    /// Set whether the comment match is available.
    pub fn with_comment_match(mut self, available: bool) -> HostFacts {
        self.comment_match = available;
        self
    }

    /// Set whether conntrack zones are available.
    pub fn with_conntrack_zones(mut self, available: bool) -> HostFacts {
        self.conntrack_zones = available;
        self
    }

    /// Set whether the mangle table is available.
    pub fn with_mangle(mut self, available: bool) -> HostFacts {
        self.mangle = available;
        self
    }
}

/// The settings of one direction (inbound or outbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direction {
    pub(crate) enabled: bool,
    pub(crate) port: Port,
    pub(crate) include_ports: Vec<Port>,
    pub(crate) exclude_ports: Vec<Port>,
    pub(crate) exclude_ips: Vec<Address>,
    pub(crate) insert_instead_of_append: bool,
    pub(crate) chain: ChainName,
    pub(crate) redirect_chain: ChainName,
}

impl Direction {
    /// Whether the direction is captured.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The redirect port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Only these TCP ports are captured (when non-empty; exclusions are then ignored).
    pub fn include_ports(&self) -> &[Port] {
        &self.include_ports
    }

    /// TCP ports not captured.
    pub fn exclude_ports(&self) -> &[Port] {
        &self.exclude_ports
    }

    /// Addresses not captured (sources inbound, destinations outbound), both families.
    pub fn exclude_ips(&self) -> &[Address] {
        &self.exclude_ips
    }

    /// Whether the jump from the built-in chain is inserted at the top instead of appended.
    pub fn insert_instead_of_append(&self) -> bool {
        self.insert_instead_of_append
    }

    /// The dispatch chain (`KUMA_MESH_INBOUND` / `KUMA_MESH_OUTBOUND`).
    pub fn chain(&self) -> &ChainName {
        &self.chain
    }

    /// The redirect chain (`KUMA_MESH_INBOUND_REDIRECT` / `KUMA_MESH_OUTBOUND_REDIRECT`).
    pub fn redirect_chain(&self) -> &ChainName {
        &self.redirect_chain
    }
}

/// How the installer retries and waits for the xtables lock (Kuma's `wait`, `waitInterval`, `retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Kuma: 4).
    pub max_retries: u32,
    /// Pause between attempts (Kuma: 2 s).
    pub sleep_between_retries: Duration,
    /// `--wait=N` seconds for the legacy backend's lock (Kuma: 5; 0 omits the flag).
    pub wait_seconds: u32,
    /// `--wait-interval=N` microseconds on legacy when non-zero (Kuma: 0).
    pub wait_interval_micros: u32,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 4,
            sleep_between_retries: Duration::from_secs(2),
            wait_seconds: 5,
            wait_interval_micros: 0,
        }
    }
}

/// The transparent-proxy configuration: every option of `kumactl install transparent-proxy`, as
/// values. [`Config::default`] is Kuma's default (UID 5678, ports 15006/15001/15053, `KUMA_MESH_*`
/// chains, comments on, dual stack).
///
/// ```
/// use meshcap_iptables::{Config, Family, RuleSet};
///
/// let config = Config::builder()
///     .proxy_uid(5678)
///     .exclude_inbound_ports("22")?
///     .exclude_outbound_ips(["10.0.0.1", "fd00::/8"])?
///     .build()?;
/// let v4 = RuleSet::build(&config, Family::V4);
/// assert!(v4.render_restore().contains("-p tcp --dport 22 -j RETURN"));
/// # Ok::<(), meshcap_iptables::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) proxy_uid: u32,
    pub(crate) ip_family_mode: IpFamilyMode,
    pub(crate) inbound: Direction,
    pub(crate) outbound: Direction,
    pub(crate) exclude_outbound_ports_for_uids: Vec<UidExclusion>,
    pub(crate) dns: DnsMode,
    pub(crate) dns_port: Port,
    pub(crate) dns_conntrack_zone_split: bool,
    pub(crate) vnets: Vec<Vnet>,
    pub(crate) drop_invalid_packets: bool,
    pub(crate) log: Option<LogLevel>,
    pub(crate) comments: bool,
    pub(crate) chain_prefix: String,
    pub(crate) comment_prefix: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) verbose: bool,
}

impl Default for Config {
    fn default() -> Config {
        ConfigBuilder::default()
            .build()
            .unwrap_or_else(|e| unreachable!("the Kuma defaults are valid: {e}"))
    }
}

impl Config {
    /// A builder starting from Kuma's defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// A builder starting from this configuration (e.g. to apply command-line flags over files).
    pub fn to_builder(&self) -> ConfigBuilder {
        ConfigBuilder::from(self)
    }

    /// The kuma-dp UID (`--kuma-dp-user`).
    pub fn proxy_uid(&self) -> u32 {
        self.proxy_uid
    }

    /// The IP family mode.
    pub fn ip_family_mode(&self) -> IpFamilyMode {
        self.ip_family_mode
    }

    /// The families that get rules.
    pub fn families(&self) -> &'static [Family] {
        self.ip_family_mode.families()
    }

    /// Inbound settings.
    pub fn inbound(&self) -> &Direction {
        &self.inbound
    }

    /// Outbound settings.
    pub fn outbound(&self) -> &Direction {
        &self.outbound
    }

    /// `--exclude-outbound-ports-for-uids` entries.
    pub fn exclude_outbound_ports_for_uids(&self) -> &[UidExclusion] {
        &self.exclude_outbound_ports_for_uids
    }

    /// DNS capture mode.
    pub fn dns(&self) -> &DnsMode {
        &self.dns
    }

    /// DNS proxy port.
    pub fn dns_port(&self) -> Port {
        self.dns_port
    }

    /// Whether DNS conntrack zones are split (not `--skip-dns-conntrack-zone-split`).
    pub fn dns_conntrack_zone_split(&self) -> bool {
        self.dns_conntrack_zone_split
    }

    /// Virtual networks, sorted by interface name, one per interface.
    pub fn vnets(&self) -> &[Vnet] {
        &self.vnets
    }

    /// Whether INVALID packets are dropped in mangle PREROUTING.
    pub fn drop_invalid_packets(&self) -> bool {
        self.drop_invalid_packets
    }

    /// The LOG level when `--iptables-logs` is on.
    pub fn log(&self) -> Option<LogLevel> {
        self.log
    }

    /// Whether rules carry comments.
    pub fn comments(&self) -> bool {
        self.comments
    }

    /// The chain prefix (`KUMA_MESH`).
    pub fn chain_prefix(&self) -> &str {
        &self.chain_prefix
    }

    /// The comment prefix (`kuma/mesh/transparent/proxy`).
    pub fn comment_prefix(&self) -> &str {
        &self.comment_prefix
    }

    /// Retry and lock-wait settings for the installer.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Whether restore files use the verbose spelling.
    pub fn verbose(&self) -> bool {
        self.verbose
    }
}

/// Builds a [`Config`] from Kuma's defaults; setters take values in kumactl's syntax where kumactl
/// takes strings, and [`build`](Self::build) validates the whole.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub(crate) proxy_user: Option<String>,
    pub(crate) proxy_uid: u32,
    pub(crate) ip_family_mode: IpFamilyMode,
    pub(crate) inbound_enabled: bool,
    pub(crate) inbound_port: Port,
    pub(crate) inbound_include: Vec<Port>,
    pub(crate) inbound_exclude: Vec<Port>,
    pub(crate) inbound_exclude_ips: Vec<Address>,
    pub(crate) inbound_exclude_uids: Vec<String>,
    pub(crate) inbound_insert: bool,
    pub(crate) outbound_enabled: bool,
    pub(crate) outbound_port: Port,
    pub(crate) outbound_include: Vec<Port>,
    pub(crate) outbound_exclude: Vec<Port>,
    pub(crate) outbound_exclude_ips: Vec<Address>,
    pub(crate) outbound_exclude_uids: Vec<UidExclusion>,
    pub(crate) outbound_insert: bool,
    pub(crate) dns_enabled: bool,
    pub(crate) dns_capture_all: bool,
    pub(crate) dns_redirect_called: bool,
    pub(crate) dns_capture_called: bool,
    pub(crate) dns_resolvers: Vec<IpAddr>,
    pub(crate) dns_port: Port,
    pub(crate) dns_skip_zone_split: bool,
    pub(crate) vnets: Vec<Vnet>,
    pub(crate) drop_invalid: bool,
    pub(crate) log_enabled: bool,
    pub(crate) log_level: LogLevel,
    pub(crate) comments_disabled: bool,
    pub(crate) chain_prefix: String,
    pub(crate) chain_names: [String; 4],
    pub(crate) comment_prefix: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) verbose: bool,
    /// `redirect.dns.resolvConfigPath` from a configuration file (recorded, never read here).
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    pub(crate) resolv_conf_path: Option<String>,
}

impl Default for ConfigBuilder {
    fn default() -> ConfigBuilder {
        ConfigBuilder {
            proxy_user: None,
            proxy_uid: KUMA_DP_UID,
            ip_family_mode: IpFamilyMode::DualStack,
            inbound_enabled: true,
            inbound_port: Port::known(KUMA_INBOUND_PORT),
            inbound_include: Vec::new(),
            inbound_exclude: Vec::new(),
            inbound_exclude_ips: Vec::new(),
            inbound_exclude_uids: Vec::new(),
            inbound_insert: false,
            outbound_enabled: true,
            outbound_port: Port::known(KUMA_OUTBOUND_PORT),
            outbound_include: Vec::new(),
            outbound_exclude: Vec::new(),
            outbound_exclude_ips: Vec::new(),
            outbound_exclude_uids: Vec::new(),
            outbound_insert: false,
            dns_enabled: false,
            dns_capture_all: false,
            dns_redirect_called: false,
            dns_capture_called: false,
            dns_resolvers: Vec::new(),
            dns_port: Port::known(KUMA_DNS_PORT),
            dns_skip_zone_split: false,
            vnets: Vec::new(),
            drop_invalid: false,
            log_enabled: false,
            log_level: LogLevel::DEBUG,
            comments_disabled: false,
            chain_prefix: KUMA_CHAIN_PREFIX.to_string(),
            chain_names: [
                "INBOUND".into(),
                "OUTBOUND".into(),
                "INBOUND_REDIRECT".into(),
                "OUTBOUND_REDIRECT".into(),
            ],
            comment_prefix: KUMA_COMMENT_PREFIX.to_string(),
            retry: RetryPolicy::default(),
            verbose: false,
            resolv_conf_path: None,
        }
    }
}

impl From<&Config> for ConfigBuilder {
    fn from(c: &Config) -> ConfigBuilder {
        let base = |full: &ChainName| {
            full.as_str()
                .strip_prefix(&format!("{}_", c.chain_prefix))
                .unwrap_or(full.as_str())
                .to_string()
        };
        let (dns_enabled, dns_capture_all, dns_resolvers) = match &c.dns {
            DnsMode::Off => (false, false, Vec::new()),
            DnsMode::Resolvers(r) => (true, false, r.clone()),
            DnsMode::CaptureAll => (true, true, Vec::new()),
        };
        ConfigBuilder {
            proxy_user: None,
            proxy_uid: c.proxy_uid,
            ip_family_mode: c.ip_family_mode,
            inbound_enabled: c.inbound.enabled,
            inbound_port: c.inbound.port,
            inbound_include: c.inbound.include_ports.clone(),
            inbound_exclude: c.inbound.exclude_ports.clone(),
            inbound_exclude_ips: c.inbound.exclude_ips.clone(),
            inbound_exclude_uids: Vec::new(),
            inbound_insert: c.inbound.insert_instead_of_append,
            outbound_enabled: c.outbound.enabled,
            outbound_port: c.outbound.port,
            outbound_include: c.outbound.include_ports.clone(),
            outbound_exclude: c.outbound.exclude_ports.clone(),
            outbound_exclude_ips: c.outbound.exclude_ips.clone(),
            outbound_exclude_uids: c.exclude_outbound_ports_for_uids.clone(),
            outbound_insert: c.outbound.insert_instead_of_append,
            dns_enabled,
            dns_capture_all,
            dns_redirect_called: false,
            dns_capture_called: false,
            dns_resolvers,
            dns_port: c.dns_port,
            dns_skip_zone_split: !c.dns_conntrack_zone_split,
            vnets: c.vnets.clone(),
            drop_invalid: c.drop_invalid_packets,
            log_enabled: c.log.is_some(),
            log_level: c.log.unwrap_or(LogLevel::DEBUG),
            comments_disabled: !c.comments,
            chain_prefix: c.chain_prefix.clone(),
            chain_names: [
                base(&c.inbound.chain),
                base(&c.outbound.chain),
                base(&c.inbound.redirect_chain),
                base(&c.outbound.redirect_chain),
            ],
            comment_prefix: c.comment_prefix.clone(),
            retry: c.retry,
            verbose: c.verbose,
            resolv_conf_path: None,
        }
    }
}

fn value(option: &'static str) -> impl Fn(ValueError) -> ConfigError {
    move |source| ConfigError::Value { option, source }
}

/// Split comma lists inside each item (`["10.0.0.1,192.168.0.0/24", "fd00::/8"]`), dropping blanks.
fn split_lists<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    items
        .into_iter()
        .flat_map(|s| {
            s.as_ref()
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn parse_ports(option: &'static str, list: &str) -> Result<Vec<Port>, ConfigError> {
    split_lists([list])
        .iter()
        .map(|p| p.parse::<Port>().map_err(value(option)))
        .collect()
}

fn parse_addresses<I, S>(option: &'static str, items: I) -> Result<Vec<Address>, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    split_lists(items)
        .iter()
        .map(|a| a.parse::<Address>().map_err(value(option)))
        .collect()
}

impl ConfigBuilder {
    /// `--kuma-dp-user` as a UID.
    pub fn proxy_uid(mut self, uid: u32) -> ConfigBuilder {
        self.proxy_uid = uid;
        self.proxy_user = None;
        self
    }

    /// `--kuma-dp-user` as given: a numeric UID is taken, a user name stays pending until the caller
    /// resolves it with [`proxy_uid`](Self::proxy_uid) (the library reads no `/etc/passwd`);
    /// [`build`](Self::build) fails while a name is pending.
    pub fn kuma_dp_user(mut self, user: &str) -> ConfigBuilder {
        match user.trim().parse::<u32>() {
            Ok(uid) => {
                self.proxy_uid = uid;
                self.proxy_user = None;
            }
            Err(_) if user.trim().is_empty() => self.proxy_user = None,
            Err(_) => self.proxy_user = Some(user.trim().to_string()),
        }
        self
    }

    /// A user name given to [`kuma_dp_user`](Self::kuma_dp_user) that still needs resolving.
    pub fn pending_user_name(&self) -> Option<&str> {
        self.proxy_user.as_deref()
    }

    /// `--ip-family-mode`.
    pub fn ip_family_mode(mut self, mode: IpFamilyMode) -> ConfigBuilder {
        self.ip_family_mode = mode;
        self
    }

    /// `--redirect-inbound` (false: inbound traffic is not captured, e.g. for gateways).
    pub fn redirect_inbound(mut self, enabled: bool) -> ConfigBuilder {
        self.inbound_enabled = enabled;
        self
    }

    /// `redirect.outbound.enabled` (no kumactl flag).
    pub fn redirect_outbound(mut self, enabled: bool) -> ConfigBuilder {
        self.outbound_enabled = enabled;
        self
    }

    /// `--redirect-inbound-port`.
    pub fn redirect_inbound_port(mut self, port: Port) -> ConfigBuilder {
        self.inbound_port = port;
        self
    }

    /// `--redirect-outbound-port`.
    pub fn redirect_outbound_port(mut self, port: Port) -> ConfigBuilder {
        self.outbound_port = port;
        self
    }

    /// `--exclude-inbound-ports` (comma list; replaces earlier values).
    pub fn exclude_inbound_ports(mut self, list: &str) -> Result<ConfigBuilder, ConfigError> {
        self.inbound_exclude = parse_ports("--exclude-inbound-ports", list)?;
        Ok(self)
    }

    /// `--exclude-outbound-ports` (comma list; replaces earlier values).
    pub fn exclude_outbound_ports(mut self, list: &str) -> Result<ConfigBuilder, ConfigError> {
        self.outbound_exclude = parse_ports("--exclude-outbound-ports", list)?;
        Ok(self)
    }

    /// `redirect.inbound.includePorts` (comma list).
    pub fn include_inbound_ports(mut self, list: &str) -> Result<ConfigBuilder, ConfigError> {
        self.inbound_include = parse_ports("redirect.inbound.includePorts", list)?;
        Ok(self)
    }

    /// `redirect.outbound.includePorts` (comma list).
    pub fn include_outbound_ports(mut self, list: &str) -> Result<ConfigBuilder, ConfigError> {
        self.outbound_include = parse_ports("redirect.outbound.includePorts", list)?;
        Ok(self)
    }

    /// `--exclude-inbound-ips` (each item may be a comma list; replaces earlier values).
    pub fn exclude_inbound_ips<I, S>(mut self, items: I) -> Result<ConfigBuilder, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.inbound_exclude_ips = parse_addresses("--exclude-inbound-ips", items)?;
        Ok(self)
    }

    /// `--exclude-outbound-ips` (each item may be a comma list; replaces earlier values).
    pub fn exclude_outbound_ips<I, S>(mut self, items: I) -> Result<ConfigBuilder, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.outbound_exclude_ips = parse_addresses("--exclude-outbound-ips", items)?;
        Ok(self)
    }

    /// `--exclude-outbound-ports-for-uids` entries `[protocol:][ports:]uids` (replaces earlier values).
    pub fn exclude_outbound_ports_for_uids<I, S>(mut self, items: I) -> Result<ConfigBuilder, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.outbound_exclude_uids = items
            .into_iter()
            .map(|s| s.as_ref().parse::<UidExclusion>())
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// `redirect.inbound.excludePortsForUIDs`: accepted only empty (see
    /// [`ConfigError::InboundUidExclusion`]).
    pub fn exclude_inbound_ports_for_uids<I, S>(mut self, items: I) -> ConfigBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.inbound_exclude_uids = items.into_iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// `--redirect-inbound-insert-instead-of-append`.
    pub fn inbound_insert_instead_of_append(mut self, insert: bool) -> ConfigBuilder {
        self.inbound_insert = insert;
        self
    }

    /// `--redirect-outbound-insert-instead-of-append`.
    pub fn outbound_insert_instead_of_append(mut self, insert: bool) -> ConfigBuilder {
        self.outbound_insert = insert;
        self
    }

    /// `--redirect-dns` with the resolvers to capture (the caller reads resolv.conf, see
    /// [`parse_resolv_conf`]). Overrides a configuration file's `captureAll`; calling both this and
    /// [`capture_all_dns`](Self::capture_all_dns) is a [`ConfigError::ConflictingDnsModes`].
    pub fn redirect_dns<I: IntoIterator<Item = IpAddr>>(mut self, resolvers: I) -> ConfigBuilder {
        self.dns_redirect_called = true;
        self.dns_enabled = true;
        self.dns_capture_all = false;
        self.dns_resolvers = resolvers.into_iter().collect();
        self
    }

    /// `--redirect-all-dns-traffic`; conflicts with [`redirect_dns`](Self::redirect_dns).
    pub fn capture_all_dns(mut self) -> ConfigBuilder {
        self.dns_capture_called = true;
        self.dns_enabled = true;
        self.dns_capture_all = true;
        self
    }

    /// Turn DNS capture off.
    pub fn no_dns(mut self) -> ConfigBuilder {
        self.dns_enabled = false;
        self.dns_capture_all = false;
        self.dns_redirect_called = false;
        self.dns_capture_called = false;
        self
    }

    /// Whether DNS capture is `--redirect-dns`-style (resolvers, not capture-all) with no resolvers
    /// given yet: the caller should read resolv.conf and pass them with
    /// [`dns_resolvers`](Self::dns_resolvers).
    pub fn needs_dns_resolvers(&self) -> bool {
        self.dns_enabled && !self.dns_capture_all && self.dns_resolvers.is_empty()
    }

    /// The resolvers used by `--redirect-dns` (e.g. from resolv.conf), without changing the mode.
    pub fn dns_resolvers<I: IntoIterator<Item = IpAddr>>(mut self, resolvers: I) -> ConfigBuilder {
        self.dns_resolvers = resolvers.into_iter().collect();
        self
    }

    /// `--redirect-dns-port`.
    pub fn redirect_dns_port(mut self, port: Port) -> ConfigBuilder {
        self.dns_port = port;
        self
    }

    /// `--skip-dns-conntrack-zone-split`.
    pub fn skip_dns_conntrack_zone_split(mut self, skip: bool) -> ConfigBuilder {
        self.dns_skip_zone_split = skip;
        self
    }

    /// `--vnet IFACE:CIDR` entries (replaces earlier values; a repeated interface keeps the last).
    pub fn vnets<I, S>(mut self, items: I) -> Result<ConfigBuilder, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.vnets = items
            .into_iter()
            .map(|s| s.as_ref().parse::<Vnet>())
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// `--drop-invalid-packets`.
    pub fn drop_invalid_packets(mut self, drop: bool) -> ConfigBuilder {
        self.drop_invalid = drop;
        self
    }

    /// `--iptables-logs`.
    pub fn iptables_logs(mut self, enabled: bool) -> ConfigBuilder {
        self.log_enabled = enabled;
        self
    }

    /// `log.level` (default 7).
    pub fn log_level(mut self, level: LogLevel) -> ConfigBuilder {
        self.log_level = level;
        self
    }

    /// `--disable-comments`.
    pub fn disable_comments(mut self, disabled: bool) -> ConfigBuilder {
        self.comments_disabled = disabled;
        self
    }

    /// The chain prefix (`KUMA_MESH`); chains are `PREFIX_INBOUND` etc.
    pub fn chain_prefix(mut self, prefix: &str) -> ConfigBuilder {
        self.chain_prefix = prefix.to_string();
        self
    }

    /// The base names of the four chains (inbound, outbound, inbound redirect, outbound redirect).
    pub fn chain_names(
        mut self,
        inbound: &str,
        outbound: &str,
        inbound_redirect: &str,
        outbound_redirect: &str,
    ) -> ConfigBuilder {
        self.chain_names = [
            inbound.to_string(),
            outbound.to_string(),
            inbound_redirect.to_string(),
            outbound_redirect.to_string(),
        ];
        self
    }

    /// The comment prefix (`kuma/mesh/transparent/proxy`).
    pub fn comment_prefix(mut self, prefix: &str) -> ConfigBuilder {
        self.comment_prefix = prefix.to_string();
        self
    }

    /// `--wait`, `--wait-interval`, `--max-retries`, `--sleep-between-retries`.
    pub fn retry(mut self, retry: RetryPolicy) -> ConfigBuilder {
        self.retry = retry;
        self
    }

    /// `--max-retries`.
    pub fn max_retries(mut self, n: u32) -> ConfigBuilder {
        self.retry.max_retries = n;
        self
    }

    /// `--wait` (seconds, legacy backend).
    pub fn wait(mut self, seconds: u32) -> ConfigBuilder {
        self.retry.wait_seconds = seconds;
        self
    }

    /// `--wait-interval` (microseconds, legacy backend).
    pub fn wait_interval(mut self, micros: u32) -> ConfigBuilder {
        self.retry.wait_interval_micros = micros;
        self
    }

    /// `--sleep-between-retries`.
    pub fn sleep_between_retries(mut self, pause: Duration) -> ConfigBuilder {
        self.retry.sleep_between_retries = pause;
        self
    }

    /// `--verbose`.
    pub fn verbose(mut self, verbose: bool) -> ConfigBuilder {
        self.verbose = verbose;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<Config, ConfigError> {
        if let Some(name) = self.proxy_user {
            return Err(ConfigError::UnresolvedUser { name });
        }
        if self.dns_redirect_called && self.dns_capture_called {
            return Err(ConfigError::ConflictingDnsModes);
        }
        if !self.inbound_exclude_uids.is_empty() {
            return Err(ConfigError::InboundUidExclusion {
                value: self.inbound_exclude_uids.join(","),
            });
        }
        let chain = |base: &str| {
            let full = format!("{}_{}", self.chain_prefix, base);
            ChainName::new(full.clone()).map_err(|_| ConfigError::ChainName { value: full })
        };
        let [ib, ob, ibr, obr] = &self.chain_names;
        let (in_chain, out_chain, in_redirect, out_redirect) = (chain(ib)?, chain(ob)?, chain(ibr)?, chain(obr)?);
        if self.inbound_enabled && self.inbound_include.is_empty() && self.inbound_exclude.contains(&self.inbound_port)
        {
            return Err(ConfigError::RedirectPortExcluded {
                option: "--redirect-inbound-port",
                port: self.inbound_port.get(),
                excluded_in: "--exclude-inbound-ports",
            });
        }
        if self.outbound_enabled
            && self.outbound_include.is_empty()
            && self.outbound_exclude.contains(&self.outbound_port)
        {
            return Err(ConfigError::RedirectPortExcluded {
                option: "--redirect-outbound-port",
                port: self.outbound_port.get(),
                excluded_in: "--exclude-outbound-ports",
            });
        }
        let dns = match (self.dns_enabled, self.dns_capture_all) {
            (false, false) => DnsMode::Off,
            (_, true) => DnsMode::CaptureAll,
            (true, false) => DnsMode::Resolvers(self.dns_resolvers),
        };
        // One entry per interface (the last wins), sorted by name, as Kuma's map iteration ends up.
        let vnets: BTreeMap<String, Vnet> = self
            .vnets
            .into_iter()
            .map(|v| (v.interface.as_str().to_string(), v))
            .collect();
        Ok(Config {
            proxy_uid: self.proxy_uid,
            ip_family_mode: self.ip_family_mode,
            inbound: Direction {
                enabled: self.inbound_enabled,
                port: self.inbound_port,
                include_ports: self.inbound_include,
                exclude_ports: self.inbound_exclude,
                exclude_ips: self.inbound_exclude_ips,
                insert_instead_of_append: self.inbound_insert,
                chain: in_chain,
                redirect_chain: in_redirect,
            },
            outbound: Direction {
                enabled: self.outbound_enabled,
                port: self.outbound_port,
                include_ports: self.outbound_include,
                exclude_ports: self.outbound_exclude,
                exclude_ips: self.outbound_exclude_ips,
                insert_instead_of_append: self.outbound_insert,
                chain: out_chain,
                redirect_chain: out_redirect,
            },
            exclude_outbound_ports_for_uids: self.outbound_exclude_uids,
            dns,
            dns_port: self.dns_port,
            dns_conntrack_zone_split: !self.dns_skip_zone_split,
            vnets: vnets.into_values().collect(),
            drop_invalid_packets: self.drop_invalid,
            log: self.log_enabled.then_some(self.log_level),
            comments: !self.comments_disabled,
            chain_prefix: self.chain_prefix,
            comment_prefix: self.comment_prefix,
            retry: self.retry,
            verbose: self.verbose,
        })
    }
}

/// The `nameserver` addresses of a resolv.conf text, in order (IPv6 zone suffixes like `%eth0` are
/// dropped; malformed lines are skipped). The library never reads `/etc/resolv.conf` itself.
///
/// ```
/// let servers = meshcap_iptables::parse_resolv_conf("search x\nnameserver 10.96.0.10\nnameserver fd00::a\n");
/// assert_eq!(servers.len(), 2);
/// ```
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>().ok()
        })
        .collect()
}

/// Parse a Go-style duration (`2s`, `500ms`, `1m30s`, `1.5s`); used for `retry.sleepBetweenRetries`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration { value: s.to_string() };
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kuma() {
        let c = Config::default();
        assert_eq!(c.proxy_uid(), 5678);
        assert_eq!(c.inbound().port().get(), 15006);
        assert_eq!(c.outbound().port().get(), 15001);
        assert_eq!(c.dns_port().get(), 15053);
        assert_eq!(c.inbound().chain().as_str(), "KUMA_MESH_INBOUND");
        assert_eq!(c.outbound().redirect_chain().as_str(), "KUMA_MESH_OUTBOUND_REDIRECT");
        assert_eq!(c.to_builder().build().unwrap(), c);
    }

    #[test]
    fn validation_names_the_bad_value() {
        let e = Config::builder().exclude_inbound_ports("22,0").unwrap_err();
        assert!(e.to_string().contains("`0`"), "{e}");
        let e = Config::builder().exclude_outbound_ports("70000").unwrap_err();
        assert!(e.to_string().contains("70000"), "{e}");
        let e = Config::builder().exclude_outbound_ips(["10.0.0.0/33"]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        let e = Config::builder()
            .exclude_outbound_ports_for_uids(["tcp:5000-3000:1"])
            .unwrap_err();
        assert!(e.to_string().contains("5000-3000"), "{e}");
        for bad in ["", "a:b:c:d", "icmp:1:2", "1:2,3", "1:x", "1:*"] {
            assert!(bad.parse::<UidExclusion>().is_err(), "{bad:?}");
        }
        let e = Config::builder()
            .exclude_inbound_ports("15006")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::RedirectPortExcluded { port: 15006, .. }));
        let e = Config::builder()
            .redirect_dns([])
            .capture_all_dns()
            .build()
            .unwrap_err();
        assert_eq!(e, ConfigError::ConflictingDnsModes);
        let e = Config::builder().kuma_dp_user("kuma-dp").build().unwrap_err();
        assert!(e.to_string().contains("kuma-dp"));
        assert!("docker0".parse::<Vnet>().is_err());
        assert!("docker0:172.17.0.1".parse::<Vnet>().is_err());
        assert!(Config::builder().chain_prefix(&"X".repeat(20)).build().is_err());
    }

    #[test]
    fn uid_exclusions_follow_kumactl_syntax() {
        let x: UidExclusion = "53,3000-5000:106-108".parse().unwrap();
        assert_eq!(x.protocols(), &[ExclusionProtocol::Tcp, ExclusionProtocol::Udp]);
        assert_eq!(x.ports().to_string(), "53,3000:5000");
        let x: UidExclusion = "*:*:0".parse().unwrap();
        assert_eq!(x.ports().to_string(), "1:65535");
        let x: UidExclusion = "udp:3900,3902,4000-6000:303".parse().unwrap();
        assert_eq!(x.protocols(), &[ExclusionProtocol::Udp]);
    }

    #[test]
    fn vnets_of_every_destination_are_rejected() {
        let err = Config::builder().vnets(["docker0:0.0.0.0/0"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid virtual network `docker0:0.0.0.0/0`: `0.0.0.0/0` excludes every destination, so nothing would be \
             redirected (and iptables-nft rejects the rule)"
        );
        assert!(Config::builder().vnets(["br+:::/0"]).is_err());
        // Built directly, such a network gets no (never matching) TCP rule.
        let any: Address = "0.0.0.0/0".parse().unwrap();
        let c = Config::builder().build().unwrap();
        let mut c2 = c.clone();
        c2.vnets = vec![Vnet::new(Interface::new("docker0").unwrap(), any)];
        let text = crate::RuleSet::build(&c2, crate::Family::V4).render_restore();
        assert!(!text.contains("0.0.0.0/0"), "{text}");
    }

    #[test]
    fn vnets_split_at_first_colon_and_dedupe() {
        let c = Config::builder()
            .vnets([
                "docker0:172.17.0.0/16",
                "iface:::1/64",
                "br+:172.18.0.0/16",
                "docker0:172.19.0.0/16",
            ])
            .unwrap()
            .build()
            .unwrap();
        let names: Vec<_> = c.vnets().iter().map(|v| v.interface().to_string()).collect();
        assert_eq!(names, ["br+", "docker0", "iface"]);
        assert_eq!(c.vnets()[1].network().to_string(), "172.19.0.0/16");
    }

    #[test]
    fn resolv_conf_and_durations() {
        let s = parse_resolv_conf(
            "# x\nnameserver 127.0.0.11\nnameserver fe80::1%eth0 # c\nnameserver bogus\noptions ndots:5\n",
        );
        assert_eq!(
            s,
            vec!["127.0.0.11".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]
        );
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
