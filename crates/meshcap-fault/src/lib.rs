//! Envoy's HTTP fault filter (`envoy.filters.http.fault`), sans-IO: the same configuration, the same
//! per-request decisions, the same abort responses and the same statistics as Envoy 1.40, for any proxy
//! and any HTTP codec.
//!
//! * [`FaultConfig`] reads the filter's `typed_config` JSON
//!   (`type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`) and rejects what Envoy
//!   rejects (abort status 600 or 199, `fixed_delay: 0s`, `limit_kbps: 0`, an abort/delay/rate limit with
//!   only a percentage, unknown fields, …), naming the field in a [`ConfigError`]. Its constructors
//!   ([`FaultAbort::http`], [`FaultDelay::fixed`], [`HeaderMatcher::new`], [`StringMatcher::safe_regex`], …)
//!   validate alike, and it prints back (`Serialize`, [`FaultConfig::to_typed_config`]) exactly as Envoy's
//!   `/config_dump` prints the message — the one model of `HTTPFault` that `meshcap-envoy` builds on.
//! * [`FaultFilter::decide`] takes the request headers (anything implementing [`RequestHeaders`]), the
//!   route's target cluster and a [`Random`] source, and returns a [`Decision`]: continue, delay (then
//!   [`FaultFilter::after_delay`]), or abort, plus an optional response rate limit, in Envoy's order and
//!   with Envoy's `x-envoy-fault-*` header semantics, `max_active_faults` ([`ActiveFault`] is the RAII slot)
//!   and per-downstream-cluster statistics.
//! * [`Abort::reply`] gives the [`LocalReply`] Envoy sends (status, reason phrase, headers in Envoy's
//!   order, `fault filter abort`, the gRPC trailers-only form) and [`LocalReply::write_http1`] its exact
//!   HTTP/1.1 bytes.
//! * [`RateLimiter`] is Envoy's response rate limiter (KiB/s token bucket, 50 ms ticks) as a pure
//!   calculator over the caller's clock.
//! * [`FaultStats`] holds the counters under Envoy's names (`http.<stat_prefix>.fault.aborts_injected`, …).
//! * [`FastRng`] is a small seedable generator; [`RuntimeSnapshot`] optionally overrides runtime keys.
//!
//! Nothing here does I/O, spawns, sleeps or reads the environment; the proxy owns sockets, timers and
//! clocks. Behaviour was checked against a real Envoy 1.40 (the `tests/` folder replays its recordings).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use meshcap_fault::{Action, FastRng, FaultConfig, FaultFilter, FaultStats, ReplyContext};
//!
//! // The phase-C configuration of the reference recordings: everything driven by request headers.
//! let config = FaultConfig::from_json(r#"{
//!     "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
//!     "abort": {"header_abort": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
//!     "delay": {"header_delay": {}, "percentage": {"numerator": 100, "denominator": "HUNDRED"}},
//!     "max_active_faults": 100
//! }"#)?;
//! let stats = Arc::new(FaultStats::new("localhost_5000"));
//! let filter = FaultFilter::new(Arc::new(config), Arc::clone(&stats));
//! let mut rng = FastRng::seed_from_u64(42);
//!
//! let request = [("host", "10.244.0.6:5000"), ("x-envoy-fault-delay-request", "300"),
//!                ("x-envoy-fault-abort-request", "429")];
//! let decision = filter.decide(&request, Some("localhost:5000"), &mut rng);
//! let Action::Delay(delay) = *decision.action() else { unreachable!() };
//! assert_eq!(delay.as_millis(), 300);
//! assert_eq!(stats.active_faults(), 1);
//!
//! // ... the proxy waits 300 ms on its own timer, then:
//! let decision = filter.after_delay(decision, &request, &mut rng);
//! let Action::Abort(abort) = decision.action() else { unreachable!() };
//! let mut wire = Vec::new();
//! abort.reply(ReplyContext::new()).write_http1(&mut wire, "Thu, 26 Nov 2026 11:47:35 GMT");
//! assert!(wire.starts_with(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 18\r\n"));
//! assert_eq!(decision.response_flags(), "DI,FI");
//!
//! drop(decision); // the response is done: the active-fault slot is released
//! assert_eq!((stats.delays_injected(), stats.aborts_injected(), stats.active_faults()), (1, 1, 0));
//! # Ok::<(), meshcap_fault::ConfigError>(())
//! ```
//!
//! # Features
//!
//! * `httparse`: [`RequestHeaders`] for `[httparse::Header]`.
//! * `http`: [`RequestHeaders`] for `http::HeaderMap`.
//!
//! # Deviations from Envoy
//!
//! * Header regexes use the `regex` crate, whose syntax is close to but not identical with RE2, and RE2's
//!   program-size limit (Envoy rejects regexes over 100 instructions by default, or over
//!   `google_re2.max_program_size`, which is read and printed back) is not enforced.
//! * The `custom` string matcher extension is rejected as unsupported.
//! * Runtime values that cannot be an HTTP status line (outside 100–999) are ignored instead of being
//!   sent; `kbps × 1024` saturates instead of wrapping for absurd rates.
//! * Runtime fractional percentages are read from JSON objects only (Envoy also reads YAML).
//!
//! # Layout
//!
//! * `config`: [`FaultConfig`] and its parts, parsed by `json` (a protobuf-JSON reader) and `matcher`
//!   ([`HeaderMatcher`]), printed by their `Serialize` impls; errors in `error`.
//! * [`protojson`]: the protobuf-JSON scalar forms Envoy prints (durations), for crates printing other
//!   Envoy messages alongside.
//! * `headers`: [`RequestHeaders`], the header names, Envoy's integer parsing of header values.
//! * `filter`: [`FaultFilter`], [`Decision`], [`Action`], [`Abort`], the decision order.
//! * `reply`: [`LocalReply`], Envoy's reason phrases and HTTP→gRPC status mapping, [`http_date`].
//! * `rate_limit`: [`RateLimiter`].
//! * `stats`: [`FaultStats`], [`ActiveFault`].
//! * `random`, `runtime`: [`Random`]/[`FastRng`], [`Runtime`]/[`RuntimeSnapshot`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod filter;
pub mod headers;
mod json;
mod matcher;
mod random;
mod rate_limit;
mod reply;
mod runtime;
mod stats;

/// Protobuf-JSON forms as Envoy prints them, shared with crates that print other Envoy messages next to
/// this crate's config (`meshcap-envoy` prints its listener and cluster timeouts with them).
pub mod protojson {
    pub use crate::json::format_duration;
}

pub use config::{
    AbortKind, DelayKind, Denominator, FaultAbort, FaultConfig, FaultDelay, FaultRateLimit, FractionalPercent,
    RateLimitKind, RuntimeKeys,
};
pub use error::{ConfigError, ConfigErrorKind};
pub use filter::{Abort, Action, Decision, FaultFilter};
pub use headers::RequestHeaders;
pub use matcher::{HeaderMatcher, StringMatcher};
pub use random::{FastRng, Random};
pub use rate_limit::{FILL_INTERVAL, Grant, RateLimiter};
pub use reply::{
    ABORT_BODY, LocalReply, ReplyContext, http_date, http_to_grpc_status, is_grpc_content_type, reason_phrase,
};
pub use runtime::{Runtime, RuntimeSnapshot, RuntimeValue};
pub use stats::{ActiveFault, FaultStats, Stat, StatKind};
