//! Abort replies against bytes recorded from Envoy 1.40 (see `tests/data/README.md`): every status line
//! and HTTP→gRPC mapping for 200..599, and the wire form of each reply shape (plain, HEAD, unread body,
//! 400, gRPC over HTTP/1.1, gRPC HEAD). The recorded requests also go through the filter, so the
//! decision that leads to each reply is checked too.

use std::path::PathBuf;
use std::sync::Arc;

use meshcap_fault::{
    Action, FastRng, FaultConfig, FaultFilter, FaultStats, LocalReply, ReplyContext, http_to_grpc_status, reason_phrase,
};

fn data(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn status_lines_and_grpc_mapping_match_envoy_for_every_status() {
    let sweep = data("envoy-1.40-status-sweep.tsv");
    let mut checked = 0;
    for line in sweep.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split('\t').collect();
        let status: u16 = fields[0].parse().unwrap();
        assert_eq!(
            fields[1],
            format!("HTTP/1.1 {status} {}", reason_phrase(status)),
            "status {status}"
        );
        assert_eq!(
            fields[2],
            format!("grpc-status: {}", http_to_grpc_status(status)),
            "status {status}"
        );
        checked += 1;
    }
    assert_eq!(checked, 400);
}

#[test]
fn reply_bytes_match_envoy() {
    let config = FaultConfig::from_json(
        r#"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
            "response_rate_limit": {"header_limit": {}, "percentage": {"numerator": 100}}}"#,
    )
    .unwrap();
    let filter = FaultFilter::new(Arc::new(config), Arc::new(FaultStats::new("golden")));
    let mut rng = FastRng::seed_from_u64(7);
    let goldens = data("envoy-1.40-replies.jsonl");
    let mut checked = 0;
    for line in goldens.lines() {
        let g: serde_json::Value = serde_json::from_str(line).unwrap();
        let case = g["case"].as_str().unwrap();
        let expected = g["envoy_response"].as_str().unwrap();
        let date = expected
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .unwrap()
            .trim_end();
        let context = ReplyContext::new()
            .head_request(g["head"].as_bool().unwrap())
            .request_body_pending(g["request_body_pending"].as_bool().unwrap());

        // The reply built from the recorded abort parameters.
        let http = g["abort_http_status"].as_u64().unwrap() as u16;
        let grpc = g["abort_grpc_status"].as_u64().map(|s| s as u32);
        let reply = LocalReply::new(http, grpc, g["grpc_request"].as_bool().unwrap(), context);
        let mut ours = Vec::new();
        reply.write_http1(&mut ours, date);
        assert_eq!(String::from_utf8(ours).unwrap(), expected, "{case}");

        // The same reply reached through the filter from the recorded request.
        let request = g["request"].as_str().unwrap();
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut storage);
        parsed.parse(request.as_bytes()).unwrap();
        let decision = filter.decide(parsed.headers as &[httparse::Header<'_>], None, &mut rng);
        let Action::Abort(abort) = decision.action() else {
            panic!("{case}: {decision:?}")
        };
        assert_eq!(abort.reply(context), reply, "{case}");
        assert_eq!(
            reply.closes_connection(),
            expected.contains("connection: close"),
            "{case}"
        );
        checked += 1;
    }
    assert!(checked >= 13);
}

#[test]
fn http2_header_block_matches_the_recorded_h2c_grpc_reply() {
    // reference/envoy/e2e/B5 (h2c): content-type, grpc-status, grpc-message, date, server; no body.
    let reply = LocalReply::new(503, None, true, ReplyContext::new());
    let headers: Vec<(&str, String)> = reply.headers("D");
    assert_eq!(
        headers,
        [
            ("content-type", "application/grpc".to_owned()),
            ("grpc-status", "14".to_owned()),
            ("grpc-message", "fault filter abort".to_owned()),
            ("date", "D".to_owned()),
            ("server", "envoy".to_owned()),
        ]
    );
    assert_eq!((reply.status(), reply.body()), (200, &b""[..]));
}
