//! The HTTP connection manager: an async per-connection HTTP/1.1 driver shaped like Envoy's HCM and
//! router, on the [`crate::http1`] codec.
//!
//! [`Hcm::serve`] runs one client connection to completion: keep-alive and pipelining (answers in
//! order, one request at a time), bodies streamed both ways through bounded buffers (Content-Length
//! and chunked; close-delimited responses re-framed chunked), `Expect: 100-continue` answered by the
//! proxy, HEAD, interim 1xx responses absorbed, Upgrade (websocket) handed to an L4 copy after the
//! upstream's 101, the request headers / idle / stream idle timeouts, and Envoy's local replies
//! (400/426/431/501 for bad requests, 503 when the upstream refuses or resets, 502 for an invalid
//! upstream response, 404 with no route, 403 for an upgrade the listener does not allow).
//!
//! Seams, so the runtime plugs in without this module depending on it:
//! * [`RequestFilter`] — called after the head is validated, before the upstream is chosen
//!   (the fault filter: continue, delay then re-evaluate, local reply, response rate limit);
//! * [`UpstreamConnector`] — how upstream connections are made ([`TcpConnector`] is the plain one);
//! * [`AccessLogSink`] — receives a [`RequestLog`] per request;
//! * [`HttpStats`] and [`ClusterStats`] implement [`crate::stats::StatSource`] with Envoy's names.
//!
//! Upstream connections are pooled per address ([`UpstreamPool`]): reused only after a complete,
//! well-framed exchange with keep-alive on both sides, never after a framing error or a
//! `connection: close`.
//!
//! # Layout
//! `conn` (the driver), `connector` (connector trait and pool), `filter`, `log`, `stats`.

mod conn;
mod connector;
mod filter;
mod log;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::http1::Limits;

pub use connector::{PoolConfig, TcpConnector, UpstreamConnector, UpstreamPool};
pub use filter::{FilterAction, FilterContext, LocalReply, NoFilter, RequestFilter};
pub use log::{AccessLogSink, RequestLog, ResponseFlags};
pub use stats::{ClusterStats, ClusterStatsFields, HcmStats, HttpStats, StatusCounters};

/// Where a cluster's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// One static address (Kuma's `localhost:5000` cluster).
    Static(SocketAddr),
    /// The connection's original destination (Envoy's ORIGINAL_DST cluster).
    OriginalDestination,
}

/// An upstream cluster used by HTTP routes.
#[derive(Debug)]
#[non_exhaustive]
pub struct Cluster {
    /// Envoy name (`localhost:5000`), logged as `%UPSTREAM_CLUSTER%`.
    pub name: String,
    /// Where requests go.
    pub endpoint: Endpoint,
    /// Connect timeout (Kuma: 10 s for the inbound cluster).
    pub connect_timeout: Duration,
    /// `cluster.<alt_stat_name>.*`.
    pub stats: Arc<ClusterStats>,
}

impl Cluster {
    /// A cluster named `name` with statistics under `stat_name`.
    ///
    /// ```
    /// use meshcap_proxy::hcm::{Cluster, Endpoint};
    /// let c = Cluster::new("localhost:5000", "localhost_5000", Endpoint::Static("127.0.0.1:5000".parse()?));
    /// assert_eq!(c.connect_timeout.as_secs(), 5);
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn new(name: &str, stat_name: &str, endpoint: Endpoint) -> Cluster {
        Cluster {
            name: name.to_string(),
            endpoint,
            connect_timeout: Duration::from_secs(5),
            stats: Arc::new(ClusterStats::new(stat_name)),
        }
    }

    /// Set the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Cluster {
        self.connect_timeout = timeout;
        self
    }
}

/// A route of the single `*` virtual host: a path prefix and its cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Route {
    /// Path prefix (`/` matches every origin-form path; `*` and authority-form targets match no
    /// prefix, which gives Envoy's 404).
    pub prefix: String,
    /// Target cluster.
    pub cluster: Arc<Cluster>,
}

impl Route {
    /// A prefix route.
    pub fn prefix(prefix: &str, cluster: Arc<Cluster>) -> Route {
        Route {
            prefix: prefix.to_string(),
            cluster,
        }
    }
}

/// Configuration of one HTTP connection manager (defaults are Envoy's).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HcmConfig {
    /// `stat_prefix` (`localhost_5000`).
    pub stat_prefix: String,
    /// Listener stat address for `listener.<addr>.http.<prefix>.*` (`10.244.0.6_5000`).
    pub listener_stat_address: Option<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Codec limits.
    pub limits: Limits,
    /// Upgrade protocols allowed (Envoy `upgrade_configs`; empty by default, so `websocket` gets 403).
    pub upgrade_types: Vec<String>,
    /// Time from the first byte of a request head to its end (`request_headers_timeout`; Envoy's
    /// default is none). When it fires: 408 `request header timeout`, connection closed.
    pub request_headers_timeout: Option<Duration>,
    /// Close a connection idle this long between requests (`common_http_protocol_options.idle_timeout`,
    /// Envoy default 1 h, Kuma 7200 s).
    pub idle_timeout: Option<Duration>,
    /// Inactivity allowed within a request (`stream_idle_timeout`, Envoy default 5 min, Kuma 3600 s).
    /// When it fires before the response started: 408 `stream timeout`; after: connection closed.
    pub stream_idle_timeout: Option<Duration>,
    /// Upstream pool limits.
    pub pool: PoolConfig,
    /// Read buffer size per connection and direction (bodies stream through it).
    pub buffer_size: usize,
}

impl Default for HcmConfig {
    fn default() -> HcmConfig {
        HcmConfig {
            stat_prefix: "ingress_http".to_string(),
            listener_stat_address: None,
            routes: Vec::new(),
            limits: Limits::default(),
            upgrade_types: Vec::new(),
            request_headers_timeout: None,
            idle_timeout: Some(Duration::from_secs(3600)),
            stream_idle_timeout: Some(Duration::from_secs(300)),
            pool: PoolConfig::default(),
            buffer_size: 64 * 1024,
        }
    }
}

impl HcmConfig {
    /// Kuma's inbound HCM: stat prefix, one `/` route to `cluster`, `stream_idle_timeout` 3600 s,
    /// `idle_timeout` 7200 s.
    pub fn kuma_inbound(stat_prefix: &str, listener_stat_address: Option<&str>, cluster: Arc<Cluster>) -> HcmConfig {
        HcmConfig {
            stat_prefix: stat_prefix.to_string(),
            listener_stat_address: listener_stat_address.map(str::to_string),
            routes: vec![Route::prefix("/", cluster)],
            idle_timeout: Some(Duration::from_secs(7200)),
            stream_idle_timeout: Some(Duration::from_secs(3600)),
            ..HcmConfig::default()
        }
    }
}

/// Addresses of one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// The address it connected to.
    pub local: SocketAddr,
    /// The original destination (for [`Endpoint::OriginalDestination`] clusters).
    pub original_dst: Option<SocketAddr>,
}

impl ConnInfo {
    /// Addresses without an original destination.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> ConnInfo {
        ConnInfo {
            peer,
            local,
            original_dst: None,
        }
    }
    /// Set the original destination.
    pub fn with_original_dst(mut self, dst: SocketAddr) -> ConnInfo {
        self.original_dst = Some(dst);
        self
    }
}

struct Inner<C: UpstreamConnector> {
    config: HcmConfig,
    stats: Arc<HttpStats>,
    connector: C,
    pool: UpstreamPool<C::Stream>,
    filter: Arc<dyn RequestFilter>,
    log: Option<Arc<dyn AccessLogSink>>,
    ids: RequestIds,
}

/// An HTTP connection manager: shared configuration, statistics and upstream pool; [`Hcm::serve`]
/// drives one client connection. Cheap to clone.
///
/// ```no_run
/// use std::sync::Arc;
/// use meshcap_proxy::hcm::{Cluster, ConnInfo, Endpoint, Hcm, HcmConfig, TcpConnector};
///
/// # async fn run() -> std::io::Result<()> {
/// let cluster = Arc::new(Cluster::new("localhost:5000", "localhost_5000", Endpoint::Static("127.0.0.1:5000".parse().unwrap())));
/// let hcm = Hcm::new(HcmConfig::kuma_inbound("localhost_5000", None, cluster), TcpConnector);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:15000").await?;
/// loop {
///     let (io, peer) = listener.accept().await?;
///     let info = ConnInfo::new(peer, io.local_addr()?);
///     let hcm = hcm.clone();
///     tokio::spawn(async move { hcm.serve(io, info).await });
/// }
/// # }
/// ```
pub struct Hcm<C: UpstreamConnector> {
    inner: Arc<Inner<C>>,
}

impl<C: UpstreamConnector> Clone for Hcm<C> {
    fn clone(&self) -> Hcm<C> {
        Hcm {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: UpstreamConnector> std::fmt::Debug for Hcm<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hcm")
            .field("stat_prefix", &self.inner.config.stat_prefix)
            .finish_non_exhaustive()
    }
}

impl<C: UpstreamConnector> Hcm<C> {
    /// A manager with no filter and no access log.
    pub fn new(config: HcmConfig, connector: C) -> Hcm<C> {
        let stats = Arc::new(HttpStats::new(
            &config.stat_prefix,
            config.listener_stat_address.as_deref(),
        ));
        let pool = UpstreamPool::new(config.pool.clone());
        Hcm {
            inner: Arc::new(Inner {
                config,
                stats,
                connector,
                pool,
                filter: Arc::new(NoFilter),
                log: None,
                ids: RequestIds::new(),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner<C> {
        Arc::get_mut(&mut self.inner).expect("configure the Hcm before cloning it")
    }

    /// Install the request filter.
    ///
    /// # Panics
    /// If the manager was already cloned (configure it first).
    pub fn with_filter(mut self, filter: Arc<dyn RequestFilter>) -> Hcm<C> {
        self.inner_mut().filter = filter;
        self
    }

    /// Install the access-log sink.
    ///
    /// # Panics
    /// If the manager was already cloned (configure it first).
    pub fn with_access_log(mut self, sink: Arc<dyn AccessLogSink>) -> Hcm<C> {
        self.inner_mut().log = Some(sink);
        self
    }

    /// The HCM statistics (register them with the admin server).
    pub fn stats(&self) -> &Arc<HttpStats> {
        &self.inner.stats
    }

    /// The configuration.
    pub fn config(&self) -> &HcmConfig {
        &self.inner.config
    }

    /// The upstream pool.
    pub fn pool(&self) -> &UpstreamPool<C::Stream> {
        &self.inner.pool
    }

    /// Serve one client connection until it closes.
    pub async fn serve<IO>(&self, io: IO, info: ConnInfo)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send,
    {
        conn::serve(&self.inner, io, info).await;
    }
}

/// UUID v4 request ids from a seeded splitmix64 sequence (Envoy adds one as `x-request-id`).
struct RequestIds {
    seed: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        RequestIds {
            seed: h.finish(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self, out: &mut [u8; 36]) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let a = splitmix64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = splitmix64(a);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut j = 0;
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[j] = b'-';
                j += 1;
            }
            out[j] = HEX[usize::from(b >> 4)];
            out[j + 1] = HEX[usize::from(b & 0xf)];
            j += 2;
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_and_distinct() {
        let ids = RequestIds::new();
        let mut a = [0u8; 36];
        let mut b = [0u8; 36];
        ids.next(&mut a);
        ids.next(&mut b);
        assert_ne!(a, b);
        let s = std::str::from_utf8(&a).unwrap();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    }

    #[test]
    fn public_types_are_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Hcm<TcpConnector>>();
        check::<HttpStats>();
        check::<ClusterStats>();
        check::<crate::http1::RequestHead>();
    }
}
