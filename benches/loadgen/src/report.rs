//! What a run measured, as human text ([`Report`]'s `Display`) or one JSON object ([`Report::to_json`]).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::histogram::Histogram;
use crate::run::Config;

/// The quantiles reported, with their labels.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// The fate of every measured request: each is counted exactly once, so the fields other than
/// `scheduled` add up to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct RequestCounts {
    pub(crate) scheduled: u64,
    pub(crate) ok: u64,
    pub(crate) non_2xx: u64,
    pub(crate) timeout: u64,
    pub(crate) read_error: u64,
    pub(crate) write_error: u64,
    pub(crate) protocol_error: u64,
}

impl RequestCounts {
    /// Requests in the measured window of the timeline.
    pub fn scheduled(&self) -> u64 {
        self.scheduled
    }

    /// Complete responses with a 2xx status (the ones in the latency statistics).
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Complete responses with another status.
    pub fn non_2xx(&self) -> u64 {
        self.non_2xx
    }

    /// Requests with no response by `intended + timeout`, sent or still queued.
    pub fn timeout(&self) -> u64 {
        self.timeout
    }

    /// Requests whose connection failed or closed before the response was complete.
    pub fn read_error(&self) -> u64 {
        self.read_error
    }

    /// Requests that could not be written.
    pub fn write_error(&self) -> u64 {
        self.write_error
    }

    /// Requests whose response could not be framed (or came with unsolicited bytes after it).
    pub fn protocol_error(&self) -> u64 {
        self.protocol_error
    }

    /// Every measured request without a 2xx response.
    pub fn failed(&self) -> u64 {
        self.non_2xx + self.timeout + self.read_error + self.write_error + self.protocol_error
    }
}

/// The result of [`run`](crate::run()).
///
/// * `latency`: from each request's **intended** send time to its complete 2xx response, so time spent
///   queued for a free connection counts (coordinated-omission corrected).
/// * `service_time`: from the actual send to the complete 2xx response (what closed-loop tools report).
/// * `send_delay`: from the intended to the actual send, for every measured request sent: queueing
///   behind busy connections plus the generator's own lateness. If it is large at a rate the target
///   sustains, add connections or give the generator a core of its own.
#[derive(Debug, Clone)]
pub struct Report {
    url: String,
    method: String,
    rate: u64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    requests: RequestCounts,
    connections_opened: u64,
    connect_failures: u64,
    achieved_rate: f64,
    latency: Histogram,
    service_time: Histogram,
    send_delay: Histogram,
    first_error: Option<String>,
}

impl Report {
    pub(crate) fn new(
        config: &Config,
        mut requests: RequestCounts,
        (connections_opened, connect_failures): (u64, u64),
        achieved_rate: f64,
        [latency, service_time, send_delay]: [Histogram; 3],
        first_error: Option<String>,
    ) -> Self {
        let schedule = config.schedule();
        requests.scheduled = schedule.measured_requests();
        Self {
            url: config.request().target().to_string(),
            method: config.request().method().to_owned(),
            rate: schedule.rate().per_second(),
            connections: config.connections(),
            duration: schedule.duration(),
            warmup: schedule.warmup(),
            timeout: config.timeout(),
            requests,
            connections_opened,
            connect_failures,
            achieved_rate,
            latency,
            service_time,
            send_delay,
            first_error,
        }
    }

    /// The outcome counts.
    pub fn requests(&self) -> &RequestCounts {
        &self.requests
    }

    /// Connections opened, the initial ones included.
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
    }

    /// Failed connection attempts during the run (attempts, not requests).
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures
    }

    /// Failed requests plus failed connection attempts: zero for a clean run.
    pub fn errors(&self) -> u64 {
        self.requests.failed() + self.connect_failures
    }

    /// Responses (any status) to measured requests per second, over the measured window or until the
    /// last of those responses arrived, whichever is longer: below the target rate when the target
    /// falls behind.
    pub fn achieved_rate(&self) -> f64 {
        self.achieved_rate
    }

    /// Nanoseconds from intended send to complete 2xx response.
    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// Nanoseconds from actual send to complete 2xx response.
    pub fn service_time(&self) -> &Histogram {
        &self.service_time
    }

    /// Nanoseconds from intended to actual send.
    pub fn send_delay(&self) -> &Histogram {
        &self.send_delay
    }

    /// The first failure seen (`timeout`, `read: connection reset by peer`, `status 503`, …).
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The report as one JSON object (latencies in microseconds).
    pub fn to_json(&self) -> String {
        let json = JsonReport {
            url: &self.url,
            method: &self.method,
            rate: self.rate,
            connections: self.connections,
            duration_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            timeout_s: self.timeout.as_secs_f64(),
            requests: self.requests,
            connections_opened: self.connections_opened,
            connect_failures: self.connect_failures,
            errors: self.errors(),
            achieved_rate: (self.achieved_rate * 10.0).round() / 10.0,
            latency_us: JsonStats::of(&self.latency),
            service_time_us: JsonStats::of(&self.service_time),
            send_delay_us: JsonStats::of(&self.send_delay),
            first_error: self.first_error.as_deref(),
        };
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(&json).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    url: &'a str,
    method: &'a str,
    rate: u64,
    connections: usize,
    duration_s: f64,
    warmup_s: f64,
    timeout_s: f64,
    requests: RequestCounts,
    connections_opened: u64,
    connect_failures: u64,
    errors: u64,
    achieved_rate: f64,
    latency_us: Option<JsonStats>,
    service_time_us: Option<JsonStats>,
    send_delay_us: Option<JsonStats>,
    first_error: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonStats {
    count: u64,
    min: f64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    #[serde(rename = "p99.9")]
    p99_9: f64,
    #[serde(rename = "p99.99")]
    p99_99: f64,
    max: f64,
}

impl JsonStats {
    fn of(h: &Histogram) -> Option<Self> {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |q: f64| h.value_at_quantile(q).map_or(0.0, us);
        Some(Self {
            count: h.count(),
            min: us(h.min()?),
            mean: h.mean()?.round() / 1000.0,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: us(h.max()?),
        })
    }
}

/// `10s`, `500ms`, `1.5s`.
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.subsec_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requests;
        writeln!(
            f,
            "{} {} at {} req/s over {} connections: {} measured after {} warm-up, timeout {}",
            self.method,
            self.url,
            self.rate,
            self.connections,
            human(self.duration),
            human(self.warmup),
            human(self.timeout)
        )?;
        writeln!(
            f,
            "requests     {} scheduled, {} 2xx, achieved {:.1} req/s",
            r.scheduled, r.ok, self.achieved_rate
        )?;
        writeln!(
            f,
            "errors       {} (non-2xx {}, timeout {}, read {}, write {}, protocol {}, connect {})",
            self.errors(),
            r.non_2xx,
            r.timeout,
            r.read_error,
            r.write_error,
            r.protocol_error,
            self.connect_failures
        )?;
        writeln!(f, "connections  {} opened", self.connections_opened)?;
        if let Some(e) = &self.first_error {
            writeln!(f, "first error  {e}")?;
        }
        write!(f, "\n{:<14}", "ms")?;
        for label in QUANTILES.iter().map(|(label, _)| *label).chain(["max", "mean"]) {
            write!(f, "{label:>9}")?;
        }
        writeln!(f)?;
        for (name, h) in [
            ("latency", &self.latency),
            ("service time", &self.service_time),
            ("send delay", &self.send_delay),
        ] {
            write!(f, "{name:<14}")?;
            if h.is_empty() {
                writeln!(f, "{:>9}", "-")?;
                continue;
            }
            for (_, q) in QUANTILES {
                write!(f, "{:>9}", h.value_at_quantile(q).map_or_else(String::new, ms))?;
            }
            let mean = h.mean().map_or_else(String::new, |m| format!("{:.3}", m / 1e6));
            writeln!(f, "{:>9}{mean:>9}", h.max().map_or_else(String::new, ms))?;
        }
        write!(
            f,
            "\nlatency counts from each request's intended send time (coordinated omission corrected);\n\
             service time from its actual send; send delay is actual minus intended send time.\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Request};

    fn sample(errors: bool) -> Report {
        let request = Request::new("http://10.244.0.6:5000/".parse().unwrap());
        let config = Config::builder(request, "1000".parse().unwrap())
            .connections(4)
            .duration(Duration::from_millis(1500))
            .warmup(Duration::from_millis(500))
            .build()
            .unwrap();
        // 1500 measured requests; with errors, three of them failed.
        let ok = if errors { 1497 } else { 1500 };
        let mut latency = Histogram::new();
        let mut service = Histogram::new();
        let mut delay = Histogram::new();
        for i in 0..ok - 1 {
            latency.record(100_000 + i * 100);
            service.record(90_000 + i * 50);
        }
        latency.record(250_000_000); // one request stuck behind a 250 ms stall
        service.record(1_000_000);
        for i in 0..1500 {
            delay.record(i % 20 * 1000);
        }
        let mut counts = RequestCounts {
            ok,
            ..RequestCounts::default()
        };
        let mut first_error = None;
        if errors {
            counts.non_2xx = 1;
            counts.timeout = 2;
            first_error = Some("status 503".to_owned());
        }
        Report::new(
            &config,
            counts,
            (5, u64::from(errors)),
            1000.4,
            [latency, service, delay],
            first_error,
        )
    }

    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(actual, expected, "{name} differs (UPDATE_GOLDEN=1 rewrites it)");
    }

    #[test]
    fn text_report_golden() {
        golden("report.txt", &sample(false).to_string());
        golden("report-errors.txt", &sample(true).to_string());
    }

    #[test]
    fn json_report_golden() {
        let json = sample(true).to_json();
        golden("report.json", &format!("{json}\n"));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["errors"], 4);
        assert_eq!(value["requests"]["scheduled"], 1500);
        assert_eq!(value["latency_us"]["max"], 250_000.0);
    }

    #[test]
    fn empty_statistics_print_as_dashes_and_null() {
        let request = Request::new("http://127.0.0.1/".parse().unwrap());
        let config = Config::builder(request, "1".parse().unwrap()).build().unwrap();
        let report = Report::new(
            &config,
            RequestCounts::default(),
            (32, 0),
            0.0,
            [Histogram::new(), Histogram::new(), Histogram::new()],
            None,
        );
        assert!(report.to_string().contains("\nlatency               -\n"), "{report}");
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert!(value["latency_us"].is_null());
        assert_eq!(value["requests"]["scheduled"], 10);
    }

    #[test]
    fn durations_print_like_the_flags() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_micros(250)), "0.00025s");
    }
}
