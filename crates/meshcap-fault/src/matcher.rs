//! Envoy's route `HeaderMatcher` (`envoy.config.route.v3.HeaderMatcher`) and `StringMatcher`, as the fault
//! filter's `headers` field uses them: parsing with Envoy's validation, and matching with Envoy's rules.

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::headers::{RequestHeaders, all_values, parse_i64};
use crate::json::{Json, boolean, child, field_of, int64, object, string, unknown_field};

/// Compiled-program size cap for header regexes. Envoy caps RE2 programs at 100 instructions by default,
/// which the `regex` crate cannot measure; this bound only keeps hostile configs from using much memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One entry of the fault filter's `headers` list: a condition on one request header.
///
/// All matchers of a filter must match for a request to be eligible. Matching follows Envoy:
/// repeated headers are joined with `,` before matching; an absent header matches only
/// `present_match: false` (or, inverted, `present_match: true`) unless `treat_missing_header_as_empty`
/// is set; `invert_match` negates the result; regexes (RE2 syntax, `regex` crate semantics) must match
/// the whole value.
///
/// ```
/// use meshcap_fault::FaultConfig;
///
/// // The matcher Kuma emits for a `from` targetRef on service `frontend`.
/// let config = FaultConfig::from_json(r#"{"headers": [{"name": "x-kuma-tags",
///     "safe_regex_match": {"regex": ".*&kuma.io/service=[^&]*frontend[,&].*"}}]}"#)?;
/// let matcher = &config.headers()[0];
/// assert!(matcher.matches(&[("x-kuma-tags", "&kuma.io/service=frontend&")]));
/// assert!(!matcher.matches(&[("x-kuma-tags", "&kuma.io/service=backend&")]));
/// # Ok::<(), meshcap_fault::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: String,
    spec: Spec,
    invert: bool,
    treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
enum Spec {
    /// `exact_match`; an empty value matches any present header.
    Exact(Vec<u8>),
    Regex(CompiledRegex),
    /// `range_match`: `[start, end)`.
    Range(i64, i64),
    Present(bool),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Contains(Vec<u8>),
    String(StringMatcher),
}

/// Envoy's `envoy.type.matcher.v3.StringMatcher` (without the `custom` extension).
#[derive(Debug, Clone)]
pub struct StringMatcher {
    pattern: Pattern,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Contains(Vec<u8>),
    Regex(CompiledRegex),
}

/// A regex compiled for whole-value matching, keeping its source for display.
#[derive(Clone)]
struct CompiledRegex {
    source: String,
    full: Regex,
}

impl fmt::Debug for CompiledRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.source).finish()
    }
}

impl CompiledRegex {
    fn new(source: String, path: &str) -> Result<CompiledRegex, ConfigError> {
        let build = |pattern: &str| RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build();
        let err = |e: regex::Error| {
            ConfigError::new(
                path,
                ConfigErrorKind::Regex {
                    regex: source.clone(),
                    message: e.to_string(),
                },
            )
        };
        // Compile the pattern alone first, so that wrapping cannot make an invalid pattern valid
        // (`a)(b` is invalid, `\A(?:a)(b)\z` would not be).
        build(&source).map_err(err)?;
        let full = build(&format!(r"\A(?:{source})\z")).map_err(err)?;
        Ok(CompiledRegex { source, full })
    }

    fn is_match(&self, value: &[u8]) -> bool {
        self.full.is_match(value)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn non_empty(value: String, path: &str) -> Result<Vec<u8>, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(
            path,
            ConfigErrorKind::Constraint {
                value: "\"\"".into(),
                constraint: "length must be at least 1 characters",
            },
        ));
    }
    Ok(value.into_bytes())
}

fn already_set(path: &str, oneof: &'static str) -> ConfigError {
    ConfigError::new(path, ConfigErrorKind::OneofAlreadySet { oneof })
}

/// `envoy.type.matcher.v3.RegexMatcher`: `{"regex": "...", "google_re2": {}}`.
fn regex_matcher(value: &Json, path: &str) -> Result<CompiledRegex, ConfigError> {
    let mut regex = String::new();
    for (key, v) in object(value, path)? {
        match field_of(key, &["regex", "google_re2"]) {
            _ if matches!(v, Json::Null) => {}
            Some("regex") => regex = string(v, &child(path, "regex"))?,
            Some(_) => {
                // Deprecated and empty except for the removed max_program_size.
                let sub = child(path, "google_re2");
                if let Some((k, _)) = object(v, &sub)?.first() {
                    return Err(unknown_field(&sub, k));
                }
            }
            None => return Err(unknown_field(path, key)),
        }
    }
    let regex_path = child(path, "regex");
    let regex = String::from_utf8(non_empty(regex, &regex_path)?).unwrap_or_default();
    CompiledRegex::new(regex, &regex_path)
}

impl StringMatcher {
    fn parse(value: &Json, path: &str) -> Result<StringMatcher, ConfigError> {
        const FIELDS: &[&str] = &[
            "exact",
            "prefix",
            "suffix",
            "safe_regex",
            "contains",
            "custom",
            "ignore_case",
        ];
        let mut pattern = None;
        let mut ignore_case = false;
        for (key, v) in object(value, path)? {
            let Some(field) = field_of(key, FIELDS) else {
                return Err(unknown_field(path, key));
            };
            if matches!(v, Json::Null) {
                continue;
            }
            let p = child(path, field);
            if field == "ignore_case" {
                ignore_case = boolean(v, &p)?;
                continue;
            }
            if pattern.is_some() {
                return Err(already_set(&p, "match_pattern"));
            }
            pattern = Some(match field {
                "exact" => Pattern::Exact(string(v, &p)?.into_bytes()),
                "prefix" => Pattern::Prefix(non_empty(string(v, &p)?, &p)?),
                "suffix" => Pattern::Suffix(non_empty(string(v, &p)?, &p)?),
                "contains" => Pattern::Contains(non_empty(string(v, &p)?, &p)?),
                "safe_regex" => Pattern::Regex(regex_matcher(v, &p)?),
                _ => {
                    return Err(ConfigError::new(
                        p,
                        ConfigErrorKind::Unsupported("custom string matcher extensions"),
                    ));
                }
            });
        }
        let pattern = pattern.ok_or_else(|| {
            ConfigError::new(
                path,
                ConfigErrorKind::OneofRequired {
                    oneof: "match_pattern",
                    members: "exact, prefix, suffix, safe_regex, contains, custom",
                },
            )
        })?;
        if ignore_case && matches!(pattern, Pattern::Regex(_)) {
            return Err(ConfigError::new(
                child(path, "ignore_case"),
                ConfigErrorKind::Constraint {
                    value: "true".into(),
                    constraint: "has no effect for safe_regex",
                },
            ));
        }
        let mut pattern = pattern;
        if ignore_case {
            // Envoy lower-cases the pattern once and the value per match.
            if let Pattern::Exact(p) | Pattern::Prefix(p) | Pattern::Suffix(p) | Pattern::Contains(p) = &mut pattern {
                p.make_ascii_lowercase();
            }
        }
        Ok(StringMatcher { pattern, ignore_case })
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &[u8]) -> bool {
        let folded;
        let value = if self.ignore_case && value.iter().any(u8::is_ascii_uppercase) {
            folded = value.to_ascii_lowercase();
            &folded[..]
        } else {
            value
        };
        match &self.pattern {
            Pattern::Exact(p) => value == &p[..],
            Pattern::Prefix(p) => value.starts_with(p),
            Pattern::Suffix(p) => value.ends_with(p),
            Pattern::Contains(p) => contains(value, p),
            Pattern::Regex(r) => r.is_match(value),
        }
    }
}

impl HeaderMatcher {
    pub(crate) fn parse(value: &Json, path: &str) -> Result<HeaderMatcher, ConfigError> {
        const FIELDS: &[&str] = &[
            "name",
            "exact_match",
            "safe_regex_match",
            "range_match",
            "present_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "string_match",
            "invert_match",
            "treat_missing_header_as_empty",
        ];
        let mut name = String::new();
        let mut spec = None;
        let mut invert = false;
        let mut treat_missing_as_empty = false;
        for (key, v) in object(value, path)? {
            let Some(field) = field_of(key, FIELDS) else {
                return Err(unknown_field(path, key));
            };
            if matches!(v, Json::Null) {
                continue;
            }
            let p = child(path, field);
            match field {
                "name" => name = string(v, &p)?,
                "invert_match" => invert = boolean(v, &p)?,
                "treat_missing_header_as_empty" => treat_missing_as_empty = boolean(v, &p)?,
                _ => {
                    if spec.is_some() {
                        return Err(already_set(&p, "header_match_specifier"));
                    }
                    spec = Some(match field {
                        "exact_match" => Spec::Exact(string(v, &p)?.into_bytes()),
                        "safe_regex_match" => Spec::Regex(regex_matcher(v, &p)?),
                        "range_match" => {
                            let (mut start, mut end) = (0, 0);
                            for (k, rv) in object(v, &p)? {
                                match field_of(k, &["start", "end"]) {
                                    _ if matches!(rv, Json::Null) => {}
                                    Some("start") => start = int64(rv, &child(&p, "start"))?,
                                    Some(_) => end = int64(rv, &child(&p, "end"))?,
                                    None => return Err(unknown_field(&p, k)),
                                }
                            }
                            Spec::Range(start, end)
                        }
                        "present_match" => Spec::Present(boolean(v, &p)?),
                        "prefix_match" => Spec::Prefix(non_empty(string(v, &p)?, &p)?),
                        "suffix_match" => Spec::Suffix(non_empty(string(v, &p)?, &p)?),
                        "contains_match" => Spec::Contains(non_empty(string(v, &p)?, &p)?),
                        _ => Spec::String(StringMatcher::parse(v, &p)?),
                    });
                }
            }
        }
        if name.is_empty() {
            return Err(ConfigError::new(
                child(path, "name"),
                ConfigErrorKind::Constraint {
                    value: "\"\"".into(),
                    constraint: "length must be at least 1 characters",
                },
            ));
        }
        Ok(HeaderMatcher {
            name: name.to_ascii_lowercase(),
            // No specifier means "the header is present".
            spec: spec.unwrap_or(Spec::Present(true)),
            invert,
            treat_missing_as_empty,
        })
    }

    /// The (lower-cased) header name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `invert_match` is set.
    pub fn is_inverted(&self) -> bool {
        self.invert
    }

    /// Whether the request's headers satisfy this matcher.
    pub fn matches<H: RequestHeaders + ?Sized>(&self, headers: &H) -> bool {
        let value = all_values(headers, &self.name);
        if value.is_none() && !self.treat_missing_as_empty {
            let present_spec = match self.spec {
                Spec::Present(p) => Some(p),
                _ => None,
            };
            return if self.invert {
                present_spec == Some(true)
            } else {
                present_spec == Some(false)
            };
        }
        let value = value.as_deref().unwrap_or(b"");
        let matched = match &self.spec {
            Spec::Exact(v) => v.is_empty() || value == &v[..],
            Spec::Regex(r) => r.is_match(value),
            Spec::Range(start, end) => parse_i64(value).is_some_and(|i| i >= *start && i < *end),
            Spec::Present(p) => *p,
            Spec::Prefix(p) => value.starts_with(p),
            Spec::Suffix(p) => value.ends_with(p),
            Spec::Contains(p) => contains(value, p),
            Spec::String(m) => m.matches(value),
        };
        matched != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(json: &str) -> HeaderMatcher {
        HeaderMatcher::parse(&Json::parse(json).unwrap(), "headers[0]").unwrap()
    }

    #[test]
    fn absent_headers_follow_envoy_present_rules() {
        let none: [(&str, &str); 0] = [];
        assert!(!matcher(r#"{"name": "x-a", "exact_match": "v"}"#).matches(&none));
        assert!(!matcher(r#"{"name": "x-a", "exact_match": "v", "invert_match": true}"#).matches(&none));
        assert!(matcher(r#"{"name": "x-a", "present_match": false}"#).matches(&none));
        assert!(!matcher(r#"{"name": "x-a", "present_match": true}"#).matches(&none));
        assert!(matcher(r#"{"name": "x-a", "present_match": true, "invert_match": true}"#).matches(&none));
        assert!(!matcher(r#"{"name": "x-a"}"#).matches(&none));
        assert!(
            matcher(r#"{"name": "x-a", "string_match": {"exact": ""}, "treat_missing_header_as_empty": true}"#)
                .matches(&none)
        );
    }

    #[test]
    fn present_headers_match_each_kind() {
        let h = [("X-A", "Hello-World"), ("x-n", "-5")];
        assert!(matcher(r#"{"name": "x-a", "exact_match": "Hello-World"}"#).matches(&h));
        assert!(matcher(r#"{"name": "X-A", "exact_match": ""}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-a", "prefix_match": "Hello"}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-a", "suffix_match": "World"}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-a", "contains_match": "o-W"}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-a", "safe_regex_match": {"regex": "H.*d"}}"#).matches(&h));
        assert!(!matcher(r#"{"name": "x-a", "safe_regex_match": {"regex": "Hello"}}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-n", "range_match": {"start": -10, "end": "-4"}}"#).matches(&h));
        assert!(!matcher(r#"{"name": "x-n", "range_match": {"start": -5, "end": -5}}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-a", "string_match": {"prefix": "hello", "ignore_case": true}}"#).matches(&h));
        assert!(!matcher(r#"{"name": "x-a", "string_match": {"prefix": "hello"}}"#).matches(&h));
        assert!(matcher(r#"{"name": "x-a", "string_match": {"contains": "O-w", "ignore_case": true}}"#).matches(&h));
        assert!(!matcher(r#"{"name": "x-a", "prefix_match": "Hello", "invert_match": true}"#).matches(&h));
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let h = [("x-a", "a"), ("x-a", "b")];
        assert!(matcher(r#"{"name": "x-a", "exact_match": "a,b"}"#).matches(&h));
        assert!(!matcher(r#"{"name": "x-a", "exact_match": "a"}"#).matches(&h));
    }

    #[test]
    fn validation_matches_envoy() {
        let err = |json: &str| HeaderMatcher::parse(&Json::parse(json).unwrap(), "headers[0]").unwrap_err();
        assert_eq!(err(r#"{"exact_match": "v"}"#).path(), "headers[0].name");
        assert_eq!(
            err(r#"{"name": "x", "prefix_match": ""}"#).path(),
            "headers[0].prefix_match"
        );
        assert_eq!(
            err(r#"{"name": "x", "safe_regex_match": {}}"#).path(),
            "headers[0].safe_regex_match.regex"
        );
        assert!(matches!(
            err(r#"{"name": "x", "safe_regex_match": {"regex": "(a"}}"#).kind(),
            ConfigErrorKind::Regex { .. }
        ));
        assert!(matches!(
            err(r#"{"name": "x", "safe_regex_match": {"regex": "a)(b"}}"#).kind(),
            ConfigErrorKind::Regex { .. }
        ));
        assert!(matches!(
            err(r#"{"name": "x", "present_match": true, "exact_match": "v"}"#).kind(),
            ConfigErrorKind::OneofAlreadySet { .. }
        ));
        assert_eq!(
            err(r#"{"name": "x", "string_match": {"safe_regex": {"regex": "a"}, "ignore_case": true}}"#).path(),
            "headers[0].string_match.ignore_case"
        );
        assert!(matches!(
            err(r#"{"name": "x", "string_match": {}}"#).kind(),
            ConfigErrorKind::OneofRequired { .. }
        ));
        assert!(matches!(
            err(r#"{"name": "x", "regex_match": "a"}"#).kind(),
            ConfigErrorKind::UnknownField
        ));
    }
}
