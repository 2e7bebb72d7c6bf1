//! The filter configuration: `envoy.extensions.filters.http.fault.v3.HTTPFault` read from its JSON form
//! with Envoy's validation.

use std::collections::HashSet;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::json::{
    self, Json, boolean, child, duration, field_of, format_duration, index, object, repeated, string, uint32,
    uint32_wrapper, uint64, unknown_field,
};
use crate::matcher::HeaderMatcher;
use crate::random::Random;

/// The denominator of a [`FractionalPercent`] (`envoy.type.v3.FractionalPercent.DenominatorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Denominator {
    /// 100 (the proto default).
    #[default]
    Hundred,
    /// 10,000.
    TenThousand,
    /// 1,000,000.
    Million,
}

impl Denominator {
    /// The denominator as a number.
    pub const fn value(self) -> u64 {
        match self {
            Denominator::Hundred => 100,
            Denominator::TenThousand => 10_000,
            Denominator::Million => 1_000_000,
        }
    }

    /// The proto enum name (`HUNDRED`, `TEN_THOUSAND`, `MILLION`).
    pub const fn name(self) -> &'static str {
        match self {
            Denominator::Hundred => "HUNDRED",
            Denominator::TenThousand => "TEN_THOUSAND",
            Denominator::Million => "MILLION",
        }
    }

    fn from_number(n: i64) -> Option<Denominator> {
        match n {
            0 => Some(Denominator::Hundred),
            1 => Some(Denominator::TenThousand),
            2 => Some(Denominator::Million),
            _ => None,
        }
    }

    fn parse(value: &Json, path: &str) -> Result<Denominator, ConfigError> {
        let unknown = |v: String| ConfigError::new(path, ConfigErrorKind::UnknownEnumValue(v));
        match value {
            // Envoy's JSON parser reads enum numbers (also inside strings) and names case-insensitively.
            Json::String(s) => match s.parse::<i64>() {
                Ok(n) => Denominator::from_number(n).ok_or_else(|| unknown(s.clone())),
                Err(_) => [Denominator::Hundred, Denominator::TenThousand, Denominator::Million]
                    .into_iter()
                    .find(|d| d.name().eq_ignore_ascii_case(s))
                    .ok_or_else(|| unknown(s.clone())),
            },
            Json::Number(_) => {
                let n = json::int64(value, path)?;
                Denominator::from_number(n).ok_or_else(|| unknown(n.to_string()))
            }
            other => Err(ConfigError::new(
                path,
                ConfigErrorKind::WrongType {
                    expected: "enum DenominatorType",
                    found: other.describe(),
                },
            )),
        }
    }
}

impl fmt::Display for Denominator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fraction of requests (`envoy.type.v3.FractionalPercent`): `numerator / denominator`.
///
/// Sampling follows Envoy: draw a fresh random `u64` and enable when `random % denominator < numerator`,
/// so a numerator at or above the denominator always fires and 0 never does.
///
/// ```
/// use meshcap_fault::{Denominator, FastRng, FractionalPercent};
///
/// let half_percent = FractionalPercent::new(50, Denominator::TenThousand);
/// assert_eq!(half_percent.to_string(), "50/TEN_THOUSAND");
/// let mut rng = FastRng::seed_from_u64(1);
/// let fired = (0..100_000).filter(|_| half_percent.sample(&mut rng)).count();
/// assert!((400..600).contains(&fired));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FractionalPercent {
    numerator: u32,
    denominator: Denominator,
}

impl FractionalPercent {
    /// `numerator / denominator`.
    pub const fn new(numerator: u32, denominator: Denominator) -> FractionalPercent {
        FractionalPercent { numerator, denominator }
    }

    /// The numerator.
    pub const fn numerator(self) -> u32 {
        self.numerator
    }

    /// The denominator.
    pub const fn denominator(self) -> Denominator {
        self.denominator
    }

    /// Whether this percentage can never fire (numerator 0).
    pub const fn is_never(self) -> bool {
        self.numerator == 0
    }

    /// Whether `random` (one uniformly drawn value) falls inside the fraction: `random % denominator <
    /// numerator`.
    pub const fn contains(self, random: u64) -> bool {
        random % self.denominator.value() < self.numerator as u64
    }

    /// Draw one value from `rng` and test it with [`FractionalPercent::contains`].
    pub fn sample<R: Random + ?Sized>(self, rng: &mut R) -> bool {
        self.contains(rng.next_u64())
    }

    /// The same denominator with the numerator capped at `cap` (how a `*-percentage` request header is
    /// applied: it can lower the configured numerator, never raise it).
    pub fn capped(self, cap: u32) -> FractionalPercent {
        FractionalPercent {
            numerator: self.numerator.min(cap),
            denominator: self.denominator,
        }
    }

    fn parse(value: &Json, path: &str, into: &mut FractionalPercent) -> Result<(), ConfigError> {
        for (key, v) in object(value, path)? {
            match field_of(key, &["numerator", "denominator"]) {
                _ if matches!(v, Json::Null) => {}
                Some("numerator") => into.numerator = uint32(v, &child(path, "numerator"))?,
                Some(_) => into.denominator = Denominator::parse(v, &child(path, "denominator"))?,
                None => return Err(unknown_field(path, key)),
            }
        }
        Ok(())
    }
}

impl fmt::Display for FractionalPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

impl Serialize for FractionalPercent {
    /// Envoy's JSON for the message: `{"numerator": 50, "denominator": "TEN_THOUSAND"}`, with a zero
    /// numerator and the `HUNDRED` denominator omitted.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.numerator != 0 {
            map.serialize_entry("numerator", &self.numerator)?;
        }
        if self.denominator != Denominator::Hundred {
            map.serialize_entry("denominator", self.denominator.name())?;
        }
        map.end()
    }
}

/// Where an abort's status comes from (`FaultAbort.error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortKind {
    /// `http_status`: a fixed HTTP status in `[200, 600)`.
    Http(u16),
    /// `grpc_status`: a fixed gRPC status (not range checked, like Envoy); the HTTP status becomes 200.
    Grpc(u32),
    /// `header_abort`: the status comes from `x-envoy-fault-abort-request` or
    /// `x-envoy-fault-abort-grpc-request`; a request without them is not aborted.
    Header,
}

/// The `abort` section: which status, for which fraction of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultAbort {
    kind: AbortKind,
    /// `None` when the config leaves `percentage` unset (0 %, and not printed).
    percentage: Option<FractionalPercent>,
}

impl FaultAbort {
    /// An abort with HTTP `status` for `percentage` of requests. The status may be any integer type
    /// (`u16`, the proto's `uint32`, Kuma's `int32`, …); Envoy accepts `[200, 600)`.
    ///
    /// # Errors
    /// A status outside `[200, 600)`, at path `abort.http_status`.
    pub fn http(status: impl Into<i64>, percentage: FractionalPercent) -> Result<FaultAbort, ConfigError> {
        let status = check_http_status(status.into(), "abort.http_status")?;
        Ok(FaultAbort {
            kind: AbortKind::Http(status),
            percentage: Some(percentage),
        })
    }

    /// An abort with gRPC `status` for `percentage` of requests.
    pub fn grpc(status: u32, percentage: FractionalPercent) -> FaultAbort {
        FaultAbort {
            kind: AbortKind::Grpc(status),
            percentage: Some(percentage),
        }
    }

    /// An abort whose status the request headers choose, for at most `percentage` of requests.
    pub fn from_headers(percentage: FractionalPercent) -> FaultAbort {
        FaultAbort {
            kind: AbortKind::Header,
            percentage: Some(percentage),
        }
    }

    /// Where the status comes from.
    pub fn kind(&self) -> AbortKind {
        self.kind
    }

    /// The configured percentage (omitted in the config means 0 %, i.e. never).
    pub fn percentage(&self) -> FractionalPercent {
        self.percentage.unwrap_or_default()
    }
}

impl Serialize for FaultAbort {
    /// Envoy's JSON for the message (fields in protobuf order).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // http_status 2, percentage 3, header_abort 4, grpc_status 5.
        let mut map = serializer.serialize_map(None)?;
        if let AbortKind::Http(status) = self.kind {
            map.serialize_entry("http_status", &status)?;
        }
        if let Some(p) = &self.percentage {
            map.serialize_entry("percentage", p)?;
        }
        match self.kind {
            AbortKind::Header => map.serialize_entry("header_abort", &EmptyMessage)?,
            AbortKind::Grpc(status) => map.serialize_entry("grpc_status", &status)?,
            AbortKind::Http(_) => {}
        }
        map.end()
    }
}

/// Where a delay's duration comes from (`FaultDelay.fault_delay_secifier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DelayKind {
    /// `fixed_delay` (> 0; Envoy truncates it to whole milliseconds when injecting).
    Fixed(Duration),
    /// `header_delay`: the delay comes from `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

/// The `delay` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultDelay {
    kind: DelayKind,
    percentage: Option<FractionalPercent>,
}

impl FaultDelay {
    /// A fixed delay for `percentage` of requests.
    ///
    /// # Errors
    /// A zero delay (Envoy: "value must be greater than 0s") or one longer than Envoy can hold
    /// (9223372035.999999999 s), at path `delay.fixed_delay`.
    pub fn fixed(delay: Duration, percentage: FractionalPercent) -> Result<FaultDelay, ConfigError> {
        check_fixed_delay(delay, "delay.fixed_delay")?;
        Ok(FaultDelay {
            kind: DelayKind::Fixed(delay),
            percentage: Some(percentage),
        })
    }

    /// A delay the request headers choose, for at most `percentage` of requests.
    pub fn from_headers(percentage: FractionalPercent) -> FaultDelay {
        FaultDelay {
            kind: DelayKind::Header,
            percentage: Some(percentage),
        }
    }

    /// Where the duration comes from.
    pub fn kind(&self) -> DelayKind {
        self.kind
    }

    /// The configured percentage.
    pub fn percentage(&self) -> FractionalPercent {
        self.percentage.unwrap_or_default()
    }
}

impl Serialize for FaultDelay {
    /// Envoy's JSON for the message (fields in protobuf order; `"5s"`, `"0.300s"` durations).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // fixed_delay 3, percentage 4, header_delay 5.
        let mut map = serializer.serialize_map(None)?;
        if let DelayKind::Fixed(d) = self.kind {
            map.serialize_entry("fixed_delay", &format_duration(d))?;
        }
        if let Some(p) = &self.percentage {
            map.serialize_entry("percentage", p)?;
        }
        if self.kind == DelayKind::Header {
            map.serialize_entry("header_delay", &EmptyMessage)?;
        }
        map.end()
    }
}

/// Where a response rate limit comes from (`FaultRateLimit.limit_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimitKind {
    /// `fixed_limit.limit_kbps` (KiB/s, at least 1).
    Fixed(NonZeroU64),
    /// `header_limit`: the rate comes from `x-envoy-fault-throughput-response`.
    Header,
}

/// The `response_rate_limit` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultRateLimit {
    kind: RateLimitKind,
    percentage: Option<FractionalPercent>,
}

impl FaultRateLimit {
    /// A fixed limit of `kbps` KiB/s for `percentage` of requests.
    pub fn fixed(kbps: NonZeroU64, percentage: FractionalPercent) -> FaultRateLimit {
        FaultRateLimit {
            kind: RateLimitKind::Fixed(kbps),
            percentage: Some(percentage),
        }
    }

    /// A limit the request headers choose, for at most `percentage` of requests.
    pub fn from_headers(percentage: FractionalPercent) -> FaultRateLimit {
        FaultRateLimit {
            kind: RateLimitKind::Header,
            percentage: Some(percentage),
        }
    }

    /// Where the rate comes from.
    pub fn kind(&self) -> RateLimitKind {
        self.kind
    }

    /// The configured percentage.
    pub fn percentage(&self) -> FractionalPercent {
        self.percentage.unwrap_or_default()
    }
}

impl Serialize for FaultRateLimit {
    /// Envoy's JSON for the message (fields in protobuf order; `limit_kbps` is a uint64, so a string).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // fixed_limit 1, percentage 2, header_limit 3.
        let mut map = serializer.serialize_map(None)?;
        if let RateLimitKind::Fixed(kbps) = self.kind {
            map.serialize_entry("fixed_limit", &FixedLimit(kbps))?;
        }
        if let Some(p) = &self.percentage {
            map.serialize_entry("percentage", p)?;
        }
        if self.kind == RateLimitKind::Header {
            map.serialize_entry("header_limit", &EmptyMessage)?;
        }
        map.end()
    }
}

/// `FaultRateLimit.FixedLimit`.
struct FixedLimit(NonZeroU64);

impl Serialize for FixedLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("limit_kbps", &self.0.to_string())?;
        map.end()
    }
}

/// A message without fields (`header_abort: {}`).
struct EmptyMessage;

impl Serialize for EmptyMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

/// The runtime keys a filter consults (the `*_runtime` fields, with Envoy's defaults).
///
/// An unset (empty) field means the default key; the accessors return the key in effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RuntimeKeys {
    // As configured (empty: unset), so that the config prints back as given.
    delay_percent: String,
    abort_percent: String,
    delay_duration: String,
    abort_http_status: String,
    max_active_faults: String,
    response_rate_limit_percent: String,
    abort_grpc_status: String,
}

/// `PROTOBUF_GET_STRING_OR_DEFAULT`: an empty string means the default key.
fn or_default<'a>(key: &'a str, default: &'static str) -> &'a str {
    if key.is_empty() { default } else { key }
}

impl RuntimeKeys {
    /// `delay_percent_runtime` (default `fault.http.delay.fixed_delay_percent`).
    pub fn delay_percent(&self) -> &str {
        or_default(&self.delay_percent, "fault.http.delay.fixed_delay_percent")
    }
    /// `abort_percent_runtime` (default `fault.http.abort.abort_percent`).
    pub fn abort_percent(&self) -> &str {
        or_default(&self.abort_percent, "fault.http.abort.abort_percent")
    }
    /// `delay_duration_runtime` (default `fault.http.delay.fixed_duration_ms`).
    pub fn delay_duration(&self) -> &str {
        or_default(&self.delay_duration, "fault.http.delay.fixed_duration_ms")
    }
    /// `abort_http_status_runtime` (default `fault.http.abort.http_status`).
    pub fn abort_http_status(&self) -> &str {
        or_default(&self.abort_http_status, "fault.http.abort.http_status")
    }
    /// `max_active_faults_runtime` (default `fault.http.max_active_faults`).
    pub fn max_active_faults(&self) -> &str {
        or_default(&self.max_active_faults, "fault.http.max_active_faults")
    }
    /// `response_rate_limit_percent_runtime` (default `fault.http.rate_limit.response_percent`).
    pub fn response_rate_limit_percent(&self) -> &str {
        or_default(
            &self.response_rate_limit_percent,
            "fault.http.rate_limit.response_percent",
        )
    }
    /// `abort_grpc_status_runtime` (default `fault.http.abort.grpc_status`).
    pub fn abort_grpc_status(&self) -> &str {
        or_default(&self.abort_grpc_status, "fault.http.abort.grpc_status")
    }

    /// The fields as configured, in protobuf order, with their JSON names (empty: unset).
    fn configured(&self) -> [(&'static str, &str); 7] {
        [
            ("delay_percent_runtime", &self.delay_percent),
            ("abort_percent_runtime", &self.abort_percent),
            ("delay_duration_runtime", &self.delay_duration),
            ("abort_http_status_runtime", &self.abort_http_status),
            ("max_active_faults_runtime", &self.max_active_faults),
            ("response_rate_limit_percent_runtime", &self.response_rate_limit_percent),
            ("abort_grpc_status_runtime", &self.abort_grpc_status),
        ]
    }
}

/// One fault filter configuration (`HTTPFault`), at listener level or as a per-route override.
///
/// Build it from Envoy's JSON with [`FaultConfig::from_json`] / [`FaultConfig::from_value`], which accept
/// the bare message, the `typed_config` form with `@type`, and a `TypedStruct` wrapping it; field names
/// may be snake_case or lowerCamelCase. Everything Envoy 1.40 rejects is rejected with a [`ConfigError`]
/// naming the field; Envoy also accepts a config with neither abort nor delay (it never injects). Or build
/// it from parts with [`FaultConfig::new`] and the `with_*` methods, whose constructors validate alike.
///
/// It prints back (`Serialize`, [`FaultConfig::to_typed_config`]) exactly as Envoy's `/config_dump`
/// prints the message: `@type` first, fields in protobuf field-number order, unset fields omitted,
/// durations as `"5s"` / `"0.300s"`, 64-bit integers as strings.
///
/// ```
/// use meshcap_fault::{AbortKind, FaultConfig};
///
/// let config = FaultConfig::from_json(r#"{
///     "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
///     "abort": {"httpStatus": 503, "percentage": {"numerator": 100, "denominator": "HUNDRED"}}
/// }"#)?;
/// assert_eq!(config.abort().map(|a| a.kind()), Some(AbortKind::Http(503)));
/// assert_eq!(
///     serde_json::to_string(&config).unwrap(),
///     r#"{"@type":"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault","abort":{"http_status":503,"percentage":{"numerator":100}}}"#
/// );
/// # Ok::<(), meshcap_fault::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultConfig {
    delay: Option<FaultDelay>,
    abort: Option<FaultAbort>,
    upstream_cluster: String,
    headers: Vec<HeaderMatcher>,
    /// As configured (order and repeats kept, for printing).
    downstream_nodes: Vec<String>,
    /// The same, for lookups.
    downstream_node_set: HashSet<String>,
    max_active_faults: Option<u32>,
    response_rate_limit: Option<FaultRateLimit>,
    runtime_keys: RuntimeKeys,
    disable_downstream_cluster_stats: bool,
    filter_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The full name of the message, as type URLs end.
const MESSAGE_NAME: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
const TYPED_STRUCT_NAMES: [&str; 2] = ["xds.type.v3.TypedStruct", "udpa.type.v1.TypedStruct"];

/// The message name of an `Any`'s `@type`: what follows the last `/` of a URL with a non-empty prefix
/// (Envoy rejects `envoy.extensions…HTTPFault` and `/envoy.extensions…HTTPFault`, accepts any host).
fn any_type_name(url: &str) -> Option<&str> {
    url.rsplit_once('/')
        .and_then(|(prefix, name)| (!prefix.is_empty()).then_some(name))
}

/// The message name of a `TypedStruct`'s `type_url` (Envoy takes what follows the last `/`, if any).
fn typed_struct_type_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

fn check_http_status(status: i64, path: &str) -> Result<u16, ConfigError> {
    match u16::try_from(status) {
        Ok(s) if (200..600).contains(&s) => Ok(s),
        _ => Err(ConfigError::new(
            path,
            ConfigErrorKind::OutOfRange {
                value: status.to_string(),
                range: "[200, 600)",
            },
        )),
    }
}

/// Envoy's constraints on `fixed_delay`: greater than zero, and within its nanosecond range.
fn check_fixed_delay(delay: Duration, path: &str) -> Result<(), ConfigError> {
    if delay.is_zero() {
        return Err(ConfigError::new(
            path,
            ConfigErrorKind::Constraint {
                value: "0s".into(),
                constraint: "must be greater than 0s",
            },
        ));
    }
    if !json::in_envoy_duration_range(delay) {
        return Err(ConfigError::new(
            path,
            ConfigErrorKind::InvalidDuration(format!("{:?}", format_duration(delay))),
        ));
    }
    Ok(())
}

fn oneof_required(path: &str, oneof: &'static str, members: &'static str) -> ConfigError {
    ConfigError::new(path, ConfigErrorKind::OneofRequired { oneof, members })
}

fn set_oneof<T>(slot: &mut Option<T>, value: T, path: &str, oneof: &'static str) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::new(path, ConfigErrorKind::OneofAlreadySet { oneof }));
    }
    *slot = Some(value);
    Ok(())
}

/// An empty message such as `header_abort: {}` (no fields allowed).
fn empty_message(value: &Json, path: &str) -> Result<(), ConfigError> {
    match object(value, path)?.first() {
        Some((key, _)) => Err(unknown_field(path, key)),
        None => Ok(()),
    }
}

/// `percentage`, merged into what an earlier occurrence of the enclosing message set.
fn merge_percentage(value: &Json, path: &str, into: &mut Option<FractionalPercent>) -> Result<(), ConfigError> {
    FractionalPercent::parse(value, path, into.get_or_insert_default())
}

/// Builders that merge repeated occurrences of a message field, as protobuf's JSON parser does.
#[derive(Default)]
struct AbortBuilder {
    kind: Option<AbortKind>,
    percentage: Option<FractionalPercent>,
}

#[derive(Default)]
struct DelayBuilder {
    kind: Option<DelayKind>,
    percentage: Option<FractionalPercent>,
}

#[derive(Default)]
struct RateLimitBuilder {
    kind: Option<LimitSpec>,
    percentage: Option<FractionalPercent>,
}

enum LimitSpec {
    Fixed(u64),
    Header,
}

impl AbortBuilder {
    fn merge(&mut self, value: &Json, path: &str) -> Result<(), ConfigError> {
        const FIELDS: &[&str] = &["http_status", "grpc_status", "header_abort", "percentage"];
        for (key, v) in object(value, path)? {
            let Some(field) = field_of(key, FIELDS) else {
                return Err(unknown_field(path, key));
            };
            if matches!(v, Json::Null) {
                continue;
            }
            let p = child(path, field);
            match field {
                "http_status" => {
                    let status = uint32(v, &p)?;
                    let status = check_http_status(i64::from(status), &p)?;
                    set_oneof(&mut self.kind, AbortKind::Http(status), &p, "error_type")?;
                }
                "grpc_status" => set_oneof(&mut self.kind, AbortKind::Grpc(uint32(v, &p)?), &p, "error_type")?,
                "header_abort" => {
                    empty_message(v, &p)?;
                    set_oneof(&mut self.kind, AbortKind::Header, &p, "error_type")?;
                }
                _ => merge_percentage(v, &p, &mut self.percentage)?,
            }
        }
        Ok(())
    }

    fn build(self, path: &str) -> Result<FaultAbort, ConfigError> {
        let kind = self
            .kind
            .ok_or_else(|| oneof_required(path, "error_type", "http_status, grpc_status, header_abort"))?;
        Ok(FaultAbort {
            kind,
            percentage: self.percentage,
        })
    }
}

impl DelayBuilder {
    fn merge(&mut self, value: &Json, path: &str) -> Result<(), ConfigError> {
        const FIELDS: &[&str] = &["fixed_delay", "header_delay", "percentage"];
        for (key, v) in object(value, path)? {
            let Some(field) = field_of(key, FIELDS) else {
                return Err(unknown_field(path, key));
            };
            if matches!(v, Json::Null) {
                continue;
            }
            let p = child(path, field);
            match field {
                "fixed_delay" => {
                    let d = duration(v, &p)?;
                    check_fixed_delay(d, &p)?;
                    set_oneof(&mut self.kind, DelayKind::Fixed(d), &p, "fault_delay_secifier")?;
                }
                "header_delay" => {
                    empty_message(v, &p)?;
                    set_oneof(&mut self.kind, DelayKind::Header, &p, "fault_delay_secifier")?;
                }
                _ => merge_percentage(v, &p, &mut self.percentage)?,
            }
        }
        Ok(())
    }

    fn build(self, path: &str) -> Result<FaultDelay, ConfigError> {
        let kind = self
            .kind
            .ok_or_else(|| oneof_required(path, "fault_delay_secifier", "fixed_delay, header_delay"))?;
        Ok(FaultDelay {
            kind,
            percentage: self.percentage,
        })
    }
}

impl RateLimitBuilder {
    fn merge(&mut self, value: &Json, path: &str) -> Result<(), ConfigError> {
        const FIELDS: &[&str] = &["fixed_limit", "header_limit", "percentage"];
        for (key, v) in object(value, path)? {
            let Some(field) = field_of(key, FIELDS) else {
                return Err(unknown_field(path, key));
            };
            if matches!(v, Json::Null) {
                continue;
            }
            let p = child(path, field);
            match field {
                "fixed_limit" => {
                    let mut kbps = 0;
                    for (k, lv) in object(v, &p)? {
                        match field_of(k, &["limit_kbps"]) {
                            _ if matches!(lv, Json::Null) => {}
                            Some(_) => kbps = uint64(lv, &child(&p, "limit_kbps"))?,
                            None => return Err(unknown_field(&p, k)),
                        }
                    }
                    set_oneof(&mut self.kind, LimitSpec::Fixed(kbps), &p, "limit_type")?;
                }
                "header_limit" => {
                    empty_message(v, &p)?;
                    set_oneof(&mut self.kind, LimitSpec::Header, &p, "limit_type")?;
                }
                _ => merge_percentage(v, &p, &mut self.percentage)?,
            }
        }
        Ok(())
    }

    fn build(self, path: &str) -> Result<FaultRateLimit, ConfigError> {
        let kind = match self.kind {
            None => return Err(oneof_required(path, "limit_type", "fixed_limit, header_limit")),
            Some(LimitSpec::Header) => RateLimitKind::Header,
            Some(LimitSpec::Fixed(kbps)) => RateLimitKind::Fixed(NonZeroU64::new(kbps).ok_or_else(|| {
                ConfigError::new(
                    child(path, "fixed_limit.limit_kbps"),
                    ConfigErrorKind::Constraint {
                        value: "0".into(),
                        constraint: "must be greater than or equal to 1",
                    },
                )
            })?),
        };
        Ok(FaultRateLimit {
            kind,
            percentage: self.percentage,
        })
    }
}

impl FaultConfig {
    /// The type URL of the message (`typed_config["@type"]`).
    pub const TYPE_URL: &'static str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

    /// A configuration with nothing configured (never injects); use the `with_*` methods or
    /// [`FaultConfig::from_json`] to fill it.
    pub fn new() -> FaultConfig {
        FaultConfig::default()
    }

    /// Parse Envoy's JSON: the bare `HTTPFault` message, the `typed_config` object with
    /// `"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"`, or a
    /// `TypedStruct` (`xds.type.v3` / `udpa.type.v1`) carrying it.
    ///
    /// # Errors
    /// Invalid JSON, or anything Envoy's own parser and validation reject, naming the field.
    pub fn from_json(text: &str) -> Result<FaultConfig, ConfigError> {
        FaultConfig::from_any(&Json::parse(text)?)
    }

    /// Like [`FaultConfig::from_json`], from an already parsed `serde_json::Value` (for example the
    /// `typed_config` of a filter inside a larger bootstrap).
    ///
    /// # Errors
    /// As [`FaultConfig::from_json`].
    pub fn from_value(value: &serde_json::Value) -> Result<FaultConfig, ConfigError> {
        FaultConfig::from_any(&Json::from_value(value)?)
    }

    fn from_any(json: &Json) -> Result<FaultConfig, ConfigError> {
        let entries = object(json, "")?;
        let type_url = entries.iter().rev().find(|(k, _)| k == "@type").map(|(_, v)| v);
        let Some(type_url) = type_url else {
            return FaultConfig::parse_message(entries, "");
        };
        let url = string(type_url, "@type")?;
        let message: Vec<(String, Json)> = entries.iter().filter(|(k, _)| k != "@type").cloned().collect();
        match any_type_name(&url) {
            Some(MESSAGE_NAME) => FaultConfig::parse_message(&message, ""),
            Some(name) if TYPED_STRUCT_NAMES.contains(&name) => {
                let mut inner_url = None;
                let mut value = None;
                for (key, v) in &message {
                    match field_of(key, &["type_url", "value"]) {
                        Some("type_url") => inner_url = Some(string(v, "type_url")?),
                        Some(_) => value = Some(v),
                        None => return Err(unknown_field("", key)),
                    }
                }
                let inner_url = inner_url.unwrap_or_default();
                if typed_struct_type_name(&inner_url) != MESSAGE_NAME {
                    return Err(ConfigError::new("type_url", ConfigErrorKind::TypeUrl(inner_url)));
                }
                match value {
                    None | Some(Json::Null) => Ok(FaultConfig::default()),
                    Some(v) => FaultConfig::parse_message(object(v, "value")?, "value"),
                }
            }
            _ => Err(ConfigError::new("@type", ConfigErrorKind::TypeUrl(url))),
        }
    }

    fn parse_message(entries: &[(String, Json)], path: &str) -> Result<FaultConfig, ConfigError> {
        const FIELDS: &[&str] = &[
            "delay",
            "abort",
            "upstream_cluster",
            "headers",
            "downstream_nodes",
            "max_active_faults",
            "response_rate_limit",
            "delay_percent_runtime",
            "abort_percent_runtime",
            "delay_duration_runtime",
            "abort_http_status_runtime",
            "max_active_faults_runtime",
            "response_rate_limit_percent_runtime",
            "abort_grpc_status_runtime",
            "disable_downstream_cluster_stats",
            "filter_metadata",
        ];
        let mut config = FaultConfig::default();
        let (mut delay, mut abort, mut rate_limit) = (None::<DelayBuilder>, None::<AbortBuilder>, None);
        let mut headers = Vec::new();
        let mut metadata: Option<serde_json::Map<String, serde_json::Value>> = None;
        for (key, v) in entries {
            let Some(field) = field_of(key, FIELDS) else {
                return Err(unknown_field(path, key));
            };
            if matches!(v, Json::Null) {
                continue;
            }
            let p = child(path, field);
            let keys = &mut config.runtime_keys;
            match field {
                "delay" => delay.get_or_insert_with(Default::default).merge(v, &p)?,
                "abort" => abort.get_or_insert_with(Default::default).merge(v, &p)?,
                "response_rate_limit" => rate_limit.get_or_insert_with(RateLimitBuilder::default).merge(v, &p)?,
                "upstream_cluster" => config.upstream_cluster = string(v, &p)?,
                "headers" => {
                    for item in repeated(v) {
                        let ip = index(&p, headers.len());
                        headers.push(HeaderMatcher::parse(item, &ip)?);
                    }
                }
                "downstream_nodes" => {
                    // A repeated field given twice concatenates.
                    let first = config.downstream_nodes.len();
                    for (i, item) in repeated(v).iter().enumerate() {
                        config.downstream_nodes.push(string(item, &index(&p, first + i))?);
                    }
                }
                "max_active_faults" => config.max_active_faults = uint32_wrapper(v, &p)?,
                "delay_percent_runtime" => keys.delay_percent = string(v, &p)?,
                "abort_percent_runtime" => keys.abort_percent = string(v, &p)?,
                "delay_duration_runtime" => keys.delay_duration = string(v, &p)?,
                "abort_http_status_runtime" => keys.abort_http_status = string(v, &p)?,
                "max_active_faults_runtime" => keys.max_active_faults = string(v, &p)?,
                "response_rate_limit_percent_runtime" => keys.response_rate_limit_percent = string(v, &p)?,
                "abort_grpc_status_runtime" => keys.abort_grpc_status = string(v, &p)?,
                "disable_downstream_cluster_stats" => config.disable_downstream_cluster_stats = boolean(v, &p)?,
                _ => {
                    // google.protobuf.Struct: an object; a repeated occurrence merges key by key.
                    let serde_json::Value::Object(map) = Json::Object(object(v, &p)?.to_vec()).to_value() else {
                        unreachable!("an object converts to an object")
                    };
                    metadata.get_or_insert_with(Default::default).extend(map);
                }
            }
        }
        config.delay = delay.map(|d| d.build(&child(path, "delay"))).transpose()?;
        config.abort = abort.map(|a| a.build(&child(path, "abort"))).transpose()?;
        config.response_rate_limit = rate_limit
            .map(|r| r.build(&child(path, "response_rate_limit")))
            .transpose()?;
        config.headers = headers;
        config.downstream_node_set = config.downstream_nodes.iter().cloned().collect();
        config.filter_metadata = metadata;
        Ok(config)
    }

    /// The config as Envoy JSON, `@type` included, as a `serde_json::Value` (whose objects order their
    /// keys alphabetically; serialize the config itself for Envoy's field order).
    pub fn to_typed_config(&self) -> serde_json::Value {
        // Serializing into a Value fails only for non-string map keys, which this config has none of.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Replace the `abort` section.
    #[must_use]
    pub fn with_abort(mut self, abort: FaultAbort) -> FaultConfig {
        self.abort = Some(abort);
        self
    }

    /// Replace the `delay` section.
    #[must_use]
    pub fn with_delay(mut self, delay: FaultDelay) -> FaultConfig {
        self.delay = Some(delay);
        self
    }

    /// Replace the `response_rate_limit` section.
    #[must_use]
    pub fn with_response_rate_limit(mut self, limit: FaultRateLimit) -> FaultConfig {
        self.response_rate_limit = Some(limit);
        self
    }

    /// Set `max_active_faults`.
    #[must_use]
    pub fn with_max_active_faults(mut self, max: u32) -> FaultConfig {
        self.max_active_faults = Some(max);
        self
    }

    /// Set `upstream_cluster`.
    #[must_use]
    pub fn with_upstream_cluster(mut self, cluster: impl Into<String>) -> FaultConfig {
        self.upstream_cluster = cluster.into();
        self
    }

    /// Set `disable_downstream_cluster_stats`.
    #[must_use]
    pub fn with_downstream_cluster_stats_disabled(mut self, disabled: bool) -> FaultConfig {
        self.disable_downstream_cluster_stats = disabled;
        self
    }

    /// Replace the `headers` matchers (all must match for a request to be eligible).
    #[must_use]
    pub fn with_headers(mut self, headers: impl IntoIterator<Item = HeaderMatcher>) -> FaultConfig {
        self.headers = headers.into_iter().collect();
        self
    }

    /// Replace `downstream_nodes` (the `x-envoy-downstream-service-node` values that are eligible).
    #[must_use]
    pub fn with_downstream_nodes<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> FaultConfig {
        self.downstream_nodes = nodes.into_iter().map(Into::into).collect();
        self.downstream_node_set = self.downstream_nodes.iter().cloned().collect();
        self
    }

    /// Set `filter_metadata` (a `google.protobuf.Struct`).
    #[must_use]
    pub fn with_filter_metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> FaultConfig {
        self.filter_metadata = Some(metadata);
        self
    }

    /// The `delay` section.
    pub fn delay(&self) -> Option<&FaultDelay> {
        self.delay.as_ref()
    }

    /// The `abort` section.
    pub fn abort(&self) -> Option<&FaultAbort> {
        self.abort.as_ref()
    }

    /// The `response_rate_limit` section.
    pub fn response_rate_limit(&self) -> Option<&FaultRateLimit> {
        self.response_rate_limit.as_ref()
    }

    /// `upstream_cluster` (empty: every route is eligible).
    pub fn upstream_cluster(&self) -> &str {
        &self.upstream_cluster
    }

    /// The `headers` matchers (all must match).
    pub fn headers(&self) -> &[HeaderMatcher] {
        &self.headers
    }

    /// `downstream_nodes` as configured (empty: every request is eligible).
    pub fn downstream_nodes(&self) -> &[String] {
        &self.downstream_nodes
    }

    /// Whether `node` is one of `downstream_nodes`.
    pub fn is_downstream_node(&self, node: &str) -> bool {
        self.downstream_node_set.contains(node)
    }

    /// `max_active_faults` (`None`: unlimited).
    pub fn max_active_faults(&self) -> Option<u32> {
        self.max_active_faults
    }

    /// The runtime keys.
    pub fn runtime_keys(&self) -> &RuntimeKeys {
        &self.runtime_keys
    }

    /// `disable_downstream_cluster_stats`.
    pub fn downstream_cluster_stats_disabled(&self) -> bool {
        self.disable_downstream_cluster_stats
    }

    /// `filter_metadata`: published as dynamic metadata under the HTTP filter's configured name whenever
    /// a delay or an abort is injected (see [`crate::Decision::emits_filter_metadata`]).
    pub fn filter_metadata(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.filter_metadata.as_ref()
    }
}

impl Serialize for FaultConfig {
    /// Envoy's JSON for the `typed_config`, as `/config_dump` prints it: `@type` first, then the set
    /// fields in protobuf field-number order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@type", FaultConfig::TYPE_URL)?;
        if let Some(d) = &self.delay {
            map.serialize_entry("delay", d)?;
        }
        if let Some(a) = &self.abort {
            map.serialize_entry("abort", a)?;
        }
        if !self.upstream_cluster.is_empty() {
            map.serialize_entry("upstream_cluster", &self.upstream_cluster)?;
        }
        if !self.headers.is_empty() {
            map.serialize_entry("headers", &self.headers)?;
        }
        if !self.downstream_nodes.is_empty() {
            map.serialize_entry("downstream_nodes", &self.downstream_nodes)?;
        }
        if let Some(n) = self.max_active_faults {
            // A UInt32Value prints as its bare number.
            map.serialize_entry("max_active_faults", &n)?;
        }
        if let Some(r) = &self.response_rate_limit {
            map.serialize_entry("response_rate_limit", r)?;
        }
        for (name, key) in self.runtime_keys.configured() {
            if !key.is_empty() {
                map.serialize_entry(name, key)?;
            }
        }
        if self.disable_downstream_cluster_stats {
            map.serialize_entry("disable_downstream_cluster_stats", &true)?;
        }
        if let Some(m) = &self.filter_metadata {
            map.serialize_entry("filter_metadata", m)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FaultConfig {
    /// Envoy's JSON, read and validated as [`FaultConfig::from_json`] does (key order and repeated keys
    /// are kept); a [`ConfigError`] becomes the deserializer's custom error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FaultConfig, D::Error> {
        FaultConfig::from_any(&Json::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl FromStr for FaultConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<FaultConfig, ConfigError> {
        FaultConfig::from_json(s)
    }
}
