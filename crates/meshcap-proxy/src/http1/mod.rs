//! A sans-IO HTTP/1.1 codec that answers hostile input exactly as Envoy 1.40 does.
//!
//! Heads are tokenised by [`httparse`]; everything that decides how a message is framed — which
//! bytes are body, which belong to the next request — is our own code, in one place per direction:
//!
//! * [`RequestHead::parse`] reads a request head and validates it in a single step (RFC 9110 and
//!   RFC 9112 cited at each check). The result is either a head with a definite [`BodyFraming`], or a
//!   [`RequestError`] whose [`RequestError::reply`] is the local reply Envoy sends (400, 426, 431,
//!   501, …; the connection is always closed).
//! * [`ResponseHead::parse`] does the same for upstream responses (RFC 9112 §6.3: HEAD, 1xx, 204, 304
//!   and close-delimited bodies).
//! * [`ChunkedDecoder`] is a streaming chunked-body state machine handing out zero-copy slices of a
//!   `BytesMut`; [`encode_chunk`] and [`LAST_CHUNK`] re-encode bodies, so chunk extensions, odd
//!   size spellings and trailers never travel upstream verbatim.
//! * [`encode_request_head`] and [`encode_response_head`] re-emit heads canonically (CRLF, lower-case
//!   names, trimmed values, hop-by-hop fields removed, Envoy's added fields in Envoy's order), and
//!   [`encode_local_reply`] writes Envoy's local replies byte for byte (apart from the date).
//!
//! Lenient shapes are handled as Envoy handles them, never passed through: a bare LF line ending is
//! accepted and re-emitted as CRLF, an obs-fold continuation is joined with one space, a bare CR
//! inside a header value is dropped, whitespace runs in the request line are accepted. Every
//! behaviour here was observed on Envoy 1.40 (`envoy_parity` test replays them against both).
//!
//! # Layout
//! `request` (request head), `response` (response head), `chunked` (body framing), `encode`
//! (re-emission and local replies), `error` (typed errors and their replies), `status` (reason
//! phrases).

mod chunked;
mod encode;
mod error;
mod request;
mod response;
mod status;

pub use chunked::{ChunkedDecoder, DecodeStep, LAST_CHUNK, encode_chunk};
pub use encode::{
    HttpDate, LocalReplyHead, ResponseExtras, UpstreamExtras, encode_local_reply, encode_request_head,
    encode_response_head,
};
pub use error::{ChunkedError, ErrorReply, RequestError, ResponseError};
pub use request::{BodyFraming, RequestHead, TargetForm};
pub use response::{ResponseFraming, ResponseHead};
pub use status::reason_phrase;

/// Size and count limits of the codec. The defaults are Envoy's.
///
/// ```
/// let mut limits = meshcap_proxy::http1::Limits::default();
/// assert_eq!(limits.max_request_head_bytes, 60 * 1024);
/// limits.max_request_headers = 50;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request head, from the first byte of the request line to the end of the empty line
    /// (Envoy's `max_request_headers_kb` default of 60: a 61,440-byte head passes, 61,441 gets 431).
    pub max_request_head_bytes: usize,
    /// Most request header fields (Envoy's `max_headers_count` default: 100 pass, 101 get 431).
    /// Capped at [`Limits::MAX_HEADERS_CAP`].
    pub max_request_headers: usize,
    /// Largest upstream response head. Envoy 1.40 forwarded a 70,000-byte response head, so the
    /// default is 80 KiB rather than the request limit.
    pub max_response_head_bytes: usize,
    /// Most upstream response header fields. Capped at [`Limits::MAX_HEADERS_CAP`].
    pub max_response_headers: usize,
    /// Largest trailer section of a chunked body (the request header limit, as Envoy applies it: a
    /// 70,000-byte trailer got 431).
    pub max_trailer_bytes: usize,
    /// Most chunk-extension bytes in one body. Envoy accepted a 70,000-byte extension; extensions are
    /// dropped, never forwarded, so this only bounds invisible bytes.
    pub max_chunk_extension_bytes: usize,
}

impl Limits {
    /// Upper bound for the header-count limits (the parser's stack array).
    pub const MAX_HEADERS_CAP: usize = 256;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_head_bytes: 60 * 1024,
            max_request_headers: 100,
            max_response_head_bytes: 80 * 1024,
            max_response_headers: 100,
            max_trailer_bytes: 60 * 1024,
            max_chunk_extension_bytes: 256 * 1024,
        }
    }
}

/// A byte range inside a head's own buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    pub(crate) fn push(buf: &mut Vec<u8>, bytes: &[u8]) -> Span {
        let start = buf.len() as u32;
        buf.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }
    pub(crate) fn get(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..(self.start + self.len) as usize]
    }
}

/// One header field of a parsed head: spans into the head's buffer plus what to do with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: Span,
    pub(crate) value: Span,
    pub(crate) kind: FieldKind,
}

/// How re-emission treats a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// Forwarded as is.
    Forward,
    /// Removed (hop-by-hop, consumed, or re-added canonically).
    Drop,
    /// `connection` / `upgrade`: forwarded only for an accepted upgrade.
    UpgradeOnly,
    /// `host`: emitted first, merged.
    Host,
    /// `te`: emitted as `te: trailers` when it asked for trailers.
    Te,
    /// `server` (response): value replaced by `envoy`.
    Server,
    /// `date` (response): value replaced by the proxy's date.
    Date,
}

/// Trim RFC 9110 OWS (SP / HTAB) from both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Iterate the comma-separated elements of a list-valued field (RFC 9110 §5.6.1), trimmed, empty
/// elements skipped.
pub(crate) fn list_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

/// Parse a Content-Length value: one or more ASCII digits, fitting in a `u64`.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}
