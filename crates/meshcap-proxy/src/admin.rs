//! The admin server: Envoy's admin endpoints over HTTP/1.1 (hyper), loopback-only unless asked.
//!
//! | path | body | content type |
//! | --- | --- | --- |
//! | `/ready` | `LIVE` (200) or the server state (503) | `text/plain; charset=UTF-8` |
//! | `/config_dump` | the JSON the caller supplies (meshcap-envoy renders it) | `application/json` |
//! | `/stats` | `name: value` lines; `?format=json`, `?format=prometheus`, `?usedonly`, `?filter=RE` | text / JSON |
//! | `/stats/prometheus` | Prometheus text exposition, Envoy's names and labels | `text/plain; charset=UTF-8` |
//! | `/listeners` | `name::address` lines; `?format=json` | text / JSON |
//! | `/clusters` | Envoy's `cluster::…` lines; `?format=json` | text / JSON |
//! | `/server_info` | version, state, uptime, options, node | `application/json` |
//!
//! Every response carries Envoy's `cache-control: no-cache, max-age=0`,
//! `x-content-type-options: nosniff` and `server: envoy` headers; JSON is pretty-printed with a
//! one-space indent as Envoy prints it. Bodies are sent with `content-length` rather than chunked.
//!
//! [`AdminConfig::bind`] refuses an address that is not loopback (`0.0.0.0`, a pod IP, …) unless
//! [`AdminConfig::allow_non_loopback`] is set: the admin interface shows the whole configuration.
//! The admin listener has Envoy's `listener.admin.*` and `http.admin.*` statistics.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use meshcap_proxy::admin::{AdminConfig, AdminState};
//! use meshcap_proxy::stats::StatsRegistry;
//!
//! let stats = StatsRegistry::new();
//! let state = AdminState::new(stats.clone()).config_dump(|| r#"{"configs":[]}"#.to_string());
//! let server = AdminConfig::new("127.0.0.1:0".parse()?).bind(state)?;
//! let addr = server.local_addr();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(server.serve(async move { let _ = stopped.await; }));
//!
//! let mut s = tokio::net::TcpStream::connect(addr).await?;
//! tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
//! let mut reply = String::new();
//! tokio::io::AsyncReadExt::read_to_string(&mut s, &mut reply).await?;
//! assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(reply.ends_with("\r\n\r\nLIVE\n"));
//!
//! assert!(AdminConfig::new("0.0.0.0:9901".parse()?).bind(AdminState::new(stats)).is_err());
//! stop.send(()).ok();
//! task.await??;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, SERVER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize as _;
use serde_json::Value;

use crate::listen::{Connection, ListenError, Listener, ListenerConfig, ListenerStats, ServeReport};
use crate::stats::{Counter, Gauge, StatSource, StatValue, StatsFilter, StatsRegistry};

/// Envoy's default admin address.
pub const DEFAULT_ADMIN_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

/// Where and how the admin server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    address: SocketAddr,
    allow_non_loopback: bool,
    max_connections: usize,
    header_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig::new(DEFAULT_ADMIN_ADDRESS)
    }
}

impl AdminConfig {
    /// Listen on `address` (loopback only unless [`allow_non_loopback`](Self::allow_non_loopback)), at most
    /// 64 connections at once, 10 s to send a request head.
    pub fn new(address: SocketAddr) -> AdminConfig {
        AdminConfig {
            address,
            allow_non_loopback: false,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
        }
    }

    /// Allow an address that is not loopback. The admin interface exposes the configuration and
    /// statistics to whoever can reach it.
    pub fn allow_non_loopback(mut self, allow: bool) -> AdminConfig {
        self.allow_non_loopback = allow;
        self
    }

    /// At most this many admin connections at once.
    pub fn max_connections(mut self, max: usize) -> AdminConfig {
        self.max_connections = max.max(1);
        self
    }

    /// Time a client gets to send a complete request head.
    pub fn header_timeout(mut self, timeout: Duration) -> AdminConfig {
        self.header_timeout = timeout;
        self
    }

    /// Bind the admin listener. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`AdminError::NonLoopback`] for an address that is not loopback without
    /// [`allow_non_loopback`](Self::allow_non_loopback); [`AdminError::Listen`] when binding fails.
    pub fn bind(self, state: AdminState) -> Result<AdminServer, AdminError> {
        let ip = crate::upstream::canonical(self.address).ip();
        if !ip.is_loopback() && !self.allow_non_loopback {
            return Err(AdminError::NonLoopback { addr: self.address });
        }
        let listener = ListenerConfig::new("admin", self.address)
            .stat_prefix("admin")
            .worker("main_thread")
            .max_connections(Some(self.max_connections))
            .drain_timeout(Duration::from_secs(1))
            .bind()?;
        let http_stats = Arc::new(AdminHttpStats::default());
        state
            .stats
            .register(Arc::new(AdminListenerStats(listener.stats().clone())));
        state.stats.register(http_stats.clone());
        Ok(AdminServer {
            listener,
            state: Arc::new(state),
            http_stats,
            header_timeout: self.header_timeout,
        })
    }
}

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The address is not loopback and non-loopback binding was not allowed.
    #[error(
        "refusing to serve the admin interface on non-loopback address {addr} (set allow_non_loopback to expose it)"
    )]
    NonLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// Binding the listener failed.
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// The server's lifecycle state, as `/ready` and `/server_info` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerState {
    /// Serving.
    Live,
    /// Draining listeners before shutdown.
    Draining,
    /// Not initialised yet.
    PreInitializing,
    /// Initialising (listeners not all bound yet).
    Initializing,
}

impl ServerState {
    /// Envoy's name (`LIVE`, `DRAINING`, `PRE_INITIALIZING`, `INITIALIZING`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            ServerState::Live => 0,
            ServerState::Draining => 1,
            ServerState::PreInitializing => 2,
            ServerState::Initializing => 3,
        }
    }

    fn from_u8(v: u8) -> ServerState {
        match v {
            0 => ServerState::Live,
            1 => ServerState::Draining,
            2 => ServerState::PreInitializing,
            _ => ServerState::Initializing,
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shared, settable [`ServerState`] (the binary flips it to `Draining` on SIGTERM).
#[derive(Debug, Clone)]
pub struct StateHandle(Arc<AtomicU8>);

impl StateHandle {
    /// A handle in `state`.
    pub fn new(state: ServerState) -> StateHandle {
        StateHandle(Arc::new(AtomicU8::new(state.to_u8())))
    }
    /// The current state.
    pub fn get(&self) -> ServerState {
        ServerState::from_u8(self.0.load(Ordering::Relaxed))
    }
    /// Change the state.
    pub fn set(&self, state: ServerState) {
        self.0.store(state.to_u8(), Ordering::Relaxed);
    }
}

/// One listener as `/listeners` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    /// Envoy listener name (`inbound:passthrough:ipv4`).
    pub name: String,
    /// Its address (the configured one for listeners that do not bind, as Envoy shows them).
    pub address: SocketAddr,
}

/// Envoy's circuit breaker thresholds of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// `max_connections`.
    pub max_connections: u32,
    /// `max_pending_requests`.
    pub max_pending_requests: u32,
    /// `max_requests`.
    pub max_requests: u32,
    /// `max_retries`.
    pub max_retries: u32,
}

impl Default for Thresholds {
    /// Envoy's defaults: 1024 / 1024 / 1024 / 3.
    fn default() -> Thresholds {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Per-host statistics and attributes as `/clusters` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// The host address.
    pub address: SocketAddr,
    /// Connections open now.
    pub cx_active: u64,
    /// Failed connection attempts.
    pub cx_connect_fail: u64,
    /// Connections opened.
    pub cx_total: u64,
    /// Requests in flight.
    pub rq_active: u64,
    /// Requests that failed.
    pub rq_error: u64,
    /// Requests waiting for a connection.
    pub rq_pending_active: u64,
    /// Requests that succeeded.
    pub rq_success: u64,
    /// Requests that timed out.
    pub rq_timeout: u64,
    /// Requests.
    pub rq_total: u64,
    /// Load-balancing weight.
    pub weight: u32,
}

impl HostStatus {
    /// A host at `address` with zero statistics and weight 1.
    pub fn new(address: SocketAddr) -> HostStatus {
        HostStatus {
            address,
            cx_active: 0,
            cx_connect_fail: 0,
            cx_total: 0,
            rq_active: 0,
            rq_error: 0,
            rq_pending_active: 0,
            rq_success: 0,
            rq_timeout: 0,
            rq_total: 0,
            weight: 1,
        }
    }
}

/// One cluster as `/clusters` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Envoy cluster name (`localhost:5000`).
    pub name: String,
    /// Its statistics name (`localhost_5000`).
    pub observability_name: String,
    /// Default-priority thresholds.
    pub default_priority: Thresholds,
    /// High-priority thresholds.
    pub high_priority: Thresholds,
    /// Hosts (empty for an `ORIGINAL_DST` cluster with no traffic yet).
    pub hosts: Vec<HostStatus>,
}

impl ClusterStatus {
    /// A cluster with Envoy's default thresholds and no hosts.
    pub fn new(name: impl Into<String>, observability_name: impl Into<String>) -> ClusterStatus {
        ClusterStatus {
            name: name.into(),
            observability_name: observability_name.into(),
            default_priority: Thresholds::default(),
            high_priority: Thresholds::default(),
            hosts: Vec::new(),
        }
    }
}

/// What `/server_info` reports besides state and uptime.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// The version string.
    pub version: String,
    /// Node id (`default.backend-01`).
    pub node_id: String,
    /// Node cluster (`backend`).
    pub node_cluster: String,
    /// `command_line_options` (free-form JSON object).
    pub command_line_options: serde_json::Map<String, Value>,
}

impl Default for ServerInfo {
    fn default() -> ServerInfo {
        ServerInfo {
            version: format!("meshcap/{}", env!("CARGO_PKG_VERSION")),
            node_id: String::new(),
            node_cluster: String::new(),
            command_line_options: serde_json::Map::new(),
        }
    }
}

type Provider<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// What the admin server shows; built once, read on every request.
#[derive(Clone)]
pub struct AdminState {
    stats: StatsRegistry,
    config_dump: Provider<String>,
    listeners: Provider<Vec<ListenerStatus>>,
    clusters: Provider<Vec<ClusterStatus>>,
    server_info: ServerInfo,
    state: StateHandle,
    started: Instant,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("stats", &self.stats)
            .field("server_info", &self.server_info)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Statistics from `stats`; an empty config dump, no listeners, no clusters, state `LIVE`.
    pub fn new(stats: StatsRegistry) -> AdminState {
        AdminState {
            stats,
            config_dump: Arc::new(|| "{\n \"configs\": []\n}\n".to_string()),
            listeners: Arc::new(Vec::new),
            clusters: Arc::new(Vec::new),
            server_info: ServerInfo::default(),
            state: StateHandle::new(ServerState::Live),
            started: Instant::now(),
        }
    }

    /// The `/config_dump` body, produced on each request.
    pub fn config_dump(mut self, dump: impl Fn() -> String + Send + Sync + 'static) -> AdminState {
        self.config_dump = Arc::new(dump);
        self
    }

    /// The `/listeners` content, produced on each request.
    pub fn listeners(mut self, listeners: impl Fn() -> Vec<ListenerStatus> + Send + Sync + 'static) -> AdminState {
        self.listeners = Arc::new(listeners);
        self
    }

    /// The `/clusters` content, produced on each request.
    pub fn clusters(mut self, clusters: impl Fn() -> Vec<ClusterStatus> + Send + Sync + 'static) -> AdminState {
        self.clusters = Arc::new(clusters);
        self
    }

    /// The `/server_info` details.
    pub fn server_info(mut self, info: ServerInfo) -> AdminState {
        self.server_info = info;
        self
    }

    /// Share the server state with `handle` (so the caller can switch to `DRAINING`).
    pub fn state(mut self, handle: StateHandle) -> AdminState {
        self.state = handle;
        self
    }
}

/// A bound admin server; run it with [`AdminServer::serve`].
#[derive(Debug)]
pub struct AdminServer {
    listener: Listener,
    state: Arc<AdminState>,
    http_stats: Arc<AdminHttpStats>,
    header_timeout: Duration,
}

impl AdminServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes (then in-flight admin requests get a second to finish).
    ///
    /// # Errors
    /// See [`Listener::serve`].
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> Result<ServeReport, ListenError> {
        let AdminServer {
            listener,
            state,
            http_stats,
            header_timeout,
        } = self;
        let handler = move |conn: Connection| {
            let state = state.clone();
            let http_stats = http_stats.clone();
            async move { serve_connection(conn, state, http_stats, header_timeout).await }
        };
        listener.serve(handler, shutdown).await
    }
}

async fn serve_connection(
    conn: Connection,
    state: Arc<AdminState>,
    http_stats: Arc<AdminHttpStats>,
    header_timeout: Duration,
) {
    http_stats.downstream_cx_total.inc();
    http_stats.downstream_cx_active.inc();
    let service = {
        let http_stats = http_stats.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let http_stats = http_stats.clone();
            async move {
                http_stats.downstream_rq_total.inc();
                let response = respond(&state, req.method(), req.uri().path(), req.uri().query());
                http_stats.completed(response.status());
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(conn.stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        }
        () = conn.drain.signaled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
    http_stats.downstream_cx_active.dec();
    http_stats.downstream_cx_destroy.inc();
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, max-age=0"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(SERVER, HeaderValue::from_static("envoy"));
    r
}

/// Query parameters: `key` or `key=value`, `&`-separated, `%XX` and `+` decoded.
fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The response to one admin request (pure: no I/O).
pub(crate) fn respond(state: &AdminState, method: &Method, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            format!("method {method} not allowed for {path}, use GET\n"),
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let params = query_params(query);
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let json_format = param("format") == Some("json");
    match path {
        "/ready" => {
            let s = state.state.get();
            let status = if s == ServerState::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response(status, TEXT, format!("{s}\n"))
        }
        "/config_dump" => response(StatusCode::OK, JSON, (state.config_dump)()),
        "/stats" | "/stats/prometheus" => {
            let mut filter = StatsFilter::new().used_only(param("usedonly").is_some());
            if let Some(pattern) = param("filter") {
                filter = match filter.pattern(pattern) {
                    Ok(f) => f,
                    Err(e) => return response(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
                };
            }
            let snapshot = state.stats.snapshot().filtered(&filter);
            match (path, param("format")) {
                ("/stats/prometheus", _) | (_, Some("prometheus")) => {
                    response(StatusCode::OK, TEXT, snapshot.to_prometheus())
                }
                (_, Some("json")) => response(StatusCode::OK, JSON, snapshot.to_json()),
                (_, None | Some("text")) => response(StatusCode::OK, TEXT, snapshot.to_text()),
                (_, Some(other)) => response(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("unsupported stats format {other:?}\n"),
                ),
            }
        }
        "/listeners" => {
            let listeners = (state.listeners)();
            if json_format {
                response(StatusCode::OK, JSON, listeners_json(&listeners))
            } else {
                response(StatusCode::OK, TEXT, listeners_text(&listeners))
            }
        }
        "/clusters" => {
            let clusters = (state.clusters)();
            if json_format {
                response(StatusCode::OK, JSON, clusters_json(&clusters))
            } else {
                response(StatusCode::OK, TEXT, clusters_text(&clusters))
            }
        }
        "/server_info" => response(StatusCode::OK, JSON, server_info_json(state)),
        "/" => response(StatusCode::OK, TEXT, help()),
        _ => response(StatusCode::NOT_FOUND, TEXT, format!("invalid path: {path}\n{}", help())),
    }
}

fn help() -> String {
    let mut out = String::from("admin commands are:\n");
    for (path, what) in [
        ("/clusters", "upstream cluster status"),
        ("/config_dump", "dump current Envoy configs"),
        ("/listeners", "print listener info"),
        ("/ready", "print server state, return 200 if LIVE, otherwise return 503"),
        ("/server_info", "print server version/status information"),
        ("/stats", "print server stats"),
        ("/stats/prometheus", "print server stats in prometheus format"),
    ] {
        let _ = writeln!(out, "  {path}: {what}");
    }
    out
}

/// A JSON value whose objects keep their insertion order (Envoy prints protobuf fields in field order).
#[derive(Debug, Clone)]
enum J {
    Obj(Vec<(&'static str, J)>),
    Arr(Vec<J>),
    Str(String),
    Num(i128),
    /// A caller-supplied value, printed in serde_json's order.
    Raw(Value),
}

fn s(v: impl Into<String>) -> J {
    J::Str(v.into())
}

impl J {
    /// Pretty JSON as Envoy prints it: one-space indent, `"key": value`, trailing newline.
    fn to_envoy_string(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, d: usize| out.extend(std::iter::repeat_n(' ', d));
        match self {
            J::Obj(fields) if fields.is_empty() => out.push_str("{}"),
            J::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(out, depth + 1);
                    push_json_string(out, k);
                    out.push_str(": ");
                    v.write(out, depth + 1);
                    out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push('}');
            }
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Arr(items) => {
                out.push_str("[\n");
                for (i, v) in items.iter().enumerate() {
                    pad(out, depth + 1);
                    v.write(out, depth + 1);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, depth);
                out.push(']');
            }
            J::Str(v) => push_json_string(out, v),
            J::Num(n) => {
                let _ = write!(out, "{n}");
            }
            J::Raw(v) => {
                let mut buf = Vec::new();
                let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
                // Serialising a `Value` into memory cannot fail.
                let _ = v.serialize(&mut ser);
                let text = String::from_utf8_lossy(&buf);
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        out.push('\n');
                        pad(out, depth);
                    }
                    out.push_str(line);
                }
            }
        }
    }
}

fn push_json_string(out: &mut String, v: &str) {
    out.push_str(&Value::String(v.to_string()).to_string());
}

fn socket_address(addr: &SocketAddr) -> J {
    J::Obj(vec![(
        "socket_address",
        J::Obj(vec![
            ("address", s(addr.ip().to_string())),
            ("port_value", J::Num(addr.port().into())),
        ]),
    )])
}

/// `/listeners` text: `name::address` per listener.
pub fn listeners_text(listeners: &[ListenerStatus]) -> String {
    let mut out = String::new();
    for l in listeners {
        let _ = writeln!(out, "{}::{}", l.name, l.address);
    }
    out
}

/// `/listeners?format=json`.
pub fn listeners_json(listeners: &[ListenerStatus]) -> String {
    let statuses = listeners
        .iter()
        .map(|l| {
            J::Obj(vec![
                ("name", s(&l.name)),
                ("local_address", socket_address(&l.address)),
            ])
        })
        .collect();
    J::Obj(vec![("listener_statuses", J::Arr(statuses))]).to_envoy_string()
}

/// `/clusters` text, Envoy's `cluster::…` lines.
pub fn clusters_text(clusters: &[ClusterStatus]) -> String {
    let mut out = String::new();
    for c in clusters {
        let n = &c.name;
        let _ = writeln!(out, "{n}::observability_name::{}", c.observability_name);
        for (priority, t) in [
            ("default_priority", &c.default_priority),
            ("high_priority", &c.high_priority),
        ] {
            let _ = writeln!(out, "{n}::{priority}::max_connections::{}", t.max_connections);
            let _ = writeln!(out, "{n}::{priority}::max_pending_requests::{}", t.max_pending_requests);
            let _ = writeln!(out, "{n}::{priority}::max_requests::{}", t.max_requests);
            let _ = writeln!(out, "{n}::{priority}::max_retries::{}", t.max_retries);
        }
        let _ = writeln!(out, "{n}::added_via_api::false");
        for h in &c.hosts {
            let a = h.address;
            for (stat, v) in [
                ("cx_active", h.cx_active),
                ("cx_connect_fail", h.cx_connect_fail),
                ("cx_total", h.cx_total),
                ("rq_active", h.rq_active),
                ("rq_error", h.rq_error),
                ("rq_pending_active", h.rq_pending_active),
                ("rq_success", h.rq_success),
                ("rq_timeout", h.rq_timeout),
                ("rq_total", h.rq_total),
            ] {
                let _ = writeln!(out, "{n}::{a}::{stat}::{v}");
            }
            let _ = writeln!(out, "{n}::{a}::hostname::");
            let _ = writeln!(out, "{n}::{a}::health_flags::healthy");
            let _ = writeln!(out, "{n}::{a}::weight::{}", h.weight);
            for attr in ["region", "zone", "sub_zone"] {
                let _ = writeln!(out, "{n}::{a}::{attr}::");
            }
            let _ = writeln!(out, "{n}::{a}::canary::false");
            let _ = writeln!(out, "{n}::{a}::priority::0");
            let _ = writeln!(out, "{n}::{a}::success_rate::-1");
            let _ = writeln!(out, "{n}::{a}::local_origin_success_rate::-1");
        }
    }
    out
}

/// `/clusters?format=json` (proto JSON: zero values omitted, 64-bit values as strings).
pub fn clusters_json(clusters: &[ClusterStatus]) -> String {
    fn thresholds(t: &Thresholds, high: bool) -> J {
        let mut m = Vec::new();
        if high {
            m.push(("priority", s("HIGH")));
        }
        m.push(("max_connections", J::Num(t.max_connections.into())));
        m.push(("max_pending_requests", J::Num(t.max_pending_requests.into())));
        m.push(("max_requests", J::Num(t.max_requests.into())));
        m.push(("max_retries", J::Num(t.max_retries.into())));
        J::Obj(m)
    }
    fn stat(name: &str, value: u64, gauge: bool) -> J {
        let mut m = Vec::new();
        if gauge {
            m.push(("type", s("GAUGE")));
        }
        m.push(("name", s(name)));
        if value != 0 {
            m.push(("value", s(value.to_string())));
        }
        J::Obj(m)
    }
    let statuses = clusters
        .iter()
        .map(|c| {
            let mut m = vec![("name", s(&c.name))];
            if !c.hosts.is_empty() {
                let hosts = c
                    .hosts
                    .iter()
                    .map(|h| {
                        J::Obj(vec![
                            ("address", socket_address(&h.address)),
                            (
                                "stats",
                                J::Arr(vec![
                                    stat("cx_connect_fail", h.cx_connect_fail, false),
                                    stat("cx_total", h.cx_total, false),
                                    stat("rq_error", h.rq_error, false),
                                    stat("rq_success", h.rq_success, false),
                                    stat("rq_timeout", h.rq_timeout, false),
                                    stat("rq_total", h.rq_total, false),
                                    stat("cx_active", h.cx_active, true),
                                    stat("rq_active", h.rq_active, true),
                                    stat("rq_pending_active", h.rq_pending_active, true),
                                ]),
                            ),
                            ("health_status", J::Obj(vec![("eds_health_status", s("HEALTHY"))])),
                            ("weight", J::Num(h.weight.into())),
                            ("locality", J::Obj(Vec::new())),
                        ])
                    })
                    .collect();
                m.push(("host_statuses", J::Arr(hosts)));
            }
            m.push((
                "circuit_breakers",
                J::Obj(vec![(
                    "thresholds",
                    J::Arr(vec![
                        thresholds(&c.default_priority, false),
                        thresholds(&c.high_priority, true),
                    ]),
                )]),
            ));
            m.push(("observability_name", s(&c.observability_name)));
            J::Obj(m)
        })
        .collect();
    J::Obj(vec![("cluster_statuses", J::Arr(statuses))]).to_envoy_string()
}

fn server_info_json(state: &AdminState) -> String {
    let uptime = format!("{}s", state.started.elapsed().as_secs());
    let info = &state.server_info;
    let (major, minor, patch) = crate_version();
    J::Obj(vec![
        ("version", s(&info.version)),
        ("state", s(state.state.get().as_str())),
        ("uptime_current_epoch", s(&uptime)),
        ("uptime_all_epochs", s(&uptime)),
        ("hot_restart_version", s("disabled")),
        (
            "command_line_options",
            J::Raw(Value::Object(info.command_line_options.clone())),
        ),
        (
            "node",
            J::Obj(vec![
                ("id", s(&info.node_id)),
                ("cluster", s(&info.node_cluster)),
                ("user_agent_name", s("meshcap")),
                (
                    "user_agent_build_version",
                    J::Obj(vec![(
                        "version",
                        J::Obj(vec![
                            ("major_number", J::Num(major.into())),
                            ("minor_number", J::Num(minor.into())),
                            ("patch", J::Num(patch.into())),
                        ]),
                    )]),
                ),
            ]),
        ),
    ])
    .to_envoy_string()
}

fn crate_version() -> (u32, u32, u32) {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Envoy's `listener.admin.*` names: the admin listener has no filter-chain extension counters.
struct AdminListenerStats(Arc<ListenerStats>);

impl StatSource for AdminListenerStats {
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
        self.0.visit_stats(&mut |name, value| {
            if !name.ends_with(".extension_config_missing") && !name.ends_with(".network_extension_config_missing") {
                visit(name, value);
            }
        });
    }
}

/// `http.admin.*` and `listener.admin.http.admin.*` statistics of the admin HTTP server.
#[derive(Debug, Default)]
struct AdminHttpStats {
    downstream_cx_total: Counter,
    downstream_cx_active: Gauge,
    downstream_cx_destroy: Counter,
    downstream_rq_total: Counter,
    downstream_rq_completed: Counter,
    downstream_rq_xx: [Counter; 5],
}

impl AdminHttpStats {
    fn completed(&self, status: StatusCode) {
        self.downstream_rq_completed.inc();
        let class = usize::from(status.as_u16() / 100);
        if (1..=5).contains(&class) {
            self.downstream_rq_xx[class - 1].inc();
        }
    }
}

impl StatSource for AdminHttpStats {
    fn visit_stats(&self, visit: &mut dyn FnMut(&str, StatValue)) {
        let c = |c: &Counter| StatValue::Counter(c.get());
        visit("http.admin.downstream_cx_total", c(&self.downstream_cx_total));
        visit(
            "http.admin.downstream_cx_active",
            StatValue::Gauge(self.downstream_cx_active.get()),
        );
        visit("http.admin.downstream_cx_destroy", c(&self.downstream_cx_destroy));
        visit("http.admin.downstream_rq_total", c(&self.downstream_rq_total));
        visit("http.admin.downstream_rq_completed", c(&self.downstream_rq_completed));
        visit(
            "listener.admin.http.admin.downstream_rq_completed",
            c(&self.downstream_rq_completed),
        );
        let mut name = String::new();
        for (i, counter) in self.downstream_rq_xx.iter().enumerate() {
            for prefix in ["http.admin", "listener.admin.http.admin"] {
                name.clear();
                let _ = write!(name, "{prefix}.downstream_rq_{}xx", i + 1);
                visit(&name, c(counter));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(
            query_params(Some("format=json&usedonly&filter=%5Ecluster%5C.+x")),
            vec![
                ("format".into(), "json".into()),
                ("usedonly".into(), String::new()),
                ("filter".into(), "^cluster\\. x".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(query_params(None), vec![]);
    }

    #[test]
    fn state_round_trip() {
        let h = StateHandle::new(ServerState::PreInitializing);
        for s in [
            ServerState::Live,
            ServerState::Draining,
            ServerState::Initializing,
            ServerState::PreInitializing,
        ] {
            h.set(s);
            assert_eq!(h.get(), s);
        }
    }
}
