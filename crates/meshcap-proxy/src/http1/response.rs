//! Response head from the upstream: parse, validate, decide the framing (RFC 9112 §6.3).

use std::mem::MaybeUninit;

use super::error::lossy;
use super::{Field, FieldKind, Limits, ResponseError, Span, list_tokens, parse_content_length, trim_ows};

/// How an upstream response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseFraming {
    /// No body: a response to HEAD, a 1xx, 204 or 304 (rule 1), or a 101 whose connection then
    /// carries the upgraded protocol.
    None,
    /// Exactly this many bytes (rule 6).
    ContentLength(u64),
    /// Chunked (rule 4).
    Chunked,
    /// Until the upstream closes the connection (rule 8). Envoy re-frames such a body as chunked
    /// for the client.
    CloseDelimited,
}

/// A validated upstream response head.
///
/// ```
/// use meshcap_proxy::http1::{Limits, ResponseFraming, ResponseHead};
///
/// let mut head = ResponseHead::new();
/// let wire = b"HTTP/1.1 200 Fine\r\nContent-Length: 2\r\n\r\nok";
/// let n = head.parse(wire, &Limits::default(), false)?.expect("complete head");
/// assert_eq!(head.status(), 200);
/// assert_eq!(head.framing(), ResponseFraming::ContentLength(2));
/// assert_eq!(&wire[n..], b"ok");
/// # Ok::<(), meshcap_proxy::http1::ResponseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResponseHead {
    buf: Vec<u8>,
    fields: Vec<Field>,
    status: u16,
    minor: u8,
    framing: ResponseFraming,
    keep_alive: bool,
    chunked_header: bool,
    has_server: bool,
    has_date: bool,
}

impl Default for ResponseHead {
    fn default() -> ResponseHead {
        ResponseHead::new()
    }
}

impl ResponseHead {
    /// An empty head, ready for [`ResponseHead::parse`].
    pub fn new() -> ResponseHead {
        ResponseHead {
            buf: Vec::new(),
            fields: Vec::new(),
            status: 0,
            minor: 1,
            framing: ResponseFraming::None,
            keep_alive: true,
            chunked_header: false,
            has_server: false,
            has_date: false,
        }
    }

    /// Parse and validate the response head at the start of `input`; `to_head` says whether the
    /// request was HEAD (its response never has a body).
    ///
    /// Returns `Ok(Some(n))` for a complete head of `n` bytes, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A [`ResponseError`]: Envoy turns all of them into 502 `protocol error` before the response
    /// started.
    pub fn parse(&mut self, input: &[u8], limits: &Limits, to_head: bool) -> Result<Option<usize>, ResponseError> {
        self.buf.clear();
        self.fields.clear();
        self.has_server = false;
        self.has_date = false;
        self.chunked_header = false;
        let max_headers = limits.max_response_headers.min(Limits::MAX_HEADERS_CAP);
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::MAX_HEADERS_CAP + 1];
        let mut resp = httparse::Response::new(&mut []);
        let mut config = httparse::ParserConfig::default();
        config.allow_multiple_spaces_in_response_status_delimiters(true);
        // RFC 9112 §5.2: a recipient may replace obs-fold with SP; Envoy does (observed).
        config.allow_obsolete_multiline_headers_in_responses(true);
        let n = match config.parse_response_with_uninit_headers(&mut resp, input, &mut storage[..max_headers + 1]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if input.len() > limits.max_response_head_bytes {
                    return Err(ResponseError::HeadTooLarge {
                        size: input.len(),
                        limit: limits.max_response_head_bytes,
                    });
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders { limit: max_headers }),
            Err(e) => {
                return Err(ResponseError::Malformed {
                    reason: e.description_str(),
                });
            }
        };
        if n > limits.max_response_head_bytes {
            return Err(ResponseError::HeadTooLarge {
                size: n,
                limit: limits.max_response_head_bytes,
            });
        }
        if resp.headers.len() > max_headers {
            return Err(ResponseError::TooManyHeaders { limit: max_headers });
        }
        self.status = resp.code.unwrap_or(0);
        self.minor = resp.version.unwrap_or(1);
        if !(100..=999).contains(&self.status) {
            return Err(ResponseError::Malformed {
                reason: "status code out of range",
            });
        }
        let mut cl: Option<Span> = None;
        let mut cl_count = 0usize;
        let mut te: Option<Span> = None;
        let mut te_count = 0usize;
        let mut close = false;
        let mut conn_keep_alive = false;
        for h in resp.headers.iter() {
            let name_start = self.buf.len();
            self.buf.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
            let name = Span {
                start: name_start as u32,
                len: h.name.len() as u32,
            };
            let value = push_unfolded(&mut self.buf, trim_ows(h.value));
            let kind = match name.get(&self.buf) {
                b"content-length" => {
                    cl_count += 1;
                    cl = Some(value);
                    FieldKind::Forward
                }
                b"transfer-encoding" => {
                    te_count += 1;
                    te = Some(value);
                    FieldKind::Drop
                }
                b"connection" => {
                    for t in list_tokens(value.get(&self.buf)) {
                        close |= t.eq_ignore_ascii_case(b"close");
                        conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                    }
                    FieldKind::UpgradeOnly
                }
                b"upgrade" => FieldKind::UpgradeOnly,
                b"keep-alive" | b"proxy-connection" => FieldKind::Drop,
                b"server" => {
                    self.has_server = true;
                    FieldKind::Server
                }
                b"date" => {
                    self.has_date = true;
                    FieldKind::Date
                }
                _ => FieldKind::Forward,
            };
            self.fields.push(Field { name, value, kind });
        }
        // RFC 9112 §6.1 / §6.3: conflicting or unsupported framing is unrecoverable (Envoy: 502).
        if te_count > 0 && cl_count > 0 {
            return Err(ResponseError::InvalidTransferEncoding {
                value: "with content-length".into(),
            });
        }
        let mut cl_value = None;
        if let Some(cl) = cl {
            let v = cl.get(&self.buf);
            if cl_count > 1 {
                return Err(ResponseError::InvalidContentLength {
                    value: format!("{} (repeated)", lossy(v)),
                });
            }
            cl_value =
                Some(parse_content_length(v).ok_or_else(|| ResponseError::InvalidContentLength { value: lossy(v) })?);
        }
        if let Some(te) = te {
            let v = te.get(&self.buf);
            if te_count > 1 || !v.eq_ignore_ascii_case(b"chunked") {
                return Err(ResponseError::InvalidTransferEncoding { value: lossy(v) });
            }
            self.chunked_header = true;
        }
        // RFC 9110 §15.3.5: 204 has no content; Envoy refuses one announcing a body.
        if self.status == 204 && (cl_value.unwrap_or(0) > 0 || te.is_some()) {
            return Err(ResponseError::BodyNotAllowed { status: self.status });
        }
        self.framing = if to_head || (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            ResponseFraming::None
        } else if te.is_some() {
            ResponseFraming::Chunked
        } else if let Some(n) = cl_value {
            ResponseFraming::ContentLength(n)
        } else {
            ResponseFraming::CloseDelimited
        };
        // RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
        self.keep_alive = if self.minor == 0 {
            conn_keep_alive && !close
        } else {
            !close
        } && self.framing != ResponseFraming::CloseDelimited;
        Ok(Some(n))
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// Whether this is an interim (1xx other than 101) response.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
    /// The body framing (already [`ResponseFraming::None`] for HEAD, 1xx, 204, 304).
    pub fn framing(&self) -> ResponseFraming {
        self.framing
    }
    /// Whether the upstream connection may be reused after this response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// The first value of header `name` (lower-case), trimmed.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// All header fields as received (names lower-cased, values trimmed, obs-fold joined), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (f.name.get(&self.buf), f.value.get(&self.buf)))
    }

    pub(crate) fn fields(&self) -> &[Field] {
        &self.fields
    }
    pub(crate) fn buf(&self) -> &[u8] {
        &self.buf
    }
    /// Whether the body goes to the client chunked: a chunked or close-delimited upstream body
    /// (Envoy re-frames the latter), or a HEAD response whose upstream said chunked.
    pub fn forward_chunked(&self) -> bool {
        matches!(self.framing, ResponseFraming::Chunked | ResponseFraming::CloseDelimited)
            || (self.framing == ResponseFraming::None && self.chunked_header && self.status != 304)
    }
    pub(crate) fn has_server(&self) -> bool {
        self.has_server
    }
    pub(crate) fn has_date(&self) -> bool {
        self.has_date
    }
}

/// Copy a value, replacing each obs-fold (CR? LF followed by SP/HTAB) with a single space.
fn push_unfolded(buf: &mut Vec<u8>, v: &[u8]) -> Span {
    if !v.contains(&b'\n') {
        return Span::push(buf, v);
    }
    let start = buf.len();
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\r' | b'\n' => {
                while i < v.len() && matches!(v[i], b'\r' | b'\n' | b' ' | b'\t') {
                    i += 1;
                }
                while buf.len() > start && matches!(buf.last(), Some(b' ' | b'\t')) {
                    buf.pop();
                }
                buf.push(b' ');
            }
            b => {
                buf.push(b);
                i += 1;
            }
        }
    }
    Span {
        start: start as u32,
        len: (buf.len() - start) as u32,
    }
}

trait DescriptionStr {
    fn description_str(&self) -> &'static str;
}

impl DescriptionStr for httparse::Error {
    fn description_str(&self) -> &'static str {
        match self {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid new line",
            httparse::Error::Status => "invalid status",
            httparse::Error::Token => "invalid token",
            httparse::Error::TooManyHeaders => "too many headers",
            httparse::Error::Version => "invalid version",
        }
    }
}
