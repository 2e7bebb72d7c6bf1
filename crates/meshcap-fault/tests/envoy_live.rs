//! Differential test against a real Envoy (`MESHCAP_ENVOY`, `.venv-envoy/bin/envoy` or `PATH`; skipped
//! loudly without one, mandatory in CI).
//!
//! Envoy runs on loopback (ephemeral ports) with the header-controlled fault configuration of the
//! reference recordings and a direct-response route. Several hundred raw HTTP/1.1 requests go to it and,
//! parsed with `httparse`, through `FaultFilter`; for every request the response bytes must be identical
//! (Envoy's `date` value is reused), the access-log response flags and filter metadata must agree, and at
//! the end every fault statistic must have the same value. A second listener with `max_active_faults: 1`
//! checks overflow with a request held in a delay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meshcap_fault::{Action, Decision, FastRng, FaultConfig, FaultFilter, FaultStats, ReplyContext};
use meshcap_testns::wait_until;

mod support;

use support::{Envoy, http_get};

const FAULT_CONFIG: &str = r#"{
  "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
  "abort": {"header_abort": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
  "delay": {"header_delay": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
  "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
  "max_active_faults": 100,
  "filter_metadata": {"injected_by": "live"}
}"#;

fn listener(name: &str, stat_prefix: &str, fault: &str) -> String {
    format!(
        r#"{{"name": "{name}", "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}},
  "filter_chains": [{{"filters": [{{"name": "envoy.filters.network.http_connection_manager", "typed_config": {{
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "{stat_prefix}",
    "access_log": [{{"name": "envoy.access_loggers.stdout", "typed_config": {{
      "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
      "log_format": {{"text_format_source": {{"inline_string": "CASE %REQ(X-CASE)% %RESPONSE_CODE% %RESPONSE_FLAGS% md=%DYNAMIC_METADATA(envoy.filters.http.fault)%\n"}}}}}}}}],
    "route_config": {{"name": "r", "virtual_hosts": [{{"name": "v", "domains": ["*"],
      "routes": [{{"match": {{"prefix": "/"}}, "direct_response": {{"status": 200, "body": {{"inline_string": "ok"}}}}}}]}}]}},
    "http_filters": [{{"name": "envoy.filters.http.fault", "typed_config": {fault}}},
      {{"name": "envoy.filters.http.router", "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}}}]}}}}]}}]}}"#
    )
}

fn start_envoy(envoy: &Path) -> Envoy {
    let max_one = FAULT_CONFIG.replace("\"max_active_faults\": 100", "\"max_active_faults\": 1");
    let bootstrap = format!(
        r#"{{"admin": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}}}},
  "static_resources": {{"listeners": [{}, {}]}}}}"#,
        listener("live", "live", FAULT_CONFIG),
        listener("live_max", "live_max", &max_one)
    );
    Envoy::start(envoy, "live", &bootstrap)
}

fn listener_addr(envoy: &Envoy, name: &str) -> SocketAddr {
    let json: serde_json::Value = serde_json::from_str(&http_get(envoy.admin(), "/listeners?format=json")).unwrap();
    let status = json["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap();
    let sa = &status["local_address"]["socket_address"];
    format!("{}:{}", sa["address"].as_str().unwrap(), sa["port_value"])
        .parse()
        .unwrap()
}

/// Send one raw request and read exactly one response (head, then the body its framing announces).
fn exchange(addr: SocketAddr, request: &[u8], head_request: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let content_length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let chunked = head.contains("transfer-encoding: chunked");
    let done = |buf: &[u8]| {
        if head_request {
            true
        } else if let Some(len) = content_length {
            buf.len() >= head_end + len
        } else if chunked {
            buf.ends_with(b"0\r\n\r\n")
        } else {
            true
        }
    };
    while !done(&buf) {
        let n = s.read(&mut chunk).expect("read response body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// One request: extra header lines, method, body framing.
struct Req {
    method: &'static str,
    headers: Vec<(String, String)>,
    body: &'static str,
    chunked: bool,
}

impl Req {
    fn get(headers: &[(&str, &str)]) -> Req {
        Req {
            method: "GET",
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: "",
            chunked: false,
        }
    }

    fn with_method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn with_body(mut self, body: &'static str, chunked: bool) -> Req {
        self.body = body;
        self.chunked = chunked;
        self
    }

    fn raw(&self, case: usize) -> Vec<u8> {
        let mut out = format!(
            "{} /case/{case} HTTP/1.1\r\nhost: live\r\nx-case: {case}\r\n",
            self.method
        );
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        if self.chunked {
            out.push_str("transfer-encoding: chunked\r\n\r\n");
            if !self.body.is_empty() {
                out.push_str(&format!("{:x}\r\n{}\r\n", self.body.len(), self.body));
            }
            out.push_str("0\r\n\r\n");
        } else {
            if self.method == "POST" {
                out.push_str(&format!("content-length: {}\r\n", self.body.len()));
            }
            out.push_str("\r\n");
            out.push_str(self.body);
        }
        out.into_bytes()
    }
}

fn cases() -> Vec<Req> {
    let mut cases = Vec::new();
    // Every abort status Envoy accepts from the header: reason phrases and headers.
    for status in 200..600 {
        cases.push(Req::get(&[("x-envoy-fault-abort-request", &status.to_string())]));
    }
    // The HTTP -> gRPC status mapping, over HTTP/1.1.
    for status in [200, 400, 401, 403, 404, 409, 418, 429, 500, 501, 502, 503, 504, 599] {
        cases.push(Req::get(&[
            ("content-type", "application/grpc"),
            ("x-envoy-fault-abort-request", &status.to_string()),
        ]));
    }
    // Header value parsing (absl::SimpleAtoi) and the [200, 600) check.
    for value in [
        "+418",
        "0418",
        "4 18",
        "-418",
        "0x1A2",
        "",
        "600",
        "199",
        "18446744073709551616",
        "abc",
    ] {
        cases.push(Req::get(&[("x-envoy-fault-abort-request", value)]));
    }
    // gRPC status header values, on gRPC and on plain requests.
    for value in [
        "0",
        "14",
        "99",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
    ] {
        cases.push(Req::get(&[
            ("content-type", "application/grpc"),
            ("x-envoy-fault-abort-grpc-request", value),
        ]));
        cases.push(Req::get(&[("x-envoy-fault-abort-grpc-request", value)]));
    }
    // An invalid HTTP status falls through to the gRPC header.
    cases.push(Req::get(&[
        ("x-envoy-fault-abort-request", "600"),
        ("x-envoy-fault-abort-grpc-request", "5"),
    ]));
    // Percentage headers cap the configured 100 %.
    for pct in ["0", "100", "5000", "abc", "-1", "4294967296"] {
        cases.push(Req::get(&[
            ("x-envoy-fault-abort-request", "503"),
            ("x-envoy-fault-abort-request-percentage", pct),
        ]));
    }
    // Which content types are gRPC.
    for ct in [
        "application/grpc+proto",
        "application/grpc-web",
        "application/grpc-web-text",
        "application/grpc;charset=x",
        "APPLICATION/GRPC",
        "application/grpcx",
    ] {
        cases.push(Req::get(&[
            ("content-type", ct),
            ("x-envoy-fault-abort-request", "503"),
        ]));
    }
    cases.push(Req::get(&[
        ("content-type", "application/grpc"),
        ("content-type", "text/plain"),
        ("x-envoy-fault-abort-request", "503"),
    ]));
    // Repeated fault headers: only the first counts.
    cases.push(Req::get(&[
        ("x-envoy-fault-abort-request", "503"),
        ("x-envoy-fault-abort-request", "418"),
    ]));
    // HEAD and bodies (connection: close when the body is still unread).
    cases.push(Req::get(&[("x-envoy-fault-abort-request", "503")]).with_method("HEAD"));
    cases.push(
        Req::get(&[
            ("content-type", "application/grpc"),
            ("x-envoy-fault-abort-request", "503"),
        ])
        .with_method("HEAD"),
    );
    cases.push(
        Req::get(&[("x-envoy-fault-abort-request", "503")])
            .with_method("POST")
            .with_body("hello", false),
    );
    cases.push(
        Req::get(&[("x-envoy-fault-abort-request", "503")])
            .with_method("POST")
            .with_body("", false),
    );
    cases.push(
        Req::get(&[("x-envoy-fault-abort-request", "503")])
            .with_method("POST")
            .with_body("hello", true),
    );
    cases.push(
        Req::get(&[("x-envoy-fault-abort-request", "503")])
            .with_method("POST")
            .with_body("", true),
    );
    cases.push(
        Req::get(&[
            ("content-type", "application/grpc"),
            ("x-envoy-fault-abort-request", "503"),
        ])
        .with_method("POST")
        .with_body("hello", false),
    );
    // Delays (1 ms), alone and followed by an abort; zero and invalid delays.
    cases.push(Req::get(&[("x-envoy-fault-delay-request", "1")]));
    cases.push(Req::get(&[
        ("x-envoy-fault-delay-request", "1"),
        ("x-envoy-fault-abort-request", "429"),
    ]));
    cases.push(Req::get(&[
        ("x-envoy-fault-delay-request", "0"),
        ("x-envoy-fault-abort-request", "429"),
    ]));
    cases.push(Req::get(&[("x-envoy-fault-delay-request", "abc")]));
    cases.push(Req::get(&[
        ("x-envoy-fault-delay-request", "1"),
        ("x-envoy-fault-delay-request-percentage", "0"),
    ]));
    cases.push(
        Req::get(&[
            ("x-envoy-fault-delay-request", "1"),
            ("x-envoy-fault-abort-request", "503"),
        ])
        .with_method("POST")
        .with_body("hello", false),
    );
    // Response rate limits.
    for value in ["1", "0", "abc", "18446744073709551615"] {
        cases.push(Req::get(&[("x-envoy-fault-throughput-response", value)]));
    }
    cases.push(Req::get(&[
        ("x-envoy-fault-throughput-response", "1"),
        ("x-envoy-fault-throughput-response-percentage", "0"),
    ]));
    cases.push(Req::get(&[
        ("x-envoy-fault-throughput-response", "1"),
        ("x-envoy-fault-abort-request", "503"),
    ]));
    // Per-downstream-cluster statistics.
    for cluster in ["frontend", "a.b", "", "we.ird:na_me"] {
        cases.push(Req::get(&[
            ("x-envoy-downstream-service-cluster", cluster),
            ("x-envoy-fault-abort-request", "503"),
        ]));
    }
    cases.push(Req::get(&[
        ("x-envoy-downstream-service-cluster", "a"),
        ("x-envoy-downstream-service-cluster", "b"),
        ("x-envoy-fault-abort-request", "503"),
    ]));
    cases.push(Req::get(&[
        ("x-envoy-downstream-service-cluster", "frontend"),
        ("x-envoy-fault-delay-request", "1"),
    ]));
    // No fault headers at all.
    cases.push(Req::get(&[]));
    cases
}

/// Run one request through the model, returning the decision and the bytes it would send (for aborts).
fn model(filter: &FaultFilter, raw: &[u8], date: &str, rng: &mut FastRng) -> (Decision, Option<Vec<u8>>) {
    let mut storage = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut storage);
    req.parse(raw).expect("parse our own request");
    let head = req.method == Some("HEAD");
    let headers: &[httparse::Header<'_>] = req.headers;
    let body_pending = headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    });
    let mut decision = filter.decide(headers, None, rng);
    if matches!(decision.action(), Action::Delay(_)) {
        // Envoy buffers the body during the delay, so by the time it aborts the request is complete.
        decision = filter.after_delay(decision, headers, rng);
        if let Action::Abort(abort) = decision.action() {
            let mut out = Vec::new();
            abort
                .reply(ReplyContext::new().head_request(head))
                .write_http1(&mut out, date);
            return (decision, Some(out));
        }
    }
    let bytes = match decision.action() {
        Action::Abort(abort) => {
            let mut out = Vec::new();
            let context = ReplyContext::new()
                .head_request(head)
                .request_body_pending(body_pending);
            abort.reply(context).write_http1(&mut out, date);
            Some(out)
        }
        _ => None,
    };
    (decision, bytes)
}

fn date_of(response: &[u8]) -> String {
    let text = String::from_utf8_lossy(response);
    text.lines()
        .find_map(|l| l.strip_prefix("date: "))
        .expect("a date header")
        .trim()
        .to_owned()
}

fn envoy_fault_stats(envoy: &Envoy, prefix: &str) -> Vec<String> {
    let body = http_get(
        envoy.admin(),
        &format!("/stats?filter=%5Ehttp%5C.{prefix}%5C.fault%5C."),
    );
    let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn our_fault_stats(stats: &FaultStats) -> Vec<String> {
    let mut lines = Vec::new();
    stats.visit(|s| lines.push(format!("{}: {}", s.name(), s.value())));
    lines.sort();
    lines
}

#[test]
fn fault_filter_matches_a_live_envoy() {
    let Some(envoy_bin) = meshcap_testns::require_envoy("fault_filter_matches_a_live_envoy") else {
        return;
    };
    let envoy = start_envoy(&envoy_bin);
    let addr = listener_addr(&envoy, "live");
    let config = Arc::new(FaultConfig::from_json(FAULT_CONFIG).unwrap());
    let stats = Arc::new(FaultStats::new("live"));
    let filter = FaultFilter::new(config, Arc::clone(&stats));
    let mut rng = FastRng::seed_from_u64(0x11fe);

    let cases = cases();
    let mut expected_log = Vec::new();
    let mut mismatches = Vec::new();
    for (i, req) in cases.iter().enumerate() {
        let raw = req.raw(i);
        let theirs = exchange(addr, &raw, req.method == "HEAD");
        let (decision, ours) = model(&filter, &raw, &date_of(&theirs), &mut rng);
        match ours {
            Some(ours) if ours != theirs => mismatches.push(format!(
                "case {i} {:?}:\n  envoy: {:?}\n  ours:  {:?}",
                req.headers,
                String::from_utf8_lossy(&theirs),
                String::from_utf8_lossy(&ours)
            )),
            // Not aborted: Envoy answers with the direct response (`ok`, turned into a trailers-only
            // `grpc-message: ok` for gRPC requests).
            None if !theirs.starts_with(b"HTTP/1.1 200 OK\r\n")
                || !(theirs.ends_with(b"\r\n\r\nok")
                    || String::from_utf8_lossy(&theirs).contains("grpc-message: ok\r\n")) =>
            {
                mismatches.push(format!(
                    "case {i} {:?}: we continue, envoy answered {:?}",
                    req.headers,
                    String::from_utf8_lossy(&theirs)
                ))
            }
            _ => {}
        }
        let md = if decision.emits_filter_metadata() {
            r#"{"injected_by":"live"}"#
        } else {
            "-"
        };
        let status = match decision.action() {
            Action::Abort(a) => a.reply(ReplyContext::new()).status(),
            _ => 200,
        };
        expected_log.push(format!("CASE {i} {status} {} md={md}", decision.response_flags()));
        drop(decision);
        assert_eq!(stats.active_faults(), 0);
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} responses differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );

    // Access log: response flags and filter metadata per request.
    let mut logged = Vec::new();
    let complete = wait_until(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(envoy.stdout()).unwrap_or_default();
        logged = text
            .lines()
            .filter(|l| l.starts_with("CASE "))
            .map(str::to_owned)
            .collect();
        logged.len() >= cases.len()
    });
    assert!(complete, "envoy logged {} of {} requests", logged.len(), cases.len());
    logged.sort_by_key(|l| l.split(' ').nth(1).and_then(|n| n.parse::<usize>().ok()));
    assert_eq!(logged, expected_log, "access log flags / metadata");

    // Statistics, including the per-downstream-cluster counters.
    assert_eq!(our_fault_stats(&stats), envoy_fault_stats(&envoy, "live"));

    // Overflow: with max_active_faults 1, a request held in a delay makes the next fault overflow.
    let max_addr = listener_addr(&envoy, "live_max");
    let max_config = Arc::new(
        FaultConfig::from_json(&FAULT_CONFIG.replace("\"max_active_faults\": 100", "\"max_active_faults\": 1"))
            .unwrap(),
    );
    let max_stats = Arc::new(FaultStats::new("live_max"));
    let max_filter = FaultFilter::new(max_config, Arc::clone(&max_stats));
    let held = Req::get(&[("x-envoy-fault-delay-request", "2000")]).raw(10_000);
    let second = Req::get(&[("x-envoy-fault-abort-request", "503")]).raw(10_001);
    let held_thread = std::thread::spawn(move || exchange(max_addr, &held, false));
    let active = wait_until(Duration::from_secs(10), || {
        http_get(envoy.admin(), "/stats?filter=live_max.fault.active_faults").contains("active_faults: 1")
    });
    assert!(active, "the delayed request did not become an active fault");
    let theirs = exchange(max_addr, &second, false);
    let held_reply = held_thread.join().unwrap();
    assert!(
        held_reply.ends_with(b"\r\n\r\nok"),
        "{:?}",
        String::from_utf8_lossy(&held_reply)
    );

    let held_req = [("x-envoy-fault-delay-request", "2000")];
    let held_decision = max_filter.decide(&held_req, None, &mut rng);
    assert!(matches!(held_decision.action(), Action::Delay(d) if d.as_millis() == 2000));
    let second_decision = max_filter.decide(&[("x-envoy-fault-abort-request", "503")], None, &mut rng);
    assert!(second_decision.is_noop(), "{second_decision:?}");
    assert!(
        theirs.ends_with(b"\r\n\r\nok"),
        "envoy aborted despite overflow: {:?}",
        String::from_utf8_lossy(&theirs)
    );
    drop(second_decision);
    drop(max_filter.after_delay(held_decision, &held_req, &mut rng));
    assert_eq!(our_fault_stats(&max_stats), envoy_fault_stats(&envoy, "live_max"));
    assert_eq!(max_stats.faults_overflow(), 1);
}
