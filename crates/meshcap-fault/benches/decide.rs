//! The fault filter on the request hot path: `FaultFilter::decide` for requests that get no fault (the
//! common case, which must stay well under 100 ns and allocation-free), plus the abort reply encoder and
//! the rate limiter.

#![allow(missing_docs)]

use std::hint::black_box;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use meshcap_fault::{FastRng, FaultConfig, FaultFilter, FaultStats, Random, RateLimiter, ReplyContext};

/// A browser-like request without any fault header.
const REQUEST: [(&str, &str); 8] = [
    ("host", "10.244.0.6:5000"),
    ("user-agent", "curl/7.88.1"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("x-request-id", "6c1f5e1e-9f6b-4a57-8b0b-3c2b51a1b7f2"),
    ("x-forwarded-proto", "http"),
    ("content-type", "application/json"),
    ("cookie", "session=abc123"),
];

fn filter(json: &str) -> FaultFilter {
    let config = FaultConfig::from_json(json).expect("bench config");
    FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("localhost_5000")))
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let mut rng = FastRng::seed_from_u64(1);

    // The measurement floor on this machine (loop, black_box, a random draw): subtract it mentally when
    // the host is busy.
    group.bench_function("baseline_one_random_draw", |b| b.iter(|| black_box(rng.next_u64())));

    // A fixed delay and abort at 0 %: the "no fault applies" path (the filter knows nothing can fire).
    let zero = filter(
        r#"{"delay": {"fixed_delay": "5s", "percentage": {"numerator": 0}},
            "abort": {"http_status": 503, "percentage": {"numerator": 0}}}"#,
    );
    group.bench_function("no_fault_headers_0_percent", |b| {
        b.iter(|| black_box(zero.decide(black_box(&REQUEST[..]), Some("localhost:5000"), &mut rng)))
    });

    let mut parsed = [httparse::EMPTY_HEADER; 8];
    for (slot, (name, value)) in parsed.iter_mut().zip(REQUEST) {
        *slot = httparse::Header {
            name,
            value: value.as_bytes(),
        };
    }
    group.bench_function("no_fault_headers_0_percent_httparse", |b| {
        b.iter(|| black_box(zero.decide(black_box(&parsed[..]), Some("localhost:5000"), &mut rng)))
    });

    // The same 0 % filter with an (empty) runtime attached: runtime keys could enable the faults, so the
    // full decision runs (eligibility, runtime lookups, no draws).
    let zero_rt = filter(
        r#"{"delay": {"fixed_delay": "5s", "percentage": {"numerator": 0}},
            "abort": {"http_status": 503, "percentage": {"numerator": 0}}}"#,
    )
    .with_runtime(std::sync::Arc::new(meshcap_fault::RuntimeSnapshot::new()));
    group.bench_function("no_fault_headers_0_percent_with_runtime", |b| {
        b.iter(|| black_box(zero_rt.decide(black_box(&REQUEST[..]), Some("localhost:5000"), &mut rng)))
    });

    // Kuma's default shape: a 5 s delay for 0.5 % of requests (the draw happens, rarely fires).
    let kuma =
        filter(r#"{"delay": {"fixed_delay": "5s", "percentage": {"numerator": 50, "denominator": "TEN_THOUSAND"}}}"#);
    group.bench_function("kuma_delay_0_5_percent", |b| {
        b.iter(|| black_box(kuma.decide(black_box(&REQUEST[..]), Some("localhost:5000"), &mut rng)))
    });

    // Everything header-controlled at 100 %, request without fault headers.
    let header = filter(
        r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}},
            "max_active_faults": 100}"#,
    );
    group.bench_function("header_controlled_no_fault_headers", |b| {
        b.iter(|| black_box(header.decide(black_box(&REQUEST[..]), Some("localhost:5000"), &mut rng)))
    });

    // An injected abort (stats, active-fault slot, reply decision).
    let abort = filter(r#"{"abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#);
    group.bench_function("abort_503_100_percent", |b| {
        b.iter(|| black_box(abort.decide(black_box(&REQUEST[..]), Some("localhost:5000"), &mut rng)))
    });
    group.finish();
}

fn reply(c: &mut Criterion) {
    let abort = filter(r#"{"abort": {"http_status": 503, "percentage": {"numerator": 100}}}"#);
    let mut rng = FastRng::seed_from_u64(1);
    let decision = abort.decide(&REQUEST[..], None, &mut rng);
    let meshcap_fault::Action::Abort(a) = decision.action() else {
        unreachable!()
    };
    let reply = a.reply(ReplyContext::new());
    let mut out = Vec::with_capacity(256);
    c.bench_function("reply/write_http1", |b| {
        b.iter(|| {
            out.clear();
            reply.write_http1(&mut out, black_box("Thu, 26 Nov 2026 11:47:33 GMT"));
            black_box(out.len())
        })
    });
}

fn rate_limiter(c: &mut Criterion) {
    let start = Instant::now();
    let mut limiter = RateLimiter::new(NonZeroU64::new(1024).unwrap(), start);
    let mut t = start;
    c.bench_function("rate_limiter/poll", |b| {
        b.iter(|| {
            t += Duration::from_millis(50);
            black_box(limiter.poll(black_box(65_536), t))
        })
    });
}

criterion_group!(benches, decide, reply, rate_limiter);
criterion_main!(benches);
