//! The local reply Envoy sends for an injected abort: status line, headers in Envoy's order, body, and an
//! HTTP/1.1 encoder that reproduces Envoy's bytes (but for the `date` value, which the caller supplies).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The body of every fault abort.
pub const ABORT_BODY: &str = "fault filter abort";

/// Envoy's reason phrase for `status` (`CodeUtility::toString`); `Unknown` for codes Envoy has no name
/// for, such as 418.
///
/// ```
/// assert_eq!(meshcap_fault::reason_phrase(503), "Service Unavailable");
/// assert_eq!(meshcap_fault::reason_phrase(418), "Unknown");
/// ```
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        599 => "Last Unassigned Server Error Code",
        _ => "Unknown",
    }
}

/// The gRPC status Envoy sends for an HTTP status when no explicit gRPC status was configured
/// (`Grpc::Utility::httpToGrpcStatus`): 400→13, 401→16, 403→7, 404→12, 429/502/503/504→14, else 2.
pub fn http_to_grpc_status(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Whether a request's `content-type` makes Envoy treat it as gRPC: exactly `application/grpc` or
/// starting with `application/grpc+` (case-sensitive; `application/grpc-web` and parameters such as
/// `;charset` do not count).
pub fn is_grpc_content_type(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.starts_with(GRPC) && (content_type.len() == GRPC.len() || content_type[GRPC.len()] == b'+')
}

/// Facts about the request that shape the reply but are not headers.
///
/// ```
/// use meshcap_fault::ReplyContext;
///
/// let post_with_body = ReplyContext::new().request_body_pending(true);
/// let head = ReplyContext::new().head_request(true);
/// # let _ = (post_with_body, head);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyContext {
    head: bool,
    body_pending: bool,
    stream_error_on_invalid_http_message: bool,
}

impl ReplyContext {
    /// A GET-like request that was complete when the reply was made.
    pub const fn new() -> ReplyContext {
        ReplyContext {
            head: false,
            body_pending: false,
            stream_error_on_invalid_http_message: false,
        }
    }

    /// The request method is `HEAD`: the reply has headers only.
    #[must_use]
    pub const fn head_request(mut self, head: bool) -> ReplyContext {
        self.head = head;
        self
    }

    /// The request was not complete when the reply was made (an HTTP/1.1 request with `content-length > 0`
    /// or chunked framing whose body was not read yet): Envoy then adds `connection: close` and closes the
    /// connection after the reply. After a delay the body has normally been buffered (Envoy reads it while
    /// waiting), so an abort that follows a delay usually has no pending body.
    #[must_use]
    pub const fn request_body_pending(mut self, pending: bool) -> ReplyContext {
        self.body_pending = pending;
        self
    }

    /// The connection manager sets `stream_error_on_invalid_http_message` (HTTP/1.1 options): a 400
    /// reply then no longer closes the connection.
    #[must_use]
    pub const fn stream_error_on_invalid_http_message(mut self, enabled: bool) -> ReplyContext {
        self.stream_error_on_invalid_http_message = enabled;
        self
    }
}

/// The local reply for an abort, as Envoy's HTTP connection manager produces it.
///
/// Plain requests get `content-length: 18`, `content-type: text/plain` and the body
/// `fault filter abort`; gRPC requests (see [`is_grpc_content_type`]) get a trailers-only `200` with
/// `content-type: application/grpc`, `grpc-status` and `grpc-message`. The connection manager then adds
/// `date` and `server: envoy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// The code the filter replied with (before the gRPC rewrite to 200).
    code: u16,
    status: u16,
    grpc_status: Option<u32>,
    context: ReplyContext,
}

impl LocalReply {
    /// The reply for an abort with `http_status`, the gRPC status if one was chosen, for a request that
    /// is (`grpc_request`) or is not gRPC.
    pub fn new(http_status: u16, grpc_status: Option<u32>, grpc_request: bool, context: ReplyContext) -> LocalReply {
        if grpc_request {
            LocalReply {
                code: http_status,
                status: 200,
                grpc_status: Some(grpc_status.unwrap_or_else(|| http_to_grpc_status(http_status))),
                context,
            }
        } else {
            LocalReply {
                code: http_status,
                status: http_status,
                grpc_status: None,
                context,
            }
        }
    }

    /// The HTTP status sent (200 for a gRPC reply).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase of the HTTP/1.1 status line.
    pub fn reason(&self) -> &'static str {
        reason_phrase(self.status)
    }

    /// The `grpc-status` sent, for a gRPC reply.
    pub fn grpc_status(&self) -> Option<u32> {
        self.grpc_status
    }

    /// The body sent (empty for gRPC and `HEAD`).
    pub fn body(&self) -> &'static [u8] {
        if self.grpc_status.is_some() || self.context.head {
            b""
        } else {
            ABORT_BODY.as_bytes()
        }
    }

    /// Whether an HTTP/1.1 connection is closed after this reply (Envoy adds `connection: close`): the
    /// request body was still unread, or the abort code is 400 (Envoy treats a local 400 as a messaging
    /// error, unless `stream_error_on_invalid_http_message` is set), also when the reply itself is a
    /// gRPC 200.
    pub fn closes_connection(&self) -> bool {
        self.context.body_pending || (self.code == 400 && !self.context.stream_error_on_invalid_http_message)
    }

    /// The response headers in Envoy's order, with the caller's `date` value (as Envoy would send them
    /// over HTTP/2: no connection-specific headers). [`LocalReply::write_http1`] adds what the HTTP/1.1
    /// codec adds.
    pub fn headers(&self, date: &str) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(6);
        match self.grpc_status {
            Some(grpc) => {
                headers.push(("content-type", "application/grpc".to_owned()));
                headers.push(("grpc-status", grpc.to_string()));
                // Envoy sets grpc-message from the body text, which a HEAD reply drops.
                if !self.context.head {
                    headers.push(("grpc-message", ABORT_BODY.to_owned()));
                }
            }
            None => {
                headers.push(("content-length", ABORT_BODY.len().to_string()));
                headers.push(("content-type", "text/plain".to_owned()));
            }
        }
        headers.push(("date", sanitize(date)));
        headers.push(("server", "envoy".to_owned()));
        headers
    }

    /// Append the reply as Envoy 1.40's HTTP/1.1 codec writes it: status line with Envoy's reason phrase,
    /// [`LocalReply::headers`], `connection: close` when [`LocalReply::closes_connection`], and for
    /// the (bodiless) gRPC reply the framing header the codec adds: `content-length: 0`, or
    /// `transfer-encoding: chunked` for `HEAD`.
    ///
    /// `date` should be an IMF-fixdate such as [`http_date`] returns; control characters in it are
    /// dropped so that it cannot break the header block.
    ///
    /// ```
    /// use meshcap_fault::{LocalReply, ReplyContext};
    ///
    /// let reply = LocalReply::new(503, None, false, ReplyContext::new());
    /// let mut out = Vec::new();
    /// reply.write_http1(&mut out, "Thu, 26 Nov 2026 11:47:33 GMT");
    /// assert_eq!(
    ///     String::from_utf8(out).unwrap(),
    ///     "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 18\r\ncontent-type: text/plain\r\n\
    ///      date: Thu, 26 Nov 2026 11:47:33 GMT\r\nserver: envoy\r\n\r\nfault filter abort"
    /// );
    /// ```
    pub fn write_http1(&self, out: &mut Vec<u8>, date: &str) {
        let mut head = String::with_capacity(160);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, self.reason());
        for (name, value) in self.headers(date) {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if self.closes_connection() {
            head.push_str("connection: close\r\n");
        }
        if self.grpc_status.is_some() {
            head.push_str(if self.context.head {
                "transfer-encoding: chunked\r\n"
            } else {
                "content-length: 0\r\n"
            });
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(self.body());
    }
}

fn sanitize(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// `time` as an IMF-fixdate (`Thu, 26 Nov 2026 11:47:33 GMT`), the form of Envoy's `date` header.
/// Times before 1970 are clamped to the epoch.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let t = UNIX_EPOCH + Duration::from_secs(1_795_693_653);
/// assert_eq!(meshcap_fault::http_date(t), "Thu, 26 Nov 2026 11:47:33 GMT");
/// ```
pub fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), in unsigned arithmetic.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/grpc;charset=x"));
        assert!(!is_grpc_content_type(b"APPLICATION/GRPC"));
        assert!(!is_grpc_content_type(b"application/grpcx"));
        assert!(!is_grpc_content_type(b"application/grp"));
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn date_cannot_inject_headers() {
        let reply = LocalReply::new(503, None, false, ReplyContext::new());
        let mut out = Vec::new();
        reply.write_http1(&mut out, "x\r\nset-cookie: a");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("date: xset-cookie: a\r\n"), "{text}");
    }
}
