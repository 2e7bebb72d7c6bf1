//! Typed codec errors and the local reply Envoy gives for each.

use std::fmt;

/// What the client gets when a request fails validation: Envoy's local reply.
///
/// `body` empty means Envoy's body-less shape (`date`, `server`, `connection: close`,
/// `content-length: 0`); otherwise Envoy's text shape (`content-length`, `content-type: text/plain`,
/// `date`, `server`, `connection: close`, then the body). Every codec error closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorReply {
    /// Status code.
    pub status: u16,
    /// Body text (`Bad Request`, `Not Implemented`, …), empty for the body-less shape.
    pub body: &'static str,
    /// Envoy's response code details for the access log (`http1.codec_error`, `missing_host_header`, …).
    pub details: &'static str,
}

/// Why a request head was refused. Each variant maps to the answer Envoy 1.40 gives (see
/// [`RequestError::reply`]); the mapping was observed on a real Envoy, not inferred.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The head is larger than the limit (Envoy: 60 KiB, counted from the request line to the empty
    /// line inclusive) → 431.
    #[error("request head of {size} bytes exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// Bytes seen so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More header fields than the limit (Envoy: 100) → 431.
    #[error("request has more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The request line is not `method SP target SP version` → 400.
    #[error("malformed request line {line:?}")]
    MalformedRequestLine {
        /// The offending line (lossy, truncated).
        line: String,
    },
    /// The method is not one Envoy's HTTP/1 codec knows (custom methods are off by default) → 400.
    #[error("unknown method {method:?}")]
    UnknownMethod {
        /// The method token.
        method: String,
    },
    /// The request target has bytes outside Envoy's URL alphabet, or a form this method may not use
    /// (an asterisk other than with OPTIONS, authority-form other than with CONNECT, a scheme other
    /// than http/https, an empty authority) → 400.
    #[error("invalid request target {target:?}")]
    InvalidTarget {
        /// The target (lossy, truncated).
        target: String,
    },
    /// The path has a fragment (`#`), which Envoy's HCM rejects → 400 without a body.
    #[error("request path {target:?} has a fragment")]
    FragmentInPath {
        /// The target (lossy, truncated).
        target: String,
    },
    /// An HTTP version other than 1.1, written correctly (`HTTP/1.0`, `HTTP/2.0`, or none at all as in
    /// HTTP/0.9) → 426 Upgrade Required (Envoy's default `accept_http_10: false`).
    #[error("http version {version:?} is not supported")]
    UnsupportedVersion {
        /// The version token (empty for HTTP/0.9).
        version: String,
    },
    /// A version token that is not `HTTP/<digit>.<digit>` (`http/1.1`, `HTTP/1.1x`) → 400.
    #[error("malformed http version {version:?}")]
    MalformedVersion {
        /// The version token.
        version: String,
    },
    /// A header name that is not a token, empty, or followed by whitespace before the colon, or a
    /// header line without a colon → 400.
    #[error("invalid header name {name:?}")]
    InvalidHeaderName {
        /// The offending line (lossy, truncated).
        name: String,
    },
    /// A header value with NUL, another control byte, or DEL → 400 (RFC 9110 §5.5).
    #[error("invalid value in header {name:?}")]
    InvalidHeaderValue {
        /// The header name (lossy, truncated).
        name: String,
    },
    /// A continuation line (obs-fold) before any header field → 400.
    #[error("continuation line before the first header field")]
    LeadingContinuation,
    /// Content-Length is not a plain decimal number that fits in 64 bits (sign, spaces, hex, lists
    /// such as `5, 5`, empty) → 400 (RFC 9112 §6.3 rule 5).
    #[error("invalid content-length {value:?}")]
    InvalidContentLength {
        /// The value.
        value: String,
    },
    /// More than one Content-Length field, even with equal values → 400 (Envoy does not merge them).
    #[error("more than one content-length field")]
    DuplicateContentLength,
    /// Both Transfer-Encoding and Content-Length → 400 (RFC 9112 §6.1: a request smuggling vector).
    #[error("both transfer-encoding and content-length")]
    ContentLengthAndTransferEncoding,
    /// A Transfer-Encoding other than exactly `chunked` (including `gzip, chunked`, `chunked, identity`,
    /// `xchunked`, two Transfer-Encoding fields) → 501 Not Implemented (RFC 9112 §6.1).
    #[error("unsupported transfer-encoding {value:?}")]
    UnsupportedTransferEncoding {
        /// The value (all fields joined with `, `).
        value: String,
    },
    /// No Host field on an HTTP/1.1 origin-form request → 400 without a body (RFC 9112 §3.2).
    #[error("missing host header")]
    MissingHost,
    /// A Host value with bytes outside the authority alphabet → 400.
    #[error("invalid host {value:?}")]
    InvalidHost {
        /// The value.
        value: String,
    },
    /// `Connection` names a header Envoy refuses to drop (`host`) → 400 without a body.
    #[error("connection header nominates {name:?}")]
    ConnectionNominates {
        /// The nominated header.
        name: String,
    },
    /// A method Envoy's HCM rejects after the codec accepted it (`QUERY`) → 400 without a body.
    #[error("method {method:?} rejected")]
    RejectedMethod {
        /// The method.
        method: String,
    },
}

impl RequestError {
    /// The local reply Envoy 1.40 sends for this error (every one closes the connection).
    pub fn reply(&self) -> ErrorReply {
        use RequestError::*;
        let (status, body, details) = match self {
            HeadTooLarge { .. } => (431, "Request Header Fields Too Large", "http1.headers_too_large"),
            TooManyHeaders { .. } => (431, "Request Header Fields Too Large", "http1.too_many_headers"),
            UnsupportedVersion { .. } => (426, "Upgrade Required", "low_version"),
            UnsupportedTransferEncoding { .. } => (501, "Not Implemented", "http1.invalid_transfer_encoding"),
            ContentLengthAndTransferEncoding => (400, "Bad Request", "http1.content_length_and_chunked_not_allowed"),
            InvalidHeaderValue { .. } | InvalidHeaderName { .. } | LeadingContinuation => {
                (400, "Bad Request", "http1.invalid_characters")
            }
            InvalidTarget { .. } => (400, "Bad Request", "http1.invalid_url"),
            MissingHost => (400, "", "missing_host_header"),
            FragmentInPath { .. } => (400, "", "http1.invalid_url"),
            ConnectionNominates { .. } => (400, "", "http1.connection_header_rejected"),
            RejectedMethod { .. } => (400, "", "http1.invalid_method"),
            MalformedRequestLine { .. }
            | UnknownMethod { .. }
            | MalformedVersion { .. }
            | InvalidContentLength { .. }
            | DuplicateContentLength
            | InvalidHost { .. } => (400, "Bad Request", "http1.codec_error"),
        };
        ErrorReply { status, body, details }
    }
}

/// Why an upstream response head was refused. Envoy answers all of these with
/// `502 Bad Gateway` and `upstream connect error or disconnect/reset before headers. reset reason:
/// protocol error` (observed on Envoy 1.40) and closes the upstream connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The head is larger than the limit.
    #[error("response head of {size} bytes exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// Bytes seen so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More header fields than the limit.
    #[error("response has more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The bytes are not an HTTP/1.x response head.
    #[error("malformed response head: {reason}")]
    Malformed {
        /// What httparse or our own check rejected.
        reason: &'static str,
    },
    /// Content-Length invalid or repeated.
    #[error("invalid content-length {value:?}")]
    InvalidContentLength {
        /// The value(s).
        value: String,
    },
    /// Transfer-Encoding is not exactly `chunked`, or comes with Content-Length.
    #[error("invalid transfer-encoding {value:?}")]
    InvalidTransferEncoding {
        /// The value.
        value: String,
    },
    /// A 204 response that announces a body.
    #[error("{status} response with a non-zero content-length")]
    BodyNotAllowed {
        /// The status.
        status: u16,
    },
}

/// Why a chunked body was refused (RFC 9112 §7.1). Request side: Envoy answers 400 (431 for
/// oversized trailers) and closes; response side: Envoy closes the client connection mid-body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkedError {
    /// The chunk-size line does not start with a hex digit, or has a byte that may not follow it.
    #[error("invalid chunk size line at byte {byte:#04x}")]
    InvalidSize {
        /// The offending byte.
        byte: u8,
    },
    /// The chunk size does not fit in 64 bits.
    #[error("chunk size overflows 64 bits")]
    SizeOverflow,
    /// A chunk extension has a bare CR or LF.
    #[error("chunk extension has a bare cr or lf")]
    InvalidExtension,
    /// Chunk extensions of one body exceed the limit.
    #[error("chunk extensions exceed {limit} bytes")]
    ExtensionsTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Chunk data is not followed by CRLF (or LF).
    #[error("chunk data not followed by crlf (byte {byte:#04x})")]
    MissingCrlf {
        /// The byte found instead.
        byte: u8,
    },
    /// A trailer line is not a valid header field.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The trailer section exceeds the limit.
    #[error("trailers exceed {limit} bytes")]
    TrailersTooLarge {
        /// The limit.
        limit: usize,
    },
}

impl ChunkedError {
    /// The local reply Envoy sends when a request body fails this way.
    pub fn reply(&self) -> ErrorReply {
        match self {
            ChunkedError::TrailersTooLarge { .. } => ErrorReply {
                status: 431,
                body: "Request Header Fields Too Large",
                details: "http1.headers_too_large",
            },
            _ => ErrorReply {
                status: 400,
                body: "Bad Request",
                details: "http1.codec_error",
            },
        }
    }
}

/// Lossy, truncated rendering of network bytes for error messages.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.details)
    }
}
