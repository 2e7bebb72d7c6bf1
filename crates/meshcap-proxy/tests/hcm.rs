//! Behaviour of the HTTP connection manager: streaming, pooling, hyper interop, timeouts on paused
//! time, the filter hook, the access log and the statistics.

mod http_support;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use http_support::{Backend, exchange};
use meshcap_proxy::hcm::{
    AccessLogSink, Cluster, ConnInfo, Endpoint, FilterAction, FilterContext, Hcm, HcmConfig, LocalReply, RequestFilter,
    RequestLog, ResponseFlags, TcpConnector, UpstreamConnector,
};
use meshcap_proxy::http1::RequestHead;
use meshcap_proxy::stats::{StatSource, StatValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

fn cluster(addr: SocketAddr) -> Arc<Cluster> {
    Arc::new(Cluster::new("localhost:5000", "localhost_5000", Endpoint::Static(addr)))
}

async fn serve_tcp<C: UpstreamConnector>(hcm: Hcm<C>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((io, peer)) = l.accept().await {
            let hcm = hcm.clone();
            tokio::spawn(async move { hcm.serve(io, ConnInfo::new(peer, addr)).await });
        }
    });
    addr
}

fn stat(src: &dyn StatSource, name: &str) -> i64 {
    let mut v = None;
    src.visit_stats(&mut |n, val| {
        if n == name {
            v = Some(match val {
                StatValue::Counter(c) => c as i64,
                StatValue::Gauge(g) => g,
                _ => 0,
            });
        }
    });
    v.unwrap_or_else(|| panic!("no stat {name}"))
}

/// A hyper server counting request body bytes as they arrive.
async fn counting_upstream(received: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let mut body = req.into_body();
                        let mut n = 0u64;
                        while let Some(frame) = body.frame().await {
                            if let Ok(d) = frame?.into_data() {
                                n += d.len() as u64;
                                received.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                        }
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(n.to_string()))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(s);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_64_mib_streams_through_bounded_buffers() {
    const TOTAL: u64 = 64 << 20;
    let received = Arc::new(AtomicU64::new(0));
    let up = counting_upstream(received.clone()).await;
    let mut cfg = HcmConfig::kuma_inbound("localhost_5000", None, cluster(up));
    cfg.buffer_size = 16 * 1024;
    let proxy = serve_tcp(Hcm::new(cfg, TcpConnector)).await;

    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while sent < TOTAL {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("size");
        s.write_all(&chunk).await.expect("data");
        s.write_all(b"\r\n").await.expect("crlf");
        sent += chunk.len() as u64;
        if sent == TOTAL / 2 {
            // Half sent: the upstream must already be receiving. A proxy that buffered the whole
            // body would forward nothing yet, and this wait would fail.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while received.load(Ordering::Relaxed) < TOTAL / 4 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "upstream got nothing while the body was streaming"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    s.write_all(b"0\r\n\r\n").await.expect("last chunk");
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.ends_with(TOTAL.to_string().as_bytes()) {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&resp));
        resp.extend_from_slice(&buf[..n]);
    }
    assert!(
        resp.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(received.load(Ordering::Relaxed), TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_never_after_close() {
    let backend = Backend::start().await;
    let hcm = Hcm::new(
        HcmConfig::kuma_inbound("localhost_5000", None, cluster(backend.addr)),
        TcpConnector,
    );
    let stats = hcm.clone();
    let proxy = serve_tcp(hcm).await;
    // Three requests on one client connection, then two more on new client connections.
    let a = exchange(
        proxy,
        b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\n\r\nGET /3 HTTP/1.1\r\nhost: a\r\n\r\n",
        3,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.statuses(), [200, 200, 200]);
    for _ in 0..2 {
        let a = exchange(proxy, b"GET /4 HTTP/1.1\r\nhost: a\r\n\r\n", 1, Duration::from_secs(5)).await;
        assert_eq!(a.statuses(), [200]);
    }
    assert_eq!(
        *backend.connections.lock().unwrap(),
        1,
        "one upstream connection for five requests"
    );
    assert_eq!(stats.pool().idle_count(backend.addr), 1);
    // The upstream says `connection: close`: that connection is not reused.
    let a = exchange(
        proxy,
        b"GET /r/conn_close_resp HTTP/1.1\r\nhost: a\r\n\r\n",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.statuses(), [200]);
    let a = exchange(proxy, b"GET /5 HTTP/1.1\r\nhost: a\r\n\r\n", 1, Duration::from_secs(5)).await;
    assert_eq!(a.statuses(), [200]);
    assert_eq!(*backend.connections.lock().unwrap(), 2);
    // A framing error from the upstream: not reused either.
    let a = exchange(
        proxy,
        b"GET /r/cl_dup HTTP/1.1\r\nhost: a\r\n\r\n",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.statuses(), [502]);
    let a = exchange(proxy, b"GET /6 HTTP/1.1\r\nhost: a\r\n\r\n", 1, Duration::from_secs(5)).await;
    assert_eq!(a.statuses(), [200]);
    assert_eq!(*backend.connections.lock().unwrap(), 3);
    let cs = &*stats.config().routes[0].cluster.stats;
    assert_eq!(stat(cs, "cluster.localhost_5000.upstream_cx_total"), 3);
    assert_eq!(stat(cs, "cluster.localhost_5000.upstream_rq_total"), 9);
    assert_eq!(stat(cs, "cluster.localhost_5000.upstream_rq_200"), 8);
    assert_eq!(stat(cs, "cluster.localhost_5000.upstream_rq_502"), 1);
    assert_eq!(stat(cs, "cluster.localhost_5000.upstream_cx_protocol_error"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::start().await;
    let proxy = serve_tcp(Hcm::new(
        HcmConfig::kuma_inbound("p", None, cluster(backend.addr)),
        TcpConnector,
    ))
    .await;
    let raw: Vec<u8> = (0..20)
        .flat_map(|i| {
            if i % 3 == 0 {
                format!("POST /{i} HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{i:02}").into_bytes()
            } else {
                format!("GET /r/chunked HTTP/1.1\r\nhost: a\r\nx-i: {i}\r\n\r\n").into_bytes()
            }
        })
        .collect();
    let a = exchange(proxy, &raw, 20, Duration::from_secs(5)).await;
    assert_eq!(a.statuses(), [200; 20]);
    let seen = backend.take();
    let lines: Vec<String> = seen.iter().map(|s| s.line.clone()).collect();
    let want: Vec<String> = (0..20)
        .map(|i| {
            if i % 3 == 0 {
                format!("POST /{i} HTTP/1.1")
            } else {
                "GET /r/chunked HTTP/1.1".to_string()
            }
        })
        .collect();
    assert_eq!(lines, want);
    for (i, r) in a.responses.iter().enumerate() {
        assert_eq!(r.2, b"ok", "response {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_through_the_proxy_to_a_hyper_server() {
    let received = Arc::new(AtomicU64::new(0));
    let up = counting_upstream(received.clone()).await;
    let hcm = Hcm::new(
        HcmConfig::kuma_inbound("localhost_5000", Some("127.0.0.1_15000"), cluster(up)),
        TcpConnector,
    );
    let stats = hcm.stats().clone();
    let proxy = serve_tcp(hcm).await;
    let s = TcpStream::connect(proxy).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    for body in [&b""[..], b"hello", &[7u8; 100_000]] {
        let req = hyper::Request::post("/echo-len")
            .header("host", "svc")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        send.ready().await.expect("ready");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["server"], "envoy");
        assert!(resp.headers().contains_key("x-envoy-upstream-service-time"));
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(got, body.len().to_string());
    }
    // Close the client; once the proxy has closed its side every request has been accounted.
    drop(send);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stat(&*stats, "http.localhost_5000.downstream_cx_active") != 0 {
        assert!(tokio::time::Instant::now() < deadline, "connection never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stat(&*stats, "http.localhost_5000.downstream_rq_2xx"), 3);
    assert_eq!(stat(&*stats, "http.localhost_5000.downstream_rq_completed"), 3);
    assert_eq!(stat(&*stats, "http.localhost_5000.downstream_cx_total"), 1);
    assert_eq!(stat(&*stats, "http.localhost_5000.downstream_cx_destroy_remote"), 1);
    assert_eq!(
        stat(
            &*stats,
            "listener.127.0.0.1_15000.http.localhost_5000.downstream_rq_2xx"
        ),
        3
    );
    assert_eq!(
        stat(
            &*stats,
            "listener.127.0.0.1_15000.http.localhost_5000.downstream_rq_completed"
        ),
        3
    );
}

// ---------------------------------------------------------------- virtual I/O on paused time

/// An upstream made of in-memory pipes, answered by a closure-driven task.
#[derive(Clone)]
struct PipeConnector {
    respond: Arc<dyn Fn(DuplexStream) -> tokio::task::JoinHandle<()> + Send + Sync>,
}

impl UpstreamConnector for PipeConnector {
    type Stream = DuplexStream;
    async fn connect(&self, _addr: SocketAddr) -> io::Result<DuplexStream> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (self.respond)(b);
        Ok(a)
    }
}

fn ok_upstream() -> PipeConnector {
    PipeConnector {
        respond: Arc::new(|mut s: DuplexStream| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut b).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        buf.clear();
                        let body = b"fifty bytes of response body, exactly fifty bytes!";
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                            return;
                        }
                    }
                }
            })
        }),
    }
}

fn info() -> ConnInfo {
    ConnInfo::new("10.244.0.5:40000".parse().unwrap(), "10.244.0.6:5000".parse().unwrap())
}

fn pipe_hcm(cfg: impl FnOnce(&mut HcmConfig)) -> Hcm<PipeConnector> {
    let mut c = HcmConfig::kuma_inbound("localhost_5000", None, cluster("127.0.0.1:5000".parse().unwrap()));
    cfg(&mut c);
    Hcm::new(c, ok_upstream())
}

async fn read_all(s: &mut DuplexStream) -> String {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v).await;
    String::from_utf8_lossy(&v).into_owned()
}

#[tokio::test(start_paused = true)]
async fn request_header_timeout_answers_408_and_closes() {
    let hcm = pipe_hcm(|c| c.request_headers_timeout = Some(Duration::from_secs(10)));
    let (mut client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn({
        let hcm = hcm.clone();
        async move { hcm.serve(server, info()).await }
    });
    client.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n").await.unwrap();
    let start = tokio::time::Instant::now();
    let out = read_all(&mut client).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(
        out.starts_with("HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\ncontent-type: text/plain\r\n"),
        "{out}"
    );
    assert!(
        out.ends_with("connection: close\r\n\r\nrequest header timeout"),
        "{out}"
    );
    task.await.unwrap();
    assert_eq!(
        stat(&**hcm.stats(), "http.localhost_5000.downstream_rq_header_timeout"),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_after_the_idle_timeout() {
    let hcm = pipe_hcm(|c| c.idle_timeout = Some(Duration::from_secs(7200)));
    let (mut client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn({
        let hcm = hcm.clone();
        async move { hcm.serve(server, info()).await }
    });
    client.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    let start = tokio::time::Instant::now();
    let rest = read_all(&mut client).await;
    assert_eq!(rest, "");
    assert_eq!(start.elapsed(), Duration::from_secs(7200));
    task.await.unwrap();
    assert_eq!(
        stat(&**hcm.stats(), "http.localhost_5000.downstream_cx_idle_timeout"),
        1
    );
}

/// An upstream that reads forever and never answers.
fn silent_upstream() -> PipeConnector {
    PipeConnector {
        respond: Arc::new(|mut s: DuplexStream| {
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        return;
                    }
                }
            })
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_hits_the_stream_idle_timeout() {
    let mut c = HcmConfig::kuma_inbound("localhost_5000", None, cluster("127.0.0.1:5000".parse().unwrap()));
    c.stream_idle_timeout = Some(Duration::from_secs(3600));
    let hcm = Hcm::new(c, silent_upstream());
    let (mut client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn({
        let hcm = hcm.clone();
        async move { hcm.serve(server, info()).await }
    });
    client
        .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhe")
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let out = read_all(&mut client).await;
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    assert!(
        out.starts_with("HTTP/1.1 408 Request Timeout\r\ncontent-length: 14\r\n"),
        "{out}"
    );
    assert!(out.ends_with("connection: close\r\n\r\nstream timeout"), "{out}");
    task.await.unwrap();
}

/// A fault-filter stand-in: delay, then abort after the delay (meshcap-fault's order).
struct DelayThenAbort;

impl RequestFilter for DelayThenAbort {
    fn on_request(&self, head: &RequestHead, ctx: &mut FilterContext) -> FilterAction {
        if head.path() == b"/pass" {
            ctx.set_response_rate_limit(1024);
            return FilterAction::Continue;
        }
        match ctx.delayed() {
            None => {
                ctx.add_flags(ResponseFlags::DELAY_INJECTED);
                FilterAction::Delay(Duration::from_secs(5))
            }
            Some(_) => {
                ctx.add_flags(ResponseFlags::FAULT_INJECTED);
                FilterAction::LocalReply(LocalReply::text(503, "fault filter abort", "fault_filter_abort"))
            }
        }
    }
}

#[derive(Default)]
struct Logs(Mutex<Vec<String>>);

impl AccessLogSink for Logs {
    fn log(&self, e: &RequestLog<'_>) {
        let path = e
            .path
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        self.0.lock().unwrap().push(format!(
            "{} {} {} {} {} rx={} tx={} cluster={} ms={}",
            e.method.unwrap_or("-"),
            path,
            e.status,
            e.flags,
            e.details,
            e.bytes_received,
            e.bytes_sent,
            e.cluster.unwrap_or("-"),
            e.duration.as_millis()
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn filter_delays_then_aborts_like_envoys_fault_filter() {
    let logs = Arc::new(Logs::default());
    let hcm = pipe_hcm(|_| {})
        .with_filter(Arc::new(DelayThenAbort))
        .with_access_log(logs.clone());
    let (mut client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn({
        let hcm = hcm.clone();
        async move { hcm.serve(server, info()).await }
    });
    client
        .write_all(
            b"GET /b1 HTTP/1.1\r\nhost: a\r\n\r\nPOST /b2 HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let out = read_all(&mut client).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let date_free: String = out
        .split("\r\n")
        .map(|l| if l.starts_with("date: ") { "date: D" } else { l })
        .collect::<Vec<_>>()
        .join("\r\n");
    // reference/envoy/e2e/B1 and B2: the body-less GET keeps the connection, the POST whose body
    // was never read gets `connection: close`.
    assert_eq!(
        date_free,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\ncontent-type: text/plain\r\ndate: D\r\nserver: envoy\r\n\r\nfault filter abort\
         HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\ncontent-type: text/plain\r\ndate: D\r\nserver: envoy\r\nconnection: close\r\n\r\nfault filter abort"
    );
    task.await.unwrap();
    let logs = logs.0.lock().unwrap().clone();
    assert_eq!(
        logs,
        [
            "GET /b1 503 DI,FI fault_filter_abort rx=0 tx=18 cluster=localhost:5000 ms=5000",
            "POST /b2 503 DI,FI fault_filter_abort rx=0 tx=18 cluster=localhost:5000 ms=5000"
        ]
    );
    let s = &**hcm.stats();
    assert_eq!(stat(s, "http.localhost_5000.downstream_rq_5xx"), 2);
    assert_eq!(
        stat(s, "http.localhost_5000.downstream_rq_response_before_rq_complete"),
        1
    );
    assert_eq!(stat(s, "http.localhost_5000.downstream_rq_completed"), 2);
    assert_eq!(stat(s, "http.localhost_5000.downstream_rq_active"), 0);
    assert_eq!(stat(s, "http.localhost_5000.downstream_cx_active"), 0);
}

#[tokio::test(start_paused = true)]
async fn response_rate_limit_paces_the_body() {
    let logs = Arc::new(Logs::default());
    let hcm = pipe_hcm(|_| {})
        .with_filter(Arc::new(DelayThenAbort))
        .with_access_log(logs.clone());
    let (mut client, server) = tokio::io::duplex(4096);
    tokio::spawn({
        let hcm = hcm.clone();
        async move { hcm.serve(server, info()).await }
    });
    // 50 bytes at 1 KiB/s fit the first 1/16 s bucket (64 bytes): no visible slowdown, as observed
    // on Envoy with `x-envoy-fault-throughput-response: 1`.
    client
        .write_all(b"GET /pass HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let out = read_all(&mut client).await;
    assert!(out.ends_with("exactly fifty bytes!"), "{out}");
    assert!(start.elapsed() < Duration::from_millis(100));
    assert_eq!(
        logs.0.lock().unwrap()[0],
        "GET /pass 200 - via_upstream rx=0 tx=50 cluster=localhost:5000 ms=0"
    );
}

/// An upstream that answers every request with a 1 MiB body.
fn big_upstream() -> PipeConnector {
    PipeConnector {
        respond: Arc::new(|mut s: DuplexStream| {
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                let Ok(n) = s.read(&mut b).await else { return };
                if n == 0 {
                    return;
                }
                let body = vec![b'z'; 1 << 20];
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            })
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_hits_the_stream_idle_timeout() {
    let mut c = HcmConfig::kuma_inbound("localhost_5000", None, cluster("127.0.0.1:5000".parse().unwrap()));
    c.stream_idle_timeout = Some(Duration::from_secs(300));
    let hcm = Hcm::new(c, big_upstream());
    let (mut client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn({
        let hcm = hcm.clone();
        async move { hcm.serve(server, info()).await }
    });
    client.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    // Never read: the proxy's writes stall, and the stream idle timeout ends the connection.
    let start = tokio::time::Instant::now();
    task.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(300));
    assert_eq!(stat(&**hcm.stats(), "http.localhost_5000.downstream_cx_active"), 0);
}
