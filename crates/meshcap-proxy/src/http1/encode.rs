//! Canonical re-emission of heads, and Envoy's local replies.
//!
//! What Envoy 1.40 does to a forwarded request on the Kuma HCM configuration (observed with a
//! recording backend), and so what [`encode_request_head`] does:
//!
//! * request line `METHOD SP origin-form-path SP HTTP/1.1`; an absolute-form target becomes its path
//!   and its authority replaces `host`;
//! * `host` first (repeated Host fields joined with `,`), then the other fields in arrival order with
//!   lower-case names and trimmed values (`content-length` keeps its digits as sent, e.g. `05`);
//! * removed: `connection`, `keep-alive`, `proxy-connection`, `upgrade` (kept only for an accepted
//!   upgrade), `transfer-encoding` (re-added canonically), `expect: 100-continue` (answered by the
//!   proxy), fields named by `Connection` (but not `te`), `te` unless it asks for `trailers` (then
//!   `te: trailers`), and the router-consumed `x-envoy-*` fields listed in `request.rs`;
//! * appended, in this order: `x-forwarded-proto: http` unless present, `x-request-id: <uuid>` unless
//!   present, then `transfer-encoding: chunked` for a chunked body, or `content-length: 0` for a
//!   body-less request whose method is not GET, HEAD, DELETE, TRACE or CONNECT.
//!
//! No `x-envoy-expected-rq-timeout-ms` is added: the Kuma route has `timeout: 0s`, and Envoy adds
//! it only for a non-zero timeout. No `x-forwarded-for` either (`use_remote_address` is false).
//!
//! To the client ([`encode_response_head`]): `HTTP/1.1 <code> <Envoy's reason>`, the upstream fields
//! in order (lower-case names) with `server` and `date` overwritten in place, hop-by-hop fields
//! removed (`connection`, `upgrade` kept only on a 101), then `x-envoy-upstream-service-time`,
//! `date` and `server: envoy` when absent, `connection: close` when the proxy closes, and
//! `transfer-encoding: chunked` when the body is chunked to the client.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{FieldKind, RequestHead, ResponseHead, reason_phrase};

/// Per-request additions to a forwarded request head.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamExtras<'a> {
    /// The `x-request-id` to add when the request has none (Envoy adds a UUID v4).
    pub request_id: &'a [u8],
    /// Forward `connection` and `upgrade` (the upgrade was accepted).
    pub forward_upgrade: bool,
}

/// Per-response additions to a response head sent to the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseExtras<'a> {
    /// Milliseconds between the request leaving and the response head arriving
    /// (`x-envoy-upstream-service-time`), `None` to omit it (101 responses).
    pub upstream_service_time_ms: Option<u64>,
    /// The proxy's date (see [`HttpDate`]).
    pub date: &'a [u8],
    /// The proxy closes the client connection after this response (`connection: close`).
    pub close: bool,
    /// The body goes to the client chunked (`transfer-encoding: chunked`).
    pub chunked: bool,
}

/// The head of a local reply (a response the proxy makes up itself).
#[derive(Debug, Clone, Copy)]
pub struct LocalReplyHead<'a> {
    /// Status code.
    pub status: u16,
    /// Content type of a non-empty body (Envoy: `text/plain`).
    pub content_type: &'a [u8],
    /// Extra fields, written after `content-type` (e.g. from a filter).
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Add `connection: close`.
    pub close: bool,
}

/// Write a forwarded request head (see the module docs for every rule).
///
/// ```
/// use meshcap_proxy::http1::{encode_request_head, Limits, RequestHead, UpstreamExtras};
///
/// let mut head = RequestHead::new();
/// head.parse(b"GET http://svc:8080/x HTTP/1.1\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n", &Limits::default())?;
/// let mut out = Vec::new();
/// encode_request_head(&head, &UpstreamExtras { request_id: b"id-1", ..Default::default() }, &mut out);
/// assert_eq!(
///     out,
///     b"GET /x HTTP/1.1\r\nhost: svc:8080\r\nx-a: 1\r\nx-forwarded-proto: http\r\nx-request-id: id-1\r\n\r\n"
/// );
/// # Ok::<(), meshcap_proxy::http1::RequestError>(())
/// ```
pub fn encode_request_head(head: &RequestHead, extras: &UpstreamExtras<'_>, out: &mut Vec<u8>) {
    let buf = head.buf();
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = head.host() {
        push_field(out, b"host", host);
    }
    let reframe = head.reframe_chunked();
    for f in head.fields() {
        let name = f.name.get(buf);
        match f.kind {
            FieldKind::Forward => {
                if reframe && name == b"content-length" {
                    continue;
                }
                push_field(out, name, f.value.get(buf));
            }
            FieldKind::UpgradeOnly if extras.forward_upgrade => push_field(out, name, f.value.get(buf)),
            FieldKind::Te if head.te_trailers() => push_field(out, b"te", b"trailers"),
            _ => {}
        }
    }
    if !head.has_forwarded_proto() {
        push_field(out, b"x-forwarded-proto", b"http");
    }
    if !head.has_request_id() && !extras.request_id.is_empty() {
        push_field(out, b"x-request-id", extras.request_id);
    }
    if head.forward_chunked() {
        push_field(out, b"transfer-encoding", b"chunked");
    } else if head.framing() == super::BodyFraming::None
        && !matches!(head.method(), "GET" | "HEAD" | "DELETE" | "TRACE" | "CONNECT")
    {
        push_field(out, b"content-length", b"0");
    }
    out.extend_from_slice(b"\r\n");
}

/// Write a response head for the client (see the module docs for every rule).
///
/// ```
/// use meshcap_proxy::http1::{encode_response_head, Limits, ResponseExtras, ResponseHead};
///
/// let mut head = ResponseHead::new();
/// head.parse(b"HTTP/1.1 200 Fine\r\nServer: app\r\nContent-Length: 2\r\n\r\n", &Limits::default(), false)?;
/// let mut out = Vec::new();
/// let extras = ResponseExtras { upstream_service_time_ms: Some(3), date: b"D", ..Default::default() };
/// encode_response_head(&head, &extras, &mut out);
/// assert_eq!(
///     out,
///     b"HTTP/1.1 200 OK\r\nserver: envoy\r\ncontent-length: 2\r\nx-envoy-upstream-service-time: 3\r\ndate: D\r\n\r\n"
/// );
/// # Ok::<(), meshcap_proxy::http1::ResponseError>(())
/// ```
pub fn encode_response_head(head: &ResponseHead, extras: &ResponseExtras<'_>, out: &mut Vec<u8>) {
    push_status_line(out, head.status());
    let buf = head.buf();
    let upgrade = head.status() == 101;
    for f in head.fields() {
        let name = f.name.get(buf);
        match f.kind {
            FieldKind::Forward => push_field(out, name, f.value.get(buf)),
            FieldKind::UpgradeOnly if upgrade => push_field(out, name, f.value.get(buf)),
            FieldKind::Server => push_field(out, b"server", b"envoy"),
            FieldKind::Date => push_field(out, b"date", extras.date),
            _ => {}
        }
    }
    if let Some(ms) = extras.upstream_service_time_ms {
        out.extend_from_slice(b"x-envoy-upstream-service-time: ");
        push_decimal(ms, out);
        out.extend_from_slice(b"\r\n");
    }
    if !head.has_date() {
        push_field(out, b"date", extras.date);
    }
    if !head.has_server() {
        push_field(out, b"server", b"envoy");
    }
    if extras.close {
        push_field(out, b"connection", b"close");
    }
    if extras.chunked {
        push_field(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

/// Write a local reply exactly as Envoy does: with a body, `content-length`, `content-type`, the
/// extra fields, `date`, `server: envoy`, `connection: close` when closing, then the body (not for a
/// HEAD request); without a body, `date`, `server: envoy`, `connection: close`, `content-length: 0`.
///
/// ```
/// use meshcap_proxy::http1::{encode_local_reply, LocalReplyHead};
///
/// let mut out = Vec::new();
/// let head = LocalReplyHead { status: 503, content_type: b"text/plain", headers: &[], close: false };
/// encode_local_reply(&head, b"fault filter abort", false, b"D", &mut out);
/// assert_eq!(
///     out,
///     &b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\ncontent-type: text/plain\r\n\
///        date: D\r\nserver: envoy\r\n\r\nfault filter abort"[..]
/// );
/// ```
pub fn encode_local_reply(head: &LocalReplyHead<'_>, body: &[u8], to_head: bool, date: &[u8], out: &mut Vec<u8>) {
    push_status_line(out, head.status);
    if !body.is_empty() {
        out.extend_from_slice(b"content-length: ");
        push_decimal(body.len() as u64, out);
        out.extend_from_slice(b"\r\n");
        push_field(out, b"content-type", head.content_type);
    }
    for (name, value) in head.headers {
        push_field(out, name, value);
    }
    push_field(out, b"date", date);
    push_field(out, b"server", b"envoy");
    if head.close {
        push_field(out, b"connection", b"close");
    }
    if body.is_empty() && !(100..200).contains(&head.status) && head.status != 204 && head.status != 304 {
        push_field(out, b"content-length", b"0");
    }
    out.extend_from_slice(b"\r\n");
    if !to_head {
        out.extend_from_slice(body);
    }
}

fn push_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(u64::from(status), out);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// An IMF-fixdate (`Thu, 26 Nov 2026 12:35:16 GMT`, RFC 9110 §5.6.7), recomputed at most once a second.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let mut date = meshcap_proxy::http1::HttpDate::default();
/// date.update(UNIX_EPOCH + Duration::from_secs(1_795_696_516));
/// assert_eq!(date.as_bytes(), b"Thu, 26 Nov 2026 12:35:16 GMT");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpDate {
    secs: u64,
    text: [u8; 29],
}

impl Default for HttpDate {
    fn default() -> HttpDate {
        let mut d = HttpDate {
            secs: u64::MAX,
            text: [b' '; 29],
        };
        d.render(0);
        d
    }
}

impl HttpDate {
    /// The date for `now` (recomputed only when the second changed).
    pub fn update(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.render(secs);
        }
    }

    /// The date for the current time.
    pub fn now() -> HttpDate {
        let mut d = HttpDate::default();
        d.update(SystemTime::now());
        d
    }

    /// The 29 bytes of the date.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    fn render(&mut self, secs: u64) {
        const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
        ];
        self.secs = secs;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u64;
        let t = &mut self.text;
        t[..3].copy_from_slice(DAYS[(days % 7) as usize]);
        t[3..5].copy_from_slice(b", ");
        two(&mut t[5..7], day);
        t[7] = b' ';
        t[8..11].copy_from_slice(MONTHS[month - 1]);
        t[11] = b' ';
        two(&mut t[12..14], year / 100 % 100);
        two(&mut t[14..16], year % 100);
        t[16] = b' ';
        two(&mut t[17..19], h);
        t[19] = b':';
        two(&mut t[20..22], m);
        t[22] = b':';
        two(&mut t[23..25], s);
        t[25..29].copy_from_slice(b" GMT");
    }
}

fn two(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}
