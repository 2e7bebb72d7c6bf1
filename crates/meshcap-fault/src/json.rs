//! Protobuf-JSON (proto3 canonical JSON) as Envoy reads and prints it. Reading goes without serde derive:
//! an order-preserving JSON tree plus typed field readers that report the path of what they reject.
//! Writing is serde `Serialize` on the config types; the scalar forms they share live here.
//!
//! Envoy's parser is more lenient than the proto3 JSON spec in a few places, observed with
//! `envoy --mode validate` (1.40): integers may be strings or integral floats (`"503"`, `503.0`), bools may
//! be the strings `"true"`/`"false"`, enum names are case-insensitive, a single value is accepted where a
//! repeated field expects a list, `null` means "not set", and a message that appears twice is merged. The
//! readers here follow that.

use std::fmt::Write as _;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{ConfigError, ConfigErrorKind};

/// Maximum nesting accepted when converting a caller's `serde_json::Value` (serde_json's own parser
/// stops at 128 as well).
const MAX_DEPTH: usize = 128;

/// A JSON value whose objects keep their keys in document order (duplicates included).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        struct JsonVisitor;

        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Json>()? {
                    entries.push((key, value));
                }
                Ok(Json::Object(entries))
            }
        }

        deserializer.deserialize_any(JsonVisitor)
    }
}

impl Json {
    /// Parse JSON text.
    pub(crate) fn parse(text: &str) -> Result<Json, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::new("", ConfigErrorKind::Json(e.to_string())))
    }

    /// Convert a caller's `serde_json::Value` (object key order is the `Value`'s own).
    pub(crate) fn from_value(value: &serde_json::Value) -> Result<Json, ConfigError> {
        fn convert(value: &serde_json::Value, depth: usize) -> Result<Json, ConfigError> {
            if depth > MAX_DEPTH {
                return Err(ConfigError::new(
                    "",
                    ConfigErrorKind::Json(format!("nesting deeper than {MAX_DEPTH} levels")),
                ));
            }
            Ok(match value {
                serde_json::Value::Null => Json::Null,
                serde_json::Value::Bool(b) => Json::Bool(*b),
                serde_json::Value::Number(n) => Json::Number(n.clone()),
                serde_json::Value::String(s) => Json::String(s.clone()),
                serde_json::Value::Array(items) => {
                    Json::Array(items.iter().map(|v| convert(v, depth + 1)).collect::<Result<_, _>>()?)
                }
                serde_json::Value::Object(map) => Json::Object(
                    map.iter()
                        .map(|(k, v)| Ok((k.clone(), convert(v, depth + 1)?)))
                        .collect::<Result<_, ConfigError>>()?,
                ),
            })
        }
        convert(value, 0)
    }

    /// The equivalent `serde_json::Value` (for a duplicated key the last one wins, as in
    /// `google.protobuf.Struct`).
    pub(crate) fn to_value(&self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Number(n) => serde_json::Value::Number(n.clone()),
            Json::String(s) => serde_json::Value::String(s.clone()),
            Json::Array(items) => serde_json::Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.insert(k.clone(), v.to_value());
                }
                serde_json::Value::Object(map)
            }
        }
    }

    /// A short rendering for error messages.
    pub(crate) fn describe(&self) -> String {
        let full = self.to_value().to_string();
        if full.len() <= 64 {
            return full;
        }
        let mut cut = 61;
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &full[..cut])
    }
}

/// `parent.child` (or `child` at the root).
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// `parent[index]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    let mut s = parent.to_owned();
    let _ = write!(s, "[{i}]");
    s
}

/// Whether a JSON key names the proto field `proto` (snake_case) either by its proto name or by its
/// lowerCamelCase JSON name.
pub(crate) fn key_is(key: &str, proto: &str) -> bool {
    if key == proto {
        return true;
    }
    let mut k = key.bytes();
    let mut upper_next = false;
    for b in proto.bytes() {
        if b == b'_' {
            upper_next = true;
            continue;
        }
        let want = if upper_next { b.to_ascii_uppercase() } else { b };
        upper_next = false;
        if k.next() != Some(want) {
            return false;
        }
    }
    k.next().is_none()
}

/// The proto field among `fields` that `key` names, if any.
pub(crate) fn field_of(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    fields.iter().copied().find(|f| key_is(key, f))
}

fn wrong_type(path: &str, expected: &'static str, found: &Json) -> ConfigError {
    ConfigError::new(
        path,
        ConfigErrorKind::WrongType {
            expected,
            found: found.describe(),
        },
    )
}

/// The entries of a JSON object.
pub(crate) fn object<'a>(value: &'a Json, path: &str) -> Result<&'a [(String, Json)], ConfigError> {
    match value {
        Json::Object(entries) => Ok(entries),
        other => Err(wrong_type(path, "object", other)),
    }
}

/// The elements of a repeated field: the array's items, or the value itself when it is not an array.
pub(crate) fn repeated(value: &Json) -> &[Json] {
    match value {
        Json::Array(items) => items,
        single => std::slice::from_ref(single),
    }
}

/// An error for a key the message does not have.
pub(crate) fn unknown_field(path: &str, key: &str) -> ConfigError {
    ConfigError::new(child(path, key), ConfigErrorKind::UnknownField)
}

fn integral(value: &Json) -> Option<i128> {
    match value {
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
            }
        }
        Json::String(s) => {
            if let Ok(i) = s.parse::<i128>() {
                Some(i)
            } else {
                let f = s.parse::<f64>().ok()?;
                (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
            }
        }
        _ => None,
    }
}

/// A `uint32`.
pub(crate) fn uint32(value: &Json, path: &str) -> Result<u32, ConfigError> {
    integral(value)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| wrong_type(path, "uint32", value))
}

/// A `uint64`.
pub(crate) fn uint64(value: &Json, path: &str) -> Result<u64, ConfigError> {
    integral(value)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| wrong_type(path, "uint64", value))
}

/// An `int64`.
pub(crate) fn int64(value: &Json, path: &str) -> Result<i64, ConfigError> {
    integral(value)
        .and_then(|i| i64::try_from(i).ok())
        .ok_or_else(|| wrong_type(path, "int64", value))
}

/// A `bool` (`true`/`false`, or those words as strings).
pub(crate) fn boolean(value: &Json, path: &str) -> Result<bool, ConfigError> {
    match value {
        Json::Bool(b) => Ok(*b),
        Json::String(s) if s == "true" => Ok(true),
        Json::String(s) if s == "false" => Ok(false),
        other => Err(wrong_type(path, "bool", other)),
    }
}

/// A `string`.
pub(crate) fn string(value: &Json, path: &str) -> Result<String, ConfigError> {
    match value {
        Json::String(s) => Ok(s.clone()),
        other => Err(wrong_type(path, "string", other)),
    }
}

/// A `google.protobuf.UInt32Value`: the bare number, or `{"value": n}`.
pub(crate) fn uint32_wrapper(value: &Json, path: &str) -> Result<Option<u32>, ConfigError> {
    match value {
        Json::Object(entries) => {
            let mut out = Some(0);
            for (key, v) in entries {
                if key != "value" {
                    return Err(unknown_field(path, key));
                }
                if !matches!(v, Json::Null) {
                    out = Some(uint32(v, &child(path, "value"))?);
                }
            }
            Ok(out)
        }
        other => uint32(other, path).map(Some),
    }
}

/// Largest seconds value Envoy accepts in a duration (its millisecond/nanosecond conversions must not
/// overflow; observed with `envoy --mode validate` 1.40: 9223372035 s is accepted, 9223372036 s is not).
const MAX_DURATION_SECONDS: u64 = 9_223_372_035;

/// Whether Envoy can hold `d` (see `MAX_DURATION_SECONDS`).
pub(crate) fn in_envoy_duration_range(d: Duration) -> bool {
    d.as_secs() <= MAX_DURATION_SECONDS
}

/// A duration as protobuf JSON prints it: whole seconds, then 0, 3, 6 or 9 fractional digits, then `s`
/// (`"5s"`, `"0.300s"`, `"1.000000001s"`).
///
/// ```
/// use std::time::Duration;
/// use meshcap_fault::protojson::format_duration;
///
/// assert_eq!(format_duration(Duration::from_secs(5)), "5s");
/// assert_eq!(format_duration(Duration::from_millis(300)), "0.300s");
/// assert_eq!(format_duration(Duration::from_micros(10)), "0.000010s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{secs}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{secs}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{secs}.{:06}s", nanos / 1_000)
    } else {
        format!("{secs}.{nanos:09}s")
    }
}

fn invalid_duration(path: &str, value: &Json) -> ConfigError {
    ConfigError::new(path, ConfigErrorKind::InvalidDuration(value.describe()))
}

/// A `google.protobuf.Duration`: `"1.5s"` (at most nine fractional digits) or `{"seconds", "nanos"}`.
/// Negative and out-of-range durations are rejected as Envoy rejects them.
pub(crate) fn duration(value: &Json, path: &str) -> Result<Duration, ConfigError> {
    let (negative, seconds, nanos): (bool, u64, u32) = match value {
        Json::String(s) => {
            let body = s.strip_suffix('s').ok_or_else(|| wrong_type(path, "duration", value))?;
            let (negative, body) = match body.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, body),
            };
            let (int, frac) = body.split_once('.').unwrap_or((body, ""));
            let digits_ok = !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit());
            let frac_ok = frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit());
            if !digits_ok || !frac_ok || (body.contains('.') && frac.is_empty()) {
                return Err(wrong_type(path, "duration", value));
            }
            let seconds: u64 = int.parse().map_err(|_| wrong_type(path, "duration", value))?;
            let nanos = if frac.is_empty() {
                0
            } else {
                let scale = 10u32.pow(9 - frac.len() as u32);
                frac.parse::<u32>().map_err(|_| wrong_type(path, "duration", value))? * scale
            };
            (negative && (seconds > 0 || nanos > 0), seconds, nanos)
        }
        Json::Object(entries) => {
            let (mut seconds, mut nanos) = (0i64, 0i64);
            for (key, v) in entries {
                match field_of(key, &["seconds", "nanos"]) {
                    _ if matches!(v, Json::Null) => {}
                    Some("seconds") => seconds = int64(v, &child(path, "seconds"))?,
                    Some(_) => {
                        nanos = i64::from(
                            integral(v)
                                .and_then(|i| i32::try_from(i).ok())
                                .ok_or_else(|| wrong_type(&child(path, "nanos"), "int32", v))?,
                        )
                    }
                    None => return Err(unknown_field(path, key)),
                }
            }
            if !(0..1_000_000_000).contains(&nanos) && !(-999_999_999..0).contains(&nanos) {
                return Err(invalid_duration(path, value));
            }
            (
                seconds < 0 || nanos < 0,
                seconds.unsigned_abs(),
                u32::try_from(nanos.unsigned_abs()).unwrap_or(0),
            )
        }
        other => return Err(wrong_type(path, "duration", other)),
    };
    let d = Duration::new(seconds, nanos);
    if negative || !in_envoy_duration_range(d) {
        return Err(invalid_duration(path, value));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_proto_and_camel_names() {
        assert!(key_is("max_active_faults", "max_active_faults"));
        assert!(key_is("maxActiveFaults", "max_active_faults"));
        assert!(!key_is("maxactivefaults", "max_active_faults"));
        assert!(!key_is("MaxActiveFaults", "max_active_faults"));
        assert!(!key_is("maxActiveFaultsX", "max_active_faults"));
        assert!(key_is("abort", "abort"));
    }

    #[test]
    fn objects_keep_order_and_duplicates() {
        let j = Json::parse(r#"{"b": 1, "a": 2, "b": 3}"#).unwrap();
        let keys: Vec<&str> = object(&j, "").unwrap().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
    }

    #[test]
    fn integers_accept_envoy_lenient_forms() {
        for text in ["503", "\"503\"", "503.0", "5.03e2", "\"5.03e2\""] {
            assert_eq!(uint32(&Json::parse(text).unwrap(), "x"), Ok(503), "{text}");
        }
        for text in ["503.5", "-1", "4294967296", "true", "null", "\"x\""] {
            assert!(uint32(&Json::parse(text).unwrap(), "x").is_err(), "{text}");
        }
        assert_eq!(int64(&Json::parse("\"-5\"").unwrap(), "x"), Ok(-5));
        assert_eq!(
            uint64(&Json::parse("\"18446744073709551615\"").unwrap(), "x"),
            Ok(u64::MAX)
        );
        assert!(uint64(&Json::parse("\"18446744073709551616\"").unwrap(), "x").is_err());
    }

    #[test]
    fn durations_parse_and_range_check_like_envoy() {
        let d = |t: &str| duration(&Json::parse(t).unwrap(), "d");
        assert_eq!(d(r#""5s""#), Ok(Duration::from_secs(5)));
        assert_eq!(d(r#""0.300s""#), Ok(Duration::from_millis(300)));
        assert_eq!(d(r#""0.000000001s""#), Ok(Duration::from_nanos(1)));
        assert_eq!(d(r#""0s""#), Ok(Duration::ZERO));
        assert_eq!(d(r#"{"seconds": 1, "nanos": 5}"#), Ok(Duration::new(1, 5)));
        assert_eq!(
            d(r#""9223372035.999999999s""#),
            Ok(Duration::new(9_223_372_035, 999_999_999))
        );
        for bad in [
            r#""1""#,
            r#""1ms""#,
            r#""0.1234567891s""#,
            r#""1.s""#,
            r#"".5s""#,
            r#""s""#,
            r#"5"#,
        ] {
            assert!(
                matches!(d(bad).unwrap_err().kind(), ConfigErrorKind::WrongType { .. }),
                "{bad}"
            );
        }
        for bad in [
            r#""-1s""#,
            r#""9223372036s""#,
            r#""315576000001s""#,
            r#"{"seconds": 0, "nanos": -5}"#,
            r#"{"seconds": 1, "nanos": 1000000000}"#,
        ] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_like_protobuf_and_read_back() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(format_duration(Duration::from_nanos(7)), "0.000000007s");
        assert_eq!(
            format_duration(Duration::new(9_223_372_035, 999_999_999)),
            "9223372035.999999999s"
        );
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(1),
            Duration::from_micros(1),
            Duration::new(3, 999_999_999),
        ] {
            let text = serde_json::Value::String(format_duration(d)).to_string();
            assert_eq!(duration(&Json::parse(&text).unwrap(), "d"), Ok(d));
        }
    }

    #[test]
    fn deep_values_are_rejected_not_overflowed() {
        let mut v = serde_json::Value::Null;
        for _ in 0..10_000 {
            v = serde_json::Value::Array(vec![v]);
        }
        assert!(Json::from_value(&v).is_err());
        // Dropping a deep serde_json::Value recurses in serde_json itself; unwind it iteratively.
        let mut cur = v;
        while let serde_json::Value::Array(mut items) = cur {
            cur = items.pop().unwrap_or(serde_json::Value::Null);
        }
    }
}
