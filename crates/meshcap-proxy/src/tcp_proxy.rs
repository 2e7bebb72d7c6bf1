//! Envoy's `tcp_proxy` network filter: bytes both ways between the downstream connection and an upstream
//! host, with half-close kept, a connect timeout, an idle timeout and Envoy's statistics.
//!
//! * Half-close: when one side sends FIN the other side's write half is shut down (FIN forwarded, never
//!   an RST) and the other direction keeps flowing until it ends too.
//! * Statistics: `tcp.<stat_prefix>.*` ([`TcpProxyStats`]) for the downstream side, and the cluster's
//!   [`ClusterStats`] for the upstream side, matching the deltas Envoy shows for one passthrough
//!   connection (`reference/envoy/e2e/A1-stats-delta.txt`, `A4-stats-delta.txt`). Byte counters move
//!   while data flows, not only at the end.
//! * The copy itself is behind [`CopyStrategy`] so a zero-copy `splice(2)` path can be added without
//!   changing callers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use meshcap_proxy::tcp_proxy::{TcpProxy, TcpProxyConfig};
//! use meshcap_proxy::upstream::{ClusterStats, Connector};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // An echo upstream.
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream_addr = upstream.local_addr()?;
//! tokio::spawn(async move {
//!     let (mut s, _) = upstream.accept().await.unwrap();
//!     let (mut r, mut w) = s.split();
//!     tokio::io::copy(&mut r, &mut w).await.unwrap();
//! });
//!
//! let proxy = TcpProxy::new(
//!     TcpProxyConfig::new("outbound_passthrough_ipv4"),
//!     Arc::new(ClusterStats::new("outbound_passthrough_ipv4")),
//!     Connector::new(),
//! );
//! let front = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut client = tokio::net::TcpStream::connect(front.local_addr()?).await?;
//! let (downstream, _) = front.accept().await?;
//! let session = tokio::spawn({
//!     let proxy = proxy.clone();
//!     async move { proxy.proxy(downstream, upstream_addr).await }
//! });
//! client.write_all(b"ping").await?;
//! client.shutdown().await?; // half-close: the reply still arrives
//! let mut reply = Vec::new();
//! client.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"ping");
//! let outcome = session.await?;
//! assert_eq!((outcome.bytes_received, outcome.bytes_sent), (4, 4));
//! assert_eq!(proxy.stats().downstream_cx_total.get(), 1);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access_log::{AccessLogEntry, ResponseFlags};
use crate::stats::{Counter, Gauge, StatSource, StatValue};
use crate::upstream::{ClusterStats, ConnectError, Connector, HostSet};

/// Envoy's default `tcp_proxy` idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How bytes are moved between the two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CopyStrategy {
    /// Read into a userspace buffer of `buffer_size` bytes per direction and write it out
    /// (`tokio::io::copy_bidirectional_with_sizes`).
    Userspace {
        /// Buffer size per direction.
        buffer_size: usize,
    },
}

impl Default for CopyStrategy {
    fn default() -> CopyStrategy {
        CopyStrategy::Userspace { buffer_size: 32 * 1024 }
    }
}

/// Configuration of one `tcp_proxy` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProxyConfig {
    stat_prefix: String,
    idle_timeout: Option<Duration>,
    copy: CopyStrategy,
}

impl TcpProxyConfig {
    /// A filter whose statistics are `tcp.<stat_prefix>.*`, with Envoy's default idle timeout (1 h) and
    /// the default copy strategy.
    pub fn new(stat_prefix: impl Into<String>) -> TcpProxyConfig {
        TcpProxyConfig {
            stat_prefix: stat_prefix.into(),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            copy: CopyStrategy::default(),
        }
    }

    /// Close the session when no byte moved either way for this long (`None`: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> TcpProxyConfig {
        self.idle_timeout = timeout;
        self
    }

    /// How bytes are copied.
    pub fn copy_strategy(mut self, copy: CopyStrategy) -> TcpProxyConfig {
        self.copy = copy;
        self
    }

    /// The statistics prefix.
    pub fn stat_prefix(&self) -> &str {
        &self.stat_prefix
    }
}

/// Envoy's `tcp.<stat_prefix>.*` statistics (the names in `reference/envoy/stats.txt`).
///
/// [`TcpProxy`] maintains `downstream_cx_total`, the byte totals and `idle_timeout`. The userspace copy
/// holds at most one buffer per direction and applies backpressure by not reading, so the `*_buffered`
/// gauges and the flow-control counters stay at zero; the remaining counters belong to features this
/// filter does not have (routing delays, early data, maximum duration) and stay at zero as in Envoy.
#[derive(Debug)]
pub struct TcpProxyStats {
    prefix: String,
    /// Sessions started.
    pub downstream_cx_total: Counter,
    /// Connections with no route (no cluster).
    pub downstream_cx_no_route: Counter,
    /// Bytes received from downstream.
    pub downstream_cx_rx_bytes_total: Counter,
    /// Bytes sent to downstream.
    pub downstream_cx_tx_bytes_total: Counter,
    /// Bytes received from downstream and not yet written upstream.
    pub downstream_cx_rx_bytes_buffered: Gauge,
    /// Bytes received from upstream and not yet written downstream.
    pub downstream_cx_tx_bytes_buffered: Gauge,
    /// Downstream reads paused by flow control.
    pub downstream_flow_control_paused_reading_total: Counter,
    /// Downstream reads resumed by flow control.
    pub downstream_flow_control_resumed_reading_total: Counter,
    /// Sessions closed by the idle timeout.
    pub idle_timeout: Counter,
    /// Sessions closed by the maximum connection duration.
    pub max_downstream_connection_duration: Counter,
    /// Upstream connections flushing after downstream closed.
    pub upstream_flush_total: Counter,
    /// Upstream connections flushing now.
    pub upstream_flush_active: Gauge,
    /// Early data received.
    pub early_data_received_count_total: Counter,
    /// Sessions whose routing was delayed.
    pub route_delayed_total: Counter,
    /// Sessions closed by a drain.
    pub downstream_cx_drain_close: Counter,
    /// Sessions closed by overload management.
    pub downstream_cx_overload_close: Counter,
}

impl TcpProxyStats {
    /// Statistics named `tcp.<stat_prefix>.*`.
    pub fn new(stat_prefix: &str) -> TcpProxyStats {
        TcpProxyStats {
            prefix: format!("tcp.{}", crate::stats::sanitize_segment(stat_prefix)),
            downstream_cx_total: Counter::new(),
            downstream_cx_no_route: Counter::new(),
            downstream_cx_rx_bytes_total: Counter::new(),
            downstream_cx_tx_bytes_total: Counter::new(),
            downstream_cx_rx_bytes_buffered: Gauge::new(),
            downstream_cx_tx_bytes_buffered: Gauge::new(),
            downstream_flow_control_paused_reading_total: Counter::new(),
            downstream_flow_control_resumed_reading_total: Counter::new(),
            idle_timeout: Counter::new(),
            max_downstream_connection_duration: Counter::new(),
            upstream_flush_total: Counter::new(),
            upstream_flush_active: Gauge::new(),
            early_data_received_count_total: Counter::new(),
            route_delayed_total: Counter::new(),
            downstream_cx_drain_close: Counter::new(),
            downstream_cx_overload_close: Counter::new(),
        }
    }

    /// The name prefix (`tcp.outbound_passthrough_ipv4`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl StatSource for TcpProxyStats {
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
        emit("downstream_cx_total", c(&self.downstream_cx_total));
        emit("downstream_cx_no_route", c(&self.downstream_cx_no_route));
        emit("downstream_cx_rx_bytes_total", c(&self.downstream_cx_rx_bytes_total));
        emit("downstream_cx_tx_bytes_total", c(&self.downstream_cx_tx_bytes_total));
        emit(
            "downstream_cx_rx_bytes_buffered",
            g(&self.downstream_cx_rx_bytes_buffered),
        );
        emit(
            "downstream_cx_tx_bytes_buffered",
            g(&self.downstream_cx_tx_bytes_buffered),
        );
        emit(
            "downstream_flow_control_paused_reading_total",
            c(&self.downstream_flow_control_paused_reading_total),
        );
        emit(
            "downstream_flow_control_resumed_reading_total",
            c(&self.downstream_flow_control_resumed_reading_total),
        );
        emit("idle_timeout", c(&self.idle_timeout));
        emit(
            "max_downstream_connection_duration",
            c(&self.max_downstream_connection_duration),
        );
        emit("upstream_flush_total", c(&self.upstream_flush_total));
        emit("upstream_flush_active", g(&self.upstream_flush_active));
        emit(
            "early_data_received_count_total",
            c(&self.early_data_received_count_total),
        );
        emit("route_delayed_total", c(&self.route_delayed_total));
        emit("downstream_cx_drain_close", c(&self.downstream_cx_drain_close));
        emit("downstream_cx_overload_close", c(&self.downstream_cx_overload_close));
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// Both directions finished (FIN each way).
    Completed,
    /// The upstream could not be reached.
    ConnectFailed,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// A socket error (reset, …) ended the session.
    Error,
}

/// The result of one [`TcpProxy::proxy`] session, for logging.
#[derive(Debug)]
#[non_exhaustive]
pub struct TcpProxyOutcome {
    /// Wall-clock time the session started (for `%START_TIME%`).
    pub start_time: SystemTime,
    /// The upstream host, once connected.
    pub upstream_host: Option<SocketAddr>,
    /// The local address of the upstream connection.
    pub upstream_local: Option<SocketAddr>,
    /// Bytes received from downstream.
    pub bytes_received: u64,
    /// Bytes sent to downstream.
    pub bytes_sent: u64,
    /// Envoy response flags (`UF` when the upstream could not be reached).
    pub flags: ResponseFlags,
    /// How the session ended.
    pub end: SessionEnd,
    /// The connect error, or the socket error that ended the session.
    pub error: Option<io::Error>,
    /// From the start of [`TcpProxy::proxy`] to its end.
    pub duration: Duration,
}

impl TcpProxyOutcome {
    /// The access log entry for this session, as Envoy logs a TCP session: no method, path or protocol,
    /// response code 0, the flags, byte counts, duration and upstream host.
    pub fn access_log_entry(
        &self,
        cluster: &str,
        downstream_local: Option<SocketAddr>,
        downstream_remote: Option<SocketAddr>,
    ) -> AccessLogEntry {
        let mut e = AccessLogEntry::new(self.start_time);
        e.response_flags = self.flags;
        e.bytes_received = self.bytes_received;
        e.bytes_sent = self.bytes_sent;
        e.duration = Some(self.duration);
        e.upstream_host = self.upstream_host;
        e.upstream_cluster = Some(cluster.to_string());
        e.downstream_local = downstream_local;
        e.downstream_remote = downstream_remote;
        e
    }
}

/// One configured `tcp_proxy` filter: statistics resolved once, shared by all its sessions. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct TcpProxy {
    config: Arc<TcpProxyConfig>,
    stats: Arc<TcpProxyStats>,
    cluster: Arc<ClusterStats>,
    hosts: Option<Arc<HostSet>>,
    connector: Connector,
}

impl TcpProxy {
    /// A filter forwarding to hosts of the cluster counted in `cluster`, connecting with `connector`.
    pub fn new(config: TcpProxyConfig, cluster: Arc<ClusterStats>, connector: Connector) -> TcpProxy {
        let stats = Arc::new(TcpProxyStats::new(&config.stat_prefix));
        TcpProxy {
            config: Arc::new(config),
            stats,
            cluster,
            hosts: None,
            connector,
        }
    }

    /// Track the cluster's hosts (the `membership_*` gauges) in `hosts`.
    pub fn with_hosts(mut self, hosts: Arc<HostSet>) -> TcpProxy {
        self.hosts = Some(hosts);
        self
    }

    /// The `tcp.<prefix>.*` statistics (register them with the registry).
    pub fn stats(&self) -> &Arc<TcpProxyStats> {
        &self.stats
    }

    /// The cluster statistics.
    pub fn cluster_stats(&self) -> &Arc<ClusterStats> {
        &self.cluster
    }

    /// Proxy `downstream` to `upstream` until both directions end, the idle timeout fires or a socket
    /// error occurs. When the upstream cannot be reached the downstream connection is closed (FIN) and
    /// the outcome carries `UF`.
    pub async fn proxy(&self, downstream: TcpStream, upstream: SocketAddr) -> TcpProxyOutcome {
        let start = Instant::now();
        let start_time = SystemTime::now();
        let stats = &*self.stats;
        let cluster = &*self.cluster;
        stats.downstream_cx_total.inc();
        cluster.upstream_rq_total.inc();
        cluster.upstream_rq_pending_total.inc();
        cluster.upstream_cx_total.inc();
        cluster.upstream_cx_active.inc();
        let host = self.hosts.as_ref().map(|h| h.acquire(upstream));

        let upstream_stream = match self.connector.connect(upstream).await {
            Ok(s) => s,
            Err(e) => {
                cluster.connect_failed(&e);
                drop(host);
                tracing::debug!(%upstream, error = %e, "tcp_proxy: upstream connect failed");
                let error = connect_error_into_io(e);
                return TcpProxyOutcome {
                    start_time,
                    upstream_host: None,
                    upstream_local: None,
                    bytes_received: 0,
                    bytes_sent: 0,
                    flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                    end: SessionEnd::ConnectFailed,
                    error: Some(error),
                    duration: start.elapsed(),
                };
            }
        };
        let upstream_local = upstream_stream.local_addr().ok();

        let activity = Activity::new();
        let mut down = Metered::new(
            downstream,
            &stats.downstream_cx_rx_bytes_total,
            &stats.downstream_cx_tx_bytes_total,
            &activity,
            Side::Downstream,
        );
        let mut up = Metered::new(
            upstream_stream,
            &cluster.upstream_cx_rx_bytes_total,
            &cluster.upstream_cx_tx_bytes_total,
            &activity,
            Side::Upstream,
        );

        let CopyStrategy::Userspace { buffer_size } = self.config.copy;
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, buffer_size, buffer_size);
        let (end, error) = match self.config.idle_timeout {
            Some(idle) => tokio::select! {
                result = copy => match result {
                    Ok(_) => (SessionEnd::Completed, None),
                    Err(e) => (SessionEnd::Error, Some(e)),
                },
                () = activity.idle(idle) => {
                    stats.idle_timeout.inc();
                    (SessionEnd::IdleTimeout, None)
                }
            },
            None => match copy.await {
                Ok(_) => (SessionEnd::Completed, None),
                Err(e) => (SessionEnd::Error, Some(e)),
            },
        };
        let bytes_received = down.read;
        let bytes_sent = down.written;
        let closed_first = activity.first_eof();
        drop(down);
        drop(up);
        drop(host);

        cluster.upstream_cx_active.dec();
        cluster.upstream_cx_destroy.inc();
        cluster.upstream_cx_destroy_with_active_rq.inc();
        // The upstream closing (or failing) first counts as a remote close, everything else as local.
        let remote = match end {
            SessionEnd::Completed => closed_first == Some(Side::Upstream),
            SessionEnd::Error => closed_first != Some(Side::Downstream),
            _ => false,
        };
        if remote {
            cluster.upstream_cx_destroy_remote.inc();
            cluster.upstream_cx_destroy_remote_with_active_rq.inc();
        } else {
            cluster.upstream_cx_destroy_local.inc();
            cluster.upstream_cx_destroy_local_with_active_rq.inc();
        }
        TcpProxyOutcome {
            start_time,
            upstream_host: Some(upstream),
            upstream_local,
            bytes_received,
            bytes_sent,
            flags: ResponseFlags::empty(),
            end,
            error,
            duration: start.elapsed(),
        }
    }
}

fn connect_error_into_io(e: ConnectError) -> io::Error {
    let kind = match &e {
        ConnectError::Refused { .. } => io::ErrorKind::ConnectionRefused,
        ConnectError::Timeout { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Downstream = 1,
    Upstream = 2,
}

/// Last time a byte moved, and which side ended first; shared by the two metered halves of a session.
struct Activity {
    base: Instant,
    last_nanos: AtomicU64,
    first_eof: AtomicU8,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_nanos: AtomicU64::new(0),
            first_eof: AtomicU8::new(0),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }

    fn eof(&self, side: Side) {
        let _ = self
            .first_eof
            .compare_exchange(0, side as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn first_eof(&self) -> Option<Side> {
        match self.first_eof.load(Ordering::Relaxed) {
            1 => Some(Side::Downstream),
            2 => Some(Side::Upstream),
            _ => None,
        }
    }

    /// Resolves once nothing moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.base + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that counts the bytes read and written into statistics as they move.
struct Metered<'a, S> {
    io: S,
    rx: &'a Counter,
    tx: &'a Counter,
    activity: &'a Activity,
    side: Side,
    read: u64,
    written: u64,
}

impl<'a, S> Metered<'a, S> {
    fn new(io: S, rx: &'a Counter, tx: &'a Counter, activity: &'a Activity, side: Side) -> Self {
        Metered {
            io,
            rx,
            tx,
            activity,
            side,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let had_room = buf.remaining() > 0;
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    self.rx.add(n);
                    self.read += n;
                    self.activity.touch();
                } else if had_room {
                    self.activity.eof(self.side);
                }
            }
            Poll::Ready(Err(_)) => self.activity.eof(self.side),
            Poll::Pending => {}
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            let n = *n as u64;
            self.tx.add(n);
            self.written += n;
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
