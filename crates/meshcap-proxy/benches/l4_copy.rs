//! The L4 copy loop: tcp_proxy between a client and an upstream on loopback, inside one process.
//!
//! * `ping_pong_64b`: one 64-byte request and its 64-byte echo over a proxied keep-alive connection
//!   (latency of a small exchange through the proxy, two copies each way).
//! * `bulk_1mib`: 1 MiB client → upstream through the proxy per iteration (throughput of the copy).
//! * `connect_and_close`: a new proxied connection per iteration (accept, upstream connect, close).
//!
//! Numbers include the client and upstream work on the same runtime; compare runs with each other,
//! not with the issue-7 harness figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshcap_proxy::listen::{Connection, ListenerConfig};
use meshcap_proxy::tcp_proxy::{TcpProxy, TcpProxyConfig};
use meshcap_proxy::upstream::{ClusterStats, Connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BULK: usize = 1 << 20;

/// Upstream behaviour: `echo` sends back what it reads; `sink` reads `BULK` bytes and acks with one.
async fn upstream(echo: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = 0usize;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if echo {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    } else {
                        seen += n;
                        while seen >= BULK {
                            seen -= BULK;
                            if s.write_all(b"k").await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A proxy listener forwarding everything to `to`.
fn front(to: SocketAddr) -> SocketAddr {
    let listener = ListenerConfig::new("bench", "127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap();
    let addr = listener.local_addr();
    let proxy = TcpProxy::new(
        TcpProxyConfig::new("bench"),
        Arc::new(ClusterStats::new("bench")),
        Connector::new(),
    );
    tokio::spawn(listener.serve(
        move |c: Connection| {
            let proxy = proxy.clone();
            async move {
                proxy.proxy(c.stream, to).await;
            }
        },
        std::future::pending(),
    ));
    addr
}

fn l4(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (echo_front, sink_front) = rt.block_on(async {
        let echo = upstream(true).await;
        let sink = upstream(false).await;
        (front(echo), front(sink))
    });

    let mut g = c.benchmark_group("l4_copy");
    g.measurement_time(Duration::from_secs(5));

    let client = rt.block_on(TcpStream::connect(echo_front)).unwrap();
    client.set_nodelay(true).unwrap();
    let client = Arc::new(tokio::sync::Mutex::new(client));
    g.throughput(Throughput::Elements(1));
    g.bench_function("ping_pong_64b", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let client = client.clone();
            async move {
                let mut c = client.lock().await;
                let msg = [7u8; 64];
                let mut back = [0u8; 64];
                let start = Instant::now();
                for _ in 0..iters {
                    c.write_all(&msg).await.unwrap();
                    c.read_exact(&mut back).await.unwrap();
                }
                start.elapsed()
            }
        })
    });

    let bulk_client = Arc::new(tokio::sync::Mutex::new(
        rt.block_on(TcpStream::connect(sink_front)).unwrap(),
    ));
    let payload = Arc::new(vec![0x5au8; BULK]);
    g.throughput(Throughput::Bytes(BULK as u64));
    g.bench_function("bulk_1mib", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let client = bulk_client.clone();
            let payload = payload.clone();
            async move {
                let mut c = client.lock().await;
                let mut ack = [0u8; 1];
                let start = Instant::now();
                for _ in 0..iters {
                    c.write_all(&payload).await.unwrap();
                    c.read_exact(&mut ack).await.unwrap();
                }
                start.elapsed()
            }
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("connect_and_close", |b| {
        b.to_async(&rt).iter(|| async {
            let mut s = TcpStream::connect(echo_front).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).await.unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, l4);
criterion_main!(benches);
