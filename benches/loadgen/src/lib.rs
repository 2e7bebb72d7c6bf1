//! An open-loop, fixed-rate HTTP/1.1 load generator for honest tail latency (meshcap's benchmark tool,
//! not published).
//!
//! Closed-loop tools such as wrk send the next request only when a connection's previous response has
//! arrived, so a slow response also delays (and hides) the requests that should have been sent while it
//! was outstanding: their percentiles mostly restate throughput. This crate sends on a fixed timeline
//! instead and measures each latency from the request's **intended** send time, as wrk2 does.
//!
//! * [`Schedule`] is the timeline: request `k` is due `k / rate` after the start; a warm-up window is
//!   sent but not recorded.
//! * [`run()`] drives the timeline over a pool of keep-alive connections (see [its docs](run()) for the model):
//!   a due request goes to the next free connection, or waits for one with its clock running.
//! * [`Report`] holds the outcome counts and three [`Histogram`]s (latency from intended send, service
//!   time from actual send, send delay), printable as text or JSON.
//! * [`Histogram`] is a compact log-linear histogram (HdrHistogram's bucketing) with bounded relative
//!   error; [`ResponseParser`] frames responses (content-length, chunked, close-delimited, 1xx, HEAD).
//!
//! The `loadgen` binary wraps all this (`loadgen --url http://10.244.0.6:5000/ --rate 20000`); the
//! crate's README explains the model and the companion script `benches/harness/latency.sh`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use meshcap_loadgen::{Config, Request};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let request = Request::new("http://127.0.0.1:5000/".parse()?);
//! let config = Config::builder(request, "5000".parse()?)
//!     .connections(16)
//!     .duration(Duration::from_secs(5))
//!     .build()?;
//! let report = meshcap_loadgen::run(&config).await?;
//! println!("{report}");
//! println!("p99 {} ns", report.latency().value_at_quantile(0.99).unwrap_or(0));
//! # Ok(()) }
//! ```
//!
//! # Platform
//! On Linux the send timeline is kept with a `timerfd` (microsecond wake-ups); elsewhere with tokio's
//! millisecond timer, which the send-delay statistics then show.
//!
//! # Layout
//! `schedule` (pure timeline arithmetic), `histogram`, `request` (URL and request encoding), `response`
//! (sans-IO framing), `timer`, `run` (the driver), `report` (text and JSON).

// One `unsafe` call: registering the timerfd with tokio's reactor (`timer.rs`), which tokio 1.54
// made an unsafe function. Everything else is safe code.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod histogram;
mod report;
mod request;
mod response;
mod run;
mod schedule;
mod timer;

pub use histogram::{DEFAULT_PRECISION_BITS, Histogram, HistogramError, MAX_PRECISION_BITS};
pub use report::{QUANTILES, Report, RequestCounts};
pub use request::{ParseTargetError, Request, RequestError, Target};
pub use response::{MAX_HEAD_BYTES, Response, ResponseError, ResponseParser};
pub use run::{Config, ConfigBuilder, ConfigError, RunError, run};
pub use schedule::{ParseRateError, Rate, Schedule};
