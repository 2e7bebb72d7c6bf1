//! The upstream seams: how connections are made, and the keep-alive pool.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::stats::ClusterStats;

/// Makes upstream connections. The runtime supplies the real one (source binding to 127.0.0.6,
/// socket options); [`TcpConnector`] is a plain one. The HCM applies the cluster's connect timeout
/// around [`UpstreamConnector::connect`].
pub trait UpstreamConnector: Send + Sync + 'static {
    /// The connection type.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Connect to `addr`.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain `TcpStream::connect` with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl UpstreamConnector for TcpConnector {
    type Stream = TcpStream;
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// Pool limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Most idle connections kept per upstream address.
    pub max_idle_per_host: usize,
    /// An idle connection older than this is closed instead of reused (Kuma: 7200 s).
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(7200),
        }
    }
}

/// An upstream connection with the statistics that follow it: `upstream_cx_active` drops and
/// `upstream_cx_destroy*` rise when it is dropped.
#[derive(Debug)]
pub(crate) struct UpstreamConn<S> {
    pub(crate) io: S,
    pub(crate) stats: Arc<ClusterStats>,
    pub(crate) closed_by_remote: bool,
}

impl<S> Drop for UpstreamConn<S> {
    fn drop(&mut self) {
        let f = &self.stats.fields;
        f.upstream_cx_active.dec();
        f.upstream_cx_destroy.inc();
        if self.closed_by_remote {
            f.upstream_cx_destroy_remote.inc();
        } else {
            f.upstream_cx_destroy_local.inc();
        }
    }
}

struct Idle<S> {
    conn: UpstreamConn<S>,
    since: Instant,
}

/// Idle keep-alive connections per upstream address. A connection is only ever returned after a
/// complete, well-framed exchange on a persistent connection; it is checked for a pending close (or
/// stray bytes) before reuse.
pub struct UpstreamPool<S> {
    config: PoolConfig,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle<S>>>>,
}

impl<S> std::fmt::Debug for UpstreamPool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.idle.lock().map(|m| m.values().map(Vec::len).sum()).unwrap_or(0);
        f.debug_struct("UpstreamPool")
            .field("config", &self.config)
            .field("idle", &n)
            .finish()
    }
}

impl<S: AsyncRead + Unpin> UpstreamPool<S> {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> UpstreamPool<S> {
        UpstreamPool {
            config,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Number of idle connections to `addr`.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.lock().map(|m| m.get(&addr).map_or(0, Vec::len)).unwrap_or(0)
    }

    /// Take the most recently used live idle connection to `addr`.
    pub(crate) fn checkout(&self, addr: SocketAddr) -> Option<UpstreamConn<S>> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut map = self.idle.lock().ok()?;
            let list = map.get_mut(&addr)?;
            let mut found = None;
            while let Some(mut idle) = list.pop() {
                if now.duration_since(idle.since) >= self.config.idle_timeout {
                    idle.conn.stats.fields.upstream_cx_idle_timeout.inc();
                    stale.push(idle.conn);
                    continue;
                }
                if is_alive(&mut idle.conn.io) {
                    found = Some(idle.conn);
                    break;
                }
                idle.conn.closed_by_remote = true;
                stale.push(idle.conn);
            }
            found
        };
        drop(stale);
        found
    }

    /// Return a connection after a clean exchange.
    pub(crate) fn checkin(&self, addr: SocketAddr, conn: UpstreamConn<S>) {
        let Ok(mut map) = self.idle.lock() else { return };
        let list = map.entry(addr).or_default();
        if list.len() >= self.config.max_idle_per_host {
            return; // dropped: closed locally
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// Whether an idle connection is still usable: no EOF, no error and no unsolicited bytes waiting.
fn is_alive<S: AsyncRead + Unpin>(io: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(io).poll_read(&mut cx, &mut buf), Poll::Pending)
}
