//! Upstream connections: how the proxy connects to a cluster's host, and the cluster statistics that
//! go with it.
//!
//! * [`Connector`] opens a TCP connection with the socket layers a sidecar needs: a source address
//!   (Kuma's inbound passthrough hop is sourced from `127.0.0.6` / `::6` so the workload sees it as
//!   local and the capture rules let it through), `SO_MARK`, `IP_FREEBIND`, `TCP_NODELAY`, and a
//!   connect timeout (Envoy's cluster `connect_timeout`, 5 s by default). Failures are typed
//!   ([`ConnectError`]): refused, timed out, could not bind the source.
//! * [`ClusterStats`] are the connection-level `cluster.<name>.*` statistics (`upstream_cx_total`,
//!   `upstream_cx_active`, `upstream_cx_connect_fail`, `upstream_cx_rx_bytes_total`, `membership_*`, …),
//!   named as Envoy names them (the cluster's `alt_stat_name`, e.g. `outbound_passthrough_ipv4`).
//!   The HTTP path counts its requests (`upstream_rq_*`) in its own block under the same cluster name;
//!   the [registry](crate::stats::StatsRegistry) adds up names both report.
//! * [`HostSet`] tracks a cluster's hosts for the `membership_*` gauges: fixed for a static cluster,
//!   created on first use and removed after an idle cleanup interval for an `ORIGINAL_DST` cluster, as
//!   Envoy does.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::stats::{Counter, Gauge, StatSource, StatValue};

/// Envoy's default cluster `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Kuma's source address for inbound passthrough connections over IPv4.
pub const INBOUND_PASSTHROUGH_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Kuma's source address for inbound passthrough connections over IPv6.
pub const INBOUND_PASSTHROUGH_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Opens upstream connections; see the [module docs](self). Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use meshcap_proxy::upstream::{ConnectError, Connector};
///
/// let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let connector = Connector::new().connect_timeout(Duration::from_secs(1));
/// let stream = connector.connect(server.local_addr()?).await?;
/// assert_eq!(stream.peer_addr()?, server.local_addr()?);
///
/// let closed = { let l = std::net::TcpListener::bind("127.0.0.1:0")?; l.local_addr()? };
/// assert!(matches!(connector.connect(closed).await, Err(ConnectError::Refused { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    connect_timeout: Duration,
    source_v4: Option<Ipv4Addr>,
    source_v6: Option<Ipv6Addr>,
    mark: Option<u32>,
    freebind: bool,
    nodelay: bool,
}

impl Default for Connector {
    fn default() -> Connector {
        Connector::new()
    }
}

impl Connector {
    /// Connect timeout [`DEFAULT_CONNECT_TIMEOUT`], no source binding, no mark, `TCP_NODELAY` on.
    pub fn new() -> Connector {
        Connector {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            source_v4: None,
            source_v6: None,
            mark: None,
            freebind: false,
            nodelay: true,
        }
    }

    /// The connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Connector {
        self.connect_timeout = timeout;
        self
    }

    /// Bind connections of `source`'s family to `source` (port chosen by the kernel) before
    /// connecting; call once per family. Destinations of the other family are not affected.
    pub fn bind_source(mut self, source: IpAddr) -> Connector {
        match source {
            IpAddr::V4(v4) => self.source_v4 = Some(v4),
            IpAddr::V6(v6) => self.source_v6 = Some(v6),
        }
        self
    }

    /// Kuma's inbound passthrough sources: `127.0.0.6` for IPv4, `::6` for IPv6. `127.0.0.6` is local on
    /// every Linux host (all of `127/8` is); `::6` must be assigned (`ip -6 addr add ::6/128 dev lo`, as
    /// the capture set-up does) or the connector built with [`freebind`](Self::freebind), else connects
    /// fail with [`ConnectError::Bind`].
    pub fn inbound_passthrough(self) -> Connector {
        self.bind_source(INBOUND_PASSTHROUGH_SOURCE_V4.into())
            .bind_source(INBOUND_PASSTHROUGH_SOURCE_V6.into())
    }

    /// Set `SO_MARK` on upstream sockets (needs `CAP_NET_ADMIN`).
    pub fn mark(mut self, mark: Option<u32>) -> Connector {
        self.mark = mark;
        self
    }

    /// Set `IP_FREEBIND` so a source address that is not (yet) local can be bound.
    pub fn freebind(mut self, freebind: bool) -> Connector {
        self.freebind = freebind;
        self
    }

    /// Set `TCP_NODELAY` on upstream connections (default `true`).
    pub fn nodelay(mut self, nodelay: bool) -> Connector {
        self.nodelay = nodelay;
        self
    }

    /// The configured connect timeout.
    pub fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The source address used for `dest`, if any.
    pub fn source_for(&self, dest: &SocketAddr) -> Option<SocketAddr> {
        match canonical(*dest) {
            SocketAddr::V4(_) => self.source_v4.map(|ip| SocketAddr::new(ip.into(), 0)),
            SocketAddr::V6(_) => self.source_v6.map(|ip| SocketAddr::new(ip.into(), 0)),
        }
    }

    /// Connect to `dest` (an IPv4-mapped IPv6 address is connected over IPv4).
    ///
    /// # Errors
    /// [`ConnectError::Refused`], [`ConnectError::Timeout`] after the connect timeout,
    /// [`ConnectError::Bind`] when the source address cannot be bound, [`ConnectError::Socket`] when a
    /// socket option is refused (`SO_MARK` without `CAP_NET_ADMIN`), [`ConnectError::Io`] otherwise
    /// (unreachable, reset, …).
    pub async fn connect(&self, dest: SocketAddr) -> Result<TcpStream, ConnectError> {
        let dest = canonical(dest);
        let socket = self.socket(dest)?;
        match tokio::time::timeout(self.connect_timeout, socket.connect(dest)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) if source.kind() == io::ErrorKind::ConnectionRefused => {
                Err(ConnectError::Refused { addr: dest, source })
            }
            Ok(Err(source)) => Err(ConnectError::Io { addr: dest, source }),
            Err(_) => Err(ConnectError::Timeout {
                addr: dest,
                timeout: self.connect_timeout,
            }),
        }
    }

    fn socket(&self, dest: SocketAddr) -> Result<TcpSocket, ConnectError> {
        let option_err = |option: &'static str| {
            move |source| ConnectError::Socket {
                addr: dest,
                option,
                source,
            }
        };
        let socket =
            Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).map_err(option_err("socket"))?;
        if self.nodelay {
            socket.set_tcp_nodelay(true).map_err(option_err("TCP_NODELAY"))?;
        }
        if let Some(mark) = self.mark {
            socket.set_mark(mark).map_err(option_err("SO_MARK"))?;
        }
        if self.freebind {
            if dest.is_ipv4() {
                socket.set_freebind_v4(true)
            } else {
                socket.set_freebind_v6(true)
            }
            .map_err(option_err("IP_FREEBIND"))?;
        }
        if let Some(source_addr) = self.source_for(&dest) {
            socket.bind(&source_addr.into()).map_err(|source| ConnectError::Bind {
                addr: dest,
                source_addr,
                source,
            })?;
        }
        socket.set_nonblocking(true).map_err(option_err("O_NONBLOCK"))?;
        let std_stream: std::net::TcpStream = socket.into();
        Ok(TcpSocket::from_std_stream(std_stream))
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing listens there (`ECONNREFUSED`).
    #[error("connection to {addr} refused")]
    Refused {
        /// The destination.
        addr: SocketAddr,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The connect timeout elapsed.
    #[error("connection to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The destination.
        addr: SocketAddr,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The source address could not be bound (Envoy counts these in `bind_errors`).
    #[error("cannot bind source address {source_addr} to connect to {addr}")]
    Bind {
        /// The destination.
        addr: SocketAddr,
        /// The source address.
        source_addr: SocketAddr,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A socket option was refused.
    #[error("cannot set up a socket to connect to {addr}: {option} failed")]
    Socket {
        /// The destination.
        addr: SocketAddr,
        /// The step that failed.
        option: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Any other connect failure (unreachable, reset, …).
    #[error("connection to {addr} failed")]
    Io {
        /// The destination.
        addr: SocketAddr,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// The destination.
    pub fn addr(&self) -> SocketAddr {
        match self {
            ConnectError::Refused { addr, .. }
            | ConnectError::Timeout { addr, .. }
            | ConnectError::Bind { addr, .. }
            | ConnectError::Socket { addr, .. }
            | ConnectError::Io { addr, .. } => *addr,
        }
    }

    /// Whether the connect timeout elapsed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }
}

/// Connection-level cluster statistics, `cluster.<name>.*` (Envoy's names; see
/// `reference/envoy/stats.txt` and the stat deltas in `reference/envoy/e2e/A1-stats-delta.txt`).
#[derive(Debug)]
pub struct ClusterStats {
    prefix: String,
    /// Connections opened (attempts included).
    pub upstream_cx_total: Counter,
    /// Connections open or connecting now.
    pub upstream_cx_active: Gauge,
    /// Connection attempts that failed.
    pub upstream_cx_connect_fail: Counter,
    /// Connection attempts that timed out (also counted in `upstream_cx_connect_fail`).
    pub upstream_cx_connect_timeout: Counter,
    /// Connections closed.
    pub upstream_cx_destroy: Counter,
    /// Connections closed by the proxy.
    pub upstream_cx_destroy_local: Counter,
    /// Connections closed by the upstream.
    pub upstream_cx_destroy_remote: Counter,
    /// Connections closed while a request (or a tcp_proxy session) was active.
    pub upstream_cx_destroy_with_active_rq: Counter,
    /// … closed by the proxy.
    pub upstream_cx_destroy_local_with_active_rq: Counter,
    /// … closed by the upstream.
    pub upstream_cx_destroy_remote_with_active_rq: Counter,
    /// Bytes received from the cluster's hosts.
    pub upstream_cx_rx_bytes_total: Counter,
    /// Bytes sent to the cluster's hosts.
    pub upstream_cx_tx_bytes_total: Counter,
    /// Connections refused by the cluster's connection circuit breaker.
    pub upstream_cx_overflow: Counter,
    /// Connections that found no healthy host.
    pub upstream_cx_none_healthy: Counter,
    /// Source address bind failures.
    pub bind_errors: Counter,
    /// Requests (a tcp_proxy session counts as one).
    pub upstream_rq_total: Counter,
    /// Requests that waited for a connection.
    pub upstream_rq_pending_total: Counter,
    /// Requests failed because their connection attempt failed.
    pub upstream_rq_pending_failure_eject: Counter,
    /// Hosts in the cluster.
    pub membership_total: Gauge,
    /// Healthy hosts.
    pub membership_healthy: Gauge,
    /// Degraded hosts.
    pub membership_degraded: Gauge,
    /// Excluded hosts.
    pub membership_excluded: Gauge,
    /// Host set changes.
    pub membership_change: Counter,
    /// `ORIGINAL_DST` destinations that were not usable.
    pub original_dst_host_invalid: Counter,
}

impl ClusterStats {
    /// Statistics for the cluster whose statistics name is `stat_name` (Envoy's `alt_stat_name`, or the
    /// cluster name with `:` replaced by `_`).
    pub fn new(stat_name: &str) -> ClusterStats {
        ClusterStats {
            prefix: format!("cluster.{}", crate::stats::sanitize_segment(stat_name)),
            upstream_cx_total: Counter::new(),
            upstream_cx_active: Gauge::new(),
            upstream_cx_connect_fail: Counter::new(),
            upstream_cx_connect_timeout: Counter::new(),
            upstream_cx_destroy: Counter::new(),
            upstream_cx_destroy_local: Counter::new(),
            upstream_cx_destroy_remote: Counter::new(),
            upstream_cx_destroy_with_active_rq: Counter::new(),
            upstream_cx_destroy_local_with_active_rq: Counter::new(),
            upstream_cx_destroy_remote_with_active_rq: Counter::new(),
            upstream_cx_rx_bytes_total: Counter::new(),
            upstream_cx_tx_bytes_total: Counter::new(),
            upstream_cx_overflow: Counter::new(),
            upstream_cx_none_healthy: Counter::new(),
            bind_errors: Counter::new(),
            upstream_rq_total: Counter::new(),
            upstream_rq_pending_total: Counter::new(),
            upstream_rq_pending_failure_eject: Counter::new(),
            membership_total: Gauge::new(),
            membership_healthy: Gauge::new(),
            membership_degraded: Gauge::new(),
            membership_excluded: Gauge::new(),
            membership_change: Counter::new(),
            original_dst_host_invalid: Counter::new(),
        }
    }

    /// The name prefix (`cluster.outbound_passthrough_ipv4`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Count a failed connection attempt (already counted in `upstream_cx_total`/`upstream_cx_active`).
    pub(crate) fn connect_failed(&self, error: &ConnectError) {
        self.upstream_cx_active.dec();
        self.upstream_cx_connect_fail.inc();
        self.upstream_cx_destroy.inc();
        self.upstream_rq_pending_failure_eject.inc();
        match error {
            ConnectError::Timeout { .. } => self.upstream_cx_connect_timeout.inc(),
            ConnectError::Bind { .. } => self.bind_errors.inc(),
            _ => {}
        }
    }
}

impl StatSource for ClusterStats {
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
        let mut name = String::with_capacity(self.prefix.len() + 48);
        let mut emit = |suffix: &str, value: StatValue| {
            name.clear();
            name.push_str(&self.prefix);
            name.push('.');
            name.push_str(suffix);
            visit(&name, value);
        };
        let c = |c: &Counter| StatValue::Counter(c.get());
        let g = |g: &Gauge| StatValue::Gauge(g.get());
        emit("upstream_cx_total", c(&self.upstream_cx_total));
        emit("upstream_cx_active", g(&self.upstream_cx_active));
        emit("upstream_cx_connect_fail", c(&self.upstream_cx_connect_fail));
        emit("upstream_cx_connect_timeout", c(&self.upstream_cx_connect_timeout));
        emit("upstream_cx_destroy", c(&self.upstream_cx_destroy));
        emit("upstream_cx_destroy_local", c(&self.upstream_cx_destroy_local));
        emit("upstream_cx_destroy_remote", c(&self.upstream_cx_destroy_remote));
        emit(
            "upstream_cx_destroy_with_active_rq",
            c(&self.upstream_cx_destroy_with_active_rq),
        );
        emit(
            "upstream_cx_destroy_local_with_active_rq",
            c(&self.upstream_cx_destroy_local_with_active_rq),
        );
        emit(
            "upstream_cx_destroy_remote_with_active_rq",
            c(&self.upstream_cx_destroy_remote_with_active_rq),
        );
        emit("upstream_cx_rx_bytes_total", c(&self.upstream_cx_rx_bytes_total));
        emit("upstream_cx_tx_bytes_total", c(&self.upstream_cx_tx_bytes_total));
        emit("upstream_cx_overflow", c(&self.upstream_cx_overflow));
        emit("upstream_cx_none_healthy", c(&self.upstream_cx_none_healthy));
        emit("bind_errors", c(&self.bind_errors));
        emit("upstream_rq_total", c(&self.upstream_rq_total));
        emit("upstream_rq_pending_total", c(&self.upstream_rq_pending_total));
        emit(
            "upstream_rq_pending_failure_eject",
            c(&self.upstream_rq_pending_failure_eject),
        );
        emit("membership_total", g(&self.membership_total));
        emit("membership_healthy", g(&self.membership_healthy));
        emit("membership_degraded", g(&self.membership_degraded));
        emit("membership_excluded", g(&self.membership_excluded));
        emit("membership_change", c(&self.membership_change));
        emit("original_dst_host_invalid", c(&self.original_dst_host_invalid));
    }
}

/// Envoy's default `cleanup_interval` for `ORIGINAL_DST` clusters.
pub const DEFAULT_ORIGINAL_DST_CLEANUP: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Host {
    active: u32,
    last_used: Instant,
}

#[derive(Debug)]
struct Hosts {
    map: HashMap<SocketAddr, Host>,
    last_sweep: Instant,
}

/// The hosts of one cluster, for the `membership_*` gauges; see the [module docs](self).
pub struct HostSet {
    stats: Arc<ClusterStats>,
    dynamic: Option<Duration>,
    hosts: Mutex<Hosts>,
    cluster_updated: Option<Arc<Counter>>,
}

impl fmt::Debug for HostSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.hosts.lock().unwrap_or_else(PoisonError::into_inner).map.len();
        f.debug_struct("HostSet")
            .field("cluster", &self.stats.prefix)
            .field("hosts", &n)
            .field("cleanup_interval", &self.dynamic)
            .finish()
    }
}

impl HostSet {
    /// A static cluster with these hosts (counted once, as Envoy shows them at boot:
    /// `membership_total`, `membership_healthy` and `membership_change` at the number of hosts).
    pub fn fixed(stats: Arc<ClusterStats>, hosts: impl IntoIterator<Item = SocketAddr>) -> HostSet {
        let now = Instant::now();
        let map: HashMap<SocketAddr, Host> = hosts
            .into_iter()
            .map(|a| {
                (
                    a,
                    Host {
                        active: 0,
                        last_used: now,
                    },
                )
            })
            .collect();
        let n = i64::try_from(map.len()).unwrap_or(i64::MAX);
        if n > 0 {
            stats.membership_total.add(n);
            stats.membership_healthy.add(n);
            stats.membership_change.inc();
        }
        HostSet {
            stats,
            dynamic: None,
            hosts: Mutex::new(Hosts { map, last_sweep: now }),
            cluster_updated: None,
        }
    }

    /// An `ORIGINAL_DST` cluster: a destination becomes a host on first use and is removed once it has
    /// had no connection for `cleanup_interval`. `cluster_updated` (Envoy's
    /// `cluster_manager.cluster_updated`) counts host set changes when given.
    pub fn original_dst(
        stats: Arc<ClusterStats>,
        cleanup_interval: Duration,
        cluster_updated: Option<Arc<Counter>>,
    ) -> HostSet {
        HostSet {
            stats,
            dynamic: Some(cleanup_interval),
            hosts: Mutex::new(Hosts {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            cluster_updated,
        }
    }

    /// The cluster's statistics.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    /// Number of hosts now.
    pub fn len(&self) -> usize {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner).map.len()
    }

    /// Whether there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mark `addr` in use until the returned guard drops (adding it to an `ORIGINAL_DST` cluster).
    pub fn acquire(self: &Arc<Self>, addr: SocketAddr) -> HostGuard {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(interval) = self.dynamic
            && now.duration_since(hosts.last_sweep) >= interval
        {
            hosts.last_sweep = now;
            let before = hosts.map.len();
            hosts
                .map
                .retain(|_, h| h.active > 0 || now.duration_since(h.last_used) < interval);
            let removed = before - hosts.map.len();
            if removed > 0 {
                let n = i64::try_from(removed).unwrap_or(i64::MAX);
                self.stats.membership_total.add(-n);
                self.stats.membership_healthy.add(-n);
                self.changed();
            }
        }
        let added = match hosts.map.get_mut(&addr) {
            Some(host) => {
                host.active += 1;
                host.last_used = now;
                false
            }
            None if self.dynamic.is_some() => {
                hosts.map.insert(
                    addr,
                    Host {
                        active: 1,
                        last_used: now,
                    },
                );
                true
            }
            None => false,
        };
        drop(hosts);
        if added {
            self.stats.membership_total.inc();
            self.stats.membership_healthy.inc();
            self.changed();
        }
        HostGuard {
            set: self.clone(),
            addr,
        }
    }

    fn changed(&self) {
        self.stats.membership_change.inc();
        if let Some(c) = &self.cluster_updated {
            c.inc();
        }
    }

    fn release(&self, addr: SocketAddr) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = hosts.map.get_mut(&addr) {
            host.active = host.active.saturating_sub(1);
            host.last_used = Instant::now();
        }
    }
}

/// A host in use; see [`HostSet::acquire`].
#[derive(Debug)]
pub struct HostGuard {
    set: Arc<HostSet>,
    addr: SocketAddr,
}

impl HostGuard {
    /// The host.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.set.release(self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_unwraps_mapped_addresses() {
        assert_eq!(
            canonical("[::ffff:10.0.0.1]:80".parse().unwrap()),
            "10.0.0.1:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            canonical("[fd00::6]:80".parse().unwrap()),
            "[fd00::6]:80".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn source_follows_the_destination_family() {
        let c = Connector::new().inbound_passthrough();
        assert_eq!(
            c.source_for(&"10.244.0.6:5000".parse().unwrap()),
            Some("127.0.0.6:0".parse().unwrap())
        );
        assert_eq!(
            c.source_for(&"[::ffff:10.244.0.6]:5000".parse().unwrap()),
            Some("127.0.0.6:0".parse().unwrap())
        );
        assert_eq!(
            c.source_for(&"[fd00::6]:5000".parse().unwrap()),
            Some("[::6]:0".parse().unwrap())
        );
        let v4_only = Connector::new().bind_source("127.0.0.6".parse().unwrap());
        assert_eq!(v4_only.source_for(&"[fd00::6]:5000".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn connects_from_the_inbound_passthrough_source() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connector = Connector::new().bind_source(INBOUND_PASSTHROUGH_SOURCE_V4.into());
        let (client, accepted) = tokio::join!(connector.connect(server.local_addr().unwrap()), server.accept());
        let client = client.unwrap();
        let (_stream, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), IpAddr::from(INBOUND_PASSTHROUGH_SOURCE_V4));
        assert_eq!(
            client.local_addr().unwrap().ip(),
            IpAddr::from(INBOUND_PASSTHROUGH_SOURCE_V4)
        );
        assert!(client.nodelay().unwrap());
    }

    #[tokio::test]
    async fn unbindable_source_is_a_bind_error() {
        let connector = Connector::new().bind_source("192.0.2.77".parse().unwrap());
        let err = connector.connect("127.0.0.1:9".parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, ConnectError::Bind { source_addr, .. } if source_addr.ip().to_string() == "192.0.2.77"));
        assert_eq!(
            err.to_string(),
            "cannot bind source address 192.0.2.77:0 to connect to 127.0.0.1:9"
        );
    }

    #[tokio::test]
    async fn connect_timeout_when_syns_are_dropped() {
        // A listener whose accept queue is full drops new SYNs (tcp_abort_on_overflow=0, the default):
        // the connect hangs until our timeout. Only loopback is involved.
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        sock.listen(0).unwrap();
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue (backlog 0 admits one) with connections nobody accepts.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        let connector = Connector::new().connect_timeout(Duration::from_millis(300));
        let err = connector.connect(addr).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert_eq!(err.addr(), addr);
        drop(sock);
    }

    #[tokio::test(start_paused = true)]
    async fn original_dst_hosts_come_and_go() {
        let stats = Arc::new(ClusterStats::new("outbound:passthrough:ipv4"));
        assert_eq!(stats.prefix(), "cluster.outbound_passthrough_ipv4");
        let updated = Arc::new(Counter::new());
        let set = Arc::new(HostSet::original_dst(
            stats.clone(),
            DEFAULT_ORIGINAL_DST_CLEANUP,
            Some(updated.clone()),
        ));
        let a: SocketAddr = "10.244.0.5:8080".parse().unwrap();
        let b: SocketAddr = "10.244.0.5:8081".parse().unwrap();
        let g1 = set.acquire(a);
        let g2 = set.acquire(a);
        assert_eq!((stats.membership_total.get(), stats.membership_change.get()), (1, 1));
        drop(g1);
        drop(g2);
        tokio::time::advance(Duration::from_secs(6)).await;
        let _gb = set.acquire(b);
        // `a` idled past the cleanup interval and was removed; `b` was added.
        assert_eq!(set.len(), 1);
        assert_eq!(stats.membership_total.get(), 1);
        assert_eq!(stats.membership_healthy.get(), 1);
        assert_eq!(stats.membership_change.get(), 3);
        assert_eq!(updated.get(), 3);
    }

    #[test]
    fn static_hosts_count_at_boot() {
        let stats = Arc::new(ClusterStats::new("localhost:5000"));
        let set = Arc::new(HostSet::fixed(stats.clone(), ["10.244.0.6:5000".parse().unwrap()]));
        let _g = set.acquire("10.244.0.6:5000".parse().unwrap());
        let _other = set.acquire("10.9.9.9:1".parse().unwrap());
        assert_eq!(set.len(), 1);
        assert_eq!(
            (
                stats.membership_total.get(),
                stats.membership_healthy.get(),
                stats.membership_change.get()
            ),
            (1, 1, 1)
        );
        let mut names = Vec::new();
        stats.visit_stats(&mut |n, _| names.push(n.to_string()));
        assert!(names.iter().all(|n| n.starts_with("cluster.localhost_5000.")));
        assert!(names.contains(&"cluster.localhost_5000.upstream_cx_connect_fail".to_string()));
    }
}
