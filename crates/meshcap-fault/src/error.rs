//! The configuration error type.

use std::fmt;

/// A fault filter configuration Envoy would reject, with the path of the offending field.
///
/// The path uses the proto field names (`abort.http_status`, `headers[0].string_match.prefix`); it is
/// empty for errors about the document as a whole.
///
/// ```
/// use meshcap_fault::{ConfigErrorKind, FaultConfig};
///
/// let err = FaultConfig::from_json(r#"{"abort": {"http_status": 600}}"#).unwrap_err();
/// assert_eq!(err.path(), "abort.http_status");
/// assert!(matches!(err.kind(), ConfigErrorKind::OutOfRange { .. }));
/// assert_eq!(err.to_string(), "fault filter config `abort.http_status`: value 600 must be inside range [200, 600)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    kind: ConfigErrorKind,
}

/// What is wrong with a fault filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// `@type` names another message.
    #[error("unexpected type URL `{0}`")]
    TypeUrl(String),
    /// A field the message does not have (including removed v2 fields such as `delay.type`).
    #[error("unknown field")]
    UnknownField,
    /// The JSON value has the wrong type or cannot be read as the field's type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the field needs, e.g. `uint32`.
        expected: &'static str,
        /// The offending JSON value.
        found: String,
    },
    /// An enum name or number that does not exist.
    #[error("unknown enum value `{0}`")]
    UnknownEnumValue(String),
    /// A number outside the field's range.
    #[error("value {value} must be inside range {range}")]
    OutOfRange {
        /// The offending value.
        value: String,
        /// The allowed range, e.g. `[200, 600)`.
        range: &'static str,
    },
    /// A constraint on the value failed (`must be greater than 0s`, length at least 1, …).
    #[error("value {value} {constraint}")]
    Constraint {
        /// The offending value.
        value: String,
        /// The constraint, worded like Envoy's validation message.
        constraint: &'static str,
    },
    /// A required `oneof` has no member set.
    #[error("one of {members} is required (oneof `{oneof}`)")]
    OneofRequired {
        /// The oneof's name, e.g. `error_type`.
        oneof: &'static str,
        /// Its members, e.g. `http_status, grpc_status, header_abort`.
        members: &'static str,
    },
    /// A second member (or the same member twice) of a `oneof` was set.
    #[error("already set (directly or as part of oneof `{oneof}`)")]
    OneofAlreadySet {
        /// The oneof's name.
        oneof: &'static str,
    },
    /// A duration Envoy cannot represent (negative, or beyond its nanosecond range).
    #[error("invalid duration {0}")]
    InvalidDuration(String),
    /// A regular expression that does not compile.
    #[error("invalid regex `{regex}`: {message}")]
    Regex {
        /// The pattern.
        regex: String,
        /// Why it does not compile.
        message: String,
    },
    /// A feature Envoy supports through an extension this crate does not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            path: path.into(),
            kind,
        }
    }

    /// The path of the offending field (`abort.http_status`), empty for the whole document.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "fault filter config: {}", self.kind)
        } else {
            write!(f, "fault filter config `{}`: {}", self.path, self.kind)
        }
    }
}

impl std::error::Error for ConfigError {}
