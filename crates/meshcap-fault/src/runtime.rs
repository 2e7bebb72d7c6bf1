//! Runtime overrides: the [`Runtime`] trait through which a filter reads Envoy runtime keys, and
//! [`RuntimeSnapshot`], a plain map implementing it.
//!
//! Without a runtime the filter behaves exactly as Envoy with an empty runtime: every key falls back to
//! the configured value.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::config::{Denominator, FractionalPercent};
use crate::random::Random;

/// The value of one runtime key, as Envoy's runtime snapshot classifies entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuntimeValue {
    /// A non-negative number (Envoy floors decimals: `"3.7"` is 3). Read by `getInteger`, and by
    /// `featureEnabled` as a percentage over 100 (any value above 100 always fires).
    Integer(u64),
    /// A `FractionalPercent` (`{"numerator": 5, "denominator": "TEN_THOUSAND"}`); `getInteger` ignores it.
    FractionalPercent(FractionalPercent),
    /// Anything else (booleans, negative numbers, text): ignored by the fault filter's lookups.
    Other,
}

impl FromStr for RuntimeValue {
    type Err = std::convert::Infallible;

    /// Classify a raw runtime string the way Envoy does: `true`/`false` are booleans, numbers that are
    /// non-negative become integers (floored), a JSON `FractionalPercent` object becomes a percentage,
    /// anything else is [`RuntimeValue::Other`].
    fn from_str(raw: &str) -> Result<RuntimeValue, Self::Err> {
        let trimmed = raw.trim();
        if trimmed.eq_ignore_ascii_case("true") || trimmed.eq_ignore_ascii_case("false") {
            return Ok(RuntimeValue::Other);
        }
        if let Ok(f) = trimmed.parse::<f64>()
            && f.is_finite()
            && f >= 0.0
        {
            // Envoy stores the double and the floored integer; values beyond u64 saturate.
            return Ok(RuntimeValue::Integer(f as u64));
        }
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(trimmed) {
            let numerator = map
                .get("numerator")
                .map_or(Some(0), |v| v.as_u64().and_then(|n| u32::try_from(n).ok()));
            let denominator = match map.get("denominator") {
                None => Some(Denominator::Hundred),
                Some(serde_json::Value::String(s)) => {
                    [Denominator::Hundred, Denominator::TenThousand, Denominator::Million]
                        .into_iter()
                        .find(|d| d.name().eq_ignore_ascii_case(s))
                }
                Some(_) => None,
            };
            let only_known = map.keys().all(|k| k == "numerator" || k == "denominator");
            if let (Some(n), Some(d), true) = (numerator, denominator, only_known) {
                return Ok(RuntimeValue::FractionalPercent(FractionalPercent::new(n, d)));
            }
        }
        Ok(RuntimeValue::Other)
    }
}

/// Read access to runtime values (Envoy's runtime snapshot, reduced to what the fault filter reads).
///
/// Implement it over your own runtime layering (RTDS, admin overrides, files) or use [`RuntimeSnapshot`].
/// Lookups happen per request, only for keys the configuration makes relevant.
pub trait Runtime: Send + Sync {
    /// The entry for `key`, if any.
    fn get(&self, key: &str) -> Option<RuntimeValue>;
}

/// Envoy's `Snapshot::getInteger(key, default)`.
pub(crate) fn integer(runtime: Option<&dyn Runtime>, key: &str, default: u64) -> u64 {
    match runtime.and_then(|r| r.get(key)) {
        Some(RuntimeValue::Integer(v)) => v,
        _ => default,
    }
}

/// Envoy's `Snapshot::featureEnabled(key, FractionalPercent default)`.
pub(crate) fn feature_enabled<R: Random + ?Sized>(
    runtime: Option<&dyn Runtime>,
    key: &str,
    default: FractionalPercent,
    rng: &mut R,
) -> bool {
    let percent = match runtime.and_then(|r| r.get(key)) {
        Some(RuntimeValue::FractionalPercent(p)) => p,
        // An integer entry is a percentage over 100 (legacy semantics); above 100 it always fires.
        Some(RuntimeValue::Integer(v)) if v > 100 => return true,
        Some(RuntimeValue::Integer(v)) => FractionalPercent::new(v as u32, Denominator::Hundred),
        _ => default,
    };
    // Skipping the draw for 0 % and 100 %+ changes no outcome, only how many numbers are consumed.
    if percent.is_never() {
        false
    } else if u64::from(percent.numerator()) >= percent.denominator().value() {
        true
    } else {
        percent.sample(rng)
    }
}

/// A runtime snapshot: a map from key to value.
///
/// ```
/// use meshcap_fault::{Runtime, RuntimeSnapshot, RuntimeValue};
///
/// let mut runtime = RuntimeSnapshot::new();
/// runtime.insert("fault.http.abort.abort_percent", "0");
/// runtime.insert("fault.http.frontend.abort.http_status", "429");
/// assert_eq!(runtime.get("fault.http.abort.abort_percent"), Some(RuntimeValue::Integer(0)));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    values: HashMap<String, RuntimeValue>,
}

impl RuntimeSnapshot {
    /// An empty snapshot.
    pub fn new() -> RuntimeSnapshot {
        RuntimeSnapshot::default()
    }

    /// Set `key` from its raw string value, classified as Envoy does (see [`RuntimeValue::from_str`]).
    /// An empty value removes the key, like Envoy's admin layer.
    pub fn insert(&mut self, key: impl Into<String>, raw: &str) {
        let key = key.into();
        if raw.is_empty() {
            self.values.remove(&key);
        } else {
            let value = raw.parse().unwrap_or(RuntimeValue::Other);
            self.values.insert(key, value);
        }
    }

    /// Set `key` to an already classified value.
    pub fn insert_value(&mut self, key: impl Into<String>, value: RuntimeValue) {
        self.values.insert(key.into(), value);
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: &str) -> Option<RuntimeValue> {
        self.values.remove(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Runtime for RuntimeSnapshot {
    fn get(&self, key: &str) -> Option<RuntimeValue> {
        self.values.get(key).copied()
    }
}

impl fmt::Debug for RuntimeSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.values.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_map().entries(keys).finish()
    }
}

impl<K: Into<String>, V: AsRef<str>> FromIterator<(K, V)> for RuntimeSnapshot {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> RuntimeSnapshot {
        let mut snapshot = RuntimeSnapshot::new();
        for (k, v) in iter {
            snapshot.insert(k, v.as_ref());
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::FastRng;

    #[test]
    fn values_are_classified_like_envoy() {
        let v = |s: &str| s.parse::<RuntimeValue>().unwrap();
        assert_eq!(v("5"), RuntimeValue::Integer(5));
        assert_eq!(v(" 3.7 "), RuntimeValue::Integer(3));
        assert_eq!(v("1e3"), RuntimeValue::Integer(1000));
        assert_eq!(v("-1"), RuntimeValue::Other);
        assert_eq!(v("true"), RuntimeValue::Other);
        assert_eq!(v("abc"), RuntimeValue::Other);
        assert_eq!(
            v(r#"{"numerator": 5, "denominator": "TEN_THOUSAND"}"#),
            RuntimeValue::FractionalPercent(FractionalPercent::new(5, Denominator::TenThousand))
        );
        assert_eq!(v(r#"{"numerator": 5, "bogus": 1}"#), RuntimeValue::Other);
    }

    #[test]
    fn feature_enabled_follows_envoy_semantics() {
        let mut rng = FastRng::seed_from_u64(3);
        let never = FractionalPercent::new(0, Denominator::Hundred);
        let always = FractionalPercent::new(100, Denominator::Hundred);
        assert!(!feature_enabled(None, "k", never, &mut rng));
        assert!(feature_enabled(None, "k", always, &mut rng));
        let rt: RuntimeSnapshot = [("on", "101"), ("off", "0"), ("hundred", "100")].into_iter().collect();
        assert!(feature_enabled(Some(&rt), "on", never, &mut rng));
        assert!(!feature_enabled(Some(&rt), "off", always, &mut rng));
        assert!(feature_enabled(Some(&rt), "hundred", never, &mut rng));
        assert!(feature_enabled(Some(&rt), "missing", always, &mut rng));
        assert_eq!(integer(Some(&rt), "on", 7), 101);
        assert_eq!(integer(Some(&rt), "missing", 7), 7);
        assert_eq!(integer(None, "on", 7), 7);
    }
}
