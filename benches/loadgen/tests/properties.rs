//! Properties of the histogram, the schedule, the request encoder and the response parser.

use std::num::NonZeroU64;
use std::time::Duration;

use meshcap_loadgen::{Histogram, Rate, Request, Response, ResponseParser, Schedule};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Histograms that reach the top of the `u64` range hold ~50k counters: fewer cases keep debug builds fast.
fn histogram_config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

/// Values spread over many magnitudes (nanosecond latencies from 1 ns to hours, and the extremes).
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..2048, 8 => 0u64..10_000_000, 4 => 0u64..1 << 44, 1 => any::<u64>()]
}

/// The nearest-rank quantile of a sorted sample.
fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    sorted[rank as usize - 1]
}

proptest! {
    #![proptest_config(histogram_config())]

    #[test]
    fn quantiles_are_within_one_bucket_above_the_truth(
        values in prop::collection::vec(value(), 1..400),
        bits in 1u32..=12,
        q in 0.0f64..=1.0,
    ) {
        let mut h = Histogram::with_precision(bits).unwrap();
        for &v in &values {
            h.record(v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let truth = exact_quantile(&sorted, q);
        let reported = h.value_at_quantile(q).unwrap();
        prop_assert!(reported >= truth, "reported {reported} < true {truth}");
        let (_, top) = h.bucket_bounds(truth);
        prop_assert!(reported <= top, "reported {reported} beyond the bucket of {truth}");
        // The relative error bound the docs promise.
        prop_assert!(reported - truth <= truth >> bits, "{reported} vs {truth} at {bits} bits");
        prop_assert!(reported <= *sorted.last().unwrap());
    }

    #[test]
    fn exact_statistics_are_exact(values in prop::collection::vec(value(), 1..400)) {
        let mut h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        prop_assert_eq!(h.count(), values.len() as u64);
        prop_assert_eq!(h.min(), values.iter().min().copied());
        prop_assert_eq!(h.max(), values.iter().max().copied());
        prop_assert_eq!(h.value_at_quantile(1.0), values.iter().max().copied());
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        let got = h.mean().unwrap();
        prop_assert!((got - mean).abs() <= mean * 1e-9 + 1e-9, "{got} vs {mean}");
    }

    #[test]
    fn merging_equals_recording_everything(
        a in prop::collection::vec(value(), 0..200),
        b in prop::collection::vec(value(), 0..200),
    ) {
        let (mut left, mut right, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for &v in &a {
            left.record(v);
            all.record(v);
        }
        for &v in &b {
            right.record(v);
            all.record(v);
        }
        left.merge(&right).unwrap();
        prop_assert_eq!(left, all);
    }

    #[test]
    fn record_n_equals_repeated_records(v in value(), n in 0u64..50) {
        let (mut once, mut repeated) = (Histogram::new(), Histogram::new());
        once.record_n(v, n);
        for _ in 0..n {
            repeated.record(v);
        }
        prop_assert_eq!(once, repeated);
    }

}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_window_holds_rate_times_duration_requests(
        rate in 1u64..=10_000_000,
        warmup_ms in 0u64..20_000,
        duration_ms in 1u64..120_000,
    ) {
        let s = Schedule::new(Rate::new(NonZeroU64::new(rate).unwrap()),
            Duration::from_millis(warmup_ms), Duration::from_millis(duration_ms));
        let ideal = rate as f64 * duration_ms as f64 / 1000.0;
        let measured = s.measured_requests() as f64;
        prop_assert!((measured - ideal).abs() < 1.0 + 1e-9, "{measured} requests for an ideal {ideal}");
        if (rate * duration_ms).is_multiple_of(1000) && (rate * warmup_ms).is_multiple_of(1000) {
            prop_assert_eq!(measured, ideal, "whole numbers of requests are exact");
        }
        // The window's boundaries fall where the offsets say.
        let first = s.warmup_requests();
        prop_assert!(s.offset(first) >= s.warmup());
        if first > 0 {
            prop_assert!(s.offset(first - 1) < s.warmup());
        }
        let end = s.total_requests();
        prop_assert!(s.offset(end - 1) < s.warmup() + s.duration());
        prop_assert!(s.offset(end) >= s.warmup() + s.duration());
    }

    #[test]
    fn offsets_are_increasing_and_invert_the_count(rate in 1u64..=1_000_000_000, k in 0u64..1u64 << 40) {
        let s = Schedule::new(Rate::new(NonZeroU64::new(rate).unwrap()), Duration::ZERO, Duration::from_secs(1));
        prop_assert!(s.offset(k) < s.offset(k + 1));
        prop_assert_eq!(s.requests_before(s.offset(k)), k);
    }

    #[test]
    fn requests_encode_to_what_a_server_parses(
        path in "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&]{0,10})?",
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "DELETE", "PATCH"]),
        headers in prop::collection::vec(("x-[a-z]{1,8}", "[ -~]{0,16}"), 0..5),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut request = Request::new(format!("http://127.0.0.1:8080{path}").parse().unwrap())
            .with_method(method).unwrap();
        for (name, value) in &headers {
            request = request.with_header(name, value).unwrap();
        }
        let request = request.with_body(body.clone());
        let wire = request.encode();
        let mut parsed = [httparse::EMPTY_HEADER; 16];
        let mut head = httparse::Request::new(&mut parsed);
        let used = match head.parse(&wire).unwrap() {
            httparse::Status::Complete(used) => used,
            httparse::Status::Partial => panic!("partial head"),
        };
        prop_assert_eq!(head.method, Some(method));
        prop_assert_eq!(head.path, Some(path.as_str()));
        prop_assert_eq!(head.headers[0].name, "host");
        prop_assert_eq!(head.headers[0].value, b"127.0.0.1:8080");
        for ((name, value), header) in headers.iter().zip(&head.headers[1..]) {
            prop_assert_eq!(header.name, name.as_str());
            prop_assert_eq!(header.value, value.trim().as_bytes());
        }
        prop_assert_eq!(&wire[used..], &body[..]);
    }

    #[test]
    fn responses_frame_the_same_however_they_are_split(
        response in wire_response(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let (wire, expected) = response;
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        // Feed growing prefixes, as a connection's reads would arrive, keeping unconsumed bytes.
        let mut parser = ResponseParser::new();
        let mut pending = Vec::new();
        let mut fed = 0;
        let mut done = None;
        for cut in cuts {
            pending.extend_from_slice(&wire[fed..cut]);
            fed = cut;
            let (used, complete) = parser.parse(&pending).unwrap();
            pending.drain(..used);
            if complete.is_some() {
                done = complete;
                break;
            }
        }
        let done = match done {
            Some(done) => done,
            None => parser.finish().unwrap(),
        };
        prop_assert!(pending.is_empty());
        prop_assert_eq!((done.status(), done.keep_alive(), done.body_bytes()), expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        split in any::<prop::sample::Index>(),
    ) {
        let at = split.index(bytes.len() + 1);
        let mut parser = ResponseParser::new();
        if let Ok((used, None)) = parser.parse(&bytes[..at]) {
            let _ = parser.parse(&bytes[used..]);
        }
        let _ = parser.finish();
        let mut parser = ResponseParser::new();
        let _ = parser.parse(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".as_slice(), &bytes].concat());
    }
}

/// A response on the wire and the (status, keep_alive, body length) it frames to.
fn wire_response() -> impl Strategy<Value = (Vec<u8>, (u16, bool, u64))> {
    let framing = prop_oneof![
        Just(0u8), // content-length
        Just(1u8), // chunked
        Just(2u8), // close-delimited
    ];
    (
        prop::sample::select(vec![200u16, 201, 404, 503]),
        framing,
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..5),
        any::<bool>(),
        prop::collection::vec(("x-[a-z]{1,6}", "[a-z0-9 ]{0,12}"), 0..4),
        any::<bool>(),
    )
        .prop_map(|(status, framing, chunks, close, headers, interim)| {
            let body: Vec<u8> = chunks.concat();
            let mut wire = Vec::new();
            if interim {
                wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            wire.extend_from_slice(format!("HTTP/1.1 {status} Reason\r\n").as_bytes());
            for (name, value) in &headers {
                wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            if close {
                wire.extend_from_slice(b"Connection: close\r\n");
            }
            match framing {
                0 => {
                    wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                    wire.extend_from_slice(&body);
                }
                1 => {
                    wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    for chunk in &chunks {
                        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        wire.extend_from_slice(chunk);
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"0\r\n\r\n");
                }
                _ => {
                    wire.extend_from_slice(b"\r\n");
                    wire.extend_from_slice(&body);
                }
            }
            let keep_alive = !close && framing != 2;
            (wire, (status, keep_alive, body.len() as u64))
        })
}

#[test]
fn response_type_is_plain_data() {
    fn assert_traits<T: Send + Sync + Copy + std::fmt::Debug + Eq + std::hash::Hash>() {}
    assert_traits::<Response>();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Histogram>();
    assert_send_sync::<meshcap_loadgen::Report>();
    assert_send_sync::<meshcap_loadgen::Config>();
    assert_send_sync::<meshcap_loadgen::RunError>();
}

#[test]
fn the_run_future_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let request = Request::new("http://127.0.0.1:9/".parse().unwrap());
    let config = meshcap_loadgen::Config::builder(request, "1".parse().unwrap())
        .build()
        .unwrap();
    let future = meshcap_loadgen::run(&config);
    assert_send(&future);
}
