//! HTTP/1.1 codec costs on the proxy's hot path: parse + validate + re-encode a typical request head,
//! parse + re-encode a response head, and decode a chunked body.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshcap_proxy::hcm::{Cluster, ConnInfo, Endpoint, Hcm, HcmConfig, UpstreamConnector};
use meshcap_proxy::http1::{
    ChunkedDecoder, DecodeStep, LAST_CHUNK, Limits, RequestHead, ResponseExtras, ResponseHead, UpstreamExtras,
    encode_chunk, encode_request_head, encode_response_head,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const REQUEST: &[u8] = b"GET /api/v1/items?id=42 HTTP/1.1\r\nHost: backend.default.svc:5000\r\n\
User-Agent: curl/8.5.0\r\nAccept: */*\r\nX-Request-Id: 7f0e3b1a-1c2d-4e5f-8a9b-0c1d2e3f4a5b\r\n\
X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\nAccept-Encoding: gzip\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: app\r\nDate: Thu, 26 Nov 2026 12:35:16 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 50\r\nx-app-port: 5000\r\n\r\n";

fn heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut head = RequestHead::new();
    let mut out = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("http1");
    g.throughput(Throughput::Elements(1));
    g.bench_function("request_head_parse_validate_encode", |b| {
        b.iter(|| {
            let n = head
                .parse(black_box(REQUEST), &limits)
                .expect("valid")
                .expect("complete");
            out.clear();
            encode_request_head(
                &head,
                &UpstreamExtras {
                    request_id: b"",
                    forward_upgrade: false,
                },
                &mut out,
            );
            black_box((n, out.len()))
        })
    });
    let mut resp = ResponseHead::new();
    g.bench_function("response_head_parse_encode", |b| {
        b.iter(|| {
            let n = resp
                .parse(black_box(RESPONSE), &limits, false)
                .expect("valid")
                .expect("complete");
            out.clear();
            let extras = ResponseExtras {
                upstream_service_time_ms: Some(1),
                date: b"Thu, 26 Nov 2026 12:35:16 GMT",
                close: false,
                chunked: false,
            };
            encode_response_head(&resp, &extras, &mut out);
            black_box((n, out.len()))
        })
    });
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let mut wire = Vec::new();
    for _ in 0..64 {
        encode_chunk(&[b'x'; 1024], &mut wire);
    }
    wire.extend_from_slice(LAST_CHUNK);
    let limits = Limits::default();
    let mut g = c.benchmark_group("http1");
    g.throughput(Throughput::Bytes(64 * 1024));
    g.bench_function("chunked_decode_64x1KiB", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut dec = ChunkedDecoder::new(&limits);
            let mut n = 0;
            while let DecodeStep::Data(d) = dec.decode(&mut buf).expect("valid") {
                n += d.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

/// An upstream over an in-memory pipe answering every request head with a fixed response.
#[derive(Clone, Copy)]
struct PipeUpstream;

impl UpstreamConnector for PipeUpstream {
    type Stream = DuplexStream;
    async fn connect(&self, _addr: SocketAddr) -> std::io::Result<DuplexStream> {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = b.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    if b.write_all(RESPONSE_WITH_BODY).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(a)
    }
}

const RESPONSE_WITH_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nServer: app\r\nContent-Type: text/plain\r\n\
Content-Length: 50\r\n\r\napp 0.0.0.0:5000 saw GET /a3 from 127.0.0.6:34606\n";

/// One keep-alive GET through the whole HCM (parse, route, pool, re-encode both heads, copy the body),
/// client and upstream on in-memory pipes: the proxy's per-request cost without syscalls.
fn hcm_keepalive(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = Arc::new(Cluster::new(
        "localhost:5000",
        "localhost_5000",
        Endpoint::Static(([127, 0, 0, 1], 5000).into()),
    ));
    let hcm = Hcm::new(HcmConfig::kuma_inbound("localhost_5000", None, cluster), PipeUpstream);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let info = ConnInfo::new(([10, 244, 0, 5], 40000).into(), ([10, 244, 0, 6], 5000).into());
    rt.spawn(async move { hcm.serve(server, info).await });
    let mut buf = vec![0u8; 4096];
    let mut g = c.benchmark_group("hcm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("keepalive_get_in_memory", |b| {
        b.iter(|| {
            rt.block_on(async {
                client.write_all(REQUEST).await.expect("write");
                let mut got = 0;
                // The response ends with the 50-byte body's newline.
                loop {
                    let n = client.read(&mut buf[got..]).await.expect("read");
                    assert!(n > 0, "proxy closed");
                    got += n;
                    if buf[..got].ends_with(b"34606\n") {
                        break;
                    }
                }
                black_box(got)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, heads, chunked, hcm_keepalive);
criterion_main!(benches);
