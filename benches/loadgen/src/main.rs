//! `loadgen`: send HTTP/1.1 requests at a fixed rate and report latency from intended send times.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meshcap_loadgen::{Config, Rate, Request, Target};

/// Open-loop HTTP/1.1 load generator: a fixed request rate over keep-alive connections, latency
/// measured from each request's intended send time (coordinated omission corrected, like wrk2).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// Target URL (http only).
    #[arg(long, short = 'u')]
    url: Target,
    /// Requests per second.
    #[arg(long, short = 'r')]
    rate: Rate,
    /// Keep-alive connections serving the schedule.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Measured window (e.g. 10s, 500ms, 2m).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unrecorded lead-in at the same rate.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Per-request timeout from the intended send time (also the connect timeout).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Request method.
    #[arg(long, short = 'm', default_value = "GET")]
    method: String,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body (sent with a content-length).
    #[arg(long)]
    body: Option<String>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

/// `10s`, `500ms`, `250us`, `2m`, `1.5s`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        _ => {
            return Err(format!(
                "invalid duration `{s}`: unknown unit `{unit}` (use s, ms, us or m)"
            ));
        }
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("invalid duration `{s}`"))
}

fn build(args: &Args) -> Result<Config, String> {
    let mut request = Request::new(args.url.clone())
        .with_method(&args.method)
        .map_err(|e| e.to_string())?;
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("invalid header `{header}`: expected `Name: value`"))?;
        request = request.with_header(name.trim(), value).map_err(|e| e.to_string())?;
    }
    if let Some(body) = &args.body {
        request = request.with_body(body.as_bytes());
    }
    Config::builder(request, args.rate)
        .connections(args.connections)
        .duration(args.duration)
        .warmup(args.warmup)
        .timeout(args.timeout)
        .build()
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match build(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A spawned task, not the `block_on` future itself: waking the latter from its own thread writes the
    // runtime's eventfd every time, about one system call per request.
    let outcome =
        runtime.block_on(async move { tokio::spawn(async move { meshcap_loadgen::run(&config).await }).await });
    match outcome {
        Ok(Ok(report)) if args.json => println!("{}", report.to_json()),
        Ok(Ok(report)) => print!("{report}"),
        Ok(Err(e)) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("loadgen: {message}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("loadgen: the run task failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("5h"),
            Err("invalid duration `5h`: unknown unit `h` (use s, ms, us or m)".into())
        );
        assert_eq!(parse_duration("s"), Err("invalid duration `s`".into()));
        assert_eq!(parse_duration("1.2.3s"), Err("invalid duration `1.2.3s`".into()));
    }

    #[test]
    fn flags_build_the_config() {
        let args = Args::parse_from([
            "loadgen",
            "--url",
            "http://127.0.0.1:9/x",
            "--rate",
            "100",
            "-c",
            "2",
            "-d",
            "3s",
            "--warmup",
            "0",
            "-H",
            "x-a: 1",
            "-m",
            "POST",
            "--body",
            "hi",
        ]);
        let config = build(&args).unwrap();
        assert_eq!(config.connections(), 2);
        assert_eq!(config.schedule().measured_requests(), 300);
        assert_eq!(
            config.request().encode(),
            b"POST /x HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nhi"
        );
        let bad = Args::parse_from(["loadgen", "--url", "http://h/", "--rate", "1", "-H", "novalue"]);
        assert_eq!(
            build(&bad).unwrap_err(),
            "invalid header `novalue`: expected `Name: value`"
        );
        let bad = Args::parse_from(["loadgen", "--url", "http://h/", "--rate", "1", "-c", "0"]);
        assert_eq!(build(&bad).unwrap_err(), "connections must be at least 1");
        assert!(Args::try_parse_from(["loadgen", "--url", "https://h/", "--rate", "1"]).is_err());
    }
}
