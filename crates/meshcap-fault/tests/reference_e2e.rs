//! Replays every fault-filter request recorded from a real Envoy 1.40 (`reference/envoy/e2e`, phases B and
//! C) through `FaultFilter` and checks, per request, the decision (access-log response flags, status,
//! delay, rate limit, filter metadata), the response bytes (all but the `date` value, which is taken from
//! the recording) and, per phase, the fault statistics deltas.
//!
//! The inputs are parsed from the recorded files themselves: the request from the curl command line, the
//! expected outcome from Envoy's access log and the curl output, the configuration from the phase's
//! bootstrap, the statistics from the recorded deltas.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use meshcap_fault::{Action, Decision, FastRng, FaultConfig, FaultFilter, FaultStats, RateLimiter, ReplyContext};

/// One recorded request: its curl output file and the path it requested (the access log key).
struct Case {
    what: &'static str,
    file: &'static str,
    path: &'static str,
}

/// A phase: its bootstrap, its access log, and steps of cases each followed by a stats delta file.
struct Phase {
    bootstrap: &'static str,
    log: &'static str,
    steps: &'static [(&'static [Case], &'static str)],
    /// Final fault statistics, when recorded.
    final_stats: Option<&'static str>,
}

const PHASE_B: Phase = Phase {
    bootstrap: "bootstrap-abort.json",
    log: "envoy-B.log",
    steps: &[
        (
            &[
                Case {
                    what: "abort 503 (GET)",
                    file: "B1-cli-get.txt",
                    path: "/b1",
                },
                Case {
                    what: "abort 503 (GET, curl -v)",
                    file: "B1-cli-get-verbose.txt",
                    path: "/b1v",
                },
            ],
            "B1-stats-delta.txt",
        ),
        (
            &[
                Case {
                    what: "POST with a body",
                    file: "B2-cli-post.txt",
                    path: "/b2",
                },
                Case {
                    what: "HEAD",
                    file: "B3-cli-head.txt",
                    path: "/b3",
                },
                // B4 (HTTP/1.0) is answered 426 by the connection manager before any filter runs.
                Case {
                    what: "gRPC over h2c",
                    file: "B5-cli-grpc-ct.txt",
                    path: "/pkg.Svc/Method",
                },
                Case {
                    what: "pod to itself",
                    file: "B6-pod-self.txt",
                    path: "/b6",
                },
                // B7 goes through the TCP passthrough, not through an HTTP filter chain.
            ],
            "B2-B7-stats-delta.txt",
        ),
    ],
    final_stats: None,
};

const PHASE_C: Phase = Phase {
    bootstrap: "bootstrap-header.json",
    log: "envoy-C.log",
    steps: &[(
        &[
            Case {
                what: "no fault headers",
                file: "C1-no-fault-headers.txt",
                path: "/c1",
            },
            Case {
                what: "abort 418",
                file: "C2-abort-418.txt",
                path: "/c2",
            },
            Case {
                what: "delay 300 then abort 429",
                file: "C3-delay-300-then-abort-429.txt",
                path: "/c3",
            },
            Case {
                what: "delay 300 only",
                file: "C4-delay-300-only.txt",
                path: "/c4",
            },
            Case {
                what: "abort at 0 %",
                file: "C5-abort-pct-0.txt",
                path: "/c5",
            },
            Case {
                what: "abort 600 ignored",
                file: "C6-abort-invalid-600.txt",
                path: "/c6",
            },
            Case {
                what: "gRPC abort 14 on plain HTTP",
                file: "C7-grpc-abort-14.txt",
                path: "/c7",
            },
            Case {
                what: "downstream cluster",
                file: "C8-downstream-cluster.txt",
                path: "/c8",
            },
            Case {
                what: "throughput 1 KiB/s",
                file: "C9-throughput-1kbps.txt",
                path: "/c9",
            },
        ],
        "C-stats-delta.txt",
    )],
    final_stats: Some("C-fault-stats.txt"),
};

fn e2e_dir(test: &str) -> Option<PathBuf> {
    let dir = meshcap_testns::reference_dir(test)?.join("envoy/e2e");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    Some(dir)
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The fault filter's `typed_config`, its connection manager's `stat_prefix` and the route's cluster.
fn find_fault(bootstrap: &serde_json::Value) -> (serde_json::Value, String, String) {
    fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        match v {
            serde_json::Value::Object(map) => {
                if map.contains_key("http_filters") {
                    out.push(v);
                }
                map.values().for_each(|c| walk(c, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut hcms = Vec::new();
    walk(bootstrap, &mut hcms);
    for hcm in hcms {
        let fault = hcm["http_filters"].as_array().unwrap().iter().find(|f| {
            f["typed_config"]["@type"] == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
        });
        if let Some(fault) = fault {
            let prefix = hcm["stat_prefix"].as_str().unwrap().to_owned();
            let cluster = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"]
                .as_str()
                .unwrap()
                .to_owned();
            return (fault["typed_config"].clone(), prefix, cluster);
        }
    }
    panic!("no fault filter in the bootstrap");
}

/// What the curl command line says about the request.
#[derive(Debug, Default)]
struct Request {
    headers: Vec<(String, String)>,
    head: bool,
    body: bool,
    write_out: bool,
}

fn parse_command(line: &str) -> Request {
    let mut request = Request::default();
    let tokens: Vec<&str> = line.split(' ').collect();
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i] {
            "-H" => {
                // `-H name: value` where the value runs until the next option or the URL.
                let name = tokens[i + 1].trim_end_matches(':').to_ascii_lowercase();
                let mut value = Vec::new();
                i += 2;
                while i < tokens.len() && !tokens[i].starts_with('-') && !tokens[i].starts_with("http://") {
                    value.push(tokens[i]);
                    i += 1;
                }
                request.headers.push((name, value.join(" ")));
                continue;
            }
            "-I" => request.head = true,
            "--data-binary" => request.body = !tokens[i + 1].is_empty() && !tokens[i + 1].starts_with("http://"),
            "-w" => request.write_out = true,
            _ => {}
        }
        i += 1;
    }
    request
}

/// One access-log line of the recording.
#[derive(Debug)]
struct Logged {
    protocol: String,
    status: u16,
    flags: String,
    /// `None` when the phase's log format has no `fault_md` field; `Some(None)` for `fault_md=-`.
    fault_md: Option<Option<String>>,
}

fn access_log(dir: &Path, file: &str) -> BTreeMap<String, Logged> {
    let text = String::from_utf8(read(dir, file)).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("ACCESS ")) {
        // ACCESS [time] "GET /c3 HTTP/1.1" 429 DI,FI details=... fault_md={...}
        let quoted = line.split('"').nth(1).unwrap();
        let mut parts = quoted.split(' ');
        let (_method, path, protocol) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let mut rest = line.splitn(3, '"').nth(2).unwrap().split_whitespace();
        let status = rest.next().unwrap().parse().unwrap();
        let flags = rest.next().unwrap().to_owned();
        let fault_md = line
            .split_once("fault_md=")
            .map(|(_, md)| Some(md.trim().to_owned()).filter(|md| md != "-"));
        out.insert(
            path.to_owned(),
            Logged {
                protocol: protocol.to_owned(),
                status,
                flags,
                fault_md,
            },
        );
    }
    out
}

/// The recorded response: head (status line and header lines, in order), body, and the curl `-w` trailer.
#[derive(Debug)]
struct Recorded {
    status_line: String,
    headers: Vec<(String, String)>,
    raw_head: Vec<u8>,
    body: Vec<u8>,
    write_out: Option<String>,
}

fn parse_response(bytes: &[u8], request: &Request, verbose: bool) -> Recorded {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    if verbose {
        // `curl -v`: response head lines are prefixed with "< ", the body is the last line.
        let mut raw_head = Vec::new();
        let mut lines = Vec::new();
        for line in text.split('\n').filter_map(|l| l.strip_prefix("< ")) {
            raw_head.extend_from_slice(line.as_bytes());
            raw_head.push(b'\n');
            lines.push(line.trim_end_matches('\r').to_owned());
        }
        let body = text.rsplit('\n').next().unwrap().as_bytes().to_vec();
        let headers = lines[1..]
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        return Recorded {
            status_line: lines[0].clone(),
            headers,
            raw_head,
            body,
            write_out: None,
        };
    }
    let (head, mut body) = match text.split_once("\r\n\r\n") {
        Some((head, body)) => (format!("{head}\r\n\r\n"), body.to_owned()),
        None => (String::new(), text.clone()),
    };
    let mut write_out = None;
    if request.write_out {
        let at = body
            .find("code=")
            .or_else(|| body.find("time_total="))
            .expect("curl -w output");
        write_out = Some(body[at..].trim().to_owned());
        body.truncate(at);
    }
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let status_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
            (n.to_owned(), v.to_owned())
        })
        .collect();
    Recorded {
        status_line,
        headers,
        raw_head: head.into_bytes(),
        body: body.into_bytes(),
        write_out,
    }
}

fn time_total(write_out: &str) -> f64 {
    write_out
        .split(' ')
        .find_map(|kv| kv.strip_prefix("time_total="))
        .unwrap()
        .parse()
        .unwrap()
}

/// Every fault statistic of `stats`, by name.
fn fault_stats(stats: &FaultStats) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    stats.visit(|s| {
        out.insert(s.name().to_owned(), s.value());
    });
    out
}

/// `name: from -> to` lines of a delta file that belong to the fault filter of `prefix`.
fn fault_deltas(dir: &Path, file: &str, prefix: &str) -> BTreeMap<String, (u64, u64)> {
    let text = String::from_utf8(read(dir, file)).unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            let (name, change) = l.split_once(": ").unwrap();
            let (from, to) = change.split_once(" -> ").unwrap();
            (name.to_owned(), (from.parse().unwrap(), to.parse().unwrap()))
        })
        .collect()
}

fn check_case(
    dir: &Path,
    case: &Case,
    filter: &FaultFilter,
    logged: &BTreeMap<String, Logged>,
    rng: &mut FastRng,
) -> Decision {
    let ctx = format!("{} ({})", case.what, case.file);
    let bytes = read(dir, case.file);
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    let command = std::str::from_utf8(&bytes[..newline]).unwrap();
    let request = parse_command(command);
    let recorded = parse_response(&bytes[newline + 1..], &request, command.contains(" -v "));
    let log = logged
        .get(case.path)
        .unwrap_or_else(|| panic!("{ctx}: no access log line for {}", case.path));
    let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let route_cluster = Some("localhost:5000");

    let mut decision = filter.decide(&headers[..], route_cluster, rng);
    if let Action::Delay(delay) = *decision.action() {
        // The recording's wall clock must have seen at least the delay we decided.
        let total = time_total(recorded.write_out.as_deref().expect("delayed cases record time_total"));
        assert!(
            total >= delay.as_secs_f64(),
            "{ctx}: curl took {total}s, delay is {delay:?}"
        );
        assert!(
            total < delay.as_secs_f64() + 0.1,
            "{ctx}: curl took {total}s, delay is {delay:?}"
        );
        decision = filter.after_delay(decision, &headers[..], rng);
    }

    assert_eq!(decision.response_flags(), log.flags, "{ctx}: response flags");
    if let Some(fault_md) = &log.fault_md {
        assert_eq!(
            decision.emits_filter_metadata(),
            fault_md.is_some(),
            "{ctx}: filter metadata"
        );
    }
    if let Some(Some(md)) = &log.fault_md {
        let logged_md: serde_json::Value = serde_json::from_str(md).unwrap();
        let ours = serde_json::Value::Object(filter.config().filter_metadata().unwrap().clone());
        assert_eq!(ours, logged_md, "{ctx}: filter metadata value");
    }

    match decision.action() {
        Action::Abort(abort) => {
            let context = ReplyContext::new()
                .head_request(request.head)
                .request_body_pending(request.body);
            let reply = abort.reply(context);
            assert_eq!(reply.status(), log.status, "{ctx}: status");
            let date = &recorded
                .headers
                .iter()
                .find(|(n, _)| n == "date")
                .expect("a date header")
                .1;
            if log.protocol == "HTTP/1.1" {
                let mut ours = Vec::new();
                reply.write_http1(&mut ours, date);
                let mut theirs = if command.contains(" -v ") {
                    // Rebuild the wire form from the verbose trace.
                    recorded
                        .raw_head
                        .iter()
                        .copied()
                        .filter(|&b| b != b'\n')
                        .flat_map(|b| if b == b'\r' { vec![b'\r', b'\n'] } else { vec![b] })
                        .collect::<Vec<u8>>()
                } else {
                    recorded.raw_head.clone()
                };
                theirs.extend_from_slice(&recorded.body);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs),
                    "{ctx}: response bytes"
                );
            } else {
                // h2c: curl prints `HTTP/2 200` and the header block Envoy encoded.
                assert_eq!(
                    recorded.status_line.trim(),
                    format!("HTTP/2 {}", reply.status()),
                    "{ctx}"
                );
                let ours: Vec<(String, String)> = reply
                    .headers(date)
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v))
                    .collect();
                assert_eq!(ours, recorded.headers, "{ctx}: header block");
                assert_eq!(reply.body(), &recorded.body[..], "{ctx}: body");
            }
        }
        Action::Continue => {
            assert!(
                !recorded.body.starts_with(b"fault filter abort"),
                "{ctx}: recorded an abort"
            );
            assert_eq!(log.status, 200, "{ctx}");
        }
        other => panic!("{ctx}: unexpected {other:?}"),
    }

    if let Some(kbps) = decision.response_rate_limit() {
        // C9: `code=200 size=50 time_total=0.003`: the whole body left without waiting.
        let write_out = recorded.write_out.as_deref().unwrap();
        let size: u64 = write_out
            .split(' ')
            .find_map(|kv| kv.strip_prefix("size="))
            .unwrap()
            .parse()
            .unwrap();
        let start = Instant::now();
        let grant = RateLimiter::new(kbps, start).poll(size, start);
        assert_eq!((grant.bytes(), grant.next_poll()), (size, None), "{ctx}: first burst");
        assert!(time_total(write_out) < 0.05, "{ctx}: Envoy was not visibly slowed");
        assert_eq!(kbps, NonZeroU64::new(1).unwrap());
    }
    decision
}

fn run_phase(test: &str, phase: &Phase) {
    let Some(dir) = e2e_dir(test) else { return };
    let bootstrap: serde_json::Value = serde_json::from_slice(&read(&dir, phase.bootstrap)).unwrap();
    let (typed_config, stat_prefix, _cluster) = find_fault(&bootstrap);
    let config = FaultConfig::from_value(&typed_config).expect("the recorded config parses");
    let stats = Arc::new(FaultStats::new(&stat_prefix));
    let filter = FaultFilter::new(Arc::new(config), Arc::clone(&stats));
    let logged = access_log(&dir, phase.log);
    let mut rng = FastRng::seed_from_u64(0x00e2_e000);
    let prefix = stats.prefix().to_owned();

    let mut checked = 0;
    for (cases, delta_file) in phase.steps {
        let before = fault_stats(&stats);
        for case in *cases {
            // Each request completes (and its stream is destroyed) before the next one.
            drop(check_case(&dir, case, &filter, &logged, &mut rng));
            assert_eq!(stats.active_faults(), 0, "{}: active fault leaked", case.what);
            checked += 1;
        }
        let after = fault_stats(&stats);
        let deltas = fault_deltas(&dir, delta_file, &prefix);
        for (name, &(from, to)) in &deltas {
            assert_eq!(
                before.get(name).copied().unwrap_or(0),
                from,
                "{delta_file}: {name} before"
            );
            assert_eq!(after.get(name).copied(), Some(to), "{delta_file}: {name} after");
        }
        for (name, value) in &after {
            if !deltas.contains_key(name) {
                assert_eq!(
                    before.get(name),
                    Some(value),
                    "{delta_file}: {name} moved but Envoy's did not"
                );
            }
        }
    }
    if let Some(file) = phase.final_stats {
        let text = String::from_utf8(read(&dir, file)).unwrap();
        let recorded: BTreeMap<String, u64> = text
            .lines()
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(fault_stats(&stats), recorded, "{file}");
    }
    assert!(checked > 0);
}

#[test]
fn phase_b_abort_503_matches_envoy() {
    run_phase("phase_b_abort_503_matches_envoy", &PHASE_B);
}

#[test]
fn phase_c_header_controlled_faults_match_envoy() {
    run_phase("phase_c_header_controlled_faults_match_envoy", &PHASE_C);
}

/// The boot-time fault statistics of the static capture (`reference/envoy/stats.txt`) and their kinds as
/// Envoy's Prometheus output types them (`stats_prometheus.txt`).
#[test]
fn boot_statistics_match_envoy_names_values_and_kinds() {
    let Some(dir) = meshcap_testns::reference_dir("boot_statistics_match_envoy_names_values_and_kinds") else {
        return;
    };
    let dir = dir.join("envoy");
    let stats = FaultStats::new("localhost_5000");
    let mut ours = Vec::new();
    stats.visit(|s| ours.push((s.name().to_owned(), s.value(), s.kind())));

    let text = String::from_utf8(read(&dir, "stats.txt")).unwrap();
    let recorded: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("http.localhost_5000.fault."))
        .map(str::to_owned)
        .collect();
    let rendered: Vec<String> = ours.iter().map(|(n, v, _)| format!("{n}: {v}")).collect();
    assert_eq!(rendered, recorded, "stats.txt");

    let prometheus = String::from_utf8(read(&dir, "stats_prometheus.txt")).unwrap();
    for (name, value, kind) in &ours {
        let base = name.strip_prefix("http.localhost_5000.fault.").unwrap();
        let metric = format!("envoy_http_fault_{base}");
        let kind = match kind {
            meshcap_fault::StatKind::Counter => "counter",
            meshcap_fault::StatKind::Gauge => "gauge",
        };
        assert!(
            prometheus.contains(&format!("# TYPE {metric} {kind}\n")),
            "{metric} as {kind}"
        );
        assert!(
            prometheus.contains(&format!(
                "{metric}{{envoy_http_conn_manager_prefix=\"localhost_5000\"}} {value}\n"
            )),
            "{metric} sample"
        );
    }
}
