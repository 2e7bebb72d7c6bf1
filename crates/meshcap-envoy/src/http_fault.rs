//! `envoy.extensions.filters.http.fault.v3.HTTPFault`: the fault filter's typed config, as a thin mirror of
//! the protobuf message.
//!
//! This crate only carries the configuration: it reads it (Envoy's JSON, strict, validated as Envoy's
//! own schema constraints do) and writes it exactly as Envoy prints it. What the filter *does* with it is
//! the business of `meshcap-fault`, which takes [`HttpFault::to_typed_config`]'s JSON.
//!
//! ```
//! use meshcap_envoy::http_fault::{HttpFault, FaultDelay, FractionalPercent};
//! use std::time::Duration;
//!
//! let mut fault = HttpFault::default();
//! fault.delay = Some(FaultDelay::fixed(Duration::from_secs(5), FractionalPercent::ten_thousand(50)));
//! assert_eq!(
//!     serde_json::to_string(&fault)?,
//!     r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","delay":{"fixed_delay":"5s","percentage":{"numerator":50,"denominator":"TEN_THOUSAND"}}}"#
//! );
//! assert_eq!(HttpFault::from_json(&serde_json::to_string(&fault)?)?, fault);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ValidationError, ValidationErrorKind};
use crate::json::{Fields, ProtoFields};
use crate::parse;
use crate::time::{format_proto_duration, parse_proto_duration};

/// The type URL of the fault filter's config.
pub const HTTP_FAULT_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

const WHAT: &str = "http fault";

/// The fault filter's configuration (`HTTPFault`). Fields mirror the protobuf message; empty strings,
/// empty lists and `false` mean "unset", as in protobuf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpFault {
    /// `delay`: inject a delay.
    pub delay: Option<FaultDelay>,
    /// `abort`: abort the request with a status.
    pub abort: Option<FaultAbort>,
    /// `upstream_cluster`: only requests routed to this cluster are eligible (empty: all).
    pub upstream_cluster: String,
    /// `headers`: all must match for a request to be eligible.
    pub headers: Vec<HeaderMatcher>,
    /// `downstream_nodes`: eligible `x-envoy-downstream-service-node` values (empty: all).
    pub downstream_nodes: Vec<String>,
    /// `max_active_faults`: cap on concurrently active faults (unset: unlimited).
    pub max_active_faults: Option<u32>,
    /// `response_rate_limit`: throttle the response body.
    pub response_rate_limit: Option<FaultRateLimit>,
    /// `delay_percent_runtime`.
    pub delay_percent_runtime: String,
    /// `abort_percent_runtime`.
    pub abort_percent_runtime: String,
    /// `delay_duration_runtime`.
    pub delay_duration_runtime: String,
    /// `abort_http_status_runtime`.
    pub abort_http_status_runtime: String,
    /// `max_active_faults_runtime`.
    pub max_active_faults_runtime: String,
    /// `response_rate_limit_percent_runtime`.
    pub response_rate_limit_percent_runtime: String,
    /// `abort_grpc_status_runtime`.
    pub abort_grpc_status_runtime: String,
    /// `disable_downstream_cluster_stats`.
    pub disable_downstream_cluster_stats: bool,
    /// `filter_metadata` (a `google.protobuf.Struct`), emitted as dynamic metadata when a fault fires.
    pub filter_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `FaultDelay`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultDelay {
    /// Fixed or header-controlled.
    pub kind: DelayKind,
    /// `percentage` (unset means 0 %).
    pub percentage: Option<FractionalPercent>,
}

/// The `fault_delay_secifier` oneof (sic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DelayKind {
    /// `fixed_delay` (must be more than zero).
    Fixed(Duration),
    /// `header_delay`: the delay comes from `x-envoy-fault-delay-request`.
    Header,
}

/// `FaultAbort`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultAbort {
    /// What to abort with.
    pub kind: AbortKind,
    /// `percentage` (unset means 0 %).
    pub percentage: Option<FractionalPercent>,
}

/// The `error_type` oneof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortKind {
    /// `http_status`, in 200..=599.
    HttpStatus(u32),
    /// `grpc_status`.
    GrpcStatus(u32),
    /// `header_abort`: the status comes from request headers.
    Header,
}

/// `FaultRateLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultRateLimit {
    /// Fixed or header-controlled.
    pub kind: RateLimitKind,
    /// `percentage` (unset means 0 %).
    pub percentage: Option<FractionalPercent>,
}

/// The `limit_type` oneof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitKind {
    /// `fixed_limit.limit_kbps` (KiB/s, at least 1).
    FixedKbps(u64),
    /// `header_limit`: the rate comes from `x-envoy-fault-throughput-response`.
    Header,
}

/// `envoy.type.v3.FractionalPercent`: `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FractionalPercent {
    /// The numerator.
    pub numerator: u32,
    /// The denominator.
    pub denominator: Denominator,
}

/// `FractionalPercent.DenominatorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Denominator {
    /// 100 (the default, omitted in JSON).
    #[default]
    Hundred,
    /// 10,000.
    TenThousand,
    /// 1,000,000.
    Million,
}

impl Denominator {
    /// The denominator's value.
    pub fn value(&self) -> u32 {
        match self {
            Denominator::Hundred => 100,
            Denominator::TenThousand => 10_000,
            Denominator::Million => 1_000_000,
        }
    }

    /// The protobuf enum name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Denominator::Hundred => "HUNDRED",
            Denominator::TenThousand => "TEN_THOUSAND",
            Denominator::Million => "MILLION",
        }
    }
}

impl FractionalPercent {
    /// `numerator`/100.
    pub fn hundred(numerator: u32) -> FractionalPercent {
        FractionalPercent {
            numerator,
            denominator: Denominator::Hundred,
        }
    }

    /// `numerator`/10,000.
    pub fn ten_thousand(numerator: u32) -> FractionalPercent {
        FractionalPercent {
            numerator,
            denominator: Denominator::TenThousand,
        }
    }

    /// `numerator`/1,000,000.
    pub fn million(numerator: u32) -> FractionalPercent {
        FractionalPercent {
            numerator,
            denominator: Denominator::Million,
        }
    }
}

impl fmt::Display for FractionalPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator.as_str())
    }
}

impl FaultDelay {
    /// A fixed delay applied to `percentage` of requests.
    pub fn fixed(delay: Duration, percentage: FractionalPercent) -> FaultDelay {
        FaultDelay {
            kind: DelayKind::Fixed(delay),
            percentage: Some(percentage),
        }
    }

    /// A header-controlled delay, eligible for `percentage` of requests.
    pub fn header(percentage: FractionalPercent) -> FaultDelay {
        FaultDelay {
            kind: DelayKind::Header,
            percentage: Some(percentage),
        }
    }
}

impl FaultAbort {
    /// Abort with an HTTP status for `percentage` of requests.
    pub fn http_status(status: u32, percentage: FractionalPercent) -> FaultAbort {
        FaultAbort {
            kind: AbortKind::HttpStatus(status),
            percentage: Some(percentage),
        }
    }

    /// Abort with a gRPC status for `percentage` of requests.
    pub fn grpc_status(status: u32, percentage: FractionalPercent) -> FaultAbort {
        FaultAbort {
            kind: AbortKind::GrpcStatus(status),
            percentage: Some(percentage),
        }
    }

    /// Abort with the status the request headers name, for `percentage` of requests.
    pub fn header(percentage: FractionalPercent) -> FaultAbort {
        FaultAbort {
            kind: AbortKind::Header,
            percentage: Some(percentage),
        }
    }
}

impl FaultRateLimit {
    /// Throttle responses to `kbps` KiB/s for `percentage` of requests.
    pub fn fixed_kbps(kbps: u64, percentage: FractionalPercent) -> FaultRateLimit {
        FaultRateLimit {
            kind: RateLimitKind::FixedKbps(kbps),
            percentage: Some(percentage),
        }
    }

    /// Throttle to the rate the request headers name, for `percentage` of requests.
    pub fn header(percentage: FractionalPercent) -> FaultRateLimit {
        FaultRateLimit {
            kind: RateLimitKind::Header,
            percentage: Some(percentage),
        }
    }
}

/// `envoy.config.route.v3.HeaderMatcher`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderMatcher {
    /// The header name.
    pub name: String,
    /// How the value is matched.
    pub rule: HeaderMatch,
    /// `invert_match`.
    pub invert_match: bool,
    /// `treat_missing_header_as_empty`.
    pub treat_missing_header_as_empty: bool,
}

/// The `header_match_specifier` oneof.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderMatch {
    /// No specifier: the header must be present.
    Unset,
    /// `exact_match`.
    Exact(String),
    /// `safe_regex_match` (RE2).
    SafeRegex(String),
    /// `range_match`: an integer value in `[start, end)`.
    Range {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// `present_match`.
    Present(bool),
    /// `prefix_match`.
    Prefix(String),
    /// `suffix_match`.
    Suffix(String),
    /// `contains_match`.
    Contains(String),
    /// `string_match`.
    String(StringMatcher),
}

/// `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StringMatcher {
    /// The pattern.
    pub pattern: StringPattern,
    /// `ignore_case`.
    pub ignore_case: bool,
}

/// The `match_pattern` oneof.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StringPattern {
    /// `exact`.
    Exact(String),
    /// `prefix`.
    Prefix(String),
    /// `suffix`.
    Suffix(String),
    /// `safe_regex` (RE2).
    SafeRegex(String),
    /// `contains`.
    Contains(String),
}

impl HeaderMatcher {
    /// A matcher on `name` with `rule`.
    pub fn new(name: impl Into<String>, rule: HeaderMatch) -> HeaderMatcher {
        HeaderMatcher {
            name: name.into(),
            rule,
            invert_match: false,
            treat_missing_header_as_empty: false,
        }
    }

    /// The same matcher, inverted.
    #[must_use]
    pub fn inverted(mut self) -> HeaderMatcher {
        self.invert_match = true;
        self
    }
}

impl StringMatcher {
    /// A case-sensitive matcher.
    pub fn new(pattern: StringPattern) -> StringMatcher {
        StringMatcher {
            pattern,
            ignore_case: false,
        }
    }
}

impl HttpFault {
    /// Read an `HTTPFault` from Envoy JSON (snake_case or lowerCamelCase field names; `@type`, when present,
    /// must be [`HTTP_FAULT_TYPE_URL`]), validated as Envoy validates it.
    ///
    /// # Errors
    /// [`Error::Parse`] for malformed JSON or an unknown field, [`Error::Invalid`] for a value Envoy rejects
    /// (an abort status outside 200..=599, a zero delay, a zero rate limit, a oneof set twice or not at all).
    pub fn from_json(text: &str) -> Result<HttpFault, Error> {
        let wire: WireHttpFault = parse::from_json(WHAT, text)?;
        Ok(wire.into_model("http_fault")?)
    }

    /// Read an `HTTPFault` from YAML (same rules as [`HttpFault::from_json`]).
    ///
    /// # Errors
    /// As [`HttpFault::from_json`].
    pub fn from_yaml(text: &str) -> Result<HttpFault, Error> {
        let wire: WireHttpFault = parse::from_yaml(WHAT, text)?;
        Ok(wire.into_model("http_fault")?)
    }

    /// Check the constraints Envoy's schema puts on the message (what `envoy --mode validate` rejects).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field, with `path` as the prefix.
    pub fn validate(&self, path: &str) -> Result<(), Error> {
        Ok(self.check(path)?)
    }

    fn check(&self, path: &str) -> Result<(), ValidationError> {
        use ValidationErrorKind as K;
        if let Some(delay) = &self.delay
            && let DelayKind::Fixed(d) = delay.kind
        {
            if d.is_zero() {
                return Err(ValidationError::new(
                    format!("{path}.delay.fixed_delay"),
                    K::NonPositiveDuration(format_proto_duration(d)),
                ));
            }
            if d.as_secs() > crate::time::MAX_PROTO_DURATION_SECS {
                return Err(ValidationError::new(
                    format!("{path}.delay.fixed_delay"),
                    K::OutOfRange {
                        value: format_proto_duration(d),
                        range: "at most 315576000000s",
                    },
                ));
            }
        }
        if let Some(abort) = &self.abort
            && let AbortKind::HttpStatus(status) = abort.kind
            && !(200..600).contains(&status)
        {
            return Err(ValidationError::new(
                format!("{path}.abort.http_status"),
                K::InvalidHttpStatus(i64::from(status)),
            ));
        }
        if let Some(rl) = &self.response_rate_limit
            && let RateLimitKind::FixedKbps(0) = rl.kind
        {
            return Err(ValidationError::new(
                format!("{path}.response_rate_limit.fixed_limit.limit_kbps"),
                K::OutOfRange {
                    value: "0".to_string(),
                    range: "at least 1",
                },
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            h.check(&format!("{path}.headers[{i}]"))?;
        }
        Ok(())
    }

    /// The typed config as JSON, with `@type` (what `meshcap-fault` and Envoy read).
    pub fn to_typed_config(&self) -> serde_json::Value {
        // Serializing this plain data into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl HeaderMatcher {
    fn check(&self, path: &str) -> Result<(), ValidationError> {
        use ValidationErrorKind as K;
        if self.name.is_empty() {
            return Err(ValidationError::new(format!("{path}.name"), K::Empty));
        }
        if let Some(character) = self.name.chars().find(|c| matches!(c, '\0' | '\r' | '\n')) {
            return Err(ValidationError::new(
                format!("{path}.name"),
                K::InvalidCharacter {
                    value: self.name.clone(),
                    character,
                },
            ));
        }
        let empty = |field: &str| Err(ValidationError::new(format!("{path}.{field}"), K::Empty));
        match &self.rule {
            HeaderMatch::SafeRegex(r) if r.is_empty() => empty("safe_regex_match.regex"),
            HeaderMatch::String(m) => match &m.pattern {
                StringPattern::SafeRegex(r) if r.is_empty() => empty("string_match.safe_regex.regex"),
                StringPattern::Prefix(s) if s.is_empty() => empty("string_match.prefix"),
                StringPattern::Suffix(s) if s.is_empty() => empty("string_match.suffix"),
                StringPattern::Contains(s) if s.is_empty() => empty("string_match.contains"),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

// --- writing -----------------------------------------------------------------------------------------------

impl Serialize for HttpFault {
    /// Envoy's JSON for the typed config: `@type` first, then fields in protobuf order, defaults omitted.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::json::Any(HTTP_FAULT_TYPE_URL, self).serialize(serializer)
    }
}

impl ProtoFields for HttpFault {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let Some(d) = &self.delay {
            map.serialize_entry("delay", &Fields(d))?;
        }
        if let Some(a) = &self.abort {
            map.serialize_entry("abort", &Fields(a))?;
        }
        if !self.upstream_cluster.is_empty() {
            map.serialize_entry("upstream_cluster", &self.upstream_cluster)?;
        }
        if !self.headers.is_empty() {
            let headers: Vec<_> = self.headers.iter().map(Fields).collect();
            map.serialize_entry("headers", &headers)?;
        }
        if !self.downstream_nodes.is_empty() {
            map.serialize_entry("downstream_nodes", &self.downstream_nodes)?;
        }
        if let Some(n) = self.max_active_faults {
            map.serialize_entry("max_active_faults", &n)?;
        }
        if let Some(rl) = &self.response_rate_limit {
            map.serialize_entry("response_rate_limit", &Fields(rl))?;
        }
        for (key, value) in [
            ("delay_percent_runtime", &self.delay_percent_runtime),
            ("abort_percent_runtime", &self.abort_percent_runtime),
            ("delay_duration_runtime", &self.delay_duration_runtime),
            ("abort_http_status_runtime", &self.abort_http_status_runtime),
            ("max_active_faults_runtime", &self.max_active_faults_runtime),
            (
                "response_rate_limit_percent_runtime",
                &self.response_rate_limit_percent_runtime,
            ),
            ("abort_grpc_status_runtime", &self.abort_grpc_status_runtime),
        ] {
            if !value.is_empty() {
                map.serialize_entry(key, value)?;
            }
        }
        if self.disable_downstream_cluster_stats {
            map.serialize_entry("disable_downstream_cluster_stats", &true)?;
        }
        if let Some(m) = &self.filter_metadata {
            map.serialize_entry("filter_metadata", m)?;
        }
        Ok(())
    }
}

impl ProtoFields for FaultDelay {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let DelayKind::Fixed(d) = self.kind {
            map.serialize_entry("fixed_delay", &format_proto_duration(d))?;
        }
        if let Some(p) = &self.percentage {
            map.serialize_entry("percentage", &Fields(p))?;
        }
        if self.kind == DelayKind::Header {
            map.serialize_entry("header_delay", &Empty)?;
        }
        Ok(())
    }
}

impl ProtoFields for FaultAbort {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let AbortKind::HttpStatus(s) = self.kind {
            map.serialize_entry("http_status", &s)?;
        }
        if let Some(p) = &self.percentage {
            map.serialize_entry("percentage", &Fields(p))?;
        }
        match self.kind {
            AbortKind::Header => map.serialize_entry("header_abort", &Empty)?,
            AbortKind::GrpcStatus(s) => map.serialize_entry("grpc_status", &s)?,
            AbortKind::HttpStatus(_) => {}
        }
        Ok(())
    }
}

impl ProtoFields for FaultRateLimit {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let RateLimitKind::FixedKbps(kbps) = self.kind {
            // uint64 prints as a string in protobuf JSON.
            map.serialize_entry("fixed_limit", &Fields(&FixedLimit(kbps)))?;
        }
        if let Some(p) = &self.percentage {
            map.serialize_entry("percentage", &Fields(p))?;
        }
        if self.kind == RateLimitKind::Header {
            map.serialize_entry("header_limit", &Empty)?;
        }
        Ok(())
    }
}

struct FixedLimit(u64);

impl ProtoFields for FixedLimit {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if self.0 != 0 {
            map.serialize_entry("limit_kbps", &self.0.to_string())?;
        }
        Ok(())
    }
}

impl ProtoFields for FractionalPercent {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if self.numerator != 0 {
            map.serialize_entry("numerator", &self.numerator)?;
        }
        if self.denominator != Denominator::Hundred {
            map.serialize_entry("denominator", self.denominator.as_str())?;
        }
        Ok(())
    }
}

impl ProtoFields for HeaderMatcher {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("name", &self.name)?;
        // Fields in protobuf number order: exact 4, range 6, present 7, invert 8, prefix 9, suffix 10,
        // safe_regex 11, contains 12, string 13, treat_missing 14.
        match &self.rule {
            HeaderMatch::Exact(v) => map.serialize_entry("exact_match", v)?,
            HeaderMatch::Range { start, end } => map.serialize_entry("range_match", &Fields(&Range(*start, *end)))?,
            HeaderMatch::Present(p) => map.serialize_entry("present_match", p)?,
            _ => {}
        }
        if self.invert_match {
            map.serialize_entry("invert_match", &true)?;
        }
        match &self.rule {
            HeaderMatch::Prefix(v) => map.serialize_entry("prefix_match", v)?,
            HeaderMatch::Suffix(v) => map.serialize_entry("suffix_match", v)?,
            HeaderMatch::SafeRegex(r) => map.serialize_entry("safe_regex_match", &Fields(&Regex(r)))?,
            HeaderMatch::Contains(v) => map.serialize_entry("contains_match", v)?,
            HeaderMatch::String(m) => map.serialize_entry("string_match", &Fields(m))?,
            _ => {}
        }
        if self.treat_missing_header_as_empty {
            map.serialize_entry("treat_missing_header_as_empty", &true)?;
        }
        Ok(())
    }
}

struct Range(i64, i64);

impl ProtoFields for Range {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        // int64 prints as a string in protobuf JSON; zero is omitted.
        if self.0 != 0 {
            map.serialize_entry("start", &self.0.to_string())?;
        }
        if self.1 != 0 {
            map.serialize_entry("end", &self.1.to_string())?;
        }
        Ok(())
    }
}

struct Regex<'a>(&'a str);

impl ProtoFields for Regex<'_> {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("regex", self.0)
    }
}

impl ProtoFields for StringMatcher {
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        // exact 1, prefix 2, suffix 3, safe_regex 5, ignore_case 6, contains 7.
        match &self.pattern {
            StringPattern::Exact(v) => map.serialize_entry("exact", v)?,
            StringPattern::Prefix(v) => map.serialize_entry("prefix", v)?,
            StringPattern::Suffix(v) => map.serialize_entry("suffix", v)?,
            StringPattern::SafeRegex(r) => map.serialize_entry("safe_regex", &Fields(&Regex(r)))?,
            StringPattern::Contains(_) => {}
        }
        if self.ignore_case {
            map.serialize_entry("ignore_case", &true)?;
        }
        if let StringPattern::Contains(v) = &self.pattern {
            map.serialize_entry("contains", v)?;
        }
        Ok(())
    }
}

/// An empty message (`{}`).
struct Empty;

impl Serialize for Empty {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

// --- reading -----------------------------------------------------------------------------------------------

/// A protobuf integer in JSON: a number or a decimal string.
#[derive(Clone, Copy)]
struct ProtoInt(i128);

impl<'de> Deserialize<'de> for ProtoInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ProtoInt, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ProtoInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a decimal string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ProtoInt, E> {
                Ok(ProtoInt(i128::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ProtoInt, E> {
                Ok(ProtoInt(i128::from(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProtoInt, E> {
                let digits = v.strip_prefix('-').unwrap_or(v);
                if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom(format_args!("{v:?} is not an integer")));
                }
                v.parse().map(ProtoInt).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl ProtoInt {
    fn to<T: TryFrom<i128>>(self, path: &str, range: &'static str) -> Result<T, ValidationError> {
        T::try_from(self.0).map_err(|_| {
            ValidationError::new(
                path,
                ValidationErrorKind::OutOfRange {
                    value: self.0.to_string(),
                    range,
                },
            )
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEmpty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHttpFault {
    #[serde(rename = "@type")]
    type_url: Option<String>,
    delay: Option<WireDelay>,
    abort: Option<WireAbort>,
    #[serde(alias = "upstreamCluster")]
    upstream_cluster: Option<String>,
    headers: Option<Vec<WireHeaderMatcher>>,
    #[serde(alias = "downstreamNodes")]
    downstream_nodes: Option<Vec<String>>,
    #[serde(alias = "maxActiveFaults")]
    max_active_faults: Option<ProtoInt>,
    #[serde(alias = "responseRateLimit")]
    response_rate_limit: Option<WireRateLimit>,
    #[serde(alias = "delayPercentRuntime")]
    delay_percent_runtime: Option<String>,
    #[serde(alias = "abortPercentRuntime")]
    abort_percent_runtime: Option<String>,
    #[serde(alias = "delayDurationRuntime")]
    delay_duration_runtime: Option<String>,
    #[serde(alias = "abortHttpStatusRuntime")]
    abort_http_status_runtime: Option<String>,
    #[serde(alias = "maxActiveFaultsRuntime")]
    max_active_faults_runtime: Option<String>,
    #[serde(alias = "responseRateLimitPercentRuntime")]
    response_rate_limit_percent_runtime: Option<String>,
    #[serde(alias = "abortGrpcStatusRuntime")]
    abort_grpc_status_runtime: Option<String>,
    #[serde(alias = "disableDownstreamClusterStats")]
    disable_downstream_cluster_stats: Option<bool>,
    #[serde(alias = "filterMetadata")]
    filter_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireDelay {
    #[serde(alias = "fixedDelay")]
    fixed_delay: Option<String>,
    #[serde(alias = "headerDelay")]
    header_delay: Option<WireEmpty>,
    percentage: Option<WirePercent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAbort {
    #[serde(alias = "httpStatus")]
    http_status: Option<ProtoInt>,
    #[serde(alias = "grpcStatus")]
    grpc_status: Option<ProtoInt>,
    #[serde(alias = "headerAbort")]
    header_abort: Option<WireEmpty>,
    percentage: Option<WirePercent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRateLimit {
    #[serde(alias = "fixedLimit")]
    fixed_limit: Option<WireFixedLimit>,
    #[serde(alias = "headerLimit")]
    header_limit: Option<WireEmpty>,
    percentage: Option<WirePercent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFixedLimit {
    #[serde(alias = "limitKbps")]
    limit_kbps: Option<ProtoInt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePercent {
    numerator: Option<ProtoInt>,
    denominator: Option<WireDenominator>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireDenominator {
    Name(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeaderMatcher {
    name: Option<String>,
    #[serde(alias = "exactMatch")]
    exact_match: Option<String>,
    #[serde(alias = "safeRegexMatch")]
    safe_regex_match: Option<WireRegex>,
    #[serde(alias = "rangeMatch")]
    range_match: Option<WireRange>,
    #[serde(alias = "presentMatch")]
    present_match: Option<bool>,
    #[serde(alias = "prefixMatch")]
    prefix_match: Option<String>,
    #[serde(alias = "suffixMatch")]
    suffix_match: Option<String>,
    #[serde(alias = "containsMatch")]
    contains_match: Option<String>,
    #[serde(alias = "stringMatch")]
    string_match: Option<WireStringMatcher>,
    #[serde(alias = "invertMatch")]
    invert_match: Option<bool>,
    #[serde(alias = "treatMissingHeaderAsEmpty")]
    treat_missing_header_as_empty: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRegex {
    regex: Option<String>,
    #[serde(alias = "googleRe2")]
    google_re2: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRange {
    start: Option<ProtoInt>,
    end: Option<ProtoInt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireStringMatcher {
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    #[serde(alias = "safeRegex")]
    safe_regex: Option<WireRegex>,
    contains: Option<String>,
    #[serde(alias = "ignoreCase")]
    ignore_case: Option<bool>,
}

/// Exactly one of the oneof members, or `None` when none is set.
fn one_of<T>(path: &str, names: &'static str, members: Vec<Option<T>>) -> Result<Option<T>, ValidationError> {
    let mut set = members.into_iter().flatten();
    let first = set.next();
    if set.next().is_some() {
        return Err(ValidationError::new(
            path,
            ValidationErrorKind::MutuallyExclusive(names),
        ));
    }
    Ok(first)
}

fn required<T>(path: &str, names: &'static str, value: Option<T>) -> Result<T, ValidationError> {
    value.ok_or_else(|| ValidationError::new(path, ValidationErrorKind::OneOfRequired(names)))
}

impl WireHttpFault {
    fn into_model(self, path: &str) -> Result<HttpFault, ValidationError> {
        if let Some(t) = &self.type_url
            && t != HTTP_FAULT_TYPE_URL
        {
            return Err(ValidationError::new(
                format!("{path}.@type"),
                ValidationErrorKind::WrongType {
                    expected: HTTP_FAULT_TYPE_URL,
                    found: t.clone(),
                },
            ));
        }
        let delay = match self.delay {
            None => None,
            Some(d) => {
                let p = format!("{path}.delay");
                let names = "fixed_delay, header_delay";
                let fixed = d
                    .fixed_delay
                    .map(|s| {
                        parse_proto_duration(&s).map(DelayKind::Fixed).map_err(|reason| {
                            ValidationError::new(
                                format!("{p}.fixed_delay"),
                                ValidationErrorKind::InvalidDuration {
                                    value: s.clone(),
                                    reason,
                                },
                            )
                        })
                    })
                    .transpose()?;
                let header = d.header_delay.map(|_| DelayKind::Header);
                Some(FaultDelay {
                    kind: required(&p, names, one_of(&p, names, vec![fixed, header])?)?,
                    percentage: d
                        .percentage
                        .map(|w| w.into_model(&format!("{p}.percentage")))
                        .transpose()?,
                })
            }
        };
        let abort = match self.abort {
            None => None,
            Some(a) => {
                let p = format!("{path}.abort");
                let names = "http_status, grpc_status, header_abort";
                let http = a
                    .http_status
                    .map(|n| {
                        n.to::<u32>(&format!("{p}.http_status"), "0..=4294967295")
                            .map(AbortKind::HttpStatus)
                    })
                    .transpose()?;
                let grpc = a
                    .grpc_status
                    .map(|n| {
                        n.to::<u32>(&format!("{p}.grpc_status"), "0..=4294967295")
                            .map(AbortKind::GrpcStatus)
                    })
                    .transpose()?;
                let header = a.header_abort.map(|_| AbortKind::Header);
                Some(FaultAbort {
                    kind: required(&p, names, one_of(&p, names, vec![http, grpc, header])?)?,
                    percentage: a
                        .percentage
                        .map(|w| w.into_model(&format!("{p}.percentage")))
                        .transpose()?,
                })
            }
        };
        let response_rate_limit = match self.response_rate_limit {
            None => None,
            Some(r) => {
                let p = format!("{path}.response_rate_limit");
                let names = "fixed_limit, header_limit";
                let fixed = r
                    .fixed_limit
                    .map(|f| match f.limit_kbps {
                        None => Ok(RateLimitKind::FixedKbps(0)),
                        Some(n) => n
                            .to::<u64>(&format!("{p}.fixed_limit.limit_kbps"), "0..=18446744073709551615")
                            .map(RateLimitKind::FixedKbps),
                    })
                    .transpose()?;
                let header = r.header_limit.map(|_| RateLimitKind::Header);
                Some(FaultRateLimit {
                    kind: required(&p, names, one_of(&p, names, vec![fixed, header])?)?,
                    percentage: r
                        .percentage
                        .map(|w| w.into_model(&format!("{p}.percentage")))
                        .transpose()?,
                })
            }
        };
        let headers = self
            .headers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, h)| h.into_model(&format!("{path}.headers[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let fault = HttpFault {
            delay,
            abort,
            upstream_cluster: self.upstream_cluster.unwrap_or_default(),
            headers,
            downstream_nodes: self.downstream_nodes.unwrap_or_default(),
            max_active_faults: self
                .max_active_faults
                .map(|n| n.to::<u32>(&format!("{path}.max_active_faults"), "0..=4294967295"))
                .transpose()?,
            response_rate_limit,
            delay_percent_runtime: self.delay_percent_runtime.unwrap_or_default(),
            abort_percent_runtime: self.abort_percent_runtime.unwrap_or_default(),
            delay_duration_runtime: self.delay_duration_runtime.unwrap_or_default(),
            abort_http_status_runtime: self.abort_http_status_runtime.unwrap_or_default(),
            max_active_faults_runtime: self.max_active_faults_runtime.unwrap_or_default(),
            response_rate_limit_percent_runtime: self.response_rate_limit_percent_runtime.unwrap_or_default(),
            abort_grpc_status_runtime: self.abort_grpc_status_runtime.unwrap_or_default(),
            disable_downstream_cluster_stats: self.disable_downstream_cluster_stats.unwrap_or(false),
            filter_metadata: self.filter_metadata,
        };
        fault.check(path)?;
        Ok(fault)
    }
}

impl WirePercent {
    fn into_model(self, path: &str) -> Result<FractionalPercent, ValidationError> {
        let numerator = match self.numerator {
            None => 0,
            Some(n) => n.to::<u32>(&format!("{path}.numerator"), "0..=4294967295")?,
        };
        let denominator = match self.denominator {
            None => Denominator::Hundred,
            Some(WireDenominator::Name(n)) if n == "HUNDRED" => Denominator::Hundred,
            Some(WireDenominator::Name(n)) if n == "TEN_THOUSAND" => Denominator::TenThousand,
            Some(WireDenominator::Name(n)) if n == "MILLION" => Denominator::Million,
            Some(WireDenominator::Number(0)) => Denominator::Hundred,
            Some(WireDenominator::Number(1)) => Denominator::TenThousand,
            Some(WireDenominator::Number(2)) => Denominator::Million,
            Some(other) => {
                return Err(ValidationError::new(
                    format!("{path}.denominator"),
                    ValidationErrorKind::UnknownValue {
                        value: match other {
                            WireDenominator::Name(n) => n,
                            WireDenominator::Number(n) => n.to_string(),
                        },
                        expected: "HUNDRED, TEN_THOUSAND, MILLION",
                    },
                ));
            }
        };
        Ok(FractionalPercent { numerator, denominator })
    }
}

impl WireRegex {
    fn into_regex(self) -> String {
        // `google_re2` is deprecated and carries nothing Envoy still uses.
        let _ = self.google_re2;
        self.regex.unwrap_or_default()
    }
}

impl WireHeaderMatcher {
    fn into_model(self, path: &str) -> Result<HeaderMatcher, ValidationError> {
        let names = "exact_match, safe_regex_match, range_match, present_match, prefix_match, suffix_match, contains_match, string_match";
        let range = self
            .range_match
            .map(|r| -> Result<HeaderMatch, ValidationError> {
                Ok(HeaderMatch::Range {
                    start: r
                        .start
                        .map(|n| n.to::<i64>(&format!("{path}.range_match.start"), "64-bit signed"))
                        .transpose()?
                        .unwrap_or(0),
                    end: r
                        .end
                        .map(|n| n.to::<i64>(&format!("{path}.range_match.end"), "64-bit signed"))
                        .transpose()?
                        .unwrap_or(0),
                })
            })
            .transpose()?;
        let string = self
            .string_match
            .map(|m| -> Result<HeaderMatch, ValidationError> {
                let p = format!("{path}.string_match");
                let pattern_names = "exact, prefix, suffix, safe_regex, contains";
                let pattern = one_of(
                    &p,
                    pattern_names,
                    vec![
                        m.exact.map(StringPattern::Exact),
                        m.prefix.map(StringPattern::Prefix),
                        m.suffix.map(StringPattern::Suffix),
                        m.safe_regex.map(|r| StringPattern::SafeRegex(r.into_regex())),
                        m.contains.map(StringPattern::Contains),
                    ],
                )?;
                Ok(HeaderMatch::String(StringMatcher {
                    pattern: required(&p, pattern_names, pattern)?,
                    ignore_case: m.ignore_case.unwrap_or(false),
                }))
            })
            .transpose()?;
        let rule = one_of(
            path,
            names,
            vec![
                self.exact_match.map(HeaderMatch::Exact),
                self.safe_regex_match.map(|r| HeaderMatch::SafeRegex(r.into_regex())),
                range,
                self.present_match.map(HeaderMatch::Present),
                self.prefix_match.map(HeaderMatch::Prefix),
                self.suffix_match.map(HeaderMatch::Suffix),
                self.contains_match.map(HeaderMatch::Contains),
                string,
            ],
        )?
        .unwrap_or(HeaderMatch::Unset);
        Ok(HeaderMatcher {
            name: self.name.unwrap_or_default(),
            rule,
            invert_match: self.invert_match.unwrap_or(false),
            treat_missing_header_as_empty: self.treat_missing_header_as_empty.unwrap_or(false),
        })
    }
}

impl<'de> Deserialize<'de> for HttpFault {
    /// Envoy's JSON (as [`HttpFault::from_json`] reads it), validated.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HttpFault, D::Error> {
        WireHttpFault::deserialize(deserializer)?
            .into_model("http_fault")
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        HttpFault::from_json(json).expect_err(json).to_string()
    }

    #[test]
    fn seed_fault_round_trips_byte_for_byte() {
        let json = r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","delay":{"fixed_delay":"5s","percentage":{"numerator":50,"denominator":"TEN_THOUSAND"}}}"#;
        let fault = HttpFault::from_json(json).expect("seed fault");
        assert_eq!(serde_json::to_string(&fault).expect("json"), json);
    }

    #[test]
    fn every_field_prints_in_protobuf_order() {
        let json = r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","delay":{"percentage":{"numerator":100},"header_delay":{}},"abort":{"percentage":{"numerator":100},"header_abort":{}},"upstream_cluster":"localhost:5000","headers":[{"name":"x-a","exact_match":"1"},{"name":"x-b","range_match":{"start":"-5","end":"10"}},{"name":"x-c","present_match":false,"invert_match":true},{"name":"x-kuma-tags","invert_match":true,"string_match":{"safe_regex":{"regex":".*&kuma.io/service=[^&]*web[,&].*"}}},{"name":"x-d","string_match":{"ignore_case":true,"contains":"z"}},{"name":"x-e","safe_regex_match":{"regex":"a+"},"treat_missing_header_as_empty":true}],"downstream_nodes":["n1"],"max_active_faults":100,"response_rate_limit":{"percentage":{"numerator":100},"header_limit":{}},"delay_percent_runtime":"a","abort_percent_runtime":"b","delay_duration_runtime":"c","abort_http_status_runtime":"d","max_active_faults_runtime":"e","response_rate_limit_percent_runtime":"f","abort_grpc_status_runtime":"g","disable_downstream_cluster_stats":true,"filter_metadata":{"injected_by":"e2e"}}"#;
        let fault = HttpFault::from_json(json).expect("full fault");
        assert_eq!(serde_json::to_string(&fault).expect("json"), json);
    }

    #[test]
    fn camel_case_numbers_as_strings_and_enum_numbers_are_accepted() {
        let fault = HttpFault::from_json(
            r#"{"abort":{"httpStatus":"503","percentage":{"numerator":"50","denominator":1}},"responseRateLimit":{"fixedLimit":{"limitKbps":111000}}}"#,
        )
        .expect("camel case");
        assert_eq!(
            fault.abort,
            Some(FaultAbort::http_status(503, FractionalPercent::ten_thousand(50)))
        );
        assert_eq!(
            fault.response_rate_limit,
            Some(FaultRateLimit {
                kind: RateLimitKind::FixedKbps(111_000),
                percentage: None
            })
        );
        assert_eq!(
            serde_json::to_value(&fault).expect("json")["response_rate_limit"]["fixed_limit"]["limit_kbps"],
            "111000"
        );
    }

    #[test]
    fn envoy_rejections_are_rejected() {
        assert_eq!(
            err(r#"{"abort":{"http_status":600}}"#),
            "http_fault.abort.http_status: 600 is not an http status envoy can abort with (200..=599)"
        );
        assert_eq!(
            err(r#"{"abort":{"http_status":199}}"#),
            "http_fault.abort.http_status: 199 is not an http status envoy can abort with (200..=599)"
        );
        assert_eq!(
            err(r#"{"abort":{"percentage":{"numerator":1}}}"#),
            "http_fault.abort: one of http_status, grpc_status, header_abort is required"
        );
        assert_eq!(
            err(r#"{"abort":{"http_status":503,"header_abort":{}}}"#),
            "http_fault.abort: http_status, grpc_status, header_abort are mutually exclusive"
        );
        assert_eq!(
            err(r#"{"delay":{"fixed_delay":"0s"}}"#),
            "http_fault.delay.fixed_delay: \"0s\" must be greater than 0s"
        );
        assert_eq!(
            err(r#"{"delay":{"percentage":{}}}"#),
            "http_fault.delay: one of fixed_delay, header_delay is required"
        );
        assert_eq!(
            err(r#"{"delay":{"fixed_delay":"5"}}"#),
            "http_fault.delay.fixed_delay: \"5\" is not a duration: missing the `s` suffix"
        );
        assert_eq!(
            err(r#"{"response_rate_limit":{"fixed_limit":{"limit_kbps":0}}}"#),
            "http_fault.response_rate_limit.fixed_limit.limit_kbps: 0 is out of range (at least 1)"
        );
        assert_eq!(
            err(r#"{"response_rate_limit":{"percentage":{}}}"#),
            "http_fault.response_rate_limit: one of fixed_limit, header_limit is required"
        );
        assert_eq!(
            err(r#"{"delay":{"type":"FIXED"}}"#)
                .split(" at line")
                .next()
                .expect("message"),
            "invalid http fault json: unknown field `type`, expected one of `fixedDelay`, `fixed_delay`, `headerDelay`, `header_delay`, `percentage`"
        );
        assert_eq!(
            err(r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}"#),
            "http_fault.@type: \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\" must be \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\""
        );
        assert_eq!(
            err(r#"{"abort":{"grpc_status":-1}}"#),
            "http_fault.abort.grpc_status: -1 is out of range (0..=4294967295)"
        );
        assert_eq!(
            err(r#"{"abort":{"http_status":503,"percentage":{"denominator":"THOUSAND"}}}"#),
            "http_fault.abort.percentage.denominator: \"THOUSAND\" is not one of HUNDRED, TEN_THOUSAND, MILLION"
        );
        assert_eq!(
            err(r#"{"headers":[{"exact_match":"x"}]}"#),
            "http_fault.headers[0].name: must not be empty"
        );
        assert_eq!(
            err(r#"{"headers":[{"name":"x","exact_match":"a","prefix_match":"b"}]}"#),
            "http_fault.headers[0]: exact_match, safe_regex_match, range_match, present_match, prefix_match, suffix_match, contains_match, string_match are mutually exclusive"
        );
        assert_eq!(
            err(r#"{"headers":[{"name":"x","string_match":{"safe_regex":{"regex":""}}}]}"#),
            "http_fault.headers[0].string_match.safe_regex.regex: must not be empty"
        );
        assert_eq!(
            err(r#"{"headers":[{"name":"x","string_match":{}}]}"#),
            "http_fault.headers[0].string_match: one of exact, prefix, suffix, safe_regex, contains is required"
        );
    }

    #[test]
    fn envoy_acceptances_are_accepted() {
        // Observed with Envoy 1.40: all of these pass `--mode validate`.
        for json in [
            "{}",
            r#"{"abort":{"grpc_status":99,"percentage":{"numerator":100}}}"#,
            r#"{"abort":{"http_status":503,"percentage":{"numerator":200}}}"#,
            r#"{"max_active_faults":0}"#,
            r#"{"filter_metadata":{"injected_by":"e2e"}}"#,
        ] {
            HttpFault::from_json(json).expect(json);
        }
    }
}
