//! Errors: parse errors (with line and column) and validation errors (with the field path).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The text formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// YAML (one document).
    Yaml,
    /// JSON.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        })
    }
}

/// Everything that can go wrong turning text into a model or a model into Envoy resources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not well-formed, or does not have the resource's shape (unknown field, wrong type,
    /// missing required field). The message carries the line and column.
    #[error("invalid {what} {format}: {message}")]
    Parse {
        /// What was being read (`dataplane`, `policy`, `http fault`).
        what: &'static str,
        /// The format it was read as.
        format: Format,
        /// The parser's message.
        message: String,
    },
    /// The text is larger than the parser accepts.
    #[error("{what} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// The input size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A value parsed but is not acceptable; the error names the field path.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl Error {
    /// The validation error, when this is one.
    pub fn as_validation(&self) -> Option<&ValidationError> {
        match self {
            Error::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// A value that failed validation, with the path of the offending field
/// (`networking.inbound[1].port: 0 is not a valid port`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct ValidationError {
    path: String,
    kind: ValidationErrorKind,
}

impl ValidationError {
    /// A validation error at `path`.
    pub fn new(path: impl Into<String>, kind: ValidationErrorKind) -> ValidationError {
        ValidationError {
            path: path.into(),
            kind,
        }
    }

    /// The field path, e.g. `networking.inbound[1].port`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong with the field.
    pub fn kind(&self) -> &ValidationErrorKind {
        &self.kind
    }
}

/// What is wrong with a field (the part of the message after the path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationErrorKind {
    /// A required field is absent.
    #[error("is required")]
    Missing,
    /// A string or list that must not be empty is.
    #[error("must not be empty")]
    Empty,
    /// A port outside 1..=65535.
    #[error("{0} is not a valid port")]
    InvalidPort(i64),
    /// Text that is not an IP address (hostnames included: the model needs socket addresses).
    #[error("{0:?} is not an IP address")]
    NotAnIpAddress(String),
    /// `0.0.0.0` or `::` where a concrete address is needed.
    #[error("{0} is an unspecified address")]
    UnspecifiedAddress(IpAddr),
    /// A name with a character outside the allowed set.
    #[error("{value:?} contains the invalid character {character:?}")]
    InvalidCharacter {
        /// The offending value.
        value: String,
        /// The first invalid character.
        character: char,
    },
    /// A discriminator field with the wrong value (`type: Mesh` in a Dataplane).
    #[error("{found:?} must be {expected:?}")]
    WrongType {
        /// The value required here.
        expected: &'static str,
        /// The value found.
        found: String,
    },
    /// A value outside an enumeration.
    #[error("{value:?} is not one of {expected}")]
    UnknownValue {
        /// The value found.
        value: String,
        /// The accepted values, comma-separated.
        expected: &'static str,
    },
    /// An inbound or outbound without the mandatory `kuma.io/service` tag.
    #[error("the kuma.io/service tag is required")]
    MissingServiceTag,
    /// A `kuma.io/protocol` tag with an unknown value.
    #[error("{0:?} is not a protocol (expected one of tcp, http, http2, grpc, kafka)")]
    InvalidProtocol(String),
    /// Two inbounds or outbounds on the same address and port.
    #[error("{address} is already used by {first}")]
    DuplicateAddress {
        /// The address both use.
        address: SocketAddr,
        /// The path of the first user.
        first: String,
    },
    /// Both redirect ports are the same.
    #[error("{0} is also redirectPortInbound; the two redirect ports must differ")]
    SameRedirectPorts(u16),
    /// An inbound or outbound port that is one of the transparent-proxy redirect ports.
    #[error("{port} is the transparent-proxying {redirect} port")]
    RedirectPortCollision {
        /// The port.
        port: u16,
        /// `redirectPortInbound` or `redirectPortOutbound`.
        redirect: &'static str,
    },
    /// A Dataplane with no inbound.
    #[error("at least one inbound is required")]
    NoInbounds,
    /// Two inbounds whose local clusters share a name but not an endpoint.
    #[error("the local cluster {cluster} already points at {existing}, not {endpoint}")]
    LocalClusterConflict {
        /// The cluster name, e.g. `localhost:5000`.
        cluster: String,
        /// The endpoint the first inbound gave it.
        existing: SocketAddr,
        /// The endpoint this inbound would give it.
        endpoint: SocketAddr,
    },
    /// Two outbounds of one service with different protocols.
    #[error("service {service:?} is already used with protocol {existing}, not {protocol}")]
    ProtocolConflict {
        /// The service.
        service: String,
        /// The first protocol.
        existing: String,
        /// This protocol.
        protocol: String,
    },
    /// A resource name used twice.
    #[error("the {resource} name {name:?} is used twice")]
    DuplicateName {
        /// `listener` or `cluster`.
        resource: &'static str,
        /// The name.
        name: String,
    },
    /// An outbound that cannot be forwarded anywhere: no endpoints and no transparent proxying.
    #[error(
        "service {0:?} has no endpoints (there is no control plane to discover them) and, without transparent proxying, no original destination to forward to"
    )]
    NoUpstream(String),
    /// A field meshcap does not implement; the message says why.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A percentage that is not a decimal number between 0 and 100.
    #[error("{0:?} is not a percentage between 0 and 100")]
    InvalidPercentage(String),
    /// An abort status Envoy does not accept.
    #[error("{0} is not an http status envoy can abort with (200..=599)")]
    InvalidHttpStatus(i64),
    /// A duration that does not parse.
    #[error("{value:?} is not a duration: {reason}")]
    InvalidDuration {
        /// The text.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A delay of zero or less (Envoy requires a fixed delay greater than 0s).
    #[error("{0:?} must be greater than 0s")]
    NonPositiveDuration(String),
    /// A bandwidth that does not parse.
    #[error("{0:?} is not a bandwidth such as 10kbps, 5 Mbps or 1Gbps")]
    InvalidBandwidth(String),
    /// A number outside the range Envoy accepts for the field.
    #[error("{value} is out of range ({range})")]
    OutOfRange {
        /// The value.
        value: String,
        /// The accepted range.
        range: &'static str,
    },
    /// Two members of a protobuf `oneof` set at once.
    #[error("{0} are mutually exclusive")]
    MutuallyExclusive(&'static str),
    /// A protobuf `oneof` with no member set.
    #[error("one of {0} is required")]
    OneOfRequired(&'static str),
    /// A field that is not allowed with the given kind (`name` with `kind: Mesh`).
    #[error("is not allowed with kind {0}")]
    NotAllowedWithKind(&'static str),
}

/// Shorthand for a `ValidationError` wrapped in `Error`.
pub(crate) fn invalid(path: impl Into<String>, kind: ValidationErrorKind) -> Error {
    Error::Invalid(ValidationError::new(path, kind))
}
