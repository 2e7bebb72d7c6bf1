//! HTTP/1.1 codec costs on the proxy's hot path: parse + validate + re-encode a typical request head,
//! parse + re-encode a response head, and decode a chunked body.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshcap_proxy::http1::{
    ChunkedDecoder, DecodeStep, LAST_CHUNK, Limits, RequestHead, ResponseExtras, ResponseHead, UpstreamExtras,
    encode_chunk, encode_request_head, encode_response_head,
};

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

criterion_group!(benches, heads, chunked);
criterion_main!(benches);
