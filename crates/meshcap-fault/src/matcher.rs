//! Envoy's route `HeaderMatcher` (`envoy.config.route.v3.HeaderMatcher`) and `StringMatcher`, as the fault
//! filter's `headers` field uses them: parsing with Envoy's validation, constructors with the same
//! validation, matching with Envoy's rules, and printing as Envoy prints them.

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::headers::{RequestHeaders, all_values, parse_i64};
use crate::json::{Json, boolean, child, field_of, int64, object, string, uint32_wrapper, unknown_field};

/// Compiled-program size cap for header regexes. Envoy caps RE2 programs at 100 instructions by default,
/// which the `regex` crate cannot measure; this bound only keeps hostile configs from using much memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One entry of the fault filter's `headers` list: a condition on one request header.
///
/// All matchers of a filter must match for a request to be eligible. Matching follows Envoy:
/// repeated headers are joined with `,` before matching; an absent header matches only
/// `present_match: false` (or, inverted, `present_match: true`) unless `treat_missing_header_as_empty`
/// is set; `invert_match` negates the result; regexes (RE2 syntax, `regex` crate semantics) must match
/// the whole value. The matcher keeps the form it was configured with (name case, which specifier),
/// so it prints back as Envoy prints it.
///
/// ```
/// use meshcap_fault::{FaultConfig, HeaderMatcher, StringMatcher};
///
/// // The matcher Kuma emits for a `from` targetRef on service `frontend`.
/// let config = FaultConfig::from_json(r#"{"headers": [{"name": "x-kuma-tags",
///     "string_match": {"safe_regex": {"regex": ".*&kuma.io/service=[^&]*frontend[,&].*"}}}]}"#)?;
/// let matcher = &config.headers()[0];
/// assert!(matcher.matches(&[("x-kuma-tags", "&kuma.io/service=frontend&")]));
/// assert!(!matcher.matches(&[("x-kuma-tags", "&kuma.io/service=backend&")]));
///
/// // The same matcher built directly.
/// let built = HeaderMatcher::new(
///     "x-kuma-tags",
///     StringMatcher::safe_regex(".*&kuma.io/service=[^&]*frontend[,&].*")?,
/// )?;
/// assert_eq!(&built, matcher);
/// # Ok::<(), meshcap_fault::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// The name as configured (printed back as is).
    name: String,
    /// The name lower-cased, as headers are looked up.
    key: String,
    spec: Spec,
    invert: bool,
    treat_missing_as_empty: bool,
}

/// The `header_match_specifier` oneof.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    /// No specifier: the header must be present.
    Unset,
    /// `exact_match`; an empty value matches any present header.
    Exact(String),
    Regex(RegexMatcher),
    /// `range_match`: `[start, end)`.
    Range(i64, i64),
    Present(bool),
    Prefix(String),
    Suffix(String),
    Contains(String),
    String(StringMatcher),
}

/// Envoy's `envoy.type.matcher.v3.StringMatcher` (without the `custom` extension).
///
/// ```
/// use meshcap_fault::StringMatcher;
///
/// let m = StringMatcher::prefix("Bearer ")?.ignoring_case()?;
/// assert!(m.matches(b"bearer xyz"));
/// assert!(StringMatcher::safe_regex("a+")?.matches(b"aaa"));
/// assert!(StringMatcher::safe_regex("a+")?.ignoring_case().is_err());
/// # Ok::<(), meshcap_fault::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringMatcher {
    pattern: Pattern,
    ignore_case: bool,
    /// With `ignore_case`, the literal pattern lower-cased once (as Envoy does); empty otherwise.
    folded: Vec<u8>,
}

/// The `match_pattern` oneof (the pattern as configured).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(RegexMatcher),
}

/// `envoy.type.matcher.v3.RegexMatcher`: a regex compiled for whole-value matching, keeping its source
/// (and the deprecated `google_re2` engine message, when given) for display and printing.
#[derive(Clone)]
struct RegexMatcher {
    source: String,
    full: Regex,
    /// `google_re2`: `None` when absent, `Some(max_program_size)` when present.
    google_re2: Option<Option<u32>>,
}

impl fmt::Debug for RegexMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.source).finish()
    }
}

impl PartialEq for RegexMatcher {
    fn eq(&self, other: &RegexMatcher) -> bool {
        // The compiled program is a function of the source.
        self.source == other.source && self.google_re2 == other.google_re2
    }
}

impl Eq for RegexMatcher {}

impl RegexMatcher {
    /// Compile `source`; `path` names the `regex` field in errors.
    fn new(source: String, path: &str) -> Result<RegexMatcher, ConfigError> {
        if source.is_empty() {
            return Err(empty_string(path));
        }
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
        Ok(RegexMatcher {
            source,
            full,
            google_re2: None,
        })
    }

    /// `{"regex": "...", "google_re2": {"max_program_size": n}}`.
    fn parse(value: &Json, path: &str) -> Result<RegexMatcher, ConfigError> {
        let mut regex = String::new();
        let mut google_re2 = None;
        for (key, v) in object(value, path)? {
            match field_of(key, &["regex", "google_re2"]) {
                _ if matches!(v, Json::Null) => {}
                Some("regex") => regex = string(v, &child(path, "regex"))?,
                Some(_) => {
                    // Deprecated. Envoy still honours `max_program_size`; this crate cannot measure RE2
                    // programs, so it only keeps the value for printing (see the crate docs).
                    let sub = child(path, "google_re2");
                    let mut max_program_size = google_re2.flatten();
                    for (k, mv) in object(v, &sub)? {
                        match field_of(k, &["max_program_size"]) {
                            _ if matches!(mv, Json::Null) => {}
                            Some(_) => max_program_size = uint32_wrapper(mv, &child(&sub, "max_program_size"))?,
                            None => return Err(unknown_field(&sub, k)),
                        }
                    }
                    google_re2 = Some(max_program_size);
                }
                None => return Err(unknown_field(path, key)),
            }
        }
        let mut matcher = RegexMatcher::new(regex, &child(path, "regex"))?;
        matcher.google_re2 = google_re2;
        Ok(matcher)
    }

    fn is_match(&self, value: &[u8]) -> bool {
        self.full.is_match(value)
    }
}

impl Serialize for RegexMatcher {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // google_re2 1, regex 2.
        let mut map = serializer.serialize_map(None)?;
        if let Some(max_program_size) = self.google_re2 {
            map.serialize_entry("google_re2", &GoogleRe2(max_program_size))?;
        }
        map.serialize_entry("regex", &self.source)?;
        map.end()
    }
}

struct GoogleRe2(Option<u32>);

impl Serialize for GoogleRe2 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(n) = self.0 {
            // A UInt32Value prints as its bare number.
            map.serialize_entry("max_program_size", &n)?;
        }
        map.end()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn empty_string(path: &str) -> ConfigError {
    ConfigError::new(
        path,
        ConfigErrorKind::Constraint {
            value: "\"\"".into(),
            constraint: "length must be at least 1 characters",
        },
    )
}

fn non_empty(value: String, path: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(empty_string(path));
    }
    Ok(value)
}

/// Envoy's constraint on header names (`HTTP_HEADER_NAME`, not strict): not empty, no NUL, CR or LF.
fn check_name(name: &str, path: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(empty_string(path));
    }
    if name.contains(['\0', '\r', '\n']) {
        return Err(ConfigError::new(
            path,
            ConfigErrorKind::Constraint {
                value: format!("{name:?}"),
                constraint: "must not contain NUL, CR or LF",
            },
        ));
    }
    Ok(())
}

fn already_set(path: &str, oneof: &'static str) -> ConfigError {
    ConfigError::new(path, ConfigErrorKind::OneofAlreadySet { oneof })
}

impl StringMatcher {
    fn with_pattern(pattern: Pattern) -> StringMatcher {
        StringMatcher {
            pattern,
            ignore_case: false,
            folded: Vec::new(),
        }
    }

    /// `exact`: the whole value equals `value` (which may be empty).
    pub fn exact(value: impl Into<String>) -> StringMatcher {
        StringMatcher::with_pattern(Pattern::Exact(value.into()))
    }

    /// `prefix`: the value starts with `value`.
    ///
    /// # Errors
    /// An empty `value` (Envoy: length must be at least 1), at path `prefix`.
    pub fn prefix(value: impl Into<String>) -> Result<StringMatcher, ConfigError> {
        Ok(StringMatcher::with_pattern(Pattern::Prefix(non_empty(
            value.into(),
            "prefix",
        )?)))
    }

    /// `suffix`: the value ends with `value`.
    ///
    /// # Errors
    /// An empty `value`, at path `suffix`.
    pub fn suffix(value: impl Into<String>) -> Result<StringMatcher, ConfigError> {
        Ok(StringMatcher::with_pattern(Pattern::Suffix(non_empty(
            value.into(),
            "suffix",
        )?)))
    }

    /// `contains`: the value contains `value`.
    ///
    /// # Errors
    /// An empty `value`, at path `contains`.
    pub fn contains(value: impl Into<String>) -> Result<StringMatcher, ConfigError> {
        Ok(StringMatcher::with_pattern(Pattern::Contains(non_empty(
            value.into(),
            "contains",
        )?)))
    }

    /// `safe_regex`: the whole value matches `regex` (RE2 syntax, `regex` crate semantics).
    ///
    /// # Errors
    /// An empty regex or one that does not compile, at path `safe_regex.regex`.
    pub fn safe_regex(regex: impl Into<String>) -> Result<StringMatcher, ConfigError> {
        Ok(StringMatcher::with_pattern(Pattern::Regex(RegexMatcher::new(
            regex.into(),
            "safe_regex.regex",
        )?)))
    }

    /// The same matcher, comparing ASCII case-insensitively (`ignore_case`).
    ///
    /// # Errors
    /// A `safe_regex` matcher (Envoy rejects `ignore_case` there), at path `ignore_case`.
    pub fn ignoring_case(self) -> Result<StringMatcher, ConfigError> {
        self.with_ignore_case(true, "ignore_case")
    }

    fn with_ignore_case(mut self, ignore_case: bool, path: &str) -> Result<StringMatcher, ConfigError> {
        if !ignore_case {
            return Ok(self);
        }
        let literal = match &self.pattern {
            Pattern::Exact(p) | Pattern::Prefix(p) | Pattern::Suffix(p) | Pattern::Contains(p) => p,
            Pattern::Regex(_) => {
                return Err(ConfigError::new(
                    path,
                    ConfigErrorKind::Constraint {
                        value: "true".into(),
                        constraint: "has no effect for safe_regex",
                    },
                ));
            }
        };
        // Envoy lower-cases the pattern once and the value per match.
        self.folded = literal.as_bytes().to_ascii_lowercase();
        self.ignore_case = true;
        Ok(self)
    }

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
                "exact" => Pattern::Exact(string(v, &p)?),
                "prefix" => Pattern::Prefix(non_empty(string(v, &p)?, &p)?),
                "suffix" => Pattern::Suffix(non_empty(string(v, &p)?, &p)?),
                "contains" => Pattern::Contains(non_empty(string(v, &p)?, &p)?),
                "safe_regex" => Pattern::Regex(RegexMatcher::parse(v, &p)?),
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
        StringMatcher::with_pattern(pattern).with_ignore_case(ignore_case, &child(path, "ignore_case"))
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
            Pattern::Exact(p) => value == self.literal(p),
            Pattern::Prefix(p) => value.starts_with(self.literal(p)),
            Pattern::Suffix(p) => value.ends_with(self.literal(p)),
            Pattern::Contains(p) => contains(value, self.literal(p)),
            Pattern::Regex(r) => r.is_match(value),
        }
    }

    /// A literal pattern as matched: folded under `ignore_case`.
    fn literal<'a>(&'a self, pattern: &'a str) -> &'a [u8] {
        if self.ignore_case {
            &self.folded
        } else {
            pattern.as_bytes()
        }
    }
}

impl Serialize for StringMatcher {
    /// Envoy's JSON for the message (fields in protobuf order, defaults omitted).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // exact 1, prefix 2, suffix 3, safe_regex 5, ignore_case 6, contains 7.
        let mut map = serializer.serialize_map(None)?;
        match &self.pattern {
            Pattern::Exact(v) => map.serialize_entry("exact", v)?,
            Pattern::Prefix(v) => map.serialize_entry("prefix", v)?,
            Pattern::Suffix(v) => map.serialize_entry("suffix", v)?,
            Pattern::Regex(r) => map.serialize_entry("safe_regex", r)?,
            Pattern::Contains(_) => {}
        }
        if self.ignore_case {
            map.serialize_entry("ignore_case", &true)?;
        }
        if let Pattern::Contains(v) = &self.pattern {
            map.serialize_entry("contains", v)?;
        }
        map.end()
    }
}

impl HeaderMatcher {
    fn with_spec(name: String, spec: Spec) -> Result<HeaderMatcher, ConfigError> {
        check_name(&name, "name")?;
        Ok(HeaderMatcher {
            key: name.to_ascii_lowercase(),
            name,
            spec,
            invert: false,
            treat_missing_as_empty: false,
        })
    }

    /// A matcher on header `name` whose (comma-joined) value must satisfy `matcher` (`string_match`).
    ///
    /// # Errors
    /// A `name` Envoy rejects (empty, or containing NUL, CR or LF), at path `name`.
    pub fn new(name: impl Into<String>, matcher: StringMatcher) -> Result<HeaderMatcher, ConfigError> {
        HeaderMatcher::with_spec(name.into(), Spec::String(matcher))
    }

    /// A matcher on whether header `name` is present (`present_match`).
    ///
    /// # Errors
    /// As [`HeaderMatcher::new`].
    pub fn present(name: impl Into<String>, present: bool) -> Result<HeaderMatcher, ConfigError> {
        HeaderMatcher::with_spec(name.into(), Spec::Present(present))
    }

    /// A matcher on header `name` holding an integer in `[start, end)` (`range_match`).
    ///
    /// # Errors
    /// As [`HeaderMatcher::new`].
    pub fn range(name: impl Into<String>, start: i64, end: i64) -> Result<HeaderMatcher, ConfigError> {
        HeaderMatcher::with_spec(name.into(), Spec::Range(start, end))
    }

    /// The same matcher with the result negated (`invert_match`).
    #[must_use]
    pub fn inverted(mut self) -> HeaderMatcher {
        self.invert = !self.invert;
        self
    }

    /// The same matcher, treating an absent header as an empty value (`treat_missing_header_as_empty`).
    #[must_use]
    pub fn treating_missing_as_empty(mut self) -> HeaderMatcher {
        self.treat_missing_as_empty = true;
        self
    }

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
                        "exact_match" => Spec::Exact(string(v, &p)?),
                        "safe_regex_match" => Spec::Regex(RegexMatcher::parse(v, &p)?),
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
        check_name(&name, &child(path, "name"))?;
        Ok(HeaderMatcher {
            key: name.to_ascii_lowercase(),
            name,
            spec: spec.unwrap_or(Spec::Unset),
            invert,
            treat_missing_as_empty,
        })
    }

    /// The header name, as configured (matching ignores ASCII case).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `invert_match` is set.
    pub fn is_inverted(&self) -> bool {
        self.invert
    }

    /// Whether `treat_missing_header_as_empty` is set.
    pub fn treats_missing_as_empty(&self) -> bool {
        self.treat_missing_as_empty
    }

    /// Whether the request's headers satisfy this matcher.
    pub fn matches<H: RequestHeaders + ?Sized>(&self, headers: &H) -> bool {
        let value = all_values(headers, &self.key);
        if value.is_none() && !self.treat_missing_as_empty {
            let present_spec = match self.spec {
                // No specifier means "the header is present".
                Spec::Unset => Some(true),
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
            Spec::Unset => true,
            Spec::Exact(v) => v.is_empty() || value == v.as_bytes(),
            Spec::Regex(r) => r.is_match(value),
            Spec::Range(start, end) => parse_i64(value).is_some_and(|i| i >= *start && i < *end),
            Spec::Present(p) => *p,
            Spec::Prefix(p) => value.starts_with(p.as_bytes()),
            Spec::Suffix(p) => value.ends_with(p.as_bytes()),
            Spec::Contains(p) => contains(value, p.as_bytes()),
            Spec::String(m) => m.matches(value),
        };
        matched != self.invert
    }
}

impl Serialize for HeaderMatcher {
    /// Envoy's JSON for the message (fields in protobuf order, defaults omitted, the oneof member printed
    /// even when it holds its type's default).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // name 1, exact_match 4, range_match 6, present_match 7, invert_match 8, prefix_match 9,
        // suffix_match 10, safe_regex_match 11, contains_match 12, string_match 13,
        // treat_missing_header_as_empty 14.
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        match &self.spec {
            Spec::Exact(v) => map.serialize_entry("exact_match", v)?,
            Spec::Range(start, end) => map.serialize_entry("range_match", &Int64Range(*start, *end))?,
            Spec::Present(p) => map.serialize_entry("present_match", p)?,
            _ => {}
        }
        if self.invert {
            map.serialize_entry("invert_match", &true)?;
        }
        match &self.spec {
            Spec::Prefix(v) => map.serialize_entry("prefix_match", v)?,
            Spec::Suffix(v) => map.serialize_entry("suffix_match", v)?,
            Spec::Regex(r) => map.serialize_entry("safe_regex_match", r)?,
            Spec::Contains(v) => map.serialize_entry("contains_match", v)?,
            Spec::String(m) => map.serialize_entry("string_match", m)?,
            _ => {}
        }
        if self.treat_missing_as_empty {
            map.serialize_entry("treat_missing_header_as_empty", &true)?;
        }
        map.end()
    }
}

/// `envoy.type.v3.Int64Range`: int64 prints as a string in protobuf JSON; zero is omitted.
struct Int64Range(i64, i64);

impl Serialize for Int64Range {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.0 != 0 {
            map.serialize_entry("start", &self.0.to_string())?;
        }
        if self.1 != 0 {
            map.serialize_entry("end", &self.1.to_string())?;
        }
        map.end()
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
