//! Request head: parse, validate (one step), expose.

use std::mem::MaybeUninit;

use super::error::lossy;
use super::{Field, FieldKind, Limits, RequestError, Span, list_tokens, parse_content_length, trim_ows};

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyFraming {
    /// No body (a request with neither Content-Length nor Transfer-Encoding, RFC 9112 §6.3 rule 7).
    None,
    /// Exactly this many bytes.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The form of the request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TargetForm {
    /// `/path?query`.
    Origin,
    /// `http://authority/path`: forwarded upstream as origin-form with `host` set to the authority,
    /// as Envoy does.
    Absolute,
    /// `host:port`, CONNECT only.
    Authority,
    /// `*`, OPTIONS only.
    Asterisk,
}

/// Methods Envoy's HTTP/1 codec accepts (balsa's list; custom methods are off by default). Sorted for
/// binary search. `M-SEARCH` is absent: Envoy lists it as `MSEARCH`, so `M-SEARCH` gets 400 (observed).
const METHODS: [&str; 34] = [
    "ACL",
    "BIND",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "MSEARCH",
    "NOTIFY",
    "OPTIONS",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "PUT",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "TRACE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
];

/// Request headers Envoy 1.40 removes before forwarding on this configuration (observed: they are
/// consumed by the router or sanitised by the HCM). Other `x-envoy-*` headers pass.
const STRIPPED: [&[u8]; 9] = [
    b"x-envoy-internal",
    b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-upstream-rq-timeout-ms",
    b"x-envoy-upstream-rq-per-try-timeout-ms",
    b"x-envoy-max-retries",
    b"x-envoy-retry-on",
    b"x-envoy-hedge-on-per-try-timeout",
    b"x-envoy-ip-tags",
    b"x-envoy-force-trace",
];

/// A validated HTTP/1.1 request head.
///
/// The head owns a copy of its bytes (header names lower-cased, values trimmed) in a buffer that is
/// reused across [`RequestHead::parse`] calls, so a keep-alive connection parses without allocating
/// once warm.
///
/// ```
/// use meshcap_proxy::http1::{BodyFraming, Limits, RequestHead};
///
/// let mut head = RequestHead::new();
/// let wire = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello";
/// let consumed = head.parse(wire, &Limits::default())?.expect("complete head");
/// assert_eq!(&wire[consumed..], b"hello");
/// assert_eq!(head.method(), "POST");
/// assert_eq!(head.path(), b"/upload");
/// assert_eq!(head.framing(), BodyFraming::ContentLength(5));
/// assert_eq!(head.header(b"host"), Some(&b"app"[..]));
/// # Ok::<(), meshcap_proxy::http1::RequestError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RequestHead {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    fields: Vec<Field>,
    conn_tokens: Vec<Span>,
    method: &'static str,
    target: Span,
    path: Span,
    host: Option<Span>,
    form: TargetForm,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: Option<Span>,
    te_trailers: bool,
    has_forwarded_proto: bool,
    has_request_id: bool,
    reframe_chunked: bool,
}

impl Default for RequestHead {
    fn default() -> RequestHead {
        RequestHead::new()
    }
}

/// What the request line said about the version, decided before the headers are checked (codec
/// errors in the headers win over 426, as in Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionVerdict {
    Http11,
    Unsupported,
}

impl RequestHead {
    /// An empty head, ready for [`RequestHead::parse`].
    pub fn new() -> RequestHead {
        RequestHead {
            buf: Vec::new(),
            scratch: Vec::new(),
            fields: Vec::new(),
            conn_tokens: Vec::new(),
            method: "GET",
            target: Span::default(),
            path: Span::default(),
            host: None,
            form: TargetForm::Origin,
            framing: BodyFraming::None,
            keep_alive: true,
            expect_continue: false,
            upgrade: None,
            te_trailers: false,
            has_forwarded_proto: false,
            has_request_id: false,
            reframe_chunked: false,
        }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.conn_tokens.clear();
        self.method = "GET";
        self.target = Span::default();
        self.path = Span::default();
        self.host = None;
        self.form = TargetForm::Origin;
        self.framing = BodyFraming::None;
        self.keep_alive = true;
        self.expect_continue = false;
        self.upgrade = None;
        self.te_trailers = false;
        self.has_forwarded_proto = false;
        self.has_request_id = false;
        self.reframe_chunked = false;
    }

    /// Parse and validate the request head at the start of `input`.
    ///
    /// Returns `Ok(Some(n))` when the head is complete (`n` bytes, including leading empty lines, the
    /// rest of `input` is body or the next request), `Ok(None)` when more bytes are needed, or the
    /// error Envoy would answer. `input` longer than the head limit without a complete head is
    /// [`RequestError::HeadTooLarge`], so a caller that reads until this returns never buffers more
    /// than the limit.
    ///
    /// # Errors
    /// Every [`RequestError`] variant; each maps to Envoy's answer through [`RequestError::reply`].
    pub fn parse(&mut self, input: &[u8], limits: &Limits) -> Result<Option<usize>, RequestError> {
        self.reset();
        let max_headers = limits.max_request_headers.min(Limits::MAX_HEADERS_CAP);
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::MAX_HEADERS_CAP + 1];
        let mut req = httparse::Request::new(&mut []);
        let mut config = httparse::ParserConfig::default();
        config.allow_multiple_spaces_in_request_line_delimiters(true);
        // Fast path: a well-formed head straight from httparse.
        match config.parse_request_with_uninit_headers(&mut req, input, &mut storage[..max_headers + 1]) {
            Ok(httparse::Status::Complete(n)) => {
                check_head_size(n, limits)?;
                let (method, path, version) = (req.method.unwrap_or(""), req.path.unwrap_or(""), req.version);
                let verdict = if version == Some(1) {
                    VersionVerdict::Http11
                } else {
                    VersionVerdict::Unsupported
                };
                self.build(
                    method.as_bytes(),
                    path.as_bytes(),
                    (verdict, b"HTTP/1.0"),
                    req.headers,
                    max_headers,
                )?;
                return Ok(Some(n));
            }
            Ok(httparse::Status::Partial) => {
                check_head_size(input.len(), limits)?;
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders { limit: max_headers }),
            Err(_) => {}
        }
        // Slow path: shapes Envoy accepts but httparse does not (bare CR in a value, obs-fold,
        // trailing whitespace in the request line, versions other than 1.x), and every error.
        let Some(end) = find_head_end(input) else {
            check_head_size(input.len(), limits)?;
            return Ok(None);
        };
        check_head_size(end, limits)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.parse_lenient(&input[..end], &mut scratch, max_headers, &mut storage);
        self.scratch = scratch;
        result.map(|()| Some(end))
    }

    fn parse_lenient<'s>(
        &mut self,
        raw: &[u8],
        scratch: &'s mut Vec<u8>,
        max_headers: usize,
        storage: &mut [MaybeUninit<httparse::Header<'s>>],
    ) -> Result<(), RequestError> {
        let verdict = canonicalize(raw, scratch)?;
        let scratch: &'s [u8] = scratch;
        let mut req = httparse::Request::new(&mut []);
        let config = httparse::ParserConfig::default();
        match config.parse_request_with_uninit_headers(&mut req, scratch, &mut storage[..max_headers + 1]) {
            Ok(httparse::Status::Complete(_)) => {
                let (method, path) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
                self.build(method.as_bytes(), path.as_bytes(), verdict, req.headers, max_headers)
            }
            Ok(httparse::Status::Partial) => Err(RequestError::MalformedRequestLine { line: lossy(raw) }),
            Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooManyHeaders { limit: max_headers }),
            Err(httparse::Error::HeaderName) => Err(RequestError::InvalidHeaderName {
                name: failing_line(scratch),
            }),
            Err(httparse::Error::HeaderValue) => Err(RequestError::InvalidHeaderValue {
                name: failing_line(scratch),
            }),
            Err(_) => Err(RequestError::MalformedRequestLine {
                line: lossy(first_line(scratch)),
            }),
        }
    }

    /// Copy the tokenised head into our buffer and validate it (the single validation step).
    fn build(
        &mut self,
        method: &[u8],
        target: &[u8],
        (verdict, version): (VersionVerdict, &[u8]),
        headers: &[httparse::Header<'_>],
        max_headers: usize,
    ) -> Result<(), RequestError> {
        // RFC 9110 §9.1: method is case-sensitive; Envoy knows a fixed list (custom methods off).
        let known = METHODS.binary_search_by(|m| m.as_bytes().cmp(method));
        let query = method == b"QUERY";
        match known {
            Ok(i) => self.method = METHODS[i],
            Err(_) if query => self.method = "QUERY",
            Err(_) => return Err(RequestError::UnknownMethod { method: lossy(method) }),
        }
        let is_connect = self.method == "CONNECT";
        // RFC 9112 §3.2: the request target; Envoy's URL alphabet (no controls, no space, no 8-bit).
        if !target_is_valid(target, is_connect) {
            return Err(RequestError::InvalidTarget { target: lossy(target) });
        }
        if headers.len() > max_headers {
            return Err(RequestError::TooManyHeaders { limit: max_headers });
        }
        self.target = Span::push(&mut self.buf, target);

        let mut cl: Option<Span> = None;
        let mut cl_count = 0usize;
        let mut te: Option<Span> = None;
        let mut te_count = 0usize;
        let mut host_count = 0usize;
        let mut conn_upgrade = false;
        for h in headers {
            let name_start = self.buf.len();
            self.buf.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
            let name = Span {
                start: name_start as u32,
                len: h.name.len() as u32,
            };
            // RFC 9110 §5.5: values are trimmed of OWS; httparse already refused NUL/CTL/DEL.
            let value = Span::push(&mut self.buf, trim_ows(h.value));
            let lname = name.get(&self.buf);
            let kind = match lname {
                b"host" => {
                    host_count += 1;
                    FieldKind::Host
                }
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
                    for tok in list_tokens(value.get(&self.buf)) {
                        if tok.eq_ignore_ascii_case(b"close") {
                            self.keep_alive = false;
                        } else if tok.eq_ignore_ascii_case(b"upgrade") {
                            conn_upgrade = true;
                        } else if !tok.eq_ignore_ascii_case(b"keep-alive") {
                            let off = tok.as_ptr() as usize - self.buf.as_ptr() as usize;
                            self.conn_tokens.push(Span {
                                start: off as u32,
                                len: tok.len() as u32,
                            });
                        }
                    }
                    FieldKind::UpgradeOnly
                }
                b"upgrade" => {
                    self.upgrade = Some(value);
                    FieldKind::UpgradeOnly
                }
                b"keep-alive" | b"proxy-connection" => FieldKind::Drop,
                b"te" => {
                    // RFC 9110 §10.1.4: TE is hop-by-hop; Envoy forwards only `trailers`.
                    self.te_trailers |= list_tokens(value.get(&self.buf)).any(|t| t.eq_ignore_ascii_case(b"trailers"));
                    FieldKind::Te
                }
                b"expect" if value.get(&self.buf).eq_ignore_ascii_case(b"100-continue") => {
                    // RFC 9110 §10.1.1: the proxy answers 100 Continue itself (Envoy's default).
                    self.expect_continue = true;
                    FieldKind::Drop
                }
                b"x-forwarded-proto" => {
                    self.has_forwarded_proto = true;
                    FieldKind::Forward
                }
                b"x-request-id" => {
                    self.has_request_id = true;
                    FieldKind::Forward
                }
                n if n.starts_with(b"x-envoy-") && STRIPPED.contains(&n) => FieldKind::Drop,
                _ => FieldKind::Forward,
            };
            self.fields.push(Field { name, value, kind });
        }

        // RFC 9112 §6.1: a Transfer-Encoding together with a Content-Length is a smuggling vector;
        // Envoy refuses the request (400) rather than dropping Content-Length.
        if te_count > 0 && cl_count > 0 {
            return Err(RequestError::ContentLengthAndTransferEncoding);
        }
        if let Some(te) = te {
            // RFC 9112 §6.1 / §7: chunked must be the final coding; Envoy supports nothing else and
            // refuses two fields even when both say chunked (501).
            let value = te.get(&self.buf);
            if te_count > 1 || !value.eq_ignore_ascii_case(b"chunked") {
                let joined = self
                    .fields
                    .iter()
                    .filter(|f| f.name.get(&self.buf) == b"transfer-encoding")
                    .map(|f| lossy(f.value.get(&self.buf)))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(RequestError::UnsupportedTransferEncoding { value: joined });
            }
            self.framing = BodyFraming::Chunked;
        }
        if let Some(cl) = cl {
            // RFC 9112 §6.3 rule 5: several or invalid Content-Length values are unrecoverable.
            if cl_count > 1 {
                return Err(RequestError::DuplicateContentLength);
            }
            let value = cl.get(&self.buf);
            let n = parse_content_length(value)
                .ok_or_else(|| RequestError::InvalidContentLength { value: lossy(value) })?;
            self.framing = BodyFraming::ContentLength(n);
        }

        // RFC 9112 §2.3 / Envoy's default: only HTTP/1.1 (426 after the codec found no error).
        if verdict == VersionVerdict::Unsupported {
            return Err(RequestError::UnsupportedVersion {
                version: lossy(version),
            });
        }

        self.classify_target(is_connect)?;

        // RFC 9112 §3.2: Host is mandatory in HTTP/1.1; Envoy joins repeated values with ",".
        if self.form != TargetForm::Absolute {
            match host_count {
                0 => return Err(RequestError::MissingHost),
                1 => {
                    let f = self.fields.iter().find(|f| f.kind == FieldKind::Host).map(|f| f.value);
                    self.host = f;
                }
                _ => {
                    let start = self.buf.len();
                    let mut first = true;
                    for i in 0..self.fields.len() {
                        if self.fields[i].kind == FieldKind::Host {
                            if !first {
                                self.buf.push(b',');
                            }
                            first = false;
                            let v = self.fields[i].value;
                            self.buf
                                .extend_from_within(v.start as usize..(v.start + v.len) as usize);
                        }
                    }
                    self.host = Some(Span {
                        start: start as u32,
                        len: (self.buf.len() - start) as u32,
                    });
                }
            }
        }
        for f in &self.fields {
            if f.kind == FieldKind::Host && !f.value.get(&self.buf).iter().all(|&b| is_host_char(b)) {
                return Err(RequestError::InvalidHost {
                    value: lossy(f.value.get(&self.buf)),
                });
            }
        }
        if self.path.get(&self.buf).contains(&b'#') {
            return Err(RequestError::FragmentInPath { target: lossy(target) });
        }
        if query {
            return Err(RequestError::RejectedMethod { method: "QUERY".into() });
        }

        // RFC 9110 §7.6.1: fields named by Connection are hop-by-hop.
        for i in 0..self.conn_tokens.len() {
            let tok = self.conn_tokens[i];
            let t = tok.get(&self.buf);
            if t.eq_ignore_ascii_case(b"host") {
                return Err(RequestError::ConnectionNominates { name: lossy(t) });
            }
            if t.eq_ignore_ascii_case(b"te") {
                continue; // Envoy keeps `te: trailers` even when Connection names it.
            }
            let nominated_cl = t.eq_ignore_ascii_case(b"content-length");
            for j in 0..self.fields.len() {
                let f = self.fields[j];
                if f.name.get(&self.buf).eq_ignore_ascii_case(tok.get(&self.buf)) && f.kind != FieldKind::Host {
                    self.fields[j].kind = FieldKind::Drop;
                }
            }
            if nominated_cl && matches!(self.framing, BodyFraming::ContentLength(_)) {
                // Envoy drops the nominated Content-Length and re-frames the body as chunked.
                self.reframe_chunked = true;
            }
        }

        // RFC 9110 §7.8: an upgrade needs both `Upgrade` and `Connection: upgrade`; Envoy drops an
        // `h2c` upgrade and treats the request as a plain one.
        if let Some(up) = self.upgrade
            && (!conn_upgrade || up.get(&self.buf).eq_ignore_ascii_case(b"h2c"))
        {
            self.upgrade = None;
        }
        Ok(())
    }

    /// Decide the target form and the origin-form path forwarded upstream.
    fn classify_target(&mut self, is_connect: bool) -> Result<(), RequestError> {
        let target = self.target.get(&self.buf);
        let bad = || RequestError::InvalidTarget { target: lossy(target) };
        if target.first() == Some(&b'/') {
            self.form = TargetForm::Origin;
            self.path = self.target;
            return Ok(());
        }
        if target.first() == Some(&b'*') {
            if self.method != "OPTIONS" || target.len() != 1 {
                return Err(bad());
            }
            self.form = TargetForm::Asterisk;
            self.path = self.target;
            return Ok(());
        }
        if is_connect {
            self.form = TargetForm::Authority;
            self.path = self.target;
            return Ok(());
        }
        // absolute-form (RFC 9112 §3.2.2): http or https only, non-empty authority.
        let Some(sep) = target.windows(3).position(|w| w == b"://") else {
            return Err(bad());
        };
        let scheme = &target[..sep];
        if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
            return Err(bad());
        }
        let rest_start = sep + 3;
        let rest = &target[rest_start..];
        let auth_len = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
        if auth_len == 0 {
            return Err(bad());
        }
        let t = self.target;
        let authority = Span {
            start: t.start + rest_start as u32,
            len: auth_len as u32,
        };
        let path_len = rest.len() - auth_len;
        self.path = if path_len == 0 {
            Span::push(&mut self.buf, b"/")
        } else if rest[auth_len] == b'?' {
            let start = self.buf.len();
            self.buf.push(b'/');
            let from = (authority.start + authority.len) as usize;
            self.buf.extend_from_within(from..from + path_len);
            Span {
                start: start as u32,
                len: (path_len + 1) as u32,
            }
        } else {
            Span {
                start: authority.start + authority.len,
                len: path_len as u32,
            }
        };
        self.form = TargetForm::Absolute;
        self.host = Some(authority);
        for f in &mut self.fields {
            if f.kind == FieldKind::Host {
                f.kind = FieldKind::Drop;
            }
        }
        Ok(())
    }

    /// The method (one of Envoy's known methods, upper case).
    pub fn method(&self) -> &'static str {
        self.method
    }
    /// Whether the method is HEAD (the response then has no body, RFC 9110 §9.3.2).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
    /// The request target exactly as received.
    pub fn target(&self) -> &[u8] {
        self.target.get(&self.buf)
    }
    /// The path forwarded upstream: the target in origin-form (an absolute-form target rewritten to its
    /// path, `/` when it has none).
    pub fn path(&self) -> &[u8] {
        self.path.get(&self.buf)
    }
    /// The form of the request target.
    pub fn target_form(&self) -> TargetForm {
        self.form
    }
    /// The authority forwarded as `host`: the absolute-form authority, else the Host value (repeated
    /// Host fields joined with `,` as Envoy joins them).
    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|h| h.get(&self.buf))
    }
    /// The body framing.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }
    /// Whether the connection may carry another request after this one (no `Connection: close`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// Whether the client sent `Expect: 100-continue` (the field is not forwarded).
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }
    /// The protocol of an upgrade request (`Upgrade` with `Connection: upgrade`, not `h2c`).
    pub fn upgrade(&self) -> Option<&[u8]> {
        self.upgrade.map(|u| u.get(&self.buf))
    }
    /// Whether the body is forwarded chunked (a chunked request, or a Content-Length the Connection
    /// header nominated as hop-by-hop, which Envoy re-frames).
    pub fn forward_chunked(&self) -> bool {
        self.framing == BodyFraming::Chunked || self.reframe_chunked
    }
    /// The first value of header `name` (lower-case), trimmed.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// Every value of header `name` (lower-case), in arrival order.
    ///
    /// ```
    /// use meshcap_proxy::http1::{Limits, RequestHead};
    /// let mut head = RequestHead::new();
    /// head.parse(b"GET / HTTP/1.1\r\nhost: a\r\nx-f: 1\r\nX-F: 2\r\n\r\n", &Limits::default())?;
    /// assert_eq!(head.header_values(b"x-f").collect::<Vec<_>>(), [&b"1"[..], &b"2"[..]]);
    /// # Ok::<(), meshcap_proxy::http1::RequestError>(())
    /// ```
    pub fn header_values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }
    /// All header fields as received (names lower-cased, values trimmed), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (f.name.get(&self.buf), f.value.get(&self.buf)))
    }
    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.fields.len()
    }

    pub(crate) fn fields(&self) -> &[Field] {
        &self.fields
    }
    pub(crate) fn buf(&self) -> &[u8] {
        &self.buf
    }
    pub(crate) fn te_trailers(&self) -> bool {
        self.te_trailers
    }
    pub(crate) fn has_forwarded_proto(&self) -> bool {
        self.has_forwarded_proto
    }
    pub(crate) fn has_request_id(&self) -> bool {
        self.has_request_id
    }
    pub(crate) fn reframe_chunked(&self) -> bool {
        self.reframe_chunked
    }
}

fn check_head_size(size: usize, limits: &Limits) -> Result<(), RequestError> {
    if size > limits.max_request_head_bytes {
        return Err(RequestError::HeadTooLarge {
            size,
            limit: limits.max_request_head_bytes,
        });
    }
    Ok(())
}

/// Envoy's (http-parser compatible) URL alphabet for request targets.
fn target_is_valid(url: &[u8], is_connect: bool) -> bool {
    fn path_char(c: u8) -> bool {
        c == 9 || c == 12 || (b'!'..=b'~').contains(&c)
    }
    let Some(&first) = url.first() else {
        return false;
    };
    if first == b'/' || first == b'*' {
        return url[1..].iter().all(|&c| path_char(c));
    }
    let mut rest = url;
    if !is_connect {
        let scheme_len = rest.iter().position(|c| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        if scheme_len == 0 || !rest[scheme_len..].starts_with(b"://") {
            return false;
        }
        rest = &rest[scheme_len + 3..];
    }
    let host_len = rest.iter().position(|&c| c == b'/' || c == b'?').unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_len);
    host.iter().all(|&c| is_host_char(c)) && !host.windows(2).any(|w| w == b"@@") && path.iter().all(|&c| path_char(c))
}

/// Authority characters (RFC 3986 reg-name, IP literals, port, userinfo), as Envoy checks them.
fn is_host_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=@[]_~".contains(&c)
}

/// End of the head in raw bytes: after the first empty line (CRLF or bare LF), leading empty lines
/// skipped (RFC 9112 §2.2).
fn find_head_end(input: &[u8]) -> Option<usize> {
    let mut i = 0;
    // Leading empty lines before the request line.
    loop {
        match input.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => break,
        }
    }
    let mut line_start = i;
    while let Some(off) = memchr(b'\n', &input[line_start..]) {
        let lf = line_start + off;
        let line = &input[line_start..lf];
        if line_start != i && (line.is_empty() || line == b"\r") {
            return Some(lf + 1);
        }
        line_start = lf + 1;
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Rewrite a raw head into the canonical shape Envoy's parser would have seen, for httparse to read:
/// CRLF line ends, single spaces in the request line, obs-fold joined with one space (RFC 9112 §5.2),
/// bare CR dropped from values. Decides the version verdict (426 vs 400) from the request line.
fn canonicalize<'r>(raw: &'r [u8], out: &mut Vec<u8>) -> Result<(VersionVerdict, &'r [u8]), RequestError> {
    out.clear();
    let mut lines = raw.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.by_ref().find(|l| !l.is_empty()) else {
        return Err(RequestError::MalformedRequestLine { line: String::new() });
    };
    if request_line.contains(&b'\r') {
        return Err(RequestError::MalformedRequestLine {
            line: lossy(request_line),
        });
    }
    let tokens: Vec<&[u8]> = request_line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
        .collect();
    let verdict = match tokens.as_slice() {
        [_, _] => (VersionVerdict::Unsupported, &b""[..]), // HTTP/0.9 simple request
        [_, _, version] => {
            if *version == b"HTTP/1.1" {
                (VersionVerdict::Http11, *version)
            } else if version.len() == 8
                && version.starts_with(b"HTTP/")
                && version[5].is_ascii_digit()
                && version[6] == b'.'
                && version[7].is_ascii_digit()
            {
                (VersionVerdict::Unsupported, *version)
            } else {
                return Err(RequestError::MalformedVersion {
                    version: lossy(version),
                });
            }
        }
        _ => {
            return Err(RequestError::MalformedRequestLine {
                line: lossy(request_line),
            });
        }
    };
    out.extend_from_slice(tokens[0]);
    out.push(b' ');
    out.extend_from_slice(tokens[1]);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut have_field = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: join to the previous value with one space.
            if !have_field {
                return Err(RequestError::LeadingContinuation);
            }
            out.truncate(out.len() - 2);
            let cont = trim_ows(line);
            if !cont.is_empty() {
                out.push(b' ');
                push_without_cr(out, cont);
            }
            out.extend_from_slice(b"\r\n");
            continue;
        }
        have_field = true;
        match memchr(b':', line) {
            Some(colon) => {
                out.extend_from_slice(&line[..=colon]);
                push_without_cr(out, &line[colon + 1..]);
            }
            None => out.extend_from_slice(line),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(verdict)
}

fn push_without_cr(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(bytes.iter().copied().filter(|&b| b != b'\r'));
}

fn first_line(head: &[u8]) -> &[u8] {
    let end = memchr(b'\n', head).unwrap_or(head.len());
    &head[..end]
}

/// The header line httparse stopped at, for error messages: the first line that does not look like a
/// plain `token: visible-text` field.
fn failing_line(head: &[u8]) -> String {
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let ok = match memchr(b':', line) {
            Some(c) => {
                c > 0
                    && line[..c]
                        .iter()
                        .all(|&b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
                    && line[c + 1..].iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            }
            None => line.is_empty(),
        };
        if !ok {
            return lossy(line);
        }
    }
    String::new()
}
