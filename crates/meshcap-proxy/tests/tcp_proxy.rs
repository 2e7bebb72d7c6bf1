//! tcp_proxy behind a real listener on loopback: half-close, connect failures, idle timeout, and the
//! statistics a real Envoy moves for one passthrough connection (`reference/envoy/e2e/A1-stats-delta.txt`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshcap_proxy::access_log::ResponseFlags;
use meshcap_proxy::listen::{Connection, ListenerConfig, ServeReport};
use meshcap_proxy::stats::{Counter, StatValue, StatsRegistry};
use meshcap_proxy::tcp_proxy::{SessionEnd, TcpProxy, TcpProxyConfig, TcpProxyOutcome};
use meshcap_proxy::upstream::{ClusterStats, Connector, DEFAULT_ORIGINAL_DST_CLEANUP, HostSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A proxy front end: a listener whose handler proxies every connection to `upstream` and reports each
/// session's outcome.
struct Front {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<TcpProxyOutcome>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<ServeReport, meshcap_proxy::listen::ListenError>>,
    listener_stats: Arc<meshcap_proxy::listen::ListenerStats>,
}

fn start_front(proxy: TcpProxy, upstream: SocketAddr) -> Front {
    let listener = ListenerConfig::new("outbound:passthrough:ipv4", "127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap();
    let addr = listener.local_addr();
    let listener_stats = listener.stats().clone();
    let (tx, outcomes) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve(
        move |c: Connection| {
            let proxy = proxy.clone();
            let tx = tx.clone();
            async move {
                let outcome = proxy.proxy(c.stream, upstream).await;
                let _ = tx.send(outcome);
            }
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Front {
        addr,
        outcomes,
        stop,
        server,
        listener_stats,
    }
}

impl Front {
    async fn shutdown(self) -> ServeReport {
        self.stop.send(()).unwrap();
        self.server.await.unwrap().unwrap()
    }
}

fn proxy(prefix: &str) -> TcpProxy {
    TcpProxy::new(
        TcpProxyConfig::new(prefix),
        Arc::new(ClusterStats::new(prefix)),
        Connector::new(),
    )
}

#[tokio::test]
async fn half_close_is_forwarded_as_fin_and_the_other_direction_keeps_flowing() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let response: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let expected = response.clone();
    let app = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        // Read the whole request: returns only when the client's FIN was forwarded (a reset would be
        // an error here).
        let mut request = Vec::new();
        s.read_to_end(&mut request)
            .await
            .expect("clean EOF from the proxy, not a reset");
        // The connection is half-closed; the other direction still works.
        s.write_all(&response).await.expect("write after the peer's FIN");
        s.shutdown().await.unwrap();
        request
    });

    let p = proxy("outbound_passthrough_ipv4");
    let mut front = start_front(p.clone(), upstream_addr);
    let mut client = TcpStream::connect(front.addr).await.unwrap();
    client.write_all(b"hello upstream").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.expect("clean EOF, no reset");
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "response bytes differ");
    assert_eq!(app.await.unwrap(), b"hello upstream");

    let outcome = front.outcomes.recv().await.unwrap();
    assert_eq!(outcome.end, SessionEnd::Completed);
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.bytes_received, 14);
    assert_eq!(outcome.bytes_sent, 1_048_576);
    assert_eq!(outcome.upstream_host, Some(upstream_addr));
    assert_eq!(outcome.flags, ResponseFlags::empty());

    let s = p.stats();
    assert_eq!(s.downstream_cx_rx_bytes_total.get(), 14);
    assert_eq!(s.downstream_cx_tx_bytes_total.get(), 1_048_576);
    let c = p.cluster_stats();
    assert_eq!(c.upstream_cx_tx_bytes_total.get(), 14);
    assert_eq!(c.upstream_cx_rx_bytes_total.get(), 1_048_576);
    // The client ended its side first: a local close for the cluster.
    assert_eq!(c.upstream_cx_destroy_local.get(), 1);
    assert_eq!(c.upstream_cx_destroy_remote.get(), 0);
    assert_eq!(c.upstream_cx_active.get(), 0);
    let report = front.shutdown().await;
    assert_eq!(report.accepted, 1);
}

#[tokio::test]
async fn byte_counters_move_while_data_flows() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (got_tx, got_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        got_tx.send(()).unwrap();
        let _ = release_rx.await;
    });
    let p = proxy("p");
    let front = start_front(p.clone(), upstream_addr);
    let mut client = TcpStream::connect(front.addr).await.unwrap();
    client.write_all(b"12345").await.unwrap();
    got_rx.await.unwrap();
    // Mid-session: the bytes are already counted.
    assert_eq!(p.stats().downstream_cx_rx_bytes_total.get(), 5);
    assert_eq!(p.cluster_stats().upstream_cx_tx_bytes_total.get(), 5);
    assert_eq!(p.cluster_stats().upstream_cx_active.get(), 1);
    assert_eq!(front.listener_stats.downstream_cx_active.get(), 1);
    release_tx.send(()).unwrap();
    drop(client);
    front.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_closes_the_client_and_flags_uf() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = proxy("inbound_passthrough_ipv4");
    let mut front = start_front(p.clone(), closed);
    let mut client = TcpStream::connect(front.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = client.read_to_end(&mut buf).await.expect("closed with FIN");
    assert_eq!(n, 0);
    let outcome = front.outcomes.recv().await.unwrap();
    assert_eq!(outcome.end, SessionEnd::ConnectFailed);
    assert_eq!(outcome.flags, ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
    assert_eq!(
        outcome.error.as_ref().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    let c = p.cluster_stats();
    assert_eq!(c.upstream_cx_connect_fail.get(), 1);
    assert_eq!(c.upstream_cx_connect_timeout.get(), 0);
    assert_eq!(c.upstream_cx_total.get(), 1);
    assert_eq!(c.upstream_cx_active.get(), 0);
    assert_eq!(p.stats().downstream_cx_total.get(), 1);
    let line = meshcap_proxy::access_log::AccessLogFormat::parse(
        "\"%REQ(:METHOD)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% rx=%BYTES_RECEIVED% tx=%BYTES_SENT% upstream=%UPSTREAM_HOST% cluster=%UPSTREAM_CLUSTER%",
    )
    .unwrap()
    .format(&outcome.access_log_entry("inbound:passthrough:ipv4", None, None));
    assert_eq!(
        line,
        "\"- -\" 0 UF rx=0 tx=0 upstream=- cluster=inbound:passthrough:ipv4"
    );
    front.shutdown().await;
}

#[tokio::test]
async fn connect_timeout_is_counted() {
    // A listener with a full accept queue drops SYNs, so connecting to it hangs (loopback only).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.listen(0).unwrap();
    let black_hole = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(black_hole)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let p = TcpProxy::new(
        TcpProxyConfig::new("t"),
        Arc::new(ClusterStats::new("t")),
        Connector::new().connect_timeout(Duration::from_millis(300)),
    );
    let mut front = start_front(p.clone(), black_hole);
    let _client = TcpStream::connect(front.addr).await.unwrap();
    let outcome = front.outcomes.recv().await.unwrap();
    assert_eq!(outcome.end, SessionEnd::ConnectFailed);
    assert_eq!(outcome.flags, ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
    assert_eq!(p.cluster_stats().upstream_cx_connect_timeout.get(), 1);
    assert_eq!(p.cluster_stats().upstream_cx_connect_fail.get(), 1);
    front.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_are_closed() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let app = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = Vec::new();
        // Holds the connection open; sees EOF when the proxy gives up.
        s.read_to_end(&mut buf).await.unwrap_or(0)
    });
    let p = TcpProxy::new(
        TcpProxyConfig::new("idle").idle_timeout(Some(Duration::from_secs(30))),
        Arc::new(ClusterStats::new("idle")),
        Connector::new(),
    );
    let mut front = start_front(p.clone(), upstream_addr);
    let mut client = TcpStream::connect(front.addr).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let outcome = front.outcomes.recv().await.unwrap();
    assert_eq!(outcome.end, SessionEnd::IdleTimeout);
    assert!(outcome.duration >= Duration::from_secs(30), "{:?}", outcome.duration);
    assert_eq!(p.stats().idle_timeout.get(), 1);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(app.await.unwrap(), 1);
    front.shutdown().await;
}

/// One connection through the outbound passthrough, as in Envoy's phase A1: the client sends 81 bytes,
/// the upstream answers 210 bytes and closes. The statistics that move must be the ones Envoy moved,
/// by the same amounts.
#[tokio::test]
async fn stat_deltas_match_envoy_outbound_passthrough() {
    let Some(reference) = meshcap_testns::reference_dir("tcp_proxy_stat_deltas") else {
        return;
    };
    let delta_text = std::fs::read_to_string(reference.join("envoy/e2e/A1-stats-delta.txt")).unwrap();
    let envoy: BTreeMap<String, i64> = delta_text
        .lines()
        .map(|l| {
            let (name, change) = l.split_once(": ").unwrap();
            let (from, to) = change.split_once(" -> ").unwrap();
            (
                name.to_string(),
                to.parse::<i64>().unwrap() - from.parse::<i64>().unwrap(),
            )
        })
        .collect();

    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut request = [0u8; 81];
        s.read_exact(&mut request).await.unwrap();
        s.write_all(&[b'r'; 210]).await.unwrap();
        // Like python's http.server: answer, then close.
    });

    let registry = StatsRegistry::new();
    let cluster_updated: Arc<Counter> = registry.counter("cluster_manager.cluster_updated").unwrap();
    let cluster = Arc::new(ClusterStats::new("outbound:passthrough:ipv4"));
    let hosts = Arc::new(HostSet::original_dst(
        cluster.clone(),
        DEFAULT_ORIGINAL_DST_CLEANUP,
        Some(cluster_updated),
    ));
    let p = TcpProxy::new(
        TcpProxyConfig::new("outbound_passthrough_ipv4"),
        cluster.clone(),
        Connector::new(),
    )
    .with_hosts(hosts);
    registry.register(cluster);
    registry.register(p.stats().clone());

    // The listener's statistics under Envoy's name for 0.0.0.0:15001 (we listen on loopback).
    let listener = ListenerConfig::new("outbound:passthrough:ipv4", "127.0.0.1:0".parse().unwrap())
        .stat_prefix("0.0.0.0_15001")
        .bind()
        .unwrap();
    registry.register(listener.stats().clone());
    let addr = listener.local_addr();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let before = registry.snapshot();
    let proxy = p.clone();
    let server = tokio::spawn(listener.serve(
        move |c: Connection| {
            let proxy = proxy.clone();
            let done = done_tx.clone();
            async move {
                let _ = done.send(proxy.proxy(c.stream, upstream_addr).await);
            }
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(&[b'q'; 81]).await.unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).await.unwrap();
    assert_eq!(response.len(), 210);
    drop(client);
    let outcome = done_rx.recv().await.unwrap();
    assert_eq!(outcome.end, SessionEnd::Completed);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let after = registry.snapshot();

    let value = |v: Option<StatValue>| match v {
        Some(StatValue::Counter(c)) => c as i64,
        Some(StatValue::Gauge(g)) => g,
        _ => 0,
    };
    let ours: BTreeMap<String, i64> = after
        .stats()
        .iter()
        .map(|s| (s.name.clone(), value(Some(s.value)) - value(before.get(&s.name))))
        .filter(|(_, d)| *d != 0)
        .collect();
    // Envoy's deltas for names we do not have (its load-balancer subset bookkeeping).
    let not_modelled = ["cluster.outbound_passthrough_ipv4.default.total_match_count"];
    let envoy_modelled: BTreeMap<String, i64> = envoy
        .into_iter()
        .filter(|(n, _)| !not_modelled.contains(&n.as_str()))
        .collect();
    assert_eq!(ours, envoy_modelled);
}
