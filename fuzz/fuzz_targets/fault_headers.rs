//! meshcap-fault: header-controlled faults and configuration JSON.
//!
//! The input picks a configuration (the fuzzer's own JSON text when it parses, else one of the
//! header-controlled ones) and a request whose headers the fuzzer chooses; the request goes through
//! `decide`, `after_delay` and the reply encoder. Nothing may panic, and the outcome must be coherent.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshcap_fault::{Action, FastRng, FaultConfig, FaultFilter, FaultStats, ReplyContext, headers};

const NAMES: [&str; 11] = [
    headers::ABORT_REQUEST,
    headers::ABORT_GRPC_REQUEST,
    headers::ABORT_REQUEST_PERCENTAGE,
    headers::DELAY_REQUEST,
    headers::DELAY_REQUEST_PERCENTAGE,
    headers::THROUGHPUT_RESPONSE,
    headers::THROUGHPUT_RESPONSE_PERCENTAGE,
    headers::DOWNSTREAM_SERVICE_CLUSTER,
    headers::DOWNSTREAM_SERVICE_NODE,
    headers::CONTENT_TYPE,
    "x-kuma-tags",
];

const CONFIGS: [&str; 2] = [
    r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
        "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
        "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}},
        "max_active_faults": 2}"#,
    r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 50, "denominator": "TEN_THOUSAND"}},
        "delay": {"header_delay": {}, "percentage": {"numerator": 1, "denominator": "MILLION"}},
        "downstream_nodes": ["a"],
        "headers": [{"name": "x-kuma-tags", "safe_regex_match": {"regex": ".*&kuma.io/service=[^&]*frontend[,&].*"}}]}"#,
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    config_json: &'a str,
    fallback: bool,
    headers: Vec<(u8, &'a [u8])>,
    seed: u64,
    head: bool,
    body_pending: bool,
}

fuzz_target!(|input: Input<'_>| {
    let config = match FaultConfig::from_json(input.config_json) {
        Ok(config) => config,
        Err(err) => {
            assert!(err.to_string().starts_with("fault filter config"));
            FaultConfig::from_json(CONFIGS[usize::from(input.fallback)]).expect("built-in config")
        }
    };
    let filter = FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("fuzz")));
    let headers: Vec<(&str, &[u8])> =
        input.headers.iter().map(|(i, v)| (NAMES[usize::from(*i) % NAMES.len()], *v)).collect();
    let mut rng = FastRng::seed_from_u64(input.seed);
    let mut decision = filter.decide(&headers, Some("cluster"), &mut rng);
    if matches!(decision.action(), Action::Delay(_)) {
        decision = filter.after_delay(decision, &headers, &mut rng);
    }
    if let Action::Abort(abort) = decision.action() {
        assert!((200..600).contains(&abort.http_status()));
        let context = ReplyContext::new().head_request(input.head).request_body_pending(input.body_pending);
        let mut out = Vec::new();
        abort.reply(context).write_http1(&mut out, "Thu, 26 Nov 2026 11:47:33 GMT");
        assert!(out.starts_with(b"HTTP/1.1 "));
    }
    drop(decision);
    assert_eq!(filter.stats().active_faults(), 0);
    let mut count = 0;
    filter.stats().visit(|_| count += 1);
    assert!(count >= 5);
});
