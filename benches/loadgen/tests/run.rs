//! The driver against an in-process server on loopback. Timing assertions are lower bounds only, each
//! derived from a deterministic server behaviour (a stall of known length).

mod support;

use std::time::Duration;

use meshcap_loadgen::{Config, Rate, Report, Request, RunError, run};
use support::{Action, TestServer};

const MS: u64 = 1_000_000;

fn config(url: &str, rate: u64, connections: usize, warmup_ms: u64, duration_ms: u64) -> Config {
    Config::builder(
        Request::new(url.parse().unwrap()),
        rate.try_into().map(Rate::new).unwrap(),
    )
    .connections(connections)
    .warmup(Duration::from_millis(warmup_ms))
    .duration(Duration::from_millis(duration_ms))
    .timeout(Duration::from_secs(2))
    .build()
    .unwrap()
}

async fn run_ok(config: &Config) -> Report {
    run(config).await.unwrap_or_else(|e| panic!("run failed: {e}"))
}

fn outcomes_add_up(report: &Report) {
    let r = report.requests();
    assert_eq!(
        r.ok() + r.non_2xx() + r.timeout() + r.read_error() + r.write_error() + r.protocol_error(),
        r.scheduled(),
        "every measured request has exactly one outcome: {r:?}"
    );
    assert_eq!(report.latency().count(), r.ok());
    assert_eq!(report.service_time().count(), r.ok());
}

#[tokio::test]
async fn request_count_is_rate_times_duration() {
    let server = TestServer::start(|_| Action::Ok);
    let config = config(&server.url(), 2000, 4, 200, 500);
    let report = run_ok(&config).await;
    println!("{report}");
    assert_eq!(report.requests().scheduled(), 1000, "2000/s × 0.5 s");
    assert_eq!(report.requests().ok(), 1000);
    assert_eq!(report.errors(), 0, "{:?}", report.first_error());
    outcomes_add_up(&report);
    // The server saw the warm-up too, and nothing more: 2000/s × 0.7 s.
    assert_eq!(server.received(), 1400);
    assert_eq!(report.connections_opened(), 4);
    assert_eq!(report.send_delay().count(), 1000);
    assert!(
        report.achieved_rate() > 0.0 && report.achieved_rate() <= 2000.0,
        "{}",
        report.achieved_rate()
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["requests"]["ok"], 1000);
    assert_eq!(json["latency_us"]["count"], 1000);
}

#[tokio::test]
async fn a_stalled_response_shows_in_the_tail() {
    // One connection at 1000/s; request 300 (the 200th measured, due at 300 ms) is answered 200 ms late.
    // Requests 301..=400 are due during the stall and cannot be sent before it ends, so at least 101
    // measured requests take 100 ms or more from their intended send time and 151 take 50 ms or more,
    // whatever the machine's speed. A closed-loop measurement would show one slow request.
    let stall = Duration::from_millis(200);
    let server = TestServer::start(move |n| if n == 300 { Action::Stall(stall) } else { Action::Ok });
    let report = run_ok(&config(&server.url(), 1000, 1, 100, 1000)).await;
    println!("{report}");
    assert_eq!(report.requests().scheduled(), 1000);
    assert_eq!(report.errors(), 0, "{:?}", report.first_error());
    outcomes_add_up(&report);
    let latency = report.latency();
    assert!(latency.max().unwrap() >= 200 * MS, "max {:?}", latency.max());
    assert!(
        latency.value_at_quantile(0.99).unwrap() >= 100 * MS,
        "p99 {:?}",
        latency.value_at_quantile(0.99)
    );
    assert!(
        latency.value_at_quantile(0.90).unwrap() >= 50 * MS,
        "p90 {:?}",
        latency.value_at_quantile(0.90)
    );
    // The stalled request itself was slow to answer once sent; the next one waited for it to be sent.
    assert!(report.service_time().max().unwrap() >= 200 * MS);
    assert!(
        report.send_delay().max().unwrap() >= 199 * MS,
        "send delay max {:?}",
        report.send_delay().max()
    );
}

#[tokio::test]
async fn failures_are_counted_once_each() {
    // 100 measured requests over two connections, no warm-up. Request 5 never gets an answer (timeout),
    // 10 gets a 503, 15 finds its keep-alive connection closed (re-sent once on a new one: it succeeds
    // as request 16), 20 is truncated (read error), 25 is garbage (protocol error).
    let server = TestServer::start(|n| match n {
        5 => Action::Hang,
        10 => Action::Status(503),
        15 => Action::Close,
        20 => Action::Truncated,
        25 => Action::Garbage,
        _ => Action::Ok,
    });
    let config = Config::builder(Request::new(server.url().parse().unwrap()), "200".parse().unwrap())
        .connections(2)
        .warmup(Duration::ZERO)
        .duration(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let report = run_ok(&config).await;
    println!("{report}");
    let r = report.requests();
    assert_eq!(r.scheduled(), 100);
    assert_eq!(
        (
            r.timeout(),
            r.non_2xx(),
            r.read_error(),
            r.protocol_error(),
            r.write_error()
        ),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(r.ok(), 96);
    outcomes_add_up(&report);
    assert_eq!(server.received(), 101, "the stale-connection request was sent twice");
    // Two initial connections, then a new one after the timeout, the stale close, the truncated and
    // the garbage response.
    assert_eq!(report.connections_opened(), 6);
    assert_eq!(report.connect_failures(), 0);
    assert_eq!(report.errors(), 4);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["errors"], 4);
    assert_eq!(json["requests"]["timeout"], 1);
}

#[tokio::test]
async fn requests_left_unsent_by_a_vanished_server_are_timeouts() {
    // One connection at 100/s for 500 ms (50 requests). Request 5 makes the server stop listening and
    // close the connection unanswered: the generator re-sends it once on a new connection, which is
    // refused, so it is a read error; every later request finds no connection until the run ends and
    // is counted as a timeout without ever being sent.
    let server = TestServer::start(|n| if n == 5 { Action::Shutdown } else { Action::Ok });
    let config = Config::builder(Request::new(server.url().parse().unwrap()), "100".parse().unwrap())
        .connections(1)
        .warmup(Duration::ZERO)
        .duration(Duration::from_millis(500))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let report = run_ok(&config).await;
    println!("{report}");
    let r = report.requests();
    assert_eq!(r.scheduled(), 50);
    assert_eq!((r.ok(), r.read_error(), r.timeout()), (5, 1, 44), "{r:?}");
    outcomes_add_up(&report);
    assert_eq!(server.received(), 6);
    assert_eq!(
        report.send_delay().count(),
        6,
        "only the six requests sent have a send delay"
    );
    assert!(report.connect_failures() >= 1);
    assert_eq!(report.connections_opened(), 1);
    assert_eq!(report.errors(), 45 + report.connect_failures());
}

#[tokio::test]
async fn chunked_bodies_keep_the_connection() {
    let server = TestServer::start(|_| Action::Chunked);
    let report = run_ok(&config(&server.url(), 1000, 2, 0, 200)).await;
    assert_eq!(report.requests().ok(), 200);
    assert_eq!(report.errors(), 0, "{:?}", report.first_error());
    assert_eq!(report.connections_opened(), 2);
}

#[tokio::test]
async fn close_delimited_responses_open_a_connection_per_request() {
    let server = TestServer::start(|_| Action::CloseDelimited);
    let report = run_ok(&config(&server.url(), 500, 2, 0, 200)).await;
    assert_eq!(report.requests().ok(), 100);
    assert_eq!(report.errors(), 0, "{:?}", report.first_error());
    assert!(
        report.connections_opened() >= 100,
        "opened {}",
        report.connections_opened()
    );
}

#[tokio::test]
async fn connection_close_requests_reconnect_every_time() {
    let server = TestServer::start(|_| Action::Ok);
    let request = Request::new(server.url().parse().unwrap())
        .with_header("Connection", "close")
        .unwrap();
    let config = Config::builder(request, "500".parse().unwrap())
        .connections(2)
        .warmup(Duration::ZERO)
        .duration(Duration::from_millis(200))
        .build()
        .unwrap();
    let report = run_ok(&config).await;
    assert_eq!(report.requests().ok(), 100);
    assert_eq!(report.errors(), 0, "{:?}", report.first_error());
    assert!(
        report.connections_opened() >= 100,
        "opened {}",
        report.connections_opened()
    );
}

#[tokio::test]
async fn an_unreachable_target_fails_before_sending() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let err = run(&config(&url, 100, 2, 0, 100)).await.unwrap_err();
    assert!(matches!(err, RunError::Connect { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot connect to 127.0.0.1:"), "{err}");
}
